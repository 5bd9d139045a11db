%% aemp_db: the replication server of the aemp database, registered as
%% aemp_db on every node running the aemp application (C nodes run their
%% own, a service port of the same name). It speaks the aemp_db protocol,
%% version 3 (docs/database.md): the shape of OTP 29's data_publisher.
%%
%% State: this node's share (the entries it set), every peer's share, the
%% view of the watched families (per family and subkey the value of the
%% winning entry: greatest {Stamp, Owner}), the Lamport clock, db_mon
%% subscribers and the pids of db_reg entries.
%% Use it through the module aemp; the calls below are its internals.
%%
%% Anything a peer sends is checked before it is used: a message of
%% another shape is logged (logger, depth-limited) and dropped, never a
%% crash, so a hostile node cannot make this node lose its share.
-module(aemp_db).
-behaviour(gen_server).

-export([start_link/0, entry/2]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-define(SERVER, aemp_db).
-define(VSN, 3).
%% Stamps are 64-bit on C nodes: a greater one is malformed.
-define(MAX_STAMP, 18446744073709551615).
%% how deep a logged unexpected message is printed
-define(LOG_DEPTH, 12).
%% the env db_join_heap_words when not set (8 MB on a 64-bit runtime),
%% and the most it may be (1 GB)
-define(JOIN_HEAP, 1000000).
-define(JOIN_HEAP_MAX, 134217728).

-record(st, {
    clock = 0 :: non_neg_integer(),
    local = #{} :: share(),
    %% family => the local family's Stamps as the wire's binary, made when
    %% the share is first sent after a change of the family (a large share
    %% is sent to every peer)
    wire = #{} :: #{binary() => binary()},
    %% the order term_to_binary writes a large map in, against maps:to_list
    %% (wire_order/0)
    order = keys :: keys | reversed | other,
    %% peer server pid => {monitor ref, its share, whether it was sent
    %% our share since it became our peer}; a peer's family keeps the
    %% Stamps binary it came with until a stamp is needed (stamped/2)
    peers = #{} :: #{pid() => {reference(), share(), boolean()}},
    %% family => subkey => Value of the winner (the winner itself, its
    %% stamp and owner, is found in the shares when asked: entry/2): kept
    %% up to date for a family somebody watches (absent: empty); for
    %% another, the last one a query worked out, until the family changes
    %% (family_values/2)
    view = #{} :: #{binary() => #{binary() => term()}},
    %% family => #{monitor ref => subscriber}; ref => family
    subs = #{} :: #{binary() => #{reference() => pid()}},
    subrefs = #{} :: #{reference() => binary()},
    %% db_reg: monitor ref => {pid, [{family, subkey}]}; pid => ref
    regs = #{} :: #{reference() => {pid(), [{binary(), binary()}]}},
    regpids = #{} :: #{pid() => reference()},
    %% peers discovered whose share has not come yet (awaiting/2); while
    %% there are any, the heap is at least join_heap words, else
    %% min_heap, the process's own minimum
    awaiting = #{} :: #{pid() => true},
    join_heap = 0 :: non_neg_integer(),
    min_heap = 0 :: non_neg_integer()
}).

%% family => {Values, Stamps}: Subkey => Value, and Subkey => Stamp (the
%% local share and converted peer families) or the wire's binary of
%% records (a peer's family as it came: stamp_records/1, docs/database.md)
-type share() :: #{binary() => {#{binary() => term()},
                                #{binary() => non_neg_integer()} | binary()}}.

start_link() ->
    gen_server:start_link({local, ?SERVER}, ?MODULE, [], []).

%% Where a value comes from (for tests and debugging): {Visible, Own},
%% Visible the winning entry {Stamp, OwnerNode, Value} or none, Own this
%% node's entry {Stamp, Value} or none.
-spec entry(aemp:family(), aemp:subkey()) -> {tuple() | none, tuple() | none}.
entry(Family, Subkey) when is_atom(Family) ->
    entry(atom_to_binary(Family, utf8), Subkey);
entry(Family, Subkey) when is_binary(Family), is_binary(Subkey) ->
    gen_server:call(?SERVER, {entry, Family, Subkey}, infinity);
entry(_, _) ->
    error(badarg).

init([]) ->
    %% Every connected node, hidden ones too: a C node that connected
    %% before this server started discovers it only on its next connection.
    ok = net_kernel:monitor_nodes(true, [{node_type, all}]),
    _ = [discover(Node) || Node <- nodes(connected)],
    {min_heap_size, Min} = process_info(self(), min_heap_size),
    JoinHeap = case application:get_env(aemp, db_join_heap_words, ?JOIN_HEAP) of
                   N when is_integer(N), N >= 0, N =< ?JOIN_HEAP_MAX -> N;
                   Other ->
                       logger:warning("aemp_db: db_join_heap_words ~0P is not a count of words "
                                      "from 0 to ~p, ~p taken",
                                      [Other, ?LOG_DEPTH, ?JOIN_HEAP_MAX, ?JOIN_HEAP]),
                       ?JOIN_HEAP
               end,
    {ok, #st{order = wire_order(), join_heap = JoinHeap, min_heap = Min}}.

%% ------------------------------------------------------------------
%% Local calls (from the module aemp, which checked the arguments; they
%% are checked again since anyone may call)
%% ------------------------------------------------------------------

%% gen_server would crash answering a call whose From is not {Pid, Tag}
handle_call(Request, From, St) when not is_tuple(From); tuple_size(From) =/= 2;
                                    not is_pid(element(1, From)) ->
    {noreply, drop({'$gen_call', From, Request}, St)};
handle_call({set, F, S, V}, _From, St) when is_binary(F), is_binary(S) ->
    {reply, ok, local_set(F, S, V, St)};
handle_call({del, F, Subkeys}, _From, St) when is_binary(F), is_list(Subkeys) ->
    case lists:all(fun erlang:is_binary/1, Subkeys) of
        true -> {reply, ok, local_del(F, Subkeys, St)};
        false -> {reply, {error, badarg}, St}
    end;
handle_call({reg, F, S, Pid, V}, _From, St)
  when is_binary(F), is_binary(S), is_pid(Pid), node(Pid) =:= node() ->
    {reply, ok, reg(F, S, Pid, V, local_set(F, S, V, St))};
handle_call({family, F}, _From, St) when is_binary(F) ->
    {Values, St1} = family_values(F, St),
    {reply, {ok, Values}, St1};
handle_call({entry, F, S}, _From, #st{local = Local} = St) when is_binary(F), is_binary(S) ->
    St1 = stamped(F, St),
    Own = case Local of
              #{F := {#{S := V}, Stamps}} -> {maps:get(S, Stamps, 0), V};
              _ -> none
          end,
    {reply, {winner(S, shares(F, St1), none), Own}, St1};
handle_call({mon, F, Pid}, _From, St) when is_binary(F), is_pid(Pid), node(Pid) =:= node() ->
    Ref = erlang:monitor(process, Pid),
    {Values, St1} = family_values(F, St),
    Pid ! {aemp_db_mon, Ref, F, Values, #{}, []},
    Subs = maps:get(F, St1#st.subs, #{}),
    %% a watched family's view is kept from now on
    {reply, {ok, Ref},
     St1#st{view = put_view(F, Values, St1#st.view),
            subs = (St1#st.subs)#{F => Subs#{Ref => Pid}},
            subrefs = (St1#st.subrefs)#{Ref => F}}};
handle_call({demon, Ref}, _From, St) when is_reference(Ref) ->
    {reply, ok, unsubscribe(Ref, St)};
handle_call(Request, From, St) ->
    logger:warning("aemp_db: unexpected call ~0P from ~0P, answered {error, badarg}",
                   [Request, ?LOG_DEPTH, From, ?LOG_DEPTH]),
    {reply, {error, badarg}, St}.

%% ------------------------------------------------------------------
%% The protocol
%% ------------------------------------------------------------------

handle_cast({local_data, _, _, _} = Msg, St) ->
    handle_info(Msg, St);
handle_cast(Msg, St) ->
    {noreply, drop({'$gen_cast', Msg}, St)}.

%% Both sides of a new connection discover each other, and each answers
%% the other's discover with a discover: a peer that has had our share
%% since it became our peer (and every update since) is not sent it again.
handle_info({discover, Peer, _Vsn}, #st{peers = Peers} = St) when is_pid(Peer), Peer =/= self() ->
    case Peers of
        #{Peer := {_, _, true}} ->
            {noreply, St};
        #{Peer := {Ref, Share, false}} ->
            St1 = send_share(Peer, St),
            {noreply, St1#st{peers = Peers#{Peer => {Ref, Share, true}}}};
        _ ->
            St1 = send_share(Peer, St),
            Ref = erlang:monitor(process, Peer),
            send(Peer, {discover, self(), ?VSN}),
            {noreply, awaiting(Peer, St1#st{peers = Peers#{Peer => {Ref, #{}, true}}})}
    end;
handle_info({local_data, Peer, _Vsn, Share} = Msg, St) when is_pid(Peer), Peer =/= self() ->
    Known = maps:find(Peer, St#st.peers),
    Old = case Known of
              {ok, {_, O, _}} -> O;
              error -> #{}
          end,
    case check_share(Share) of
        error ->
            %% (and no more room kept for it)
            {noreply, arrived(Peer, drop(Msg, St))};
        {ok, Max} ->
            {Ref, Sent} = case Known of
                              {ok, {R, _, S}} -> {R, S};
                              error -> {erlang:monitor(process, Peer), false}
                          end,
            St1 = St#st{clock = max(St#st.clock, Max),
                        peers = (St#st.peers)#{Peer => {Ref, Share, Sent}}},
            {noreply, arrived(Peer, replaced(Old, Share, St1))}
    end;
handle_info({update, Peer, Ops} = Msg, St) when is_pid(Peer) ->
    case St#st.peers of
        #{Peer := {Ref, Share, Sent}} ->
            case ops_stamp(Ops, 0) of
                error ->
                    {noreply, drop(Msg, St)};
                {ok, Max} ->
                    Share1 = apply_ops(Ops, Share),
                    St1 = St#st{clock = max(St#st.clock, Max),
                                peers = (St#st.peers)#{Peer => {Ref, Share1, Sent}}},
                    {noreply, refresh_ops(Ops, St1)}
            end;
        _ ->
            %% raced the peer's 'DOWN', or not a peer at all
            {noreply, St}
    end;
handle_info({'DOWN', Ref, process, Pid, _Reason} = Msg, St) ->
    case St#st.peers of
        #{Pid := {Ref, Share, _}} ->
            St1 = arrived(Pid, St#st{peers = maps:remove(Pid, St#st.peers)}),
            {noreply, maps:fold(fun(F, {Values, _}, A) -> refresh(F, Values, A) end, St1, Share)};
        _ ->
            case {St#st.subrefs, St#st.regs} of
                {#{Ref := _}, _} ->
                    {noreply, unsubscribe(Ref, St)};
                {_, #{Ref := {Pid, Entries}}} ->
                    St1 = St#st{regs = maps:remove(Ref, St#st.regs),
                                regpids = maps:remove(Pid, St#st.regpids)},
                    {noreply, lists:foldl(fun({F, S}, A) -> local_del(F, [S], A) end,
                                          St1, Entries)};
                _ ->
                    {noreply, drop(Msg, St)}
            end
    end;
handle_info({nodeup, Node, _Info}, St) ->
    discover(Node),
    {noreply, St};
handle_info({nodedown, _Node, _Info}, St) ->
    %% the peer monitors say which shares go
    {noreply, St};
handle_info(Msg, St) ->
    {noreply, drop(Msg, St)}.

%% A peer's first share can be large, and the collection that takes it in
%% sizes the heap to what it holds then: the next allocation would collect
%% again at once, copying it all a second time (a 100,000-entry family:
%% about 9 ms of a join's 100). So while a share is awaited the heap is
%% kept at least join_heap words (the env db_join_heap_words, 0: never);
%% the process's own minimum comes back when none is.
awaiting(Peer, #st{awaiting = Aw, join_heap = Words} = St) ->
    case map_size(Aw) =:= 0 andalso Words > 0 of
        true -> process_flag(min_heap_size, Words);
        false -> ok
    end,
    St#st{awaiting = Aw#{Peer => true}}.

arrived(Peer, #st{awaiting = Aw0, join_heap = Words, min_heap = Min} = St) ->
    case maps:take(Peer, Aw0) of
        {_, Aw} when map_size(Aw) =:= 0, Words > 0 ->
            process_flag(min_heap_size, Min),
            St#st{awaiting = Aw};
        {_, Aw} ->
            St#st{awaiting = Aw};
        error ->
            St
    end.

drop(Msg, St) ->
    logger:warning("aemp_db: dropped unexpected message ~0P", [Msg, ?LOG_DEPTH]),
    St.

discover(Node) ->
    send({?SERVER, Node}, {discover, self(), ?VSN}).

%% The wire's share: each family's stamps as one binary of records, in
%% the order its values are encoded in, so that a C node walks both in
%% step. Maps of the same keys list them in the same order; term_to_binary
%% writes a map of up to 32 keys in that order, a larger one in it or (OTP
%% 29) in reverse.
send_share(Peer, #st{local = Local, wire = Wire0, order = Order} = St) ->
    Wire = maps:map(fun(F, {_, Stamps}) ->
                            case Wire0 of
                                #{F := B} -> B;
                                _ when Order =:= reversed, map_size(Stamps) > 32 ->
                                    stamp_records(lists:reverse(maps:to_list(Stamps)));
                                _ -> stamp_records(maps:to_list(Stamps))
                            end
                    end, Local),
    Share = maps:map(fun(F, {Values, _}) -> {Values, map_get(F, Wire)} end, Local),
    send(Peer, {'$gen_cast', {local_data, self(), ?VSN, Share}}),
    St#st{wire = Wire}.

%% A family's Stamps on the wire: a record <<KeyLen:32, Subkey, Stamp:64>>
%% per pair (one binary: off the heap of a receiver, which keeps it as it
%% came until it needs a stamp).
stamp_records(Pairs) ->
    << <<(byte_size(S)):32, S/binary, Stamp:64>> || {S, Stamp} <- Pairs >>.

%% The order term_to_binary writes a map of more than 32 keys in: that of
%% maps:keys/1 (keys), its reverse (reversed: OTP 29), or another (other:
%% C receivers then find the stamps through an index).
wire_order() ->
    Map = maps:from_list([{integer_to_binary(I), 0} || I <- lists:seq(1, 64)]),
    <<131, 116, 64:32, Body/binary>> = term_to_binary(Map),
    Keys = maps:keys(Map),
    case encoded_keys(Body, []) of
        Keys -> keys;
        Rev -> case lists:reverse(Rev) of
                   Keys -> reversed;
                   _ -> other
               end
    end.

%% the binary keys of a map of small integers, as encoded
encoded_keys(<<109, Len:32, Key:Len/binary, 97, _, Rest/binary>>, Acc) ->
    encoded_keys(Rest, [Key | Acc]);
encoded_keys(_, Acc) ->
    lists:reverse(Acc).

%% As data_publisher does: never set up a connection by sending, and never
%% fail on a peer that is gone.
send(Dest, Msg) ->
    try erlang:send(Dest, Msg, [noconnect]) of
        _ -> ok
    catch
        error:_ -> ok
    end.

%% ------------------------------------------------------------------
%% This node's share
%% ------------------------------------------------------------------

local_set(F, S, V, #st{clock = C, local = Local} = St) ->
    Stamp = C + 1,
    {Values, Stamps} = maps:get(F, Local, {#{}, #{}}),
    Local1 = Local#{F => {Values#{S => V}, Stamps#{S => Stamp}}},
    broadcast([{set, F, S, Stamp, V}], St),
    refresh(F, [S], St#st{clock = Stamp, local = Local1, wire = maps:remove(F, St#st.wire)}).

local_del(F, Subkeys, #st{local = Local} = St) ->
    {Values, Stamps} = maps:get(F, Local, {#{}, #{}}),
    case [S || S <- Subkeys, maps:is_key(S, Values)] of
        [] ->
            St;
        Gone ->
            Values1 = maps:without(Gone, Values),
            Local1 = case map_size(Values1) of
                         0 -> maps:remove(F, Local);
                         _ -> Local#{F => {Values1, maps:without(Gone, Stamps)}}
                     end,
            broadcast([{del, F, S} || S <- Gone], St),
            refresh(F, Gone, St#st{local = Local1, wire = maps:remove(F, St#st.wire)})
    end.

broadcast(Ops, #st{peers = Peers}) ->
    Msg = {update, self(), Ops},
    maps:foreach(fun(Peer, _) -> send(Peer, Msg) end, Peers).

%% Remember Pid's entry so that it goes when Pid dies.
reg(F, S, Pid, _V, #st{regs = Regs, regpids = RegPids} = St) ->
    case RegPids of
        #{Pid := Ref} ->
            {Pid, Entries} = maps:get(Ref, Regs),
            St#st{regs = Regs#{Ref => {Pid, lists:usort([{F, S} | Entries])}}};
        _ ->
            Ref = erlang:monitor(process, Pid),
            St#st{regs = Regs#{Ref => {Pid, [{F, S}]}}, regpids = RegPids#{Pid => Ref}}
    end.

%% ------------------------------------------------------------------
%% Peers' shares
%% ------------------------------------------------------------------

%% A peer's share checked: {ok, greatest stamp} or error. Each family is
%% {Values, Stamps}: a map of binary subkeys, and a binary of whole
%% stamp records (docs/database.md).
check_share(Share) when is_map(Share) ->
    try maps:fold(fun(F, {Values, Stamps}, Max) when is_binary(F), is_map(Values) ->
                          true = binaries(maps:keys(Values)),
                          stamps_max(Stamps, Max)
                  end, 0, Share) of
        Max -> {ok, Max}
    catch
        error:_ -> error
    end;
check_share(_) ->
    error.

binaries([]) ->
    true;
binaries([S | Subkeys]) when is_binary(S) ->
    binaries(Subkeys).

%% (a match context over the binary: nothing is built)
stamps_max(<<>>, Max) ->
    Max;
stamps_max(<<Len:32, _:Len/binary, Stamp:64, Rest/binary>>, Max) ->
    stamps_max(Rest, max(Stamp, Max)).

%% {ok, greatest stamp} of a well-formed op list, or error.
ops_stamp([], Max) ->
    {ok, Max};
ops_stamp([{set, F, S, Stamp, _} | Ops], Max)
  when is_binary(F), is_binary(S), is_integer(Stamp), Stamp >= 0, Stamp =< ?MAX_STAMP ->
    ops_stamp(Ops, max(Stamp, Max));
ops_stamp([{del, F, S} | Ops], Max) when is_binary(F), is_binary(S) ->
    ops_stamp(Ops, Max);
ops_stamp(_, _) ->
    error.

apply_ops([], Share) ->
    Share;
apply_ops([Op | Ops], Share) ->
    apply_ops(Ops, apply_op(Op, Share)).

apply_op({set, F, S, Stamp, V}, Share) ->
    {Values, Stamps} = maps:get(F, Share, {#{}, #{}}),
    Share#{F => {Values#{S => V}, (stamps(Stamps))#{S => Stamp}}};
apply_op({del, F, S}, Share) ->
    case Share of
        #{F := {Values, Stamps}} ->
            case maps:remove(S, Values) of
                E when map_size(E) =:= 0 -> maps:remove(F, Share);
                E -> Share#{F => {E, maps:remove(S, stamps(Stamps))}}
            end;
        _ ->
            Share
    end.

%% A family's stamps as a map: the last record of a subkey wins (a subkey
%% with none has stamp 0, see winner/3).
stamps(Stamps) when is_map(Stamps) ->
    Stamps;
stamps(Records) ->
    maps:from_list([{S, Stamp} || <<Len:32, S:Len/binary, Stamp:64>> <= Records]).

%% St with family F's stamps a map in every peer's share (a family taken
%% whole keeps its records until another share holds it, or it changes).
stamped(F, #st{peers = Peers} = St) ->
    case [P || {P, {_, #{F := {_, Stamps}}, _}} <- maps:to_list(Peers), is_binary(Stamps)] of
        [] ->
            St;
        Listed ->
            St#st{peers = lists:foldl(fun(P, A) ->
                                              {Ref, #{F := {V, L}} = Share, Sent} = map_get(P, A),
                                              A#{P => {Ref, Share#{F => {V, stamps(L)}}, Sent}}
                                      end, Peers, Listed)}
    end.

%% Refresh the subkeys the ops touched, a family at a time, in the order
%% the families first appear.
refresh_ops([{set, F, S, _, _}], St) ->
    refresh(F, [S], St);
refresh_ops([{del, F, S}], St) ->
    refresh(F, [S], St);
refresh_ops(Ops, St) ->
    ByFamily = lists:foldl(fun(Op, Acc) ->
                                   {F, S} = case Op of
                                                {set, F0, S0, _, _} -> {F0, S0};
                                                {del, F0, S0} -> {F0, S0}
                                            end,
                                   Acc#{F => [S | maps:get(F, Acc, [])]}
                           end, #{}, Ops),
    maps:fold(fun(F, Subkeys, A) -> refresh(F, lists:usort(Subkeys), A) end, St, ByFamily).

%% A peer's share Old was replaced by New: refresh the subkeys whose entry
%% differs, a family at a time (a family the same in both costs a compare).
replaced(Old, New, St) ->
    maps:fold(fun(F, _, A) when not is_map_key(F, A#st.subs) ->
                      %% nobody watches: nothing to tell, no view to keep
                      refresh(F, [], A);
                 (F, _, A) ->
                      case {maps:get(F, Old, {#{}, <<>>}), maps:get(F, New, {#{}, <<>>})} of
                          {E, E} -> A;
                          {{O, _}, {N, _}} when map_size(O) =:= 0 -> refresh(F, N, A);
                          {{O, _}, {N, _}} when map_size(N) =:= 0 -> refresh(F, O, A);
                          {O, N} -> refresh(F, changed(O, N), A)
                      end
              end, St, maps:merge(Old, New)).

%% The subkeys of entries that differ between two families {Values,
%% Stamps}: gone, new, or another value or stamp.
changed({OldV, OldS}, {NewV, NewS}) ->
    {Os, Ns} = {stamps(OldS), stamps(NewS)},
    Gone = maps:fold(fun(S, _, A) ->
                             case NewV of
                                 #{S := _} -> A;
                                 _ -> [S | A]
                             end
                     end, [], OldV),
    maps:fold(fun(S, V, A) ->
                      case OldV of
                          #{S := V} ->
                              case maps:get(S, Os, 0) =:= maps:get(S, Ns, 0) of
                                  true -> A;
                                  false -> [S | A]
                              end;
                          _ ->
                              [S | A]
                      end
              end, Gone, NewV).

%% ------------------------------------------------------------------
%% The view: per subkey the value of the entry with the greatest {Stamp,
%% OwnerNode} among every share holding it. Recomputed for the subkeys a
%% change touched (a list, or a map whose keys they are); subscribers of
%% the family hear what became visible. A family nobody watches keeps no
%% view: a change costs nothing more than the share's, and a query works
%% the view out (family_values/2).
%% ------------------------------------------------------------------

refresh(F, _Touched, #st{subs = AllSubs, view = View} = St) when not is_map_key(F, AllSubs) ->
    St#st{view = maps:remove(F, View)};
refresh(F, [S], St0) ->
    %% one subkey (a single set or delete, the usual change): the same as
    %% below, told before the view is stored
    St = stamped(F, St0),
    #st{view = View, subs = #{F := Subs}} = St,
    Old = maps:get(F, View, #{}),
    New = case {key_winner(F, S, St), Old} of
              {none, #{S := _}} ->
                  notify(Subs, F, #{}, #{}, [S]),
                  maps:remove(S, Old);
              {none, _} ->
                  Old;
              {{_, _, V}, #{S := V}} ->
                  Old;
              {{_, _, V}, #{S := _}} ->
                  notify(Subs, F, #{}, #{S => V}, []),
                  Old#{S := V};
              {{_, _, V}, _} ->
                  notify(Subs, F, #{S => V}, #{}, []),
                  Old#{S => V}
          end,
    St#st{view = put_view(F, New, View)};
refresh(F, Touched, #st{view = View} = St0) ->
    Old = maps:get(F, View, #{}),
    Subs = maps:get(F, St0#st.subs),
    %% no stamp is needed when one share holds a family new here
    {St, Shares} = case shares(F, St0) of
                       [_] = One when map_size(Old) =:= 0 ->
                           {St0, One};
                       _ ->
                           St1 = stamped(F, St0),
                           {St1, shares(F, St1)}
                   end,
    {New, Added, Changed, Deleted} = diff(Touched, Old, Shares, true),
    case Deleted of
        [] when map_size(Added) =:= 0, map_size(Changed) =:= 0 ->
            ok;
        _ ->
            notify(Subs, F, Added, Changed, Deleted)
    end,
    St#st{view = put_view(F, New, View)}.

%% (a watched family's view: absent when empty)
put_view(F, New, View) when map_size(New) =:= 0 ->
    maps:remove(F, View);
put_view(F, New, View) ->
    View#{F => New}.

notify(Subs, F, Added, Changed, Deleted) ->
    _ = [Pid ! {aemp_db_mon, Ref, F, Added, Changed, Deleted} || {Ref, Pid} <- maps:to_list(Subs)],
    ok.

%% Family F of every share that holds some of it: [{OwnerNode, Values,
%% Stamps}].
shares(F, #st{local = Local, peers = Peers}) ->
    Own = case Local of
              #{F := {V, S}} -> [{node(), V, S}];
              _ -> []
          end,
    maps:fold(fun(P, {_, #{F := {V, S}}, _}, Acc) when map_size(V) > 0 ->
                      [{node(P), V, S} | Acc];
                 (_, _, Acc) ->
                      Acc
              end, Own, Peers).

%% The family's new view and what became visible: {New, Added, Changed,
%% Deleted} (Added and Changed may be left empty when nobody watches).
diff(_Touched, Old, [], _Watched) ->
    %% no share holds the family (any more)
    {#{}, #{}, #{}, maps:keys(Old)};
diff(_Touched, Old, [{_, Values, _}], _Watched) when map_size(Old) =:= 0 ->
    %% a family only one share holds, new here (a peer's share arriving):
    %% its entries are the winners, and all of them are added
    {Values, Values, #{}, []};
diff(Touched, Old, Shares, Watched) ->
    %% lists, made into maps once at the end (faster than a put per
    %% subkey)
    {Puts, Added, Changed, Deleted} =
        fold_keys(fun(S, {Pu, Ad, Ch, De} = Acc) ->
                          case {winner(S, Shares, none), Old} of
                              {none, #{S := _}} -> {Pu, Ad, Ch, [S | De]};
                              {none, _} -> Acc;
                              {{_, _, V}, #{S := V}} -> Acc;
                              {{_, _, V}, #{S := _}} -> {[{S, V} | Pu], Ad, [{S, V} | Ch], De};
                              {{_, _, V}, _} -> {[{S, V} | Pu], [{S, V} | Ad], Ch, De}
                          end
                  end, {[], [], [], []}, Touched),
    New = maps:merge(maps:without(Deleted, Old), maps:from_list(Puts)),
    case Watched of
        true -> {New, maps:from_list(Added), maps:from_list(Changed), Deleted};
        false -> {New, #{}, #{}, Deleted}
    end.

fold_keys(Fun, Acc, Keys) when is_list(Keys) ->
    lists:foldl(Fun, Acc, Keys);
fold_keys(Fun, Acc, Keys) ->
    maps:fold(fun(K, _, A) -> Fun(K, A) end, Acc, Keys).

%% winner(S, shares(F, St), none) without the list of shares (St
%% stamped/2 for F)
key_winner(F, S, #st{local = Local, peers = Peers}) ->
    Own = case Local of
              #{F := {#{S := V}, Stamps}} -> {maps:get(S, Stamps, 0), node(), V};
              _ -> none
          end,
    peers_winner(F, S, maps:to_list(Peers), Own).

peers_winner(_F, _S, [], Best) ->
    Best;
peers_winner(F, S, [{P, {_, Share, _}} | Peers], Best) ->
    case Share of
        #{F := {#{S := V}, Stamps}} ->
            peers_winner(F, S, Peers, better({maps:get(S, Stamps, 0), node(P), V}, Best));
        _ ->
            peers_winner(F, S, Peers, Best)
    end.

%% The winning entry {Stamp, OwnerNode, Value} of a subkey, or none
%% (Stamps maps: stamped/2).
winner(_S, [], Best) ->
    Best;
winner(S, [{Node, Values, Stamps} | Shares], Best) ->
    case Values of
        #{S := V} -> winner(S, Shares, better({maps:get(S, Stamps, 0), Node, V}, Best));
        _ -> winner(S, Shares, Best)
    end.

%% the entry of greater {Stamp, OwnerNode}
better(Entry, none) ->
    Entry;
better({Stamp, Node, _} = Entry, {BStamp, BNode, _}) when {Stamp, Node} > {BStamp, BNode} ->
    Entry;
better(_, Best) ->
    Best.

%% {The family's view, St}: the one kept (a watched family, or one a
%% query worked out before), or worked out from the shares (and kept
%% until the family changes, when more than one share holds it: one
%% share's values are the view as they are).
family_values(F, #st{view = View, subs = Subs} = St) ->
    case View of
        #{F := Values} ->
            {Values, St};
        _ when is_map_key(F, Subs) ->
            {#{}, St};
        _ ->
            case shares(F, St) of
                [] ->
                    {#{}, St};
                [{_, Values, _}] ->
                    {Values, St};
                _ ->
                    St1 = stamped(F, St),
                    Shares = shares(F, St1),
                    Keys = lists:foldl(fun({_, V, _}, A) -> maps:merge(A, V) end, #{}, Shares),
                    {New, _, _, _} = diff(Keys, #{}, Shares, false),
                    {New, St1#st{view = View#{F => New}}}
            end
    end.

unsubscribe(Ref, #st{subs = Subs, subrefs = SubRefs} = St) ->
    case maps:take(Ref, SubRefs) of
        {F, SubRefs1} ->
            erlang:demonitor(Ref, [flush]),
            Fs = maps:remove(Ref, maps:get(F, Subs, #{})),
            Subs1 = case map_size(Fs) of
                        0 -> maps:remove(F, Subs);
                        _ -> Subs#{F => Fs}
                    end,
            St#st{subs = Subs1, subrefs = SubRefs1};
        error ->
            St
    end.
