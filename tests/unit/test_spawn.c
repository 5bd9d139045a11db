/*
 * test_spawn.c - spawning between two C nodes and on one node itself:
 * aemp_spawn() of an init
 * function another node exported (arguments, $SELF, link and monitor from
 * the reply), of one it did not export (undef) and of one that fails
 * ({die, Text}); the callback's errors (a node that is not there, the
 * requester gone before the reply, the node closed first); hostile spawn
 * requests (bad options answered badopt, malformed ones badarg), the node
 * serving on.
 */
#include "harness.h"

#include "proc/proc.h"

TestSuite(spawn, .init = setup, .fini = teardown, .timeout = 120);

struct inbox {
    int count;
    char last[512];
};

static void inbox_cb(aemp_node *n, aemp_port self, const aemp_term *msg, const aemp_addr *from,
                     void *arg)
{
    struct inbox *in = arg;
    in->count++;
    aemp_term_print(msg, in->last, sizeof in->last);
}

/* What an init function saw. */
struct initrec {
    int calls;
    int rc; /* what it returns */
    bool self_ok;
    bool list; /* args read as a list header (not a byte string) */
    aemp_port self;
    char args[256];
};

static int rec_init(aemp_node *n, aemp_port self, const aemp_term *args, void *arg)
{
    struct initrec *r = arg;
    r->calls++;
    r->self = self;
    r->self_ok = aemp_self(n).id == self.id;
    aemp_term_print(args, r->args, sizeof r->args);
    aemp_cursor c = aemp_cursor_of(args);
    uint32_t len;
    r->list = aemp_get_list(&c, &len) == 0;
    return r->rc;
}

/* What a spawn callback was told. */
struct spawnrec {
    int calls;
    int err;
    aemp_addr pid, ref;
    bool has_pid, has_ref;
};

static void rec_spawn(aemp_node *n, int err, const aemp_addr *pid, const aemp_addr *ref, void *arg)
{
    struct spawnrec *r = arg;
    r->calls++;
    r->err = err;
    r->has_pid = pid != NULL;
    r->has_ref = ref != NULL;
    if (pid) r->pid = *pid;
    if (ref) r->ref = *ref;
}

static bool alive(aemp_node *n, aemp_port p)
{
    aemp_addr a;
    return aemp_port_addr(n, p, &a) == 0;
}

static void args_of(aemp_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    aemp__buf_reset(b);
    cr_assert_eq(aemp_term_vformat(b, fmt, ap), 0);
    va_end(ap);
}

/* Nodes a and b; b exports w:start as rec_init(ok). */
static void start_pair(struct node_ctx *a, struct node_ctx *b, struct initrec *ok)
{
    start_node(a, "a@127.0.0.1", "secret");
    start_node(b, "b@127.0.0.1", "secret");
    cr_assert_eq(aemp_export_init(b->node, "w", "start", rec_init, ok), 0);
}

