/*
 * portnode.c - the C side of the AEMP port interop test (test_ports.sh),
 * written the AEMP way: its registered port `ctl` is an aemp_port_new()
 * port with one callback per request tag, and the ports it makes count
 * with tagged callbacks. An Erlang test process sends requests and checks
 * what Erlang sees.
 *
 * Usage: portnode NAME COOKIE
 * Prints "ready NAME" once registered, "nodes +NODE" / "nodes -NODE" for
 * every node up/down (aemp_mon_nodes), "mon_fired TARGET REASON" for every
 * monitor made with mon_name; runs until SIGTERM (exit 0). Requests to
 * {ctl, Node}, each answered with {reply, Op, Result} unless said:
 *   {new, From}              -> Pid: a counter port: {add, N} adds (anything
 *                               but one integer kills it with {die, Text}),
 *                               {get, To} sends To {total, Sum}
 *   {mon, From, Target}      -> ok; From gets {mon_fired, Target, Reason}
 *   {mon_name, Name, Node}   -> (no reply) prints mon_fired when it fires
 *   {mon_kill, From, Target} -> Pid of a new port that dies with Target's
 *                               reason if that is not normal
 *   {mon_send, From, Target} -> ok; From gets {peer_down, Target, Reason}
 *   {kil, From, Pid, Reason} -> ok (aemp_kil)
 *   {after, From, Ms}        -> ok; From gets {tick, Ms} after Ms ms
 *   {state, From, Node}      -> 1 | 0 | enoent (aemp_node_state)
 *   {up, From, Node}         -> {Count, IsMember}: how many nodes are up
 *                               (aemp_up_nodes), and whether Node is one
 *   {alive, From, Pid}       -> true | false
 *   {ping, From}             -> pong
 */
#include "node_main.h"

#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static int reply_atom(aemp_node *n, const char *op, const aemp_addr *to, const char *atom)
{
    return aemp_sendf(n, aemp_self(n), to, "{reply, ~a, ~a}", op, atom);
}

/* ---- the counter ports ---- */

static int on_add(aemp_node *n, aemp_port self, const aemp_msg *m, void *arg)
{
    int64_t *sum = arg, v;
    aemp_cursor c = m->args;
    if (m->nargs != 1 || aemp_get_int64(&c, &v)) return aemp_die(n, "add wants one integer");
    *sum += v;
    return 0;
}

static int on_get(aemp_node *n, aemp_port self, const aemp_msg *m, void *arg)
{
    int64_t *sum = arg;
    aemp_cursor c = m->args;
    aemp_addr to;
    if (m->nargs != 1 || aemp_get_pid(&c, &to)) return aemp_die(n, "get wants a pid");
    return aemp_sendf(n, self, &to, "{total, ~i}", *sum);
}

static void counter_gone(aemp_node *n, aemp_port port, const aemp_term *reason, void *arg)
{
    free(arg);
}

/* ---- requests ---- */

/* The first argument of every request but mon_name: the requester. */
static int from_of(const aemp_msg *m, aemp_cursor *c, aemp_addr *from)
{
    *c = m->args;
    return m->nargs >= 1 ? aemp_get_pid(c, from) : AEMP_ENOMATCH;
}

/* A request {Op, From, Target}: the requester, the target as given (a
 * term) and as an address. */
static int from_target(const aemp_msg *m, aemp_addr *from, aemp_term *tt, aemp_addr *target)
{
    aemp_cursor c;
    int rc = from_of(m, &c, from);
    if (rc || (rc = aemp_get_term(&c, tt))) return rc;
    aemp_cursor tc = aemp_cursor_of(tt);
    return node_target(&tc, target);
}

static int req_new(aemp_node *n, aemp_port self, const aemp_msg *m, void *arg)
{
    aemp_cursor c;
    aemp_addr from, pid;
    aemp_port p;
    int rc = from_of(m, &c, &from);
    if (rc) return rc;
    int64_t *sum = calloc(1, sizeof *sum);
    if (!sum) return AEMP_ENOMEM;
    if ((rc = aemp_port_new(n, &p)) || (rc = aemp_port_gone(n, p, counter_gone, sum))) {
        free(sum);
        return rc;
    }
    if ((rc = aemp_rcv(n, p, "add", on_add, sum)) || (rc = aemp_rcv(n, p, "get", on_get, sum)) ||
        (rc = aemp_port_addr(n, p, &pid)))
        return rc;
    return aemp_sendf(n, self, &from, "{reply, new, ~p}", &pid);
}

