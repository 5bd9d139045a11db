/*
 * demo.c - the module aemp_demo that `aemp run` exports, for people trying
 * a cluster from erl (and for the interop tests):
 *   aemp_demo:echo(X)          returns X
 *   aemp_demo:crash(Reason)    fails with error:Reason
 *   aemp_demo:kill(Pid, Reason) kills the port Pid of this node with
 *                              Reason (aemp_kil) and returns ok
 *   aemp_demo:members(Group)   the pids of pg group Group (an atom or a
 *                              binary) in scope aemp as this node sees
 *                              them: its ports and other nodes' processes,
 *                              each once (aemp_pg_members); error badarg for
 *                              another argument, {no_scope, aemp} when the
 *                              node has no pg scope aemp
 *   spawn(Node, aemp_demo, echo_port, [])
 *                              a new port that answers {From, Msg} with Msg,
 *                              as the registered port echo does, and
 *                              gen_server:call(Port, X) with X
 *   aemp_demo:family(F)        the database family F (a binary, atom or
 *                              string) as this node sees it: a map from
 *                              subkey (binary) to value
 * Called with another number of arguments they are undefined, as an
 * Erlang function of another arity: error undef. Uses the public API only.
 */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int aemp__cli_echo(aemp_node *node, aemp_port self, const aemp_term *msg)
{
    aemp_cursor c = aemp_cursor_of(msg);
    uint32_t arity;
    aemp_addr to;
    aemp_term body;
    if (aemp_get_tuple(&c, &arity) == 0 && arity == 2 && aemp_get_pid(&c, &to) == 0 &&
        aemp_get_term(&c, &body) == 0) {
        int rc = aemp_send(node, self, &to, &body);
        if (rc) fprintf(stderr, "aemp: echo reply failed: %s\n", aemp_strerror(rc));
        return rc;
    }
    char text[256];
    aemp_term_print(msg, text, sizeof text);
    fprintf(stderr, "aemp: echo ignored a message that is not {Pid, Msg}: %s\n", text);
    return 0;
}

/* The argument list, if it has n elements: 0 with args[] viewing them. */
static int take_args(const aemp_term *list, uint32_t n, aemp_term *args)
{
    aemp_cursor c = aemp_cursor_of(list);
    uint32_t have;
    if (n == 0) return aemp_get_nil(&c);
    if (aemp_get_list(&c, &have) || have != n) return -1;
    for (uint32_t i = 0; i < n; i++)
        if (aemp_get_term(&c, &args[i])) return -1;
    return 0;
}

static int undef(aemp_buf *result)
{
    aemp_term_format(result, "undef");
    return AEMP_RPC_ERROR;
}

static int demo_echo(aemp_node *node, const aemp_term *args, aemp_buf *result, void *arg)
{
    aemp_term x;
    if (take_args(args, 1, &x)) return undef(result);
    return aemp_buf_put_term(result, &x) ? AEMP_RPC_ERROR : AEMP_RPC_RETURN;
}

static int demo_crash(aemp_node *node, const aemp_term *args, aemp_buf *result, void *arg)
{
    aemp_term reason;
    if (take_args(args, 1, &reason)) return undef(result);
    aemp_buf_put_term(result, &reason);
    return AEMP_RPC_ERROR;
}

static int demo_kill(aemp_node *node, const aemp_term *args, aemp_buf *result, void *arg)
{
    aemp_term a[2];
    aemp_addr pid;
    if (take_args(args, 2, a)) return undef(result);
    aemp_cursor c = aemp_cursor_of(&a[0]);
    /* a port of this node (of this incarnation or an earlier one: killing
     * a port that is gone is no error) */
    if (aemp_get_pid(&c, &pid) || strcmp(aemp_addr_node_name(&pid), aemp_node_name(node)) != 0 ||
        aemp_kil(node, &pid, &a[1]) != 0) {
        aemp_term_format(result, "badarg");
        return AEMP_RPC_ERROR;
    }
    aemp_term_format(result, "ok");
    return AEMP_RPC_RETURN;
}

static int demo_members(aemp_node *node, const aemp_term *args, aemp_buf *result, void *arg)
{
    aemp_term g;
    if (take_args(args, 1, &g)) return undef(result);
    char family[AEMP_MAXATOMLEN + 1];
    aemp_cursor c = aemp_cursor_of(&g);
    const void *bin;
    size_t len;
    if (aemp_get_atom(&c, family, sizeof family) != 0) {
        c = aemp_cursor_of(&g);
        if (aemp_get_binary(&c, &bin, &len) || len >= sizeof family) {
            aemp_term_format(result, "badarg");
            return AEMP_RPC_ERROR;
        }
        memcpy(family, bin, len);
        family[len] = 0;
    }
    int n = aemp_pg_members(node, "aemp", family, NULL, 0);
    if (n == AEMP_ENOENT || n == AEMP_ENOTSUP) {
        aemp_term_format(result, "{no_scope, aemp}");
        return AEMP_RPC_ERROR;
    }
    if (n < 0) {
        /* not a family name (not UTF-8, too long): a group nobody joined */
        aemp_term_format(result, n == AEMP_EINVAL ? "[]" : "system_limit");
        return n == AEMP_EINVAL ? AEMP_RPC_RETURN : AEMP_RPC_ERROR;
    }
    /* the list written as port IDs and read back (public API only) */
    aemp_addr *pids = calloc((size_t)n + 1, sizeof *pids);
    size_t cap = 3 + (size_t)n * (AEMP_MAXNODELEN + 48);
    char *text = malloc(cap);
    size_t len_text = 0;
    int rc = pids && text ? 0 : AEMP_ENOMEM;
    if (!rc) n = aemp_pg_members(node, "aemp", family, pids, (size_t)n);
    if (!rc && n < 0) rc = n;
    if (!rc) text[len_text++] = '[';
    for (int i = 0; !rc && i < n; i++) {
        if (i) text[len_text++] = ',';
        int k = aemp_addr_format(&pids[i], text + len_text, cap - len_text - 2);
        if (k < 0 || (size_t)k >= cap - len_text - 2)
            rc = AEMP_ETOOBIG;
        else
            len_text += (size_t)k;
    }
    if (!rc) {
        text[len_text++] = ']';
        rc = aemp_term_parse(result, text, len_text, NULL);
    }
    free(pids);
    free(text);
    if (rc) {
        aemp_term_format(result, "system_limit");
        return AEMP_RPC_ERROR;
    }
    return AEMP_RPC_RETURN;
}

