/*
 * watch.c - links and monitors in every direction (local-local,
 * local-remote, remote-local), exit signals and their translations, port
 * death, references, and the control messages about them.
 *
 * A record is 48 bytes in a slab, named by a 32-bit index: the ends are
 * local port ids (a remote process or a registered name is an address kept
 * beside the record), a monitor's reference is our own reference's number
 * (another node's reference is kept beside it). Every record is found in
 * constant time: in one hash table chained through the records (a monitor
 * by its reference, a link by its two ends), and from each end through a
 * list (a local port's, or the remote node's), so that a port's death, a
 * node's loss and a demonitor each cost what they touch, never a search.
 *
 * Exits are carried out one at a time from a queue: a port dying kills the
 * ports linked to it, and a chain of links of any length is walked without
 * recursion.
 */
#include "watch.h"

#include "../util/hash.h"

#include <stdlib.h>

static void run_exits(aemp_node *n);

static struct aemp__proc *P(aemp_node *n)
{
    return n->proc;
}

/* ------------------------------------------------------------------ */
/* records                                                            */
/* ------------------------------------------------------------------ */

enum { W_LINK = 1, W_MONITOR = 2 };

/* flags: end i is an address beside the record (EXT), and that address is
 * a registered name of a local port (LOC: the list is that port's); the
 * reference is another node's (REFX). */
#define F_EXT(i) (1u << (i))
#define F_LOC(i) (4u << (i))
#define F_REFX 16u

/* A list of the records with an end on one remote node, how many there
 * are (max_watches_per_peer bounds it), and the refusals not yet logged. */
typedef struct wlist {
    uint32_t head;
    uint32_t count;
    uint64_t refused;   /* since the last line logged */
    uint64_t logged_ms; /* when that line was logged */
    bool logged;        /* a line was logged (logged_ms is set) */
} wlist;

/* An end that is not a local pid: its address, and the list it is in. */
typedef struct wext {
    aemp_addr addr;
    union {
        uint64_t port; /* F_LOC: the local port registered under the name */
        wlist *list;   /* else: the list of the address's node */
    } u;
} wext;

/*
 * A link joins end[0] and end[1] (pids). A monitor: end[0] watches end[1]
 * (a pid or a registered name, as given) under ref. The record is in the
 * list of each end: elements are (index << 1 | end), 0 ends a list.
 */
typedef struct wrec {
    uint32_t hnext; /* the next record in its bucket (or on the free list) */
    uint8_t kind;   /* W_LINK, W_MONITOR; 0: free */
    uint8_t flags;
    uint16_t spare;
    uint64_t ref;    /* monitor: our reference's number, or (F_REFX) an aemp_addr *;
                        link: the id of our unlink while it is out, else 0 */
    uint64_t end[2]; /* a local port id, or (F_EXT) a wext * */
    uint32_t prev[2], next[2];
} wrec;

_Static_assert(sizeof(wrec) == 48, "a link or monitor record is 48 bytes");

#define CHUNK_BITS 10
#define CHUNK (1u << CHUNK_BITS)
#define MAX_RECORDS (UINT32_C(1) << 31) /* an element holds index << 1 */
#define DEFAULT_MAX_PER_PEER 1000000u   /* max_watches_per_peer */

struct aemp__wstore {
    wrec **chunks; /* slabs of CHUNK records; index 0 is never used */
    uint32_t nchunks, cap;
    uint32_t fresh;        /* the next index never handed out */
    uint32_t free;         /* free records, chained through hnext */
    uint32_t *b;           /* buckets: chains through hnext */
    uint32_t mask;         /* buckets - 1 */
    uint32_t count;        /* records in use */
    aemp__map peers;       /* node handle (4 bytes) -> wlist */
    uint32_t max_per_peer; /* max_watches_per_peer: records in one wlist */
    aemp__port *dying;     /* the port being killed: out of the table, its list still read */
};

/* What fire() acts on: a record as addresses, taken out of every table. */
typedef struct wview {
    uint8_t kind;
    bool unlinking;
    aemp_addr end[2];
    aemp_addr ref;    /* monitors */
    uint64_t port[2]; /* the local port of each end, or 0 */
} wview;

static struct aemp__wstore *S(aemp_node *n)
{
    return P(n)->ws;
}

static wrec *R(const struct aemp__wstore *s, uint32_t i)
{
    return &s->chunks[i >> CHUNK_BITS][i & (CHUNK - 1)];
}

static uint32_t rec_alloc(struct aemp__wstore *s)
{
    if (s->free) {
        uint32_t i = s->free;
        s->free = R(s, i)->hnext;
        return i;
    }
    if (s->fresh >= MAX_RECORDS) return 0;
    if ((s->fresh >> CHUNK_BITS) >= s->nchunks) {
        if (s->nchunks == s->cap) {
            uint32_t cap = s->cap ? 2 * s->cap : 8;
            wrec **c = realloc(s->chunks, cap * sizeof *c);
            if (!c) return 0;
            s->chunks = c;
            s->cap = cap;
        }
        wrec *chunk = malloc(CHUNK * sizeof *chunk);
        if (!chunk) return 0;
        s->chunks[s->nchunks++] = chunk;
    }
    return s->fresh++;
}

static void rec_release(struct aemp__wstore *s, uint32_t i)
{
    wrec *w = R(s, i);
    w->kind = 0;
    w->hnext = s->free;
    s->free = i;
}

/* No record left: give back all slabs but the first. */
static void store_shrink(struct aemp__wstore *s)
{
    if (s->count || s->nchunks <= 1) return;
    for (uint32_t c = 1; c < s->nchunks; c++)
        free(s->chunks[c]);
    s->nchunks = 1;
    s->fresh = 1;
    s->free = 0;
    free(s->b);
    s->b = NULL;
    s->mask = 0;
}

/* ------------------------------------------------------------------ */
/* keys                                                               */
/* ------------------------------------------------------------------ */

static bool same(const aemp_addr *a, const aemp_addr *b)
{
    return memcmp(a, b, sizeof *a) == 0;
}

/* Our references: three words as Erlang's own, the first holding 18 bits,
 * made from one number unique in this incarnation (the creation tells
 * incarnations apart). */
static void ref_of_number(aemp_node *n, uint64_t r, aemp_addr *out)
{
    memset(out, 0, sizeof *out);
    out->kind = AEMP_ADDR_REF;
    out->nwords = 3;
    out->node = n->name_h;
    out->creation = n->creation;
    out->w[0] = (uint32_t)(r & 0x3ffff);
    out->w[1] = (uint32_t)(r >> 18);
    out->w[2] = (uint32_t)(r >> 50);
}

/* The number of one of our references, or 0 if ref is not one. */
static uint64_t ref_number(aemp_node *n, const aemp_addr *ref)
{
    if (ref->kind != AEMP_ADDR_REF || ref->node != n->name_h || ref->creation != n->creation ||
        ref->nwords != 3)
        return 0;
    uint64_t r = ref->w[0] | (uint64_t)ref->w[1] << 18 | (uint64_t)ref->w[2] << 50;
    aemp_addr back;
    ref_of_number(n, r, &back);
    return same(&back, ref) ? r : 0;
}

void aemp__proc_ref(aemp_node *n, aemp_addr *out)
{
    ref_of_number(n, ++P(n)->next_ref, out);
}

