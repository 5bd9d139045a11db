%% pong.erl - the Erlang side of examples/ping_pong.c.
%%
%% Registers a process `pong` that answers {ping, From, N} with {pong, N}.
%%   erlc pong.erl
%%   erl -sname erl -setcookie secret -noshell -s pong start
-module(pong).
-export([start/0]).

start() ->
    register(pong, spawn(fun loop/0)),
    ok.

loop() ->
    receive
        {ping, From, N} ->
            io:format("pong: {ping, ~p, ~p} from node ~p~n", [From, N, node(From)]),
            From ! {pong, N},
            loop();
        Other ->
            io:format("pong: ignored ~p~n", [Other]),
            loop()
    end.
