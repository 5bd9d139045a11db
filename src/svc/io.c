/*
 * io.c - the io service: the group leader of the Erlang processes this
 * node spawns (aemp_spawn). An Erlang process writes and reads through its
 * group leader with io requests ({io_request, From, ReplyAs, Request}, the
 * I/O protocol of OTP's stdlib) and waits for the answer, so every request
 * is answered: output is accepted (and logged at debug level), input is at
 * end of file, getopts tells what is accepted, anything else is refused as
 * the protocol says. A C node has no terminal to give them.
 */
#include "svc.h"

/* The answer to one request, appended to out. */
static int answer(const aemp_term *req, aemp_buf *out, int depth)
{
    aemp_cursor c = aemp_cursor_of(req);
    uint32_t arity, n;
    char op[32];
    if (aemp_get_atom(&c, op, sizeof op) == 0) {
        /* getopts; anything else as a bare atom is unknown */
        if (strcmp(op, "getopts") == 0)
            return aemp_term_format(out, "[{binary, false}, {encoding, unicode}]");
        return aemp_term_format(out, "{error, request}");
    }
    if (aemp_get_tuple(&c, &arity) || arity < 1 || aemp_get_atom(&c, op, sizeof op))
        return aemp_term_format(out, "{error, request}");
    if (strcmp(op, "put_chars") == 0 && arity >= 2 && arity <= 5)
        return aemp_term_format(out, "ok");
    if (strcmp(op, "get_chars") == 0 || strcmp(op, "get_line") == 0 ||
        strcmp(op, "get_until") == 0 || strcmp(op, "get_password") == 0)
        return aemp_term_format(out, "eof");
    if (strcmp(op, "setopts") == 0 || strcmp(op, "get_geometry") == 0)
        return aemp_term_format(out, "{error, enotsup}");
    if (strcmp(op, "requests") == 0 && arity == 2 && depth == 0 && aemp_get_list(&c, &n) == 0) {
        /* each in turn; the answer is the last one's, or the first error */
        aemp_buf one = AEMP_BUF_INIT;
        int rc = aemp_term_format(&one, "ok");
        for (uint32_t i = 0; i < n && rc == 0; i++) {
            aemp_term r;
            if (aemp_get_term(&c, &r)) break;
            aemp__buf_reset(&one);
            rc = answer(&r, &one, depth + 1);
            char tag[16];
            aemp_term a = aemp_buf_term(&one);
            if (rc == 0 && aemp_term_tag(&a, tag, sizeof tag) == 0 && strcmp(tag, "error") == 0)
                break;
        }
        aemp_term a = aemp_buf_term(&one);
        if (!rc) rc = aemp_buf_put_term(out, &a);
        aemp_buf_free(&one);
        return rc;
    }
    return aemp_term_format(out, "{error, request}");
}

static void on_request(aemp_node *n, aemp_port self, const aemp_term *msg, const aemp_addr *sender,
                       void *arg)
{
    /* {io_request, From, ReplyAs, Request} */
    aemp_cursor c = aemp_cursor_of(msg);
    uint32_t arity;
    char tag[16];
    aemp_addr from;
    aemp_term reply_as, req;
    if (aemp_get_tuple(&c, &arity) || arity != 4 || aemp_get_atom(&c, tag, sizeof tag) ||
        strcmp(tag, "io_request") != 0 || aemp_get_pid(&c, &from) || aemp_get_term(&c, &reply_as) ||
        aemp_get_term(&c, &req)) {
        AEMP_LOGD("io: a message that is not an io request: dropped");
        return;
    }
    if (aemp_log_get_level() >= AEMP_LOG_DEBUG) {
        char text[512], who[128];
        aemp_term_print(&req, text, sizeof text);
        aemp_addr_format(&from, who, sizeof who);
        AEMP_LOGD("io request from %s: %s", who, text);
    }
    aemp_buf ans = AEMP_BUF_INIT;
    int rc = answer(&req, &ans, 0);
    aemp_term a = aemp_buf_term(&ans);
    if (!rc) rc = aemp_sendf(n, self, &from, "{io_reply, ~t, ~t}", &reply_as, &a);
    if (rc) AEMP_LOGW("io: reply lost: %s", aemp_strerror(rc));
    aemp_buf_free(&ans);
}

int aemp__io_start(aemp_node *n)
{
    int rc = aemp__proc_open(n, on_request, NULL, &n->svc->io);
    if (rc) return rc;
    aemp__proc_protect(n, n->svc->io);
    aemp__proc_set_group_leader(n, n->svc->io);
    return 0;
}
