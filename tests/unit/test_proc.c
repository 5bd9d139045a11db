/*
 * test_proc.c - the process layer: port ids past the old 28-bit and the
 * 32-bit limits, stale ids, links and monitors local-local and across two
 * nodes (both directions), exit translations, references, long link
 * chains, many monitors, and port exit events.
 */
#include "harness.h"

#include "proc/proc.h"
#include "svc/db.h"

/* these tests count ports and monitors exactly: no aemp_db service (its
 * peer monitors would count) */
__attribute__((constructor)) static void no_db_service(void)
{
    aemp__db_test_off = true;
}

TestSuite(proc, .init = setup, .fini = teardown, .timeout = 120);

/* A port that keeps what it was sent: the last message printed, and the
 * count. */
struct inbox {
    int count;
    char last[512];
    char tag[32];
};

static void inbox_cb(aemp_node *n, aemp_port self, const aemp_term *msg, const aemp_addr *from,
                     void *arg)
{
    struct inbox *in = arg;
    in->count++;
    aemp_term_print(msg, in->last, sizeof in->last);
    if (aemp_term_tag(msg, in->tag, sizeof in->tag)) in->tag[0] = 0;
}

static void term_of(aemp_buf *b, const char *fmt)
{
    b->len = 0;
    cr_assert_eq(aemp_term_format(b, fmt), 0);
}

static bool alive(aemp_node *n, aemp_port p)
{
    aemp_addr a;
    return aemp_port_addr(n, p, &a) == 0;
}

/* A port on n keeping what it gets in *in; its address in *a. */
static void open_inbox(aemp_node *n, struct inbox *in, aemp_port *p, aemp_addr *a)
{
    cr_assert_eq(aemp_port_open(n, inbox_cb, in, p), 0);
    cr_assert_eq(aemp_port_addr(n, *p, a), 0);
}

/* Port ids go on past 2^28 (where 15 + 13 bits of an old pid end) and past
 * 2^32 (where the pid's Serial starts to count): every port is reached by
 * its address, locally and from another node, and a closed one stays
 * detectably gone. */
Test(proc, ids_past_old_limits)
{
    struct node_ctx a, b;
    start_node(&a, "a@127.0.0.1", "secret");
    start_node(&b, "b@127.0.0.1", "secret");
    const uint64_t starts[] = {(1ull << 28) - 3, (1ull << 32) - 3};
    for (int s = 0; s < 2; s++) {
        aemp__proc_set_next_id(a.node, starts[s]);
        struct inbox in[6];
        memset(in, 0, sizeof in);
        aemp_port p[6];
        aemp_addr addr[6];
        for (int i = 0; i < 6; i++) {
            cr_assert_eq(aemp_port_open(a.node, inbox_cb, &in[i], &p[i]), 0);
            cr_assert_eq(p[i].id, starts[s] + 1 + (uint64_t)i);
            cr_assert_eq(aemp_port_addr(a.node, p[i], &addr[i]), 0);
            char text[128];
            cr_assert_gt(aemp_addr_format(&addr[i], text, sizeof text), 0);
            aemp_addr back;
            aemp_port again;
            cr_assert_eq(aemp_addr_parse(text, &back), 0);
            cr_assert(aemp_addr_equal(&back, &addr[i]), "%s", text);
            cr_assert_eq(aemp_port_of_addr(a.node, &back, &again), 0);
            cr_assert_eq(again.id, p[i].id);
        }
        /* close every other one: sends to them are dropped, not misrouted */
        for (int i = 0; i < 6; i += 2)
            cr_assert_eq(aemp_port_close(a.node, p[i]), 0);
        for (int i = 0; i < 6; i++) {
            cr_assert_eq(aemp_sendf(a.node, (aemp_port){0}, &addr[i], "{local, ~i}", (int64_t)i),
                         0);
            cr_assert_eq(aemp_sendf(b.node, (aemp_port){0}, &addr[i], "{remote, ~i}", (int64_t)i),
                         0);
        }
        for (int i = 1; i < 6; i += 2)
            cr_assert(wait_int(&in[i].count, 2, 5000), "port %d got %d", i, in[i].count);
        for (int i = 0; i < 6; i += 2) {
            cr_assert_eq(in[i].count, 0);
            cr_assert(!alive(a.node, p[i]));
            aemp_port gone;
            cr_assert_eq(aemp_port_of_addr(a.node, &addr[i], &gone), AEMP_ENOENT);
        }
        cr_assert_str_eq(in[5].last, "{remote,5}");
    }
    stop_node(&a);
    stop_node(&b);
}

