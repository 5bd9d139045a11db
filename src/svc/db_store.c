/*
 * db_store.c - the database's store: per family and subkey, every owner's
 * entry (a candidate) and the visible one, the greatest {Stamp, OwnerNode}
 * (docs/database.md, "The conflict rule"); per owner, its entries grouped
 * by family (for its local_data and for dropping its share); per watched
 * family, the state each changed subkey had before (for db_mon's lists).
 */
#include "db_store.h"

#include <stdlib.h>

typedef struct cand cand;
typedef struct key key;

/* An owner's entries in one family. */
struct ofam {
    aemp__dbs_fam *f;
    size_t count;
    cand *head;
};

struct cand {
    key *k;
    aemp__dbs_owner *o;
    struct ofam *of;
    cand *oprev, *onext; /* in of's list */
    uint64_t stamp;
    size_t cost;
    size_t vlen;
    char *value;
};

struct key {
    char *subkey; /* NUL-terminated copy */
    size_t klen;
    size_t idx; /* in the family's array */
    cand **c;
    uint32_t n, cap;
    cand *win;
};

/* A subkey's visible state before the changes not yet taken by a diff. */
struct before {
    bool had;
    uint64_t stamp;
    uint32_t owner_h;
    size_t klen;
    char subkey[];
};

struct aemp__dbs_fam {
    char *name;
    size_t len;
    aemp__map keys; /* subkey -> key */
    key **arr;      /* the keys with a visible entry, densely */
    size_t narr, cap;
    int watch, hold;
    aemp__map before; /* subkey -> struct before, while watched */
    aemp__map taken;  /* the befores of the diff being handed out */
    bool dirty;
    aemp__dbs_fam *dnext;
    aemp__dbs_diff diff; /* the arrays of the diff being handed out */
};

struct aemp__dbs_owner {
    uint32_t node_h;
    aemp__map fams; /* family pointer -> struct ofam */
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
    aemp__map_init(&f->keys);
    aemp__map_init(&f->before);
    aemp__map_init(&f->taken);
    if (aemp__map_put(&s->fams, name, len, f)) goto fail;
    return f;
fail:
    free(f->name);
    free(f);
    return NULL;
}

static void free_before(const char *k, void *v, void *arg)
{
    (void)k;
    (void)arg;
    free(v);
}

/* Free the befores of m and leave it empty. */
static void befores_clear(aemp__map *m)
{
    aemp__map_each(m, free_before, NULL);
    aemp__map_free(m);
    aemp__map_init(m);
}

static void fam_destroy(aemp__dbs_fam *f)
{
    befores_clear(&f->before);
    befores_clear(&f->taken);
    aemp__map_free(&f->keys);
    free(f->arr);
    free(f->name);
    free(f);
}

