/*
 * aemp - command-line tool: run a node, ping a node, list EPMD names.
 * Uses the public API only.
 */
#include "aemp.h"
#include "profile.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f, "usage:\n"
               "  aemp run NAME [--cookie C] [--port P]   run a node with an `echo` port\n"
               "                                          and rpc functions aemp:echo, aemp:fail, "
               "aemp:send\n"
               "  aemp ping NODE [--cookie C]             check that NODE answers\n"
               "  aemp names [HOST]                       list EPMD registrations\n"
               "  aemp gencert DIR [--name N] [HOST...]   make a CA and a node certificate\n"
               "  aemp profile NAME show | set KEY VALUE | unset KEY | delete | gensecret\n"
               "  aemp profile NAME gencert DIR [HOST...] manage node profiles\n"
               "  aemp version | --version                print the version\n"
               "run and ping take --tls-cert FILE --tls-key FILE --tls-ca FILE for TLS\n"
               "distribution (as erl -proto_dist inet_tls); run takes --ticktime S\n"
               "(as net_ticktime, default 60) and --read-batch MS|off (read batching,\n"
               "0 the default of 1 ms). run and ping take --profile P: the\n"
               "settings of profile P win over the options; run needs no NAME when P\n"
               "sets nodeid.\n"
               "NAME and NODE are alive@host, or alive for alive@<short host name>.\n"
               "The cookie defaults to ~/.erlang.cookie; AEMP_LOG=debug|info|warn|error\n"
               "sets the log level, ERL_EPMD_PORT the EPMD port.\n"
               "Exit status: 0 done, 1 failed (ping: pang), 2 usage error (what is wrong,\n"
               "then this text, on stderr).\n");
}

struct opts {
    const char *name;
    const char *cookie;
    unsigned port;
    const char *tls_cert, *tls_key, *tls_ca;
    unsigned ticktime;
    int read_batch_ms; /* as aemp_node_config: 0 default, -1 off */
    const char *profile;
};

/* What run and ping take alike: the cookie and the TLS files. */
static void config_from_opts(const struct opts *o, aemp_node_config *cfg)
{
    cfg->cookie = o->cookie;
    cfg->tls_cert = o->tls_cert;
    cfg->tls_key = o->tls_key;
    cfg->tls_ca = o->tls_ca;
}

/* The options of run and ping; each takes a value. */
static const struct {
    const char *name;
    bool run_only;
} options[] = {
    {"--cookie", false}, {"--profile", false}, {"--tls-cert", false}, {"--tls-key", false},
    {"--tls-ca", false}, {"--port", true},     {"--ticktime", true},  {"--read-batch", true},
};

/* Options and the NAME/NODE argument of run (run true) or ping. Returns 0,
 * or 2 after a usage error has been reported. */
static int parse_opts(const char *cmd, bool run, int argc, char **argv, struct opts *o)
{
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (arg[0] != '-') {
            if (o->name) return aemp__cli_usage_error(usage, cmd, "unexpected argument '%s'", arg);
            o->name = arg;
            continue;
        }
        size_t k = 0;
        while (k < sizeof options / sizeof *options && strcmp(arg, options[k].name) != 0)
            k++;
        if (k == sizeof options / sizeof *options)
            return aemp__cli_usage_error(usage, cmd, "unknown option '%s'", arg);
        if (options[k].run_only && !run)
            return aemp__cli_usage_error(usage, cmd, "option %s is for aemp run only", arg);
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
    uv_signal_t sigint, sigterm;
    int status;
};

