/*
 * port.c - local ports: the table, registered names, delivery (local, or
 * handed to the node for remote destinations), and the public calls on
 * ports and sends.
 */
#include "watch.h"

#include <stdlib.h>

/* Nested local sends deeper than this are deferred to the loop, so a port
 * that sends to itself from its callback does not exhaust the stack. */
#define MAX_DEPTH 50

static struct aemp__proc *P(aemp_node *n)
{
    return n->proc;
}

aemp__port *aemp__proc_port(aemp_node *n, uint64_t id)
{
    struct aemp__proc *p = P(n);
    if (id && p->last_id == id && p->last_epoch == p->epoch) return p->last_port;
    aemp__port *port = aemp__idmap_get(&p->ports, id);
    if (port && port->dead) port = NULL;
    p->last_id = id;
    p->last_port = port;
    p->last_epoch = p->epoch;
    return port;
}

static aemp__port *by_name(aemp_node *n, uint32_t name)
{
    aemp__port *port = aemp__map_get(&P(n)->names, &name, sizeof name);
    return port && !port->dead ? port : NULL;
}

/* The local port an address (pid or name of this node) stands for. */
aemp__port *aemp__proc_resolve(aemp_node *n, const aemp_addr *a)
{
    if (a->node != n->name_h) return NULL;
    if (a->kind == AEMP_ADDR_NAME) return by_name(n, a->w[0]);
    if (a->kind != AEMP_ADDR_PID || a->creation != n->creation) return NULL;
    return aemp__proc_port(n, aemp__addr_pid_id(a));
}

void aemp__proc_set_next_id(aemp_node *n, uint64_t id)
{
    P(n)->next_id = id;
}

int aemp__proc_open(aemp_node *n, aemp_recv_cb cb, void *arg, aemp_port *out)
{
    struct aemp__proc *p = P(n);
    if (n->closing) return AEMP_ECLOSED;
    aemp__port *port = calloc(1, sizeof *port);
    if (!port) return AEMP_ENOMEM;
    /* 64-bit ids are never reused: at a million ports a second they last
     * half a million years. */
    port->id = ++p->next_id;
    port->cb = cb;
    port->arg = arg;
    port->silent = cb == NULL;
    port->watches.next = port->watches.prev = &port->watches;
    if (aemp__idmap_put(&p->ports, port->id, port)) {
        free(port);
        return AEMP_ENOMEM;
    }
    p->epoch++;
    out->id = port->id;
    return 0;
}

int aemp_port_open(aemp_node *n, aemp_recv_cb cb, void *arg, aemp_port *out)
{
    if (!n || !cb || !out) return AEMP_EINVAL;
    return aemp__proc_open(n, cb, arg, out);
}

void aemp__port_free(aemp_node *n, aemp__port *port)
{
    if (port->ext) aemp__rcv_free(n, port);
    free(port);
}

/* Take a dying port out of the table and its name. */
void aemp__port_unlist(aemp_node *n, aemp__port *port)
{
    struct aemp__proc *p = P(n);
    port->dead = true;
    if (port->regname) aemp__map_del(&p->names, &port->regname, sizeof port->regname);
    aemp__idmap_del(&p->ports, port->id);
    p->epoch++;
}

int aemp_port_addr(aemp_node *n, aemp_port port, aemp_addr *out)
{
    if (!n || !out) return AEMP_EINVAL;
    if (!aemp__proc_port(n, port.id)) return AEMP_ENOENT;
    aemp__addr_pid(out, n->name_h, n->creation, port.id);
    return 0;
}

int aemp_port_of_addr(aemp_node *n, const aemp_addr *addr, aemp_port *out)
{
    if (!n || !addr || !out) return AEMP_EINVAL;
    aemp__port *port = aemp__proc_resolve(n, addr);
    if (!port) return AEMP_ENOENT;
    out->id = port->id;
    return 0;
}

int aemp_register(aemp_node *n, const char *name, aemp_port port)
{
    if (!n || !name || !*name || strlen(name) > AEMP_MAXATOMLEN) return AEMP_EINVAL;
    uint32_t h = aemp__intern(name, strlen(name));
    if (!h) return AEMP_ETOOBIG;
    if (aemp__map_get(&P(n)->names, &h, sizeof h)) return AEMP_EEXIST;
    aemp__port *p = aemp__proc_port(n, port.id);
    if (!p) return AEMP_ENOENT;
    if (p->regname) return AEMP_EEXIST; /* one name per port, as in Erlang */
    if (aemp__map_put(&P(n)->names, &h, sizeof h, p)) return AEMP_ENOMEM;
    p->regname = h;
    P(n)->epoch++;
    return 0;
}

int aemp_unregister(aemp_node *n, const char *name)
{
    if (!n || !name) return AEMP_EINVAL;
    size_t len = strlen(name);
    uint32_t h = len <= AEMP_MAXATOMLEN ? aemp__intern(name, len) : 0;
    aemp__port *p = h ? aemp__map_get(&P(n)->names, &h, sizeof h) : NULL;
    if (!p) return AEMP_ENOENT;
    if (p->system) return AEMP_EINVAL; /* the name Erlang expects a service under */
    aemp__map_del(&P(n)->names, &h, sizeof h);
    p->regname = 0;
    P(n)->epoch++;
    return 0;
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
    uv_idle_start(&p->deferred_idle, aemp__proc_idle);
    return 0;
}

/* From the loop: deferred deliveries, then deferred kills. */
void aemp__proc_idle(uv_idle_t *h)
{
    aemp_node *n = h->data;
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
    aemp__mon_run_pending(n);
    aemp__proc_run_kills(n);
    bool local = aemp__spawn_run_local(n);
    if (!p->deferred.len && !p->kills.len && !p->pending && !local) uv_idle_stop(&p->deferred_idle);
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
