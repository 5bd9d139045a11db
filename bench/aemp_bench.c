/*
 * aemp_bench - the C node of the aemp benchmark (bench/run.sh drives it).
 *
 * Usage: aemp_bench --name alive@host [--cookie COOKIE]
 *
 * The node registers the same ports as an Erlang benchmark node
 * (bench/erl/aemp_bench.erl describes the messages): bench_sink counts data
 * messages, bench_echo answers pings, bench_lat takes the one-way latency
 * of stamped messages, and bench_agent runs one measurement at a time when
 * the Erlang controller asks, sending to an Erlang or a C node, or between
 * two ports of this node (local dispatch). It uses only the public API in
 * aemp.h, as an application would, and never reads an aemp_addr's or an
 * aemp_port's fields. The process exits when the controller sends
 * bench_stop.
 */
#include "aemp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TAG_MAX 64

/* ---------------------------------------------------------------- */
/* Allocation count                                                  */
/* ---------------------------------------------------------------- */

/* The link wraps malloc, calloc and realloc (bench/CMakeLists.txt): every
 * call from this program, libaemp and libei (linked statically) lands here
 * and is counted for the thread that makes it, the loop's thread for
 * everything measured. Shared libraries (libuv, OpenSSL, libc's own
 * internals) are not counted. */
void *__real_malloc(size_t size);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t size);

static _Thread_local uint64_t allocs;

void *__wrap_malloc(size_t size)
{
    allocs++;
    return __real_malloc(size);
}

void *__wrap_calloc(size_t n, size_t size)
{
    allocs++;
    return __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t size)
{
    allocs++;
    return __real_realloc(p, size);
}

enum job_kind { JOB_NONE, JOB_BLAST, JOB_RTT, JOB_LOCAL };
enum blast_phase { BLAST_WAIT_READY, BLAST_SENDING, BLAST_WAIT_DONE };

struct bench {
    aemp_node *node;
    aemp_port sink, echo, agent, lat_port;
    aemp_addr agent_addr;
    int exit_code;

    /* Latency: the receive time minus the send time stamped in each data
     * message, in nanoseconds. */
    aemp_addr lat_from;
    uint64_t lat_gen;
    int64_t *lat;
    size_t lat_len, lat_cap;
    int lat_active;

    /* Local dispatch: two unregistered ports of this node. */
    aemp_port la, lb;
    aemp_addr la_addr, lb_addr;
    int pingpong;
    uint64_t delivered, allocs0;

    /* Sink: serves one sender at a time, like the Erlang sink. */
    aemp_addr sink_from;
    uint64_t sink_window, sink_gen, sink_count, sink_bytes;
    int sink_active;

    /* The agent's current job. */
    enum job_kind job;
    aemp_addr ctl;
    aemp_addr target;
    char target_node[AEMP_MAXNODELEN + 1]; /* "" for a job on this node */
    uint64_t gen;
    char *raw; /* payload bytes */
    size_t size;

    /* Blast: the data message is encoded once and sent n times. */
    enum blast_phase phase;
    aemp_buf data;
    uint64_t n, window, sent, acked, t0;

    /* Round trips. */
    uint64_t *samples;
    uint64_t k, warm, seq, ping_t0;
};

static void report_error(struct bench *b, const char *what, int err)
{
    char text[256];
    snprintf(text, sizeof text, "%s: %s", what, aemp_strerror(err));
    fprintf(stderr, "aemp_bench %s: %s\n", aemp_node_name(b->node), text);
    aemp_sendf(b->node, b->agent, &b->ctl, "{bench_error, ~s}", text);
}

static void job_end(struct bench *b)
{
    b->job = JOB_NONE;
    b->target_node[0] = '\0';
    free(b->raw);
    b->raw = NULL;
    free(b->samples);
    b->samples = NULL;
    aemp_buf_free(&b->data);
}

static void job_fail(struct bench *b, const char *what, int err)
{
    report_error(b, what, err);
    job_end(b);
}

