/*
 * db_store.c - the database's store: per family and subkey, every owner's
 * entry (a candidate) and the visible one, the greatest {Stamp, OwnerNode}
 * (docs/database.md, "The conflict rule"); per owner, its entries grouped
 * by family (for its local_data and for dropping its share); per watched
 * family, the state each changed subkey had before (for db_mon's lists).
 *
 * Layout, for a family of 100,000 entries taken in one share: a subkey is
 * one allocation holding its text, its first candidate and the state it
 * had before the changes a watcher has not yet been told; a value of up to
 * 16 bytes lives in the candidate. A family finds its subkeys through an
 * open-addressing table (linear probing, hash beside the pointer), sized
 * up front from a share's count. A subkey with no candidate left stays
 * while a diff still names it.
 */
#include "db_store.h"

#include "../util/hash.h"

#include <stdlib.h>

typedef struct cand cand;
typedef struct key key;

/* Values up to this size are kept in the candidate. */
#define VAL_INLINE 16

/* An owner's entries in one family. */
struct ofam {
    aemp__dbs_fam *f;
    aemp__dbs_owner *o;
    size_t count;
    cand *head;
};

struct cand {
    key *k;
    struct ofam *of;
    cand *oprev, *onext; /* in of's list */
    uint64_t stamp;
    uint32_t owner_h;
    uint32_t vlen;
    uint32_t mark; /* the owner's mark when last set (aemp__dbs_owner_sweep) */
    union {
        char *p;
        char in[VAL_INLINE];
    } v;
};

/* key flags */
enum {
    K_IN_USED = 1, /* the inline candidate holds an entry */
    K_TOUCHED = 2, /* in the family's touched list: b_* hold the state before */
    K_TAKEN = 4,   /* in the family's taken list: a diff handed out names it */
    K_HAD = 8,     /* (while touched) it was visible before */
};

struct key {
    uint32_t hash;
    uint32_t idx; /* in the family's dense array, while visible */
    cand *win;
    cand **c; /* the candidates: &c0 while there is room for one only */
    cand *c0;
    uint32_t n, cap;
    uint32_t klen;
    uint8_t flags;
    uint32_t b_owner; /* the visible state before, while touched */
    uint64_t b_stamp;
    cand in;
    char subkey[]; /* NUL-terminated */
};

struct slot {
    uint32_t hash;
    key *k; /* NULL: empty */
};

/* A growing array of keys. */
struct keyvec {
    key **k;
    size_t n, cap;
};

struct aemp__dbs_fam {
    char *name;
    size_t len;
    struct slot *tab; /* subkey -> key, open addressing */
    size_t tcap, tcount;
    key **arr; /* the keys with a visible entry, densely */
    size_t narr, cap;
    int watch, hold;
    struct keyvec touched; /* keys changed since the last diff, while watched */
    struct keyvec taken;   /* the keys of the diff being handed out */
    bool dirty;
    aemp__dbs_fam *dnext;
};

struct aemp__dbs_owner {
    uint32_t node_h;
    uint32_t mark;
    bool was_empty; /* it had no entries when last marked */
    aemp__map fams; /* family pointer -> struct ofam */
    aemp__dbs_fam *last_f;
    struct ofam *last_of;
    size_t bytes;
};

struct aemp__dbs {
    aemp__map fams; /* name -> family */
    aemp__dbs_fam *dirty_head, *dirty_tail;
};

aemp__dbs *aemp__dbs_new(void)
{
    aemp__dbs *s = calloc(1, sizeof *s);
    if (s) aemp__map_init(&s->fams);
    return s;
}

int aemp__dbs_cmp(uint64_t sa, uint32_t oa, uint64_t sb, uint32_t ob)
{
    if (sa != sb) return sa < sb ? -1 : 1;
    if (oa == ob) return 0;
    size_t la = 0, lb = 0;
    const char *ta = oa ? aemp__intern_text(oa, &la) : "";
    const char *tb = ob ? aemp__intern_text(ob, &lb) : "";
    if (!ta) ta = "";
    if (!tb) tb = "";
    /* atoms compare by their UTF-8 bytes, a prefix first: code point order */
    int c = memcmp(ta, tb, la < lb ? la : lb);
    if (c) return c < 0 ? -1 : 1;
    return la < lb ? -1 : la > lb ? 1 : 0;
}

/* ------------------------------------------------------------------ */
/* a family's table of subkeys                                        */
/* ------------------------------------------------------------------ */

/* Keyed (a peer chooses the subkeys: util/hash.h). */
static uint32_t key_hash(const char *subkey, size_t klen)
{
    uint64_t h = aemp__hash_keyed(subkey, klen);
    return (uint32_t)(h ^ (h >> 32));
}

static key *tab_find(const aemp__dbs_fam *f, const char *subkey, size_t klen, uint32_t h)
{
    if (!f->tcap) return NULL;
    size_t mask = f->tcap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        const struct slot *s = &f->tab[i];
        if (!s->k) return NULL;
        if (s->hash == h && s->k->klen == klen && memcmp(s->k->subkey, subkey, klen) == 0)
            return s->k;
    }
}