Test(spawn, init_link_monitor_undef_die)
{
    struct node_ctx a, b;
    struct initrec ok = {0}, bad = {.rc = AEMP_EINVAL};
    start_pair(&a, &b, &ok);
    cr_assert_eq(aemp_export_init(b.node, "w", "fail", rec_init, &bad), 0);
    cr_assert_eq(aemp_export_init(b.node, "erpc", "execute_call", rec_init, &ok), AEMP_EEXIST);
    cr_assert_eq(aemp_unexport_init(b.node, "erpc", "execute_call"), AEMP_EEXIST);
    cr_assert_eq(aemp_export_init(b.node, "", "x", rec_init, &ok), AEMP_EINVAL);

    struct inbox mon = {0}, lnk = {0};
    aemp_port pm, pl;
    cr_assert_eq(aemp_port_open(a.node, inbox_cb, &mon, &pm), 0);
    cr_assert_eq(aemp_port_open(a.node, inbox_cb, &lnk, &pl), 0);
    aemp_buf args = AEMP_BUF_INIT;
    args_of(&args, "[1, ~l, x]", "ab");
    aemp_term at = aemp_buf_term(&args);

    /* monitored: the init runs as the new port with the arguments as a list */
    struct spawnrec sm = {0};
    cr_assert_eq(aemp_spawn(a.node, pm, "b@127.0.0.1", "w", "start", &at, AEMP_SPAWN_MONITOR,
                            rec_spawn, &sm),
                 0);
    cr_assert_eq(sm.calls, 0, "the callback runs from the loop");
    cr_assert(wait_int(&sm.calls, 1, 5000));
    cr_assert_eq(sm.err, 0);
    cr_assert(sm.has_pid && sm.has_ref);
    cr_assert_str_eq(aemp_addr_node_name(&sm.pid), "b@127.0.0.1");
    cr_assert_eq(ok.calls, 1);
    cr_assert(ok.self_ok, "$SELF is the new port in init");
    cr_assert_str_eq(ok.args, "[1,\"ab\",x]");
    cr_assert(ok.list);
    aemp_port child;
    cr_assert_eq(aemp_port_of_addr(b.node, &sm.pid, &child), 0);
    cr_assert_eq(child.id, ok.self.id);
    aemp_buf r = AEMP_BUF_INIT;
    args_of(&r, "{bye, 1}");
    aemp_term rt = aemp_buf_term(&r);
    cr_assert_eq(aemp_port_kill(b.node, child, &rt), 0);
    cr_assert(wait_int(&mon.count, 1, 5000));
    /* the DOWN names the monitor_ref the callback got */
    aemp_buf down = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_format(&down, "{'DOWN', ~p, process, ~p, {bye, 1}}", &sm.ref, &sm.pid),
                 0);
    aemp_term dt = aemp_buf_term(&down);
    char dtext[512];
    aemp_term_print(&dt, dtext, sizeof dtext);
    cr_assert_str_eq(mon.last, dtext);

    /* linked: the child's death kills the requester */
    struct spawnrec sl = {0};
    args_of(&args, "[]");
    at = aemp_buf_term(&args);
    cr_assert_eq(
        aemp_spawn(a.node, pl, "b@127.0.0.1", "w", "start", &at, AEMP_SPAWN_LINK, rec_spawn, &sl),
        0);
    cr_assert(wait_int(&sl.calls, 1, 5000));
    cr_assert_eq(sl.err, 0);
    cr_assert(sl.has_pid && !sl.has_ref);
    cr_assert_eq(aemp_port_of_addr(b.node, &sl.pid, &child), 0);
    cr_assert_eq(aemp_port_kill(b.node, child, &rt), 0);
    for (int i = 0; i < 500 && alive(a.node, pl); i++)
        uv_run(&loop, UV_RUN_ONCE);
    cr_assert(!alive(a.node, pl), "the linked requester died with the child");

    /* arguments that travel as a byte string reach init as a list */
    struct spawnrec ss = {0};
    args_of(&args, "~l", "ab");
    at = aemp_buf_term(&args);
    cr_assert_eq(aemp_spawn(a.node, pm, "b@127.0.0.1", "w", "start", &at, 0, rec_spawn, &ss), 0);
    cr_assert(wait_int(&ss.calls, 1, 5000));
    cr_assert_eq(ss.err, 0);
    cr_assert_eq(ok.calls, 3);
    cr_assert(ok.list, "%s", ok.args);

    /* not exported: exits with undef, as an Erlang node's process would */
    struct inbox m2 = {0};
    aemp_port pm2;
    cr_assert_eq(aemp_port_open(a.node, inbox_cb, &m2, &pm2), 0);
    struct spawnrec su = {0};
    args_of(&args, "[7]");
    at = aemp_buf_term(&args);
    cr_assert_eq(aemp_spawn(a.node, pm2, "b@127.0.0.1", "w", "nope", &at, AEMP_SPAWN_MONITOR,
                            rec_spawn, &su),
                 0);
    cr_assert(wait_int(&m2.count, 1, 5000));
    cr_assert_eq(su.calls, 1);
    cr_assert_eq(su.err, 0);
    cr_assert(strstr(m2.last, ",{undef,[{w,nope,[7],[]}]}}") != NULL, "%s", m2.last);

    /* an init that fails: {die, Text} */
    struct spawnrec sd = {0};
    cr_assert_eq(aemp_spawn(a.node, pm2, "b@127.0.0.1", "w", "fail", &at, AEMP_SPAWN_MONITOR,
                            rec_spawn, &sd),
                 0);
    cr_assert(wait_int(&m2.count, 2, 5000));
    cr_assert_eq(sd.err, 0);
    cr_assert_eq(bad.calls, 1);
    cr_assert(strstr(m2.last, ",{die,<<\"invalid argument\">>}}") != NULL, "%s", m2.last);

    /* withdrawn: undef again */
    cr_assert_eq(aemp_unexport_init(b.node, "w", "fail"), 0);
    cr_assert_eq(aemp_unexport_init(b.node, "w", "fail"), AEMP_ENOENT);
    cr_assert_eq(
        aemp_spawn(a.node, pm2, "b@127.0.0.1", "w", "fail", &at, AEMP_SPAWN_MONITOR, NULL, NULL),
        0);
    cr_assert(wait_int(&m2.count, 3, 5000));
    cr_assert(strstr(m2.last, ",{undef,[{w,fail,[7],[]}]}}") != NULL, "%s", m2.last);
    cr_assert_eq(bad.calls, 1);

    aemp_buf_free(&args);
    aemp_buf_free(&r);
    aemp_buf_free(&down);
    stop_node(&a);
    stop_node(&b);
}

