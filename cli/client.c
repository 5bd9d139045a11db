/*
 * client.c - the commands that start a temporary client-only node and talk
 * to one peer: ping, snd, mon. Ports and terms come from the command line
 * (port IDs, Erlang syntax via aemp_term_parse); terms go out in Erlang
 * syntax (aemp_term_print). Uses the public API only.
 */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

/* How long a connection may take to come up. */
#define CONNECT_TIMEOUT_MS 15000

static void usage(FILE *f)
{
    aemp__cli_usage(f);
}

/* ------------------------------------------------------------------ */
/* names, ports and terms on the command line                         */
/* ------------------------------------------------------------------ */

int aemp__cli_node_name(const char *in, char *out, size_t size)
{
    if (strchr(in, '@')) return (size_t)snprintf(out, size, "%s", in) < size ? 0 : -1;
    char host[256];
    size_t hl = sizeof host;
    if (uv_os_gethostname(host, &hl) != 0) return -1;
    char *dot = strchr(host, '.');
    if (dot) *dot = 0;
    return (size_t)snprintf(out, size, "%s@%s", in, host) < size ? 0 : -1;
}

int aemp__cli_port(const char *cmd, const char *what, const char *in, aemp_addr *out)
{
    const char *hash = strchr(in, '#');
    if (in[0] != '{' && strncmp(in, "#Pid<", 5) != 0 && hash) {
        /* NODE#REST, NODE perhaps short */
        char node[AEMP_MAXNODELEN + 1], id[AEMP_MAXNODELEN + AEMP_MAXATOMLEN + 2];
        size_t nn = (size_t)(hash - in);
        if (nn == 0 || nn >= sizeof node)
            return aemp__cli_usage_error(usage, cmd, "bad %s '%s' (no node name before '#')", what,
                                         in);
        memcpy(node, in, nn);
        node[nn] = 0;
        if (aemp__cli_node_name(node, id, AEMP_MAXNODELEN + 1) ||
            (size_t)snprintf(id + strlen(id), sizeof id - strlen(id), "%s", hash) >=
                sizeof id - strlen(id) ||
            aemp_addr_parse(id, out) || out->kind == AEMP_ADDR_REF)
            return aemp__cli_usage_error(usage, cmd, "bad %s '%s'", what, in);
        return 0;
    }
    /* an Erlang term: a pid, or {Name, Node} */
    aemp_buf b = AEMP_BUF_INIT;
    int rc = aemp__cli_term(cmd, what, in, &b);
    if (rc) return rc;
    aemp_term t = aemp_buf_term(&b);
    aemp_cursor c = aemp_cursor_of(&t);
    uint32_t arity;
    char name[AEMP_MAXATOMLEN + 1], node[AEMP_MAXATOMLEN + 1];
    if (aemp_get_pid(&c, out) == 0) {
        rc = 0;
    } else if (aemp_get_tuple(&c, &arity) == 0 && arity == 2 &&
               aemp_get_atom(&c, name, sizeof name) == 0 &&
               aemp_get_atom(&c, node, sizeof node) == 0 && aemp_addr_name(out, node, name) == 0) {
        rc = 0;
    } else {
        rc = aemp__cli_usage_error(usage, cmd, "bad %s '%s' (not NODE#NAME, a pid or {NAME, NODE})",
                                   what, in);
    }
    aemp_buf_free(&b);
    return rc;
}

int aemp__cli_term(const char *cmd, const char *what, const char *in, aemp_buf *b)
{
    size_t pos = 0;
    int rc = aemp_term_parse(b, in, strlen(in), &pos);
    if (rc == 0) return 0;
    /* the column in characters, for UTF-8 text */
    size_t col = 1;
    for (size_t i = 0; i < pos; i++)
        col += ((unsigned char)in[i] & 0xC0) != 0x80;
    const char *why = rc == AEMP_ETOOBIG  ? "too big or nested too deeply"
                      : rc == AEMP_EINVAL ? "not Erlang term syntax"
                                          : aemp_strerror(rc);
    return aemp__cli_usage_error(usage, cmd, "bad %s '%s': %s at column %zu", what, in, why, col);
}

