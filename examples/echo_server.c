/*
 * echo_server.c - a C node with a registered port `echo`.
 *
 *   {From, Msg}  sends Msg back to the pid From
 *   stop         closes the port (monitors of it fire with reason normal)
 *
 * Every message is printed in Erlang syntax. SIGINT or SIGTERM closes the
 * node cleanly. From Erlang:  {echo, 'c@host'} ! {self(), hello}
 * From Elixir:                send({:echo, :"c@host"}, {self(), :hello})
 *
 * Usage: example_echo_server NAME [COOKIE]
 */
#include "aemp.h"

#include <stdio.h>
#include <string.h>

struct server {
    aemp_node *node;
    uv_signal_t sigint, sigterm;
};

static void on_echo(aemp_node *node, aemp_port self, const aemp_term *msg, const aemp_addr *from,
                    void *arg)
{
    char text[512];
    (void)from;
    (void)arg;
    aemp_term_print(msg, text, sizeof text);
    printf("echo: received %s\n", text);
    fflush(stdout);

    aemp_cursor c = aemp_cursor_of(msg);
    char atom[16];
    if (aemp_get_atom(&c, atom, sizeof atom) == 0 && strcmp(atom, "stop") == 0) {
        aemp_port_close(node, self); /* also releases the name `echo` */
        return;
    }
    /* {From, Msg}: the reply is a view into msg, sent (copied) at once. */
    aemp_addr to;
    uint32_t arity;
    aemp_term body;
    c = aemp_cursor_of(msg);
    if (aemp_get_tuple(&c, &arity) == 0 && arity == 2 && aemp_get_pid(&c, &to) == 0 &&
        aemp_get_term(&c, &body) == 0) {
        int rc = aemp_send(node, self, &to, &body);
        if (rc) fprintf(stderr, "echo: reply failed: %s\n", aemp_strerror(rc));
    }
}

static void on_ready(aemp_node *node, int status, void *arg)
{
    struct server *s = arg;
    if (status) {
        fprintf(stderr, "echo: cannot register %s with EPMD: %s\n", aemp_node_name(node),
                aemp_strerror(status));
        uv_close((uv_handle_t *)&s->sigint, NULL);
        uv_close((uv_handle_t *)&s->sigterm, NULL);
        aemp_node_close(node, NULL, NULL);
        s->node = NULL;
        return;
    }
    printf("echo: node %s ready\n", aemp_node_name(node));
    fflush(stdout);
}

static void on_nodes(aemp_node *node, const char *peer, int up, const char *reason, void *arg)
{
    (void)node;
    (void)arg;
    if (up)
        printf("echo: node up: %s\n", peer);
    else
        printf("echo: node down: %s (%s)\n", peer, reason);
    fflush(stdout);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct server *s = h->data;
    (void)signum;
    uv_close((uv_handle_t *)&s->sigint, NULL);
    uv_close((uv_handle_t *)&s->sigterm, NULL);
    if (s->node) aemp_node_close(s->node, NULL, NULL);
    s->node = NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s NAME [COOKIE]\n", argv[0]);
        return 2;
    }
    uv_loop_t *loop = uv_default_loop();
    struct server s;
    memset(&s, 0, sizeof s);

    aemp_node_config cfg = {0};
    cfg.name = argv[1];
    cfg.cookie = argc == 3 ? argv[2] : NULL;
    cfg.ready_cb = on_ready;
    cfg.ready_arg = &s;
    cfg.nodes_cb = on_nodes;
    int rc = aemp_node_create(loop, &cfg, &s.node);
    if (rc) {
        fprintf(stderr, "echo: cannot start the node: %s\n", aemp_strerror(rc));
        return 1;
    }
    aemp_port echo;
    if ((rc = aemp_port_open(s.node, on_echo, NULL, &echo)) ||
        (rc = aemp_register(s.node, "echo", echo))) {
        fprintf(stderr, "echo: cannot create the echo port: %s\n", aemp_strerror(rc));
        aemp_node_close(s.node, NULL, NULL);
        uv_run(loop, UV_RUN_DEFAULT);
        return 1;
    }
    uv_signal_init(loop, &s.sigint);
    uv_signal_init(loop, &s.sigterm);
    s.sigint.data = s.sigterm.data = &s;
    uv_signal_start(&s.sigint, on_signal, SIGINT);
    uv_signal_start(&s.sigterm, on_signal, SIGTERM);

    uv_run(loop, UV_RUN_DEFAULT); /* returns once every handle is closed */
    uv_loop_close(loop);
    return 0;
}
