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

void aemp__cli_usage(FILE *f)
{
    fprintf(f, "usage:\n"
               "  aemp run NAME [--cookie C] [--port P]   run a node with an `echo` port,\n"
               "                                          rpc functions aemp:echo, aemp:fail, "
               "aemp:send\n"
               "                                          and the module aemp_demo\n"
               "  aemp ping NODE [--cookie C]             check that NODE answers\n"
               "  aemp snd PORT TERM [--cookie C]         send TERM to PORT\n"
               "  aemp mon PORT [--cookie C]              wait until PORT dies, print why\n"
               "  aemp rpc NODE MOD FUN [ARGS] [--timeout S]\n"
               "                                          call MOD:FUN(ARGS...), print the result\n"
               "  aemp cal PORT TERM [--timeout S]        send TERM with a reply pid added,\n"
               "                                          print the reply\n"
               "  aemp names [HOST]                       list EPMD registrations\n"
               "  aemp gencert DIR [--name N] [HOST...]   make a CA and a node certificate\n"
               "  aemp profile NAME show | set KEY VALUE | unset KEY | delete | gensecret\n"
               "  aemp profile NAME gencert DIR [HOST...] manage node profiles\n"
               "  aemp version | --version                print the version\n"
               "run, ping, snd, mon, rpc and cal take --tls-cert FILE --tls-key FILE\n"
               "--tls-ca FILE for TLS distribution (as erl -proto_dist inet_tls) and\n"
               "--profile P: the settings of profile P win over the options; run needs no\n"
               "NAME when P sets nodeid. run takes --ticktime S (as net_ticktime, default\n"
               "60) and --read-batch MS|off (read batching, 0 the default of 1 ms); rpc and\n"
               "cal take --timeout S (default none; cal then ends when PORT dies).\n"
               "NAME and NODE are alive@host, or alive for alive@<short host name>. PORT is\n"
               "NODE#NAME (a registered name), NODE#<ID.SERIAL.CREATION> (a pid), or the\n"
               "Erlang term {NAME, NODE}. TERM and ARGS are Erlang terms, ARGS a list\n"
               "(default []): '{hello, [1, <<\"x\">>]}'.\n"
               "The cookie defaults to ~/.erlang.cookie; AEMP_LOG=debug|info|warn|error\n"
               "sets the log level, ERL_EPMD_PORT the EPMD port.\n"
               "Exit status: 0 done, 1 failed (ping: pang; mon: the connection failed;\n"
               "rpc, cal: what went wrong on stderr, first its kind: error, throw, exit,\n"
               "badrpc, timeout, noconnection), 2 usage error (what is wrong, then this\n"
               "text, on stderr).\n");
}

static void usage(FILE *f)
{
    aemp__cli_usage(f);
}

/* What run and the client commands take alike: the cookie and the TLS files. */
void aemp__cli_config(const struct aemp__cli_opts *o, aemp_node_config *cfg)
{
    cfg->cookie = o->cookie;
    cfg->tls_cert = o->tls_cert;
    cfg->tls_key = o->tls_key;
    cfg->tls_ca = o->tls_ca;
}

/* The options of run and the client commands; each takes a value. `only`:
 * the commands that take it (NULL: all of them), and how to say so. */
static const struct {
    const char *name;
    const char *const *only;
    const char *only_text;
} options[] = {
#define RUN ((const char *const[]){"run", NULL}), "aemp run only"
#define CALLS ((const char *const[]){"rpc", "cal", NULL}), "aemp rpc and cal only"
    {"--cookie", NULL, NULL},  {"--profile", NULL, NULL}, {"--tls-cert", NULL, NULL},
    {"--tls-key", NULL, NULL}, {"--tls-ca", NULL, NULL},  {"--port", RUN},
    {"--ticktime", RUN},       {"--read-batch", RUN},     {"--timeout", CALLS},
#undef RUN
#undef CALLS
};

