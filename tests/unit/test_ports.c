/*
 * test_ports.c - the AEMP port model: rcv with tags (stripped) and a
 * default callback, unhandled messages and callback errors killing the
 * port, $SELF, peval and psub, kil deferred to the loop, the gone
 * callback, the three forms of mon (local and across nodes), mon_guard,
 * timers, and node monitoring.
 */
#include "harness.h"

TestSuite(ports, .init = setup, .fini = teardown, .timeout = 60);

/* What the callbacks saw. */
struct seen {
    int calls;
    char last[256]; /* the message (default) or the arguments (tags) */
    uint32_t nargs;
    uint64_t self;   /* aemp_self() inside */
    int rc;          /* what the callback returns */
    const char *die; /* if set, return aemp_die(die) */
};

static int seen_cb(aemp_node *n, aemp_port self, const aemp_msg *m, void *arg)
{
    struct seen *s = arg;
    s->calls++;
    s->nargs = m->nargs;
    s->self = aemp_self(n).id;
    /* print what follows the tag: each argument */
    aemp_cursor c = m->args;
    size_t off = 0;
    s->last[0] = 0;
    for (uint32_t i = 0; i < m->nargs && off < sizeof s->last; i++) {
        aemp_term t;
        cr_assert_eq(aemp_get_term(&c, &t), 0);
        int w = aemp_term_print(&t, s->last + off, sizeof s->last - off);
        cr_assert_geq(w, 0);
        off += (size_t)w;
        if (i + 1 < m->nargs && off + 1 < sizeof s->last) s->last[off++] = '|', s->last[off] = 0;
    }
    if (s->die) return aemp_die(n, "%s", s->die);
    return s->rc;
}

/* A death as a mon callback or the gone callback saw it. */
struct death {
    int count;
    char reason[256];
    char target[128];
};

static void death_cb(aemp_node *n, const aemp_addr *target, const aemp_term *reason, void *arg)
{
    struct death *d = arg;
    d->count++;
    aemp_term_print(reason, d->reason, sizeof d->reason);
    aemp_addr_format(target, d->target, sizeof d->target);
    cr_assert_eq(aemp_self(n).id, 0);
}

static void gone_cb(aemp_node *n, aemp_port port, const aemp_term *reason, void *arg)
{
    struct death *d = arg;
    d->count++;
    aemp_term_print(reason, d->reason, sizeof d->reason);
}

static void send_f(aemp_node *n, const aemp_addr *to, const char *fmt)
{
    cr_assert_eq(aemp_sendf(n, (aemp_port){0}, to, fmt), 0);
}

static aemp_addr addr_of(aemp_node *n, aemp_port p)
{
    aemp_addr a;
    cr_assert_eq(aemp_port_addr(n, p, &a), 0);
    return a;
}

static bool alive(aemp_node *n, aemp_port p)
{
    aemp_addr a;
    return aemp_port_addr(n, p, &a) == 0;
}

static void turn(void)
{
    uv_run(&loop, UV_RUN_NOWAIT);
}

