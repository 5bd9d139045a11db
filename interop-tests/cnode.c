/*
 * cnode - the C side of the C-initiated interop tests (see README.md here).
 *
 *   cnode send     NAME COOKIE PEER [TIMEOUT_MS]
 *   cnode nodedown NAME COOKIE PEER [TIMEOUT_MS]
 *   cnode cookie   NAME COOKIE PEER [TIMEOUT_MS]
 *   cnode tickdown NAME COOKIE PEER [TIMEOUT_MS]
 *
 * send:     sends {hello, Self} to the registered process `interop` on PEER,
 *           expects {welcome, ErlPid}, sends {hello, Self, Map} to ErlPid and
 *           expects {bye, ErlPid, <<"ok">>}.
 * nodedown: connects to PEER, prints "node up: PEER", then waits until the
 *           nodes callback reports PEER down and prints "node down: PEER".
 * tickdown: nodedown with net_ticktime TICKDOWN_TICKTIME_S, for a peer that
 *           goes silent (SIGSTOP) instead of closing the connection.
 * cookie:   connects to PEER with a cookie PEER does not accept; passes when
 *           the connection never comes up and a log line names the cookie.
 *
 * Progress lines go to stdout (the scripts wait on them), library log lines
 * to stderr. Exit status 0 when the mode's expectations hold, 1 otherwise;
 * the last stdout line says why ("cnode: PASS ..." or "cnode: FAIL ...").
 * Every wait has a deadline: the whole run ends after TIMEOUT_MS.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aemp.h"
#include "say.h"

#define DEFAULT_TIMEOUT_MS 20000
/* After the refusal is logged, wait this long for a (wrong) up event. */
#define COOKIE_SETTLE_MS 1000
/* net_ticktime of mode tickdown: a silent peer is dropped within seconds. */
#define TICKDOWN_TICKTIME_S 3

enum mode { MODE_SEND, MODE_NODEDOWN, MODE_COOKIE };

enum stage {
    STAGE_START,      /* waiting for EPMD registration */
    STAGE_WELCOME,    /* send: waiting for {welcome, ErlPid} */
    STAGE_BYE,        /* send: waiting for {bye, ErlPid, <<"ok">>} */
    STAGE_CONNECTING, /* nodedown, cookie: waiting for the connection */
    STAGE_WAIT_DOWN,  /* nodedown: up, waiting for the down event */
};

struct cnode {
    uv_loop_t *loop;
    aemp_node *node;
    enum mode mode;
    enum stage stage;
    const char *peer;
    uv_timer_t deadline;
    uv_timer_t settle;
    aemp_port self;
    aemp_addr self_addr;
    aemp_addr erl_pid;
    int ups;
    int downs;
    int cookie_logged;
    int fail_err; /* last error from fail_cb, 0 if none */
    int finished;
    int closed;
    int status;
};

static const char *stage_name(enum stage s)
{
    switch (s) {
    case STAGE_START:
        return "waiting for EPMD registration";
    case STAGE_WELCOME:
        return "waiting for {welcome, ErlPid}";
    case STAGE_BYE:
        return "waiting for {bye, ErlPid, <<\"ok\">>}";
    case STAGE_CONNECTING:
        return "waiting for the connection";
    case STAGE_WAIT_DOWN:
        return "waiting for the node-down event";
    }
    return "unknown stage";
}

static int contains_nocase(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (; *hay; hay++) {
        size_t i = 0;
        while (i < n && hay[i] &&
               tolower((unsigned char)hay[i]) == tolower((unsigned char)needle[i]))
            i++;
        if (i == n) return 1;
    }
    return 0;
}

static void on_closed(void *arg)
{
    struct cnode *c = arg;
    c->closed = 1;
}

