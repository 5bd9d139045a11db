%% aemp: the AEMP distributed database from Erlang and Elixir
%% (docs/database.md, "The Erlang and Elixir API").
%%
%% DB[Family][Subkey] = Value, replicated between every node that runs the
%% aemp application (application:ensure_all_started(aemp)) and every aemp C
%% node. Each node owns the entries it set; they vanish everywhere when the
%% node goes down. Families are atoms or binaries (foo and <<"foo">> are
%% one family), subkeys binaries, values any term. Bad arguments raise
%% badarg; with the application not started the calls exit with noproc.
%%
%%   %% Erlang
%%   ok = aemp:db_set(config, <<"level">>, 3),
%%   #{<<"level">> := 3} = aemp:db_family(config),
%%   ok = aemp:db_reg(workers),          % self() joins pg group workers
%%   Ref = aemp:db_mon(config),
%%   receive {aemp_db_mon, Ref, <<"config">>, All, #{}, []} -> All end
%%
%%   # Elixir
%%   :ok = :aemp.db_set(:config, "level", 3)
%%   %{"level" => 3} = :aemp.db_family(:config)
-module(aemp).

-export([db_set/2, db_set/3, db_del/2, db_reg/1, db_reg/2, db_reg/3,
         db_family/1, db_keys/1, db_values/1, db_mon/1, db_demon/1,
         port_id/1, pg_group/1]).

-type family() :: atom() | binary().
-type subkey() :: binary().
-export_type([family/0, subkey/0]).

-define(SERVER, aemp_db).
%% NEW_PID_EXT and the two atom encodings term_to_binary uses for a node
-define(VERSION_MAGIC, 131).
-define(NEW_PID_EXT, 88).
-define(ATOM_UTF8_EXT, 118).
-define(SMALL_ATOM_UTF8_EXT, 119).
-define(ATOM_EXT, 100).
-define(SMALL_ATOM_EXT, 115).

%% Set Subkey of Family to Value in this node's share (replacing what this
%% node set there before). Returns once the local view has it; other
%% nodes see it as soon as the update reaches them. db_set/2 sets the
%% value `undefined` (AnyEvent::MP's undef).
-spec db_set(family(), subkey(), term()) -> ok.
db_set(Family, Subkey, Value) ->
    call({set, family(Family), subkey(Subkey), Value}).

-spec db_set(family(), subkey()) -> ok.
db_set(Family, Subkey) ->
    db_set(Family, Subkey, undefined).

%% Delete one subkey or a list of subkeys from this node's share (entries
%% other nodes set are theirs to delete; a subkey this node did not set is
%% no error).
-spec db_del(family(), subkey() | [subkey()]) -> ok.
db_del(Family, Subkeys) when is_list(Subkeys) ->
    call({del, family(Family), [subkey(S) || S <- Subkeys]});
db_del(Family, Subkey) ->
    call({del, family(Family), [subkey(Subkey)]}).

%% Register the local process Pid (default self()) in Family: Pid joins the
%% pg group pg_group(Family) in every scope of the application's env
%% `scopes` (default [aemp]), and Family gets the entry port_id(Pid) =>
%% Value (default undefined). When Pid dies, pg drops the membership and
%% aemp_db deletes the entry. db_del of the entry deletes it early but
%% leaves the pg membership (pg:leave/3 ends that).
-spec db_reg(family()) -> ok.
db_reg(Family) ->
    db_reg(Family, self(), undefined).

-spec db_reg(family(), pid()) -> ok.
db_reg(Family, Pid) ->
    db_reg(Family, Pid, undefined).

-spec db_reg(family(), pid(), term()) -> ok.
db_reg(Family, Pid, Value) when is_pid(Pid), node(Pid) =:= node() ->
    F = family(Family),
    Group = pg_group(Family),
    ok = call({reg, F, port_id(Pid), Pid, Value}),
    lists:foreach(fun(Scope) -> ok = pg:join(Scope, Group, Pid) end, scopes());
db_reg(_Family, _Pid, _Value) ->
    error(badarg).

%% The family as a map Subkey => Value (the visible values: see the
%% conflict rule), its subkeys, its values. An unknown family is empty.
-spec db_family(family()) -> #{subkey() => term()}.
db_family(Family) ->
    {ok, Map} = call({family, family(Family)}),
    Map.

