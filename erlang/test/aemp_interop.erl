%% -*- coding: utf-8 -*-
%% Erlang side of the aemp interop tests (interop-tests/).
%%
%% Started by the test scripts as
%%   erl -sname t -setcookie C -noshell -pa EBIN -eval 'aemp_interop:run(Test, Arg)'
%% Every test prints `PASS Test` and halts with status 0, or prints
%% `FAIL Test: Reason` and halts with status 1. A watchdog halts a test that
%% hangs, so a script never waits on a silent node. It first prints `OTP Rel`,
%% the release it runs on (the harness checks it when it runs a chroot's OTP).
-module(aemp_interop).

-export([run/2, serve/0, seq_recv/2]).
%% Called remotely (test calls): the same functions the calls test's C
%% node exports, and a gen_server (init(gs)) for the C node to call.
-export([kind/2, sleep_tell/3, hold_then/1, handle_call/3, handle_cast/2]).
%% spawned by the C node in the spawn test; the supervisor of the
%% supervise test
-export([child/1, init/1]).

-define(WATCHDOG_MS, 40000).
-define(REPLY_MS, 5000).

%% Run one test and halt with its verdict.
run(Test, Arg) ->
    io:format("OTP ~s~n", [erlang:system_info(otp_release)]),
    Watchdog = spawn(fun() -> watchdog(Test) end),
    Verdict =
        try test(Test, Arg) of
            ok -> ok;
            Other -> {error, Other}
        catch
            Class:Reason:Stack -> {error, {Class, Reason, Stack}}
        end,
    exit(Watchdog, kill),
    case Verdict of
        ok ->
            io:format("PASS ~p~n", [Test]),
            erlang:halt(0);
        {error, Why} ->
            io:format("FAIL ~p: ~tP~n", [Test, Why, 60]),
            erlang:halt(1)
    end.

%% A node that only has to exist: prints its name and OS pid, then waits.
serve() ->
    io:format("READY ~s ~s~n", [node(), os:getpid()]),
    receive
        stop -> erlang:halt(0)
    end.

%% The receiver of test_holes.sh, started without a node name: it registers
%% as recv first and only then becomes node Name, so that nothing from
%% another node can find the name missing. It appends the N of every
%% {seq, N} it gets to File, a line each, written at once (the node is
%% killed with SIGKILL at some point); anything else as a line "other ...".
seq_recv(Name, File) ->
    io:format("OTP ~s~n", [erlang:system_info(otp_release)]),
    {ok, Fd} = file:open(File, [raw, append, binary]),
    register(recv, self()),
    {ok, _} = net_kernel:start([Name, shortnames]),
    io:format("READY ~s ~s~n", [node(), os:getpid()]),
    seq_loop(Fd).

seq_loop(Fd) ->
    ok = receive
             {seq, N} when is_integer(N) -> file:write(Fd, [integer_to_binary(N), $\n]);
             Other -> file:write(Fd, io_lib:format("other ~0p~n", [Other]))
         end,
    seq_loop(Fd).

watchdog(Test) ->
    timer:sleep(?WATCHDOG_MS),
    io:format("FAIL ~p: watchdog: no verdict after ~p ms~n", [Test, ?WATCHDOG_MS]),
    erlang:halt(1).

%% ------------------------------------------------------------------
%% Tests
%% ------------------------------------------------------------------

%% pg (test_pg.sh): the C node `aemp run` is a peer of this node's pg
%% scope aemp: its echo port is in group aemp_demo; joins and leaves of
%% Erlang processes (atom and binary groups, twice) show at the C side;
%% a dead process's memberships go; the C port killed leaves pg here; a
%% lost connection drops our members there, and a new one brings them
%% back; the scope is the same process from start to end (then a new
%% scope is found by the C nodes and learns their members). The second C
%% node's echo port is seen here and, once the two C nodes are connected,
%% by the first (C to C pg).
test(pg, Nodes) -> pg_test(Nodes);
%% rpc:call, erpc:call and rpc:cast of functions the aemp node exported
%% (aemp:echo/N returns its arguments, aemp:fail/1 raises error), and of a
%% function it did not export (undef, the node keeps serving).
test(rpc, CNode) ->
    Args = [1, <<"two">>, #{3 => [x]}, self(), make_ref()],
    expect(Args, rpc:call(CNode, aemp, echo, Args), rpc_echo),
    expect([], erpc:call(CNode, aemp, echo, []), erpc_echo_no_args),
    expect([1, 2, 3], erpc:call(CNode, aemp, echo, [1, 2, 3]), erpc_echo_string_args),
    expect({badrpc, {'EXIT', {oops, [{aemp, fail, [oops], []}]}}},
           rpc:call(CNode, aemp, fail, [oops]), rpc_fail),
    %% [5] travels as a byte string; the C function still gets a list
    expect({badrpc, {'EXIT', {5, [{aemp, fail, [5], []}]}}},
           rpc:call(CNode, aemp, fail, [5]), rpc_fail_string_args),
    expect(oops, try erpc:call(CNode, aemp, fail, [oops]) catch error:{exception, E, _} -> E end,
           erpc_fail),
    expect({badrpc, {'EXIT', {undef, [{os, cmd, ["id"], []}]}}},
           rpc:call(CNode, os, cmd, ["id"]), not_exported_is_undef),
    expect(true, rpc:cast(CNode, aemp, echo, [cast]), rpc_cast),
    %% a cast runs the C function: aemp:send/2 sends its message back
    CastTag = make_ref(),
    expect(true, rpc:cast(CNode, aemp, send, [self(), {cast_ran, CastTag}]), rpc_cast_send),
    expect(ran, receive {cast_ran, CastTag} -> ran after ?REPLY_MS -> timeout end,
           rpc_cast_ran),
    %% many calls in flight at once all get their own answers
    Parent = self(),
    Pids = [spawn(fun() -> Parent ! {self(), erpc:call(CNode, aemp, echo, [N])} end)
            || N <- lists:seq(1, 200)],
    Results = [receive {P, R} -> R after ?REPLY_MS -> timeout end || P <- Pids],
    expect([[N] || N <- lists:seq(1, 200)], Results, concurrent_calls),
    expect(pong, net_adm:ping(CNode), still_serving);
%% net_adm:ping of the aemp node answers pong, and the node is hidden.
test(ping, CNode) ->
    expect(pong, net_adm:ping(CNode), first_ping),
    expect(true, lists:member(CNode, nodes(hidden)), in_nodes_hidden),
    expect(false, lists:member(CNode, nodes()), not_in_visible_nodes),
    expect(pong, net_adm:ping(CNode), second_ping);
%% With a wrong cookie the aemp node must refuse us.
test(pang, CNode) ->
    expect(pang, net_adm:ping(CNode), ping_with_wrong_cookie),
    expect(false, lists:member(CNode, nodes(connected)), not_connected);
%% Pinging any node (e.g. an aemp node after an EPMD takeover).
test(ping_node, Node) ->
    expect(pong, net_adm:ping(Node), ping);
%% Connect, say so, then expect the node to go away (the script stops it).
test(watch_down, Node) ->
    expect(pong, net_adm:ping(Node), ping),
    erlang:monitor_node(Node, true),
    io:format("CONNECTED ~s~n", [Node]),
    receive
        {nodedown, Node} -> ok
    after 20000 -> no_nodedown_within_20s
    end;
%% Run with the aemp node's short net_ticktime: an idle connection must
%% outlive two tick times (the aemp node ticks when idle) and still work.
test(idle, CNode) ->
    connect(CNode),
    erlang:monitor_node(CNode, true),
    Window = 2 * net_kernel:get_net_ticktime() * 1000,
    receive
        {nodedown, CNode} -> {dropped_while_idle, within_ms, Window}
    after Window ->
        {echo, CNode} ! {self(), still_here},
        receive
            still_here -> ok
        after ?REPLY_MS -> no_echo_after_idle
        end
    end;
%% Two Erlang nodes find each other through the EPMD under test.
test(ping_pair, [A, B]) ->
    expect(pong, net_adm:ping(A), ping_a),
    expect(pong, net_adm:ping(B), ping_b),
    expect(pong, rpc:call(A, net_adm, ping, [B]), a_pings_b),
    expect(pong, rpc:call(B, net_adm, ping, [A]), b_pings_a);
%% Every term type comes back from the echo port exactly.
test(echo_types, CNode) ->
    connect(CNode),
    %% A message to a name nobody registered is dropped, nothing else.
    {no_such_name, CNode} ! {self(), dropped},
    %% After one lost reply the rest wait less, so a systematic loss still
    %% ends well before the watchdog with every mismatch listed.
    {Failures, _} =
        lists:foldl(
            fun(T, {Acc, Wait}) ->
                case echo_check(CNode, T, Wait) of
                    ok -> {Acc, Wait};
                    {lost, F} -> {[F | Acc], 500};
                    {mismatch, F} -> {[F | Acc], Wait}
                end
            end,
            {[], ?REPLY_MS},
            terms() ++ node_terms(CNode)),
    case Failures of
        [] -> ok;
        _ -> {mismatches, length(Failures), lists:reverse(Failures)}
    end;
%% A 4 MB binary round-trips.
test(echo_big, CNode) ->
    connect(CNode),
    Bin = crypto:strong_rand_bytes(4 bsl 20),
    {echo, CNode} ! {self(), Bin},
    receive
        Bin -> ok;
        Other when is_binary(Other) -> {wrong_binary, byte_size(Other)};
        Other -> {unexpected, Other}
    after 15000 -> timeout
    end;
%% 20,000 messages keep their order.
test(echo_order, CNode) ->
    connect(CNode),
    N = 20000,
    [{echo, CNode} ! {self(), I} || I <- lists:seq(1, N)],
    receive_in_order(1, N);
%% A one-way stream of small messages to the bench sink of a C node
%% (bench/aemp_bench.c): the node reads it in batches (checked by the
%% script in the node's log) and counts every message and byte. The stream
%% comes in bursts of 10 messages a millisecond apart, slow enough
%% for a C node under valgrind to keep up (a receiver that falls behind on
%% its own sees large reads and rightly does not batch), then at full speed.
test(batch_stream, CNode) ->
    wait_connect(CNode, 50),
    Sink = {bench_sink, CNode},
    Bursts = 500,
    Fast = 100000,
    N = Bursts * 10 + Fast,
    Bin = binary:copy(<<"b">>, 100),
    Gen = erlang:unique_integer([positive]),
    %% A window larger than N: the sink never acknowledges mid-stream.
    Sink ! {bench_start, self(), N + 1, Gen},
    receive {bench_ready, Gen} -> ok
    after 10000 -> throw(sink_not_ready)
    end,
    %% Paced by the clock, not by sleeps: on a loaded machine a scheduler
    %% that sleeps 1 ms may wake 100 ms later.
    [begin
         [Sink ! Bin || _ <- lists:seq(1, 10)],
         spin(erlang:monotonic_time(microsecond) + 1000)
     end || _ <- lists:seq(1, Bursts)],
    [Sink ! Bin || _ <- lists:seq(1, Fast)],
    Sink ! {bench_end, self(), Gen},
    receive
        {bench_done, Gen, Count, Bytes} ->
            expect({N, N * 100}, {Count, Bytes}, messages_and_bytes_counted)
    after 20000 -> throw(no_bench_done)
    end;
%% The C node (interop-tests/cnode.c, mode `send`) talks to us: first to our
%% registered name, then to our pid only.
test(cnode_peer, CNode) ->
    register(interop, self()),
    io:format("READY ~s ~s~n", [node(), os:getpid()]),
    CPid =
        receive
            {hello, P} when is_pid(P), node(P) =:= CNode -> P;
            Other1 -> throw({unexpected_first_message, Other1})
        after 15000 -> throw(no_hello_to_registered_name)
        end,
    %% From here on only our pid reaches us.
    unregister(interop),
    erlang:monitor_node(CNode, true),
    CPid ! {welcome, self()},
    Expected = #{n => 7, s => <<"ŝtr"/utf8>>, l => [1, -2, 3], f => 1.5, a => 'Ω'},
    receive
        {hello, CPid, Expected} -> ok;
        Other2 -> throw({unexpected_second_message, Other2, expected, {hello, CPid, Expected}})
    after 10000 -> throw(no_hello_to_pid)
    end,
    CPid ! {bye, self(), <<"ok">>},
    %% The C node closes once it has our reply, so the reply was delivered.
    receive
        {nodedown, CNode} -> ok
    after 10000 -> throw(cnode_did_not_disconnect_after_bye)
    end;
%% Hostile but well-formed input to `aemp run`: a module name holding a
%% newline and a forged log line (the C node logs the name, escaped); a
%% message 20,000 levels deep (dropped, logged; the connection stays up); one
%% 5,000 deep goes through its echo port and back unchanged.
test(hostile, CNode) ->
    connect(CNode),
    Evil = list_to_atom("evil\naemp error: forged line"),
    expect({badrpc, {'EXIT', {undef, [{Evil, f, [], []}]}}}, rpc:call(CNode, Evil, f, []),
           evil_module_undef),
    Ok = nest(5000),
    {echo, CNode} ! {self(), Ok},
    expect(Ok, receive M -> M after ?REPLY_MS -> timeout end, deep_5000_echoed),
    {echo, CNode} ! {self(), nest(20000)},
    {echo, CNode} ! {self(), after_deep},
    expect(after_deep, receive M2 -> M2 after ?REPLY_MS -> timeout end, deep_20000_dropped),
    expect(true, lists:member(CNode, nodes(hidden)), still_connected),
    expect(pong, net_adm:ping(CNode), still_serving);
%% 100,000 monitors of one registered C port, then their demonitors
%% (oldest first): each is found by its reference, so this takes about a
%% second where a list searched on every demonitor took minutes; the
%% watchdog bounds it. The port's death afterwards fires none of them.
test(many_monitors, CNode) ->
    connect(CNode),
    N = 100000,
    Refs = [erlang:monitor(process, {echo, CNode}) || _ <- lists:seq(1, N)],
    expect(pong, net_adm:ping(CNode), monitors_made),
    [true = erlang:demonitor(R, [flush]) || R <- Refs],
    expect(pong, net_adm:ping(CNode), demonitors_done),
    %% one more, and the port answers as before
    M = erlang:monitor(process, {echo, CNode}),
    {echo, CNode} ! {self(), still_here},
    expect(still_here, receive still_here -> still_here after ?REPLY_MS -> timeout end, echo),
    true = erlang:demonitor(M, [flush]),
    receive {'DOWN', _, _, _, _} = D -> throw({stray, D}) after 0 -> ok end;
%% While interop-tests/flood.c floods the C node and EPMD from another
%% address: once a second for ten seconds a new connection is made and
%% pinged, a message echoed, and a name registered with EPMD; every round
%% must succeed.
test(flood_ok, CNode) ->
    EpmdPort = case os:getenv("ERL_EPMD_PORT") of
                   false -> 4369;
                   P -> list_to_integer(P)
               end,
    [begin
         erlang:disconnect_node(CNode),
         expect(pong, net_adm:ping(CNode), {ping, Round}),
         {echo, CNode} ! {self(), {round, Round}},
         expect({round, Round}, receive {round, _} = M -> M after ?REPLY_MS -> timeout end,
                {echo, Round}),
         expect(ok, epmd_register(EpmdPort, "reg" ++ integer_to_list(Round)), {epmd, Round}),
         timer:sleep(1000)
     end || Round <- lists:seq(1, 10)],
    ok;
%% The process layer against interop-tests/procnode.c: links, monitors,
%% kills and exit signals in both directions, with OTP's translations.
test(spawn, CNode) -> spawn_test(CNode);
%% the Erlang side of the database alone (aemp_db_interop)
test(db_erlang, Nodes) -> aemp_db_interop:run(Nodes);
test(supervise, CNode) -> supervise_test(CNode);
test(ports, Arg) -> ports_test(Arg);
test(db, Arg) -> db_test(Arg);
test(ports_after, Arg) -> ports_after_test(Arg);
%% procnode.c started with max_watches_per_peer 5: the sixth monitor of a
%% C port fires at once with system_limit, a link beyond the limit breaks
%% at once with it; once one goes another is taken; the C port dies and
%% the five held fire with its real reason.
test(watch_limit, CNode) ->
    connect(CNode),
    process_flag(trap_exit, true),
    P = c_open(CNode),
    [R1 | Rest] = [erlang:monitor(process, P) || _ <- lists:seq(1, 5)],
    M6 = erlang:monitor(process, P),
    expect(system_limit, down_reason(M6), monitor_beyond_limit),
    true = link(P),
    expect(system_limit, receive {'EXIT', P, R} -> R after ?REPLY_MS -> timeout end,
           link_beyond_limit),
    expect(true, c_call(CNode, alive, [P]), port_lives_on),
    true = erlang:demonitor(R1, [flush]),
    M7 = erlang:monitor(process, P),
    ok = c_call(CNode, kill, [P, {gone, far}]),
    [expect({gone, far}, down_reason(M), held_monitor_fires) || M <- Rest ++ [M7]],
    receive {'DOWN', _, _, _, _} = D -> throw({stray, D}) after 0 -> ok end,
    receive {'EXIT', _, _} = E -> throw({stray, E}) after 0 -> ok end;
test(proc, CNode) ->
    connect(CNode),
    process_flag(trap_exit, true),
    %% Erlang monitors a C port; the C side kills it with a reason
    P1 = c_open(CNode),
    M1 = erlang:monitor(process, P1),
    ok = c_call(CNode, kill, [P1, {shutdown, x}]),
    expect({shutdown, x}, down_reason(M1), erl_monitor_sees_reason),
    expect(false, c_call(CNode, alive, [P1]), killed_port_gone),
    %% a monitor of a C port that is gone: noproc at once
    M1b = erlang:monitor(process, P1),
    expect(noproc, down_reason(M1b), erl_monitor_of_dead_port),
    %% Erlang links (trapping exits); the C port dies with boom
    P2 = c_open(CNode),
    true = link(P2),
    ok = c_call(CNode, kill, [P2, boom]),
    expect(boom, receive {'EXIT', P2, R2} -> R2 after ?REPLY_MS -> timeout end,
           erl_link_gets_exit),
    %% exit(CPort, kill): the port dies with killed
    P3 = c_open(CNode),
    M3 = erlang:monitor(process, P3),
    true = exit(P3, kill),
    expect(killed, down_reason(M3), exit_kill_is_killed),
    %% exit(CPort, normal) is ignored by a port
    P4 = c_open(CNode),
    true = exit(P4, normal),
    expect(true, c_call(CNode, alive, [P4]), exit_normal_ignored),
    %% a linked Erlang process dying abnormally takes the C port along;
    %% one exiting normally does not
    P5 = c_open(CNode),
    M5 = erlang:monitor(process, P5),
    linked_dies(P5, crash),
    expect(crash, down_reason(M5), erl_crash_kills_linked_port),
    P6 = c_open(CNode),
    linked_dies(P6, normal),
    expect(true, c_call(CNode, alive, [P6]), erl_normal_exit_spares_port),
    %% a link exit with reason kill stays kill (only exit/2 makes killed)
    P6b = c_open(CNode),
    M6b = erlang:monitor(process, P6b),
    linked_dies(P6b, kill),
    expect(kill, down_reason(M6b), link_kill_stays_kill),
    %% unlink, then the Erlang side dies: the port lives
    P7 = c_open(CNode),
    Pid7 = spawn(fun() -> receive {go, R} -> exit(R) end end),
    ok = c_call(CNode, link, [P7, Pid7]),
    ok = c_call(CNode, unlink, [P7, Pid7]),
    Mon7 = erlang:monitor(process, Pid7),
    Pid7 ! {go, boom},
    expect(boom, down_reason(Mon7), unlinked_process_died),
    expect(true, c_call(CNode, alive, [P7]), unlink_spares_port),
    %% the C port monitors an Erlang process and learns its reason
    P8 = c_open(CNode),
    Pid8 = spawn(fun() -> receive go -> exit({bye, 1}) end end),
    Ref8 = c_call(CNode, monitor, [P8, Pid8]),
    expect(true, is_reference(Ref8), c_monitor_ref),
    Pid8 ! go,
    expect({'DOWN', Ref8, process, Pid8, {bye, 1}}, got(P8), c_monitor_sees_reason),
    %% ... by registered name, as {Name, Node}
    Pid9 = spawn(fun() -> register(aemp_named, self()), receive go -> exit(named_bye) end end),
    wait_registered(aemp_named),
    Ref9 = c_call(CNode, monitor, [P8, {aemp_named, node()}]),
    Pid9 ! go,
    expect({'DOWN', Ref9, process, {aemp_named, node()}, named_bye}, got(P8),
           c_monitor_by_name),
    %% ... a process that is not there: noproc
    Dead = spawn(fun() -> ok end),
    MDead = erlang:monitor(process, Dead),
    expect(normal, down_reason(MDead), dead_is_dead),
    Ref10 = c_call(CNode, monitor, [P8, Dead]),
    expect({'DOWN', Ref10, process, Dead, noproc}, got(P8), c_monitor_of_dead_pid),
    %% ... demonitor: no 'DOWN' comes before a later marker
    Pid11 = spawn(fun() -> receive go -> exit(late) end end),
    Ref11 = c_call(CNode, monitor, [P8, Pid11]),
    expect(ok, c_call(CNode, demonitor, [Ref11]), c_demonitor),
    M11 = erlang:monitor(process, Pid11),
    Pid11 ! go,
    expect(late, down_reason(M11), demonitored_died),
    P8 ! marker,
    expect(marker, got(P8), no_down_after_demonitor),
    %% the C port links to an Erlang process that then dies: the port dies
    P12 = c_open(CNode),
    M12 = erlang:monitor(process, P12),
    Pid12 = spawn(fun() -> receive go -> exit(linked_bye) end end),
    ok = c_call(CNode, link, [P12, Pid12]),
    Pid12 ! go,
    expect(linked_bye, down_reason(M12), c_link_kills_port),
    %% ... and a trapping Erlang process linked from C gets the port's exit
    P13 = c_open(CNode),
    ok = c_call(CNode, link, [P13, self()]),
    ok = c_call(CNode, kill, [P13, {c_side, 13}]),
    expect({c_side, 13}, receive {'EXIT', P13, R13} -> R13 after ?REPLY_MS -> timeout end,
           c_link_exit_reaches_erlang),
    %% exit/2 from a C port to an Erlang process
    Pid14 = spawn(fun() -> receive never -> ok end end),
    M14 = erlang:monitor(process, Pid14),
    P14 = c_open(CNode),
    ok = c_call(CNode, exit, [P14, Pid14, kill]),
    expect(killed, down_reason(M14), c_exit_kill),
    %% a C port sends to an alias (ALIAS_SEND); once it is gone, nothing
    P15 = c_open(CNode),
    Alias = alias(),
    ok = c_call(CNode, send, [P15, Alias, {via_alias, 1}]),
    expect({via_alias, 1}, receive {via_alias, _} = V -> V after ?REPLY_MS -> timeout end,
           alias_send),
    true = unalias(Alias),
    ok = c_call(CNode, send, [P15, Alias, {via_alias, 2}]),
    ok = c_call(CNode, send, [P15, self(), after_alias]),
    expect(after_alias, receive {via_alias, 2} -> leaked; after_alias -> after_alias
                        after ?REPLY_MS -> timeout end, unaliased_drops),
    %% ports with ids past 2^28 and 2^32: Erlang keeps their pids apart
    [begin
         Big = c_call(CNode, open_at, [Id]),
         Big ! {hello, Id},
         expect({hello, Id}, got(Big), {big_id_reachable, Id}),
         MBig = erlang:monitor(process, Big),
         ok = c_call(CNode, kill, [Big, {big, Id}]),
         expect({big, Id}, down_reason(MBig), {big_id_monitor, Id})
     end || Id <- [(1 bsl 28) - 1, (1 bsl 32) + 5]],
    ok;
%% Links and exit signals across the boundary beyond `proc`, both ways, as
%% OTP has them (U: a second Erlang node the C node is not connected to).
test(proc_links, [CNode, U]) ->
    connect(CNode),
    process_flag(trap_exit, true),
    Q = c_open(CNode), % sends pings and exit/2 signals
    %% a C port ends normally: 'DOWN' normal; a linked process that traps
    %% exits gets {'EXIT', P, normal}, one that does not lives
    P1 = c_open(CNode),
    M1 = erlang:monitor(process, P1),
    {Plain1, _} = waiter(P1, false),
    {Trap1, _} = waiter(P1, true),
    ok = c_call(CNode, kill, [P1, normal]),
    expect(normal, down_reason(M1), c_normal_down),
    expect({'EXIT', P1, normal}, waiter_got(Trap1), c_normal_reaches_trapper),
    still_alive(CNode, Q, Plain1, c_normal_spares_linked),
    %% a C port dies with a reason: a linked process dies with it, one that
    %% traps exits gets {'EXIT', P, Reason} and lives
    P2 = c_open(CNode),
    {_, MPlain2} = waiter(P2, false),
    {Trap2, _} = waiter(P2, true),
    ok = c_call(CNode, kill, [P2, {crash, 2}]),
    expect({crash, 2}, down_reason(MPlain2), c_death_kills_linked),
    expect({'EXIT', P2, {crash, 2}}, waiter_got(Trap2), c_death_reaches_trapper),
    still_alive(CNode, Q, Trap2, trapper_lives),
    %% exit(P, kill) from Erlang: the port dies with killed, and so do the
    %% processes linked to it (killed is an ordinary reason)
    P3 = c_open(CNode),
    M3 = erlang:monitor(process, P3),
    {_, MPlain3} = waiter(P3, false),
    {Trap3, _} = waiter(P3, true),
    true = exit(P3, kill),
    expect(killed, down_reason(M3), exit_kill_is_killed),
    expect(killed, down_reason(MPlain3), exit_kill_gives_killed_to_links),
    expect({'EXIT', P3, killed}, waiter_got(Trap3), exit_kill_killed_to_trapper),
    %% exit(P, Reason) from Erlang: the port and its links die with Reason
    P4 = c_open(CNode),
    M4 = erlang:monitor(process, P4),
    {_, MPlain4} = waiter(P4, false),
    true = exit(P4, {shutdown, 4}),
    expect({shutdown, 4}, down_reason(M4), erl_exit2_kills_port),
    expect({shutdown, 4}, down_reason(MPlain4), erl_exit2_reason_to_links),
    %% the C side's exit/2 with kill: the Erlang process dies with killed,
    %% and a C port linked to it with killed
    {E5, ME5} = waiter(none, false),
    P5 = c_open(CNode),
    M5 = erlang:monitor(process, P5),
    ok = c_call(CNode, link, [P5, E5]),
    ok = c_call(CNode, exit, [Q, E5, kill]),
    expect(killed, down_reason(ME5), c_exit_kill),
    expect(killed, down_reason(M5), c_exit_kill_killed_to_c_links),
    %% Erlang's exit(E, kill) of a process a C port is linked to
    {E6, ME6} = waiter(none, false),
    P6 = c_open(CNode),
    M6 = erlang:monitor(process, P6),
    ok = c_call(CNode, link, [P6, E6]),
    true = exit(E6, kill),
    expect(killed, down_reason(ME6), erl_exit_kill),
    expect(killed, down_reason(M6), erl_exit_kill_killed_to_c_links),
    %% the C side's exit/2 with other reasons: one that traps exits gets
    %% {'EXIT', From, Reason} (normal too) and lives, until kill; one that
    %% does not ignores normal and dies of the rest
    {E7, ME7} = waiter(none, true),
    ok = c_call(CNode, exit, [Q, E7, {stop, 7}]),
    expect({'EXIT', Q, {stop, 7}}, waiter_got(E7), c_exit_to_trapper),
    ok = c_call(CNode, exit, [Q, E7, normal]),
    expect({'EXIT', Q, normal}, waiter_got(E7), c_exit_normal_to_trapper),
    ok = c_call(CNode, exit, [Q, E7, kill]),
    expect(killed, down_reason(ME7), c_exit_kill_not_trappable),
    {E8, ME8} = waiter(none, false),
    ok = c_call(CNode, exit, [Q, E8, normal]),
    still_alive(CNode, Q, E8, c_exit_normal_ignored),
    ok = c_call(CNode, exit, [Q, E8, {stop, 8}]),
    expect({stop, 8}, down_reason(ME8), c_exit_kills),
    %% Erlang unlinks (UNLINK_ID: the link stays half-gone on the Erlang
    %% side until C acknowledges), then the C port links: the new link holds
    P9 = c_open(CNode),
    {W9, _} = waiter(P9, true),
    true = waiter_run(W9, fun() -> unlink(P9) end),
    ok = c_call(CNode, link, [P9, W9]),
    ok = c_call(CNode, kill, [P9, {relinked, 9}]),
    expect({'EXIT', P9, {relinked, 9}}, waiter_got(W9), erl_unlink_acked_then_c_link),
    %% Erlang unlinks: neither death travels any more
    P10 = c_open(CNode),
    M10 = erlang:monitor(process, P10),
    {W10, MW10} = waiter(P10, true),
    true = waiter_run(W10, fun() -> unlink(P10) end),
    ok = c_call(CNode, kill, [P10, {unlinked, 10}]),
    expect({unlinked, 10}, down_reason(M10), unlinked_port_died),
    still_alive(CNode, Q, W10, erl_unlink_port_death_stays),
    P10b = c_open(CNode),
    {W10b, MW10b} = waiter(P10b, false),
    true = waiter_run(W10b, fun() -> unlink(P10b) end),
    W10b ! {stop, gone},
    expect(gone, down_reason(MW10b), unlinked_process_died),
    expect(true, c_call(CNode, alive, [P10b]), erl_unlink_process_death_stays),
    exit(W10, kill),
    expect(killed, down_reason(MW10), w10_gone),
    %% the C port links, unlinks (UNLINK_ID, acknowledged by Erlang) and
    %% links again: the link holds; linked and unlinked: nothing travels
    P11 = c_open(CNode),
    {W11, _} = waiter(none, true),
    ok = c_call(CNode, link, [P11, W11]),
    ok = c_call(CNode, unlink, [P11, W11]),
    ok = c_call(CNode, link, [P11, W11]),
    ok = c_call(CNode, kill, [P11, {relinked, 11}]),
    expect({'EXIT', P11, {relinked, 11}}, waiter_got(W11), c_unlink_then_link),
    P12 = c_open(CNode),
    ok = c_call(CNode, link, [P12, W11]),
    ok = c_call(CNode, unlink, [P12, W11]),
    ok = c_call(CNode, kill, [P12, {unlinked, 12}]),
    still_alive(CNode, Q, W11, c_unlink_port_death_stays),
    %% link and unlink at once to a process on a node the C node is not
    %% connected to yet: both wait for the handshake, the unlink goes in the
    %% form every OTP release accepts (OTP 26+ drops a connection that
    %% sends the old UNLINK) and the process lives on
    {Wu, _} = waiter(U, none, false),
    P13 = c_open(CNode),
    ok = c_call(CNode, link_unlink, [P13, Wu]),
    still_alive(CNode, P13, Wu, link_unlink_while_connecting),
    ok = c_call(CNode, kill, [P13, {unlinked, 13}]),
    still_alive(CNode, Q, Wu, link_unlink_while_connecting_no_link),
    %% a C port monitors a name nobody registered: noproc
    P14 = c_open(CNode),
    R14 = c_call(CNode, monitor, [P14, {aemp_nobody, node()}]),
    expect({'DOWN', R14, process, {aemp_nobody, node()}, noproc}, got(P14),
           c_monitor_of_unregistered_name),
    no_stray();
%% Lost connections fire every monitor and link over them with
%% noconnection: first the C node's to U, whose node is killed (kill -9),
%% then ours to the C node (disconnect_node), seen from both sides.
test(proc_lost, [CNode, U]) ->
    connect(CNode),
    process_flag(trap_exit, true),
    %% on U: a process C monitors by pid, one by name, one a C port links
    %% to, one that links to a C port
    Pw = c_open(CNode),
    {U1, _} = waiter(U, none, false),
    {U2, _} = waiter(U, none, false),
    true = waiter_run(U2, fun() -> register(aemp_lost, self()) end),
    {U3, _} = waiter(U, none, false),
    Pl1 = c_open(CNode),
    ok = c_call(CNode, link, [Pl1, U3]),
    Pl2 = c_open(CNode),
    {U4, _} = waiter(U, Pl2, true),
    %% U4's link reached the C node before this message, which Pl2 forwards
    waiter_run(U4, fun() -> Pl2 ! linked_from_u end),
    expect(linked_from_u, got(Pl2), u_link_made),
    R1 = c_call(CNode, monitor, [Pw, U1]),
    R2 = c_call(CNode, monitor, [Pw, {aemp_lost, U}]),
    R3 = c_call(CNode, monitor, [Pw, Pl1]),
    R4 = c_call(CNode, monitor, [Pw, Pl2]),
    UPid = rpc:call(U, os, getpid, []),
    _ = os:cmd("kill -9 " ++ UPid),
    Downs1 = lists:sort([got(Pw) || _ <- lists:seq(1, 4)]),
    expect(lists:sort([{'DOWN', R1, process, U1, noconnection},
                       {'DOWN', R2, process, {aemp_lost, U}, noconnection},
                       {'DOWN', R3, process, Pl1, noconnection},
                       {'DOWN', R4, process, Pl2, noconnection}]),
           Downs1, c_side_after_kill_9),
    %% our own monitors of U's processes fired too (Erlang's business)
    [receive {'DOWN', _, process, W, noconnection} -> ok after ?REPLY_MS -> throw({no_down, W}) end
     || W <- [U1, U2, U3, U4]],
    %% between this node and the C node: monitors and links made from here
    Pa = c_open(CNode),
    Ma = erlang:monitor(process, Pa),
    Mn = erlang:monitor(process, {ctl, CNode}),
    Pb = c_open(CNode),
    true = link(Pb),
    Pc = c_open(CNode),
    {_, MWc} = waiter(Pc, false),
    %% ... and from the C node
    {Wd, _} = waiter(none, true),
    Pd = c_open(CNode),
    ok = c_call(CNode, link, [Pd, Wd]),
    {We, MWe} = waiter(none, false),
    Pe = c_open(CNode),
    ok = c_call(CNode, link, [Pe, We]),
    {Wf, _} = waiter(none, false),
    true = waiter_run(Wf, fun() -> register(aemp_lost2, self()) end),
    Pw2 = c_open(CNode),
    Rf = c_call(CNode, monitor, [Pw2, Wf]),
    Rn = c_call(CNode, monitor, [Pw2, {aemp_lost2, node()}]),
    Refs = [{c_call(CNode, monitor, [Pw2, P]), P} || P <- [Pb, Pc, Pd, Pe]],
    true = erlang:disconnect_node(CNode),
    expect(noconnection, down_reason(Ma), erl_monitor_noconnection),
    expect(noconnection, down_reason(Mn), erl_name_monitor_noconnection),
    expect({'EXIT', Pb, noconnection},
           receive {'EXIT', Pb, _} = X -> X after ?REPLY_MS -> timeout end,
           erl_link_noconnection),
    expect(noconnection, down_reason(MWc), erl_linked_process_dies),
    expect({'EXIT', Pd, noconnection}, waiter_got(Wd), c_link_noconnection_to_trapper),
    expect(noconnection, down_reason(MWe), c_link_noconnection_kills),
    %% the C side's 'DOWN's come once it connects again to send them
    Downs2 = lists:sort([got(Pw2) || _ <- lists:seq(1, 6)]),
    expect(lists:sort([{'DOWN', Rf, process, Wf, noconnection},
                       {'DOWN', Rn, process, {aemp_lost2, node()}, noconnection}
                       | [{'DOWN', R, process, P, noconnection} || {R, P} <- Refs]]),
           Downs2, c_side_after_disconnect),
    %% the port that was only monitored lives; the C node serves as before
    expect(true, c_call(CNode, alive, [Pa]), monitored_port_lives),
    expect(false, c_call(CNode, alive, [Pb]), linked_port_gone),
    still_alive(CNode, Pa, Wf, monitored_process_lives),
    no_stray();
%% Calls both ways with callnode.c: Erlang's rpc, erpc and gen_server calls
%% into C (compared with the same calls on this node), and the C node's
%% aemp_call, aemp_gen_call and aemp_cal into Erlang.
test(calls, CNode) ->
    connect(CNode),
    Me = node(),
    %% rpc:call, erpc:call, erpc:send_request of C functions: each result
    %% kind as OTP gives it for the same function on an Erlang node (erpc
    %% with a timeout spawns even on this node); stacks differ
    Kinds = [{return, {v, 1}}, {throw, t}, {error, {badmatch, 2}}, {exit, gone}],
    [begin
         expect(strip(erpc_result(Me, K, V)), strip(erpc_result(CNode, K, V)), {erpc, K}),
         expect(strip(rpc:call(Me, ?MODULE, kind, [K, V])),
                strip(rpc:call(CNode, ?MODULE, kind, [K, V])), {rpc, K}),
         ReqE = erpc:send_request(Me, ?MODULE, kind, [K, V]),
         ReqC = erpc:send_request(CNode, ?MODULE, kind, [K, V]),
         expect(strip(response(ReqE)), strip(response(ReqC)), {send_request, K})
     end || {K, V} <- Kinds],
    expect({ok, {v, 1}}, erpc_result(CNode, return, {v, 1}), erpc_return),
    %% rpc:multicall and erpc:multicall over the C node and this one
    expect({[mc, mc], []}, rpc:multicall([Me, CNode], ?MODULE, kind, [return, mc]), multicall),
    {[BadE, BadC], []} = rpc:multicall([Me, CNode], ?MODULE, kind, [error, boom]),
    expect(strip(BadE), strip(BadC), multicall_error),
    Nowhere = list_to_atom("nosuch@" ++ tl(lists:dropwhile(fun(C) -> C =/= $@ end,
                                                           atom_to_list(Me)))),
    expect({[mc], [Nowhere]}, rpc:multicall([CNode, Nowhere], ?MODULE, kind, [return, mc]),
           multicall_bad_node),
    expect([{ok, emc}, {ok, emc}], erpc:multicall([Me, CNode], ?MODULE, kind, [return, emc]),
           erpc_multicall),
    %% erpc:cast runs the C function (it sends us a message)
    CastRef = make_ref(),
    expect(ok, erpc:cast(CNode, ?MODULE, tell, [self(), {cast_ran, CastRef}]), erpc_cast),
    expect(ran, receive {cast_ran, CastRef} -> ran after ?REPLY_MS -> timeout end,
           erpc_cast_ran),
    %% the caller's timeout: the C function blocks its node past it; the
    %% node serves the next call, and nothing late reaches the caller
    expect({error, {erpc, timeout}},
           try erpc:call(CNode, ?MODULE, sleep, [600], 100) catch C1:R1 -> {C1, R1} end,
           erpc_timeout),
    expect({badrpc, timeout}, rpc:call(CNode, ?MODULE, sleep, [600], 100), rpc_timeout),
    expect(after_timeout, erpc:call(CNode, ?MODULE, kind, [return, after_timeout]),
           served_after_timeout),
    expect(ok, no_stray(), nothing_late_after_timeout),
    %% gen_server:call of a C port (aemp_gen_reply): by name with the
    %% default timeout, by pid without one, as send_request, with a plain
    %% reference tag and with a [[alias|A]|_] tag
    expect({ok, x}, gen_server:call({gsrv, CNode}, {echo, x}), gen_call_by_name),
    GPid = gen_server:call({gsrv, CNode}, whoami),
    expect({ok, y}, gen_server:call(GPid, {echo, y}, infinity), gen_call_by_pid),
    GReq = gen_server:send_request({gsrv, CNode}, {echo, z}),
    expect({reply, {ok, z}}, gen_server:wait_response(GReq, ?REPLY_MS), gen_send_request),
    PlainTag = make_ref(),
    GPid ! {'$gen_call', {self(), PlainTag}, {echo, w}},
    expect({ok, w}, receive {PlainTag, W} -> W after ?REPLY_MS -> timeout end, plain_tag),
    A = alias(),
    ATag = [[alias | A] | x],
    GPid ! {'$gen_call', {self(), ATag}, {echo, v}},
    expect({ok, v}, receive {ATag, AV} -> AV after ?REPLY_MS -> timeout end, alias_list_tag),
    unalias(A),
    %% a C port that answers after the caller's timeout: the late reply is
    %% dropped (the caller's alias is gone)
    expect(timeout, try gen_server:call({gsrv, CNode}, hold, 100)
                    catch exit:{timeout, _} -> timeout end, gen_call_timeout),
    expect({ok, released}, gen_server:call({gsrv, CNode}, {release, late}), released),
    expect(ok, no_stray(), late_gen_reply_dropped),
    %% C into Erlang: aemp_call, each kind mapped as erpc maps it
    expect({return, {v, 1}}, c_call(CNode, call, [Me, ?MODULE, kind, [return, {v, 1}], 5000]),
           c_call_return),
    expect({throw, t}, c_call(CNode, call, [Me, ?MODULE, kind, [throw, t], 0]), c_call_throw),
    expect({error, {badmatch, 2}}, c_call(CNode, call, [Me, ?MODULE, kind, [error, {badmatch, 2}],
                                                        0]), c_call_error),
    expect({exit, gone}, c_call(CNode, call, [Me, ?MODULE, kind, [exit, gone], 0]), c_call_exit),
    expect({error, undef}, c_call(CNode, call, [Me, no_such_module, f, [1], 0]), c_call_undef),
    %% output of the called function goes to the C side (answered, dropped)
    expect({return, ok}, c_call(CNode, call, [Me, io, format, ["printed~n"], 0]), c_call_io),
    %% killed by an exit signal: {signal, Reason}
    STag = c_start(CNode, call, [Me, ?MODULE, hold_then, [self()], 0]),
    Held = receive {holding, HP} -> HP after ?REPLY_MS -> throw(not_holding) end,
    exit(Held, die),
    expect({exit, {signal, die}}, c_wait(STag), c_call_signal),
    %% a timeout abandons the call: the process runs on to its end
    TTag = c_start(CNode, call, [Me, ?MODULE, sleep_tell, [300, self(), slept], 50]),
    expect(timeout, c_wait(TTag), c_call_timeout),
    expect(slept, receive slept -> slept after ?REPLY_MS -> timeout end, abandoned_call_ran),
    expect({return, sync}, c_call(CNode, call, [Me, ?MODULE, kind, [return, sync], 0]), sync),
    expect(ok, no_stray(), c_call_answered_once),
    expect({noconnection, noconnection}, c_call(CNode, call, [Nowhere, m, f, [], 0]),
           c_call_nowhere),
    %% aemp_gen_call of a gen_server (alias replies)
    {ok, GS} = gen_server:start({local, aemp_gs}, ?MODULE, gs, []),
    expect({return, {echoed, 1}}, c_call(CNode, gen_call, [{aemp_gs, Me}, {echo, 1}, 5000]),
           c_gen_call_by_name),
    expect({return, {echoed, 2}}, c_call(CNode, gen_call, [GS, {echo, 2}, 0]), c_gen_call_by_pid),
    expect({exit, noproc}, c_call(CNode, gen_call, [{nobody, Me}, x, 0]), c_gen_call_noproc),
    expect(timeout, c_call(CNode, gen_call, [GS, {sleep, 300}, 50]), c_gen_call_timeout),
    expect({return, {echoed, 3}}, c_call(CNode, gen_call, [GS, {echo, 3}, 0]), c_gen_call_after),
    expect(ok, no_stray(), c_gen_call_late_reply_dropped),
    expect({exit, {shutdown, asked}}, c_call(CNode, gen_call, [GS, stop, 0]), c_gen_call_death),
    %% aemp_cal: the reply pid appended; timeout; without one, death
    Cal = spawn(fun cal_loop/0),
    register(aemp_cal, Cal),
    expect({return, {pong, 1}}, c_call(CNode, cal, [Cal, {ping, 1}, 5000]), c_cal_pid),
    expect({return, {pong, 2}}, c_call(CNode, cal, [{aemp_cal, Me}, {ping, 2}, 0]), c_cal_name),
    expect({return, hi}, c_call(CNode, cal, [Cal, hello, 0]), c_cal_not_a_tuple),
    expect(timeout, c_call(CNode, cal, [Cal, {ignore, 1}, 50]), c_cal_timeout),
    expect({exit, bye}, c_call(CNode, cal, [Cal, {die, bye}, 0]), c_cal_death),
    expect({exit, noproc}, c_call(CNode, cal, [Cal, {ping, 3}, 0]), c_cal_noproc),
    expect(ok, no_stray(), c_calls_answered_once),
    ok;
%% The module aemp_demo of `aemp run` (EchoId: the port ID of its echo
%% port; echo_port spawned from here), then the CLI against this node,
%% step by step with the script (aemp rpc and aemp cal need no step: cal's
%% targets are calee and dier):
%% three messages from `aemp snd` (to the name inbox, to this process's pid
%% written as a port ID, to {inbox, Node}), `aemp mon` of victim (which
%% then exits with a reason the script checks), and last `aemp mon` of idle:
%% this node then halts, which ends that monitor with the connection.
test(cli, [CNode, EchoId]) ->
    Terms = [0, -1, 1 bsl 70, 1.5, 'Ω', <<"b">>, <<1:3>>, "str", [a | b], {t, [1]},
             #{k => [v], 2 => 1.0}, self(), make_ref(), fun lists:sum/1],
    [expect(T, rpc:call(CNode, aemp_demo, echo, [T]), {demo_echo, T}) || T <- Terms],
    expect(x, erpc:call(CNode, aemp_demo, echo, [x]), demo_echo_erpc),
    expect({badrpc, {'EXIT', {undef, [{aemp_demo, echo, [1, 2], []}]}}},
           rpc:call(CNode, aemp_demo, echo, [1, 2]), demo_echo_other_arity),
    expect({badrpc, {'EXIT', {{oops, 1}, [{aemp_demo, crash, [{oops, 1}], []}]}}},
           rpc:call(CNode, aemp_demo, crash, [{oops, 1}]), demo_crash),
    expect(boom, try erpc:call(CNode, aemp_demo, crash, [boom])
                 catch error:{exception, E, _} -> E end, demo_crash_erpc),
    Echo = pid_of(EchoId),
    {echo, CNode} ! {self(), before_kill},
    expect(before_kill, receive M -> M after ?REPLY_MS -> timeout end, echo_alive),
    Mon = erlang:monitor(process, Echo),
    expect(ok, rpc:call(CNode, aemp_demo, kill, [Echo, {bye, <<"now">>}]), demo_kill),
    expect({bye, <<"now">>}, down_reason(Mon), demo_killed),
    %% echo_port: a port spawned from here, echoing as echo does
    P = spawn(CNode, aemp_demo, echo_port, []),
    P ! {self(), via_port},
    expect(via_port, receive M2 -> M2 after ?REPLY_MS -> timeout end, echo_port_echoes),
    expect({x, [1]}, gen_server:call(P, {x, [1]}), echo_port_gen_call),
    PMon = erlang:monitor(process, P),
    expect(ok, rpc:call(CNode, aemp_demo, kill, [P, {done, 1}]), demo_kill_spawned),
    expect({done, 1}, down_reason(PMon), echo_port_killed),
    {_, PMon2} = spawn_monitor(CNode, aemp_demo, echo_port, [x]),
    expect({undef, [{aemp_demo, echo_port, [x], []}]}, down_reason(PMon2), echo_port_arity),
    expect(badarg, case rpc:call(CNode, aemp_demo, kill, [self(), x]) of
                       {badrpc, {'EXIT', {R, _}}} -> R;
                       Other -> Other
                   end, demo_kill_not_a_port_there),
    %% for aemp cal: calee answers {ping, N, From} with {pong, N} and
    %% ignores the rest; dier exits with the reason it is given
    register(calee, spawn(fun Calee() ->
                                  receive
                                      {ping, N, From} -> From ! {pong, N};
                                      _ -> ok
                                  end,
                                  Calee()
                          end)),
    register(dier, spawn(fun() -> receive {die, Why, _} -> exit(Why) end end)),
    %% aemp snd
    register(inbox, self()),
    io:format("INBOX ~s~n", [port_id(self())]),
    Sent = {hello, [1, 2 | 3], #{k => <<"v">>, 1 => 1.0}, 1 bsl 70, "str", -1.5, 'Ω',
            <<1:3>>, [], <<>>},
    [expect(Want, receive Got -> Got after ?REPLY_MS * 4 -> timeout end, {snd, N})
     || {N, Want} <- [{1, Sent}, {2, {to_pid, self()}}, {3, three}]],
    %% aemp mon
    Victim = spawn(fun() -> receive {die, Why} -> exit(Why) end end),
    register(victim, Victim),
    io:format("VICTIM~n"),
    wait_monitored(Victim),
    Victim ! {die, {shutdown, {<<"bye">>, 42}}},
    Idle = spawn(fun() -> receive never -> ok end end),
    register(idle, Idle),
    io:format("IDLE~n"),
    wait_monitored(Idle).

%% The pg test (see test(pg, _)).
pg_test([CNode, CNode2]) ->
    {ok, Scope} = pg:start(aemp),
    connect(CNode),
    Echo = pg_until(fun() -> pg_member_of(aemp_demo, CNode) end, c_port_in_pg),
    pg_c(CNode, aemp_demo, [Echo]),
    connect(CNode2),
    Echo2 = pg_until(fun() -> pg_member_of(aemp_demo, CNode2) end, c2_port_in_pg),
    %% CNode sends to CNode2's echo port: connected, they find each other
    ok = rpc:call(CNode, aemp, send, [Echo2, {self(), hi}]),
    receive hi -> ok after ?REPLY_MS -> throw(no_echo_from_c2) end,
    pg_c(CNode, aemp_demo, [Echo, Echo2]),
    pg_c(CNode2, aemp_demo, [Echo, Echo2]),
    Hold = fun() -> receive stop -> ok end end,
    P1 = spawn(Hold),
    P2 = spawn(Hold),
    ok = pg:join(aemp, g1, P1),
    ok = pg:join(aemp, g1, [P1, P2]),
    ok = pg:join(aemp, aemp_demo, P2),
    ok = pg:join(aemp, <<"g2">>, P1),
    ok = pg:join(aemp, {other, group}, P1),
    pg_c(CNode, g1, [P1, P2]),
    pg_c(CNode, <<"g1">>, [P1, P2]),
    pg_c(CNode, aemp_demo, [Echo, Echo2, P2]),
    pg_c(CNode, g2, [P1]),
    %% P1 joined g1 twice: one leave keeps it there (the probe group
    %% orders the check after the leave)
    ok = pg:leave(aemp, g1, P1),
    ok = pg:join(aemp, probe, P2),
    pg_c(CNode, probe, [P2]),
    pg_c(CNode, g1, [P1, P2]),
    ok = pg:leave(aemp, g1, P1),
    pg_c(CNode, g1, [P2]),
    exit(P2, kill),
    pg_c(CNode, g1, []),
    pg_c(CNode, aemp_demo, [Echo, Echo2]),
    %% the C port killed: it leaves pg here and at the other C node
    ok = rpc:call(CNode, aemp_demo, kill, [Echo, bye]),
    pg_until(fun() -> pg:get_members(aemp, aemp_demo) =:= [Echo2] end, c_port_left_pg),
    pg_c(CNode2, aemp_demo, [Echo2]),
    %% a lost connection: the C node drops our members; connected again,
    %% it finds the scope again (what left meanwhile stays gone)
    true = erlang:disconnect_node(CNode),
    pg_until(fun() -> not lists:member(CNode, nodes(hidden)) end, disconnected),
    ok = pg:leave(aemp, <<"g2">>, P1),
    expect([], rpc:call(CNode, aemp_demo, members, [g2]), c_dropped_members),
    ok = pg:join(aemp, g3, P1),
    pg_c(CNode, g3, [P1]),
    pg_c(CNode, g2, []),
    %% the scope never crashed
    expect(Scope, whereis(aemp), same_scope),
    %% a new scope (after this one was killed) is found by the C nodes
    %% (Erlang's discovers only visible nodes)
    Mon = monitor(process, Scope),
    exit(Scope, kill),
    receive {'DOWN', Mon, process, Scope, killed} -> ok end,
    {ok, _} = pg:start(aemp),
    pg_until(fun() -> pg:get_members(aemp, aemp_demo) =:= [Echo2] end, c_found_new_scope),
    pg_c(CNode2, g3, []),
    ok = pg:join(aemp, g4, P1),
    pg_c(CNode2, g4, [P1]),
    ok.

%% The one member of group G on node Node, else false.
pg_member_of(G, Node) ->
    case [P || P <- pg:get_members(aemp, G), node(P) =:= Node] of
        [P] -> P;
        _ -> false
    end.

%% Poll F until it returns something other than false (5 s at most).
pg_until(F, What) -> pg_until(F, What, 250).
pg_until(F, What, 0) -> throw({timeout, What, F()});
pg_until(F, What, N) ->
    case F() of
        false -> timer:sleep(20), pg_until(F, What, N - 1);
        V -> V
    end.

%% The C node sees exactly Want (in any order) in group G of scope aemp.
pg_c(CNode, G, Want) ->
    Sorted = lists:sort(Want),
    pg_until(fun() ->
                     case rpc:call(CNode, aemp_demo, members, [G]) of
                         L when is_list(L) -> lists:sort(L) =:= Sorted;
                         Other -> throw({members, G, Other})
                     end
             end, {c_members, G, Want}).

%% Remotely called functions, the same as callnode.c's exports.
kind(return, V) -> V;
kind(throw, V) -> throw(V);
kind(error, V) -> error(V);
kind(exit, V) -> exit(V).

sleep_tell(Ms, Pid, Msg) ->
    timer:sleep(Ms),
    Pid ! Msg,
    done.

hold_then(Pid) ->
    Pid ! {holding, self()},
    receive never -> ok end.

%% The gen_server the C node calls (its init/1 is with the supervisor's).
handle_call({echo, X}, _From, S) -> {reply, {echoed, X}, S};
handle_call({sleep, Ms}, _From, S) -> timer:sleep(Ms), {reply, slept, S};
handle_call(stop, _From, S) -> {stop, {shutdown, asked}, S}.

handle_cast(_, S) -> {noreply, S}.

cal_loop() ->
    receive
        {ping, X, R} -> R ! {pong, X}, cal_loop();
        {hello, R} -> R ! hi, cal_loop();
        {die, Why, _} -> exit(Why);
        _ -> cal_loop()
    end.

%% ------------------------------------------------------------------
%% Helpers
%% ------------------------------------------------------------------

%% erpc:call of kind/2 on Node: {ok, Value} or {Class, Reason}.
erpc_result(Node, K, V) ->
    try {ok, erpc:call(Node, ?MODULE, kind, [K, V], ?REPLY_MS)} catch C:R -> {C, R} end.

response(ReqId) ->
    try {ok, erpc:receive_response(ReqId, ?REPLY_MS)} catch C:R -> {C, R} end.

%% A result without the stack Erlang and C fill in differently.
strip({error, {exception, R, Stack}}) when is_list(Stack) -> {error, {exception, R}};
strip({badrpc, {'EXIT', {R, Stack}}}) when is_list(Stack) -> {badrpc, {'EXIT', R}};
strip(X) -> X.

%% A request to callnode's ctl port, answered later: c_wait(Tag).
c_start(CNode, Op, Args) ->
    Tag = make_ref(),
    {ctl, CNode} ! list_to_tuple([Op, self(), Tag | Args]),
    Tag.

c_wait(Tag) ->
    receive
        {reply, Tag, Result} -> Result
    after ?REPLY_MS -> throw({no_reply, Tag})
    end.

%% Register Name with the EPMD on Port (ALIVE2_REQ, version 6), as a node
%% does; ok when EPMD accepts it. The registration ends with the socket.
epmd_register(Port, Name) ->
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, Port, [binary, {packet, 0}, {active, false}],
                              ?REPLY_MS),
    N = list_to_binary(Name),
    Req = <<120, 4711:16, 72, 0, 6:16, 6:16, (byte_size(N)):16, N/binary, 0:16>>,
    ok = gen_tcp:send(S, <<(byte_size(Req)):16, Req/binary>>),
    R = case gen_tcp:recv(S, 2, ?REPLY_MS) of
            {ok, <<118, 0>>} -> ok;
            {ok, <<121, 0>>} -> ok;
            Other -> {epmd_answered, Other}
        end,
    gen_tcp:close(S),
    R.

%% The pid written as a port ID, node#<id.serial.creation> (as aemp_addr_format).
pid_of(Id) ->
    [Node, Rest] = string:split(Id, "#"),
    {ok, [I, S, C], []} = io_lib:fread("<~d.~d.~d>", Rest),
    N = list_to_binary(Node),
    binary_to_term(<<131, 88, 119, (byte_size(N)), N/binary, I:32, S:32, C:32>>).

port_id(Pid) ->
    <<131, 88, 119, L, N:L/binary, I:32, S:32, C:32>> = term_to_binary(Pid, [{minor_version, 2}]),
    io_lib:format("~s#<~b.~b.~b>", [N, I, S, C]).

%% Until some process (here: of another node) monitors Pid.
wait_monitored(Pid) ->
    case erlang:process_info(Pid, monitored_by) of
        {monitored_by, []} -> timer:sleep(10), wait_monitored(Pid);
        {monitored_by, _} -> ok
    end.

nest(0) -> leaf;
nest(N) -> [nest(N - 1)].

%% A request to procnode's ctl port; its result.
c_call(CNode, Op, Args) ->
    Tag = make_ref(),
    {ctl, CNode} ! list_to_tuple([Op, self(), Tag | Args]),
    receive
        {reply, Tag, Result} -> Result
    after ?REPLY_MS -> throw({no_reply, Op, Args})
    end.

c_open(CNode) -> c_call(CNode, open, []).

%% The next message a forwarding C port got.
got(Port) ->
    receive
        {got, Port, M} -> M
    after ?REPLY_MS -> throw({nothing_from, Port})
    end.

down_reason(Mon) ->
    receive
        {'DOWN', Mon, process, _, Reason} -> Reason
    after ?REPLY_MS -> throw({no_down, Mon})
    end.

%% A process on this node (or on Node), linked to Port unless Port is
%% none, trapping exits if Trap, with our monitor: it forwards every
%% message it gets to us as {waiter, W, Msg}, runs the funs we send it
%% (waiter_run) and exits with R on {stop, R}.
waiter(Port, Trap) -> waiter(node(), Port, Trap).

waiter(Node, Port, Trap) ->
    Parent = self(),
    W = spawn(Node, fun() ->
                            process_flag(trap_exit, Trap),
                            Port =:= none orelse link(Port),
                            Parent ! {linked, self()},
                            waiter_loop(Parent)
                    end),
    M = erlang:monitor(process, W),
    receive
        {linked, W} -> {W, M}
    after ?REPLY_MS -> throw({waiter_not_started, Node})
    end.

waiter_loop(Parent) ->
    receive
        {run, Parent, F} -> Parent ! {ran, self(), F()};
        {stop, R} -> exit(R);
        M -> Parent ! {waiter, self(), M}
    end,
    waiter_loop(Parent).

waiter_run(W, F) ->
    W ! {run, self(), F},
    receive
        {ran, W, R} -> R
    after ?REPLY_MS -> throw({waiter_did_not_run, W})
    end.

%% The next message waiter W forwarded (or that it died).
waiter_got(W) ->
    receive
        {waiter, W, M} -> M;
        {'DOWN', _, process, W, R} -> {waiter_died, R}
    after ?REPLY_MS -> {nothing_from_waiter, W}
    end.

%% Waiter W lives after every signal the C node sent it so far: a ping
%% from C port From, sent after them over the same connection, reaches it.
still_alive(CNode, From, W, What) ->
    Ping = {ping, make_ref()},
    ok = c_call(CNode, send, [From, W, Ping]),
    expect(Ping, waiter_got(W), What).

no_stray() ->
    receive
        M -> {stray_message, M}
    after 0 -> ok
    end.

%% A process linked to Port that then exits with Reason.
linked_dies(Port, Reason) ->
    Pid = spawn(fun() -> true = link(Port), receive go -> exit(Reason) end end),
    M = erlang:monitor(process, Pid),
    %% the link travels before go: both leave this node in order
    Pid ! go,
    expect(Reason, down_reason(M), {linked_process_died, Reason}).

wait_registered(Name) ->
    case whereis(Name) of
        undefined -> erlang:yield(), wait_registered(Name);
        _ -> ok
    end.

expect(Want, Want, _What) -> ok;
expect(Want, Got, What) -> throw({What, expected, Want, got, Got}).

connect(Node) ->
    expect(true, net_kernel:connect_node(Node), {connect, Node}).

%% Busy-wait until the monotonic clock reaches Until (microseconds).
spin(Until) ->
    case erlang:monotonic_time(microsecond) < Until of
        true -> spin(Until);
        false -> ok
    end.

%% Connect to a node that may still be registering with EPMD: Tries
%% attempts 100 ms apart.
wait_connect(Node, Tries) ->
    case net_kernel:connect_node(Node) of
        true -> ok;
        false when Tries > 1 ->
            timer:sleep(100),
            wait_connect(Node, Tries - 1);
        false -> throw({cannot_connect, Node})
    end.

echo_check(CNode, T, Wait) ->
    {echo, CNode} ! {self(), T},
    receive
        R when R =:= T -> ok;
        R ->
            io:format("MISMATCH sent ~tP~n         received ~tP~n", [T, 12, R, 12]),
            {mismatch, {sent, T, received, R}}
    after Wait ->
        io:format("LOST sent ~tP: no reply within ~p ms~n", [T, 12, Wait]),
        {lost, {sent, T, no_reply_within_ms, Wait}}
    end.

receive_in_order(I, N) when I > N ->
    receive
        Extra -> {extra_message, Extra}
    after 200 -> ok
    end;
receive_in_order(I, N) ->
    receive
        I -> receive_in_order(I + 1, N);
        Other -> {out_of_order, expected, I, got, Other}
    after ?REPLY_MS -> {missing_from, I, of_total, N}
    end.

terms() ->
    Ints = [0, 1, -1, 255, 256, -256, 134217727, -134217728, 134217728, -134217729,
            2147483647, -2147483648, 2147483648, -2147483649, 1 bsl 32, (1 bsl 63) - 1,
            -(1 bsl 63), 1 bsl 63, (1 bsl 64) - 1, (1 bsl 64) + 1, -((1 bsl 64) + 1),
            1 bsl 100, -(1 bsl 100), 1 bsl 1000, -(1 bsl 2040)],
    Floats = [0.0, 1.0, -1.5, 3.141592653589793, 1.0e300, -1.0e-300, 5.0e-324,
              1.7976931348623157e308, 2.2250738585072014e-308],
    Atoms = ['', a, true, false, undefined, 'hello world', 'ŝŝ', 'Ω', 'Ωmega_ŝ',
             list_to_atom(lists:duplicate(255, $x)),
             list_to_atom(lists:duplicate(255, 16#3A9))],
    Binaries = [<<>>, <<"abc">>, <<0, 255, 128>>, <<"ŝŝ"/utf8>>,
                list_to_binary(lists:seq(0, 255)), binary:copy(<<"0123456789">>, 1000)],
    Bitstrings = [<<1:3>>, <<255, 7:5>>, <<1:1>>, <<0:7>>, <<"abc", 5:4>>],
    Lists = [[], [[]], [1, [2, [3, []]]], [a, <<"b">>, 1.5, {c}], [a | b], [1, 2 | 3],
             [[] | a], "hello", "", "ŝŝΩ", lists:seq(0, 255), lists:seq(1, 70000),
             lists:duplicate(1000, x)],
    Tuples = [{}, {a}, {1, 2, 3}, {{}, {{}}, [{}]}, list_to_tuple(lists:seq(1, 255)),
              list_to_tuple(lists:seq(1, 256)), list_to_tuple(lists:seq(1, 300)),
              list_to_tuple([{I, <<I:16>>} || I <- lists:seq(1, 300)])],
    Maps = [#{}, #{a => 1}, #{<<"k">> => [1], {1, 2} => #{x => y}, 1 => 2.0, [] => <<>>},
            #{nested => #{deeper => #{deepest => [#{}]}}},
            maps:from_list([{I, integer_to_binary(I)} || I <- lists:seq(1, 100)]),
            maps:from_list([{{k, I}, [I]} || I <- lists:seq(1, 40)])],
    Ids = [make_ref(), self(), hd(erlang:ports()), {self(), make_ref()}, [make_ref()]],
    Env = {env, make_ref()},
    Funs = [fun lists:sum/1, fun erlang:node/0, fun(X) -> {Env, X} end, fun() -> ok end],
    Mixed = [{self(), [1 bsl 70, 'Ω', <<1:3>>, #{ref => make_ref()}], "str" ++ [1 | 2]}],
    Ints ++ Floats ++ Atoms ++ Binaries ++ Bitstrings ++ Lists ++ Tuples ++ Maps ++ Ids
        ++ Funs ++ Mixed.

%% Terms naming the C node: it sends its own name as an atom cache
%% reference (in funs too, whose Size then shrinks).
node_terms(CNode) ->
    Env = {env, CNode},
    [CNode, {CNode, [CNode, a, CNode]}, #{CNode => CNode}, fun() -> CNode end,
     fun(X) -> {Env, X, [CNode]} end, {fun() -> {CNode, fun() -> CNode end} end, CNode}].

%% ------------------------------------------------------------------
%% AEMP ports (portnode.c): tagged callbacks, {die, Text},
%% {unhandled_message, Tag}, the three forms of mon on Erlang processes,
%% kil of an Erlang process, timers, node state.
%% ------------------------------------------------------------------

%% A request to portnode's ctl port; its result.
p_call(CNode, Op, Args) ->
    {ctl, CNode} ! list_to_tuple([Op, self() | Args]),
    receive
        {reply, Op, Result} -> Result
    after ?REPLY_MS -> throw({no_reply, Op, Args})
    end.

recv_one(What) ->
    receive
        M -> M
    after ?REPLY_MS -> throw({nothing, What})
    end.

%% A process that waits for go, then exits with Reason.
doomed(Reason) -> spawn(fun() -> receive go -> exit(Reason) end end).

ports_test({CNode, Other}) ->
    connect(CNode),
    %% tags: {add, N} and {get, To}, the tag stripped before the callback
    P = p_call(CNode, new, []),
    P ! {add, 5},
    P ! {add, 7},
    P ! {get, self()},
    expect({total, 12}, recv_one(total), tagged_callbacks),
    %% a callback's error kills its port with {die, Text}
    M = erlang:monitor(process, P),
    P ! {add, not_a_number},
    expect({die, <<"add wants one integer">>}, down_reason(M), die_reason),
    %% a message no callback takes: {unhandled_message, Tag}
    P2 = p_call(CNode, new, []),
    M2 = erlang:monitor(process, P2),
    P2 ! {bogus, 1},
    expect({unhandled_message, bogus}, down_reason(M2), unhandled_message),
    %% mon with a callback, of an Erlang pid: told the reason once
    E1 = doomed(crashed),
    ok = p_call(CNode, mon, [E1]),
    E1 ! go,
    expect({mon_fired, E1, crashed}, recv_one(mon_fired), mon_callback),
    %% of a pid that is gone, and of a name not registered: noproc
    ok = p_call(CNode, mon, [E1]),
    expect({mon_fired, E1, noproc}, recv_one(mon_noproc), mon_noproc),
    ok = p_call(CNode, mon, [{nobody_here, node()}]),
    expect({mon_fired, {nobody_here, node()}, noproc}, recv_one(mon_name), mon_name_noproc),
    %% mon_kill: an abnormal death kills the C port with the same reason
    E2 = doomed({shutdown, boom}),
    L2 = p_call(CNode, mon_kill, [E2]),
    ML2 = erlang:monitor(process, L2),
    E2 ! go,
    expect({shutdown, boom}, down_reason(ML2), mon_kill_abnormal),
    %% ... and a normal one does not
    E3 = doomed(normal),
    L3 = p_call(CNode, mon_kill, [E3]),
    M3 = erlang:monitor(process, E3),
    E3 ! go,
    expect(normal, down_reason(M3), e3_exits),
    pong = p_call(CNode, ping, []),
    expect(true, p_call(CNode, alive, [L3]), mon_kill_normal_spares),
    %% mon_send: {peer_down, Target} + Reason, on any death
    E4 = doomed(normal),
    ok = p_call(CNode, mon_send, [E4]),
    E4 ! go,
    expect({peer_down, E4, normal}, recv_one(peer_down), mon_send),
    %% kil of an Erlang process: an exit signal with the reason
    E5 = spawn(fun() -> receive never -> ok end end),
    M5 = erlang:monitor(process, E5),
    ok = p_call(CNode, kil, [E5, {stop, now}]),
    expect({stop, now}, down_reason(M5), kil_erlang_process),
    %% one that traps exits is told, and lives
    Self = self(),
    E6 = spawn(fun() ->
                       process_flag(trap_exit, true),
                       Self ! trapping,
                       receive {'EXIT', _, R} -> Self ! {trapped, R} end
               end),
    trapping = recv_one(trapping),
    ok = p_call(CNode, kil, [E6, bye]),
    expect({trapped, bye}, recv_one(trapped), kil_trapped),
    %% after: a timer's message
    ok = p_call(CNode, 'after', [30]),
    expect({tick, 30}, recv_one(tick), after_send),
    %% node state: this node is up, an unknown one is unknown
    expect(1, p_call(CNode, state, [node()]), state_up),
    expect(enoent, p_call(CNode, state, ['never@nowhere']), state_unknown),
    {Count, true} = p_call(CNode, up, [node()]),
    true = Count >= 1,
    %% the C node watches init on the other node (the script kills it)
    {ctl, CNode} ! {mon_name, init, Other},
    pong = p_call(CNode, ping, []),
    ok.

%% After the other node was killed: it is known but down.
ports_after_test({CNode, Other}) ->
    connect(CNode),
    expect(0, p_call(CNode, state, [Other]), state_known_down),
    {_, false} = p_call(CNode, up, [Other]),
    P = p_call(CNode, new, []),
    P ! {add, 1},
    P ! {get, self()},
    expect({total, 1}, recv_one(total), counter_again),
    ok.

%% ------------------------------------------------------------------
%% Spawning (spawnnode.c) and supervision (examples/supervised.c)
%% ------------------------------------------------------------------

%% Erlang's spawn family into the C node, undefined functions and bad
%% options answered as this node answers them itself, and the C node's
%% aemp_spawn of Erlang functions with link and monitor, their group
%% leader's io.
spawn_test(CNode) ->
    connect(CNode),
    Self = self(),
    process_flag(trap_exit, true),
    %% spawn/4: the init runs as the new port ($SELF) with the arguments
    P1 = spawn(CNode, spawnnode, echo, [Self, "ab", 5]),
    expect({started, P1, P1, [Self, "ab", 5]}, recv_from(P1, started), spawn_init_ran),
    P1 ! {echo, Self, hi},
    expect({echo, P1, hi}, recv_from(P1, echo), spawned_port_answers),
    %% spawn_link/4: the port's death travels the link
    P2 = spawn_link(CNode, spawnnode, echo, [Self]),
    started = element(1, recv_from(P2, started)),
    P2 ! {crash, boom},
    expect(boom, receive {'EXIT', P2, R2} -> R2 after ?REPLY_MS -> timeout end,
           spawn_link_exit),
    %% spawn_monitor/4 of an init that fails: {die, Text}
    {_P3, M3} = spawn_monitor(CNode, spawnnode, fail, []),
    expect({die, <<"init refused">>}, down_reason(M3), spawn_monitor_die),
    %% spawn_opt/5 with a monitor and options the node accepts
    {P4, M4} = spawn_opt(CNode, spawnnode, echo, [Self],
                         [monitor, {priority, high}, {fullsweep_after, 10},
                          {message_queue_data, off_heap}, {min_heap_size, 1000}]),
    started = element(1, recv_from(P4, started)),
    exit(P4, shutdown),
    expect(shutdown, down_reason(M4), spawn_opt_monitor),
    %% functions the C node did not export: what this node does with
    %% functions that do not exist (the same exit reason, through monitors
    %% and links alike)
    [begin
         expect(undef_down(node(), M, F, A), undef_down(CNode, M, F, A), {undef_monitor, M, F}),
         expect(undef_exit(node(), M, F, A), undef_exit(CNode, M, F, A), {undef_link, M, F})
     end || {M, F, A} <- [{nomod, nofun, [1, 2]}, {spawnnode, nofun, []},
                          {spawnnode, echo_not, [x, "y", #{}]}]],
    %% spawn options: refused (badarg) or taken as this node refuses or
    %% takes them
    [expect(opt_outcome(node(), timer, sleep, [10], O),
            opt_outcome(CNode, spawnnode, echo, [], O), {spawn_opt, O})
     || O <- [[foo], [{priority, bogus}], [{fullsweep_after, -1}], [{min_heap_size, x}],
              [{a, b, c}], [{message_queue_data, x}], [{max_heap_size, #{kill => true}}],
              [{max_heap_size, -1}], [{min_heap_size, 1000}, {max_heap_size, 1500}],
              [{monitor, [bogus]}], [link | foo], [monitor, {priority, low}], [link],
              [{max_heap_size, #{size => 0, kill => false}}], [{min_bin_vheap_size, 100}],
              [{fullsweep_after, 0}], [{min_heap_size, 1000}, {max_heap_size, 1598}],
              [{monitor, [{tag, t}]}]]],
    drain_exits(),
    %% the C node spawns here, monitoring: it learns the pid; the child's
    %% group leader is the C node's, which answers its io requests
    {F5, C5, R5} = c_spawn(CNode, aemp_interop, child, [Self], [monitor]),
    expect(true, is_reference(R5), c_spawn_monitor_ref),
    GL = receive {child, C5, G} -> G after ?REPLY_MS -> throw(child_silent) end,
    expect(CNode, node(GL), child_group_leader_on_c_node),
    expect({ok, eof, [{binary, false}, {encoding, unicode}], ok, {error, enotsup}},
           receive {io, C5, Io} -> Io after ?REPLY_MS -> throw(child_io_hangs) end,
           child_io_answered),
    {monitored_by, By5} = process_info(C5, monitored_by),
    expect(true, lists:member(F5, By5), c_monitors_child),
    C5 ! {exit, {done, 5}},
    expect({'DOWN', R5, process, C5, {done, 5}}, got(F5), c_sees_child_exit),
    %% linking: a link in both directions
    {F6, C6, none} = c_spawn(CNode, aemp_interop, child, [Self], [link]),
    receive {child, C6, _} -> ok after ?REPLY_MS -> throw(child6_silent) end,
    {links, L6} = process_info(C6, links),
    expect(true, lists:member(F6, L6), c_links_child),
    MF6 = erlang:monitor(process, F6),
    C6 ! {exit, {crashed, 6}},
    expect({crashed, 6}, down_reason(MF6), c_port_dies_with_linked_child),
    {F7, C7, none} = c_spawn(CNode, aemp_interop, child, [Self], [link]),
    receive {child, C7, _} -> ok after ?REPLY_MS -> throw(child7_silent) end,
    MC7 = erlang:monitor(process, C7),
    exit(F7, {killed_port, 7}),
    expect({killed_port, 7}, down_reason(MC7), child_dies_with_linked_c_port),
    %% a function that does not exist here: undef, as for Erlang's spawn
    {F8, C8, R8} = c_spawn(CNode, nomod, nofun, [], [monitor]),
    expect({'DOWN', R8, process, C8, {undef, [{nomod, nofun, [], []}]}}, got(F8),
           c_spawn_undef),
    %% a node that is not there: an error, no pid
    expect(error, element(1, c_spawn_result(CNode, list_to_atom("nobody@" ++ host()),
                                            aemp_interop, child, [Self], [monitor])),
           c_spawn_no_node),
    ok.

%% Spawned by the C node: tells its parent who it is and what its group
%% leader answered, then exits as told.
child(Parent) ->
    Parent ! {child, self(), group_leader()},
    Io = {io:format("hello from ~p~n", [self()]), io:get_line("prompt> "), io:getopts(),
          io:put_chars(<<"bin">>), io:columns()},
    Parent ! {io, self(), Io},
    receive {exit, Reason} -> exit(Reason) end.

%% A one_for_one supervisor runs a port of the C node (examples/supervised.c,
%% worker:start/1) through aemp_port: a crashed port is restarted with a
%% new pid that works; stopping the supervisor stops the port (shutdown).
supervise_test(CNode) ->
    connect(CNode),
    process_flag(trap_exit, true),
    Self = self(),
    {ok, Sup} = supervisor:start_link(?MODULE, {sup, [aemp_port:child_spec({CNode, worker, start,
                                                                            [Self]})]}),
    P1 = worker_started(),
    expect(CNode, node(P1), child_on_c_node),
    expect([{{aemp_port, CNode, worker, start}, P1, worker, [aemp_port]}],
           supervisor:which_children(Sup), which_children),
    expect(pong, ping(P1), first_port_answers),
    P1 ! {crash},
    P2 = worker_started(),
    expect(true, P2 =/= P1, restarted_with_new_pid),
    expect(pong, ping(P2), restarted_port_answers),
    M2 = erlang:monitor(process, P2),
    exit(Sup, shutdown),
    expect(shutdown, receive {'EXIT', Sup, R} -> R after ?REPLY_MS -> timeout end,
           supervisor_stopped),
    expect(shutdown, down_reason(M2), port_stopped_with_supervisor),
    %% a start that fails is an {error, Reason} for the supervisor
    expect({error, noconnection},
           aemp_port:start_link(list_to_atom("nobody@" ++ host()), worker, start, []),
           start_link_no_node),
    ok.

%% The supervisor of supervise_test.
init(gs) -> {ok, none};
init({sup, Specs}) ->
    {ok, {#{strategy => one_for_one, intensity => 5, period => 10}, Specs}}.

worker_started() ->
    receive {started, P} -> P after ?REPLY_MS -> throw(worker_not_started) end.

ping(P) ->
    P ! {ping, self()},
    receive {pong, P} -> pong after ?REPLY_MS -> timeout end.

host() ->
    [_, H] = string:split(atom_to_list(node()), "@"),
    H.

%% The next message from spawned port P tagged Tag.
recv_from(P, Tag) ->
    receive
        M when element(1, M) =:= Tag, element(2, M) =:= P -> M
    after ?REPLY_MS -> throw({nothing_from, P, Tag})
    end.

undef_down(Node, M, F, A) ->
    {_, Mon} = spawn_monitor(Node, M, F, A),
    {down, down_reason(Mon)}.

undef_exit(Node, M, F, A) ->
    P = spawn_link(Node, M, F, A),
    receive {'EXIT', P, Why} -> {exit, Why} after ?REPLY_MS -> {no_exit, Node} end.

opt_outcome(Node, M, F, A, O) ->
    try spawn_opt(Node, M, F, A, O) of
        P when is_pid(P) -> pid;
        {P, R} when is_pid(P), is_reference(R) -> pid_and_ref
    catch
        Class:Reason -> {Class, Reason}
    end.

drain_exits() ->
    receive {'EXIT', _, _} -> drain_exits(); {'DOWN', _, _, _, _} -> drain_exits()
    after 0 -> ok
    end.

%% The C node spawns M:F(A) on this node from a new forwarding port.
c_spawn(CNode, M, F, A, Flags) ->
    case c_spawn_result(CNode, node(), M, F, A, Flags) of
        {ok, Fwd, Pid, Ref} -> {Fwd, Pid, Ref};
        Other -> throw({c_spawn, M, F, Other})
    end.

c_spawn_result(CNode, Node, M, F, A, Flags) ->
    Tag = make_ref(),
    {ctl, CNode} ! {spawn, self(), Tag, Node, M, F, A, Flags},
    receive {reply, Tag, Result} -> Result after ?REPLY_MS -> throw({no_spawn_reply, M, F}) end.

%% ------------------------------------------------------------------
%% The database (test_db.sh; c-db): two C nodes (dbnode.c) and this
%% node, whose test process is a hand-written aemp_db speaking the
%% replication protocol of docs/database.md (version 1).
%% ------------------------------------------------------------------

db_test({C1, C2, N1}) ->
    %% the pg scope aemp runs from the start (the application started later
    %% leaves it running), so the C nodes find it when they connect
    {ok, _} = pg:start(aemp),
    true = register(aemp_db, self()),
    F = <<"f">>,
    Share = #{F => {#{<<"e1">> => erl}, <<2:32, "e1", 5:64>>}},
    %% C1 discovers us when the connection comes up; we answer as the
    %% protocol says and get its (empty) share
    connect(C1),
    C1Db = db_discovered(C1, Share),
    expect(#{}, db_local_data(C1Db), c1_share_at_start),
    db_wait(C1, F, [{<<"e1">>, erl, node(), 5}], c1_sees_erl_share),
    %% a set on C1 comes as an update, stamped after the stamp C1 saw (5)
    ok = p_call(C1, set, [F, <<"k1">>, v1]),
    expect([{set, F, <<"k1">>, 6, v1}], db_update(C1Db), c1_update_stamp),
    %% C2 joins: it sees C1's and our entries (C-C convergence)
    connect(C2),
    C2Db = db_discovered(C2, Share),
    expect(#{}, db_local_data(C2Db), c2_share_at_start),
    ok = p_call(C2, connect, [C1]),
    db_wait(C2, F, [{<<"e1">>, erl, node(), 5}, {<<"k1">>, v1, C1, 6}], c2_converges),
    %% C2 sets k1 after seeing C1's set: C2 wins everywhere
    ok = p_call(C2, set, [F, <<"k1">>, v2]),
    expect([{set, F, <<"k1">>, 7, v2}], db_update(C2Db), c2_update_stamp),
    db_wait(C1, F, [{<<"e1">>, erl, node(), 5}, {<<"k1">>, v2, C2, 7}], c1_sees_c2_win),
    %% a concurrent set with the same stamp: the greater node name wins
    %% (t@ > c2@), on both C nodes
    [Db ! {update, self(), [{set, F, <<"k1">>, 7, erl_v}]} || Db <- [C1Db, C2Db]],
    Won = [{<<"e1">>, erl, node(), 5}, {<<"k1">>, erl_v, node(), 7}],
    db_wait(C1, F, Won, c1_tie_by_node_name),
    db_wait(C2, F, Won, c2_tie_by_node_name),
    %% our delete shows the next winner, C2's
    [Db ! {update, self(), [{del, F, <<"k1">>}]} || Db <- [C1Db, C2Db]],
    Next = [{<<"e1">>, erl, node(), 5}, {<<"k1">>, v2, C2, 7}],
    db_wait(C1, F, Next, c1_after_del),
    db_wait(C2, F, Next, c2_after_del),
    %% db_reg on C2: subkey = the port ID, value undefined
    Port = p_call(C2, reg, [F]),
    true = is_pid(Port),
    Id = list_to_binary(port_id(Port)),
    expect([{set, F, Id, 8, undefined}], db_update(C2Db), c2_reg_update),
    db_wait(C1, F, lists:sort([{Id, undefined, C2, 8} | Next]), c1_sees_reg),
    %% a message of another shape is dropped; C1 goes on
    C1Db ! {update, self(), not_a_list},
    C1Db ! {local_data, self(), 3, #{F => [x]}},
    %% versions 1 and 2's shapes, and a stamp record cut short
    C1Db ! {local_data, self(), 1, #{F => #{<<"k9">> => {1, x}}}},
    C1Db ! {local_data, self(), 2, #{F => {#{<<"k9">> => x}, [{<<"k9">>, 1}]}}},
    C1Db ! {local_data, self(), 3, #{F => {#{<<"k9">> => x}, <<2:32, "k9", 1:32>>}}},
    C1Db ! hello,
    ok = p_call(C1, set, [F, <<"k2">>, v3]),
    expect([{set, F, <<"k2">>, 9, v3}], db_update(C1Db), c1_lives_after_bad_messages),
    ok = p_call(C1, del, [F, <<"k2">>]),
    expect([{del, F, <<"k2">>}], db_update(C1Db), c1_del_update),
    db_wait(C1, F, lists:sort([{Id, undefined, C2, 8} | Next]), c1_after_own_del),
    %% `aemp run` N1 connected to C1 only: aemp_demo:family/1 is C1's share
    ok = p_call(C1, connect, [N1]),
    db_demo_wait(N1, #{<<"k1">> => v1}),
    expect(#{<<"k1">> => v1}, rpc:call(N1, aemp_demo, family, [<<"f">>]), demo_family_binary),
    expect(#{<<"k1">> => v1}, rpc:call(N1, aemp_demo, family, ["f"]), demo_family_string),
    expect(#{}, rpc:call(N1, aemp_demo, family, [nothing]), demo_family_empty),
    db_app_test(C1, C2, Id, Port).

%% The application's own aemp_db takes over on this node (its server
%% discovers the nodes it is connected to; each C node replaces the
%% hand-written peer of this node, and its share, by it): C <-> Erlang.
db_app_test(C1, C2, Id, Port) ->
    F = <<"f">>,
    true = unregister(aemp_db),
    {ok, _} = application:ensure_all_started(aemp),
    %% the C nodes' shares reach the application; ours (e1) is gone from them
    db_app_wait(#{<<"k1">> => v2, Id => undefined}, app_sees_c_shares),
    CView = [{Id, undefined, C2, 8}, {<<"k1">>, v2, C2, 7}],
    db_wait(C1, F, CView, c1_drops_the_replaced_peer),
    %% set in Erlang (atom family), seen by both C nodes
    ok = aemp:db_set(f, <<"e2">>, from_app),
    {{S2, _, from_app}, {S2, from_app}} = aemp_db:entry(F, <<"e2">>),
    Me = node(),
    db_wait(C1, F, lists:sort([{<<"e2">>, from_app, Me, S2} | CView]), c1_sees_app_set),
    db_wait(C2, F, lists:sort([{<<"e2">>, from_app, Me, S2} | CView]), c2_sees_app_set),
    %% set in C, seen by db_mon and db_family in Erlang
    Ref = aemp:db_mon(f),
    receive {aemp_db_mon, Ref, F, Whole, #{}, []} when map_size(Whole) =:= 3 -> ok
    after ?REPLY_MS -> throw(no_db_mon_start)
    end,
    ok = p_call(C2, set, [F, <<"m">>, x]),
    receive {aemp_db_mon, Ref, F, #{<<"m">> := x}, _, _} -> ok
    after ?REPLY_MS -> throw(no_db_mon_of_c_set)
    end,
    expect(x, maps:get(<<"m">>, aemp:db_family(<<"f">>)), app_family_has_c_set),
    %% concurrent sets of one subkey in Erlang and on C1: the greatest
    %% {Stamp, Node} wins on all three
    ok = aemp:db_set(f, <<"c">>, erl),
    {_, {Se, erl}} = aemp_db:entry(F, <<"c">>),
    Sc = p_call(C1, set_stamp, [F, <<"c">>, c1]),
    Win = case {Se, Me} > {Sc, C1} of
              true -> {<<"c">>, erl, Me, Se};
              false -> {<<"c">>, c1, C1, Sc}
          end,
    db_converged(F, Win, [C1, C2]),
    %% a delete in Erlang goes everywhere
    ok = aemp:db_del(f, <<"e2">>),
    db_gone(C2, F, <<"e2">>),
    db_gone(C1, F, <<"e2">>),
    %% pg: C2's db_reg'd port is a member of group f here; an Erlang process
    %% in group f shows in the C nodes' family (no entry: value undefined,
    %% owner '', stamp 0) until it leaves
    db_pg_member(Port),
    P = spawn(fun() -> receive stop -> ok end end),
    ok = pg:join(aemp, f, P),
    PId = list_to_binary(port_id(P)),
    db_wait_has(C1, F, {PId, undefined, '', 0}),
    P ! stop,
    db_gone(C1, F, PId),
    ok.

entry_of(F, K) ->
    {{S, O, V}, _} = aemp_db:entry(F, K),
    {V, {S, O}}.

%% CNode's entry of K as it is now: [] or [{K, Value, Owner, Stamp}].
db_c_view(CNode, F, K) ->
    [E || {K1, _, _, _} = E <- p_call(CNode, family, [F]), K1 =:= K].

%% Node's aemp_db discovers us: answer with Share (a cast), monitor it and
%% discover it back, as data_publisher does. Its pid.
db_discovered(Node, Share) ->
    receive
        {discover, Pid, 3} when node(Pid) =:= Node ->
            gen_server:cast(Pid, {local_data, self(), 3, Share}),
            erlang:monitor(process, Pid),
            Pid ! {discover, self(), 3},
            Pid
    after ?REPLY_MS -> throw({no_discover_from, Node})
    end.

db_local_data(Pid) ->
    receive
        {'$gen_cast', {local_data, Pid, 3, S}} -> S
    after ?REPLY_MS -> throw({no_local_data_from, Pid})
    end.

db_update(Pid) ->
    receive
        {update, Pid, Ops} -> Ops
    after ?REPLY_MS -> throw({no_update_from, Pid})
    end.

%% Until Check() is ok (it returns ok or {no, Got}), polling every 20 ms
%% for ?REPLY_MS; then throws {What, Got}.
db_until(Check, What) ->
    db_until(Check, What, erlang:monotonic_time(millisecond) + ?REPLY_MS).

db_until(Check, What, Deadline) ->
    case Check() of
        ok -> ok;
        {no, Got} ->
            case erlang:monotonic_time(millisecond) > Deadline of
                true -> throw({What, Got});
                false -> timer:sleep(20), db_until(Check, What, Deadline)
            end
    end.

%% ok if Got is Want, else {no, Got}.
db_is(Want, Want) -> ok;
db_is(_, Got) -> {no, Got}.

%% Until CNode's family Fam is Want ([{Key, Value, Owner, Stamp}], sorted).
db_wait(CNode, Fam, Want, What) ->
    db_until(fun() -> db_is(Want, lists:sort(p_call(CNode, family, [Fam]))) end, {What, Want}).

%% Until aemp_demo:family(f) on N1 is Want.
db_demo_wait(N1, Want) ->
    db_until(fun() -> db_is(Want, rpc:call(N1, aemp_demo, family, [f])) end, {demo_family, Want}).

%% Until the application's db_family(f) is Want.
db_app_wait(Want, What) ->
    db_until(fun() -> db_is(Want, aemp:db_family(f)) end, {What, Want}).

%% Until this node and every C node show Win ({K, V, Owner, Stamp}) as the
%% entry of K.
db_converged(F, {K, V, O, S} = Win, CNodes) ->
    db_until(fun() ->
                     db_is({{V, {S, O}}, [[Win] || _ <- CNodes]},
                           {entry_of(F, K), [db_c_view(C, F, K) || C <- CNodes]})
             end, {not_converged, Win}).

%% Until CNode's family F has no subkey K.
db_gone(CNode, F, K) ->
    db_until(fun() -> db_is([], db_c_view(CNode, F, K)) end, {still_there, CNode, K}).

%% Until CNode's family F holds Entry.
db_wait_has(CNode, F, {K, _, _, _} = Entry) ->
    db_until(fun() -> db_is([Entry], db_c_view(CNode, F, K)) end, {not_there, CNode, Entry}).

%% Until Port is in pg group f of scope aemp here.
db_pg_member(Port) ->
    db_until(fun() -> db_is(true, lists:member(Port, pg:get_members(aemp, f))) end,
             {not_a_pg_member, Port}).
