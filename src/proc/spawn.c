/*
 * spawn.c - spawning in both directions.
 *
 * Served: spawn requests from Erlang (spawn/4, spawn_link/4,
 * spawn_monitor/4, spawn_opt/5, spawn_request/5, and so erpc and rpc). The
 * options are checked as erts checks those of a spawn request (bad ones
 * are answered badopt), a new port is made for the process, linked to or
 * monitored by the requester as its options ask, the reply sent, and the
 * init function registered for Module:Function run as that port: a
 * service's (aemp__proc_spawn_fn: rpc registers erpc's) or one the
 * application exported (aemp_export_init). Nothing here knows them by
 * name. For a Module:Function nobody registered, the process exits at once
 * with {undef, [{M, F, Args, []}]}, as on an Erlang node where the function
 * does not exist.
 *
 * Issued: aemp_spawn() sends a spawn request and keeps it until its reply.
 * The reply's link and monitor are recorded for the requesting port, and
 * the callback learns the pid or the error, once: from the reply, from the
 * loss of the connection, or from the node's close.
 */
#include "watch.h"

#include <stdarg.h>
#include <stdlib.h>

struct spawn_fn {
    aemp__spawn_fn fn; /* a service's init, or NULL */
    aemp_init_cb init; /* the application's (aemp_export_init) */
    void *arg;
};

/* A spawn request of ours waiting for its reply. */
struct pending {
    aemp_addr req; /* the request id, a reference of ours (the key) */
    uint64_t from; /* the requesting local port */
    uint32_t peer; /* the node asked */
    unsigned flags;
    aemp_spawn_cb cb;
    void *arg;
    bool from_dead;
    aemp_buf reason; /* from's exit reason, once it died */
};

/* A spawn on this node, done; its callback waits for the loop. */
struct local_done {
    struct local_done *next;
    aemp_addr pid, ref;
    bool monitor;
    aemp_spawn_cb cb;
    void *arg;
};

struct aemp__spawner {
    aemp__map pending;                      /* request id -> struct pending */
    struct local_done *local, **local_tail; /* spawns here, oldest first */
    size_t npending;
    uint64_t group_leader; /* the port given as group leader, 0: from */
    aemp__sub *sub;
};

static struct aemp__proc *P(aemp_node *n)
{
    return n->proc;
}

static int spawn_key(char *key, size_t size, const char *module, size_t mlen, const char *function,
                     size_t flen)
{
    if (mlen + 1 + flen + 1 > size) return AEMP_ETOOBIG;
    memcpy(key, module, mlen);
    key[mlen] = ':';
    memcpy(key + mlen + 1, function, flen);
    key[mlen + 1 + flen] = 0;
    return (int)(mlen + 1 + flen);
}

static struct spawn_fn *find_fn(aemp_node *n, const char *module, const char *function)
{
    char key[2 * AEMP_MAXATOMLEN + 2];
    int klen = spawn_key(key, sizeof key, module, strlen(module), function, strlen(function));
    return klen < 0 ? NULL : aemp__map_get(&P(n)->spawns, key, (size_t)klen);
}

/* Register fn (a service's) or init (the application's) for module:function. */
static int put_fn(aemp_node *n, const char *module, const char *function, aemp__spawn_fn fn,
                  aemp_init_cb init, void *arg)
{
    char key[2 * AEMP_MAXATOMLEN + 2];
    int klen = spawn_key(key, sizeof key, module, strlen(module), function, strlen(function));
    if (klen < 0) return klen;
    struct spawn_fn *s = aemp__map_get(&P(n)->spawns, key, (size_t)klen);
    if (s && s->fn && !fn) return AEMP_EEXIST; /* the node serves it itself */
    if (!s) {
        s = malloc(sizeof *s);
        if (!s) return AEMP_ENOMEM;
        if (aemp__map_put(&P(n)->spawns, key, (size_t)klen, s)) {
            free(s);
            return AEMP_ENOMEM;
        }
    }
    s->fn = fn;
    s->init = init;
    s->arg = arg;
    return 0;
}

int aemp__proc_spawn_fn(aemp_node *n, const char *module, const char *function, aemp__spawn_fn fn,
                        void *arg)
{
    return put_fn(n, module, function, fn, NULL, arg);
}