Test(ports, tags_are_matched_and_stripped)
{
    struct node_ctx a;
    start_node(&a, "a@127.0.0.1", "secret");
    struct seen ping = {0}, dflt = {0};
    aemp_port p;
    cr_assert_eq(aemp_port_new(a.node, &p), 0);
    cr_assert_eq(aemp_rcv(a.node, p, "ping", seen_cb, &ping), 0);
    cr_assert_eq(aemp_rcv(a.node, p, NULL, seen_cb, &dflt), 0);
    aemp_addr to = addr_of(a.node, p);
    cr_assert_eq(aemp_sendf(a.node, (aemp_port){0}, &to, "{ping, 1, two, ~s}", "three"), 0);
    cr_assert_eq(ping.calls, 1);
    cr_assert_eq(ping.nargs, 3);
    cr_assert_str_eq(ping.last, "1|two|<<\"three\">>");
    cr_assert_eq(ping.self, p.id);
    /* a binary tag matches as the atom does; no arguments is fine */
    aemp_buf b = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_format(&b, "{~s}", "ping"), 0);
    aemp_term t = aemp_buf_term(&b);
    cr_assert_eq(aemp_send(a.node, (aemp_port){0}, &to, &t), 0);
    cr_assert_eq(ping.calls, 2);
    cr_assert_eq(ping.nargs, 0);
    /* other tags, non-tuples and the empty tuple go to the default, whole */
    send_f(a.node, &to, "{pong, 1}");
    send_f(a.node, &to, "pingpong");
    send_f(a.node, &to, "{}");
    cr_assert_eq(dflt.calls, 3);
    cr_assert_eq(dflt.nargs, 1);
    cr_assert_str_eq(dflt.last, "{}");
    /* unregistering a tag sends its messages to the default */
    cr_assert_eq(aemp_rcv(a.node, p, "ping", NULL, NULL), 0);
    send_f(a.node, &to, "{ping, 9}");
    cr_assert_eq(ping.calls, 2);
    cr_assert_eq(dflt.calls, 4);
    cr_assert_str_eq(dflt.last, "{ping,9}");
    /* many tags */
    struct seen many[20];
    memset(many, 0, sizeof many);
    for (int i = 0; i < 20; i++) {
        char tag[16];
        snprintf(tag, sizeof tag, "t%d", i);
        cr_assert_eq(aemp_rcv(a.node, p, tag, seen_cb, &many[i]), 0);
    }
    send_f(a.node, &to, "{t17, x}");
    cr_assert_eq(many[17].calls, 1);
    cr_assert_str_eq(many[17].last, "x");
    cr_assert_eq(aemp_self(a.node).id, 0);
    aemp_buf_free(&b);
    stop_node(&a);
}

Test(ports, unhandled_message_and_errors_kill_the_port)
{
    struct node_ctx a;
    start_node(&a, "a@127.0.0.1", "secret");
    struct death d1 = {0}, d2 = {0}, d3 = {0}, g1 = {0};
    struct seen s2 = {.die = "bad input 7"}, s3 = {.rc = AEMP_EINVAL};
    aemp_port p1, p2, p3;
    cr_assert_eq(aemp_port_new(a.node, &p1), 0);
    cr_assert_eq(aemp_port_new(a.node, &p2), 0);
    cr_assert_eq(aemp_port_new(a.node, &p3), 0);
    cr_assert_eq(aemp_rcv(a.node, p2, "go", seen_cb, &s2), 0);
    cr_assert_eq(aemp_rcv(a.node, p3, NULL, seen_cb, &s3), 0);
    cr_assert_eq(aemp_port_gone(a.node, p1, gone_cb, &g1), 0);
    aemp_addr a1 = addr_of(a.node, p1), a2 = addr_of(a.node, p2), a3 = addr_of(a.node, p3);
    cr_assert_eq(aemp_mon(a.node, &a1, death_cb, &d1, NULL), 0);
    cr_assert_eq(aemp_mon(a.node, &a2, death_cb, &d2, NULL), 0);
    cr_assert_eq(aemp_mon(a.node, &a3, death_cb, &d3, NULL), 0);
    send_f(a.node, &a1, "{hello, world}");
    send_f(a.node, &a2, "{go}");
    send_f(a.node, &a3, "anything");
    /* deaths are carried out by the loop, never inside the send */
    cr_assert_eq(d1.count + d2.count + d3.count, 0);
    cr_assert(alive(a.node, p1));
    /* and no callback runs for a port that is to die */
    send_f(a.node, &a2, "{go}");
    cr_assert_eq(s2.calls, 1);
    cr_assert(wait_int(&d3.count, 1, 2000));
    turn();
    cr_assert_eq(d1.count, 1);
    cr_assert_eq(d2.count, 1);
    cr_assert_str_eq(d1.reason, "{unhandled_message,hello}");
    cr_assert_str_eq(d2.reason, "{die,<<\"bad input 7\">>}");
    cr_assert_str_eq(d3.reason, "{die,<<\"invalid argument\">>}");
    cr_assert_eq(g1.count, 1);
    cr_assert_str_eq(g1.reason, "{unhandled_message,hello}");
    cr_assert(!alive(a.node, p1) && !alive(a.node, p2) && !alive(a.node, p3));
    stop_node(&a);
}