static void tab_place(struct slot *tab, size_t cap, uint32_t h, key *k)
{
    size_t mask = cap - 1, i = h & mask;
    while (tab[i].k)
        i = (i + 1) & mask;
    tab[i].hash = h;
    tab[i].k = k;
}

static int tab_resize(aemp__dbs_fam *f, size_t cap)
{
    /* (written at once: calloc's untouched pages would fault twice, once
     * read as zero and again when first written) */
    struct slot *tab = malloc(cap * sizeof *tab);
    if (!tab) return AEMP_ENOMEM;
    memset(tab, 0, cap * sizeof *tab);
    for (size_t i = 0; i < f->tcap; i++)
        if (f->tab[i].k) tab_place(tab, cap, f->tab[i].hash, f->tab[i].k);
    free(f->tab);
    f->tab = tab;
    f->tcap = cap;
    return 0;
}

/* Room for want subkeys (at most 3/4 of the slots used). */
static int tab_reserve(aemp__dbs_fam *f, size_t want)
{
    size_t cap = f->tcap ? f->tcap : 16;
    while (want > cap / 4 * 3)
        cap *= 2;
    return cap == f->tcap ? 0 : tab_resize(f, cap);
}

/* Take k out (linear probing: the entries after it that would no longer
 * be found move back into the gap). */
static void tab_remove(aemp__dbs_fam *f, const key *k)
{
    size_t mask = f->tcap - 1, i = k->hash & mask;
    while (f->tab[i].k != k)
        i = (i + 1) & mask;
    for (size_t j = (i + 1) & mask; f->tab[j].k; j = (j + 1) & mask) {
        size_t home = f->tab[j].hash & mask;
        /* j's entry may fill i unless its home lies cyclically in (i, j] */
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            f->tab[i] = f->tab[j];
            i = j;
        }
    }
    f->tab[i].k = NULL;
    f->tcount--;
    /* memory follows the family down (a failed shrink keeps the table) */
    if (f->tcap > 64 && f->tcount < f->tcap / 8) (void)tab_resize(f, f->tcap / 2);
}

/* ------------------------------------------------------------------ */
/* families                                                           */
/* ------------------------------------------------------------------ */

static aemp__dbs_fam *fam_get(aemp__dbs *s, const char *name, size_t len, bool make)
{
    aemp__dbs_fam *f = aemp__map_get(&s->fams, name, len);
    if (f || !make) return f;
    f = calloc(1, sizeof *f);
    if (!f) return NULL;
    f->name = malloc(len + 1);
    if (!f->name) goto fail;
    memcpy(f->name, name, len);
    f->name[len] = 0;
    f->len = len;
    if (aemp__map_put(&s->fams, name, len, f)) goto fail;
    return f;
fail:
    free(f->name);
    free(f);
    return NULL;
}

static void key_free(aemp__dbs_fam *f, key *k)
{
    tab_remove(f, k);
    if (k->c != &k->c0) free(k->c);
    free(k);
}

/* A key with no candidate goes once no diff names it. */
static void key_maybe_free(aemp__dbs_fam *f, key *k)
{
    if (!k->n && !(k->flags & (K_TOUCHED | K_TAKEN))) key_free(f, k);
}

static void fam_destroy(aemp__dbs_fam *f)
{
    /* (what is left are keys without candidates that a diff still names) */
    for (size_t i = 0; i < f->tcap; i++) {
        key *k = f->tab[i].k;
        if (!k) continue;
        if (k->c != &k->c0) free(k->c);
        free(k);
    }
    free(f->tab);
    free(f->touched.k);
    free(f->taken.k);
    free(f->arr);
    free(f->name);
    free(f);
}

static void fam_maybe_free(aemp__dbs *s, aemp__dbs_fam *f)
{
    if (f->narr || f->tcount || f->watch || f->hold || f->dirty) return;
    aemp__map_del(&s->fams, f->name, f->len);
    fam_destroy(f);
}

static void mark_dirty(aemp__dbs *s, aemp__dbs_fam *f)
{
    if (f->dirty) return;
    f->dirty = true;
    f->dnext = NULL;
    if (s->dirty_tail)
        s->dirty_tail->dnext = f;
    else
        s->dirty_head = f;
    s->dirty_tail = f;
}

/* Record the visible state of k before a change, once per diff, in a
 * watched family. */
static void touch(aemp__dbs *s, aemp__dbs_fam *f, key *k)
{
    if (!f->watch) return;
    if (!(k->flags & K_TOUCHED)) {
        if (aemp__grow(&f->touched.k, f->touched.n, &f->touched.cap, sizeof *f->touched.k, 64)) {
            AEMP_LOGE("db: out of memory: a change of family %s is not reported", f->name);
            return;
        }
        f->touched.k[f->touched.n++] = k;
        k->flags = (uint8_t)((k->flags & ~K_HAD) | K_TOUCHED | (k->win ? K_HAD : 0));
        k->b_stamp = k->win ? k->win->stamp : 0;
        k->b_owner = k->win ? k->win->owner_h : 0;
    }
    mark_dirty(s, f);
}

