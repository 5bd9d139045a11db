/*
 * watch.c - links and monitors in every direction (local-local,
 * local-remote, remote-local), exit signals and their translations, port
 * death, references, and the control messages about them.
 *
 * Every record is found in constant time: in one hash table chained
 * through the records (a monitor by its reference, a link by its two
 * ends), and from each end through a list
 * (a local port's, or the remote node's), so that a port's death, a node's
 * loss and a demonitor each cost what they touch, never a search.
 *
 * Exits are carried out one at a time from a queue: a port dying kills the
 * ports linked to it, and a chain of links of any length is walked without
 * recursion.
 */
#include "watch.h"

#include <stdlib.h>

static void run_exits(aemp_node *n);

static struct aemp__proc *P(aemp_node *n)
{
    return n->proc;
}

/* ------------------------------------------------------------------ */
/* lists and keys                                                     */
/* ------------------------------------------------------------------ */

/* Which end of its record a list element is: the low bit of its prev
 * (a list's own sentinel has 0). */
#define WEND_END ((uintptr_t)1)

static uintptr_t wend_end(const aemp__wend *e)
{
    return (uintptr_t)e->prev & WEND_END;
}

static aemp__wend *wend_prev(const aemp__wend *e)
{
    return (aemp__wend *)((uintptr_t)e->prev & ~WEND_END);
}

static void wend_set_prev(aemp__wend *e, aemp__wend *prev)
{
    e->prev = (aemp__wend *)((uintptr_t)prev | wend_end(e));
}

/* The record an element belongs to, and which of its ends (0 or 1). */
static aemp__watch *wend_watch(aemp__wend *e, int *end)
{
    *end = (int)wend_end(e);
    return (aemp__watch *)((char *)(e - *end) - offsetof(aemp__watch, node));
}

static void wend_init(aemp__wend *s)
{
    s->next = s->prev = s;
}

static void wend_insert(aemp__wend *list, aemp__wend *e)
{
    e->next = list->next;
    wend_set_prev(e, list);
    wend_set_prev(list->next, e);
    list->next = e;
}

static void wend_remove(aemp__wend *e)
{
    if (!e->next) return;
    wend_prev(e)->next = e->next;
    wend_set_prev(e->next, wend_prev(e));
    e->next = NULL;
    e->prev = (aemp__wend *)wend_end(e);
}

/* The table of records: chained through the records themselves (no entry
 * of its own per record), keyed by a monitor's reference or a link's two
 * ends (in either order), at most one record per bucket on average. */
static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 1099511628211ULL;
    return h;
}

static uint64_t monitor_hash(const aemp_addr *ref)
{
    return fnv(1469598103934665603ULL ^ 'M', ref, sizeof *ref);
}

static uint64_t link_hash(const aemp_addr *a, const aemp_addr *b)
{
    if (memcmp(a, b, sizeof *a) > 0) {
        const aemp_addr *t = a;
        a = b;
        b = t;
    }
    return fnv(fnv(1469598103934665603ULL ^ 'L', a, sizeof *a), b, sizeof *b);
}

static uint64_t watch_hash(const aemp__watch *w)
{
    return w->kind == AEMP__W_MONITOR ? monitor_hash(&w->ref) : link_hash(&w->end[0], &w->end[1]);
}

static bool same(const aemp_addr *a, const aemp_addr *b)
{
    return memcmp(a, b, sizeof *a) == 0;
}

static aemp__watch **bucket(struct aemp__proc *p, uint64_t h)
{
    return p->wtab.b ? &p->wtab.b[h & p->wtab.mask] : NULL;
}

static int wtab_grow(struct aemp__proc *p)
{
    size_t nb = p->wtab.b ? 2 * (p->wtab.mask + 1) : 64;
    aemp__watch **b = calloc(nb, sizeof *b);
    if (!b) return AEMP_ENOMEM;
    for (size_t i = 0; p->wtab.b && i <= p->wtab.mask; i++) {
        for (aemp__watch *w = p->wtab.b[i], *next; w; w = next) {
            next = w->hnext;
            aemp__watch **head = &b[watch_hash(w) & (nb - 1)];
            w->hnext = *head;
            *head = w;
        }
    }
    free(p->wtab.b);
    p->wtab.b = b;
    p->wtab.mask = nb - 1;
    return 0;
}