/* Log lines, for the warning of a death nobody monitors. */
static char logged[2048];
static void log_cb(int level, const char *msg, void *arg)
{
    size_t len = strlen(logged);
    if (level <= AEMP_LOG_WARN) snprintf(logged + len, sizeof logged - len, "%s\n", msg);
}

Test(ports, kil_is_deferred_and_logs_unmonitored_deaths)
{
    struct node_ctx a;
    start_node(&a, "a@127.0.0.1", "secret");
    aemp_log_set_callback(log_cb, NULL);
    aemp_log_set_level(AEMP_LOG_WARN);
    logged[0] = 0;
    struct death g = {0}, m = {0};
    aemp_port quiet, watched;
    cr_assert_eq(aemp_port_new(a.node, &quiet), 0);
    cr_assert_eq(aemp_port_new(a.node, &watched), 0);
    cr_assert_eq(aemp_port_gone(a.node, quiet, gone_cb, &g), 0);
    aemp_addr aq = addr_of(a.node, quiet), aw = addr_of(a.node, watched);
    cr_assert_eq(aemp_mon(a.node, &aw, death_cb, &m, NULL), 0);
    aemp_buf r = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_format(&r, "{my_error, ~s}", "everything is broken"), 0);
    aemp_term rt = aemp_buf_term(&r);
    cr_assert_eq(aemp_kil(a.node, &aq, &rt), 0);
    cr_assert_eq(aemp_kil(a.node, &aw, &rt), 0);
    cr_assert_eq(g.count, 0);
    cr_assert(wait_int(&m.count, 1, 2000));
    turn();
    cr_assert_eq(g.count, 1);
    cr_assert_str_eq(g.reason, "{my_error,<<\"everything is broken\">>}");
    char want[160];
    snprintf(want, sizeof want, "port %llu died with no monitor: {my_error,",
             (unsigned long long)quiet.id);
    cr_assert(strstr(logged, want) != NULL, "%s", logged);
    snprintf(want, sizeof want, "port %llu died with no monitor", (unsigned long long)watched.id);
    cr_assert(strstr(logged, want) == NULL, "%s", logged);
    /* killing what is gone is fine; normal kills are not logged */
    cr_assert_eq(aemp_kil(a.node, &aq, NULL), 0);
    aemp_port n2;
    cr_assert_eq(aemp_port_new(a.node, &n2), 0);
    aemp_addr an = addr_of(a.node, n2);
    logged[0] = 0;
    cr_assert_eq(aemp_kil(a.node, &an, NULL), 0);
    for (int i = 0; i < 5 && alive(a.node, n2); i++)
        uv_run(&loop, UV_RUN_ONCE);
    cr_assert(!alive(a.node, n2));
    cr_assert_eq(logged[0], 0, "%s", logged);
    aemp_log_set_callback(NULL, NULL);
    aemp_log_set_level(AEMP_LOG_ERROR);
    aemp_buf_free(&r);
    stop_node(&a);
}

static int as_self(aemp_node *n, aemp_port self, void *arg)
{
    uint64_t *seen = arg;
    *seen = aemp_self(n).id;
    cr_assert_eq(self.id, *seen);
    return 0;
}

static int failing(aemp_node *n, aemp_port self, void *arg)
{
    return aemp_die(n, "from %s", (const char *)arg);
}

struct bind_ctx {
    aemp_psub sub;
};

static int make_psub(aemp_node *n, aemp_port self, const aemp_msg *m, void *arg)
{
    struct bind_ctx *b = arg;
    b->sub = aemp_psub_of(n, failing, "psub");
    return 0;
}

