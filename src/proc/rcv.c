/*
 * rcv.c - delivery (local, deferred past a depth, or handed to the node for
 * remote destinations: aemp_send) and the AEMP side of a port: callbacks
 * per tag and a default one, dispatch of a message to them, $SELF, peval
 * and psub, a callback's error ending its port with {die, Text}, and the
 * port's gone callback when it is freed. Calls port.c and alias.c below.
 */
#include "watch.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

/* Nested local sends deeper than this are deferred to the loop, so a port
 * that sends to itself from its callback does not exhaust the stack. */
#define MAX_DEPTH 50

/* Longest tag in bytes (an atom's 255 characters, as rcv matches atoms). */
#define TAG_MAX 255

struct tag {
    char *text;
    uint32_t len;
    aemp_rcv_cb cb;
    void *arg;
};

struct aemp__pext {
    struct tag *tags; /* searched in order: ports have a few tags */
    uint32_t ntags, cap;
    aemp_rcv_cb dflt;
    void *dflt_arg;
    aemp_gone_cb gone;
    void *gone_arg;
    aemp_buf reason; /* the exit reason, kept for gone */
};

static struct aemp__proc *P(aemp_node *n)
{
    return n->proc;
}

static aemp__pext *ext_of(aemp__port *port)
{
    if (!port->ext) port->ext = calloc(1, sizeof *port->ext);
    return port->ext;
}

int aemp__proc_new(aemp_node *n, aemp_port *out)
{
    int rc = aemp__proc_open(n, NULL, NULL, out);
    if (!rc) aemp__proc_port(n, out->id)->silent = 0;
    return rc;
}

int aemp_port_new(aemp_node *n, aemp_port *out)
{
    if (!n || !out) return AEMP_EINVAL;
    return aemp__proc_new(n, out);
}

int aemp_rcv(aemp_node *n, aemp_port port, const char *tag, aemp_rcv_cb cb, void *arg)
{
    if (!n) return AEMP_EINVAL;
    size_t len = tag ? strlen(tag) : 0;
    if (len > TAG_MAX) return AEMP_EINVAL;
    aemp__port *p = aemp__proc_port(n, port.id);
    if (!p || p->dying) return AEMP_ENOENT;
    if (p->system) return AEMP_EINVAL;
    aemp__pext *e = ext_of(p);
    if (!e) return AEMP_ENOMEM;
    if (!tag) {
        e->dflt = cb;
        e->dflt_arg = arg;
        p->cb = NULL; /* a raw callback is replaced too */
        p->silent = 0;
        return 0;
    }
    for (uint32_t i = 0; i < e->ntags; i++) {
        struct tag *t = &e->tags[i];
        if (t->len != len || memcmp(t->text, tag, len) != 0) continue;
        if (cb) {
            t->cb = cb;
            t->arg = arg;
        } else {
            free(t->text);
            e->tags[i] = e->tags[--e->ntags];
        }
        return 0;
    }
    if (!cb) return 0;
    if (e->ntags == e->cap) {
        uint32_t cap = e->cap ? 2 * e->cap : 4;
        struct tag *t = realloc(e->tags, cap * sizeof *t);
        if (!t) return AEMP_ENOMEM;
        e->tags = t;
        e->cap = cap;
    }
    char *text = malloc(len + 1);
    if (!text) return AEMP_ENOMEM;
    memcpy(text, tag, len + 1);
    e->tags[e->ntags++] = (struct tag){text, (uint32_t)len, cb, arg};
    p->silent = 0;
    return 0;
}

aemp_port aemp_self(aemp_node *n)
{
    aemp_port self = {n && n->proc ? P(n)->self : 0};
    return self;
}

int aemp_die(aemp_node *n, const char *fmt, ...)
{
    if (!n || !fmt) return AEMP_EDIE;
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (len < 0) len = 0;
    if ((size_t)len >= sizeof text) len = sizeof text - 1;
    aemp_buf *b = &P(n)->die_text;
    aemp__buf_reset(b);
    aemp__buf_append(b, text, (size_t)len);
    aemp__buf_append(b, "", 1);
    return AEMP_EDIE;
}

