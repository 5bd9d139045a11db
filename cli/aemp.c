/*
 * aemp - command-line tool: run a node, ping a node, send to and monitor
 * ports, list EPMD names, make certificates, manage profiles. Uses the
 * public API only.
 */
#include "cli.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    aemp__cli_usage(f);
}

/* ------------------------------------------------------------------ */
/* run                                                                */
/* ------------------------------------------------------------------ */

struct run_state {
    uv_loop_t *loop;
    aemp_node *node;
    aemp_port echo;
    uv_signal_t sigint, sigterm;
    int status;
};

/* echo: {From, Msg} -> Msg to From. */
static void echo_cb(aemp_node *node, aemp_port self, const aemp_term *msg, const aemp_addr *from,
                    void *arg)
{
    aemp__cli_echo(node, self, msg);
}

/* aemp:echo(Args...) returns the argument list; aemp:fail(Reason) raises
 * error:Reason. For trying rpc:call against a running node. */
static int rpc_echo(aemp_node *node, const aemp_term *args, aemp_buf *result, void *arg)
{
    return aemp_buf_put_term(result, args) ? AEMP_RPC_ERROR : AEMP_RPC_RETURN;
}

/* aemp:send(Pid, Msg) sends Msg to Pid and returns ok: a call with an
 * effect that can be seen, for rpc:cast. */
static int rpc_send(aemp_node *node, const aemp_term *args, aemp_buf *result, void *arg)
{
    aemp_cursor c = aemp_cursor_of(args);
    uint32_t n;
    aemp_addr to;
    aemp_term msg;
    if (aemp_get_list(&c, &n) || n != 2 || aemp_get_pid(&c, &to) || aemp_get_term(&c, &msg)) {
        aemp_term_format(result, "badarg");
        return AEMP_RPC_ERROR;
    }
    int rc = aemp_send(node, (aemp_port){0}, &to, &msg);
    aemp_term_format(result, rc ? "{error, ~s}" : "ok", aemp_strerror(rc));
    return rc ? AEMP_RPC_ERROR : AEMP_RPC_RETURN;
}

static int rpc_fail(aemp_node *node, const aemp_term *args, aemp_buf *result, void *arg)
{
    aemp_cursor c = aemp_cursor_of(args);
    uint32_t n;
    aemp_term reason;
    if (aemp_get_list(&c, &n) == 0 && n == 1 && aemp_get_term(&c, &reason) == 0)
        aemp_buf_put_term(result, &reason);
    else
        aemp_term_format(result, "badarg");
    return AEMP_RPC_ERROR;
}

static void on_ready(aemp_node *node, int status, void *arg)
{
    struct run_state *st = arg;
    if (status) {
        fprintf(stderr, "aemp: cannot register %s: %s\n", aemp_node_name(node),
                aemp_strerror(status));
        st->status = 1;
        aemp_node_close(node, NULL, NULL);
        st->node = NULL;
        uv_close((uv_handle_t *)&st->sigint, NULL);
        uv_close((uv_handle_t *)&st->sigterm, NULL);
        return;
    }
    printf("aemp: node %s ready\n", aemp_node_name(node));
    /* its port ID, for mon, kil and aemp_demo:kill/2 (the creation is
     * known once registered) */
    aemp_addr echo;
    char id[AEMP_MAXNODELEN + 64];
    if (aemp_port_addr(node, st->echo, &echo) == 0 && aemp_addr_format(&echo, id, sizeof id) > 0)
        printf("aemp: port echo is %s\n", id);
    fflush(stdout);
}

static void on_nodes(aemp_node *node, const char *peer, int up, const char *reason, void *arg)
{
    if (up)
        printf("aemp: node up: %s\n", peer);
    else
        printf("aemp: node down: %s (%s)\n", peer, reason ? reason : "");
    fflush(stdout);
}

