/*
 * db.h - the distributed database (docs/database.md): the `aemp_db`
 * service that replicates the node's own share with its peers (db.c), on
 * the store of every share this node knows (db_store.h).
 */
#ifndef AEMP_SVC_DB_H
#define AEMP_SVC_DB_H

#include "db_store.h"

/* ------------------------------------------------------------------ */
/* the service (db.c)                                                 */
/* ------------------------------------------------------------------ */

struct aemp__db;

/* Start the aemp_db service on n: a port registered as aemp_db, the
 * node-up and port-exit subscriptions. max_bytes: the limit of bytes held
 * for other nodes' shares (0: the default). */
int aemp__db_start(aemp_node *n, size_t max_bytes);
/* The node closes: queries still waiting are answered AEMP_ECLOSED, the
 * timer closes. */
void aemp__db_close(aemp_node *n);
void aemp__db_free(aemp_node *n);

/* Test hook: while true, nodes created start no aemp_db service (the db
 * API then returns AEMP_EINVAL). For unit tests that count a node's ports
 * and monitors exactly, which the db's peer monitors would change. */
extern bool aemp__db_test_off;

/* Default of aemp_node_config.db_max_bytes. */
#define AEMP__DB_MAX_BYTES_DEFAULT ((size_t)256 << 20)

/* The members of pg families (pg.c), as the db's watch of every family
 * (aemp__pg_watch) reports them: pid became a member of family `group`
 * (joined 1) or stopped being one (joined 0). The db shows a member
 * without an entry of its own as subkey = its port ID, value `undefined`,
 * below every entry. Idempotent: a join of a member, a leave of a
 * non-member do nothing. */
void aemp__db_pg_member(aemp_node *n, const char *group, size_t len, const aemp_addr *pid,
                        int joined);

#endif