/* Forget what the touched keys were (nobody is told any more). */
static void touched_clear(aemp__dbs_fam *f)
{
    for (size_t i = 0; i < f->touched.n; i++) {
        key *k = f->touched.k[i];
        k->flags &= (uint8_t) ~(K_TOUCHED | K_HAD);
        key_maybe_free(f, k);
    }
    free(f->touched.k);
    memset(&f->touched, 0, sizeof f->touched);
}

/* ------------------------------------------------------------------ */
/* keys and candidates                                                */
/* ------------------------------------------------------------------ */

/* The candidate of k with the greatest {Stamp, OwnerNode}, or NULL. */
static cand *winner(const key *k)
{
    cand *w = NULL;
    for (uint32_t i = 0; i < k->n; i++)
        if (!w || aemp__dbs_cmp(k->c[i]->stamp, k->c[i]->owner_h, w->stamp, w->owner_h) > 0)
            w = k->c[i];
    return w;
}

/* Elect k's winner and keep the dense array right (it has room for every
 * key, so this never fails). */
static void key_elect(aemp__dbs_fam *f, key *k)
{
    cand *w = winner(k);
    bool was = k->win != NULL;
    k->win = w;
    if (w && !was) {
        k->idx = (uint32_t)f->narr;
        f->arr[f->narr++] = k;
    } else if (!w && was) {
        key *last = f->arr[--f->narr];
        f->arr[k->idx] = last;
        last->idx = k->idx;
    }
}

static const char *cand_value(const cand *c)
{
    return c->vlen <= VAL_INLINE ? c->v.in : c->v.p;
}

/* Put value into c (the old one is freed); AEMP_ENOMEM leaves c as it was. */
static int cand_store(cand *c, const aemp_term *value, bool had)
{
    char *p = NULL;
    if (value->len > VAL_INLINE) {
        p = malloc(value->len);
        if (!p) return AEMP_ENOMEM;
        memcpy(p, value->data, value->len);
    }
    if (had && c->vlen > VAL_INLINE) free(c->v.p);
    c->vlen = (uint32_t)value->len;
    if (p)
        c->v.p = p;
    else
        memcpy(c->v.in, value->data, value->len);
    return 0;
}

static struct ofam *ofam_get(aemp__dbs_owner *o, aemp__dbs_fam *f, bool make)
{
    if (o->last_f == f) return o->last_of;
    struct ofam *of = aemp__map_get(&o->fams, &f, sizeof f);
    if (!of && make) {
        of = calloc(1, sizeof *of);
        if (!of) return NULL;
        of->f = f;
        of->o = o;
        if (aemp__map_put(&o->fams, &f, sizeof f, of)) {
            free(of);
            return NULL;
        }
    }
    if (of) {
        o->last_f = f;
        o->last_of = of;
    }
    return of;
}

static void ofam_free(struct ofam *of)
{
    aemp__dbs_owner *o = of->o;
    aemp__map_del(&o->fams, &of->f, sizeof of->f);
    if (o->last_of == of) {
        o->last_f = NULL;
        o->last_of = NULL;
    }
    free(of);
}

static size_t cand_cost(const cand *c)
{
    return aemp__dbs_cost(c->of->f->len, c->k->klen, c->vlen);
}

static void cand_unlink(aemp__dbs *s, cand *c)
{
    key *k = c->k;
    struct ofam *of = c->of;
    aemp__dbs_fam *f = of->f;
    touch(s, f, k);
    for (uint32_t i = 0; i < k->n; i++)
        if (k->c[i] == c) {
            k->c[i] = k->c[--k->n];
            break;
        }
    if (k->win == c) {
        k->win = NULL;
        /* (the key is still in the array at k->idx) */
        cand *w = winner(k);
        k->win = w;
        if (!w) {
            key *last = f->arr[--f->narr];
            f->arr[k->idx] = last;
            last->idx = k->idx;
        }
    }
    /* out of the owner's list */
    if (c->oprev)
        c->oprev->onext = c->onext;
    else
        of->head = c->onext;
    if (c->onext) c->onext->oprev = c->oprev;
    of->count--;
    of->o->bytes -= cand_cost(c);
    if (!of->count) ofam_free(of);
    if (c->vlen > VAL_INLINE) free(c->v.p);
    if (c == &k->in)
        k->flags &= (uint8_t)~K_IN_USED;
    else
        free(c);
    key_maybe_free(f, k);
    fam_maybe_free(s, f);
}

static cand *find_cand(const key *k, const aemp__dbs_owner *o)
{
    for (uint32_t i = 0; k && i < k->n; i++)
        if (k->c[i]->of->o == o) return k->c[i];
    return NULL;
}