void aemp__cli_print_term(FILE *f, const aemp_term *t)
{
    size_t size = 4096;
    for (;;) {
        char *text = malloc(size);
        if (!text) {
            fprintf(f, "<out of memory>\n");
            return;
        }
        int n = aemp_term_print(t, text, size);
        /* a print that filled the buffer may have been cut short */
        if (n >= 0 && (size_t)n == size - 1 && size < ((size_t)1 << 30)) {
            free(text);
            size *= 4;
            continue;
        }
        fprintf(f, "%s\n", text);
        free(text);
        return;
    }
}

/* ------------------------------------------------------------------ */
/* the client node                                                    */
/* ------------------------------------------------------------------ */

void aemp__cli_client_finish(struct aemp__cli_client *c, int status)
{
    if (c->status != -1) return;
    c->status = status;
    uv_close((uv_handle_t *)&c->timer, NULL);
    aemp_node_close(c->node, NULL, NULL);
}

static void client_nodes(aemp_node *node, const char *peer, int up, const char *reason, void *arg)
{
    struct aemp__cli_client *c = arg;
    if (strcmp(peer, c->peer) != 0 || c->status != -1) return;
    if (up) {
        c->up = true;
        uv_timer_stop(&c->timer);
        c->on_up(c);
    } else if (c->on_down) {
        c->on_down(c, reason ? reason : "");
    } else {
        fprintf(stderr, "%s %s: connection lost: %s\n", c->fail_prefix, c->peer,
                reason ? reason : "");
        aemp__cli_client_finish(c, 1);
    }
}

static void client_fail(aemp_node *node, const char *peer, int err, const char *reason,
                        size_t dropped, void *arg)
{
    struct aemp__cli_client *c = arg;
    if (strcmp(peer, c->peer) != 0 || c->status != -1) return;
    fprintf(stderr, "%s %s: %s\n", c->fail_prefix, peer, reason);
    aemp__cli_client_finish(c, 1);
}

static void client_timeout(uv_timer_t *t)
{
    struct aemp__cli_client *c = t->data;
    fprintf(stderr, "%s %s: no answer\n", c->fail_prefix, c->peer);
    aemp__cli_client_finish(c, 1);
}

int aemp__cli_client_run(struct aemp__cli_client *c, const struct aemp__cli_opts *o)
{
    uv_loop_t *loop = uv_default_loop();
    /* named after the command, on the peer's host (short or long names
     * alike) */
    char myname[AEMP_MAXNODELEN + 1];
    const char *at = strchr(c->peer, '@');
    if ((size_t)snprintf(myname, sizeof myname, "aemp_%s_%ld%s", c->cmd, (long)uv_os_getpid(),
                         at ? at : "") >= sizeof myname) {
        fprintf(stderr, "%s %s: node name too long\n", c->fail_prefix, c->peer);
        return 1;
    }
    c->status = -1;
    c->up = false;
    aemp_node_config cfg = {0};
    aemp__cli_config(o, &cfg);
    cfg.client_only = 1;
    cfg.nodes_cb = client_nodes;
    cfg.nodes_arg = c;
    cfg.fail_cb = client_fail;
    cfg.fail_arg = c;
    aemp_profile *prof = NULL;
    if (o->profile && aemp__cli_apply_profile(o->profile, &cfg, &prof)) return 1;
    /* The profile's nodeid names the node it configures, not this client:
     * borrowing it would clash with that node if it runs. */
    cfg.name = myname;
    /* nor is it a member of the profile's pg scopes: it only asks (aemp db
     * is a peer of them: its family shows their members) */
    if (!c->mesh) cfg.pg_scopes = "";
    const char *seeds[2] = {c->peer, NULL};
    if (c->mesh && !cfg.seeds) cfg.seeds = seeds;
    int rc = aemp_node_create(loop, &cfg, &c->node);
    aemp_profile_free(prof);
    if (rc) {
        fprintf(stderr, "aemp %s: cannot start a client node: %s\n", c->cmd, aemp_strerror(rc));
        return 1;
    }
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    uv_timer_start(&c->timer, client_timeout, CONNECT_TIMEOUT_MS, 0);
    rc = aemp_node_connect(c->node, c->peer);
    if (rc) {
        fprintf(stderr, "%s %s: %s\n", c->fail_prefix, c->peer, aemp_strerror(rc));
        aemp__cli_client_finish(c, 1);
    }
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    return c->status == 0 ? 0 : 1;
}

