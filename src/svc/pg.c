/*
 * pg.c - the node as a peer of OTP `pg` scopes: families of ports (pg.h).
 *
 * Each configured scope is a service port registered under the scope's
 * name. It speaks pg's protocol version 0, the one OTP 25 to 29 all speak
 * (OTP 29's data_publisher keeps speaking it to a peer that discovered it
 * with the 2-tuple), and never sends a scope anything else: an OTP scope
 * crashes on a message it does not handle.
 *
 *   node up               -> {discover, Self} to {Scope, Node}
 *   {discover, P [, _]}   -> '$gen_cast' {sync, Self, [{Group, Pids}]} to P
 *                            (our local members) unless P had it; P new:
 *                            monitor it and
 *                            send it {discover, Self} too, unless its node
 *                            was sent one since it came up
 *   sync (cast or plain)  -> P's members replaced (P new: monitored); our
 *                            sync to P if it has not had one
 *   {join, P, G, PidOrPids}, {leave, P, PidOrPids, Groups}
 *                         -> P's members changed (P unknown: dropped)
 *   P's monitor fires     -> P's members gone (noconnection included)
 *   local join / leave    -> {join, Self, G, Pid} / {leave, Self, Pid, [G]}
 *   local port dies       -> {leave, Self, Pid, [G...]} (a G per membership)
 *
 * The C node is hidden, so Erlang's pg never discovers it: it discovers
 * them itself, on every connection. Joins and leaves go only to the peers
 * that got our sync (after their discover): an OTP 25 to 28 scope crashes
 * on a leave for a group it does not know of us (maps:get in
 * leave_remote), and everything we send a peer after its sync is in order
 * with it.
 *
 * Received messages are checked whole before anything changes: the sender
 * must be on the node of the peer pid it names, members must be pids of
 * that node, group terms at most pg_max_group_term bytes, remote members
 * in all at most pg_max_members, the names of groups peers made at most
 * pg_max_group_names bytes (aemp_node_config; docs/security.md). Anything
 * else is logged (escaped) and dropped.
 *
 * Families: groups that are atoms or binaries belong to the family of
 * their text. Per family a table counts each pid's memberships over every
 * scope and group; a change is a batch that notes the counts it touches
 * and, once complete, tells the watchers of each pid whose count went
 * from 0 or to 0.
 */
#include "pg.h"

#include "../util/hash.h"

#include <stdio.h>
#include <stdlib.h>

#define PG_MAX_SCOPES 16
#define PG_MAX_FAMILY 1000 /* bytes of a family name */
/* The defaults of aemp_node_config's pg settings (0 there) */
#define PG_DEFAULT_MAX 100000         /* pg_max_members: remote members held, all scopes */
#define PG_DEFAULT_GROUP 1024         /* pg_max_group_term: bytes of a group term we keep */
#define PG_MAX_GROUP_TERM (16u << 20) /* the most pg_max_group_term may be */
/* pg_max_group_names: bytes of the names of the groups peers made here, all scopes */
#define PG_DEFAULT_NAMES (16u << 20)
#define PG_DEFAULT_REDISCOVER_MS 5000 /* pg_rediscover_ms */
#define PG_MAX_REDISCOVER_MS 3600000  /* the most pg_rediscover_ms may be */
#define PG_LOUD_DROPS 20              /* dropped messages logged as warnings */
#define PG_RESTART_MS 100             /* after a peer's scope died, its node still up */

struct fam;

struct member {
    aemp_addr pid;
    uint32_t peer; /* the peer it came from, 0: a local port */
};

struct group {
    char *key; /* canonical: 'a' atom text (UTF-8), 'b' binary, 't' other term */
    size_t klen;
    aemp_buf term;   /* encoded group, as we send it */
    struct fam *fam; /* family of an atom or binary group, or NULL */
    size_t charged;  /* klen when a peer made it (pg_max_group_names), or 0 */
    struct member *m;
    size_t n, cap;
};

struct peer {
    struct peer *next;
    aemp_addr pid;
    aemp_addr mref;
    uint32_t id;
    size_t members; /* entries it holds */
    bool synced;    /* it got our sync: our joins and leaves go to it */
};

/* A local port's memberships in a scope, a group per membership. */
struct local {
    struct group **g;
    size_t n, cap;
};

struct scope {
    struct aemp__pg *pg;
    char name[AEMP_MAXATOMLEN + 1];
    aemp_port port;
    aemp_addr self;
    aemp__map groups; /* key -> struct group */
    struct peer *peers;
    uint32_t next_peer;
    aemp__idmap locals; /* port id -> struct local */
    uint64_t timer;     /* the next rediscovery, 0: none */
    aemp__map asked;    /* node handles sent {discover, Self} while up */
};

/* A pid's memberships in a family, over all scopes and groups. */
struct cnt {
    aemp_addr pid;
    uint32_t count : 30; /* 0: a hole (its pid kept for the batch's events),
                          * or inside a batch a count that goes at its end */
    uint32_t noted : 1;  /* in the running batch's list */
    uint32_t told : 1;   /* an event of an ended batch, still to be told */
};

/* A slot of a family's index: linear probing over the counts. */
struct slot {
    uint32_t at;  /* the count's index + 1; 0: empty */
    uint32_t tag; /* the pid's hash (its low bits are the home slot) */
};

/* A family: its counts in an array (no allocation per member; a count
 * keeps its index while it lives, so a batch notes indexes), found by pid
 * through an open-addressing index. */
struct fam {
    char *text;
    size_t len;
    struct cnt *e;   /* counts and holes, in order of arrival */
    size_t ne, cape; /* entries used (holes included), allocated */
    size_t members;  /* counts in the index (the family's members after a batch) */
    size_t holes;
    struct slot *ix;
    size_t ixcap;      /* a power of two, at least twice members; or 0 */
    struct fam *dirty; /* next in pg->dirty; dirty itself when last */
};

struct watch {
    struct watch *next;
    uint64_t id;
    char *family; /* NULL: all */
    size_t flen;
    aemp__pg_watch_fn fn;
    void *arg;
    bool dead;
};

/* Counts a batch changed, then the events they make: f->e[i .. i + n),
 * more than one only for counts the batch made one after the other. */
struct touched {
    struct fam *f;
    uint32_t i, n;
    uint32_t before; /* the count before the batch; at the end: EV_* */
};

enum { EV_NONE, EV_JOINED, EV_LEFT };

struct aemp__pg {
    aemp_node *n;
    struct scope *scopes;
    size_t nscopes;
    aemp__map families; /* text -> struct fam */
    size_t remote, max_remote;
    size_t group_bytes; /* charged by the groups peers made */
    size_t max_names;   /* the most group_bytes may be */
    size_t max_group;   /* bytes of a group term a peer may name */
    /* Every this often, discover the scope again on each node up that has
     * no peer in it: a scope started there after the connection, or
     * restarted (an Erlang scope discovers only visible nodes, never this
     * hidden one). */
    uint64_t rediscover_ms;
    struct watch *watches;
    uint64_t next_watch;
    int firing;
    struct touched *t; /* the running batch's touched counts */
    size_t nt, capt;
    /* Families a batch touched, to free once empty or compact once full
     * of holes: after the last events are told (until then the events
     * read their pids and text) */
    struct fam *dirty;
    aemp__sub *sub;
    uint64_t drops;
    bool closing;
};

static struct aemp__pg *PG(aemp_node *n)
{
    return n->svc ? n->svc->pg : NULL;
}

/* ------------------------------------------------------------------ */
/* Text                                                               */
/* ------------------------------------------------------------------ */

