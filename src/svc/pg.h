/*
 * pg.h - the node as a peer of OTP `pg` scopes (pg.c): families of ports.
 *
 * For each configured scope (aemp_node_config.pg_scopes, default `aemp`) a
 * service port registered under the scope's name speaks pg's protocol
 * (version 0) with the scopes of other nodes, Erlang's and C nodes'
 * alike. The public calls are aemp_pg_join(), aemp_pg_leave() and
 * aemp_pg_members() (include/aemp.h); this header adds what the other
 * services (the database) need: subscriptions to a family's members.
 *
 * A family is a UTF-8 string; in pg it is the group that is the atom of
 * that text (a binary when it is longer than 255 characters). Groups that
 * arrive as atoms or binaries both belong to the family of their text;
 * other group terms are kept (and given back to peers) but belong to no
 * family. A family's members are the pids that are members of its groups
 * in any configured scope, each once.
 */
#ifndef AEMP_PG_H
#define AEMP_PG_H

#include "svc.h"

struct aemp__pg;

/* A family's members changed: `member` (a pid, local or remote) became a
 * member of family[0..flen) (joined true: it was none before, in any
 * scope) or stopped being one (joined false: its last membership went, by
 * a leave, its port's death, or its node's scope going down). family is
 * NUL-terminated; family and member are valid during the call. Runs from
 * the loop, after the change is complete (aemp_pg_members() shows it);
 * the callback may call any function of the node, aemp__pg_unwatch() and
 * aemp_pg_join()/aemp_pg_leave() included (their own events follow after
 * the current ones). */
typedef void (*aemp__pg_watch_fn)(aemp_node *n, const char *family, size_t flen,
                                  const aemp_addr *member, bool joined, void *arg);

/* Watch family (NULL: every family) until aemp__pg_unwatch(handle). Members
 * already there are not reported: read them with aemp_pg_members(). 0,
 * AEMP_EINVAL (bad family), AEMP_ENOTSUP (no pg scope configured),
 * AEMP_ENOMEM. */
int aemp__pg_watch(aemp_node *n, const char *family, aemp__pg_watch_fn fn, void *arg,
                   uint64_t *handle);
/* Stop a watch (no call after it returns); AEMP_ENOENT if unknown. */
int aemp__pg_unwatch(aemp_node *n, uint64_t handle);

/* Visit each member of family (all scopes, each pid once): fn(member, arg).
 * fn must not change families. Returns the number visited, or a negative
 * error (AEMP_EINVAL, AEMP_ENOTSUP). */
long aemp__pg_each(aemp_node *n, const char *family, void (*fn)(const aemp_addr *member, void *arg),
                   void *arg);

/* Service life (svc.c). */
int aemp__pg_start(aemp_node *n, const aemp_node_config *cfg);
void aemp__pg_close(aemp_node *n);
void aemp__pg_free(aemp_node *n);

#endif