Test(ports, peval_and_psub_run_as_the_port)
{
    struct node_ctx a;
    start_node(&a, "a@127.0.0.1", "secret");
    aemp_port p, q;
    cr_assert_eq(aemp_port_new(a.node, &p), 0);
    cr_assert_eq(aemp_port_new(a.node, &q), 0);
    uint64_t seen = 0;
    cr_assert_eq(aemp_peval(a.node, p, as_self, &seen), 0);
    cr_assert_eq(seen, p.id);
    cr_assert_eq(aemp_self(a.node).id, 0);
    /* a psub made inside q's callback is bound to q: its error kills q */
    struct bind_ctx b;
    memset(&b, 0, sizeof b);
    cr_assert_eq(aemp_rcv(a.node, q, "bind", make_psub, &b), 0);
    aemp_addr aq = addr_of(a.node, q);
    struct death d = {0};
    cr_assert_eq(aemp_mon(a.node, &aq, death_cb, &d, NULL), 0);
    send_f(a.node, &aq, "{bind}");
    cr_assert_eq(b.sub.port.id, q.id);
    cr_assert_eq(aemp_psub_call(&b.sub), 0);
    cr_assert(wait_int(&d.count, 1, 2000));
    cr_assert_str_eq(d.reason, "{die,<<\"from psub\">>}");
    /* bound to a dead port it does not run */
    cr_assert_eq(aemp_psub_call(&b.sub), AEMP_ENOENT);
    cr_assert_eq(aemp_peval(a.node, q, as_self, &seen), AEMP_ENOENT);
    /* a psub made outside any port just runs */
    seen = 99;
    aemp_psub free_sub = aemp_psub_of(a.node, as_self, &seen);
    cr_assert_eq(aemp_psub_call(&free_sub), 0);
    cr_assert_eq(seen, 0);
    stop_node(&a);
}

/* The kill form and the send form, locally. */
Test(ports, mon_forms_local)
{
    struct node_ctx a;
    start_node(&a, "a@127.0.0.1", "secret");
    aemp_port t1, t2, victim1, victim2, inbox;
    struct seen in = {0};
    struct death v1 = {0}, v2 = {0};
    cr_assert_eq(aemp_port_new(a.node, &t1), 0);
    cr_assert_eq(aemp_port_new(a.node, &t2), 0);
    cr_assert_eq(aemp_port_new(a.node, &victim1), 0);
    cr_assert_eq(aemp_port_new(a.node, &victim2), 0);
    cr_assert_eq(aemp_port_new(a.node, &inbox), 0);
    cr_assert_eq(aemp_rcv(a.node, inbox, "died", seen_cb, &in), 0);
    cr_assert_eq(aemp_port_gone(a.node, victim1, gone_cb, &v1), 0);
    cr_assert_eq(aemp_port_gone(a.node, victim2, gone_cb, &v2), 0);
    aemp_addr a1 = addr_of(a.node, t1), a2 = addr_of(a.node, t2), ai = addr_of(a.node, inbox);
    /* victim1 dies when t1 dies abnormally, victim2 not when t2 dies normally */
    cr_assert_eq(aemp_mon_kill(a.node, &a1, victim1, NULL), 0);
    cr_assert_eq(aemp_mon_kill(a.node, &a2, victim2, NULL), 0);
    aemp_buf m = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_format(&m, "{died, t1}"), 0);
    aemp_term mt = aemp_buf_term(&m);
    cr_assert_eq(aemp_mon_send(a.node, &a1, &ai, &mt, NULL), 0);
    aemp_buf r = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_format(&r, "{crash, 1}"), 0);
    aemp_term rt = aemp_buf_term(&r);
    cr_assert_eq(aemp_kil(a.node, &a1, &rt), 0);
    cr_assert_eq(aemp_kil(a.node, &a2, NULL), 0);
    cr_assert(wait_int(&v1.count, 1, 2000));
    cr_assert_str_eq(v1.reason, "{crash,1}");
    cr_assert(wait_int(&in.calls, 1, 2000));
    cr_assert_eq(in.nargs, 2);
    cr_assert_str_eq(in.last, "t1|{crash,1}");
    turn();
    cr_assert_eq(v2.count, 0);
    cr_assert(alive(a.node, victim2));
    /* a non-tuple message becomes {Msg, Reason}; a mon of a port that is
     * not there fires with noproc from the loop */
    struct seen dflt = {0};
    cr_assert_eq(aemp_rcv(a.node, inbox, NULL, seen_cb, &dflt), 0);
    m.len = 0;
    cr_assert_eq(aemp_term_format(&m, "gone"), 0);
    mt = aemp_buf_term(&m);
    cr_assert_eq(aemp_mon_send(a.node, &a1, &ai, &mt, NULL), 0);
    cr_assert_eq(dflt.calls, 0);
    cr_assert(wait_int(&dflt.calls, 1, 2000));
    cr_assert_str_eq(dflt.last, "{gone,noproc}");
    /* a mon whose local port dies first goes with it: nothing is left */
    aemp_port w;
    aemp_addr ref;
    cr_assert_eq(aemp_port_new(a.node, &w), 0);
    cr_assert_eq(aemp_mon_kill(a.node, &ai, w, &ref), 0);
    aemp_addr aw = addr_of(a.node, w);
    cr_assert_eq(aemp_kil(a.node, &aw, NULL), 0);
    for (int i = 0; i < 5 && alive(a.node, w); i++)
        uv_run(&loop, UV_RUN_ONCE);
    cr_assert_eq(aemp_demonitor(a.node, &ref), AEMP_ENOENT);
    aemp_buf_free(&m);
    aemp_buf_free(&r);
    stop_node(&a);
}

