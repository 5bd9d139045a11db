/* svc.c - starting and freeing the node's services. */
#include "pg.h"

#include <stdlib.h>

int aemp__svc_init(aemp_node *n, const aemp_node_config *cfg)
{
    n->svc = calloc(1, sizeof *n->svc);
    if (!n->svc) return AEMP_ENOMEM;
    int rc = aemp__net_kernel_start(n);
    if (!rc) rc = aemp__rpc_start(n);
    if (!rc) rc = aemp__io_start(n);
    if (!rc) rc = aemp__pg_start(n, cfg);
    if (!rc) rc = aemp__db_start(n, cfg->db_max_bytes);
    return rc;
}

void aemp__svc_close(aemp_node *n)
{
    if (!n->svc) return;
    aemp__pg_close(n);
    aemp__seeds_close(n);
    aemp__call_close(n);
    aemp__db_close(n);
}

void aemp__svc_free(aemp_node *n)
{
    if (!n->svc) return;
    aemp__pg_free(n);
    aemp__seeds_free(n);
    aemp__rpc_free(n);
    aemp__db_free(n);
    free(n->svc);
    n->svc = NULL;
}
