/*
 * call.c - calls into other nodes: erpc:call (aemp_call), gen_server:call
 * (aemp_gen_call), AEMP's cal (aemp_cal), and the answer to a
 * gen_server:call made to a port (aemp_gen_reply).
 *
 * Each call has a port of its own, which gets the answer (and the 'DOWN'
 * of what the call watches), and a timer: the timeout, and then, with 0 ms,
 * the turn of the loop that runs the callback, so that it never runs
 * inside the call that started it. Once the answer is known the port is
 * closed (its monitor withdrawn, its alias removed): whatever comes later
 * is dropped. Each call holds the node until its timer is closed, so a
 * node closed meanwhile answers every call still waiting with
 * AEMP_ECLOSED before it is freed.
 */
#include "svc.h"

#include <stdlib.h>

enum call_kind {
    CALL_ERPC = 1, /* erpc:execute_call/4 spawned with a monitor */
    CALL_GEN = 2,  /* '$gen_call' with an alias */
    CALL_CAL = 3,  /* message with the reply port's pid appended */
};

struct aemp__call {
    aemp_node *n;
    struct aemp__call *prev, *next; /* in the node's list until cb runs */
    uv_timer_t timer;
    aemp_port port; /* gets the answer; id 0 once closed */
    int kind;
    aemp_addr ref; /* erpc: the monitor (the spawn's); gen: the monitor, also
                      the alias; cal: the monitor (timeout 0), else zero */
    aemp_addr res; /* erpc: the reference in the answer */
    bool done;     /* status and result are known */
    bool closing;  /* the node closes: cb runs from the timer's close */
    bool spawning; /* erpc: aemp_spawn's callback is still to come */
    bool closed;   /* the timer is closed: free the call when spawning ends */
    int status;
    aemp_buf result;
    aemp_call_cb cb; /* NULL: the call failed to start, tell nobody */
    void *arg;
};

typedef struct aemp__call call;

/* ------------------------------------------------------------------ */
/* a call's life                                                      */
/* ------------------------------------------------------------------ */

static void on_msg(aemp_node *n, aemp_port self, const aemp_term *msg, const aemp_addr *from,
                   void *arg);

static void unlist(call *k)
{
    if (k->prev)
        k->prev->next = k->next;
    else if (k->n->svc->calls == k)
        k->n->svc->calls = k->next;
    if (k->next) k->next->prev = k->prev;
    k->prev = k->next = NULL;
}

static int call_new(aemp_node *n, int kind, aemp_call_cb cb, void *arg, call **out)
{
    if (n->closing) return AEMP_ECLOSED;
    call *k = calloc(1, sizeof *k);
    if (!k) return AEMP_ENOMEM;
    int rc = aemp__proc_open(n, on_msg, k, &k->port);
    if (rc) {
        free(k);
        return rc;
    }
    /* its own: the API cannot close it, exit signals do not kill it */
    aemp__proc_protect(n, k->port);
    uv_timer_init(n->loop, &k->timer);
    k->timer.data = k;
    k->n = n;
    k->kind = kind;
    k->cb = cb;
    k->arg = arg;
    k->next = n->svc->calls;
    if (k->next) k->next->prev = k;
    n->svc->calls = k;
    aemp__node_hold(n);
    *out = k;
    return 0;
}

/* Close the call's port (withdrawing its monitor) and alias. */
static void release(call *k)
{
    aemp_node *n = k->n;
    if (k->kind == CALL_GEN) aemp__alias_del(n, &k->ref);
    if (!k->port.id) return;
    uint64_t id = k->port.id;
    k->port.id = 0;
    aemp_buf b = AEMP_BUF_INIT;
    if (aemp__enc_atom_text(&b, "normal", 6) == 0) {
        aemp_term reason = aemp_buf_term(&b);
        aemp__proc_kill(n, id, &reason);
    }
    aemp_buf_free(&b);
}

static void call_free(call *k)
{
    aemp_buf_free(&k->result);
    free(k);
}

