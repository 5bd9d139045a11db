/*
 * test_backpressure.c - bounded memory per peer: a peer that never reads
 * but keeps asking for large replies holds the node at max_pending plus
 * its reply room (the node stops reading it), other peers are served
 * meanwhile, and once the peer reads, every reply arrives; two nodes that
 * flood each other past their limits both recover and lose nothing.
 */
#include "harness.h"
#include "svc/db.h"

/* these tests count the packets a raw peer gets exactly: no aemp_db
 * service (its discover on every node up would count) */
__attribute__((constructor)) static void no_db_service(void)
{
    aemp__db_test_off = true;
}

#include "aemp_impl.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>

TestSuite(backpressure, .init = setup, .fini = teardown, .timeout = 120);

#define BIG (64 * 1024)

static int big_reply(aemp_node *n, const aemp_term *args, aemp_buf *result, void *arg)
{
    static char blob[BIG];
    return aemp_term_format(result, "~b", blob, sizeof blob) ? AEMP_RPC_ERROR : AEMP_RPC_RETURN;
}

static size_t rss_kb(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, rss = 0;
    if (f) {
        if (fscanf(f, "%lu %lu", &size, &rss) != 2) rss = 0;
        fclose(f);
    }
    return rss * (size_t)(sysconf(_SC_PAGESIZE) / 1024);
}

/* A raw peer: handshake as r@127.0.0.1, then whatever the test writes. */
struct raw {
    int fd;
    aemp__hs hs;
    char in[1 << 16];
    size_t inlen;
    uint64_t packets; /* non-tick packets read after the handshake */
    size_t partial;   /* bytes of the packet being read still to skip */
    bool up;
};

static void raw_pump(struct raw *r)
{
    uv_run(&loop, UV_RUN_NOWAIT);
    struct pollfd pf = {r->fd, POLLIN, 0};
    if (poll(&pf, 1, 1) <= 0) return;
    ssize_t k = read(r->fd, r->in + r->inlen, sizeof r->in - r->inlen);
    if (k <= 0) return;
    r->inlen += (size_t)k;
    if (!r->up) {
        aemp_buf out = AEMP_BUF_INIT;
        size_t used;
        int rc = aemp__hs_input(&r->hs, r->in, r->inlen, &used, &out);
        if (out.len) cr_assert_eq(write(r->fd, out.data, out.len), (ssize_t)out.len);
        aemp_buf_free(&out);
        memmove(r->in, r->in + used, r->inlen - used);
        r->inlen -= used;
        if (rc == AEMP__HS_DONE) r->up = true;
        cr_assert(rc >= 0, "handshake failed: %s", r->hs.error);
        if (!r->up) return;
    }
    /* count whole packets, skipping their bodies */
    size_t pos = 0;
    for (;;) {
        if (r->partial) {
            size_t take = r->partial < r->inlen - pos ? r->partial : r->inlen - pos;
            r->partial -= take;
            pos += take;
            if (r->partial) break;
        }
        if (r->inlen - pos < 4) break;
        uint32_t len = aemp__get_u32(r->in + pos);
        pos += 4;
        if (len) r->packets++;
        r->partial = len;
    }
    memmove(r->in, r->in + pos, r->inlen - pos);
    r->inlen -= pos;
}

