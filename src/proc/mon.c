/*
 * mon.c - AEMP's kil, its three forms of mon (a callback, killing a local
 * port, sending a message), mon_guard, and one-shot timers (after).
 *
 * A mon is an ordinary monitor of the process layer (watch.c) with an
 * action kept here by its reference: when the monitor fires, the action
 * runs instead of a 'DOWN' message. The watcher is the local port the
 * action belongs to (so the monitor goes when that port dies), or the
 * node's own monitor port, a silent service port made on first use.
 */
#include "watch.h"

#include <stdlib.h>

enum act_kind { ACT_CB = 1, ACT_KILL, ACT_SEND, ACT_GUARD };

struct act {
    uint8_t kind;
    aemp_mon_cb cb; /* ACT_CB */
    void *arg;
    uint64_t local; /* ACT_KILL: the port to kill */
    aemp_addr to;   /* ACT_SEND */
    aemp_buf msg;   /* ACT_SEND: the message; ACT_GUARD: the refs */
};

/* a mon of a local port that is not there: fires from the loop */
struct aemp__pending {
    struct aemp__pending *next;
    aemp_addr ref, target;
};

struct timer {
    uv_timer_t h;
    aemp_node *n;
    uint64_t id;
    aemp_port self; /* $SELF when it was made */
    aemp_fn fn;     /* NULL: send */
    void *arg;
    aemp_addr to;
    aemp_buf msg;
    bool held; /* closed by the node's close */
};

static struct aemp__proc *P(aemp_node *n)
{
    return n->proc;
}

static size_t act_key(char *k, const aemp_addr *ref)
{
    size_t len = (size_t)ref->nwords * 4;
    memcpy(k, ref->w, len);
    return len;
}

static void act_free(struct act *a)
{
    aemp_buf_free(&a->msg);
    free(a);
}

static struct act *act_take(aemp_node *n, const aemp_addr *ref)
{
    char k[sizeof ref->w];
    if (ref->kind != AEMP_ADDR_REF || ref->nwords > 5) return NULL;
    return aemp__map_del(&P(n)->acts, k, act_key(k, ref));
}

static void mon_drop(aemp_node *n, const aemp_addr *ref)
{
    struct act *a = act_take(n, ref);
    if (a) act_free(a);
}

/* msg with reason added: a tuple gets it as a new last element, anything
 * else becomes {Msg, Reason}. */
static int with_reason(aemp_buf *out, const aemp_term *msg, const aemp_term *reason)
{
    aemp_cursor c = aemp_cursor_of(msg);
    uint32_t arity;
    if (aemp_get_tuple(&c, &arity) || arity >= UINT32_MAX - 1)
        return aemp_term_format(out, "{~t, ~t}", msg, reason);
    /* a new tuple header, the elements as they are, the reason */
    int rc = aemp__buf_reserve(out, 5 + (msg->len - c.pos) + reason->len);
    if (rc) return rc;
    if (arity + 1 <= 255) {
        aemp__buf_put_u8(out, AEMP__EXT_SMALL_TUPLE);
        aemp__buf_put_u8(out, (uint8_t)(arity + 1));
    } else {
        aemp__buf_put_u8(out, AEMP__EXT_LARGE_TUPLE);
        aemp__buf_put_u32(out, arity + 1);
    }
    aemp__buf_append(out, msg->data + c.pos, msg->len - c.pos);
    return aemp__buf_append(out, reason->data, reason->len);
}

static void run(aemp_node *n, struct act *a, const aemp_addr *target, const aemp_term *reason)
{
    struct aemp__proc *p = P(n);
    switch (a->kind) {
    case ACT_CB: {
        uint64_t outer = p->self;
        p->self = 0;
        a->cb(n, target, reason, a->arg);
        p->self = outer;
        break;
    }
    case ACT_KILL:
        if (!aemp__is_atom(reason, "normal")) aemp__proc_kill_later(n, a->local, reason);
        break;
    case ACT_SEND: {
        aemp_buf m = AEMP_BUF_INIT;
        aemp_term msg = aemp_buf_term(&a->msg);
        int rc = with_reason(&m, &msg, reason);
        if (!rc) {
            aemp_term t = aemp_buf_term(&m);
            rc = aemp_send(n, (aemp_port){0}, &a->to, &t);
        }
        if (rc) AEMP_LOGW("mon: the message on a port's death is lost: %s", aemp_strerror(rc));
        aemp_buf_free(&m);
        break;
    }
    case ACT_GUARD:
        for (size_t i = 0; i + sizeof(aemp_addr) <= a->msg.len; i += sizeof(aemp_addr)) {
            aemp_addr ref;
            memcpy(&ref, a->msg.data + i, sizeof ref);
            aemp_demonitor(n, &ref);
        }
        break;
    }
}

