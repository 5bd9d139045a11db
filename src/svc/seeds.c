/*
 * seeds.c - seeds and meshing (AEMP's `seeds`), and the answer of a C node
 * to erlang:nodes/0,1.
 *
 * A node configured with seeds keeps a connection to each of them: each
 * seed has one timer. While the seed is down the timer drives the
 * attempts: it starts one when no connection to the seed exists (the node's
 * table holds at most one per peer, so at most one attempt is ever in
 * flight), and after each failure waits a randomised, exponentially growing
 * interval (aemp__backoff). While the seed is up the timer drives meshing:
 * the seed is asked for the nodes it is connected to (erpc of
 * erlang:nodes([visible, hidden]) through aemp_call), and this node
 * connects once to each it is not connected to yet.
 *
 * Failures are logged once at warn when a seed becomes unreachable, then at
 * debug, with a summary at warn every SUMMARY_MS while it stays so; the
 * connection layer's own failure line for these attempts is debug too.
 *
 * The node answers erlang:nodes/0,1 itself (an export the application may
 * replace), as an Erlang node started with -hidden would: every connection
 * of a C node is hidden, so nodes() and nodes(visible) are [], and
 * nodes(hidden) and nodes(connected) list every node that is up.
 */
#include "svc.h"

#include <stdio.h>
#include <stdlib.h>

#define DEFAULT_SEED_MIN_MS 500
#define DEFAULT_SEED_MAX_MS 30000
#define DEFAULT_MESH_INTERVAL_MS 30000
#define MAX_INTERVAL_MS 3600000
/* Names of one seed's answer considered for meshing. */
#define MAX_MESH_NAMES 256
/* A seed's answer to erlang:nodes/1 must come within this. */
#define MESH_CALL_TIMEOUT_MS 10000
/* While a seed stays unreachable, one summary line this often. */
#define SUMMARY_MS 60000

/* ------------------------------------------------------------------ */
/* backoff                                                            */
/* ------------------------------------------------------------------ */

void aemp__backoff_init(aemp__backoff *b, unsigned min_ms, unsigned max_ms)
{
    if (min_ms == 0) min_ms = 1;
    if (max_ms < min_ms) max_ms = min_ms;
    b->min_ms = min_ms;
    b->max_ms = max_ms;
    b->cur_ms = min_ms;
}

void aemp__backoff_reset(aemp__backoff *b)
{
    b->cur_ms = b->min_ms;
}

unsigned aemp__backoff_next(aemp__backoff *b, uint32_t rnd)
{
    unsigned cur = b->cur_ms;
    unsigned lo = cur - cur / 2; /* half the interval, rounded up */
    unsigned delay = lo + (unsigned)(rnd % (uint32_t)(cur - lo + 1));
    b->cur_ms = cur > b->max_ms / 2 ? b->max_ms : cur * 2;
    return delay;
}

/* ------------------------------------------------------------------ */
/* state                                                              */
/* ------------------------------------------------------------------ */

struct seed {
    struct aemp__seeds *s;
    uint32_t h;       /* the seed's name, interned */
    const char *name; /* its text (the intern table's, lives forever) */
    uv_timer_t timer;
    aemp__backoff bo;
    bool up;           /* its connection is up */
    bool calling;      /* a mesh query waits for its answer */
    bool mesh_told;    /* a bad answer was logged at info since it came up */
    unsigned fails;    /* failed attempts since it was last up */
    unsigned fails_lo; /* of them, before the last summary line */
    uint64_t summary_at;
    char reason[128]; /* the last failure */
};

struct aemp__seeds {
    aemp_node *n;
    struct seed *seed;
    size_t count;
    int mesh_ms; /* 0: no meshing */
    bool closed; /* timers closed */
};

static uint32_t rnd32(void)
{
    uint32_t r = 0;
    aemp__random(&r, sizeof r);
    return r;
}

static struct seed *seed_of(struct aemp__seeds *s, uint32_t h)
{
    for (size_t i = 0; i < s->count; i++)
        if (s->seed[i].h == h) return &s->seed[i];
    return NULL;
}

