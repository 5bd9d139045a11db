%% -*- coding: utf-8 -*-
%% Erlang side of the aemp fault tests (interop-tests/fault/).
%%
%% Started by the test scripts inside a network namespace as
%%   erl -name a@10.200.X.1 -setcookie C -noshell -start_epmd false \
%%       -pa EBIN -eval 'aemp_fault:F(Args)'
%% Every line printed starts with a keyword the scripts wait for; times are
%% wall-clock milliseconds (os:system_time(millisecond)) so that a script
%% can compare them with its own clock on the same machine.
-module(aemp_fault).

-export([big_send/2, echo_check/2, serve/0, load/4]).

-define(REPLY_MS, 10000).

now_ms() -> os:system_time(millisecond).

say(Fmt, Args) -> io:format(Fmt ++ "~n", Args).

verdict(Name, Fun) ->
    try Fun() of
        ok ->
            say("PASS ~p", [Name]),
            erlang:halt(0);
        Other ->
            say("FAIL ~p: ~tP", [Name, Other, 40]),
            erlang:halt(1)
    catch
        Class:Reason:Stack ->
            say("FAIL ~p: ~tP", [Name, {Class, Reason, Stack}, 40]),
            erlang:halt(1)
    end.

expect(Want, Want, _What) -> ok;
expect(Want, Got, What) -> throw({unexpected, What, {want, Want}, {got, Got}}).

%% ------------------------------------------------------------------
%% big_send(CNode, Bytes): connect to CNode, send {self(), Bin} of Bytes
%% bytes to its `echo` port, then wait to be killed.
%% Prints "CONNECTED OsPid", then "SENT Bytes".
%% ------------------------------------------------------------------
big_send(CNode, Bytes) ->
    Bin = binary:copy(<<"0123456789abcdef">>, Bytes div 16),
    case net_adm:ping(CNode) of
        pong -> ok;
        pang ->
            say("FAIL big_send: pang from ~s", [CNode]),
            erlang:halt(1)
    end,
    say("CONNECTED ~s", [os:getpid()]),
    {echo, CNode} ! {self(), Bin},
    say("SENT ~p", [byte_size(Bin)]),
    receive
        Bin -> say("ECHOED (the transfer was not interrupted)", [])
    after 60000 -> ok
    end,
    erlang:halt(0).