/* Reads `{Tag, ...` and leaves the cursor at the second element. */
static int get_tag(aemp_cursor *c, uint32_t *arity, char *tag, size_t size)
{
    int rc = aemp_get_tuple(c, arity);
    if (rc != 0) return rc;
    if (*arity < 1) return AEMP_ENOMATCH;
    return aemp_get_atom(c, tag, size);
}

/* ---------------------------------------------------------------- */
/* Sink and echo                                                     */
/* ---------------------------------------------------------------- */

static void sink_recv(aemp_node *node, aemp_port self, const aemp_term *msg, const aemp_addr *from,
                      void *arg)
{
    struct bench *b = arg;
    aemp_cursor c = aemp_cursor_of(msg);
    const void *ptr;
    size_t len;
    (void)from;

    /* The hot path: a data message is a bare binary, counted in place. */
    if (aemp_get_binary(&c, &ptr, &len) == 0) {
        if (!b->sink_active) return;
        b->sink_count++;
        b->sink_bytes += len;
        if (b->sink_count % b->sink_window == 0)
            aemp_sendf(node, self, &b->sink_from, "{bench_ack, ~u, ~u}", b->sink_gen,
                       b->sink_count);
        return;
    }

    uint32_t arity;
    char tag[TAG_MAX];
    aemp_addr peer;
    uint64_t window, gen;
    if (get_tag(&c, &arity, tag, sizeof tag) != 0) return;
    if (strcmp(tag, "bench_start") == 0 && arity == 4 && aemp_get_pid(&c, &peer) == 0 &&
        aemp_get_uint64(&c, &window) == 0 && aemp_get_uint64(&c, &gen) == 0 && window > 0) {
        b->sink_from = peer;
        b->sink_window = window;
        b->sink_gen = gen;
        b->sink_count = 0;
        b->sink_bytes = 0;
        b->sink_active = 1;
        aemp_sendf(node, self, &peer, "{bench_ready, ~u}", gen);
    } else if (strcmp(tag, "bench_end") == 0 && arity == 3 && aemp_get_pid(&c, &peer) == 0 &&
               aemp_get_uint64(&c, &gen) == 0) {
        uint64_t count = b->sink_active ? b->sink_count : 0;
        uint64_t bytes = b->sink_active ? b->sink_bytes : 0;
        b->sink_active = 0;
        aemp_sendf(node, self, &peer, "{bench_done, ~u, ~u, ~u}", gen, count, bytes);
    }
}

static void echo_recv(aemp_node *node, aemp_port self, const aemp_term *msg, const aemp_addr *from,
                      void *arg)
{
    aemp_cursor c = aemp_cursor_of(msg);
    uint32_t arity;
    char tag[TAG_MAX];
    aemp_addr peer;
    uint64_t seq;
    const void *ptr;
    size_t len;
    (void)from;
    (void)arg;

    if (get_tag(&c, &arity, tag, sizeof tag) == 0 && arity == 4 && strcmp(tag, "bench_ping") == 0 &&
        aemp_get_pid(&c, &peer) == 0 && aemp_get_uint64(&c, &seq) == 0 &&
        aemp_get_binary(&c, &ptr, &len) == 0)
        aemp_sendf(node, self, &peer, "{bench_pong, ~u, ~b}", seq, ptr, len);
}

/* ---------------------------------------------------------------- */
/* Agent: blast                                                      */
/* ---------------------------------------------------------------- */

static void blast_pump(struct bench *b)
{
    aemp_term data = aemp_buf_term(&b->data);
    while (b->sent < b->n && b->sent < b->acked + 2 * b->window) {
        int rc = aemp_send(b->node, b->agent, &b->target, &data);
        if (rc != 0) {
            job_fail(b, "aemp_send data", rc);
            return;
        }
        b->sent++;
    }
    if (b->sent == b->n) {
        int rc = aemp_sendf(b->node, b->agent, &b->target, "{bench_end, ~p, ~u}", &b->agent_addr,
                            b->gen);
        if (rc != 0) {
            job_fail(b, "aemp_send end", rc);
            return;
        }
        b->phase = BLAST_WAIT_DONE;
    }
}