/* A new key (no candidates) in f, with room made in the dense array. */
static key *key_new(aemp__dbs_fam *f, const char *subkey, size_t klen, uint32_t h)
{
    if (aemp__grow(&f->arr, f->tcount, &f->cap, sizeof *f->arr, 8) || tab_reserve(f, f->tcount + 1))
        return NULL;
    key *k = malloc(sizeof *k + klen + 1);
    if (!k) return NULL;
    memset(k, 0, sizeof *k);
    k->hash = h;
    k->c = &k->c0;
    k->cap = 1;
    k->klen = (uint32_t)klen;
    memcpy(k->subkey, subkey, klen);
    k->subkey[klen] = 0;
    tab_place(f->tab, f->tcap, h, k);
    f->tcount++;
    return k;
}

/* Set o's entry (f, subkey of hash h); f stays (the caller frees it if
 * empty). */
static int set_in(aemp__dbs *s, aemp__dbs_owner *o, aemp__dbs_fam *f, const char *subkey,
                  size_t klen, uint32_t h, uint64_t stamp, const aemp_term *value)
{
    key *k = tab_find(f, subkey, klen, h);
    cand *c = find_cand(k, o);
    if (c) {
        c->mark = o->mark;
        if (c->stamp == stamp && c->vlen == value->len &&
            memcmp(cand_value(c), value->data, value->len) == 0)
            return 0; /* the same again: no change */
        size_t old = cand_cost(c);
        if (cand_store(c, value, true)) return AEMP_ENOMEM;
        touch(s, f, k);
        o->bytes = o->bytes - old + cand_cost(c);
        c->stamp = stamp;
        k->win = winner(k);
        return 0;
    }
    bool new_key = !k;
    if (new_key && !(k = key_new(f, subkey, klen, h))) return AEMP_ENOMEM;
    if (k->n == k->cap) {
        uint32_t cap = k->cap * 2;
        cand **a = k->c == &k->c0 ? malloc(cap * sizeof *a) : realloc(k->c, cap * sizeof *a);
        if (!a) goto nomem;
        if (k->c == &k->c0) a[0] = k->c0;
        k->c = a;
        k->cap = cap;
    }
    struct ofam *of = ofam_get(o, f, true);
    if (!of) goto nomem;
    if (k->flags & K_IN_USED) {
        c = malloc(sizeof *c);
        if (!c) goto nomem_of;
    } else {
        c = &k->in;
    }
    if (cand_store(c, value, false)) {
        if (c != &k->in) free(c);
        goto nomem_of;
    }
    if (c == &k->in) k->flags |= K_IN_USED;
    touch(s, f, k);
    c->k = k;
    c->of = of;
    c->stamp = stamp;
    c->owner_h = o->node_h;
    c->mark = o->mark;
    c->oprev = NULL;
    c->onext = of->head;
    if (of->head) of->head->oprev = c;
    of->head = c;
    of->count++;
    o->bytes += cand_cost(c);
    k->c[k->n++] = c;
    key_elect(f, k);
    return 0;
nomem_of:
    if (!of->count) ofam_free(of);
nomem:
    if (new_key) key_maybe_free(f, k);
    return AEMP_ENOMEM;
}

int aemp__dbs_set(aemp__dbs *s, aemp__dbs_owner *o, const char *fam, size_t flen,
                  const char *subkey, size_t klen, uint64_t stamp, const aemp_term *value)
{
    aemp__dbs_fam *f = fam_get(s, fam, flen, true);
    if (!f) return AEMP_ENOMEM;
    int rc = set_in(s, o, f, subkey, klen, key_hash(subkey, klen), stamp, value);
    if (rc) fam_maybe_free(s, f);
    return rc;
}

static cand *lookup(aemp__dbs *s, aemp__dbs_owner *o, const char *fam, size_t flen,
                    const char *subkey, size_t klen)
{
    aemp__dbs_fam *f = fam_get(s, fam, flen, false);
    return f ? find_cand(tab_find(f, subkey, klen, key_hash(subkey, klen)), o) : NULL;
}

int aemp__dbs_del(aemp__dbs *s, aemp__dbs_owner *o, const char *fam, size_t flen,
                  const char *subkey, size_t klen)
{
    cand *c = lookup(s, o, fam, flen, subkey, klen);
    if (!c) return AEMP_ENOENT;
    cand_unlink(s, c);
    return 0;
}

int aemp__dbs_own(aemp__dbs *s, aemp__dbs_owner *o, const char *fam, size_t flen,
                  const char *subkey, size_t klen, uint64_t *stamp)
{
    cand *c = lookup(s, o, fam, flen, subkey, klen);
    if (!c) return AEMP_ENOENT;
    if (stamp) *stamp = c->stamp;
    return 0;
}

/* ------------------------------------------------------------------ */
/* owners                                                             */
/* ------------------------------------------------------------------ */

aemp__dbs_owner *aemp__dbs_owner_new(aemp__dbs *s, uint32_t node_h)
{
    (void)s;
    aemp__dbs_owner *o = calloc(1, sizeof *o);
    if (!o) return NULL;
    o->node_h = node_h;
    aemp__map_init(&o->fams);
    return o;
}

struct sweep {
    aemp__dbs *s;
    bool all;
};

/* (aemp__map_each lets fn delete the entry it is given: the last
 * unlink of a family frees its ofam and its entry) */
