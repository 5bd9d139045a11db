%% -*- coding: utf-8 -*-
%% The Erlang-only database checks of interop-tests/test_db_erlang.sh, run
%% on the test node t as aemp_interop:run(db_erlang, [A, B, C]): A and B
%% are idle Erlang nodes, C a node the script starts when this prints
%% `START C` (the application already running there). Every node runs the
%% aemp application; this module drives them by rpc. Each step waits for
%% its condition with a deadline, never a fixed sleep. Every node runs
%% with `-kernel connect_all false`, so that connections are only the ones
%% made here (global meshes nodes otherwise, which would heal a partition
%% behind the test's back).
-module(aemp_db_interop).

-export([run/1, set_many/2, forward_mon/2]).

-define(DEADLINE_MS, 15000).
-define(BIG, 10000).

run([A, B, C]) ->
    {ok, _} = application:ensure_all_started(aemp),
    [expect(pong, net_adm:ping(N), {ping, N}) || N <- [A, B]],
    expect(true, rpc:call(A, net_kernel, connect_node, [B]), {connect, A, B}),
    [expect({ok, [aemp]}, rpc:call(N, application, ensure_all_started, [aemp]), {start, N})
     || N <- [A, B]],
    Servers = [{N, rpc:call(N, erlang, whereis, [aemp_db])} || N <- [A, node()]],
    arguments(),
    convergence([node(), A, B]),
    conflict(A, B),
    monitors(A),
    hostile(A),
    peers(A),
    reg(A),
    partition(A, B),
    killed(A, B),
    big(A, C),
    data_publisher(A, C),
    %% no server was restarted by anything above
    expect(Servers, [{N, rpc:call(N, erlang, whereis, [aemp_db])} || N <- [A, node()]],
           same_servers),
    ok.

%% Families and subkeys are UTF-8 text: anything else is badarg, short
%% (checked by aemp itself) or long (by the unicode module).
arguments() ->
    Long = binary:copy(<<"a">>, 100),
    Bad = [<<255>>, <<"ok", 192, 128>>, <<237, 160, 128>>, <<244, 144, 128, 128>>,
           <<"cut", 206>>, <<Long/binary, 255>>, <<255, Long/binary>>, sub, "list", <<1:3>>],
    [expect(badarg, badarg(fun() -> aemp:db_set(args, S, 1) end), {bad_subkey, S}) || S <- Bad],
    [expect(badarg, badarg(fun() -> aemp:db_set(F, <<"s">>, 1) end), {bad_family, F})
     || F <- Bad, not is_atom(F)],
    Good = [<<>>, <<"Ω"/utf8>>, <<239, 191, 191>>, <<244, 143, 191, 191>>,
            binary:copy(<<"ŝ"/utf8>>, 64), <<Long/binary, "Ω"/utf8>>],
    [ok = aemp:db_set('argš', S, S) || S <- Good],
    expect(maps:from_list([{S, S} || S <- Good]), aemp:db_family(<<"argš"/utf8>>), good_subkeys),
    ok = aemp:db_del('argš', Good),
    expect(#{}, aemp:db_family('argš'), good_subkeys_deleted),
    log("families and subkeys: ~p malformed refused, ~p kinds of UTF-8 taken",
        [length(Bad), length(Good)]).

badarg(Fun) ->
    try Fun() of
        Other -> {returned, Other}
    catch
        error:badarg -> badarg
    end.

%% Sets on several nodes converge to the same family everywhere; a
%% deletion too. Each node's last op is the set of its own key, so once
%% every node sees every such key it got every update before it (one
%% sender's messages arrive in order) and all Lamport clocks are equal.
convergence(Nodes) ->
    [begin
         ok = rpc:call(N, aemp, db_set, [conv, <<"gone">>, N]),
         ok = rpc:call(N, aemp, db_del, [<<"conv">>, [<<"gone">>, <<"never set">>]]),
         ok = rpc:call(N, aemp, db_set, [<<"conv">>, atom_to_binary(N, utf8), {at, N}])
     end || N <- Nodes],
    Want = maps:from_list([{atom_to_binary(N, utf8), {at, N}} || N <- Nodes]),
    wait(convergence, fun() -> [rpc:call(N, aemp, db_family, [conv]) || N <- Nodes] end,
         [Want || _ <- Nodes]),
    expect(lists:sort(maps:keys(Want)), lists:sort(aemp:db_keys(<<"conv">>)), db_keys),
    expect(lists:sort(maps:values(Want)), lists:sort(aemp:db_values(conv)), db_values),
    log("sets on ~p nodes converged", [length(Nodes)]).

%% Truly concurrent sets of one subkey on A and B: both servers are
%% suspended while the set requests queue, so each stamps its set before
%% it can see the other's. They get the same stamp (equal clocks), and the
%% rule {Stamp, OwnerNode} makes the greater node name the winner on every
%% node. A later set (here, on this node) wins over both; deleting it
%% shows the next one.
conflict(A, B) ->
    Nodes = [node(), A, B],
    [ok = rpc:call(N, sys, suspend, [aemp_db]) || N <- [A, B]],
    [begin
         rpc:call(N, erlang, spawn, [aemp, db_set, [cf, <<"x">>, {from, N}]]),
         wait({queued, N}, fun() ->
                                   {messages, Ms} =
                                       rpc:call(N, erlang, process_info,
                                                [rpc:call(N, erlang, whereis, [aemp_db]),
                                                 messages]),
                                   lists:any(fun({'$gen_call', _, {set, <<"cf">>, _, _}}) -> true;
                                                (_) -> false
                                             end, Ms)
                           end, true)
     end || N <- [A, B]],
    [ok = rpc:call(N, sys, resume, [aemp_db]) || N <- [A, B]],
    {_, {Sa, _}} = wait_own(A, cf, <<"x">>),
    {_, {Sb, _}} = wait_own(B, cf, <<"x">>),
    expect(Sa, Sb, concurrent_stamps_equal),
    Winner = max({Sa, A, {from, A}}, {Sb, B, {from, B}}),
    expect(max(A, B), element(2, Winner), greater_node_wins),
    wait(conflict_converged, fun() -> [visible(N, cf, <<"x">>) || N <- Nodes] end,
         [Winner || _ <- Nodes]),
    log("concurrent sets: stamp ~p on both, ~p wins everywhere", [Sa, element(2, Winner)]),
    %% Nobody watches cf: each query works the view out from the shares
    %% (two hold x here) and keeps it until the family changes.
    Family = fun() -> [rpc:call(N, aemp, db_family, [cf]) || N <- Nodes] end,
    expect([#{<<"x">> => element(3, Winner)} || _ <- Nodes], Family(), conflict_family),
    ok = aemp:db_set(cf, <<"x">>, later),
    wait(later_set_wins, fun() -> [value(N, cf, <<"x">>) || N <- Nodes] end,
         [later || _ <- Nodes]),
    expect([#{<<"x">> => later} || _ <- Nodes], Family(), later_set_in_family),
    ok = aemp:db_del(cf, <<"x">>),
    wait(next_after_delete, fun() -> [value(N, cf, <<"x">>) || N <- Nodes] end,
         [element(3, Winner) || _ <- Nodes]),
    expect([#{<<"x">> => element(3, Winner)} || _ <- Nodes], Family(), next_in_family),
    %% Watched from now on: the first call is the family as it is, then
    %% every change; once nobody watches, queries follow changes again.
    Ref = aemp:db_mon(cf),
    expect({<<"cf">>, #{<<"x">> => element(3, Winner)}, #{}, []}, mon_msg(Ref), cf_watched),
    ok = aemp:db_set(cf, <<"x">>, again),
    expect({<<"cf">>, #{}, #{<<"x">> => again}, []}, mon_msg(Ref), cf_set_told),
    ok = aemp:db_del(cf, <<"x">>),
    expect({<<"cf">>, #{}, #{<<"x">> => element(3, Winner)}, []}, mon_msg(Ref), cf_del_told),
    ok = aemp:db_demon(Ref),
    ok = aemp:db_set(cf, <<"x">>, unwatched),
    expect(#{<<"x">> => unwatched}, aemp:db_family(cf), unwatched_set_in_family),
    ok = aemp:db_del(cf, <<"x">>),
    expect(#{<<"x">> => element(3, Winner)}, aemp:db_family(cf), unwatched_del_in_family),
    wait(cf_settled, Family, [#{<<"x">> => element(3, Winner)} || _ <- Nodes]).

%% db_mon here: the whole family at once, then added, changed and deleted
%% as A changes it; nothing after db_demon; a dead subscriber is dropped.
monitors(A) ->
    Ref = aemp:db_mon(mon),
    expect({<<"mon">>, #{}, #{}, []}, mon_msg(Ref), initial_empty),
    ok = rpc:call(A, aemp, db_set, [mon, <<"k">>, 1]),
    expect({<<"mon">>, #{<<"k">> => 1}, #{}, []}, mon_msg(Ref), added),
    ok = rpc:call(A, aemp, db_set, [mon, <<"k">>, 2]),
    expect({<<"mon">>, #{}, #{<<"k">> => 2}, []}, mon_msg(Ref), changed),
    ok = rpc:call(A, aemp, db_set, [mon, <<"j">>, 0]),
    expect({<<"mon">>, #{<<"j">> => 0}, #{}, []}, mon_msg(Ref), added_j),
    ok = rpc:call(A, aemp, db_del, [mon, [<<"k">>, <<"j">>]]),
    {<<"mon">>, NoneAdded, NoneChanged, Deleted} = mon_msg(Ref),
    expect({#{}, #{}, [<<"j">>, <<"k">>]}, {NoneAdded, NoneChanged, lists:sort(Deleted)}, deleted),
    %% a second watcher gets the current family at once
    ok = rpc:call(A, aemp, db_set, [mon, <<"k">>, 3]),
    expect({<<"mon">>, #{<<"k">> => 3}, #{}, []}, mon_msg(Ref), added_again),
    Ref2 = aemp:db_mon(<<"mon">>),
    expect({<<"mon">>, #{<<"k">> => 3}, #{}, []}, mon_msg(Ref2), initial_whole),
    ok = aemp:db_demon(Ref),
    ok = aemp:db_demon(Ref2),
    ok = rpc:call(A, aemp, db_set, [mon, <<"k">>, 4]),
    wait(set_after_demon, fun() -> aemp:db_family(mon) end, #{<<"k">> => 4}),
    expect(none, receive {aemp_db_mon, _, _, _, _, _} = M -> M after 0 -> none end,
           nothing_after_demon),
    %% changed while nobody watched: a new watcher still gets it as it is
    Ref3 = aemp:db_mon(mon),
    expect({<<"mon">>, #{<<"k">> => 4}, #{}, []}, mon_msg(Ref3), initial_after_unwatched),
    ok = aemp:db_demon(Ref3),
    %% a subscriber that dies is forgotten (the server monitors it)
    Server = whereis(aemp_db),
    Self = self(),
    Sub = spawn(fun() -> aemp:db_mon(mon), Self ! {subscribed, self()},
                         receive die -> ok end end),
    receive {subscribed, Sub} -> ok end,
    expect(true, lists:member({process, Sub}, monitors_of(Server)), subscriber_monitored),
    Sub ! die,
    wait(dead_subscriber_dropped,
         fun() -> lists:member({process, Sub}, monitors_of(Server)) end, false),
    log("db_mon: initial view, added, changed, deleted; demon; dead subscriber dropped", []).

%% Messages of other shapes to A's server are logged and dropped: it stays
%% the same process and keeps serving.
hostile(A) ->
    Server = rpc:call(A, erlang, whereis, [aemp_db]),
    [Server ! M || M <- [junk, {discover, self()}, {discover, not_a_pid, 2},
                         {local_data, self(), 3, not_a_map},
                         %% a record cut short, a length past the end, bits
                         %% left over, a byte too many
                         {local_data, self(), 3, #{<<"f">> => {#{<<"s">> => x}, <<1:32, "s", 1:56>>}}},
                         {local_data, self(), 3, #{<<"f">> => {#{<<"s">> => x}, <<9:32, "s", 1:64>>}}},
                         {local_data, self(), 3, #{<<"f">> => {#{<<"s">> => x}, <<1:32, "s", 1:64, 0:3>>}}},
                         {local_data, self(), 3, #{<<"f">> => {#{<<"s">> => x}, <<1:32, "s", 1:64, 0>>}}},
                         {local_data, self(), 3, #{<<"f">> => {#{s => x}, <<>>}}},
                         {local_data, self(), 3, #{<<"f">> => {#{<<"s">> => x}, [{<<"s">>, 1}]}}},
                         {local_data, self(), 3, #{<<"f">> => {#{<<"s">> => x}, <<>>, x}}},
                         %% versions 1 and 2's shapes
                         {local_data, self(), 1, #{<<"f">> => #{<<"s">> => {1, x}}}},
                         {local_data, self(), 2, #{<<"f">> => {#{<<"s">> => x}, [{<<"s">>, 1}]}}},
                         {'$gen_cast', {local_data, self(), 3, #{1 => 2}}},
                         {update, self(), [{set, <<"f">>, <<"s">>, 1, x}]},
                         {update, Server, bad},
                         {'$gen_cast', junk}, {'$gen_call', junk, junk}, {'$gen_call', {1, 2}, x},
                         {'DOWN', make_ref(), process, self(), x}]],
    expect({error, badarg}, gen_server:call(Server, junk), unknown_call),
    expect({error, badarg}, gen_server:call(Server, {set, 1, 2, 3}), bad_set),
    expect(badarg, try rpc:call(A, aemp, db_set, [1, <<"s">>, v]) of
                       {badrpc, {'EXIT', {badarg, _}}} -> badarg;
                       Other -> Other
                   catch error:E -> E end, api_badarg),
    expect(Server, rpc:call(A, erlang, whereis, [aemp_db]), same_server),
    expect(#{<<"k">> => 4}, rpc:call(A, aemp, db_family, [mon]), still_serving),
    %% no share above was taken: this process is no peer, so the update
    %% after them was dropped too
    expect(#{}, rpc:call(A, aemp, db_family, [f]), malformed_shares_dropped),
    log("hostile messages dropped, server kept", []).

%% Fake peers (processes here) talk the protocol to A's server. The first
%% discovers it: it gets A's share and a discover back, and nothing on a
%% second discover (it had the share). Its shares then replace one
%% another: A's watcher hears only what differs (nothing for the same
%% share again), and all of it deleted when the peer dies. A second peer
%% that sent its share first gets A's share on its first discover only.
peers(A) ->
    Server = rpc:call(A, erlang, whereis, [aemp_db]),
    W = spawn(A, ?MODULE, forward_mon, [self(), proto]),
    expect({fwd, #{}, #{}, []}, fwd(), proto_initial),
    %% a family of more than 32 keys (a hash map: OTP 29 writes one in the
    %% reverse of maps:keys/1)
    Order = [integer_to_binary(I) || I <- lists:seq(1, 100)],
    [ok = rpc:call(A, aemp, db_set, [order, K, 0]) || K <- Order],
    %% While a discovered peer's share is awaited, the server's minimum
    %% heap is at least the env db_join_heap_words (default 1,000,000
    %% words; the runtime rounds up to a heap size), else its own (the
    %% runtime's)
    MinHeap = fun() -> rpc:call(A, erlang, process_info, [Server, min_heap_size]) end,
    Own = rpc:call(A, erlang, system_info, [min_heap_size]),
    expect(Own, MinHeap(), own_min_heap),
    P = spawn(fun() -> fake_peer(Server) end),
    Share = fun(Entries) -> {'$gen_cast', {local_data, P, 3, #{<<"proto">> => wire(Entries)}}} end,
    [{'$gen_cast', {local_data, Server, 3, ShareOfA}}, {discover, Server, 3}] =
        peer_do(P, {discover, P, 3}),
    JoinHeap = fun() -> element(2, MinHeap()) >= 1000000 end,
    expect(true, JoinHeap(), join_heap_while_share_awaited),
    %% A's share in version 3's shape: each family its values and a binary
    %% of stamp records
    #{<<"conv">> := {ConvValues, ConvRecords}} = ShareOfA,
    ConvStamps = pairs(ConvRecords),
    expect(lists:sort(maps:keys(ConvValues)), lists:sort([S || {S, _} <- ConvStamps]),
           share_of_a_stamps),
    expect(maps:keys(ConvValues), [S || {S, _} <- ConvStamps], share_of_a_in_step),
    expect(true, lists:all(fun({_, Stamp}) -> Stamp > 0 end, ConvStamps), share_of_a_stamped),
    %% the stamps of a large family in the order its values are encoded in
    %% (this node runs A's release), so a C node walks both in step
    #{<<"order">> := {OrderValues, OrderRecords}} = ShareOfA,
    expect(encoded_keys(term_to_binary(OrderValues)), [S || {S, _} <- pairs(OrderRecords)],
           large_family_stamps_in_encoded_order),
    expect([], peer_do(P, {discover, P, 3}), no_share_twice),
    expect([], peer_do(P, Share(#{<<"a">> => {1, x}, <<"b">> => {1, y}})), first_share),
    expect(Own, MinHeap(), own_min_heap_once_share_came),
    expect({fwd, #{<<"a">> => x, <<"b">> => y}, #{}, []}, fwd(), first_share_added),
    expect([], peer_do(P, Share(#{<<"a">> => {2, x2}, <<"c">> => {1, z}})), second_share),
    expect({fwd, #{<<"c">> => z}, #{<<"a">> => x2}, [<<"b">>]}, fwd(), share_replaced),
    expect([], peer_do(P, Share(#{<<"a">> => {2, x2}, <<"c">> => {1, z}})), same_share),
    expect([], peer_do(P, Share(#{<<"a">> => {2, x2}, <<"c">> => {1, z}, <<"d">> => {1, w}})),
           one_more),
    %% the next message is d's: the same share again told nothing
    expect({fwd, #{<<"d">> => w}, #{}, []}, fwd(), only_the_new_one),
    exit(P, kill),
    {fwd, #{}, #{}, Gone} = fwd(),
    expect([<<"a">>, <<"c">>, <<"d">>], lists:sort(Gone), peer_gone),
    %% a malformed share ends the wait too, as does a peer that goes
    %% before its share came: the server's own minimum
    Bad = spawn(fun() -> fake_peer(Server) end),
    [_, _] = peer_do(Bad, {discover, Bad, 3}),
    expect(true, JoinHeap(), join_heap_for_bad),
    expect([], peer_do(Bad, {'$gen_cast', {local_data, Bad, 3, not_a_map}}), malformed_share),
    expect(Own, MinHeap(), own_min_heap_once_malformed_share_came),
    exit(Bad, kill),
    Gone1 = spawn(fun() -> fake_peer(Server) end),
    [_, _] = peer_do(Gone1, {discover, Gone1, 3}),
    expect(true, JoinHeap(), join_heap_again),
    exit(Gone1, kill),
    wait(own_min_heap_once_peer_gone, MinHeap, Own),
    Q = spawn(fun() -> fake_peer(Server) end),
    expect([], peer_do(Q, {local_data, Q, 3, #{}}), share_first),
    [{'$gen_cast', {local_data, Server, 3, _}}] = peer_do(Q, {discover, Q, 3}),
    expect([], peer_do(Q, {discover, Q, 3}), no_share_twice_q),
    %% Stamps decide between two shares: a subkey takes the last record
    %% Stamps has for it, 0 if none (a first-record rule, or a missing
    %% stamp read as anything but 0, shows the other peer's value)
    R = spawn(fun() -> fake_peer(Server) end),
    Fam = fun(Pid, Values, Stamps) ->
                  {'$gen_cast', {local_data, Pid, 3, #{<<"proto">> => {Values, records(Stamps)}}}}
          end,
    expect([], peer_do(Q, Fam(Q, #{<<"s">> => q, <<"t">> => q, <<"u">> => q},
                              [{<<"s">>, 3}, {<<"u">>, 1}, {<<"t">>, 5}])), q_share),
    expect({fwd, #{<<"s">> => q, <<"t">> => q, <<"u">> => q}, #{}, []}, fwd(), q_added),
    expect([], peer_do(R, Fam(R, #{<<"s">> => r, <<"t">> => r, <<"u">> => r},
                              [{<<"s">>, 9}, {<<"t">>, 9}, {<<"s">>, 2}, {<<"x">>, 7}])),
           r_share),
    %% s: Q 3 > R 2 (R's last pair); t: R 9 > Q 5; u: Q 1 > R 0 (none)
    expect({fwd, #{}, #{<<"t">> => r}, []}, fwd(), stamps_decide),
    expect({{3, node(Q), q}, none}, rpc:call(A, aemp_db, entry, [<<"proto">>, <<"s">>]),
           s_entry),
    expect({{9, node(R), r}, none}, rpc:call(A, aemp_db, entry, [<<"proto">>, <<"t">>]),
           t_winner_entry),
    exit(Q, kill),
    exit(R, kill),
    exit(W, kill),
    ok = rpc:call(A, aemp, db_del, [order, Order]),
    log("protocol peers: the share once per peer, replaced shares told as what differs", []).

%% The binary keys of an encoded map of small integers, in their order.
encoded_keys(<<131, 116, _:32, Body/binary>>) ->
    encoded_keys(Body, []).

encoded_keys(<<>>, Acc) ->
    lists:reverse(Acc);
encoded_keys(<<109, Len:32, Key:Len/binary, 97, _, Rest/binary>>, Acc) ->
    encoded_keys(Rest, [Key | Acc]).

%% #{Subkey => {Stamp, Value}} as the wire's {Values, Stamps}
wire(Entries) ->
    {maps:map(fun(_, {_, V}) -> V end, Entries),
     records([{S, Stamp} || {S, {Stamp, _}} <- maps:to_list(Entries)])}.

%% [{Subkey, Stamp}] as the wire's binary of stamp records, and back
records(Pairs) ->
    << <<(byte_size(S)):32, S/binary, Stamp:64>> || {S, Stamp} <- Pairs >>.

pairs(<<>>) ->
    [];
pairs(<<Len:32, S:Len/binary, Stamp:64, Rest/binary>>) ->
    [{S, Stamp} | pairs(Rest)].

%% A fake peer: sends what it is told to Server, then (a call: the server
%% has taken the message once it answers) says what the server sent it.
fake_peer(Server) ->
    receive
        {do, From, Msg} ->
            Server ! Msg,
            {ok, _} = gen_server:call(Server, {family, <<"proto">>}),
            From ! {done, self(), flush([])},
            fake_peer(Server)
    end.

flush(Acc) ->
    receive M -> flush([M | Acc]) after 0 -> lists:reverse(Acc) end.

peer_do(P, Msg) ->
    P ! {do, self(), Msg},
    receive {done, P, Got} -> Got after ?DEADLINE_MS -> throw({no_answer, P, Msg}) end.

%% (on A) forward the db_mon messages of F to To
forward_mon(To, F) ->
    Ref = aemp:db_mon(F),
    forward_loop(To, Ref).

forward_loop(To, Ref) ->
    receive
        {aemp_db_mon, Ref, _, Added, Changed, Deleted} ->
            To ! {fwd, Added, Changed, Deleted},
            forward_loop(To, Ref)
    end.

fwd() ->
    receive {fwd, _, _, _} = M -> M after ?DEADLINE_MS -> no_fwd_message end.

%% db_reg on A: the entry port_id(P) => Value and the pg membership reach
%% this node, and both vanish when P dies.
reg(A) ->
    P = spawn(A, timer, sleep, [infinity]),
    ok = rpc:call(A, aemp, db_reg, [regf, P, worker]),
    ok = rpc:call(A, aemp, db_reg, [<<"regf">>, P, worker]),
    Id = aemp:port_id(P),
    expect(Id, rpc:call(A, aemp, port_id, [P]), port_id_same_everywhere),
    {match, _} = re:run(Id, <<"^\\Q", (atom_to_binary(A, utf8))/binary, "\\E#<[0-9]+\\.[0-9]+\\.[0-9]+>$">>),
    wait(reg_entry, fun() -> aemp:db_family(regf) end, #{Id => worker}),
    wait(reg_member, fun() -> pg:get_members(aemp, regf) end, [P, P]),
    exit(P, kill),
    wait(reg_entry_gone, fun() -> aemp:db_family(regf) end, #{}),
    wait(reg_member_gone, fun() -> pg:get_members(aemp, regf) end, []),
    log("db_reg ~s: entry and pg membership seen, both gone with the pid", [Id]).

%% Cut A from B (this node stays connected to both): each loses the
%% other's entries, sets made while apart stay apart, and once A and B
%% connect again every node has every entry.
partition(A, B) ->
    [AKey, BKey] = [atom_to_binary(N, utf8) || N <- [A, B]],
    expect(true, rpc:call(A, erlang, disconnect_node, [B]), {disconnect, A, B}),
    wait(a_lost_b, fun() -> maps:is_key(BKey, rpc:call(A, aemp, db_family, [conv])) end, false),
    wait(b_lost_a, fun() -> maps:is_key(AKey, rpc:call(B, aemp, db_family, [conv])) end, false),
    expect(true, maps:is_key(AKey, aemp:db_family(conv)) andalso maps:is_key(BKey, aemp:db_family(conv)),
           t_keeps_both),
    [ok = rpc:call(N, aemp, db_set, [part, atom_to_binary(N, utf8), apart]) || N <- [A, B]],
    Both = #{AKey => apart, BKey => apart},
    wait(t_sees_both_sides, fun() -> aemp:db_family(part) end, Both),
    expect(#{AKey => apart}, rpc:call(A, aemp, db_family, [part]), a_alone),
    expect(#{BKey => apart}, rpc:call(B, aemp, db_family, [part]), b_alone),
    expect(true, rpc:call(A, net_kernel, connect_node, [B]), {reconnect, A, B}),
    Conv = aemp:db_family(conv),
    wait(healed, fun() -> [{rpc:call(N, aemp, db_family, [part]), rpc:call(N, aemp, db_family, [conv])}
                           || N <- [node(), A, B]] end,
         [{Both, Conv} || _ <- [node(), A, B]]),
    log("partition of ~s and ~s: entries dropped while apart, all back after the heal", [A, B]).

%% Kill B's OS process: its entries vanish on every other node, and where
%% B held the winning entry the next one shows.
killed(A, B) ->
    OsPid = rpc:call(B, os, getpid, []),
    BKey = atom_to_binary(B, utf8),
    expect({at, B}, maps:get(BKey, aemp:db_family(conv)), b_entry_before),
    erlang:monitor_node(B, true),
    _ = os:cmd("kill -KILL " ++ OsPid),
    receive {nodedown, B} -> ok after ?DEADLINE_MS -> throw({no_nodedown, B}) end,
    [wait({b_entries_gone, N}, fun() -> maps:is_key(BKey, rpc:call(N, aemp, db_family, [conv])) end,
          false) || N <- [node(), A]],
    wait(next_winner_after_kill, fun() -> [value(N, cf, <<"x">>) || N <- [node(), A]] end,
         [{from, A}, {from, A}]),
    log("killed ~s (os pid ~s): its entries vanished", [B, OsPid]).

%% A 10,000-key family set on A reaches C, a node started after it.
big(A, C) ->
    ok = rpc:call(A, ?MODULE, set_many, [big, ?BIG]),
    io:format("START ~s~n", [C]),
    wait({started, C}, fun() -> net_adm:ping(C) end, pong),
    %% its -eval starts the application after the node is up
    wait({app_started, C}, fun() -> is_pid(rpc:call(C, erlang, whereis, [aemp_db])) end, true),
    expect(true, rpc:call(C, net_kernel, connect_node, [A]), {connect, C, A}),
    wait(big_synced, fun() -> map_size(rpc:call(C, aemp, db_family, [big])) end, ?BIG),
    expect(maps:from_list([{integer_to_binary(I), I} || I <- lists:seq(1, ?BIG)]),
           rpc:call(C, aemp, db_family, [big]), big_values),
    log("~p-key family synced to the new node ~s", [?BIG, C]).

%% On OTP 29+, C swaps the application's server for a data_publisher
%% running the same protocol (aemp_db_dp): it gets every share from the
%% gen_servers of A and this node, they get its sets, a later set wins
%% across both, and its share goes when it stops. Earlier releases have no
%% data_publisher: the step says so and checks nothing.
data_publisher(A, C) ->
    case rpc:call(C, code, ensure_loaded, [data_publisher]) of
        {module, data_publisher} ->
            ok = rpc:call(C, application, stop, [aemp]),
            {ok, Dp} = rpc:call(C, data_publisher, start, [aemp_db, aemp_db_dp, #{}]),
            Conv = aemp:db_family(conv),
            wait(dp_synced, fun() -> {rpc:call(C, aemp_db_dp, family, [<<"conv">>]),
                                      map_size(rpc:call(C, aemp_db_dp, family, [<<"big">>]))} end,
                 {Conv, ?BIG}),
            {aemp_db, C} ! {set, <<"dp">>, <<"k">>, from_dp},
            {aemp_db, C} ! {set, <<"dp">>, <<"only_dp">>, from_dp},
            FromDp = #{<<"k">> => from_dp, <<"only_dp">> => from_dp},
            wait(dp_sets_seen, fun() -> [rpc:call(N, aemp, db_family, [dp]) || N <- [node(), A]] end,
                 [FromDp, FromDp]),
            ok = aemp:db_set(dp, <<"k">>, from_t),
            Later = FromDp#{<<"k">> => from_t},
            wait(later_set_wins_on_dp,
                 fun() -> [rpc:call(C, aemp_db_dp, family, [<<"dp">>]) |
                           [rpc:call(N, aemp, db_family, [dp]) || N <- [node(), A]]] end,
                 [Later, Later, Later]),
            expect(ok, rpc:call(C, gen_server, stop, [Dp]), dp_stopped),
            wait(dp_share_gone, fun() -> [rpc:call(N, aemp, db_family, [dp]) || N <- [node(), A]] end,
                 [#{<<"k">> => from_t}, #{<<"k">> => from_t}]),
            log("OTP ~s data_publisher with aemp_db_dp and the application's servers converge",
                [rpc:call(C, erlang, system_info, [otp_release])]);
        _ ->
            log("OTP ~s has no data_publisher (OTP 29+): no check of it here",
                [rpc:call(C, erlang, system_info, [otp_release])])
    end.

set_many(F, N) ->
    lists:foreach(fun(I) -> ok = aemp:db_set(F, integer_to_binary(I), I) end, lists:seq(1, N)).

%% ------------------------------------------------------------------

mon_msg(Ref) ->
    receive
        {aemp_db_mon, Ref, F, Added, Changed, Deleted} -> {F, Added, Changed, Deleted}
    after ?DEADLINE_MS -> no_db_mon_message
    end.

monitors_of(Pid) ->
    {monitors, M} = erlang:process_info(Pid, monitors),
    M.

visible(N, F, S) ->
    element(1, rpc:call(N, aemp_db, entry, [F, S])).

value(N, F, S) ->
    case visible(N, F, S) of
        {_, _, V} -> V;
        Other -> Other
    end.

wait_own(N, F, S) ->
    wait({own_entry, N}, fun() -> element(2, rpc:call(N, aemp_db, entry, [F, S])) =/= none end,
         true),
    rpc:call(N, aemp_db, entry, [F, S]).

%% Poll Fun until it returns Want; fail with the last result at the deadline.
wait(What, Fun, Want) ->
    wait(What, Fun, Want, erlang:monotonic_time(millisecond) + ?DEADLINE_MS).

wait(What, Fun, Want, Deadline) ->
    case Fun() of
        Want -> ok;
        Got ->
            case erlang:monotonic_time(millisecond) > Deadline of
                true -> throw({timeout, What, expected, Want, got, Got});
                false -> timer:sleep(20), wait(What, Fun, Want, Deadline)
            end
    end.

expect(Want, Want, _What) -> ok;
expect(Want, Got, What) -> throw({What, expected, Want, got, Got}).

log(Format, Args) ->
    io:format("ok: " ++ Format ++ "~n", Args).
