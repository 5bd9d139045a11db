/*
 * test_node.c - two or three C nodes in one process, on one loop, talking
 * over real TCP through an embedded EPMD on a private port: connections on
 * demand, queued messages, simultaneous connects, failures, ports.
 */
#include "harness.h"

#include "node/node.h"

TestSuite(node, .init = setup, .fini = teardown, .timeout = 60);

Test(node, send_to_name_connects_on_demand_and_keeps_order)
{
    struct node_ctx a, b;
    start_node(&a, "a@127.0.0.1", "secret");
    start_node(&b, "b@127.0.0.1", "secret");
    struct sink s = {0};
    aemp_addr to;
    sink_at(&b, "sink", &s, &to);
    /* Sent before any connection exists: queued, then delivered in order. */
    send_numbers(&a, &to, 40);
    expect_numbers(&s, 40, 5000);
    cr_assert_eq(a.ups, 1);
    cr_assert_eq(b.ups, 1);
    cr_assert(aemp_node_is_up(a.node, "b@127.0.0.1"));
    stop_node(&a);
    cr_assert(run_until(&b.downs, 5000), "b saw no node down");
    cr_assert_str_eq(b.last_peer, "a@127.0.0.1");
    stop_node(&b);
}

Test(node, send_to_pid_with_sender)
{
    struct node_ctx a, b;
    start_node(&a, "a@127.0.0.1", "secret");
    start_node(&b, "b@127.0.0.1", "secret");
    struct sink s = {0}, unused = {0};
    aemp_port p, from;
    cr_assert_eq(aemp_port_open(b.node, sink_cb, &s, &p), 0);
    cr_assert_eq(aemp_port_open(a.node, sink_cb, &unused, &from), 0);
    aemp_addr to, fa;
    cr_assert_eq(aemp_port_addr(b.node, p, &to), 0);
    cr_assert_eq(aemp_port_addr(a.node, from, &fa), 0);
    cr_assert_eq(aemp_sendf(a.node, from, &to, "{n, ~i}", (int64_t)7), 0);
    cr_assert(wait_sink(&s, 1, 5000));
    cr_assert_eq(s.values[0], 7);
    cr_assert(s.with_from);
    cr_assert(aemp_addr_equal(&s.from, &fa), "sender not reported");
    stop_node(&a);
    stop_node(&b);
}

Test(node, simultaneous_connect_delivers_both_ways)
{
    struct node_ctx a, b;
    start_node(&a, "a@127.0.0.1", "secret");
    start_node(&b, "b@127.0.0.1", "secret");
    struct sink sa = {0}, sb = {0};
    aemp_addr ta, tb;
    sink_at(&a, "sink", &sa, &ta);
    sink_at(&b, "sink", &sb, &tb);
    /* Both start connecting in the same loop turn. */
    send_numbers(&a, &tb, 20);
    send_numbers(&b, &ta, 20);
    expect_numbers(&sa, 20, 8000);
    expect_numbers(&sb, 20, 8000);
    cr_assert_eq(a.fails, 0);
    cr_assert_eq(b.fails, 0);
    cr_assert_eq(a.ups, 1, "a: %d ups", a.ups);
    cr_assert_eq(b.ups, 1, "b: %d ups", b.ups);
    stop_node(&a);
    stop_node(&b);
}

Test(node, wrong_cookie_fails_and_drops_queued)
{
    struct node_ctx a, b;
    start_node(&a, "a@127.0.0.1", "secret");
    start_node(&b, "b@127.0.0.1", "other");
    aemp_addr to;
    name_addr(&to, b.node, "sink");
    for (int i = 0; i < 3; i++)
        aemp_sendf(a.node, (aemp_port){0}, &to, "{n, ~i}", (int64_t)i);
    cr_assert(run_until(&a.fails, 5000), "no failure reported");
    cr_assert_eq(a.last_fail_err, AEMP_EAUTH);
    cr_assert_eq(a.last_dropped, 3);
    cr_assert_eq(a.ups, 0);
    cr_assert_eq(b.ups, 0);
    stop_node(&a);
    stop_node(&b);
}

