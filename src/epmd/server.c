/*
 * server.c - the embedded EPMD server: what a node runs when no EPMD answers
 * on the EPMD port. It speaks enough of the protocol for Erlang nodes, the
 * `epmd -names` client and our own client: ALIVE2, PORT_PLEASE2, NAMES.
 * Every peer is untrusted: requests, connections and idle time are bounded.
 */
#include "epmd_int.h"
#include "../util/map.h"

#include <arpa/inet.h>

#include <stdio.h>
#include <stdlib.h>

#define LISTEN_BACKLOG 128

struct client {
    uv_tcp_t tcp;
    uv_timer_t idle;
    struct aemp__epmd_server *srv;
    struct client *prev, *next;
    aemp_buf in;
    bool registered;
    bool closing;
    bool local;    /* peer is on a loopback address */
    bool pending;  /* no request completed yet: counts in the pending pool */
    uint32_t addr; /* IPv4 peer address (network order), 0 otherwise */
    int open_handles;
    uint32_t creation;
    struct aemp__epmd_node node; /* valid when registered */
    char peer[64];
};

struct aemp__epmd_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uint16_t port;
    uint32_t next_creation;
    struct client *clients;
    int nclients;
    int npending;
    aemp__map per_addr; /* IPv4 address -> pending clients from it */
    /* refusals since since_ms, logged as one line per interval */
    uint64_t refused_addr, evicted, refused_full;
    uint32_t last_addr;
    uint64_t since_ms;
    bool closing;
    int open_handles; /* listener + every client struct alive */
    void (*done)(void *arg);
    void *done_arg;
};

/* One write; freed by its callback. */
struct wreq {
    uv_write_t req;
    struct client *c;
    bool close_after;
    aemp_buf data;
};

static void server_maybe_done(struct aemp__epmd_server *s)
{
    if (!s->closing || s->open_handles > 0) return;
    if (s->done) s->done(s->done_arg);
    aemp__map_free(&s->per_addr);
    free(s);
}

static void client_handle_closed(uv_handle_t *h)
{
    struct client *c = h->data;
    if (--c->open_handles > 0) return;
    struct aemp__epmd_server *s = c->srv;
    aemp_buf_free(&c->in);
    free(c);
    s->open_handles--;
    server_maybe_done(s);
}

static void pending_add(struct aemp__epmd_server *s, uint32_t addr, int delta)
{
    unsigned n = (unsigned)(uintptr_t)aemp__map_get(&s->per_addr, &addr, sizeof addr);
    n += (unsigned)delta;
    if (n == 0)
        aemp__map_del(&s->per_addr, &addr, sizeof addr);
    else
        (void)aemp__map_put(&s->per_addr, &addr, sizeof addr, (void *)(uintptr_t)n);
}

/* The client completed a request (or is going): out of the pending pool. */
static void pending_done(struct client *c)
{
    if (!c->pending) return;
    c->pending = false;
    c->srv->npending--;
    pending_add(c->srv, c->addr, -1);
}

static void refusal_summary(struct aemp__epmd_server *s)
{
    uint64_t now = uv_now(s->loop);
    if (now - s->since_ms < AEMP__EPMD_REFUSAL_LOG_MS) return;
    if (s->refused_addr || s->evicted || s->refused_full) {
        char ip[INET_ADDRSTRLEN] = "-";
        struct in_addr a = {s->last_addr};
        if (s->refused_addr) inet_ntop(AF_INET, &a, ip, sizeof ip);
        AEMP_LOGW("epmd server: in the last %llu s: %llu idle connections dropped for newer "
                  "ones from the same address (limit %d, last %s), %llu for newer ones from "
                  "anywhere (limit %d), %llu refused over %d connections",
                  (unsigned long long)((now - s->since_ms) / 1000),
                  (unsigned long long)s->refused_addr, AEMP__EPMD_MAX_PENDING_PER_ADDRESS, ip,
                  (unsigned long long)s->evicted, AEMP__EPMD_MAX_PENDING,
                  (unsigned long long)s->refused_full, AEMP__EPMD_MAX_CLIENTS);
    }
    s->refused_addr = s->evicted = s->refused_full = 0;
    s->since_ms = now;
}

