/*
 * cluster_node - the C node of the database cluster test
 * (interop-tests/fault/test_db_cluster.sh), built on the public API only.
 *
 *   cluster_node NAME COOKIE TICKTIME [SEED,SEED...]
 *
 * Runs node NAME (net_ticktime TICKTIME seconds) with the given seeds
 * (fast backoff: 100 ms up to 1 s; meshing every 500 ms; a connection
 * attempt gives up after 2 s, so that one started during a partition does
 * not hold up the reconnection after its heal). It watches two families of
 * the database and prints them:
 *   "view f: K=V K=V ..."  family f after every change, sorted by subkey
 *                          (values that are binaries as their text)
 *   "count big: N"         the number of entries of family big after
 *                          every change
 * and reads commands from stdin, one a line:
 *   set FAM KEY VALUE      aemp_db_set(FAM, KEY, <<VALUE>>); prints "did set FAM KEY"
 *   del FAM KEY            aemp_db_del; prints "did del FAM KEY RESULT"
 *   fill FAM N             sets N keys k1..kN of FAM (value <<"vI">>);
 *                          prints "did fill FAM N"
 * Prints "ready NAME" once registered with EPMD, "node up: PEER" and
 * "node down: PEER (REASON)". SIGTERM or SIGINT closes the node (exit 0);
 * the end of stdin does not.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../say.h"
#include "aemp.h"

#define MAX_SEEDS 16

static uv_loop_t loop;
static aemp_node *node;
static uv_pipe_t in;
static uv_signal_t sigterm, sigint;
static int stopping;
static char line[4096];
static size_t line_len;

/* Order "K=V" items by K, bytewise (as Erlang orders binaries). */
static int cmp_item(const void *a, const void *b)
{
    const char *x = *(char *const *)a, *y = *(char *const *)b;
    size_t lx = strcspn(x, "="), ly = strcspn(y, "=");
    int c = memcmp(x, y, lx < ly ? lx : ly);
    return c ? c : (lx > ly) - (lx < ly);
}

/* One "K=V" item: a binary value as its text, anything else printed. */
static char *item(const aemp_db_entry *e)
{
    char val[256];
    aemp_cursor c = aemp_cursor_of(&e->value);
    const void *p;
    size_t len;
    if (aemp_get_binary(&c, &p, &len) == 0 && len < sizeof val) {
        memcpy(val, p, len);
        val[len] = 0;
    } else {
        aemp_term_print(&e->value, val, sizeof val);
    }
    size_t n = strlen(e->subkey) + strlen(val) + 2;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s=%s", e->subkey, val);
    return s;
}

static void print_f(aemp_node *n, const aemp_db_view *v, const aemp_db_diff *d, void *arg)
{
    (void)n, (void)d, (void)arg;
    size_t cnt = aemp_db_view_count(v);
    char **items = calloc(cnt + 1, sizeof *items);
    if (!items) abort();
    for (size_t i = 0; i < cnt; i++) {
        aemp_db_entry e;
        aemp_db_view_at(v, i, &e);
        if (!(items[i] = item(&e))) abort();
    }
    qsort(items, cnt, sizeof *items, cmp_item);
    char out[8192];
    size_t len = (size_t)snprintf(out, sizeof out, "view f:");
    for (size_t i = 0; i < cnt; i++) {
        if (len < sizeof out) len += (size_t)snprintf(out + len, sizeof out - len, " %s", items[i]);
        free(items[i]);
    }
    free(items);
    say("%s", out);
}

static void print_big(aemp_node *n, const aemp_db_view *v, const aemp_db_diff *d, void *arg)
{
    (void)n, (void)d, (void)arg;
    say("count big: %zu", aemp_db_view_count(v));
}

static int set_bin(const char *fam, const char *key, const char *val)
{
    aemp_buf b = AEMP_BUF_INIT;
    int rc = aemp_term_format(&b, "~s", val);
    aemp_term t = aemp_buf_term(&b);
    if (!rc) rc = aemp_db_set(node, fam, key, &t, NULL);
    aemp_buf_free(&b);
    return rc;
}