Test(ports, mon_fires_once_and_can_be_cancelled)
{
    struct node_ctx a;
    start_node(&a, "a@127.0.0.1", "secret");
    aemp_port t, g;
    cr_assert_eq(aemp_port_new(a.node, &t), 0);
    cr_assert_eq(aemp_port_new(a.node, &g), 0);
    aemp_addr at = addr_of(a.node, t), ag = addr_of(a.node, g), r1, r2, r3;
    struct death d1 = {0}, d2 = {0}, d3 = {0}, dn = {0};
    cr_assert_eq(aemp_mon(a.node, &at, death_cb, &d1, &r1), 0);
    cr_assert_eq(aemp_mon(a.node, &at, death_cb, &d2, &r2), 0);
    cr_assert_eq(aemp_mon(a.node, &at, death_cb, &d3, &r3), 0);
    cr_assert_eq(aemp_demonitor(a.node, &r2), 0);
    /* mon_guard: g's death cancels r3 */
    cr_assert_eq(aemp_mon_guard(a.node, g, &r3, 1), 0);
    cr_assert_eq(aemp_kil(a.node, &ag, NULL), 0);
    for (int i = 0; i < 5 && alive(a.node, g); i++)
        uv_run(&loop, UV_RUN_ONCE);
    cr_assert_eq(aemp_demonitor(a.node, &r3), AEMP_ENOENT);
    cr_assert_eq(aemp_kil(a.node, &at, NULL), 0);
    cr_assert(wait_int(&d1.count, 1, 2000));
    cr_assert_str_eq(d1.reason, "normal");
    char want[128];
    aemp_addr_format(&at, want, sizeof want);
    cr_assert_str_eq(d1.target, want);
    turn();
    cr_assert_eq(d2.count + d3.count, 0);
    cr_assert_eq(d1.count, 1);
    /* a pending noproc can be cancelled too */
    aemp_addr rn;
    cr_assert_eq(aemp_mon(a.node, &at, death_cb, &dn, &rn), 0);
    cr_assert_eq(aemp_demonitor(a.node, &rn), 0);
    turn();
    turn();
    cr_assert_eq(dn.count, 0);
    /* a registered name that is not there: noproc, with the name as target */
    aemp_addr nm;
    cr_assert_eq(aemp_addr_name(&nm, aemp_node_name(a.node), "nobody"), 0);
    cr_assert_eq(aemp_mon(a.node, &nm, death_cb, &dn, NULL), 0);
    cr_assert(wait_int(&dn.count, 1, 2000));
    cr_assert_str_eq(dn.reason, "noproc");
    stop_node(&a);
}

