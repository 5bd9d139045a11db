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

struct aemp__call;

struct aemp__svc {
    aemp_port net_kernel;
    aemp_port io;             /* group leader of the processes we spawn */
    aemp__map exports;        /* "module:function" -> exported C function */
    struct aemp__call *calls; /* calls into other nodes whose callback has not run */
};

/* Start every service on n. */
int aemp__svc_init(aemp_node *n);
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

#endif
