/*
 * test_seeds.c - seeds and meshing, C to C (nodes on one loop): the backoff
 * schedule (bounds, jitter, cap, reset), the settings aemp_node_create
 * refuses, a seed that starts later, is lost and comes back, meshing with
 * the nodes a seed knows, and a C node's answers to erlang:nodes/0,1.
 */
#include "harness.h"

#include "svc/svc.h"

TestSuite(seeds, .init = setup, .fini = teardown, .timeout = 120);

/* ------------------------------------------------------------------ */
/* backoff                                                            */
/* ------------------------------------------------------------------ */

Test(seeds, backoff_bounds_jitter_cap_reset)
{
    aemp__backoff b;
    aemp__backoff_init(&b, 500, 30000);
    /* interval 500, 1000, 2000, ... 16000, then 30000 for good: each wait
     * between half (rounded up) and all of it */
    unsigned want[] = {500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        unsigned lo_w = aemp__backoff_next(&b, 0);
        cr_assert_eq(lo_w, want[i] - want[i] / 2, "step %zu: smallest wait %u", i, lo_w);
        b.cur_ms = want[i];
        unsigned hi_w = aemp__backoff_next(&b, want[i] - (want[i] - want[i] / 2));
        cr_assert_eq(hi_w, want[i], "step %zu: largest wait %u", i, hi_w);
        b.cur_ms = want[i];
        unsigned mid = aemp__backoff_next(&b, 0xdeadbeefu);
        cr_assert(mid >= want[i] / 2 && mid <= want[i], "step %zu: wait %u out of range", i, mid);
        cr_assert(mid <= 30000);
    }
    cr_assert_eq(b.cur_ms, 30000, "capped");
    /* random numbers land anywhere in the range, never beyond */
    aemp__backoff_init(&b, 1000, 1000);
    unsigned seen_lo = 1000, seen_hi = 0;
    for (uint32_t r = 0; r < 5000; r++) {
        uint32_t x = r * 2654435761u;
        unsigned w = aemp__backoff_next(&b, x);
        cr_assert(w >= 500 && w <= 1000, "wait %u out of [500, 1000]", w);
        if (w < seen_lo) seen_lo = w;
        if (w > seen_hi) seen_hi = w;
    }
    cr_assert(seen_lo < 600 && seen_hi > 900, "jitter spans %u..%u only", seen_lo, seen_hi);
    /* a success resets the interval */
    aemp__backoff_init(&b, 100, 800);
    for (int i = 0; i < 10; i++)
        aemp__backoff_next(&b, 7);
    cr_assert_eq(b.cur_ms, 800);
    aemp__backoff_reset(&b);
    cr_assert_eq(b.cur_ms, 100);
    unsigned w = aemp__backoff_next(&b, 3);
    cr_assert(w >= 50 && w <= 100, "after reset: %u", w);
    /* degenerate settings */
    aemp__backoff_init(&b, 0, 0);
    cr_assert_eq(aemp__backoff_next(&b, 12345), 1);
    aemp__backoff_init(&b, 2000, 10);
    cr_assert_eq(b.max_ms, 2000, "max below min counts as min");
    /* no overflow near UINT_MAX */
    aemp__backoff_init(&b, 3000000000u, 4000000000u);
    aemp__backoff_next(&b, 1);
    cr_assert_eq(b.cur_ms, 4000000000u);
}

/* ------------------------------------------------------------------ */
/* settings                                                           */
/* ------------------------------------------------------------------ */

static int create_rc(aemp_node_config cfg)
{
    aemp_node *n = NULL;
    cfg.epmd_port = epmd_port;
    cfg.cookie = "c";
    cfg.client_only = 1;
    int rc = aemp_node_create(&loop, &cfg, &n);
    if (!rc) {
        int closed = 0;
        aemp_node_close(n, on_closed, &closed);
        cr_assert(run_until(&closed, 5000));
    }
    return rc;
}