/* A callback of port failed with rc: it dies with {die, Text}. */
static void died(aemp_node *n, aemp__port *port, int rc)
{
    aemp_buf *t = &P(n)->die_text;
    const char *text = t->len ? t->data : aemp_strerror(rc);
    aemp_buf reason = AEMP_BUF_INIT;
    if (aemp_term_format(&reason, "{die, ~s}", text) == 0) {
        aemp_term r = aemp_buf_term(&reason);
        aemp__proc_kill_later(n, port->id, &r);
    }
    aemp_buf_free(&reason);
    aemp__buf_reset(t);
}

/* Run fn as port (the caller keeps the port alive across the call). */
static int run_as(aemp_node *n, aemp__port *port, aemp_fn fn, void *arg)
{
    struct aemp__proc *p = P(n);
    uint64_t outer = p->self;
    port->in_cb++;
    p->self = port->id;
    aemp__buf_reset(&p->die_text);
    int rc = fn(n, (aemp_port){port->id}, arg);
    if (rc && !port->dead) died(n, port, rc);
    p->self = outer;
    port->in_cb--;
    if (port->dead && port->in_cb == 0) aemp__port_free(n, port);
    return 0;
}

int aemp_peval(aemp_node *n, aemp_port port, aemp_fn fn, void *arg)
{
    if (!n || !fn) return AEMP_EINVAL;
    aemp__port *p = aemp__proc_port(n, port.id);
    if (!p || p->dying) return AEMP_ENOENT;
    return run_as(n, p, fn, arg);
}

aemp_psub aemp_psub_of(aemp_node *n, aemp_fn fn, void *arg)
{
    aemp_psub s = {n, aemp_self(n), fn, arg};
    return s;
}

int aemp_psub_call(const aemp_psub *s)
{
    if (!s || !s->node || !s->fn) return AEMP_EINVAL;
    if (!s->port.id) {
        struct aemp__proc *p = P(s->node);
        uint64_t outer = p->self;
        p->self = 0;
        s->fn(s->node, s->port, s->arg);
        p->self = outer;
        return 0;
    }
    return aemp_peval(s->node, s->port, s->fn, s->arg);
}

/* The name at c (an atom or a binary): its bytes, advancing c. */
static bool read_tag(aemp_cursor *c, const char **text, size_t *len)
{
    const char *d = c->data + c->pos;
    size_t left = c->len - c->pos, total;
    int latin1;
    if (aemp__term_atom_view(d, left, text, len, &latin1, &total) == 0) {
        c->pos += total;
        return true;
    }
    if (left < 5 || (uint8_t)d[0] != AEMP__EXT_BINARY) return false;
    size_t n = aemp__get_u32(d + 1);
    if (n > left - 5) return false;
    *text = d + 5;
    *len = n;
    c->pos += 5 + n;
    return true;
}

static void unhandled(aemp_node *n, aemp__port *port, const aemp_term *msg)
{
    /* {unhandled_message, Tag}: the tuple's first element, else the message */
    aemp_cursor c = aemp_cursor_of(msg);
    uint32_t arity;
    aemp_term tag = *msg;
    if (aemp_get_tuple(&c, &arity) == 0 && arity > 0) aemp_get_term(&c, &tag);
    aemp_buf reason = AEMP_BUF_INIT;
    if (aemp_term_format(&reason, "{unhandled_message, ~t}", &tag) == 0) {
        aemp_term r = aemp_buf_term(&reason);
        aemp__proc_kill_later(n, port->id, &r);
    }
    aemp_buf_free(&reason);
}

/*
 * Dispatch msg to the AEMP callbacks of port (a port without a raw
 * callback, or with tags): the callback of its tag, else the default one,
 * else the raw one, else the port dies with {unhandled_message, Tag}.
 */