static void sweep_of(const char *k, void *val, void *arg)
{
    (void)k;
    struct ofam *of = val;
    struct sweep *sw = arg;
    uint32_t mark = of->o->mark;
    for (cand *c = of->head, *next; c; c = next) {
        next = c->onext;
        /* (the last unlink frees of: stop before touching it again) */
        bool last = of->count == 1;
        if (sw->all || c->mark != mark) cand_unlink(sw->s, c);
        if (last) break;
    }
}

void aemp__dbs_owner_clear(aemp__dbs *s, aemp__dbs_owner *o)
{
    struct sweep sw = {s, true};
    aemp__map_each(&o->fams, sweep_of, &sw);
}

void aemp__dbs_owner_mark(aemp__dbs_owner *o)
{
    o->mark++;
    o->was_empty = o->fams.count == 0;
}

void aemp__dbs_owner_sweep(aemp__dbs *s, aemp__dbs_owner *o)
{
    if (o->was_empty) return; /* every entry it has came since the mark */
    struct sweep sw = {s, false};
    aemp__map_each(&o->fams, sweep_of, &sw);
}

void aemp__dbs_owner_free(aemp__dbs *s, aemp__dbs_owner *o)
{
    if (!o) return;
    aemp__dbs_owner_clear(s, o);
    aemp__map_free(&o->fams);
    free(o);
}

size_t aemp__dbs_owner_bytes(const aemp__dbs_owner *o)
{
    return o->bytes;
}

/* ------------------------------------------------------------------ */
/* received shares and operations                                     */
/* ------------------------------------------------------------------ */

/* Entries of a share read ahead: their slots are fetched into the cache
 * while the ones before are set (a large family's table is far bigger
 * than the caches, and every new subkey lands in a random slot). */
#define AHEAD 16

struct pending {
    const void *kp;
    size_t klen;
    uint32_t h;
    uint64_t stamp;
    aemp_term v;
};

/* One record of a Stamps binary, <<KeyLen:32, Subkey:KeyLen/binary,
 * Stamp:64>>, at *p (before end); *p moves past it. AEMP_ENOMATCH if the
 * bytes left are not a whole record or KeyLen > AEMP_DB_MAXKEY. */
static int get_record(const uint8_t **p, const uint8_t *end, const void **kp, size_t *klen,
                      uint64_t *stamp)
{
    size_t left = (size_t)(end - *p);
    if (left < 4) return AEMP_ENOMATCH;
    size_t n = aemp__get_u32(*p);
    if (n > AEMP_DB_MAXKEY || n + 12 > left) return AEMP_ENOMATCH;
    *kp = *p + 4;
    *klen = n;
    *stamp = aemp__get_u64(*p + 4 + n);
    *p += n + 12;
    return 0;
}

/* A family's {Values, Stamps} after its name, checked: *bytes adds the
 * cost of its values, *maxstamp sees every stamp (of records for no value
 * too). */
static int check_family(aemp_cursor *c, size_t flen, size_t *bytes, uint64_t *maxstamp)
{
    uint32_t nk;
    if (aemp_get_map(c, &nk)) return AEMP_ENOMATCH;
    for (uint32_t j = 0; j < nk; j++) {
        const void *kp;
        size_t klen;
        aemp_term v;
        if (aemp_get_binary(c, &kp, &klen) || klen > AEMP_DB_MAXKEY || aemp_get_term(c, &v))
            return AEMP_ENOMATCH;
        *bytes += aemp__dbs_cost(flen, klen, v.len);
    }
    const void *bp;
    size_t blen;
    if (aemp_get_binary(c, &bp, &blen)) return AEMP_ENOMATCH;
    for (const uint8_t *p = bp, *end = p + blen; p != end;) {
        const void *kp;
        size_t klen;
        uint64_t stamp;
        if (get_record(&p, end, &kp, &klen, &stamp)) return AEMP_ENOMATCH;
        if (stamp > *maxstamp) *maxstamp = stamp;
    }
    return 0;
}

/* The stamps of a family's Values while it is applied. Senders write the
 * subkeys in Stamps in the order of Values: while the subkeys match, the
 * records are read in step (nothing allocated). Else (a subkey differs,
 * the records run out before the values, or records are left after the
 * last value) the stamps come from an index of the family's subkeys (no
 * more than its counted entries) filled from all the records: the last
 * record for a subkey wins, none gives stamp 0. Out of step after some
 * values were set in step, the family starts again from its first value
 * with the index (a later record may name an earlier subkey again; what
 * is set again the same is no change). */
struct sslot {
    const void *kp; /* NULL: empty */
    uint32_t klen, h;
    uint64_t stamp;
};

struct stamps {
    const uint8_t *bin, *end; /* the Stamps binary's bytes */
    const uint8_t *next;      /* in step: the next record */
    struct sslot *idx;        /* once out of step */
    size_t mask;
};

static struct sslot *sslot_find(const struct stamps *st, const void *kp, size_t klen, uint32_t h)
{
    for (size_t i = h & st->mask;; i = (i + 1) & st->mask) {
        struct sslot *s = &st->idx[i];
        if (!s->kp || (s->h == h && s->klen == klen && memcmp(s->kp, kp, klen) == 0)) return s;
    }
}

