/*
 * net_kernel.c - the `net_kernel` service: a port registered as
 * net_kernel that answers what Erlang's net_adm:ping asks of it
 * ({'$gen_call', {From, Tag}, {is_auth, Node}} -> {Tag, yes}). Erlang
 * monitors it first; as a port of its own it is monitored like any other.
 */
#include "svc.h"

static void on_call(aemp_node *n, aemp_port self, const aemp_term *msg, const aemp_addr *from,
                    void *arg)
{
    aemp_cursor cur = aemp_cursor_of(msg);
    uint32_t arity, farity, rarity;
    char tag[32], what[32];
    aemp_addr caller;
    aemp_term reply_tag, request;
    if (aemp_get_tuple(&cur, &arity) || arity != 3 || aemp_get_atom(&cur, tag, sizeof tag) ||
        strcmp(tag, "$gen_call") || aemp_get_tuple(&cur, &farity) || farity != 2 ||
        aemp_get_pid(&cur, &caller) || aemp_get_term(&cur, &reply_tag) ||
        aemp_get_term(&cur, &request)) {
        AEMP_LOGD("net_kernel: ignored a message that is not a call");
        return;
    }
    aemp_cursor rc = aemp_cursor_of(&request);
    const char *answer = "yes";
    if (aemp_get_tuple(&rc, &rarity) || rarity < 1 || aemp_get_atom(&rc, what, sizeof what) ||
        strcmp(what, "is_auth") != 0) {
        AEMP_LOGD("net_kernel: unsupported call");
        answer = "error";
    }
    /* {Tag, yes} to the caller; Tag echoed exactly as received (it may be a
     * reference or an [alias|Ref] list). */
    int err = aemp_sendf(n, self, &caller, "{~t, ~a}", &reply_tag, answer);
    if (err) AEMP_LOGW("net_kernel: reply lost: %s", aemp_strerror(err));
}

int aemp__net_kernel_start(aemp_node *n)
{
    int rc = aemp__proc_open(n, on_call, NULL, &n->svc->net_kernel);
    if (!rc) rc = aemp_register(n, "net_kernel", n->svc->net_kernel);
    if (!rc) aemp__proc_protect(n, n->svc->net_kernel);
    return rc;
}