Test(node, unknown_node_fails)
{
    struct node_ctx a;
    start_node(&a, "a@127.0.0.1", "secret");
    aemp_addr to;
    cr_assert_eq(aemp_addr_name(&to, "nosuch@127.0.0.1", "x"), 0);
    aemp_sendf(a.node, (aemp_port){0}, &to, "{n, 1}");
    cr_assert(run_until(&a.fails, 5000));
    cr_assert_eq(a.last_fail_err, AEMP_ENONODE);
    cr_assert_eq(a.last_dropped, 1);
    stop_node(&a);
}

Test(node, name_taken_is_refused)
{
    struct node_ctx a;
    start_node(&a, "a@127.0.0.1", "secret");
    struct node_ctx b;
    memset(&b, 0, sizeof b);
    aemp_node_config cfg = {0};
    cfg.name = "a@127.0.0.1";
    cfg.cookie = "secret";
    cfg.epmd_port = epmd_port;
    cfg.ready_cb = on_ready;
    cfg.ready_arg = &b;
    cr_assert_eq(aemp_node_create(&loop, &cfg, &b.node), 0);
    cr_assert(run_until(&b.ready, 5000));
    cr_assert_eq(b.ready, AEMP_EEXIST);
    stop_node(&b);
    stop_node(&a);
}

/* ------------------------------------------------------------------ */
/* local ports                                                         */
/* ------------------------------------------------------------------ */

struct bouncer {
    int hits;
    int limit;
};

static void bounce_cb(aemp_node *n, aemp_port self, const aemp_term *msg, const aemp_addr *from,
                      void *arg)
{
    struct bouncer *b = arg;
    b->hits++;
    if (b->hits < b->limit) {
        aemp_addr me;
        aemp_port_addr(n, self, &me);
        aemp_sendf(n, self, &me, "{n, ~i}", (int64_t)b->hits);
    }
}

Test(node, self_send_recursion_is_bounded)
{
    struct node_ctx a;
    start_node(&a, "a@127.0.0.1", "secret");
    struct bouncer b = {0, 100000};
    aemp_port p;
    cr_assert_eq(aemp_port_open(a.node, bounce_cb, &b, &p), 0);
    aemp_addr me;
    aemp_port_addr(a.node, p, &me);
    /* 100,000 nested sends would overflow the stack if delivered inline. */
    aemp_sendf(a.node, p, &me, "{n, 0}");
    int expired = 0;
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    t.data = &expired;
    uv_timer_start(&t, on_deadline, 20000, 0);
    while (b.hits < b.limit && !expired)
        uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    cr_assert_eq(b.hits, b.limit);
    stop_node(&a);
}

Test(node, ports_are_never_reused_and_stale_ids_are_detected)
{
    struct node_ctx a;
    start_node(&a, "a@127.0.0.1", "secret");
    struct sink s = {0};
    aemp_port p1, p2;
    cr_assert_eq(aemp_port_open(a.node, sink_cb, &s, &p1), 0);
    aemp_addr a1;
    cr_assert_eq(aemp_port_addr(a.node, p1, &a1), 0);
    cr_assert_eq(aemp_register(a.node, "x", p1), 0);
    cr_assert_eq(aemp_port_close(a.node, p1), 0);
    cr_assert_eq(aemp_port_addr(a.node, p1, &a1), AEMP_ENOENT);
    /* the name is released with the port */
    cr_assert_eq(aemp_port_open(a.node, sink_cb, &s, &p2), 0);
    cr_assert_neq(p1.id, p2.id);
    cr_assert_eq(aemp_register(a.node, "x", p2), 0);
    cr_assert_eq(aemp_register(a.node, "x", p2), AEMP_EEXIST);
    /* a message to the dead pid is dropped, not delivered to p2 */
    cr_assert_eq(aemp_sendf(a.node, (aemp_port){0}, &a1, "{n, 1}"), 0);
    uv_run(&loop, UV_RUN_NOWAIT);
    cr_assert_eq(s.count, 0);
    aemp_port got;
    cr_assert_eq(aemp_port_of_addr(a.node, &a1, &got), AEMP_ENOENT);
    stop_node(&a);
}

static void closing_cb(aemp_node *n, aemp_port self, const aemp_term *msg, const aemp_addr *from,
                       void *arg)
{
    int *hits = arg;
    (*hits)++;
    aemp_port_close(n, self); /* a port may kill itself inside its callback */
}

