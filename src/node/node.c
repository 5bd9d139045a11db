/*
 * node.c - the node: configuration, listener, EPMD registration, the
 * housekeeping timer, node up/down, and orderly close.
 */
#include "node_int.h"

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
#define DEFAULT_MAX_PENDING (64u * 1024 * 1024)
#define DEFAULT_READ_BATCH_MS 1
#define MAX_READ_BATCH_MS 1000

uint64_t aemp__now_ms(const aemp_node *n)
{
    return uv_now(n->loop);
}

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

static void on_timer(uv_timer_t *t)
{
    aemp__conn_housekeeping(t->data);
}

static void on_registered(int status, uint32_t creation, void *arg)
{
    aemp_node *n = arg;
    if (status)
        AEMP_LOGE("EPMD registration of %s failed: %s", n->name,
                  status == AEMP_EEXIST ? "the name is taken" : aemp_strerror(status));
    else if (!n->client_only)
        AEMP_LOGI("registered %s with EPMD (port %u)", n->name, n->listen_port);
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

int aemp_node_create(uv_loop_t *loop, const aemp_node_config *cfg, aemp_node **out)
{
    if (!loop || !cfg || !cfg->name || !out) return AEMP_EINVAL;
    if (cfg->read_batch_ms > MAX_READ_BATCH_MS) {
        AEMP_LOGE("read_batch_ms %d is over the limit of %d ms", cfg->read_batch_ms,
                  MAX_READ_BATCH_MS);
        return AEMP_EINVAL;
    }
    aemp_node *n = calloc(1, sizeof *n);
    if (!n) return AEMP_ENOMEM;
    n->loop = loop;
    int rc = set_name(n, cfg->name);
    if (rc) {
        AEMP_LOGE("invalid node name '%s'", cfg->name);
        free(n);
        return rc;
    }
    if (cfg->cookie) {
        if (!*cfg->cookie || strlen(cfg->cookie) >= sizeof n->cookie) {
            free(n);
            return AEMP_EINVAL;
        }
        aemp__strlcpy(n->cookie, cfg->cookie, sizeof n->cookie);
    } else if ((rc = read_cookie_file(n->cookie, sizeof n->cookie))) {
        free(n);
        return AEMP_EAUTH;
    }
    /* Our own random creation: it tells peers apart our incarnations and
     * stays the same when we re-register with a new EPMD. */
    do {
        aemp__random(&n->creation, sizeof n->creation);
    } while (n->creation < 4);
    n->epmd_port = aemp__epmd_port(cfg->epmd_port);
    n->net_ticktime = cfg->net_ticktime ? cfg->net_ticktime : DEFAULT_TICKTIME;
    n->hs_timeout_ms =
        cfg->handshake_timeout_ms ? cfg->handshake_timeout_ms : DEFAULT_HS_TIMEOUT_MS;
    n->max_packet = cfg->max_packet ? cfg->max_packet : DEFAULT_MAX_PACKET;
    n->max_connections = cfg->max_connections ? cfg->max_connections : DEFAULT_MAX_CONNECTIONS;
    n->max_pending = cfg->max_pending ? cfg->max_pending : DEFAULT_MAX_PENDING;
    if (cfg->read_batch_ms >= 0)
        n->read_batch_ms =
            cfg->read_batch_ms ? (unsigned)cfg->read_batch_ms : DEFAULT_READ_BATCH_MS;
    n->ready_cb = cfg->ready_cb;
    n->ready_arg = cfg->ready_arg;
    n->nodes_cb = cfg->nodes_cb;
    n->nodes_arg = cfg->nodes_arg;
    n->fail_cb = cfg->fail_cb;
    n->fail_arg = cfg->fail_arg;
    n->client_only = cfg->client_only != 0;
    if (cfg->tls_cert || cfg->tls_key || cfg->tls_ca) {
        aemp__tls_config tc = {cfg->tls_cert, cfg->tls_key, cfg->tls_ca, !cfg->tls_no_verify};
        char err[512];
        rc = aemp__tls_ctx_new(&tc, &n->tls_ctx, err, sizeof err);
        if (rc) {
            AEMP_LOGE("TLS set-up failed: %s", err);
            free(n);
            return rc;
        }
    }
    aemp__map_init(&n->conn_by_name);
    aemp__map_init(&n->ports);
    aemp__map_init(&n->names);
    aemp__map_init(&n->exports);

    uv_timer_init(loop, &n->timer);
    n->timer.data = n;
    uv_timer_init(loop, &n->ready_timer);
    n->ready_timer.data = n;
    uv_timer_init(loop, &n->batch_timer);
    n->batch_timer.data = n;
    uv_prepare_init(loop, &n->flusher);
    n->flusher.data = n;
    uv_idle_init(loop, &n->deferred_idle);
    n->deferred_idle.data = n;
    uint64_t period = (uint64_t)n->net_ticktime * 250;
    if (period > 1000) period = 1000;
    uv_timer_start(&n->timer, on_timer, period, period);

    if (n->client_only) {
        uv_timer_start(&n->ready_timer, on_ready_timer, 0, 0);
    } else {
        rc = aemp__conn_listen(n, cfg->listen_port);
        if (rc) {
            AEMP_LOGE("cannot listen on port %u: %s", cfg->listen_port, uv_strerror(rc));
            rc = rc == UV_EADDRINUSE ? AEMP_EEXIST : AEMP_EIO;
            goto fail;
        }
        rc = aemp__epmd_reg_start(loop, n->epmd_port, n->alive, n->listen_port, on_registered, n,
                                  &n->epmd);
        if (rc) {
            AEMP_LOGE("cannot register with EPMD on port %u: %s", n->epmd_port, aemp_strerror(rc));
            goto fail;
        }
    }
    AEMP_LOGI("node %s started (listening on %u, creation %u)", n->name, n->listen_port,
              n->creation);
    if (n->read_batch_ms)
        AEMP_LOGD("read batching: %u ms for streams from peers on this host", n->read_batch_ms);
    else
        AEMP_LOGD("read batching off");
    *out = n;
    return 0;
fail:
    /* Handles are initialised: close them through the normal path, without
     * reporting anything to the caller's callbacks. */
    n->ready_cb = NULL;
    n->nodes_cb = NULL;
    n->fail_cb = NULL;
    aemp_node_close(n, NULL, NULL);
    return rc;
}

static void on_handle_closed(uv_handle_t *h)
{
    aemp_node *n = h->data;
    n->pending_closes--;
    aemp__node_maybe_finish_close(n);
}

static void on_epmd_closed(void *arg)
{
    aemp_node *n = arg;
    n->pending_closes--;
    aemp__node_maybe_finish_close(n);
}

void aemp__node_maybe_finish_close(aemp_node *n)
{
    if (!n->closing || n->pending_closes > 0 || n->conns) return;
    void (*cb)(void *) = n->closed_cb;
    void *arg = n->closed_arg;
    n->pending_closes = -1; /* finished: never again */
    aemp__map_free(&n->conn_by_name);
    aemp__map_free(&n->ports);
    aemp__map_free(&n->names);
    aemp__rpc_free(n);
    aemp_buf_free(&n->deferred);
    aemp__tls_ctx_free(n->tls_ctx);
    memset(n->cookie, 0, sizeof n->cookie);
    free(n);
    if (cb) cb(arg);
}

static void close_handle(aemp_node *n, uv_handle_t *h)
{
    h->data = n;
    n->pending_closes++;
    uv_close(h, on_handle_closed);
}

void aemp_node_close(aemp_node *n, void (*closed_cb)(void *arg), void *arg)
{
    if (!n || n->closing) return;
    n->closed_cb = closed_cb;
    n->closed_arg = arg;
    /* Ports die first, so that their exit signals are queued on the
     * connections, which then flush before they shut down. */
    aemp__ports_close_all(n);
    n->closing = true;
    n->pending_closes++; /* held until every close below has started */
    for (aemp__conn *c = n->conns, *next; c; c = next) {
        next = c->next;
        aemp__conn_shutdown(c);
    }
    aemp__conn_flush_all(n);
    close_handle(n, (uv_handle_t *)&n->timer);
    close_handle(n, (uv_handle_t *)&n->ready_timer);
    close_handle(n, (uv_handle_t *)&n->batch_timer);
    close_handle(n, (uv_handle_t *)&n->flusher);
    close_handle(n, (uv_handle_t *)&n->deferred_idle);
    if (n->listener_init) close_handle(n, (uv_handle_t *)&n->listener);
    if (n->epmd) {
        n->pending_closes++;
        aemp__epmd_reg_close(n->epmd, on_epmd_closed, n);
        n->epmd = NULL;
    }
    n->pending_closes--;
    aemp__node_maybe_finish_close(n);
}

void aemp__node_conn_up(aemp__conn *c)
{
    aemp_node *n = c->node;
    char flags[512];
    aemp__dflags_describe(c->flags, flags, sizeof flags);
    AEMP_LOGI("connected to %s (%s)", c->peer, c->initiator ? "outgoing" : "incoming");
    AEMP_LOGD("flags with %s: %s", c->peer, flags);
    if (n->nodes_cb && !n->closing) n->nodes_cb(n, c->peer, 1, NULL, n->nodes_arg);
}

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
    return n ? n->listen_port : 0;
}

int aemp_node_connect(aemp_node *n, const char *peer)
{
    if (!n || !peer || !aemp__node_name_valid(peer)) return AEMP_EINVAL;
    if (n->closing) return AEMP_ECLOSED;
    if (strcmp(peer, n->name) == 0) return AEMP_EINVAL;
    if (aemp__conn_get_or_start(n, peer)) return 0;
    return n->nconns >= n->max_connections ? AEMP_EBUSY : AEMP_ENOMEM;
}

int aemp_node_is_up(aemp_node *n, const char *peer)
{
    if (!n || !peer) return 0;
    aemp__conn *c = aemp__map_get(&n->conn_by_name, peer, strlen(peer));
    return c && c->state == AEMP__C_UP;
}

size_t aemp_node_pending(aemp_node *n, const char *peer)
{
    if (!n || !peer) return 0;
    aemp__conn *c = aemp__map_get(&n->conn_by_name, peer, strlen(peer));
    return c ? aemp__conn_queued(c) : 0;
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
