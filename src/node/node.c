/*
 * node.c - the node layer: identity and EPMD registration, the connection
 * table, routing to remote nodes, control-message dispatch and events
 * (node.h).
 */
#include "node.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_TICKTIME 60
#define DEFAULT_HS_TIMEOUT_MS 10000
#define DEFAULT_MAX_PACKET (128u * 1024 * 1024)
#define DEFAULT_MAX_CONNECTIONS 1024
#define DEFAULT_MAX_HANDSHAKES 64
#define DEFAULT_MAX_HANDSHAKES_PER_ADDRESS 8
#define DEFAULT_MAX_CONNECTING 64
#define DEFAULT_MAX_PENDING (64u * 1024 * 1024)
#define DEFAULT_READ_BATCH_MS 1
#define MAX_READ_BATCH_MS 1000
#define DEFAULT_MAX_TERM_DEPTH AEMP__TERM_MAX_DEPTH

struct aemp__sub {
    aemp__sub *next;
    aemp__event_fn fn;
    void *arg;
    bool dead; /* unsubscribed while events were being delivered */
};

/* The cookie from ~/.erlang.cookie, as erl reads it. */
static int read_cookie_file(char *out, size_t size)
{
    const char *home = getenv("HOME");
    char path[4096];
    if (!home || snprintf(path, sizeof path, "%s/.erlang.cookie", home) >= (int)sizeof path)
        return AEMP_ENOENT;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        AEMP_LOGE("no cookie given and %s cannot be read: %s", path, strerror(errno));
        return AEMP_ENOENT;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || (st.st_mode & 077) || !S_ISREG(st.st_mode)) {
        /* As erl: a cookie others can read is no secret; do not use it. */
        AEMP_LOGE("cookie file %s must be a regular file accessible by its owner only "
                  "(chmod 400 %s): not used",
                  path, path);
        close(fd);
        return AEMP_EAUTH;
    }
    ssize_t n = read(fd, out, size - 1);
    close(fd);
    if (n <= 0) {
        AEMP_LOGE("cookie file %s is empty", path);
        return AEMP_ENOENT;
    }
    out[n] = 0;
    /* erl uses the first line, without trailing blanks */
    char *nl = strpbrk(out, "\r\n");
    if (nl) *nl = 0;
    size_t len = strlen(out);
    while (len && (out[len - 1] == ' ' || out[len - 1] == '\t'))
        out[--len] = 0;
    return len ? 0 : AEMP_ENOENT;
}

static int short_hostname(char *out, size_t size)
{
    char h[256];
    if (gethostname(h, sizeof h - 1)) return AEMP_EIO;
    h[sizeof h - 1] = 0;
    char *dot = strchr(h, '.');
    if (dot) *dot = 0;
    aemp__strlcpy(out, h, size);
    return 0;
}

static int set_name(aemp_node *n, const char *name)
{
    const char *at = strchr(name, '@');
    size_t alen = at ? (size_t)(at - name) : strlen(name);
    if (alen == 0 || alen >= sizeof n->alive) return AEMP_EINVAL;
    memcpy(n->alive, name, alen);
    n->alive[alen] = 0;
    if (at) {
        if (!at[1] || strchr(at + 1, '@')) return AEMP_EINVAL;
        aemp__strlcpy(n->host, at + 1, sizeof n->host);
    } else if (short_hostname(n->host, sizeof n->host)) {
        return AEMP_EIO;
    }
    if ((size_t)snprintf(n->name, sizeof n->name, "%s@%s", n->alive, n->host) >= sizeof n->name)
        return AEMP_EINVAL;
    return 0;
}

static void on_registered(int status, uint32_t creation, void *arg)
{
    aemp_node *n = arg;
    if (status)
        AEMP_LOGE("EPMD registration of %s failed: %s", n->name,
                  status == AEMP_EEXIST ? "the name is taken" : aemp_strerror(status));
    else if (!n->client_only)
        AEMP_LOGI("registered %s with EPMD (port %u)", n->name, n->dist.listen_port);
    if (!n->ready_reported) {
        n->ready_reported = true;
        if (n->ready_cb) n->ready_cb(n, status, n->ready_arg);
    }
}

