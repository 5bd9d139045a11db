%% aemp_app: the application callback of aemp. Starting the application
%% (application:ensure_all_started(aemp); in Elixir, list :aemp in
%% extra_applications or call Application.ensure_all_started(:aemp))
%% starts aemp_sup: the OTP pg scopes of the env `scopes` and the database
%% server aemp_db. aemp_port needs none of it: its functions work with the
%% code only loaded.
-module(aemp_app).
-behaviour(application).

-export([start/2, stop/1]).

start(_Type, _Args) ->
    aemp_sup:start_link().

stop(_State) ->
    ok.