static bool mon_fire(aemp_node *n, const aemp_addr *ref, const aemp_addr *target,
                     const aemp_term *reason, bool later)
{
    struct act *a = act_take(n, ref);
    if (!a) return false;
    run(n, a, target, reason);
    act_free(a);
    return true;
}

/* ------------------------------------------------------------------ */
/* making them                                                        */
/* ------------------------------------------------------------------ */

static int mon_port(aemp_node *n, aemp_port *out)
{
    struct aemp__proc *p = P(n);
    if (!p->mon_port || !aemp__proc_port(n, p->mon_port)) {
        int rc = aemp__proc_open(n, NULL, NULL, out);
        if (rc) return rc;
        aemp__proc_protect(n, *out);
        p->mon_port = out->id;
    }
    out->id = p->mon_port;
    return 0;
}

/* Monitor target from watcher with action a (taken over, freed on error). */
static int add(aemp_node *n, const aemp_addr *target, aemp_port watcher, struct act *a,
               aemp_addr *ref)
{
    struct aemp__proc *p = P(n);
    int rc = AEMP_EINVAL;
    if (!target || (target->kind != AEMP_ADDR_PID && target->kind != AEMP_ADDR_NAME) ||
        !target->node)
        goto fail;
    rc = AEMP_ECLOSED;
    if (n->closing) goto fail;
    aemp_addr r;
    char k[sizeof r.w];
    if (target->node == n->name_h && !aemp__proc_resolve(n, target)) {
        /* not there: fires with noproc from the loop */
        struct aemp__pending *pd = calloc(1, sizeof *pd);
        rc = AEMP_ENOMEM;
        if (!pd) goto fail;
        aemp__proc_ref(n, &r);
        if (aemp__map_put(&p->acts, k, act_key(k, &r), a)) {
            free(pd);
            goto fail;
        }
        pd->ref = r;
        pd->target = *target;
        pd->next = p->pending;
        p->pending = pd;
        aemp__proc_wake(n);
    } else {
        if ((rc = aemp_monitor(n, watcher, target, &r))) goto fail;
        if ((rc = aemp__map_put(&p->acts, k, act_key(k, &r), a))) {
            aemp_demonitor(n, &r);
            goto fail;
        }
    }
    if (ref) *ref = r;
    return 0;
fail:
    act_free(a);
    return rc;
}

static struct act *act_new(int kind)
{
    struct act *a = calloc(1, sizeof *a);
    if (a) a->kind = (uint8_t)kind;
    return a;
}

int aemp_mon(aemp_node *n, const aemp_addr *target, aemp_mon_cb cb, void *arg, aemp_addr *ref)
{
    if (!n || !cb) return AEMP_EINVAL;
    aemp_port watcher;
    int rc = mon_port(n, &watcher);
    if (rc) return rc;
    struct act *a = act_new(ACT_CB);
    if (!a) return AEMP_ENOMEM;
    a->cb = cb;
    a->arg = arg;
    return add(n, target, watcher, a, ref);
}

int aemp_mon_kill(aemp_node *n, const aemp_addr *target, aemp_port local, aemp_addr *ref)
{
    if (!n) return AEMP_EINVAL;
    if (!local.id) local = aemp_self(n);
    aemp__port *lp = aemp__proc_port(n, local.id);
    if (!lp || lp->dying) return AEMP_ENOENT;
    struct act *a = act_new(ACT_KILL);
    if (!a) return AEMP_ENOMEM;
    a->local = local.id;
    return add(n, target, local, a, ref);
}

