/*
 * procnode.c - the C side of the process-layer interop test (test_proc.sh):
 * a node whose port `ctl` carries out what an Erlang test process asks, so
 * that the test can drive links, monitors, kills and exit signals in both
 * directions from Erlang and see every result.
 *
 * Usage: procnode NAME COOKIE [MAX_WATCHES_PER_PEER]
 * Prints "ready NAME" once registered with EPMD, then runs until SIGTERM
 * (exit 0). Requests, each answered with {reply, Tag, Result}:
 *   {open, From, Tag}                  -> Pid of a new port that forwards
 *                                         every message M it gets to From as
 *                                         {got, Pid, M}
 *   {open_at, From, Tag, Id}           -> the same, its id Id + 1 (past the
 *                                         old 28-bit and the 32-bit limits)
 *   {monitor, From, Tag, Port, Target} -> Ref (Target a pid or {Name, Node})
 *   {demonitor, From, Tag, Ref}        -> ok | enoent
 *   {link, From, Tag, Port, Pid}       -> ok | error atom
 *   {unlink, From, Tag, Port, Pid}     -> ok
 *   {link_unlink, From, Tag, Port, Pid} -> ok: aemp_link then aemp_unlink at
 *                                         once (for a node not connected
 *                                         yet: both wait for the handshake)
 *   {kill, From, Tag, Port, Reason}    -> ok (aemp_port_kill)
 *   {exit, From, Tag, Port, Pid, Reason} -> ok (aemp_exit)
 *   {alive, From, Tag, Port}           -> true | false
 *   {send, From, Tag, Port, To, Msg}   -> ok (aemp_send; To a pid or an
 *                                         alias, which Erlang gives as a
 *                                         reference)
 */
#include "proc/proc.h"

/* after the library's headers: its global `node` would shadow theirs */
#include "node_main.h"

#include <stdlib.h>
#include <string.h>

struct fwd {
    aemp_addr to;
    struct fwd *next; /* every forwarder, freed at the end */
};

static struct fwd *fwds;

static void forward_cb(aemp_node *n, aemp_port self, const aemp_term *msg, const aemp_addr *from,
                       void *arg)
{
    (void)from;
    struct fwd *f = arg;
    aemp_addr me;
    if (aemp_port_addr(n, self, &me)) return;
    int rc = aemp_sendf(n, self, &f->to, "{got, ~p, ~t}", &me, msg);
    if (rc) say("forward failed: %s", aemp_strerror(rc));
}

static int open_forwarder(const aemp_addr *to, aemp_addr *pid)
{
    /* the forwarder's state lives until the node is closed */
    struct fwd *f = malloc(sizeof *f);
    aemp_port p;
    if (!f) return AEMP_ENOMEM;
    f->to = *to;
    f->next = fwds;
    fwds = f;
    int rc = aemp_port_open(node, forward_cb, f, &p);
    if (!rc) rc = aemp_port_addr(node, p, pid);
    return rc;
}

/* A local port from its pid. */
static int port_of(aemp_cursor *c, aemp_port *p)
{
    aemp_addr a;
    int rc = aemp_get_pid(c, &a);
    return rc ? rc : aemp_port_of_addr(node, &a, p);
}

static const char *err_atom(int rc)
{
    switch (rc) {
    case 0:
        return "ok";
    case AEMP_ENOENT:
        return "enoent";
    case AEMP_EINVAL:
        return "einval";
    default:
        return "error";
    }
}