static void on_closed(void *arg)
{
    struct run_state *st = arg;
    uv_close((uv_handle_t *)&st->sigint, NULL);
    uv_close((uv_handle_t *)&st->sigterm, NULL);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct run_state *st = h->data;
    if (!st->node) return;
    printf("aemp: stopping on signal %d\n", signum);
    fflush(stdout);
    aemp_node *n = st->node;
    st->node = NULL;
    aemp_node_close(n, on_closed, st);
}

/* --seeds: the names in text (separated by commas or blanks) as a
 * NULL-terminated list in *out, its storage in *store; 0, or -1 when out of
 * memory. */
static int split_seeds(const char *text, const char ***out, char **store)
{
    size_t len = strlen(text), count = 0;
    char *s = malloc(len + 1);
    const char **list = calloc(len / 2 + 2, sizeof *list);
    if (!s || !list) {
        free(s);
        free(list);
        return -1;
    }
    memcpy(s, text, len + 1);
    for (char *p = s; *p;) {
        while (*p == ',' || *p == ' ' || *p == '\t')
            *p++ = 0;
        if (!*p) break;
        list[count++] = p;
        while (*p && *p != ',' && *p != ' ' && *p != '\t')
            p++;
    }
    *out = list;
    *store = s;
    return 0;
}

static int cmd_run(int argc, char **argv)
{
    struct aemp__cli_opts o = {0};
    int rc = aemp__cli_parse_opts("run", 1, argc, argv, &o);
    if (rc) return rc;
    if (!o.nargs && !o.profile) return aemp__cli_usage_error(usage, "run", "missing node NAME");
    struct run_state st = {0};
    st.loop = uv_default_loop();
    aemp_node_config cfg = {0};
    aemp__cli_config(&o, &cfg);
    cfg.name = o.nargs ? o.args[0] : NULL;
    cfg.listen_port = (uint16_t)o.port;
    cfg.net_ticktime = o.ticktime;
    cfg.read_batch_ms = o.read_batch_ms;
    cfg.ready_cb = on_ready;
    cfg.ready_arg = &st;
    cfg.nodes_cb = on_nodes;
    const char **seeds = NULL;
    char *seed_text = NULL;
    if (o.seeds && split_seeds(o.seeds, &seeds, &seed_text)) {
        fprintf(stderr, "aemp: out of memory\n");
        return 1;
    }
    cfg.seeds = seeds;
    aemp_profile *prof = NULL;
    if (o.profile && aemp__cli_apply_profile(o.profile, &cfg, &prof)) {
        free(seeds);
        free(seed_text);
        return 1;
    }
    if (!cfg.name) {
        free(seeds);
        free(seed_text);
        aemp_profile_free(prof);
        return aemp__cli_usage_error(usage, "run", "missing node NAME (profile %s sets no nodeid)",
                                     o.profile);
    }
    rc = aemp_node_create(st.loop, &cfg, &st.node);
    /* the node has copied the seeds */
    free(seeds);
    free(seed_text);
    if (rc) {
        fprintf(stderr, "aemp: cannot start node %s: %s\n", cfg.name, aemp_strerror(rc));
        aemp_profile_free(prof);
        uv_run(st.loop, UV_RUN_DEFAULT);
        return 1;
    }
    /* the node has copied its name and cookie and read the TLS files */
    aemp_profile_free(prof);
    if ((rc = aemp_port_open(st.node, echo_cb, &st, &st.echo)) ||
        (rc = aemp_register(st.node, "echo", st.echo)) ||
        (rc = aemp_export(st.node, "aemp", "echo", rpc_echo, NULL)) ||
        (rc = aemp_export(st.node, "aemp", "fail", rpc_fail, NULL)) ||
        (rc = aemp_export(st.node, "aemp", "send", rpc_send, NULL)) ||
        (rc = aemp__cli_demo_export(st.node)) || (rc = aemp__cli_demo_join(st.node, st.echo))) {
        fprintf(stderr, "aemp: cannot create the echo port: %s\n", aemp_strerror(rc));
        return 1;
    }
    uv_signal_init(st.loop, &st.sigint);
    uv_signal_init(st.loop, &st.sigterm);
    st.sigint.data = st.sigterm.data = &st;
    uv_signal_start(&st.sigint, on_signal, SIGINT);
    uv_signal_start(&st.sigterm, on_signal, SIGTERM);
    uv_run(st.loop, UV_RUN_DEFAULT);
    uv_loop_close(st.loop);
    return st.status;
}