static void client_close(struct client *c)
{
    if (c->closing) return;
    c->closing = true;
    pending_done(c);
    struct aemp__epmd_server *s = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->clients = c->next;
    if (c->next) c->next->prev = c->prev;
    s->nclients--;
    if (c->registered) AEMP_LOGD("epmd server: '%s' unregistered", c->node.name);
    uv_close((uv_handle_t *)&c->idle, client_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, client_handle_closed);
}

static void write_done(uv_write_t *req, int status)
{
    struct wreq *w = req->data;
    struct client *c = w->c;
    if (status < 0 && status != UV_ECANCELED)
        AEMP_LOGD("epmd server: write to %s failed: %s", c->peer, uv_strerror(status));
    if ((status < 0 || w->close_after) && !c->closing) client_close(c);
    aemp_buf_free(&w->data);
    free(w);
}

/* Send data (taken over: *data is left empty); close afterwards if asked. */
static void client_send(struct client *c, aemp_buf *data, bool close_after)
{
    struct wreq *w = calloc(1, sizeof *w);
    if (!w) {
        aemp_buf_free(data);
        client_close(c);
        return;
    }
    w->c = c;
    w->close_after = close_after;
    w->data = *data;
    *data = (aemp_buf)AEMP_BUF_INIT;
    w->req.data = w;
    uv_buf_t b = uv_buf_init(w->data.data, (unsigned)w->data.len);
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, write_done);
    if (rc < 0) {
        AEMP_LOGD("epmd server: write to %s failed: %s", c->peer, uv_strerror(rc));
        aemp_buf_free(&w->data);
        free(w);
        client_close(c);
    }
}

static struct client *find_registered(struct aemp__epmd_server *s, const char *name)
{
    for (struct client *c = s->clients; c; c = c->next)
        if (c->registered && strcmp(c->node.name, name) == 0) return c;
    return NULL;
}

static uint32_t take_creation(struct aemp__epmd_server *s)
{
    uint32_t cr = s->next_creation++;
    if (cr == 0) cr = s->next_creation++;
    return cr;
}

static void handle_alive2(struct client *c, const struct aemp__epmd_req *req)
{
    struct aemp__epmd_server *s = c->srv;
    if (!c->local) {
        AEMP_LOGW("epmd server: peer %s: ALIVE2 for '%s' from a non-local address refused", c->peer,
                  req->node.name);
        client_close(c);
        return;
    }
    /* An old node (version < 6) expects the 16-bit answer. */
    bool extended = req->node.highest >= AEMP__EPMD_DIST_VERSION;
    aemp_buf out = AEMP_BUF_INIT;
    if (find_registered(s, req->node.name)) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        AEMP_LOGI("epmd server: peer %s: name '%s' is already registered", c->peer, req->node.name);
        if (aemp__epmd_build_alive2_resp(&out, 1, 0, extended) == 0)
            client_send(c, &out, true);
        else
            client_close(c);
        return;
    }
    uint32_t creation = take_creation(s);
    if (!extended) creation = creation % 3 + 1;
    if (aemp__epmd_build_alive2_resp(&out, 0, creation, extended) != 0) {
        client_close(c);
        return;
    }
    c->node = req->node;
    c->creation = creation;
    c->registered = true;
    pending_done(c);
    uv_timer_stop(&c->idle);
    AEMP_LOGD("epmd server: registered '%s' at port %u (creation %u)", c->node.name,
              (unsigned)c->node.port, (unsigned)creation);
    client_send(c, &out, false);
}

static void handle_port_please(struct client *c, const struct aemp__epmd_req *req)
{
    struct client *r = find_registered(c->srv, req->node.name);
    aemp_buf out = AEMP_BUF_INIT;
    if (aemp__epmd_build_port2_resp(&out, r ? &r->node : NULL) != 0) {
        aemp_buf_free(&out);
        client_close(c);
        return;
    }
    client_send(c, &out, true);
}