struct mon_to {
    aemp_addr to;
    aemp_buf target; /* as the requester gave it */
};

static void mon_fired(aemp_node *n, const aemp_addr *target, const aemp_term *reason, void *arg)
{
    struct mon_to *mt = arg;
    aemp_term t = aemp_buf_term(&mt->target);
    int rc = aemp_sendf(n, (aemp_port){0}, &mt->to, "{mon_fired, ~t, ~t}", &t, reason);
    if (rc) say("mon_fired lost: %s", aemp_strerror(rc));
    aemp_buf_free(&mt->target);
    free(mt);
}

static int req_mon(aemp_node *n, aemp_port self, const aemp_msg *m, void *arg)
{
    aemp_addr from, target;
    aemp_term tt;
    int rc = from_target(m, &from, &tt, &target);
    if (rc) return rc;
    struct mon_to *mt = calloc(1, sizeof *mt);
    if (!mt) return AEMP_ENOMEM;
    mt->to = from;
    if ((rc = aemp_buf_put_term(&mt->target, &tt)) ||
        (rc = aemp_mon(n, &target, mon_fired, mt, NULL))) {
        aemp_buf_free(&mt->target);
        free(mt);
        return rc;
    }
    return reply_atom(n, "mon", &from, "ok");
}

static void mon_said(aemp_node *n, const aemp_addr *target, const aemp_term *reason, void *arg)
{
    char t[256], r[256];
    aemp_addr_format(target, t, sizeof t);
    aemp_term_print(reason, r, sizeof r);
    say("mon_fired %s %s", t, r);
}

static int req_mon_name(aemp_node *n, aemp_port self, const aemp_msg *m, void *arg)
{
    aemp_cursor c = m->args;
    char name[256], nd[256];
    aemp_addr target;
    int rc;
    if (m->nargs != 2 || aemp_get_atom(&c, name, sizeof name) || aemp_get_atom(&c, nd, sizeof nd))
        return AEMP_ENOMATCH;
    if ((rc = aemp_addr_name(&target, nd, name))) return rc;
    return aemp_mon(n, &target, mon_said, NULL, NULL);
}

static int req_mon_kill(aemp_node *n, aemp_port self, const aemp_msg *m, void *arg)
{
    aemp_addr from, target, pid;
    aemp_term tt;
    aemp_port p;
    int rc = from_target(m, &from, &tt, &target);
    if (rc) return rc;
    if ((rc = aemp_port_new(n, &p)) || (rc = aemp_mon_kill(n, &target, p, NULL)) ||
        (rc = aemp_port_addr(n, p, &pid)))
        return rc;
    return aemp_sendf(n, self, &from, "{reply, mon_kill, ~p}", &pid);
}

static int req_mon_send(aemp_node *n, aemp_port self, const aemp_msg *m, void *arg)
{
    aemp_addr from, target;
    aemp_term tt;
    int rc = from_target(m, &from, &tt, &target);
    if (rc) return rc;
    aemp_buf msg = AEMP_BUF_INIT;
    rc = aemp_term_format(&msg, "{peer_down, ~t}", &tt);
    if (!rc) {
        aemp_term mt = aemp_buf_term(&msg);
        rc = aemp_mon_send(n, &target, &from, &mt, NULL);
    }
    aemp_buf_free(&msg);
    return rc ? rc : reply_atom(n, "mon_send", &from, "ok");
}

static int req_kil(aemp_node *n, aemp_port self, const aemp_msg *m, void *arg)
{
    aemp_cursor c;
    aemp_addr from, pid;
    aemp_term reason;
    int rc = from_of(m, &c, &from);
    if (rc || (rc = aemp_get_pid(&c, &pid)) || (rc = aemp_get_term(&c, &reason))) return rc;
    if ((rc = aemp_kil(n, &pid, &reason))) return rc;
    return reply_atom(n, "kil", &from, "ok");
}

