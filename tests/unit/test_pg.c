/*
 * test_pg.c - families of ports between two C nodes speaking pg's
 * protocol (src/svc/pg.c): joins (several times) and leaves seen on the
 * other node and told to watchers, a dead port's memberships gone, a lost
 * node's members gone, members per scope, hostile messages to a scope
 * dropped without changing what it holds, the limit on remote members, and
 * a family of hundreds of members thinned on both sides, and pg's settings.
 */
#include "harness.h"

#include "svc/pg.h"

TestSuite(pg, .init = setup, .fini = teardown, .timeout = 120);

struct seen {
    int joins, leaves;
    char family[64];
    aemp_addr last;
};

static void on_change(aemp_node *n, const char *family, size_t flen, const aemp_addr *member,
                      bool joined, void *arg)
{
    struct seen *s = arg;
    if (joined)
        s->joins++;
    else
        s->leaves++;
    snprintf(s->family, sizeof s->family, "%s", family);
    s->last = *member;
}

static void start_pg(struct node_ctx *c, const char *name, const char *scopes, unsigned max)
{
    aemp_node_config cfg = {0};
    cfg.name = name;
    cfg.cookie = "secret";
    cfg.pg_scopes = scopes;
    cfg.pg_max_members = max;
    start_node_cfg(c, cfg);
}

static int members(aemp_node *n, const char *scope, const char *family, aemp_addr *one)
{
    aemp_addr out[8];
    int k = aemp_pg_members(n, scope, family, out, 8);
    if (k > 0 && one) *one = out[0];
    return k;
}

/* Run the loop until family has want members on n (deadline 10 s). */
static bool wait_members(aemp_node *n, const char *family, int want)
{
    uint64_t deadline = uv_now(&loop) + 10000;
    while (members(n, NULL, family, NULL) != want) {
        uv_update_time(&loop);
        if (uv_now(&loop) > deadline) return false;
        int never = 0;
        run_until(&never, 10);
    }
    return true;
}

static void nop_cb(aemp_node *n, aemp_port self, const aemp_term *msg, const aemp_addr *from,
                   void *arg)
{
}