Test(ports, mon_across_nodes)
{
    struct node_ctx a, b;
    start_node(&a, "a@127.0.0.1", "secret");
    start_node(&b, "b@127.0.0.1", "secret");
    aemp_port t1, t2;
    cr_assert_eq(aemp_port_new(b.node, &t1), 0);
    cr_assert_eq(aemp_port_new(b.node, &t2), 0);
    aemp_addr a1 = addr_of(b.node, t1), a2 = addr_of(b.node, t2);
    struct death d1 = {0}, d2 = {0};
    cr_assert_eq(aemp_mon(a.node, &a1, death_cb, &d1, NULL), 0);
    cr_assert_eq(aemp_mon(a.node, &a2, death_cb, &d2, NULL), 0);
    cr_assert(wait_int(&a.ups, 1, 5000));
    /* a remote kil is an exit signal, in order with the messages */
    aemp_buf r = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_format(&r, "{remote_kill, 5}"), 0);
    aemp_term rt = aemp_buf_term(&r);
    cr_assert_eq(aemp_kil(a.node, &a1, &rt), 0);
    cr_assert(wait_int(&d1.count, 1, 5000));
    cr_assert_str_eq(d1.reason, "{remote_kill,5}");
    cr_assert_eq(d2.count, 0);
    /* a node that closes ends its ports with shutdown first */
    stop_node(&b);
    cr_assert(wait_int(&d2.count, 1, 5000));
    cr_assert_str_eq(d2.reason, "shutdown");
    /* a node that cannot be reached: noconnection */
    aemp_addr far;
    cr_assert_eq(aemp_addr_parse("nobody@127.0.0.1#<1.0.1>", &far), 0);
    struct death d3 = {0};
    cr_assert_eq(aemp_mon(a.node, &far, death_cb, &d3, NULL), 0);
    cr_assert(wait_int(&d3.count, 1, 10000));
    cr_assert_str_eq(d3.reason, "noconnection");
    cr_assert_str_eq(d3.target, "nobody@127.0.0.1#<1.0.1>");
    aemp_buf_free(&r);
    stop_node(&a);
}

struct tick {
    int calls;
    uint64_t self;
};

static int tick_fn(aemp_node *n, aemp_port self, void *arg)
{
    struct tick *t = arg;
    t->calls++;
    t->self = self.id;
    return 0;
}

static int start_timer(aemp_node *n, aemp_port self, const aemp_msg *m, void *arg)
{
    return aemp_after_call(n, 1, tick_fn, arg, NULL);
}

Test(ports, after_sends_and_calls_once)
{
    struct node_ctx a;
    start_node(&a, "a@127.0.0.1", "secret");
    aemp_port p, q;
    struct seen in = {0};
    cr_assert_eq(aemp_port_new(a.node, &p), 0);
    cr_assert_eq(aemp_port_new(a.node, &q), 0);
    cr_assert_eq(aemp_rcv(a.node, p, "wake", seen_cb, &in), 0);
    aemp_addr ap = addr_of(a.node, p), aq = addr_of(a.node, q);
    aemp_buf m = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_format(&m, "{wake, up}"), 0);
    aemp_term mt = aemp_buf_term(&m);
    uint64_t t1, t2;
    cr_assert_eq(aemp_after_send(a.node, 1, &ap, &mt, &t1), 0);
    cr_assert_eq(aemp_after_send(a.node, 1, &ap, &mt, &t2), 0);
    cr_assert_eq(aemp_timer_cancel(a.node, t2), 0);
    cr_assert_eq(in.calls, 0);
    cr_assert(wait_int(&in.calls, 1, 2000));
    cr_assert_str_eq(in.last, "up");
    cr_assert_eq(aemp_timer_cancel(a.node, t1), AEMP_ENOENT);
    /* a timer started in q's callback runs as q, but not once q is dead */
    struct tick k1 = {0}, k2 = {0};
    cr_assert_eq(aemp_rcv(a.node, q, "start", start_timer, &k1), 0);
    send_f(a.node, &aq, "{start}");
    cr_assert(wait_int(&k1.calls, 1, 2000));
    cr_assert_eq(k1.self, q.id);
    cr_assert_eq(aemp_rcv(a.node, q, "start", start_timer, &k2), 0);
    send_f(a.node, &aq, "{start}");
    cr_assert_eq(aemp_kil(a.node, &aq, NULL), 0);
    /* the send to p below comes after q's timer would have fired */
    cr_assert_eq(aemp_after_send(a.node, 20, &ap, &mt, NULL), 0);
    cr_assert(wait_int(&in.calls, 2, 2000));
    cr_assert_eq(k2.calls, 0);
    cr_assert_eq(in.calls, 2);
    aemp_buf_free(&m);
    stop_node(&a);
}

struct nodes_seen {
    int ups, downs;
    char log[256];
};