Test(node, port_closing_itself_in_callback)
{
    struct node_ctx a;
    start_node(&a, "a@127.0.0.1", "secret");
    int hits = 0;
    aemp_port p;
    cr_assert_eq(aemp_port_open(a.node, closing_cb, &hits, &p), 0);
    aemp_addr me;
    aemp_port_addr(a.node, p, &me);
    aemp_sendf(a.node, (aemp_port){0}, &me, "{n, 1}");
    aemp_sendf(a.node, (aemp_port){0}, &me, "{n, 2}");
    uv_run(&loop, UV_RUN_NOWAIT);
    cr_assert_eq(hits, 1);
    stop_node(&a);
}

Test(node, bad_arguments)
{
    aemp_node *n = NULL;
    aemp_node_config cfg = {0};
    cfg.cookie = "c";
    cr_assert_eq(aemp_node_create(&loop, &cfg, &n), AEMP_EINVAL);
    cfg.name = "@host";
    cr_assert_eq(aemp_node_create(&loop, &cfg, &n), AEMP_EINVAL);
    cfg.name = "a@b@c";
    cr_assert_eq(aemp_node_create(&loop, &cfg, &n), AEMP_EINVAL);
    cr_assert_null(n);
    struct node_ctx a;
    start_node(&a, "a@127.0.0.1", "secret");
    aemp_addr to;
    memset(&to, 0, sizeof to);
    aemp_term empty = {NULL, 0};
    cr_assert_eq(aemp_send(a.node, (aemp_port){0}, &to, &empty), AEMP_EINVAL);
    cr_assert_eq(aemp_node_connect(a.node, "nohost"), AEMP_EINVAL);
    cr_assert_eq(aemp_node_connect(a.node, "a@127.0.0.1"), AEMP_EINVAL);
    stop_node(&a);
}

/* ------------------------------------------------------------------ */
/* logging                                                             */
/* ------------------------------------------------------------------ */

struct log_capture {
    char lines[32][1024];
    int levels[32];
    int n;
};

static void capture_log(int level, const char *msg, void *arg)
{
    struct log_capture *lc = arg;
    if (lc->n < 32) {
        snprintf(lc->lines[lc->n], sizeof lc->lines[0], "%s", msg);
        lc->levels[lc->n] = level;
    }
    lc->n++;
}

/* Index of the first captured line containing every needle, or -1. */
static int find_line(const struct log_capture *lc, const char *a, const char *b)
{
    for (int i = 0; i < lc->n && i < 32; i++)
        if (strstr(lc->lines[i], a) && strstr(lc->lines[i], b)) return i;
    return -1;
}

Test(node, refused_connections_are_logged_once_with_peer_and_reason)
{
    static struct log_capture lc;
    memset(&lc, 0, sizeof lc);
    aemp_log_set_callback(capture_log, &lc);
    aemp_log_set_level(AEMP_LOG_WARN);
    struct node_ctx a, b;
    start_node(&a, "a@127.0.0.1", "secret");
    start_node(&b, "b@127.0.0.1", "other");
    cr_assert_eq(aemp_node_connect(a.node, "b@127.0.0.1"), 0);
    cr_assert(run_until(&a.fails, 5000));
    /* the refusing side names the peer and the cookie */
    int i = find_line(&lc, "a@127.0.0.1", "cookie");
    cr_assert_geq(i, 0, "no refusal line naming a@127.0.0.1 and the cookie");
    cr_assert_eq(lc.levels[i], AEMP_LOG_WARN);
    /* the connecting side says why it could not connect */
    cr_assert_geq(find_line(&lc, "cannot connect to b@127.0.0.1", "cookie"), 0);
    /* the cookie itself never appears */
    for (int k = 0; k < lc.n && k < 32; k++) {
        cr_assert_null(strstr(lc.lines[k], "secret"), "cookie logged: %s", lc.lines[k]);
        cr_assert_null(strstr(lc.lines[k], "other"), "cookie logged: %s", lc.lines[k]);
    }
    /* below the level, nothing reaches the callback */
    aemp_log_set_level(AEMP_LOG_ERROR);
    int before = lc.n;
    a.fails = 0;
    cr_assert_eq(aemp_node_connect(a.node, "b@127.0.0.1"), 0);
    cr_assert(run_until(&a.fails, 5000), "second attempt did not fail");
    cr_assert_eq(lc.n, before, "a warning passed the error level");
    aemp_log_set_callback(NULL, NULL);
    stop_node(&a);
    stop_node(&b);
}

