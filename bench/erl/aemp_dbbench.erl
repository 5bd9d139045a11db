%% aemp_dbbench - the Erlang side of the database and pg benchmark
%% (bench/db.sh drives it; docs/benchmarks.md "Database and pg").
%%
%% Each entry point runs with `erl -run aemp_dbbench FUN ARGS...` on a node
%% of its own, prints "ready" (holders, which then run until killed, and
%% receivers, once they watch) and "RESULT ..." (then halts):
%%
%%   hold_pg N Family         pg:start(aemp); N processes pg:join Family
%%   hold_set N Family        application aemp; N aemp:db_set of Family
%%   join_pg Target N Family  pg:start(aemp), pg:monitor(aemp, Family), connect
%%                            to Target: ms until the group has N members,
%%                            and the CPU ms the node used meanwhile
%%   join_db Target N Family  application aemp, aemp:db_mon(Family), connect
%%                            to Target: the same until the family has N
%%                            entries
%%   lat_recv K Family        aemp:db_set(Family, ready), then K changes of
%%                            Family/t (value: the sender's
%%                            os:system_time(nanosecond)): p50 p99 max in us
%%   lat_send Target K Family IntervalMs
%%                            connect, wait for Family/ready, db_set
%%                            Family/t K times, IntervalMs apart
%%   pg_lat_recv K            pg:monitor_scope(aemp): K joins of groups
%%                            {t, SentNs}: p50 p99 max in us
%%   pg_lat_send Target K IntervalMs
%%                            connect, wait until Target's scope knows us
%%                            (its monitor process joined {ready}), then K
%%                            times pg:join(aemp, {t, Now}, self()) (a new group
%%                            each time, never left: a leave just before each
%%                            join would wake the receiver up for it)
%%   pair_recv K Family       both receivers in one: pg:monitor_scope(aemp)
%%                            and aemp:db_mon(Family), K changes of each:
%%                            p50 p99 max count of pg, then of the family
%%   pair_send Target K Family IntervalMs
%%                            both senders in one: K times a pg:join and a
%%                            db_set, IntervalMs apart, which goes first
%%                            alternating (the two figures of one run share
%%                            the machine's state: a paired comparison)
-module(aemp_dbbench).
-export([hold_pg/1, hold_set/1, join_pg/1, join_db/1, lat_recv/1, lat_send/1,
         pg_lat_recv/1, pg_lat_send/1, pair_recv/1, pair_send/1]).

now_ms() -> erlang:monotonic_time(microsecond) / 1000.

%% CPU time of the runtime system (every thread), ms: the cost of a join,
%% which other load does not inflate as it does the wall time.
cpu_ms() ->
    {Ms, _} = statistics(runtime),
    Ms.

joined(T0, C0) ->
    result("~.3f ~p", [now_ms() - T0, cpu_ms() - C0]).

result(Fmt, Args) ->
    io:format("RESULT " ++ Fmt ++ "~n", Args),
    halt(0).

ready() ->
    io:format("ready~n"),
    receive after infinity -> ok end.

fam(F) -> list_to_atom(F).

hold_pg([N, F]) ->
    {ok, _} = pg:start(aemp),
    Pids = [spawn(fun() -> receive stop -> ok end end) || _ <- lists:seq(1, list_to_integer(N))],
    ok = pg:join(aemp, fam(F), Pids),
    ready().

hold_set([N, F]) ->
    {ok, _} = application:ensure_all_started(aemp),
    [ok = aemp:db_set(fam(F), integer_to_binary(I), I) || I <- lists:seq(0, list_to_integer(N) - 1)],
    ready().

join_pg([T, N, F]) ->
    {ok, _} = pg:start(aemp),
    {Ref, []} = pg:monitor(aemp, fam(F)),
    T0 = {now_ms(), cpu_ms()},
    true = net_kernel:connect_node(list_to_atom(T)),
    join_pg_wait(Ref, list_to_integer(N), 0, T0).

join_pg_wait(_Ref, N, Have, {T0, C0}) when Have >= N ->
    joined(T0, C0);
join_pg_wait(Ref, N, Have, T0) ->
    receive
        {Ref, join, _, Pids} -> join_pg_wait(Ref, N, Have + length(Pids), T0);
        {Ref, leave, _, Pids} -> join_pg_wait(Ref, N, Have - length(Pids), T0)
    after 120000 -> result("timeout ~p", [Have])
    end.

join_db([T, N, F]) ->
    {ok, _} = application:ensure_all_started(aemp),
    Ref = aemp:db_mon(fam(F)),
    receive {aemp_db_mon, Ref, _, Whole, _, _} -> Have0 = map_size(Whole) end,
    T0 = {now_ms(), cpu_ms()},
    true = net_kernel:connect_node(list_to_atom(T)),
    join_db_wait(Ref, list_to_integer(N), Have0, T0).

join_db_wait(_Ref, N, Have, {T0, C0}) when Have >= N ->
    joined(T0, C0);
join_db_wait(Ref, N, Have, T0) ->
    receive
        {aemp_db_mon, Ref, _, Added, _, Deleted} ->
            join_db_wait(Ref, N, Have + map_size(Added) - length(Deleted), T0)
    after 120000 -> result("timeout ~p", [Have])
    end.

stats(Lat) ->
    result("~s", [figures(Lat)]).

%% "p50 p99 max count" of latencies in us
figures(Lat) ->
    S = lists:sort(Lat),
    K = length(S),
    P = fun(Pc) -> lists:nth((K - 1) * Pc div 100 + 1, S) end,
    io_lib:format("~.1f ~.1f ~.1f ~p", [P(50), P(99), lists:last(S), K]).

lat_recv([K, F]) ->
    {ok, _} = application:ensure_all_started(aemp),
    Ref = aemp:db_mon(fam(F)),
    ok = aemp:db_set(fam(F), <<"ready">>, 0),
    io:format("ready~n"),
    lat_recv_loop(Ref, list_to_integer(K), []).

lat_recv_loop(_Ref, 0, Acc) ->
    stats(Acc);
lat_recv_loop(Ref, K, Acc) ->
    receive
        {aemp_db_mon, Ref, _, Added, Changed, _} ->
            Now = os:system_time(nanosecond),
            case maps:merge(Added, Changed) of
                #{<<"t">> := Sent} when is_integer(Sent) ->
                    lat_recv_loop(Ref, K - 1, [(Now - Sent) / 1000 | Acc]);
                _ ->
                    lat_recv_loop(Ref, K, Acc)
            end
    after quiet(Acc) -> quiet_end(K, Acc)
    end.

%% Two sets that arrive together are one change: after a second without
%% any, the samples taken are all there will be.
quiet([]) -> 60000;
quiet(_) -> 1000.

quiet_end(K, []) -> result("timeout ~p", [K]);
quiet_end(_, Acc) -> stats(Acc).

lat_send([T, K, F, I]) ->
    {ok, _} = application:ensure_all_started(aemp),
    Ref = aemp:db_mon(fam(F)),
    true = net_kernel:connect_node(list_to_atom(T)),
    wait_ready(Ref),
    %% as pg_lat_send, which watches group ready only: the sender's own
    %% sets are not told to it
    ok = aemp:db_demon(Ref),
    timer:sleep(200),
    Ival = list_to_integer(I),
    [begin
         ok = aemp:db_set(fam(F), <<"t">>, os:system_time(nanosecond)),
         timer:sleep(Ival)
     end
     || _ <- lists:seq(1, list_to_integer(K))],
    io:format("RESULT sent~n"),
    receive after infinity -> ok end.

wait_ready(Ref) ->
    receive
        {aemp_db_mon, Ref, _, #{<<"ready">> := _}, _, _} -> ok;
        {aemp_db_mon, Ref, _, _, _, _} -> wait_ready(Ref)
    after 30000 -> result("timeout ready", [])
    end.

pg_lat_recv([K]) ->
    {ok, _} = pg:start(aemp),
    {Ref, _} = pg:monitor_scope(aemp),
    ok = pg:join(aemp, ready, self()),
    io:format("ready~n"),
    pg_lat_loop(Ref, list_to_integer(K), []).

pg_lat_loop(_Ref, 0, Acc) ->
    stats(Acc);
pg_lat_loop(Ref, K, Acc) ->
    receive
        {Ref, join, {t, Sent}, _} ->
            Now = os:system_time(nanosecond),
            pg_lat_loop(Ref, K - 1, [(Now - Sent) / 1000 | Acc]);
        {Ref, _, _, _} ->
            pg_lat_loop(Ref, K, Acc)
    after quiet(Acc) -> quiet_end(K, Acc)
    end.

pg_lat_send([T, K, I]) ->
    {ok, _} = pg:start(aemp),
    {Ref, _} = pg:monitor(aemp, ready),
    true = net_kernel:connect_node(list_to_atom(T)),
    receive {Ref, join, ready, _} -> ok after 30000 -> result("timeout ready", []) end,
    %% our scope has the receiver's sync; the receiver's has ours once it
    %% answered (the same exchange): a moment for it
    timer:sleep(200),
    Ival = list_to_integer(I),
    %% One change every Ival ms, as lat_send makes: a join alone (a leave
    %% of the last group just before would arrive at a receiver still
    %% awake from it: 100 us less on this machine's VMs, a figure of the
    %% pair rather than of one change)
    [begin
         G = {t, os:system_time(nanosecond)},
         ok = pg:join(aemp, G, self()),
         timer:sleep(Ival)
     end
     || _ <- lists:seq(1, list_to_integer(K))],
    io:format("RESULT sent~n"),
    receive after infinity -> ok end.

pair_recv([K, F]) ->
    {ok, _} = pg:start(aemp),
    {ok, _} = application:ensure_all_started(aemp),
    {PRef, _} = pg:monitor_scope(aemp),
    ARef = aemp:db_mon(fam(F)),
    ok = aemp:db_set(fam(F), <<"ready">>, 0),
    ok = pg:join(aemp, ready, self()),
    io:format("ready~n"),
    pair_loop(PRef, ARef, list_to_integer(K), list_to_integer(K), [], []).

pair_loop(_, _, 0, 0, P, A) ->
    pair_result(P, A);
pair_loop(PRef, ARef, KP, KA, P, A) ->
    receive
        {PRef, join, {t, Sent}, _} ->
            Now = os:system_time(nanosecond),
            pair_loop(PRef, ARef, KP - 1, KA, [(Now - Sent) / 1000 | P], A);
        {PRef, _, _, _} ->
            pair_loop(PRef, ARef, KP, KA, P, A);
        {aemp_db_mon, ARef, _, Added, Changed, _} ->
            Now = os:system_time(nanosecond),
            case maps:merge(Added, Changed) of
                #{<<"t">> := Sent} when is_integer(Sent) ->
                    pair_loop(PRef, ARef, KP, KA - 1, P, [(Now - Sent) / 1000 | A]);
                _ ->
                    pair_loop(PRef, ARef, KP, KA, P, A)
            end
    after quiet(P ++ A) -> pair_result(P, A)
    end.

pair_result(P, A) when P =:= []; A =:= [] ->
    result("timeout ~p ~p", [length(P), length(A)]);
pair_result(P, A) ->
    result("~s ~s", [figures(P), figures(A)]).

pair_send([T, K, F, I]) ->
    {ok, _} = pg:start(aemp),
    {ok, _} = application:ensure_all_started(aemp),
    {PRef, _} = pg:monitor(aemp, ready),
    ARef = aemp:db_mon(fam(F)),
    true = net_kernel:connect_node(list_to_atom(T)),
    receive {PRef, join, ready, _} -> ok after 30000 -> result("timeout ready", []) end,
    wait_ready(ARef),
    ok = aemp:db_demon(ARef),
    timer:sleep(200),
    Ival = list_to_integer(I),
    Join = fun() -> ok = pg:join(aemp, {t, os:system_time(nanosecond)}, self()) end,
    Set = fun() -> ok = aemp:db_set(fam(F), <<"t">>, os:system_time(nanosecond)) end,
    [begin
         {First, Second} = case N rem 2 of
                               0 -> {Join, Set};
                               1 -> {Set, Join}
                           end,
         First(),
         timer:sleep(Ival),
         Second(),
         timer:sleep(Ival)
     end
     || N <- lists:seq(1, list_to_integer(K))],
    io:format("RESULT sent~n"),
    receive after infinity -> ok end.