/* Index the subkeys of the nk values at vals, then give them their stamps
 * from all the records. */
static int stamps_index(struct stamps *st, aemp_cursor vals, uint32_t nk)
{
    size_t cap = 16;
    while (nk > cap / 4 * 3)
        cap *= 2;
    st->idx = calloc(cap, sizeof *st->idx);
    if (!st->idx) return AEMP_ENOMEM;
    st->mask = cap - 1;
    const void *kp;
    size_t klen;
    for (uint32_t i = 0; i < nk; i++) {
        if (aemp_get_binary(&vals, &kp, &klen) || aemp_get_term(&vals, NULL)) return AEMP_ENOMATCH;
        uint32_t h = key_hash(kp, klen);
        struct sslot *s = sslot_find(st, kp, klen, h);
        s->kp = kp;
        s->klen = (uint32_t)klen;
        s->h = h;
    }
    for (const uint8_t *p = st->bin; p != st->end;) {
        uint64_t stamp;
        if (get_record(&p, st->end, &kp, &klen, &stamp)) return AEMP_ENOMATCH;
        struct sslot *s = sslot_find(st, kp, klen, key_hash(kp, klen));
        if (s->kp) s->stamp = stamp;
    }
    return 0;
}

/* In step: the next record's stamp if it names subkey (else 1: out of
 * step, also when the records have run out). */
static int stamp_in_step(struct stamps *st, const void *kp, size_t klen, uint64_t *stamp)
{
    const void *sk;
    size_t sklen;
    const uint8_t *p = st->next;
    if (p == st->end) return 1;
    if (get_record(&p, st->end, &sk, &sklen, stamp)) return AEMP_ENOMATCH;
    if (sklen != klen || memcmp(sk, kp, klen) != 0) return 1;
    st->next = p;
    return 0;
}

/* A checked family's {Values, Stamps} after its name, applied to owner o. */
static int apply_family(aemp__dbs *s, aemp__dbs_owner *o, const char *fp, size_t flen,
                        aemp_cursor *c)
{
    uint32_t nk;
    struct stamps st = {0};
    /* the Stamps binary is past the whole Values map */
    aemp_cursor after = *c;
    const void *bp;
    size_t blen;
    if (aemp_get_term(&after, NULL) || aemp_get_binary(&after, &bp, &blen) || aemp_get_map(c, &nk))
        return AEMP_ENOMATCH;
    st.bin = st.next = bp;
    st.end = st.bin + blen;
    const aemp_cursor vals = *c;
    aemp__dbs_fam *f = fam_get(s, fp, flen, true);
    if (!f) return AEMP_ENOMEM;
    /* room for them all at once (if short, each set asks again) */
    if (!aemp__reserve(&f->arr, f->tcount + nk, &f->cap, sizeof *f->arr))
        (void)tab_reserve(f, f->tcount + nk);
    struct pending pend[AHEAD];
    int rc = 0;
    for (uint32_t j = 0; !rc;) {
        if (j == nk) {
            /* records left after the last value in step (never sent: a
             * record named again or for no value, which may give a value
             * its last stamp): all again, indexed */
            if (!nk || st.idx || st.next == st.end) break;
            rc = stamps_index(&st, vals, nk);
            *c = vals;
            j = 0;
            continue;
        }
        uint32_t m = 0;
        for (; m < AHEAD && j < nk && !rc; m++, j++) {
            struct pending *e = &pend[m];
            if (aemp_get_binary(c, &e->kp, &e->klen) || aemp_get_term(c, &e->v)) {
                rc = AEMP_ENOMATCH;
                break;
            }
            e->h = key_hash(e->kp, e->klen);
            if (f->tcap) __builtin_prefetch(&f->tab[e->h & (f->tcap - 1)]);
            if (st.idx) {
                e->stamp = sslot_find(&st, e->kp, e->klen, e->h)->stamp;
            } else if ((rc = stamp_in_step(&st, e->kp, e->klen, &e->stamp)) == 1) {
                /* out of step: all again from the first value, indexed */
                rc = stamps_index(&st, vals, nk);
                *c = vals;
                j = 0;
                m = 0;
                break;
            }
        }
        for (uint32_t x = 0; x < m && !rc; x++) {
            struct pending *e = &pend[x];
            rc = set_in(s, o, f, e->kp, e->klen, e->h, e->stamp, &e->v);
        }
    }
    if (!rc) *c = after;
    free(st.idx);
    fam_maybe_free(s, f);
    return rc;
}

/* #{Family => {#{Subkey => Value}, Stamps}}, Stamps a binary of records
 * <<KeyLen:32, Subkey:KeyLen/binary, Stamp:64>>: checked (apply NULL) or
 * applied to owner apply. */
