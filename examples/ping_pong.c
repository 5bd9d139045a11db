/*
 * ping_pong.c - a C node that plays ping against an Erlang process.
 *
 * It sends {ping, Self, N} to the process registered as `pong` on an Erlang
 * node (examples/pong.erl) and expects {pong, N} back, for N = 1..ROUNDS,
 * then closes the node. If the Erlang node is not there yet, it tries again
 * every second for a while.
 *
 * Usage: example_ping_pong NAME ERLANG_NODE [COOKIE]
 *   NAME is alive or alive@host; COOKIE defaults to ~/.erlang.cookie.
 */
#include "aemp.h"

#include <stdio.h>
#include <string.h>

#define ROUNDS 3
#define MAX_TRIES 20

struct game {
    aemp_node *node;
    aemp_port self;
    aemp_addr pong; /* {pong, ErlangNode} */
    uv_timer_t retry;
    int tries;
    int status; /* exit status of the program */
};

static void ping(struct game *g, int64_t n)
{
    aemp_addr me;
    int rc = aemp_port_addr(g->node, g->self, &me);
    if (rc == 0) rc = aemp_sendf(g->node, g->self, &g->pong, "{ping, ~p, ~i}", &me, n);
    if (rc)
        fprintf(stderr, "ping: send failed: %s\n", aemp_strerror(rc));
    else
        printf("ping: sent {ping, <pid>, %lld}\n", (long long)n);
}

static void finish(struct game *g, int status)
{
    if (g->status != -1) return; /* already finishing */
    g->status = status;
    uv_close((uv_handle_t *)&g->retry, NULL);
    aemp_node_close(g->node, NULL, NULL);
}

/* The port's callback: every message sent to our pid lands here. */
static void on_message(aemp_node *node, aemp_port self, const aemp_term *msg, const aemp_addr *from,
                       void *arg)
{
    struct game *g = arg;
    char text[256], tag[16];
    uint32_t arity;
    int64_t n;
    (void)node;
    (void)self;
    (void)from;
    aemp_term_print(msg, text, sizeof text);
    aemp_cursor c = aemp_cursor_of(msg);
    if (aemp_get_tuple(&c, &arity) || arity != 2 || aemp_get_atom(&c, tag, sizeof tag) ||
        strcmp(tag, "pong") != 0 || aemp_get_int64(&c, &n)) {
        printf("ping: ignored %s\n", text);
        return;
    }
    printf("ping: got %s\n", text);
    if (n < ROUNDS)
        ping(g, n + 1);
    else
        finish(g, 0);
}

static void on_retry(uv_timer_t *t)
{
    ping(t->data, 1);
}

/* The connection to the Erlang node could not be made: try again later. */
static void on_fail(aemp_node *node, const char *peer, int err, const char *reason, size_t dropped,
                    void *arg)
{
    struct game *g = arg;
    (void)node;
    if (g->status != -1) return; /* closing: the node reports its pending connections as failed */
    fprintf(stderr, "ping: cannot reach %s: %s (%s), %zu message(s) dropped\n", peer, reason,
            aemp_strerror(err), dropped);
    if (++g->tries >= MAX_TRIES || err == AEMP_EAUTH) {
        finish(g, 1);
        return;
    }
    uv_timer_start(&g->retry, on_retry, 1000, 0);
}

static void on_nodes(aemp_node *node, const char *peer, int up, const char *reason, void *arg)
{
    struct game *g = arg;
    (void)node;
    printf("ping: node %s %s%s%s\n", peer, up ? "up" : "down", up ? "" : ": ", up ? "" : reason);
    if (!up && g->status == -1) finish(g, 1);
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: %s NAME ERLANG_NODE [COOKIE]\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0); /* line by line, even into a pipe */
    uv_loop_t *loop = uv_default_loop();
    struct game g;
    memset(&g, 0, sizeof g);
    g.status = -1;
    int rc = aemp_addr_name(&g.pong, argv[2], "pong");
    if (rc) {
        fprintf(stderr, "ping: bad node name '%s'\n", argv[2]);
        return 2;
    }

    aemp_node_config cfg = {0};
    cfg.name = argv[1];
    cfg.cookie = argc == 4 ? argv[3] : NULL;
    cfg.nodes_cb = on_nodes;
    cfg.nodes_arg = &g;
    cfg.fail_cb = on_fail;
    cfg.fail_arg = &g;
    if ((rc = aemp_node_create(loop, &cfg, &g.node))) {
        fprintf(stderr, "ping: cannot start the node: %s\n", aemp_strerror(rc));
        return 1;
    }
    if ((rc = aemp_port_open(g.node, on_message, &g, &g.self))) {
        fprintf(stderr, "ping: cannot open a port: %s\n", aemp_strerror(rc));
        aemp_node_close(g.node, NULL, NULL);
        uv_run(loop, UV_RUN_DEFAULT);
        return 1;
    }
    uv_timer_init(loop, &g.retry);
    g.retry.data = &g;
    printf("ping: node %s\n", aemp_node_name(g.node));
    /* Queued until the connection is up; the connection starts now. */
    ping(&g, 1);

    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    return g.status == 0 ? 0 : 1;
}
