/*
 * node_main.h - the frame of the interop test programs that run one node
 * until SIGTERM (procnode.c, seqsend.c, callnode.c, portnode.c, spawnnode.c):
 * node_start() creates the node
 * (name, cookie); once it is registered with EPMD it prints "ready NAME"
 * (or "FAIL registration: ..." and exits 1) and calls node_ready_hook;
 * SIGTERM calls node_stop_hook, then closes the node, which ends
 * node_run().
 */
#ifndef AEMP_INTEROP_NODE_MAIN_H
#define AEMP_INTEROP_NODE_MAIN_H

#include "aemp.h"
#include "say.h"

#include <signal.h>
#include <stdlib.h>

static aemp_node *node;
static uv_signal_t node_sigterm;
static void (*node_ready_hook)(aemp_node *n); /* may stay NULL */
static void (*node_stop_hook)(void);          /* may stay NULL */
/* may stay NULL: sets more of the configuration before the node is made */
static void (*node_config_hook)(aemp_node_config *cfg);

static void node_on_ready(aemp_node *n, int status, void *arg)
{
    (void)arg;
    if (status) {
        say("FAIL registration: %s", aemp_strerror(status));
        exit(1);
    }
    say("ready %s", aemp_node_name(n));
    if (node_ready_hook) node_ready_hook(n);
}

static void node_on_closed(void *arg)
{
    (void)arg;
    uv_close((uv_handle_t *)&node_sigterm, NULL);
}

static void node_on_term(uv_signal_t *s, int signum)
{
    (void)signum;
    uv_signal_stop(s);
    if (node_stop_hook) node_stop_hook();
    aemp_node_close(node, node_on_closed, NULL);
}

/* Read a pid, or {Name, Node} as a name address, from a request (inline:
 * not every program reads one). */
static inline int node_target(aemp_cursor *c, aemp_addr *a)
{
    if (aemp_get_pid(c, a) == 0) return 0;
    uint32_t arity;
    char name[256], nd[256];
    if (aemp_get_tuple(c, &arity) || arity != 2 || aemp_get_atom(c, name, sizeof name) ||
        aemp_get_atom(c, nd, sizeof nd))
        return AEMP_ENOMATCH;
    return aemp_addr_name(a, nd, name);
}

/* Create the node: 0, or an error (the node is not there). */
static int node_start(uv_loop_t *loop, const char *name, const char *cookie)
{
    aemp_node_config cfg = {0};
    cfg.name = name;
    cfg.cookie = cookie;
    cfg.ready_cb = node_on_ready;
    if (node_config_hook) node_config_hook(&cfg);
    return aemp_node_create(loop, &cfg, &node);
}

/* Run until SIGTERM has closed the node: 0 when the loop closes clean. */
static int node_run(uv_loop_t *loop)
{
    uv_signal_init(loop, &node_sigterm);
    uv_signal_start(&node_sigterm, node_on_term, SIGTERM);
    uv_run(loop, UV_RUN_DEFAULT);
    return uv_loop_close(loop) == 0 ? 0 : 1;
}

#endif