static void arm(struct seed *sd, unsigned ms);

/* ------------------------------------------------------------------ */
/* meshing                                                            */
/* ------------------------------------------------------------------ */

/* Connect once to a node a seed knows, unless connected or connecting. */
static int mesh_connect(aemp_node *n, const char *seed, const char *peer)
{
    if (!aemp__node_name_valid(peer) || strcmp(peer, n->name) == 0) return 0;
    uint32_t h = aemp__intern_find(peer, strlen(peer));
    int err;
    if (h && aemp__node_conn(n, h, false, &err)) return 0;
    if (!h && !(h = aemp__intern(peer, strlen(peer)))) return AEMP_ETOOBIG;
    aemp__conn *c = aemp__node_conn(n, h, true, &err);
    if (!c) {
        AEMP_LOGD("mesh: cannot connect to %s (known to %s): %s", peer, seed, aemp_strerror(err));
        return err == AEMP_EBUSY ? err : 0;
    }
    c->quiet = true;
    AEMP_LOGD("mesh: connecting to %s (known to seed %s)", peer, seed);
    return 0;
}

/* What is wrong with a seed's answers: at info once while it is up, then
 * at debug (the question comes back every mesh_interval_ms). */
#define MESH_LOG(sd, ...)                                                                          \
    do {                                                                                           \
        if ((sd)->mesh_told) {                                                                     \
            AEMP_LOGD(__VA_ARGS__);                                                                \
        } else {                                                                                   \
            (sd)->mesh_told = true;                                                                \
            AEMP_LOGI(__VA_ARGS__);                                                                \
        }                                                                                          \
    } while (0)

static void on_nodes_answer(aemp_node *n, int status, const aemp_term *result, void *arg)
{
    struct seed *sd = arg;
    sd->calling = false;
    if (n->closing) return;
    if (status != AEMP_RPC_RETURN) {
        char text[256] = "";
        if (status >= 0 && result) aemp_term_print(result, text, sizeof text);
        MESH_LOG(sd, "mesh: seed %s did not tell its nodes: %s %s", sd->name,
                 status < 0 ? aemp_strerror(status) : "error", text);
        return;
    }
    aemp_cursor c = aemp_cursor_of(result);
    uint32_t count;
    if (aemp_get_list(&c, &count)) {
        if (aemp_get_nil(&c) == 0) return; /* [] */
        MESH_LOG(sd, "mesh: seed %s answered erlang:nodes/1 with no list", sd->name);
        return;
    }
    if (count > MAX_MESH_NAMES)
        MESH_LOG(sd, "mesh: seed %s knows %u nodes: only the first %d are considered", sd->name,
                 count, MAX_MESH_NAMES);
    char peer[AEMP_MAXATOMLEN + 1];
    for (uint32_t i = 0; i < count && i < MAX_MESH_NAMES; i++) {
        if (aemp_get_atom(&c, peer, sizeof peer)) {
            AEMP_LOGD("mesh: seed %s answered a list that is not of node names", sd->name);
            return;
        }
        if (mesh_connect(n, sd->name, peer)) return; /* no room: try at the next round */
    }
}

static void mesh_query(struct seed *sd)
{
    aemp_node *n = sd->s->n;
    if (sd->calling || !sd->s->mesh_ms) return;
    aemp_buf args = AEMP_BUF_INIT;
    int rc = aemp_term_format(&args, "[[visible, hidden]]");
    if (!rc) {
        aemp_term t = aemp_buf_term(&args);
        rc = aemp_call(n, sd->name, "erlang", "nodes", &t, MESH_CALL_TIMEOUT_MS, on_nodes_answer,
                       sd);
    }
    aemp_buf_free(&args);
    if (rc)
        AEMP_LOGD("mesh: cannot ask seed %s for its nodes: %s", sd->name, aemp_strerror(rc));
    else
        sd->calling = true;
}

