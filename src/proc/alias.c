/*
 * alias.c - process aliases, as Erlang's (EEP 53): a reference of this
 * node that stands for a local port while it is active. Messages sent to
 * it (ALIAS_SEND from another node, or a local aemp_send to it) reach the
 * port; once it is removed they are dropped, which is what keeps a late
 * reply from reaching a caller that gave up (gen_server:call's
 * [alias|Mref] tags).
 */
#include "watch.h"

#include <stdlib.h>

static struct aemp__proc *P(aemp_node *n)
{
    return n->proc;
}

/* The key of an alias: the reference with every field a sender cannot
 * vary (kind, unused words) fixed, so that a REF and an ALIAS address of
 * the same reference meet. */
static bool alias_key(aemp_node *n, const aemp_addr *ref, aemp_addr *key)
{
    if ((ref->kind != AEMP_ADDR_REF && ref->kind != AEMP_ADDR_ALIAS) || ref->node != n->name_h ||
        ref->nwords < 1 || ref->nwords > AEMP__REF_MAX_WORDS)
        return false;
    memset(key, 0, sizeof *key);
    key->kind = AEMP_ADDR_REF;
    key->nwords = ref->nwords;
    key->node = ref->node;
    key->creation = ref->creation;
    memcpy(key->w, ref->w, ref->nwords * sizeof ref->w[0]);
    return true;
}

int aemp__alias_add(aemp_node *n, const aemp_addr *ref, uint64_t port)
{
    aemp_addr key;
    if (!alias_key(n, ref, &key) || !aemp__proc_port(n, port)) return AEMP_EINVAL;
    uint64_t *id = aemp__map_get(&P(n)->aliases, &key, sizeof key);
    if (id) {
        *id = port;
        return 0;
    }
    /* the port's id, not the port: a dead port's alias reaches nothing */
    id = malloc(sizeof *id);
    if (!id) return AEMP_ENOMEM;
    *id = port;
    if (aemp__map_put(&P(n)->aliases, &key, sizeof key, id)) {
        free(id);
        return AEMP_ENOMEM;
    }
    return 0;
}

void aemp__alias_del(aemp_node *n, const aemp_addr *ref)
{
    aemp_addr key;
    if (alias_key(n, ref, &key)) free(aemp__map_del(&P(n)->aliases, &key, sizeof key));
}

aemp__port *aemp__alias_port(aemp_node *n, const aemp_addr *alias)
{
    aemp_addr key;
    if (!alias_key(n, alias, &key) || alias->creation != n->creation) return NULL;
    uint64_t *id = aemp__map_get(&P(n)->aliases, &key, sizeof key);
    return id ? aemp__proc_port(n, *id) : NULL;
}

void aemp__alias_init(aemp_node *n)
{
    aemp__map_init(&P(n)->aliases);
}

static void free_alias(const char *key, void *val, void *arg)
{
    free(val);
}

void aemp__alias_free(aemp_node *n)
{
    aemp__map_each(&P(n)->aliases, free_alias, NULL);
    aemp__map_free(&P(n)->aliases);
}