static void wtab_unlink(struct aemp__proc *p, aemp__watch *w)
{
    aemp__watch **pw = bucket(p, watch_hash(w));
    for (; pw && *pw; pw = &(*pw)->hnext) {
        if (*pw == w) {
            *pw = w->hnext;
            p->wtab.count--;
            return;
        }
    }
}

static aemp__watch *find_monitor(aemp_node *n, const aemp_addr *ref);
static aemp__watch *find_link(aemp_node *n, const aemp_addr *a, const aemp_addr *b);

/* The list of the remote node peer_h, made on demand. */
static aemp__wend *peer_list(aemp_node *n, uint32_t peer_h, bool make)
{
    aemp__wend *s = aemp__map_get(&P(n)->peers, &peer_h, sizeof peer_h);
    if (s || !make) return s;
    s = malloc(sizeof *s);
    if (!s) return NULL;
    wend_init(s);
    if (aemp__map_put(&P(n)->peers, &peer_h, sizeof peer_h, s)) {
        free(s);
        return NULL;
    }
    return s;
}

/* A new record with ends a and b (port[i]: the local port of end i, or 0). */
static int watch_add(aemp_node *n, int kind, const aemp_addr *a, const aemp_addr *b,
                     const aemp_addr *ref, const uint64_t port[2])
{
    aemp__watch *w = calloc(1, sizeof *w);
    if (!w) return AEMP_ENOMEM;
    w->kind = (uint8_t)kind;
    w->end[0] = *a;
    w->end[1] = *b;
    if (ref) w->ref = *ref;
    aemp__wend *list[2];
    for (int i = 0; i < 2; i++) {
        w->port[i] = port[i];
        w->node[i].prev = (aemp__wend *)(uintptr_t)i; /* which end, not in a list */
        if (port[i]) {
            aemp__port *p = aemp__proc_port(n, port[i]);
            list[i] = p ? &p->watches : NULL;
        } else {
            list[i] = peer_list(n, w->end[i].node, true);
        }
        if (!list[i]) {
            free(w);
            return AEMP_ENOMEM;
        }
    }
    struct aemp__proc *p = P(n);
    if (kind == AEMP__W_MONITOR ? find_monitor(n, &w->ref) != NULL
                                : find_link(n, &w->end[0], &w->end[1]) != NULL) {
        free(w); /* the same link twice is one link; a reference is unique */
        return 0;
    }
    if ((!p->wtab.b || p->wtab.count > p->wtab.mask) && wtab_grow(p)) {
        free(w);
        return AEMP_ENOMEM;
    }
    aemp__watch **head = bucket(p, watch_hash(w));
    w->hnext = *head;
    *head = w;
    p->wtab.count++;
    wend_insert(list[0], &w->node[0]);
    wend_insert(list[1], &w->node[1]);
    return 0;
}

static void watch_del(aemp_node *n, aemp__watch *w)
{
    wtab_unlink(P(n), w);
    wend_remove(&w->node[0]);
    wend_remove(&w->node[1]);
    free(w);
}

static aemp__watch *find_monitor(aemp_node *n, const aemp_addr *ref)
{
    aemp__watch **head = bucket(P(n), monitor_hash(ref));
    for (aemp__watch *w = head ? *head : NULL; w; w = w->hnext)
        if (w->kind == AEMP__W_MONITOR && same(&w->ref, ref)) return w;
    return NULL;
}

static aemp__watch *find_link(aemp_node *n, const aemp_addr *a, const aemp_addr *b)
{
    aemp__watch **head = bucket(P(n), link_hash(a, b));
    for (aemp__watch *w = head ? *head : NULL; w; w = w->hnext)
        if (w->kind == AEMP__W_LINK && ((same(&w->end[0], a) && same(&w->end[1], b)) ||
                                        (same(&w->end[0], b) && same(&w->end[1], a))))
            return w;
    return NULL;
}