static bool option_for(size_t k, const char *cmd)
{
    if (!options[k].only) return true;
    for (const char *const *c = options[k].only; *c; c++)
        if (strcmp(*c, cmd) == 0) return true;
    return false;
}

/* Options start with "--": anything else (-5 too) is a positional argument. */
int aemp__cli_parse_opts(const char *cmd, int maxargs, int argc, char **argv,
                         struct aemp__cli_opts *o)
{
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) != 0) {
            if (o->nargs == maxargs || o->nargs == (int)(sizeof o->args / sizeof *o->args))
                return aemp__cli_usage_error(usage, cmd, "unexpected argument '%s'", arg);
            o->args[o->nargs++] = arg;
            continue;
        }
        size_t k = 0;
        while (k < sizeof options / sizeof *options && strcmp(arg, options[k].name) != 0)
            k++;
        if (k == sizeof options / sizeof *options)
            return aemp__cli_usage_error(usage, cmd, "unknown option '%s'", arg);
        if (!option_for(k, cmd))
            return aemp__cli_usage_error(usage, cmd, "option %s is for %s", arg,
                                         options[k].only_text);
        if (i + 1 >= argc || !argv[i + 1][0])
            return aemp__cli_usage_error(usage, cmd, "option %s needs a value", arg);
        const char *v = argv[++i];
        char *end;
        if (strcmp(arg, "--cookie") == 0) {
            o->cookie = v;
        } else if (strcmp(arg, "--profile") == 0) {
            o->profile = v;
        } else if (strcmp(arg, "--tls-cert") == 0) {
            o->tls_cert = v;
        } else if (strcmp(arg, "--tls-key") == 0) {
            o->tls_key = v;
        } else if (strcmp(arg, "--tls-ca") == 0) {
            o->tls_ca = v;
        } else if (strcmp(arg, "--timeout") == 0) {
            double t = strtod(v, &end);
            if (*end || !isdigit((unsigned char)v[0]) || !(t > 0) || t > 86400)
                return aemp__cli_usage_error(usage, cmd, "bad timeout '%s' (seconds, up to 86400)",
                                             v);
            o->timeout_ms = (unsigned)(t * 1000 + 0.5);
            if (!o->timeout_ms) o->timeout_ms = 1;
        } else if (strcmp(arg, "--port") == 0) {
            unsigned long p = strtoul(v, &end, 10);
            if (*end || !isdigit((unsigned char)v[0]) || p > 65535)
                return aemp__cli_usage_error(usage, cmd, "bad port '%s' (0..65535)", v);
            o->port = (unsigned)p;
        } else if (strcmp(arg, "--ticktime") == 0) {
            unsigned long t = strtoul(v, &end, 10);
            if (*end || !isdigit((unsigned char)v[0]) || t == 0 || t > 86400)
                return aemp__cli_usage_error(usage, cmd, "bad ticktime '%s' (seconds, 1..86400)",
                                             v);
            o->ticktime = (unsigned)t;
        } else { /* --read-batch: as read_batch_ms, 0 the default, off */
            unsigned long ms = strcmp(v, "off") == 0 ? 0 : strtoul(v, &end, 10);
            if (strcmp(v, "off") != 0 && (*end || !isdigit((unsigned char)v[0]) || ms > 1000))
                return aemp__cli_usage_error(
                    usage, cmd, "bad read batch '%s' (off, or milliseconds 0..1000, 0: 1 ms)", v);
            o->read_batch_ms = strcmp(v, "off") == 0 ? -1 : (int)ms;
        }
    }
    return 0;
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
    aemp_profile *prof = NULL;
    if (o.profile && aemp__cli_apply_profile(o.profile, &cfg, &prof)) return 1;
    if (!cfg.name) {
        aemp_profile_free(prof);
        return aemp__cli_usage_error(usage, "run", "missing node NAME (profile %s sets no nodeid)",
                                     o.profile);
    }
    rc = aemp_node_create(st.loop, &cfg, &st.node);
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
        (rc = aemp__cli_demo_export(st.node))) {
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