Test(proc, local_monitor_fires_once_with_reason)
{
    struct node_ctx a;
    start_node(&a, "a@127.0.0.1", "secret");
    struct inbox w = {0}, t = {0};
    aemp_port wp, tp;
    aemp_addr taddr, ref, ref2;
    cr_assert_eq(aemp_port_open(a.node, inbox_cb, &w, &wp), 0);
    cr_assert_eq(aemp_port_open(a.node, inbox_cb, &t, &tp), 0);
    cr_assert_eq(aemp_port_addr(a.node, tp, &taddr), 0);
    cr_assert_eq(aemp_monitor(a.node, wp, &taddr, &ref), 0);
    cr_assert_eq(ref.kind, AEMP_ADDR_REF);
    cr_assert_eq(aemp_monitor(a.node, wp, &taddr, &ref2), 0);
    cr_assert(!aemp_addr_equal(&ref, &ref2));
    cr_assert_eq(aemp_demonitor(a.node, &ref2), 0);
    cr_assert_eq(aemp_demonitor(a.node, &ref2), AEMP_ENOENT);
    aemp_buf r = AEMP_BUF_INIT;
    term_of(&r, "{bad, 1}");
    aemp_term rt = aemp_buf_term(&r);
    cr_assert_eq(aemp_port_kill(a.node, tp, &rt), 0);
    cr_assert(wait_int(&w.count, 1, 2000));
    cr_assert_str_eq(w.tag, "DOWN");
    cr_assert(strstr(w.last, ",process,#Pid<") != NULL, "%s", w.last);
    cr_assert(strstr(w.last, ",{bad,1}}") != NULL, "%s", w.last);
    /* fired once: a second kill of the dead port does nothing */
    cr_assert_eq(aemp_port_kill(a.node, tp, &rt), 0);
    uv_run(&loop, UV_RUN_NOWAIT);
    cr_assert_eq(w.count, 1);
    cr_assert_eq(aemp_demonitor(a.node, &ref), AEMP_ENOENT);
    /* a monitor of a port that is gone fires at once with noproc; one of a
     * name does too, and names {Name, Node} */
    cr_assert_eq(aemp_monitor(a.node, wp, &taddr, &ref), 0);
    cr_assert(wait_int(&w.count, 2, 2000));
    cr_assert(strstr(w.last, ",noproc}") != NULL, "%s", w.last);
    aemp_addr name;
    name_addr(&name, a.node, "nobody");
    cr_assert_eq(aemp_monitor(a.node, wp, &name, &ref), 0);
    cr_assert(wait_int(&w.count, 3, 2000));
    cr_assert(strstr(w.last, "{nobody,'a@127.0.0.1'},noproc}") != NULL, "%s", w.last);
    aemp_buf_free(&r);
    stop_node(&a);
}

/* Monitors and links towards a node that cannot be reached fire with
 * noconnection once the attempt has failed; a monitor of a missing local
 * port fires from the loop, after aemp_monitor() has returned its ref. */
Test(proc, unreachable_node_and_deferred_noproc)
{
    struct node_ctx a;
    start_node(&a, "a@127.0.0.1", "secret");
    struct inbox w = {0}, l = {0};
    aemp_port wp, lp;
    cr_assert_eq(aemp_port_open(a.node, inbox_cb, &w, &wp), 0);
    cr_assert_eq(aemp_port_open(a.node, inbox_cb, &l, &lp), 0);
    aemp_addr far, ref;
    cr_assert_eq(aemp_addr_parse("nosuch@127.0.0.1#<5.0.77>", &far), 0);
    cr_assert_eq(aemp_monitor(a.node, wp, &far, &ref), 0);
    cr_assert_eq(aemp_link(a.node, lp, &far), 0);
    cr_assert(wait_int(&w.count, 1, 15000), "no 'DOWN' for an unreachable node");
    cr_assert(strstr(w.last, ",noconnection}") != NULL, "%s", w.last);
    for (int i = 0; i < 500 && alive(a.node, lp); i++)
        uv_run(&loop, UV_RUN_ONCE);
    cr_assert(!alive(a.node, lp), "the link to an unreachable node did not break");
    cr_assert_eq(aemp__watch_count(a.node), 0);
    /* noproc from the loop */
    aemp_addr gone;
    cr_assert_eq(aemp_port_addr(a.node, lp, &gone), AEMP_ENOENT);
    aemp__addr_pid(&gone, a.node->name_h, a.node->creation, lp.id);
    cr_assert_eq(aemp_monitor(a.node, wp, &gone, &ref), 0);
    cr_assert_eq(w.count, 1, "'DOWN' delivered inside aemp_monitor()");
    cr_assert(wait_int(&w.count, 2, 2000));
    cr_assert(strstr(w.last, ",noproc}") != NULL, "%s", w.last);
    stop_node(&a);
}

/* net_kernel is the node's: it cannot be unregistered, closed or killed
 * through the API, nor by an exit signal. */