/* A link this end is taking back (UNLINK_ID sent, not yet acknowledged): it
 * keeps the unlink's reference in ref, and counts as no link (exits over it
 * are ignored, none are sent), as OTP's link protocol has it. */
static bool unlinking(const aemp__watch *w)
{
    return w->kind == AEMP__W_LINK && w->ref.kind == AEMP_ADDR_REF;
}

/* The Id of an UNLINK_ID: a number unique on this node. */
static uint64_t unlink_id(const aemp_addr *ref)
{
    return (uint64_t)ref->w[1] << 18 | ref->w[0];
}

/* The local port id of a, or 0. */
static uint64_t local_id(aemp_node *n, const aemp_addr *a)
{
    aemp__port *p = aemp__proc_resolve(n, a);
    return p ? p->id : 0;
}

int aemp__watch_link(aemp_node *n, const aemp_addr *a, const aemp_addr *b)
{
    uint64_t port[2] = {local_id(n, a), local_id(n, b)};
    return watch_add(n, AEMP__W_LINK, a, b, NULL, port);
}

int aemp__watch_monitor(aemp_node *n, const aemp_addr *watcher, const aemp_addr *target,
                        const aemp_addr *ref)
{
    uint64_t port[2] = {local_id(n, watcher), local_id(n, target)};
    return watch_add(n, AEMP__W_MONITOR, watcher, target, ref, port);
}

