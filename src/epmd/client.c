/*
 * client.c - one-shot EPMD queries (PORT_PLEASE2, NAMES) and the EPMD port
 * in effect. A query owns a resolver request, a socket and a timer; its
 * callback runs once, after all of them are closed, so the caller may free
 * anything from it.
 */
#include "epmd_int.h"

#include <errno.h>
#include <stdlib.h>

/* Whole query deadline: resolve, connect, answer. */
#define QUERY_TIMEOUT_MS 5000
/* A NAMES answer longer than this is refused (a few thousand nodes). */
#define MAX_NAMES_ANSWER (1024 * 1024)

uint16_t aemp__epmd_port(uint16_t configured)
{
    if (configured) return configured;
    const char *e = getenv("ERL_EPMD_PORT");
    if (e && *e) {
        char *end = NULL;
        errno = 0;
        unsigned long v = strtoul(e, &end, 10);
        if (errno == 0 && *end == 0 && e[0] >= '0' && e[0] <= '9' && v > 0 && v <= 65535)
            return (uint16_t)v;
        AEMP_LOGW("epmd: ignoring ERL_EPMD_PORT='%s': not a port number", e);
    }
    return AEMP__EPMD_DEFAULT_PORT;
}

enum query_kind { Q_PORT, Q_NAMES };

struct aemp__epmd_query {
    uv_loop_t *loop;
    enum query_kind kind;
    uint16_t epmd_port;
    char host[256];
    char alive[AEMP__EPMD_MAX_NAME + 1];
    uv_getaddrinfo_t gai;
    uv_tcp_t tcp;
    uv_connect_t conn;
    uv_write_t wr;
    uv_timer_t timer;
    aemp_buf out;
    aemp_buf in;
    bool gai_pending;
    bool tcp_open;
    bool finished; /* result decided, handles closing */
    int pending;   /* closes and the resolver callback still to come */
    int status;
    uint16_t port;
    aemp__epmd_port_cb port_cb;
    aemp__epmd_names_cb names_cb;
    void *arg;
};

static void query_free(aemp__epmd_query *q)
{
    aemp_buf_free(&q->in);
    aemp_buf_free(&q->out);
    free(q);
}

static void query_deliver(aemp__epmd_query *q)
{
    if (q->kind == Q_PORT) {
        q->port_cb(q->status, q->status == 0 ? q->port : 0, q->arg);
    } else {
        const char *text = "";
        size_t len = 0;
        uint32_t ep;
        size_t off;
        if (q->status == 0 && aemp__epmd_parse_names_resp(q->in.data, q->in.len, &ep, &off) == 0) {
            text = q->in.data + off;
            len = q->in.len - off;
        }
        q->names_cb(q->status, text, len, q->arg);
    }
    query_free(q);
}

static void query_unref(aemp__epmd_query *q)
{
    if (--q->pending == 0) query_deliver(q);
}

static void query_handle_closed(uv_handle_t *h)
{
    query_unref(h->data);
}

/* Decide the result and close everything; the callback follows the last
 * close. */
static void query_finish(aemp__epmd_query *q, int status)
{
    if (q->finished) return;
    q->finished = true;
    q->status = status;
    /* The timer counts as one reference, dropped by its close callback. */
    uv_close((uv_handle_t *)&q->timer, query_handle_closed);
    if (q->tcp_open) {
        q->pending++;
        uv_close((uv_handle_t *)&q->tcp, query_handle_closed);
    }
    if (q->gai_pending) uv_cancel((uv_req_t *)&q->gai);
}

