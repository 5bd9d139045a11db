# db.exs - the AEMP distributed database from Elixir, with the Erlang
# application aemp (erlang/, built into build/erlang/ebin). This node and
# another node running the application share families: each sets its own
# entries, db_mon reports every change, a db_reg entry (and the pg
# membership) goes when its process dies. Any aemp C node running beside
# them sees the same families.
#
#   erl -sname other -setcookie secret -pa build/erlang/ebin \
#       -eval 'application:ensure_all_started(aemp)' &
#   elixir --sname ex --cookie secret -pa build/erlang/ebin \
#       examples/db.exs other@HOST
#
# Read docs/database.md, "The Erlang and Elixir API", beside it.
defmodule DbExample do
  def run(other) do
    {:ok, _} = Application.ensure_all_started(:aemp)
    true = Node.connect(other)

    # Watch family :demo (the same family as "demo"): the whole family
    # comes at once, then one message per change.
    ref = :aemp.db_mon(:demo)
    {all, _, _} = change(ref)
    IO.puts("demo at first: #{inspect(all)}")

    # Our own entry, and one the other node sets (every node owns what it
    # sets; its entries vanish everywhere when it goes down).
    me = Atom.to_string(node())
    :ok = :aemp.db_set(:demo, me, %{lang: :elixir, version: System.version()})
    :ok = :erpc.call(other, :aemp, :db_set, ["demo", Atom.to_string(other), %{lang: :erlang}])
    value = await_key(ref, Atom.to_string(other))
    IO.puts("#{other} set #{inspect(Atom.to_string(other))} => #{inspect(value)}")
    family = until(fn -> :erpc.call(other, :aemp, :db_family, [:demo]) end, &Map.has_key?(&1, me))
    IO.puts("#{other} sees #{inspect(family)}")

    # db_reg: a process in family :workers, as entry port_id(pid) => value
    # and as a member of the pg group :workers in scope :aemp, on every node.
    pid = spawn(fn -> receive do: (:stop -> :ok) end)
    :ok = :aemp.db_reg(:workers, pid, %{role: :example})
    id = :aemp.port_id(pid)
    until(fn -> :erpc.call(other, :aemp, :db_family, [:workers]) end, &Map.has_key?(&1, id))
    until(fn -> :erpc.call(other, :pg, :get_members, [:aemp, :workers]) end, &(pid in &1))
    IO.puts("#{other} sees #{id} in family workers and in pg group workers")
    send(pid, :stop)
    until(fn -> :erpc.call(other, :aemp, :db_family, [:workers]) end, &(not Map.has_key?(&1, id)))
    IO.puts("gone with its process: #{id}")

    :ok = :aemp.db_demon(ref)
  end

  # the next db_mon message: {added, changed, deleted}
  defp change(ref) do
    receive do
      {:aemp_db_mon, ^ref, "demo", added, changed, deleted} -> {added, changed, deleted}
    after
      10_000 -> raise "no db_mon message within 10 s"
    end
  end

  defp await_key(ref, key) do
    {added, changed, _deleted} = change(ref)

    case Map.merge(added, changed) do
      %{^key => value} -> value
      _ -> await_key(ref, key)
    end
  end

  # poll fun until ok?(result), for at most 10 s
  defp until(fun, ok?, deadline \\ System.monotonic_time(:millisecond) + 10_000) do
    result = fun.()

    cond do
      ok?.(result) -> result
      System.monotonic_time(:millisecond) > deadline -> raise "gave up waiting: #{inspect(result)}"
      true ->
        Process.sleep(20)
        until(fun, ok?, deadline)
    end
  end
end

[other] = System.argv()
IO.puts("ELIXIR #{System.version()} OTP #{System.otp_release()}")
DbExample.run(String.to_atom(other))
