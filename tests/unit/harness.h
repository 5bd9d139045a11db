/*
 * harness.h - shared by the node-level unit tests: nodes on one private
 * loop, an embedded EPMD on a private port, waits with deadlines.
 */
#ifndef AEMP_TEST_HARNESS_H
#define AEMP_TEST_HARNESS_H

#include <criterion/criterion.h>

#include "aemp.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXMSG 64

struct node_ctx {
    aemp_node *node;
    int ready; /* 1 ok, <0 error */
    int ups, downs, fails;
    int last_fail_err;
    size_t last_dropped;
    char last_peer[AEMP_MAXNODELEN + 1];
};

struct sink {
    int count;
    int64_t values[MAXMSG];
    int with_from;
    aemp_addr from;
};

static uv_loop_t loop;
static uint16_t epmd_port;

static inline void setup(void)
{
    cr_assert_eq(uv_loop_init(&loop), 0);
    /* A private EPMD port so that tests never touch a real epmd. */
    epmd_port = free_port();
    aemp_log_set_level(getenv("AEMP_TEST_LOG") ? AEMP_LOG_INFO : AEMP_LOG_ERROR);
}

static inline void walk_close(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

static inline void teardown(void)
{
    uv_walk(&loop, walk_close, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
}

static inline void on_deadline(uv_timer_t *t)
{
    *(int *)t->data = 1;
}

/* Run the loop until *flag is true or the deadline passes. */
static inline int run_until(int *flag, unsigned ms)
{
    int expired = 0;
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    t.data = &expired;
    uv_timer_start(&t, on_deadline, ms, 0);
    while (!*flag && !expired)
        uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    return *flag;
}

static inline void on_ready(aemp_node *n, int status, void *arg)
{
    struct node_ctx *c = arg;
    c->ready = status ? status : 1;
}

static inline void on_nodes(aemp_node *n, const char *peer, int up, const char *reason, void *arg)
{
    struct node_ctx *c = arg;
    if (up)
        c->ups++;
    else
        c->downs++;
    snprintf(c->last_peer, sizeof c->last_peer, "%s", peer);
}

static inline void on_fail(aemp_node *n, const char *peer, int err, const char *reason,
                           size_t dropped, void *arg)
{
    struct node_ctx *c = arg;
    c->fails++;
    c->last_fail_err = err;
    c->last_dropped = dropped;
}

static inline void start_node_cfg(struct node_ctx *c, aemp_node_config cfg)
{
    const char *name = cfg.name;
    memset(c, 0, sizeof *c);
    /* No pg scope unless the test names one: the tests that count the
     * process layer's ports and monitors count only their own (a scope
     * monitors its peers), and pg's messages do not move their timing. */
    if (!cfg.pg_scopes) cfg.pg_scopes = "";
    cfg.epmd_port = epmd_port;
    cfg.ready_cb = on_ready;
    cfg.ready_arg = c;
    cfg.nodes_cb = on_nodes;
    cfg.nodes_arg = c;
    cfg.fail_cb = on_fail;
    cfg.fail_arg = c;
    cr_assert_eq(aemp_node_create(&loop, &cfg, &c->node), 0);
    cr_assert(run_until(&c->ready, 5000), "node %s not ready", name);
    cr_assert_eq(c->ready, 1, "registration of %s failed: %d", name, c->ready);
}

static inline void start_node(struct node_ctx *c, const char *name, const char *cookie)
{
    aemp_node_config cfg = {0};
    cfg.name = name;
    cfg.cookie = cookie;
    start_node_cfg(c, cfg);
}

static inline void on_closed(void *arg)
{
    *(int *)arg = 1;
}

static inline void stop_node(struct node_ctx *c)
{
    int closed = 0;
    aemp_node_close(c->node, on_closed, &closed);
    cr_assert(run_until(&closed, 5000), "node did not close");
}

static inline void sink_cb(aemp_node *n, aemp_port self, const aemp_term *msg,
                           const aemp_addr *from, void *arg)
{
    struct sink *s = arg;
    aemp_cursor cur = aemp_cursor_of(msg);
    uint32_t arity;
    char tag[32];
    int64_t v = -1;
    if (aemp_get_tuple(&cur, &arity) == 0 && arity == 2 &&
        aemp_get_atom(&cur, tag, sizeof tag) == 0 && strcmp(tag, "n") == 0)
        aemp_get_int64(&cur, &v);
    if (s->count < MAXMSG) s->values[s->count] = v;
    s->count++;
    if (from) {
        s->with_from = 1;
        s->from = *from;
    }
}

/* Run the loop until *v reaches target or the deadline passes. */
static inline int wait_int(const int *v, int target, unsigned ms)
{
    int expired = 0;
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    t.data = &expired;
    uv_timer_start(&t, on_deadline, ms, 0);
    while (*v < target && !expired)
        uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    return *v >= target;
}

static inline int wait_sink(struct sink *s, int n, unsigned ms)
{
    return wait_int(&s->count, n, ms);
}

static inline void name_addr(aemp_addr *a, const aemp_node *n, const char *reg)
{
    cr_assert_eq(aemp_addr_name(a, aemp_node_name(n), reg), 0);
}

/* A port on n registered as name, counting {n, I} messages into s; *to is
 * its name address. */
static inline void sink_at(struct node_ctx *n, const char *name, struct sink *s, aemp_addr *to)
{
    aemp_port p;
    cr_assert_eq(aemp_port_open(n->node, sink_cb, s, &p), 0);
    cr_assert_eq(aemp_register(n->node, name, p), 0);
    name_addr(to, n->node, name);
}

/* Send {n, 0} .. {n, count - 1} from `from` to `to`. */
static inline void send_numbers(struct node_ctx *from, const aemp_addr *to, int count)
{
    for (int i = 0; i < count; i++)
        cr_assert_eq(aemp_sendf(from->node, (aemp_port){0}, to, "{n, ~i}", (int64_t)i), 0);
}

/* Wait until s holds {n, 0} .. {n, count - 1}, in that order. */
static inline void expect_numbers(struct sink *s, int count, unsigned ms)
{
    cr_assert(wait_sink(s, count, ms), "only %d of %d arrived", s->count, count);
    for (int i = 0; i < count && i < MAXMSG; i++)
        cr_assert_eq(s->values[i], i, "message %d out of order", i);
}

#endif
