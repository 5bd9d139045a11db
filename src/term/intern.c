/*
 * intern.c - the process-wide table of interned names: node names and
 * registered names, so that an address (aemp_addr) holds a 32-bit handle
 * instead of the text, and compares in one instruction.
 *
 * Entries are never removed (Erlang's atoms are not either); the table is
 * bounded (AEMP__INTERN_MAX names, AEMP__INTERN_MAX_BYTES of text), and a
 * name beyond either bound is refused. Nodes may run on several threads (one
 * loop each), so adding takes a lock; reading a handle's text does not: the
 * chunk array never moves and a chunk is published after its entry is
 * written.
 */
#include "term_local.h"

#include "../util/hash.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#define CHUNK 1024
#define NCHUNKS (AEMP__INTERN_MAX / CHUNK)

struct entry {
    const char *s;
    uint32_t len;
    uint32_t hash;
};

static _Atomic(struct entry *) chunks[NCHUNKS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uint32_t count;   /* handles 1..count are in use */
static size_t bytes;     /* text held */
static uint32_t *index_; /* open addressing: handle or 0 */
static size_t index_cap; /* a power of two */

/* Keyed (util/hash.h): peers choose most of the names (node names in the
 * pids they send, the names they send to). */
static uint32_t hash_text(const char *s, size_t n)
{
    return (uint32_t)aemp__hash_keyed(s, n);
}

static struct entry *entry_of(uint32_t h)
{
    struct entry *c = atomic_load_explicit(&chunks[(h - 1) / CHUNK], memory_order_acquire);
    return c ? &c[(h - 1) % CHUNK] : NULL;
}

static int index_grow(void)
{
    size_t cap = index_cap ? index_cap * 2 : 1024;
    uint32_t *ix = calloc(cap, sizeof *ix);
    if (!ix) return AEMP_ENOMEM;
    for (uint32_t h = 1; h <= count; h++) {
        size_t i = entry_of(h)->hash & (cap - 1);
        while (ix[i])
            i = (i + 1) & (cap - 1);
        ix[i] = h;
    }
    free(index_);
    index_ = ix;
    index_cap = cap;
    return 0;
}

uint32_t aemp__intern(const char *s, size_t n)
{
    if (!s || n > AEMP_MAXATOMLEN) return 0;
    uint32_t hash = hash_text(s, n), found = 0;
    pthread_mutex_lock(&lock);
    if (index_cap) {
        for (size_t i = hash & (index_cap - 1); index_[i]; i = (i + 1) & (index_cap - 1)) {
            const struct entry *e = entry_of(index_[i]);
            if (e->hash == hash && e->len == n && memcmp(e->s, s, n) == 0) {
                found = index_[i];
                break;
            }
        }
    }
    if (found || count >= AEMP__INTERN_MAX || bytes + n + 1 > AEMP__INTERN_MAX_BYTES) goto done;
    if ((count + 1) * 2 > index_cap && index_grow()) goto done;
    uint32_t h = count + 1;
    size_t ci = (h - 1) / CHUNK;
    struct entry *c = atomic_load_explicit(&chunks[ci], memory_order_relaxed);
    if (!c) {
        c = calloc(CHUNK, sizeof *c);
        if (!c) goto done;
        atomic_store_explicit(&chunks[ci], c, memory_order_release);
    }
    char *copy = malloc(n + 1);
    if (!copy) goto done;
    memcpy(copy, s, n);
    copy[n] = 0;
    struct entry *e = &c[(h - 1) % CHUNK];
    e->s = copy;
    e->len = (uint32_t)n;
    e->hash = hash;
    size_t i = hash & (index_cap - 1);
    while (index_[i])
        i = (i + 1) & (index_cap - 1);
    index_[i] = h;
    atomic_thread_fence(memory_order_release);
    count = h;
    bytes += n + 1;
    found = h;
done:
    pthread_mutex_unlock(&lock);
    return found;
}

uint32_t aemp__intern_find(const char *s, size_t n)
{
    if (!s || n > AEMP_MAXATOMLEN) return 0;
    uint32_t hash = hash_text(s, n), found = 0;
    pthread_mutex_lock(&lock);
    for (size_t i = index_cap ? hash & (index_cap - 1) : 0; index_cap && index_[i];
         i = (i + 1) & (index_cap - 1)) {
        const struct entry *e = entry_of(index_[i]);
        if (e->hash == hash && e->len == n && memcmp(e->s, s, n) == 0) {
            found = index_[i];
            break;
        }
    }
    pthread_mutex_unlock(&lock);
    return found;
}

const char *aemp__intern_text(uint32_t h, size_t *len)
{
    if (h == 0 || h > AEMP__INTERN_MAX) return NULL;
    const struct entry *e = entry_of(h);
    if (!e || !e->s) return NULL;
    if (len) *len = e->len;
    return e->s;
}
