/*
 * supervised.c - a C node whose ports an Erlang or Elixir supervisor runs
 * as children (examples/supervise.exs; aemp_port of the Erlang
 * application in erlang/). It exports the init function worker:start/1:
 * Erlang's spawn_link(Node, worker, start, [Parent]) makes a new port here
 * that answers {ping, From} with {pong, Self}, dies on {crash}, and first
 * tells Parent {started, Self}. Every port prints when it starts and when
 * it is gone, with its exit reason (shutdown when its supervisor stops it).
 *
 *   ./build/example_supervised [NAME [COOKIE]]     (default worker, secret)
 *   elixir --sname sup --cookie secret -pa build/erlang/ebin \
 *       examples/supervise.exs worker@HOST
 *
 * Read docs/guide.md, "Supervision", beside it.
 */
#include "aemp.h"

#include <stdio.h>
#include <string.h>

/* {ping, From}: the tag is stripped, m->args is at From. */
static int on_ping(aemp_node *node, aemp_port self, const aemp_msg *m, void *arg)
{
    aemp_cursor args = m->args;
    aemp_addr from, me;
    if (m->nargs != 1 || aemp_get_pid(&args, &from)) return aemp_die(node, "ping wants a pid");
    aemp_port_addr(node, self, &me);
    return aemp_sendf(node, self, &from, "{pong, ~p}", &me);
}

/* {crash}: fail, so the port dies with {die, <<"asked to crash">>}. */
static int on_crash(aemp_node *node, aemp_port self, const aemp_msg *m, void *arg)
{
    return aemp_die(node, "asked to crash");
}

static void on_gone(aemp_node *node, aemp_port port, const aemp_term *reason, void *arg)
{
    char text[128];
    aemp_term_print(reason, text, sizeof text);
    printf("worker %llu stopped: %s\n", (unsigned long long)port.id, text);
    fflush(stdout);
}

/* worker:start(Parent): runs as the new port (self, and $SELF). */
static int start(aemp_node *node, aemp_port self, const aemp_term *args, void *arg)
{
    int rc;
    if ((rc = aemp_rcv(node, self, "ping", on_ping, NULL)) ||
        (rc = aemp_rcv(node, self, "crash", on_crash, NULL)) ||
        (rc = aemp_port_gone(node, self, on_gone, NULL)))
        return rc;
    aemp_cursor c = aemp_cursor_of(args);
    uint32_t n;
    aemp_addr parent, me;
    if (aemp_get_list(&c, &n) || n != 1 || aemp_get_pid(&c, &parent))
        return aemp_die(node, "start wants [Parent]");
    aemp_port_addr(node, self, &me);
    printf("worker %llu started\n", (unsigned long long)self.id);
    fflush(stdout);
    return aemp_sendf(node, self, &parent, "{started, ~p}", &me);
}

static void on_ready(aemp_node *node, int status, void *arg)
{
    if (status) {
        fprintf(stderr, "node: %s\n", aemp_strerror(status));
        return;
    }
    printf("node %s is up: spawn worker:start/1 here\n", aemp_node_name(node));
    fflush(stdout);
}

int main(int argc, char **argv)
{
    uv_loop_t *loop = uv_default_loop();
    aemp_node_config cfg = {0};
    cfg.name = argc > 1 ? argv[1] : "worker";
    cfg.cookie = argc > 2 ? argv[2] : "secret";
    cfg.ready_cb = on_ready;
    aemp_node *node;
    int rc = aemp_node_create(loop, &cfg, &node);
    if (!rc) rc = aemp_export_init(node, "worker", "start", start, NULL);
    if (rc) {
        fprintf(stderr, "aemp: %s\n", aemp_strerror(rc));
        return 1;
    }
    uv_run(loop, UV_RUN_DEFAULT);
    return 0;
}
