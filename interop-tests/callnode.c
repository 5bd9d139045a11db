/*
 * callnode.c - the C side of the calls interop test (test_calls.sh): a node
 * that makes calls into Erlang when an Erlang test process asks, answers
 * gen_server calls from Erlang, and exports functions Erlang calls.
 *
 * Usage: callnode NAME COOKIE
 * Prints "ready NAME" once registered with EPMD, then runs until SIGTERM
 * (exit 0).
 *
 * Port `ctl`: requests {Op, From, Tag, Args...}, each answered once with
 * {reply, Tag, Answer} when the call's callback runs:
 *   {call, From, Tag, Node, M, F, A, TimeoutMs}      aemp_call
 *   {gen_call, From, Tag, Server, Request, TimeoutMs} aemp_gen_call
 *   {cal, From, Tag, To, Msg, TimeoutMs}              aemp_cal
 * Server and To are pids or {Name, Node}. Answer: {return | error | throw
 * | exit, Term}, timeout, {noconnection, Term}, closed, or {refused, Err}
 * when the call did not start.
 *
 * Port `gsrv`, a gen_server to Erlang's gen_server:call (aemp_gen_reply):
 *   {echo, X} -> {ok, X};  whoami -> its pid;  hold -> no answer (From is
 *   kept);  {release, X} -> X to the held caller, then {ok, released}.
 *
 * Exports, as the same functions of aemp_interop.erl on an Erlang node:
 *   aemp_interop:kind(Kind, V)  V returned, thrown, raised as error or exit
 *   aemp_interop:sleep(Ms)      blocks the node Ms milliseconds, returns slept
 *   aemp_interop:tell(Pid, Msg) sends Msg to Pid, returns ok
 */
#include "node_main.h"

#include <string.h>
#include <unistd.h>

static aemp_port ctl;
static aemp_buf held; /* the From gsrv holds, empty for none */

/* A call in flight: whom to tell. Freed in its callback. */
struct pending {
    aemp_addr from;
    aemp_buf tag;
};

static const char *err_atom(int rc)
{
    switch (rc) {
    case AEMP_EINVAL:
        return "einval";
    case AEMP_ECLOSED:
        return "eclosed";
    case AEMP_EBUSY:
        return "ebusy";
    case AEMP_ENOMEM:
        return "enomem";
    default:
        return "error";
    }
}

static void tell(const aemp_addr *to, const aemp_term *tag, const char *fmt, const aemp_term *t)
{
    aemp_buf a = AEMP_BUF_INIT;
    int rc = t ? aemp_term_format(&a, fmt, t) : aemp_term_format(&a, fmt);
    if (!rc) {
        aemp_term at = aemp_buf_term(&a);
        rc = aemp_sendf(node, ctl, to, "{reply, ~t, ~t}", tag, &at);
    }
    if (rc) say("reply failed: %s", aemp_strerror(rc));
    aemp_buf_free(&a);
}

static void answered(aemp_node *n, int status, const aemp_term *result, void *arg)
{
    (void)n;
    struct pending *p = arg;
    aemp_term tag = aemp_buf_term(&p->tag);
    static const char *const kinds[] = {"{return, ~t}", "{error, ~t}", "{throw, ~t}", "{exit, ~t}"};
    if (status >= AEMP_RPC_RETURN && status <= AEMP_RPC_EXIT && result)
        tell(&p->from, &tag, kinds[status], result);
    else if (status == AEMP_ETIMEDOUT)
        tell(&p->from, &tag, "timeout", NULL);
    else if (status == AEMP_ENOCONN && result)
        tell(&p->from, &tag, "{noconnection, ~t}", result);
    else if (status != AEMP_ECLOSED) /* closing: nobody to tell */
        say("unexpected answer %d (%s)", status, aemp_strerror(status));
    aemp_buf_free(&p->tag);
    free(p);
}

static int start(const char *op, aemp_cursor *c, struct pending *p)
{
    aemp_addr to;
    aemp_term t;
    uint64_t ms;
    if (strcmp(op, "call") == 0) {
        char peer[AEMP_MAXNODELEN + 1], m[256], f[256];
        if (aemp_get_atom(c, peer, sizeof peer) || aemp_get_atom(c, m, sizeof m) ||
            aemp_get_atom(c, f, sizeof f) || aemp_get_term(c, &t) || aemp_get_uint64(c, &ms))
            return AEMP_EINVAL;
        return aemp_call(node, peer, m, f, &t, (unsigned)ms, answered, p);
    }
    if (node_target(c, &to) || aemp_get_term(c, &t) || aemp_get_uint64(c, &ms)) return AEMP_EINVAL;
    if (strcmp(op, "gen_call") == 0) return aemp_gen_call(node, &to, &t, (unsigned)ms, answered, p);
    if (strcmp(op, "cal") == 0) return aemp_cal(node, &to, &t, (unsigned)ms, answered, p);
    return AEMP_EINVAL;
}

static void ctl_cb(aemp_node *n, aemp_port self, const aemp_term *msg, const aemp_addr *sender,
                   void *arg)
{
    (void)n;
    (void)self;
    (void)sender;
    (void)arg;
    aemp_cursor c = aemp_cursor_of(msg);
    uint32_t arity;
    char op[32];
    aemp_term tag;
    struct pending *p = calloc(1, sizeof *p);
    if (!p || aemp_get_tuple(&c, &arity) || arity < 3 || aemp_get_atom(&c, op, sizeof op) ||
        aemp_get_pid(&c, &p->from) || aemp_get_term(&c, &tag) || aemp_buf_put_term(&p->tag, &tag)) {
        char text[256];
        aemp_term_print(msg, text, sizeof text);
        say("bad request: %s", text);
        if (p) aemp_buf_free(&p->tag);
        free(p);
        return;
    }
    int rc = start(op, &c, p);
    if (rc) {
        char why[64];
        snprintf(why, sizeof why, "{refused, %s}", err_atom(rc));
        tell(&p->from, &tag, why, NULL);
        aemp_buf_free(&p->tag);
        free(p);
    }
}

