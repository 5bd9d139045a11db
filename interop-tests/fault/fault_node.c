/*
 * fault_node - the C node of the fault tests (interop-tests/fault/), built on
 * the public API only.
 *
 *   fault_node NAME COOKIE TICKTIME [PEER]
 *
 * Runs node NAME (net_ticktime TICKTIME seconds) with two ports: `fault`
 * (registered under that name) and `victim`. With PEER (an Erlang node
 * running aemp_fault:serve()), once registered with EPMD it sends
 * {hello, VictimPid} to {fault, PEER}, which connects on demand; Erlang
 * links to the victim port and monitors it, so the victim dies with
 * `noconnection` when the connection is lost (as an Erlang process that
 * does not trap exits) while `fault` lives on. Each SIGUSR1 sends
 * {ping, N, FaultPid} to {fault, PEER} with N = 1, 2, ...
 *
 * Both ports handle:
 *   {linked, Pid}             prints "linked PID"
 *   {pong, N, Node}           prints "pong N NODE"
 *   {welcome, K}              prints "welcome K"
 *   {seq, N}                  the sink: counts, checks N is the previous + 1
 *   {done, Total, From}       answers From with
 *                             {sink_count, Count, Errors, ElapsedMs} and
 *                             prints "sink: count C errors E elapsed MS ..."
 *   anything else             prints "unexpected TERM"
 *
 * Node events are printed as "node up: PEER T" and
 * "node down: PEER (REASON) T", T being wall-clock milliseconds, so the
 * scripts can measure detection times; after a node down come the lines
 * "port fault: alive|dead" and "port victim: alive|dead". Library log lines
 * go to stderr.
 * SIGTERM or SIGINT closes the node; the exit status is then 0.
 */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../say.h"
#include "aemp.h"

struct sink {
    uint64_t count;
    uint64_t errors;
    int64_t last;
    int64_t first_bad_want, first_bad_got;
    uint64_t t_first, t_last; /* uv_hrtime() of the first and last {seq, N} */
};

struct fault {
    uv_loop_t *loop;
    aemp_node *node;
    const char *peer;
    aemp_port self, victim;
    aemp_addr self_addr, victim_addr;
    int64_t pings;
    struct sink sink;
    uv_signal_t sigusr1, sigterm, sigint;
    int stopping;
};