static void raw_connect(struct raw *r, aemp_node *to)
{
    memset(r, 0, sizeof *r);
    r->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons(aemp_node_listen_port(to)),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(connect(r->fd, (struct sockaddr *)&sin, sizeof sin), 0);
    int small = 64 * 1024;
    setsockopt(r->fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    fcntl(r->fd, F_SETFL, O_NONBLOCK);
    aemp_buf out = AEMP_BUF_INIT;
    cr_assert_eq(aemp__hs_init(&r->hs, AEMP__HS_INITIATOR, 2, "r@127.0.0.1", "secret", 77,
                               aemp__dflags_offered(), aemp_node_name(to)),
                 0);
    cr_assert_eq(aemp__hs_start(&r->hs, &out), 0);
    cr_assert_eq(write(r->fd, out.data, out.len), (ssize_t)out.len);
    aemp_buf_free(&out);
    for (int i = 0; i < 5000 && !r->up; i++)
        raw_pump(r);
    cr_assert(r->up, "no handshake");
}

/* An erpc call of big:reply() as Erlang sends it: a spawn request with a
 * monitor, answered with SPAWN_REPLY and the monitor's exit (the result). */
static void spawn_request(aemp_buf *pkt, uint32_t i)
{
    aemp_addr from, req, ref;
    uint32_t r = aemp__intern("r@127.0.0.1", 11);
    aemp__addr_pid(&from, r, 77, 1);
    memset(&req, 0, sizeof req);
    req.kind = AEMP_ADDR_REF;
    req.nwords = 3;
    req.node = r;
    req.creation = 77;
    req.w[0] = i;
    ref = req;
    ref.w[1] = 1;
    aemp_buf ctl = AEMP_BUF_INIT, mfa = AEMP_BUF_INIT, opts = AEMP_BUF_INIT, args = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_format(&mfa, "{erpc, execute_call, 4}"), 0);
    cr_assert_eq(aemp_term_format(&opts, "[monitor]"), 0);
    cr_assert_eq(aemp_term_format(&args, "[~p, big, reply, []]", &ref), 0);
    aemp_term mt = aemp_buf_term(&mfa), ot = aemp_buf_term(&opts);
    cr_assert_eq(
        aemp__ctl_enc(&ctl, AEMP__CTL_SPAWN_REQUEST, "aaatt", &req, &from, &from, &mt, &ot), 0);
    pkt->len = 0;
    aemp__buf_put_u32(pkt, (uint32_t)(2 + ctl.len + 1 + args.len));
    aemp__buf_put_u8(pkt, AEMP__EXT_PASS_THROUGH);
    aemp__buf_put_u8(pkt, AEMP__EXT_VERSION);
    aemp__buf_append(pkt, ctl.data, ctl.len);
    aemp__buf_put_u8(pkt, AEMP__EXT_VERSION);
    aemp__buf_append(pkt, args.data, args.len);
    aemp_buf_free(&ctl);
    aemp_buf_free(&mfa);
    aemp_buf_free(&opts);
    aemp_buf_free(&args);
}

struct echo {
    int got;
};

static void echo_cb(aemp_node *n, aemp_port self, const aemp_term *msg, const aemp_addr *from,
                    void *arg)
{
    struct echo *e = arg;
    e->got++;
    if (from) aemp_send(n, self, from, msg);
}

static void count_cb(aemp_node *n, aemp_port self, const aemp_term *msg, const aemp_addr *from,
                     void *arg)
{
    ((struct echo *)arg)->got++;
}

