/* idmap.c - a hash map from 64-bit ids to pointers (idmap.h). */
#include "../aemp_impl.h"
#include "hash.h"
#include "idmap.h"

#include <stdlib.h>

#define MIN_SLOTS 64

void aemp__idmap_init(aemp__idmap *m)
{
    m->slots = NULL;
    m->mask = 0;
    m->count = 0;
    m->mult = 0;
}

static void place(struct aemp__idslot *slots, size_t mask, uint64_t mult, uint64_t id, void *val)
{
    size_t i = aemp__idmap_slot(id, mult, mask);
    while (slots[i].id)
        i = (i + 1) & mask;
    slots[i].id = id;
    slots[i].val = val;
}

static int resize(aemp__idmap *m, size_t nslots)
{
    struct aemp__idslot *s = calloc(nslots, sizeof *s);
    if (!s) return AEMP_ENOMEM;
    for (size_t i = 0; m->slots && i <= m->mask; i++)
        if (m->slots[i].id) place(s, nslots - 1, m->mult, m->slots[i].id, m->slots[i].val);
    free(m->slots);
    m->slots = s;
    m->mask = nslots - 1;
    return 0;
}

int aemp__idmap_put(aemp__idmap *m, uint64_t id, void *val)
{
    if (!id) return AEMP_EINVAL;
    if (m->slots) {
        for (size_t i = aemp__idmap_home(m, id); m->slots[i].id; i = (i + 1) & m->mask) {
            if (m->slots[i].id == id) {
                m->slots[i].val = val;
                return 0;
            }
        }
    }
    size_t nslots = m->slots ? m->mask + 1 : 0;
    if (!m->slots) m->mult = aemp__hash_mult();
    if (4 * (m->count + 1) > 3 * nslots) {
        int rc = resize(m, nslots ? 2 * nslots : MIN_SLOTS);
        if (rc) return rc;
    }
    place(m->slots, m->mask, m->mult, id, val);
    m->count++;
    return 0;
}

void *aemp__idmap_del(aemp__idmap *m, uint64_t id)
{
    if (!m->slots || !id) return NULL;
    size_t i = aemp__idmap_home(m, id);
    while (m->slots[i].id != id) {
        if (!m->slots[i].id) return NULL;
        i = (i + 1) & m->mask;
    }
    void *val = m->slots[i].val;
    /* shift back the entries after it that probed past i */
    for (size_t j = (i + 1) & m->mask; m->slots[j].id; j = (j + 1) & m->mask) {
        size_t h = aemp__idmap_home(m, m->slots[j].id);
        /* j's entry may move to i unless its home lies in (i, j] */
        bool stays = i <= j ? (h > i && h <= j) : (h > i || h <= j);
        if (stays) continue;
        m->slots[i] = m->slots[j];
        i = j;
    }
    m->slots[i].id = 0;
    m->slots[i].val = NULL;
    m->count--;
    /* give memory back when a big table empties (a burst of ports ended) */
    if (m->mask + 1 > MIN_SLOTS && 8 * m->count < m->mask + 1) resize(m, (m->mask + 1) / 2);
    return val;
}

void aemp__idmap_each(const aemp__idmap *m, void (*fn)(uint64_t id, void *val, void *arg),
                      void *arg)
{
    for (size_t i = 0; m->slots && i <= m->mask; i++)
        if (m->slots[i].id) fn(m->slots[i].id, m->slots[i].val, arg);
}

void aemp__idmap_free(aemp__idmap *m)
{
    free(m->slots);
    aemp__idmap_init(m);
}