/* ------------------------------------------------------------------ */
/* ping                                                               */
/* ------------------------------------------------------------------ */

static void ping_up(struct aemp__cli_client *c)
{
    printf("pong\n");
    aemp__cli_client_finish(c, 0);
}

int aemp__cli_ping(int argc, char **argv)
{
    struct aemp__cli_opts o = {0};
    int rc = aemp__cli_parse_opts("ping", 1, argc, argv, &o);
    if (rc) return rc;
    if (!o.nargs) return aemp__cli_usage_error(usage, "ping", "missing NODE");
    struct aemp__cli_client c = {.cmd = "ping", .fail_prefix = "pang:", .on_up = ping_up};
    if (aemp__cli_node_name(o.args[0], c.peer, sizeof c.peer)) {
        fprintf(stderr, "pang: %s: node name too long\n", o.args[0]);
        return 1;
    }
    return aemp__cli_client_run(&c, &o);
}

/* ------------------------------------------------------------------ */
/* snd                                                                */
/* ------------------------------------------------------------------ */

struct snd_state {
    aemp_addr to;
    aemp_buf msg;
};

static void snd_up(struct aemp__cli_client *c)
{
    struct snd_state *st = c->arg;
    aemp_term t = aemp_buf_term(&st->msg);
    int rc = aemp_send(c->node, (aemp_port){0}, &st->to, &t);
    if (rc) fprintf(stderr, "aemp snd: cannot send: %s\n", aemp_strerror(rc));
    /* closing flushes the message to the peer first */
    aemp__cli_client_finish(c, rc ? 1 : 0);
}

/* The options and arguments PORT TERM of snd and cal. Returns 0, or the
 * exit status of a usage error (term then freed). */
static int port_and_term(const char *cmd, int argc, char **argv, struct aemp__cli_opts *o,
                         aemp_addr *to, aemp_buf *term)
{
    int rc = aemp__cli_parse_opts(cmd, 2, argc, argv, o);
    if (rc) return rc;
    if (o->nargs < 1) return aemp__cli_usage_error(usage, cmd, "missing PORT");
    if (o->nargs < 2) return aemp__cli_usage_error(usage, cmd, "missing TERM");
    if ((rc = aemp__cli_port(cmd, "PORT", o->args[0], to)) ||
        (rc = aemp__cli_term(cmd, "TERM", o->args[1], term)))
        aemp_buf_free(term);
    return rc;
}

int aemp__cli_snd(int argc, char **argv)
{
    struct aemp__cli_opts o = {0};
    struct snd_state st = {.msg = AEMP_BUF_INIT};
    int rc = port_and_term("snd", argc, argv, &o, &st.to, &st.msg);
    if (rc) return rc;
    struct aemp__cli_client c = {
        .cmd = "snd", .fail_prefix = "aemp snd: cannot reach", .on_up = snd_up, .arg = &st};
    snprintf(c.peer, sizeof c.peer, "%s", aemp_addr_node_name(&st.to));
    rc = aemp__cli_client_run(&c, &o);
    aemp_buf_free(&st.msg);
    return rc;
}

/* ------------------------------------------------------------------ */
/* mon                                                                */
/* ------------------------------------------------------------------ */

struct mon_state {
    aemp_addr target;
    struct aemp__cli_client *c;
};