static void finish(struct cnode *c, int status, const char *fmt, ...)
{
    char why[512];
    va_list ap;

    if (c->finished) return;
    c->finished = 1;
    c->status = status;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    say("cnode: %s %s", status == 0 ? "PASS" : "FAIL", why);
    uv_timer_stop(&c->deadline);
    uv_timer_stop(&c->settle);
    uv_close((uv_handle_t *)&c->deadline, NULL);
    uv_close((uv_handle_t *)&c->settle, NULL);
    aemp_node_close(c->node, on_closed, c);
}

static void print_term(const char *what, const aemp_term *t)
{
    char buf[1024];
    if (aemp_term_print(t, buf, sizeof buf) < 0) snprintf(buf, sizeof buf, "(unprintable term)");
    say("cnode: %s %s", what, buf);
}

/* Decode {Tag, Pid} or {Tag, Pid, Bin}; returns 0 if the message has that
 * shape with the wanted tag. */
static int match_tag_pid(const aemp_term *msg, const char *tag, uint32_t arity, aemp_addr *pid,
                         const void **bin, size_t *binlen)
{
    aemp_cursor cur = aemp_cursor_of(msg);
    uint32_t n;
    char atom[AEMP_MAXATOMLEN + 1];

    if (aemp_get_tuple(&cur, &n) < 0 || n != arity) return -1;
    if (aemp_get_atom(&cur, atom, sizeof atom) < 0 || strcmp(atom, tag) != 0) return -1;
    if (aemp_get_pid(&cur, pid) < 0) return -1;
    if (arity == 3 && aemp_get_binary(&cur, bin, binlen) < 0) return -1;
    return cur.pos == cur.len ? 0 : -1;
}

static void on_message(aemp_node *node, aemp_port self, const aemp_term *msg, const aemp_addr *from,
                       void *arg)
{
    struct cnode *c = arg;
    aemp_addr pid;
    char text[600];
    const void *bin = NULL;
    size_t binlen = 0;
    int rc;

    (void)self;
    if (c->finished) return;
    print_term("received", msg);
    if (from) {
        aemp_addr_format(from, text, sizeof text);
        say("cnode: sender %s", text);
    }
    switch (c->stage) {
    case STAGE_WELCOME:
        if (match_tag_pid(msg, "welcome", 2, &pid, NULL, NULL) < 0) {
            finish(c, 1, "expected {welcome, ErlPid} first");
            return;
        }
        if (strcmp(aemp_addr_node_name(&pid), c->peer) != 0) {
            finish(c, 1, "welcome pid is on node %s, expected %s", aemp_addr_node_name(&pid),
                   c->peer);
            return;
        }
        c->erl_pid = pid;
        c->stage = STAGE_BYE;
        rc = aemp_sendf(node, c->self, &c->erl_pid,
                        "{hello, ~p, #{n => 7, s => ~s, l => [1, -2, 3], f => 1.5, a => ~a}}",
                        &c->self_addr, "\xc5\x9dtr", "\xce\xa9");
        if (rc < 0) {
            finish(c, 1, "aemp_sendf to the learned pid: %s", aemp_strerror(rc));
            return;
        }
        aemp_addr_format(&c->erl_pid, text, sizeof text);
        say("cnode: sent hello to pid %s", text);
        return;
    case STAGE_BYE:
        if (match_tag_pid(msg, "bye", 3, &pid, &bin, &binlen) < 0) {
            finish(c, 1, "expected {bye, ErlPid, <<\"ok\">>}");
            return;
        }
        if (!aemp_addr_equal(&pid, &c->erl_pid)) {
            finish(c, 1, "bye came with another pid than welcome");
            return;
        }
        if (binlen != 2 || memcmp(bin, "ok", 2) != 0) {
            finish(c, 1, "bye carries the wrong binary");
            return;
        }
        if (from && !aemp_addr_equal(from, &c->erl_pid)) {
            finish(c, 1, "bye has a sender that is not the Erlang process");
            return;
        }
        say("cnode: send ok");
        finish(c, 0, "send");
        return;
    default:
        finish(c, 1, "unexpected message while %s", stage_name(c->stage));
        return;
    }
}