Test(backpressure, peer_that_never_reads)
{
    struct node_ctx a, b;
    aemp_node_config cfg = {0};
    cfg.cookie = "secret";
    cfg.name = "a@127.0.0.1";
    cfg.max_pending = 1 << 20;
    start_node_cfg(&a, cfg);
    start_node(&b, "b@127.0.0.1", "secret");
    cr_assert_eq(aemp_export(a.node, "big", "reply", big_reply, NULL), 0);
    struct echo ea = {0}, eb = {0};
    aemp_port pa, pb;
    aemp_addr to_a;
    cr_assert_eq(aemp_port_open(a.node, echo_cb, &ea, &pa), 0);
    cr_assert_eq(aemp_port_open(b.node, count_cb, &eb, &pb), 0);
    cr_assert_eq(aemp_port_addr(a.node, pa, &to_a), 0);

    struct raw r;
    raw_connect(&r, a.node);
    size_t rss0 = rss_kb();
    /* 2,000 calls: 128 MB of replies if nothing held them back */
    enum { N = 2000 };
    aemp_buf pkt = AEMP_BUF_INIT, out = AEMP_BUF_INIT;
    for (uint32_t i = 0; i < N; i++) {
        spawn_request(&pkt, i);
        aemp__buf_append(&out, pkt.data, pkt.len);
    }
    size_t written = 0, most = 0;
    int served = 0;
    aemp_conn_stats st = {0};
    uint64_t deadline = uv_hrtime() + 30000000000ull;
    while (uv_hrtime() < deadline && (served < 20 || st.holds == 0)) {
        if (written < out.len) {
            ssize_t k = write(r.fd, out.data + written, out.len - written);
            if (k > 0) written += (size_t)k;
        }
        uv_run(&loop, UV_RUN_NOWAIT);
        size_t q = aemp_node_pending(a.node, "r@127.0.0.1");
        if (q > most) most = q;
        /* another peer is served all along */
        if (eb.got == served) {
            cr_assert_eq(aemp_sendf(b.node, pb, &to_a, "{ping, ~i}", (int64_t)served), 0);
            served++;
        }
        struct pollfd pf = {r.fd, 0, 0};
        poll(&pf, 1, 1);
        cr_assert_eq(aemp_node_stats(a.node, "r@127.0.0.1", &st), 0);
    }
    cr_assert_geq(served, 20, "the other peer was not served");
    cr_assert_geq(st.holds, 1, "the node never stopped reading the peer");
    /* max_pending + its quarter of reply room + one reply and its framing */
    cr_assert_leq(most, (1u << 20) + (1u << 18) + BIG + 4096, "%zu bytes queued", most);
    size_t grown = rss_kb() - rss0;
    cr_assert_lt(grown, 32 * 1024, "the process grew by %zu KB", grown);

    /* the peer reads now: every reply arrives */
    for (int turn = 0; turn < 200000 && (r.packets < 2 * N || written < out.len); turn++) {
        if (written < out.len) {
            ssize_t k = write(r.fd, out.data + written, out.len - written);
            if (k > 0) written += (size_t)k;
        }
        raw_pump(&r);
    }
    cr_assert_eq(written, out.len);
    cr_assert_eq(r.packets, 2 * N, "%llu of %d replies", (unsigned long long)r.packets, 2 * N);
    close(r.fd);
    aemp_buf_free(&pkt);
    aemp_buf_free(&out);
    stop_node(&a);
    stop_node(&b);
}

/* Two nodes send to each other as fast as they can, both past their
 * limits (AEMP_EBUSY on both sides): both go on reading, so both drain,
 * and every message accepted arrives, in order. */
struct flood {
    aemp_node *node;
    aemp_port self;
    aemp_addr to;
    int64_t sent, got, busy, out_of_order;
    uv_idle_t idle;
};

static void flood_cb(aemp_node *n, aemp_port self, const aemp_term *msg, const aemp_addr *from,
                     void *arg)
{
    struct flood *f = arg;
    aemp_cursor c = aemp_cursor_of(msg);
    uint32_t arity;
    int64_t v;
    char tag[8];
    const void *bin;
    size_t len;
    if (aemp_get_tuple(&c, &arity) || aemp_get_atom(&c, tag, sizeof tag) ||
        aemp_get_int64(&c, &v) || aemp_get_binary(&c, &bin, &len))
        return;
    if (v != f->got) f->out_of_order++;
    f->got++;
}

enum { FLOOD_N = 20000 };

static void flood_idle(uv_idle_t *h)
{
    struct flood *f = h->data;
    static char pad[1024];
    for (int i = 0; i < 64 && f->sent < FLOOD_N; i++) {
        int rc = aemp_sendf(f->node, f->self, &f->to, "{n, ~i, ~b}", f->sent, pad, sizeof pad);
        if (rc == AEMP_EBUSY) {
            f->busy++;
            return;
        }
        cr_assert_eq(rc, 0);
        f->sent++;
    }
    if (f->sent == FLOOD_N) uv_idle_stop(h);
}