static void on_ready_timer(uv_timer_t *t)
{
    /* client-only nodes are ready at once, but report it from the loop */
    aemp_node *n = t->data;
    on_registered(0, n->creation, n);
}

/* ------------------------------------------------------------------ */
/* events                                                             */
/* ------------------------------------------------------------------ */

int aemp__node_subscribe(aemp_node *n, aemp__event_fn fn, void *arg, aemp__sub **out)
{
    aemp__sub *s = calloc(1, sizeof *s);
    if (!s) return AEMP_ENOMEM;
    s->fn = fn;
    s->arg = arg;
    aemp__sub **tail = &n->subs;
    while (*tail)
        tail = &(*tail)->next;
    *tail = s;
    if (out) *out = s;
    return 0;
}

static void sweep_subs(aemp_node *n)
{
    for (aemp__sub **ps = &n->subs; *ps;) {
        aemp__sub *s = *ps;
        if (!s->dead) {
            ps = &s->next;
            continue;
        }
        *ps = s->next;
        free(s);
    }
}

void aemp__node_unsubscribe(aemp_node *n, aemp__sub *s)
{
    if (!s) return;
    s->dead = true;
    if (!n->publishing) sweep_subs(n);
}

void aemp__node_publish(aemp_node *n, const aemp__event_info *ev)
{
    n->publishing++;
    for (aemp__sub *s = n->subs; s; s = s->next)
        if (!s->dead) s->fn(n, ev, s->arg);
    if (--n->publishing == 0) sweep_subs(n);
}

/* ------------------------------------------------------------------ */
/* connections                                                        */
/* ------------------------------------------------------------------ */

static aemp__conn *table_get(aemp_node *n, uint32_t peer_h)
{
    return aemp__map_get(&n->conns, &peer_h, sizeof peer_h);
}

static void table_del(aemp_node *n, aemp__conn *c)
{
    if (!c->in_table) return;
    if (table_get(n, c->peer_h) == c) aemp__map_del(&n->conns, &c->peer_h, sizeof c->peer_h);
    c->in_table = false;
    if (n->last_conn == c) n->last_conn = NULL;
}

/* A node heard of: it was up, or a connection to it was tried. */
static void know(aemp_node *n, uint32_t peer_h)
{
    if (peer_h && !aemp__map_get(&n->known, &peer_h, sizeof peer_h))
        aemp__map_put(&n->known, &peer_h, sizeof peer_h, n);
}

static int table_put(aemp_node *n, aemp__conn *c)
{
    know(n, c->peer_h);
    if (aemp__map_put(&n->conns, &c->peer_h, sizeof c->peer_h, c)) return AEMP_ENOMEM;
    c->in_table = true;
    n->last_conn = NULL;
    return 0;
}

static int op_decide(void *arg, aemp__conn *c, const char *peer)
{
    aemp_node *n = arg;
    uint32_t h = aemp__intern(peer, strlen(peer));
    aemp__conn *other = h ? table_get(n, h) : NULL;
    if (!other || other->state == AEMP__C_UP) return AEMP__HS_ACCEPT;
    if (other->state == AEMP__C_WAIT) return AEMP__HS_ACCEPT_SIMUL;
    /* Both sides are connecting: the greater name keeps its own attempt, as
     * net_kernel does. */
    if (strcmp(n->name, peer) > 0) return AEMP__HS_REFUSE_SIMUL;
    return AEMP__HS_ACCEPT_SIMUL;
}

