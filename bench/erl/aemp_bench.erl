%% aemp_bench: the Erlang side of the aemp benchmark (bench/run.sh).
%%
%% Every benchmark node, Erlang or C (aemp_bench.c on libaemp, ei_bench.c
%% on plain erl_interface), answers the same registered names and speaks the
%% same messages, so the Erlang->Erlang baseline and the runs involving C
%% nodes measure exactly the same exchange:
%%
%%   bench_sink   counts data messages (plain binaries) for one sender.
%%     {bench_start, From, W, Gen}  -> From ! {bench_ready, Gen}
%%     Bin (a binary)               -> every W messages From ! {bench_ack, Gen, Count}
%%     {bench_end, From, Gen}       -> From ! {bench_done, Gen, Count, Bytes}
%%   bench_echo   answers pings.
%%     {bench_ping, From, Seq, Bin} -> From ! {bench_pong, Seq, Bin}
%%   bench_lat    one-way latency of stamped messages (Erlang and aemp nodes).
%%     {bench_lat_start, From, Gen} -> From ! {bench_lat_ready, Gen}
%%     <<SysTimeNs:64, _/binary>>   -> a sample: receive time - SysTimeNs
%%     {bench_lat_end, From, Gen}   -> From ! {bench_lat_done, Gen, Count, P50, P99, Max}
%%   bench_agent  runs one measurement on command of the controller.
%%     {bench_hello, Ctl}                           -> {bench_hello_ok, Node, OsPid}
%%     {bench_blast, Ctl, {Name, Node}, Size, N, W} -> {bench_blast_done, Ns, Count, Bytes}
%%     {bench_rtt, Ctl, {Name, Node}, Size, K}      -> {bench_rtt_done, MedianNs, P99Ns}
%%     {bench_local, Ctl, Mode, Size, N}            -> {bench_local_done, Ns, Count, Allocs}
%%         (Erlang and aemp nodes; Mode loop or pingpong; Allocs none on Erlang)
%%     {bench_monitors, Ctl, {Name, Node}, N, Ms}   -> {bench_monitors_done, MonNs, DemonNs}
%%     {bench_latency, Ctl, {Name, Node}, Size, Rate, Ms}
%%                                                  -> {bench_latency_done, Count, P50, P99, Max}
%%         (these two: Erlang agents only)
%%     {bench_ports, Ctl, N, NR, {Name, Node} | none}
%%                              -> {bench_ports_done, #{Timings}, [{Heap, Usable, Rss}]}
%%         (aemp nodes: memory and rates of ports, monitors and links)
%%     {bench_procs, Ctl, N, NR, {Name, Node} | none} -> {bench_procs_done, #{Figures}}
%%         (Erlang agents: the same of processes)
%%     failures                                     -> {bench_error, Text}
%%     bench_stop                                   -> the node halts
%%
%% Flow control: a sender keeps at most 2*W messages unacknowledged, so the
%% sender never outruns the receiver by more than two windows on either kind
%% of node (aemp_send queues without bound; Erlang's ! would block instead).
%%
%% Entry points: agent/0 (erl -s aemp_bench agent) and main/1
%% (erl -run aemp_bench main key=value...), the controller that runs every
%% measurement and prints the tables.
-module(aemp_bench).
-export([agent/0, main/1]).

-define(READY_TIMEOUT, 30000).
-define(ACK_TIMEOUT, 60000).

%% ---------------------------------------------------------------------
%% Agent side (runs on e1 and e2)
%% ---------------------------------------------------------------------

agent() ->
    register(bench_sink, spawn(fun() -> sink_idle() end)),
    register(bench_echo, spawn(fun() -> echo_loop() end)),
    register(bench_lat, spawn(fun() -> lat_idle() end)),
    register(bench_agent, spawn(fun() -> agent_loop() end)),
    ok.

sink_idle() ->
    receive
        {bench_start, From, W, Gen} ->
            From ! {bench_ready, Gen},
            sink_loop(From, W, Gen, 0, 0);
        {bench_end, From, Gen} ->
            From ! {bench_done, Gen, 0, 0},
            sink_idle();
        _ ->
            sink_idle()
    end.

sink_loop(From, W, Gen, Count, Bytes) ->
    receive
        Bin when is_binary(Bin) ->
            C = Count + 1,
            case C rem W of
                0 -> From ! {bench_ack, Gen, C};
                _ -> ok
            end,
            sink_loop(From, W, Gen, C, Bytes + byte_size(Bin));
        {bench_end, From2, Gen2} ->
            From2 ! {bench_done, Gen2, Count, Bytes},
            sink_idle();
        {bench_start, From2, W2, Gen2} ->
            From2 ! {bench_ready, Gen2},
            sink_loop(From2, W2, Gen2, 0, 0);
        _ ->
            sink_loop(From, W, Gen, Count, Bytes)
    end.

echo_loop() ->
    receive
        {bench_ping, From, Seq, Bin} ->
            From ! {bench_pong, Seq, Bin};
        _ ->
            ok
    end,
    echo_loop().

lat_idle() ->
    receive
        {bench_lat_start, From, Gen} ->
            From ! {bench_lat_ready, Gen},
            lat_loop(Gen, []);
        _ ->
            lat_idle()
    end.

%% os:system_time/1 is the OS clock (CLOCK_REALTIME on Linux), the clock
%% the sender stamped with and the one the C receivers read.
lat_loop(Gen, Acc) ->
    receive
        <<Stamp:64, _/binary>> ->
            lat_loop(Gen, [os:system_time(nanosecond) - Stamp | Acc]);
        {bench_lat_end, From, Gen} ->
            From ! case lists:sort(Acc) of
                       [] -> {bench_lat_done, Gen, 0, 0, 0, 0};
                       S -> {bench_lat_done, Gen, length(S), percentile(S, 50),
                             percentile(S, 99), lists:last(S)}
                   end,
            lat_idle();
        {bench_lat_start, From, Gen2} ->
            From ! {bench_lat_ready, Gen2},
            lat_loop(Gen2, []);
        _ ->
            lat_loop(Gen, Acc)
    end.

agent_loop() ->
    receive
        {bench_hello, Ctl} ->
            Ctl ! {bench_hello_ok, node(), list_to_integer(os:getpid())};
        {bench_blast, Ctl, Target, Size, N, W} ->
            run_job(Ctl, fun() -> blast(Target, Size, N, W) end);
        {bench_rtt, Ctl, Target, Size, K} ->
            run_job(Ctl, fun() -> rtt(Target, Size, K) end);
        {bench_local, Ctl, Mode, Size, N} ->
            run_job(Ctl, fun() -> local(Mode, Size, N) end);
        {bench_monitors, Ctl, Target, N, Ms} ->
            run_job(Ctl, fun() -> monitors(Target, N, Ms) end);
        {bench_latency, Ctl, Target, Size, Rate, Ms} ->
            run_job(Ctl, fun() -> latency(Target, Size, Rate, Ms) end);
        {bench_procs, Ctl, N, NR, Target} ->
            run_job(Ctl, fun() -> procs(N, NR, Target) end);
        bench_stop ->
            erlang:halt(0);
        _ ->
            ok
    end,
    agent_loop().

%% Each job runs in a fresh process: a clean mailbox, and a job that hangs
%% cannot block the agent.
run_job(Ctl, Fun) ->
    spawn(fun() ->
                  Reply = try Fun()
                          catch Class:Reason ->
                                  {bench_error, iolist_to_binary(
                                                  io_lib:format("~p:~p", [Class, Reason]))}
                          end,
                  Ctl ! Reply
          end).

payload(Size) ->
    binary:copy(<<"x">>, Size).

blast(Target, Size, N, W) ->
    Gen = erlang:unique_integer([positive]),
    Bin = payload(Size),
    Target ! {bench_start, self(), W, Gen},
    receive {bench_ready, Gen} -> ok
    after ?READY_TIMEOUT -> exit(sink_not_ready)
    end,
    T0 = erlang:monotonic_time(nanosecond),
    blast_loop(Target, Bin, N, 2 * W, Gen, 0, 0),
    Target ! {bench_end, self(), Gen},
    receive
        {bench_done, Gen, Count, Bytes} ->
            T1 = erlang:monotonic_time(nanosecond),
            {bench_blast_done, T1 - T0, Count, Bytes}
    after ?ACK_TIMEOUT -> exit(no_done)
    end.

blast_loop(_Target, _Bin, N, _Win, _Gen, N, _Acked) ->
    ok;
blast_loop(Target, Bin, N, Win, Gen, Sent, Acked) when Sent < Acked + Win ->
    Target ! Bin,
    blast_loop(Target, Bin, N, Win, Gen, Sent + 1, Acked);
blast_loop(Target, Bin, N, Win, Gen, Sent, Acked) ->
    receive
        {bench_ack, Gen, C} ->
            blast_loop(Target, Bin, N, Win, Gen, Sent, max(Acked, C))
    after ?ACK_TIMEOUT -> exit({ack_timeout, Sent, Acked})
    end.

rtt(Target, Size, K) ->
    Bin = payload(Size),
    Warm = max(10, K div 20),
    _ = [ping(Target, Bin, Seq) || Seq <- lists:seq(1, Warm)],
    Samples = lists:sort([ping(Target, Bin, Seq) || Seq <- lists:seq(Warm + 1, Warm + K)]),
    {bench_rtt_done, percentile(Samples, 50), percentile(Samples, 99)}.

ping(Target, Bin, Seq) ->
    T0 = erlang:monotonic_time(nanosecond),
    Target ! {bench_ping, self(), Seq, Bin},
    receive
        {bench_pong, Seq, _} -> erlang:monotonic_time(nanosecond) - T0
    after ?ACK_TIMEOUT -> exit({pong_timeout, Seq})
    end.

%% Local send and receive between two processes of this node, as the C node
%% does between two of its ports: N binaries sent in a loop to a process
%% that counts them (timed until it has them all), or bounced N times
%% between two processes.
local(loop, Size, N) ->
    Self = self(),
    Bin = payload(Size),
    Rx = spawn_link(fun() -> local_count(Self, N) end),
    T0 = erlang:monotonic_time(nanosecond),
    local_send(Rx, Bin, N),
    receive
        {local_counted, N} -> {bench_local_done, erlang:monotonic_time(nanosecond) - T0, N, none}
    after ?ACK_TIMEOUT -> exit(local_timeout)
    end;
local(pingpong, Size, N) ->
    Self = self(),
    Bin = payload(Size),
    B = spawn_link(fun() -> receive {peer, A} -> local_bounce(A, Self, N) end end),
    A = spawn_link(fun() -> local_bounce(B, Self, N) end),
    B ! {peer, A},
    T0 = erlang:monotonic_time(nanosecond),
    B ! {bounce, 1, Bin},
    receive
        {local_counted, N} -> {bench_local_done, erlang:monotonic_time(nanosecond) - T0, N, none}
    after ?ACK_TIMEOUT -> exit(local_timeout)
    end.

local_send(_Rx, _Bin, 0) ->
    ok;
local_send(Rx, Bin, I) ->
    Rx ! Bin,
    local_send(Rx, Bin, I - 1).

local_count(Parent, N) ->
    local_count(Parent, N, 0).

local_count(Parent, N, N) ->
    Parent ! {local_counted, N};
local_count(Parent, N, C) ->
    receive
        Bin when is_binary(Bin) -> local_count(Parent, N, C + 1)
    end.

%% Deliveries are counted across both processes; the one that makes the
%% Nth tells the parent, and each exits once the count passes N.
local_bounce(Other, Parent, N) ->
    receive
        {bounce, N, _} ->
            Parent ! {local_counted, N};
        {bounce, I, Bin} when I < N ->
            Other ! {bounce, I + 1, Bin},
            local_bounce(Other, Parent, N);
        _ ->
            ok
    end.

%% N erlang:monitor(process, {Name, Node}) calls, then demonitor(Ref,
%% [flush]) of each, oldest first. A monitor and a demonitor are signals: a
%% phase counts as done when a ping sent after its last call comes back
%% (signals from one process to one node arrive in order). The job gives up
%% (exit deadline) Ms milliseconds after it starts.
monitors({_, Node} = Target, N, Ms) ->
    End = erlang:monotonic_time(millisecond) + Ms,
    erlang:monitor_node(Node, true),
    mon_sync(Target, 0, End),
    T0 = erlang:monotonic_time(nanosecond),
    Refs = monitor_loop(Target, N, End, []),
    mon_sync(Target, 1, End),
    T1 = erlang:monotonic_time(nanosecond),
    demonitor_loop(lists:reverse(Refs), End, 0),
    mon_sync(Target, 2, End),
    T2 = erlang:monotonic_time(nanosecond),
    {bench_monitors_done, T1 - T0, T2 - T1}.

monitor_loop(_Target, 0, _End, Acc) ->
    Acc;
monitor_loop(Target, I, End, Acc) ->
    I band 16#fff =:= 0 andalso check_deadline(End),
    monitor_loop(Target, I - 1, End, [erlang:monitor(process, Target) | Acc]).

demonitor_loop([], _End, _I) ->
    ok;
demonitor_loop([Ref | Refs], End, I) ->
    I band 16#fff =:= 0 andalso check_deadline(End),
    erlang:demonitor(Ref, [flush]),
    demonitor_loop(Refs, End, I + 1).

check_deadline(End) ->
    erlang:monotonic_time(millisecond) > End andalso exit(deadline).

mon_sync({_, Node} = Target, Seq, End) ->
    Target ! {bench_ping, self(), Seq, <<>>},
    receive
        {bench_pong, Seq, _} -> ok;
        {nodedown, Node} -> exit(nodedown)
    after max(0, End - erlang:monotonic_time(millisecond)) -> exit(deadline)
    end.

%% Processes, monitors and links of this node, as the aemp node measures
%% its ports (bench_ports): N idle processes spawned (the memory of a
%% process), N monitors of one process by another, NR monitors of Target
%% (a process on another node) by one process, N links of one process to
%% the N idle ones, the N killed, then N processes spawned that exit at
%% once. One scheduler is online for the whole job (the C node runs on one
%% thread). Memory: erlang:memory(processes) for processes (as the pids are
%% kept in an ETS table, outside it), erlang:memory(total) for monitors and
%% links (wherever the VM keeps them), each taken when every signal sent
%% has been handled.
procs(N, NR, Target) ->
    %% N pongs pile up in this process's queue while it pings: off its heap,
    %% or every garbage collection meanwhile copies them all (quadratic)
    process_flag(message_queue_data, off_heap),
    Old = erlang:system_flag(schedulers_online, 1),
    try procs_run(N, NR, Target)
    after erlang:system_flag(schedulers_online, Old)
    end.

procs_run(N, NR, Target) ->
    Tab = ets:new(bench_procs, [set, protected]),
    try procs_run(N, NR, Target, Tab)
    after ets:delete(Tab)
    end.

procs_run(N, NR, Target, Tab) ->
    %% the connection to the remote node is up before anything is measured
    NR > 0 andalso sync(Target),
    settle(),
    Proc0 = erlang:memory(processes),
    T0 = erlang:monotonic_time(nanosecond),
    spawn_idle(Tab, N),
    Spawn = erlang:monotonic_time(nanosecond) - T0,
    Proc1 = erlang:memory(processes),
    {memory, One} = process_info(ets:first(Tab), memory),
    %% N monitors of one process by another
    Peer = spawn(fun idle/0),
    Mon = mem_delta(fun() -> helper(fun() -> monitor_n(Peer, N), sync(Peer) end) end),
    %% NR monitors of a process on another node
    RMon = case NR of
               0 -> #{};
               _ -> mem_delta(fun() -> helper(fun() -> monitor_n(Target, NR), sync(Target) end) end)
           end,
    %% N links of one process to the N idle ones
    Link = mem_delta(fun() -> helper(fun() -> link_all(Tab, ets:first(Tab)) end) end),
    %% the N killed, once each has taken its link down (the linker ended
    %% normally)
    Self = self(),
    ets:foldl(fun({P}, _) -> P ! {ping, Self} end, ok, Tab),
    pongs(N),
    Count0 = erlang:system_info(process_count) - N - 1,
    TK = erlang:monotonic_time(nanosecond),
    ets:foldl(fun({P}, _) -> exit(P, kill) end, ok, Tab),
    exit(Peer, kill),
    wait_count(Count0),
    Kill = erlang:monotonic_time(nanosecond) - TK,
    ets:delete_all_objects(Tab),
    settle(),
    Proc2 = erlang:memory(processes),
    %% spawn and exit, N times
    TC = erlang:monotonic_time(nanosecond),
    churn(N),
    wait_count(Count0),
    Churn = erlang:monotonic_time(nanosecond) - TC,
    settle(),
    Proc3 = erlang:memory(processes),
    {bench_procs_done,
     #{n => N, nr => NR, spawn => Spawn, kill => Kill, churn => Churn,
       proc => (Proc1 - Proc0) / N, proc_info => One, mon => per(Mon, N), rmon => per(RMon, NR),
       link => per(Link, N), mon_ns => maps:get(ns, Mon), rmon_ns => maps:get(ns, RMon, 0),
       link_ns => maps:get(ns, Link), after_kill => Proc2 - Proc0, after_churn => Proc3 - Proc2}}.

per(#{bytes := B}, N) when N > 0 -> B / N;
per(_, _) -> undefined.

idle() ->
    receive
        {ping, From} -> From ! pong, idle();
        stop -> ok
    end.

spawn_idle(_Tab, 0) ->
    ok;
spawn_idle(Tab, I) ->
    ets:insert(Tab, {spawn(fun idle/0)}),
    spawn_idle(Tab, I - 1).

%% Fun runs in a new process that then waits; returns when Fun has
%% returned, with the time it took, and the process, to end later.
helper(Fun) ->
    Self = self(),
    P = spawn(fun() ->
                      T0 = erlang:monotonic_time(nanosecond),
                      Fun(),
                      Ns = erlang:monotonic_time(nanosecond) - T0,
                      erlang:garbage_collect(),
                      Self ! {helper_done, self(), Ns},
                      receive stop -> ok end
              end),
    receive {helper_done, P, Ns} -> {P, Ns}
    after ?ACK_TIMEOUT * 5 -> exit(helper_timeout)
    end.

%% The memory Make's helper adds (erlang:memory(total)), then the helper
%% ends normally and is waited for.
mem_delta(Make) ->
    settle(),
    M0 = erlang:memory(total),
    {P, Ns} = Make(),
    M1 = erlang:memory(total),
    Ref = erlang:monitor(process, P),
    P ! stop,
    receive {'DOWN', Ref, process, P, _} -> ok end,
    settle(),
    #{bytes => M1 - M0, ns => Ns}.

monitor_n(_Target, 0) ->
    ok;
monitor_n(Target, I) ->
    erlang:monitor(process, Target),
    monitor_n(Target, I - 1).

%% The target has handled every signal this process sent it.
sync({_, _} = Target) ->
    Target ! {bench_ping, self(), sync, <<>>},
    receive {bench_pong, sync, _} -> ok
    after ?ACK_TIMEOUT -> exit(sync_timeout)
    end;
sync(P) ->
    P ! {ping, self()},
    receive pong -> ok
    after ?ACK_TIMEOUT -> exit(sync_timeout)
    end.

link_all(_Tab, '$end_of_table') ->
    ok;
link_all(Tab, P) ->
    link(P),
    link_all(Tab, ets:next(Tab, P)).

churn(0) ->
    ok;
churn(I) ->
    spawn(fun() -> ok end),
    churn(I - 1).

pongs(0) ->
    ok;
pongs(I) ->
    receive pong -> pongs(I - 1)
    after ?ACK_TIMEOUT -> exit(pong_timeout)
    end.

%% Until no more processes are left than Count (all that the job started
%% have exited).
wait_count(Count) ->
    wait_count(Count, erlang:monotonic_time(millisecond) + ?ACK_TIMEOUT).

wait_count(Count, End) ->
    case erlang:system_info(process_count) =< Count of
        true ->
            ok;
        false ->
            erlang:monotonic_time(millisecond) > End andalso exit(processes_left),
            erlang:yield(),
            wait_count(Count, End)
    end.

%% Let the VM free what exited processes held before memory is read.
settle() ->
    timer:sleep(50).

%% A stream of Rate messages per second for Ms milliseconds to a bench_lat
%% receiver, each a binary of Size bytes stamped with os:system_time at the
%% moment it is sent, each sent alone at its time: the sender spins on the
%% clock (Erlang timers tick in whole milliseconds, and a burst sent on
%% each tick would arrive in step with the receiver's millisecond timers).
latency(Target, Size, Rate, Ms) ->
    Gen = erlang:unique_integer([positive]),
    Target ! {bench_lat_start, self(), Gen},
    receive {bench_lat_ready, Gen} -> ok
    after ?READY_TIMEOUT -> exit(lat_not_ready)
    end,
    N = Rate * Ms div 1000,
    Pad = payload(max(0, Size - 8)),
    T0 = erlang:monotonic_time(nanosecond),
    pace(Target, Pad, T0, Rate, 0, N),
    Target ! {bench_lat_end, self(), Gen},
    receive
        {bench_lat_done, Gen, Count, P50, P99, Max} -> {bench_latency_done, Count, P50, P99, Max}
    after ?ACK_TIMEOUT -> exit(no_lat_done)
    end.

pace(_Target, _Pad, _T0, _Rate, N, N) ->
    ok;
pace(Target, Pad, T0, Rate, I, N) ->
    spin_until(T0 + I * 1000000000 div Rate),
    Target ! <<(os:system_time(nanosecond)):64, Pad/binary>>,
    pace(Target, Pad, T0, Rate, I + 1, N).

%% Yielding while it waits lets the scheduler run the distribution port's
%% output task at once.
spin_until(T) ->
    case erlang:monotonic_time(nanosecond) >= T of
        true -> ok;
        false -> erlang:yield(), spin_until(T)
    end.

%% Nearest-rank percentile of a sorted list.
percentile(Sorted, P) ->
    Len = length(Sorted),
    Rank = max(1, min(Len, (P * Len + 99) div 100)),
    lists:nth(Rank, Sorted).

%% ---------------------------------------------------------------------
%% Controller (the ctl node)
%% ---------------------------------------------------------------------

-define(SIZES, [16, 100, 1024, 65536]).
-define(KEYS, [mode, e1, e2, c1, c2, c3, ei1, ei2, pingpong, monitors, mondeadline,
               readbatch, work, sizes, ports, only]).

%% main(["key=value", ...]): mode (full or quick); e1, e2 (Erlang agents);
%% c1, c2 (aemp nodes, their read batching as run.sh was told), c3 (an aemp
%% node with read batching off, also the monitor target), ei1, ei2 (the
%% plain ei nodes): node names, or none; pingpong: the tcp_pingpong program
%% or none; monitors: the larger monitor count (0: skip); mondeadline:
%% seconds per monitor measurement; readbatch: c1's read_batch_ms as given
%% to run.sh; work: a directory to leave notes in for run.sh; sizes:
%% comma-separated payload sizes, each one of 16, 100, 1024, 65536; ports:
%% the count of ports and processes (0: skip); only: all, or ports (only
%% the ports and processes section).
main(Args) ->
    Code = try
               Opts = parse_args(Args),
               run(Opts)
           catch Class:Reason:Stack ->
                   io:format("bench controller failed: ~p:~p~n~p~n", [Class, Reason, Stack]),
                   1
           end,
    erlang:halt(Code).

parse_args(Args) ->
    Kv = maps:from_list([begin
                             [K, V] = string:split(A, "="),
                             Key = list_to_atom(K),
                             lists:member(Key, ?KEYS) orelse error({unknown_option, K}),
                             {Key, V}
                         end || A <- Args]),
    Node = fun(K) -> list_to_atom(maps:get(K, Kv, "none")) end,
    Int = fun(K, D) -> list_to_integer(maps:get(K, Kv, integer_to_list(D))) end,
    #{mode => list_to_atom(maps:get(mode, Kv, "full")),
      e1 => Node(e1), e2 => Node(e2), c1 => Node(c1), c2 => Node(c2), c3 => Node(c3),
      ei1 => Node(ei1), ei2 => Node(ei2),
      pingpong => maps:get(pingpong, Kv, "none"),
      monitors => Int(monitors, 1000000),
      mondeadline => Int(mondeadline, 30),
      readbatch => Int(readbatch, 0),
      work => maps:get(work, Kv, "none"),
      ports => Int(ports, 1000000),
      only => list_to_atom(maps:get(only, Kv, "all")),
      sizes => case maps:get(sizes, Kv, "") of
                   "" -> ?SIZES;
                   S -> [list_to_integer(X) || X <- string:lexemes(S, ",")]
               end}.

run(#{mode := Mode, e1 := E1, e2 := E2, c1 := C1, c2 := C2, c3 := C3, ei1 := EI1,
      ei2 := EI2, sizes := Sizes, only := Only} = Opts) ->
    Agents = [A || A <- [E1, E2, C1, C2, C3, EI1, EI2], A =/= none],
    Start = erlang:monotonic_time(millisecond),
    header(Mode),
    OsPids = hello(Agents, #{}, 30000),
    [io:format("agent ~s: ~s~n",
               [A, case maps:is_key(A, OsPids) of true -> "up"; false -> "NOT REACHABLE" end])
     || A <- Agents],
    io:format("~n"),
    Reach = fun(A) -> A =/= none andalso maps:is_key(A, OsPids) end,
    Env = Opts#{reach => Reach, ospids => OsPids},
    %% {Label, Sender node, Receiver node}: the baseline first, then the
    %% plain ei C node's references, then aemp.
    Dirs = [{"erl->erl", E1, E2},
            {"erl->ei", E1, EI1}, {"ei->erl", EI2, E2}, {"ei->ei", EI2, EI1},
            {"erl->c", E1, C1}, {"c->erl", C1, E2}, {"c->c", C1, C2}],
    Active = [D || {_, From, To} = D <- Dirs, From =/= none, To =/= none],
    %% Latency first, on fresh connections: a packet over 4 KB, or a sender
    %% that writes in large batches (as an Erlang node blasting on a busy
    %% machine may), ends read batching on a connection for good, and the
    %% warm-up and throughput runs below do both.
    {Results, Pinned, Mons} =
        case Only of
            ports ->
                {[], skipped, []};
            all ->
                Lat = measure_latency(Env),
                print_latency(Env, Lat),
                warm_up(Active, Reach),
                Rs = [{Size, measure_size(Env, Size, Active)} || Size <- Sizes],
                print_results(Env, Sizes, Rs),
                Pin = measure_pinned(Env, Active),
                print_pinned(Env, Pin),
                Local = measure_local(Env),
                print_local(Env, Local),
                Ms = measure_monitors(Env),
                print_monitors(Env, Ms),
                {Rs, Pin, Ms}
        end,
    Ports = measure_ports(Env),
    print_ports(Env, Ports),
    print_targets(Env, Results, Pinned, Mons, Ports),
    io:format("load average at end: ~s; measuring took ~b s~n",
              [load_average(), (erlang:monotonic_time(millisecond) - Start) div 1000]),
    Killed = [N || {_, N, _, killed} <- Mons],
    stop_agents([A || A <- Agents, Reach(A), not lists:member(A, Killed)]),
    0.

%% Wait until each agent has gone: halting at once could drop the stop
%% messages still in the distribution buffers.
stop_agents(Nodes) ->
    [begin
         erlang:monitor_node(N, true),
         {bench_agent, N} ! bench_stop
     end || N <- Nodes],
    [receive {nodedown, N} -> ok after 5000 -> ok end || N <- Nodes],
    ok.

header(Mode) ->
    {ok, Host} = inet:gethostname(),
    io:format("aemp benchmark (~s): per size and direction, median of ~b round(s)~n",
              [Mode, rounds(Mode)]),
    io:format("machine: ~s, ~b logical CPUs, ~s~n",
              [Host, erlang:system_info(logical_processors), cpu_model()]),
    io:format("OTP ~s, erts ~s~n",
              [erlang:system_info(otp_release), erlang:system_info(version)]),
    io:format("all nodes on loopback in a private network namespace~n"),
    io:format("load average at start: ~s~n", [load_average()]).

%% Other work on the machine skews every figure: the report shows it.
load_average() ->
    case file:read_file("/proc/loadavg") of
        {ok, Data} -> lists:join(" ", lists:sublist(string:lexemes(Data, " \n"), 3));
        _ -> "unknown"
    end.

cpu_model() ->
    case file:read_file("/proc/cpuinfo") of
        {ok, Data} ->
            case re:run(Data, "^model name\\s*:\\s*(.*)$",
                        [multiline, {capture, all_but_first, binary}]) of
                {match, [M]} -> M;
                nomatch -> "unknown CPU"
            end;
        _ ->
            "unknown CPU"
    end.

%% Say hello to every agent until all have answered or Timeout ms passed;
%% returns #{Node => OsPid} of the agents that answered. Nodes may still be
%% starting.
hello(Agents, Answered, Timeout) ->
    case [A || A <- Agents, not maps:is_key(A, Answered)] of
        [] ->
            Answered;
        _ when Timeout =< 0 ->
            Answered;
        Waiting ->
            [{bench_agent, A} ! {bench_hello, self()} || A <- Waiting],
            hello(Agents, collect_hellos(Answered, 250), Timeout - 250)
    end.

collect_hellos(Answered, Wait) ->
    receive
        {bench_hello_ok, Node, OsPid} -> collect_hellos(Answered#{Node => OsPid}, Wait)
    after Wait -> Answered
    end.

%% Message counts per size: N for throughput, K round trips for latency.
%% aemp's c->c runs at millions of messages a second: it sends at least a
%% million (64 KB: 50,000) where the others send fewer.
counts(full, 16) -> {400000, 3000};
counts(full, 100) -> {400000, 3000};
counts(full, 1024) -> {200000, 3000};
counts(full, 65536) -> {20000, 1000};
counts(quick, 16) -> {100000, 1000};
counts(quick, 100) -> {100000, 1000};
counts(quick, 1024) -> {50000, 1000};
counts(quick, 65536) -> {3000, 300}.

blast_count(Mode, Size, "c->c") -> max(element(1, counts(Mode, Size)), cc_count(Mode, Size));
blast_count(Mode, Size, _) -> element(1, counts(Mode, Size)).

cc_count(full, 65536) -> 50000;
cc_count(full, _) -> 1000000;
cc_count(quick, 65536) -> 10000;
cc_count(quick, _) -> 300000.

%% Rounds per size: every direction is measured once per round, the
%% directions interleaved so that the baseline sees the same machine state;
%% the report shows the median over the rounds.
rounds(full) -> 3;
rounds(quick) -> 1.

%% Window: 1 MB or 1000 messages, whichever is fewer (at least 16); two
%% windows may be in flight.
window(Size) ->
    max(16, min(1000, (1 bsl 20) div Size)).

%% An untimed run per direction first: connections set up, code loaded,
%% buffers grown.
warm_up(Dirs, Reach) ->
    [command(From, fun(Ctl) -> {bench_blast, Ctl, {bench_sink, To}, 100, 20000, window(100)} end,
             60000)
     || {_, From, To} <- Dirs, Reach(From), Reach(To)],
    ok.

measure_size(#{mode := Mode} = Env, Size, Dirs) ->
    Runs = [floor_row(Env, Size, false)
            ++ [{Label, measure(Env, Size, From, To, Label)} || {Label, From, To} <- Dirs]
            || _ <- lists:seq(1, rounds(Mode))],
    [{Label, aggregate([proplists:get_value(Label, Run) || Run <- Runs])}
     || {Label, _} <- hd(Runs)].

floor_row(#{pingpong := "none"}, _Size, _Pinned) ->
    [];
floor_row(#{mode := Mode} = Env, Size, Pinned) ->
    [{"tcp", tcp_floor(Env, Size, element(2, counts(Mode, Size)), Pinned)}].

aggregate(Ms) ->
    case [M || M <- Ms, maps:is_key(error, M)] of
        [Failed | _] ->
            Failed;
        [] ->
            Keys = maps:keys(hd(Ms)),
            maps:from_list([{Key, median([maps:get(Key, M) || M <- Ms])} || Key <- Keys])
    end.

median(Xs) ->
    lists:nth((length(Xs) + 1) div 2, lists:sort(Xs)).

measure(#{mode := Mode, reach := Reach}, Size, From, To, Label) ->
    case Reach(From) andalso Reach(To) of
        false ->
            #{error => <<"node not reachable">>};
        true ->
            N = blast_count(Mode, Size, Label),
            {_, K} = counts(Mode, Size),
            Tput = command(From, fun(Ctl) ->
                                         {bench_blast, Ctl, {bench_sink, To}, Size, N, window(Size)}
                                 end, 300000),
            M1 = case Tput of
                     {bench_blast_done, Ns, N, Bytes} when Bytes =:= N * Size, Ns > 0 ->
                         #{rate => N * 1.0e9 / Ns};
                     {bench_blast_done, _, Count, Bytes} ->
                         #{error => iolist_to_binary(
                                      io_lib:format("sink got ~b msgs / ~b bytes of ~b",
                                                    [Count, Bytes, N]))};
                     Other1 ->
                         #{error => failure_text(Other1)}
                 end,
            maps:merge(M1, rtt_of(From, To, Size, K))
    end.

rtt_of(From, To, Size, K) ->
    case command(From, fun(Ctl) -> {bench_rtt, Ctl, {bench_echo, To}, Size, K} end, 300000) of
        {bench_rtt_done, Med, P99} -> #{median => Med / 1000, p99 => P99 / 1000};
        Other -> #{error => failure_text(Other)}
    end.

%% The raw TCP ping-pong (bench/tcp_pingpong.c): two processes, blocking
%% read and write, TCP_NODELAY; Pinned runs both on CPU 0.
tcp_floor(#{pingpong := Prog}, Size, K, Pinned) ->
    Cmd = lists:flatten(io_lib:format("~s~s --size ~b --count ~b",
                                      [case Pinned of true -> "taskset -c 0 "; false -> "" end,
                                       Prog, Size, K])),
    Out = os:cmd(Cmd),
    case io_lib:fread("~d ~d", Out) of
        {ok, [Med, P99], _} -> #{median => Med / 1000, p99 => P99 / 1000};
        _ -> #{error => iolist_to_binary(["tcp_pingpong: ", string:trim(Out)])}
    end.

failure_text({bench_error, Text}) -> Text;
failure_text(timeout) -> <<"timed out">>;
failure_text(Other) -> iolist_to_binary(io_lib:format("~p", [Other])).

-define(DONE_TAGS, [bench_blast_done, bench_rtt_done, bench_local_done, bench_monitors_done,
                    bench_latency_done, bench_ports_done, bench_procs_done, bench_error]).

command(Agent, Make, Timeout) ->
    flush(),
    {bench_agent, Agent} ! Make(self()),
    command_wait(Timeout).

command_wait(Timeout) ->
    receive
        R when is_tuple(R), tuple_size(R) >= 2 ->
            case lists:member(element(1, R), ?DONE_TAGS) of
                true -> R;
                false -> command_wait(Timeout)
            end
    after Timeout -> timeout
    end.

flush() ->
    receive _ -> flush()
    after 0 -> ok
    end.

%% ---------------------------------------------------------------------
%% Pinned round trips, local dispatch, monitors, read-batching latency
%% ---------------------------------------------------------------------

pinned_size() -> 100.

%% Round trips at 100 B with both ends on CPU 0 (taskset -a: every thread
%% of both processes), the raw TCP ping-pong the same way.
measure_pinned(#{mode := Mode, reach := Reach, ospids := OsPids} = Env, Dirs) ->
    case os:find_executable("taskset") of
        false ->
            skipped;
        _ ->
            Size = pinned_size(),
            {_, K} = counts(Mode, Size),
            Rounds = [floor_row(Env, Size, true)
                      ++ [{Label, pinned_rtt(From, To, Size, K, OsPids)}
                          || {Label, From, To} <- Dirs, Reach(From), Reach(To)]
                      || _ <- lists:seq(1, rounds(Mode))],
            [{Label, aggregate([proplists:get_value(Label, R) || R <- Rounds])}
             || {Label, _} <- hd(Rounds)]
    end.

pinned_rtt(From, To, Size, K, OsPids) ->
    Pids = [maps:get(From, OsPids), maps:get(To, OsPids)],
    set_affinity(Pids, "0"),
    try rtt_of(From, To, Size, K)
    after set_affinity(Pids, "0-" ++ integer_to_list(erlang:system_info(logical_processors) - 1))
    end.

set_affinity(Pids, Cpus) ->
    [os:cmd(io_lib:format("taskset -a -p -c ~s ~b", [Cpus, P])) || P <- Pids],
    ok.

local_n(full) -> 2000000;
local_n(quick) -> 300000.

%% Local dispatch on c1 and on e1: {Mode, C result, Erlang result}.
measure_local(#{mode := Mode, e1 := E1, c1 := C1, reach := Reach}) ->
    N = local_n(Mode),
    Size = 100,
    One = fun(Node, M) ->
                  case Reach(Node) of
                      false ->
                          #{error => <<"not measured">>};
                      true ->
                          case command(Node, fun(Ctl) -> {bench_local, Ctl, M, Size, N} end,
                                       120000) of
                              {bench_local_done, Ns, N, Allocs} when Ns > 0 ->
                                  maps:merge(#{rate => N * 1.0e9 / Ns},
                                             case Allocs of
                                                 none -> #{};
                                                 _ -> #{allocs => Allocs / N}
                                             end);
                              {bench_local_done, _, Count, _} ->
                                  #{error => iolist_to_binary(
                                               io_lib:format("~b of ~b delivered", [Count, N]))};
                              Other ->
                                  #{error => failure_text(Other)}
                          end
                  end
          end,
    [{M, aggregate([One(C1, M) || _ <- lists:seq(1, rounds(Mode))]),
      aggregate([One(E1, M) || _ <- lists:seq(1, rounds(Mode))])}
     || M <- [loop, pingpong]].

%% Monitor and demonitor rates, run from e1: Erlang's own (e2's bench_echo)
%% and aemp's (c3's bench_echo), each at the larger count and a tenth of
%% it. A C node that misses its deadline is killed (it would go on
%% working through the signals) and its larger count skipped.
%% Returns [{Label, Node, N, Result | killed}].
measure_monitors(#{monitors := 0}) ->
    [];
measure_monitors(#{monitors := Big, mondeadline := Secs, e1 := E1, e2 := E2, c3 := C3,
                   reach := Reach} = Env) ->
    Small = max(1, Big div 10),
    Erl = [{"erl", E2, N, mon_run(E1, E2, N, Secs)} || Reach(E1), Reach(E2), N <- [Small, Big]],
    C = case Reach(E1) andalso Reach(C3) of
            false ->
                [];
            true ->
                R1 = mon_run(E1, C3, Small, Secs),
                case maps:is_key(error, R1) of
                    true ->
                        kill_node(Env, C3),
                        [{"c", C3, Small, killed}, {"c", C3, Big, skipped}];
                    false ->
                        R2 = mon_run(E1, C3, Big, Secs),
                        [{"c", C3, Small, R1}
                         | case maps:is_key(error, R2) of
                               true -> kill_node(Env, C3), [{"c", C3, Big, killed}];
                               false -> [{"c", C3, Big, R2}]
                           end]
                end
        end,
    Erl ++ C.

mon_run(From, To, N, Secs) ->
    case command(From, fun(Ctl) -> {bench_monitors, Ctl, {bench_echo, To}, N, Secs * 1000} end,
                 Secs * 1000 + 15000) of
        {bench_monitors_done, MonNs, DemonNs} -> #{mon => MonNs, demon => DemonNs};
        Other -> #{error => failure_text(Other)}
    end.

%% Ports and processes: memory per port, monitor and link, and the rate of
%% create+kill, on c1 (bench_ports) and on e1 (bench_procs), N each; the
%% remote monitors (N/10) watch e2's bench_echo.
measure_ports(#{ports := 0}) ->
    skipped;
measure_ports(#{ports := N, e1 := E1, e2 := E2, c1 := C1, reach := Reach}) ->
    {NR, Remote} = case Reach(E2) of
                       true -> {max(1, N div 10), {bench_echo, E2}};
                       false -> {0, none}
                   end,
    C = case Reach(C1) of
            false -> #{error => <<"not measured">>};
            true -> ports_c(C1, N, NR, Remote)
        end,
    Erl = case Reach(E1) of
              false -> #{error => <<"not measured">>};
              true -> procs_erl(E1, N, NR, Remote)
          end,
    #{n => N, nr => NR, c => C, erl => Erl}.

%% The C node's snapshots, in the order of enum snap in aemp_bench.c.
-define(SNAPS, [fresh, base, open, rmon0, rmon, mon0, mon, link0, link, close0, closed, churn,
                trimmed]).

ports_c(Node, N, NR, Remote) ->
    case command(Node, fun(Ctl) -> {bench_ports, Ctl, N, NR, Remote} end, 600000) of
        {bench_ports_done, T, Snaps} when length(Snaps) =:= length(?SNAPS) ->
            S = maps:from_list(lists:zip(?SNAPS, Snaps)),
            Heap = fun(K) -> element(1, maps:get(K, S)) end,
            Usable = fun(K) -> element(2, maps:get(K, S)) end,
            Rss = fun(K) -> element(3, maps:get(K, S)) end,
            %% {heap, usable} bytes per object from snapshot A to B
            Per = fun(_, _, 0) -> undefined;
                     (A, B, K) -> {(Heap(B) - Heap(A)) / K, (Usable(B) - Usable(A)) / K}
                  end,
            #{n => N, nr => NR,
              port => Per(base, open, N),
              %% the monitors and links share one table that never shrinks:
              %% each counts from before the first of them (rmon0), so that
              %% the table sized for it is in its figure
              rmon => Per(rmon0, rmon, NR), mon => Per(rmon0, mon, N), link => Per(rmon0, link, N),
              fresh => maps:get(fresh, T), open => maps:get(open, T),
              close => maps:get(close, T),
              fresh_allocs => maps:get(fresh_allocs, T) / N,
              fresh_heap => Heap(base) - Heap(fresh),
              churn => maps:get(churn, T), mon_ns => maps:get(mon, T),
              open_allocs => maps:get(open_allocs, T) / N,
              close_allocs => maps:get(close_allocs, T) / N,
              churn_allocs => maps:get(churn_allocs, T) / N,
              link_ns => maps:get(link, T), rmon_ns => maps:get(rmon, T),
              retained => Heap(closed) - Heap(base),
              churn_heap => Heap(churn) - Heap(closed),
              rss_closed => Rss(closed), rss_churn => Rss(churn), rss_trimmed => Rss(trimmed),
              rss_peak => lists:max([R || {_, _, R} <- Snaps])};
        Other ->
            #{error => failure_text(Other)}
    end.

procs_erl(Node, N, NR, Remote) ->
    case command(Node, fun(Ctl) -> {bench_procs, Ctl, N, NR, Remote} end, 600000) of
        {bench_procs_done, M} -> M;
        Other -> #{error => failure_text(Other)}
    end.

print_ports(_Env, skipped) ->
    io:format("Ports and processes: skipped (--ports 0)~n~n");
print_ports(#{c1 := C1, e1 := E1}, #{n := N, nr := NR, c := C, erl := E}) ->
    io:format("Ports and processes: N = ~s on ~s (C, one thread) and on ~s (Erlang, one~n"
              "  scheduler online); remote monitors: ~s, of e2's bench_echo~n"
              "  (bytes per object, tables included: c: growth of malloc's bytes in use~n"
              "   (mallinfo2: chunks with their headers, mmapped blocks), malloc'd: growth~n"
              "   of the malloc_usable_size of live blocks; erl: growth of~n"
              "   erlang:memory(processes) for a process, of erlang:memory(total) for a~n"
              "   monitor or link; xR = erl / c, above 1 is smaller)~n",
              [group(N), short_or_none(C1), short_or_none(E1), group(NR)]),
    Row = fun(Label, CK, EK, Extra) ->
                  io:format("  ~-16s c ~s  erl ~s~s  ~s~n",
                            [Label, c_bytes(C, CK), erl_bytes(E, EK), Extra(E),
                             bytes_ratio(maps:get(CK, C, undefined), maps:get(EK, E, undefined))])
          end,
    NoExtra = fun(_) -> "" end,
    Row("idle port", port, proc,
        fun(#{proc_info := PI}) -> io_lib:format(" (process_info ~b)", [PI]);
           (_) -> ""
        end),
    Row("monitor, local", mon, mon, NoExtra),
    NR > 0 andalso Row("monitor, remote", rmon, rmon, NoExtra),
    Row("link, local", link, link, NoExtra),
    io:format("  (per second; allocs: malloc+calloc+realloc calls per object of the C node;~n"
              "   xR = c / erl, above 1 is faster)~n"),
    RateRow = fun(Label, CK, EK, Text) ->
                      Allocs = case maps:get(list_to_atom(atom_to_list(CK) ++ "_allocs"), C,
                                             undefined) of
                                   undefined -> "";
                                   A -> io_lib:format(" ~5s allocs", [fmt2(A)])
                               end,
                      io:format("  ~-13s c ~s~s  erl ~s  ~s  ~s~n",
                                [Label, rate_of(C, CK, N), Allocs, rate_of(E, EK, N),
                                 rate_ratio(C, CK, E, EK), Text])
              end,
    RateRow("create+kill", fresh, churn,
            "(c: aemp_port_open + aemp_port_close, one port at a time;\n"
            "                erl: spawn(fun() -> ok end), until all have exited)"),
    RateRow("  again", churn, churn, "(c: the same once N ports have grown the port table)"),
    RateRow("open N", open, spawn, "(erl: spawn N idle processes)"),
    RateRow("close N", close, kill, "(erl: exit(P, kill) each, until all have exited)"),
    RateRow("monitor", mon_ns, mon_ns, "(local: one watcher, one target)"),
    RateRow("link", link_ns, link_ns, "(one port or process linked to the N)"),
    case C of
        #{retained := Ret, churn_heap := CH, fresh_heap := FH, rss_peak := Peak,
          rss_closed := RC, rss_churn := RCh, rss_trimmed := RT} ->
            io:format("  c after: N create+kill ~s MB in use more than before them; the N closed~n"
                      "    ~s MB (tables that keep their size); N create+kill again ~s MB;~n"
                      "    RSS: peak ~s MB, ~s MB closed, ~s MB after create+kill,~n"
                      "    ~s MB after malloc_trim(0)~n",
                      [mb(FH), mb(Ret), mb(CH), mb(Peak), mb(RC), mb(RCh), mb(RT)]);
        _ ->
            ok
    end,
    case E of
        #{after_kill := AK, after_churn := AC} ->
            io:format("  erl after: the N killed ~s MB in memory(processes) more than before~n"
                      "    them; N spawn+exit then ~s MB~n", [mb(AK), mb(AC)]);
        _ ->
            ok
    end,
    io:format("~n").

short_or_none(none) -> "none";
short_or_none(Node) -> short(Node).

c_bytes(#{error := <<"not measured">>}, _) -> io_lib:format("~-30s", ["not measured"]);
c_bytes(#{error := Err}, _) -> io_lib:format("~-30s", [["FAILED: ", Err]]);
c_bytes(C, K) ->
    case maps:get(K, C) of
        {H, U} -> io_lib:format("~9s B (malloc'd ~9s)", [fmt1(H), fmt1(U)]);
        undefined -> io_lib:format("~30s", ["n/a"])
    end.

erl_bytes(#{error := <<"not measured">>}, _) -> "not measured";
erl_bytes(#{error := Err}, _) -> io_lib:format("FAILED: ~s", [Err]);
erl_bytes(E, K) ->
    case maps:get(K, E) of
        undefined -> "n/a";
        B -> io_lib:format("~9s B", [fmt1(B)])
    end.

bytes_ratio({H, _}, B) when is_number(B), H > 0 -> io_lib:format("x~.2f", [B / H]);
bytes_ratio(_, _) -> "".

rate_of(#{error := _}, _, _) -> io_lib:format("~13s", ["-"]);
rate_of(M, K, N) ->
    case maps:get(K, M, 0) of
        Ns when Ns > 0 -> io_lib:format("~11s/s", [group(N * 1.0e9 / Ns)]);
        _ -> io_lib:format("~13s", ["n/a"])
    end.

rate_ratio(C, CK, E, EK) ->
    case {maps:get(CK, C, 0), maps:get(EK, E, 0)} of
        {CNs, ENs} when is_number(CNs), is_number(ENs), CNs > 0, ENs > 0 ->
            io_lib:format("x~.2f", [ENs / CNs]);
        _ ->
            ""
    end.

mb(B) -> io_lib:format("~.1f", [B / 1.0e6]).

%% Tell run.sh first, so that it does not report the kill as a crash.
kill_node(#{ospids := OsPids, work := Work}, Node) ->
    Work =/= "none" andalso
        file:write_file(filename:join(Work, "killed-" ++ hd(string:split(atom_to_list(Node), "@"))),
                        <<"monitor deadline\n">>),
    os:cmd(io_lib:format("kill -9 ~b", [maps:get(Node, OsPids)])),
    ok.

latency_rate() -> 5000.
latency_ms(full) -> 2000;
latency_ms(quick) -> 1000.

%% One-way latency of a paced stream from e1, 100 B messages: to e2 (the
%% baseline), to c1 (read batching as run.sh was told) and to c3 (read
%% batching off).
measure_latency(#{mode := Mode, e1 := E1, e2 := E2, c1 := C1, c3 := C3, reach := Reach}) ->
    [{Label, To, case Reach(E1) andalso Reach(To) of
                     false -> #{error => <<"not measured">>};
                     true -> latency_run(E1, To, Mode)
                 end}
     || {Label, To} <- [{"erl->erl", E2}, {"erl->c", C1}, {"erl->c", C3}], To =/= none].

latency_run(From, To, Mode) ->
    Ms = latency_ms(Mode),
    case command(From, fun(Ctl) ->
                               {bench_latency, Ctl, {bench_lat, To}, 100, latency_rate(), Ms}
                       end, Ms + 60000) of
        {bench_latency_done, Count, P50, P99, Max} when Count > 0 ->
            #{count => Count, p50 => P50 / 1000, p99 => P99 / 1000, max => Max / 1000};
        Other ->
            #{error => failure_text(Other)}
    end.

%% ---------------------------------------------------------------------
%% Report
%% ---------------------------------------------------------------------

%% The plain ei node's figure an aemp direction is compared with.
ei_ref("erl->c") -> "erl->ei";
ei_ref("c->erl") -> "ei->erl";
ei_ref("c->c") -> "ei->ei";
ei_ref(_) -> none.

print_results(#{mode := Mode}, Sizes, Results) ->
    io:format("Throughput: one sender blasting to one receiver, at most two windows~n"
              "  unacknowledged (window = min(1000 msgs, 1 MB)); messages per run:~n  ~s~n",
              [string:join([io_lib:format("~s ~b (c->c ~b)",
                                          [size_label(S), blast_count(Mode, S, "erl->erl"),
                                           blast_count(Mode, S, "c->c")])
                            || S <- Sizes], ", ")]),
    io:format("  (MB/s counts payload bytes; xR = this / erl->erl, above 1 is faster;~n"
              "   ei xE = this / the plain ei C node in the same place: erl->c / erl->ei,~n"
              "   c->erl / ei->erl, c->c / ei->ei)~n"),
    [begin
         Base = maps:get(rate, base(Row), undefined),
         [io:format("  ~-8s ~-6s ~s~s~n",
                    [Label, size_label(Size), tput_line(M, Size, Base), ei_tput(Label, Row)])
          || {Label, M} <- Row, Label =/= "tcp"]
     end || {Size, Row} <- Results],
    io:format("~nRound trip: ping-pong, the payload each way, one at a time; round trips:~n  ~s~n",
              [string:join([io_lib:format("~s ~b", [size_label(S), element(2, counts(Mode, S))])
                            || S <- Sizes], ", ")]),
    io:format("  (microseconds; xR = erl->erl median / this median, above 1 is faster;~n"
              "   tcp xF = this median / the raw TCP ping-pong's median (the floor: 1.00 is~n"
              "   the least possible, lower is better); ei xE = the plain ei node's median in~n"
              "   the same place / this median, above 1 is faster)~n"),
    [begin
         B = base(Row),
         Floor = proplists:get_value("tcp", Row),
         [io:format("  ~-8s ~-6s ~s~s~n",
                    [Label, size_label(Size),
                     case Label of
                         "tcp" -> floor_line(M);
                         _ -> rtt_line(M, B, Floor)
                     end, ei_rtt(Label, Row)])
          || {Label, M} <- Row]
     end || {Size, Row} <- Results],
    io:format("~n").

base(Row) ->
    case lists:keyfind("erl->erl", 1, Row) of
        {_, M} -> M;
        false -> #{}
    end.

tput_line(#{rate := R}, Size, Base) ->
    Mbs = R * Size / 1.0e6,
    io_lib:format("~13s msg/s ~10s MB/s  (erl->erl ~s)  ~s",
                  [group(R), fmt1(Mbs), base_rate(Base), ratio(R, Base)]);
tput_line(M, _, _) ->
    io_lib:format("FAILED: ~s", [maps:get(error, M, <<"?">>)]).

ei_tput(Label, Row) ->
    case {lists:keyfind(Label, 1, Row), lists:keyfind(ei_ref(Label), 1, Row)} of
        {{_, #{rate := R}}, {Ref, #{rate := E}}} ->
            io_lib:format("  ei ~s (~s ~s)", [ratio(R, E), Ref, group(E)]);
        _ ->
            ""
    end.

base_rate(undefined) -> "n/a";
base_rate(B) -> group(B).

rtt_line(#{median := Med, p99 := P99}, B, Floor) ->
    BaseTxt = case B of
                  #{median := BM, p99 := BP} ->
                      io_lib:format("(erl->erl ~s / ~s)", [fmt1(BM), fmt1(BP)]);
                  _ -> "(erl->erl n/a)"
              end,
    Ratio = case B of
                #{median := BM2} -> ratio(BM2, Med);
                _ -> ""
            end,
    io_lib:format("median ~9s us  p99 ~9s us  ~s  ~s~s",
                  [fmt1(Med), fmt1(P99), BaseTxt, Ratio, floor_ratio(Med, Floor)]);
rtt_line(M, _, _) ->
    io_lib:format("FAILED: ~s", [maps:get(error, M, <<"?">>)]).

floor_ratio(Med, #{median := F}) when F > 0 -> io_lib:format("  tcp x~.2f", [Med / F]);
floor_ratio(_, _) -> "".

floor_line(#{median := Med, p99 := P99}) ->
    io_lib:format("median ~9s us  p99 ~9s us  (raw TCP ping-pong: the floor)", [fmt1(Med), fmt1(P99)]);
floor_line(M) ->
    io_lib:format("FAILED: ~s", [maps:get(error, M, <<"?">>)]).

ei_rtt(Label, Row) ->
    case {lists:keyfind(Label, 1, Row), lists:keyfind(ei_ref(Label), 1, Row)} of
        {{_, #{median := Med}}, {_, #{median := E}}} -> io_lib:format("  ei ~s", [ratio(E, Med)]);
        _ -> ""
    end.

ratio(_, undefined) -> "";
ratio(A, B) when is_number(A), is_number(B), B > 0 -> io_lib:format("x~.2f", [A / B]);
ratio(_, _) -> "".

print_pinned(_Env, skipped) ->
    io:format("Round trip pinned: skipped (no taskset)~n~n");
print_pinned(#{mode := Mode}, Rows) ->
    io:format("Round trip pinned: both ends on CPU 0 (taskset -a -p -c 0 on both processes;~n"
              "  the raw TCP ping-pong under taskset -c 0), ~s, ~b round trips~n"
              "  (microseconds; tcp xF = this median / the pinned raw TCP median)~n",
              [size_label(pinned_size()), element(2, counts(Mode, pinned_size()))]),
    Floor = proplists:get_value("tcp", Rows),
    [io:format("  ~-8s ~-6s ~s~n",
               [Label, size_label(pinned_size()),
                case M of
                    #{median := Med, p99 := P99} ->
                        io_lib:format("median ~9s us  p99 ~9s us~s", [fmt1(Med), fmt1(P99),
                                                                      floor_ratio(Med, Floor)]);
                    _ ->
                        io_lib:format("FAILED: ~s", [maps:get(error, M, <<"?">>)])
                end])
     || {Label, M} <- Rows],
    io:format("~n").

print_local(#{mode := Mode}, Rows) ->
    io:format("Local dispatch: ~b messages of 100 B (a binary) between two processes of one~n"
              "  node: sent in a loop to a receiver (loop), or bounced between two from their~n"
              "  callbacks (pingpong); c on c1 (two ports, aemp_send), erl on e1 (!, receive)~n"
              "  (msg/s delivered; allocs/msg: malloc+calloc+realloc calls of the C node's~n"
              "   thread per message; xR = c / erl, above 1 is faster)~n",
              [local_n(Mode)]),
    [io:format("  ~-9s c ~s  erl ~s  ~s~n",
               [atom_to_list(M), local_c(C), local_erl(E), local_ratio(C, E)])
     || {M, C, E} <- Rows],
    io:format("~n").

local_c(#{rate := R} = M) ->
    io_lib:format("~13s msg/s ~7s allocs/msg", [group(R), fmt2(maps:get(allocs, M, 0))]);
local_c(#{error := <<"not measured">>}) -> io_lib:format("~35s", ["not measured"]);
local_c(M) -> io_lib:format("FAILED: ~s", [maps:get(error, M, <<"?">>)]).

local_erl(#{rate := R}) -> io_lib:format("~13s msg/s", [group(R)]);
local_erl(M) -> io_lib:format("FAILED: ~s", [maps:get(error, M, <<"?">>)]).

local_ratio(#{rate := C}, #{rate := E}) -> ratio(C, E);
local_ratio(_, _) -> "".

print_monitors(_Env, []) ->
    io:format("Monitors: skipped (--monitors 0)~n~n");
print_monitors(#{mondeadline := Secs}, Rows) ->
    io:format("Monitors: a process on e1 calls erlang:monitor(process, {bench_echo, Node}) N~n"
              "  times, then erlang:demonitor(Ref, [flush]) for each, oldest first; a phase~n"
              "  ends when a ping sent after its last call returns; deadline ~b s each~n"
              "  target            N     monitors/s   demonitors/s     total s~n", [Secs]),
    [io:format("  ~-10s ~10s  ~s~n",
               [io_lib:format("~s (~s)", [Kind, short(Node)]), group(N), mon_line(R, N, Secs)])
     || {Kind, Node, N, R} <- Rows],
    case [{K, T} || K <- ["erl", "c"], T <- [mon_scale(K, Rows)], T =/= none] of
        [] -> ok;
        Ts -> io:format("  time for the larger count / the smaller (10.0 is linear): ~s~n",
                        [string:join([io_lib:format("~s x~.1f", [K, T]) || {K, T} <- Ts], ", ")])
    end,
    io:format("~n").

mon_line(#{mon := Mn, demon := Dn}, N, _Secs) ->
    io_lib:format("~13s  ~13s  ~10s", [group(N * 1.0e9 / max(1, Mn)), group(N * 1.0e9 / max(1, Dn)),
                                        fmt1((Mn + Dn) / 1.0e9)]);
mon_line(killed, _N, Secs) ->
    io_lib:format("NOT DONE within ~b s (the C node was killed)", [Secs]);
mon_line(skipped, _N, _) ->
    "skipped (the smaller count missed its deadline)";
mon_line(#{error := E}, _N, _) ->
    io_lib:format("FAILED: ~s", [E]).

mon_scale(Kind, Rows) ->
    case [{N, Mn + Dn} || {K, _, N, #{mon := Mn, demon := Dn}} <- Rows, K =:= Kind] of
        [{_, Small}, {_, Big}] when Small > 0 -> Big / Small;
        _ -> none
    end.

short(Node) -> hd(string:split(atom_to_list(Node), "@")).

print_latency(#{mode := Mode, readbatch := RB}, Rows) ->
    io:format("One-way latency: e1 sends ~b messages of 100 B a second for ~b ms, evenly~n"
              "  spaced, each stamped with os:system_time when sent; the receiver subtracts~n"
              "  that from its own CLOCK_REALTIME when the message reaches its process or~n"
              "  callback (microseconds)~n",
              [latency_rate(), latency_ms(Mode)]),
    [io:format("  ~-8s ~-30s ~s~n", [Label, lat_label(To, RB), lat_line(M)])
     || {Label, To, M} <- Rows],
    io:format("~n").

lat_label(To, RB) ->
    case short(To) of
        "c1" -> io_lib:format("c1, read_batch_ms ~s", [rb_text(RB)]);
        "c3" -> "c3, read_batch_ms -1 (off)";
        S -> S
    end.

rb_text(0) -> "1 (default)";
rb_text(-1) -> "-1 (off)";
rb_text(N) -> integer_to_list(N).

lat_line(#{p50 := P50, p99 := P99, max := Max, count := C}) ->
    io_lib:format("p50 ~9s us  p99 ~9s us  max ~9s us  (~b msgs)",
                  [fmt1(P50), fmt1(P99), fmt1(Max), C]);
lat_line(M) ->
    io_lib:format("FAILED: ~s", [maps:get(error, M, <<"?">>)]).

print_targets(Env, Results, Pinned, Mons, Ports) ->
    io:format("Targets (informational):~n"),
    case lists:keyfind(100, 1, Results) of
        {100, Row} ->
            Base = maps:get(rate, base(Row), undefined),
            EiCC = case lists:keyfind("ei->ei", 1, Row) of
                       {_, #{rate := E}} -> E;
                       _ -> undefined
                   end,
            target(Row, "erl->c", Base, 1.0, "100 B erl->c >= erl->erl"),
            target(Row, "c->c", Base, 5.0, "100 B c->c >= 5 x erl->erl"),
            target(Row, "c->c", EiCC, 5.0, "100 B c->c >= 5 x ei->ei");
        false ->
            ok
    end,
    case Pinned of
        skipped ->
            ok;
        _ ->
            case {proplists:get_value("c->c", Pinned), proplists:get_value("tcp", Pinned)} of
                {#{median := M}, #{median := F}} when F > 0 ->
                    io:format("  ~-36s x~.2f  ~s~n",
                              ["pinned c->c round trip <= 1.15 x tcp", M / F,
                               met(M / F =< 1.15)]);
                _ ->
                    ok
            end
    end,
    case mon_scale("c", Mons) of
        none -> ok;
        T -> io:format("  ~-36s x~.1f  (10 is linear)~n", ["c monitors: time 10x count", T])
    end,
    case Ports of
        #{c := #{port := {PortB, _}, mon := {MonB, _}, fresh := FreshNs, churn := ChurnNs,
                 n := N}} ->
            io:format("  ~-36s ~s B  ~s~n", ["idle port <= 128 B", fmt1(PortB), met(PortB =< 128)]),
            io:format("  ~-36s ~s B  ~s~n", ["local monitor <= 64 B", fmt1(MonB), met(MonB =< 64)]),
            [begin
                 Rate = N * 1.0e9 / max(1, Ns),
                 io:format("  ~-36s ~s/s  ~s~n", [Text, group(Rate), met(Rate >= 5.0e6)])
             end || {Text, Ns} <- [{"port create+kill >= 5,000,000/s", FreshNs},
                                   {"  the same, port table grown", ChurnNs}]];
        _ ->
            ok
    end,
    case maps:get(c1, Env) of
        none -> io:format("  (C directions not measured: --erl-only)~n");
        _ -> ok
    end,
    ok.

met(true) -> "met";
met(false) -> "not met".

target(Row, Label, Base, Want, Text) ->
    case lists:keyfind(Label, 1, Row) of
        {Label, #{rate := R}} when is_number(Base) ->
            io:format("  ~-36s x~.2f  ~s~n", [Text, R / Base, met(R / Base >= Want)]);
        {Label, _} ->
            io:format("  ~-36s not measured~n", [Text]);
        false ->
            ok
    end.

size_label(S) when S >= 1024 -> integer_to_list(S div 1024) ++ "KB";
size_label(S) -> integer_to_list(S) ++ "B".

fmt1(X) -> io_lib:format("~.1f", [float(X)]).
fmt2(X) -> io_lib:format("~.2f", [float(X)]).

%% 1234567.8 -> "1,234,568"
group(X) ->
    Digits = integer_to_list(round(X)),
    group_digits(lists:reverse(Digits), []).

group_digits([A, B, C, D | Rest], Acc) ->
    group_digits([D | Rest], [$,, C, B, A | Acc]);
group_digits(Rest, Acc) ->
    lists:reverse(Rest) ++ Acc.