/* ------------------------------------------------------------------ */
/* connecting                                                         */
/* ------------------------------------------------------------------ */

static void seed_up(struct seed *sd)
{
    if (sd->up) return;
    sd->up = true;
    if (sd->fails)
        AEMP_LOGI("seed %s connected after %u failed attempts", sd->name, sd->fails);
    else
        AEMP_LOGI("seed %s connected", sd->name);
    sd->fails = sd->fails_lo = 0;
    sd->mesh_told = false;
    aemp__backoff_reset(&sd->bo);
    uv_timer_stop(&sd->timer);
    mesh_query(sd);
    if (sd->s->mesh_ms) arm(sd, (unsigned)sd->s->mesh_ms);
}

static void seed_failed(struct seed *sd, const char *reason)
{
    aemp_node *n = sd->s->n;
    uint64_t now = uv_now(n->loop);
    aemp__strlcpy(sd->reason, reason ? reason : "", sizeof sd->reason);
    sd->fails++;
    unsigned delay = aemp__backoff_next(&sd->bo, rnd32());
    if (sd->fails == 1) {
        AEMP_LOGW("seed %s: cannot connect: %s; retrying with backoff (%u ms to %u ms)", sd->name,
                  sd->reason, sd->bo.min_ms, sd->bo.max_ms);
        sd->fails_lo = 1;
        sd->summary_at = now + SUMMARY_MS;
    } else if (now >= sd->summary_at) {
        AEMP_LOGW("seed %s: still unreachable: %u more failed attempts (%u in all), the last: %s",
                  sd->name, sd->fails - sd->fails_lo, sd->fails, sd->reason);
        sd->fails_lo = sd->fails;
        sd->summary_at = now + SUMMARY_MS;
    } else {
        AEMP_LOGD("seed %s: cannot connect: %s; next attempt in %u ms", sd->name, sd->reason,
                  delay);
    }
    arm(sd, delay);
}

/* One attempt, unless one is in flight or the seed is up. */
static void attempt(struct seed *sd)
{
    aemp_node *n = sd->s->n;
    int err;
    aemp__conn *c = aemp__node_conn(n, sd->h, false, &err);
    if (c && c->state == AEMP__C_UP) {
        seed_up(sd);
        return;
    }
    if (c) {
        /* in flight (ours or another's): its outcome is an event; look
         * again later in case it ends without one (a lost simultaneous
         * connect) */
        arm(sd, sd->bo.cur_ms);
        return;
    }
    c = aemp__node_conn(n, sd->h, true, &err);
    if (!c) {
        seed_failed(sd, aemp_strerror(err));
        return;
    }
    c->quiet = true;
    AEMP_LOGD("seed %s: connecting", sd->name);
    arm(sd, sd->bo.cur_ms);
}

static void on_timer(uv_timer_t *t)
{
    struct seed *sd = t->data;
    if (sd->s->n->closing) return;
    if (!sd->up) {
        attempt(sd);
        return;
    }
    if (!sd->s->mesh_ms) return;
    mesh_query(sd);
    arm(sd, (unsigned)sd->s->mesh_ms);
}

static void arm(struct seed *sd, unsigned ms)
{
    uv_timer_start(&sd->timer, on_timer, ms, 0);
}

static void on_event(aemp_node *n, const aemp__event_info *ev, void *arg)
{
    struct aemp__seeds *s = arg;
    if (n->closing || s->closed) return;
    struct seed *sd = seed_of(s, ev->peer_h);
    if (!sd) return;
    switch (ev->kind) {
    case AEMP__EV_NODE_UP:
        seed_up(sd);
        break;
    case AEMP__EV_NODE_DOWN:
        if (!sd->up) break;
        sd->up = false;
        AEMP_LOGI("seed %s lost (%s): reconnecting", sd->name, ev->reason ? ev->reason : "");
        aemp__backoff_reset(&sd->bo);
        arm(sd, aemp__backoff_next(&sd->bo, rnd32()));
        break;
    case AEMP__EV_NODE_UNREACHABLE:
        if (!sd->up) seed_failed(sd, ev->reason);
        break;
    }
}

