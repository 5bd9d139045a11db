/*
 * ei_bench - the reference C node of the aemp benchmark: a plain
 * erl_interface node, written the way OTP's erl_interface user's guide and
 * ei_connect manual teach, so that bench/run.sh can show aemp beside what a
 * C programmer gets from ei alone.
 *
 * Usage: ei_bench --name alive@host --cookie COOKIE
 *
 * It registers nothing with Erlang (ei has no process registry) but answers
 * messages sent to the benchmark's three names exactly as aemp_bench and
 * the Erlang agents do (bench/erl/aemp_bench.erl describes them):
 * bench_sink counts data messages, bench_echo answers pings, bench_agent
 * runs one measurement at a time when the controller asks.
 *
 * Everything is blocking, as the guide shows: ei_listen and ei_publish,
 * ei_accept for each node that connects, ei_connect to a target, one
 * ei_xreceive_msg per message, one ei_reg_send or ei_send (one write) per
 * message. The only addition is a poll() over the open connections, so that
 * the controller, an Erlang sender and another C node can all reach the
 * node; a measurement it runs blocks it until it ends, as a blocking program
 * does. The process exits when the controller sends bench_stop.
 */
#include <ei.h>

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 32
#define REPLY_TIMEOUT_MS 60000

/* An open connection: one accepted from a node, or one this node made to a
 * measurement's target (kept for the next measurement). */
struct conn {
    int fd;
    char node[MAXNODELEN + 1];
};

static ei_cnode ec;
static struct conn conns[MAX_CONNS];
static int nconns;
static ei_x_buff in;  /* the message being handled */
static ei_x_buff out; /* the message being sent */
static unsigned long long gen;

/* The sink serves one sender at a time, as the other benchmark nodes do. */
static struct {
    erlang_pid from;
    unsigned long long window, gen, count, bytes;
    int active;
} sink;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int add_conn(int fd, const char *node)
{
    if (nconns == MAX_CONNS) {
        fprintf(stderr, "ei_bench: too many connections, closing the one from %s\n", node);
        ei_close_connection(fd);
        return -1;
    }
    conns[nconns].fd = fd;
    snprintf(conns[nconns].node, sizeof conns[nconns].node, "%s", node);
    nconns++;
    return 0;
}

static void drop_conn(int fd)
{
    for (int i = 0; i < nconns; i++) {
        if (conns[i].fd != fd) continue;
        ei_close_connection(fd);
        conns[i] = conns[--nconns];
        return;
    }
}

/* The connection to node, made with ei_connect if there is none yet. */
static int conn_to(const char *node)
{
    char name[MAXNODELEN + 1];
    for (int i = 0; i < nconns; i++)
        if (strcmp(conns[i].node, node) == 0) return conns[i].fd;
    size_t len = strlen(node);
    if (len >= sizeof name) return -1;
    memcpy(name, node, len + 1);
    int fd = ei_connect(&ec, name);
    if (fd < 0) return -1;
    return add_conn(fd, node) == 0 ? fd : -1;
}

/* Start an outgoing message: the version byte, then the caller encodes. */
static ei_x_buff *out_begin(void)
{
    out.index = 0;
    ei_x_encode_version(&out);
    return &out;
}

static void reply_error(int fd, erlang_pid *to, const char *text)
{
    fprintf(stderr, "ei_bench %s: %s\n", ei_thisnodename(&ec), text);
    ei_x_buff *x = out_begin();
    ei_x_encode_tuple_header(x, 2);
    ei_x_encode_atom(x, "bench_error");
    ei_x_encode_binary(x, text, (int)strlen(text));
    ei_send(fd, to, x->buff, x->index);
}

/* Reads `{Tag, ...` at *idx (after the version byte) and leaves *idx at the
 * second element. */
static int get_tag(const char *buf, int *idx, int *arity, char *tag)
{
    if (ei_decode_tuple_header(buf, idx, arity) < 0 || *arity < 1) return -1;
    return ei_decode_atom(buf, idx, tag);
}

/* The next message on fd addressed to this node's pid, a tuple with an atom
 * tag; *idx is left at its second element. Ticks are answered by ei. */
