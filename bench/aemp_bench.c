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
 * two ports of this node (local dispatch), or measures the memory and the
 * rates of ports, monitors and links. It uses only the public API in
 * aemp.h, as an application would, and never reads an aemp_addr's or an
 * aemp_port's fields. The process exits when the controller sends
 * bench_stop.
 */
#include "aemp.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TAG_MAX 64

/* ---------------------------------------------------------------- */
/* Allocation count                                                  */
/* ---------------------------------------------------------------- */

/* The link wraps malloc, calloc, realloc and free (bench/CMakeLists.txt):
 * every call from this program, libaemp and libei (linked statically)
 * lands here and is counted for the thread that makes it, the loop's thread
 * for everything measured. Shared libraries (libuv, OpenSSL, libc's own
 * internals) are not counted. `live` is the malloc_usable_size of the
 * blocks allocated and not yet freed: what was asked for, rounded up to
 * malloc's granule (a free of a block allocated where nothing is counted
 * would skew it, so only its changes across a measurement are used). */
void *__real_malloc(size_t size);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t size);
void __real_free(void *p);

static _Thread_local uint64_t allocs;
static _Thread_local int64_t live;
/* live is kept while this is set: not in the create+kill rounds, whose
 * blocks are all freed within the round, so that their time is not the
 * accounting's */
static _Thread_local int keep_live = 1;

void *__wrap_malloc(size_t size)
{
    allocs++;
    void *p = __real_malloc(size);
    if (p && keep_live) live += (int64_t)malloc_usable_size(p);
    return p;
}

void *__wrap_calloc(size_t n, size_t size)
{
    allocs++;
    void *p = __real_calloc(n, size);
    if (p && keep_live) live += (int64_t)malloc_usable_size(p);
    return p;
}

void *__wrap_realloc(void *p, size_t size)
{
    allocs++;
    if (!keep_live) return __real_realloc(p, size);
    size_t old = p ? malloc_usable_size(p) : 0;
    void *q = __real_realloc(p, size);
    if (q)
        live += (int64_t)malloc_usable_size(q) - (int64_t)old;
    else if (size == 0)
        live -= (int64_t)old;
    return q;
}

void __wrap_free(void *p)
{
    if (p && keep_live) live -= (int64_t)malloc_usable_size(p);
    __real_free(p);
}

enum job_kind { JOB_NONE, JOB_BLAST, JOB_RTT, JOB_LOCAL, JOB_PORTS };
enum blast_phase { BLAST_WAIT_READY, BLAST_SENDING, BLAST_WAIT_DONE };

/* The ports job's memory snapshots and timings, in the order taken. */
enum snap {
    S_FRESH,   /* before the first create+kill churn, in a table never grown */
    S_BASE,    /* after it: before opening the N ports */
    S_OPEN,    /* the N ports open */
    S_RMON0,   /* before the remote monitors (and any other monitor or link) */
    S_RMON,    /* after them, the peer has them all */
    S_MON0,    /* the remote watcher gone: before the N local monitors */
    S_MON,     /* after them */
    S_LINK0,   /* the watcher gone: before the N links */
    S_LINK,    /* after them */
    S_CLOSE0,  /* the linker gone: before closing the N ports */
    S_CLOSED,  /* every port closed: before the create+kill churn */
    S_CHURN,   /* after it */
    S_TRIMMED, /* after malloc_trim(0) */
    S_COUNT
};
/* A create+kill round is a fraction of a second: one alone is at the mercy
 * of anything else running. The median of CHURN_ROUNDS counts. */
enum { CHURN_ROUNDS = 3 };
enum timing { T_FRESH, T_OPEN, T_MON, T_LINK, T_RMON, T_CLOSE, T_CHURN, T_COUNT };

/* Memory in use: heap is what malloc has handed out (mallinfo2: chunks in
 * use, their headers included, and mmapped blocks), usable the live
 * counter above, rss the process's resident set. */
struct mem {
    uint64_t heap, usable, rss;
};

struct bench {
    uv_loop_t *loop;
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