/* Valid UTF-8 without NUL; *chars counts the characters. */
static bool utf8_ok(const char *s, size_t n, size_t *chars)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, k = 0;
    while (i < n) {
        unsigned c = u[i];
        size_t len;
        uint32_t cp;
        if (c == 0) return false;
        if (c < 0x80) {
            len = 1;
            cp = c;
        } else if ((c & 0xE0) == 0xC0) {
            len = 2;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (n - i < len) return false;
        for (size_t j = 1; j < len; j++) {
            if ((u[i + j] & 0xC0) != 0x80) return false;
            cp = cp << 6 | (u[i + j] & 0x3F);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += len;
        k++;
    }
    if (chars) *chars = k;
    return true;
}

static bool family_ok(const char *family)
{
    if (!family) return false;
    size_t n = strlen(family);
    return n > 0 && n <= PG_MAX_FAMILY && utf8_ok(family, n, NULL);
}

/* A term printed for a log line (the log escapes what is not printable). */
static void print(const aemp_term *t, char *out, size_t size)
{
    if (aemp_term_print(t, out, size) < 0) aemp__strlcpy(out, "(unprintable)", size);
}

static void drop(struct scope *s, const char *why, const aemp_term *msg)
{
    struct aemp__pg *pg = s->pg;
    char text[256];
    print(msg, text, sizeof text);
    pg->drops++;
    if (pg->drops <= PG_LOUD_DROPS)
        AEMP_LOGW("pg %s: dropped a message (%s): %s%s", s->name, why, text,
                  pg->drops == PG_LOUD_DROPS ? " (further drops are logged at info level)" : "");
    else
        AEMP_LOGI("pg %s: dropped a message (%s): %s", s->name, why, text);
}

/* ------------------------------------------------------------------ */
/* Families and batches                                               */
/* ------------------------------------------------------------------ */

/* Keyed (a peer chooses its pids: util/hash.h). A member is a pid: ID,
 * Serial, node and creation are all of it (w[2..4] are 0). */
static uint32_t pid_hash(const aemp_addr *a)
{
    uint32_t f[4] = {a->w[0], a->w[1], a->node, a->creation};
    uint64_t h = aemp__hash_keyed(f, sizeof f);
    return (uint32_t)(h ^ (h >> 32));
}

/* The slot of pid in f's index, or of the empty slot that ends its probe. */
static size_t fam_slot(const struct fam *f, const aemp_addr *pid, uint32_t tag)
{
    size_t mask = f->ixcap - 1, i = tag & mask;
    while (f->ix[i].at &&
           (f->ix[i].tag != tag || memcmp(&f->e[f->ix[i].at - 1].pid, pid, sizeof *pid) != 0))
        i = (i + 1) & mask;
    return i;
}

/* An index of cap slots for f's counts. */
static int fam_index(struct fam *f, size_t cap)
{
    struct slot *ix = calloc(cap, sizeof *ix);
    if (!ix) return AEMP_ENOMEM;
    for (size_t i = 0; i < f->ixcap; i++) {
        if (!f->ix[i].at) continue;
        size_t j = f->ix[i].tag & (cap - 1);
        while (ix[j].at)
            j = (j + 1) & (cap - 1);
        ix[j] = f->ix[i];
    }
    free(f->ix);
    f->ix = ix;
    f->ixcap = cap;
    return 0;
}

/* Room in f for more new counts (a sync sizes the table once). */
static int fam_reserve(struct fam *f, size_t more)
{
    if (more > UINT32_MAX - 1 - f->ne) return AEMP_ENOMEM;
    if (aemp__reserve(&f->e, f->ne + more, &f->cape, sizeof *f->e)) return AEMP_ENOMEM;
    size_t want = 2 * (f->members + more);
    if (want <= f->ixcap) return 0;
    size_t cap = f->ixcap ? f->ixcap : 16;
    while (cap < want)
        cap *= 2;
    return fam_index(f, cap);
}

/* Take count at out of f's index (backward-shift deletion): a hole now,
 * which keeps its pid until f is compacted. */
static void fam_remove(struct fam *f, uint32_t at)
{
    struct cnt *c = &f->e[at];
    size_t mask = f->ixcap - 1, i = fam_slot(f, &c->pid, pid_hash(&c->pid));
    f->ix[i].at = 0;
    for (size_t j = (i + 1) & mask; f->ix[j].at; j = (j + 1) & mask) {
        size_t home = f->ix[j].tag & mask;
        /* j's entry stays unless its home is cyclically outside (i, j] */
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (stays) continue;
        f->ix[i] = f->ix[j];
        f->ix[j].at = 0;
        i = j;
    }
    c->count = 0;
    c->noted = 0;
    f->members--;
    f->holes++;
}

/* Close the holes of f (no batch running, no events pending). */
static void fam_compact(struct fam *f)
{
    size_t k = 0;
    for (size_t i = 0; i < f->ne; i++)
        if (f->e[i].count) f->e[k++] = f->e[i];
    f->ne = k;
    f->holes = 0;
    memset(f->ix, 0, f->ixcap * sizeof *f->ix);
    size_t mask = f->ixcap - 1;
    for (size_t i = 0; i < k; i++) {
        uint32_t tag = pid_hash(&f->e[i].pid);
        size_t j = tag & mask;
        while (f->ix[j].at)
            j = (j + 1) & mask;
        f->ix[j] = (struct slot){(uint32_t)i + 1, tag};
    }
}

static struct fam *fam_get(struct aemp__pg *pg, const char *text, size_t len, bool make)
{
    struct fam *f = aemp__map_get(&pg->families, text, len);
    if (f || !make) return f;
    f = calloc(1, sizeof *f);
    if (!f) return NULL;
    f->text = malloc(len + 1);
    if (!f->text) {
        free(f);
        return NULL;
    }
    memcpy(f->text, text, len);
    f->text[len] = 0;
    f->len = len;
    if (aemp__map_put(&pg->families, text, len, f)) {
        free(f->text);
        free(f);
        return NULL;
    }
    /* swept at the batch's end: freed if it got no member */
    f->dirty = pg->dirty ? pg->dirty : f;
    pg->dirty = f;
    return f;
}

/* Count one membership of pid in f more (d 1) or less (d -1); tag is
 * pid_hash(pid). */
static int fam_add(struct aemp__pg *pg, struct fam *f, const aemp_addr *pid, uint32_t tag, int d)
{
    size_t slot = f->ixcap ? fam_slot(f, pid, tag) : 0;
    uint32_t at;
    if (f->ixcap && f->ix[slot].at) {
        at = f->ix[slot].at - 1;
    } else {
        if (d < 0) return 0;
        if (f->ne == f->cape || 2 * (f->members + 1) > f->ixcap) {
            if (fam_reserve(f, 1)) return AEMP_ENOMEM;
            slot = fam_slot(f, pid, tag);
        }
        at = (uint32_t)f->ne++;
        f->e[at] = (struct cnt){.pid = *pid};
        f->ix[slot] = (struct slot){at + 1, tag};
        f->members++;
    }
    struct cnt *c = &f->e[at];
    if (d > 0 && c->count == 0x3FFFFFFF) return AEMP_ENOMEM;
    if (!c->noted) {
        struct touched *last = pg->nt ? &pg->t[pg->nt - 1] : NULL;
        if (last && last->f == f && last->before == 0 && c->count == 0 && last->i + last->n == at) {
            last->n++; /* made right after the last: a sync's members */
        } else if (aemp__grow(&pg->t, pg->nt, &pg->capt, sizeof *pg->t, 16)) {
            /* not noted: forget a count just made */
            if (c->count == 0) fam_remove(f, at);
            return AEMP_ENOMEM;
        } else {
            pg->t[pg->nt++] = (struct touched){f, at, 1, c->count};
        }
        c->noted = 1;
        if (!f->dirty) {
            f->dirty = pg->dirty ? pg->dirty : f;
            pg->dirty = f;
        }
    }
    if (d > 0)
        c->count++;
    else if (c->count)
        c->count--;
    return 0;
}

static void begin(struct aemp__pg *pg)
{
    pg->nt = 0;
}

static void fam_free(struct fam *f)
{
    free(f->e);
    free(f->ix);
    free(f->text);
    free(f);
}

/* Free the families batches left empty, compact those full of holes. */
static void sweep(struct aemp__pg *pg)
{
    struct fam *f = pg->dirty;
    pg->dirty = NULL;
    while (f) {
        struct fam *next = f->dirty == f ? NULL : f->dirty;
        f->dirty = NULL;
        if (f->members == 0) {
            aemp__map_del(&pg->families, f->text, f->len);
            fam_free(f);
        } else if (f->holes > 16 && f->holes > f->members) {
            fam_compact(f);
        }
        f = next;
    }
}

/* End a batch: forget empty counts, tell the watchers, then free empty
 * families. The list of changes is the batch's own while they are told
 * (a watcher may start batches); a count's index holds until the sweep,
 * which waits for the last events of batches started by watchers. */
static void end(struct aemp__pg *pg)
{
    struct touched *t = pg->t;
    size_t nt = pg->nt, cap = pg->capt, nev = 0;
    for (size_t i = 0; i < nt; i++) {
        uint32_t before = t[i].before, ev = EV_NONE;
        for (uint32_t k = t[i].i; k < t[i].i + t[i].n; k++) {
            struct cnt *c = &t[i].f->e[k];
            ev = (before == 0) == (c->count == 0) ? EV_NONE : c->count ? EV_JOINED : EV_LEFT;
            c->noted = 0;
            c->told = ev != EV_NONE && pg->watches;
            nev += c->told;
            if (c->count == 0) fam_remove(t[i].f, k);
        }
        /* a run is of counts made by the batch: joined, or no event */
        t[i].before = t[i].n > 1 ? EV_JOINED : ev;
    }
    pg->t = NULL;
    pg->nt = pg->capt = 0;
    if (nev) {
        pg->firing++;
        for (size_t i = 0; i < nt; i++) {
            struct fam *f = t[i].f;
            for (uint32_t k = t[i].i; k < t[i].i + t[i].n; k++) {
                if (!f->e[k].told) continue;
                f->e[k].told = 0;
                aemp_addr pid = f->e[k].pid;
                for (struct watch *w = pg->watches; w; w = w->next) {
                    if (w->dead || pg->closing) continue;
                    if (w->family && (w->flen != f->len || memcmp(w->family, f->text, f->len)))
                        continue;
                    w->fn(pg->n, f->text, f->len, &pid, t[i].before == EV_JOINED, w->arg);
                }
            }
        }
        if (--pg->firing == 0) {
            for (struct watch **pw = &pg->watches; *pw;) {
                struct watch *w = *pw;
                if (w->dead) {
                    *pw = w->next;
                    free(w->family);
                    free(w);
                } else {
                    pw = &w->next;
                }
            }
        }
    }
    if (!pg->firing) sweep(pg);
    /* the list's memory serves the next batch */
    if (!pg->t) {
        pg->t = t;
        pg->capt = cap;
    } else {
        free(t);
    }
}

/* ------------------------------------------------------------------ */
/* Groups                                                             */
/* ------------------------------------------------------------------ */

static int put_tuple(aemp_buf *b, uint32_t arity)
{
    int rc = aemp__buf_put_u8(b, AEMP__EXT_SMALL_TUPLE);
    return rc ? rc : aemp__buf_put_u8(b, (uint8_t)arity);
}

static int put_atom(aemp_buf *b, const char *s)
{
    return aemp__enc_atom_text(b, s, strlen(s));
}

static int put_list(aemp_buf *b, uint32_t n)
{
    if (n == 0) return aemp__buf_put_u8(b, AEMP__EXT_NIL);
    int rc = aemp__buf_put_u8(b, AEMP__EXT_LIST);
    return rc ? rc : aemp__buf_put_u32(b, n);
}

static int put_binary(aemp_buf *b, const void *p, size_t n)
{
    int rc = aemp__buf_put_u8(b, AEMP__EXT_BINARY);
    if (!rc) rc = aemp__buf_put_u32(b, (uint32_t)n);
    if (!rc) rc = aemp__buf_append(b, p, n);
    return rc;
}

/* The canonical key and encoding of a group term: atoms (any encoding) and
 * binaries by their text, anything else by its bytes. key holds 1 +
 * max bytes. 0, or AEMP_ETOOBIG / AEMP_ENOMEM. */
static int group_key(const aemp_term *t, size_t max, char *key, size_t *klen, aemp_buf *enc)
{
    const char *s;
    size_t n, total;
    int latin1;
    if (t->len > max) return AEMP_ETOOBIG;
    if (aemp__term_atom_view(t->data, t->len, &s, &n, &latin1, &total) == 0) {
        size_t k = 0;
        key[k++] = 'a';
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)s[i];
            if (latin1 && c >= 0x80) {
                if (k + 2 > 1 + max) return AEMP_ETOOBIG;
                key[k++] = (char)(0xC0 | c >> 6);
                key[k++] = (char)(0x80 | (c & 0x3F));
            } else {
                if (k + 1 > 1 + max) return AEMP_ETOOBIG;
                key[k++] = (char)c;
            }
        }
        *klen = k;
        return enc ? aemp__enc_atom_text(enc, key + 1, k - 1) : 0;
    }
    if ((unsigned char)t->data[0] == AEMP__EXT_BINARY) {
        aemp_cursor c = aemp_cursor_of(t);
        const void *p;
        if (aemp_get_binary(&c, &p, &n) == 0) {
            key[0] = 'b';
            memcpy(key + 1, p, n);
            *klen = n + 1;
            return enc ? put_binary(enc, p, n) : 0;
        }
    }
    key[0] = 't';
    memcpy(key + 1, t->data, t->len);
    *klen = t->len + 1;
    return enc ? aemp__buf_append(enc, t->data, t->len) : 0;
}