static bool name_ok(const char *s)
{
    return s && *s && strlen(s) <= AEMP_MAXATOMLEN;
}

int aemp_export_init(aemp_node *n, const char *module, const char *function, aemp_init_cb init,
                     void *arg)
{
    if (!n || !init || !name_ok(module) || !name_ok(function)) return AEMP_EINVAL;
    return put_fn(n, module, function, NULL, init, arg);
}

int aemp_unexport_init(aemp_node *n, const char *module, const char *function)
{
    if (!n || !name_ok(module) || !name_ok(function)) return AEMP_EINVAL;
    char key[2 * AEMP_MAXATOMLEN + 2];
    int klen = spawn_key(key, sizeof key, module, strlen(module), function, strlen(function));
    struct spawn_fn *s = aemp__map_get(&P(n)->spawns, key, (size_t)klen);
    if (!s || s->fn) return s ? AEMP_EEXIST : AEMP_ENOENT;
    aemp__map_del(&P(n)->spawns, key, (size_t)klen);
    free(s);
    return 0;
}

void aemp__proc_set_group_leader(aemp_node *n, aemp_port port)
{
    P(n)->spawner->group_leader = port.id;
}

/* ------------------------------------------------------------------ */
/* options                                                            */
/* ------------------------------------------------------------------ */

/* The smallest heap size (words) erts gives a process of at least `words`:
 * 233, then the sizes of its heap series (a Fibonacci series from 12 and
 * 38, each step plus one, up to 833026; 20 % more at each step after). */
static uint64_t heap_size(uint64_t words)
{
    uint64_t prev = 12, cur = 38;
    if (words <= 233) return 233;
    while (cur < words && cur < (UINT64_C(1) << 60)) {
        uint64_t next = cur < 833026 ? prev + cur + 1 : cur + cur / 5;
        prev = cur;
        cur = next;
    }
    return cur;
}

static bool is_atom_of(aemp_cursor c, const char *want)
{
    char a[32];
    return aemp_get_atom(&c, a, sizeof a) == 0 && strcmp(a, want) == 0;
}

static bool bool_atom(aemp_cursor c)
{
    return is_atom_of(c, "true") || is_atom_of(c, "false");
}

/* A non-negative integer value. */
static bool count(aemp_cursor c, int64_t *v)
{
    return aemp_get_int64(&c, v) == 0 && *v >= 0;
}

/* erts_max_heap_size(): a size, or a map with a size and optional flags. */
static bool max_heap(aemp_cursor c, int64_t *size)
{
    uint32_t pairs;
    if (count(c, size)) return true;
    if (aemp_get_map(&c, &pairs)) return false;
    bool have_size = false;
    for (uint32_t i = 0; i < pairs; i++) {
        char key[32];
        aemp_cursor v;
        if (aemp_get_atom(&c, key, sizeof key)) {
            if (aemp_get_term(&c, NULL) || aemp_get_term(&c, NULL)) return false;
            continue;
        }
        v = c;
        if (aemp_get_term(&c, NULL)) return false;
        if (strcmp(key, "size") == 0) {
            if (!count(v, size)) return false;
            have_size = true;
        } else if (strcmp(key, "kill") == 0 || strcmp(key, "error_logger") == 0 ||
                   strcmp(key, "include_shared_binaries") == 0) {
            if (!bool_atom(v)) return false;
        }
    }
    return have_size;
}

/* monitor options: priority, {alias, How}, {tag, Tag}. */
static bool monitor_opts(aemp_cursor c)
{
    uint32_t n, arity;
    if (aemp_get_list(&c, &n)) return false;
    for (uint32_t i = 0; i < n; i++) {
        aemp_cursor e = c;
        char a[32];
        if (aemp_get_term(&c, NULL)) return false;
        if (is_atom_of(e, "priority")) continue;
        if (aemp_get_tuple(&e, &arity) || arity != 2 || aemp_get_atom(&e, a, sizeof a))
            return false;
        if (strcmp(a, "alias") == 0) {
            if (!is_atom_of(e, "explicit_unalias") && !is_atom_of(e, "demonitor") &&
                !is_atom_of(e, "reply_demonitor"))
                return false;
        } else if (strcmp(a, "tag") != 0) {
            return false;
        }
    }
    return aemp_get_nil(&c) == 0;
}