Test(proc, service_ports_are_protected)
{
    struct node_ctx a;
    start_node(&a, "a@127.0.0.1", "secret");
    aemp_addr nk;
    aemp_port p;
    name_addr(&nk, a.node, "net_kernel");
    cr_assert_eq(aemp_port_of_addr(a.node, &nk, &p), 0);
    cr_assert_eq(aemp_unregister(a.node, "net_kernel"), AEMP_EINVAL);
    cr_assert_eq(aemp_port_close(a.node, p), AEMP_EINVAL);
    aemp_buf r = AEMP_BUF_INIT;
    term_of(&r, "kill");
    aemp_term rt = aemp_buf_term(&r);
    cr_assert_eq(aemp_port_kill(a.node, p, &rt), AEMP_EINVAL);
    struct inbox in = {0};
    aemp_port q;
    aemp_addr pa;
    cr_assert_eq(aemp_port_open(a.node, inbox_cb, &in, &q), 0);
    cr_assert_eq(aemp_port_addr(a.node, p, &pa), 0);
    cr_assert_eq(aemp_exit(a.node, q, &pa, &rt), 0);
    cr_assert(alive(a.node, p));
    cr_assert_eq(aemp_register(a.node, "net_kernel", q), AEMP_EEXIST);
    aemp_buf_free(&r);
    stop_node(&a);
}

/* From aemp_node_close() on, no port callback runs, even for the 'DOWN'
 * messages of ports that monitor each other. */
Test(proc, no_callback_during_close)
{
    struct node_ctx a;
    start_node(&a, "a@127.0.0.1", "secret");
    struct inbox in[2] = {0};
    aemp_port p[2];
    aemp_addr addr[2], ref;
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(aemp_port_open(a.node, inbox_cb, &in[i], &p[i]), 0);
        cr_assert_eq(aemp_port_addr(a.node, p[i], &addr[i]), 0);
    }
    cr_assert_eq(aemp_monitor(a.node, p[0], &addr[1], &ref), 0);
    cr_assert_eq(aemp_monitor(a.node, p[1], &addr[0], &ref), 0);
    stop_node(&a);
    cr_assert_eq(in[0].count + in[1].count, 0, "a callback ran during close: %s%s", in[0].last,
                 in[1].last);
}

Test(proc, local_links_and_exit_translations)
{
    struct node_ctx a;
    start_node(&a, "a@127.0.0.1", "secret");
    struct inbox in[4] = {0};
    aemp_port p[4];
    aemp_addr addr[4];
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(aemp_port_open(a.node, inbox_cb, &in[i], &p[i]), 0);
        cr_assert_eq(aemp_port_addr(a.node, p[i], &addr[i]), 0);
    }
    aemp_buf r = AEMP_BUF_INIT;
    /* normal does not travel along a link */
    cr_assert_eq(aemp_link(a.node, p[0], &addr[1]), 0);
    cr_assert_eq(aemp_port_close(a.node, p[0]), 0);
    cr_assert(alive(a.node, p[1]));
    /* an abnormal reason kills the linked port with the same reason; a
     * monitor of it shows which */
    aemp_addr ref;
    cr_assert_eq(aemp_link(a.node, p[1], &addr[2]), 0);
    cr_assert_eq(aemp_monitor(a.node, p[3], &addr[2], &ref), 0);
    term_of(&r, "boom");
    aemp_term rt = aemp_buf_term(&r);
    cr_assert_eq(aemp_port_kill(a.node, p[1], &rt), 0);
    cr_assert(!alive(a.node, p[2]));
    cr_assert(wait_int(&in[3].count, 1, 2000));
    cr_assert(strstr(in[3].last, ",boom}") != NULL, "%s", in[3].last);
    /* exit/2 with kill: the port dies with `killed`; normal is ignored */
    struct inbox x = {0}, y = {0};
    aemp_port xp, yp;
    aemp_addr xa;
    cr_assert_eq(aemp_port_open(a.node, inbox_cb, &x, &xp), 0);
    cr_assert_eq(aemp_port_open(a.node, inbox_cb, &y, &yp), 0);
    cr_assert_eq(aemp_port_addr(a.node, xp, &xa), 0);
    cr_assert_eq(aemp_monitor(a.node, yp, &xa, &ref), 0);
    term_of(&r, "normal");
    rt = aemp_buf_term(&r);
    cr_assert_eq(aemp_exit(a.node, p[3], &xa, &rt), 0);
    cr_assert(alive(a.node, xp));
    term_of(&r, "kill");
    rt = aemp_buf_term(&r);
    cr_assert_eq(aemp_exit(a.node, p[3], &xa, &rt), 0);
    cr_assert(!alive(a.node, xp));
    cr_assert(wait_int(&y.count, 1, 2000));
    cr_assert(strstr(y.last, ",killed}") != NULL, "%s", y.last);
    cr_assert_eq(aemp_link(a.node, p[3], &xa), AEMP_ENOENT);
    aemp_buf_free(&r);
    stop_node(&a);
}