/* ------------------------------------------------------------------ */
/* erlang:nodes/0,1                                                   */
/* ------------------------------------------------------------------ */

struct nodes_out {
    aemp_node *n;
    aemp_buf *b;
    uint32_t count;
    int err;
};

static void put_node(struct nodes_out *o, const char *name)
{
    if (o->err) return;
    o->err = aemp_term_format(o->b, "~a", name);
    if (!o->err) o->count++;
}

static void put_known_down(const char *key, void *val, void *arg)
{
    struct nodes_out *o = arg;
    uint32_t h;
    memcpy(&h, key, sizeof h);
    const char *name = aemp__intern_text(h, NULL);
    if (name && h != o->n->name_h && !aemp_node_is_up(o->n, name)) put_node(o, name);
}

/* Which of visible, hidden, connected, this, known: a bit each. */
enum { W_VISIBLE = 1, W_HIDDEN = 2, W_CONNECTED = 4, W_THIS = 8, W_KNOWN = 16 };

static int node_kind(aemp_cursor *c, unsigned *what)
{
    char a[16];
    if (aemp_get_atom(c, a, sizeof a)) return AEMP_ENOMATCH;
    static const char *const names[] = {"visible", "hidden", "connected", "this", "known"};
    for (unsigned i = 0; i < 5; i++)
        if (strcmp(a, names[i]) == 0) {
            *what |= 1u << i;
            return 0;
        }
    return AEMP_ENOMATCH;
}

static int nodes_fn(aemp_node *n, const aemp_term *args, aemp_buf *result, void *arg)
{
    aemp_cursor c = aemp_cursor_of(args);
    uint32_t argc, k;
    unsigned what = 0;
    if (aemp_get_list(&c, &argc)) argc = 0; /* nodes() */
    if (argc == 0) {
        what = W_VISIBLE;
    } else if (argc != 1) {
        goto badarg;
    } else if (aemp_get_list(&c, &k) == 0) {
        for (uint32_t i = 0; i < k; i++)
            if (node_kind(&c, &what)) goto badarg;
        if (aemp_get_nil(&c)) goto badarg;
    } else if (aemp_get_nil(&c) == 0) {
        /* nodes([]) is [] */
    } else if (node_kind(&c, &what)) {
        goto badarg;
    }
    /* This node is hidden: each of its connections is, so `visible` adds
     * nothing. */
    size_t up = aemp_up_nodes(n, NULL, 0);
    const char **names = up ? calloc(up, sizeof *names) : NULL;
    if (up && !names) {
        aemp_term_format(result, "system_limit");
        return AEMP_RPC_ERROR;
    }
    up = aemp_up_nodes(n, names, up);
    aemp_buf items = AEMP_BUF_INIT;
    struct nodes_out o = {n, &items, 0, 0};
    if (what & (W_THIS | W_KNOWN)) put_node(&o, n->name);
    if (what & (W_HIDDEN | W_CONNECTED | W_KNOWN))
        for (size_t i = 0; i < up; i++)
            put_node(&o, names[i]);
    if (what & W_KNOWN) aemp__map_each(&n->known, put_known_down, &o);
    free(names);
    /* LIST_EXT: its tag, the count, the items, then NIL_EXT */
    if (!o.err && o.count) {
        unsigned char head[5] = {108, (unsigned char)(o.count >> 24),
                                 (unsigned char)(o.count >> 16), (unsigned char)(o.count >> 8),
                                 (unsigned char)o.count};
        o.err = aemp__buf_append(result, head, sizeof head);
        if (!o.err) o.err = aemp__buf_append(result, items.data, items.len);
    }
    if (!o.err) o.err = aemp__buf_append(result, "j", 1);
    aemp_buf_free(&items);
    if (o.err) {
        aemp__buf_reset(result);
        aemp_term_format(result, "system_limit");
        return AEMP_RPC_ERROR;
    }
    return AEMP_RPC_RETURN;
badarg:
    aemp_term_format(result, "badarg");
    return AEMP_RPC_ERROR;
}