static int64_t wall_ms(void)
{
    uv_timeval64_t tv;
    if (uv_gettimeofday(&tv) != 0) return -1;
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static void send_to_peer(struct fault *f, const char *fmt, ...)
{
    aemp_addr to;
    aemp_buf b = AEMP_BUF_INIT;
    va_list ap;
    int rc = aemp_addr_name(&to, f->peer, "fault");
    if (rc == 0) {
        va_start(ap, fmt);
        rc = aemp_term_vformat(&b, fmt, ap);
        va_end(ap);
    }
    if (rc == 0) {
        aemp_term t = aemp_buf_term(&b);
        rc = aemp_send(f->node, f->self, &to, &t);
    }
    if (rc) say("send failed: %s", aemp_strerror(rc));
    aemp_buf_free(&b);
}

static void sink_seq(struct sink *s, int64_t n)
{
    uint64_t now = uv_hrtime();
    if (s->count == 0) s->t_first = now;
    s->t_last = now;
    s->count++;
    if (n != s->last + 1) {
        if (s->errors == 0) {
            s->first_bad_want = s->last + 1;
            s->first_bad_got = n;
        }
        s->errors++;
    }
    s->last = n;
}

static void sink_done(struct fault *f, int64_t total, const aemp_addr *from)
{
    struct sink *s = &f->sink;
    uint64_t elapsed = s->count ? (s->t_last - s->t_first) / 1000000 : 0;
    say("sink: count %llu errors %llu elapsed %llu ms (announced %lld)",
        (unsigned long long)s->count, (unsigned long long)s->errors, (unsigned long long)elapsed,
        (long long)total);
    if (s->errors)
        say("sink: first order error: wanted %lld, got %lld", (long long)s->first_bad_want,
            (long long)s->first_bad_got);
    int rc = aemp_sendf(f->node, f->self, from, "{sink_count, ~u, ~u, ~u}", (uint64_t)s->count,
                        (uint64_t)s->errors, (uint64_t)elapsed);
    if (rc) say("send failed: %s", aemp_strerror(rc));
}

static void on_message(aemp_node *node, aemp_port self, const aemp_term *msg, const aemp_addr *from,
                       void *arg)
{
    struct fault *f = arg;
    aemp_cursor c = aemp_cursor_of(msg);
    uint32_t arity;
    char tag[32];
    int64_t n;
    aemp_addr pid;
    char text[512];
    (void)node;
    (void)self;
    (void)from;

    if (aemp_get_tuple(&c, &arity) == 0 && aemp_get_atom(&c, tag, sizeof tag) == 0) {
        if (arity == 2 && strcmp(tag, "seq") == 0 && aemp_get_int64(&c, &n) == 0) {
            sink_seq(&f->sink, n);
            return;
        }
        if (arity == 3 && strcmp(tag, "done") == 0 && aemp_get_int64(&c, &n) == 0 &&
            aemp_get_pid(&c, &pid) == 0) {
            sink_done(f, n, &pid);
            return;
        }
        if (arity == 2 && strcmp(tag, "linked") == 0 && aemp_get_pid(&c, &pid) == 0) {
            aemp_addr_format(&pid, text, sizeof text);
            say("linked %s", text);
            return;
        }
        if (arity == 3 && strcmp(tag, "pong") == 0 && aemp_get_int64(&c, &n) == 0 &&
            aemp_get_atom(&c, text, sizeof text) == 0) {
            say("pong %lld %s", (long long)n, text);
            return;
        }
        if (arity == 2 && strcmp(tag, "welcome") == 0 && aemp_get_int64(&c, &n) == 0) {
            say("welcome %lld", (long long)n);
            return;
        }
    }
    aemp_term_print(msg, text, sizeof text);
    say("unexpected %s", text);
}

static void on_ready(aemp_node *node, int status, void *arg)
{
    struct fault *f = arg;
    char id[AEMP_MAXNODELEN + 64], vid[AEMP_MAXNODELEN + 64];
    if (status) {
        say("cannot register %s: %s", aemp_node_name(node), aemp_strerror(status));
        exit(1);
    }
    aemp_addr_format(&f->self_addr, id, sizeof id);
    aemp_addr_format(&f->victim_addr, vid, sizeof vid);
    say("ready %s port %s victim %s", aemp_node_name(node), id, vid);
    if (f->peer) send_to_peer(f, "{hello, ~p}", &f->victim_addr);
}

static const char *port_state(aemp_node *node, aemp_port port)
{
    aemp_addr a;
    int rc = aemp_port_addr(node, port, &a);
    if (rc == 0) return "alive";
    return rc == AEMP_ENOENT ? "dead" : aemp_strerror(rc);
}

static void on_nodes(aemp_node *node, const char *peer, int up, const char *reason, void *arg)
{
    struct fault *f = arg;
    if (up) {
        say("node up: %s %lld", peer, (long long)wall_ms());
        return;
    }
    say("node down: %s (%s) %lld", peer, reason ? reason : "", (long long)wall_ms());
    say("port fault: %s", port_state(node, f->self));
    say("port victim: %s", port_state(node, f->victim));
}

static void on_fail(aemp_node *node, const char *peer, int err, const char *reason, size_t dropped,
                    void *arg)
{
    (void)node;
    (void)arg;
    say("connect failed: %s: %s (%s, %zu dropped) %lld", peer, reason, aemp_strerror(err), dropped,
        (long long)wall_ms());
}

static void on_closed(void *arg)
{
    struct fault *f = arg;
    uv_close((uv_handle_t *)&f->sigusr1, NULL);
    uv_close((uv_handle_t *)&f->sigterm, NULL);
    uv_close((uv_handle_t *)&f->sigint, NULL);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct fault *f = h->data;
    if (f->stopping) return;
    if (signum == SIGUSR1) {
        if (!f->peer) {
            say("SIGUSR1 ignored: no peer");
            return;
        }
        f->pings++;
        send_to_peer(f, "{ping, ~i, ~p}", f->pings, &f->self_addr);
        say("sent ping %lld %lld", (long long)f->pings, (long long)wall_ms());
        return;
    }
    say("stopping on signal %d", signum);
    f->stopping = 1;
    aemp_node_close(f->node, on_closed, f);
}

static int start_signal(struct fault *f, uv_signal_t *h, int signum)
{
    h->data = f;
    if (uv_signal_init(f->loop, h) || uv_signal_start(h, on_signal, signum)) return -1;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 4 || argc > 5) {
        fprintf(stderr, "usage: fault_node NAME COOKIE TICKTIME [PEER]\n");
        return 2;
    }
    struct fault f;
    memset(&f, 0, sizeof f);
    f.loop = uv_default_loop();
    f.peer = argc == 5 ? argv[4] : NULL;

    char *end;
    unsigned long tick = strtoul(argv[3], &end, 10);
    if (*end || tick == 0 || tick > 3600) {
        fprintf(stderr, "fault_node: bad TICKTIME '%s'\n", argv[3]);
        return 2;
    }
    aemp_node_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.name = argv[1];
    cfg.cookie = argv[2];
    cfg.net_ticktime = (unsigned)tick;
    cfg.ready_cb = on_ready;
    cfg.ready_arg = &f;
    cfg.nodes_cb = on_nodes;
    cfg.nodes_arg = &f;
    cfg.fail_cb = on_fail;
    cfg.fail_arg = &f;
    int rc = aemp_node_create(f.loop, &cfg, &f.node);
    if (rc) {
        fprintf(stderr, "fault_node: cannot start node %s: %s\n", argv[1], aemp_strerror(rc));
        return 1;
    }
    if ((rc = aemp_port_open(f.node, on_message, &f, &f.self)) ||
        (rc = aemp_register(f.node, "fault", f.self)) ||
        (rc = aemp_port_addr(f.node, f.self, &f.self_addr)) ||
        (rc = aemp_port_open(f.node, on_message, &f, &f.victim)) ||
        (rc = aemp_port_addr(f.node, f.victim, &f.victim_addr))) {
        fprintf(stderr, "fault_node: cannot create the ports: %s\n", aemp_strerror(rc));
        return 1;
    }
    if (start_signal(&f, &f.sigusr1, SIGUSR1) || start_signal(&f, &f.sigterm, SIGTERM) ||
        start_signal(&f, &f.sigint, SIGINT)) {
        fprintf(stderr, "fault_node: cannot install signal handlers\n");
        return 1;
    }
    uv_run(f.loop, UV_RUN_DEFAULT);
    uv_loop_close(f.loop);
    return 0;
}