int aemp__dbs_walk_share(aemp__dbs *s, aemp__dbs_owner *apply, aemp_cursor *c, size_t *bytes,
                         uint64_t *maxstamp)
{
    uint32_t nf, arity;
    if (aemp_get_map(c, &nf)) return AEMP_ENOMATCH;
    for (uint32_t i = 0; i < nf; i++) {
        const void *fp;
        size_t flen;
        if (aemp_get_binary(c, &fp, &flen) || flen > AEMP_DB_MAXKEY || aemp_get_tuple(c, &arity) ||
            arity != 2)
            return AEMP_ENOMATCH;
        int rc =
            apply ? apply_family(s, apply, fp, flen, c) : check_family(c, flen, bytes, maxstamp);
        if (rc) return rc;
    }
    return 0;
}

/* Ops: [{set, F, K, Stamp, V} | {del, F, K}]: checked (apply NULL) or
 * applied. */
int aemp__dbs_walk_ops(aemp__dbs *s, aemp__dbs_owner *apply, aemp_cursor *c, size_t *bytes,
                       uint64_t *maxstamp)
{
    uint32_t n, arity;
    if (aemp_get_list(c, &n)) return AEMP_ENOMATCH;
    for (uint32_t i = 0; i < n; i++) {
        char op[8];
        const void *fp, *kp;
        size_t flen, klen;
        if (aemp_get_tuple(c, &arity) || aemp_get_atom(c, op, sizeof op) ||
            aemp_get_binary(c, &fp, &flen) || flen > AEMP_DB_MAXKEY ||
            aemp_get_binary(c, &kp, &klen) || klen > AEMP_DB_MAXKEY)
            return AEMP_ENOMATCH;
        if (arity == 5 && strcmp(op, "set") == 0) {
            uint64_t stamp;
            aemp_term v;
            if (aemp_get_uint64(c, &stamp) || aemp_get_term(c, &v)) return AEMP_ENOMATCH;
            if (apply) {
                int rc = aemp__dbs_set(s, apply, fp, flen, kp, klen, stamp, &v);
                if (rc) return rc;
            } else {
                *bytes += aemp__dbs_cost(flen, klen, v.len);
                if (stamp > *maxstamp) *maxstamp = stamp;
            }
        } else if (arity == 3 && strcmp(op, "del") == 0) {
            if (apply) aemp__dbs_del(s, apply, fp, flen, kp, klen);
        } else {
            return AEMP_ENOMATCH;
        }
    }
    return aemp_get_nil(c) ? AEMP_ENOMATCH : 0;
}

/* ------------------------------------------------------------------ */
/* encoding a share                                                   */
/* ------------------------------------------------------------------ */

static int put_map_head(aemp_buf *b, size_t n)
{
    int rc = aemp__buf_put_u8(b, 116); /* MAP_EXT */
    return rc ? rc : aemp__buf_put_u32(b, (uint32_t)n);
}

static int put_binary(aemp_buf *b, const char *p, size_t n)
{
    int rc = aemp__buf_put_u8(b, AEMP__EXT_BINARY);
    if (!rc) rc = aemp__buf_put_u32(b, (uint32_t)n);
    return rc ? rc : aemp__buf_append(b, p, n);
}

struct enc {
    aemp_buf *b;
    int rc;
};

/* A family of the owner as {Values, Stamps}: the stamps binary names the
 * subkeys in the order of the values map (receivers walk both in step). */
static void enc_of(const char *k, void *val, void *arg)
{
    (void)k;
    struct ofam *of = val;
    struct enc *e = arg;
    if (e->rc) return;
    aemp_buf *b = e->b;
    int rc = put_binary(b, of->f->name, of->f->len);
    if (!rc) rc = aemp__buf_put_u8(b, AEMP__EXT_SMALL_TUPLE);
    if (!rc) rc = aemp__buf_put_u8(b, 2);
    if (!rc) rc = put_map_head(b, of->count);
    for (cand *c = of->head; c && !rc; c = c->onext) {
        rc = put_binary(b, c->k->subkey, c->k->klen);
        if (!rc) rc = aemp__buf_append(b, cand_value(c), c->vlen);
    }
    /* the binary's length is written once its records are */
    size_t head = b->len;
    if (!rc) rc = aemp__buf_put_u8(b, AEMP__EXT_BINARY);
    if (!rc) rc = aemp__buf_put_u32(b, 0);
    for (cand *c = of->head; c && !rc; c = c->onext) {
        size_t klen = c->k->klen;
        if (!(rc = aemp__buf_reserve(b, klen + 12))) {
            char *p = b->data + b->len;
            aemp__put_u32(p, (uint32_t)klen);
            memcpy(p + 4, c->k->subkey, klen);
            aemp__put_u64(p + 4 + klen, c->stamp);
            b->len += klen + 12;
        }
    }
    if (!rc && b->len - head - 5 > UINT32_MAX) rc = AEMP_ETOOBIG;
    if (!rc) aemp__put_u32(b->data + head + 1, (uint32_t)(b->len - head - 5));
    e->rc = rc;
}

int aemp__dbs_encode_share(aemp__dbs *s, aemp__dbs_owner *o, aemp_buf *out)
{
    (void)s;
    size_t start = out->len;
    struct enc e = {out, put_map_head(out, o->fams.count)};
    if (!e.rc) aemp__map_each(&o->fams, enc_of, &e);
    if (e.rc) out->len = start;
    return e.rc;
}