Test(pg, join_leave_die_between_c_nodes)
{
    struct node_ctx a, b;
    start_pg(&a, "a@127.0.0.1", "aemp", 0);
    start_pg(&b, "b@127.0.0.1", "aemp, other", 0);
    struct seen sb = {0}, sa = {0};
    uint64_t wb;
    cr_assert_eq(aemp__pg_watch(b.node, "fam", on_change, &sb, &wb), 0);
    cr_assert_eq(aemp__pg_watch(a.node, NULL, on_change, &sa, NULL), 0);
    aemp_port p, q;
    aemp_addr pa, got;
    cr_assert_eq(aemp_port_open(a.node, nop_cb, NULL, &p), 0);
    cr_assert_eq(aemp_port_open(a.node, nop_cb, NULL, &q), 0);
    cr_assert_eq(aemp_port_addr(a.node, p, &pa), 0);
    /* joined before the nodes know each other: told in the sync */
    cr_assert_eq(aemp_pg_join(a.node, "fam", p), 0);
    cr_assert_eq(aemp_pg_join(a.node, "fam", p), 0);
    cr_assert_eq(sa.joins, 1, "a local join is told once per member");
    cr_assert_eq(members(a.node, "aemp", "fam", &got), 1);
    cr_assert(aemp_addr_equal(&got, &pa));
    cr_assert_eq(aemp_node_connect(a.node, "b@127.0.0.1"), 0);
    cr_assert(wait_int(&sb.joins, 1, 5000), "b never saw a's member");
    cr_assert(aemp_addr_equal(&sb.last, &pa));
    cr_assert_str_eq(sb.family, "fam");
    cr_assert_eq(members(b.node, "aemp", "fam", &got), 1);
    cr_assert(aemp_addr_equal(&got, &pa));
    /* b's scope `other` has no peer on a */
    cr_assert_eq(members(b.node, "other", "fam", NULL), 0);
    cr_assert_eq(aemp_pg_members(b.node, "nosuch", "fam", NULL, 0), AEMP_ENOENT);
    /* joined after: told by a join; a second member */
    cr_assert_eq(aemp_pg_join(a.node, "fam", q), 0);
    cr_assert(wait_members(b.node, "fam", 2));
    cr_assert_eq(sb.joins, 2);
    /* p joined twice: one leave keeps it a member */
    cr_assert_eq(aemp_pg_leave(a.node, "fam", p), 0);
    cr_assert_eq(aemp_pg_leave(a.node, "fam", q), 0);
    cr_assert_eq(aemp_pg_leave(a.node, "fam", q), AEMP_ENOENT);
    cr_assert(wait_int(&sb.leaves, 1, 5000));
    cr_assert(wait_members(b.node, "fam", 1));
    cr_assert_eq(members(b.node, NULL, "fam", &got), 1);
    cr_assert(aemp_addr_equal(&got, &pa));
    /* b's own port joins: b's local and a's remote member */
    aemp_port r;
    cr_assert_eq(aemp_port_open(b.node, nop_cb, NULL, &r), 0);
    cr_assert_eq(aemp_pg_join(b.node, "fam", r), 0);
    cr_assert_eq(sb.joins, 3);
    cr_assert(wait_members(a.node, "fam", 2));
    /* a port that dies leaves every group */
    cr_assert_eq(aemp_port_close(a.node, p), 0);
    cr_assert(wait_int(&sb.leaves, 2, 5000));
    cr_assert(aemp_addr_equal(&sb.last, &pa));
    cr_assert_eq(members(b.node, NULL, "fam", NULL), 1);
    cr_assert_eq(members(a.node, NULL, "fam", NULL), 1);
    /* a node that goes: its members go */
    cr_assert_eq(aemp_pg_join(a.node, "fam", q), 0);
    cr_assert(wait_members(b.node, "fam", 2));
    cr_assert_eq(aemp__pg_unwatch(b.node, wb), 0);
    cr_assert_eq(aemp__pg_unwatch(b.node, wb), AEMP_ENOENT);
    stop_node(&a);
    cr_assert(wait_members(b.node, "fam", 1));
    cr_assert_eq(sb.leaves, 2, "an unwatched family is not told");
    /* argument checks */
    cr_assert_eq(aemp_pg_join(b.node, "", r), AEMP_EINVAL);
    cr_assert_eq(aemp_pg_join(b.node, "bad\xff", r), AEMP_EINVAL);
    cr_assert_eq(aemp_pg_join(b.node, "fam", (aemp_port){999999}), AEMP_ENOENT);
    stop_node(&b);
}

/* Whether out[0..n) holds exactly the pids of ports[from..to), each once. */
static bool same_pids(aemp_node *n, const aemp_addr *out, int k, const aemp_port *ports, int from,
                      int to)
{
    if (k != to - from) return false;
    for (int i = from; i < to; i++) {
        aemp_addr pid;
        int seen = 0;
        if (aemp_port_addr(n, ports[i], &pid)) return false;
        for (int j = 0; j < k; j++)
            seen += aemp_addr_equal(&out[j], &pid);
        if (seen != 1) return false;
    }
    return true;
}

/* A family of hundreds of members, some joined twice: taken in one sync,
 * thinned by leaves and deaths (the family's table keeps holes, then
 * closes them) on both nodes, listed right after each step. */