static int next_reply(int fd, char *tag, int *arity, int *idx)
{
    for (;;) {
        erlang_msg msg;
        int got = ei_xreceive_msg_tmo(fd, &msg, &in, REPLY_TIMEOUT_MS);
        if (got == ERL_TICK) continue;
        if (got == ERL_ERROR) return -1;
        int version;
        *idx = 0;
        if (msg.msgtype == ERL_SEND && ei_decode_version(in.buff, idx, &version) == 0 &&
            get_tag(in.buff, idx, arity, tag) == 0)
            return 0;
    }
}

/* ---------------------------------------------------------------- */
/* Sink and echo                                                     */
/* ---------------------------------------------------------------- */

static void sink_ack(int fd)
{
    ei_x_buff *x = out_begin();
    ei_x_encode_tuple_header(x, 3);
    ei_x_encode_atom(x, "bench_ack");
    ei_x_encode_ulonglong(x, sink.gen);
    ei_x_encode_ulonglong(x, sink.count);
    ei_send(fd, &sink.from, x->buff, x->index);
}

static void on_sink(int fd, int idx)
{
    char tag[MAXATOMLEN_UTF8];
    int type, size, arity;
    erlang_pid peer;
    unsigned long long window, g;

    /* A data message is a bare binary: counted, not copied. */
    if (ei_get_type(in.buff, &idx, &type, &size) == 0 && type == ERL_BINARY_EXT) {
        if (!sink.active) return;
        sink.count++;
        sink.bytes += (unsigned long long)size;
        if (sink.count % sink.window == 0) sink_ack(fd);
        return;
    }
    if (get_tag(in.buff, &idx, &arity, tag) < 0) return;
    if (strcmp(tag, "bench_start") == 0 && arity == 4 && ei_decode_pid(in.buff, &idx, &peer) == 0 &&
        ei_decode_ulonglong(in.buff, &idx, &window) == 0 &&
        ei_decode_ulonglong(in.buff, &idx, &g) == 0 && window > 0) {
        sink.from = peer;
        sink.window = window;
        sink.gen = g;
        sink.count = 0;
        sink.bytes = 0;
        sink.active = 1;
        ei_x_buff *x = out_begin();
        ei_x_encode_tuple_header(x, 2);
        ei_x_encode_atom(x, "bench_ready");
        ei_x_encode_ulonglong(x, g);
        ei_send(fd, &peer, x->buff, x->index);
    } else if (strcmp(tag, "bench_end") == 0 && arity == 3 &&
               ei_decode_pid(in.buff, &idx, &peer) == 0 &&
               ei_decode_ulonglong(in.buff, &idx, &g) == 0) {
        ei_x_buff *x = out_begin();
        ei_x_encode_tuple_header(x, 4);
        ei_x_encode_atom(x, "bench_done");
        ei_x_encode_ulonglong(x, g);
        ei_x_encode_ulonglong(x, sink.active ? sink.count : 0);
        ei_x_encode_ulonglong(x, sink.active ? sink.bytes : 0);
        sink.active = 0;
        ei_send(fd, &peer, x->buff, x->index);
    }
}

static void on_echo(int fd, int idx)
{
    char tag[MAXATOMLEN_UTF8];
    int arity, type, size;
    erlang_pid peer;
    unsigned long long seq;
    long len;

    if (get_tag(in.buff, &idx, &arity, tag) < 0 || arity != 4 || strcmp(tag, "bench_ping") != 0 ||
        ei_decode_pid(in.buff, &idx, &peer) < 0 || ei_decode_ulonglong(in.buff, &idx, &seq) < 0 ||
        ei_get_type(in.buff, &idx, &type, &size) < 0 || type != ERL_BINARY_EXT)
        return;
    /* Decode the payload into a buffer and encode the reply, as a program
     * that uses the data would. */
    char *bin = malloc(size ? (size_t)size : 1);
    if (bin == NULL || ei_decode_binary(in.buff, &idx, bin, &len) < 0) {
        free(bin);
        return;
    }
    ei_x_buff *x = out_begin();
    ei_x_encode_tuple_header(x, 3);
    ei_x_encode_atom(x, "bench_pong");
    ei_x_encode_ulonglong(x, seq);
    ei_x_encode_binary(x, bin, (int)len);
    ei_send(fd, &peer, x->buff, x->index);
    free(bin);
}

/* ---------------------------------------------------------------- */
/* Agent: blast and round trips                                      */
/* ---------------------------------------------------------------- */

/* Sends n copies of a binary of size bytes to {name, node}, at most 2 w
 * unacknowledged; returns 0 and the time taken, or a failure text. */