static int op_up(void *arg, aemp__conn *c, const char **why)
{
    aemp_node *n = arg;
    aemp__conn *old = table_get(n, c->peer_h);
    if (old && old != c) {
        /* Our own attempt lost a simultaneous connect, or the peer restarted
         * while we still held its old connection: this one replaces it, and
         * inherits the messages queued there. */
        aemp__conn_take_pending(c, old);
        table_del(n, old);
        old->silent = old->state != AEMP__C_UP; /* superseded, not failed */
        aemp__conn_close(old, AEMP_ECLOSED, "replaced by a new connection");
    }
    if (!c->in_table && table_put(n, c)) {
        *why = "out of memory";
        return AEMP_ENOMEM;
    }
    return 0;
}

static void op_established(void *arg, aemp__conn *c)
{
    aemp_node *n = arg;
    know(n, c->peer_h);
    aemp__event_info ev = {.kind = AEMP__EV_NODE_UP, .peer_h = c->peer_h, .peer = c->peer};
    aemp__node_publish(n, &ev);
}

static void op_down(void *arg, aemp__conn *c, int err, const char *reason)
{
    aemp_node *n = arg;
    table_del(n, c);
    aemp__event_info ev = {.kind = AEMP__EV_NODE_DOWN,
                           .peer_h = c->peer_h,
                           .peer = c->peer,
                           .reason = reason,
                           .err = err};
    aemp__node_publish(n, &ev);
}

static void op_fail(void *arg, aemp__conn *c, int err, const char *reason, size_t dropped)
{
    aemp_node *n = arg;
    table_del(n, c);
    if (!c->initiator || c->silent) return;
    if (n->fail_cb) n->fail_cb(n, c->peer, err, reason, dropped, n->fail_arg);
    uint32_t h = c->peer_h ? c->peer_h : aemp__intern_find(c->peer, strlen(c->peer));
    know(n, h);
    aemp__event_info ev = {.kind = AEMP__EV_NODE_UNREACHABLE,
                           .peer_h = h,
                           .peer = c->peer,
                           .reason = reason,
                           .err = err};
    if (h) aemp__node_publish(n, &ev);
}

static void op_ctl(void *arg, aemp__conn *c, const aemp__ctl_in *m, aemp__ctl_memo *memo)
{
    aemp_node *n = arg;
    if (m->tag > 0 && m->tag < AEMP__CTL_MAX && n->ctl[m->tag].fn) {
        n->ctl[m->tag].fn(n->ctl[m->tag].arg, c, m, memo);
        return;
    }
    AEMP_LOGD("%s from %s ignored", aemp__ctl_name(m->tag), c->peer);
}

static const aemp__dist_ops node_ops = {op_decide, op_up, op_established, op_down, op_fail, op_ctl};

void aemp__node_on_ctl(aemp_node *n, enum aemp__ctl tag, aemp__ctl_fn fn, void *arg)
{
    n->ctl[tag].fn = fn;
    n->ctl[tag].arg = arg;
}

aemp__conn *aemp__node_conn(aemp_node *n, uint32_t peer_h, bool start, int *err)
{
    if (n->last_conn && n->last_peer == peer_h) return n->last_conn;
    aemp__conn *c = table_get(n, peer_h);
    if (!c && start) {
        const char *peer = aemp__intern_text(peer_h, NULL);
        if (!peer || !aemp__node_name_valid(peer) || peer_h == n->name_h) {
            *err = AEMP_EINVAL;
            return NULL;
        }
        c = aemp__conn_connect(&n->dist, peer, err);
        if (!c) {
            AEMP_LOGW("cannot reach %s: no connection can be made (%s)", peer,
                      *err == AEMP_EBUSY ? "max_connecting or max_connections reached"
                                         : aemp_strerror(*err));
            return NULL;
        }
        c->peer_h = peer_h;
        if (table_put(n, c)) {
            c->silent = true;
            aemp__conn_close(c, AEMP_ENOMEM, "out of memory");
            *err = AEMP_ENOMEM;
            return NULL;
        }
        AEMP_LOGD("connecting to %s", peer);
    }
    if (!c) {
        *err = AEMP_ENOENT;
        return NULL;
    }
    n->last_peer = peer_h;
    n->last_conn = c;
    return c;
}

