/*
 * test_batch.c - read batching (read_batch_ms) between two C nodes in one
 * process, over real TCP on loopback: a one-way stream of small packets
 * written one per loop turn is read in batches and arrives whole and in
 * order; request/reply traffic is never batched; a large packet ends
 * batching; read_batch_ms < 0 turns it off. Whether batching engaged is
 * read from the node's debug log lines.
 */
#include "harness.h"

TestSuite(batch, .init = setup, .fini = teardown, .timeout = 60);

/* Debug lines about read batching, captured through the log callback. */
struct batch_log {
    int batching;    /* "reading in batches" */
    int ended_large; /* "no read batching (large packets)" */
    int off;         /* "read batching off" */
};

static struct batch_log blog;

static void capture(int level, const char *msg, void *arg)
{
    (void)level;
    (void)arg;
    if (strstr(msg, "reading in batches")) blog.batching++;
    if (strstr(msg, "no read batching (large packets)")) blog.ended_large++;
    if (strstr(msg, "read batching off")) blog.off++;
}

static void capture_start(void)
{
    memset(&blog, 0, sizeof blog);
    aemp_log_set_callback(capture, NULL);
    aemp_log_set_level(AEMP_LOG_DEBUG);
}

static void capture_stop(void)
{
    aemp_log_set_level(AEMP_LOG_ERROR);
    aemp_log_set_callback(NULL, NULL);
}

/* Counts {n, I} messages and checks that I runs 0, 1, 2, ...; other terms
 * (binaries) are counted apart. Replies {n, I} to the sender if `reply`. */
struct seq_sink {
    int count;
    int out_of_order;
    int binaries;
    int reply;
};

static void seq_cb(aemp_node *n, aemp_port self, const aemp_term *msg, const aemp_addr *from,
                   void *arg)
{
    struct seq_sink *s = arg;
    aemp_cursor cur = aemp_cursor_of(msg);
    uint32_t arity;
    char tag[8];
    int64_t v;
    if (aemp_get_tuple(&cur, &arity) == 0 && arity == 2 &&
        aemp_get_atom(&cur, tag, sizeof tag) == 0 && aemp_get_int64(&cur, &v) == 0) {
        if (v != s->count) s->out_of_order++;
        s->count++;
        if (s->reply && from) aemp_sendf(n, self, from, "{n, ~i}", v);
    } else {
        s->binaries++;
    }
}

/* A port on n registered as `seq`, feeding s; *to is its name address. */
static void seq_port(struct node_ctx *n, struct seq_sink *s, aemp_addr *to)
{
    aemp_port p;
    cr_assert_eq(aemp_port_open(n->node, seq_cb, s, &p), 0);
    cr_assert_eq(aemp_register(n->node, "seq", p), 0);
    name_addr(to, n->node, "seq");
}

/* Sends {n, 0} .. {n, total - 1} from port `from` to `to`, one message per
 * loop turn (an idle handle), so that each leaves in its own write, as an
 * Erlang node writes them. */
struct trickle {
    uv_idle_t idle;
    aemp_node *node;
    aemp_port from;
    aemp_addr to;
    int sent, total;
    int done;
};

static void trickle_cb(uv_idle_t *h)
{
    struct trickle *t = h->data;
    cr_assert_eq(aemp_sendf(t->node, t->from, &t->to, "{n, ~i}", (int64_t)t->sent), 0);
    if (++t->sent == t->total) {
        uv_idle_stop(h);
        t->done = 1;
    }
}

static void trickle_start(struct trickle *t, struct node_ctx *from, const aemp_addr *to, int total)
{
    memset(t, 0, sizeof *t);
    t->node = from->node;
    t->to = *to;
    t->total = total;
    uv_idle_init(&loop, &t->idle);
    t->idle.data = t;
    uv_idle_start(&t->idle, trickle_cb);
}

static void trickle_close(struct trickle *t)
{
    uv_close((uv_handle_t *)&t->idle, NULL);
}

/* Run the loop until *v >= target or the deadline passes. */
static void start_pair(struct node_ctx *a, struct node_ctx *b, int read_batch_ms)
{
    aemp_node_config cfg = {0};
    cfg.cookie = "secret";
    cfg.name = "a@127.0.0.1";
    start_node_cfg(a, cfg);
    cfg.name = "b@127.0.0.1";
    cfg.read_batch_ms = read_batch_ms;
    start_node_cfg(b, cfg);
}

/* A `seq` port on b (*to its address) gets total messages from a, one per
 * loop turn, all of them in order. */
/* Stream total messages from a to a port on b, one per loop turn; returns
 * b's packets per socket read on that connection during the stream. */