/* A chain of 100,000 linked ports dies from one end without recursion. */
Test(proc, long_link_chain)
{
    struct node_ctx a;
    start_node(&a, "a@127.0.0.1", "secret");
    enum { N = 100000 };
    static aemp_port p[N];
    struct inbox sink = {0};
    aemp_addr prev;
    for (int i = 0; i < N; i++) {
        cr_assert_eq(aemp_port_open(a.node, inbox_cb, &sink, &p[i]), 0);
        aemp_addr me;
        cr_assert_eq(aemp_port_addr(a.node, p[i], &me), 0);
        if (i) cr_assert_eq(aemp_link(a.node, p[i], &prev), 0);
        prev = me;
    }
    aemp_buf r = AEMP_BUF_INIT;
    term_of(&r, "{chain, broken}");
    aemp_term rt = aemp_buf_term(&r);
    cr_assert_eq(aemp_port_kill(a.node, p[0], &rt), 0);
    for (int i = 0; i < N; i++)
        cr_assert(!alive(a.node, p[i]), "port %d survived", i);
    cr_assert_eq(aemp__watch_count(a.node), 0);
    aemp_buf_free(&r);
    stop_node(&a);
}

/* Across two nodes, both directions: monitors deliver the reason, links
 * carry abnormal exits, and a node's close breaks them with noconnection. */
Test(proc, remote_links_and_monitors)
{
    struct node_ctx a, b;
    start_node(&a, "a@127.0.0.1", "secret");
    start_node(&b, "b@127.0.0.1", "secret");
    struct inbox aw = {0}, bt = {0}, bl = {0}, al = {0};
    aemp_port awp, btp, blp, alp;
    aemp_addr awa, bta, bla, ala, ref;
    open_inbox(a.node, &aw, &awp, &awa);
    open_inbox(b.node, &bt, &btp, &bta);
    open_inbox(b.node, &bl, &blp, &bla);
    open_inbox(a.node, &al, &alp, &ala);
    /* a monitors a port on b (a connection is made on demand) */
    cr_assert_eq(aemp_monitor(a.node, awp, &bta, &ref), 0);
    /* a's port links to one on b */
    cr_assert_eq(aemp_link(a.node, alp, &bla), 0);
    cr_assert(run_until(&a.ups, 5000));
    /* wait until b has recorded both (they travel in order with this) */
    struct inbox probe = {0};
    aemp_port pp;
    aemp_addr ppa;
    cr_assert_eq(aemp_port_open(b.node, inbox_cb, &probe, &pp), 0);
    cr_assert_eq(aemp_port_addr(b.node, pp, &ppa), 0);
    cr_assert_eq(aemp_sendf(a.node, awp, &ppa, "{sync}"), 0);
    cr_assert(wait_int(&probe.count, 1, 5000));
    cr_assert_eq(aemp__watch_count(b.node), 2);
    aemp_buf r = AEMP_BUF_INIT;
    term_of(&r, "{gone, far}");
    aemp_term rt = aemp_buf_term(&r);
    cr_assert_eq(aemp_port_kill(b.node, btp, &rt), 0);
    cr_assert(wait_int(&aw.count, 1, 5000));
    cr_assert_str_eq(aw.tag, "DOWN");
    cr_assert(strstr(aw.last, ",{gone,far}}") != NULL, "%s", aw.last);
    /* the link: b's port dies abnormally, a's linked port follows */
    term_of(&r, "crash");
    rt = aemp_buf_term(&r);
    cr_assert_eq(aemp_port_kill(b.node, blp, &rt), 0);
    for (int i = 0; i < 500 && alive(a.node, alp); i++)
        uv_run(&loop, UV_RUN_ONCE);
    cr_assert(!alive(a.node, alp));
    /* the other way: b monitors a's port, a's node closes: noconnection */
    struct inbox bw = {0};
    aemp_port bwp;
    cr_assert_eq(aemp_port_open(b.node, inbox_cb, &bw, &bwp), 0);
    cr_assert_eq(aemp_monitor(b.node, bwp, &awa, &ref), 0);
    cr_assert_eq(aemp_sendf(b.node, bwp, &awa, "{sync}"), 0);
    cr_assert(wait_int(&aw.count, 2, 5000));
    cr_assert_eq(aemp__watch_count(a.node), 1);
    stop_node(&a);
    cr_assert(wait_int(&bw.count, 1, 5000));
    /* a closing node's ports die with shutdown, or the link to it breaks */
    cr_assert(strstr(bw.last, ",shutdown}") || strstr(bw.last, ",noconnection}"), "%s", bw.last);
    cr_assert(run_until(&b.downs, 5000));
    cr_assert_eq(aemp__watch_count(b.node), 0);
    aemp_buf_free(&r);
    stop_node(&b);
}

