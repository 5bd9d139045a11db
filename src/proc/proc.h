/*
 * proc.h - the process layer: the table of local ports, registered names,
 * delivery (local and through the node), links and monitors in every
 * direction, references, exit signals with OTP's translations, and the
 * spawn requests Erlang sends (served by init functions the services
 * register). It handles the control messages about processes; it calls the
 * node layer and below, never the services above it.
 */
#ifndef AEMP_PROC_H
#define AEMP_PROC_H

#include "../node/node.h"
#include "../util/idmap.h"

/* Links and monitors (watch.c): records of 48 bytes in slabs, found by
 * 32-bit index. */
struct aemp__wstore;

/* What few ports have: AEMP callbacks (rcv), a gone callback. */
typedef struct aemp__pext aemp__pext;

typedef struct aemp__port {
    uint64_t id;
    aemp_recv_cb cb; /* a raw callback (aemp_port_open), or NULL */
    void *arg;
    aemp__pext *ext;  /* rcv table and gone callback, or NULL */
    uint32_t watches; /* first record this port is an end of (watch.c), 0: none */
    uint32_t regname; /* interned, 0: none */
    uint16_t in_cb;
    uint8_t dead : 1;
    uint8_t dying : 1;  /* kil'd: dies on the next turn, runs no callback */
    uint8_t system : 1; /* a service's: not closed, killed or unregistered by the API */
    uint8_t silent : 1; /* messages are dropped (internal ports) */
} aemp__port;

/* An init function for spawn requests of Module:Function from Erlang: runs
 * as the new port (self), with the argument list. */
typedef void (*aemp__spawn_fn)(aemp_node *n, aemp_port self, const aemp_term *args, void *arg);

struct aemp__proc {
    aemp_node *node;
    aemp__idmap ports;       /* id -> aemp__port */
    aemp__map names;         /* name handle (4 bytes) -> aemp__port */
    struct aemp__wstore *ws; /* every link and monitor (watch.c) */
    aemp__map spawns;        /* "module:function" -> struct spawn_fn */
    aemp__map aliases;       /* reference -> local port id (alias.c) */
    uint64_t next_id;        /* last port id handed out */
    uint64_t next_ref;       /* last reference number */
    uint64_t epoch;          /* bumped by every change of ports or names */
    uint64_t self;           /* the port whose callback runs, 0 for none */
    /* the last port looked up by id */
    uint64_t last_id;
    aemp__port *last_port;
    uint64_t last_epoch;
    /* local deliveries deferred to bound recursion */
    aemp_buf deferred;
    size_t deferred_pos;
    int depth;
    uv_idle_t deferred_idle;
    uv_idle_cb idle_fn; /* the layer's turn of the loop (proc.c) */
    /* exits waiting to be carried out (link chains, without recursion) */
    aemp_buf exits;
    aemp_buf exit_reason; /* the reason of the exit being carried out */
    bool exiting;
    /* kills deferred to the loop (kil, a callback's error) */
    aemp_buf kills;
    aemp__sub *sub;
    /* the actions of monitors made with aemp_mon*: ref key -> struct */
    aemp__map acts;
    uint64_t mon_port; /* the watcher of aemp_mon's monitors, 0 until made */
    /* mon.c's part when a monitor goes (watch.c calls up through these) */
    bool (*mon_fire)(aemp_node *n, const aemp_addr *ref, const aemp_addr *target,
                     const aemp_term *reason, bool later);
    void (*mon_drop)(aemp_node *n, const aemp_addr *ref);
    int (*mon_cancel)(aemp_node *n, const aemp_addr *ref);
    struct aemp__pending *pending; /* mons of absent ports, to fire */
    aemp__map timers;              /* id -> struct */
    uint64_t next_timer;
    aemp_buf die_text;             /* aemp_die()'s text for the running callback */
    struct aemp__spawner *spawner; /* spawn requests of ours (spawn.c) */
};

/* Set up the process layer on n (installs its control-message handlers and
 * its node-event subscription; cfg: max_watches_per_peer). */
int aemp__proc_init(aemp_node *n, const aemp_node_config *cfg);
/* Kill every port (reason shutdown) and close the layer's handle;
 * aemp__node_part_closed(n) follows when it is closed. */
void aemp__proc_close(aemp_node *n);
/* Free what is left (after close). */
void aemp__proc_free(aemp_node *n);

aemp__port *aemp__proc_port(aemp_node *n, uint64_t id);
/* Open a port with an internal callback (NULL: messages are dropped). */
int aemp__proc_open(aemp_node *n, aemp_recv_cb cb, void *arg, aemp_port *out);
/* Open a port as aemp_port_new(): AEMP dispatch, no callback yet. */
int aemp__proc_new(aemp_node *n, aemp_port *out);
/* Start the layer's turn of the loop (deferred work waits). */
void aemp__proc_wake(aemp_node *n);
/* Kill local port id with reason on the next turn of the loop (kil). */
void aemp__proc_kill_later(aemp_node *n, uint64_t id, const aemp_term *reason);
/* Make a port a service of the node: the API cannot close, kill or
 * unregister it, and exit signals do not kill it. */
void aemp__proc_protect(aemp_node *n, aemp_port port);
/* Kill local port id with reason (an encoded term): links and monitors
 * fire, the exit is published. Killing a port that is gone does nothing. */
void aemp__proc_kill(aemp_node *n, uint64_t id, const aemp_term *reason);
/* Register init for spawn requests of module:function. */
int aemp__proc_spawn_fn(aemp_node *n, const char *module, const char *function, aemp__spawn_fn fn,
                        void *arg);
/* The port whose pid is the group leader in this node's spawn requests:
 * it answers the io requests of the processes they make. */
void aemp__proc_set_group_leader(aemp_node *n, aemp_port port);
/* A new reference of this node. */
void aemp__proc_ref(aemp_node *n, aemp_addr *out);

/* Process aliases (alias.c): make ref (a reference of this node) an alias
 * of local port `port`: messages sent to it, from another node (ALIAS_SEND)
 * or with a local aemp_send, reach the port until the alias is removed;
 * after that they are dropped. AEMP_EINVAL if ref is not this node's or the
 * port is not there. */
int aemp__alias_add(aemp_node *n, const aemp_addr *ref, uint64_t port);
void aemp__alias_del(aemp_node *n, const aemp_addr *ref);
/* The live port an alias (REF or ALIAS address) stands for, or NULL. */
aemp__port *aemp__alias_port(aemp_node *n, const aemp_addr *alias);

/* Links and monitors recorded (tests). */
size_t aemp__watch_count(aemp_node *n);

/* Test hook: the next port id handed out is id + 1. */
void aemp__proc_set_next_id(aemp_node *n, uint64_t id);

#endif