void aemp__rcv_dispatch(aemp_node *n, aemp__port *port, const aemp_term *msg, const aemp_addr *from)
{
    aemp__pext *e = port->ext;
    aemp_msg m = {*msg, from, aemp_cursor_of(msg), 1};
    aemp_rcv_cb cb = NULL;
    void *arg = NULL;
    if (e && e->ntags) {
        aemp_cursor c = aemp_cursor_of(msg);
        uint32_t arity;
        const char *text;
        size_t len;
        if (aemp_get_tuple(&c, &arity) == 0 && arity > 0 && read_tag(&c, &text, &len)) {
            for (uint32_t i = 0; i < e->ntags; i++) {
                if (e->tags[i].len == len && memcmp(e->tags[i].text, text, len) == 0) {
                    cb = e->tags[i].cb;
                    arg = e->tags[i].arg;
                    m.args = c;
                    m.nargs = arity - 1;
                    break;
                }
            }
        }
    }
    if (!cb && e && e->dflt) {
        cb = e->dflt;
        arg = e->dflt_arg;
    }
    if (!cb) {
        if (port->cb)
            port->cb(n, (aemp_port){port->id}, msg, from, port->arg);
        else if (!port->silent)
            unhandled(n, port, msg);
        return;
    }
    aemp__buf_reset(&P(n)->die_text);
    int rc = cb(n, (aemp_port){port->id}, &m, arg);
    if (rc && !port->dead) died(n, port, rc);
}

int aemp_port_gone(aemp_node *n, aemp_port port, aemp_gone_cb cb, void *arg)
{
    if (!n) return AEMP_EINVAL;
    aemp__port *p = aemp__proc_port(n, port.id);
    if (!p) return AEMP_ENOENT;
    if (p->system) return AEMP_EINVAL;
    aemp__pext *e = ext_of(p);
    if (!e) return AEMP_ENOMEM;
    e->gone = cb;
    e->gone_arg = arg;
    return 0;
}

void aemp__rcv_exit(aemp__port *port, const aemp_term *reason)
{
    if (port->ext && port->ext->gone)
        aemp__buf_append(&port->ext->reason, reason->data, reason->len);
}

void aemp__rcv_free(aemp_node *n, aemp__port *port)
{
    aemp__pext *e = port->ext;
    if (!e) return;
    port->ext = NULL;
    if (e->gone) {
        aemp_term r = aemp_buf_term(&e->reason);
        if (!r.len) r = (aemp_term){"\x77\x08shutdown", 10};
        e->gone(n, (aemp_port){port->id}, &r, e->gone_arg);
    }
    for (uint32_t i = 0; i < e->ntags; i++)
        free(e->tags[i].text);
    free(e->tags);
    aemp_buf_free(&e->reason);
    free(e);
}

void aemp__port_free(aemp_node *n, aemp__port *port)
{
    if (port->ext) aemp__rcv_free(n, port);
    free(port);
}

/* ------------------------------------------------------------------ */
/* delivery                                                           */
/* ------------------------------------------------------------------ */

static void call_port(aemp_node *n, aemp__port *port, const aemp_term *msg, const aemp_addr *from)
{
    struct aemp__proc *p = P(n);
    /* a closing node runs no callback (aemp_node_close), a kil'd port
     * none either */
    if (n->closing || port->dying) return;
    if (!port->cb && port->silent) return;
    aemp_port self = {port->id};
    uint64_t outer = p->self;
    port->in_cb++;
    p->depth++;
    p->self = port->id;
    if (port->cb && !port->ext)
        port->cb(n, self, msg, from, port->arg);
    else
        aemp__rcv_dispatch(n, port, msg, from);
    p->self = outer;
    p->depth--;
    port->in_cb--;
    if (port->dead && port->in_cb == 0) aemp__port_free(n, port);
}

/* Deferred record: u32 length, u64 to, u8 has_from, from, message. */
#define DEFER_HEAD (4 + 8 + 1 + sizeof(aemp_addr))