static aemp__conn *conn_to(aemp_node *n, const char *peer)
{
    uint32_t h = aemp__intern(peer, strlen(peer));
    return aemp__map_get(&n->conns, &h, sizeof h);
}

/* Keeps a copy of the last message, whatever its size. */
struct msg_sink {
    int count;
    aemp_buf last;
};

static void msg_cb(aemp_node *n, aemp_port self, const aemp_term *msg, const aemp_addr *from,
                   void *arg)
{
    (void)n;
    (void)self;
    (void)from;
    struct msg_sink *s = arg;
    s->last.len = 0;
    cr_assert_eq(aemp__buf_append(&s->last, msg->data, msg->len), 0);
    s->count++;
}

/* A large message that names the node once (a database share: one pid in
 * megabytes) goes with the name as text, not rewritten; a large one that
 * names it densely (a pg sync: a pid every few bytes) goes by reference.
 * Both arrive as sent. */
Test(node, large_sparse_message_keeps_its_atoms_dense_one_goes_by_reference)
{
    struct node_ctx a, b;
    start_node(&a, "a@127.0.0.1", "secret");
    start_node(&b, "b@127.0.0.1", "secret");
    struct msg_sink s = {0, AEMP_BUF_INIT};
    aemp_port p, q;
    cr_assert_eq(aemp_port_open(b.node, msg_cb, &s, &p), 0);
    cr_assert_eq(aemp_port_open(a.node, msg_cb, &(struct msg_sink){0}, &q), 0);
    aemp_addr to, qa;
    cr_assert_eq(aemp_port_addr(b.node, p, &to), 0);
    cr_assert_eq(aemp_port_addr(a.node, q, &qa), 0);
    aemp_port nobody = {0}; /* no sender: the control message names b only */
    /* sparse: a's pid once beside 200,000 bytes */
    aemp_buf blob = AEMP_BUF_INIT, msg = AEMP_BUF_INIT;
    cr_assert_eq(aemp__buf_reserve(&blob, 200000), 0);
    memset(blob.data, 'x', 200000);
    blob.len = 200000;
    cr_assert_eq(aemp_term_format(&msg, "{~p, ~b}", &qa, blob.data, blob.len), 0);
    aemp_term m = aemp_buf_term(&msg);
    cr_assert_eq(aemp_send(a.node, nobody, &to, &m), 0);
    cr_assert(wait_int(&s.count, 1, 5000));
    cr_assert(s.last.len == m.len && memcmp(s.last.data, m.data, m.len) == 0);
    /* (a message that goes by reference is rewritten into ac_msg) */
    aemp__conn *ca = conn_to(a.node, "b@127.0.0.1");
    cr_assert(ca);
    cr_assert_lt(ca->ac_msg.len, 64 * 1024, "a sparse large message went by reference");
    /* dense: 5,000 of a's pids (rewritten, about 75 KB: a buffer the idle
     * release keeps) */
    msg.len = 0;
    cr_assert_eq(aemp__buf_put_u8(&msg, 108), 0); /* LIST_EXT */
    cr_assert_eq(aemp__buf_put_u32(&msg, 5000), 0);
    aemp_buf pid = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_format(&pid, "~p", &qa), 0);
    for (int i = 0; i < 5000; i++)
        cr_assert_eq(aemp__buf_append(&msg, pid.data, pid.len), 0);
    cr_assert_eq(aemp__buf_put_u8(&msg, 106), 0); /* NIL_EXT */
    cr_assert_gt(msg.len, 64 * 1024);
    m = aemp_buf_term(&msg);
    cr_assert_eq(aemp_send(a.node, nobody, &to, &m), 0);
    cr_assert(wait_int(&s.count, 2, 5000));
    cr_assert(s.last.len == m.len && memcmp(s.last.data, m.data, m.len) == 0);
    cr_assert_gt(ca->ac_msg.len, 64 * 1024, "a dense large message did not go by reference");
    cr_assert_lt(ca->ac_msg.len, m.len);
    aemp_buf_free(&pid);
    aemp_buf_free(&blob);
    aemp_buf_free(&msg);
    aemp_buf_free(&s.last);
    stop_node(&a);
    stop_node(&b);
}

