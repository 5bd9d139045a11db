/* map.c - a small chained hash map with byte-string keys (copied). */
#include "../aemp_impl.h"
#include "hash.h"
#include "map.h"

#include <stdlib.h>

struct aemp__map_ent {
    struct aemp__map_ent *next;
    uint64_t hash;
    void *val;
    size_t klen;
    char key[]; /* NUL-terminated copy */
};

void aemp__map_init(aemp__map *m)
{
    m->buckets = NULL;
    m->nbuckets = 0;
    m->count = 0;
}

static int grow(aemp__map *m)
{
    size_t nb = m->nbuckets ? m->nbuckets * 2 : 16;
    struct aemp__map_ent **b = calloc(nb, sizeof *b);
    if (!b) return AEMP_ENOMEM;
    for (size_t i = 0; i < m->nbuckets; i++) {
        struct aemp__map_ent *e = m->buckets[i], *next;
        for (; e; e = next) {
            next = e->next;
            size_t j = e->hash & (nb - 1);
            e->next = b[j];
            b[j] = e;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->nbuckets = nb;
    return 0;
}

static struct aemp__map_ent **find(const aemp__map *m, const void *key, size_t klen, uint64_t h)
{
    if (!m->nbuckets) return NULL;
    struct aemp__map_ent **pe = &m->buckets[h & (m->nbuckets - 1)];
    for (; *pe; pe = &(*pe)->next)
        if ((*pe)->hash == h && (*pe)->klen == klen && memcmp((*pe)->key, key, klen) == 0)
            return pe;
    return NULL;
}

void *aemp__map_get(const aemp__map *m, const void *key, size_t klen)
{
    struct aemp__map_ent **pe = find(m, key, klen, aemp__hash_keyed(key, klen));
    return pe ? (*pe)->val : NULL;
}

int aemp__map_put(aemp__map *m, const void *key, size_t klen, void *val)
{
    uint64_t h = aemp__hash_keyed(key, klen);
    struct aemp__map_ent **pe = find(m, key, klen, h);
    if (pe) {
        (*pe)->val = val;
        return 0;
    }
    if (m->count >= m->nbuckets && grow(m)) return AEMP_ENOMEM;
    struct aemp__map_ent *e = malloc(sizeof *e + klen + 1);
    if (!e) return AEMP_ENOMEM;
    e->hash = h;
    e->val = val;
    e->klen = klen;
    memcpy(e->key, key, klen);
    e->key[klen] = 0;
    size_t j = h & (m->nbuckets - 1);
    e->next = m->buckets[j];
    m->buckets[j] = e;
    m->count++;
    return 0;
}

void *aemp__map_del(aemp__map *m, const void *key, size_t klen)
{
    struct aemp__map_ent **pe = find(m, key, klen, aemp__hash_keyed(key, klen));
    if (!pe) return NULL;
    struct aemp__map_ent *e = *pe;
    void *val = e->val;
    *pe = e->next;
    free(e);
    m->count--;
    return val;
}

void aemp__map_each(aemp__map *m, void (*fn)(const char *key, void *val, void *arg), void *arg)
{
    for (size_t i = 0; i < m->nbuckets; i++) {
        struct aemp__map_ent *e = m->buckets[i], *next;
        for (; e; e = next) {
            next = e->next;
            fn(e->key, e->val, arg);
        }
    }
}

void aemp__map_free(aemp__map *m)
{
    for (size_t i = 0; i < m->nbuckets; i++) {
        struct aemp__map_ent *e = m->buckets[i], *next;
        for (; e; e = next) {
            next = e->next;
            free(e);
        }
    }
    free(m->buckets);
    aemp__map_init(m);
}