/* AEMP's spawn on the node itself: init runs at once as the new port, the
 * link and monitor are made, the callback follows from the loop. */
Test(spawn, on_this_node)
{
    struct node_ctx a;
    struct initrec ok = {0};
    start_node(&a, "a@127.0.0.1", "secret");
    cr_assert_eq(aemp_export_init(a.node, "w", "start", rec_init, &ok), 0);
    struct inbox mon = {0};
    aemp_port pm;
    cr_assert_eq(aemp_port_open(a.node, inbox_cb, &mon, &pm), 0);
    aemp_buf args = AEMP_BUF_INIT;
    args_of(&args, "[here, 2]");
    aemp_term at = aemp_buf_term(&args);
    struct spawnrec sm = {0};
    cr_assert_eq(aemp_spawn(a.node, pm, "a@127.0.0.1", "w", "start", &at,
                            AEMP_SPAWN_MONITOR | AEMP_SPAWN_LINK, rec_spawn, &sm),
                 0);
    cr_assert_eq(ok.calls, 1, "init ran before aemp_spawn returned");
    cr_assert(ok.self_ok);
    cr_assert_str_eq(ok.args, "[here,2]");
    cr_assert_eq(sm.calls, 0, "the callback runs from the loop");
    cr_assert(wait_int(&sm.calls, 1, 2000));
    cr_assert_eq(sm.err, 0);
    cr_assert(sm.has_pid && sm.has_ref);
    aemp_port child;
    cr_assert_eq(aemp_port_of_addr(a.node, &sm.pid, &child), 0);
    cr_assert_eq(child.id, ok.self.id);
    /* the child dies normally: the monitor fires, the link spares pm */
    cr_assert_eq(aemp_port_close(a.node, child), 0);
    cr_assert(wait_int(&mon.count, 1, 2000));
    aemp_buf down = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_format(&down, "{'DOWN', ~p, process, ~p, normal}", &sm.ref, &sm.pid), 0);
    aemp_term dt = aemp_buf_term(&down);
    char dtext[512];
    aemp_term_print(&dt, dtext, sizeof dtext);
    cr_assert_str_eq(mon.last, dtext);
    cr_assert(alive(a.node, pm));
    /* not exported here: a port that dies with undef; linked, pm dies too */
    struct spawnrec su = {0};
    cr_assert_eq(
        aemp_spawn(a.node, pm, "a@127.0.0.1", "w", "nope", &at, AEMP_SPAWN_LINK, rec_spawn, &su),
        0);
    cr_assert(!alive(a.node, pm), "the undef death took the linked requester");
    cr_assert(wait_int(&su.calls, 1, 2000));
    cr_assert_eq(su.err, 0);
    /* a spawn whose callback waits when the node closes gets ECLOSED */
    aemp_port pq;
    struct spawnrec sc = {0};
    cr_assert_eq(aemp_port_open(a.node, inbox_cb, &mon, &pq), 0);
    cr_assert_eq(aemp_spawn(a.node, pq, "a@127.0.0.1", "w", "start", &at, 0, rec_spawn, &sc), 0);
    aemp_buf_free(&args);
    aemp_buf_free(&down);
    stop_node(&a);
    cr_assert_eq(sc.calls, 1);
    cr_assert_eq(sc.err, AEMP_ECLOSED);
}

static int closing_done, closed_flag;

/* The first failed spawn closes its node. */
static void close_on_spawn(aemp_node *n, int err, const aemp_addr *pid, const aemp_addr *ref,
                           void *arg)
{
    rec_spawn(n, err, pid, ref, arg);
    if (!closing_done) {
        closing_done = 1;
        aemp_node_close(n, on_closed, &closed_flag);
    }
}