    /* Ports: N ports, N monitors and N links of this node, NR monitors of
     * a remote process; one phase per turn of the loop (ports_step). */
    uv_idle_t ports_idle;
    int ports_idle_init;
    int pphase;
    aemp_port *pv;             /* the N ports */
    int pclosed;               /* they are closed */
    aemp_port pw, pt, pl, prw; /* watcher, target, linker, remote watcher */
    aemp_addr premote;         /* the remote process monitored */
    aemp_addr *prefs;          /* the remote monitors */
    uint64_t nr, rdone;        /* remote monitors: wanted, made */
    aemp_port pwait;           /* the next phase waits until it is gone */
    int ptimer;                /* the timing that ends when it is gone */
    uint64_t pwait_seq;        /* the next phase waits for this pong */
    uint64_t pt0, pallocs0;
    int pround;                  /* create+kill: rounds run */
    uint64_t rns[3], rallocs[3]; /* create+kill: each round's */
    struct mem snap[S_COUNT];
    uint64_t ns[T_COUNT], nallocs[T_COUNT];

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

static void ports_end(struct bench *b);

static void job_end(struct bench *b)
{
    if (b->job == JOB_PORTS) ports_end(b);
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

/* ---------------------------------------------------------------- */
/* Agent: ports, monitors and links                                  */
/* ---------------------------------------------------------------- */

static uint64_t rss_bytes(void)
{
    unsigned long size, resident;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL) return 0;
    int got = fscanf(f, "%lu %lu", &size, &resident);
    fclose(f);
    return got == 2 ? (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE) : 0;
}

static void snap(struct bench *b, enum snap at)
{
    struct mallinfo2 mi = mallinfo2();
    b->snap[at].heap = mi.uordblks + mi.hblkhd;
    b->snap[at].usable = (uint64_t)live;
    b->snap[at].rss = rss_bytes();
}

static void idle_recv(aemp_node *node, aemp_port self, const aemp_term *msg, const aemp_addr *from,
                      void *arg)
{
    (void)node;
    (void)self;
    (void)msg;
    (void)from;
    (void)arg;
}

/* Close what the job still has open (a job given up half-way). */
static void ports_end(struct bench *b)
{
    if (b->ports_idle_init) uv_idle_stop(&b->ports_idle);
    if (b->pv != NULL && !b->pclosed)
        for (uint64_t i = 0; i < b->n; i++)
            aemp_port_close(b->node, b->pv[i]);
    aemp_port helpers[] = {b->pw, b->pt, b->pl, b->prw};
    for (size_t i = 0; i < sizeof helpers / sizeof *helpers; i++)
        if (helpers[i].id) aemp_port_close(b->node, helpers[i]);
    b->pw.id = b->pt.id = b->pl.id = b->prw.id = 0;
    free(b->pv);
    b->pv = NULL;
    free(b->prefs);
    b->prefs = NULL;
}

static void timing_start(struct bench *b)
{
    b->pallocs0 = allocs;
    b->pt0 = uv_hrtime();
}

static void timing_end(struct bench *b, int t)
{
    b->ns[t] = uv_hrtime() - b->pt0;
    b->nallocs[t] = allocs - b->pallocs0;
}

/* The next phase runs once port is gone (now, or on a later turn if the
 * library kills it from the loop); timing t, if not T_COUNT, ends then. */
static void ports_wait_gone(struct bench *b, aemp_port port, int t)
{
    b->pwait = port;
    b->ptimer = t;
}

/* Close one of the job's helper ports; the next phase runs once it is
 * gone. */
static int ports_close(struct bench *b, aemp_port *port)
{
    int rc = aemp_port_close(b->node, *port);
    ports_wait_gone(b, *port, T_COUNT);
    port->id = 0;
    return rc;
}

/* The next phase runs once every signal sent to the remote process so far
 * has reached it: a ping sent now comes back. */
static int ports_sync(struct bench *b)
{
    b->pwait_seq = ++b->seq;
    return aemp_sendf(b->node, b->agent, &b->premote, "{bench_ping, ~p, ~u, ~b}", &b->agent_addr,
                      b->seq, "", (size_t)0);
}

static void ports_pong(struct bench *b, uint32_t arity, aemp_cursor *c)
{
    uint64_t seq;
    if (arity == 3 && aemp_get_uint64(c, &seq) == 0 && seq == b->pwait_seq) b->pwait_seq = 0;
}

static void ports_done(struct bench *b)
{
    const struct mem *m = b->snap;
#define M3(s) m[s].heap, m[s].usable, m[s].rss
    int rc = aemp_sendf(
        b->node, b->agent, &b->ctl,
        "{bench_ports_done, #{n => ~u, nr => ~u, fresh => ~u, open => ~u, mon => ~u, link => ~u, "
        "rmon => ~u, close => ~u, churn => ~u, fresh_allocs => ~u, open_allocs => ~u, "
        "close_allocs => ~u, churn_allocs => ~u}, "
        "[{~u, ~u, ~u}, {~u, ~u, ~u}, {~u, ~u, ~u}, {~u, ~u, ~u}, {~u, ~u, ~u}, "
        "{~u, ~u, ~u}, {~u, ~u, ~u}, {~u, ~u, ~u}, {~u, ~u, ~u}, {~u, ~u, ~u}, {~u, ~u, ~u}, "
        "{~u, ~u, ~u}, {~u, ~u, ~u}]}",
        b->n, b->nr, b->ns[T_FRESH], b->ns[T_OPEN], b->ns[T_MON], b->ns[T_LINK], b->ns[T_RMON],
        b->ns[T_CLOSE], b->ns[T_CHURN], b->nallocs[T_FRESH], b->nallocs[T_OPEN],
        b->nallocs[T_CLOSE], b->nallocs[T_CHURN], M3(S_FRESH), M3(S_BASE), M3(S_OPEN), M3(S_RMON0),
        M3(S_RMON), M3(S_MON0), M3(S_MON), M3(S_LINK0), M3(S_LINK), M3(S_CLOSE0), M3(S_CLOSED),
        M3(S_CHURN), M3(S_TRIMMED));
#undef M3
    if (rc != 0)
        job_fail(b, "send the results", rc);
    else
        job_end(b);
}

/* Remote monitors are made (and cancelled) REMOTE_BATCH at a time, the
 * next batch once the peer has handled the last (a ping answered): the
 * connection's write buffers then hold one batch (about 100 KB) whatever
 * the peer's speed; REMOTE_WARM monitors before the measured ones grow
 * them first. */
enum { REMOTE_BATCH = 1000, REMOTE_WARM = 2 * REMOTE_BATCH };

/* Make remote monitors up to `upto` in all (or cancel them down to it),
 * REMOTE_BATCH at most, then sync. */
static int ports_remote_batch(struct bench *b, uint64_t upto)
{
    int rc = 0;
    for (uint64_t i = 0; i < REMOTE_BATCH && b->rdone < upto && rc == 0; i++, b->rdone++)
        rc = aemp_monitor(b->node, b->prw, &b->premote, &b->prefs[b->rdone]);
    for (uint64_t i = 0; i < REMOTE_BATCH && b->rdone > upto && rc == 0; i++)
        rc = aemp_demonitor(b->node, &b->prefs[--b->rdone]);
    return rc ? rc : ports_sync(b);
}

/* N times aemp_port_open and aemp_port_close of one port; timing t ends
 * when the last is gone. */
static int ports_churn(struct bench *b, int t)
{
    aemp_port p = {0};
    int rc = 0;
    keep_live = 0;
    timing_start(b);
    for (uint64_t i = 0; i < b->n && rc == 0; i++) {
        rc = aemp_port_open(b->node, idle_recv, b, &p);
        if (rc == 0) rc = aemp_port_close(b->node, p);
    }
    keep_live = 1;
    if (rc == 0) ports_wait_gone(b, p, t);
    return rc;
}

/* One round of ports_churn a turn, CHURN_ROUNDS in all; timing t is then
 * the median round, its allocations the median's too. */
static int ports_churn_round(struct bench *b, int t)
{
    if (b->pround > 0) {
        b->rns[b->pround - 1] = b->ns[t];
        b->rallocs[b->pround - 1] = b->nallocs[t];
    }
    if (b->pround < CHURN_ROUNDS) {
        b->pround++;
        b->pphase--; /* this phase again */
        return ports_churn(b, t);
    }
    uint64_t sorted[CHURN_ROUNDS];
    memcpy(sorted, b->rns, sizeof sorted);
    qsort(sorted, CHURN_ROUNDS, sizeof *sorted, cmp_u64);
    b->ns[t] = sorted[CHURN_ROUNDS / 2];
    for (int i = 0; i < CHURN_ROUNDS; i++)
        if (b->rns[i] == b->ns[t]) b->nallocs[t] = b->rallocs[i];
    b->pround = 0;
    return 0;
}

/* One phase per turn of the loop, so that whatever the library does from
 * the loop (deferred kills, writes) is done before the next one measures. */
static void ports_step(uv_idle_t *h)
{
    struct bench *b = h->data;
    aemp_addr a, ref;
    int rc = 0;
    if (b->job != JOB_PORTS) {
        uv_idle_stop(h);
        return;
    }
    if (b->pwait.id) {
        if (aemp_port_addr(b->node, b->pwait, &a) != AEMP_ENOENT) return;
        b->pwait.id = 0;
        if (b->ptimer != T_COUNT) timing_end(b, b->ptimer);
    }
    if (b->pwait_seq) return;

    switch (b->pphase++) {
    case 0: /* create+kill, one port at a time, N times, in a fresh table */
        if (b->pround == 0) snap(b, S_FRESH);
        rc = ports_churn_round(b, T_FRESH);
        break;
    case 1: /* N ports */
        snap(b, S_BASE);
        timing_start(b);
        for (uint64_t i = 0; i < b->n && rc == 0; i++)
            rc = aemp_port_open(b->node, idle_recv, b, &b->pv[i]);
        timing_end(b, T_OPEN);
        if (rc != 0) break;
        snap(b, S_OPEN);
        return;
    case 2: /* warm-up: the connection to the remote node up and its
             * buffers grown to a batch's size, by REMOTE_WARM monitors that
             * are not counted */
        if (b->nr == 0) break;
        rc = ports_remote_batch(b, REMOTE_WARM);
        if (rc == 0 && b->rdone < REMOTE_WARM) b->pphase--;
        break;
    case 3: /* NR monitors of the remote process */
        if (b->rdone == 0 || b->rdone == REMOTE_WARM) {
            snap(b, S_RMON0);
            timing_start(b);
        }
        if (b->nr == 0) break;
        rc = ports_remote_batch(b, REMOTE_WARM + b->nr);
        if (rc == 0 && b->rdone < REMOTE_WARM + b->nr) b->pphase--;
        break;
    case 4: /* the remote monitors cancelled */
        if (b->rdone == (b->nr > 0 ? REMOTE_WARM + b->nr : 0)) {
            timing_end(b, T_RMON);
            snap(b, S_RMON);
        }
        if (b->rdone > 0) {
            rc = ports_remote_batch(b, 0);
            b->pphase--; /* then the watcher is closed */
            break;
        }
        rc = ports_close(b, &b->prw);
        break;
    case 5: /* N monitors: the watcher pw monitors pt N times */
        snap(b, S_MON0);
        rc = aemp_port_addr(b->node, b->pt, &a);
        timing_start(b);
        for (uint64_t i = 0; i < b->n && rc == 0; i++)
            rc = aemp_monitor(b->node, b->pw, &a, &ref);
        timing_end(b, T_MON);
        if (rc != 0) break;
        snap(b, S_MON);
        /* the watcher's death takes its monitors (no 'DOWN': pt lives) */
        rc = ports_close(b, &b->pw);
        break;
    case 6: /* N links: pl linked to each of the N ports */
        snap(b, S_LINK0);
        timing_start(b);
        for (uint64_t i = 0; i < b->n && rc == 0; i++) {
            rc = aemp_port_addr(b->node, b->pv[i], &a);
            if (rc == 0) rc = aemp_link(b->node, b->pl, &a);
        }
        timing_end(b, T_LINK);
        if (rc != 0) break;
        snap(b, S_LINK);
        /* a normal exit: the links go, the N ports live on */
        rc = ports_close(b, &b->pl);
        break;
    case 7: /* close the N ports */
        snap(b, S_CLOSE0);
        timing_start(b);
        for (uint64_t i = 0; i < b->n && rc == 0; i++)
            rc = aemp_port_close(b->node, b->pv[i]);
        if (rc != 0) break;
        ports_wait_gone(b, b->pv[b->n - 1], T_CLOSE);
        break;
    case 8: /* create+kill again, the table grown by the N */
        if (b->pround == 0) snap(b, S_CLOSED);
        b->pclosed = 1;
        rc = ports_churn_round(b, T_CHURN);
        break;
    default:
        snap(b, S_CHURN);
        malloc_trim(0);
        snap(b, S_TRIMMED);
        ports_done(b);
        return;
    }
    if (rc != 0) job_fail(b, "ports", rc);
}

/* `{bench_ports, Ctl, N, NR, Remote}`: N ports are opened and closed one
 * at a time; N ports are opened; one port monitors Remote (`{Name, Node}`,
 * or `none` when NR is 0) NR times; one port monitors another N times; one
 * port links to each of the N; the N ports are closed; N ports are opened
 * and closed one at a time again, in the tables the N have grown. Memory is
 * taken between the phases. The monitors and links share one table that
 * never shrinks: in this order (NR <= N) each phase's growth over S_RMON0
 * counts the table sized for it. Replies `{bench_ports_done, #{Timings},
 * [{Heap, Usable, Rss}]}` (enum snap and enum timing above). */
static void ports_command(struct bench *b, uint32_t arity, aemp_cursor *c)
{
    aemp_addr ctl;
    uint64_t n, nr;
    char none[8];
    if (aemp_get_pid(c, &ctl) != 0) return;
    if (b->job != JOB_NONE) job_end(b);
    b->ctl = ctl;
    if (arity != 5 || aemp_get_uint64(c, &n) != 0 || n == 0 || aemp_get_uint64(c, &nr) != 0 ||
        (nr > 0 ? get_target(c, &b->premote, b->target_node, sizeof b->target_node) != 0
                : aemp_get_atom(c, none, sizeof none) != 0)) {
        report_error(b, "bad command", AEMP_EBADTERM);
        return;
    }
    if (!b->ports_idle_init) {
        uv_idle_init(b->loop, &b->ports_idle);
        b->ports_idle.data = b;
        b->ports_idle_init = 1;
    }
    /* Everything the job needs besides the ports is made before the first
     * snapshot. */
    b->pv = calloc(n, sizeof *b->pv);
    b->prefs = calloc(nr > 0 ? REMOTE_WARM + nr : 1, sizeof *b->prefs);
    if (b->pv == NULL || b->prefs == NULL) {
        free(b->pv);
        free(b->prefs);
        b->pv = NULL;
        b->prefs = NULL;
        report_error(b, "allocate the job's arrays", AEMP_ENOMEM);
        return;
    }
    b->job = JOB_PORTS;
    b->n = n;
    b->nr = nr;
    b->rdone = 0;
    b->pphase = 0;
    b->pclosed = 0;
    b->pround = 0;
    b->pwait.id = 0;
    b->pwait_seq = 0;
    memset(b->snap, 0, sizeof b->snap);
    memset(b->ns, 0, sizeof b->ns);
    memset(b->nallocs, 0, sizeof b->nallocs);
    int rc = aemp_port_open(b->node, idle_recv, b, &b->pw);
    if (rc == 0) rc = aemp_port_open(b->node, idle_recv, b, &b->pt);
    if (rc == 0) rc = aemp_port_open(b->node, idle_recv, b, &b->pl);
    if (rc == 0) rc = aemp_port_open(b->node, idle_recv, b, &b->prw);
    if (rc != 0) {
        job_fail(b, "open the ports", rc);
        return;
    }
    uv_idle_start(&b->ports_idle, ports_step);
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
            if (b->ports_idle_init) {
                uv_close((uv_handle_t *)&b->ports_idle, NULL);
                b->ports_idle_init = 0;
            }
            aemp_node_close(node, closed_cb, b);
        }
        return;
    }
    if (strcmp(tag, "bench_pong") == 0 && b->job == JOB_PORTS)
        ports_pong(b, arity, &c);
    else if (strcmp(tag, "bench_pong") == 0)
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
    else if (strcmp(tag, "bench_ports") == 0)
        ports_command(b, arity, &c);
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
    b.loop = loop;
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