Test(seeds, settings_refused)
{
    aemp_node_config cfg = {0};
    cfg.name = "s1@localhost";
    const char *bad[] = {"nohost", NULL};
    cfg.seeds = bad;
    cr_assert_eq(create_rc(cfg), AEMP_EINVAL, "a seed that is no node name");
    const char *ok[] = {"x@localhost", NULL};
    cfg.seeds = ok;
    cfg.seed_max_ms = 3600001;
    cr_assert_eq(create_rc(cfg), AEMP_EINVAL, "seed_max_ms over the limit");
    cfg.seed_max_ms = 0;
    cfg.mesh_interval_ms = 3600001;
    cr_assert_eq(create_rc(cfg), AEMP_EINVAL, "mesh_interval_ms over the limit");
    cfg.mesh_interval_ms = -1;
    cr_assert_eq(create_rc(cfg), 0, "meshing off");
    static const char *many[1026];
    for (int i = 0; i < 1025; i++)
        many[i] = "x@localhost";
    cfg.seeds = many;
    cr_assert_eq(create_rc(cfg), AEMP_EINVAL, "more than 1024 seeds");
    many[1024] = NULL;
    cr_assert_eq(create_rc(cfg), 0, "1024 seeds (the same one)");
    /* this node itself is ignored */
    const char *self[] = {"s1@localhost", NULL};
    cfg.seeds = self;
    cr_assert_eq(create_rc(cfg), 0);
}

/* ------------------------------------------------------------------ */
/* logging                                                            */
/* ------------------------------------------------------------------ */

/* A node's config with seeds and a fast backoff. */
static aemp_node_config seeded(const char *name, const char *const *seeds, unsigned min_ms,
                               unsigned max_ms)
{
    aemp_node_config cfg = {0};
    cfg.name = name;
    cfg.cookie = "c";
    cfg.seeds = seeds;
    cfg.seed_min_ms = min_ms;
    cfg.seed_max_ms = max_ms;
    return cfg;
}

static int warn_seed_lines, warn_conn_lines;

static void count_log(int level, const char *msg, void *arg)
{
    if (level > AEMP_LOG_WARN) return;
    if (strstr(msg, "seed nobody@localhost: cannot connect")) warn_seed_lines++;
    if (strstr(msg, "cannot connect to nobody@localhost")) warn_conn_lines++;
}

Test(seeds, failures_logged_once)
{
    struct node_ctx a;
    const char *seeds[] = {"nobody@localhost", NULL};
    aemp_node_config cfg = seeded("sl@localhost", seeds, 10, 40);
    aemp_log_set_level(AEMP_LOG_WARN);
    aemp_log_set_callback(count_log, NULL);
    start_node_cfg(&a, cfg);
    /* the seed never comes: attempt after attempt fails */
    int ok = wait_int(&a.fails, 4, 10000);
    aemp_log_set_callback(NULL, NULL);
    aemp_log_set_level(AEMP_LOG_ERROR);
    cr_assert(ok, "only %d failed attempts", a.fails);
    cr_assert_eq(a.last_fail_err, AEMP_ENONODE, "err %d", a.last_fail_err);
    cr_assert_eq(warn_seed_lines, 1, "%d warnings for the seed", warn_seed_lines);
    cr_assert_eq(warn_conn_lines, 0, "%d per-attempt warnings", warn_conn_lines);
    stop_node(&a);
}

/* ------------------------------------------------------------------ */
/* seeds and meshing                                                  */
/* ------------------------------------------------------------------ */

struct answer {
    int calls, status;
    char text[512];
};

static void answer_cb(aemp_node *n, int status, const aemp_term *result, void *arg)
{
    struct answer *a = arg;
    a->calls++;
    a->status = status;
    a->text[0] = 0;
    if (result) aemp_term_print(result, a->text, sizeof a->text);
}