static void on_closed(uv_handle_t *h)
{
    call *k = h->data;
    aemp_node *n = k->n;
    if (k->closing && k->cb) {
        aemp_term r = aemp_buf_term(&k->result);
        k->cb(n, k->status, k->result.len ? &r : NULL, k->arg);
    }
    /* aemp_spawn's callback comes once, at the latest when the node
     * closes (before it is freed): the call waits for it */
    k->closed = true;
    if (!k->spawning) call_free(k);
    aemp__node_part_closed(n);
}

static void on_timer(uv_timer_t *t)
{
    call *k = t->data;
    if (!k->done) {
        k->done = true;
        k->status = AEMP_ETIMEDOUT;
        release(k);
    }
    unlist(k);
    aemp_term r = aemp_buf_term(&k->result);
    k->cb(k->n, k->status, k->result.len ? &r : NULL, k->arg);
    uv_close((uv_handle_t *)&k->timer, on_closed);
}

/* The answer is known: keep it, and call back from the loop. */
static void finish(call *k, int status, const aemp_term *result)
{
    if (k->done) return;
    k->done = true;
    k->status = status;
    if (result && aemp_buf_put_term(&k->result, result)) {
        AEMP_LOGE("out of memory: the answer to a call is lost");
        k->status = AEMP_ENOMEM;
    }
    release(k);
    uv_timer_start(&k->timer, on_timer, 0, 0);
}

/* A call that could not start: undone, nobody is told. */
static void abort_call(call *k)
{
    k->cb = NULL;
    k->done = true;
    release(k);
    unlist(k);
    uv_close((uv_handle_t *)&k->timer, on_closed);
}

/* The end of a call's start: undone when the request could not go out
 * (rc), else its timeout set, unless the answer came at once (a port of
 * this node answering in its callback). */
static int started(call *k, int rc, unsigned timeout_ms)
{
    if (rc) {
        abort_call(k);
        return rc;
    }
    if (!k->done && timeout_ms) uv_timer_start(&k->timer, on_timer, timeout_ms, 0);
    return 0;
}

void aemp__call_close(aemp_node *n)
{
    while (n->svc->calls) {
        call *k = n->svc->calls;
        unlist(k);
        if (!k->done) {
            k->done = true;
            k->status = AEMP_ECLOSED;
            aemp__buf_reset(&k->result);
            release(k);
        }
        k->closing = true;
        uv_close((uv_handle_t *)&k->timer, on_closed);
    }
}

/* ------------------------------------------------------------------ */
/* answers                                                            */
/* ------------------------------------------------------------------ */

static bool atom_is(aemp_cursor *c, const char *want)
{
    char a[32];
    return aemp_get_atom(c, a, sizeof a) == 0 && strcmp(a, want) == 0;
}

static bool ref_is(aemp_cursor *c, const aemp_addr *want)
{
    aemp_addr r;
    return aemp_get_ref(c, &r) == 0 && aemp_addr_equal(&r, want);
}

/* {'DOWN', Ref, process, Object, Reason} for the call's monitor: *reason. */
static bool is_down(call *k, const aemp_term *msg, aemp_term *reason)
{
    aemp_cursor c = aemp_cursor_of(msg);
    uint32_t arity;
    return aemp_get_tuple(&c, &arity) == 0 && arity == 5 && atom_is(&c, "DOWN") &&
           ref_is(&c, &k->ref) && atom_is(&c, "process") && aemp_get_term(&c, NULL) == 0 &&
           aemp_get_term(&c, reason) == 0;
}

static bool is_atom_term(const aemp_term *t, const char *want)
{
    aemp_cursor c = aemp_cursor_of(t);
    return atom_is(&c, want) && c.pos == t->len;
}

/* A watched process died: its reason, or the lost connection. */
static void finish_down(call *k, const aemp_term *reason)
{
    if (is_atom_term(reason, "noconnection"))
        finish(k, AEMP_ENOCONN, reason);
    else
        finish(k, AEMP_RPC_EXIT, reason);
}