static void nodes_cb(aemp_node *n, const char *peer, int up, const char *reason, void *arg)
{
    struct nodes_seen *s = arg;
    size_t len = strlen(s->log);
    snprintf(s->log + len, sizeof s->log - len, "%s%s ", up ? "+" : "-", peer);
    if (up)
        s->ups++;
    else
        s->downs++;
}

Test(ports, mon_nodes_up_nodes_node_state)
{
    struct node_ctx a, b;
    start_node(&a, "a@127.0.0.1", "secret");
    struct nodes_seen s1 = {0}, s2 = {0};
    uint64_t h1, h2;
    cr_assert_eq(aemp_mon_nodes(a.node, nodes_cb, &s1, &h1), 0);
    cr_assert_eq(aemp_mon_nodes(a.node, nodes_cb, &s2, &h2), 0);
    cr_assert_eq(aemp_node_state(a.node, "b@127.0.0.1"), AEMP_ENOENT);
    cr_assert_eq(aemp_up_nodes(a.node, NULL, 0), 0);
    for (int round = 1; round <= 2; round++) {
        start_node(&b, "b@127.0.0.1", "secret");
        cr_assert_eq(aemp_node_connect(a.node, "b@127.0.0.1"), 0);
        cr_assert(wait_int(&s1.ups, round, 5000));
        cr_assert_eq(aemp_node_state(a.node, "b@127.0.0.1"), 1);
        const char *names[4];
        cr_assert_eq(aemp_up_nodes(a.node, names, 4), 1);
        cr_assert_str_eq(names[0], "b@127.0.0.1");
        stop_node(&b);
        cr_assert(wait_int(&s1.downs, round, 5000));
        cr_assert_eq(aemp_node_state(a.node, "b@127.0.0.1"), 0);
        cr_assert_eq(aemp_up_nodes(a.node, NULL, 0), 0);
        if (round == 1) cr_assert_eq(aemp_mon_nodes_cancel(a.node, h2), 0);
    }
    cr_assert_str_eq(s1.log, "+b@127.0.0.1 -b@127.0.0.1 +b@127.0.0.1 -b@127.0.0.1 ");
    cr_assert_str_eq(s2.log, "+b@127.0.0.1 -b@127.0.0.1 ");
    cr_assert_eq(aemp_mon_nodes_cancel(a.node, h2), AEMP_ENOENT);
    stop_node(&a);
}

Test(ports, errors)
{
    struct node_ctx a;
    start_node(&a, "a@127.0.0.1", "secret");
    aemp_port p, none = {12345678};
    cr_assert_eq(aemp_port_new(a.node, &p), 0);
    char tag[300];
    memset(tag, 'x', sizeof tag - 1);
    tag[sizeof tag - 1] = 0;
    cr_assert_eq(aemp_rcv(a.node, p, tag, seen_cb, NULL), AEMP_EINVAL);
    cr_assert_eq(aemp_rcv(a.node, none, "x", seen_cb, NULL), AEMP_ENOENT);
    cr_assert_eq(aemp_port_gone(a.node, none, gone_cb, NULL), AEMP_ENOENT);
    cr_assert_eq(aemp_mon_kill(a.node, &(aemp_addr){0}, p, NULL), AEMP_EINVAL);
    aemp_addr ap = addr_of(a.node, p);
    cr_assert_eq(aemp_mon_kill(a.node, &ap, none, NULL), AEMP_ENOENT);
    cr_assert_eq(aemp_mon(a.node, &ap, NULL, NULL, NULL), AEMP_EINVAL);
    aemp_term bad = {"\x68", 1};
    cr_assert_eq(aemp_kil(a.node, &ap, &bad), AEMP_EINVAL);
    cr_assert_eq(aemp_mon_send(a.node, &ap, &ap, &bad, NULL), AEMP_EINVAL);
    cr_assert_eq(aemp_after_send(a.node, 1, &ap, &bad, NULL), AEMP_EINVAL);
    cr_assert_eq(aemp_timer_cancel(a.node, 777), AEMP_ENOENT);
    /* the node's service ports cannot be killed */
    aemp_addr nk;
    cr_assert_eq(aemp_addr_name(&nk, aemp_node_name(a.node), "net_kernel"), 0);
    cr_assert_eq(aemp_kil(a.node, &nk, NULL), AEMP_EINVAL);
    stop_node(&a);
}
