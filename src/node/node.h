/*
 * node.h - the node layer: the node's identity and EPMD registration, its
 * table of connections by peer, routing of sends to remote nodes, the
 * dispatch of received control messages to the handlers the layers above
 * installed, and events with any number of subscribers (node up, node down
 * with a reason, port exit with a reason).
 *
 * It calls only downwards (dist, epmd, term, util). The process layer and
 * the services above it plug in through aemp__node_on_ctl() and
 * aemp__node_subscribe(); their own state hangs off the node as opaque
 * pointers only they look into.
 */
#ifndef AEMP_NODE_H
#define AEMP_NODE_H

#include "../dist/dist.h"
#include "../util/map.h"

struct aemp__proc; /* the process layer's state (src/proc) */
struct aemp__svc;  /* the services' state (src/svc) */

/* A handler of one control message tag (aemp__node_on_ctl). */
typedef void (*aemp__ctl_fn)(void *arg, aemp__conn *c, const aemp__ctl_in *m, aemp__ctl_memo *memo);

enum aemp__event {
    AEMP__EV_NODE_UP = 1,   /* peer: the node; reason NULL */
    AEMP__EV_NODE_DOWN = 2, /* peer: the node; reason: why (text) */
    AEMP__EV_PORT_EXIT = 3, /* port: the local port id; exit: the reason term */
    /* an outgoing connection failed before it was up: peer, reason */
    AEMP__EV_NODE_UNREACHABLE = 4,
};

typedef struct aemp__event_info {
    int kind;
    uint32_t peer_h;       /* NODE_UP, NODE_DOWN */
    const char *peer;      /* NODE_UP, NODE_DOWN */
    const char *reason;    /* NODE_DOWN, NODE_UNREACHABLE */
    int err;               /* NODE_DOWN, NODE_UNREACHABLE: an AEMP_E* code, or 0 */
    uint64_t port;         /* PORT_EXIT */
    const aemp_term *exit; /* PORT_EXIT */
} aemp__event_info;

typedef void (*aemp__event_fn)(aemp_node *n, const aemp__event_info *ev, void *arg);
typedef struct aemp__sub aemp__sub;

struct aemp_node {
    uv_loop_t *loop;
    aemp__dist dist;
    char name[AEMP_MAXNODELEN + 1];
    char alive[AEMP_MAXNODELEN + 1];
    char host[AEMP_MAXNODELEN + 1];
    uint32_t name_h;
    uint32_t creation;
    bool client_only;
    void (*ready_cb)(aemp_node *, int, void *);
    void *ready_arg;
    bool ready_reported;
    aemp_fail_cb fail_cb;
    void *fail_arg;
    aemp__tls_ctx *tls_ctx;
    uv_timer_t ready_timer; /* reports readiness of client-only nodes */
    aemp__epmd_reg *epmd;

    aemp__map conns;     /* peer name handle (4 bytes) -> aemp__conn */
    aemp__map known;     /* peer name handles ever up or tried (value unused) */
    aemp__map node_mons; /* aemp_mon_nodes: id (8 bytes) -> struct */
    aemp__map fences;    /* peer name handle -> count (aemp__node_fence) */
    uint64_t next_node_mon;
    uint32_t last_peer;    /* the last remote destination's node, */
    aemp__conn *last_conn; /* and its connection (NULL: look it up) */
    aemp__sub *subs;       /* event subscribers, in subscription order */
    int publishing;        /* events being delivered (unsubscribe defers) */
    struct {
        aemp__ctl_fn fn;
        void *arg;
    } ctl[AEMP__CTL_MAX];

    struct aemp__proc *proc;
    struct aemp__svc *svc;

    bool closing;
    int pending_closes;
    void (*closed_cb)(void *);
    void *closed_arg;
    void (*release)(aemp_node *); /* frees what the layers above hold */
    /* the application's node up/down callback (called by the api layer,
     * a subscriber like any other) */
    aemp_nodes_cb nodes_cb;
    void *nodes_arg;
};

/* Set up the node from cfg (name, cookie, creation, limits, TLS, listener,
 * EPMD registration). Logs what fails. */
int aemp__node_init(aemp_node *n, uv_loop_t *loop, const aemp_node_config *cfg);
/* Close connections (after flushing) and handles; when all are closed,
 * n->release(n) runs, then closed_cb, then n is freed. */
void aemp__node_close(aemp_node *n, void (*closed_cb)(void *), void *arg);
/* Listen and register with EPMD (or, client-only, report readiness). */
int aemp__node_start(aemp_node *n, uint16_t listen_port);

/* A part of the layers above closes a handle: the node is freed only after
 * a matching aemp__node_part_closed(). */
void aemp__node_hold(aemp_node *n);
void aemp__node_part_closed(aemp_node *n);

/* Install the handler of a control message tag (one per tag). */
void aemp__node_on_ctl(aemp_node *n, enum aemp__ctl tag, aemp__ctl_fn fn, void *arg);

/* Subscribe to events (any number of subscribers; called in subscription
 * order). *out (may be NULL) identifies the subscription. */
int aemp__node_subscribe(aemp_node *n, aemp__event_fn fn, void *arg, aemp__sub **out);
void aemp__node_unsubscribe(aemp_node *n, aemp__sub *s);
/* Tell every subscriber. */
void aemp__node_publish(aemp_node *n, const aemp__event_info *ev);

/* The connection to peer (a handle), started if there is none and
 * `start`; NULL if none can be made (*err says why). */
aemp__conn *aemp__node_conn(aemp_node *n, uint32_t peer_h, bool start, int *err);
/* Route a message to a remote process: its node's connection (made on
 * demand) in order. AEMP_EBUSY when max_pending bytes wait for that peer
 * or no connection can be made. */
int aemp__node_send(aemp_node *n, const aemp_addr *from, const aemp_addr *to, const aemp_term *msg);
/* Queue a control message for node peer_h (connecting on demand).
 * AEMP_ECLOSED while peer_h is fenced. */
int aemp__node_ctl(aemp_node *n, uint32_t peer_h, const aemp_buf *ctl, const aemp_term *payload);
/* Fence node peer_h while the loss of its connection is still being
 * reported (no silent holes): until as many aemp__node_unfence() calls,
 * messages to it are dropped and control messages refused, and no
 * connection to it is started. */
int aemp__node_fence(aemp_node *n, uint32_t peer_h);
void aemp__node_unfence(aemp_node *n, uint32_t peer_h);
/* Is this address a pid of this node's incarnation? */
static inline bool aemp__node_is_local_pid(const aemp_node *n, const aemp_addr *a)
{
    return a->kind == AEMP_ADDR_PID && a->node == n->name_h && a->creation == n->creation;
}

#endif