/* ------------------------------------------------------------------ */
/* names                                                              */
/* ------------------------------------------------------------------ */

static void names_cb(int status, const char *text, size_t len, void *arg)
{
    int *rc = arg;
    if (status) {
        fprintf(stderr, "aemp: cannot list EPMD names: %s\n", aemp_strerror(status));
        *rc = 1;
        return;
    }
    fwrite(text, 1, len, stdout);
    *rc = 0;
}

static int cmd_names(int argc, char **argv)
{
    if (argc > 0 && argv[0][0] == '-')
        return aemp__cli_usage_error(usage, "names", "unknown option '%s'", argv[0]);
    if (argc > 1) return aemp__cli_usage_error(usage, "names", "unexpected argument '%s'", argv[1]);
    int rc = 1;
    uv_loop_t *loop = uv_default_loop();
    int err = aemp_epmd_names(loop, argc ? argv[0] : NULL, 0, names_cb, &rc);
    if (err) {
        fprintf(stderr, "aemp: cannot list EPMD names: %s\n", aemp_strerror(err));
        return 1;
    }
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    return rc;
}

/* ------------------------------------------------------------------ */
/* gencert                                                            */
/* ------------------------------------------------------------------ */

static int cmd_gencert(int argc, char **argv)
{
    const char *dir = NULL, *name = "node";
    const char *hosts[64];
    size_t nhosts = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--name") == 0) {
            if (i + 1 >= argc || !argv[i + 1][0])
                return aemp__cli_usage_error(usage, "gencert", "option --name needs a value");
            name = argv[++i];
        } else if (argv[i][0] == '-') {
            return aemp__cli_usage_error(usage, "gencert", "unknown option '%s'", argv[i]);
        } else if (!dir) {
            dir = argv[i];
        } else if (nhosts == sizeof hosts / sizeof *hosts) {
            return aemp__cli_usage_error(usage, "gencert", "at most %zu hosts", nhosts);
        } else {
            hosts[nhosts++] = argv[i];
        }
    }
    if (!dir) return aemp__cli_usage_error(usage, "gencert", "missing DIR");
    return aemp__cli_gencert(dir, name, hosts, &nhosts) ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) return aemp__cli_usage_error(usage, NULL, "missing command");
    const char *cmd = argv[1];
    if (strcmp(cmd, "run") == 0) return cmd_run(argc - 2, argv + 2);
    if (strcmp(cmd, "ping") == 0) return aemp__cli_ping(argc - 2, argv + 2);
    if (strcmp(cmd, "snd") == 0) return aemp__cli_snd(argc - 2, argv + 2);
    if (strcmp(cmd, "mon") == 0) return aemp__cli_mon(argc - 2, argv + 2);
    if (strcmp(cmd, "rpc") == 0) return aemp__cli_rpc(argc - 2, argv + 2);
    if (strcmp(cmd, "cal") == 0) return aemp__cli_cal(argc - 2, argv + 2);
    if (strcmp(cmd, "db") == 0) return aemp__cli_db(argc - 2, argv + 2);
    if (strcmp(cmd, "names") == 0) return cmd_names(argc - 2, argv + 2);
    if (strcmp(cmd, "gencert") == 0) return cmd_gencert(argc - 2, argv + 2);
    if (strcmp(cmd, "profile") == 0) return aemp__cli_profile(argc - 2, argv + 2);
    bool version = strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0;
    bool help = strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0;
    if (!version && !help)
        return aemp__cli_usage_error(usage, NULL, "unknown %s '%s'",
                                     cmd[0] == '-' ? "option" : "command", cmd);
    if (argc > 2) return aemp__cli_usage_error(usage, cmd, "unexpected argument '%s'", argv[2]);
    if (version)
        printf("aemp %s\n", AEMP_VERSION);
    else
        usage(stdout);
    return 0;
}