static const char *blast(const char *name, const char *node, size_t size, unsigned long long n,
                         unsigned long long w, unsigned long long *ns, unsigned long long *count,
                         unsigned long long *bytes)
{
    char tag[MAXATOMLEN_UTF8], sname[MAXATOMLEN_UTF8];
    int fd = conn_to(node), arity, idx;
    unsigned long long g, c, sent = 0, acked = 0;
    const char *failure = NULL;
    ei_x_buff data;

    if (fd < 0) return "ei_connect to the target failed";
    snprintf(sname, sizeof sname, "%s", name);
    if (ei_x_new_with_version(&data) < 0) return "out of memory";
    char *raw = malloc(size ? size : 1);
    if (raw == NULL) {
        ei_x_free(&data);
        return "out of memory";
    }
    memset(raw, 'x', size);
    ei_x_encode_binary(&data, raw, (int)size);
    free(raw);

    gen++;
    ei_x_buff *x = out_begin();
    ei_x_encode_tuple_header(x, 4);
    ei_x_encode_atom(x, "bench_start");
    ei_x_encode_pid(x, ei_self(&ec));
    ei_x_encode_ulonglong(x, w);
    ei_x_encode_ulonglong(x, gen);
    if (ei_reg_send(&ec, fd, sname, x->buff, x->index) < 0) {
        failure = "ei_reg_send start failed";
        goto done;
    }
    do {
        if (next_reply(fd, tag, &arity, &idx) < 0) {
            failure = "no bench_ready from the sink";
            goto done;
        }
    } while (strcmp(tag, "bench_ready") != 0 || ei_decode_ulonglong(in.buff, &idx, &g) < 0 ||
             g != gen);

    uint64_t t0 = now_ns();
    while (sent < n) {
        while (sent < n && sent < acked + 2 * w) {
            if (ei_reg_send(&ec, fd, sname, data.buff, data.index) < 0) {
                failure = "ei_reg_send data failed";
                goto done;
            }
            sent++;
        }
        if (sent == n) break;
        if (next_reply(fd, tag, &arity, &idx) < 0) {
            failure = "no bench_ack from the sink";
            goto done;
        }
        if (strcmp(tag, "bench_ack") == 0 && arity == 3 &&
            ei_decode_ulonglong(in.buff, &idx, &g) == 0 && g == gen &&
            ei_decode_ulonglong(in.buff, &idx, &c) == 0 && c > acked)
            acked = c;
    }
    x = out_begin();
    ei_x_encode_tuple_header(x, 3);
    ei_x_encode_atom(x, "bench_end");
    ei_x_encode_pid(x, ei_self(&ec));
    ei_x_encode_ulonglong(x, gen);
    if (ei_reg_send(&ec, fd, sname, x->buff, x->index) < 0) {
        failure = "ei_reg_send end failed";
        goto done;
    }
    for (;;) {
        if (next_reply(fd, tag, &arity, &idx) < 0) {
            failure = "no bench_done from the sink";
            goto done;
        }
        if (strcmp(tag, "bench_done") == 0 && arity == 4 &&
            ei_decode_ulonglong(in.buff, &idx, &g) == 0 && g == gen &&
            ei_decode_ulonglong(in.buff, &idx, count) == 0 &&
            ei_decode_ulonglong(in.buff, &idx, bytes) == 0)
            break;
    }
    *ns = now_ns() - t0;
done:
    if (failure) drop_conn(fd);
    ei_x_free(&data);
    return failure;
}

static int cmp_u64(const void *x, const void *y)
{
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return (a > b) - (a < b);
}

/* Nearest-rank percentile of sorted samples, as the Erlang side computes
 * it. */
static uint64_t percentile(const uint64_t *sorted, uint64_t len, uint64_t p)
{
    uint64_t rank = (p * len + 99) / 100;
    if (rank < 1) rank = 1;
    if (rank > len) rank = len;
    return sorted[rank - 1];
}