static void fam_maybe_free(aemp__dbs *s, aemp__dbs_fam *f)
{
    if (f->narr || f->keys.count || f->watch || f->hold || f->dirty) return;
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

/* Record the visible state of k (subkey key) before a change, once per
 * diff, in a watched family. */
static void touch(aemp__dbs *s, aemp__dbs_fam *f, const char *subkey, size_t klen, const key *k)
{
    if (!f->watch) return;
    if (!aemp__map_get(&f->before, subkey, klen)) {
        struct before *b = malloc(sizeof *b + klen + 1);
        if (!b) {
            AEMP_LOGE("db: out of memory: a change of family %s is not reported", f->name);
            return;
        }
        b->had = k && k->win;
        b->stamp = b->had ? k->win->stamp : 0;
        b->owner_h = b->had ? k->win->o->node_h : 0;
        b->klen = klen;
        memcpy(b->subkey, subkey, klen);
        b->subkey[klen] = 0;
        if (aemp__map_put(&f->before, subkey, klen, b)) {
            free(b);
            AEMP_LOGE("db: out of memory: a change of family %s is not reported", f->name);
            return;
        }
    }
    mark_dirty(s, f);
}

/* ------------------------------------------------------------------ */
/* keys and candidates                                                */
/* ------------------------------------------------------------------ */

/* The candidate of k with the greatest {Stamp, OwnerNode}, or NULL. */
static cand *winner(const key *k)
{
    cand *w = NULL;
    for (uint32_t i = 0; i < k->n; i++)
        if (!w || aemp__dbs_cmp(k->c[i]->stamp, k->c[i]->o->node_h, w->stamp, w->o->node_h) > 0)
            w = k->c[i];
    return w;
}

static void key_elect(aemp__dbs_fam *f, key *k)
{
    cand *w = winner(k);
    bool was = k->win != NULL;
    k->win = w;
    if (w && !was) {
        /* into the dense array (room was made when the key was) */
        k->idx = f->narr;
        f->arr[f->narr++] = k;
    } else if (!w && was) {
        key *last = f->arr[--f->narr];
        f->arr[k->idx] = last;
        last->idx = k->idx;
    }
}

static void key_free(aemp__dbs_fam *f, key *k)
{
    aemp__map_del(&f->keys, k->subkey, k->klen);
    free(k->c);
    free(k->subkey);
    free(k);
}

static void cand_unlink(aemp__dbs *s, cand *c)
{
    key *k = c->k;
    aemp__dbs_fam *f = c->of->f;
    touch(s, f, k->subkey, k->klen, k);
    for (uint32_t i = 0; i < k->n; i++)
        if (k->c[i] == c) {
            k->c[i] = k->c[--k->n];
            break;
        }
    if (k->win == c) {
        /* elect from scratch: the key is still in the array at k->idx */
        cand *w = winner(k);
        k->win = w;
        if (!w) {
            key *last = f->arr[--f->narr];
            f->arr[k->idx] = last;
            last->idx = k->idx;
        }
    }
    /* out of the owner's list */
    struct ofam *of = c->of;
    if (c->oprev)
        c->oprev->onext = c->onext;
    else
        of->head = c->onext;
    if (c->onext) c->onext->oprev = c->oprev;
    of->count--;
    c->o->bytes -= c->cost;
    if (!of->count) {
        aemp__map_del(&c->o->fams, &of->f, sizeof of->f);
        free(of);
    }
    if (!k->n) key_free(f, k);
    free(c->value);
    free(c);
    fam_maybe_free(s, f);
}

static cand *find_cand(const key *k, const aemp__dbs_owner *o)
{
    for (uint32_t i = 0; k && i < k->n; i++)
        if (k->c[i]->o == o) return k->c[i];
    return NULL;
}

int aemp__dbs_set(aemp__dbs *s, aemp__dbs_owner *o, const char *fam, size_t flen,
                  const char *subkey, size_t klen, uint64_t stamp, const aemp_term *value)
{
    aemp__dbs_fam *f = fam_get(s, fam, flen, true);
    if (!f) return AEMP_ENOMEM;
    key *k = aemp__map_get(&f->keys, subkey, klen);
    cand *c = find_cand(k, o);
    char *v = malloc(value->len ? value->len : 1);
    if (!v) goto nomem;
    memcpy(v, value->data, value->len);
    if (c) {
        /* replace in place */
        touch(s, f, subkey, klen, k);
        size_t cost = aemp__dbs_cost(flen, klen, value->len);
        o->bytes = o->bytes - c->cost + cost;
        c->cost = cost;
        free(c->value);
        c->value = v;
        c->vlen = value->len;
        c->stamp = stamp;
        k->win = winner(k);
        return 0;
    }
    bool new_key = !k;
    if (new_key) {
        /* room in the dense array first: electing never fails */
        if (aemp__grow(&f->arr, f->narr, &f->cap, sizeof *f->arr, 8)) goto nomem;
        k = calloc(1, sizeof *k);
        if (!k) goto nomem;
        k->subkey = malloc(klen + 1);
        if (!k->subkey || aemp__map_put(&f->keys, subkey, klen, k)) {
            free(k->subkey);
            free(k);
            goto nomem;
        }
        memcpy(k->subkey, subkey, klen);
        k->subkey[klen] = 0;
        k->klen = klen;
    }
    if (k->n == k->cap) {
        uint32_t cap = k->cap ? k->cap * 2 : 1;
        cand **a = realloc(k->c, cap * sizeof *a);
        if (!a) goto nomem_key;
        k->c = a;
        k->cap = cap;
    }
    struct ofam *of = aemp__map_get(&o->fams, &f, sizeof f);
    bool new_of = !of;
    if (new_of) {
        of = calloc(1, sizeof *of);
        if (!of) goto nomem_key;
        of->f = f;
        if (aemp__map_put(&o->fams, &f, sizeof f, of)) {
            free(of);
            goto nomem_key;
        }
    }
    c = calloc(1, sizeof *c);
    if (!c) {
        if (new_of) {
            aemp__map_del(&o->fams, &f, sizeof f);
            free(of);
        }
        goto nomem_key;
    }
    touch(s, f, subkey, klen, k);
    c->k = k;
    c->o = o;
    c->of = of;
    c->stamp = stamp;
    c->value = v;
    c->vlen = value->len;
    c->cost = aemp__dbs_cost(flen, klen, value->len);
    c->onext = of->head;
    if (of->head) of->head->oprev = c;
    of->head = c;
    of->count++;
    o->bytes += c->cost;
    k->c[k->n++] = c;
    key_elect(f, k);
    return 0;
nomem_key:
    if (new_key) key_free(f, k);
nomem:
    free(v);
    fam_maybe_free(s, f);
    return AEMP_ENOMEM;
}

int aemp__dbs_del(aemp__dbs *s, aemp__dbs_owner *o, const char *fam, size_t flen,
                  const char *subkey, size_t klen)
{
    aemp__dbs_fam *f = fam_get(s, fam, flen, false);
    if (!f) return AEMP_ENOENT;
    cand *c = find_cand(aemp__map_get(&f->keys, subkey, klen), o);
    if (!c) return AEMP_ENOENT;
    cand_unlink(s, c);
    return 0;
}

int aemp__dbs_own(aemp__dbs *s, aemp__dbs_owner *o, const char *fam, size_t flen,
                  const char *subkey, size_t klen, uint64_t *stamp)
{
    aemp__dbs_fam *f = fam_get(s, fam, flen, false);
    cand *c = f ? find_cand(aemp__map_get(&f->keys, subkey, klen), o) : NULL;
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

/* (aemp__map_each lets fn delete the entry it is given: the last
 * unlink of a family frees its ofam and its entry) */
static void clear_of(const char *k, void *val, void *arg)
{
    (void)k;
    struct ofam *of = val;
    while (of->count > 1)
        cand_unlink(arg, of->head);
    cand_unlink(arg, of->head);
}

void aemp__dbs_owner_clear(aemp__dbs *s, aemp__dbs_owner *o)
{
    aemp__map_each(&o->fams, clear_of, s);
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

/* One family => #{Subkey => {Stamp, Value}} of a share: checked (apply
 * NULL) or applied to owner o. */
int aemp__dbs_walk_share(aemp__dbs *s, aemp__dbs_owner *apply, aemp_cursor *c, size_t *bytes,
                         uint64_t *maxstamp)
{
    uint32_t nf, nk, arity;
    if (aemp_get_map(c, &nf)) return AEMP_ENOMATCH;
    for (uint32_t i = 0; i < nf; i++) {
        const void *fp, *kp;
        size_t flen, klen;
        if (aemp_get_binary(c, &fp, &flen) || flen > AEMP_DB_MAXKEY || aemp_get_map(c, &nk))
            return AEMP_ENOMATCH;
        for (uint32_t j = 0; j < nk; j++) {
            uint64_t stamp;
            aemp_term v;
            if (aemp_get_binary(c, &kp, &klen) || klen > AEMP_DB_MAXKEY ||
                aemp_get_tuple(c, &arity) || arity != 2 || aemp_get_uint64(c, &stamp) ||
                aemp_get_term(c, &v))
                return AEMP_ENOMATCH;
            if (apply) {
                int rc = aemp__dbs_set(s, apply, fp, flen, kp, klen, stamp, &v);
                if (rc) return rc;
            } else {
                *bytes += aemp__dbs_cost(flen, klen, v.len);
                if (stamp > *maxstamp) *maxstamp = stamp;
            }
        }
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

static int put_uint(aemp_buf *b, uint64_t v)
{
    if (v < 256) {
        int rc = aemp__buf_put_u8(b, AEMP__EXT_SMALL_INTEGER);
        return rc ? rc : aemp__buf_put_u8(b, (uint8_t)v);
    }
    if (v < 0x80000000u) {
        int rc = aemp__buf_put_u8(b, AEMP__EXT_INTEGER);
        return rc ? rc : aemp__buf_put_u32(b, (uint32_t)v);
    }
    uint8_t d[8];
    uint8_t nd = 0;
    for (uint64_t x = v; x; x >>= 8)
        d[nd++] = (uint8_t)x;
    int rc = aemp__buf_put_u8(b, AEMP__EXT_SMALL_BIG);
    if (!rc) rc = aemp__buf_put_u8(b, nd);
    if (!rc) rc = aemp__buf_put_u8(b, 0);
    return rc ? rc : aemp__buf_append(b, d, nd);
}

struct enc {
    aemp_buf *b;
    int rc;
};

static void enc_of(const char *k, void *val, void *arg)
{
    (void)k;
    struct ofam *of = val;
    struct enc *e = arg;
    if (e->rc) return;
    int rc = put_binary(e->b, of->f->name, of->f->len);
    if (!rc) rc = put_map_head(e->b, of->count);
    for (cand *c = of->head; c && !rc; c = c->onext) {
        rc = put_binary(e->b, c->k->subkey, c->k->klen);
        if (!rc) rc = aemp__buf_put_u8(e->b, AEMP__EXT_SMALL_TUPLE);
        if (!rc) rc = aemp__buf_put_u8(e->b, 2);
        if (!rc) rc = put_uint(e->b, c->stamp);
        if (!rc) rc = aemp__buf_append(e->b, c->value, c->vlen);
    }
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
    e->value.data = k->win->value;
    e->value.len = k->win->vlen;
    e->owner_h = k->win->o->node_h;
    e->stamp = k->win->stamp;
}

void aemp__dbs_at(const aemp__dbs_fam *f, size_t i, aemp__dbs_ent *e)
{
    ent_of(f->arr[i], e);
}

int aemp__dbs_get(const aemp__dbs_fam *f, const char *subkey, size_t klen, aemp__dbs_ent *e)
{
    key *k = f ? aemp__map_get(&f->keys, subkey, klen) : NULL;
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
    if (--f->watch == 0 && !f->dirty) befores_clear(&f->before);
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

struct classify {
    aemp__dbs_fam *f;
    aemp__dbs_diff *d;
};

static void classify_one(const char *k, void *val, void *arg)
{
    (void)k;
    struct classify *c = arg;
    struct before *b = val;
    key *now = aemp__map_get(&c->f->keys, b->subkey, b->klen);
    bool has = now && now->win;
    aemp__dbs_diff *d = c->d;
    if (has && !b->had)
        d->added[d->nadded++] = b->subkey;
    else if (!has && b->had)
        d->deleted[d->ndeleted++] = b->subkey;
    else if (has && (now->win->stamp != b->stamp || now->win->o->node_h != b->owner_h))
        d->changed[d->nchanged++] = b->subkey;
}

int aemp__dbs_take_diff(aemp__dbs *s, aemp__dbs_fam *f, aemp__dbs_diff *d)
{
    (void)s;
    memset(d, 0, sizeof *d);
    /* later changes (from the callbacks told of this diff) record their
     * states afresh */
    f->taken = f->before;
    aemp__map_init(&f->before);
    size_t n = f->taken.count;
    if (!n) return 0;
    const char **all = malloc(3 * n * sizeof *all);
    if (!all) return AEMP_ENOMEM;
    d->added = all;
    d->changed = all + n;
    d->deleted = all + 2 * n;
    struct classify c = {f, d};
    aemp__map_each(&f->taken, classify_one, &c);
    return 0;
}

void aemp__dbs_diff_done(aemp__dbs *s, aemp__dbs_fam *f, aemp__dbs_diff *d)
{
    free(d->added);
    memset(d, 0, sizeof *d);
    befores_clear(&f->taken);
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
