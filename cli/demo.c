/*
 * demo.c - the module aemp_demo that `aemp run` exports, for people trying
 * a cluster from erl (and for the interop tests):
 *   aemp_demo:echo(X)          returns X
 *   aemp_demo:crash(Reason)    fails with error:Reason
 *   aemp_demo:kill(Pid, Reason) kills the port Pid of this node with
 *                              Reason (aemp_kil) and returns ok
 * Called with another number of arguments they are undefined, as an
 * Erlang function of another arity: error undef. Uses the public API only.
 */
#include "cli.h"

#include <string.h>

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

int aemp__cli_demo_export(aemp_node *node)
{
    int rc;
    if ((rc = aemp_export(node, "aemp_demo", "echo", demo_echo, NULL)) ||
        (rc = aemp_export(node, "aemp_demo", "crash", demo_crash, NULL)) ||
        (rc = aemp_export(node, "aemp_demo", "kill", demo_kill, NULL)))
        return rc;
    return 0;
}