static void blast_start(struct bench *b, uint64_t n, uint64_t window)
{
    int rc = aemp_term_format(&b->data, "~b", b->raw, b->size);
    if (rc != 0) {
        job_fail(b, "encode payload", rc);
        return;
    }
    b->job = JOB_BLAST;
    b->phase = BLAST_WAIT_READY;
    b->n = n;
    b->window = window;
    b->sent = 0;
    b->acked = 0;
    rc = aemp_sendf(b->node, b->agent, &b->target, "{bench_start, ~p, ~u, ~u}", &b->agent_addr,
                    window, b->gen);
    if (rc != 0) job_fail(b, "aemp_send start", rc);
}

/* A reply from the sink: `{bench_ready, Gen}`, `{bench_ack, Gen, Count}`
 * or `{bench_done, Gen, Count, Bytes}`; the cursor is past the tag. */
static void blast_reply(struct bench *b, const char *tag, uint32_t arity, aemp_cursor *c)
{
    uint64_t gen, count, bytes;
    if (b->job != JOB_BLAST || aemp_get_uint64(c, &gen) != 0 || gen != b->gen) return;
    if (strcmp(tag, "bench_ready") == 0 && arity == 2 && b->phase == BLAST_WAIT_READY) {
        b->phase = BLAST_SENDING;
        b->t0 = uv_hrtime();
        blast_pump(b);
    } else if (strcmp(tag, "bench_ack") == 0 && arity == 3 && aemp_get_uint64(c, &count) == 0) {
        if (count > b->acked) b->acked = count;
        if (b->phase == BLAST_SENDING) blast_pump(b);
    } else if (strcmp(tag, "bench_done") == 0 && arity == 4 && b->phase == BLAST_WAIT_DONE &&
               aemp_get_uint64(c, &count) == 0 && aemp_get_uint64(c, &bytes) == 0) {
        uint64_t ns = uv_hrtime() - b->t0;
        aemp_sendf(b->node, b->agent, &b->ctl, "{bench_blast_done, ~u, ~u, ~u}", ns, count, bytes);
        job_end(b);
    }
}

/* ---------------------------------------------------------------- */
/* Agent: round trips                                                */
/* ---------------------------------------------------------------- */

static void rtt_ping(struct bench *b)
{
    b->seq++;
    b->ping_t0 = uv_hrtime();
    int rc = aemp_sendf(b->node, b->agent, &b->target, "{bench_ping, ~p, ~u, ~b}", &b->agent_addr,
                        b->seq, b->raw, b->size);
    if (rc != 0) job_fail(b, "aemp_send ping", rc);
}

static int cmp_u64(const void *x, const void *y)
{
    uint64_t a = *(const uint64_t *)x, c = *(const uint64_t *)y;
    return (a > c) - (a < c);
}

/* The index of the nearest-rank p-th percentile among len sorted samples,
 * as the Erlang side computes it. */
static size_t nearest_rank(size_t len, size_t p)
{
    size_t rank = (p * len + 99) / 100;
    if (rank < 1) rank = 1;
    if (rank > len) rank = len;
    return rank - 1;
}

static uint64_t percentile(const uint64_t *sorted, uint64_t len, uint64_t p)
{
    return sorted[nearest_rank((size_t)len, (size_t)p)];
}

static void rtt_start(struct bench *b, uint64_t k)
{
    b->samples = calloc(k, sizeof *b->samples);
    if (b->samples == NULL) {
        job_fail(b, "allocate samples", AEMP_ENOMEM);
        return;
    }
    b->job = JOB_RTT;
    b->k = k;
    b->warm = k / 20 > 10 ? k / 20 : 10;
    b->seq = 0;
    rtt_ping(b);
}