int aemp__node_fence(aemp_node *n, uint32_t peer_h)
{
    uintptr_t count = (uintptr_t)aemp__map_get(&n->fences, &peer_h, sizeof peer_h);
    return aemp__map_put(&n->fences, &peer_h, sizeof peer_h, (void *)(count + 1));
}

void aemp__node_unfence(aemp_node *n, uint32_t peer_h)
{
    uintptr_t count = (uintptr_t)aemp__map_get(&n->fences, &peer_h, sizeof peer_h);
    if (count > 1)
        aemp__map_put(&n->fences, &peer_h, sizeof peer_h, (void *)(count - 1));
    else if (count == 1)
        aemp__map_del(&n->fences, &peer_h, sizeof peer_h);
}

static bool fenced(const aemp_node *n, uint32_t peer_h)
{
    return n->fences.count && aemp__map_get(&n->fences, &peer_h, sizeof peer_h);
}

int aemp__node_send(aemp_node *n, const aemp_addr *from, const aemp_addr *to, const aemp_term *msg)
{
    int err;
    if (fenced(n, to->node)) {
        /* its loss is being reported: after a lost message, none may get
         * through before the report */
        AEMP_LOGD("message to a process of %s dropped: its connection was lost",
                  aemp__intern_text(to->node, NULL));
        return 0;
    }
    aemp__conn *c = aemp__node_conn(n, to->node, true, &err);
    if (!c) return err;
    size_t queued = aemp__conn_queued(c);
    if (queued > 0 && queued + msg->len > n->dist.max_pending) {
        AEMP_LOGD("send to %s refused: %zu bytes queued (limit %zu)", c->peer, queued,
                  n->dist.max_pending);
        return AEMP_EBUSY;
    }
    return aemp__conn_send(c, from, to, msg);
}

int aemp__node_ctl(aemp_node *n, uint32_t peer_h, const aemp_buf *ctl, const aemp_term *payload)
{
    int err;
    if (fenced(n, peer_h)) return AEMP_ECLOSED;
    aemp__conn *c = aemp__node_conn(n, peer_h, true, &err);
    return c ? aemp__conn_ctl(c, ctl, payload) : err;
}

/* ------------------------------------------------------------------ */
/* set-up and close                                                   */
/* ------------------------------------------------------------------ */