/* ------------------------------------------------------------------ */
/* reading a family                                                   */
/* ------------------------------------------------------------------ */

aemp__dbs_fam *aemp__dbs_family(aemp__dbs *s, const char *fam, size_t flen)
{
    return fam_get(s, fam, flen, false);
}

size_t aemp__dbs_count(const aemp__dbs_fam *f)
{
    return f ? f->narr : 0;
}

static void ent_of(const key *k, aemp__dbs_ent *e)
{
    e->subkey = k->subkey;
    e->subkey_len = k->klen;
    e->value.data = cand_value(k->win);
    e->value.len = k->win->vlen;
    e->owner_h = k->win->owner_h;
    e->stamp = k->win->stamp;
}

void aemp__dbs_at(const aemp__dbs_fam *f, size_t i, aemp__dbs_ent *e)
{
    ent_of(f->arr[i], e);
}

int aemp__dbs_get(const aemp__dbs_fam *f, const char *subkey, size_t klen, aemp__dbs_ent *e)
{
    key *k = f ? tab_find(f, subkey, klen, key_hash(subkey, klen)) : NULL;
    if (!k || !k->win) return AEMP_ENOENT;
    ent_of(k, e);
    return 0;
}

const char *aemp__dbs_fam_name(const aemp__dbs_fam *f, size_t *len)
{
    if (len) *len = f->len;
    return f->name;
}

/* ------------------------------------------------------------------ */
/* watching and differences                                           */
/* ------------------------------------------------------------------ */

aemp__dbs_fam *aemp__dbs_watch(aemp__dbs *s, const char *fam, size_t flen)
{
    aemp__dbs_fam *f = fam_get(s, fam, flen, true);
    if (f) f->watch++;
    return f;
}

void aemp__dbs_unwatch(aemp__dbs *s, aemp__dbs_fam *f)
{
    if (--f->watch == 0 && !f->dirty) touched_clear(f);
    fam_maybe_free(s, f);
}

void aemp__dbs_hold(aemp__dbs_fam *f)
{
    f->hold++;
}

void aemp__dbs_release(aemp__dbs *s, aemp__dbs_fam *f)
{
    f->hold--;
    fam_maybe_free(s, f);
}

bool aemp__dbs_has_dirty(const aemp__dbs *s)
{
    return s->dirty_head != NULL;
}

aemp__dbs_fam *aemp__dbs_next_dirty(aemp__dbs *s)
{
    aemp__dbs_fam *f = s->dirty_head;
    if (!f) return NULL;
    s->dirty_head = f->dnext;
    if (!s->dirty_head) s->dirty_tail = NULL;
    f->dnext = NULL;
    f->dirty = false;
    f->hold++; /* until aemp__dbs_diff_done */
    return f;
}

int aemp__dbs_take_diff(aemp__dbs *s, aemp__dbs_fam *f, aemp__dbs_diff *d)
{
    (void)s;
    memset(d, 0, sizeof *d);
    /* later changes (from the callbacks told of this diff) record their
     * states afresh */
    f->taken = f->touched;
    memset(&f->touched, 0, sizeof f->touched);
    size_t n = f->taken.n;
    for (size_t i = 0; i < n; i++)
        f->taken.k[i]->flags = (uint8_t)((f->taken.k[i]->flags & ~K_TOUCHED) | K_TAKEN);
    if (!n) return 0;
    const char **all = malloc(3 * n * sizeof *all);
    if (!all) return AEMP_ENOMEM;
    d->added = all;
    d->changed = all + n;
    d->deleted = all + 2 * n;
    for (size_t i = 0; i < n; i++) {
        const key *k = f->taken.k[i];
        bool had = k->flags & K_HAD, has = k->win != NULL;
        if (has && !had)
            d->added[d->nadded++] = k->subkey;
        else if (!has && had)
            d->deleted[d->ndeleted++] = k->subkey;
        else if (has && (k->win->stamp != k->b_stamp || k->win->owner_h != k->b_owner))
            d->changed[d->nchanged++] = k->subkey;
    }
    return 0;
}

void aemp__dbs_diff_done(aemp__dbs *s, aemp__dbs_fam *f, aemp__dbs_diff *d)
{
    free(d->added);
    memset(d, 0, sizeof *d);
    for (size_t i = 0; i < f->taken.n; i++) {
        key *k = f->taken.k[i];
        k->flags &= (uint8_t)~K_TAKEN;
        key_maybe_free(f, k);
    }
    free(f->taken.k);
    memset(&f->taken, 0, sizeof f->taken);
    aemp__dbs_release(s, f);
}

static void free_fam(const char *k, void *val, void *arg)
{
    (void)k;
    (void)arg;
    fam_destroy(val);
}

void aemp__dbs_free(aemp__dbs *s)
{
    if (!s) return;
    /* owners are freed first by their holders; what is left is empty */
    aemp__map_each(&s->fams, free_fam, NULL);
    aemp__map_free(&s->fams);
    free(s);
}