/* The id of a, if it is a pid of this node (whether or not its port
 * lives), else 0. */
static uint64_t pid_id(aemp_node *n, const aemp_addr *a)
{
    if (a->kind != AEMP_ADDR_PID || a->node != n->name_h || a->creation != n->creation) return 0;
    return aemp__addr_pid_id(a);
}

/*
 * The table's hashes are keyed (util/hash.h): a peer chooses the remote
 * pids, names and references it links and monitors with, and with a public
 * hash could make them share a bucket. Our own ids and reference numbers
 * go through the keyed hash too: they are public (in every pid and
 * reference we send), and a peer could have us make many and keep the
 * ones that collide. A keyed word costs a few nanoseconds
 * (docs/benchmarks.md).
 */

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    return x ^ (x >> 33);
}

/* An end as a link's hash takes it: a local id mixed (a bijection, so two
 * ends never share a value; only the keyed hash of the pair below decides
 * the bucket), or the keyed hash of its address. */
static uint64_t end_key(aemp_node *n, const aemp_addr *a)
{
    uint64_t id = pid_id(n, a);
    return id ? mix(id) : aemp__hash_keyed(a, sizeof *a);
}

static uint64_t rec_end_key(const wrec *w, int i)
{
    return (w->flags & F_EXT(i))
               ? aemp__hash_keyed(&((const wext *)(uintptr_t)w->end[i])->addr, sizeof(aemp_addr))
               : mix(w->end[i]);
}

/* A link by its two ends, either way round: one keyed hash of the pair. */
static uint64_t link_hash(uint64_t a, uint64_t b)
{
    return aemp__hash_keyed64((a < b ? a : b) * 31 + (a < b ? b : a) + 'L');
}

static uint64_t monitor_hash(uint64_t number, const aemp_addr *foreign)
{
    return foreign ? aemp__hash_keyed(foreign, sizeof *foreign)
                   : aemp__hash_keyed64(number ^ 0x4d4f4e);
}

static uint64_t rec_hash(const wrec *w)
{
    if (w->kind == W_LINK) return link_hash(rec_end_key(w, 0), rec_end_key(w, 1));
    return (w->flags & F_REFX) ? monitor_hash(0, (const aemp_addr *)(uintptr_t)w->ref)
                               : monitor_hash(w->ref, NULL);
}

/* Is end i of w the address a? */
static bool end_is(aemp_node *n, const wrec *w, int i, const aemp_addr *a)
{
    if (w->flags & F_EXT(i)) return same(&((const wext *)(uintptr_t)w->end[i])->addr, a);
    uint64_t id = pid_id(n, a);
    return id && id == w->end[i];
}

static void end_addr(aemp_node *n, const wrec *w, int i, aemp_addr *out)
{
    if (w->flags & F_EXT(i))
        *out = ((const wext *)(uintptr_t)w->end[i])->addr;
    else
        aemp__addr_pid(out, n->name_h, n->creation, w->end[i]);
}

static uint32_t end_node(aemp_node *n, const wrec *w, int i)
{
    return (w->flags & F_EXT(i)) ? ((const wext *)(uintptr_t)w->end[i])->addr.node : n->name_h;
}

/* The local port of end i, or 0. */
static uint64_t end_port(const wrec *w, int i)
{
    if (!(w->flags & F_EXT(i))) return w->end[i];
    return (w->flags & F_LOC(i)) ? ((const wext *)(uintptr_t)w->end[i])->u.port : 0;
}

/* A link this end is taking back (UNLINK_ID sent, not yet acknowledged):
 * it keeps the unlink's id, and counts as no link (exits over it are
 * ignored, none are sent), as OTP's link protocol has it. */
static bool unlinking(const wrec *w)
{
    return w->kind == W_LINK && w->ref != 0;
}

/* ------------------------------------------------------------------ */
/* the table                                                          */
/* ------------------------------------------------------------------ */

static int table_grow(struct aemp__wstore *s)
{
    uint32_t nb = s->b ? 2 * (s->mask + 1) : 64;
    uint32_t *b = calloc(nb, sizeof *b);
    if (!b) return AEMP_ENOMEM;
    for (uint32_t i = 1; s->b && i < s->fresh; i++) {
        wrec *w = R(s, i);
        if (!w->kind) continue;
        uint32_t *head = &b[rec_hash(w) & (nb - 1)];
        w->hnext = *head;
        *head = i;
    }
    free(s->b);
    s->b = b;
    s->mask = nb - 1;
    return 0;
}

static void table_unlink(struct aemp__wstore *s, uint32_t i)
{
    wrec *w = R(s, i);
    for (uint32_t *pi = &s->b[rec_hash(w) & s->mask]; *pi; pi = &R(s, *pi)->hnext) {
        if (*pi == i) {
            *pi = w->hnext;
            return;
        }
    }
}

/* The index of the monitor with reference ref, or 0. */
static uint32_t find_monitor(aemp_node *n, const aemp_addr *ref)
{
    struct aemp__wstore *s = S(n);
    if (!s->b) return 0;
    uint64_t num = ref_number(n, ref);
    uint64_t h = num ? monitor_hash(num, NULL) : monitor_hash(0, ref);
    for (uint32_t i = s->b[h & s->mask]; i; i = R(s, i)->hnext) {
        wrec *w = R(s, i);
        if (w->kind != W_MONITOR) continue;
        if (num ? !(w->flags & F_REFX) && w->ref == num
                : (w->flags & F_REFX) && same((const aemp_addr *)(uintptr_t)w->ref, ref))
            return i;
    }
    return 0;
}