/* `{bench_pong, Seq, Bin}`; the cursor is past the tag. */
static void rtt_pong(struct bench *b, uint32_t arity, aemp_cursor *c)
{
    uint64_t now = uv_hrtime(), seq;
    if (b->job != JOB_RTT || arity != 3 || aemp_get_uint64(c, &seq) != 0 || seq != b->seq) return;
    if (seq > b->warm) b->samples[seq - b->warm - 1] = now - b->ping_t0;
    if (seq < b->warm + b->k) {
        rtt_ping(b);
        return;
    }
    qsort(b->samples, b->k, sizeof *b->samples, cmp_u64);
    aemp_sendf(b->node, b->agent, &b->ctl, "{bench_rtt_done, ~u, ~u}",
               percentile(b->samples, b->k, 50), percentile(b->samples, b->k, 99));
    job_end(b);
}

/* ---------------------------------------------------------------- */
/* Latency                                                           */
/* ---------------------------------------------------------------- */

static int64_t realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp_i64(const void *x, const void *y)
{
    int64_t a = *(const int64_t *)x, c = *(const int64_t *)y;
    return (a > c) - (a < c);
}

static int64_t percentile_i64(const int64_t *sorted, size_t len, size_t p)
{
    return sorted[nearest_rank(len, p)];
}

/* A data message is a binary whose first 8 bytes are the sender's
 * os:system_time(nanosecond), big-endian: CLOCK_REALTIME, the clock read
 * here, on the same host. {bench_lat_start, From, Gen} and {bench_lat_end,
 * From, Gen} open and close a run, as for the sink. */
static void lat_recv(aemp_node *node, aemp_port self, const aemp_term *msg, const aemp_addr *from,
                     void *arg)
{
    int64_t now = realtime_ns();
    struct bench *b = arg;
    aemp_cursor c = aemp_cursor_of(msg);
    const void *ptr;
    size_t len;
    (void)from;

    if (aemp_get_binary(&c, &ptr, &len) == 0) {
        if (!b->lat_active || len < 8) return;
        const unsigned char *p = ptr;
        uint64_t stamp = 0;
        for (int i = 0; i < 8; i++)
            stamp = stamp << 8 | p[i];
        if (b->lat_len == b->lat_cap) {
            size_t cap = b->lat_cap ? 2 * b->lat_cap : 4096;
            int64_t *grown = realloc(b->lat, cap * sizeof *grown);
            if (grown == NULL) return;
            b->lat = grown;
            b->lat_cap = cap;
        }
        b->lat[b->lat_len++] = now - (int64_t)stamp;
        return;
    }

    uint32_t arity;
    char tag[TAG_MAX];
    aemp_addr peer;
    uint64_t gen;
    if (get_tag(&c, &arity, tag, sizeof tag) != 0 || arity != 3 || aemp_get_pid(&c, &peer) != 0 ||
        aemp_get_uint64(&c, &gen) != 0)
        return;
    if (strcmp(tag, "bench_lat_start") == 0) {
        b->lat_from = peer;
        b->lat_gen = gen;
        b->lat_len = 0;
        b->lat_active = 1;
        aemp_sendf(node, self, &peer, "{bench_lat_ready, ~u}", gen);
    } else if (strcmp(tag, "bench_lat_end") == 0 && b->lat_active && gen == b->lat_gen) {
        size_t n = b->lat_len;
        b->lat_active = 0;
        if (n == 0) {
            aemp_sendf(node, self, &peer, "{bench_lat_done, ~u, 0, 0, 0, 0}", gen);
            return;
        }
        qsort(b->lat, n, sizeof *b->lat, cmp_i64);
        aemp_sendf(node, self, &peer, "{bench_lat_done, ~u, ~u, ~i, ~i, ~i}", gen, (uint64_t)n,
                   percentile_i64(b->lat, n, 50), percentile_i64(b->lat, n, 99), b->lat[n - 1]);
    }
}

/* ---------------------------------------------------------------- */
/* Agent: local dispatch                                             */
/* ---------------------------------------------------------------- */