/* k timed pings (after max(10, k/20) untimed ones) to {name, node}. */
static const char *rtt(const char *name, const char *node, size_t size, unsigned long long k,
                       uint64_t *median, uint64_t *p99)
{
    char tag[MAXATOMLEN_UTF8], sname[MAXATOMLEN_UTF8];
    int fd = conn_to(node), arity, idx;
    unsigned long long warm = k / 20 > 10 ? k / 20 : 10, seq, s;
    const char *failure = NULL;

    if (fd < 0) return "ei_connect to the target failed";
    snprintf(sname, sizeof sname, "%s", name);
    uint64_t *samples = calloc(k, sizeof *samples);
    char *raw = malloc(size ? size : 1);
    if (samples == NULL || raw == NULL) {
        free(samples);
        free(raw);
        return "out of memory";
    }
    memset(raw, 'x', size);
    for (seq = 1; seq <= warm + k; seq++) {
        uint64_t t0 = now_ns();
        ei_x_buff *x = out_begin();
        ei_x_encode_tuple_header(x, 4);
        ei_x_encode_atom(x, "bench_ping");
        ei_x_encode_pid(x, ei_self(&ec));
        ei_x_encode_ulonglong(x, seq);
        ei_x_encode_binary(x, raw, (int)size);
        if (ei_reg_send(&ec, fd, sname, x->buff, x->index) < 0) {
            failure = "ei_reg_send ping failed";
            break;
        }
        do {
            if (next_reply(fd, tag, &arity, &idx) < 0) {
                failure = "no bench_pong";
                goto done;
            }
        } while (strcmp(tag, "bench_pong") != 0 || arity != 3 ||
                 ei_decode_ulonglong(in.buff, &idx, &s) < 0 || s != seq);
        if (seq > warm) samples[seq - warm - 1] = now_ns() - t0;
    }
    qsort(samples, k, sizeof *samples, cmp_u64);
    *median = percentile(samples, k, 50);
    *p99 = percentile(samples, k, 99);
done:
    if (failure) drop_conn(fd);
    free(samples);
    free(raw);
    return failure;
}

/* `{Name, Node}` */
static int get_target(int *idx, char *name, char *node)
{
    int arity;
    if (ei_decode_tuple_header(in.buff, idx, &arity) < 0 || arity != 2) return -1;
    if (ei_decode_atom(in.buff, idx, name) < 0) return -1;
    return ei_decode_atom(in.buff, idx, node);
}

/* `{bench_blast, Ctl, Target, Size, N, W}`, `{bench_rtt, Ctl, Target, Size,
 * K}`, `{bench_hello, Ctl}` or `bench_stop`. */
static void on_agent(int fd, int idx)
{
    char tag[MAXATOMLEN_UTF8], name[MAXATOMLEN_UTF8], node[MAXATOMLEN_UTF8];
    int arity;
    erlang_pid ctl;
    unsigned long long size, n, w = 1;
    int at = idx;

    if (ei_decode_atom(in.buff, &at, tag) == 0) {
        if (strcmp(tag, "bench_stop") == 0) {
            for (int i = nconns - 1; i >= 0; i--)
                drop_conn(conns[i].fd);
            exit(0);
        }
        return;
    }
    if (get_tag(in.buff, &idx, &arity, tag) < 0 || arity < 2 ||
        ei_decode_pid(in.buff, &idx, &ctl) < 0)
        return;
    ei_x_buff *x;
    if (strcmp(tag, "bench_hello") == 0) {
        x = out_begin();
        ei_x_encode_tuple_header(x, 3);
        ei_x_encode_atom(x, "bench_hello_ok");
        ei_x_encode_atom(x, ei_thisnodename(&ec));
        ei_x_encode_ulong(x, (unsigned long)getpid());
        ei_send(fd, &ctl, x->buff, x->index);
        return;
    }
    int is_blast = strcmp(tag, "bench_blast") == 0;
    if (!is_blast && strcmp(tag, "bench_rtt") != 0) return;
    if (arity != (is_blast ? 6 : 5) || get_target(&idx, name, node) < 0 ||
        ei_decode_ulonglong(in.buff, &idx, &size) < 0 ||
        ei_decode_ulonglong(in.buff, &idx, &n) < 0 || n == 0 ||
        (is_blast && (ei_decode_ulonglong(in.buff, &idx, &w) < 0 || w == 0)) ||
        size > 64 * 1024 * 1024) {
        reply_error(fd, &ctl, "bad command");
        return;
    }
    const char *failure;
    if (is_blast) {
        unsigned long long ns = 0, count = 0, bytes = 0;
        failure = blast(name, node, (size_t)size, n, w, &ns, &count, &bytes);
        if (failure == NULL) {
            x = out_begin();
            ei_x_encode_tuple_header(x, 4);
            ei_x_encode_atom(x, "bench_blast_done");
            ei_x_encode_ulonglong(x, ns);
            ei_x_encode_ulonglong(x, count);
            ei_x_encode_ulonglong(x, bytes);
        }
    } else {
        uint64_t median = 0, p99 = 0;
        failure = rtt(name, node, (size_t)size, n, &median, &p99);
        if (failure == NULL) {
            x = out_begin();
            ei_x_encode_tuple_header(x, 3);
            ei_x_encode_atom(x, "bench_rtt_done");
            ei_x_encode_ulonglong(x, median);
            ei_x_encode_ulonglong(x, p99);
        }
    }
    if (failure)
        reply_error(fd, &ctl, failure);
    else
        ei_send(fd, &ctl, out.buff, out.index);
}