static double stream(struct node_ctx *a, struct node_ctx *b, struct seq_sink *s, aemp_addr *to,
                     struct trickle *t, int total)
{
    seq_port(b, s, to);
    /* the connection first, so that the stream alone is counted */
    cr_assert_eq(aemp_node_connect(a->node, aemp_node_name(b->node)), 0);
    cr_assert(run_until(&b->ups, 5000));
    aemp_conn_stats before, after;
    cr_assert_eq(aemp_node_stats(b->node, aemp_node_name(a->node), &before), 0);
    trickle_start(t, a, to, total);
    cr_assert(wait_int(&s->count, total, 20000), "only %d of %d arrived", s->count, total);
    cr_assert_eq(s->out_of_order, 0);
    cr_assert_eq(aemp_node_stats(b->node, aemp_node_name(a->node), &after), 0);
    uint64_t reads = after.reads - before.reads, packets = after.packets - before.packets;
    cr_assert_gt(reads, 0);
    return (double)packets / (double)reads;
}

Test(batch, one_way_stream_is_batched_and_arrives_whole_in_order)
{
    capture_start();
    struct node_ctx a, b;
    start_pair(&a, &b, 0);
    struct seq_sink s = {0};
    aemp_addr to;
    struct trickle t;
    double per_read = stream(&a, &b, &s, &to, &t, 20000);
    cr_assert_geq(blog.batching, 1, "the stream was not read in batches");
    /* The effect: the sender writes one message per loop turn, so a reader
     * that keeps up reads about one per read; the pauses let them gather. */
    cr_assert_geq(per_read, 4.0, "%.2f messages per read: not batched", per_read);
    /* A large packet ends batching; small ones still arrive after it. */
    uint8_t big[8192];
    memset(big, 'x', sizeof big);
    cr_assert_eq(aemp_sendf(a.node, (aemp_port){0}, &to, "~b", big, sizeof big), 0);
    cr_assert_eq(aemp_sendf(a.node, (aemp_port){0}, &to, "{n, ~i}", (int64_t)20000), 0);
    cr_assert(wait_int(&s.count, 20001, 5000));
    cr_assert_eq(s.binaries, 1);
    cr_assert_eq(s.out_of_order, 0);
    cr_assert_eq(blog.ended_large, 1, "a packet over 4 KB did not end batching");
    trickle_close(&t);
    capture_stop();
    stop_node(&a);
    stop_node(&b);
}

/* a sends the next request only when the reply to the last one is back. */
struct pinger {
    aemp_node *node;
    aemp_port self;
    aemp_addr to;
    int replies, total;
};

static void pinger_cb(aemp_node *n, aemp_port self, const aemp_term *msg, const aemp_addr *from,
                      void *arg)
{
    (void)msg;
    (void)from;
    struct pinger *pg = arg;
    if (++pg->replies < pg->total)
        cr_assert_eq(aemp_sendf(n, self, &pg->to, "{n, ~i}", (int64_t)pg->replies), 0);
}

Test(batch, request_reply_is_never_batched)
{
    capture_start();
    struct node_ctx a, b;
    start_pair(&a, &b, 0);
    struct seq_sink s = {.reply = 1};
    struct pinger pg = {.node = a.node, .total = 2000};
    seq_port(&b, &s, &pg.to);
    cr_assert_eq(aemp_port_open(a.node, pinger_cb, &pg, &pg.self), 0);
    cr_assert_eq(aemp_sendf(a.node, pg.self, &pg.to, "{n, ~i}", (int64_t)0), 0);
    cr_assert(wait_int(&pg.replies, pg.total, 20000), "%d of %d replies", pg.replies, pg.total);
    cr_assert_eq(s.count, 2000);
    cr_assert_eq(s.out_of_order, 0);
    cr_assert_eq(blog.batching, 0, "request/reply traffic was batched");
    /* and never delayed into batches: one request per read */
    aemp_conn_stats st;
    cr_assert_eq(aemp_node_stats(b.node, aemp_node_name(a.node), &st), 0);
    cr_assert_lt((double)st.packets / (double)st.reads, 1.5, "%llu packets in %llu reads",
                 (unsigned long long)st.packets, (unsigned long long)st.reads);
    capture_stop();
    stop_node(&a);
    stop_node(&b);
}

Test(batch, read_batch_ms_over_a_second_is_refused)
{
    aemp_node_config cfg = {0};
    cfg.name = "a@127.0.0.1";
    cfg.cookie = "secret";
    cfg.epmd_port = epmd_port;
    cfg.read_batch_ms = 1001;
    aemp_node *n = NULL;
    cr_assert_eq(aemp_node_create(&loop, &cfg, &n), AEMP_EINVAL);
    cr_assert_null(n);
}

Test(batch, negative_read_batch_ms_turns_it_off)
{
    capture_start();
    struct node_ctx a, b;
    start_pair(&a, &b, -1);
    cr_assert_eq(blog.off, 1, "b did not log that read batching is off");
    struct seq_sink s = {0};
    aemp_addr to;
    struct trickle t;
    double per_read = stream(&a, &b, &s, &to, &t, 5000);
    cr_assert_eq(blog.batching, 0, "batching although read_batch_ms < 0");
    cr_assert_lt(per_read, 2.0, "%.2f messages per read: batched although off", per_read);
    trickle_close(&t);
    capture_stop();
    stop_node(&a);
    stop_node(&b);
}