/*
 * The options of a spawn request, checked as erts_parse_spawn_opts() checks
 * them for a request from another node (erl_process.c): link, monitor,
 * {monitor, Opts}, {priority, P}, {async_dist, Bool},
 * {message_queue_data, off_heap | on_heap}, {min_heap_size, N},
 * {max_heap_size, Size | Map}, {min_bin_vheap_size, N},
 * {fullsweep_after, N}, {scheduler, N} (this node has one), a proper list,
 * and a max_heap_size not below the min_heap_size erts would give. They
 * mean nothing more to a port. 0, or AEMP_EINVAL (answered badopt).
 */
static int parse_opts(const aemp_term *opts, bool *monitor, bool *link)
{
    aemp_cursor c = aemp_cursor_of(opts);
    uint32_t n, arity;
    int64_t min_heap = 0, max_heap_words = 0, v;
    *monitor = *link = false;
    if (aemp_get_list(&c, &n)) return AEMP_EINVAL;
    for (uint32_t i = 0; i < n; i++) {
        aemp_cursor e = c;
        char a[32];
        if (aemp_get_term(&c, NULL)) return AEMP_EINVAL;
        if (aemp_get_atom(&e, a, sizeof a) == 0) {
            if (strcmp(a, "link") == 0)
                *link = true;
            else if (strcmp(a, "monitor") == 0)
                *monitor = true;
            else
                return AEMP_EINVAL;
            continue;
        }
        if (aemp_get_tuple(&e, &arity) || arity != 2 || aemp_get_atom(&e, a, sizeof a))
            return AEMP_EINVAL;
        bool ok;
        if (strcmp(a, "priority") == 0) {
            ok = is_atom_of(e, "low") || is_atom_of(e, "normal") || is_atom_of(e, "high") ||
                 is_atom_of(e, "max");
        } else if (strcmp(a, "async_dist") == 0) {
            ok = bool_atom(e);
        } else if (strcmp(a, "message_queue_data") == 0) {
            ok = is_atom_of(e, "on_heap") || is_atom_of(e, "off_heap");
        } else if (strcmp(a, "min_heap_size") == 0) {
            ok = count(e, &min_heap);
        } else if (strcmp(a, "max_heap_size") == 0) {
            ok = max_heap(e, &max_heap_words);
        } else if (strcmp(a, "min_bin_vheap_size") == 0 || strcmp(a, "fullsweep_after") == 0) {
            ok = count(e, &v);
        } else if (strcmp(a, "scheduler") == 0) {
            ok = count(e, &v) && v <= 1;
        } else if (strcmp(a, "monitor") == 0) {
            ok = *monitor = monitor_opts(e);
        } else {
            ok = false;
        }
        if (!ok) return AEMP_EINVAL;
    }
    if (aemp_get_nil(&c)) return AEMP_EINVAL;
    if (max_heap_words != 0 && (uint64_t)max_heap_words < heap_size((uint64_t)min_heap))
        return AEMP_EINVAL;
    return 0;
}

/* ------------------------------------------------------------------ */
/* served: spawn requests from other nodes                            */
/* ------------------------------------------------------------------ */

/* {SPAWN_REPLY, ReqId, To, Flags, Result}: Result a pid or an error atom. */
static void reply(aemp__conn *c, const aemp_term *req, const aemp_term *to, uint64_t flags,
                  const aemp_addr *pid, const char *error)
{
    aemp_buf ctl = AEMP_BUF_INIT;
    int rc = pid ? aemp__ctl_enc(&ctl, AEMP__CTL_SPAWN_REPLY, "ttia", req, to, flags, pid)
                 : aemp__ctl_enc(&ctl, AEMP__CTL_SPAWN_REPLY, "ttiA", req, to, flags, error);
    if (!rc) rc = aemp__conn_ctl(c, &ctl, NULL);
    if (rc) AEMP_LOGE("spawn reply to %s lost: %s", c->peer, aemp_strerror(rc));
    aemp_buf_free(&ctl);
}

static void kill_fmt(aemp_node *n, uint64_t id, const char *fmt, ...)
{
    aemp_buf b = AEMP_BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    int rc = aemp_term_vformat(&b, fmt, ap);
    va_end(ap);
    if (rc) {
        aemp__proc_kill_atom(n, id, "system_limit");
    } else {
        aemp_term t = aemp_buf_term(&b);
        aemp__proc_kill(n, id, &t);
    }
    aemp_buf_free(&b);
}