/* The key of the group of a family: its atom (binary past 255 characters). */
static void family_key(const char *family, char type, char *key, size_t *klen)
{
    size_t n = strlen(family);
    key[0] = type;
    memcpy(key + 1, family, n);
    *klen = n + 1;
}

static char family_type(const char *family)
{
    size_t chars = 0;
    utf8_ok(family, strlen(family), &chars);
    return chars <= 255 ? 'a' : 'b';
}

static struct group *group_get(struct scope *s, const char *key, size_t klen)
{
    return aemp__map_get(&s->groups, key, klen);
}

/* The group of key, made if new (remote: by a peer, which counts against
 * pg_max_group_names); NULL, logged, when it cannot be made. */
static struct group *group_make(struct scope *s, const char *key, size_t klen, bool remote)
{
    struct group *g = group_get(s, key, klen);
    if (g) return g;
    if (remote && s->pg->group_bytes + klen > s->pg->max_names) {
        AEMP_LOGW("pg %s: names of groups from peers at the limit (pg_max_group_names %zu): a "
                  "group dropped",
                  s->name, s->pg->max_names);
        return NULL;
    }
    g = calloc(1, sizeof *g);
    if (!g || !(g->key = malloc(klen))) goto fail;
    memcpy(g->key, key, klen);
    g->klen = klen;
    int rc;
    if (key[0] == 'a')
        rc = aemp__enc_atom_text(&g->term, key + 1, klen - 1);
    else if (key[0] == 'b')
        rc = put_binary(&g->term, key + 1, klen - 1);
    else
        rc = aemp__buf_append(&g->term, key + 1, klen - 1);
    if (rc) goto fail;
    if ((key[0] == 'a' || key[0] == 'b') && klen > 1 && klen - 1 <= PG_MAX_FAMILY &&
        utf8_ok(key + 1, klen - 1, NULL) && !(g->fam = fam_get(s->pg, key + 1, klen - 1, true)))
        goto fail;
    if (aemp__map_put(&s->groups, key, klen, g)) goto fail;
    if (remote) {
        g->charged = klen;
        s->pg->group_bytes += klen;
    }
    return g;
fail:
    AEMP_LOGE("pg %s: out of memory: a group dropped", s->name);
    if (g) {
        aemp_buf_free(&g->term);
        free(g->key);
        free(g);
    }
    return NULL;
}

static void group_free(struct scope *s, struct group *g)
{
    s->pg->group_bytes -= g->charged;
    aemp__map_del(&s->groups, g->key, g->klen);
    aemp_buf_free(&g->term);
    free(g->key);
    free(g->m);
    free(g);
}

/* tag: pid_hash(pid) */
static int group_add_tag(struct scope *s, struct group *g, const aemp_addr *pid, uint32_t tag,
                         uint32_t peer)
{
    if (aemp__grow(&g->m, g->n, &g->cap, sizeof *g->m, 4)) return AEMP_ENOMEM;
    if (g->fam && fam_add(s->pg, g->fam, pid, tag, 1)) return AEMP_ENOMEM;
    g->m[g->n++] = (struct member){*pid, peer};
    return 0;
}

static int group_add(struct scope *s, struct group *g, const aemp_addr *pid, uint32_t peer)
{
    return group_add_tag(s, g, pid, pid_hash(pid), peer);
}

/* Remove one membership of pid from peer; false if there is none. The
 * group is freed when it is left empty. */
static bool group_del(struct scope *s, struct group *g, const aemp_addr *pid, uint32_t peer)
{
    for (size_t i = 0; i < g->n; i++) {
        if (g->m[i].peer != peer || !aemp_addr_equal(&g->m[i].pid, pid)) continue;
        if (g->fam) fam_add(s->pg, g->fam, pid, pid_hash(pid), -1);
        memmove(&g->m[i], &g->m[i + 1], (g->n - i - 1) * sizeof *g->m);
        if (--g->n == 0) group_free(s, g);
        return true;
    }
    return false;
}

