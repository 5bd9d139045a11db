/*
 * node_api.c - a node's whole life: aemp_node_create() sets up every layer
 * from the bottom up (node with its connections, process layer, services)
 * before the node listens; aemp_node_close() takes them down from the top.
 */
#include "../svc/svc.h"

#include <stdlib.h>

/* The public node up/down callback is one subscriber among others. */
static void on_nodes(aemp_node *n, const aemp__event_info *ev, void *arg)
{
    if (n->closing || !n->nodes_cb) return;
    if (ev->kind == AEMP__EV_NODE_UP) n->nodes_cb(n, ev->peer, 1, NULL, n->nodes_arg);
    if (ev->kind == AEMP__EV_NODE_DOWN) n->nodes_cb(n, ev->peer, 0, ev->reason, n->nodes_arg);
}

static void release(aemp_node *n)
{
    aemp__svc_free(n);
    aemp__proc_free(n);
}

int aemp_node_create(uv_loop_t *loop, const aemp_node_config *cfg, aemp_node **out)
{
    if (!loop || !cfg || !cfg->name || !out) return AEMP_EINVAL;
    aemp_node *n = calloc(1, sizeof *n);
    if (!n) return AEMP_ENOMEM;
    int rc = aemp__node_init(n, loop, cfg);
    if (rc) {
        free(n);
        return rc;
    }
    n->release = release;
    n->nodes_cb = cfg->nodes_cb;
    n->nodes_arg = cfg->nodes_arg;
    /* Subscribers are told in subscription order: the application hears of
     * a lost node after the process layer has broken its links. */
    if ((rc = aemp__proc_init(n, cfg)) || (rc = aemp__svc_init(n, cfg)) ||
        (rc = aemp__seeds_start(n, cfg)) || (rc = aemp__node_subscribe(n, on_nodes, NULL, NULL)) ||
        (rc = aemp__node_start(n, cfg->listen_port)))
        goto fail;
    *out = n;
    return 0;
fail:
    /* Handles are initialised: close them through the normal path, without
     * reporting anything to the caller's callbacks. */
    n->ready_cb = NULL;
    n->fail_cb = NULL;
    n->nodes_cb = NULL;
    aemp_node_close(n, NULL, NULL);
    return rc;
}

void aemp_node_close(aemp_node *n, void (*closed_cb)(void *arg), void *arg)
{
    if (!n || n->closing) return;
    /* from here no callback runs: ports die (their exit signals still go
     * out), connections flush, handles close */
    n->closing = true;
    aemp__svc_close(n);
    if (n->proc) aemp__proc_close(n);
    aemp__node_close(n, closed_cb, arg);
}
