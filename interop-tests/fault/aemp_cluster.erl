%% -*- coding: utf-8 -*-
%% An Erlang node of the database cluster test
%% (interop-tests/fault/test_db_cluster.sh), with the application aemp.
%%
%%   erl -name e1@10.200.X.Y -setcookie C -noshell -start_epmd false \
%%       -kernel net_ticktime 4 -pa EBIN -eval 'aemp_cluster:main()' <FIFO
%%
%% Starts the application aemp, watches families f and big (db_mon) and
%% prints, as cluster_node.c and cluster_node.exs do:
%%   "view f: K=V K=V ..."  family f after every change, sorted by subkey
%%                          (binary values as their text)
%%   "count big: N"         the number of entries of family big
%% and reads commands from stdin, one a line:
%%   set FAM KEY VALUE      aemp:db_set(FAM, KEY, VALUE) (binaries); prints "did set FAM KEY"
%%   del FAM KEY            aemp:db_del; prints "did del FAM KEY ok"
%%   ping NODE              net_adm:ping(NODE); prints "PONG NODE" or "PANG NODE"
%% Prints "READY OsPid" first, "OTP Release", "NODEUP Node" and
%% "NODEDOWN Node Reason" (hidden nodes too). Halts at the end of stdin.
-module(aemp_cluster).

-export([main/0]).

say(Fmt, Args) -> io:format(Fmt ++ "~n", Args).

main() ->
    {ok, _} = application:ensure_all_started(aemp),
    Self = self(),
    Watcher = spawn_link(fun() -> watch(Self) end),
    receive {watching, Watcher} -> ok end,
    say("OTP ~s", [erlang:system_info(otp_release)]),
    say("READY ~s", [os:getpid()]),
    commands().

commands() ->
    case io:get_line(standard_io, '') of
        eof ->
            erlang:halt(0);
        {error, Reason} ->
            say("FAIL stdin: ~p", [Reason]),
            erlang:halt(1);
        Line ->
            command(string:lexemes(string:trim(Line), " ")),
            commands()
    end.

command(["set", Fam, Key, Value]) ->
    ok = aemp:db_set(bin(Fam), bin(Key), bin(Value)),
    say("did set ~s ~s", [Fam, Key]);
command(["del", Fam, Key]) ->
    ok = aemp:db_del(bin(Fam), bin(Key)),
    say("did del ~s ~s ok", [Fam, Key]);
command(["ping", Node]) ->
    case net_adm:ping(list_to_atom(Node)) of
        pong -> say("PONG ~s", [Node]);
        pang -> say("PANG ~s", [Node])
    end;
command(Other) ->
    say("FAIL unknown command: ~tp", [Other]).

bin(S) -> unicode:characters_to_binary(S).

%% The watcher: node events and the two families.
watch(Main) ->
    ok = net_kernel:monitor_nodes(true, [nodedown_reason, {node_type, all}]),
    F = aemp:db_mon(f),
    Big = aemp:db_mon(big),
    Main ! {watching, self()},
    watch_loop(F, Big, #{}, 0).

watch_loop(F, Big, View, Count) ->
    receive
        {aemp_db_mon, F, _, Added, Changed, Deleted} ->
            View1 = maps:without(Deleted, maps:merge(maps:merge(View, Added), Changed)),
            say("view f:~ts", [[[" ", K, "=", text(V)] || {K, V} <- lists:sort(maps:to_list(View1))]]),
            watch_loop(F, Big, View1, Count);
        {aemp_db_mon, Big, _, Added, _Changed, Deleted} ->
            Count1 = Count + map_size(Added) - length(Deleted),
            say("count big: ~p", [Count1]),
            watch_loop(F, Big, View, Count1);
        {nodeup, Node, _} ->
            say("NODEUP ~s", [Node]),
            watch_loop(F, Big, View, Count);
        {nodedown, Node, Info} ->
            say("NODEDOWN ~s ~p", [Node, proplists:get_value(nodedown_reason, Info)]),
            watch_loop(F, Big, View, Count)
    end.

text(V) when is_binary(V) -> V;
text(V) -> io_lib:format("~tp", [V]).