/* ------------------------------------------------------------------ */
/* Sending                                                            */
/* ------------------------------------------------------------------ */

static void send_to(struct scope *s, const aemp_addr *to, aemp_buf *msg, const char *what)
{
    aemp_term t = aemp_buf_term(msg);
    int rc = aemp_send(s->pg->n, s->port, to, &t);
    if (rc) {
        char who[300];
        aemp_addr_format(to, who, sizeof who);
        AEMP_LOGW("pg %s: %s to %s lost: %s", s->name, what, who, aemp_strerror(rc));
    }
}

static void send_discover(struct scope *s, const aemp_addr *to)
{
    aemp_buf b = AEMP_BUF_INIT;
    /* a peer of a node asked already answers that: no second discover */
    if (aemp__map_put(&s->asked, &to->node, sizeof to->node, (void *)1))
        AEMP_LOGD("pg %s: out of memory noting a discover", s->name);
    if (put_tuple(&b, 2) || put_atom(&b, "discover") || aemp__enc_addr(&b, &s->self))
        AEMP_LOGE("pg %s: out of memory: discover not sent", s->name);
    else
        send_to(s, to, &b, "discover");
    aemp_buf_free(&b);
}

struct sync_ctx {
    aemp_buf *b;
    uint32_t groups;
    int rc;
};

static void sync_group(const char *key, void *val, void *arg)
{
    struct sync_ctx *x = arg;
    struct group *g = val;
    uint32_t local = 0;
    for (size_t i = 0; i < g->n; i++)
        if (g->m[i].peer == 0) local++;
    if (!local || x->rc) return;
    aemp_term gt = aemp_buf_term(&g->term);
    int rc = put_tuple(x->b, 2);
    if (!rc) rc = aemp_buf_put_term(x->b, &gt);
    if (!rc) rc = put_list(x->b, local);
    for (size_t i = 0; i < g->n && !rc; i++)
        if (g->m[i].peer == 0) rc = aemp__enc_addr(x->b, &g->m[i].pid);
    if (!rc) rc = aemp__buf_put_u8(x->b, AEMP__EXT_NIL);
    x->rc = rc;
    x->groups++;
}

/* '$gen_cast' {sync, Self, [{Group, LocalPids}]} to peer. */
static void send_sync(struct scope *s, const aemp_addr *to)
{
    aemp_buf b = AEMP_BUF_INIT;
    int rc = put_tuple(&b, 2);
    if (!rc) rc = put_atom(&b, "$gen_cast");
    if (!rc) rc = put_tuple(&b, 3);
    if (!rc) rc = put_atom(&b, "sync");
    if (!rc) rc = aemp__enc_addr(&b, &s->self);
    size_t at = b.len;
    if (!rc) rc = put_list(&b, 1); /* the count is set below */
    struct sync_ctx x = {&b, 0, rc};
    if (!rc) aemp__map_each(&s->groups, sync_group, &x);
    rc = x.rc;
    if (!rc && x.groups == 0) {
        b.len = at;
        rc = aemp__buf_put_u8(&b, AEMP__EXT_NIL);
    } else if (!rc) {
        aemp__put_u32(b.data + at + 1, x.groups);
        rc = aemp__buf_put_u8(&b, AEMP__EXT_NIL);
    }
    if (rc)
        AEMP_LOGE("pg %s: out of memory: sync not sent", s->name);
    else
        send_to(s, to, &b, "sync");
    aemp_buf_free(&b);
}

/* {join, Self, Group, Pid} or {leave, Self, Pid, Groups} to every synced
 * peer (encoded once). */
static void broadcast(struct scope *s, aemp_buf *msg, const char *what)
{
    for (struct peer *p = s->peers; p; p = p->next)
        if (p->synced) send_to(s, &p->pid, msg, what);
}

static void send_join(struct scope *s, struct group *g, const aemp_addr *pid)
{
    aemp_buf b = AEMP_BUF_INIT;
    aemp_term gt = aemp_buf_term(&g->term);
    if (put_tuple(&b, 4) || put_atom(&b, "join") || aemp__enc_addr(&b, &s->self) ||
        aemp_buf_put_term(&b, &gt) || aemp__enc_addr(&b, pid))
        AEMP_LOGE("pg %s: out of memory: join not sent", s->name);
    else
        broadcast(s, &b, "join");
    aemp_buf_free(&b);
}

/* {leave, Self, Pid, [G...]}: groups' terms, one per membership. */
static void send_leave(struct scope *s, const aemp_addr *pid, aemp_buf *const *groups, size_t n)
{
    aemp_buf b = AEMP_BUF_INIT;
    int rc = put_tuple(&b, 4);
    if (!rc) rc = put_atom(&b, "leave");
    if (!rc) rc = aemp__enc_addr(&b, &s->self);
    if (!rc) rc = aemp__enc_addr(&b, pid);
    if (!rc) rc = put_list(&b, (uint32_t)n);
    for (size_t i = 0; i < n && !rc; i++) {
        aemp_term gt = aemp_buf_term(groups[i]);
        rc = aemp_buf_put_term(&b, &gt);
    }
    if (!rc && n) rc = aemp__buf_put_u8(&b, AEMP__EXT_NIL);
    if (rc)
        AEMP_LOGE("pg %s: out of memory: leave not sent", s->name);
    else
        broadcast(s, &b, "leave");
    aemp_buf_free(&b);
}

/* ------------------------------------------------------------------ */
/* Peers                                                              */
/* ------------------------------------------------------------------ */

static struct peer *peer_find(struct scope *s, const aemp_addr *pid)
{
    for (struct peer *p = s->peers; p; p = p->next)
        if (aemp_addr_equal(&p->pid, pid)) return p;
    return NULL;
}

struct strip_ctx {
    struct scope *s;
    uint32_t peer;
    size_t removed;
};

static void strip_group(const char *key, void *val, void *arg)
{
    struct strip_ctx *x = arg;
    struct group *g = val;
    size_t k = 0;
    for (size_t i = 0; i < g->n; i++) {
        if (g->m[i].peer == x->peer) {
            if (g->fam) fam_add(x->s->pg, g->fam, &g->m[i].pid, pid_hash(&g->m[i].pid), -1);
            x->removed++;
        } else {
            g->m[k++] = g->m[i];
        }
    }
    g->n = k;
    if (k == 0) group_free(x->s, g);
}

/* Remove every member a peer gave us (inside a batch). */
static void peer_strip(struct scope *s, struct peer *p)
{
    struct strip_ctx x = {s, p->id, 0};
    aemp__map_each(&s->groups, strip_group, &x);
    s->pg->remote -= x.removed < s->pg->remote ? x.removed : s->pg->remote;
    p->members = 0;
}