/* {Tag, Reason} as the answer, as erpc raises {erpc, R} and {signal, R}. */
static void finish_tagged(call *k, int status, const char *tag, const aemp_term *reason)
{
    aemp_buf b = AEMP_BUF_INIT;
    if (aemp_term_format(&b, "{~a, ~t}", tag, reason) == 0) {
        aemp_term t = aemp_buf_term(&b);
        finish(k, status, &t);
    } else {
        finish(k, AEMP_ENOMEM, NULL);
    }
    aemp_buf_free(&b);
}

/* The exit reason of erpc:execute_call's process, mapped as erpc:call
 * maps it (erpc.erl, result/4). */
static void erpc_down(call *k, const aemp_term *reason)
{
    aemp_cursor c = aemp_cursor_of(reason);
    uint32_t arity;
    char kind[8];
    aemp_term v;
    int status = -1;
    if (aemp_get_tuple(&c, &arity) == 0 && (arity == 3 || arity == 4) && ref_is(&c, &k->res) &&
        aemp_get_atom(&c, kind, sizeof kind) == 0 && aemp_get_term(&c, &v) == 0) {
        if (arity == 3 && strcmp(kind, "return") == 0) status = AEMP_RPC_RETURN;
        if (arity == 3 && strcmp(kind, "throw") == 0) status = AEMP_RPC_THROW;
        if (arity == 3 && strcmp(kind, "exit") == 0) status = AEMP_RPC_EXIT;
        /* {Res, error, Reason, Stack}, or {Res, error, {erpc, _}} */
        if (strcmp(kind, "error") == 0) status = AEMP_RPC_ERROR;
    }
    if (status >= 0) {
        finish(k, status, &v);
        return;
    }
    if (is_atom_term(reason, "noconnection"))
        finish(k, AEMP_ENOCONN, reason);
    else /* killed by an exit signal: erpc raises exit:{signal, Reason} */
        finish_tagged(k, AEMP_RPC_EXIT, "signal", reason);
}

static void on_erpc(call *k, const aemp_term *msg)
{
    aemp_term reason;
    if (is_down(k, msg, &reason)) erpc_down(k, &reason);
}

/* The outcome of the spawn of erpc:execute_call/4: the monitor whose
 * 'DOWN' brings the answer, or erpc's error. */
static void spawned(aemp_node *n, int err, const aemp_addr *pid, const aemp_addr *ref, void *arg)
{
    call *k = arg;
    k->spawning = false;
    if (k->closed) {
        call_free(k);
        return;
    }
    if (k->done) return;
    if (!err && ref) {
        k->ref = *ref;
        return;
    }
    /* the node refused the spawn request: erpc raises error:{erpc, Reason} */
    const char *why = err == AEMP_EINVAL    ? "badarg"
                      : err == AEMP_ENOTSUP ? "notsup"
                      : err == AEMP_ETOOBIG ? "system_limit"
                                            : NULL;
    aemp_buf b = AEMP_BUF_INIT;
    if (why && aemp__enc_atom_text(&b, why, strlen(why)) == 0) {
        aemp_term t = aemp_buf_term(&b);
        finish_tagged(k, AEMP_RPC_ERROR, "erpc", &t);
    } else if (err == AEMP_EPROTO || err == AEMP_ECLOSED || err == AEMP_ENOMEM || !err) {
        finish(k, err ? err : AEMP_EPROTO, NULL);
    } else if (aemp__enc_atom_text(&b, "noconnection", 12) == 0) {
        /* the connection could not be made or was lost */
        aemp_term t = aemp_buf_term(&b);
        finish(k, AEMP_ENOCONN, &t);
    }
    aemp_buf_free(&b);
}

/* {[alias|Mref], Reply}: *reply. */
static bool is_gen_reply(call *k, const aemp_term *msg, aemp_term *reply)
{
    aemp_cursor c = aemp_cursor_of(msg);
    uint32_t arity, len;
    return aemp_get_tuple(&c, &arity) == 0 && arity == 2 && aemp_get_list(&c, &len) == 0 &&
           len == 1 && atom_is(&c, "alias") && ref_is(&c, &k->ref) && aemp_get_term(&c, reply) == 0;
}