struct init_call {
    const struct spawn_fn *s;
    const aemp_term *args;
};

static int init_thunk(aemp_node *n, aemp_port self, void *arg)
{
    struct init_call *call = arg;
    aemp_buf list = AEMP_BUF_INIT;
    int rc = aemp__term_as_list(call->args, &list);
    if (!rc) {
        aemp_term largs = aemp_buf_term(&list);
        rc = call->s->init(n, self, &largs, call->s->arg);
    }
    aemp_buf_free(&list);
    return rc;
}

/* Run the application's init as port self (peval: an error kills the port
 * with {die, Text}). */
static void run_init(aemp_node *n, const struct spawn_fn *s, aemp_port self, const aemp_term *args)
{
    struct init_call call = {s, args};
    aemp_peval(n, self, init_thunk, &call);
}

/* A new port for a spawned process: an AEMP port (aemp_port_new) for the
 * application's init, a silent one for a service's or for a process that
 * exits at once. */
static int new_port(aemp_node *n, const struct spawn_fn *s, aemp_port *out)
{
    if (s && s->init) return aemp__proc_new(n, out);
    return aemp__proc_open(n, NULL, NULL, out);
}

void aemp__spawn_request(void *arg, aemp__conn *c, const aemp__ctl_in *m, aemp__ctl_memo *memo)
{
    /* {SPAWN_REQUEST, ReqId, From, GroupLeader, {M, F, Arity}, Opts} + Args */
    aemp_node *n = arg;
    const aemp_term *req = &m->el[1], *from_t = &m->el[2];
    aemp_cursor mc = aemp_cursor_of(&m->el[4]);
    uint32_t arity;
    int64_t nargs;
    char mod[AEMP_MAXATOMLEN + 1], fun[AEMP_MAXATOMLEN + 1];
    aemp_addr from, reqid, gl;
    size_t used;
    if (aemp__dec_addr(from_t->data, from_t->len, AEMP__WANT(AEMP_ADDR_PID), n->name_h, &from,
                       &used) ||
        aemp__dec_addr(req->data, req->len, AEMP__WANT(AEMP_ADDR_REF), n->name_h, &reqid, &used) ||
        aemp__dec_addr(m->el[3].data, m->el[3].len, AEMP__WANT(AEMP_ADDR_PID), n->name_h, &gl,
                       &used) ||
        aemp_get_tuple(&mc, &arity) || arity != 3 || aemp_get_atom(&mc, mod, sizeof mod) ||
        aemp_get_atom(&mc, fun, sizeof fun) || aemp_get_int64(&mc, &nargs) || !m->has_payload ||
        aemp__term_list_len(&m->payload) < 0) {
        AEMP_LOGW("spawn request from %s: malformed (requester, request id, group leader, "
                  "function or arguments): answered badarg",
                  c->peer);
        reply(c, req, from_t, 0, NULL, "badarg");
        return;
    }
    if (!aemp__watch_from_peer(n, c, &from, "spawn request")) return;
    bool monitor, link;
    if (parse_opts(&m->el[5], &monitor, &link)) {
        AEMP_LOGI("spawn request from %s of %s:%s: bad options: answered badopt", c->peer, mod,
                  fun);
        reply(c, req, from_t, 0, NULL, "badopt");
        return;
    }
    if (!aemp__watch_room(n, from.node, (unsigned)link + (unsigned)monitor)) {
        /* the link or monitor would pass max_watches_per_peer */
        aemp__watch_refused(n, c);
        reply(c, req, from_t, 0, NULL, "system_limit");
        return;
    }
    struct spawn_fn *s = find_fn(n, mod, fun);
    aemp_port self;
    if (new_port(n, s, &self)) {
        reply(c, req, from_t, 0, NULL, "system_limit");
        return;
    }
    aemp_addr pid;
    aemp__addr_pid(&pid, n->name_h, n->creation, self.id);
    /* The monitor's reference is the request id, as OTP's spawn_request. */
    if ((link && aemp__watch_link(n, &from, &pid)) ||
        (monitor && aemp__watch_monitor(n, &from, &pid, &reqid))) {
        aemp__proc_kill_atom(n, self.id, "normal");
        reply(c, req, from_t, 0, NULL, "system_limit");
        return;
    }
    reply(c, req, from_t,
          (link ? AEMP__SPAWN_FLAG_LINK : 0) | (monitor ? AEMP__SPAWN_FLAG_MONITOR : 0), &pid,
          NULL);
    if (!s) {
        /* what an Erlang node does when the function does not exist */
        AEMP_LOGI("spawn request from %s of %s:%s/%lld: not exported here: the process exits "
                  "with undef",
                  c->peer, mod, fun, (long long)aemp__term_list_len(&m->payload));
        kill_fmt(n, self.id, "{undef, [{~a, ~a, ~t, []}]}", mod, fun, &m->payload);
    } else if (s->fn) {
        uint64_t outer = P(n)->self;
        P(n)->self = self.id;
        s->fn(n, self, &m->payload, s->arg);
        P(n)->self = outer;
    } else {
        run_init(n, s, self, &m->payload);
    }
}