-spec db_keys(family()) -> [subkey()].
db_keys(Family) ->
    maps:keys(db_family(Family)).

-spec db_values(family()) -> [term()].
db_values(Family) ->
    maps:values(db_family(Family)).

%% Watch Family: returns Ref at once, and the caller's mailbox already
%% holds {aemp_db_mon, Ref, FamilyBin, Whole, #{}, []} (the whole family
%% as a map, even when empty). After that, each change to the visible
%% family is a message {aemp_db_mon, Ref, FamilyBin, Added, Changed,
%% Deleted}: Added and Changed maps Subkey => Value, Deleted a list of
%% subkeys. Ends with db_demon(Ref) or when the caller dies.
-spec db_mon(family()) -> reference().
db_mon(Family) ->
    {ok, Ref} = call({mon, family(Family), self()}),
    Ref.

%% Stop a db_mon; no message of it is left in the caller's mailbox.
-spec db_demon(reference()) -> ok.
db_demon(Ref) when is_reference(Ref) ->
    ok = call({demon, Ref}),
    flush(Ref);
db_demon(_) ->
    error(badarg).

flush(Ref) ->
    receive
        {aemp_db_mon, Ref, _, _, _, _} -> flush(Ref)
    after 0 -> ok
    end.

%% The port ID of a pid as aemp C nodes print it (aemp_addr_format):
%% <<"node#<ID.Serial.Creation>">>, the fields of its NEW_PID_EXT. This is
%% the subkey of a db_reg entry.
-spec port_id(pid()) -> binary().
port_id(Pid) when is_pid(Pid) ->
    <<?VERSION_MAGIC, ?NEW_PID_EXT, Rest/binary>> = term_to_binary(Pid),
    {NodeLen, Rest1} = case Rest of
                           <<?SMALL_ATOM_UTF8_EXT, L, R/binary>> -> {L, R};
                           <<?SMALL_ATOM_EXT, L, R/binary>> -> {L, R};
                           <<?ATOM_UTF8_EXT, L:16, R/binary>> -> {L, R};
                           <<?ATOM_EXT, L:16, R/binary>> -> {L, R}
                       end,
    <<Node:NodeLen/binary, ID:32, Serial:32, Creation:32>> = Rest1,
    iolist_to_binary([Node, "#<", integer_to_binary(ID), $., integer_to_binary(Serial), $.,
                      integer_to_binary(Creation), $>]);
port_id(_) ->
    error(badarg).

%% The pg group of a family: the family as an atom when it is an atom, or
%% a binary that is UTF-8 text of at most 255 characters (an atom's limit);
%% any other binary family is its own group name. So foo, <<"foo">> and
%% the C side's "foo" are one group, pg:get_members(aemp, foo).
-spec pg_group(family()) -> atom() | binary().
pg_group(Family) when is_atom(Family) ->
    Family;
pg_group(Family) when is_binary(Family) ->
    F = family(Family),
    case unicode:characters_to_list(F, utf8) of
        Chars when is_list(Chars), length(Chars) =< 255 -> binary_to_atom(F, utf8);
        _ -> F
    end;
pg_group(_) ->
    error(badarg).

%% ------------------------------------------------------------------

%% Families and subkeys are UTF-8 text on the wire.
family(F) when is_atom(F) -> atom_to_binary(F, utf8);
family(F) -> text(F).

subkey(S) -> text(S).

%% A short text is checked here, a longer one by the unicode module
%% (faster per byte, slower to start: db_set's usual subkey is short).
text(B) when is_binary(B), byte_size(B) =< 64 ->
    case utf8(B) of
        true -> B;
        false -> error(badarg)
    end;
text(B) when is_binary(B) ->
    case unicode:characters_to_binary(B, utf8, utf8) of
        B -> B;
        _ -> error(badarg)
    end;
text(_) ->
    error(badarg).

utf8(<<C, Rest/binary>>) when C < 128 -> utf8(Rest);
utf8(<<_/utf8, Rest/binary>>) -> utf8(Rest);
utf8(<<>>) -> true;
utf8(_) -> false.

scopes() ->
    case application:get_env(aemp, scopes, [aemp]) of
        Scopes when is_list(Scopes) -> Scopes;
        _ -> [aemp]
    end.

call(Request) ->
    case gen_server:call(?SERVER, Request, infinity) of
        {error, badarg} -> error(badarg);
        Reply -> Reply
    end.