/* Many monitors from another node, then their demonitors: every record is
 * gone afterwards (each found by its reference, not searched for). */
Test(proc, many_remote_monitors)
{
    struct node_ctx a, b;
    start_node(&a, "a@127.0.0.1", "secret");
    start_node(&b, "b@127.0.0.1", "secret");
    enum { N = 100000 };
    struct inbox w = {0}, t = {0}, probe = {0};
    aemp_port wp, tp, pp;
    aemp_addr target, ppa;
    cr_assert_eq(aemp_port_open(a.node, inbox_cb, &w, &wp), 0);
    cr_assert_eq(aemp_port_open(b.node, inbox_cb, &t, &tp), 0);
    cr_assert_eq(aemp_register(b.node, "target", tp), 0);
    cr_assert_eq(aemp_port_open(b.node, inbox_cb, &probe, &pp), 0);
    cr_assert_eq(aemp_port_addr(b.node, pp, &ppa), 0);
    name_addr(&target, b.node, "target");
    aemp_addr *refs = calloc(N, sizeof *refs);
    cr_assert_not_null(refs);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(aemp_monitor(a.node, wp, &target, &refs[i]), 0);
        if (i % 1000 == 999) uv_run(&loop, UV_RUN_NOWAIT);
    }
    cr_assert_eq(aemp_sendf(a.node, wp, &ppa, "{sync}"), 0);
    cr_assert(wait_int(&probe.count, 1, 60000));
    cr_assert_eq(aemp__watch_count(b.node), N);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(aemp_demonitor(a.node, &refs[i]), 0);
        if (i % 1000 == 999) uv_run(&loop, UV_RUN_NOWAIT);
    }
    cr_assert_eq(aemp__watch_count(a.node), 0);
    cr_assert_eq(aemp_sendf(a.node, wp, &ppa, "{sync}"), 0);
    cr_assert(wait_int(&probe.count, 2, 60000));
    cr_assert_eq(aemp__watch_count(b.node), 0);
    cr_assert_eq(w.count, 0, "no 'DOWN' after a demonitor: %s", w.last);
    free(refs);
    stop_node(&a);
    stop_node(&b);
}

struct exits {
    int count;
    uint64_t last;
    char reason[64];
};

static void on_event(aemp_node *n, const aemp__event_info *ev, void *arg)
{
    struct exits *e = arg;
    if (ev->kind != AEMP__EV_PORT_EXIT) return;
    e->count++;
    e->last = ev->port;
    aemp_term_print(ev->exit, e->reason, sizeof e->reason);
}

/* Every port's death is published, with its reason, to any number of
 * subscribers. */
Test(proc, port_exit_events)
{
    struct node_ctx a;
    start_node(&a, "a@127.0.0.1", "secret");
    struct exits e1 = {0}, e2 = {0};
    aemp__sub *s2;
    cr_assert_eq(aemp__node_subscribe(a.node, on_event, &e1, NULL), 0);
    cr_assert_eq(aemp__node_subscribe(a.node, on_event, &e2, &s2), 0);
    struct inbox in = {0};
    aemp_port p;
    cr_assert_eq(aemp_port_open(a.node, inbox_cb, &in, &p), 0);
    cr_assert_eq(aemp_port_close(a.node, p), 0);
    cr_assert_eq(e1.count, 1);
    cr_assert_eq(e1.last, p.id);
    cr_assert_str_eq(e1.reason, "normal");
    cr_assert_eq(e2.count, 1);
    aemp__node_unsubscribe(a.node, s2);
    cr_assert_eq(aemp_port_open(a.node, inbox_cb, &in, &p), 0);
    aemp_buf r = AEMP_BUF_INIT;
    term_of(&r, "{oops, 42}");
    aemp_term rt = aemp_buf_term(&r);
    cr_assert_eq(aemp_port_kill(a.node, p, &rt), 0);
    cr_assert_eq(e1.count, 2);
    cr_assert_str_eq(e1.reason, "{oops,42}");
    cr_assert_eq(e2.count, 1);
    aemp_buf_free(&r);
    stop_node(&a);
}