/* ------------------------------------------------------------------ */
/* issued: aemp_spawn and the replies                                 */
/* ------------------------------------------------------------------ */

static void pending_free(struct pending *p)
{
    aemp_buf_free(&p->reason);
    free(p);
}

/* Take the request out of the table and tell its callback. */
static void finish(aemp_node *n, struct pending *p, int err, const aemp_addr *pid,
                   const aemp_addr *ref)
{
    struct aemp__spawner *s = P(n)->spawner;
    if (aemp__map_get(&s->pending, &p->req, sizeof p->req) == p) {
        aemp__map_del(&s->pending, &p->req, sizeof p->req);
        s->npending--;
    }
    if (p->cb) p->cb(n, err, err ? NULL : pid, err ? NULL : ref, p->arg);
    pending_free(p);
}

/*
 * A spawn on this node: the new port is made, linked and monitored as asked
 * and its init run now, as a spawn request from another node would be
 * served; the requester's callback follows from the loop.
 */
static int spawn_here(aemp_node *n, aemp_port from, const char *module, const char *function,
                      const aemp_term *args, unsigned flags, aemp_spawn_cb cb, void *arg)
{
    struct aemp__spawner *s = P(n)->spawner;
    struct local_done *d = calloc(1, sizeof *d);
    if (!d) return AEMP_ENOMEM;
    struct spawn_fn *f = find_fn(n, module, function);
    aemp_port self;
    int rc = new_port(n, f, &self);
    if (rc) {
        free(d);
        return rc;
    }
    aemp_addr requester;
    aemp__addr_pid(&requester, n->name_h, n->creation, from.id);
    aemp__addr_pid(&d->pid, n->name_h, n->creation, self.id);
    d->monitor = (flags & AEMP_SPAWN_MONITOR) != 0;
    if (d->monitor) aemp__proc_ref(n, &d->ref);
    if (((flags & AEMP_SPAWN_LINK) && (rc = aemp__watch_link(n, &requester, &d->pid))) ||
        (d->monitor && (rc = aemp__watch_monitor(n, &requester, &d->pid, &d->ref)))) {
        aemp__proc_kill_atom(n, self.id, "normal");
        free(d);
        return rc;
    }
    d->cb = cb;
    d->arg = arg;
    *s->local_tail = d;
    s->local_tail = &d->next;
    aemp__proc_wake(n);
    if (!f)
        kill_fmt(n, self.id, "{undef, [{~a, ~a, ~t, []}]}", module, function, args);
    else if (f->fn) {
        uint64_t outer = P(n)->self;
        P(n)->self = self.id;
        f->fn(n, self, args, f->arg);
        P(n)->self = outer;
    } else {
        run_init(n, f, self, args);
    }
    return 0;
}

/* Tell the callbacks of spawns here (err 0), or of all of them (err). */
static void local_finish(aemp_node *n, int err)
{
    struct aemp__spawner *s = P(n)->spawner;
    struct local_done *d;
    while ((d = s->local)) {
        s->local = d->next;
        if (!s->local) s->local_tail = &s->local;
        if (d->cb) d->cb(n, err, err ? NULL : &d->pid, err || !d->monitor ? NULL : &d->ref, d->arg);
        free(d);
    }
}

