# cluster_node.exs - the Elixir node of the database cluster test
# (interop-tests/fault/test_db_cluster.sh): the AEMP database from Elixir,
# with the Erlang application aemp on the code path.
#
#   elixir --name x@10.200.X.Y --cookie C --erl "-start_epmd false \
#       -kernel net_ticktime 4" -pa EBIN cluster_node.exs <FIFO
#
# Prints what aemp_cluster.erl and cluster_node.c print ("view f: K=V ...",
# "count big: N", "did set FAM KEY", "PONG NODE", "NODEUP NODE",
# "NODEDOWN NODE REASON", first "ELIXIR Version OTP Release" and
# "READY OsPid"), and reads the same commands from stdin (set, del,
# ping). Ends at the end of stdin.
defmodule ClusterNode do
  def main do
    {:ok, _} = Application.ensure_all_started(:aemp)
    main = self()
    watcher = spawn_link(fn -> watch(main) end)

    receive do
      {:watching, ^watcher} -> :ok
    end

    IO.puts("ELIXIR #{System.version()} OTP #{System.otp_release()}")
    IO.puts("READY #{System.pid()}")
    commands()
  end

  defp commands do
    case IO.gets("") do
      :eof ->
        :ok

      {:error, reason} ->
        IO.puts("FAIL stdin: #{inspect(reason)}")
        System.halt(1)

      line ->
        line |> String.trim() |> String.split(" ", trim: true) |> command()
        commands()
    end
  end

  defp command(["set", fam, key, value]) do
    :ok = :aemp.db_set(fam, key, value)
    IO.puts("did set #{fam} #{key}")
  end

  defp command(["del", fam, key]) do
    :ok = :aemp.db_del(fam, key)
    IO.puts("did del #{fam} #{key} ok")
  end

  defp command(["ping", node]) do
    case Node.ping(String.to_atom(node)) do
      :pong -> IO.puts("PONG #{node}")
      :pang -> IO.puts("PANG #{node}")
    end
  end

  defp command(other), do: IO.puts("FAIL unknown command: #{inspect(other)}")

  # node events and the two families
  defp watch(main) do
    :ok = :net_kernel.monitor_nodes(true, [:nodedown_reason, {:node_type, :all}])
    f = :aemp.db_mon(:f)
    big = :aemp.db_mon(:big)
    send(main, {:watching, self()})
    watch_loop(f, big, %{}, 0)
  end

  defp watch_loop(f, big, view, count) do
    receive do
      {:aemp_db_mon, ^f, _, added, changed, deleted} ->
        view = view |> Map.merge(added) |> Map.merge(changed) |> Map.drop(deleted)
        items = for {k, v} <- Enum.sort(view), do: " #{k}=#{text(v)}"
        IO.puts("view f:#{items}")
        watch_loop(f, big, view, count)

      {:aemp_db_mon, ^big, _, added, _changed, deleted} ->
        count = count + map_size(added) - length(deleted)
        IO.puts("count big: #{count}")
        watch_loop(f, big, view, count)

      {:nodeup, node, _} ->
        IO.puts("NODEUP #{node}")
        watch_loop(f, big, view, count)

      {:nodedown, node, info} ->
        IO.puts("NODEDOWN #{node} #{inspect(info[:nodedown_reason])}")
        watch_loop(f, big, view, count)
    end
  end

  defp text(v) when is_binary(v), do: v
  defp text(v), do: inspect(v)
end

ClusterNode.main()