static void on_timeout(uv_timer_t *t)
{
    aemp__epmd_query *q = t->data;
    AEMP_LOGD("epmd: query to %s:%u timed out", q->host, (unsigned)q->epmd_port);
    query_finish(q, AEMP_ETIMEDOUT);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    aemp__epmd_query *q = h->data;
    if (aemp__buf_reserve(&q->in, 4096) != 0) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    *buf = uv_buf_init(q->in.data + q->in.len, (unsigned)(q->in.cap - q->in.len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    aemp__epmd_query *q = s->data;
    if (q->finished) return;
    if (nread == UV_EOF) {
        if (q->kind == Q_NAMES && q->in.len >= 4) {
            query_finish(q, 0);
            return;
        }
        AEMP_LOGW("epmd: %s:%u closed the connection before answering", q->host,
                  (unsigned)q->epmd_port);
        query_finish(q, AEMP_EPROTO);
        return;
    }
    if (nread < 0) {
        AEMP_LOGW("epmd: reading from %s:%u: %s", q->host, (unsigned)q->epmd_port,
                  uv_strerror((int)nread));
        query_finish(q, nread == UV_ENOBUFS ? AEMP_ENOMEM : AEMP_EIO);
        return;
    }
    q->in.len += (size_t)nread;
    if (q->kind == Q_NAMES) {
        if (q->in.len > MAX_NAMES_ANSWER) {
            AEMP_LOGW("epmd: NAMES answer from %s:%u longer than %d bytes", q->host,
                      (unsigned)q->epmd_port, MAX_NAMES_ANSWER);
            query_finish(q, AEMP_ETOOBIG);
        }
        return;
    }
    uint8_t result = 0;
    size_t used = 0;
    struct aemp__epmd_node node;
    int rc = aemp__epmd_parse_port2_resp(q->in.data, q->in.len, &result, &node, &used);
    if (rc == AEMP__EPMD_MORE) return;
    if (rc < 0) {
        AEMP_LOGW("epmd: malformed PORT2_RESP from %s:%u", q->host, (unsigned)q->epmd_port);
        query_finish(q, AEMP_EPROTO);
        return;
    }
    if (result != 0) {
        query_finish(q, AEMP_ENONODE);
        return;
    }
    q->port = node.port;
    query_finish(q, 0);
}

static void on_written(uv_write_t *w, int status)
{
    aemp__epmd_query *q = w->data;
    if (status < 0 && !q->finished) {
        AEMP_LOGW("epmd: writing to %s:%u: %s", q->host, (unsigned)q->epmd_port,
                  uv_strerror(status));
        query_finish(q, AEMP_EIO);
    }
}

static void on_connect(uv_connect_t *req, int status)
{
    aemp__epmd_query *q = req->data;
    if (q->finished) return;
    if (status < 0) {
        if (status == UV_ECONNREFUSED) {
            query_finish(q, AEMP_ECONNREFUSED);
            return;
        }
        AEMP_LOGW("epmd: connecting to %s:%u: %s", q->host, (unsigned)q->epmd_port,
                  uv_strerror(status));
        query_finish(q, status == UV_ETIMEDOUT ? AEMP_ETIMEDOUT : AEMP_EIO);
        return;
    }
    uv_buf_t b = uv_buf_init(q->out.data, (unsigned)q->out.len);
    q->wr.data = q;
    int rc = uv_write(&q->wr, (uv_stream_t *)&q->tcp, &b, 1, on_written);
    if (rc == 0) rc = uv_read_start((uv_stream_t *)&q->tcp, on_alloc, on_read);
    if (rc < 0) query_finish(q, AEMP_EIO);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    aemp__epmd_query *q = req->data;
    q->gai_pending = false;
    if (q->finished) {
        uv_freeaddrinfo(res);
        query_unref(q);
        return;
    }
    /* The resolver reference is dropped last, so q lives through this. */
    struct sockaddr_in addr;
    if ((status < 0 || !res) && aemp__host_is_self(q->host)) {
        uv_freeaddrinfo(res);
        uv_ip4_addr("127.0.0.1", q->epmd_port, &addr);
    } else if (status < 0 || !res) {
        AEMP_LOGW("epmd: cannot resolve '%s': %s", q->host, uv_strerror(status));
        query_finish(q, AEMP_ENOENT);
        uv_freeaddrinfo(res);
        query_unref(q);
        return;
    } else {
        memcpy(&addr, res->ai_addr, sizeof addr);
        addr.sin_port = htons(q->epmd_port);
        uv_freeaddrinfo(res);
    }
    int rc = uv_tcp_init(q->loop, &q->tcp);
    if (rc == 0) {
        q->tcp.data = q;
        q->tcp_open = true;
        q->conn.data = q;
        rc = uv_tcp_connect(&q->conn, &q->tcp, (const struct sockaddr *)&addr, on_connect);
    }
    if (rc < 0) {
        AEMP_LOGW("epmd: connecting to %s:%u: %s", q->host, (unsigned)q->epmd_port,
                  uv_strerror(rc));
        query_finish(q, AEMP_EIO);
    }
    query_unref(q);
}

static int query_start(uv_loop_t *loop, enum query_kind kind, const char *host, uint16_t epmd_port,
                       const char *alive, aemp__epmd_query **out, aemp__epmd_query **qp)
{
    if (!loop || !host || !*host || !out || strlen(host) >= sizeof((*qp)->host)) return AEMP_EINVAL;
    aemp__epmd_query *q = calloc(1, sizeof *q);
    if (!q) return AEMP_ENOMEM;
    q->loop = loop;
    q->kind = kind;
    q->epmd_port = aemp__epmd_port(epmd_port);
    aemp__strlcpy(q->host, host, sizeof q->host);
    int rc;
    if (kind == Q_PORT) {
        aemp__strlcpy(q->alive, alive, sizeof q->alive);
        rc = aemp__epmd_build_port_please2_req(&q->out, alive);
    } else {
        rc = aemp__epmd_build_names_req(&q->out);
    }
    if (rc) {
        query_free(q);
        return rc;
    }
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    q->gai.data = q;
    rc = uv_getaddrinfo(loop, &q->gai, on_resolved, host, NULL, &hints);
    if (rc < 0) {
        AEMP_LOGW("epmd: cannot resolve '%s': %s", host, uv_strerror(rc));
        query_free(q);
        return AEMP_EIO;
    }
    q->gai_pending = true;
    /* References: the resolver callback and the timer's close. */
    q->pending = 2;
    uv_timer_init(loop, &q->timer);
    q->timer.data = q;
    uv_timer_start(&q->timer, on_timeout, QUERY_TIMEOUT_MS, 0);
    *qp = q;
    *out = q;
    return 0;
}

int aemp__epmd_port_please(uv_loop_t *loop, const char *host, uint16_t epmd_port, const char *alive,
                           aemp__epmd_port_cb cb, void *arg, aemp__epmd_query **out)
{
    if (!alive || !cb || !aemp__epmd_name_valid(alive, strlen(alive))) return AEMP_EINVAL;
    aemp__epmd_query *q = NULL;
    int rc = query_start(loop, Q_PORT, host, epmd_port, alive, out, &q);
    if (rc == 0) {
        q->port_cb = cb;
        q->arg = arg;
    }
    return rc;
}

int aemp__epmd_names(uv_loop_t *loop, const char *host, uint16_t epmd_port, aemp__epmd_names_cb cb,
                     void *arg, aemp__epmd_query **out)
{
    if (!cb) return AEMP_EINVAL;
    aemp__epmd_query *q = NULL;
    int rc = query_start(loop, Q_NAMES, host, epmd_port, NULL, out, &q);
    if (rc == 0) {
        q->names_cb = cb;
        q->arg = arg;
    }
    return rc;
}

void aemp__epmd_query_cancel(aemp__epmd_query *q)
{
    if (!q) return;
    if (q->finished) {
        /* Decided but not yet delivered: the caller asked for ECLOSED. */
        q->status = AEMP_ECLOSED;
        return;
    }
    query_finish(q, AEMP_ECLOSED);
}