static void handle_names(struct client *c)
{
    struct aemp__epmd_server *s = c->srv;
    aemp_buf out = AEMP_BUF_INIT;
    int rc = aemp__epmd_build_names_resp(&out, s->port);
    for (struct client *r = s->clients; r && rc == 0; r = r->next)
        if (r->registered) rc = aemp__epmd_build_names_line(&out, r->node.name, r->node.port);
    if (rc) {
        aemp_buf_free(&out);
        client_close(c);
        return;
    }
    client_send(c, &out, true);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct client *c = h->data;
    /* Requests are small: never hold more than one maximal request. */
    size_t want = AEMP__EPMD_MAX_REQ + 2;
    if (aemp__buf_reserve(&c->in, want) != 0) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    *buf = uv_buf_init(c->in.data + c->in.len, (unsigned)(c->in.cap - c->in.len));
}

static const char *req_error(int rc)
{
    switch (rc) {
    case AEMP_ETOOBIG:
        return "request or name too long";
    case AEMP_ENOTSUP:
        return "unknown request code";
    default:
        return "malformed request";
    }
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    struct client *c = stream->data;
    if (c->closing) return;
    if (nread < 0) {
        if (nread == UV_ENOBUFS)
            AEMP_LOGW("epmd server: peer %s: out of memory", c->peer);
        else if (nread != UV_EOF)
            AEMP_LOGD("epmd server: peer %s: %s", c->peer, uv_strerror((int)nread));
        client_close(c);
        return;
    }
    c->in.len += (size_t)nread;
    if (c->registered && c->in.len > 0) {
        /* Erlang sends nothing after ALIVE2: anything else is a confused
         * or hostile peer, and closing unregisters it. */
        AEMP_LOGW("epmd server: peer %s: data after registration of '%s'", c->peer, c->node.name);
        client_close(c);
        return;
    }
    struct aemp__epmd_req req;
    size_t used = 0;
    int rc = aemp__epmd_parse_req(c->in.data, c->in.len, AEMP__EPMD_MAX_REQ, &req, &used);
    if (rc == AEMP__EPMD_MORE) return;
    if (rc < 0) {
        if (rc == AEMP_ENOTSUP)
            AEMP_LOGW("epmd server: peer %s: %s %u", c->peer, req_error(rc), (unsigned)req.code);
        else
            AEMP_LOGW("epmd server: peer %s: %s", c->peer, req_error(rc));
        client_close(c);
        return;
    }
    if (c->in.len > used) {
        /* Real clients wait for the answer; pipelined bytes are not ours. */
        AEMP_LOGW("epmd server: peer %s: unexpected data after a request", c->peer);
        client_close(c);
        return;
    }
    aemp__buf_reset(&c->in);
    switch (req.code) {
    case AEMP__EPMD_ALIVE2_REQ:
        handle_alive2(c, &req);
        break;
    case AEMP__EPMD_PORT_PLEASE2_REQ:
        uv_read_stop(stream);
        handle_port_please(c, &req);
        break;
    default:
        uv_read_stop(stream);
        handle_names(c);
        break;
    }
}

static void on_idle(uv_timer_t *t)
{
    struct client *c = t->data;
    AEMP_LOGW("epmd server: peer %s: no complete request within %d s, dropped", c->peer,
              AEMP__EPMD_IDLE_MS / 1000);
    client_close(c);
}

