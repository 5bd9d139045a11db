/*
 * idmap.h - a hash map from 64-bit ids to pointers, for the tables that
 * grow to millions (ports by id): open addressing with linear probing,
 * slots of {id, pointer} (a probe reads no entry's memory), at most 3/4
 * full, deletion by shifting back (no tombstones). Id 0 is never a key.
 * The ids are this node's own (sequential), hashed by multiplying with an
 * odd number drawn from the process's random key (hash.h) when the map
 * first takes an entry: which ids share a run of slots cannot be worked
 * out from outside, so a peer that can have ports made and closed here
 * cannot keep only the colliding ones.
 */
#ifndef AEMP_IDMAP_H
#define AEMP_IDMAP_H

#include <stddef.h>
#include <stdint.h>

struct aemp__idslot {
    uint64_t id; /* 0: empty */
    void *val;
};

typedef struct aemp__idmap {
    struct aemp__idslot *slots;
    size_t mask; /* slots - 1 (a power of two), 0 when there are none */
    size_t count;
    uint64_t mult; /* odd; set with the first slots */
} aemp__idmap;

/* The slot an id starts its probe at, in slots of mask + 1 under mult. */
static inline size_t aemp__idmap_slot(uint64_t id, uint64_t mult, size_t mask)
{
    return (size_t)(id * mult >> 17) & mask;
}

static inline size_t aemp__idmap_home(const aemp__idmap *m, uint64_t id)
{
    return aemp__idmap_slot(id, m->mult, m->mask);
}

void aemp__idmap_init(aemp__idmap *m);
/* NULL if absent. */
static inline void *aemp__idmap_get(const aemp__idmap *m, uint64_t id)
{
    if (!m->slots) return NULL;
    for (size_t i = aemp__idmap_home(m, id);; i = (i + 1) & m->mask) {
        if (m->slots[i].id == id) return m->slots[i].val;
        if (!m->slots[i].id) return NULL;
    }
}
/* Insert or replace; AEMP_ENOMEM (nothing changed) or 0. */
int aemp__idmap_put(aemp__idmap *m, uint64_t id, void *val);
/* Remove; returns the value or NULL. */
void *aemp__idmap_del(aemp__idmap *m, uint64_t id);
/* Visit every entry (fn must not change the map). */
void aemp__idmap_each(const aemp__idmap *m, void (*fn)(uint64_t id, void *val, void *arg),
                      void *arg);
void aemp__idmap_free(aemp__idmap *m);

#endif