/* ------------------------------------------------------------------ */
/* life                                                               */
/* ------------------------------------------------------------------ */

static int check_ms(const char *what, long long v)
{
    if (v >= 0 && v <= MAX_INTERVAL_MS) return 0;
    AEMP_LOGE("%s %lld ms is out of range (0 to %d)", what, v, MAX_INTERVAL_MS);
    return AEMP_EINVAL;
}

int aemp__seeds_start(aemp_node *n, const aemp_node_config *cfg)
{
    int rc = aemp_export(n, "erlang", "nodes", nodes_fn, NULL);
    if (rc) return rc;
    size_t count = 0;
    if (cfg->seeds)
        while (cfg->seeds[count])
            if (++count > AEMP__MAX_SEEDS) {
                AEMP_LOGE("more than %d seeds", AEMP__MAX_SEEDS);
                return AEMP_EINVAL;
            }
    if ((rc = check_ms("seed_min_ms", cfg->seed_min_ms)) ||
        (rc = check_ms("seed_max_ms", cfg->seed_max_ms)) ||
        (rc = check_ms("mesh_interval_ms", cfg->mesh_interval_ms < 0 ? 0 : cfg->mesh_interval_ms)))
        return rc;
    for (size_t i = 0; i < count; i++)
        if (!aemp__node_name_valid(cfg->seeds[i])) {
            AEMP_LOGE("seed '%s' is not a node name alive@host", cfg->seeds[i]);
            return AEMP_EINVAL;
        }
    if (!count) return 0;
    struct aemp__seeds *s = calloc(1, sizeof *s);
    if (!s) return AEMP_ENOMEM;
    s->seed = calloc(count, sizeof *s->seed);
    if (!s->seed) {
        free(s);
        return AEMP_ENOMEM;
    }
    s->n = n;
    s->mesh_ms = cfg->mesh_interval_ms < 0 ? 0
                 : cfg->mesh_interval_ms   ? cfg->mesh_interval_ms
                                           : DEFAULT_MESH_INTERVAL_MS;
    unsigned lo = cfg->seed_min_ms ? cfg->seed_min_ms : DEFAULT_SEED_MIN_MS;
    unsigned hi = cfg->seed_max_ms ? cfg->seed_max_ms : DEFAULT_SEED_MAX_MS;
    n->svc->seeds = s;
    for (size_t i = 0; i < count; i++) {
        const char *name = cfg->seeds[i];
        uint32_t h = aemp__intern(name, strlen(name));
        if (!h) return AEMP_ETOOBIG;
        if (h == n->name_h) {
            AEMP_LOGD("seed %s is this node: ignored", name);
            continue;
        }
        if (seed_of(s, h)) continue; /* named twice */
        struct seed *sd = &s->seed[s->count++];
        sd->s = s;
        sd->h = h;
        sd->name = aemp__intern_text(h, NULL);
        aemp__backoff_init(&sd->bo, lo, hi);
        uv_timer_init(n->loop, &sd->timer);
        sd->timer.data = sd;
        aemp__node_hold(n);
        /* the first attempt at once, from the loop */
        arm(sd, 0);
    }
    return aemp__node_subscribe(n, on_event, s, NULL);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct seed *sd = h->data;
    aemp__node_part_closed(sd->s->n);
}

void aemp__seeds_close(aemp_node *n)
{
    struct aemp__seeds *s = n->svc ? n->svc->seeds : NULL;
    if (!s || s->closed) return;
    s->closed = true;
    for (size_t i = 0; i < s->count; i++)
        uv_close((uv_handle_t *)&s->seed[i].timer, on_timer_closed);
}

void aemp__seeds_free(aemp_node *n)
{
    struct aemp__seeds *s = n->svc ? n->svc->seeds : NULL;
    if (!s) return;
    free(s->seed);
    free(s);
    n->svc->seeds = NULL;
}