static void peer_unlink(struct scope *s, struct peer *p)
{
    for (struct peer **pp = &s->peers; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
}

static void on_peer_down(aemp_node *n, const aemp_addr *target, const aemp_term *reason, void *arg);

/* Forget a peer (inside a batch): its members, its monitor. */
static void peer_drop(struct scope *s, struct peer *p, bool demonitor)
{
    peer_strip(s, p);
    peer_unlink(s, p);
    if (demonitor) aemp_demonitor(s->pg->n, &p->mref);
    free(p);
}

/* The peer of pid, made and monitored if new (*fresh true). One peer per
 * node and scope: a new scope pid on a node replaces the old (a restarted
 * scope), which also bounds peers by connections. Inside a batch. */
static struct peer *peer_get(struct scope *s, const aemp_addr *pid, bool *fresh)
{
    *fresh = false;
    struct peer *p = peer_find(s, pid);
    if (p) return p;
    for (struct peer *q = s->peers; q; q = q->next) {
        if (q->pid.node == pid->node) {
            char who[300];
            aemp_addr_format(&q->pid, who, sizeof who);
            AEMP_LOGI("pg %s: scope %s replaced by a new one of its node", s->name, who);
            peer_drop(s, q, true);
            break;
        }
    }
    p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->pid = *pid;
    p->id = ++s->next_peer ? s->next_peer : ++s->next_peer;
    int rc = aemp_mon(s->pg->n, pid, on_peer_down, s, &p->mref);
    if (rc) {
        AEMP_LOGW("pg %s: cannot monitor a peer: %s", s->name, aemp_strerror(rc));
        free(p);
        return NULL;
    }
    p->next = s->peers;
    s->peers = p;
    *fresh = true;
    return p;
}

/* {discover, Self} to every node up that has no peer in this scope. */
static void rediscover(struct scope *s)
{
    aemp_node *n = s->pg->n;
    size_t up = aemp_up_nodes(n, NULL, 0);
    const char **names = up ? calloc(up, sizeof *names) : NULL;
    if (!names) return;
    up = aemp_up_nodes(n, names, up);
    for (size_t i = 0; i < up; i++) {
        uint32_t h = aemp__intern_find(names[i], strlen(names[i]));
        bool known = false;
        for (struct peer *p = s->peers; p && !known; p = p->next)
            known = p->pid.node == h;
        aemp_addr to;
        if (!known && aemp_addr_name(&to, names[i], s->name) == 0) send_discover(s, &to);
    }
    free(names);
}

static void arm(struct scope *s, uint64_t ms);

static int on_timer(aemp_node *n, aemp_port self, void *arg)
{
    struct scope *s = arg;
    s->timer = 0;
    if (n->closing || s->pg->closing) return 0;
    rediscover(s);
    arm(s, s->pg->rediscover_ms);
    return 0;
}

/* The next rediscovery in ms (replacing the one set). */
static void arm(struct scope *s, uint64_t ms)
{
    aemp_node *n = s->pg->n;
    if (s->timer) aemp_timer_cancel(n, s->timer);
    s->timer = 0;
    int rc = aemp_after_call(n, ms, on_timer, s, &s->timer);
    if (rc && rc != AEMP_ECLOSED)
        AEMP_LOGW("pg %s: no timer for rediscovery: %s", s->name, aemp_strerror(rc));
}

static void on_peer_down(aemp_node *n, const aemp_addr *target, const aemp_term *reason, void *arg)
{
    struct scope *s = arg;
    struct aemp__pg *pg = PG(n);
    if (!pg || pg->closing) return;
    struct peer *p = peer_find(s, target);
    if (!p) return;
    if (aemp_log_get_level() >= AEMP_LOG_INFO) {
        char who[300], why[200];
        aemp_addr_format(target, who, sizeof who);
        print(reason, why, sizeof why);
        AEMP_LOGI("pg %s: peer %s gone (%s): its members leave", s->name, who, why);
    }
    begin(pg);
    peer_drop(s, p, false);
    end(pg);
    /* the scope died, not the connection: a new one may be there soon */
    aemp_cursor c = aemp_cursor_of(reason);
    char why[16];
    if (aemp_get_atom(&c, why, sizeof why) || strcmp(why, "noconnection") != 0)
        arm(s, PG_RESTART_MS);
}

/* ------------------------------------------------------------------ */
/* Received messages                                                  */
/* ------------------------------------------------------------------ */

/* A pid of the node of the sender (the peer's node), not ours. */
static bool peer_pid_ok(struct scope *s, const aemp_addr *pid, const aemp_addr *from)
{
    return from && from->kind == AEMP_ADDR_PID && pid->node == from->node &&
           pid->node != s->pg->n->name_h;
}

/* Reads the pids of one message: a peer's pids all name its node, so
 * the bytes of the last node atom read are kept with its handle, and a pid
 * whose atom has the same bytes is read without looking its text up
 * (aemp_get_pid() interns the node name of every pid). The bytes are the
 * message's: valid while it is handled. */
struct pidrd {
    const char *atom; /* the last pid's node atom, encoded */
    size_t alen;
    uint32_t node; /* its handle */
};

static int get_pid(aemp_cursor *c, struct pidrd *r, aemp_addr *a)
{
    const char *p = c->data + c->pos;
    size_t left = c->len - c->pos;
    if (left < 1) return AEMP_ENOMATCH;
    uint8_t tag = (uint8_t)p[0];
    if (tag != AEMP__EXT_NEW_PID && tag != AEMP__EXT_PID) return AEMP_ENOMATCH;
    size_t tail = tag == AEMP__EXT_PID ? 9 : 12;
    if (r->alen && left >= 1 + r->alen + tail && memcmp(p + 1, r->atom, r->alen) == 0) {
        const char *q = p + 1 + r->alen;
        memset(a, 0, sizeof *a);
        a->kind = AEMP_ADDR_PID;
        a->node = r->node;
        a->w[0] = aemp__get_u32(q);
        a->w[1] = aemp__get_u32(q + 4);
        /* the old format keeps 2 bits of creation, as ei reads it */
        a->creation = tag == AEMP__EXT_PID ? ((uint8_t)q[8] & 0x03u) : aemp__get_u32(q + 8);
        c->pos += 1 + r->alen + tail;
        return 0;
    }
    size_t at = c->pos;
    int rc = aemp_get_pid(c, a);
    if (rc) return rc;
    r->atom = c->data + at + 1;
    r->alen = c->pos - at - 1 - tail;
    r->node = a->node;
    return 0;
}

/* Read pid or [pid...] at c (all of node `node`), leaving c after it;
 * *start is where it began, *count the pids, *list whether a list. */
static int read_pids(aemp_cursor *c, struct pidrd *r, uint32_t node, aemp_cursor *start,
                     uint32_t *count, bool *list)
{
    aemp_addr a;
    uint32_t n;
    *start = *c;
    *list = false;
    if (get_pid(c, r, &a) == 0) {
        *count = 1;
        return a.node == node ? 0 : AEMP_EPROTO;
    }
    if (aemp_get_list(c, &n)) return AEMP_ENOMATCH;
    for (uint32_t i = 0; i < n; i++)
        if (get_pid(c, r, &a) || a.node != node) return AEMP_EPROTO;
    if (aemp_get_nil(c)) return AEMP_ENOMATCH;
    *count = n;
    *list = true;
    return 0;
}

/* Walk the pids read_pids() checked: open at start, then get_pid() count
 * times. */
static void pids_open(aemp_cursor *c)
{
    uint32_t n;
    if (c->pos < c->len && (uint8_t)c->data[c->pos] != AEMP__EXT_NEW_PID &&
        (uint8_t)c->data[c->pos] != AEMP__EXT_PID)
        aemp_get_list(c, &n);
}

static bool room(struct scope *s, size_t more)
{
    struct aemp__pg *pg = s->pg;
    if (pg->remote + more <= pg->max_remote) return true;
    AEMP_LOGW("pg %s: remote members at the limit (pg_max_members %zu): a change dropped", s->name,
              pg->max_remote);
    return false;
}

static void on_discover(struct scope *s, const aemp_addr *p)
{
    begin(s->pg);
    bool fresh;
    struct peer *peer = peer_get(s, p, &fresh);
    end(s->pg);
    if (!peer) return;
    /* A peer that got our sync has it, or will before anything else of
     * ours: it sent this discover before our sync came (a scope asks only
     * on its node up, or back when a discover comes from a scope it does
     * not know, and forgets one only when its pid goes, which makes a new
     * peer here). OTP's pg answers every discover: an Erlang scope that
     * answers our discover with its sync and a discover gets our members
     * once, not twice (half its cost to join a large group). */
    if (!fresh && peer->synced) return;
    send_sync(s, p);
    peer->synced = true;
    /* as OTP's pg: a new peer is asked back, unless its node was asked */
    if (fresh && !aemp__map_get(&s->asked, &p->node, sizeof p->node)) send_discover(s, p);
}

/* Room for more members in g (one growth for a sync's group). */
static int group_reserve(struct scope *s, struct group *g, size_t more)
{
    if (aemp__reserve(&g->m, g->n + more, &g->cap, sizeof *g->m)) return AEMP_ENOMEM;
    return g->fam ? fam_reserve(g->fam, more) : 0;
}

/* Add the np pids at *c (pid or list, checked by read_pids) to key's
 * group, from peer (inside a batch); *c is left after them. */
static void add_pids(struct scope *s, struct peer *peer, const char *key, size_t klen,
                     aemp_cursor *c, uint32_t np, struct pidrd *r)
{
    struct aemp__pg *pg = s->pg;
    bool list = c->pos < c->len && (uint8_t)c->data[c->pos] != AEMP__EXT_NEW_PID &&
                (uint8_t)c->data[c->pos] != AEMP__EXT_PID;
    uint32_t n;
    if (list) aemp_get_list(c, &n);
    struct group *grp = np ? group_make(s, key, klen, true) : NULL;
    if (grp && group_reserve(s, grp, np)) {
        AEMP_LOGE("pg %s: out of memory: members dropped", s->name);
        if (grp->n == 0) group_free(s, grp);
        grp = NULL;
    }
    /* a few pids at a time: their family slots are fetched together (a
     * sync's table is larger than the caches) */
    enum { AHEAD = 8 };
    aemp_addr a[AHEAD];
    uint32_t tag[AHEAD];
    for (uint32_t k = 0; k < np; k += AHEAD) {
        uint32_t m = np - k < AHEAD ? np - k : AHEAD;
        struct fam *f = grp ? grp->fam : NULL;
        for (uint32_t j = 0; j < m; j++) {
            get_pid(c, r, &a[j]);
            tag[j] = pid_hash(&a[j]);
#if defined(__GNUC__)
            if (f && f->ixcap) __builtin_prefetch(&f->ix[tag[j] & (f->ixcap - 1)]);
#endif
        }
        for (uint32_t j = 0; j < m && grp; j++) {
            if (group_add_tag(s, grp, &a[j], tag[j], peer->id)) {
                AEMP_LOGE("pg %s: out of memory: a member dropped", s->name);
                if (grp->n == 0) group_free(s, grp);
                grp = NULL;
                break;
            }
            peer->members++;
            pg->remote++;
        }
    }
    if (list) aemp_get_nil(c);
}

/* {sync, P, [{Group, Pids}]}: check it whole, then replace P's members. */
static void on_sync(struct scope *s, const aemp_addr *p, aemp_cursor groups, const aemp_term *msg)
{
    uint32_t n, np;
    size_t total = 0;
    aemp_cursor c = groups;
    struct pidrd r = {0};
    char *key = malloc(s->pg->max_group + 1);
    if (!key) return;
    if (aemp_get_list(&c, &n)) goto bad;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t ar;
        aemp_term g;
        aemp_cursor start;
        size_t klen;
        bool list;
        if (aemp_get_tuple(&c, &ar) || ar != 2 || aemp_get_term(&c, &g) ||
            group_key(&g, s->pg->max_group, key, &klen, NULL) ||
            read_pids(&c, &r, p->node, &start, &np, &list) || !list) /* Pids is a list */
            goto bad;
        total += np;
    }
    if (aemp_get_nil(&c)) goto bad;
    struct aemp__pg *pg = s->pg;
    begin(pg);
    bool fresh;
    struct peer *peer = peer_get(s, p, &fresh);
    if (!peer) goto out;
    peer_strip(s, peer);
    /* keep nothing of a peer that says more than we hold */
    if (!room(s, total)) goto out;
    c = groups;
    aemp_get_list(&c, &n);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t ar;
        aemp_term g;
        size_t klen;
        aemp_get_tuple(&c, &ar);
        aemp_get_term(&c, &g);
        group_key(&g, s->pg->max_group, key, &klen, NULL);
        aemp_cursor at = c;
        aemp_get_list(&at, &np);
        add_pids(s, peer, key, klen, &c, np, &r);
    }