void aemp__proc_ref(aemp_node *n, aemp_addr *out)
{
    /* Three words as Erlang's own: the first holds 18 bits. Unique in this
     * incarnation (the creation tells incarnations apart). */
    uint64_t r = ++P(n)->next_ref;
    memset(out, 0, sizeof *out);
    out->kind = AEMP_ADDR_REF;
    out->nwords = 3;
    out->node = n->name_h;
    out->creation = n->creation;
    out->w[0] = (uint32_t)(r & 0x3ffff);
    out->w[1] = (uint32_t)(r >> 18);
    out->w[2] = (uint32_t)(r >> 50);
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
static void send_monitor_exit(aemp_node *n, const aemp__watch *w, const aemp_term *reason)
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
static void deliver_down_as(aemp_node *n, const aemp__watch *w, const aemp_term *reason, bool later)
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

static void deliver_down(aemp_node *n, const aemp__watch *w, const aemp_term *reason)
{
    deliver_down_as(n, w, reason, false);
}

/* Port `self` (end i of w) is gone with reason: act on the other end. */
static void fire(aemp_node *n, aemp__watch *w, int i, const aemp_addr *self,
                 const aemp_term *reason)
{
    int o = 1 - i;
    if (w->kind == AEMP__W_MONITOR) {
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
    if (unlinking(w)) return;
    if (w->port[o])
        signal_exit(n, w->port[o], true, reason);
    else
        send_exit(n, true, self, &w->end[o], reason);
}

/* Does anything watch port: a link, or a monitor of it? */
static bool watched(aemp__port *port)
{
    for (aemp__wend *e = port->watches.next; e != &port->watches; e = e->next) {
        int end;
        aemp__watch *x = wend_watch(e, &end);
        if ((x->kind == AEMP__W_LINK && !unlinking(x)) || end == 1) return true;
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
    if (!quiet && !port->system && !watched(port)) {
        /* an abnormal death nobody hears of: say so */
        char why[200];
        aemp_term_print(reason, why, sizeof why);
        AEMP_LOGW("port %llu died with no monitor: %s", (unsigned long long)id, why);
        quiet = true;
    }
    aemp_addr self;
    aemp__addr_pid(&self, n->name_h, n->creation, id);
    while (port->watches.next != &port->watches) {
        aemp__wend *e = port->watches.next;
        int i;
        aemp__watch *w = wend_watch(e, &i);
        /* out of every list first: what fire() does cannot meet it again */
        aemp__watch copy = *w;
        watch_del(n, w);
        fire(n, &copy, i, &self, reason);
    }
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
    aemp__wend *list = peer_list(n, ev->peer_h, false);
    if (!list) return;
    /* Detach the node's records first: what the callbacks below do (a new
     * monitor of that node, say) starts a list of its own. */
    aemp__map_del(&P(n)->peers, &ev->peer_h, sizeof ev->peer_h);
    aemp_buf b = AEMP_BUF_INIT;
    term_of_atom(&b, "noconnection");
    aemp_term reason = aemp_buf_term(&b);
    while (list->next != list) {
        aemp__wend *e = list->next;
        int remote;
        aemp__watch *w = wend_watch(e, &remote);
        aemp__watch copy = *w;
        watch_del(n, w);
        if (copy.kind == AEMP__W_MONITOR) {
            if (remote == 1 && copy.port[0]) deliver_down(n, &copy, &reason);
        } else if (copy.port[1 - remote] && !unlinking(&copy)) {
            signal_exit(n, copy.port[1 - remote], true, &reason);
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
            aemp__watch tmp;
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
        if (rc) {
            aemp__watch *x = find_monitor(n, &r);
            if (x) watch_del(n, x);
        }
        aemp_buf_free(&ctl);
    }
    if (!rc) *ref = r;
    return rc;
}

int aemp_demonitor(aemp_node *n, const aemp_addr *ref)
{
    if (!n || !ref || ref->kind != AEMP_ADDR_REF) return AEMP_EINVAL;
    aemp__watch *w = find_monitor(n, ref);
    if (!w || !w->port[0]) return P(n)->mon_cancel(n, ref);
    if (P(n)->acts.count) P(n)->mon_drop(n, ref);
    if (!w->port[1]) {
        aemp__conn *c = conn_of(n, &w->end[1]);
        aemp_buf ctl = AEMP_BUF_INIT;
        if (c &&
            aemp__ctl_enc(&ctl, AEMP__CTL_DEMONITOR_P, "aaa", &w->end[0], &w->end[1], &w->ref) == 0)
            aemp__conn_ctl(c, &ctl, NULL);
        aemp_buf_free(&ctl);
    }
    watch_del(n, w);
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
    aemp__watch *old = find_link(n, &self, other);
    if (old && !unlinking(old)) return 0;
    aemp_buf ctl = AEMP_BUF_INIT;
    int rc = aemp__ctl_enc(&ctl, AEMP__CTL_LINK, "aa", &self, other);
    if (old) /* linked again while unlinking: the unlink's answer is ignored */
        memset(&old->ref, 0, sizeof old->ref);
    else if (!rc)
        rc = aemp__watch_link(n, &self, other);
    if (!rc) rc = aemp__node_ctl(n, other->node, &ctl, NULL);
    if (rc) {
        aemp__watch *w = find_link(n, &self, other);
        if (w) watch_del(n, w);
    }
    aemp_buf_free(&ctl);
    return rc;
}

int aemp_unlink(aemp_node *n, aemp_port port, const aemp_addr *other)
{
    if (!n || !other || other->kind != AEMP_ADDR_PID) return AEMP_EINVAL;
    aemp_addr self;
    aemp__addr_pid(&self, n->name_h, n->creation, port.id);
    aemp__watch *w = find_link(n, &self, other);
    if (!w || unlinking(w)) return 0;
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
        aemp_addr id;
        aemp__proc_ref(n, &id); /* a unique number for the unlink */
        rc = aemp__ctl_enc(&ctl, AEMP__CTL_UNLINK_ID, "iaa", unlink_id(&id), &self, other);
        if (!rc) rc = aemp__conn_ctl(c, &ctl, NULL);
        /* the record stays, inactive, until the peer acknowledges */
        if (!rc) w->ref = id;
    } else {
        rc = aemp__ctl_enc(&ctl, AEMP__CTL_UNLINK, "aa", &self, other);
        if (!rc) rc = aemp__conn_ctl(c, &ctl, NULL);
    }
    if (!unlinking(w)) watch_del(n, w);
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
    if (dec(n, &m->el[1], PID, &from) || dec(n, &m->el[2], PID, &to)) return;
    if (!aemp__proc_resolve(n, &to)) {
        aemp_buf b = AEMP_BUF_INIT;
        term_of_atom(&b, "noproc");
        aemp_term reason = aemp_buf_term(&b);
        send_exit(n, true, &to, &from, &reason);
        aemp_buf_free(&b);
        return;
    }
    if (aemp__watch_link(n, &from, &to))
        AEMP_LOGE("out of memory: link from %s not recorded", c->peer);
}

static void on_unlink(void *arg, aemp__conn *c, const aemp__ctl_in *m, aemp__ctl_memo *memo)
{
    /* {UNLINK, FromPid, ToPid} or {UNLINK_ID, Id, FromPid, ToPid} */
    aemp_node *n = arg;
    int f = m->tag == AEMP__CTL_UNLINK ? 1 : 2;
    aemp_addr from, to;
    if (dec(n, &m->el[f], PID, &from) || dec(n, &m->el[f + 1], PID, &to)) return;
    aemp__watch *w = find_link(n, &from, &to);
    /* while our own unlink is out, the link stays as it is (inactive) */
    if (w && !unlinking(w)) watch_del(n, w);
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
    aemp__watch *w = find_link(n, &from, &to);
    if (w && unlinking(w) && unlink_id(&w->ref) == id) watch_del(n, w);
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
        aemp__watch *w = find_link(n, &from, &to);
        if (!w) return;
        bool active = !unlinking(w);
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
    if (!aemp__proc_resolve(n, &target)) {
        /* Unknown: answer at once, or the Erlang caller waits forever. */
        aemp_buf ctl = AEMP_BUF_INIT;
        if (aemp__ctl_enc(&ctl, AEMP__CTL_MONITOR_P_EXIT, "aaaA", &target, &from, &ref, "noproc") ==
            0)
            aemp__conn_ctl(c, &ctl, NULL);
        aemp_buf_free(&ctl);
        return;
    }
    if (aemp__watch_monitor(n, &from, &target, &ref))
        AEMP_LOGE("out of memory: monitor from %s not recorded", c->peer);
}

static void on_demonitor(void *arg, aemp__conn *c, const aemp__ctl_in *m, aemp__ctl_memo *memo)
{
    aemp_node *n = arg;
    aemp_addr ref;
    if (dec(n, &m->el[3], REF, &ref)) return;
    aemp__watch *w = find_monitor(n, &ref);
    /* only the watcher may take its monitor back */
    if (w && !w->port[0] && w->end[0].node == c->peer_h) watch_del(n, w);
}

static void on_monitor_exit(void *arg, aemp__conn *c, const aemp__ctl_in *m, aemp__ctl_memo *memo)
{
    /* {MONITOR_P_EXIT, FromProc, ToPid, Ref, Reason} or the payload form */
    aemp_node *n = arg;
    aemp_addr ref;
    if (dec(n, &m->el[3], REF, &ref)) return;
    aemp__watch *w = find_monitor(n, &ref);
    if (!w || !w->port[0] || w->end[1].node != c->peer_h) return;
    aemp__watch copy = *w;
    watch_del(n, w);
    deliver_down(n, &copy, m->has_payload ? &m->payload : &m->el[4]);
}

int aemp__watch_init(aemp_node *n)
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
    for (size_t i = 0; i < sizeof handlers / sizeof *handlers; i++)
        aemp__node_on_ctl(n, handlers[i].tag, handlers[i].fn, n);
    return aemp__node_subscribe(n, on_event, NULL, &P(n)->sub);
}

static void free_watch(const char *key, void *val, void *arg)
{
    free(val);
}

void aemp__watch_free(aemp_node *n)
{
    struct aemp__proc *p = P(n);
    for (size_t i = 0; p->wtab.b && i <= p->wtab.mask; i++) {
        for (aemp__watch *w = p->wtab.b[i], *next; w; w = next) {
            next = w->hnext;
            free(w);
        }
    }
    free(p->wtab.b);
    p->wtab.b = NULL;
    p->wtab.count = 0;
    aemp__map_each(&P(n)->peers, free_watch, NULL);
    aemp__map_free(&P(n)->peers);
}