/* erlang:nodes(Args) on peer from n; the printed answer in a. */
static void call_nodes(aemp_node *n, const char *peer, const char *args, struct answer *a)
{
    aemp_buf b = AEMP_BUF_INIT;
    memset(a, 0, sizeof *a);
    cr_assert_eq(aemp_term_parse(&b, args, strlen(args), NULL), 0);
    aemp_term t = aemp_buf_term(&b);
    cr_assert_eq(aemp_call(n, peer, "erlang", "nodes", &t, 5000, answer_cb, a), 0);
    aemp_buf_free(&b);
    cr_assert(wait_int(&a->calls, 1, 6000), "no answer to erlang:nodes%s", args);
}

static int up_wait(aemp_node *n, const char *peer, unsigned ms)
{
    int flag = 0;
    uint64_t end = uv_now(&loop) + ms;
    while (!(flag = aemp_node_is_up(n, peer)) && uv_now(&loop) < end) {
        int tick = 0;
        run_until(&tick, 20);
    }
    return flag;
}

Test(seeds, seed_later_lost_back_and_mesh)
{
    /* a: seeds b (not running yet) and itself; fast backoff and meshing */
    struct node_ctx a, b, d;
    const char *seeds[] = {"sb@localhost", "sa@localhost", NULL};
    aemp_node_config cfg = seeded("sa@localhost", seeds, 20, 100);
    cfg.mesh_interval_ms = 100;
    start_node_cfg(&a, cfg);
    /* b starts later: a connects to it */
    start_node(&b, "sb@localhost", "c");
    cr_assert(up_wait(a.node, "sb@localhost", 5000), "a did not connect to its seed b");
    cr_assert_eq(a.ups, 1);
    /* b goes away and comes back: a connects again */
    stop_node(&b);
    cr_assert(wait_int(&a.downs, 1, 5000), "a did not see b go");
    start_node(&b, "sb@localhost", "c");
    cr_assert(up_wait(a.node, "sb@localhost", 5000), "a did not reconnect to b");
    cr_assert(wait_int(&a.ups, 2, 5000));
    /* d connects to b: a meshes with d through b */
    start_node(&d, "sd@localhost", "c");
    cr_assert_eq(aemp_node_connect(d.node, "sb@localhost"), 0);
    cr_assert(up_wait(d.node, "sb@localhost", 5000));
    cr_assert(up_wait(a.node, "sd@localhost", 5000), "a did not mesh with d");
    /* a C node answers erlang:nodes/0,1 as a hidden Erlang node would */
    struct answer r;
    call_nodes(b.node, "sa@localhost", "[]", &r);
    cr_assert_eq(r.status, AEMP_RPC_RETURN);
    cr_assert_str_eq(r.text, "[]", "nodes(): %s", r.text);
    call_nodes(b.node, "sa@localhost", "[this]", &r);
    cr_assert_str_eq(r.text, "[sa@localhost]", "nodes(this): %s", r.text);
    call_nodes(b.node, "sa@localhost", "[[visible, hidden]]", &r);
    cr_assert(strstr(r.text, "sb@localhost") && strstr(r.text, "sd@localhost") &&
                  !strstr(r.text, "sa@localhost"),
              "nodes([visible, hidden]): %s", r.text);
    call_nodes(b.node, "sa@localhost", "[visible]", &r);
    cr_assert_str_eq(r.text, "[]", "nodes(visible): %s", r.text);
    call_nodes(b.node, "sa@localhost", "[[this, known]]", &r);
    cr_assert(strncmp(r.text, "[sa@localhost,", 14) == 0, "nodes([this, known]): %s", r.text);
    call_nodes(b.node, "sa@localhost", "[bogus]", &r);
    cr_assert_eq(r.status, AEMP_RPC_ERROR);
    cr_assert_str_eq(r.text, "badarg");
    /* a closes with its seeds' timers and a mesh query perhaps in flight */
    stop_node(&a);
    stop_node(&d);
    stop_node(&b);
}
