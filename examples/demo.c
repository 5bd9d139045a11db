/*
 * demo.c - a C node talking to a real Erlang node.
 *
 * It registers a port `greeter`. An Erlang node sends it {hello, From, Name};
 * the greeter answers {greeting, Text} to From. When the Erlang node
 * connects, the C node also sends a message of its own to the Erlang
 * process registered as `listener`. Usage: demo NAME COOKIE
 */
#include "aemp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct demo {
    aemp_node *node;
    aemp_port greeter;
    uv_signal_t sig;
};

static void greeter_cb(aemp_node *node, aemp_port self, const aemp_term *msg, const aemp_addr *from,
                       void *arg)
{
    char text[256];
    aemp_term_print(msg, text, sizeof text);
    printf("[C]      received %s\n", text);

    aemp_cursor c = aemp_cursor_of(msg);
    uint32_t arity;
    char tag[32];
    aemp_addr *reply_to = malloc(sizeof *reply_to);
    const void *name;
    size_t len;
    if (reply_to && aemp_get_tuple(&c, &arity) == 0 && arity == 3 &&
        aemp_get_atom(&c, tag, sizeof tag) == 0 && strcmp(tag, "hello") == 0 &&
        aemp_get_pid(&c, reply_to) == 0 && aemp_get_binary(&c, &name, &len) == 0) {
        char greeting[200];
        snprintf(greeting, sizeof greeting, "Hello %.*s, this is C speaking", (int)len,
                 (const char *)name);
        printf("[C]      replying {greeting, <<\"%s\">>}\n", greeting);
        aemp_sendf(node, self, reply_to, "{greeting, ~s}", greeting);
    }
    free(reply_to);
    fflush(stdout);
}

static void on_nodes(aemp_node *node, const char *peer, int up, const char *reason, void *arg)
{
    struct demo *d = arg;
    printf("[C]      node %s: %s\n", up ? "up" : "down", peer);
    if (up) {
        aemp_addr to, self;
        aemp_addr_name(&to, peer, "listener");
        aemp_port_addr(node, d->greeter, &self);
        printf("[C]      sending {from_c, <pid>, [1,2,3], #{lang => c}} to {listener, %s}\n", peer);
        aemp_sendf(node, d->greeter, &to, "{from_c, ~p, [1, 2, 3], #{lang => c}}", &self);
    } else {
        uv_signal_stop(&d->sig);
        uv_close((uv_handle_t *)&d->sig, NULL);
        aemp_node_close(node, NULL, NULL);
    }
    fflush(stdout);
}

static void on_ready(aemp_node *node, int status, void *arg)
{
    if (status) {
        fprintf(stderr, "[C]      cannot register: %s\n", aemp_strerror(status));
        exit(1);
    }
    printf("[C]      node %s is up, greeter registered\n", aemp_node_name(node));
    fflush(stdout);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct demo *d = h->data;
    uv_signal_stop(h);
    uv_close((uv_handle_t *)h, NULL);
    aemp_node_close(d->node, NULL, NULL);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s NAME COOKIE\n", argv[0]);
        return 2;
    }
    struct demo d;
    memset(&d, 0, sizeof d);
    uv_loop_t *loop = uv_default_loop();
    aemp_node_config cfg = {0};
    cfg.name = argv[1];
    cfg.cookie = argv[2];
    cfg.ready_cb = on_ready;
    cfg.nodes_cb = on_nodes;
    cfg.nodes_arg = &d;
    int rc = aemp_node_create(loop, &cfg, &d.node);
    if (rc) {
        fprintf(stderr, "cannot create node: %s\n", aemp_strerror(rc));
        return 1;
    }
    if ((rc = aemp_port_open(d.node, greeter_cb, &d, &d.greeter)) ||
        (rc = aemp_register(d.node, "greeter", d.greeter))) {
        fprintf(stderr, "cannot create the greeter: %s\n", aemp_strerror(rc));
        return 1;
    }
    uv_signal_init(loop, &d.sig);
    d.sig.data = &d;
    uv_signal_start(&d.sig, on_signal, SIGTERM);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    return 0;
}