static void ctl_cb(aemp_node *n, aemp_port self, const aemp_term *msg, const aemp_addr *sender,
                   void *arg)
{
    (void)sender;
    (void)arg;
    aemp_cursor c = aemp_cursor_of(msg);
    uint32_t arity;
    char op[32];
    aemp_addr from;
    aemp_term tag;
    if (aemp_get_tuple(&c, &arity) || arity < 3 || aemp_get_atom(&c, op, sizeof op) ||
        aemp_get_pid(&c, &from) || aemp_get_term(&c, &tag)) {
        char text[256];
        aemp_term_print(msg, text, sizeof text);
        say("bad request: %s", text);
        return;
    }
    aemp_buf r = AEMP_BUF_INIT;
    aemp_port p;
    aemp_addr a, b;
    aemp_term t;
    int rc = AEMP_EINVAL;
    if (strcmp(op, "open") == 0) {
        if ((rc = open_forwarder(&from, &a)) == 0) rc = aemp_term_format(&r, "~p", &a);
    } else if (strcmp(op, "open_at") == 0) {
        uint64_t id;
        if (aemp_get_uint64(&c, &id) == 0) {
            aemp__proc_set_next_id(n, id);
            if ((rc = open_forwarder(&from, &a)) == 0) rc = aemp_term_format(&r, "~p", &a);
        }
    } else if (strcmp(op, "monitor") == 0) {
        if ((rc = port_of(&c, &p)) == 0 && (rc = node_target(&c, &b)) == 0 &&
            (rc = aemp_monitor(n, p, &b, &a)) == 0)
            rc = aemp_term_format(&r, "~p", &a);
    } else if (strcmp(op, "demonitor") == 0) {
        if ((rc = aemp_get_ref(&c, &a)) == 0) {
            rc = aemp_term_format(&r, "~a", err_atom(aemp_demonitor(n, &a)));
        }
    } else if (strcmp(op, "link") == 0 || strcmp(op, "unlink") == 0) {
        if ((rc = port_of(&c, &p)) == 0 && (rc = aemp_get_pid(&c, &a)) == 0) {
            int lr = op[0] == 'l' ? aemp_link(n, p, &a) : aemp_unlink(n, p, &a);
            rc = aemp_term_format(&r, "~a", err_atom(lr));
        }
    } else if (strcmp(op, "link_unlink") == 0) {
        if ((rc = port_of(&c, &p)) == 0 && (rc = aemp_get_pid(&c, &a)) == 0) {
            int lr = aemp_link(n, p, &a);
            if (!lr) lr = aemp_unlink(n, p, &a);
            rc = aemp_term_format(&r, "~a", err_atom(lr));
        }
    } else if (strcmp(op, "kill") == 0) {
        if ((rc = port_of(&c, &p)) == 0 && (rc = aemp_get_term(&c, &t)) == 0) {
            rc = aemp_term_format(&r, "~a", err_atom(aemp_port_kill(n, p, &t)));
        }
    } else if (strcmp(op, "exit") == 0) {
        if ((rc = port_of(&c, &p)) == 0 && (rc = aemp_get_pid(&c, &a)) == 0 &&
            (rc = aemp_get_term(&c, &t)) == 0)
            rc = aemp_term_format(&r, "~a", err_atom(aemp_exit(n, p, &a, &t)));
    } else if (strcmp(op, "send") == 0) {
        if ((rc = port_of(&c, &p)) == 0 &&
            (aemp_get_pid(&c, &a) == 0 || aemp_get_ref(&c, &a) == 0) &&
            (rc = aemp_get_term(&c, &t)) == 0)
            rc = aemp_term_format(&r, "~a", err_atom(aemp_send(n, p, &a, &t)));
    } else if (strcmp(op, "alive") == 0) {
        aemp_addr pid;
        if ((rc = aemp_get_pid(&c, &pid)) == 0)
            rc = aemp_term_format(&r, "~a", aemp_port_of_addr(n, &pid, &p) == 0 ? "true" : "false");
    }
    if (rc) {
        r.len = 0;
        aemp_term_format(&r, "{error, ~a}", err_atom(rc));
    }
    aemp_term result = aemp_buf_term(&r);
    rc = aemp_sendf(n, self, &from, "{reply, ~t, ~t}", &tag, &result);
    if (rc) say("reply failed: %s", aemp_strerror(rc));
    aemp_buf_free(&r);
}

static unsigned max_watches; /* 0: the default */

static void set_max_watches(aemp_node_config *cfg)
{
    cfg->max_watches_per_peer = max_watches;
}

int main(int argc, char **argv)
{
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: procnode NAME COOKIE [MAX_WATCHES_PER_PEER]\n");
        return 2;
    }
    if (argc == 4) {
        max_watches = (unsigned)strtoul(argv[3], NULL, 10);
        node_config_hook = set_max_watches;
    }
    uv_loop_t *loop = uv_default_loop();
    aemp_port ctl;
    int rc = node_start(loop, argv[1], argv[2]);
    if (!rc) rc = aemp_port_open(node, ctl_cb, NULL, &ctl);
    if (!rc) rc = aemp_register(node, "ctl", ctl);
    if (rc) {
        say("FAIL start: %s", aemp_strerror(rc));
        return 1;
    }
    rc = node_run(loop);
    while (fwds) {
        struct fwd *next = fwds->next;
        free(fwds);
        fwds = next;
    }
    return rc;
}