Test(spawn, errors_reach_the_callback_once)
{
    struct node_ctx a, b;
    struct initrec ok = {0};
    start_pair(&a, &b, &ok);
    struct inbox in = {0};
    aemp_port p;
    cr_assert_eq(aemp_port_open(a.node, inbox_cb, &in, &p), 0);
    aemp_buf args = AEMP_BUF_INIT;
    args_of(&args, "[]");
    aemp_term at = aemp_buf_term(&args);

    /* bad calls: no callback */
    struct spawnrec none = {0};
    aemp_buf bad = AEMP_BUF_INIT;
    args_of(&bad, "{not, a, list}");
    aemp_term bt = aemp_buf_term(&bad);
    cr_assert_eq(aemp_spawn(a.node, p, "b@127.0.0.1", "w", "start", &bt, 0, rec_spawn, &none),
                 AEMP_EINVAL);
    cr_assert_eq(aemp_spawn(a.node, p, "nohost", "w", "start", &at, 0, rec_spawn, &none),
                 AEMP_EINVAL);
    cr_assert_eq(aemp_spawn(a.node, p, "b@127.0.0.1", "w", "start", &at, 4, rec_spawn, &none),
                 AEMP_EINVAL);
    cr_assert_eq(aemp_spawn(a.node, (aemp_port){999999}, "b@127.0.0.1", "w", "start", &at, 0,
                            rec_spawn, &none),
                 AEMP_ENOENT);

    /* a node that is not there: the connection's error */
    struct spawnrec gone = {0};
    cr_assert_eq(aemp_spawn(a.node, p, "nobody@127.0.0.1", "w", "start", &at, AEMP_SPAWN_LINK,
                            rec_spawn, &gone),
                 0);
    cr_assert(wait_int(&gone.calls, 1, 5000));
    cr_assert_lt(gone.err, 0);
    cr_assert(!gone.has_pid);
    cr_assert(alive(a.node, p), "a failed spawn does not kill the requester");

    /* the requester dies before the reply: ENOENT, and the linked child
     * gets the requester's exit reason */
    aemp_port pd;
    cr_assert_eq(aemp_port_open(a.node, inbox_cb, &in, &pd), 0);
    struct spawnrec sd = {0};
    cr_assert_eq(aemp_spawn(a.node, pd, "b@127.0.0.1", "w", "start", &at,
                            AEMP_SPAWN_LINK | AEMP_SPAWN_MONITOR, rec_spawn, &sd),
                 0);
    aemp_buf r = AEMP_BUF_INIT;
    args_of(&r, "{gone, 1}");
    aemp_term rt = aemp_buf_term(&r);
    cr_assert_eq(aemp_port_kill(a.node, pd, &rt), 0);
    cr_assert(wait_int(&sd.calls, 1, 5000));
    cr_assert_eq(sd.err, AEMP_ENOENT);
    cr_assert_eq(ok.calls, 1);
    for (int i = 0; i < 500 && alive(b.node, ok.self); i++)
        uv_run(&loop, UV_RUN_ONCE);
    cr_assert(!alive(b.node, ok.self), "the linked child died with the requester");

    /* the node closes first: AEMP_ECLOSED, inside aemp_node_close; here
     * from the callback of another spawn that failed */
    struct spawnrec sc[2] = {{0}, {0}};
    for (int i = 0; i < 2; i++)
        cr_assert_eq(aemp_spawn(a.node, p, "nobody2@127.0.0.1", "w", "start", &at, 0,
                                close_on_spawn, &sc[i]),
                     0);
    int both = 0;
    for (int i = 0; i < 500 && !both; i++) {
        uv_run(&loop, UV_RUN_ONCE);
        both = sc[0].calls && sc[1].calls;
    }
    cr_assert(both);
    cr_assert(closing_done, "a callback closed the node");
    cr_assert_eq(sc[0].calls + sc[1].calls, 2, "each callback once");
    cr_assert(sc[0].err == AEMP_ECLOSED || sc[1].err == AEMP_ECLOSED);
    cr_assert(sc[0].err != AEMP_ECLOSED || sc[1].err != AEMP_ECLOSED,
              "one failed with the connection's error");
    cr_assert(run_until(&closed_flag, 5000));
    cr_assert_eq(sc[0].calls + sc[1].calls, 2);
    cr_assert_eq(gone.calls, 1);
    cr_assert_eq(sd.calls, 1);
    aemp_buf_free(&args);
    aemp_buf_free(&bad);
    aemp_buf_free(&r);
    stop_node(&b);
}

/* Log lines, for what a node answered hostile requests. */
static char logged[8192];

static void log_cb(int level, const char *msg, void *arg)
{
    size_t used = strlen(logged);
    snprintf(logged + used, sizeof logged - used, "%s\n", msg);
}