/* The index of the link between a and b, or 0. */
static uint32_t find_link(aemp_node *n, const aemp_addr *a, const aemp_addr *b)
{
    struct aemp__wstore *s = S(n);
    if (!s->b) return 0;
    uint64_t h = link_hash(end_key(n, a), end_key(n, b));
    for (uint32_t i = s->b[h & s->mask]; i; i = R(s, i)->hnext) {
        wrec *w = R(s, i);
        if (w->kind == W_LINK && ((end_is(n, w, 0, a) && end_is(n, w, 1, b)) ||
                                  (end_is(n, w, 0, b) && end_is(n, w, 1, a))))
            return i;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* lists                                                              */
/* ------------------------------------------------------------------ */

static aemp__port *port_of(aemp_node *n, uint64_t id)
{
    aemp__port *p = aemp__proc_port(n, id);
    if (!p && S(n)->dying && S(n)->dying->id == id) p = S(n)->dying;
    return p;
}

/* Where the list of end i of w starts. */
static uint32_t *list_head(aemp_node *n, const wrec *w, int i)
{
    if ((w->flags & F_EXT(i)) && !(w->flags & F_LOC(i)))
        return &((wext *)(uintptr_t)w->end[i])->u.list->head;
    aemp__port *p = port_of(n, end_port(w, i));
    return p ? &p->watches : NULL;
}

static uint32_t *prev_of(struct aemp__wstore *s, uint32_t e)
{
    return &R(s, e >> 1)->prev[e & 1];
}

static uint32_t *next_of(struct aemp__wstore *s, uint32_t e)
{
    return &R(s, e >> 1)->next[e & 1];
}

static void list_insert(struct aemp__wstore *s, uint32_t *head, uint32_t e)
{
    *prev_of(s, e) = 0;
    *next_of(s, e) = *head;
    if (*head) *prev_of(s, *head) = e;
    *head = e;
}

static void list_remove(aemp_node *n, uint32_t e)
{
    struct aemp__wstore *s = S(n);
    uint32_t prev = *prev_of(s, e), next = *next_of(s, e);
    if (prev) {
        *next_of(s, prev) = next;
    } else {
        uint32_t *head = list_head(n, R(s, e >> 1), (int)(e & 1));
        if (head && *head == e) *head = next;
    }
    if (next) *prev_of(s, next) = prev;
}

/* The list of the remote node peer_h, made on demand. */
static wlist *peer_list(aemp_node *n, uint32_t peer_h, bool make)
{
    wlist *l = aemp__map_get(&S(n)->peers, &peer_h, sizeof peer_h);
    if (l || !make) return l;
    l = calloc(1, sizeof *l);
    if (!l) return NULL;
    if (aemp__map_put(&S(n)->peers, &peer_h, sizeof peer_h, l)) {
        free(l);
        return NULL;
    }
    return l;
}

/* The list of the remote node end i of w is on, or NULL (a local end). */
static wlist *peer_end(const wrec *w, int i)
{
    if ((w->flags & F_EXT(i)) && !(w->flags & F_LOC(i)))
        return ((const wext *)(uintptr_t)w->end[i])->u.list;
    return NULL;
}

bool aemp__watch_room(aemp_node *n, uint32_t peer_h, unsigned more)
{
    if (peer_h == n->name_h) return true;
    wlist *l = peer_list(n, peer_h, false);
    return !l || (uint64_t)l->count + more <= S(n)->max_per_peer;
}

/* Log what the peer's list refused: the first refusal at once, then one
 * line per AEMP__REFUSAL_LOG_MS at most with the count (and what is left
 * when the node goes down). */
static void refusal_log(aemp_node *n, const char *peer, wlist *l, uint64_t now)
{
    if (!l->refused) return;
    if (l->logged)
        AEMP_LOGW("%s: %llu links and monitors refused in the last %llu s (max_watches_per_peer "
                  "%u reached)",
                  peer, (unsigned long long)l->refused,
                  (unsigned long long)((now - l->logged_ms + 999) / 1000), S(n)->max_per_peer);
    else
        AEMP_LOGW("%s: a link or monitor refused: this node holds max_watches_per_peer (%u) with "
                  "it; further refusals are counted and logged every %u s at most",
                  peer, S(n)->max_per_peer, AEMP__REFUSAL_LOG_MS / 1000);
    l->refused = 0;
    l->logged = true;
    l->logged_ms = now;
}

void aemp__watch_refused(aemp_node *n, const aemp__conn *c)
{
    wlist *l = peer_list(n, c->peer_h, false);
    if (!l) return;
    l->refused++;
    uint64_t now = uv_now(n->loop);
    if (!l->logged || now - l->logged_ms >= AEMP__REFUSAL_LOG_MS) refusal_log(n, c->peer, l, now);
}

bool aemp__watch_from_peer(aemp_node *n, const aemp__conn *c, const aemp_addr *from,
                           const char *what)
{
    if (from->node == c->peer_h) return true;
    AEMP_LOGW("%s from %s: the sender is not a process of that node: ignored", what, c->peer);
    return false;
}

/* ------------------------------------------------------------------ */
/* adding and taking                                                  */
/* ------------------------------------------------------------------ */

static void free_ext(wrec *w)
{
    for (int i = 0; i < 2; i++)
        if (w->flags & F_EXT(i)) free((void *)(uintptr_t)w->end[i]);
    if (w->kind == W_MONITOR && (w->flags & F_REFX)) free((void *)(uintptr_t)w->ref);
}

/* End i of a new record: a local id, or an address beside it. */
static int set_end(aemp_node *n, wrec *w, int i, const aemp_addr *a)
{
    uint64_t id = pid_id(n, a);
    if (id) {
        if (!aemp__proc_port(n, id)) return AEMP_ENOENT;
        w->end[i] = id;
        return 0;
    }
    wext *x = malloc(sizeof *x);
    if (!x) return AEMP_ENOMEM;
    x->addr = *a;
    aemp__port *p = a->node == n->name_h ? aemp__proc_resolve(n, a) : NULL;
    if (p) {
        x->u.port = p->id;
        w->flags |= F_LOC(i);
    } else if (!(x->u.list = peer_list(n, a->node, true))) {
        free(x);
        return AEMP_ENOMEM;
    } else if (x->u.list->count >= S(n)->max_per_peer) {
        free(x);
        return AEMP_ETOOBIG;
    }
    w->flags |= F_EXT(i);
    w->end[i] = (uint64_t)(uintptr_t)x;
    return 0;
}

/* A new record of kind with ends a and b (and ref, for a monitor). */
static int watch_add(aemp_node *n, int kind, const aemp_addr *a, const aemp_addr *b,
                     const aemp_addr *ref)
{
    struct aemp__wstore *s = S(n);
    if (kind == W_MONITOR ? find_monitor(n, ref) : find_link(n, a, b))
        return 0; /* the same link twice is one link; a reference is unique */
    if ((!s->b || s->count > s->mask) && table_grow(s)) return AEMP_ENOMEM;
    wrec tmp;
    memset(&tmp, 0, sizeof tmp);
    tmp.kind = (uint8_t)kind;
    int rc = set_end(n, &tmp, 0, a);
    if (!rc) rc = set_end(n, &tmp, 1, b);
    if (!rc && kind == W_MONITOR) {
        if (!(tmp.ref = ref_number(n, ref))) {
            aemp_addr *r = malloc(sizeof *r);
            if (r) {
                *r = *ref;
                tmp.ref = (uint64_t)(uintptr_t)r;
                tmp.flags |= F_REFX;
            } else {
                rc = AEMP_ENOMEM;
            }
        }
    }
    uint32_t *head[2] = {NULL, NULL};
    for (int e = 0; e < 2 && !rc; e++)
        if (!(head[e] = list_head(n, &tmp, e))) rc = AEMP_ENOENT;
    uint32_t i = rc ? 0 : rec_alloc(s);
    if (!i) {
        free_ext(&tmp);
        return rc ? rc : AEMP_ENOMEM;
    }
    wrec *w = R(s, i);
    *w = tmp;
    uint32_t *bucket = &s->b[rec_hash(w) & s->mask];
    w->hnext = *bucket;
    *bucket = i;
    s->count++;
    for (int e = 0; e < 2; e++) {
        list_insert(s, head[e], i << 1 | (uint32_t)e);
        if (peer_end(w, e)) peer_end(w, e)->count++;
    }
    return 0;
}

/* Take record i out of the table and its lists, and free it; *v (may be
 * NULL) gets it as addresses first. */
static void watch_take(aemp_node *n, uint32_t i, wview *v)
{
    struct aemp__wstore *s = S(n);
    wrec *w = R(s, i);
    if (v) {
        v->kind = w->kind;
        v->unlinking = unlinking(w);
        for (int e = 0; e < 2; e++) {
            end_addr(n, w, e, &v->end[e]);
            v->port[e] = end_port(w, e);
        }
        if (w->kind != W_MONITOR)
            memset(&v->ref, 0, sizeof v->ref);
        else if (w->flags & F_REFX)
            v->ref = *(const aemp_addr *)(uintptr_t)w->ref;
        else
            ref_of_number(n, w->ref, &v->ref);
    }
    table_unlink(s, i);
    for (int e = 0; e < 2; e++) {
        list_remove(n, i << 1 | (uint32_t)e);
        if (peer_end(w, e)) peer_end(w, e)->count--;
    }
    free_ext(w);
    rec_release(s, i);
    s->count--;
    store_shrink(s);
}

static void watch_del(aemp_node *n, uint32_t i)
{
    watch_take(n, i, NULL);
}

int aemp__watch_link(aemp_node *n, const aemp_addr *a, const aemp_addr *b)
{
    return watch_add(n, W_LINK, a, b, NULL);
}

int aemp__watch_monitor(aemp_node *n, const aemp_addr *watcher, const aemp_addr *target,
                        const aemp_addr *ref)
{
    return watch_add(n, W_MONITOR, watcher, target, ref);
}

/* ------------------------------------------------------------------ */
/* telling other nodes                                                */
/* ------------------------------------------------------------------ */

/* The connection to the node of a, when one is there (up or coming). */
static aemp__conn *conn_of(aemp_node *n, const aemp_addr *a)
{
    int err;
    return aemp__node_conn(n, a->node, false, &err);
}

static bool payload_exits(const aemp__conn *c)
{
    return aemp__conn_up(c) && (c->flags & AEMP__DFLAG_EXIT_PAYLOAD);
}

/* A link exit or exit/2 signal from `from` to the remote `to`. */
static void send_exit(aemp_node *n, bool link, const aemp_addr *from, const aemp_addr *to,
                      const aemp_term *reason)
{
    aemp__conn *c = conn_of(n, to);
    if (!c) return;
    aemp_buf ctl = AEMP_BUF_INIT;
    int rc;
    if (payload_exits(c)) {
        rc = aemp__ctl_enc(&ctl, link ? AEMP__CTL_PAYLOAD_EXIT : AEMP__CTL_PAYLOAD_EXIT2, "aa",
                           from, to);
        if (!rc) rc = aemp__conn_ctl(c, &ctl, reason);
    } else {
        rc = aemp__ctl_enc(&ctl, link ? AEMP__CTL_EXIT : AEMP__CTL_EXIT2, "aat", from, to, reason);
        if (!rc) rc = aemp__conn_ctl(c, &ctl, NULL);
    }
    if (rc) AEMP_LOGE("exit signal to %s lost: %s", c->peer, aemp_strerror(rc));
    aemp_buf_free(&ctl);
}

void aemp__watch_send_exit(aemp_node *n, const aemp_addr *from, const aemp_addr *to,
                           const aemp_term *reason)
{
    send_exit(n, true, from, to, reason);
}

/* A monitored local process died: tell the remote watcher. */
static void send_monitor_exit(aemp_node *n, const wview *w, const aemp_term *reason)
{
    aemp__conn *c = conn_of(n, &w->end[0]);
    if (!c) return;
    aemp_buf ctl = AEMP_BUF_INIT;
    int rc;
    if (payload_exits(c)) {
        rc = aemp__ctl_enc(&ctl, AEMP__CTL_PAYLOAD_MONITOR_P_EXIT, "aaa", &w->end[1], &w->end[0],
                           &w->ref);
        if (!rc) rc = aemp__conn_ctl(c, &ctl, reason);
    } else {
        rc = aemp__ctl_enc(&ctl, AEMP__CTL_MONITOR_P_EXIT, "aaat", &w->end[1], &w->end[0], &w->ref,
                           reason);
        if (!rc) rc = aemp__conn_ctl(c, &ctl, NULL);
    }
    if (rc) AEMP_LOGE("monitor exit to %s lost: %s", c->peer, aemp_strerror(rc));
    aemp_buf_free(&ctl);
}

/* ------------------------------------------------------------------ */
/* exits                                                              */
/* ------------------------------------------------------------------ */

bool aemp__is_atom(const aemp_term *t, const char *atom)
{
    size_t n = strlen(atom);
    const uint8_t *p = (const uint8_t *)t->data;
    return t->len == n + 2 && (p[0] == AEMP__EXT_SMALL_ATOM_UTF8 || p[0] == 115) && p[1] == n &&
           memcmp(p + 2, atom, n) == 0;
}

/* Queue the exit of local port id (reason copied). */
static void queue_exit(aemp_node *n, uint64_t id, const aemp_term *reason)
{
    struct aemp__proc *p = P(n);
    size_t total = 12 + reason->len;
    if (total > UINT32_MAX || aemp__buf_reserve(&p->exits, total)) {
        AEMP_LOGE("out of memory: port %llu does not exit", (unsigned long long)id);
        return;
    }
    char *d = p->exits.data + p->exits.len;
    aemp__put_u32(d, (uint32_t)total);
    memcpy(d + 4, &id, 8);
    memcpy(d + 12, reason->data, reason->len);
    p->exits.len += total;
}

void aemp__proc_run_kills(aemp_node *n)
{
    struct aemp__proc *p = P(n);
    if (!p->kills.len) return;
    /* kills queued while these run wait for the next turn */
    aemp_buf batch = p->kills;
    p->kills = (aemp_buf)AEMP_BUF_INIT;
    for (size_t pos = 0; pos < batch.len;) {
        const char *e = batch.data + pos;
        uint32_t total = aemp__get_u32(e);
        uint64_t id;
        memcpy(&id, e + 4, 8);
        aemp_term t = {e + 12, total - 12};
        queue_exit(n, id, &t);
        pos += total;
    }
    aemp_buf_free(&batch);
    run_exits(n);
}

static void term_of_atom(aemp_buf *b, const char *atom)
{
    b->len = 0;
    aemp__enc_atom_text(b, atom, strlen(atom));
}

/*
 * An exit signal to local port `to`. A port does not trap exits: `normal`
 * is ignored; anything else kills it with that reason, except that exit/2
 * with `kill` (not a link's `kill`) kills it with `killed`, as OTP does.
 */
static void signal_exit(aemp_node *n, uint64_t to, bool link, const aemp_term *reason)
{
    if (aemp__is_atom(reason, "normal")) return;
    aemp__port *p = aemp__proc_port(n, to);
    if (p && p->system) return; /* a service traps exits */
    if (!link && aemp__is_atom(reason, "kill")) {
        aemp_buf k = AEMP_BUF_INIT;
        term_of_atom(&k, "killed");
        aemp_term t = aemp_buf_term(&k);
        queue_exit(n, to, &t);
        aemp_buf_free(&k);
        return;
    }
    queue_exit(n, to, reason);
}

/* {'DOWN', Ref, process, Target, Reason} to a local watcher; Target is the
 * pid, or {Name, Node} for a monitor of a name. */
static void deliver_down_as(aemp_node *n, const wview *w, const aemp_term *reason, bool later)
{
    /* a monitor of aemp_mon*: its action instead of a message */
    if (P(n)->acts.count && P(n)->mon_fire(n, &w->ref, &w->end[1], reason, later)) return;
    aemp__port *port = aemp__proc_port(n, w->port[0]);
    if (!port) return;
    aemp_buf b = AEMP_BUF_INIT;
    int rc;
    const aemp_addr *t = &w->end[1];
    if (t->kind == AEMP_ADDR_NAME)
        rc = aemp_term_format(&b, "{'DOWN', ~p, process, {~a, ~a}, ~t}", &w->ref,
                              aemp_addr_reg_name(t), aemp_addr_node_name(t), reason);
    else
        rc = aemp_term_format(&b, "{'DOWN', ~p, process, ~p, ~t}", &w->ref, t, reason);
    if (!rc) {
        aemp_term msg = aemp_buf_term(&b);
        rc = later ? aemp__proc_deliver_later(n, port, &msg, NULL)
                   : aemp__proc_deliver(n, port, &msg, NULL);
    }
    if (rc) AEMP_LOGE("'DOWN' message lost: %s", aemp_strerror(rc));
    aemp_buf_free(&b);
}

static void deliver_down(aemp_node *n, const wview *w, const aemp_term *reason)
{
    deliver_down_as(n, w, reason, false);
}

/* Port `self` (end i of w) is gone with reason: act on the other end. */
static void fire(aemp_node *n, const wview *w, int i, const aemp_addr *self,
                 const aemp_term *reason)
{
    int o = 1 - i;
    if (w->kind == W_MONITOR) {
        if (i == 1) {
            if (w->port[0])
                deliver_down(n, w, reason);
            else
                send_monitor_exit(n, w, reason);
        } else {
            if (P(n)->acts.count) P(n)->mon_drop(n, &w->ref);
            if (w->port[1]) return;
            /* the watcher is gone: the remote target forgets the monitor */
            aemp__conn *c = conn_of(n, &w->end[1]);
            aemp_buf ctl = AEMP_BUF_INIT;
            if (c && aemp__ctl_enc(&ctl, AEMP__CTL_DEMONITOR_P, "aaa", &w->end[0], &w->end[1],
                                   &w->ref) == 0)
                aemp__conn_ctl(c, &ctl, NULL);
            aemp_buf_free(&ctl);
        }
        return;
    }
    if (w->unlinking) return;
    if (w->port[o])
        signal_exit(n, w->port[o], true, reason);
    else
        send_exit(n, true, self, &w->end[o], reason);
}

/* Does anything watch port: a link, or a monitor of it? */
static bool watched(aemp_node *n, aemp__port *port)
{
    struct aemp__wstore *s = S(n);
    for (uint32_t e = port->watches; e; e = *next_of(s, e)) {
        wrec *x = R(s, e >> 1);
        if ((x->kind == W_LINK && !unlinking(x)) || (e & 1)) return true;
    }
    return false;
}

static void kill_now(aemp_node *n, uint64_t id, const aemp_term *reason)
{
    aemp__port *port = aemp__proc_port(n, id);
    if (!port) return;
    aemp__port_unlist(n, port);
    aemp__rcv_exit(port, reason);
    bool quiet = aemp__is_atom(reason, "normal") || aemp__is_atom(reason, "shutdown");
    if (!quiet && !port->system && !watched(n, port)) {
        /* an abnormal death nobody hears of: say so */
        char why[200];
        aemp_term_print(reason, why, sizeof why);
        AEMP_LOGW("port %llu died with no monitor: %s", (unsigned long long)id, why);
        quiet = true;
    }
    aemp_addr self;
    aemp__addr_pid(&self, n->name_h, n->creation, id);
    /* out of the table, the port's list is still walked: its records are
     * found through S(n)->dying */
    S(n)->dying = port;
    while (port->watches) {
        uint32_t e = port->watches;
        /* out of every list first: what fire() does cannot meet it again */
        wview v;
        watch_take(n, e >> 1, &v);
        fire(n, &v, (int)(e & 1), &self, reason);
    }
    S(n)->dying = NULL;
    if (!quiet && aemp_log_get_level() >= AEMP_LOG_INFO) {
        char why[200];
        aemp_term_print(reason, why, sizeof why);
        AEMP_LOGI("port %llu died: %s", (unsigned long long)id, why);
    }
    aemp__event_info ev = {.kind = AEMP__EV_PORT_EXIT, .port = id, .exit = reason};
    aemp__node_publish(n, &ev);
    if (port->in_cb == 0) aemp__port_free(n, port);
}

/* Carry out queued exits until none is left. */
static void run_exits(aemp_node *n)
{
    struct aemp__proc *p = P(n);
    if (p->exiting) return;
    p->exiting = true;
    aemp_buf *r = &p->exit_reason; /* kept: no allocation per exit */
    size_t pos = 0;
    while (pos < p->exits.len) {
        const char *e = p->exits.data + pos;
        uint32_t total = aemp__get_u32(e);
        uint64_t id;
        memcpy(&id, e + 4, 8);
        /* the queue may move while this exit runs: copy the reason */
        r->len = 0;
        if (aemp__buf_append(r, e + 12, total - 12) == 0) {
            aemp_term t = aemp_buf_term(r);
            kill_now(n, id, &t);
        }
        pos += total;
    }
    p->exits.len = 0;
    if (r->cap > 64 * 1024) aemp_buf_free(r);
    p->exiting = false;
}

void aemp__proc_kill(aemp_node *n, uint64_t id, const aemp_term *reason)
{
    queue_exit(n, id, reason);
    run_exits(n);
}

void aemp__proc_kill_atom(aemp_node *n, uint64_t id, const char *atom)
{
    /* an atom of up to 255 bytes is SMALL_ATOM_UTF8: no allocation */
    char enc[2 + 255];
    size_t len = strlen(atom);
    if (len > 255) return;
    enc[0] = (char)AEMP__EXT_SMALL_ATOM_UTF8;
    enc[1] = (char)len;
    memcpy(enc + 2, atom, len);
    aemp_term t = {enc, 2 + len};
    aemp__proc_kill(n, id, &t);
}

/* The marker queued behind a lost node's deferred 'DOWN's: they are
 * delivered, the node's fence comes down, the marker's port ends. */
static void on_fence_marker(aemp_node *n, aemp_port self, const aemp_term *msg,
                            const aemp_addr *from, void *arg)
{
    aemp__node_unfence(n, (uint32_t)(uintptr_t)arg);
    aemp__proc_kill_atom(n, self.id, "normal");
}

/* Some of a lost node's 'DOWN's wait behind earlier local deliveries
 * (deferred to the loop). Until they are delivered nothing may go to that
 * node, or a message sent meanwhile could get through after lost ones
 * before the loss is reported (no silent holes): fence it, and queue a
 * marker behind them that lifts the fence. */
static void fence_until_told(aemp_node *n, uint32_t peer_h)
{
    aemp_port m;
    aemp__port *port;
    if (aemp__proc_open(n, on_fence_marker, (void *)(uintptr_t)peer_h, &m)) return;
    if (!(port = aemp__proc_port(n, m.id)) || aemp__node_fence(n, peer_h)) {
        aemp__proc_kill_atom(n, m.id, "normal");
        return;
    }
    aemp_buf b = AEMP_BUF_INIT;
    term_of_atom(&b, "fence");
    aemp_term t = aemp_buf_term(&b);
    if (aemp__proc_deliver_later(n, port, &t, NULL)) {
        aemp__node_unfence(n, peer_h);
        aemp__proc_kill_atom(n, m.id, "normal");
    }
    aemp_buf_free(&b);
}

/* A node is gone: its links break and its monitors fire with noconnection. */
static void on_event(aemp_node *n, const aemp__event_info *ev, void *arg)
{
    /* a node lost, or never reached: what was asked of it is answered */
    if (ev->kind != AEMP__EV_NODE_DOWN && ev->kind != AEMP__EV_NODE_UNREACHABLE) return;
    wlist *list = peer_list(n, ev->peer_h, false);
    if (!list) return;
    /* Detach the node's records first: what the callbacks below do (a new
     * monitor of that node, say) starts a list of its own; the records of
     * this one still find it through their ends. */
    aemp__map_del(&S(n)->peers, &ev->peer_h, sizeof ev->peer_h);
    refusal_log(n, ev->peer, list, uv_now(n->loop));
    aemp_buf b = AEMP_BUF_INIT;
    term_of_atom(&b, "noconnection");
    aemp_term reason = aemp_buf_term(&b);
    while (list->head) {
        uint32_t e = list->head;
        int remote = (int)(e & 1);
        wview v;
        watch_take(n, e >> 1, &v);
        if (v.kind == W_MONITOR) {
            if (remote == 1 && v.port[0]) deliver_down(n, &v, &reason);
        } else if (v.port[1 - remote] && !v.unlinking) {
            signal_exit(n, v.port[1 - remote], true, &reason);
        }
    }
    free(list);
    run_exits(n);
    if (P(n)->deferred.len > P(n)->deferred_pos) fence_until_told(n, ev->peer_h);
    aemp_buf_free(&b);
}

/* ------------------------------------------------------------------ */
/* the public calls                                                   */
/* ------------------------------------------------------------------ */

int aemp_monitor(aemp_node *n, aemp_port watcher, const aemp_addr *target, aemp_addr *ref)
{
    if (!n || !target || !ref) return AEMP_EINVAL;
    if (n->closing) return AEMP_ECLOSED;
    if (target->kind != AEMP_ADDR_PID && target->kind != AEMP_ADDR_NAME) return AEMP_EINVAL;
    if (!aemp__proc_port(n, watcher.id)) return AEMP_ENOENT;
    aemp_addr w, r;
    aemp__addr_pid(&w, n->name_h, n->creation, watcher.id);
    aemp__proc_ref(n, &r);
    int rc;
    if (target->node == n->name_h) {
        if (!aemp__proc_resolve(n, target)) {
            /* a monitor of a port that is not there fires at once */
            wview tmp;
            memset(&tmp, 0, sizeof tmp);
            tmp.end[0] = w;
            tmp.end[1] = *target;
            tmp.ref = r;
            tmp.port[0] = watcher.id;
            aemp_buf b = AEMP_BUF_INIT;
            term_of_atom(&b, "noproc");
            aemp_term reason = aemp_buf_term(&b);
            /* from the loop: the caller has its reference first */
            deliver_down_as(n, &tmp, &reason, true);
            aemp_buf_free(&b);
            *ref = r;
            return 0;
        }
        rc = aemp__watch_monitor(n, &w, target, &r);
    } else {
        aemp_buf ctl = AEMP_BUF_INIT;
        rc = aemp__ctl_enc(&ctl, AEMP__CTL_MONITOR_P, "aaa", &w, target, &r);
        if (!rc) rc = aemp__watch_monitor(n, &w, target, &r);
        if (!rc) rc = aemp__node_ctl(n, target->node, &ctl, NULL);
        uint32_t x;
        if (rc && (x = find_monitor(n, &r))) watch_del(n, x);
        aemp_buf_free(&ctl);
    }
    if (!rc) *ref = r;
    return rc;
}

int aemp_demonitor(aemp_node *n, const aemp_addr *ref)
{
    if (!n || !ref || ref->kind != AEMP_ADDR_REF) return AEMP_EINVAL;
    uint32_t i = find_monitor(n, ref);
    if (!i || !end_port(R(S(n), i), 0)) return P(n)->mon_cancel(n, ref);
    if (P(n)->acts.count) P(n)->mon_drop(n, ref);
    wview w;
    watch_take(n, i, &w);
    if (!w.port[1]) {
        aemp__conn *c = conn_of(n, &w.end[1]);
        aemp_buf ctl = AEMP_BUF_INIT;
        if (c &&
            aemp__ctl_enc(&ctl, AEMP__CTL_DEMONITOR_P, "aaa", &w.end[0], &w.end[1], &w.ref) == 0)
            aemp__conn_ctl(c, &ctl, NULL);
        aemp_buf_free(&ctl);
    }
    return 0;
}

int aemp_link(aemp_node *n, aemp_port port, const aemp_addr *other)
{
    if (!n || !other || other->kind != AEMP_ADDR_PID) return AEMP_EINVAL;
    if (n->closing) return AEMP_ECLOSED;
    if (!aemp__proc_port(n, port.id)) return AEMP_ENOENT;
    aemp_addr self;
    aemp__addr_pid(&self, n->name_h, n->creation, port.id);
    if (other->node == n->name_h) {
        if (!aemp__proc_resolve(n, other)) return AEMP_ENOENT;
        if (aemp_addr_equal(&self, other)) return 0;
        return aemp__watch_link(n, &self, other);
    }
    uint32_t old = find_link(n, &self, other);
    if (old && !unlinking(R(S(n), old))) return 0;
    aemp_buf ctl = AEMP_BUF_INIT;
    int rc = aemp__ctl_enc(&ctl, AEMP__CTL_LINK, "aa", &self, other);
    if (old) /* linked again while unlinking: the unlink's answer is ignored */
        R(S(n), old)->ref = 0;
    else if (!rc)
        rc = aemp__watch_link(n, &self, other);
    if (!rc) rc = aemp__node_ctl(n, other->node, &ctl, NULL);
    uint32_t w;
    if (rc && (w = find_link(n, &self, other))) watch_del(n, w);
    aemp_buf_free(&ctl);
    return rc;
}

int aemp_unlink(aemp_node *n, aemp_port port, const aemp_addr *other)
{
    if (!n || !other || other->kind != AEMP_ADDR_PID) return AEMP_EINVAL;
    aemp_addr self;
    aemp__addr_pid(&self, n->name_h, n->creation, port.id);
    uint32_t w = find_link(n, &self, other);
    if (!w || unlinking(R(S(n), w))) return 0;
    aemp__conn *c = other->node == n->name_h ? NULL : conn_of(n, other);
    if (!c) {
        watch_del(n, w);
        return 0;
    }
    aemp_buf ctl = AEMP_BUF_INIT;
    int rc;
    /* UNLINK_ID unless the peer is known to lack it: on a connection not
     * up yet the flags are unknown, and OTP 26+ drops a connection that
     * sends the old UNLINK (every OTP since 23 has UNLINK_ID). */
    if (!aemp__conn_up(c) || (c->flags & AEMP__DFLAG_UNLINK_ID)) {
        uint64_t id = ++P(n)->next_ref; /* a unique number for the unlink */
        rc = aemp__ctl_enc(&ctl, AEMP__CTL_UNLINK_ID, "iaa", id, &self, other);
        if (!rc) rc = aemp__conn_ctl(c, &ctl, NULL);
        /* the record stays, inactive, until the peer acknowledges */
        if (!rc) R(S(n), w)->ref = id;
    } else {
        rc = aemp__ctl_enc(&ctl, AEMP__CTL_UNLINK, "aa", &self, other);
        if (!rc) rc = aemp__conn_ctl(c, &ctl, NULL);
    }
    if (!unlinking(R(S(n), w))) watch_del(n, w);
    aemp_buf_free(&ctl);
    return rc;
}

int aemp_exit(aemp_node *n, aemp_port from, const aemp_addr *to, const aemp_term *reason)
{
    if (!n || !to || to->kind != AEMP_ADDR_PID || !aemp__term_whole(reason)) return AEMP_EINVAL;
    if (n->closing) return AEMP_ECLOSED;
    aemp_addr self;
    aemp__addr_pid(&self, n->name_h, n->creation, from.id);
    if (to->node == n->name_h) {
        aemp__port *p = aemp__proc_resolve(n, to);
        if (!p) return 0;
        /* a port's exit/2 to itself with normal kills it, as in OTP */
        if (from.id == p->id && aemp__is_atom(reason, "normal"))
            queue_exit(n, p->id, reason);
        else
            signal_exit(n, p->id, false, reason);
        run_exits(n);
        return 0;
    }
    aemp_buf ctl = AEMP_BUF_INIT;
    int rc = aemp__ctl_enc(&ctl, AEMP__CTL_EXIT2, "aat", &self, to, reason);
    if (!rc) rc = aemp__node_ctl(n, to->node, &ctl, NULL);
    aemp_buf_free(&ctl);
    return rc;
}

/* ------------------------------------------------------------------ */
/* control messages                                                   */
/* ------------------------------------------------------------------ */

static int dec(aemp_node *n, const aemp_term *t, unsigned want, aemp_addr *a)
{
    size_t used;
    int rc = aemp__dec_addr(t->data, t->len, want, n->name_h, a, &used);
    return rc ? rc : used == t->len ? 0 : AEMP_EPROTO;
}

#define PID AEMP__WANT(AEMP_ADDR_PID)
#define NAME AEMP__WANT(AEMP_ADDR_NAME)
#define REF AEMP__WANT(AEMP_ADDR_REF)

static void on_send(void *arg, aemp__conn *c, const aemp__ctl_in *m, aemp__ctl_memo *memo)
{
    aemp_node *n = arg;
    struct aemp__proc *p = P(n);
    if (!(m->repeat && memo->valid && memo->epoch == p->epoch)) {
        int ti = 2, fi = -1;
        switch (m->tag) {
        case AEMP__CTL_SEND_SENDER:
        case AEMP__CTL_SEND_SENDER_TT:
            fi = 1;
            break;
        case AEMP__CTL_REG_SEND:
        case AEMP__CTL_REG_SEND_TT:
            ti = 3;
            fi = 1;
            break;
        }
        aemp_addr to;
        memo->valid = false;
        if (dec(n, &m->el[ti], ti == 3 ? NAME : PID, &to)) {
            AEMP_LOGW("%s from %s: the destination is not a %s: ignored", aemp__ctl_name(m->tag),
                      c->peer, ti == 3 ? "name" : "pid");
            return;
        }
        memo->has_from = fi >= 0 && dec(n, &m->el[fi], PID, &memo->from) == 0;
        memo->target = aemp__proc_resolve(n, &to);
        memo->epoch = p->epoch;
        memo->valid = true;
    }
    aemp__port *port = memo->target;
    if (!port) {
        AEMP_LOGD("message from %s to a process that is not here: dropped", c->peer);
        return;
    }
    aemp__proc_deliver(n, port, &m->payload, memo->has_from ? &memo->from : NULL);
}

static void on_alias_send(void *arg, aemp__conn *c, const aemp__ctl_in *m, aemp__ctl_memo *memo)
{
    /* {ALIAS_SEND, FromPid, Alias} + Msg: to the port while its alias is
     * active (alias.c); to an unknown or removed alias it is dropped, as in
     * Erlang. */
    aemp_node *n = arg;
    aemp_addr alias, from;
    aemp__port *port = dec(n, &m->el[2], REF, &alias) ? NULL : aemp__alias_port(n, &alias);
    if (!port) {
        AEMP_LOGD("alias send from %s to an unknown alias: dropped", c->peer);
        return;
    }
    bool has_from = dec(n, &m->el[1], PID, &from) == 0;
    aemp__proc_deliver(n, port, &m->payload, has_from ? &from : NULL);
}

static void on_link(void *arg, aemp__conn *c, const aemp__ctl_in *m, aemp__ctl_memo *memo)
{
    /* {LINK, FromPid, ToPid} */
    aemp_node *n = arg;
    aemp_addr from, to;
    if (dec(n, &m->el[1], PID, &from) || dec(n, &m->el[2], PID, &to) ||
        !aemp__watch_from_peer(n, c, &from, "LINK"))
        return;
    /* a port that is not there, or a link over max_watches_per_peer: the
     * link breaks at once */
    int rc = aemp__proc_resolve(n, &to) ? aemp__watch_link(n, &from, &to) : AEMP_ENOENT;
    if (rc == AEMP_ENOENT || rc == AEMP_ETOOBIG) {
        aemp_buf b = AEMP_BUF_INIT;
        term_of_atom(&b, rc == AEMP_ENOENT ? "noproc" : "system_limit");
        aemp_term reason = aemp_buf_term(&b);
        send_exit(n, true, &to, &from, &reason);
        aemp_buf_free(&b);
        if (rc == AEMP_ETOOBIG) aemp__watch_refused(n, c);
    } else if (rc) {
        AEMP_LOGE("out of memory: link from %s not recorded", c->peer);
    }
}

static void on_unlink(void *arg, aemp__conn *c, const aemp__ctl_in *m, aemp__ctl_memo *memo)
{
    /* {UNLINK, FromPid, ToPid} or {UNLINK_ID, Id, FromPid, ToPid} */
    aemp_node *n = arg;
    int f = m->tag == AEMP__CTL_UNLINK ? 1 : 2;
    aemp_addr from, to;
    if (dec(n, &m->el[f], PID, &from) || dec(n, &m->el[f + 1], PID, &to)) return;
    uint32_t w = find_link(n, &from, &to);
    /* while our own unlink is out, the link stays as it is (inactive) */
    if (w && !unlinking(R(S(n), w))) watch_del(n, w);
    if (m->tag == AEMP__CTL_UNLINK_ID) {
        aemp_buf ctl = AEMP_BUF_INIT;
        if (aemp__ctl_enc(&ctl, AEMP__CTL_UNLINK_ID_ACK, "taa", &m->el[1], &to, &from) == 0)
            aemp__conn_ctl(c, &ctl, NULL);
        aemp_buf_free(&ctl);
    }
}

static void on_unlink_ack(void *arg, aemp__conn *c, const aemp__ctl_in *m, aemp__ctl_memo *memo)
{
    /* {UNLINK_ID_ACK, Id, FromPid, ToPid}: our unlink is done */
    aemp_node *n = arg;
    aemp_addr from, to;
    aemp_cursor cu = aemp_cursor_of(&m->el[1]);
    uint64_t id;
    if (aemp_get_uint64(&cu, &id) || dec(n, &m->el[2], PID, &from) || dec(n, &m->el[3], PID, &to))
        return;
    uint32_t w = find_link(n, &from, &to);
    if (w && unlinking(R(S(n), w)) && R(S(n), w)->ref == id) watch_del(n, w);
}

static void on_exit_signal(void *arg, aemp__conn *c, const aemp__ctl_in *m, aemp__ctl_memo *memo)
{
    aemp_node *n = arg;
    bool link = true;
    const aemp_term *reason = m->has_payload ? &m->payload : NULL;
    switch (m->tag) {
    case AEMP__CTL_EXIT2:
    case AEMP__CTL_EXIT2_TT:
    case AEMP__CTL_PAYLOAD_EXIT2:
    case AEMP__CTL_PAYLOAD_EXIT2_TT:
        link = false;
    }
    if (!reason) reason = &m->el[m->tag == AEMP__CTL_EXIT || m->tag == AEMP__CTL_EXIT2 ? 3 : 4];
    aemp_addr from, to;
    if (dec(n, &m->el[1], PID, &from) || dec(n, &m->el[2], PID, &to)) return;
    aemp__port *port = aemp__proc_resolve(n, &to);
    if (!port) return;
    if (link) {
        /* a link exit for a link that is not there (any more) is ignored */
        uint32_t w = find_link(n, &from, &to);
        if (!w) return;
        bool active = !unlinking(R(S(n), w));
        watch_del(n, w);
        if (!active) return;
    }
    signal_exit(n, port->id, link, reason);
    run_exits(n);
}

static void on_monitor(void *arg, aemp__conn *c, const aemp__ctl_in *m, aemp__ctl_memo *memo)
{
    /* {MONITOR_P, FromPid, ToProc, Ref}: ToProc is our pid or a name. */
    aemp_node *n = arg;
    aemp_addr from, target, ref;
    if (dec(n, &m->el[1], PID, &from) || dec(n, &m->el[2], PID | NAME, &target) ||
        dec(n, &m->el[3], REF, &ref)) {
        AEMP_LOGW("MONITOR_P from %s: malformed: ignored", c->peer);
        return;
    }
    if (!aemp__watch_from_peer(n, c, &from, "MONITOR_P")) return;
    /* Unknown, or over max_watches_per_peer: answer at once, or the Erlang
     * caller waits forever. */
    int rc =
        aemp__proc_resolve(n, &target) ? aemp__watch_monitor(n, &from, &target, &ref) : AEMP_ENOENT;
    if (rc == AEMP_ENOENT || rc == AEMP_ETOOBIG) {
        aemp_buf ctl = AEMP_BUF_INIT;
        if (aemp__ctl_enc(&ctl, AEMP__CTL_MONITOR_P_EXIT, "aaaA", &target, &from, &ref,
                          rc == AEMP_ENOENT ? "noproc" : "system_limit") == 0)
            aemp__conn_ctl(c, &ctl, NULL);
        aemp_buf_free(&ctl);
        if (rc == AEMP_ETOOBIG) aemp__watch_refused(n, c);
    } else if (rc) {
        AEMP_LOGE("out of memory: monitor from %s not recorded", c->peer);
    }
}

static void on_demonitor(void *arg, aemp__conn *c, const aemp__ctl_in *m, aemp__ctl_memo *memo)
{
    aemp_node *n = arg;
    aemp_addr ref;
    if (dec(n, &m->el[3], REF, &ref)) return;
    uint32_t w = find_monitor(n, &ref);
    /* only the watcher may take its monitor back */
    if (w && !end_port(R(S(n), w), 0) && end_node(n, R(S(n), w), 0) == c->peer_h) watch_del(n, w);
}

static void on_monitor_exit(void *arg, aemp__conn *c, const aemp__ctl_in *m, aemp__ctl_memo *memo)
{
    /* {MONITOR_P_EXIT, FromProc, ToPid, Ref, Reason} or the payload form */
    aemp_node *n = arg;
    aemp_addr ref;
    if (dec(n, &m->el[3], REF, &ref)) return;
    uint32_t w = find_monitor(n, &ref);
    if (!w || !end_port(R(S(n), w), 0) || end_node(n, R(S(n), w), 1) != c->peer_h) return;
    wview v;
    watch_take(n, w, &v);
    deliver_down(n, &v, m->has_payload ? &m->payload : &m->el[4]);
}

int aemp__watch_init(aemp_node *n, const aemp_node_config *cfg)
{
    static const struct {
        enum aemp__ctl tag;
        aemp__ctl_fn fn;
    } handlers[] = {
        {AEMP__CTL_SEND, on_send},
        {AEMP__CTL_SEND_TT, on_send},
        {AEMP__CTL_SEND_SENDER, on_send},
        {AEMP__CTL_SEND_SENDER_TT, on_send},
        {AEMP__CTL_REG_SEND, on_send},
        {AEMP__CTL_REG_SEND_TT, on_send},
        {AEMP__CTL_ALIAS_SEND, on_alias_send},
        {AEMP__CTL_ALIAS_SEND_TT, on_alias_send},
        {AEMP__CTL_LINK, on_link},
        {AEMP__CTL_UNLINK, on_unlink},
        {AEMP__CTL_UNLINK_ID, on_unlink},
        {AEMP__CTL_UNLINK_ID_ACK, on_unlink_ack},
        {AEMP__CTL_EXIT, on_exit_signal},
        {AEMP__CTL_EXIT_TT, on_exit_signal},
        {AEMP__CTL_EXIT2, on_exit_signal},
        {AEMP__CTL_EXIT2_TT, on_exit_signal},
        {AEMP__CTL_PAYLOAD_EXIT, on_exit_signal},
        {AEMP__CTL_PAYLOAD_EXIT_TT, on_exit_signal},
        {AEMP__CTL_PAYLOAD_EXIT2, on_exit_signal},
        {AEMP__CTL_PAYLOAD_EXIT2_TT, on_exit_signal},
        {AEMP__CTL_MONITOR_P, on_monitor},
        {AEMP__CTL_DEMONITOR_P, on_demonitor},
        {AEMP__CTL_MONITOR_P_EXIT, on_monitor_exit},
        {AEMP__CTL_PAYLOAD_MONITOR_P_EXIT, on_monitor_exit},
        {AEMP__CTL_SPAWN_REQUEST, aemp__spawn_request},
        {AEMP__CTL_SPAWN_REQUEST_TT, aemp__spawn_request},
    };
    struct aemp__wstore *s = calloc(1, sizeof *s);
    if (!s) return AEMP_ENOMEM;
    s->fresh = 1;
    s->max_per_peer = cfg->max_watches_per_peer ? cfg->max_watches_per_peer : DEFAULT_MAX_PER_PEER;
    aemp__map_init(&s->peers);
    P(n)->ws = s;
    for (size_t i = 0; i < sizeof handlers / sizeof *handlers; i++)
        aemp__node_on_ctl(n, handlers[i].tag, handlers[i].fn, n);
    return aemp__node_subscribe(n, on_event, NULL, &P(n)->sub);
}

size_t aemp__watch_count(aemp_node *n)
{
    return S(n) ? S(n)->count : 0;
}

static void free_list(const char *key, void *val, void *arg)
{
    free(val);
}

void aemp__watch_free(aemp_node *n)
{
    struct aemp__wstore *s = S(n);
    if (!s) return;
    for (uint32_t i = 1; i < s->fresh; i++)
        if (R(s, i)->kind) free_ext(R(s, i));
    for (uint32_t c = 0; c < s->nchunks; c++)
        free(s->chunks[c]);
    free(s->chunks);
    free(s->b);
    aemp__map_each(&s->peers, free_list, NULL);
    aemp__map_free(&s->peers);
    free(s);
    P(n)->ws = NULL;
}