Test(proc, references_are_unique_and_printable)
{
    struct node_ctx a;
    start_node(&a, "a@127.0.0.1", "secret");
    aemp_addr r1, r2, back;
    aemp__proc_ref(a.node, &r1);
    aemp__proc_ref(a.node, &r2);
    cr_assert(!aemp_addr_equal(&r1, &r2));
    char text[128];
    cr_assert_gt(aemp_addr_format(&r1, text, sizeof text), 0);
    cr_assert(strncmp(text, "a@127.0.0.1#Ref<", 16) == 0, "%s", text);
    cr_assert_eq(aemp_addr_parse(text, &back), 0);
    cr_assert(aemp_addr_equal(&r1, &back));
    /* a reference encodes as NEWER_REFERENCE_EXT and reads back */
    aemp_buf b = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_format(&b, "{~p}", &r2), 0);
    aemp_term t = aemp_buf_term(&b);
    aemp_cursor c = aemp_cursor_of(&t);
    uint32_t arity;
    cr_assert_eq(aemp_get_tuple(&c, &arity), 0);
    cr_assert_eq(aemp_get_ref(&c, &back), 0);
    cr_assert(aemp_addr_equal(&r2, &back));
    aemp_buf_free(&b);
    cr_assert_eq(sizeof(aemp_addr), 32);
    stop_node(&a);
}

/* A port that keeps local deliveries deferred to the loop while *arg is
 * set: each message it gets, it sends itself again (nested sends past the
 * depth limit wait for the loop, so one is always waiting). */
static void spin_cb(aemp_node *n, aemp_port self, const aemp_term *msg, const aemp_addr *from,
                    void *arg)
{
    aemp_addr me;
    if (*(int *)arg && aemp_port_addr(n, self, &me) == 0) aemp_send(n, self, &me, msg);
}

/* No silent holes when a 'DOWN' must wait behind deferred local
 * deliveries: from the loss of a connection until the watcher has its
 * 'DOWN', nothing goes to that node (a send is dropped, a monitor refused),
 * so no message sent meanwhile can get through after lost ones; after the
 * 'DOWN', sending connects again. */