out:
    end(pg);
    free(key);
    /* a peer that told us its members gets ours, even before its discover
     * (one that knew us already sends none): a sync is always safe */
    peer = peer_find(s, p);
    if (peer && !peer->synced) {
        send_sync(s, p);
        peer->synced = true;
    }
    return;
bad:
    free(key);
    drop(s, "a sync that is not {sync, Peer, [{Group, Pids}]} of that peer's pids", msg);
}

static void on_join(struct scope *s, const aemp_addr *p, aemp_cursor c, const aemp_term *msg)
{
    aemp_term g;
    aemp_cursor start;
    uint32_t np;
    size_t klen;
    bool list;
    struct pidrd r = {0};
    char *key = malloc(s->pg->max_group + 1);
    if (!key) return;
    if (aemp_get_term(&c, &g) || group_key(&g, s->pg->max_group, key, &klen, NULL) ||
        read_pids(&c, &r, p->node, &start, &np, &list)) {
        free(key);
        drop(s, "a join that is not {join, Peer, Group, PidOrPids} of that peer's pids", msg);
        return;
    }
    struct peer *peer = peer_find(s, p);
    if (!peer) {
        AEMP_LOGD("pg %s: a join from a peer not known (yet or any more): dropped", s->name);
    } else if (np && room(s, np)) {
        begin(s->pg);
        add_pids(s, peer, key, klen, &start, np, &r);
        end(s->pg);
    }
    free(key);
}

static void on_leave(struct scope *s, const aemp_addr *p, aemp_cursor c, const aemp_term *msg)
{
    aemp_cursor start, groups;
    uint32_t np, ng;
    size_t klen;
    bool list;
    struct pidrd r = {0};
    char *key = malloc(s->pg->max_group + 1);
    if (!key) return;
    if (read_pids(&c, &r, p->node, &start, &np, &list)) goto bad;
    groups = c;
    if (aemp_get_list(&c, &ng)) goto bad;
    for (uint32_t i = 0; i < ng; i++) {
        aemp_term g;
        if (aemp_get_term(&c, &g) || group_key(&g, s->pg->max_group, key, &klen, NULL)) goto bad;
    }
    if (aemp_get_nil(&c)) goto bad;
    struct peer *peer = peer_find(s, p);
    if (!peer) {
        AEMP_LOGD("pg %s: a leave from a peer not known (yet or any more): dropped", s->name);
        free(key);
        return;
    }
    begin(s->pg);
    c = groups;
    aemp_get_list(&c, &ng);
    for (uint32_t i = 0; i < ng; i++) {
        aemp_term g;
        aemp_get_term(&c, &g);
        group_key(&g, s->pg->max_group, key, &klen, NULL);
        aemp_cursor pc = start;
        pids_open(&pc);
        for (uint32_t k = 0; k < np; k++) {
            struct group *grp = group_get(s, key, klen);
            if (!grp) break;
            aemp_addr a;
            get_pid(&pc, &r, &a);
            if (group_del(s, grp, &a, peer->id)) {
                peer->members--;
                s->pg->remote--;
            }
        }
    }
    end(s->pg);
    free(key);
    return;
bad:
    free(key);
    drop(s, "a leave that is not {leave, Peer, PidOrPids, [Group]} of that peer's pids", msg);
}

static void on_msg(aemp_node *n, aemp_port self, const aemp_term *msg, const aemp_addr *from,
                   void *arg)
{
    struct scope *s = arg;
    if (!PG(n) || s->pg->closing) return;
    aemp_cursor c = aemp_cursor_of(msg), inner;
    uint32_t ar, iar;
    char tag[16];
    aemp_addr p;
    if (aemp_get_tuple(&c, &ar) || ar < 2 || aemp_get_atom(&c, tag, sizeof tag)) {
        drop(s, "not pg's", msg);
        return;
    }
    if (strcmp(tag, "$gen_cast") == 0) {
        /* '$gen_cast' {sync, P, Groups}: the only cast pg sends */
        inner = c;
        if (ar != 2 || aemp_get_tuple(&inner, &iar) || iar != 3 ||
            aemp_get_atom(&inner, tag, sizeof tag) || strcmp(tag, "sync") != 0) {
            drop(s, "a cast that is not pg's sync", msg);
            return;
        }
        c = inner;
        ar = 3;
    }
    if (aemp_get_pid(&c, &p) || !peer_pid_ok(s, &p, from)) {
        drop(s, "no peer pid of the sender's node", msg);
        return;
    }
    if (strcmp(tag, "discover") == 0 && (ar == 2 || ar == 3))
        on_discover(s, &p);
    else if (strcmp(tag, "sync") == 0 && ar == 3)
        on_sync(s, &p, c, msg);
    else if (strcmp(tag, "join") == 0 && ar == 4)
        on_join(s, &p, c, msg);
    else if (strcmp(tag, "leave") == 0 && ar == 4)
        on_leave(s, &p, c, msg);
    else
        drop(s, "not pg's", msg);
}

/* ------------------------------------------------------------------ */
/* Local members                                                      */
/* ------------------------------------------------------------------ */

static struct scope *scope_of(struct aemp__pg *pg, const char *name)
{
    for (size_t i = 0; i < pg->nscopes; i++)
        if (strcmp(pg->scopes[i].name, name) == 0) return &pg->scopes[i];
    return NULL;
}

