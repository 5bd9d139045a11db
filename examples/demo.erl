%% demo.erl - the Erlang side of the demo: talks to the C node's greeter.
-module(demo).
-export([run/1]).

run([CNodeName]) ->
    CNode = list_to_atom(CNodeName),
    register(listener, self()),
    say("pinging ~p: ~p", [CNode, net_adm:ping(CNode)]),
    say("sending {hello, ~p, <<\"Erlang\">>} to {greeter, ~p}", [self(), CNode]),
    {greeter, CNode} ! {hello, self(), <<"Erlang">>},
    wait(2),
    halt(0).

wait(0) -> ok;
wait(N) ->
    receive
        {greeting, Text} ->
            say("got {greeting, ~p}", [Text]), wait(N - 1);
        {from_c, Pid, List, Map} ->
            say("got {from_c, ~p, ~p, ~p} (node(Pid) = ~p)", [Pid, List, Map, node(Pid)]),
            wait(N - 1)
    after 10000 ->
        say("timed out waiting for the C node", []), halt(1)
    end.

say(Fmt, Args) -> io:format("[Erlang] " ++ Fmt ++ "~n", Args).