static void local_done(struct bench *b)
{
    uint64_t ns = uv_hrtime() - b->t0, n_allocs = allocs - b->allocs0;
    aemp_sendf(b->node, b->agent, &b->ctl, "{bench_local_done, ~u, ~u, ~u}", ns, b->delivered,
               n_allocs);
    job_end(b);
}

/* A data message to one of the two local ports; in ping-pong each port
 * sends what it got to the other, from its callback, until n deliveries. */
static void local_recv(struct bench *b, aemp_port self, const aemp_term *msg, const aemp_addr *to)
{
    aemp_cursor c = aemp_cursor_of(msg);
    const void *ptr;
    size_t len;
    if (b->job != JOB_LOCAL || aemp_get_binary(&c, &ptr, &len) != 0) return;
    b->delivered++;
    if (!b->pingpong) return;
    if (b->delivered == b->n) {
        local_done(b);
        return;
    }
    int rc = aemp_send(b->node, self, to, msg);
    if (rc != 0) job_fail(b, "aemp_send local", rc);
}

static void la_recv(aemp_node *node, aemp_port self, const aemp_term *msg, const aemp_addr *from,
                    void *arg)
{
    struct bench *b = arg;
    (void)node;
    (void)from;
    local_recv(b, self, msg, &b->lb_addr);
}

static void lb_recv(aemp_node *node, aemp_port self, const aemp_term *msg, const aemp_addr *from,
                    void *arg)
{
    struct bench *b = arg;
    (void)node;
    (void)from;
    local_recv(b, self, msg, &b->la_addr);
}

/* `{bench_local, Ctl, Mode, Size, N}`: N messages from port la to port lb
 * of this node, sent in a loop from this callback (Mode loop), or bounced
 * between them from their callbacks (Mode pingpong). Replies
 * `{bench_local_done, Ns, Delivered, Allocations}`. */
static void local_command(struct bench *b, uint32_t arity, aemp_cursor *c)
{
    aemp_addr ctl;
    char mode[16];
    uint64_t size, n;
    if (aemp_get_pid(c, &ctl) != 0) return;
    if (b->job != JOB_NONE) job_end(b);
    b->ctl = ctl;
    if (arity != 5 || aemp_get_atom(c, mode, sizeof mode) != 0 ||
        (strcmp(mode, "loop") != 0 && strcmp(mode, "pingpong") != 0) ||
        aemp_get_uint64(c, &size) != 0 || aemp_get_uint64(c, &n) != 0 || n == 0) {
        report_error(b, "bad command", AEMP_EBADTERM);
        return;
    }
    char *raw = malloc(size ? size : 1);
    if (raw == NULL) {
        report_error(b, "allocate payload", AEMP_ENOMEM);
        return;
    }
    memset(raw, 'x', size);
    int rc = aemp_term_format(&b->data, "~b", raw, (size_t)size);
    free(raw);
    if (rc != 0) {
        job_fail(b, "encode payload", rc);
        return;
    }
    aemp_term data = aemp_buf_term(&b->data);
    b->job = JOB_LOCAL;
    b->n = n;
    b->delivered = 0;
    b->pingpong = strcmp(mode, "pingpong") == 0;
    b->allocs0 = allocs;
    b->t0 = uv_hrtime();
    if (b->pingpong) {
        rc = aemp_send(b->node, b->la, &b->lb_addr, &data);
        if (rc != 0) job_fail(b, "aemp_send local", rc);
        return;
    }
    for (uint64_t i = 0; i < n; i++) {
        rc = aemp_send(b->node, b->la, &b->lb_addr, &data);
        if (rc != 0) {
            job_fail(b, "aemp_send local", rc);
            return;
        }
    }
    local_done(b);
}

/* ---------------------------------------------------------------- */
/* Agent: commands                                                   */
/* ---------------------------------------------------------------- */