static int local_join(struct scope *s, uint64_t port, const aemp_addr *pid, const char *key,
                      size_t klen)
{
    struct local *l = aemp__idmap_get(&s->locals, port);
    if (!l) {
        if (!(l = calloc(1, sizeof *l))) return AEMP_ENOMEM;
        if (aemp__idmap_put(&s->locals, port, l)) {
            free(l);
            return AEMP_ENOMEM;
        }
    }
    if (aemp__grow(&l->g, l->n, &l->cap, sizeof *l->g, 2)) return AEMP_ENOMEM;
    struct group *g = group_make(s, key, klen, false);
    if (!g || group_add(s, g, pid, 0)) {
        if (g && g->n == 0) group_free(s, g);
        if (l->n == 0) {
            aemp__idmap_del(&s->locals, port);
            free(l->g);
            free(l);
        }
        return AEMP_ENOMEM;
    }
    l->g[l->n++] = g;
    send_join(s, g, pid);
    return 0;
}

int aemp_pg_join(aemp_node *n, const char *family, aemp_port port)
{
    struct aemp__pg *pg = n ? PG(n) : NULL;
    aemp_addr pid;
    if (!n || !family_ok(family)) return AEMP_EINVAL;
    if (n->closing) return AEMP_ECLOSED;
    if (!pg || !pg->nscopes) return AEMP_ENOTSUP;
    int rc = aemp_port_addr(n, port, &pid);
    if (rc) return rc;
    aemp__port *pp = aemp__proc_port(n, port.id);
    if (!pp || pp->dying || pp->dead) return AEMP_ENOENT;
    char key[PG_MAX_FAMILY + 2];
    size_t klen;
    family_key(family, family_type(family), key, &klen);
    begin(pg);
    for (size_t i = 0; i < pg->nscopes && !rc; i++)
        rc = local_join(&pg->scopes[i], port.id, &pid, key, klen);
    end(pg);
    return rc;
}

/* Remove membership i of local l (inside a batch); leave announced. */
static void local_drop(struct scope *s, uint64_t port, struct local *l, size_t i,
                       const aemp_addr *pid)
{
    struct group *g = l->g[i];
    aemp_buf term = AEMP_BUF_INIT;
    aemp_buf *tp = &term;
    bool sent = aemp__buf_append(&term, g->term.data, g->term.len) == 0;
    group_del(s, g, pid, 0);
    memmove(&l->g[i], &l->g[i + 1], (l->n - i - 1) * sizeof *l->g);
    if (--l->n == 0) {
        aemp__idmap_del(&s->locals, port);
        free(l->g);
        free(l);
    }
    if (sent)
        send_leave(s, pid, &tp, 1);
    else
        AEMP_LOGE("pg %s: out of memory: leave not sent", s->name);
    aemp_buf_free(&term);
}

int aemp_pg_leave(aemp_node *n, const char *family, aemp_port port)
{
    struct aemp__pg *pg = n ? PG(n) : NULL;
    if (!n || !family_ok(family)) return AEMP_EINVAL;
    if (n->closing) return AEMP_ECLOSED;
    if (!pg || !pg->nscopes) return AEMP_ENOTSUP;
    char key[PG_MAX_FAMILY + 2];
    size_t klen;
    family_key(family, family_type(family), key, &klen);
    aemp_addr pid;
    aemp__addr_pid(&pid, n->name_h, n->creation, port.id);
    bool found = false;
    begin(pg);
    for (size_t k = 0; k < pg->nscopes; k++) {
        struct scope *s = &pg->scopes[k];
        struct local *l = aemp__idmap_get(&s->locals, port.id);
        for (size_t i = 0; l && i < l->n; i++) {
            if (l->g[i]->klen == klen && memcmp(l->g[i]->key, key, klen) == 0) {
                local_drop(s, port.id, l, i, &pid);
                found = true;
                break;
            }
        }
    }
    end(pg);
    return found ? 0 : AEMP_ENOENT;
}

/* A local port died: it leaves every group, one leave per scope. */
static void port_exit(struct aemp__pg *pg, uint64_t port)
{
    aemp_addr pid;
    aemp__addr_pid(&pid, pg->n->name_h, pg->n->creation, port);
    for (size_t k = 0; k < pg->nscopes; k++) {
        struct scope *s = &pg->scopes[k];
        struct local *l = aemp__idmap_del(&s->locals, port);
        if (!l) continue;
        aemp_buf *terms = calloc(l->n, sizeof *terms);
        aemp_buf **tp = calloc(l->n, sizeof *tp);
        size_t nt = 0;
        begin(pg);
        for (size_t i = 0; i < l->n; i++) {
            if (terms && tp &&
                aemp__buf_append(&terms[nt], l->g[i]->term.data, l->g[i]->term.len) == 0) {
                tp[nt] = &terms[nt];
                nt++;
            }
            group_del(s, l->g[i], &pid, 0);
        }
        end(pg);
        if (nt == l->n)
            send_leave(s, &pid, tp, nt);
        else
            AEMP_LOGE("pg %s: out of memory: the leave of a dead port not sent", s->name);
        for (size_t i = 0; terms && i < l->n; i++)
            aemp_buf_free(&terms[i]);
        free(terms);
        free(tp);
        free(l->g);
        free(l);
    }
}

/* ------------------------------------------------------------------ */
/* Reading members                                                    */
/* ------------------------------------------------------------------ */

struct collect {
    aemp_addr *out;
    size_t max, n;
    aemp__map seen;
    int rc;
    bool distinct; /* each pid comes once: no need for seen */
};

static void collect_one(struct collect *x, const aemp_addr *pid)
{
    if (x->distinct) {
        if (x->n < x->max) x->out[x->n] = *pid;
        x->n++;
        return;
    }
    if (aemp__map_get(&x->seen, pid, sizeof *pid)) return;
    if (aemp__map_put(&x->seen, pid, sizeof *pid, (void *)1)) {
        x->rc = AEMP_ENOMEM;
        return;
    }
    if (x->n < x->max) x->out[x->n] = *pid;
    x->n++;
}

long aemp__pg_each(aemp_node *n, const char *family, void (*fn)(const aemp_addr *, void *),
                   void *arg)
{
    struct aemp__pg *pg = n ? PG(n) : NULL;
    if (!n || !fn || !family_ok(family)) return AEMP_EINVAL;
    if (!pg || !pg->nscopes) return AEMP_ENOTSUP;
    struct fam *f = fam_get(pg, family, strlen(family), false);
    long k = 0;
    /* fn changes no family: the counts stay where they are */
    for (size_t i = 0; f && i < f->ne; i++) {
        if (!f->e[i].count) continue;
        fn(&f->e[i].pid, arg);
        k++;
    }
    return k;
}

static void collect_cnt(const aemp_addr *pid, void *arg)
{
    collect_one(arg, pid);
}

int aemp_pg_members(aemp_node *n, const char *scope, const char *family, aemp_addr *out, size_t max)
{
    struct aemp__pg *pg = n ? PG(n) : NULL;
    if (!n || !family_ok(family) || (max && !out)) return AEMP_EINVAL;
    if (!pg || !pg->nscopes) return AEMP_ENOTSUP;
    struct collect x = {out, max, 0, {0}, 0, false};
    aemp__map_init(&x.seen);
    if (!scope) {
        /* the family's counts are keyed by pid: every member once, over
         * all scopes, without a map of those seen (a count of 100,000
         * members took 45 ms with it) */
        x.distinct = true;
        if (!max) {
            /* only how many (no empty counts outlive a batch) */
            struct fam *f = fam_get(pg, family, strlen(family), false);
            x.n = f ? f->members : 0;
        } else {
            long k = aemp__pg_each(n, family, collect_cnt, &x);
            if (k < 0) x.rc = (int)k;
        }
    } else {
        struct scope *s = scope_of(pg, scope);
        if (!s) {
            aemp__map_free(&x.seen);
            return AEMP_ENOENT;
        }
        char key[PG_MAX_FAMILY + 2];
        size_t klen;
        const char types[2] = {'a', 'b'};
        for (int t = 0; t < 2; t++) {
            if (t == 0 && family_type(family) == 'b') continue; /* no atom is that long */
            family_key(family, types[t], key, &klen);
            struct group *g = group_get(s, key, klen);
            for (size_t i = 0; g && i < g->n; i++)
                collect_one(&x, &g->m[i].pid);
        }
    }
    aemp__map_free(&x.seen);
    if (x.rc) return x.rc;
    return x.n > INT32_MAX ? INT32_MAX : (int)x.n;
}

