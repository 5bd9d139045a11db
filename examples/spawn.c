/*
 * spawn.c - a C node spawns processes on another node (aemp_spawn) and
 * watches them: an Erlang function that exits with a reason, one that does
 * not exist (undef), and a node that is not there (an error, no pid).
 *
 *   erl -sname e -setcookie secret -start_epmd false    (or any node)
 *   ./build/example_spawn e@HOST [NAME [COOKIE]]        (default spawner, secret)
 *
 * Read docs/guide.md, "Spawning", beside it.
 */
#include "aemp.h"

#include <stdio.h>
#include <string.h>

static int outstanding = 3; /* results still to come */

static void done_one(aemp_node *node)
{
    if (--outstanding == 0) aemp_node_close(node, NULL, NULL);
}

/* The watcher port's messages: the 'DOWN' of what it spawned. */
static int on_down(aemp_node *node, aemp_port self, const aemp_msg *m, void *arg)
{
    char text[256];
    aemp_term_print(&m->term, text, sizeof text);
    printf("watcher got %s\n", text);
    done_one(node);
    return 0;
}

/* Called once per aemp_spawn, from the loop. */
static void on_spawned(aemp_node *node, int err, const aemp_addr *pid, const aemp_addr *ref,
                       void *arg)
{
    char text[128];
    if (err) {
        printf("%s: not spawned: %s\n", (const char *)arg, aemp_strerror(err));
        done_one(node);
        return;
    }
    aemp_addr_format(pid, text, sizeof text);
    printf("%s: spawned %s\n", (const char *)arg, text);
}

static const char *peer;

static void on_ready(aemp_node *node, int status, void *arg)
{
    aemp_port watcher;
    if (status) {
        fprintf(stderr, "node: %s\n", aemp_strerror(status));
        return;
    }
    aemp_port_new(node, &watcher);
    aemp_rcv(node, watcher, "DOWN", on_down, NULL);

    /* erlang:exit({bye, from_c}) on peer, monitored by the watcher */
    aemp_buf args = AEMP_BUF_INIT;
    aemp_term_format(&args, "[{bye, from_c}]");
    aemp_term a = aemp_buf_term(&args);
    int rc = aemp_spawn(node, watcher, peer, "erlang", "exit", &a, AEMP_SPAWN_MONITOR, on_spawned,
                        "erlang:exit/1");
    /* a function peer does not have: the process exits with undef */
    if (!rc)
        rc = aemp_spawn(node, watcher, peer, "nomod", "nofun", &a, AEMP_SPAWN_MONITOR, on_spawned,
                        "nomod:nofun/1");
    /* a node that is not there: the callback gets the connection's error */
    char nobody[AEMP_MAXNODELEN + 1];
    snprintf(nobody, sizeof nobody, "nobody%s", strchr(peer, '@'));
    if (!rc)
        rc = aemp_spawn(node, watcher, nobody, "erlang", "exit", &a, AEMP_SPAWN_MONITOR, on_spawned,
                        "nobody");
    aemp_buf_free(&args);
    if (rc) {
        fprintf(stderr, "aemp_spawn: %s\n", aemp_strerror(rc));
        aemp_node_close(node, NULL, NULL);
    }
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strchr(argv[1], '@')) {
        fprintf(stderr, "usage: example_spawn PEER@HOST [NAME [COOKIE]]\n");
        return 2;
    }
    peer = argv[1];
    uv_loop_t *loop = uv_default_loop();
    aemp_node_config cfg = {0};
    cfg.name = argc > 2 ? argv[2] : "spawner";
    cfg.cookie = argc > 3 ? argv[3] : "secret";
    cfg.ready_cb = on_ready;
    aemp_node *node;
    int rc = aemp_node_create(loop, &cfg, &node);
    if (rc) {
        fprintf(stderr, "aemp_node_create: %s\n", aemp_strerror(rc));
        return 1;
    }
    uv_run(loop, UV_RUN_DEFAULT);
    return 0;
}
