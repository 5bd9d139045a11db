/*
 * calls.c - calls into another node: a function it exports (aemp_call, as
 * erpc:call), a port answering gen_server calls (aemp_gen_call, answered
 * with aemp_gen_reply) and a port answering with a reply port (aemp_cal),
 * with a timeout. Two nodes in one program, so that it runs on its own;
 * name an Erlang node as the peer of aemp_call or aemp_gen_call and the
 * same calls reach Erlang functions and gen_servers.
 *
 *   ./build/example_calls [COOKIE]
 *
 * Read docs/guide.md, "Calls", beside it.
 */
#include "aemp.h"

#include <stdio.h>
#include <string.h>

#define SERVER "srv@127.0.0.1"

static aemp_node *srv, *cli;
static int ready, step;
static int64_t total;

/* --- the server node ------------------------------------------------ */

/* math:add(A, B), callable as erpc:call(srv@127.0.0.1, math, add, [A, B]) */
static int math_add(aemp_node *node, const aemp_term *args, aemp_buf *result, void *arg)
{
    aemp_cursor c = aemp_cursor_of(args);
    uint32_t n;
    int64_t a, b;
    if (aemp_get_list(&c, &n) || n != 2 || aemp_get_int64(&c, &a) || aemp_get_int64(&c, &b)) {
        aemp_term_format(result, "badarg");
        return AEMP_RPC_ERROR;
    }
    aemp_term_format(result, "~i", a + b);
    return AEMP_RPC_RETURN;
}

/* {'$gen_call', From, {add, N}}: the tag is stripped, m->args is at From. */
static int on_gen_call(aemp_node *node, aemp_port self, const aemp_msg *m, void *arg)
{
    aemp_cursor c = m->args;
    aemp_term from;
    uint32_t arity;
    char op[16];
    int64_t n;
    if (m->nargs != 2 || aemp_get_term(&c, &from) || aemp_get_tuple(&c, &arity) || arity != 2 ||
        aemp_get_atom(&c, op, sizeof op) || strcmp(op, "add") || aemp_get_int64(&c, &n))
        return aemp_die(node, "a call it does not know");
    total += n;
    aemp_buf r = AEMP_BUF_INIT;
    aemp_term_format(&r, "{ok, ~i}", total);
    aemp_term rt = aemp_buf_term(&r);
    int rc = aemp_gen_reply(node, &from, &rt);
    aemp_buf_free(&r);
    return rc;
}

/* {get, ReplyTo}: aemp_cal added ReplyTo to the message {get}. */
static int on_get(aemp_node *node, aemp_port self, const aemp_msg *m, void *arg)
{
    aemp_cursor c = m->args;
    aemp_addr to;
    if (m->nargs != 1 || aemp_get_pid(&c, &to)) return aemp_die(node, "get wants a pid");
    if (arg) return 0; /* the silent port: never answers */
    return aemp_sendf(node, self, &to, "{total, ~i}", total);
}

static void serve(aemp_node *node)
{
    aemp_port counter, silent;
    aemp_export(node, "math", "add", math_add, NULL);
    aemp_port_new(node, &counter);
    aemp_rcv(node, counter, "$gen_call", on_gen_call, NULL);
    aemp_rcv(node, counter, "get", on_get, NULL);
    aemp_register(node, "counter", counter);
    aemp_port_new(node, &silent);
    aemp_rcv(node, silent, "get", on_get, "silent");
    aemp_register(node, "silent", silent);
}

/* --- the client node ------------------------------------------------ */

static void next(void);

/* Every call's answer comes here, once, from the loop. */
static void on_answer(aemp_node *node, int status, const aemp_term *result, void *arg)
{
    char text[256] = "";
    if (result) aemp_term_print(result, text, sizeof text);
    if (status == AEMP_RPC_RETURN)
        printf("%s: %s\n", (const char *)arg, text);
    else if (status == AEMP_RPC_ERROR)
        printf("%s: error %s\n", (const char *)arg, text);
    else if (status > 0)
        printf("%s: thrown or exit %s\n", (const char *)arg, text);
    else
        printf("%s: %s\n", (const char *)arg, aemp_strerror(status));
    next();
}

/* A term from a format (examples keep error checks short). */
static aemp_term make(aemp_buf *b, const char *fmt)
{
    aemp_term_format(b, fmt);
    return aemp_buf_term(b);
}

static void next(void)
{
    aemp_buf b = AEMP_BUF_INIT;
    aemp_term t;
    aemp_addr counter, silent;
    aemp_addr_name(&counter, SERVER, "counter");
    aemp_addr_name(&silent, SERVER, "silent");
    int rc = 0;
    switch (step++) {
    case 0: /* erpc:call(srv, math, add, [1, 2]), at most 5 s */
        t = make(&b, "[1, 2]");
        rc = aemp_call(cli, SERVER, "math", "add", &t, 5000, on_answer, "math:add(1, 2)");
        break;
    case 1: /* not exported: answered as Erlang answers an undefined function */
        t = make(&b, "[2, 3]");
        rc = aemp_call(cli, SERVER, "math", "mul", &t, 5000, on_answer, "math:mul(2, 3)");
        break;
    case 2: /* gen_server:call({counter, srv}, {add, 5}) */
        t = make(&b, "{add, 5}");
        rc = aemp_gen_call(cli, &counter, &t, 5000, on_answer, "gen_call counter {add, 5}");
        break;
    case 3: /* cal: {get} goes out as {get, ReplyPid} */
        t = make(&b, "{get}");
        rc = aemp_cal(cli, &counter, &t, 1000, on_answer, "cal counter {get}");
        break;
    case 4: /* a port that never answers: the timeout ends the wait */
        t = make(&b, "{get}");
        rc = aemp_cal(cli, &silent, &t, 100, on_answer, "cal silent {get}");
        break;
    default:
        aemp_node_close(cli, NULL, NULL);
        aemp_node_close(srv, NULL, NULL);
    }
    aemp_buf_free(&b); /* the calls copied it */
    if (rc) fprintf(stderr, "call %d: %s\n", step - 1, aemp_strerror(rc));
}

static void on_ready(aemp_node *node, int status, void *arg)
{
    if (status) {
        fprintf(stderr, "node: %s\n", aemp_strerror(status));
        return;
    }
    if (++ready == 2) next();
}

int main(int argc, char **argv)
{
    uv_loop_t *loop = uv_default_loop();
    aemp_node_config cfg = {0};
    cfg.cookie = argc > 1 ? argv[1] : "secret";
    cfg.ready_cb = on_ready;
    cfg.name = SERVER;
    int rc = aemp_node_create(loop, &cfg, &srv);
    if (!rc) {
        serve(srv);
        cfg.name = "cli@127.0.0.1";
        rc = aemp_node_create(loop, &cfg, &cli);
    }
    if (rc) {
        fprintf(stderr, "aemp_node_create: %s\n", aemp_strerror(rc));
        return 1;
    }
    uv_run(loop, UV_RUN_DEFAULT);
    return 0;
}