int aemp_mon_send(aemp_node *n, const aemp_addr *target, const aemp_addr *to, const aemp_term *msg,
                  aemp_addr *ref)
{
    if (!n || !to || !aemp__term_whole(msg) || to->kind < AEMP_ADDR_PID ||
        to->kind > AEMP_ADDR_ALIAS)
        return AEMP_EINVAL;
    /* the watcher: the destination when it is a local port, so that the
     * monitor goes with it; else the node's monitor port */
    aemp_port watcher;
    aemp__port *lp = aemp__proc_resolve(n, to);
    int rc = 0;
    if (lp && !lp->system)
        watcher.id = lp->id;
    else
        rc = mon_port(n, &watcher);
    if (rc) return rc;
    struct act *a = act_new(ACT_SEND);
    if (!a) return AEMP_ENOMEM;
    a->to = *to;
    if ((rc = aemp_buf_put_term(&a->msg, msg))) {
        act_free(a);
        return rc;
    }
    return add(n, target, watcher, a, ref);
}

int aemp_mon_guard(aemp_node *n, aemp_port port, const aemp_addr *refs, size_t count)
{
    if (!n || (count && !refs)) return AEMP_EINVAL;
    aemp_port watcher;
    int rc = mon_port(n, &watcher);
    if (rc) return rc;
    struct act *a = act_new(ACT_GUARD);
    if (!a) return AEMP_ENOMEM;
    if (count > SIZE_MAX / sizeof *refs || aemp__buf_append(&a->msg, refs, count * sizeof *refs)) {
        act_free(a);
        return AEMP_ENOMEM;
    }
    aemp_addr target;
    aemp__addr_pid(&target, n->name_h, n->creation, port.id);
    return add(n, &target, watcher, a, NULL);
}

static int mon_cancel(aemp_node *n, const aemp_addr *ref)
{
    for (struct aemp__pending **pp = &P(n)->pending; *pp; pp = &(*pp)->next) {
        if (!aemp_addr_equal(&(*pp)->ref, ref)) continue;
        struct aemp__pending *pd = *pp;
        *pp = pd->next;
        mon_drop(n, ref);
        free(pd);
        return 0;
    }
    return AEMP_ENOENT;
}

/* From the loop: the mons of ports that were not there fire. */
static void run_pending(aemp_node *n)
{
    struct aemp__proc *p = P(n);
    /* oldest first; mons made meanwhile wait for the next turn */
    struct aemp__pending *list = NULL, *pd;
    while ((pd = p->pending)) {
        p->pending = pd->next;
        pd->next = list;
        list = pd;
    }
    static const char noproc[] = {AEMP__EXT_SMALL_ATOM_UTF8, 6, 'n', 'o', 'p', 'r', 'o', 'c'};
    aemp_term reason = {noproc, sizeof noproc};
    while ((pd = list)) {
        list = pd->next;
        struct act *a = act_take(n, &pd->ref);
        if (a) {
            run(n, a, &pd->target, &reason);
            act_free(a);
        }
        free(pd);
    }
}

void aemp__mon_run_pending(aemp_node *n)
{
    if (P(n)->pending) run_pending(n);
}

/* ------------------------------------------------------------------ */
/* kil                                                                */
/* ------------------------------------------------------------------ */

int aemp_kil(aemp_node *n, const aemp_addr *port, const aemp_term *reason)
{
    static const char normal[] = {AEMP__EXT_SMALL_ATOM_UTF8, 6, 'n', 'o', 'r', 'm', 'a', 'l'};
    aemp_term r = {normal, sizeof normal};
    if (!n || !port) return AEMP_EINVAL;
    if (reason) {
        if (!aemp__term_whole(reason)) return AEMP_EINVAL;
        r = *reason;
    }
    if (n->closing) return AEMP_ECLOSED;
    if (port->node == n->name_h) {
        aemp__port *p = aemp__proc_resolve(n, port);
        if (!p) return 0;
        if (p->system) return AEMP_EINVAL;
        aemp__proc_kill_later(n, p->id, &r);
        return 0;
    }
    if (port->kind != AEMP_ADDR_PID) return AEMP_EINVAL;
    /* from $SELF, or from the node's monitor port */
    aemp_port from = aemp_self(n);
    int rc = from.id ? 0 : mon_port(n, &from);
    return rc ? rc : aemp_exit(n, from, port, &r);
}

/* ------------------------------------------------------------------ */
/* after                                                              */
/* ------------------------------------------------------------------ */