static void describe_peer(struct client *c)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    aemp__strlcpy(c->peer, "?", sizeof c->peer);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) != 0) return;
    char host[48] = "?";
    unsigned port = 0;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
        uv_ip4_name(a, host, sizeof host);
        port = ntohs(a->sin_port);
        c->addr = a->sin_addr.s_addr;
        c->local = (ntohl(a->sin_addr.s_addr) >> 24) == 127;
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
        uv_ip6_name(a, host, sizeof host);
        port = ntohs(a->sin6_port);
        static const uint8_t loop6[16] = {[15] = 1};
        c->local = memcmp(&a->sin6_addr, loop6, 16) == 0;
    }
    snprintf(c->peer, sizeof c->peer, "%s:%u", host, port);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct aemp__epmd_server *s = server->data;
    if (status < 0) {
        AEMP_LOGW("epmd server: accept failed: %s", uv_strerror(status));
        return;
    }
    struct client *c = calloc(1, sizeof *c);
    if (!c) {
        AEMP_LOGE("epmd server: out of memory accepting a connection");
        return;
    }
    c->srv = s;
    uv_tcp_init(s->loop, &c->tcp);
    uv_timer_init(s->loop, &c->idle);
    c->tcp.data = c->idle.data = c;
    c->open_handles = 2;
    s->open_handles++;
    c->next = s->clients;
    if (s->clients) s->clients->prev = c;
    s->clients = c;
    s->nclients++;
    int rc = uv_accept(server, (uv_stream_t *)&c->tcp);
    if (rc < 0) {
        AEMP_LOGW("epmd server: accept failed: %s", uv_strerror(rc));
        client_close(c);
        return;
    }
    describe_peer(c);
    refusal_summary(s);
    /* Clients that have not completed a request yet: the oldest of them
     * from the same address (or, the pool full, of all) makes way for the
     * new one. A real client's request comes with its connection; what
     * lingers is idle, so a flood cannot keep a node from registering. */
    unsigned from_addr = (unsigned)(uintptr_t)aemp__map_get(&s->per_addr, &c->addr, sizeof c->addr);
    bool per_addr = from_addr >= AEMP__EPMD_MAX_PENDING_PER_ADDRESS;
    if (per_addr || s->npending >= AEMP__EPMD_MAX_PENDING) {
        struct client *old = NULL;
        for (struct client *o = s->clients; o; o = o->next)
            if (o->pending && o != c && (!per_addr || o->addr == c->addr))
                old = o; /* the list is newest first */
        if (per_addr) {
            s->refused_addr++;
            s->last_addr = c->addr;
        } else {
            s->evicted++;
        }
        if (old) client_close(old);
    }
    if (s->nclients > AEMP__EPMD_MAX_CLIENTS) {
        s->refused_full++;
        client_close(c);
        return;
    }
    c->pending = true;
    s->npending++;
    pending_add(s, c->addr, 1);
    uv_timer_start(&c->idle, on_idle, AEMP__EPMD_IDLE_MS, 0);
    rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rc < 0) client_close(c);
}

static void listener_closed(uv_handle_t *h)
{
    struct aemp__epmd_server *s = h->data;
    s->open_handles--;
    server_maybe_done(s);
}

int aemp__epmd_server_start(uv_loop_t *loop, uint16_t port, aemp__epmd_server **out)
{
    struct aemp__epmd_server *s = calloc(1, sizeof *s);
    if (!s) return AEMP_ENOMEM;
    s->loop = loop;
    s->port = port;
    aemp__map_init(&s->per_addr);
    s->since_ms = uv_now(loop);
    if (aemp__random(&s->next_creation, sizeof s->next_creation) != 0)
        s->next_creation = (uint32_t)uv_hrtime();
    int rc = uv_tcp_init(loop, &s->listener);
    if (rc < 0) {
        free(s);
        return AEMP_EIO;
    }
    s->listener.data = s;
    s->open_handles = 1;
    struct sockaddr_in addr;
    uv_ip4_addr("0.0.0.0", port, &addr);
    rc = uv_tcp_bind(&s->listener, (const struct sockaddr *)&addr, 0);
    /* libuv may keep a bind error until listen: check both. */
    if (rc == 0) rc = uv_listen((uv_stream_t *)&s->listener, LISTEN_BACKLOG, on_connection);
    if (rc < 0) {
        if (rc != UV_EADDRINUSE)
            AEMP_LOGW("epmd server: cannot listen on port %u: %s", (unsigned)port, uv_strerror(rc));
        /* Freed by the close callback; the caller never sees s. */
        s->closing = true;
        uv_close((uv_handle_t *)&s->listener, listener_closed);
        return rc == UV_EADDRINUSE ? AEMP_EEXIST : AEMP_EIO;
    }
    AEMP_LOGI("epmd server: serving EPMD on port %u", (unsigned)port);
    *out = s;
    return 0;
}

void aemp__epmd_server_close(aemp__epmd_server *s, void (*done)(void *arg), void *arg)
{
    if (!s || s->closing) return;
    s->closing = true;
    s->done = done;
    s->done_arg = arg;
    while (s->clients)
        client_close(s->clients);
    uv_close((uv_handle_t *)&s->listener, listener_closed);
}
