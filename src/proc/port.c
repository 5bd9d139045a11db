/*
 * port.c - local ports: the table, registered names, the public calls on
 * them, and the queue of kills deferred to the loop. The bottom of the
 * process layer: every other file of it calls down to this one, and this
 * one calls none of them (the layer's turn of the loop is the function
 * proc.c gave it).
 */
#include "watch.h"

#include <stdlib.h>

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

void aemp__proc_protect(aemp_node *n, aemp_port port)
{
    aemp__port *p = aemp__proc_port(n, port.id);
    if (p) p->system = true;
}

void aemp__proc_wake(aemp_node *n)
{
    uv_idle_start(&P(n)->deferred_idle, P(n)->idle_fn);
}

void aemp__proc_kill_later(aemp_node *n, uint64_t id, const aemp_term *reason)
{
    struct aemp__proc *p = P(n);
    aemp__port *port = aemp__proc_port(n, id);
    if (!port || port->dying) return;
    size_t total = 12 + reason->len;
    if (total > UINT32_MAX || aemp__buf_reserve(&p->kills, total)) {
        AEMP_LOGE("out of memory: port %llu is not killed", (unsigned long long)id);
        return;
    }
    port->dying = 1;
    char *d = p->kills.data + p->kills.len;
    aemp__put_u32(d, (uint32_t)total);
    memcpy(d + 4, &id, 8);
    memcpy(d + 12, reason->data, reason->len);
    p->kills.len += total;
    aemp__proc_wake(n);
}
