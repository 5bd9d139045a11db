/*
 * reg.c - the node's EPMD registration. The ALIVE2 connection is the
 * registration: it stays open for the node's life. When nothing listens on
 * the EPMD port, the node embeds an EPMD server; when the EPMD it used goes
 * away (typically another node that embedded it), nodes race after a random
 * delay to take the port over and the losers register with the winner.
 */
#include "epmd_int.h"

#include <stdlib.h>

/* The answer to ALIVE2 must arrive within this (Erlang waits as long). */
#define REPLY_TIMEOUT_MS 10000
/* Re-registration after a lost connection waits a random delay in this
 * range, so that nodes sharing a dead embedded EPMD do not all collide. */
#define RETRY_MIN_MS 20
#define RETRY_SPREAD_MS 280
/* Later failures back off up to this. */
#define RETRY_MAX_MS 5000
/* A re-registration that finds the name taken is retried this often (the
 * old registration may linger until EPMD notices its connection closed). */
#define EEXIST_RETRIES 6
/* The first attempt may race another node for the embedded server port. */
#define FIRST_RACE_RETRIES 5

enum reg_state {
    R_IDLE,       /* waiting for the retry timer */
    R_CONNECTING, /* connect in progress */
    R_WAIT_REPLY, /* ALIVE2_REQ sent */
    R_REGISTERED, /* connection open: we are registered */
    R_FAILED,     /* first attempt failed and was reported: nothing more */
};

struct conn {
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_write_t write;
    struct aemp__epmd_reg *r;
    aemp_buf out;
    aemp_buf in;
    bool closing;
};

struct aemp__epmd_reg {
    uv_loop_t *loop;
    uint16_t epmd_port;
    struct aemp__epmd_node node;
    aemp__epmd_reg_cb cb;
    void *arg;
    enum reg_state state;
    uv_timer_t timer; /* reply deadline, or retry delay */
    struct conn *conn;
    aemp__epmd_server *server;
    bool ever_registered;
    int failures;       /* consecutive failed attempts */
    int eexist_retries; /* consecutive "name taken" on re-registration */
    bool closing;
    int open; /* timer, live conns, running server */
    void (*done)(void *arg);
    void *done_arg;
};

static void attempt(struct aemp__epmd_reg *r);

static void reg_unref(struct aemp__epmd_reg *r)
{
    if (--r->open > 0 || !r->closing) return;
    if (r->done) r->done(r->done_arg);
    free(r);
}

static void conn_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    struct aemp__epmd_reg *r = c->r;
    aemp_buf_free(&c->in);
    aemp_buf_free(&c->out);
    free(c);
    reg_unref(r);
}

static void conn_drop(struct aemp__epmd_reg *r)
{
    struct conn *c = r->conn;
    if (!c) return;
    r->conn = NULL;
    c->closing = true;
    uv_close((uv_handle_t *)&c->tcp, conn_closed);
}

static void on_timer(uv_timer_t *t);

static uint32_t random_below(uint32_t n)
{
    uint32_t v = 0;
    if (aemp__random(&v, sizeof v) != 0) v = (uint32_t)uv_hrtime();
    return n ? v % n : 0;
}

/* Schedule the next attempt: a random short delay, doubled per failure. */
static void retry_later(struct aemp__epmd_reg *r)
{
    conn_drop(r);
    r->state = R_IDLE;
    uint64_t delay = RETRY_MIN_MS + random_below(RETRY_SPREAD_MS);
    int shift = r->failures < 8 ? r->failures : 8;
    delay <<= shift;
    if (delay > RETRY_MAX_MS) delay = RETRY_MAX_MS - random_below(RETRY_SPREAD_MS);
    r->failures++;
    uv_timer_start(&r->timer, on_timer, delay, 0);
}

/* A failure before the first registration: report it once and stop, as the
 * caller may be waiting to learn whether the node can exist at all. */
static void fail_first(struct aemp__epmd_reg *r, int status)
{
    conn_drop(r);
    uv_timer_stop(&r->timer);
    r->state = R_FAILED;
    r->cb(status, 0, r->arg);
}

/* Something went wrong with the attempt in progress. */
static void attempt_failed(struct aemp__epmd_reg *r, int status, const char *why)
{
    if (!r->ever_registered) {
        AEMP_LOGE("epmd: registering '%s' with EPMD on port %u: %s", r->node.name,
                  (unsigned)r->epmd_port, why);
        fail_first(r, status);
        return;
    }
    AEMP_LOGW("epmd: re-registering '%s' with EPMD on port %u: %s; retrying", r->node.name,
              (unsigned)r->epmd_port, why);
    retry_later(r);
}

