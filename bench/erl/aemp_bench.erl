%% aemp_bench: the Erlang side of the aemp benchmark (bench/run.sh).
%%
%% Every benchmark node, Erlang or C, runs the same three registered
%% processes and speaks the same messages, so the Erlang->Erlang baseline
%% and the runs involving C nodes measure exactly the same exchange:
%%
%%   bench_sink   counts data messages (plain binaries) for one sender.
%%     {bench_start, From, W, Gen}  -> From ! {bench_ready, Gen}
%%     Bin (a binary)               -> every W messages From ! {bench_ack, Gen, Count}
%%     {bench_end, From, Gen}       -> From ! {bench_done, Gen, Count, Bytes}
%%   bench_echo   answers pings.
%%     {bench_ping, From, Seq, Bin} -> From ! {bench_pong, Seq, Bin}
%%   bench_agent  runs one measurement on command of the controller.
%%     {bench_hello, Ctl}                           -> {bench_hello_ok, Node}
%%     {bench_blast, Ctl, {Name, Node}, Size, N, W} -> {bench_blast_done, Ns, Count, Bytes}
%%     {bench_rtt, Ctl, {Name, Node}, Size, K}      -> {bench_rtt_done, MedianNs, P99Ns}
%%     failures                                     -> {bench_error, Text}
%%     bench_stop                                   -> the node halts
%%
%% Flow control: a sender keeps at most 2*W messages unacknowledged, so the
%% sender never outruns the receiver by more than two windows on either kind
%% of node (aemp_send queues without bound; Erlang's ! would block instead).
%%
%% Entry points: agent/0 (erl -s aemp_bench agent) and main/1
%% (erl -run aemp_bench main Mode E1 E2 C1 C2), the controller that runs
%% every measurement and prints the table.
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

agent_loop() ->
    receive
        {bench_hello, Ctl} ->
            Ctl ! {bench_hello_ok, node()};
        {bench_blast, Ctl, Target, Size, N, W} ->
            run_job(Ctl, fun() -> blast(Target, Size, N, W) end);
        {bench_rtt, Ctl, Target, Size, K} ->
            run_job(Ctl, fun() -> rtt(Target, Size, K) end);
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

%% Nearest-rank percentile of a sorted list.
percentile(Sorted, P) ->
    Len = length(Sorted),
    Rank = max(1, min(Len, (P * Len + 99) div 100)),
    lists:nth(Rank, Sorted).

%% ---------------------------------------------------------------------
%% Controller (the ctl node)
%% ---------------------------------------------------------------------

-define(SIZES, [16, 100, 1024, 65536]).

%% main([Mode, E1, E2, C1, C2 | Sizes]): Mode is "full" or "quick"; C1 and
%% C2 are "none" to measure Erlang->Erlang only; Sizes (payload bytes, each
%% one of 16, 100, 1024, 65536) default to all four.
main([Mode, E1, E2, C1, C2 | SizeArgs]) ->
    Sizes = case SizeArgs of
                [] -> ?SIZES;
                _ -> [list_to_integer(S) || S <- SizeArgs]
            end,
    Code = try run(list_to_atom(Mode), list_to_atom(E1), list_to_atom(E2),
                   list_to_atom(C1), list_to_atom(C2), Sizes)
           catch Class:Reason:Stack ->
                   io:format("bench controller failed: ~p:~p~n~p~n", [Class, Reason, Stack]),
                   1
           end,
    erlang:halt(Code).

run(Mode, E1, E2, C1, C2, Sizes) ->
    WithC = C1 =/= none,
    Agents = [E1, E2] ++ case WithC of true -> [C1, C2]; false -> [] end,
    header(Mode),
    Answered = hello(Agents, [], 30000),
    Up = [{A, case lists:member(A, Answered) of true -> ok; false -> down end}
          || A <- Agents],
    [io:format("agent ~s: ~s~n", [A, case R of ok -> "up"; _ -> "NOT REACHABLE" end])
     || {A, R} <- Up],
    io:format("~n"),
    Reach = fun(A) -> proplists:get_value(A, Up) =:= ok end,
    %% {Label, Sender node, Receiver node}
    Dirs = [{"erl->erl", E1, E2}]
        ++ case WithC of
               true -> [{"erl->c", E1, C1}, {"c->erl", C1, E2}, {"c->c", C1, C2}];
               false -> []
           end,
    warm_up(Dirs, Reach),
    Results = [{Size, measure_size(Mode, Size, Dirs, Reach)} || Size <- Sizes],
    print_results(Mode, Sizes, Results),
    print_targets(Results),
    io:format("load average at end: ~s~n", [load_average()]),
    stop_agents([A || {A, ok} <- Up]),
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
%% returns the agents that answered. Nodes may still be starting.
hello(Agents, Answered, Timeout) ->
    case Agents -- Answered of
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
        {bench_hello_ok, Node} -> collect_hellos(lists:usort([Node | Answered]), Wait)
    after Wait -> Answered
    end.

%% Message counts per size: N for throughput, K round trips for latency.
counts(full, 16) -> {800000, 3000};
counts(full, 100) -> {800000, 3000};
counts(full, 1024) -> {400000, 3000};
counts(full, 65536) -> {25000, 1000};
counts(quick, 16) -> {100000, 1000};
counts(quick, 100) -> {100000, 1000};
counts(quick, 1024) -> {50000, 1000};
counts(quick, 65536) -> {3000, 300}.

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

measure_size(Mode, Size, Dirs, Reach) ->
    Runs = [[{Label, measure(Mode, Size, From, To, Reach)} || {Label, From, To} <- Dirs]
            || _ <- lists:seq(1, rounds(Mode))],
    [{Label, aggregate([proplists:get_value(Label, Run) || Run <- Runs])}
     || {Label, _, _} <- Dirs].

aggregate(Ms) ->
    case [M || M <- Ms, maps:is_key(error, M)] of
        [Failed | _] ->
            Failed;
        [] ->
            maps:from_list([{Key, median([maps:get(Key, M) || M <- Ms])}
                            || Key <- [rate, median, p99]])
    end.

median(Xs) ->
    lists:nth((length(Xs) + 1) div 2, lists:sort(Xs)).

measure(Mode, Size, From, To, Reach) ->
    case Reach(From) andalso Reach(To) of
        false ->
            #{error => <<"node not reachable">>};
        true ->
            {N, K} = counts(Mode, Size),
            Tput = command(From, fun(Ctl) ->
                                         {bench_blast, Ctl, {bench_sink, To}, Size, N, window(Size)}
                                 end, 300000),
            Lat = command(From, fun(Ctl) -> {bench_rtt, Ctl, {bench_echo, To}, Size, K} end,
                          300000),
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
            case Lat of
                {bench_rtt_done, Med, P99} ->
                    M1#{median => Med / 1000, p99 => P99 / 1000};
                Other2 ->
                    maps:merge(#{error => failure_text(Other2)}, M1)
            end
    end.

failure_text({bench_error, Text}) -> Text;
failure_text(timeout) -> <<"timed out">>;
failure_text(Other) -> iolist_to_binary(io_lib:format("~p", [Other])).

command(Agent, Make, Timeout) ->
    flush(),
    {bench_agent, Agent} ! Make(self()),
    receive
        {bench_blast_done, _, _, _} = R -> R;
        {bench_rtt_done, _, _} = R -> R;
        {bench_error, _} = R -> R
    after Timeout -> timeout
    end.

flush() ->
    receive _ -> flush()
    after 0 -> ok
    end.

%% ---------------------------------------------------------------------
%% Report
%% ---------------------------------------------------------------------

print_results(Mode, Sizes, Results) ->
    io:format("Throughput: one sender blasting to one receiver, at most two windows~n"
              "  unacknowledged (window = min(1000 msgs, 1 MB)); messages per run:~n  ~s~n",
              [string:join([io_lib:format("~s ~b", [size_label(S), element(1, counts(Mode, S))])
                            || S <- Sizes], ", ")]),
    io:format("  (MB/s counts payload bytes; xR = this / erl->erl, above 1 is faster)~n"),
    [begin
         Base = maps:get(rate, base(Row), undefined),
         [io:format("  ~-8s ~-6s ~s~n", [Label, size_label(Size), tput_line(M, Size, Base)])
          || {Label, M} <- Row]
     end || {Size, Row} <- Results],
    io:format("~nRound trip: ping-pong, the payload each way, one at a time; round trips:~n  ~s~n",
              [string:join([io_lib:format("~s ~b", [size_label(S), element(2, counts(Mode, S))])
                            || S <- Sizes], ", ")]),
    io:format("  (microseconds; xR = erl->erl median / this median, above 1 is faster)~n"),
    [begin
         B = base(Row),
         [io:format("  ~-8s ~-6s ~s~n", [Label, size_label(Size), rtt_line(M, B)])
          || {Label, M} <- Row]
     end || {Size, Row} <- Results],
    io:format("~n").

base(Row) ->
    {"erl->erl", M} = lists:keyfind("erl->erl", 1, Row),
    M.

tput_line(#{rate := R}, Size, Base) ->
    Mbs = R * Size / 1.0e6,
    io_lib:format("~13s msg/s ~10s MB/s  (erl->erl ~s)  ~s",
                  [group(R), fmt1(Mbs), base_rate(Base), ratio(R, Base)]);
tput_line(M, _, _) ->
    io_lib:format("FAILED: ~s", [maps:get(error, M, <<"?">>)]).

base_rate(undefined) -> "n/a";
base_rate(B) -> group(B).

rtt_line(#{median := Med, p99 := P99}, B) ->
    BaseTxt = case B of
                  #{median := BM, p99 := BP} ->
                      io_lib:format("(erl->erl ~s / ~s)", [fmt1(BM), fmt1(BP)]);
                  _ -> "(erl->erl n/a)"
              end,
    Ratio = case B of
                #{median := BM2} -> ratio(BM2, Med);
                _ -> ""
            end,
    io_lib:format("median ~9s us  p99 ~9s us  ~s  ~s", [fmt1(Med), fmt1(P99), BaseTxt, Ratio]);
rtt_line(M, _) ->
    io_lib:format("FAILED: ~s", [maps:get(error, M, <<"?">>)]).

ratio(_, undefined) -> "";
ratio(A, B) when is_number(A), is_number(B), B > 0 -> io_lib:format("x~.2f", [A / B]);
ratio(_, _) -> "".

print_targets(Results) ->
    case lists:keyfind(100, 1, Results) of
        {100, Row} ->
            Base = maps:get(rate, base(Row), undefined),
            io:format("Targets at 100 B (informational):~n"),
            target(Row, "erl->c", Base, 1.0, "erl->c >= erl->erl"),
            target(Row, "c->c", Base, 5.0, "c->c >= 5 x erl->erl");
        false ->
            ok
    end,
    case lists:keymember("erl->c", 1, element(2, hd(Results))) of
        true -> ok;
        false -> io:format("  (C directions not measured: --erl-only)~n")
    end.

target(Row, Label, Base, Want, Text) ->
    case lists:keyfind(Label, 1, Row) of
        {Label, #{rate := R}} when is_number(Base) ->
            io:format("  ~-22s x~.2f  ~s~n",
                      [Text, R / Base, case R / Base >= Want of true -> "met"; false -> "not met" end]);
        {Label, _} ->
            io:format("  ~-22s not measured~n", [Text]);
        false ->
            ok
    end.

size_label(S) when S >= 1024 -> integer_to_list(S div 1024) ++ "KB";
size_label(S) -> integer_to_list(S) ++ "B".

fmt1(X) -> io_lib:format("~.1f", [float(X)]).

%% 1234567.8 -> "1,234,568"
group(X) ->
    Digits = integer_to_list(round(X)),
    group_digits(lists:reverse(Digits), []).

group_digits([A, B, C, D | Rest], Acc) ->
    group_digits([D | Rest], [$,, C, B, A | Acc]);
group_digits(Rest, Acc) ->
    lists:reverse(Rest) ++ Acc.