int aemp__node_init(aemp_node *n, uv_loop_t *loop, const aemp_node_config *cfg)
{
    if (cfg->read_batch_ms > MAX_READ_BATCH_MS) {
        AEMP_LOGE("read_batch_ms %d is over the limit of %d ms", cfg->read_batch_ms,
                  MAX_READ_BATCH_MS);
        return AEMP_EINVAL;
    }
    n->loop = loop;
    aemp__map_init(&n->conns);
    aemp__map_init(&n->known);
    aemp__map_init(&n->node_mons);
    aemp__map_init(&n->fences);
    int rc = set_name(n, cfg->name);
    if (rc) {
        AEMP_LOGE("invalid node name '%s'", cfg->name);
        return rc;
    }
    n->name_h = aemp__intern(n->name, strlen(n->name));
    if (!n->name_h) return AEMP_ENOMEM;
    char cookie[256];
    if (cfg->cookie) {
        if (!*cfg->cookie || strlen(cfg->cookie) >= sizeof cookie) return AEMP_EINVAL;
        aemp__strlcpy(cookie, cfg->cookie, sizeof cookie);
    } else if (read_cookie_file(cookie, sizeof cookie)) {
        return AEMP_EAUTH;
    }
    /* Our own random creation: it tells peers apart our incarnations and
     * stays the same when we re-register with a new EPMD. */
    do {
        aemp__random(&n->creation, sizeof n->creation);
    } while (n->creation < 4);
    n->ready_cb = cfg->ready_cb;
    n->ready_arg = cfg->ready_arg;
    n->fail_cb = cfg->fail_cb;
    n->fail_arg = cfg->fail_arg;
    n->client_only = cfg->client_only != 0;
    if (cfg->tls_cert || cfg->tls_key || cfg->tls_ca) {
        aemp__tls_config tc = {cfg->tls_cert, cfg->tls_key, cfg->tls_ca, !cfg->tls_no_verify};
        char err[512];
        rc = aemp__tls_ctx_new(&tc, &n->tls_ctx, err, sizeof err);
        if (rc) {
            AEMP_LOGE("TLS set-up failed: %s", err);
            memset(cookie, 0, sizeof cookie);
            return rc;
        }
    }
    aemp__dist_config dc = {
        .name = n->name,
        .cookie = cookie,
        .creation = n->creation,
        .epmd_port = aemp__epmd_port(cfg->epmd_port),
        .net_ticktime = cfg->net_ticktime ? cfg->net_ticktime : DEFAULT_TICKTIME,
        .hs_timeout_ms =
            cfg->handshake_timeout_ms ? cfg->handshake_timeout_ms : DEFAULT_HS_TIMEOUT_MS,
        .max_packet = cfg->max_packet ? cfg->max_packet : DEFAULT_MAX_PACKET,
        .max_connections = cfg->max_connections ? cfg->max_connections : DEFAULT_MAX_CONNECTIONS,
        .max_handshakes = cfg->max_handshakes ? cfg->max_handshakes : DEFAULT_MAX_HANDSHAKES,
        .max_handshakes_per_address = cfg->max_handshakes_per_address
                                          ? cfg->max_handshakes_per_address
                                          : DEFAULT_MAX_HANDSHAKES_PER_ADDRESS,
        .max_connecting = cfg->max_connecting ? cfg->max_connecting : DEFAULT_MAX_CONNECTING,
        .max_pending = cfg->max_pending ? cfg->max_pending : DEFAULT_MAX_PENDING,
        .read_batch_ms = cfg->read_batch_ms < 0 ? 0
                         : cfg->read_batch_ms   ? (unsigned)cfg->read_batch_ms
                                                : DEFAULT_READ_BATCH_MS,
        .max_term_depth = cfg->max_term_depth ? cfg->max_term_depth : DEFAULT_MAX_TERM_DEPTH,
        .tls_ctx = n->tls_ctx,
        .ops = &node_ops,
        .ops_arg = n,
    };
    rc = aemp__dist_init(&n->dist, loop, &dc);
    memset(cookie, 0, sizeof cookie);
    if (rc) {
        aemp__tls_ctx_free(n->tls_ctx);
        n->tls_ctx = NULL;
        return rc;
    }
    uv_timer_init(loop, &n->ready_timer);
    n->ready_timer.data = n;
    return 0;
}

/* Listen and register: after the layers above are set up, since a peer may
 * connect at once. */
int aemp__node_start(aemp_node *n, uint16_t listen_port)
{
    if (n->client_only) {
        uv_timer_start(&n->ready_timer, on_ready_timer, 0, 0);
    } else {
        int rc = aemp__dist_listen(&n->dist, listen_port);
        if (rc) {
            AEMP_LOGE("cannot listen on port %u: %s", listen_port, uv_strerror(rc));
            return rc == UV_EADDRINUSE ? AEMP_EEXIST : AEMP_EIO;
        }
        rc = aemp__epmd_reg_start(n->loop, n->dist.epmd_port, n->alive, n->dist.listen_port,
                                  on_registered, n, &n->epmd);
        if (rc) {
            AEMP_LOGE("cannot register with EPMD on port %u: %s", n->dist.epmd_port,
                      aemp_strerror(rc));
            return rc;
        }
    }
    AEMP_LOGI("node %s started (listening on %u, creation %u)", n->name, n->dist.listen_port,
              n->creation);
    if (n->dist.read_batch_ms)
        AEMP_LOGD("read batching: %u ms for streams from peers on this host",
                  n->dist.read_batch_ms);
    else
        AEMP_LOGD("read batching off");
    return 0;
}

/* ------------------------------------------------------------------ */
/* node monitoring (AEMP mon_nodes, up_nodes, node_is_up)             */
/* ------------------------------------------------------------------ */