static void timer_closed(uv_handle_t *h)
{
    struct timer *t = h->data;
    if (t->held) aemp__node_part_closed(t->n);
    aemp_buf_free(&t->msg);
    free(t);
}

static void timer_end(struct timer *t)
{
    aemp__map_del(&P(t->n)->timers, &t->id, sizeof t->id);
    uv_close((uv_handle_t *)&t->h, timer_closed);
}

static void timer_fired(uv_timer_t *h)
{
    struct timer *t = h->data;
    aemp_node *n = t->n;
    timer_end(t); /* freed from the loop: what follows may use t */
    if (n->closing) return;
    if (t->fn) {
        aemp_psub s = {n, t->self, t->fn, t->arg};
        aemp_psub_call(&s);
        return;
    }
    aemp_term m = aemp_buf_term(&t->msg);
    int rc = aemp_send(n, t->self, &t->to, &m);
    if (rc) AEMP_LOGW("after: the timer's message is lost: %s", aemp_strerror(rc));
}

static int timer_add(aemp_node *n, uint64_t ms, struct timer *t, uint64_t *id)
{
    struct aemp__proc *p = P(n);
    t->n = n;
    t->self = aemp_self(n);
    t->id = ++p->next_timer;
    if (aemp__map_put(&p->timers, &t->id, sizeof t->id, t)) {
        aemp_buf_free(&t->msg);
        free(t);
        return AEMP_ENOMEM;
    }
    uv_timer_init(n->loop, &t->h);
    t->h.data = t;
    uv_timer_start(&t->h, timer_fired, ms, 0);
    if (id) *id = t->id;
    return 0;
}

int aemp_after_send(aemp_node *n, uint64_t ms, const aemp_addr *to, const aemp_term *msg,
                    uint64_t *id)
{
    if (!n || !to || !aemp__term_whole(msg) || to->kind < AEMP_ADDR_PID ||
        to->kind > AEMP_ADDR_ALIAS)
        return AEMP_EINVAL;
    if (n->closing) return AEMP_ECLOSED;
    struct timer *t = calloc(1, sizeof *t);
    if (!t) return AEMP_ENOMEM;
    t->to = *to;
    if (aemp_buf_put_term(&t->msg, msg)) {
        free(t);
        return AEMP_ENOMEM;
    }
    return timer_add(n, ms, t, id);
}

int aemp_after_call(aemp_node *n, uint64_t ms, aemp_fn fn, void *arg, uint64_t *id)
{
    if (!n || !fn) return AEMP_EINVAL;
    if (n->closing) return AEMP_ECLOSED;
    struct timer *t = calloc(1, sizeof *t);
    if (!t) return AEMP_ENOMEM;
    t->fn = fn;
    t->arg = arg;
    return timer_add(n, ms, t, id);
}

int aemp_timer_cancel(aemp_node *n, uint64_t id)
{
    if (!n) return AEMP_EINVAL;
    struct timer *t = aemp__map_get(&P(n)->timers, &id, sizeof id);
    if (!t) return AEMP_ENOENT;
    uv_timer_stop(&t->h);
    timer_end(t);
    return 0;
}

/* ------------------------------------------------------------------ */
/* life                                                               */
/* ------------------------------------------------------------------ */

static void close_timer(const char *key, void *val, void *arg)
{
    struct timer *t = val;
    aemp__node_hold(t->n);
    t->held = true;
    timer_end(t);
}

void aemp__mon_init(aemp_node *n)
{
    struct aemp__proc *p = P(n);
    p->mon_fire = mon_fire;
    p->mon_drop = mon_drop;
    p->mon_cancel = mon_cancel;
}

void aemp__mon_close(aemp_node *n)
{
    aemp__map_each(&P(n)->timers, close_timer, NULL);
}

static void free_act(const char *key, void *val, void *arg)
{
    act_free(val);
}

void aemp__mon_free(aemp_node *n)
{
    struct aemp__proc *p = P(n);
    aemp__map_each(&p->acts, free_act, NULL);
    aemp__map_free(&p->acts);
    aemp__map_free(&p->timers);
    for (struct aemp__pending *pd = p->pending, *next; pd; pd = next) {
        next = pd->next;
        free(pd);
    }
    p->pending = NULL;
}
