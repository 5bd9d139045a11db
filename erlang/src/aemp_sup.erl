%% aemp_sup: the top supervisor of the aemp application. Children, in start
%% order: one OTP pg scope per entry of the application env `scopes`
%% (default [aemp]; a scope some other application already runs is used
%% as it is), then aemp_db, the database's replication server.
-module(aemp_sup).
-behaviour(supervisor).

-export([start_link/0, start_scope/1]).
-export([init/1]).

start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

init([]) ->
    Scopes = case application:get_env(aemp, scopes, [aemp]) of
                 L when is_list(L) -> L;
                 Other -> error({bad_env, scopes, Other})
             end,
    [is_atom(S) orelse error({bad_env, scopes, Scopes}) || S <- Scopes],
    ScopeChildren = [#{id => {pg, S}, start => {?MODULE, start_scope, [S]}, type => worker,
                       modules => [pg]} || S <- lists:usort(Scopes)],
    Db = #{id => aemp_db, start => {aemp_db, start_link, []}, type => worker,
           modules => [aemp_db]},
    {ok, {#{strategy => one_for_one, intensity => 10, period => 10}, ScopeChildren ++ [Db]}}.

%% pg:start_link(Scope), or ignore when the scope already runs.
start_scope(Scope) ->
    case pg:start_link(Scope) of
        {error, {already_started, _}} -> ignore;
        Result -> Result
    end.