/* ------------------------------------------------------------------ */
/* Watches                                                            */
/* ------------------------------------------------------------------ */

int aemp__pg_watch(aemp_node *n, const char *family, aemp__pg_watch_fn fn, void *arg,
                   uint64_t *handle)
{
    struct aemp__pg *pg = n ? PG(n) : NULL;
    if (!n || !fn || (family && !family_ok(family))) return AEMP_EINVAL;
    if (!pg || !pg->nscopes) return AEMP_ENOTSUP;
    struct watch *w = calloc(1, sizeof *w);
    if (!w) return AEMP_ENOMEM;
    if (family) {
        w->flen = strlen(family);
        if (!(w->family = malloc(w->flen + 1))) {
            free(w);
            return AEMP_ENOMEM;
        }
        memcpy(w->family, family, w->flen + 1);
    }
    w->fn = fn;
    w->arg = arg;
    w->id = ++pg->next_watch;
    /* at the end: told after the watchers already there */
    struct watch **pw = &pg->watches;
    while (*pw)
        pw = &(*pw)->next;
    *pw = w;
    if (handle) *handle = w->id;
    return 0;
}

int aemp__pg_unwatch(aemp_node *n, uint64_t handle)
{
    struct aemp__pg *pg = n ? PG(n) : NULL;
    if (!pg) return AEMP_EINVAL;
    for (struct watch **pw = &pg->watches; *pw; pw = &(*pw)->next) {
        struct watch *w = *pw;
        if (w->id != handle || w->dead) continue;
        if (pg->firing) {
            w->dead = true;
        } else {
            *pw = w->next;
            free(w->family);
            free(w);
        }
        return 0;
    }
    return AEMP_ENOENT;
}

/* ------------------------------------------------------------------ */
/* Life                                                               */
/* ------------------------------------------------------------------ */

static void on_event(aemp_node *n, const aemp__event_info *ev, void *arg)
{
    struct aemp__pg *pg = arg;
    if (n->closing || pg->closing) return;
    if (ev->kind == AEMP__EV_NODE_UP) {
        for (size_t i = 0; i < pg->nscopes; i++) {
            aemp_addr to;
            if (aemp_addr_name(&to, ev->peer, pg->scopes[i].name) == 0)
                send_discover(&pg->scopes[i], &to);
        }
    } else if (ev->kind == AEMP__EV_NODE_DOWN) {
        for (size_t i = 0; i < pg->nscopes; i++)
            aemp__map_del(&pg->scopes[i].asked, &ev->peer_h, sizeof ev->peer_h);
    } else if (ev->kind == AEMP__EV_PORT_EXIT) {
        port_exit(pg, ev->port);
    }
}

/* Split the scope list (names separated by commas and blanks). */
static int parse_scopes(struct aemp__pg *pg, const char *list)
{
    const char *p = list;
    while (*p) {
        while (*p == ',' || *p == ' ' || *p == '\t')
            p++;
        if (!*p) break;
        const char *e = p;
        while (*e && *e != ',' && *e != ' ' && *e != '\t')
            e++;
        size_t len = (size_t)(e - p), chars = 0;
        if (!utf8_ok(p, len, &chars) || chars > 255) {
            AEMP_LOGE("pg_scopes: a scope name is not an atom name (at most 255 characters)");
            return AEMP_EINVAL;
        }
        if (pg->nscopes == PG_MAX_SCOPES) {
            AEMP_LOGE("pg_scopes: more than %d scopes", PG_MAX_SCOPES);
            return AEMP_EINVAL;
        }
        struct scope *s = &pg->scopes[pg->nscopes];
        memcpy(s->name, p, len);
        s->name[len] = 0;
        if (scope_of(pg, s->name)) { /* the ones before */
            AEMP_LOGE("pg_scopes: scope %s named twice", s->name);
            return AEMP_EINVAL;
        }
        pg->nscopes++;
        p = e;
    }
    return 0;
}

int aemp__pg_start(aemp_node *n, const aemp_node_config *cfg)
{
    struct aemp__pg *pg = calloc(1, sizeof *pg);
    if (!pg) return AEMP_ENOMEM;
    n->svc->pg = pg;
    pg->n = n;
    pg->max_remote = cfg->pg_max_members ? cfg->pg_max_members : PG_DEFAULT_MAX;
    pg->max_group = cfg->pg_max_group_term ? cfg->pg_max_group_term : PG_DEFAULT_GROUP;
    pg->max_names = cfg->pg_max_group_names ? cfg->pg_max_group_names : PG_DEFAULT_NAMES;
    pg->rediscover_ms = cfg->pg_rediscover_ms ? cfg->pg_rediscover_ms : PG_DEFAULT_REDISCOVER_MS;
    if (pg->max_group > PG_MAX_GROUP_TERM) {
        AEMP_LOGE("pg_max_group_term: at most %u bytes", PG_MAX_GROUP_TERM);
        return AEMP_EINVAL;
    }
    if (pg->rediscover_ms > PG_MAX_REDISCOVER_MS) {
        AEMP_LOGE("pg_rediscover_ms: at most %d", PG_MAX_REDISCOVER_MS);
        return AEMP_EINVAL;
    }
    aemp__map_init(&pg->families);
    pg->scopes = calloc(PG_MAX_SCOPES, sizeof *pg->scopes);
    if (!pg->scopes) return AEMP_ENOMEM;
    int rc = parse_scopes(pg, cfg->pg_scopes ? cfg->pg_scopes : "aemp");
    for (size_t i = 0; i < pg->nscopes && !rc; i++) {
        struct scope *s = &pg->scopes[i];
        s->pg = pg;
        aemp__map_init(&s->groups);
        aemp__map_init(&s->asked);
        aemp__idmap_init(&s->locals);
        rc = aemp__proc_open(n, on_msg, s, &s->port);
        if (!rc && (rc = aemp_register(n, s->name, s->port)))
            AEMP_LOGE("pg: cannot register scope %s: %s", s->name, aemp_strerror(rc));
        if (!rc) {
            aemp__proc_protect(n, s->port);
            rc = aemp_port_addr(n, s->port, &s->self);
        }
        if (!rc) arm(s, pg->rediscover_ms);
    }
    if (!rc && pg->nscopes) rc = aemp__node_subscribe(n, on_event, pg, &pg->sub);
    return rc;
}

void aemp__pg_close(aemp_node *n)
{
    struct aemp__pg *pg = PG(n);
    if (!pg) return;
    pg->closing = true;
    for (size_t i = 0; pg->scopes && i < pg->nscopes; i++) {
        if (pg->scopes[i].timer) aemp_timer_cancel(n, pg->scopes[i].timer);
        pg->scopes[i].timer = 0;
    }
    if (pg->sub) aemp__node_unsubscribe(n, pg->sub);
    pg->sub = NULL;
}

static void free_group(const char *key, void *val, void *arg)
{
    struct group *g = val;
    aemp_buf_free(&g->term);
    free(g->key);
    free(g->m);
    free(g);
}

static void free_local(uint64_t id, void *val, void *arg)
{
    struct local *l = val;
    free(l->g);
    free(l);
}

static void free_family(const char *key, void *val, void *arg)
{
    fam_free(val);
}

void aemp__pg_free(aemp_node *n)
{
    struct aemp__pg *pg = PG(n);
    if (!pg) return;
    for (size_t i = 0; pg->scopes && i < pg->nscopes; i++) {
        struct scope *s = &pg->scopes[i];
        aemp__map_each(&s->groups, free_group, NULL);
        aemp__map_free(&s->groups);
        aemp__map_free(&s->asked);
        aemp__idmap_each(&s->locals, free_local, NULL);
        aemp__idmap_free(&s->locals);
        for (struct peer *p = s->peers, *next; p; p = next) {
            next = p->next;
            free(p);
        }
    }
    free(pg->scopes);
    aemp__map_each(&pg->families, free_family, NULL);
    aemp__map_free(&pg->families);
    for (struct watch *w = pg->watches, *next; w; w = next) {
        next = w->next;
        free(w->family);
        free(w);
    }
    free(pg->t);
    free(pg);
    n->svc->pg = NULL;
}