Test(pg, many_members)
{
    enum { N = 300 };
    struct node_ctx a, b;
    start_pg(&a, "a@127.0.0.1", "aemp", 0);
    start_pg(&b, "b@127.0.0.1", "aemp", 0);
    struct seen sb = {0};
    cr_assert_eq(aemp__pg_watch(b.node, "big", on_change, &sb, NULL), 0);
    static aemp_port ports[N + 20];
    static aemp_addr out[N + 40];
    for (int i = 0; i < N + 20; i++)
        cr_assert_eq(aemp_port_open(a.node, nop_cb, NULL, &ports[i]), 0);
    for (int i = 0; i < N; i++)
        cr_assert_eq(aemp_pg_join(a.node, "big", ports[i]), 0);
    for (int i = 0; i < 50; i++)
        cr_assert_eq(aemp_pg_join(a.node, "big", ports[i]), 0);
    cr_assert_eq(aemp_node_connect(a.node, "b@127.0.0.1"), 0);
    cr_assert(wait_members(b.node, "big", N), "b never had a's %d members", N);
    cr_assert_eq(sb.joins, N, "each pid told once");
    int k = aemp_pg_members(b.node, NULL, "big", out, N + 40);
    cr_assert(same_pids(a.node, out, k, ports, 0, N));
    k = aemp_pg_members(b.node, "aemp", "big", out, N + 40);
    cr_assert(same_pids(a.node, out, k, ports, 0, N));
    /* one leave each of 0..99: 0..49 joined twice stay */
    for (int i = 0; i < 100; i++)
        cr_assert_eq(aemp_pg_leave(a.node, "big", ports[i]), 0);
    cr_assert(wait_members(b.node, "big", N - 50));
    cr_assert_eq(aemp_pg_members(a.node, NULL, "big", NULL, 0), N - 50);
    /* 100..N-1 die: 50 members left of N, the tables full of holes */
    for (int i = 100; i < N; i++)
        cr_assert_eq(aemp_port_close(a.node, ports[i]), 0);
    cr_assert(wait_members(b.node, "big", 50));
    cr_assert_eq(sb.leaves, N - 50);
    for (int side = 0; side < 2; side++) {
        aemp_node *n = side ? b.node : a.node;
        k = aemp_pg_members(n, NULL, "big", out, N + 40);
        cr_assert(same_pids(a.node, out, k, ports, 0, 50), "side %d: %d members", side, k);
        k = aemp_pg_members(n, "aemp", "big", out, N + 40);
        cr_assert(same_pids(a.node, out, k, ports, 0, 50), "side %d", side);
    }
    /* new members after that, then the last ones leave */
    for (int i = N; i < N + 20; i++)
        cr_assert_eq(aemp_pg_join(a.node, "big", ports[i]), 0);
    cr_assert(wait_members(b.node, "big", 70));
    for (int i = 0; i < 50; i++)
        cr_assert_eq(aemp_pg_leave(a.node, "big", ports[i]), 0);
    cr_assert(wait_members(b.node, "big", 20));
    k = aemp_pg_members(b.node, NULL, "big", out, N + 40);
    cr_assert(same_pids(a.node, out, k, ports, N, N + 20));
    cr_assert_eq(sb.joins, N + 20);
    /* the node goes: its members go */
    stop_node(&a);
    cr_assert(wait_members(b.node, "big", 0));
    cr_assert_eq(sb.leaves, N + 20);
    stop_node(&b);
}