/* `{Name, Node}` into an address; the node's name is kept too. */
static int get_target(aemp_cursor *c, aemp_addr *out, char *node, size_t size)
{
    uint32_t arity;
    char name[AEMP_MAXATOMLEN + 1];
    if (aemp_get_tuple(c, &arity) != 0 || arity != 2 || aemp_get_atom(c, name, sizeof name) != 0 ||
        aemp_get_atom(c, node, size) != 0)
        return AEMP_ENOMATCH;
    return aemp_addr_name(out, node, name);
}

/* `{bench_blast, Ctl, Target, Size, N, W}` or `{bench_rtt, Ctl, Target, Size, K}`. */
static void job_command(struct bench *b, int blast, uint32_t arity, aemp_cursor *c)
{
    uint64_t size, n, window = 1;
    aemp_addr ctl;
    if (aemp_get_pid(c, &ctl) != 0) return;
    if (b->job != JOB_NONE) /* the controller gave up on the previous job */
        job_end(b);
    b->ctl = ctl;
    if (arity != (blast ? 6u : 5u) ||
        get_target(c, &b->target, b->target_node, sizeof b->target_node) != 0 ||
        aemp_get_uint64(c, &size) != 0 || aemp_get_uint64(c, &n) != 0 || n == 0 ||
        (blast && (aemp_get_uint64(c, &window) != 0 || window == 0))) {
        report_error(b, "bad command", AEMP_EBADTERM);
        return;
    }
    b->size = (size_t)size;
    b->raw = malloc(b->size ? b->size : 1);
    if (b->raw == NULL) {
        report_error(b, "allocate payload", AEMP_ENOMEM);
        return;
    }
    memset(b->raw, 'x', b->size);
    b->gen++;
    if (blast)
        blast_start(b, n, window);
    else
        rtt_start(b, n);
}

static void closed_cb(void *arg)
{
    struct bench *b = arg;
    b->node = NULL;
}

static void agent_recv(aemp_node *node, aemp_port self, const aemp_term *msg, const aemp_addr *from,
                       void *arg)
{
    struct bench *b = arg;
    aemp_cursor c = aemp_cursor_of(msg);
    uint32_t arity;
    char tag[TAG_MAX];
    aemp_addr ctl;
    (void)from;

    if (get_tag(&c, &arity, tag, sizeof tag) != 0) {
        aemp_cursor a = aemp_cursor_of(msg);
        if (aemp_get_atom(&a, tag, sizeof tag) == 0 && strcmp(tag, "bench_stop") == 0) {
            job_end(b);
            aemp_node_close(node, closed_cb, b);
        }
        return;
    }
    if (strcmp(tag, "bench_pong") == 0)
        rtt_pong(b, arity, &c);
    else if (strcmp(tag, "bench_ready") == 0 || strcmp(tag, "bench_ack") == 0 ||
             strcmp(tag, "bench_done") == 0)
        blast_reply(b, tag, arity, &c);
    else if (strcmp(tag, "bench_blast") == 0)
        job_command(b, 1, arity, &c);
    else if (strcmp(tag, "bench_rtt") == 0)
        job_command(b, 0, arity, &c);
    else if (strcmp(tag, "bench_local") == 0)
        local_command(b, arity, &c);
    else if (strcmp(tag, "bench_hello") == 0 && arity == 2 && aemp_get_pid(&c, &ctl) == 0)
        aemp_sendf(node, self, &ctl, "{bench_hello_ok, ~a, ~u}", aemp_node_name(node),
                   (uint64_t)getpid());
}

/* ---------------------------------------------------------------- */
/* Node                                                              */
/* ---------------------------------------------------------------- */

static void ready_cb(aemp_node *node, int status, void *arg)
{
    struct bench *b = arg;
    if (status == 0) return;
    fprintf(stderr, "aemp_bench %s: EPMD registration failed: %s\n", aemp_node_name(node),
            aemp_strerror(status));
    b->exit_code = 1;
    aemp_node_close(node, closed_cb, b);
}