static void start_send(struct cnode *c)
{
    aemp_addr to;
    int rc;

    rc = aemp_port_open(c->node, on_message, c, &c->self);
    if (rc == 0) rc = aemp_port_addr(c->node, c->self, &c->self_addr);
    if (rc == 0) rc = aemp_addr_name(&to, c->peer, "interop");
    if (rc < 0) {
        finish(c, 1, "opening the port: %s", aemp_strerror(rc));
        return;
    }
    c->stage = STAGE_WELCOME;
    rc = aemp_sendf(c->node, c->self, &to, "{hello, ~p}", &c->self_addr);
    if (rc < 0) {
        finish(c, 1, "aemp_sendf to the registered name: %s", aemp_strerror(rc));
        return;
    }
    say("cnode: sent hello to interop on %s", c->peer);
}

static void on_ready(aemp_node *node, int status, void *arg)
{
    struct cnode *c = arg;
    int rc;

    if (c->finished) return;
    if (status < 0) {
        finish(c, 1, "EPMD registration failed: %s", aemp_strerror(status));
        return;
    }
    say("cnode: ready as %s", aemp_node_name(node));
    if (c->mode == MODE_SEND) {
        start_send(c);
        return;
    }
    c->stage = STAGE_CONNECTING;
    rc = aemp_node_connect(node, c->peer);
    if (rc < 0 && c->mode == MODE_NODEDOWN)
        finish(c, 1, "aemp_node_connect: %s", aemp_strerror(rc));
    else if (rc < 0)
        say("cnode: aemp_node_connect: %s", aemp_strerror(rc));
}

static void on_nodes(aemp_node *node, const char *peer, int up, const char *reason, void *arg)
{
    struct cnode *c = arg;

    if (c->finished) return;
    if (up)
        say("node up: %s", peer);
    else
        say("node down: %s (%s)", peer, reason ? reason : "no reason");
    if (strcmp(peer, c->peer) != 0) return;
    if (up && c->ups != c->downs) {
        finish(c, 1, "two up events for %s without a down event between", peer);
        return;
    }
    if (!up && c->ups == c->downs) {
        /* A connection attempt that never came up. */
        if (c->mode != MODE_COOKIE)
            finish(c, 1, "connection to %s failed: %s", peer, reason ? reason : "no reason");
        return;
    }
    if (up)
        c->ups++;
    else
        c->downs++;

    switch (c->mode) {
    case MODE_SEND:
        if (!up) finish(c, 1, "connection to %s lost while %s", peer, stage_name(c->stage));
        return;
    case MODE_NODEDOWN:
        if (up) {
            if (aemp_node_is_up(node, peer) != 1) {
                finish(c, 1, "nodes_cb says up but aemp_node_is_up says no");
                return;
            }
            c->stage = STAGE_WAIT_DOWN;
        } else if (aemp_node_is_up(node, peer) != 0) {
            finish(c, 1, "nodes_cb says down but aemp_node_is_up still says up");
        } else {
            finish(c, 0, "nodedown");
        }
        return;
    case MODE_COOKIE:
        if (up) finish(c, 1, "connected to %s although the cookie is wrong", peer);
        return;
    }
}

static void on_fail(aemp_node *node, const char *peer, int err, const char *reason, size_t dropped,
                    void *arg)
{
    struct cnode *c = arg;

    (void)node;
    if (c->finished) return;
    say("connect failed: %s: %s (%s, %zu dropped)", peer, reason ? reason : "no reason",
        aemp_strerror(err), dropped);
    if (strcmp(peer, c->peer) != 0) return;
    c->fail_err = err;
    if (c->mode != MODE_COOKIE)
        finish(c, 1, "connection to %s failed while %s", peer, stage_name(c->stage));
    else if (err != AEMP_EAUTH)
        finish(c, 1, "connection failed with %s, expected %s", aemp_strerror(err),
               aemp_strerror(AEMP_EAUTH));
}