/* Send {SPAWN_REQUEST, Ref, From, GL, Mfa, Opts} + Args from a to b. */
static void raw_request(struct node_ctx *a, struct node_ctx *b, aemp_port from, const char *mfa,
                        const char *opts, const char *args)
{
    aemp_addr ref, self;
    aemp__proc_ref(a->node, &ref);
    cr_assert_eq(aemp_port_addr(a->node, from, &self), 0);
    aemp_buf m = AEMP_BUF_INIT, o = AEMP_BUF_INIT, ar = AEMP_BUF_INIT, ctl = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_format(&m, mfa), 0);
    cr_assert_eq(aemp_term_format(&o, opts), 0);
    cr_assert_eq(aemp_term_format(&ar, args), 0);
    aemp_term mt = aemp_buf_term(&m), ot = aemp_buf_term(&o), at = aemp_buf_term(&ar);
    cr_assert_eq(
        aemp__ctl_enc(&ctl, AEMP__CTL_SPAWN_REQUEST, "aaatt", &ref, &self, &self, &mt, &ot), 0);
    uint32_t peer = aemp__intern(aemp_node_name(b->node), strlen(aemp_node_name(b->node)));
    cr_assert_eq(aemp__node_ctl(a->node, peer, &ctl, &at), 0);
    aemp_buf_free(&m);
    aemp_buf_free(&o);
    aemp_buf_free(&ar);
    aemp_buf_free(&ctl);
}

Test(spawn, hostile_requests)
{
    struct node_ctx a, b;
    struct initrec ok = {0};
    start_pair(&a, &b, &ok);
    aemp_port p;
    struct inbox in = {0};
    cr_assert_eq(aemp_port_open(a.node, inbox_cb, &in, &p), 0);
    logged[0] = 0;
    aemp_log_set_callback(log_cb, NULL);
    aemp_log_set_level(AEMP_LOG_INFO);
    static const char *const bad_opts[] = {
        "[foo]",
        "[{priority, bogus}]",
        "[{fullsweep_after, -1}]",
        "[{min_heap_size, x}]",
        "[{a, b, c}]",
        "[{message_queue_data, x}]",
        "[{max_heap_size, #{kill => true}}]",
        "[{min_heap_size, 1000}, {max_heap_size, 1500}]",
        "[{reply_tag, x}]",
        "[{link, []}]",
        "[{monitor, [bogus]}]",
        "[{scheduler, 2}]",
        "not_a_list",
    };
    size_t nbad = sizeof bad_opts / sizeof *bad_opts;
    for (size_t i = 0; i < nbad; i++)
        raw_request(&a, &b, p, "{w, start, 0}", bad_opts[i], "[]");
    static const char *const malformed[][2] = {
        {"{w, start}", "[]"},
        {"{w, 1, 0}", "[]"},
        {"w", "[]"},
        {"{w, start, 0}", "{not, a, list}"},
        {"{w, start, x}", "[]"},
    };
    size_t nmal = sizeof malformed / sizeof *malformed;
    for (size_t i = 0; i < nmal; i++)
        raw_request(&a, &b, p, malformed[i][0], "[]", malformed[i][1]);
    /* good options of every kind still spawn */
    raw_request(&a, &b, p, "{w, start, 1}",
                "[link, monitor, {monitor, [{tag, t}]}, {priority, high}, {async_dist, true}, "
                "{message_queue_data, off_heap}, {min_heap_size, 1000}, {max_heap_size, 1598}, "
                "{max_heap_size, #{size => 0, kill => false}}, {min_bin_vheap_size, 10}, "
                "{fullsweep_after, 0}, {scheduler, 0}]",
                "[1]");
    for (int i = 0; i < 500 && ok.calls < 1; i++)
        uv_run(&loop, UV_RUN_ONCE);
    aemp_log_set_callback(NULL, NULL);
    aemp_log_set_level(AEMP_LOG_ERROR);
    cr_assert_eq(ok.calls, 1, "only the good request ran the init");
    int badopts = 0, badargs = 0;
    for (const char *s = logged; (s = strstr(s, "answered badopt")) != NULL; s++)
        badopts++;
    for (const char *s = logged; (s = strstr(s, "answered badarg")) != NULL; s++)
        badargs++;
    cr_assert_eq(badopts, (int)nbad, "%s", logged);
    cr_assert_eq(badargs, (int)nmal, "%s", logged);
    /* the node serves on */
    struct spawnrec s = {0};
    aemp_buf args = AEMP_BUF_INIT;
    args_of(&args, "[]");
    aemp_term at = aemp_buf_term(&args);
    cr_assert_eq(aemp_spawn(a.node, p, "b@127.0.0.1", "w", "start", &at, 0, rec_spawn, &s), 0);
    cr_assert(wait_int(&s.calls, 1, 5000));
    cr_assert_eq(s.err, 0);
    cr_assert_eq(ok.calls, 2);
    aemp_buf_free(&args);
    stop_node(&a);
    stop_node(&b);
}