static void nodes_cb(aemp_node *node, const char *peer, int up, const char *reason, void *arg)
{
    struct bench *b = arg;
    /* Only a lost target matters: the controller leaving at the end is not
     * news. */
    if (up || b->job == JOB_NONE || strcmp(peer, b->target_node) != 0) return;
    fprintf(stderr, "aemp_bench %s: node %s down: %s\n", aemp_node_name(node), peer,
            reason ? reason : "?");
    job_fail(b, "connection to the target lost", AEMP_ECLOSED);
}

static void fail_cb(aemp_node *node, const char *peer, int err, const char *reason, size_t dropped,
                    void *arg)
{
    struct bench *b = arg;
    fprintf(stderr, "aemp_bench %s: connection to %s failed: %s (%zu messages dropped)\n",
            aemp_node_name(node), peer, reason ? reason : "?", dropped);
    if (b->job != JOB_NONE && strcmp(peer, b->target_node) == 0)
        job_fail(b, "connection to the target failed", err);
}

static int open_port(struct bench *b, const char *name, aemp_recv_cb cb, aemp_port *out)
{
    int rc = aemp_port_open(b->node, cb, b, out);
    if (rc == 0) rc = aemp_register(b->node, name, *out);
    if (rc != 0) fprintf(stderr, "aemp_bench: port %s: %s\n", name, aemp_strerror(rc));
    return rc;
}

static void usage(void)
{
    fputs("usage: aemp_bench --name alive@host [--cookie COOKIE] [--read-batch-ms MS]\n"
          "  --read-batch-ms: aemp_node_config.read_batch_ms (0: default, -1: off)\n",
          stderr);
}

int main(int argc, char **argv)
{
    const char *name = NULL, *cookie = NULL;
    int read_batch_ms = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--name") == 0 && i + 1 < argc) {
            name = argv[++i];
        } else if (strcmp(argv[i], "--cookie") == 0 && i + 1 < argc) {
            cookie = argv[++i];
        } else if (strcmp(argv[i], "--read-batch-ms") == 0 && i + 1 < argc) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < -1 || v > 1000) {
                fprintf(stderr, "aemp_bench: bad --read-batch-ms '%s' (-1..1000)\n", argv[i]);
                return 2;
            }
            read_batch_ms = (int)v;
        } else {
            usage();
            return 2;
        }
    }
    if (name == NULL) {
        usage();
        return 2;
    }

    static struct bench b;
    uv_loop_t *loop = uv_default_loop();
    aemp_node_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.name = name;
    cfg.cookie = cookie;
    cfg.read_batch_ms = read_batch_ms;
    cfg.ready_cb = ready_cb;
    cfg.ready_arg = &b;
    cfg.nodes_cb = nodes_cb;
    cfg.nodes_arg = &b;
    cfg.fail_cb = fail_cb;
    cfg.fail_arg = &b;

    int rc = aemp_node_create(loop, &cfg, &b.node);
    if (rc != 0) {
        fprintf(stderr, "aemp_bench: aemp_node_create %s: %s\n", name, aemp_strerror(rc));
        return 1;
    }
    if (open_port(&b, "bench_sink", sink_recv, &b.sink) != 0 ||
        open_port(&b, "bench_echo", echo_recv, &b.echo) != 0 ||
        open_port(&b, "bench_lat", lat_recv, &b.lat_port) != 0 ||
        open_port(&b, "bench_agent", agent_recv, &b.agent) != 0 ||
        aemp_port_addr(b.node, b.agent, &b.agent_addr) != 0 ||
        aemp_port_open(b.node, la_recv, &b, &b.la) != 0 ||
        aemp_port_open(b.node, lb_recv, &b, &b.lb) != 0 ||
        aemp_port_addr(b.node, b.la, &b.la_addr) != 0 ||
        aemp_port_addr(b.node, b.lb, &b.lb_addr) != 0) {
        b.exit_code = 1;
        aemp_node_close(b.node, closed_cb, &b);
    }
    uv_run(loop, UV_RUN_DEFAULT);
    job_end(&b);
    free(b.lat);
    uv_loop_close(loop);
    return b.exit_code;
}