static void on_settle(uv_timer_t *t)
{
    struct cnode *c = t->data;
    if (c->ups == 0)
        finish(c, 0, "refused: connection never came up and the log names the cookie");
    else
        finish(c, 1, "connection came up despite the wrong cookie");
}

static void on_log(int level, const char *msg, void *arg)
{
    struct cnode *c = arg;

    fprintf(stderr, "cnode log[%d]: %s\n", level, msg);
    if (c->finished || !contains_nocase(msg, "cookie")) return;
    if (!c->cookie_logged && c->mode == MODE_COOKIE)
        uv_timer_start(&c->settle, on_settle, COOKIE_SETTLE_MS, 0);
    c->cookie_logged = 1;
}

static void on_deadline(uv_timer_t *t)
{
    struct cnode *c = t->data;
    if (c->mode == MODE_COOKIE && !c->cookie_logged)
        finish(c, 1,
               "timeout: no log line mentions the cookie (%d up, %d down events, fail_cb: %s)",
               c->ups, c->downs, c->fail_err ? aemp_strerror(c->fail_err) : "not called");
    else
        finish(c, 1, "timeout while %s", stage_name(c->stage));
}

static int usage(void)
{
    fprintf(stderr, "usage: cnode send|nodedown|cookie|tickdown NAME COOKIE PEER [TIMEOUT_MS]\n");
    return 2;
}

int main(int argc, char **argv)
{
    static struct cnode c;
    aemp_node_config cfg;
    unsigned long timeout_ms = DEFAULT_TIMEOUT_MS;
    unsigned ticktime = 0;
    int rc;

    if (argc < 5 || argc > 6) return usage();
    if (strcmp(argv[1], "send") == 0)
        c.mode = MODE_SEND;
    else if (strcmp(argv[1], "nodedown") == 0)
        c.mode = MODE_NODEDOWN;
    else if (strcmp(argv[1], "cookie") == 0)
        c.mode = MODE_COOKIE;
    else if (strcmp(argv[1], "tickdown") == 0) {
        c.mode = MODE_NODEDOWN;
        ticktime = TICKDOWN_TICKTIME_S;
    } else
        return usage();
    if (argc == 6) {
        char *end;
        timeout_ms = strtoul(argv[5], &end, 10);
        if (*end || timeout_ms == 0) return usage();
    }
    c.peer = argv[4];
    c.stage = STAGE_START;
    c.loop = uv_default_loop();

    aemp_log_set_callback(on_log, &c);
    uv_timer_init(c.loop, &c.deadline);
    uv_timer_init(c.loop, &c.settle);
    c.deadline.data = &c;
    c.settle.data = &c;

    memset(&cfg, 0, sizeof cfg);
    cfg.name = argv[2];
    cfg.cookie = argv[3];
    cfg.handshake_timeout_ms = 5000;
    cfg.net_ticktime = ticktime;
    cfg.ready_cb = on_ready;
    cfg.ready_arg = &c;
    cfg.nodes_cb = on_nodes;
    cfg.nodes_arg = &c;
    cfg.fail_cb = on_fail;
    cfg.fail_arg = &c;
    rc = aemp_node_create(c.loop, &cfg, &c.node);
    if (rc < 0) {
        say("cnode: FAIL aemp_node_create: %s", aemp_strerror(rc));
        return 1;
    }
    uv_timer_start(&c.deadline, on_deadline, timeout_ms, 0);
    uv_run(c.loop, UV_RUN_DEFAULT);

    if (!c.closed) {
        say("cnode: FAIL the node's closed callback never ran");
        return 1;
    }
    rc = uv_loop_close(c.loop);
    if (rc != 0) {
        say("cnode: FAIL uv_loop_close: %s", uv_strerror(rc));
        return 1;
    }
    aemp_log_set_callback(NULL, NULL);
    return c.status;
}
