%% aemp_port: a port of an aemp C node as a process of a supervision tree.
%%
%% A C node exports init functions by name (aemp_export_init()); spawning
%% Module:Function there makes a new port and runs the init function as it.
%% To a supervisor that port is a process like any other: start_link/4
%% spawns it linked to the caller, the supervisor's exit(Pid, shutdown)
%% ends it (the C side sees it die with reason shutdown), and when it dies
%% the supervisor restarts it, on the same or, if Node is back, a new
%% connection.
%%
%%   %% Erlang
%%   ChildSpecs = [aemp_port:child_spec({'c@host', worker, start, []})],
%%   supervisor:start_link(my_sup, ChildSpecs)  % init/1 returns them
%%
%%   # Elixir
%%   Supervisor.start_link([{:aemp_port, {:"c@host", :worker, :start, []}}],
%%                         strategy: :one_for_one)
-module(aemp_port).

-export([start_link/4, start/4, child_spec/1]).

-type spec() :: {node(), module(), atom(), [term()]}
              | #{node := node(), module := module(), function := atom(),
                  args => [term()], id => term(), restart => permanent | transient | temporary,
                  shutdown => timeout() | brutal_kill}.
-export_type([spec/0]).

%% Spawn Module:Function(Args...) on Node, linked to the caller, and wait
%% for the node's answer: {ok, Pid} once the port is made (its init function
%% runs right after; one that fails ends the port with {die, Text}), or
%% {error, Reason}: noconnection (Node cannot be reached), badopt, notsup,
%% system_limit, or badarg for bad arguments. A function the node did not
%% export gives a pid that exits at once with {undef, [{M, F, Args, []}]},
%% as spawn_link/4 of an undefined function does.
-spec start_link(node(), module(), atom(), [term()]) -> {ok, pid()} | {error, term()}.
start_link(Node, Module, Function, Args) ->
    spawn_port(Node, Module, Function, Args, [link]).

%% The same without a link.
-spec start(node(), module(), atom(), [term()]) -> {ok, pid()} | {error, term()}.
start(Node, Module, Function, Args) ->
    spawn_port(Node, Module, Function, Args, []).

%% A child specification for supervisor:start_link/2,3 and Elixir's
%% Supervisor: {Node, Module, Function, Args}, or a map with those keys
%% (node, module, function, args) and optionally id (default
%% {aemp_port, Node, Module, Function}), restart (permanent) and shutdown
%% (5000 ms).
-spec child_spec(spec()) -> supervisor:child_spec().
child_spec({Node, Module, Function, Args}) ->
    child_spec(#{node => Node, module => Module, function => Function, args => Args});
child_spec(#{node := Node, module := Module, function := Function} = Spec) ->
    Args = maps:get(args, Spec, []),
    #{id => maps:get(id, Spec, {?MODULE, Node, Module, Function}),
      start => {?MODULE, start_link, [Node, Module, Function, Args]},
      restart => maps:get(restart, Spec, permanent),
      shutdown => maps:get(shutdown, Spec, 5000),
      type => worker,
      modules => [?MODULE]}.

spawn_port(Node, Module, Function, Args, Opts)
  when is_atom(Node), is_atom(Module), is_atom(Function), is_list(Args) ->
    try erlang:spawn_request(Node, Module, Function, Args, Opts) of
        Ref ->
            %% erts always answers a spawn request, also when the
            %% connection fails (noconnection)
            receive
                {spawn_reply, Ref, ok, Pid} -> {ok, Pid};
                {spawn_reply, Ref, error, Reason} -> {error, Reason}
            end
    catch
        error:Reason -> {error, Reason}
    end;
spawn_port(_Node, _Module, _Function, _Args, _Opts) ->
    {error, badarg}.