/* ---------------------------------------------------------------- */
/* Node                                                              */
/* ---------------------------------------------------------------- */

/* One message from a readable connection. */
static void serve(int fd)
{
    erlang_msg msg;
    int got = ei_xreceive_msg(fd, &msg, &in);
    if (got == ERL_TICK) return;
    if (got == ERL_ERROR) {
        drop_conn(fd); /* closed by the peer, or broken */
        return;
    }
    int idx = 0, version;
    if (msg.msgtype != ERL_REG_SEND || ei_decode_version(in.buff, &idx, &version) < 0) return;
    if (strcmp(msg.toname, "bench_sink") == 0)
        on_sink(fd, idx);
    else if (strcmp(msg.toname, "bench_echo") == 0)
        on_echo(fd, idx);
    else if (strcmp(msg.toname, "bench_agent") == 0)
        on_agent(fd, idx);
}

int main(int argc, char **argv)
{
    const char *name = NULL, *cookie = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--name") == 0 && i + 1 < argc)
            name = argv[++i];
        else if (strcmp(argv[i], "--cookie") == 0 && i + 1 < argc)
            cookie = argv[++i];
        else
            name = NULL, i = argc;
    }
    const char *at = name ? strchr(name, '@') : NULL;
    if (at == NULL || cookie == NULL || at == name || (size_t)(at - name) > EI_MAXALIVELEN ||
        strlen(at + 1) > EI_MAXHOSTNAMELEN) {
        fputs("usage: ei_bench --name alive@host --cookie COOKIE\n", stderr);
        return 2;
    }
    char alive[EI_MAXALIVELEN + 1];
    snprintf(alive, sizeof alive, "%.*s", (int)(at - name), name);

    struct in_addr addr;
    addr.s_addr = htonl(INADDR_LOOPBACK);
    if (ei_init() != 0 ||
        ei_connect_xinit(&ec, at + 1, alive, name, &addr, cookie, (unsigned)getpid()) < 0) {
        fprintf(stderr, "ei_bench: ei_connect_xinit failed\n");
        return 1;
    }
    int port = 0;
    int lfd = ei_listen(&ec, &port, 16);
    if (lfd < 0) {
        fprintf(stderr, "ei_bench: ei_listen failed: %s\n", strerror(erl_errno));
        return 1;
    }
    if (ei_publish(&ec, port) < 0) {
        fprintf(stderr, "ei_bench: ei_publish failed: %s\n", strerror(erl_errno));
        return 1;
    }
    if (ei_x_new(&in) < 0 || ei_x_new(&out) < 0) return 1;

    for (;;) {
        struct pollfd pfd[MAX_CONNS + 1];
        pfd[0].fd = lfd;
        pfd[0].events = POLLIN;
        for (int i = 0; i < nconns; i++) {
            pfd[i + 1].fd = conns[i].fd;
            pfd[i + 1].events = POLLIN;
        }
        int n = nconns;
        if (poll(pfd, (nfds_t)n + 1, -1) < 0) {
            if (errno == EINTR) continue;
            perror("ei_bench: poll");
            return 1;
        }
        if (pfd[0].revents & POLLIN) {
            ErlConnect peer;
            int fd = ei_accept(&ec, lfd, &peer);
            if (fd >= 0) add_conn(fd, peer.nodename);
        }
        /* Handling a message may open or drop connections: serve the fds
         * polled, each if it is still open. */
        for (int i = 1; i <= n; i++) {
            if (!(pfd[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            for (int j = 0; j < nconns; j++)
                if (conns[j].fd == pfd[i].fd) {
                    serve(pfd[i].fd);
                    break;
                }
        }
    }
}