bool aemp__spawn_run_local(aemp_node *n)
{
    struct aemp__spawner *s = P(n)->spawner;
    if (!s || !s->local) return false;
    local_finish(n, 0);
    return s->local != NULL;
}

int aemp_spawn(aemp_node *n, aemp_port from, const char *peer, const char *module,
               const char *function, const aemp_term *args, unsigned flags, aemp_spawn_cb cb,
               void *arg)
{
    size_t used;
    if (!n || !peer || !name_ok(module) || !name_ok(function) || !args || !args->data ||
        (flags & ~(AEMP_SPAWN_LINK | AEMP_SPAWN_MONITOR)) || !strchr(peer, '@') ||
        strlen(peer) > AEMP_MAXNODELEN || aemp__term_validate(args->data, args->len, &used) ||
        used != args->len)
        return AEMP_EINVAL;
    int64_t nargs = aemp__term_list_len(args);
    if (nargs < 0) return AEMP_EINVAL;
    if (n->closing) return AEMP_ECLOSED;
    if (!aemp__proc_port(n, from.id)) return AEMP_ENOENT;
    uint32_t peer_h = aemp__intern(peer, strlen(peer));
    if (!peer_h) return AEMP_ETOOBIG;
    if (peer_h == n->name_h) return spawn_here(n, from, module, function, args, flags, cb, arg);
    if (!aemp__watch_room(n, peer_h, !!(flags & AEMP_SPAWN_LINK) + !!(flags & AEMP_SPAWN_MONITOR)))
        return AEMP_ETOOBIG; /* max_watches_per_peer */
    int err;
    aemp__conn *c = aemp__node_conn(n, peer_h, false, &err);
    if (c && aemp__conn_up(c) && !(c->flags & AEMP__DFLAG_SPAWN)) return AEMP_ENOTSUP;

    struct aemp__spawner *s = P(n)->spawner;
    struct pending *p = calloc(1, sizeof *p);
    if (!p) return AEMP_ENOMEM;
    aemp__proc_ref(n, &p->req);
    p->from = from.id;
    p->peer = peer_h;
    p->flags = flags;
    p->cb = cb;
    p->arg = arg;
    aemp_addr self, gl;
    aemp__addr_pid(&self, n->name_h, n->creation, from.id);
    gl = self;
    if (s->group_leader && aemp__proc_port(n, s->group_leader))
        aemp__addr_pid(&gl, n->name_h, n->creation, s->group_leader);
    aemp_buf mfa = AEMP_BUF_INIT, opts = AEMP_BUF_INIT, ctl = AEMP_BUF_INIT;
    int rc = aemp_term_format(&mfa, "{~a, ~a, ~i}", module, function, nargs);
    if (!rc)
        rc = aemp_term_format(&opts, (flags & AEMP_SPAWN_LINK) && (flags & AEMP_SPAWN_MONITOR)
                                         ? "[link, monitor]"
                                     : flags & AEMP_SPAWN_LINK    ? "[link]"
                                     : flags & AEMP_SPAWN_MONITOR ? "[monitor]"
                                                                  : "[]");
    aemp_term mt = aemp_buf_term(&mfa), ot = aemp_buf_term(&opts);
    if (!rc)
        rc = aemp__ctl_enc(&ctl, AEMP__CTL_SPAWN_REQUEST, "aaatt", &p->req, &self, &gl, &mt, &ot);
    if (!rc) rc = aemp__map_put(&s->pending, &p->req, sizeof p->req, p);
    if (!rc) {
        s->npending++;
        rc = aemp__node_ctl(n, peer_h, &ctl, args);
        if (rc) {
            aemp__map_del(&s->pending, &p->req, sizeof p->req);
            s->npending--;
        }
    }
    aemp_buf_free(&mfa);
    aemp_buf_free(&opts);
    aemp_buf_free(&ctl);
    if (rc) pending_free(p);
    return rc;
}

/* What a SPAWN_REPLY's error atom means here. */
static int reply_error(const char *atom)
{
    if (strcmp(atom, "badarg") == 0 || strcmp(atom, "badopt") == 0) return AEMP_EINVAL;
    if (strcmp(atom, "system_limit") == 0) return AEMP_ETOOBIG;
    if (strcmp(atom, "notsup") == 0) return AEMP_ENOTSUP;
    return AEMP_EPROTO;
}