struct node_mon {
    aemp_nodes_cb cb;
    void *arg;
    aemp__sub *sub;
};

static void free_node_mon(const char *key, void *val, void *arg)
{
    free(val);
}

static void node_mon_event(aemp_node *n, const aemp__event_info *ev, void *arg)
{
    struct node_mon *m = arg;
    if (n->closing) return;
    /* up and down alternate: the node layer publishes one down per up */
    if (ev->kind == AEMP__EV_NODE_UP) m->cb(n, ev->peer, 1, NULL, m->arg);
    if (ev->kind == AEMP__EV_NODE_DOWN) m->cb(n, ev->peer, 0, ev->reason, m->arg);
}

int aemp_mon_nodes(aemp_node *n, aemp_nodes_cb cb, void *arg, uint64_t *handle)
{
    if (!n || !cb) return AEMP_EINVAL;
    if (n->closing) return AEMP_ECLOSED;
    struct node_mon *m = calloc(1, sizeof *m);
    if (!m) return AEMP_ENOMEM;
    m->cb = cb;
    m->arg = arg;
    uint64_t id = ++n->next_node_mon;
    if (aemp__map_put(&n->node_mons, &id, sizeof id, m)) {
        free(m);
        return AEMP_ENOMEM;
    }
    int rc = aemp__node_subscribe(n, node_mon_event, m, &m->sub);
    if (rc) {
        aemp__map_del(&n->node_mons, &id, sizeof id);
        free(m);
        return rc;
    }
    if (handle) *handle = id;
    return 0;
}

int aemp_mon_nodes_cancel(aemp_node *n, uint64_t handle)
{
    if (!n) return AEMP_EINVAL;
    struct node_mon *m = aemp__map_del(&n->node_mons, &handle, sizeof handle);
    if (!m) return AEMP_ENOENT;
    aemp__node_unsubscribe(n, m->sub);
    free(m);
    return 0;
}

struct up_list {
    const char **names;
    size_t max, count;
};

static void add_up(const char *key, void *val, void *arg)
{
    aemp__conn *c = val;
    struct up_list *l = arg;
    if (c->state != AEMP__C_UP) return;
    if (l->count < l->max) l->names[l->count] = aemp__intern_text(c->peer_h, NULL);
    l->count++;
}

size_t aemp_up_nodes(aemp_node *n, const char **names, size_t max)
{
    if (!n) return 0;
    struct up_list l = {names, names ? max : 0, 0};
    aemp__map_each(&n->conns, add_up, &l);
    return l.count;
}

int aemp_node_state(aemp_node *n, const char *peer)
{
    if (!n || !peer) return AEMP_EINVAL;
    uint32_t h = aemp__intern_find(peer, strlen(peer));
    aemp__conn *c = h ? table_get(n, h) : NULL;
    if (c && c->state == AEMP__C_UP) return 1;
    return c || (h && aemp__map_get(&n->known, &h, sizeof h)) ? 0 : AEMP_ENOENT;
}

static void maybe_finish(aemp_node *n)
{
    if (n->pending_closes > 0) return;
    void (*cb)(void *) = n->closed_cb;
    void *arg = n->closed_arg;
    n->pending_closes = -1; /* finished: never again */
    if (n->release) n->release(n);
    for (aemp__sub *s = n->subs, *next; s; s = next) {
        next = s->next;
        free(s);
    }
    aemp__map_free(&n->conns);
    aemp__map_free(&n->known);
    aemp__map_each(&n->node_mons, free_node_mon, NULL);
    aemp__map_free(&n->node_mons);
    aemp__map_free(&n->fences);
    aemp__tls_ctx_free(n->tls_ctx);
    free(n);
    if (cb) cb(arg);
}

static void on_part_closed(void *arg)
{
    aemp_node *n = arg;
    n->pending_closes--;
    if (n->closing) maybe_finish(n);
}

void aemp__node_hold(aemp_node *n)
{
    n->pending_closes++;
}

void aemp__node_part_closed(aemp_node *n)
{
    on_part_closed(n);
}