Test(proc, nothing_to_a_lost_node_before_its_down)
{
    struct node_ctx a, b;
    start_node(&a, "a@127.0.0.1", "secret");
    start_node(&b, "b@127.0.0.1", "secret");
    struct inbox w = {0}, t = {0}, probe = {0};
    aemp_port wp, tp, pp, sp;
    aemp_addr wa, ta, pa, sa, ref;
    open_inbox(a.node, &w, &wp, &wa);
    open_inbox(b.node, &t, &tp, &ta);
    open_inbox(b.node, &probe, &pp, &pa);
    cr_assert_eq(aemp_monitor(a.node, wp, &ta, &ref), 0);
    cr_assert_eq(aemp_sendf(a.node, wp, &pa, "{sync}"), 0);
    cr_assert(wait_int(&probe.count, 1, 5000));
    int spinning = 1;
    cr_assert_eq(aemp_port_open(a.node, spin_cb, &spinning, &sp), 0);
    cr_assert_eq(aemp_port_addr(a.node, sp, &sa), 0);
    cr_assert_eq(aemp_sendf(a.node, sp, &sa, "{spin}"), 0);
    for (int i = 0; i < 3; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    cr_assert_gt(a.node->proc->deferred.len, a.node->proc->deferred_pos);
    /* the connection breaks (as a peer's crash looks from here) */
    int err;
    uint32_t bh = aemp__intern_find("b@127.0.0.1", 11);
    aemp__conn *c = aemp__node_conn(a.node, bh, false, &err);
    cr_assert_not_null(c);
    aemp__conn_close(c, AEMP_EIO, "test: connection lost");
    cr_assert_eq(w.count, 0, "the 'DOWN' waits behind the deferred deliveries");
    /* meanwhile: nothing goes to b, nothing starts a connection to it */
    cr_assert_eq(aemp_sendf(a.node, wp, &ta, "{lost, 1}"), 0);
    aemp_addr ref2;
    cr_assert_neq(aemp_monitor(a.node, wp, &ta, &ref2), 0);
    aemp_conn_stats st;
    cr_assert_eq(aemp_node_stats(a.node, "b@127.0.0.1", &st), AEMP_ENOENT);
    cr_assert(wait_int(&w.count, 1, 5000));
    cr_assert(strstr(w.last, ",noconnection}") != NULL, "%s", w.last);
    /* told: sending connects again, and what was sent before is not there */
    cr_assert_eq(aemp_sendf(a.node, wp, &ta, "{after, 2}"), 0);
    cr_assert(wait_int(&t.count, 1, 5000));
    cr_assert_str_eq(t.tag, "after", "%s", t.last);
    spinning = 0;
    stop_node(&a);
    stop_node(&b);
}

/* Unlinks from both ends at once, one end linking again at once (the race
 * the UNLINK_ID protocol settles): both ends end up unlinked, as OTP nodes
 * do, and a later link from the other end holds. */
Test(proc, simultaneous_unlinks_agree)
{
    struct node_ctx a, b;
    start_node(&a, "a@127.0.0.1", "secret");
    start_node(&b, "b@127.0.0.1", "secret");
    struct inbox ia = {0}, ib = {0}, pa_in = {0}, pb_in = {0};
    aemp_port pa, pb, qa, qb;
    aemp_addr paa, pba, qaa, qba;
    open_inbox(a.node, &ia, &pa, &paa);
    open_inbox(b.node, &ib, &pb, &pba);
    open_inbox(a.node, &pa_in, &qa, &qaa);
    open_inbox(b.node, &pb_in, &qb, &qba);
    cr_assert_eq(aemp_link(a.node, pa, &pba), 0);
    /* a round trip: b has the link, a has b's answer */
    cr_assert_eq(aemp_sendf(a.node, qa, &qba, "{sync}"), 0);
    cr_assert(wait_int(&pb_in.count, 1, 5000));
    cr_assert_eq(aemp_sendf(b.node, qb, &qaa, "{sync}"), 0);
    cr_assert(wait_int(&pa_in.count, 1, 5000));
    cr_assert_eq(aemp__watch_count(a.node), 1);
    cr_assert_eq(aemp__watch_count(b.node), 1);
    /* both unlink before either hears of the other; b links again */
    cr_assert_eq(aemp_unlink(a.node, pa, &pba), 0);
    cr_assert_eq(aemp_unlink(b.node, pb, &paa), 0);
    cr_assert_eq(aemp_link(b.node, pb, &paa), 0);
    /* two round trips: every unlink, link and acknowledgement is in */
    for (int i = 2; i <= 3; i++) {
        cr_assert_eq(aemp_sendf(a.node, qa, &qba, "{sync}"), 0);
        cr_assert(wait_int(&pb_in.count, i, 5000));
        cr_assert_eq(aemp_sendf(b.node, qb, &qaa, "{sync}"), 0);
        cr_assert(wait_int(&pa_in.count, i, 5000));
    }
    cr_assert_eq(aemp__watch_count(a.node), 0, "a still holds a link");
    cr_assert_eq(aemp__watch_count(b.node), 0, "b still holds a link");
    /* a links again: the link holds, b's port dies and takes a's along */
    cr_assert_eq(aemp_link(a.node, pa, &pba), 0);
    cr_assert_eq(aemp_sendf(a.node, qa, &qba, "{sync}"), 0);
    cr_assert(wait_int(&pb_in.count, 4, 5000));
    aemp_buf r = AEMP_BUF_INIT;
    term_of(&r, "{gone, b}");
    aemp_term rt = aemp_buf_term(&r);
    cr_assert_eq(aemp_port_kill(b.node, pb, &rt), 0);
    for (int i = 0; i < 500 && alive(a.node, pa); i++)
        uv_run(&loop, UV_RUN_ONCE);
    cr_assert(!alive(a.node, pa), "the link made after the race did not hold");
    aemp_buf_free(&r);
    stop_node(&a);
    stop_node(&b);
}

struct log_lines {
    int n, limit_lines;
};

static void count_limit_lines(int level, const char *msg, void *arg)
{
    struct log_lines *l = arg;
    l->n++;
    if (strstr(msg, "a@127.0.0.1") && strstr(msg, "max_watches_per_peer")) l->limit_lines++;
}

/* A round trip from a to b and back: what a sent before has been handled
 * by b, and b's answers to it by a. */
static void round_trip(aemp_port ap, const aemp_addr *bprobe, struct inbox *bin, aemp_port bp,
                       const aemp_addr *aprobe, struct inbox *ain, struct node_ctx *a,
                       struct node_ctx *b)
{
    int bc = bin->count, ac = ain->count;
    cr_assert_eq(aemp_sendf(a->node, ap, bprobe, "{sync}"), 0);
    cr_assert(wait_int(&bin->count, bc + 1, 5000));
    cr_assert_eq(aemp_sendf(b->node, bp, aprobe, "{sync}"), 0);
    cr_assert(wait_int(&ain->count, ac + 1, 5000));
}

/* max_watches_per_peer: b holds at most 5 links and monitors with a. The
 * monitor beyond fires at once with system_limit, the link beyond breaks
 * with it, the 5 held fire with the port's real reason; b's own calls
 * towards a fail with AEMP_ETOOBIG; once some go, new ones are taken. */
Test(proc, watches_per_peer_limit)
{
    static struct log_lines lines;
    memset(&lines, 0, sizeof lines);
    aemp_log_set_callback(count_limit_lines, &lines);
    aemp_log_set_level(AEMP_LOG_WARN);
    struct node_ctx a, b;
    start_node(&a, "a@127.0.0.1", "secret");
    aemp_node_config cfg = {0};
    cfg.name = "b@127.0.0.1";
    cfg.cookie = "secret";
    cfg.max_watches_per_peer = 5;
    start_node_cfg(&b, cfg);
    struct inbox w = {0}, t = {0}, pa = {0}, pb = {0}, bw = {0};
    aemp_port wp, tp, pap, pbp, bwp;
    aemp_addr wa, ta, paa, pba, bwa, refs[6], ref;
    open_inbox(a.node, &w, &wp, &wa);
    open_inbox(b.node, &t, &tp, &ta);
    open_inbox(a.node, &pa, &pap, &paa);
    open_inbox(b.node, &pb, &pbp, &pba);
    open_inbox(b.node, &bw, &bwp, &bwa);
    /* six monitors of b's port from a: the sixth fires at once */
    for (int i = 0; i < 6; i++)
        cr_assert_eq(aemp_monitor(a.node, wp, &ta, &refs[i]), 0);
    round_trip(wp, &pba, &pb, pbp, &paa, &pa, &a, &b);
    cr_assert(wait_int(&w.count, 1, 5000));
    cr_assert_str_eq(w.tag, "DOWN");
    cr_assert(strstr(w.last, ",system_limit}") != NULL, "%s", w.last);
    cr_assert_eq(aemp__watch_count(b.node), 5);
    cr_assert_eq(aemp__watch_count(a.node), 5, "the refused monitor is gone on a too");
    cr_assert_geq(lines.limit_lines, 1, "the refusal is not logged");
    /* b's own calls towards a: over the limit */
    cr_assert_eq(aemp_monitor(b.node, bwp, &wa, &ref), AEMP_ETOOBIG);
    cr_assert_eq(aemp_link(b.node, bwp, &wa), AEMP_ETOOBIG);
    aemp_buf r = AEMP_BUF_INIT;
    term_of(&r, "[]");
    aemp_term rt = aemp_buf_term(&r);
    cr_assert_eq(
        aemp_spawn(b.node, bwp, "a@127.0.0.1", "m", "f", &rt, AEMP_SPAWN_MONITOR, NULL, NULL),
        AEMP_ETOOBIG);
    /* ... but a local monitor is no record with a */
    cr_assert_eq(aemp_monitor(b.node, bwp, &pba, &ref), 0);
    cr_assert_eq(aemp_demonitor(b.node, &ref), 0);
    /* two go: room for two links from a; the third breaks at once */
    cr_assert_eq(aemp_demonitor(a.node, &refs[0]), 0);
    cr_assert_eq(aemp_demonitor(a.node, &refs[1]), 0);
    struct inbox l[3], lw = {0};
    aemp_port lp[3], lwp;
    aemp_addr la[3], lwa, lref;
    memset(l, 0, sizeof l);
    open_inbox(a.node, &lw, &lwp, &lwa);
    for (int i = 0; i < 3; i++) {
        open_inbox(a.node, &l[i], &lp[i], &la[i]);
        cr_assert_eq(aemp_monitor(a.node, lwp, &la[i], &lref), 0);
        cr_assert_eq(aemp_link(a.node, lp[i], &ta), 0);
    }
    round_trip(wp, &pba, &pb, pbp, &paa, &pa, &a, &b);
    cr_assert(wait_int(&lw.count, 1, 5000));
    cr_assert(strstr(lw.last, ",system_limit}") != NULL, "%s", lw.last);
    cr_assert(alive(a.node, lp[0]) && alive(a.node, lp[1]) && !alive(a.node, lp[2]));
    cr_assert_eq(aemp__watch_count(b.node), 5);
    /* b's port dies: the three monitors and two links held fire with its
     * reason */
    term_of(&r, "{gone, far}");
    rt = aemp_buf_term(&r);
    cr_assert_eq(aemp_port_kill(b.node, tp, &rt), 0);
    cr_assert(wait_int(&w.count, 4, 5000));
    cr_assert(strstr(w.last, ",{gone,far}}") != NULL, "%s", w.last);
    cr_assert(wait_int(&lw.count, 3, 5000));
    cr_assert(strstr(lw.last, ",{gone,far}}") != NULL, "%s", lw.last);
    cr_assert_eq(aemp__watch_count(b.node), 0);
    /* with none held, b's calls towards a are taken again */
    cr_assert_eq(aemp_monitor(b.node, bwp, &wa, &ref), 0);
    cr_assert_eq(aemp_link(b.node, bwp, &wa), 0);
    cr_assert_eq(aemp__watch_count(b.node), 2);
    round_trip(wp, &pba, &pb, pbp, &paa, &pa, &a, &b);
    cr_assert_eq(aemp__watch_count(a.node), 2, "a holds b's monitor and link");
    aemp_log_set_callback(NULL, NULL);
    aemp_buf_free(&r);
    stop_node(&a);
    stop_node(&b);
}
