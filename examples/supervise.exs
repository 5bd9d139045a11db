# supervise.exs - an Elixir Supervisor runs a port of a C node as a child
# (examples/supervised.c exports worker:start/1; :aemp_port is the module
# of the Erlang application in erlang/, built into build/erlang/ebin).
# The port answers, crashes, is restarted with a new pid, and stops with
# the supervisor (the C node prints "stopped: shutdown").
#
#   ./build/example_supervised worker secret &
#   elixir --sname sup --cookie secret -pa build/erlang/ebin \
#       examples/supervise.exs worker@HOST
#
# Read docs/guide.md, "Supervision", beside it.
defmodule Example do
  def run(c_node) do
    # {:aemp_port, {Node, Module, Function, Args}} is a child spec:
    # :aemp_port.child_spec/1 makes it (start: :aemp_port.start_link/4).
    children = [{:aemp_port, {c_node, :worker, :start, [self()]}}]
    {:ok, sup} = Supervisor.start_link(children, strategy: :one_for_one)

    first = started()
    :pong = ping(first)
    IO.puts("port #{inspect(first)} on #{node(first)} answers")

    send(first, {:crash})
    second = started()
    true = second != first
    :pong = ping(second)
    [{_id, ^second, :worker, [:aemp_port]}] = Supervisor.which_children(sup)
    IO.puts("restarted as #{inspect(second)}, which answers")

    ref = Process.monitor(second)
    :ok = Supervisor.stop(sup)
    :shutdown = down(ref, second)
    IO.puts("supervisor stopped, port stopped")
  end

  defp started do
    receive do
      {:started, pid} -> pid
    after
      5000 -> raise "the C port did not start"
    end
  end

  defp ping(pid) do
    send(pid, {:ping, self()})

    receive do
      {:pong, ^pid} -> :pong
    after
      5000 -> raise "no pong from #{inspect(pid)}"
    end
  end

  defp down(ref, pid) do
    receive do
      {:DOWN, ^ref, :process, ^pid, reason} -> reason
    after
      5000 -> raise "the port did not stop with its supervisor"
    end
  end
end

[c_node] = System.argv()
IO.puts("ELIXIR #{System.version()} OTP #{System.otp_release()}")
Example.run(String.to_atom(c_node))