/* A node names itself by atom cache reference in what it sends (its pids,
 * references and the atom of its name, in the control message and the
 * message, inside a fun too); the receiver gets the bytes that were sent. */
Test(node, own_name_goes_by_atom_cache_and_arrives_as_sent)
{
    struct node_ctx a, b;
    start_node(&a, "a@127.0.0.1", "secret");
    start_node(&b, "b@127.0.0.1", "secret");
    struct msg_sink s = {0, AEMP_BUF_INIT};
    aemp_port p, from;
    cr_assert_eq(aemp_port_open(b.node, msg_cb, &s, &p), 0);
    cr_assert_eq(aemp_port_open(a.node, msg_cb, &(struct msg_sink){0}, &from), 0);
    aemp_addr to, fa;
    cr_assert_eq(aemp_port_addr(b.node, p, &to), 0);
    cr_assert_eq(aemp_port_addr(a.node, from, &fa), 0);
    /* a fun: Module 'a@127.0.0.1', Pid a's, free variables a's pid and 'x' */
    aemp_buf pid = AEMP_BUF_INIT, fun = AEMP_BUF_INIT, msg = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_format(&pid, "~p", &fa), 0);
    const char mod[] = {119, 11, 'a', '@', '1', '2', '7', '.', '0', '.', '0', '.', '1'};
    const char x[] = {119, 1, 'x'};
    cr_assert_eq(aemp__buf_put_u8(&fun, 112), 0); /* NEW_FUN_EXT */
    cr_assert_eq(aemp__buf_put_u32(&fun, 0), 0);  /* Size, below */
    cr_assert_eq(aemp__buf_put_u8(&fun, 0), 0);   /* Arity */
    for (int i = 0; i < 16; i++)
        cr_assert_eq(aemp__buf_put_u8(&fun, (uint8_t)i), 0); /* Uniq */
    cr_assert_eq(aemp__buf_put_u32(&fun, 1), 0);             /* Index */
    cr_assert_eq(aemp__buf_put_u32(&fun, 2), 0);             /* NumFree */
    cr_assert_eq(aemp__buf_append(&fun, mod, sizeof mod), 0);
    const char ints[] = {97, 0, 97, 0}; /* OldIndex, OldUniq */
    cr_assert_eq(aemp__buf_append(&fun, ints, sizeof ints), 0);
    cr_assert_eq(aemp__buf_append(&fun, pid.data, pid.len), 0);
    cr_assert_eq(aemp__buf_append(&fun, pid.data, pid.len), 0);
    cr_assert_eq(aemp__buf_append(&fun, x, sizeof x), 0);
    aemp__put_u32(fun.data + 1, (uint32_t)(fun.len - 1));
    aemp_term ft = aemp_buf_term(&fun);
    cr_assert_eq(aemp_term_format(&msg, "{~p, [~p, ~a, ~s], #{~p => ~t}, 'a@127.0.0.1'}", &fa, &fa,
                                  "a@127.0.0.1", "a@127.0.0.1", &fa, &ft),
                 0);
    aemp_term m = aemp_buf_term(&msg);
    for (int i = 1; i <= 2; i++) {
        cr_assert_eq(aemp_send(a.node, from, &to, &m), 0);
        cr_assert(wait_int(&s.count, i, 5000));
        cr_assert_eq(s.last.len, m.len);
        cr_assert(memcmp(s.last.data, m.data, m.len) == 0, "message %d changed on the way", i);
    }
    /* it went by reference: b's cache of a's packets holds a's name */
    aemp__conn *ca = conn_to(a.node, "b@127.0.0.1"), *cb = conn_to(b.node, "a@127.0.0.1");
    cr_assert(ca && cb);
    cr_assert(ca->self_sent);
    cr_assert(cb->atoms && cb->atoms[0]);
    cr_assert_eq(aemp__get_u16(cb->atoms[0]), 11);
    cr_assert(memcmp(cb->atoms[0] + 2, "a@127.0.0.1", 11) == 0);
    aemp_buf_free(&pid);
    aemp_buf_free(&fun);
    aemp_buf_free(&msg);
    aemp_buf_free(&s.last);
    stop_node(&a);
    stop_node(&b);
}
