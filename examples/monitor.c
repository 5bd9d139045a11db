/*
 * monitor.c - monitors, links and exit signals from C.
 *
 * First, on the node alone (no network): a port `watcher` monitors other
 * ports and prints the 'DOWN' messages it gets while they are killed, linked
 * together, closed and sent exit signals. Then, given an Erlang node and the
 * name of a process registered there, it monitors {NAME, NODE} and prints
 * why that process went away.
 *
 * Usage: example_monitor [NODE NAME [COOKIE]]   (COOKIE: else ~/.erlang.cookie)
 *   erl -sname erl -setcookie secret
 *   1> register(job, spawn(fun() -> receive stop -> exit(finished) end end)).
 *   $ ./build/example_monitor erl@vm job secret
 *   2> job ! stop.
 */
#include "aemp.h"

#include <stdio.h>
#include <string.h>

#define NPORTS 5

struct demo {
    aemp_node *node;
    aemp_port watcher;
    const char *label[NPORTS]; /* what the watcher calls each port */
    aemp_addr pid[NPORTS];
    aemp_addr remote_ref; /* the monitor of {NAME, NODE}, once made */
};

/* The watcher: every message it gets is {'DOWN', Ref, process, Target, Reason}. */
static void on_watcher(aemp_node *node, aemp_port self, const aemp_term *msg, const aemp_addr *from,
                       void *arg)
{
    struct demo *d = arg;
    aemp_cursor c = aemp_cursor_of(msg);
    uint32_t arity;
    char tag[8], type[8], who[64], why[128];
    aemp_addr ref, pid;
    aemp_term target, reason;
    (void)self;
    (void)from;
    if (aemp_get_tuple(&c, &arity) || arity != 5 || aemp_get_atom(&c, tag, sizeof tag) ||
        strcmp(tag, "DOWN") != 0 || aemp_get_ref(&c, &ref) ||
        aemp_get_atom(&c, type, sizeof type) || aemp_get_term(&c, &target) ||
        aemp_get_term(&c, &reason))
        return;
    /* Target is the pid monitored, or {Name, Node} for a monitor by name. */
    aemp_cursor t = aemp_cursor_of(&target);
    aemp_term_print(&target, who, sizeof who);
    if (aemp_get_pid(&t, &pid) == 0)
        for (int i = 0; i < NPORTS; i++)
            if (aemp_addr_equal(&pid, &d->pid[i])) snprintf(who, sizeof who, "%s", d->label[i]);
    aemp_term_print(&reason, why, sizeof why);
    printf("monitor: %s is down: %s\n", who, why);
    fflush(stdout);
    if (aemp_addr_equal(&ref, &d->remote_ref)) aemp_node_close(node, NULL, NULL); /* done */
}

/* The other ports do nothing with their messages. */
static void on_idle(aemp_node *node, aemp_port self, const aemp_term *msg, const aemp_addr *from,
                    void *arg)
{
    (void)node;
    (void)self;
    (void)msg;
    (void)from;
    (void)arg;
}

static void on_fail(aemp_node *node, const char *peer, int err, const char *reason, size_t dropped,
                    void *arg)
{
    (void)err;
    (void)dropped;
    (void)arg;
    printf("monitor: cannot reach %s: %s\n", peer, reason);
    aemp_node_close(node, NULL, NULL);
}

static int local_demo(struct demo *d)
{
    aemp_node *n = d->node;
    static const char *labels[NPORTS] = {"worker", "a", "b", "c", "d"};
    aemp_port port[NPORTS];
    aemp_addr ref;
    aemp_buf reason = AEMP_BUF_INIT;
    int rc = 0;
    for (int i = 0; i < NPORTS && !rc; i++) {
        d->label[i] = labels[i];
        if (!(rc = aemp_port_open(n, on_idle, NULL, &port[i])))
            rc = aemp_port_addr(n, port[i], &d->pid[i]);
    }
    /* Monitor every port: each death below comes back as one 'DOWN'. */
    for (int i = 0; i < NPORTS && !rc; i++)
        rc = aemp_monitor(n, d->watcher, &d->pid[i], &ref);
    if (rc) return rc;

    /* 1. A port killed with a reason: {'DOWN', Ref, process, Pid, Reason}. */
    aemp_term_format(&reason, "{shutdown, done}");
    aemp_term r = aemp_buf_term(&reason);
    aemp_port_kill(n, port[0], &r);

    /* 2. a and b are linked: b dies with crash, a dies with it. */
    aemp_link(n, port[1], &d->pid[2]);
    reason.len = 0;
    aemp_term_format(&reason, "crash");
    r = aemp_buf_term(&reason);
    aemp_port_kill(n, port[2], &r);

    /* 3. c is linked to d: d ends normally, which does not travel. */
    aemp_link(n, port[3], &d->pid[4]);
    aemp_port_close(n, port[4]);
    aemp_port alive;
    printf("monitor: c is %s\n", aemp_port_of_addr(n, &d->pid[3], &alive) == 0 ? "alive" : "gone");

    /* 4. exit/2 with kill: c dies with killed. */
    reason.len = 0;
    aemp_term_format(&reason, "kill");
    r = aemp_buf_term(&reason);
    aemp_exit(n, d->watcher, &d->pid[3], &r);
    aemp_buf_free(&reason);

    /* 5. A monitor of a name nobody holds fires at once with noproc. */
    aemp_addr nobody;
    if ((rc = aemp_addr_name(&nobody, aemp_node_name(n), "nobody"))) return rc;
    return aemp_monitor(n, d->watcher, &nobody, &ref);
}

int main(int argc, char **argv)
{
    if (argc != 1 && argc != 3 && argc != 4) {
        fprintf(stderr, "usage: example_monitor [NODE NAME [COOKIE]]\n");
        return 2;
    }
    struct demo d;
    memset(&d, 0, sizeof d);
    aemp_node_config cfg = {0};
    cfg.name = "monitor";
    /* NULL: ~/.erlang.cookie; the demo alone talks to no one and needs none */
    cfg.cookie = argc == 4 ? argv[3] : argc == 3 ? NULL : "unused";
    cfg.client_only = 1; /* it only makes outgoing connections */
    cfg.fail_cb = on_fail;
    uv_loop_t *loop = uv_default_loop();
    int rc = aemp_node_create(loop, &cfg, &d.node);
    if (!rc) rc = aemp_port_open(d.node, on_watcher, &d, &d.watcher);
    if (!rc) rc = local_demo(&d);
    if (!rc && argc >= 3) {
        /* A process on another node, by name: the 'DOWN' names it {NAME, NODE}. */
        aemp_addr target;
        if (!(rc = aemp_addr_name(&target, argv[1], argv[2])))
            rc = aemp_monitor(d.node, d.watcher, &target, &d.remote_ref);
        if (!rc) printf("monitor: watching {%s,%s}\n", argv[2], argv[1]);
        fflush(stdout);
    } else if (!rc) {
        aemp_node_close(d.node, NULL, NULL);
    }
    if (rc) {
        fprintf(stderr, "monitor: %s\n", aemp_strerror(rc));
        if (d.node) aemp_node_close(d.node, NULL, NULL);
    }
    uv_run(loop, UV_RUN_DEFAULT);
    return uv_loop_close(loop) == 0 && rc == 0 ? 0 : 1;
}
