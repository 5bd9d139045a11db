/*
 * svc.h - services: ports of the node's own, registered under the names
 * Erlang expects (net_kernel), serving the spawn requests of Erlang's rpc
 * and erpc, or answering the io requests of the processes we spawn (io).
 * Each is set up from the process layer's public and internal calls, as
 * user code would be; the layers below never name them. A new service
 * goes here (docs/design.md).
 */
#ifndef AEMP_SVC_H
#define AEMP_SVC_H

#include "../proc/proc.h"
#include "db.h"

struct aemp__call;
struct aemp__seeds;
struct aemp__pg;

struct aemp__svc {
    aemp_port net_kernel;
    aemp_port io;              /* group leader of the processes we spawn */
    aemp__map exports;         /* "module:function" -> exported C function */
    struct aemp__call *calls;  /* calls into other nodes whose callback has not run */
    struct aemp__seeds *seeds; /* seeds and meshing (seeds.c); NULL: no seeds */
    struct aemp__pg *pg;       /* pg scopes: families of ports (pg.c) */
    struct aemp__db *db;       /* the database (db.c) */
};

/* Start every service on n (cfg: their settings). */
int aemp__svc_init(aemp_node *n, const aemp_node_config *cfg);
/* The node closes (before its ports die): services end what waits. */
void aemp__svc_close(aemp_node *n);
/* Free what the services hold (their ports die with the node's). */
void aemp__svc_free(aemp_node *n);

int aemp__net_kernel_start(aemp_node *n);
int aemp__rpc_start(aemp_node *n);
int aemp__io_start(aemp_node *n);
void aemp__rpc_free(aemp_node *n);
/* Answer every call still waiting with AEMP_ECLOSED (call.c). */
void aemp__call_close(aemp_node *n);

/* Seeds and meshing (seeds.c): export erlang:nodes/0,1 and start keeping
 * the connections to cfg's seeds. AEMP_EINVAL (logged) for a bad setting. */
int aemp__seeds_start(aemp_node *n, const aemp_node_config *cfg);
/* The node closes: close the seeds' timers (each holds the node). */
void aemp__seeds_close(aemp_node *n);
void aemp__seeds_free(aemp_node *n);

/* Randomised exponential backoff: each wait is drawn between half (rounded
 * up) and all of the current interval, which starts at min_ms and doubles
 * after each wait up to max_ms; a success resets it to min_ms. */
typedef struct aemp__backoff {
    unsigned min_ms, max_ms, cur_ms;
} aemp__backoff;
/* min_ms 0 counts as 1, max_ms below min_ms as min_ms. */
void aemp__backoff_init(aemp__backoff *b, unsigned min_ms, unsigned max_ms);
/* The next wait, from the random number rnd; the interval then grows. */
unsigned aemp__backoff_next(aemp__backoff *b, uint32_t rnd);
void aemp__backoff_reset(aemp__backoff *b);

#endif