static void on_ready_closed(uv_handle_t *h)
{
    on_part_closed(h->data);
}

void aemp__node_close(aemp_node *n, void (*closed_cb)(void *), void *arg)
{
    n->closing = true;
    n->closed_cb = closed_cb;
    n->closed_arg = arg;
    n->last_conn = NULL;
    n->pending_closes += 3;
    uv_close((uv_handle_t *)&n->ready_timer, on_ready_closed);
    if (n->epmd) {
        aemp__epmd_reg_close(n->epmd, on_part_closed, n);
        n->epmd = NULL;
    } else {
        n->pending_closes--;
    }
    aemp__dist_close(&n->dist, on_part_closed, n);
}

/* ------------------------------------------------------------------ */
/* public: the node                                                   */
/* ------------------------------------------------------------------ */

const char *aemp_node_name(const aemp_node *n)
{
    return n ? n->name : NULL;
}

uint32_t aemp_node_creation(const aemp_node *n)
{
    return n ? n->creation : 0;
}

uint16_t aemp_node_listen_port(const aemp_node *n)
{
    return n ? n->dist.listen_port : 0;
}

static aemp__conn *conn_by_name(aemp_node *n, const char *peer)
{
    size_t len = strlen(peer);
    if (len > AEMP_MAXNODELEN) return NULL;
    /* a lookup: a name never seen is no connection, and stays out of the table */
    uint32_t h = aemp__intern_find(peer, len);
    return h ? table_get(n, h) : NULL;
}

int aemp_node_connect(aemp_node *n, const char *peer)
{
    if (!n || !peer || !aemp__node_name_valid(peer)) return AEMP_EINVAL;
    if (n->closing) return AEMP_ECLOSED;
    if (strcmp(peer, n->name) == 0) return AEMP_EINVAL;
    uint32_t h = aemp__intern(peer, strlen(peer));
    if (!h) return AEMP_ETOOBIG;
    int err;
    return aemp__node_conn(n, h, true, &err) ? 0 : err;
}

int aemp_node_is_up(aemp_node *n, const char *peer)
{
    if (!n || !peer) return 0;
    aemp__conn *c = conn_by_name(n, peer);
    return c && c->state == AEMP__C_UP;
}

size_t aemp_node_pending(aemp_node *n, const char *peer)
{
    if (!n || !peer) return 0;
    aemp__conn *c = conn_by_name(n, peer);
    return c ? aemp__conn_queued(c) : 0;
}

int aemp_node_stats(aemp_node *n, const char *peer, aemp_conn_stats *out)
{
    if (!n || !peer || !out) return AEMP_EINVAL;
    aemp__conn *c = conn_by_name(n, peer);
    if (!c) return AEMP_ENOENT;
    memset(out, 0, sizeof *out);
    out->reads = c->reads;
    out->packets = c->packets;
    out->queued = aemp__conn_queued(c);
    out->batching = c->batching;
    out->dropped_deep = c->dropped_deep;
    out->holds = c->holds;
    return 0;
}

/* ------------------------------------------------------------------ */
/* EPMD names for the public API                                       */
/* ------------------------------------------------------------------ */

struct names_req {
    aemp_names_cb cb;
    void *arg;
};

static void on_names(int status, const char *text, size_t len, void *arg)
{
    struct names_req *r = arg;
    r->cb(status, text, len, r->arg);
    free(r);
}

int aemp_epmd_names(uv_loop_t *loop, const char *host, uint16_t epmd_port, aemp_names_cb cb,
                    void *arg)
{
    if (!loop || !cb) return AEMP_EINVAL;
    struct names_req *r = malloc(sizeof *r);
    if (!r) return AEMP_ENOMEM;
    r->cb = cb;
    r->arg = arg;
    aemp__epmd_query *q;
    int rc = aemp__epmd_names(loop, host ? host : "localhost", aemp__epmd_port(epmd_port), on_names,
                              r, &q);
    if (rc) free(r);
    return rc;
}