static void on_msg(aemp_node *n, aemp_port self, const aemp_term *msg, const aemp_addr *from,
                   void *arg)
{
    call *k = arg;
    aemp_term t;
    if (k->done) return;
    switch (k->kind) {
    case CALL_ERPC:
        on_erpc(k, msg);
        break;
    case CALL_GEN:
        if (is_gen_reply(k, msg, &t))
            finish(k, AEMP_RPC_RETURN, &t);
        else if (is_down(k, msg, &t))
            finish_down(k, &t);
        break;
    default:
        if (k->ref.kind && is_down(k, msg, &t))
            finish_down(k, &t);
        else
            finish(k, AEMP_RPC_RETURN, msg);
    }
}

/* ------------------------------------------------------------------ */
/* the public calls                                                   */
/* ------------------------------------------------------------------ */

static bool is_list(const aemp_term *t)
{
    uint8_t tag = (uint8_t)t->data[0];
    return tag == AEMP__EXT_LIST || tag == AEMP__EXT_NIL || tag == AEMP__EXT_STRING;
}

static bool is_process(const aemp_addr *a)
{
    return a && (a->kind == AEMP_ADDR_PID || a->kind == AEMP_ADDR_NAME) && a->node;
}

int aemp_call(aemp_node *n, const char *peer, const char *module, const char *function,
              const aemp_term *args, unsigned timeout_ms, aemp_call_cb cb, void *arg)
{
    if (!n || !peer || !module || !function || !cb || !aemp__term_whole(args) || !is_list(args) ||
        strlen(module) > AEMP_MAXATOMLEN || strlen(function) > AEMP_MAXATOMLEN ||
        !aemp__node_name_valid(peer) || strcmp(peer, n->name) == 0)
        return AEMP_EINVAL;
    call *k;
    int rc = call_new(n, CALL_ERPC, cb, arg, &k);
    if (rc) return rc;
    aemp__proc_ref(n, &k->res);
    aemp_buf b = AEMP_BUF_INIT;
    rc = aemp_term_format(&b, "[~p, ~a, ~a, ~t]", &k->res, module, function, args);
    if (!rc) {
        aemp_term a = aemp_buf_term(&b);
        rc = aemp_spawn(n, k->port, peer, "erpc", "execute_call", &a, AEMP_SPAWN_MONITOR, spawned,
                        k);
    }
    aemp_buf_free(&b);
    k->spawning = rc == 0;
    return started(k, rc, timeout_ms);
}

/* [alias|Ref], an improper list (the format builder makes proper ones). */
static int alias_tag(aemp_buf *b, const aemp_addr *ref)
{
    int rc = aemp__buf_put_u8(b, AEMP__EXT_LIST);
    if (!rc) rc = aemp__buf_put_u32(b, 1);
    if (!rc) rc = aemp__enc_atom_text(b, "alias", 5);
    if (!rc) rc = aemp__enc_addr(b, ref);
    return rc;
}

int aemp_gen_call(aemp_node *n, const aemp_addr *server, const aemp_term *request,
                  unsigned timeout_ms, aemp_call_cb cb, void *arg)
{
    if (!n || !is_process(server) || !aemp__term_whole(request) || !cb) return AEMP_EINVAL;
    call *k;
    int rc = call_new(n, CALL_GEN, cb, arg, &k);
    if (rc) return rc;
    aemp_buf tag = AEMP_BUF_INIT, msg = AEMP_BUF_INIT;
    aemp_addr self;
    /* the monitor's reference is the alias, as monitor/3's {alias, demonitor} */
    rc = aemp_monitor(n, k->port, server, &k->ref);
    if (!rc) rc = aemp__alias_add(n, &k->ref, k->port.id);
    if (!rc) rc = aemp_port_addr(n, k->port, &self);
    if (!rc) rc = alias_tag(&tag, &k->ref);
    if (!rc) {
        aemp_term tt = aemp_buf_term(&tag);
        rc = aemp_term_format(&msg, "{'$gen_call', {~p, ~t}, ~t}", &self, &tt, request);
    }
    if (!rc) {
        aemp_term mt = aemp_buf_term(&msg);
        rc = aemp_send(n, k->port, server, &mt);
    }
    aemp_buf_free(&tag);
    aemp_buf_free(&msg);
    return started(k, rc, timeout_ms);
}