static void on_spawn_reply(void *arg, aemp__conn *c, const aemp__ctl_in *m, aemp__ctl_memo *memo)
{
    /* {SPAWN_REPLY, ReqId, To, Flags, Result} (+ TraceToken) */
    aemp_node *n = arg;
    struct aemp__spawner *s = P(n)->spawner;
    aemp_addr req, to, pid;
    size_t used;
    if (aemp__dec_addr(m->el[1].data, m->el[1].len, AEMP__WANT(AEMP_ADDR_REF), n->name_h, &req,
                       &used)) {
        AEMP_LOGW("spawn reply from %s: the request id is not a reference: ignored", c->peer);
        return;
    }
    struct pending *p = aemp__map_get(&s->pending, &req, sizeof req);
    if (!p || p->peer != c->peer_h) {
        AEMP_LOGD("spawn reply from %s to no request of ours: ignored", c->peer);
        return;
    }
    aemp_cursor fc = aemp_cursor_of(&m->el[3]);
    uint64_t rflags;
    char atom[64];
    aemp_cursor res = aemp_cursor_of(&m->el[4]);
    bool is_pid = aemp__dec_addr(m->el[4].data, m->el[4].len, AEMP__WANT(AEMP_ADDR_PID), n->name_h,
                                 &pid, &used) == 0;
    if (aemp__dec_addr(m->el[2].data, m->el[2].len, AEMP__WANT(AEMP_ADDR_PID), n->name_h, &to,
                       &used) ||
        !aemp__node_is_local_pid(n, &to) || aemp__addr_pid_id(&to) != p->from ||
        aemp_get_uint64(&fc, &rflags) || (is_pid && pid.node != c->peer_h)) {
        AEMP_LOGW("spawn reply from %s: malformed: the spawn fails", c->peer);
        finish(n, p, AEMP_EPROTO, NULL, NULL);
        return;
    }
    if (!is_pid) {
        int err = aemp_get_atom(&res, atom, sizeof atom) ? AEMP_EPROTO : reply_error(atom);
        if (err == AEMP_EPROTO)
            AEMP_LOGW("spawn reply from %s: neither a pid nor a known error: the spawn fails",
                      c->peer);
        finish(n, p, err, NULL, NULL);
        return;
    }
    bool link = (rflags & AEMP__SPAWN_FLAG_LINK) && (p->flags & AEMP_SPAWN_LINK);
    bool monitor = (rflags & AEMP__SPAWN_FLAG_MONITOR) && (p->flags & AEMP_SPAWN_MONITOR);
    aemp_addr self;
    aemp__addr_pid(&self, n->name_h, n->creation, p->from);
    /* Links and monitors made meanwhile may have left no room for these
     * (max_watches_per_peer): then the spawn fails with system_limit, and
     * the new process learns it as if the requester had died of it. */
    bool full =
        !p->from_dead && !aemp__watch_room(n, c->peer_h, (unsigned)link + (unsigned)monitor);
    if (full) {
        aemp__buf_reset(&p->reason);
        if (aemp_term_format(&p->reason, "system_limit")) link = false;
    }
    if (p->from_dead || full) {
        /* The requester is gone (or has no room): the new process learns
         * it as OTP's would. */
        if (link) {
            aemp_term reason = aemp_buf_term(&p->reason);
            aemp__watch_send_exit(n, &self, &pid, &reason);
        }
        if (monitor) {
            aemp_buf ctl = AEMP_BUF_INIT;
            if (aemp__ctl_enc(&ctl, AEMP__CTL_DEMONITOR_P, "aaa", &self, &pid, &req) == 0)
                aemp__conn_ctl(c, &ctl, NULL);
            aemp_buf_free(&ctl);
        }
        finish(n, p, full ? AEMP_ETOOBIG : AEMP_ENOENT, NULL, NULL);
        return;
    }
    if ((link && aemp__watch_link(n, &self, &pid)) ||
        (monitor && aemp__watch_monitor(n, &self, &pid, &req)))
        AEMP_LOGE("out of memory: the link or monitor of a spawn is not recorded");
    finish(n, p, 0, &pid, monitor ? &req : NULL);
}