static int req_after(aemp_node *n, aemp_port self, const aemp_msg *m, void *arg)
{
    aemp_cursor c;
    aemp_addr from;
    int64_t ms;
    int rc = from_of(m, &c, &from);
    if (rc || (rc = aemp_get_int64(&c, &ms)) || ms < 0) return rc ? rc : AEMP_EINVAL;
    aemp_buf msg = AEMP_BUF_INIT;
    rc = aemp_term_format(&msg, "{tick, ~i}", ms);
    if (!rc) {
        aemp_term t = aemp_buf_term(&msg);
        rc = aemp_after_send(n, (uint64_t)ms, &from, &t, NULL);
    }
    aemp_buf_free(&msg);
    return rc ? rc : reply_atom(n, "after", &from, "ok");
}

static int req_state(aemp_node *n, aemp_port self, const aemp_msg *m, void *arg)
{
    aemp_cursor c;
    aemp_addr from;
    char peer[256];
    int rc = from_of(m, &c, &from);
    if (rc || (rc = aemp_get_atom(&c, peer, sizeof peer))) return rc;
    int st = aemp_node_state(n, peer);
    if (st == AEMP_ENOENT) return reply_atom(n, "state", &from, "enoent");
    return aemp_sendf(n, self, &from, "{reply, state, ~i}", (int64_t)st);
}

static int req_up(aemp_node *n, aemp_port self, const aemp_msg *m, void *arg)
{
    aemp_cursor c;
    aemp_addr from;
    char peer[256];
    int rc = from_of(m, &c, &from);
    if (rc || (rc = aemp_get_atom(&c, peer, sizeof peer))) return rc;
    const char *names[64];
    size_t count = aemp_up_nodes(n, names, 64);
    bool member = false;
    for (size_t i = 0; i < count && i < 64; i++)
        member = member || strcmp(names[i], peer) == 0;
    return aemp_sendf(n, self, &from, "{reply, up, {~u, ~a}}", (uint64_t)count,
                      member ? "true" : "false");
}

static int req_alive(aemp_node *n, aemp_port self, const aemp_msg *m, void *arg)
{
    aemp_cursor c;
    aemp_addr from, pid;
    aemp_port p;
    int rc = from_of(m, &c, &from);
    if (rc || (rc = aemp_get_pid(&c, &pid))) return rc;
    return reply_atom(n, "alive", &from, aemp_port_of_addr(n, &pid, &p) == 0 ? "true" : "false");
}

static int req_ping(aemp_node *n, aemp_port self, const aemp_msg *m, void *arg)
{
    aemp_cursor c;
    aemp_addr from;
    int rc = from_of(m, &c, &from);
    return rc ? rc : reply_atom(n, "ping", &from, "pong");
}

/* Anything else is logged; the port stays (a default callback). */
static int req_other(aemp_node *n, aemp_port self, const aemp_msg *m, void *arg)
{
    char text[256];
    aemp_term_print(&m->term, text, sizeof text);
    say("bad request: %s", text);
    return 0;
}

static void on_nodes(aemp_node *n, const char *peer, int up, const char *reason, void *arg)
{
    say("nodes %c%s", up ? '+' : '-', peer);
}

int main(int argc, char **argv)
{
    static const struct {
        const char *tag;
        aemp_rcv_cb cb;
    } reqs[] = {
        {"new", req_new},           {"mon", req_mon},           {"mon_name", req_mon_name},
        {"mon_kill", req_mon_kill}, {"mon_send", req_mon_send}, {"kil", req_kil},
        {"after", req_after},       {"state", req_state},       {"up", req_up},
        {"alive", req_alive},       {"ping", req_ping},
    };
    if (argc != 3) {
        fprintf(stderr, "usage: portnode NAME COOKIE\n");
        return 2;
    }
    uv_loop_t *loop = uv_default_loop();
    aemp_port ctl;
    int rc = node_start(loop, argv[1], argv[2]);
    if (!rc) rc = aemp_mon_nodes(node, on_nodes, NULL, NULL);
    if (!rc) rc = aemp_port_new(node, &ctl);
    for (size_t i = 0; !rc && i < sizeof reqs / sizeof reqs[0]; i++)
        rc = aemp_rcv(node, ctl, reqs[i].tag, reqs[i].cb, NULL);
    if (!rc) rc = aemp_rcv(node, ctl, NULL, req_other, NULL);
    if (!rc) rc = aemp_register(node, "ctl", ctl);
    if (rc) {
        say("FAIL start: %s", aemp_strerror(rc));
        return 1;
    }
    return node_run(loop);
}