static void mon_fired(aemp_node *node, const aemp_addr *target, const aemp_term *reason, void *arg)
{
    struct mon_state *st = arg;
    char atom[16];
    aemp_cursor cur = aemp_cursor_of(reason);
    if (aemp_get_atom(&cur, atom, sizeof atom) == 0 && strcmp(atom, "noconnection") == 0) {
        /* not the port's death: the connection to its node went */
        fprintf(stderr, "aemp mon: %s: connection lost (noconnection)\n", st->c->peer);
        aemp__cli_client_finish(st->c, 1);
        return;
    }
    aemp__cli_print_term(stdout, reason);
    fflush(stdout);
    aemp__cli_client_finish(st->c, 0);
}

static void mon_up(struct aemp__cli_client *c)
{
    struct mon_state *st = c->arg;
    int rc = aemp_mon(c->node, &st->target, mon_fired, st, NULL);
    if (rc) {
        fprintf(stderr, "aemp mon: cannot monitor: %s\n", aemp_strerror(rc));
        aemp__cli_client_finish(c, 1);
    }
}

static void mon_down(struct aemp__cli_client *c, const char *reason)
{
    fprintf(stderr, "aemp mon: %s: connection lost: %s\n", c->peer, reason);
    aemp__cli_client_finish(c, 1);
}

int aemp__cli_mon(int argc, char **argv)
{
    struct aemp__cli_opts o = {0};
    struct mon_state st;
    int rc = aemp__cli_parse_opts("mon", 1, argc, argv, &o);
    if (rc) return rc;
    if (o.nargs < 1) return aemp__cli_usage_error(usage, "mon", "missing PORT");
    if ((rc = aemp__cli_port("mon", "PORT", o.args[0], &st.target))) return rc;
    struct aemp__cli_client c = {.cmd = "mon",
                                 .fail_prefix = "aemp mon: cannot reach",
                                 .on_up = mon_up,
                                 .on_down = mon_down,
                                 .arg = &st};
    st.c = &c;
    snprintf(c.peer, sizeof c.peer, "%s", aemp_addr_node_name(&st.target));
    return aemp__cli_client_run(&c, &o);
}

/* ------------------------------------------------------------------ */
/* rpc and cal                                                        */
/* ------------------------------------------------------------------ */

struct call_state {
    const char *mod, *fun; /* rpc */
    aemp_addr to;          /* cal */
    aemp_buf term;         /* rpc: the arguments; cal: the message */
    unsigned timeout_ms;
    struct aemp__cli_client *c;
};

/* The answer: the value on stdout (status 0), or on stderr what went
 * wrong, its kind first: error, throw, exit (as erpc raises them; cal:
 * exit is the target's death), badrpc (rpc: no answer), timeout and
 * noconnection (cal). */
static void call_done(aemp_node *node, int status, const aemp_term *result, void *arg)
{
    static const char *const kinds[] = {"return", "error", "throw", "exit"};
    struct call_state *st = arg;
    struct aemp__cli_client *c = st->c;
    bool rpc = strcmp(c->cmd, "rpc") == 0;
    if (c->status != -1) return; /* the command ended first (node closing) */
    if (status == AEMP_RPC_RETURN) {
        aemp__cli_print_term(stdout, result);
        fflush(stdout);
        aemp__cli_client_finish(c, 0);
        return;
    }
    if (status > 0 && status <= AEMP_RPC_EXIT && result) {
        fprintf(stderr, "aemp %s: %s: ", c->cmd, kinds[status]);
        aemp__cli_print_term(stderr, result);
    } else if (status == AEMP_ETIMEDOUT) {
        fprintf(stderr, "aemp %s: %stimeout (no answer within %u ms)\n", c->cmd,
                rpc ? "badrpc: " : "", st->timeout_ms);
    } else if (status == AEMP_ENOCONN) {
        fprintf(stderr, "aemp %s: %snoconnection (the connection to %s was lost)\n", c->cmd,
                rpc ? "badrpc: " : "", c->peer);
    } else {
        fprintf(stderr, "aemp %s: %s%s\n", c->cmd, rpc ? "badrpc: " : "", aemp_strerror(status));
    }
    aemp__cli_client_finish(c, 1);
}