/* echo: {From, Msg} -> Msg to From. */
static void echo_cb(aemp_node *node, aemp_port self, const aemp_term *msg, const aemp_addr *from,
                    void *arg)
{
    aemp_cursor c = aemp_cursor_of(msg);
    uint32_t arity;
    aemp_addr to;
    aemp_term body;
    if (aemp_get_tuple(&c, &arity) == 0 && arity == 2 && aemp_get_pid(&c, &to) == 0 &&
        aemp_get_term(&c, &body) == 0) {
        int rc = aemp_send(node, self, &to, &body);
        if (rc) fprintf(stderr, "aemp: echo reply failed: %s\n", aemp_strerror(rc));
    } else {
        char text[256];
        aemp_term_print(msg, text, sizeof text);
        fprintf(stderr, "aemp: echo ignored a message that is not {Pid, Msg}: %s\n", text);
    }
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
    struct opts o = {0};
    int rc = parse_opts("run", true, argc, argv, &o);
    if (rc) return rc;
    if (!o.name && !o.profile) return aemp__cli_usage_error(usage, "run", "missing node NAME");
    struct run_state st = {0};
    st.loop = uv_default_loop();
    aemp_node_config cfg = {0};
    config_from_opts(&o, &cfg);
    cfg.name = o.name;
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
    aemp_port echo;
    if ((rc = aemp_port_open(st.node, echo_cb, &st, &echo)) ||
        (rc = aemp_register(st.node, "echo", echo)) ||
        (rc = aemp_export(st.node, "aemp", "echo", rpc_echo, NULL)) ||
        (rc = aemp_export(st.node, "aemp", "fail", rpc_fail, NULL)) ||
        (rc = aemp_export(st.node, "aemp", "send", rpc_send, NULL))) {
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
/* ping                                                               */
/* ------------------------------------------------------------------ */

struct ping_state {
    const char *target;
    aemp_node *node;
    int status; /* -1 pending */
    uv_timer_t timer;
};

static void ping_finish(struct ping_state *st, int status)
{
    if (st->status != -1) return;
    st->status = status;
    uv_close((uv_handle_t *)&st->timer, NULL);
    aemp_node_close(st->node, NULL, NULL);
}

static void ping_nodes(aemp_node *node, const char *peer, int up, const char *reason, void *arg)
{
    struct ping_state *st = arg;
    if (up && strcmp(peer, st->target) == 0) {
        printf("pong\n");
        ping_finish(st, 0);
    }
}

static void ping_fail(aemp_node *node, const char *peer, int err, const char *reason,
                      size_t dropped, void *arg)
{
    struct ping_state *st = arg;
    fprintf(stderr, "pang: %s: %s\n", peer, reason);
    ping_finish(st, 1);
}

static void ping_timeout(uv_timer_t *t)
{
    struct ping_state *st = t->data;
    fprintf(stderr, "pang: %s: no answer\n", st->target);
    ping_finish(st, 1);
}

static int cmd_ping(int argc, char **argv)
{
    struct opts o = {0};
    int rc = parse_opts("ping", false, argc, argv, &o);
    if (rc) return rc;
    if (!o.name) return aemp__cli_usage_error(usage, "ping", "missing NODE");
    uv_loop_t *loop = uv_default_loop();
    struct ping_state st = {0};
    st.status = -1;
    st.target = o.name;
    char name[64];
    snprintf(name, sizeof name, "aemp_ping_%ld", (long)uv_os_getpid());
    /* A bare target name means the short host, as for `run`. */
    char target[AEMP_MAXNODELEN + 1];
    if (!strchr(o.name, '@')) {
        char host[256];
        size_t hl = sizeof host;
        if (uv_os_gethostname(host, &hl) == 0) {
            char *dot = strchr(host, '.');
            if (dot) *dot = 0;
            if ((size_t)snprintf(target, sizeof target, "%s@%s", o.name, host) >= sizeof target) {
                fprintf(stderr, "pang: %s: node name too long\n", o.name);
                return 1;
            }
            st.target = target;
        }
    }
    const char *at = strchr(st.target, '@');
    char myname[AEMP_MAXNODELEN + 80];
    if ((size_t)snprintf(myname, sizeof myname, "%s%s", name, at ? at : "") >= sizeof myname) {
        fprintf(stderr, "pang: %s: node name too long\n", st.target);
        return 1;
    }
    aemp_node_config cfg = {0};
    config_from_opts(&o, &cfg);
    cfg.name = myname;
    cfg.client_only = 1;
    cfg.nodes_cb = ping_nodes;
    cfg.nodes_arg = &st;
    cfg.fail_cb = ping_fail;
    cfg.fail_arg = &st;
    aemp_profile *prof = NULL;
    if (o.profile && aemp__cli_apply_profile(o.profile, &cfg, &prof)) return 1;
    /* The profile's nodeid names the node it configures, not this pinger:
     * borrowing it would clash with that node if it runs. */
    cfg.name = myname;
    rc = aemp_node_create(loop, &cfg, &st.node);
    aemp_profile_free(prof);
    if (rc) {
        fprintf(stderr, "aemp: cannot start a node to ping from: %s\n", aemp_strerror(rc));
        return 1;
    }
    uv_timer_init(loop, &st.timer);
    st.timer.data = &st;
    uv_timer_start(&st.timer, ping_timeout, 15000, 0);
    rc = aemp_node_connect(st.node, st.target);
    if (rc) {
        fprintf(stderr, "pang: %s: %s\n", st.target, aemp_strerror(rc));
        ping_finish(&st, 1);
    }
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    return st.status == 0 ? 0 : 1;
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
    if (strcmp(cmd, "ping") == 0) return cmd_ping(argc - 2, argv + 2);
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