%% ------------------------------------------------------------------
%% echo_check(CNode, Bytes): pong from CNode, then a term and a binary of
%% Bytes bytes come back =:= from its `echo` port.
%% ------------------------------------------------------------------
echo_check(CNode, Bytes) ->
    verdict(echo_check, fun() ->
        expect(pong, net_adm:ping(CNode), ping),
        Term = {hello, [1, 2.5, <<"bin">>, #{k => v}], self(), make_ref()},
        expect(Term, echo(CNode, Term), small_term),
        Bin = crypto:strong_rand_bytes(Bytes),
        expect(true, echo(CNode, Bin) =:= Bin, big_binary),
        ok
    end).

echo(CNode, Msg) ->
    {echo, CNode} ! {self(), Msg},
    receive
        Msg -> Msg
    after ?REPLY_MS -> {no_reply_within_ms, ?REPLY_MS}
    end.

%% ------------------------------------------------------------------
%% serve(): the registered process `fault` that the C node (fault_node)
%% talks to. It traps exits and monitors node up/down (hidden nodes too).
%%   {hello, Pid}    link to Pid and monitor it, answer {linked, self()}
%%   {ping, N, Pid}  answer {pong, N, node()}
%%   nodeup of Node  send {welcome, K} to {fault, Node}, K = nodeups so far
%% Prints "READY OsPid", "HELLO Pid T", "PING N T", "NODEUP Node T",
%% "NODEDOWN Node Reason T", "DOWN Reason T", "EXIT Reason T".
%% ------------------------------------------------------------------
serve() ->
    register(fault, self()),
    process_flag(trap_exit, true),
    ok = net_kernel:monitor_nodes(true, [nodedown_reason, {node_type, all}]),
    say("READY ~s", [os:getpid()]),
    serve_loop(0).

serve_loop(Ups) ->
    receive
        {hello, Pid} when is_pid(Pid) ->
            true = link(Pid),
            _ = monitor(process, Pid),
            Pid ! {linked, self()},
            say("HELLO ~p ~p", [Pid, now_ms()]),
            serve_loop(Ups);
        {ping, N, Pid} when is_pid(Pid) ->
            Pid ! {pong, N, node()},
            say("PING ~p ~p", [N, now_ms()]),
            serve_loop(Ups);
        {nodeup, Node, _Info} ->
            say("NODEUP ~s ~p", [Node, now_ms()]),
            {fault, Node} ! {welcome, Ups + 1},
            serve_loop(Ups + 1);
        {nodedown, Node, Info} ->
            Reason = proplists:get_value(nodedown_reason, Info),
            say("NODEDOWN ~s ~p ~p", [Node, Reason, now_ms()]),
            serve_loop(Ups);
        {'DOWN', _Ref, process, _Pid, Reason} ->
            say("DOWN ~p ~p", [Reason, now_ms()]),
            serve_loop(Ups);
        {'EXIT', _Pid, Reason} ->
            say("EXIT ~p ~p", [Reason, now_ms()]),
            serve_loop(Ups);
        Other ->
            say("UNEXPECTED ~tP", [Other, 20]),
            serve_loop(Ups)
    end.

%% ------------------------------------------------------------------
%% load(CNode, Batches, BatchSize, MaxMs): send {seq, N} for N = 1, 2, ...
%% to {fault, CNode}, one batch of BatchSize every 10 ms (a late batch is
%% sent at once, so the average rate holds where the machine keeps up),
%% until Batches batches are sent or MaxMs have passed (a slower machine
%% sends fewer), then {done, Total, self()} with the number sent; the sink
%% answers {sink_count, Count, Errors, ElapsedMs}.
%% Prints "PROGRESS N T" every 1000 batches, "SENT Total Ms" and
%% "SINK Count Errors ElapsedMs", then PASS or FAIL (FAIL unless the sink
%% counted every message sent, in order).
%% ------------------------------------------------------------------
load(CNode, Batches, BatchSize, MaxMs) ->
    verdict(load, fun() ->
        expect(pong, net_adm:ping(CNode), ping),
        Dest = {fault, CNode},
        T0 = erlang:monotonic_time(millisecond),
        Sent = load_loop(Dest, 0, Batches, BatchSize, T0, T0 + MaxMs),
        Ms = erlang:monotonic_time(millisecond) - T0,
        Total = Sent * BatchSize,
        say("SENT ~p ~p", [Total, Ms]),
        Dest ! {done, Total, self()},
        receive
            {sink_count, Count, Errors, Elapsed} ->
                say("SINK ~p ~p ~p", [Count, Errors, Elapsed]),
                expect(Total, Count, count),
                expect(0, Errors, order_errors),
                ok
        after 30000 -> no_sink_count
        end
    end).

%% The number of batches sent.
load_loop(_Dest, Batches, Batches, _Size, _T0, _Stop) ->
    Batches;
load_loop(Dest, B, Batches, Size, T0, Stop) ->
    Due = T0 + B * 10,
    Now = erlang:monotonic_time(millisecond),
    if
        Now >= Stop ->
            B;
        true ->
            case Due - Now of
                Wait when Wait > 0 -> receive after Wait -> ok end;
                _ -> ok
            end,
            send_batch(Dest, B * Size + 1, (B + 1) * Size),
            case (B + 1) rem 1000 of
                0 -> say("PROGRESS ~p ~p", [(B + 1) * Size, now_ms()]);
                _ -> ok
            end,
            load_loop(Dest, B + 1, Batches, Size, T0, Stop)
    end.

send_batch(_Dest, N, Last) when N > Last -> ok;
send_batch(Dest, N, Last) ->
    Dest ! {seq, N},
    send_batch(Dest, N + 1, Last).
