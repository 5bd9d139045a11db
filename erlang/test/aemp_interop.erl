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

-export([run/2, serve/0]).

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

watchdog(Test) ->
    timer:sleep(?WATCHDOG_MS),
    io:format("FAIL ~p: watchdog: no verdict after ~p ms~n", [Test, ?WATCHDOG_MS]),
    erlang:halt(1).

%% ------------------------------------------------------------------
%% Tests
%% ------------------------------------------------------------------

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
            terms()),
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
    end.

%% ------------------------------------------------------------------
%% Helpers
%% ------------------------------------------------------------------

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