static int defer(aemp_node *n, uint64_t id, const aemp_term *msg, const aemp_addr *from)
{
    struct aemp__proc *p = P(n);
    size_t total = DEFER_HEAD + msg->len;
    if (total > UINT32_MAX) return AEMP_ETOOBIG;
    int rc = aemp__buf_reserve(&p->deferred, total);
    if (rc) return rc;
    char *d = p->deferred.data + p->deferred.len;
    aemp_addr none;
    memset(&none, 0, sizeof none);
    aemp__put_u32(d, (uint32_t)total);
    memcpy(d + 4, &id, 8);
    d[12] = from != NULL;
    memcpy(d + 13, from ? from : &none, sizeof none);
    memcpy(d + DEFER_HEAD, msg->data, msg->len);
    p->deferred.len += total;
    aemp__proc_wake(n);
    return 0;
}

bool aemp__proc_run_deferred(aemp_node *n)
{
    struct aemp__proc *p = P(n);
    /* Only what was queued before this turn: new deferrals wait a turn. */
    size_t end = p->deferred.len;
    aemp_buf copy = AEMP_BUF_INIT;
    while (p->deferred_pos < end) {
        const char *r = p->deferred.data + p->deferred_pos;
        uint32_t len = aemp__get_u32(r);
        uint64_t to;
        aemp_addr from;
        memcpy(&to, r + 4, 8);
        bool has_from = r[12] != 0;
        memcpy(&from, r + 13, sizeof from);
        p->deferred_pos += len;
        aemp__port *port = aemp__proc_port(n, to);
        if (!port) continue;
        /* The record may move if the callback defers more: copy the view. */
        copy.len = 0;
        if (aemp__buf_append(&copy, r + DEFER_HEAD, len - DEFER_HEAD)) continue;
        aemp_term msg = aemp_buf_term(&copy);
        call_port(n, port, &msg, has_from ? &from : NULL);
    }
    aemp_buf_free(&copy);
    if (p->deferred_pos >= p->deferred.len) {
        p->deferred.len = 0;
        p->deferred_pos = 0;
    }
    return p->deferred.len != 0;
}

int aemp__proc_deliver_later(aemp_node *n, aemp__port *port, const aemp_term *msg,
                             const aemp_addr *from)
{
    return defer(n, port->id, msg, from);
}

int aemp__proc_deliver(aemp_node *n, aemp__port *port, const aemp_term *msg, const aemp_addr *from)
{
    struct aemp__proc *p = P(n);
    /* Keep order: once anything is deferred, later sends queue behind it. */
    if (p->depth >= MAX_DEPTH || p->deferred.len > p->deferred_pos)
        return defer(n, port->id, msg, from);
    call_port(n, port, msg, from);
    return 0;
}

int aemp_send(aemp_node *n, aemp_port from, const aemp_addr *to, const aemp_term *msg)
{
    if (!n || !to || !msg || !msg->data || !msg->len) return AEMP_EINVAL;
    if (n->closing) return AEMP_ECLOSED;
    if (to->kind < AEMP_ADDR_PID || to->kind > AEMP_ADDR_ALIAS || !to->node) return AEMP_EINVAL;
    aemp_addr fa;
    if (from.id) aemp__addr_pid(&fa, n->name_h, n->creation, from.id);
    if (to->node == n->name_h) {
        /* Sending to a port that is gone (or a pid of an earlier
         * incarnation, or a reference that is no active alias) drops the
         * message. */
        aemp__port *port =
            to->kind >= AEMP_ADDR_REF ? aemp__alias_port(n, to) : aemp__proc_resolve(n, to);
        return port ? aemp__proc_deliver(n, port, msg, from.id ? &fa : NULL) : 0;
    }
    return aemp__node_send(n, from.id ? &fa : NULL, to, msg);
}

int aemp_sendf(aemp_node *n, aemp_port from, const aemp_addr *to, const char *fmt, ...)
{
    aemp_buf b = AEMP_BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    int rc = aemp_term_vformat(&b, fmt, ap);
    va_end(ap);
    if (!rc) {
        aemp_term t = aemp_buf_term(&b);
        rc = aemp_send(n, from, to, &t);
    }
    aemp_buf_free(&b);
    return rc;
}
