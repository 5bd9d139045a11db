# Elixir side of interop-tests/test_elixir.sh: Node.ping gives :pong and a
# map with a string value comes back from the echo port unchanged.
[node_arg] = System.argv()
IO.puts("ELIXIR #{System.version()} OTP #{System.otp_release()}")
node = String.to_atom(node_arg)

fail = fn why ->
  IO.puts("FAIL elixir: #{inspect(why)}")
  System.halt(1)
end

case Node.ping(node) do
  :pong -> :ok
  other -> fail.({:ping, other})
end

term = %{"greeting" => "héllo from Elixir", :list => [1, 2.5, :three], :nested => %{ok: true}}
send({:echo, node}, {self(), term})

receive do
  ^term -> IO.puts("PASS elixir")
  other -> fail.({:unexpected, other})
after
  5000 -> fail.(:no_echo_within_5s)
end
