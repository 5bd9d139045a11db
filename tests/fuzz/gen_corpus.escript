#!/usr/bin/env escript
%% gen_corpus.escript [DIR [HARNESS...]] - writes the seed corpora of the
%% fuzzers under DIR (default: the corpus/ directory next to this script),
%% one directory per harness (all of them, or those named). Terms come from
%% term_to_binary of real OTP (version byte stripped for fuzz_term; kept
%% inside distribution packets, as on the wire); fuzz_parse gets Erlang
%% term texts. Re-running it rewrites the same files (pids, refs and funs of
%% the running VM differ from run to run).
-mode(compile).

-define(NODE, <<"fuzz@localhost">>).
-define(PEER, <<"peer@localhost">>).
-define(CREATION, 16#5eed0001).

main(Args) ->
    {Dir, Only} = case Args of
                      [D | H] -> {D, H};
                      [] -> {filename:join(filename:dirname(escript:script_name()), "corpus"), []}
                  end,
    All = [{"fuzz_term", fun terms/0}, {"fuzz_dist_packet", fun packets/0},
           {"fuzz_handshake_acceptor", fun acceptor/0},
           {"fuzz_handshake_initiator", fun initiator/0}, {"fuzz_epmd", fun epmd/0},
           {"fuzz_parse", fun texts/0}, {"fuzz_db", fun db/0}],
    [write(Dir, Name, Gen()) || {Name, Gen} <- All, Only =:= [] orelse lists:member(Name, Only)],
    ok.

write(Dir, Harness, Items) ->
    Sub = filename:join(Dir, Harness),
    ok = filelib:ensure_dir(filename:join(Sub, "x")),
    lists:foreach(fun({Name, Bin}) ->
                          ok = file:write_file(filename:join(Sub, Name), Bin)
                  end, Items),
    io:format("~s: ~b files~n", [Harness, length(Items)]).

%% External pids: ours (port ids 1..3) and the peer's.
pid(Node, Num, Creation) ->
    binary_to_term(<<131, 88, 119, (byte_size(Node)), Node/binary, Num:32, 0:32, Creation:32>>).
my_pid(Id) -> pid(?NODE, Id, ?CREATION).
peer_pid() -> pid(?PEER, 77, 3).
peer_ref() ->
    binary_to_term(<<131, 90, 3:16, 119, (byte_size(?PEER)), ?PEER/binary, 3:32,
                     1:32, 2:32, 3:32>>).

%% ------------------------------------------------------------------
%% fuzz_term: every type, without the version byte.

terms() ->
    T = [{"small_int", 7}, {"int", -70000}, {"big", 1 bsl 70}, {"neg_big", -(1 bsl 64)},
         {"huge_big", 1 bsl 2100},
         {"float", 3.25}, {"atom", hello}, {"atom_utf8", 'héllo_ü'},
         {"atom_long", list_to_atom(lists:duplicate(255, $a))},
         {"nil", []}, {"string", "hello world"}, {"list", [1, two, "three", 4.0]},
         {"improper", [a | b]}, {"tuple", {a, 1, "b", <<"c">>}},
         {"large_tuple", list_to_tuple(lists:seq(1, 300))},
         {"map", #{a => 1, <<"b">> => [2], {c} => #{}}},
         {"big_map", maps:from_list([{I, I * I} || I <- lists:seq(1, 40)])},
         {"binary", <<"bytes", 0, 255>>}, {"bitstring", <<1:3>>}, {"empty_bin", <<>>},
         {"pid", my_pid(1)}, {"peer_pid", peer_pid()}, {"local_pid", self()},
         {"ref", make_ref()}, {"peer_ref", peer_ref()},
         {"port", hd(erlang:ports())}, {"export", fun lists:map/2},
         {"fun", fun(X) -> X + 1 end}, {"fun_env", make_fun(41)},
         {"nested", {[#{k => {1, [2, <<3>>]}}], "s", 'ok'}},
         {"deep", lists:foldl(fun(_, A) -> {A} end, x, lists:seq(1, 100))},
         {"deep_list", lists:foldl(fun(_, A) -> [A] end, [], lists:seq(1, 100))},
         {"gen_call", {'$gen_call', {peer_pid(), [alias | peer_ref()]}, {is_auth, 'a@b'}}}],
    Plain = [{N, strip(term_to_binary(V))} || {N, V} <- T],
    %% minor_version 0: old FLOAT_EXT text floats, ATOM_EXT latin-1 atoms
    Old = [{N ++ "_v0", strip(term_to_binary(V, [{minor_version, 0}]))}
           || {N, V} <- T, lists:member(N, ["float", "atom", "atom_utf8", "nested"])],
    %% compressed terms are refused, which is worth keeping in view
    Z = [{"compressed", strip(term_to_binary(lists:seq(1, 200), [compressed]))}],
    %% hand-made: old PID_EXT / NEW_REFERENCE_EXT / NEW_PORT_EXT / V4_PORT_EXT
    Raw = [{"old_pid", <<103, 119, 14, ?NODE/binary, 1:32, 0:32, 1>>},
           {"new_ref", <<114, 1:16, 119, 14, ?NODE/binary, 1, 5:32>>},
           {"old_ref", <<101, 119, 14, ?NODE/binary, 5:32, 1>>},
           {"new_port", <<89, 119, 14, ?NODE/binary, 5:32, 1:32>>},
           {"v4_port", <<120, 119, 14, ?NODE/binary, 5:64, 1:32>>},
           {"large_big", <<111, 9:32, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9>>},
           {"atom_ext", <<100, 3:16, "abc">>},
           {"string_binary_mix", <<108, 2:32, 107, 2:16, "ab", 109, 1:32, "c", 106>>}],
    Plain ++ Old ++ Z ++ Raw.

make_fun(N) -> fun() -> N end.

strip(<<131, Rest/binary>>) -> Rest.

%% ------------------------------------------------------------------
%% fuzz_dist_packet: 112, then 131 Control [131 Payload].

pkt(Ctl) -> <<112, (term_to_binary(Ctl))/binary>>.
pkt(Ctl, Msg) -> <<112, (term_to_binary(Ctl))/binary, (term_to_binary(Msg))/binary>>.

%% Several packets in one input: a non-112 first byte, then 2-byte lengths.
multi(Pkts) -> <<0, << <<(byte_size(P)):16, P/binary>> || P <- Pkts >>/binary>>.

packets() ->
    Echo = my_pid(1), Victim = my_pid(2), Plain = my_pid(3), P = peer_pid(), R = peer_ref(),
    Gone = pid(?NODE, 999, ?CREATION), Stale = pid(?NODE, 1, 1234),
    Single =
        [{"send", pkt({2, '', Echo}, {hello, world})},
         {"send_plain", pkt({2, '', Plain}, [1, 2, 3])},
         {"send_gone", pkt({2, '', Gone}, x)},
         {"send_stale", pkt({2, '', Stale}, x)},
         {"send_tt", pkt({12, '', Echo, token}, {tt, 1})},
         {"send_sender", pkt({22, P, Echo}, {echo, <<"me">>})},
         {"send_sender_tt", pkt({23, P, Echo, token}, ping)},
         {"reg_send", pkt({6, P, '', echo}, {hi, 1.5})},
         {"reg_send_tt", pkt({16, P, '', echo, token}, hi)},
         {"reg_send_unknown", pkt({6, P, '', nobody}, hi)},
         {"reg_send_stop", pkt({6, P, '', victim}, {stop, now})},
         {"net_kernel_is_auth",
          pkt({6, P, '', net_kernel}, {'$gen_call', {P, [alias | R]}, {is_auth, 'peer@localhost'}})},
         {"net_kernel_other", pkt({6, P, '', net_kernel}, {'$gen_call', {P, R}, {other}})},
         {"monitor_name", pkt({19, P, victim, R})},
         {"monitor_pid", pkt({19, P, Victim, R})},
         {"monitor_unknown", pkt({19, P, nobody, R})},
         {"monitor_net_kernel", pkt({19, P, net_kernel, R})},
         {"demonitor", pkt({20, P, victim, R})},
         {"monitor_p_exit", pkt({21, P, Echo, R, normal})},
         {"link", pkt({1, P, Victim})},
         {"link_unknown", pkt({1, P, Gone})},
         {"unlink", pkt({4, P, Victim})},
         {"unlink_id", pkt({35, 7, P, Victim})},
         {"unlink_id_ack", pkt({36, 7, P, Victim})},
         {"exit_kill", pkt({3, P, Victim, kill})},
         {"exit_normal", pkt({3, P, Victim, normal})},
         {"exit_tt", pkt({13, P, Victim, token, boom})},
         {"exit2", pkt({8, P, Plain, {shutdown, why}})},
         {"exit2_tt", pkt({18, P, Plain, token, bye})},
         {"payload_exit", pkt({24, P, Victim}, {error, [stack]})},
         {"payload_exit_tt", pkt({25, P, Victim, token}, err)},
         {"payload_exit2", pkt({26, P, Plain}, normal)},
         {"payload_exit2_tt", pkt({27, P, Plain, token}, kill)},
         {"payload_monitor_p_exit", pkt({28, P, Echo, R}, noproc)},
         {"spawn_request",
          pkt({29, R, P, P, {erpc, execute_call, 4}, [monitor]}, [R, lists, reverse, [[1, 2]]])},
         {"spawn_request_tt", pkt({30, R, P, P, {m, f, 0}, [], token}, [])},
         {"spawn_reply", pkt({31, R, P, 0, Echo})},
         {"spawn_reply_tt", pkt({32, R, P, 0, Echo, token})},
         {"alias_send", pkt({33, P, R}, hi)},
         {"alias_send_tt", pkt({34, P, R, token}, hi)},
         {"node_link", pkt({5})},
         {"group_leader", pkt({7, P, Echo})},
         {"unknown_tag", pkt({99, x})},
         {"short_arity", pkt({19, P})},
         {"trailing", <<(pkt({2, '', Echo}, x))/binary, 0>>},
         {"no_payload", pkt({2, '', Echo})}],
    Multi =
        [{"multi_monitor_stop", multi([pkt({19, P, victim, R}), pkt({6, P, '', victim}, {stop})])},
         {"multi_link_stop", multi([pkt({1, P, Victim}), pkt({22, P, Victim}, {stop, 1})])},
         {"multi_link_kill", multi([pkt({1, P, Victim}), pkt({3, P, Victim, kill})])},
         {"multi_link_unlink_id", multi([pkt({1, P, Victim}), pkt({35, 1, P, Victim}),
                                         pkt({3, P, Victim, boom})])},
         {"multi_monitor_demonitor", multi([pkt({19, P, Victim, R}), pkt({20, P, Victim, R}),
                                            pkt({6, P, '', victim}, {stop})])},
         {"multi_link_held", multi([pkt({1, P, Victim}), pkt({19, P, echo, R}),
                                    pkt({2, '', Echo}, x)])}],
    Single ++ Multi.

%% ------------------------------------------------------------------
%% handshakes: mode byte, 3 chunk-size bytes, then the peer's frames.

flags() ->
    lists:foldl(fun(B, A) -> A bor B end, 0,
                [16#4, 16#8, 16#10, 16#20, 16#80, 16#100, 16#200, 16#400, 16#800, 16#1000,
                 16#4000, 16#10000, 16#20000, 16#40000, 16#80000, 16#100000, 16#400000,
                 16#1000000, 16#2000000, 16#4000000, 1 bsl 32, 4 bsl 32, 8 bsl 32]).

frame(2, M) -> <<(byte_size(M)):16, M/binary>>;
frame(4, M) -> <<(byte_size(M)):32, M/binary>>.

hs(Mode, Chunks, Frames) ->
    LB = case Mode band 1 of 1 -> 4; 0 -> 2 end,
    <<Mode, (list_to_binary(Chunks))/binary, << <<(frame(LB, F))/binary>> || F <- Frames >>/binary>>.

send_name(Flags, Name) -> <<$N, Flags:64, 5:32, (byte_size(Name)):16, Name/binary>>.
reply() -> <<$r, 16#01020304:32, 0:128>>.

acceptor() ->
    F = flags(),
    Name = send_name(F, ?PEER),
    [{"ok_digest", hs(2, [0, 0, 0], [Name, reply()])},
     {"ok_digest_tls", hs(3, [0, 0, 0], [Name, reply()])},
     {"ok_chunked", hs(0, [1, 3, 7], [Name, reply()])},
     {"simul", hs(2 bor (1 bsl 2), [0, 0, 0], [Name, reply()])},
     {"refuse_simul", hs(2 bor (2 bsl 2), [0, 0, 0], [Name])},
     {"refuse_alive", hs(2 bor (3 bsl 2), [0, 0, 0], [Name])},
     {"refuse", hs(2 bor (4 bsl 2), [0, 0, 0], [Name])},
     {"mandatory25_only", hs(2, [0, 0, 0], [send_name(16#4000000 bor (4 bsl 32), ?PEER), reply()])},
     {"missing_flags", hs(2, [0, 0, 0], [send_name(16#4, ?PEER)])},
     {"v5_name", hs(2, [0, 0, 0], [<<$n, 5:16, F:32, ?PEER/binary>>])},
     {"bad_name", hs(2, [0, 0, 0], [send_name(F, <<"nohost">>)])},
     {"trailing_data", hs(2, [0, 0, 0], [Name, reply(), <<112, 131, 104, 1, 97, 5>>])},
     {"complement", hs(2, [0, 0, 0], [Name, <<$c, 0:32, 5:32>>])}].

challenge(Flags, Name) -> <<$N, Flags:64, 16#0a0b0c0d:32, 9:32, (byte_size(Name)):16, Name/binary>>.
ack() -> <<$a, 0:128>>.

initiator() ->
    F = flags(),
    Ch = challenge(F, ?PEER),
    [{"ok_digest", hs(2, [0, 0, 0], [<<"sok">>, Ch, ack()])},
     {"ok_digest_tls", hs(3, [0, 0, 0], [<<"sok">>, Ch, ack()])},
     {"ok_chunked", hs(0, [2, 5, 1], [<<"sok">>, Ch, ack()])},
     {"ok_simultaneous", hs(2, [0, 0, 0], [<<"sok_simultaneous">>, Ch, ack()])},
     {"alive", hs(2, [0, 0, 0], [<<"salive">>, Ch, ack()])},
     {"nok", hs(2, [0, 0, 0], [<<"snok">>])},
     {"not_allowed", hs(2, [0, 0, 0], [<<"snot_allowed">>])},
     {"named", hs(2, [0, 0, 0], [<<"snamed:x@y">>])},
     {"wrong_name", hs(2, [0, 0, 0], [<<"sok">>, challenge(F, <<"other@host">>)])},
     {"missing_flags", hs(2, [0, 0, 0], [<<"sok">>, challenge(16#4, ?PEER)])},
     {"challenge_extra", hs(2, [0, 0, 0], [<<"sok">>, <<Ch/binary, "extra">>, ack()])},
     {"then_traffic", hs(2, [0, 0, 0], [<<"sok">>, Ch, ack(), <<>>])}].

%% ------------------------------------------------------------------
%% fuzz_epmd: selector byte (0 req, 1 alive2 resp, 2 port2 resp,
%% 3 names resp, 4 names find), then the message.

epmd() ->
    Node = fun(Name, Extra) ->
                   <<4711:16, 72, 0, 6:16, 6:16, (byte_size(Name)):16, Name/binary,
                     (byte_size(Extra)):16, Extra/binary>>
           end,
    Req = fun(Body) -> <<(byte_size(Body)):16, Body/binary>> end,
    [{"req_alive2", <<0, 0, (Req(<<120, (Node(<<"peer">>, <<>>))/binary>>))/binary>>},
     {"req_alive2_extra", <<0, 0, (Req(<<120, (Node(<<"peer">>, <<"xyz">>))/binary>>))/binary>>},
     {"req_port_please2", <<0, 0, (Req(<<122, "peer">>))/binary>>},
     {"req_names", <<0, 0, (Req(<<110>>))/binary>>},
     {"req_stream", <<0, 0, (Req(<<110>>))/binary, (Req(<<122, "a">>))/binary,
                      (Req(<<120, (Node(<<"b">>, <<>>))/binary>>))/binary>>},
     {"req_unknown", <<0, 0, (Req(<<100, 1, 2>>))/binary>>},
     {"req_small_max", <<0, 2, (Req(<<122, "a_long_name_here">>))/binary>>},
     {"alive2_x_resp", <<1, 118, 0, 16#5eed0001:32>>},
     {"alive2_resp", <<1, 121, 0, 7:16>>},
     {"alive2_taken", <<1, 118, 1, 0:32>>},
     {"port2_resp", <<2, 119, 0, (Node(<<"peer">>, <<>>))/binary>>},
     {"port2_resp_none", <<2, 119, 1>>},
     {"names_resp", <<3, 4369:32, "name peer at port 4711\nname x at port 1\n">>},
     {"names_find", <<4, "peer", 0, "name x at port 1\nname peer at port 04711\nname peer at port">>}].

%% ------------------------------------------------------------------
%% fuzz_parse: Erlang term texts, as ~tp writes them and as people do.

texts() ->
    Printed = [{"p_" ++ Name, unicode:characters_to_binary(io_lib:format("~tp", [T]))}
               || {Name, T} <- [{"atoms", [a, 'B c', 'ŝ', '', 'end', true]},
                                {"ints", [0, -1, 255, 256, 1 bsl 31, -(1 bsl 31) - 1, 1 bsl 64,
                                          -(1 bsl 200)]},
                                {"floats", [0.0, -0.0, 1.5, -2.5e-300, 1.0e300, 5.0e-324]},
                                {"strings", ["", "abc", "ŝ\n\t\"'", [0, 255, 256]]},
                                {"binaries", [<<>>, <<"abc">>, <<0, 255>>, <<1:3>>,
                                              <<"ŝ"/utf8>>]},
                                {"lists", [[], [a | b], [1, 2 | 3], [[]], "ab" ++ [c]]},
                                {"tuples", {{}, {a}, list_to_tuple(lists:seq(1, 260))}},
                                {"maps", [#{}, #{a => 1, b => #{c => [d]}, "k" => <<"v">>,
                                                 {1, 2} => 3.0, 1 => 1.0, 1.0 => 1}]},
                                {"funs", [fun lists:map/2, fun 'Elixir.Enum':map/2]}]],
    Hand = [{"h_pid", <<"{c@host#<1.2.3>, 'c@h.x'#<0.1.2>, #Pid<c@host.4.5.6>}">>},
            {"h_ref", <<"[c@h#Ref<1700000000.1.2.3>, c@h#Alias<7.1.2.3.4.5>]">>},
            {"h_segments", <<"<<1:4, -1:12/little, 2.5/float, 1.5:16/float-little, "
                             "\"\\x{e9}\"/utf8, $a/utf16, 16#1F600/utf32, <<1,2>>/binary, "
                             "<<1:3>>/bits, (7):3/unit:2>>">>},
            {"h_numbers", <<"[16#ff_ff, -2#1010, 36#zz, 1_000, $a, $\\n, $\\^a, "
                            "- 5, +7, 1.0e-10, 0.1_5]">>},
            {"h_escapes", <<"['\\x{3a9}\\101\\s', \"\\e\\d\\v\\b\\f\" \"glued\"]">>},
            {"h_comments", <<"% a comment\n{ok, % another\n [1|2]}.\n">>},
            {"h_splice", <<"[a|[b|[c|\"de\"]]]">>}],
    Printed ++ Hand.

%% ------------------------------------------------------------------
%% fuzz_db: byte 0 picks the owner (bits 0..1) and a Share (bit 2) or
%% Ops; then the term without the version byte. Shares are version 2:
%% #{Family => {#{Subkey => Value}, [{Subkey, Stamp}]}}.

db() ->
    Ops = [{"ops_bad", 0, [{put, <<"f">>, <<"k">>}]},
           {"ops_del", 1, [{del, <<"f">>, <<"k">>}, {set, <<"g">>, <<"k">>, 2, 1.5}]},
           {"ops_mixed", 2, [{set, <<"f">>, <<"k">>, 3, v}, {del, <<"f">>, <<"k">>},
                             {set, <<"f">>, <<"k">>, 4, w}]},
           {"ops_set", 0, [{set, <<"f">>, <<"k">>, 7, hello}, {set, <<"f">>, <<"n">>, 1, {a, b}}]}],
    %% protocol version 3: each family {Values, Stamps}, Stamps one binary of
    %% <<KeyLen:32, Subkey/binary, Stamp:64>> records
    Shares = [{"share_a", 4, #{<<"f">> => {#{<<"j">> => [1, 2], <<"k">> => x},
                                           recs([{<<"j">>, 2}, {<<"k">>, 1}])},
                               <<"g">> => {#{}, <<>>}}},
              {"share_b", 5, #{<<"f">> => {#{<<"k">> => <<"v">>}, recs([{<<"k">>, 3}])}}},
              {"share_c", 6, #{<<"f">> => {#{<<"k">> => y, <<"k2">> => z},
                                           recs([{<<"k">>, 3}, {<<"k2">>, 1 bsl 64 - 1}])}}},
              %% out of order, a subkey twice, one missing, one extra
              {"share_order", 4, #{<<"f">> => {#{<<"a">> => 1, <<"b">> => 2, <<"c">> => 3},
                                               recs([{<<"b">>, 5}, {<<"a">>, 1}, {<<"b">>, 6},
                                                     {<<"z">>, 9}])}}},
              %% in step, then a subkey named again
              {"share_step", 5, #{<<"f">> => {#{<<"a">> => 1, <<"b">> => 2, <<"c">> => 3},
                                              recs([{<<"a">>, 1}, {<<"b">>, 2}, {<<"b">>, 7}])}}},
              %% all in step, then records left over: the last subkey again, an extra
              {"share_left", 6, #{<<"f">> => {#{<<"a">> => 1, <<"b">> => 2},
                                              recs([{<<"a">>, 1}, {<<"b">>, 2}, {<<"b">>, 9},
                                                    {<<"z">>, 4}])}}},
              %% malformed: a family an atom, a record cut short, a bitstring,
              %% version 2's list, version 1's map
              {"share_bad", 4, #{f => {#{<<"k">> => x}, recs([{<<"k">>, 1}])}}},
              {"share_cut", 5, #{<<"f">> => {#{<<"k">> => x}, <<1:32, "k", 1:56>>}}},
              {"share_bits", 6, #{<<"f">> => {#{<<"k">> => x}, <<1:32, "k", 1:64, 1:3>>}}},
              {"share_v2", 4, #{<<"f">> => {#{<<"k">> => x}, [{<<"k">>, 1}]}}},
              {"share_v1", 4, #{<<"f">> => #{<<"k">> => {1, x}}}}],
    [{Name, <<Sel, (strip(term_to_binary(T)))/binary>>} || {Name, Sel, T} <- Ops ++ Shares].

recs(Pairs) -> << <<(byte_size(K)):32, K/binary, S:64>> || {K, S} <- Pairs >>.