Test(backpressure, two_nodes_flooding_each_other_recover)
{
    struct node_ctx a, b;
    aemp_node_config cfg = {0};
    cfg.cookie = "secret";
    cfg.max_pending = 256 * 1024;
    cfg.name = "a@127.0.0.1";
    start_node_cfg(&a, cfg);
    cfg.name = "b@127.0.0.1";
    start_node_cfg(&b, cfg);
    struct flood fa = {.node = a.node}, fb = {.node = b.node};
    cr_assert_eq(aemp_port_open(a.node, flood_cb, &fa, &fa.self), 0);
    cr_assert_eq(aemp_port_open(b.node, flood_cb, &fb, &fb.self), 0);
    cr_assert_eq(aemp_port_addr(b.node, fb.self, &fa.to), 0);
    cr_assert_eq(aemp_port_addr(a.node, fa.self, &fb.to), 0);
    uv_idle_init(&loop, &fa.idle);
    uv_idle_init(&loop, &fb.idle);
    fa.idle.data = &fa;
    fb.idle.data = &fb;
    uv_idle_start(&fa.idle, flood_idle);
    uv_idle_start(&fb.idle, flood_idle);
    int expired = 0;
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    t.data = &expired;
    uv_timer_start(&t, on_deadline, 90000, 0);
    while (!expired && (fa.got < FLOOD_N || fb.got < FLOOD_N))
        uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_close((uv_handle_t *)&fa.idle, NULL);
    uv_close((uv_handle_t *)&fb.idle, NULL);
    cr_assert_eq(fa.got, FLOOD_N, "a got %lld of %d", (long long)fa.got, FLOOD_N);
    cr_assert_eq(fb.got, FLOOD_N, "b got %lld of %d", (long long)fb.got, FLOOD_N);
    cr_assert_eq(fa.out_of_order + fb.out_of_order, 0);
    cr_assert_gt(fa.busy, 0, "a never reached its limit");
    cr_assert_gt(fb.busy, 0, "b never reached its limit");
    stop_node(&a);
    stop_node(&b);
}

/* A send whose control tuple has more elements than a send has (here 10):
 * delivered like any send, twice in a row (the second through the receive
 * cache's path), and the node goes on. */
Test(backpressure, send_with_a_long_control_tuple)
{
    struct node_ctx a;
    start_node(&a, "a@127.0.0.1", "secret");
    int got = 0;
    aemp_port p;
    aemp_addr to;
    cr_assert_eq(aemp_port_open(a.node, count_cb, &got, &p), 0);
    cr_assert_eq(aemp_port_addr(a.node, p, &to), 0);
    struct raw r;
    raw_connect(&r, a.node);
    aemp_buf ctl = AEMP_BUF_INIT, pkt = AEMP_BUF_INIT;
    cr_assert_eq(aemp__ctl_enc(&ctl, AEMP__CTL_SEND, "eaiiiiiiii", &to, (uint64_t)1, (uint64_t)2,
                               (uint64_t)3, (uint64_t)4, (uint64_t)5, (uint64_t)6, (uint64_t)7,
                               (uint64_t)8),
                 0);
    for (int i = 0; i < 2; i++) {
        aemp__buf_put_u32(&pkt, (uint32_t)(2 + ctl.len + 1 + 2));
        aemp__buf_put_u8(&pkt, AEMP__EXT_PASS_THROUGH);
        aemp__buf_put_u8(&pkt, AEMP__EXT_VERSION);
        aemp__buf_append(&pkt, ctl.data, ctl.len);
        aemp__buf_put_u8(&pkt, AEMP__EXT_VERSION);
        aemp__buf_put_u8(&pkt, AEMP__EXT_SMALL_INTEGER);
        aemp__buf_put_u8(&pkt, (uint8_t)i);
    }
    cr_assert_eq(write(r.fd, pkt.data, pkt.len), (ssize_t)pkt.len);
    for (int turn = 0; turn < 5000 && got < 2; turn++)
        raw_pump(&r);
    cr_assert_eq(got, 2);
    cr_assert(aemp_node_is_up(a.node, "r@127.0.0.1"));
    close(r.fd);
    aemp_buf_free(&ctl);
    aemp_buf_free(&pkt);
    stop_node(&a);
}
