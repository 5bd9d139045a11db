/* map.h - a small chained hash map with byte-string keys (copied),
 * hashed with the process's keyed hash (hash.h: peers choose many of the
 * keys, names above all). The order aemp__map_each visits entries in
 * follows the hash, so it changes from run to run: nothing may depend on
 * it. */
#ifndef AEMP_MAP_H
#define AEMP_MAP_H

#include <stddef.h>
#include <stdint.h>

struct aemp__map_ent;
typedef struct aemp__map {
    struct aemp__map_ent **buckets;
    size_t nbuckets;
    size_t count;
} aemp__map;

void aemp__map_init(aemp__map *m);
/* NULL if absent. */
void *aemp__map_get(const aemp__map *m, const void *key, size_t klen);
/* Insert or replace. */
int aemp__map_put(aemp__map *m, const void *key, size_t klen, void *val);
/* Remove; returns the value or NULL. */
void *aemp__map_del(aemp__map *m, const void *key, size_t klen);
/* Visit every entry; fn may delete the entry it is given. */
void aemp__map_each(aemp__map *m, void (*fn)(const char *key, void *val, void *arg), void *arg);
void aemp__map_free(aemp__map *m);

#endif