/* aemp_demo:family(F): the family as a map, written by hand (the map's
 * head, then each subkey and value). */
static void family_map(aemp_node *node, int status, const aemp_db_view *v, void *arg)
{
    aemp_buf *out = arg;
    size_t n = aemp_db_view_count(v);
    unsigned char head[5] = {116, (unsigned char)(n >> 24), (unsigned char)(n >> 16),
                             (unsigned char)(n >> 8), (unsigned char)n};
    aemp_term h = {(const char *)head, sizeof head};
    aemp_buf_put_term(out, &h);
    for (size_t i = 0; i < n; i++) {
        aemp_db_entry e;
        aemp_db_view_at(v, i, &e);
        aemp_term_format(out, "~b", e.subkey, e.subkey_len);
        aemp_buf_put_term(out, &e.value);
    }
}

static int demo_family(aemp_node *node, const aemp_term *args, aemp_buf *result, void *arg)
{
    aemp_term f;
    char name[AEMP_MAXATOMLEN + 1] = "";
    if (take_args(args, 1, &f)) return undef(result);
    aemp_cursor c = aemp_cursor_of(&f);
    const void *p;
    size_t len;
    if (aemp_get_binary(&c, &p, &len) == 0) {
        /* (a binary holding NUL names no family the C API can give) */
        if (len < sizeof name && !memchr(p, 0, len)) {
            memcpy(name, p, len);
            name[len] = 0;
        }
    } else if (aemp_get_atom(&c, name, sizeof name) && aemp_get_charlist(&c, name, sizeof name)) {
        name[0] = 0;
    }
    /* result is empty until family_map fills it */
    if (!name[0] || aemp_db_read(node, name, family_map, result)) {
        aemp_term_format(result, "badarg");
        return AEMP_RPC_ERROR;
    }
    return AEMP_RPC_RETURN;
}

int aemp__cli_demo_join(aemp_node *node, aemp_port port)
{
    int rc = aemp_pg_join(node, "aemp_demo", port);
    if (rc == AEMP_ENOTSUP) return 0; /* no pg scope: nothing to join */
    if (rc == 0) {
        printf("aemp: port echo joined family aemp_demo\n");
        fflush(stdout);
    }
    return rc;
}

/* The default callback of an echo_port: an echo that never dies of a
 * message it does not understand. */
static int echo_port_msg(aemp_node *node, aemp_port self, const aemp_msg *m, void *arg)
{
    aemp__cli_echo(node, self, &m->term);
    return 0;
}

/* gen_server:call(Port, X): X is the reply. */
static int echo_port_call(aemp_node *node, aemp_port self, const aemp_msg *m, void *arg)
{
    aemp_cursor c = m->args;
    aemp_term from, x;
    int rc = AEMP_EINVAL;
    if (m->nargs == 2 && aemp_get_term(&c, &from) == 0 && aemp_get_term(&c, &x) == 0)
        rc = aemp_gen_reply(node, &from, &x);
    if (rc) fprintf(stderr, "aemp: echo_port cannot answer a call: %s\n", aemp_strerror(rc));
    return 0;
}

static int echo_port_init(aemp_node *node, aemp_port self, const aemp_term *args, void *arg)
{
    aemp_term none;
    int rc;
    if (take_args(args, 0, &none) == 0) {
        if ((rc = aemp_rcv(node, self, "$gen_call", echo_port_call, NULL))) return rc;
        return aemp_rcv(node, self, NULL, echo_port_msg, NULL);
    }
    /* as a process running an undefined function */
    aemp_buf reason = AEMP_BUF_INIT;
    aemp_addr me;
    rc = aemp_term_format(&reason, "{undef, [{aemp_demo, echo_port, ~t, []}]}", args);
    if (rc == 0 && (rc = aemp_port_addr(node, self, &me)) == 0) {
        aemp_term t = aemp_buf_term(&reason);
        rc = aemp_kil(node, &me, &t);
    }
    aemp_buf_free(&reason);
    return rc;
}

int aemp__cli_demo_export(aemp_node *node)
{
    int rc;
    if ((rc = aemp_export(node, "aemp_demo", "echo", demo_echo, NULL)) ||
        (rc = aemp_export(node, "aemp_demo", "crash", demo_crash, NULL)) ||
        (rc = aemp_export(node, "aemp_demo", "kill", demo_kill, NULL)) ||
        (rc = aemp_export(node, "aemp_demo", "members", demo_members, NULL)) ||
        (rc = aemp_export(node, "aemp_demo", "family", demo_family, NULL)) ||
        (rc = aemp_export_init(node, "aemp_demo", "echo_port", echo_port_init, NULL)))
        return rc;
    return 0;
}
