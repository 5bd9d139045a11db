/*
 * ports.c - the AEMP port model in one program: a counter port with
 * tagged callbacks, a worker that fails, monitors in their three forms, a
 * timer, and kil. It runs on its own (no other node needed) and stops when
 * the story is told; with an Erlang node you can also talk to `counter`:
 *
 *   ./build/example_ports [NAME [COOKIE [MS]]]   (default ports, secret, 5000 ms)
 *   erl -sname erl -setcookie secret
 *   1> {counter, 'ports@HOST'} ! {add, 5}.
 *
 * Read docs/guide.md, "AEMP ports", beside it.
 */
#include "aemp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct counter {
    int64_t total;
};

/* {add, N}: the tag is stripped, m->args is at N. */
static int on_add(aemp_node *node, aemp_port self, const aemp_msg *m, void *arg)
{
    struct counter *c = arg;
    aemp_cursor args = m->args;
    int64_t n;
    if (m->nargs != 1 || aemp_get_int64(&args, &n))
        return aemp_die(node, "add wants one integer"); /* kills the port: {die, Text} */
    c->total += n;
    printf("counter: +%lld = %lld\n", (long long)n, (long long)c->total);
    return 0;
}

/* {get, ReplyTo}: answer {total, N}. */
static int on_get(aemp_node *node, aemp_port self, const aemp_msg *m, void *arg)
{
    struct counter *c = arg;
    aemp_cursor args = m->args;
    aemp_addr to;
    if (m->nargs != 1 || aemp_get_pid(&args, &to)) return aemp_die(node, "get wants a pid");
    return aemp_sendf(node, self, &to, "{total, ~i}", c->total);
}

/* The reply port's default callback: any message, whole. */
static int on_reply(aemp_node *node, aemp_port self, const aemp_msg *m, void *arg)
{
    char text[128];
    aemp_term_print(&m->term, text, sizeof text);
    printf("reply port: got %s\n", text);
    return 0;
}

static void on_death(aemp_node *node, const aemp_addr *who, const aemp_term *reason, void *arg)
{
    char text[128];
    aemp_term_print(reason, text, sizeof text);
    printf("mon: %s died: %s\n", (const char *)arg, text);
    if (strcmp(arg, "counter") == 0) aemp_node_close(node, NULL, NULL); /* the end */
}

static void on_gone(aemp_node *node, aemp_port port, const aemp_term *reason, void *arg)
{
    printf("gone: %s is gone, its state can be freed\n", (const char *)arg);
}

/* Runs from a timer in the context of the port that started it. */
static int finish(aemp_node *node, aemp_port self, void *arg)
{
    aemp_addr counter;
    aemp_addr_name(&counter, aemp_node_name(node), "counter");
    printf("timer: running as port %llu, killing the counter\n", (unsigned long long)self.id);
    aemp_buf reason = AEMP_BUF_INIT;
    aemp_term_format(&reason, "{done, ~s}", "story told");
    aemp_term r = aemp_buf_term(&reason);
    int rc = aemp_kil(node, &counter, &r); /* carried out on the next loop turn */
    aemp_buf_free(&reason);
    return rc;
}

static uint64_t story_ms = 5000;

static int start(aemp_node *node, aemp_port self, const aemp_msg *m, void *arg)
{
    return aemp_after_call(node, story_ms, finish, NULL, NULL);
}

static void on_ready(aemp_node *node, int status, void *arg)
{
    static struct counter counter;
    aemp_port cp, reply, worker, ctl;
    aemp_addr ca, ra, wa;
    if (status) {
        fprintf(stderr, "node: %s\n", aemp_strerror(status));
        return;
    }
    printf("node %s is up: send {counter, '%s'} ! {add, N} from Erlang within %llu ms\n",
           aemp_node_name(node), aemp_node_name(node), (unsigned long long)story_ms);
    /* a port with two tags, registered so Erlang can reach it */
    aemp_port_new(node, &cp);
    aemp_rcv(node, cp, "add", on_add, &counter);
    aemp_rcv(node, cp, "get", on_get, &counter);
    aemp_register(node, "counter", cp);
    aemp_port_gone(node, cp, on_gone, "counter");
    aemp_port_addr(node, cp, &ca);
    /* mon, callback form: told once, whatever ends the counter */
    aemp_mon(node, &ca, on_death, "counter", NULL);

    /* a reply port, and a worker that dies on a message it has no tag for */
    aemp_port_new(node, &reply);
    aemp_rcv(node, reply, NULL, on_reply, NULL);
    aemp_port_addr(node, reply, &ra);
    aemp_port_new(node, &worker);
    aemp_port_addr(node, worker, &wa);
    aemp_mon(node, &wa, on_death, "worker", NULL);
    /* mon, send form: the reply port hears of the worker's death */
    aemp_buf msg = AEMP_BUF_INIT;
    aemp_term_format(&msg, "{worker_down, ~p}", &wa);
    aemp_term mt = aemp_buf_term(&msg);
    aemp_mon_send(node, &wa, &ra, &mt, NULL);
    aemp_buf_free(&msg);

    aemp_sendf(node, reply, &ca, "{add, 2}");
    aemp_sendf(node, reply, &ca, "{add, 3}");
    aemp_sendf(node, reply, &ca, "{get, ~p}", &ra);
    aemp_sendf(node, reply, &wa, "{surprise}"); /* -> {unhandled_message, surprise} */

    /* a port whose callback starts a timer bound to it */
    aemp_port_new(node, &ctl);
    aemp_rcv(node, ctl, "start", start, NULL);
    aemp_addr cta;
    aemp_port_addr(node, ctl, &cta);
    aemp_sendf(node, (aemp_port){0}, &cta, "{start}");
}

int main(int argc, char **argv)
{
    uv_loop_t *loop = uv_default_loop();
    aemp_node_config cfg = {0};
    cfg.name = argc > 1 ? argv[1] : "ports";
    cfg.cookie = argc > 2 ? argv[2] : "secret";
    cfg.ready_cb = on_ready;
    if (argc > 3) story_ms = strtoull(argv[3], NULL, 10);
    aemp_node *node;
    int rc = aemp_node_create(loop, &cfg, &node);
    if (rc) {
        fprintf(stderr, "aemp_node_create: %s\n", aemp_strerror(rc));
        return 1;
    }
    uv_run(loop, UV_RUN_DEFAULT);
    return 0;
}