/* Messages a scope must not act on: it drops them and keeps what it has. */
Test(pg, hostile_messages_dropped)
{
    struct node_ctx a, b;
    start_pg(&a, "a@127.0.0.1", "aemp", 0);
    start_pg(&b, "b@127.0.0.1", "aemp", 3);
    aemp_port p, x;
    aemp_addr pa, scope, bscope;
    cr_assert_eq(aemp_port_open(a.node, nop_cb, NULL, &p), 0);
    cr_assert_eq(aemp_port_open(a.node, nop_cb, NULL, &x), 0);
    cr_assert_eq(aemp_port_addr(a.node, p, &pa), 0);
    cr_assert_eq(aemp_pg_join(a.node, "fam", p), 0);
    cr_assert_eq(aemp_node_connect(a.node, "b@127.0.0.1"), 0);
    cr_assert(wait_members(b.node, "fam", 1));
    name_addr(&bscope, b.node, "aemp");
    aemp_addr_name(&scope, "b@127.0.0.1", "aemp");
    /* the scopes' pids */
    aemp_addr ascope, bpid;
    aemp_port sp;
    cr_assert_eq(aemp_port_of_addr(a.node, &(aemp_addr){0}, &sp), AEMP_ENOENT);
    name_addr(&ascope, a.node, "aemp");
    cr_assert_eq(aemp_port_of_addr(a.node, &ascope, &sp), 0);
    cr_assert_eq(aemp_port_addr(a.node, sp, &ascope), 0);
    cr_assert_eq(aemp_port_of_addr(b.node, &bscope, &sp), 0);
    cr_assert_eq(aemp_port_addr(b.node, sp, &bpid), 0);
    static const char *bad[] = {
        "hello",
        "{discover, notapid}",
        "{join, ~p}",
        "{'$gen_cast', {other, 1}}",
        "{'$gen_call', {~p, ref}, members}",
        "{sync, ~p, notalist}",
        "{sync, ~p, [{g, ~p}]}",  /* Pids must be a list */
        "{sync, ~p, [{g, [1]}]}", /* not pids */
        "{leave, ~p, ~p, notalist}",
        "{leave, ~p, [x], [fam]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_assert_eq(aemp_sendf(a.node, x, &scope, bad[i], &ascope, &pa), 0);
    /* a sender claiming a peer of another node: b's own scope */
    cr_assert_eq(aemp_sendf(a.node, x, &scope, "{join, ~p, fam, ~p}", &bpid, &pa), 0);
    /* a peer's pids that are not of its node; in a sync, after one of it
     * (taken whole, it would replace fam's member) */
    cr_assert_eq(aemp_sendf(a.node, x, &scope, "{join, ~p, fam, ~p}", &ascope, &bpid), 0);
    cr_assert_eq(aemp_sendf(a.node, x, &scope, "{'$gen_cast', {sync, ~p, [{mixed, [~p, ~p]}]}}",
                            &ascope, &pa, &bpid),
                 0);
    /* beyond pg_max_members (3): dropped; within it: taken */
    cr_assert_eq(
        aemp_sendf(a.node, x, &scope, "{join, ~p, big, [~p, ~p, ~p]}", &ascope, &pa, &pa, &pa), 0);
    cr_assert_eq(aemp_sendf(a.node, x, &scope, "{join, ~p, ~s, ~p}", &ascope, "fam", &pa), 0);
    /* from b's own side, without a sender */
    cr_assert_eq(aemp_sendf(b.node, (aemp_port){0}, &bscope, "{join, ~p, fam, ~p}", &ascope, &pa),
                 0);
    /* a probe after them all, in order on the same connection */
    cr_assert_eq(aemp_sendf(a.node, x, &scope, "{join, ~p, probe, ~p}", &ascope, &pa), 0);
    cr_assert(wait_members(b.node, "probe", 1));
    cr_assert_eq(members(b.node, NULL, "big", NULL), 0);
    cr_assert_eq(members(b.node, NULL, "mixed", NULL), 0);
    /* the binary group <<"fam">> is family fam too: still one pid */
    cr_assert_eq(members(b.node, NULL, "fam", NULL), 1);
    cr_assert_eq(members(b.node, "aemp", "fam", NULL), 1);
    /* a leave from the peer of a group it never joined is no harm */
    cr_assert_eq(aemp_sendf(a.node, x, &scope, "{leave, ~p, ~p, [nosuch, probe]}", &ascope, &pa),
                 0);
    cr_assert(wait_members(b.node, "probe", 0));
    cr_assert_eq(members(b.node, NULL, "fam", NULL), 1);
    stop_node(&a);
    cr_assert(wait_members(b.node, "fam", 0));
    stop_node(&b);
}

struct fake_scope {
    int discovers, syncs;
};

static void fake_cb(aemp_node *n, aemp_port self, const aemp_term *msg, const aemp_addr *from,
                    void *arg)
{
    struct fake_scope *f = arg;
    char tag[32];
    if (aemp_term_tag(msg, tag, sizeof tag) != 0) return;
    if (strcmp(tag, "discover") == 0) f->discovers++;
    if (strcmp(tag, "$gen_cast") == 0) f->syncs++;
}

/* pg's settings: a scope that comes up after the connection is found
 * within pg_rediscover_ms (well before the default 5 s); a group term
 * longer than pg_max_group_term, and the names of new groups beyond
 * pg_max_group_names, are dropped; values past their bounds refused. */
Test(pg, settings)
{
    aemp_node_config cfg = {0};
    cfg.name = "x@127.0.0.1";
    cfg.cookie = "secret";
    cfg.epmd_port = epmd_port;
    cfg.pg_scopes = "aemp";
    aemp_node *x = NULL;
    cfg.pg_max_group_term = 16777217;
    cr_assert_eq(aemp_node_create(&loop, &cfg, &x), AEMP_EINVAL);
    cfg.pg_max_group_term = 0;
    cfg.pg_rediscover_ms = 3600001;
    cr_assert_eq(aemp_node_create(&loop, &cfg, &x), AEMP_EINVAL);
    cr_assert_null(x);
    uv_run(&loop, UV_RUN_NOWAIT);

    struct node_ctx a, b;
    start_pg(&a, "a@127.0.0.1", "", 0); /* no scope: one is made by hand */
    cfg = (aemp_node_config){0};
    cfg.name = "b@127.0.0.1";
    cfg.cookie = "secret";
    cfg.pg_scopes = "aemp";
    cfg.pg_max_group_term = 16;
    cfg.pg_max_group_names = 10;
    cfg.pg_rediscover_ms = 50;
    start_node_cfg(&b, cfg);
    cr_assert_eq(aemp_node_connect(a.node, "b@127.0.0.1"), 0);
    cr_assert(wait_int(&b.ups, 1, 5000), "b never saw a up");
    /* a scope on a, after the connection: b's next rediscovery finds it */
    struct fake_scope f = {0};
    aemp_port fake, p, q;
    aemp_addr fpid, pa, qa, scope;
    cr_assert_eq(aemp_port_open(a.node, fake_cb, &f, &fake), 0);
    cr_assert_eq(aemp_register(a.node, "aemp", fake), 0);
    cr_assert(wait_int(&f.discovers, 1, 2000), "no rediscovery within 2 s");
    cr_assert_eq(aemp_port_addr(a.node, fake, &fpid), 0);
    cr_assert_eq(aemp_port_open(a.node, nop_cb, NULL, &p), 0);
    cr_assert_eq(aemp_port_open(a.node, nop_cb, NULL, &q), 0);
    cr_assert_eq(aemp_port_addr(a.node, p, &pa), 0);
    cr_assert_eq(aemp_port_addr(a.node, q, &qa), 0);
    aemp_addr_name(&scope, "b@127.0.0.1", "aemp");
    /* group names charged: fam 4 bytes, g2 3, g3 3 (10: the limit), g4 3 */
    cr_assert_eq(
        aemp_sendf(a.node, fake, &scope, "{'$gen_cast', {sync, ~p, [{fam, [~p]}]}}", &fpid, &pa),
        0);
    cr_assert(wait_int(&f.syncs, 1, 5000), "b answered no sync");
    static const char *msgs[] = {
        "{join, ~p, g2, ~p}",
        "{join, ~p, g3, ~p}",
        "{join, ~p, g4, ~p}", /* beyond the names */
        /* a group term of 27 bytes: the leave is dropped whole */
        "{leave, ~p, ~p, [fam, a_long_group_name_over_16]}",
    };
    for (size_t i = 0; i < sizeof msgs / sizeof *msgs; i++)
        cr_assert_eq(aemp_sendf(a.node, fake, &scope, msgs[i], &fpid, &pa), 0);
    /* a probe after them, in order (to a group there: no new name) */
    cr_assert_eq(aemp_sendf(a.node, fake, &scope, "{join, ~p, g2, ~p}", &fpid, &qa), 0);
    cr_assert(wait_members(b.node, "g2", 2));
    cr_assert_eq(members(b.node, NULL, "fam", NULL), 1, "a group term beyond pg_max_group_term");
    cr_assert_eq(members(b.node, NULL, "g3", NULL), 1);
    cr_assert_eq(members(b.node, NULL, "g4", NULL), 0, "a name beyond pg_max_group_names");
    stop_node(&a);
    cr_assert(wait_members(b.node, "fam", 0));
    stop_node(&b);
}

/* Scope names the node refuses: one taken by a service, one given twice,
 * more than 16. */
Test(pg, bad_scopes)
{
    static const struct {
        const char *scopes;
        int err;
    } cases[] = {
        {"net_kernel", AEMP_EEXIST},
        {"a,b a", AEMP_EINVAL},
        {"a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q", AEMP_EINVAL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        aemp_node_config cfg = {0};
        cfg.name = "x@127.0.0.1";
        cfg.cookie = "secret";
        cfg.epmd_port = epmd_port;
        cfg.pg_scopes = cases[i].scopes;
        aemp_node *n = NULL;
        cr_assert_eq(aemp_node_create(&loop, &cfg, &n), cases[i].err, "%s", cases[i].scopes);
        cr_assert_null(n);
        uv_run(&loop, UV_RUN_NOWAIT);
    }
    struct node_ctx a;
    start_pg(&a, "a@127.0.0.1", "", 0);
    aemp_port p;
    cr_assert_eq(aemp_port_open(a.node, nop_cb, NULL, &p), 0);
    cr_assert_eq(aemp_pg_join(a.node, "fam", p), AEMP_ENOTSUP);
    cr_assert_eq(aemp_pg_members(a.node, NULL, "fam", NULL, 0), AEMP_ENOTSUP);
    stop_node(&a);
}