static void gsrv_cb(aemp_node *n, aemp_port self, const aemp_term *msg, const aemp_addr *sender,
                    void *arg)
{
    (void)sender;
    (void)arg;
    aemp_cursor c = aemp_cursor_of(msg);
    uint32_t arity, rarity;
    char tag[32], what[32];
    aemp_term from, req, x;
    if (aemp_get_tuple(&c, &arity) || arity != 3 || aemp_get_atom(&c, tag, sizeof tag) ||
        strcmp(tag, "$gen_call") || aemp_get_term(&c, &from) || aemp_get_term(&c, &req)) {
        say("gsrv: not a call");
        return;
    }
    aemp_cursor rc = aemp_cursor_of(&req);
    aemp_buf r = AEMP_BUF_INIT;
    int err = 0;
    if (aemp_get_atom(&rc, what, sizeof what) == 0) {
        if (strcmp(what, "hold") == 0) {
            held.len = 0;
            aemp_buf_put_term(&held, &from);
            return;
        }
        aemp_addr me;
        aemp_port_addr(n, self, &me);
        err = aemp_term_format(&r, "~p", &me);
    } else if (aemp_get_tuple(&rc, &rarity) == 0 && rarity == 2 &&
               aemp_get_atom(&rc, what, sizeof what) == 0 && aemp_get_term(&rc, &x) == 0) {
        if (strcmp(what, "release") == 0 && held.len) {
            aemp_term ht = aemp_buf_term(&held);
            err = aemp_gen_reply(n, &ht, &x);
            held.len = 0;
            if (!err) err = aemp_term_format(&r, "{ok, released}");
        } else {
            err = aemp_term_format(&r, "{ok, ~t}", &x);
        }
    } else {
        err = aemp_term_format(&r, "{error, unknown_request}");
    }
    if (!err) {
        aemp_term rt = aemp_buf_term(&r);
        err = aemp_gen_reply(n, &from, &rt);
    }
    if (err) say("gsrv: reply failed: %s", aemp_strerror(err));
    aemp_buf_free(&r);
}

static int fun_kind(aemp_node *n, const aemp_term *args, aemp_buf *result, void *arg)
{
    (void)n;
    (void)arg;
    aemp_cursor c = aemp_cursor_of(args);
    uint32_t len;
    char kind[16];
    aemp_term v;
    if (aemp_get_list(&c, &len) || len != 2 || aemp_get_atom(&c, kind, sizeof kind) ||
        aemp_get_term(&c, &v)) {
        aemp_term_format(result, "badarg");
        return AEMP_RPC_ERROR;
    }
    aemp_buf_put_term(result, &v);
    if (strcmp(kind, "throw") == 0) return AEMP_RPC_THROW;
    if (strcmp(kind, "error") == 0) return AEMP_RPC_ERROR;
    if (strcmp(kind, "exit") == 0) return AEMP_RPC_EXIT;
    return AEMP_RPC_RETURN;
}

static int fun_sleep(aemp_node *n, const aemp_term *args, aemp_buf *result, void *arg)
{
    (void)n;
    (void)arg;
    aemp_cursor c = aemp_cursor_of(args);
    uint32_t len;
    uint64_t ms;
    if (aemp_get_list(&c, &len) || len != 1 || aemp_get_uint64(&c, &ms) || ms > 10000) {
        aemp_term_format(result, "badarg");
        return AEMP_RPC_ERROR;
    }
    usleep((useconds_t)(ms * 1000));
    aemp_term_format(result, "slept");
    return AEMP_RPC_RETURN;
}

static int fun_tell(aemp_node *n, const aemp_term *args, aemp_buf *result, void *arg)
{
    (void)arg;
    aemp_cursor c = aemp_cursor_of(args);
    uint32_t len;
    aemp_addr to;
    aemp_term msg;
    if (aemp_get_list(&c, &len) || len != 2 || aemp_get_pid(&c, &to) || aemp_get_term(&c, &msg)) {
        aemp_term_format(result, "badarg");
        return AEMP_RPC_ERROR;
    }
    aemp_send(n, (aemp_port){0}, &to, &msg);
    aemp_term_format(result, "ok");
    return AEMP_RPC_RETURN;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: callnode NAME COOKIE\n");
        return 2;
    }
    uv_loop_t *loop = uv_default_loop();
    aemp_port gsrv;
    int rc = node_start(loop, argv[1], argv[2]);
    if (!rc) rc = aemp_port_open(node, ctl_cb, NULL, &ctl);
    if (!rc) rc = aemp_register(node, "ctl", ctl);
    if (!rc) rc = aemp_port_open(node, gsrv_cb, NULL, &gsrv);
    if (!rc) rc = aemp_register(node, "gsrv", gsrv);
    if (!rc) rc = aemp_export(node, "aemp_interop", "kind", fun_kind, NULL);
    if (!rc) rc = aemp_export(node, "aemp_interop", "sleep", fun_sleep, NULL);
    if (!rc) rc = aemp_export(node, "aemp_interop", "tell", fun_tell, NULL);
    if (rc) {
        say("FAIL start: %s", aemp_strerror(rc));
        return 1;
    }
    rc = node_run(loop);
    aemp_buf_free(&held);
    return rc;
}