/* The Tag of a From: an alias to answer to, if it names one. */
static bool tag_alias(const aemp_term *tag, aemp_addr *alias)
{
    aemp_cursor c = aemp_cursor_of(tag);
    uint32_t len, inner;
    if (aemp_get_list(&c, &len) || len < 1) return false;
    /* [alias|Alias] */
    aemp_cursor a = c;
    if (len == 1 && atom_is(&a, "alias") && aemp_get_ref(&a, alias) == 0) return true;
    /* [[alias|Alias]|_] */
    return aemp_get_list(&c, &inner) == 0 && inner == 1 && atom_is(&c, "alias") &&
           aemp_get_ref(&c, alias) == 0;
}

int aemp_gen_reply(aemp_node *n, const aemp_term *from, const aemp_term *reply)
{
    if (!n || !aemp__term_whole(from) || !aemp__term_whole(reply)) return AEMP_EINVAL;
    aemp_cursor c = aemp_cursor_of(from);
    uint32_t arity;
    aemp_addr to;
    aemp_term tag;
    if (aemp_get_tuple(&c, &arity) || arity != 2 || aemp_get_pid(&c, &to) ||
        aemp_get_term(&c, &tag))
        return AEMP_EINVAL;
    aemp_addr alias;
    if (tag_alias(&tag, &alias)) to = alias;
    aemp_buf b = AEMP_BUF_INIT;
    int rc = aemp_term_format(&b, "{~t, ~t}", &tag, reply);
    if (!rc) {
        aemp_term msg = aemp_buf_term(&b);
        rc = aemp_send(n, (aemp_port){n->proc->self}, &to, &msg);
    }
    aemp_buf_free(&b);
    return rc;
}

/* msg with pid appended: {A, B} -> {A, B, Pid}; Msg -> {Msg, Pid}. */
static int append_pid(aemp_buf *b, const aemp_term *msg, const aemp_addr *pid)
{
    aemp_cursor c = aemp_cursor_of(msg);
    uint32_t arity;
    if (aemp_get_tuple(&c, &arity) || arity >= UINT32_MAX)
        return aemp_term_format(b, "{~t, ~p}", msg, pid);
    int rc;
    if (arity + 1 <= 0xff) {
        rc = aemp__buf_put_u8(b, AEMP__EXT_SMALL_TUPLE);
        if (!rc) rc = aemp__buf_put_u8(b, (uint8_t)(arity + 1));
    } else {
        rc = aemp__buf_put_u8(b, AEMP__EXT_LARGE_TUPLE);
        if (!rc) rc = aemp__buf_put_u32(b, arity + 1);
    }
    if (!rc) rc = aemp__buf_append(b, msg->data + c.pos, msg->len - c.pos);
    if (!rc) rc = aemp__enc_addr(b, pid);
    return rc;
}

int aemp_cal(aemp_node *n, const aemp_addr *to, const aemp_term *msg, unsigned timeout_ms,
             aemp_call_cb cb, void *arg)
{
    if (!n || !is_process(to) || !aemp__term_whole(msg) || !cb) return AEMP_EINVAL;
    call *k;
    int rc = call_new(n, CALL_CAL, cb, arg, &k);
    if (rc) return rc;
    aemp_buf b = AEMP_BUF_INIT;
    aemp_addr self;
    /* without a timeout, the target's death ends the wait */
    if (timeout_ms == 0) rc = aemp_monitor(n, k->port, to, &k->ref);
    if (!rc) rc = aemp_port_addr(n, k->port, &self);
    if (!rc) rc = append_pid(&b, msg, &self);
    if (!rc) {
        aemp_term mt = aemp_buf_term(&b);
        rc = aemp_send(n, k->port, to, &mt);
    }
    aemp_buf_free(&b);
    return started(k, rc, timeout_ms);
}