static void call_down(struct aemp__cli_client *c, const char *reason)
{
    fprintf(stderr, "aemp %s: %snoconnection (the connection to %s was lost: %s)\n", c->cmd,
            strcmp(c->cmd, "rpc") == 0 ? "badrpc: " : "", c->peer, reason);
    aemp__cli_client_finish(c, 1);
}

static void call_up(struct aemp__cli_client *c)
{
    struct call_state *st = c->arg;
    aemp_term t = aemp_buf_term(&st->term);
    int rc = strcmp(c->cmd, "rpc") == 0
                 ? aemp_call(c->node, c->peer, st->mod, st->fun, &t, st->timeout_ms, call_done, st)
                 : aemp_cal(c->node, &st->to, &t, st->timeout_ms, call_done, st);
    if (rc) {
        fprintf(stderr, "aemp %s: cannot call: %s\n", c->cmd, aemp_strerror(rc));
        aemp__cli_client_finish(c, 1);
    }
}

static int call_run(struct call_state *st, const char *cmd, const struct aemp__cli_opts *o)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "aemp %s: cannot reach", cmd);
    struct aemp__cli_client c = {
        .cmd = cmd, .fail_prefix = prefix, .on_up = call_up, .on_down = call_down, .arg = st};
    st->c = &c;
    st->timeout_ms = o->timeout_ms;
    if (strcmp(cmd, "rpc") == 0) {
        if (aemp__cli_node_name(o->args[0], c.peer, sizeof c.peer)) {
            fprintf(stderr, "aemp rpc: %s: node name too long\n", o->args[0]);
            return 1;
        }
    } else {
        snprintf(c.peer, sizeof c.peer, "%s", aemp_addr_node_name(&st->to));
    }
    return aemp__cli_client_run(&c, o);
}

/* A proper list: erpc applies the function to it. */
static bool proper_list(const aemp_buf *b)
{
    aemp_term t = aemp_buf_term(b), skip;
    aemp_cursor c = aemp_cursor_of(&t);
    uint32_t n;
    int type = aemp_get_type(&c);
    if (type == 'j' || type == 'k') return true; /* [], or a list of small integers */
    if (aemp_get_list(&c, &n)) return false;
    for (uint32_t i = 0; i < n; i++)
        if (aemp_get_term(&c, &skip)) return false;
    return aemp_get_nil(&c) == 0;
}

int aemp__cli_rpc(int argc, char **argv)
{
    struct aemp__cli_opts o = {0};
    struct call_state st = {.term = AEMP_BUF_INIT};
    int rc = aemp__cli_parse_opts("rpc", 4, argc, argv, &o);
    if (rc) return rc;
    if (o.nargs < 3)
        return aemp__cli_usage_error(usage, "rpc", "missing %s",
                                     o.nargs == 0   ? "NODE"
                                     : o.nargs == 1 ? "MOD"
                                                    : "FUN");
    st.mod = o.args[1];
    st.fun = o.args[2];
    if ((rc = aemp__cli_term("rpc", "ARGS", o.nargs == 4 ? o.args[3] : "[]", &st.term))) {
        aemp_buf_free(&st.term);
        return rc;
    }
    if (!proper_list(&st.term)) {
        aemp_buf_free(&st.term);
        return aemp__cli_usage_error(usage, "rpc", "bad ARGS '%s' (not a proper list)", o.args[3]);
    }
    rc = call_run(&st, "rpc", &o);
    aemp_buf_free(&st.term);
    return rc;
}

int aemp__cli_cal(int argc, char **argv)
{
    struct aemp__cli_opts o = {0};
    struct call_state st = {.term = AEMP_BUF_INIT};
    int rc = port_and_term("cal", argc, argv, &o, &st.to, &st.term);
    if (rc) return rc;
    rc = call_run(&st, "cal", &o);
    aemp_buf_free(&st.term);
    return rc;
}