static void on_timer(uv_timer_t *t)
{
    struct aemp__epmd_reg *r = t->data;
    if (r->state == R_IDLE) {
        attempt(r);
        return;
    }
    if (r->state == R_CONNECTING || r->state == R_WAIT_REPLY)
        attempt_failed(r, AEMP_ETIMEDOUT, "no answer");
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct conn *c = h->data;
    if (aemp__buf_reserve(&c->in, 64) != 0) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    *buf = uv_buf_init(c->in.data + c->in.len, (unsigned)(c->in.cap - c->in.len));
}

static void registered(struct aemp__epmd_reg *r, uint32_t creation)
{
    uv_timer_stop(&r->timer);
    r->state = R_REGISTERED;
    r->failures = 0;
    r->eexist_retries = 0;
    if (r->ever_registered)
        AEMP_LOGI("epmd: re-registered '%s' with EPMD on port %u%s (creation %u)", r->node.name,
                  (unsigned)r->epmd_port, r->server ? ", served by this node" : "",
                  (unsigned)creation);
    else
        AEMP_LOGI("epmd: registered '%s' with EPMD on port %u%s (creation %u)", r->node.name,
                  (unsigned)r->epmd_port, r->server ? ", served by this node" : "",
                  (unsigned)creation);
    r->ever_registered = true;
    r->cb(0, creation, r->arg);
}

static void name_taken(struct aemp__epmd_reg *r)
{
    if (!r->ever_registered) {
        AEMP_LOGW("epmd: the name '%s' is already registered with EPMD on port %u", r->node.name,
                  (unsigned)r->epmd_port);
        fail_first(r, AEMP_EEXIST);
        return;
    }
    if (++r->eexist_retries > EEXIST_RETRIES) {
        AEMP_LOGE("epmd: the name '%s' stays registered by someone else on port %u; giving up",
                  r->node.name, (unsigned)r->epmd_port);
        conn_drop(r);
        r->state = R_FAILED;
        r->cb(AEMP_EEXIST, 0, r->arg);
        return;
    }
    AEMP_LOGW("epmd: re-registering '%s': name still registered on port %u, retrying", r->node.name,
              (unsigned)r->epmd_port);
    retry_later(r);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    struct conn *c = s->data;
    struct aemp__epmd_reg *r = c->r;
    if (c->closing) return;
    if (nread < 0) {
        if (r->state == R_REGISTERED) {
            AEMP_LOGI("epmd: lost the EPMD connection on port %u (%s); re-registering '%s'",
                      (unsigned)r->epmd_port, uv_strerror((int)nread), r->node.name);
            r->failures = 0;
            retry_later(r);
            return;
        }
        attempt_failed(r, AEMP_EPROTO, "EPMD closed the connection without answering");
        return;
    }
    c->in.len += (size_t)nread;
    if (r->state == R_REGISTERED) {
        /* EPMD sends nothing after the answer; tolerate it without growing. */
        aemp__buf_reset(&c->in);
        return;
    }
    uint8_t result = 0;
    uint32_t creation = 0;
    size_t used = 0;
    int rc = aemp__epmd_parse_alive2_resp(c->in.data, c->in.len, &result, &creation, &used);
    if (rc == AEMP__EPMD_MORE) return;
    if (rc < 0) {
        attempt_failed(r, AEMP_EPROTO, "malformed answer (is this an EPMD?)");
        return;
    }
    aemp__buf_reset(&c->in);
    if (result != 0) {
        name_taken(r);
        return;
    }
    registered(r, creation);
}

static void on_written(uv_write_t *w, int status)
{
    struct conn *c = w->data;
    if (status < 0 && !c->closing) attempt_failed(c->r, AEMP_EIO, uv_strerror(status));
}

static int start_server(struct aemp__epmd_reg *r)
{
    if (r->server) return AEMP_EEXIST;
    int rc = aemp__epmd_server_start(r->loop, r->epmd_port, &r->server);
    if (rc == 0) r->open++;
    return rc;
}

