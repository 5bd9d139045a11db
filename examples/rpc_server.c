/*
 * rpc_server.c - C functions callable from Erlang with rpc:call and erpc:call.
 *
 *   math:add(A, B)   returns A + B for two integers; raises error:badarg
 *                    for anything else, error:badarith on overflow, and
 *                    error:undef for another number of arguments (as Erlang
 *                    does for an arity that does not exist)
 *   math:calls()     returns how many calls of math:add the node has served
 *
 * Anything not exported (math:mul/2, erlang:node/0, ...) is answered with
 * error:undef by the library. Each call is printed. SIGINT or SIGTERM closes
 * the node cleanly. From Erlang:
 *
 *   rpc:call('c@host', math, add, [1, 2])        -> 3
 *   erpc:call('c@host', math, add, [1, 2])       -> 3
 *   rpc:call('c@host', math, add, [1, x])        -> {badrpc, {'EXIT', {badarg, _}}}
 *
 * Usage: example_rpc_server NAME [COOKIE]
 */
#include "aemp.h"

#include <stdio.h>
#include <string.h>

struct server {
    aemp_node *node;
    uv_signal_t sigint, sigterm;
    int64_t calls;
};

/* Read exactly `want` integers from the argument list. The library always
 * hands exported functions a proper list (Erlang sends [1, 2] as a byte
 * string; the node rewrites it). AEMP_ENOENT: another number of arguments. */
static int int_args(const aemp_term *args, int64_t *v, uint32_t want)
{
    aemp_cursor c = aemp_cursor_of(args);
    uint32_t n;
    if (aemp_get_list(&c, &n)) return AEMP_ENOMATCH;
    if (n != want) return AEMP_ENOENT;
    for (uint32_t i = 0; i < want; i++)
        if (aemp_get_int64(&c, &v[i])) return AEMP_ENOMATCH;
    return 0;
}

/* math:add/2. args is the argument list, valid during the call. Append
 * exactly one term to result and say what it is. */
static int math_add(aemp_node *node, const aemp_term *args, aemp_buf *result, void *arg)
{
    struct server *s = arg;
    char text[256];
    int64_t v[2];
    (void)node;
    aemp_term_print(args, text, sizeof text);
    printf("rpc: math:add called with %s\n", text);
    fflush(stdout);
    s->calls++;
    int rc = int_args(args, v, 2);
    if (rc == AEMP_ENOENT) {
        /* Erlang has no math:add/1 or /3 either. */
        aemp_term_format(result, "undef");
        return AEMP_RPC_ERROR;
    }
    if (rc) {
        aemp_term_format(result, "badarg");
        return AEMP_RPC_ERROR;
    }
    if ((v[1] > 0 && v[0] > INT64_MAX - v[1]) || (v[1] < 0 && v[0] < INT64_MIN - v[1])) {
        /* Erlang's integers do not overflow; ours are int64_t. */
        aemp_term_format(result, "badarith");
        return AEMP_RPC_ERROR;
    }
    aemp_term_format(result, "~i", v[0] + v[1]);
    return AEMP_RPC_RETURN;
}

/* math:calls/0. */
static int math_calls(aemp_node *node, const aemp_term *args, aemp_buf *result, void *arg)
{
    struct server *s = arg;
    (void)node;
    if (int_args(args, NULL, 0)) {
        aemp_term_format(result, "undef");
        return AEMP_RPC_ERROR;
    }
    aemp_term_format(result, "~i", s->calls);
    return AEMP_RPC_RETURN;
}

static void on_ready(aemp_node *node, int status, void *arg)
{
    struct server *s = arg;
    if (status) {
        fprintf(stderr, "rpc: cannot register %s with EPMD: %s\n", aemp_node_name(node),
                aemp_strerror(status));
        uv_close((uv_handle_t *)&s->sigint, NULL);
        uv_close((uv_handle_t *)&s->sigterm, NULL);
        aemp_node_close(node, NULL, NULL);
        s->node = NULL;
        return;
    }
    printf("rpc: node %s ready\n", aemp_node_name(node));
    fflush(stdout);
}

static void on_nodes(aemp_node *node, const char *peer, int up, const char *reason, void *arg)
{
    (void)node;
    (void)arg;
    if (up)
        printf("rpc: node up: %s\n", peer);
    else
        printf("rpc: node down: %s (%s)\n", peer, reason);
    fflush(stdout);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct server *s = h->data;
    (void)signum;
    uv_close((uv_handle_t *)&s->sigint, NULL);
    uv_close((uv_handle_t *)&s->sigterm, NULL);
    if (s->node) aemp_node_close(s->node, NULL, NULL);
    s->node = NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s NAME [COOKIE]\n", argv[0]);
        return 2;
    }
    uv_loop_t *loop = uv_default_loop();
    struct server s;
    memset(&s, 0, sizeof s);

    aemp_node_config cfg = {0};
    cfg.name = argv[1];
    cfg.cookie = argc == 3 ? argv[2] : NULL;
    cfg.ready_cb = on_ready;
    cfg.ready_arg = &s;
    cfg.nodes_cb = on_nodes;
    int rc = aemp_node_create(loop, &cfg, &s.node);
    if (rc) {
        fprintf(stderr, "rpc: cannot start the node: %s\n", aemp_strerror(rc));
        return 1;
    }
    if ((rc = aemp_export(s.node, "math", "add", math_add, &s)) ||
        (rc = aemp_export(s.node, "math", "calls", math_calls, &s))) {
        fprintf(stderr, "rpc: cannot export: %s\n", aemp_strerror(rc));
        aemp_node_close(s.node, NULL, NULL);
        uv_run(loop, UV_RUN_DEFAULT);
        return 1;
    }
    uv_signal_init(loop, &s.sigint);
    uv_signal_init(loop, &s.sigterm);
    s.sigint.data = s.sigterm.data = &s;
    uv_signal_start(&s.sigint, on_signal, SIGINT);
    uv_signal_start(&s.sigterm, on_signal, SIGTERM);

    uv_run(loop, UV_RUN_DEFAULT); /* returns once every handle is closed */
    uv_loop_close(loop);
    return 0;
}
