%% aemp_db_dp: the aemp_db protocol (docs/database.md) as a callback module
%% of OTP 29's data_publisher, for the interop test only: it shows that
%% data_publisher itself speaks the wire the application's server
%% (aemp_db.erl) speaks. Started on an OTP 29 node as
%%   data_publisher:start(aemp_db, aemp_db_dp, #{})
%% A set is the plain message {set, Family, Subkey, Value} to aemp_db
%% (stamped in translate_message/2); the visible family is what
%% data_publisher:subscribe(aemp_db, Family) returns (see family/1).
%% Not part of the application: docs/database.md says why the application
%% runs its own server on OTP 29 too. (No -behaviour attribute: the module
%% also compiles on releases without data_publisher.)
-module(aemp_db_dp).

-export([family/1]).
-export([version/0, init_global_view/2, init_local_data/1, stop_global_view/1,
         update_local_data/2, update_global_view_and_notify/4, data_diff/2,
         new_subscription/2, translate_update/3, translate_local_data/3,
         translate_message/2]).

%% The visible family on this node: Subkey => Value.
family(Family) ->
    {Ref, Map} = data_publisher:subscribe(aemp_db, Family),
    ok = data_publisher:unsubscribe(aemp_db, Ref),
    Map.

version() -> 3.

%% The global view: every node's share as #{Family => #{Subkey => {Stamp,
%% Value}}}, and the Lamport clock. Local data (what peers are sent) is
%% the wire's share: #{Family => {Values, Stamps}}, Stamps a binary of
%% records <<KeyLen:32, Subkey, Stamp:64>>.
init_global_view(_Scope, _Options) -> #{shares => #{}, clock => 0}.

init_local_data(_Options) -> #{}.

stop_global_view(_GlobalView) -> ok.

update_local_data(Ops, Share) ->
    wire(lists:foldl(fun apply_op/2, entries(Share), Ops)).

update_global_view_and_notify(Node, Ops, _Subscriptions, #{shares := Shares, clock := C} = GV) ->
    Share = lists:foldl(fun apply_op/2, maps:get(Node, Shares, #{}), Ops),
    Max = lists:max([C | [Stamp || {set, _, _, Stamp, _} <- Ops]]),
    GV#{shares := Shares#{Node => Share}, clock := Max}.

data_diff(Old0, New0) ->
    {Old, New} = {entries(Old0), entries(New0)},
    Dels = [{del, F, S} || {F, Entries} <- maps:to_list(Old), S <- maps:keys(Entries),
                           not maps:is_key(S, maps:get(F, New, #{}))],
    Sets = [{set, F, S, Stamp, V} || {F, Entries} <- maps:to_list(New),
                                     {S, {Stamp, V}} <- maps:to_list(Entries),
                                     maps:get(S, maps:get(F, Old, #{}), none) =/= {Stamp, V}],
    Dels ++ Sets.

new_subscription(Family, #{shares := Shares}) ->
    F = if is_atom(Family) -> atom_to_binary(Family, utf8); true -> Family end,
    Winners = maps:fold(
                fun(Node, Share, Acc) ->
                        maps:fold(fun(S, {Stamp, V}, A) ->
                                          case A of
                                              #{S := {St, N, _}} when {St, N} > {Stamp, Node} -> A;
                                              _ -> A#{S => {Stamp, Node, V}}
                                          end
                                  end, Acc, maps:get(F, Share, #{}))
                end, #{}, Shares),
    maps:map(fun(_, {_, _, V}) -> V end, Winners).

translate_update(_Mine, _Peer, Ops) -> Ops.

translate_local_data(_Mine, _Peer, Share) -> Share.

translate_message({set, F, S, V}, #{clock := C} = GV) when is_binary(F), is_binary(S) ->
    {update, [{set, F, S, C + 1, V}], GV#{clock := C + 1}};
translate_message(_Msg, GV) ->
    {drop, GV}.

%% The wire's share as #{Family => #{Subkey => {Stamp, Value}}}: a
%% subkey's stamp is the last record for it, 0 if none.
entries(Share) ->
    maps:map(fun(_, {Values, Stamps}) ->
                     SM = maps:from_list([{S, Stamp}
                                          || <<Len:32, S:Len/binary, Stamp:64>> <= Stamps]),
                     maps:map(fun(S, V) -> {maps:get(S, SM, 0), V} end, Values)
             end, Share).

wire(Share) ->
    maps:map(fun(_, Entries) ->
                     {maps:map(fun(_, {_, V}) -> V end, Entries),
                      << <<(byte_size(S)):32, S/binary, Stamp:64>>
                         || {S, {Stamp, _}} <- maps:to_list(Entries) >>}
             end, Share).

apply_op({set, F, S, Stamp, V}, Share) ->
    Share#{F => (maps:get(F, Share, #{}))#{S => {Stamp, V}}};
apply_op({del, F, S}, Share) ->
    case maps:remove(S, maps:get(F, Share, #{})) of
        E when map_size(E) =:= 0 -> maps:remove(F, Share);
        E -> Share#{F => E}
    end.