/* ------------------------------------------------------------------ */
/* events: requesters dying, connections lost, the node closing       */
/* ------------------------------------------------------------------ */

struct collect {
    aemp_buf list; /* request ids (aemp_addr) */
    uint32_t peer; /* 0: any */
    uint64_t port; /* 0: any */
};

static void collect(const char *key, void *val, void *arg)
{
    struct collect *k = arg;
    struct pending *p = val;
    if ((!k->peer || p->peer == k->peer) && (!k->port || p->from == k->port))
        aemp__buf_append(&k->list, &p->req, sizeof p->req);
}

/* The requests to peer (0: any) from port (0: any), by id: a callback may
 * finish others (closing the node), so each is looked up again when its
 * turn comes. */
static void collect_ids(aemp_node *n, struct collect *k, uint32_t peer, uint64_t port)
{
    k->list = (aemp_buf)AEMP_BUF_INIT;
    k->peer = peer;
    k->port = port;
    aemp__map_each(&P(n)->spawner->pending, collect, k);
}

static struct pending *collected(aemp_node *n, const struct collect *k, size_t i)
{
    aemp_addr req;
    memcpy(&req, k->list.data + i * sizeof req, sizeof req);
    return aemp__map_get(&P(n)->spawner->pending, &req, sizeof req);
}

static size_t ncollected(const struct collect *k)
{
    return k->list.len / sizeof(aemp_addr);
}

/* Finish every request to peer (0: every request) with err. */
static void finish_all(aemp_node *n, uint32_t peer, int err)
{
    struct collect k;
    collect_ids(n, &k, peer, 0);
    for (size_t i = 0; i < ncollected(&k); i++) {
        struct pending *p = collected(n, &k, i);
        if (p) finish(n, p, err, NULL, NULL);
    }
    aemp_buf_free(&k.list);
}

static void on_event(aemp_node *n, const aemp__event_info *ev, void *arg)
{
    struct aemp__spawner *s = P(n)->spawner;
    if (s->npending == 0) return;
    if (ev->kind == AEMP__EV_PORT_EXIT) {
        struct collect k;
        collect_ids(n, &k, 0, ev->port);
        for (size_t i = 0; i < ncollected(&k); i++) {
            struct pending *p = collected(n, &k, i);
            if (!p) continue;
            p->from_dead = true;
            aemp__buf_reset(&p->reason);
            if (aemp_buf_put_term(&p->reason, ev->exit)) aemp_term_format(&p->reason, "noproc");
        }
        aemp_buf_free(&k.list);
    } else if (ev->kind == AEMP__EV_NODE_DOWN || ev->kind == AEMP__EV_NODE_UNREACHABLE) {
        finish_all(n, ev->peer_h, ev->err ? ev->err : AEMP_EIO);
    } else if (ev->kind == AEMP__EV_NODE_UP) {
        int err;
        aemp__conn *c = aemp__node_conn(n, ev->peer_h, false, &err);
        if (c && !(c->flags & AEMP__DFLAG_SPAWN)) finish_all(n, ev->peer_h, AEMP_ENOTSUP);
    }
}

int aemp__spawn_init(aemp_node *n)
{
    struct aemp__spawner *s = calloc(1, sizeof *s);
    if (!s) return AEMP_ENOMEM;
    aemp__map_init(&s->pending);
    s->local_tail = &s->local;
    P(n)->spawner = s;
    aemp__node_on_ctl(n, AEMP__CTL_SPAWN_REPLY, on_spawn_reply, n);
    aemp__node_on_ctl(n, AEMP__CTL_SPAWN_REPLY_TT, on_spawn_reply, n);
    return aemp__node_subscribe(n, on_event, NULL, &s->sub);
}

void aemp__spawn_close(aemp_node *n)
{
    if (!P(n)->spawner) return;
    local_finish(n, AEMP_ECLOSED);
    finish_all(n, 0, AEMP_ECLOSED);
}

static void free_pending(const char *key, void *val, void *arg)
{
    pending_free(val);
}

void aemp__spawn_free(aemp_node *n)
{
    struct aemp__spawner *s = P(n)->spawner;
    if (!s) return;
    aemp__map_each(&s->pending, free_pending, NULL);
    aemp__map_free(&s->pending);
    free(s);
    P(n)->spawner = NULL;
}
