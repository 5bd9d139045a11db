/*
 * spawnnode.c - the C side of the spawn interop test (test_spawn.sh,
 * driven by aemp_interop:run(spawn, ...)): init functions for Erlang's
 * spawn family, and a port `ctl` through which the test makes this node
 * spawn Erlang functions (aemp_spawn).
 *
 * Usage: spawnnode NAME COOKIE
 * Prints "ready NAME" once registered with EPMD, then runs until SIGTERM
 * (exit 0). Exported init functions:
 *   spawnnode:echo(Args...)  a port with the tags
 *                              {echo, From, Msg} -> From ! {echo, Self, Msg}
 *                              {crash, Reason}   -> kil(Self, Reason)
 *                            that, when Args starts with a pid P, first
 *                            sends P {started, Self, $SELF, Args}
 *   spawnnode:fail(Args...)  an init that fails: {die, <<"init refused">>}
 * Every port they make prints "gone PORT REASON" when it is gone. `ctl`:
 *   {spawn, From, Tag, Node, M, F, A, Flags} (Flags a list of link and
 *   monitor): a new forwarder port (every message M it gets goes to From as
 *   {got, Fwd, M}) spawns M:F(A) on Node; From gets {reply, Tag,
 *   {ok, Fwd, Pid, Ref | none}} or {reply, Tag, {error, Name}}.
 */
#include "node_main.h"

#include "aemp.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

static void on_gone(aemp_node *n, aemp_port port, const aemp_term *reason, void *arg)
{
    (void)n;
    (void)arg;

    char text[256];
    aemp_term_print(reason, text, sizeof text);
    say("gone %llu %s", (unsigned long long)port.id, text);
}

static int on_echo(aemp_node *n, aemp_port self, const aemp_msg *m, void *arg)
{
    (void)arg;

    aemp_cursor c = m->args;
    aemp_addr from, me;
    aemp_term msg;
    if (m->nargs != 2 || aemp_get_pid(&c, &from) || aemp_get_term(&c, &msg))
        return aemp_die(n, "echo wants From and Msg");
    int rc = aemp_port_addr(n, self, &me);
    return rc ? rc : aemp_sendf(n, self, &from, "{echo, ~p, ~t}", &me, &msg);
}

static int on_crash(aemp_node *n, aemp_port self, const aemp_msg *m, void *arg)
{
    (void)arg;

    aemp_cursor c = m->args;
    aemp_term reason;
    aemp_addr me;
    if (m->nargs != 1 || aemp_get_term(&c, &reason)) return aemp_die(n, "crash wants a reason");
    int rc = aemp_port_addr(n, self, &me);
    return rc ? rc : aemp_kil(n, &me, &reason);
}

static int init_echo(aemp_node *n, aemp_port self, const aemp_term *args, void *arg)
{
    (void)arg;

    int rc = aemp_port_gone(n, self, on_gone, NULL);
    if (!rc) rc = aemp_rcv(n, self, "echo", on_echo, NULL);
    if (!rc) rc = aemp_rcv(n, self, "crash", on_crash, NULL);
    if (rc) return rc;
    aemp_cursor c = aemp_cursor_of(args);
    uint32_t len;
    aemp_addr to, me, cur;
    if (aemp_get_list(&c, &len) == 0 && len > 0 && aemp_get_pid(&c, &to) == 0) {
        if ((rc = aemp_port_addr(n, self, &me)) || (rc = aemp_port_addr(n, aemp_self(n), &cur)))
            return rc;
        rc = aemp_sendf(n, self, &to, "{started, ~p, ~p, ~t}", &me, &cur, args);
    }
    return rc;
}

static int init_fail(aemp_node *n, aemp_port self, const aemp_term *args, void *arg)
{
    (void)args;
    (void)arg;

    int rc = aemp_port_gone(n, self, on_gone, NULL);
    return rc ? rc : aemp_die(n, "init refused");
}

/* The forwarder: everything to its requester, as {got, Self, Msg}. */
static int on_forward(aemp_node *n, aemp_port self, const aemp_msg *m, void *arg)
{
    const aemp_addr *to = arg;
    aemp_addr me;
    int rc = aemp_port_addr(n, self, &me);
    return rc ? rc : aemp_sendf(n, self, to, "{got, ~p, ~t}", &me, &m->term);
}