static void command(char *l)
{
    char *save = NULL;
    char *op = strtok_r(l, " ", &save), *a = strtok_r(NULL, " ", &save),
         *b = strtok_r(NULL, " ", &save), *c = strtok_r(NULL, " ", &save);
    int rc;
    if (!op) return;
    if (strcmp(op, "set") == 0 && c) {
        if ((rc = set_bin(a, b, c)) != 0)
            say("FAIL set %s %s: %s", a, b, aemp_strerror(rc));
        else
            say("did set %s %s", a, b);
    } else if (strcmp(op, "del") == 0 && b) {
        rc = aemp_db_del(node, a, b);
        say("did del %s %s %s", a, b, rc ? aemp_strerror(rc) : "ok");
    } else if (strcmp(op, "fill") == 0 && b) {
        long count = strtol(b, NULL, 10);
        for (long i = 1; i <= count; i++) {
            char key[32], val[32];
            snprintf(key, sizeof key, "k%ld", i);
            snprintf(val, sizeof val, "v%ld", i);
            if ((rc = set_bin(a, key, val)) != 0) {
                say("FAIL fill %s %s: %s", a, key, aemp_strerror(rc));
                return;
            }
        }
        say("did fill %s %ld", a, count);
    } else {
        say("FAIL unknown command: %s", op);
    }
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    static char space[4096];
    (void)h, (void)hint;
    *buf = uv_buf_init(space, sizeof space);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    if (n < 0) {
        uv_read_stop(s); /* end of the commands; the node runs on */
        return;
    }
    for (ssize_t i = 0; i < n; i++) {
        char ch = buf->base[i];
        if (ch == '\n') {
            line[line_len] = 0;
            command(line);
            line_len = 0;
        } else if (line_len + 1 < sizeof line) {
            line[line_len++] = ch;
        }
    }
}

static void on_nodes(aemp_node *n, const char *peer, int up, const char *reason, void *arg)
{
    (void)n, (void)arg;
    if (up)
        say("node up: %s", peer);
    else
        say("node down: %s (%s)", peer, reason ? reason : "?");
}

static void on_ready(aemp_node *n, int status, void *arg)
{
    (void)arg;
    if (status) {
        say("FAIL registration: %s", aemp_strerror(status));
        exit(1);
    }
    if (aemp_db_mon(n, "f", print_f, NULL, NULL) || aemp_db_mon(n, "big", print_big, NULL, NULL) ||
        uv_read_start((uv_stream_t *)&in, on_alloc, on_read)) {
        say("FAIL setup");
        exit(1);
    }
    say("ready %s", aemp_node_name(n));
}

static void on_closed(void *arg)
{
    (void)arg;
    uv_close((uv_handle_t *)&sigterm, NULL);
    uv_close((uv_handle_t *)&sigint, NULL);
    uv_close((uv_handle_t *)&in, NULL);
}

static void on_signal(uv_signal_t *h, int signum)
{
    (void)h, (void)signum;
    if (stopping++) return;
    aemp_node_close(node, on_closed, NULL);
}

int main(int argc, char **argv)
{
    const char *seeds[MAX_SEEDS + 1] = {0};
    char *list = NULL;
    if (argc < 4 || argc > 5) {
        say("usage: cluster_node NAME COOKIE TICKTIME [SEED,SEED...]");
        return 2;
    }
    if (argc == 5) {
        char *save = NULL;
        size_t k = 0;
        list = strdup(argv[4]);
        for (char *s = strtok_r(list, ",", &save); s && k < MAX_SEEDS;
             s = strtok_r(NULL, ",", &save))
            seeds[k++] = s;
    }
    signal(SIGPIPE, SIG_IGN);
    uv_loop_init(&loop);
    aemp_node_config cfg = {0};
    cfg.name = argv[1];
    cfg.cookie = argv[2];
    cfg.net_ticktime = (unsigned)atoi(argv[3]);
    cfg.handshake_timeout_ms = 2000;
    cfg.ready_cb = on_ready;
    cfg.nodes_cb = on_nodes;
    cfg.seeds = seeds;
    cfg.seed_min_ms = 100;
    cfg.seed_max_ms = 1000;
    cfg.mesh_interval_ms = 500;
    if (uv_pipe_init(&loop, &in, 0) || uv_pipe_open(&in, 0) || uv_signal_init(&loop, &sigterm) ||
        uv_signal_start(&sigterm, on_signal, SIGTERM) || uv_signal_init(&loop, &sigint) ||
        uv_signal_start(&sigint, on_signal, SIGINT)) {
        say("FAIL libuv setup");
        return 1;
    }
    if (aemp_node_create(&loop, &cfg, &node)) {
        say("FAIL aemp_node_create");
        return 1;
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    free(list);
    return uv_loop_close(&loop) == 0 ? 0 : 1;
}