static void on_connect(uv_connect_t *req, int status)
{
    struct conn *c = req->data;
    struct aemp__epmd_reg *r = c->r;
    if (c->closing) return;
    if (status == UV_ECONNREFUSED) {
        int rc = start_server(r);
        if (rc == 0) {
            conn_drop(r);
            attempt(r);
            return;
        }
        if (rc == AEMP_EEXIST && !r->server &&
            (r->ever_registered || r->failures < FIRST_RACE_RETRIES)) {
            /* Someone bound the port between our connect and bind: it will
             * answer in a moment. */
            AEMP_LOGD("epmd: port %u taken while connecting; retrying", (unsigned)r->epmd_port);
            retry_later(r);
            return;
        }
        attempt_failed(r, rc == AEMP_EEXIST ? AEMP_ECONNREFUSED : rc,
                       "connection refused and no embedded EPMD could be started");
        return;
    }
    if (status < 0) {
        attempt_failed(r, AEMP_EIO, uv_strerror(status));
        return;
    }
    r->state = R_WAIT_REPLY;
    c->write.data = c;
    uv_buf_t b = uv_buf_init(c->out.data, (unsigned)c->out.len);
    int rc = uv_write(&c->write, (uv_stream_t *)&c->tcp, &b, 1, on_written);
    if (rc == 0) rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rc < 0) attempt_failed(r, AEMP_EIO, uv_strerror(rc));
}

static void attempt(struct aemp__epmd_reg *r)
{
    /* After a lost connection, whoever binds the port first serves it. */
    if (r->ever_registered && !r->server) {
        int rc = start_server(r);
        if (rc == 0) AEMP_LOGI("epmd: took over the EPMD port %u", (unsigned)r->epmd_port);
    }
    struct conn *c = calloc(1, sizeof *c);
    int rc = c ? 0 : AEMP_ENOMEM;
    if (rc == 0) rc = aemp__epmd_build_alive2_req(&c->out, &r->node);
    if (rc) {
        if (c) aemp_buf_free(&c->out);
        free(c);
        attempt_failed(r, rc, aemp_strerror(rc));
        return;
    }
    c->r = r;
    uv_tcp_init(r->loop, &c->tcp);
    c->tcp.data = c;
    r->open++;
    r->conn = c;
    r->state = R_CONNECTING;
    uv_timer_start(&r->timer, on_timer, REPLY_TIMEOUT_MS, 0);
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", r->epmd_port, &addr);
    c->connect.data = c;
    rc = uv_tcp_connect(&c->connect, &c->tcp, (const struct sockaddr *)&addr, on_connect);
    if (rc < 0) attempt_failed(r, AEMP_EIO, uv_strerror(rc));
}

int aemp__epmd_reg_start(uv_loop_t *loop, uint16_t epmd_port, const char *alive,
                         uint16_t listen_port, aemp__epmd_reg_cb cb, void *arg,
                         aemp__epmd_reg **out)
{
    if (!loop || !alive || !cb || !out) return AEMP_EINVAL;
    struct aemp__epmd_reg *r = calloc(1, sizeof *r);
    if (!r) return AEMP_ENOMEM;
    int rc = aemp__epmd_node_init(&r->node, alive, listen_port, AEMP__EPMD_NODE_HIDDEN);
    if (rc) {
        free(r);
        return rc;
    }
    r->loop = loop;
    r->epmd_port = aemp__epmd_port(epmd_port);
    r->cb = cb;
    r->arg = arg;
    uv_timer_init(loop, &r->timer);
    r->timer.data = r;
    r->open = 1;
    /* The first attempt runs from the loop, so cb never runs before the
     * caller has *out. */
    r->state = R_IDLE;
    uv_timer_start(&r->timer, on_timer, 0, 0);
    *out = r;
    return 0;
}

static void timer_closed(uv_handle_t *h)
{
    reg_unref(h->data);
}

static void server_closed(void *arg)
{
    reg_unref(arg);
}

void aemp__epmd_reg_close(aemp__epmd_reg *r, void (*done)(void *arg), void *arg)
{
    if (!r || r->closing) return;
    r->closing = true;
    r->done = done;
    r->done_arg = arg;
    conn_drop(r);
    uv_close((uv_handle_t *)&r->timer, timer_closed);
    if (r->server) {
        aemp__epmd_server_close(r->server, server_closed, r);
        r->server = NULL;
    }
}

int aemp__epmd_reg_is_server(const aemp__epmd_reg *r)
{
    return r && r->server ? 1 : 0;
}