static void free_arg(aemp_node *n, aemp_port port, const aemp_term *reason, void *arg)
{
    (void)n;
    (void)port;
    (void)reason;

    free(arg);
}

/* A spawn asked for by the test: where the answer goes. */
struct ask {
    aemp_addr from, fwd;
    aemp_buf tag;
};

static void on_spawned(aemp_node *n, int err, const aemp_addr *pid, const aemp_addr *ref, void *arg)
{
    struct ask *a = arg;
    aemp_term tag = aemp_buf_term(&a->tag);
    int rc;
    if (err)
        rc = aemp_sendf(n, (aemp_port){0}, &a->from, "{reply, ~t, {error, ~s}}", &tag,
                        aemp_strerror(err));
    else if (ref)
        rc = aemp_sendf(n, (aemp_port){0}, &a->from, "{reply, ~t, {ok, ~p, ~p, ~p}}", &tag, &a->fwd,
                        pid, ref);
    else
        rc = aemp_sendf(n, (aemp_port){0}, &a->from, "{reply, ~t, {ok, ~p, ~p, none}}", &tag,
                        &a->fwd, pid);
    if (rc) say("spawn reply lost: %s", aemp_strerror(rc));
    aemp_buf_free(&a->tag);
    free(a);
}

/* {spawn, From, Tag, Node, M, F, A, Flags} */
static int on_spawn(aemp_node *n, aemp_port self, const aemp_msg *m, void *arg)
{
    (void)arg;

    aemp_cursor c = m->args;
    char peer[AEMP_MAXNODELEN + 1], mod[256], fun[256], flag[16];
    aemp_term tag, args;
    aemp_addr from;
    uint32_t nflags;
    unsigned flags = 0;
    if (m->nargs != 7 || aemp_get_pid(&c, &from) || aemp_get_term(&c, &tag) ||
        aemp_get_atom(&c, peer, sizeof peer) || aemp_get_atom(&c, mod, sizeof mod) ||
        aemp_get_atom(&c, fun, sizeof fun) || aemp_get_term(&c, &args) ||
        aemp_get_list(&c, &nflags))
        return aemp_die(n, "bad spawn request");
    for (uint32_t i = 0; i < nflags; i++) {
        if (aemp_get_atom(&c, flag, sizeof flag)) return aemp_die(n, "bad flag");
        flags |= strcmp(flag, "link") == 0 ? AEMP_SPAWN_LINK : AEMP_SPAWN_MONITOR;
    }
    struct ask *a = calloc(1, sizeof *a);
    aemp_addr *fwd_to = malloc(sizeof *fwd_to);
    aemp_port fwd;
    int rc = a && fwd_to ? aemp_port_new(n, &fwd) : AEMP_ENOMEM;
    if (rc) {
        free(a);
        free(fwd_to);
        return rc;
    }
    *fwd_to = from;
    a->from = from;
    if ((rc = aemp_rcv(n, fwd, NULL, on_forward, fwd_to)) ||
        (rc = aemp_port_gone(n, fwd, free_arg, fwd_to)) || (rc = aemp_port_addr(n, fwd, &a->fwd)) ||
        (rc = aemp_buf_put_term(&a->tag, &tag)) ||
        (rc = aemp_spawn(n, fwd, peer, mod, fun, &args, flags, on_spawned, a))) {
        aemp_term t = aemp_buf_term(&a->tag);
        aemp_sendf(n, self, &from, "{reply, ~t, {error, ~s}}", &t, aemp_strerror(rc));
        aemp_buf_free(&a->tag);
        free(a);
        aemp_port_close(n, fwd);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: spawnnode NAME COOKIE\n");
        return 2;
    }
    uv_loop_t *loop = uv_default_loop();
    aemp_port ctl;
    int rc = node_start(loop, argv[1], argv[2]);
    if (!rc) rc = aemp_export_init(node, "spawnnode", "echo", init_echo, NULL);
    if (!rc) rc = aemp_export_init(node, "spawnnode", "fail", init_fail, NULL);
    if (!rc) rc = aemp_port_new(node, &ctl);
    if (!rc) rc = aemp_rcv(node, ctl, "spawn", on_spawn, NULL);
    if (!rc) rc = aemp_register(node, "ctl", ctl);
    if (rc) {
        say("FAIL start: %s", aemp_strerror(rc));
        return 1;
    }
    return node_run(loop);
}
