/*
 * port.c - local ports: the table, registered names, delivery (local and
 * remote), exits towards remote watchers.
 */
#include "node_int.h"

#include <stdlib.h>

/* Nested local sends deeper than this are deferred to the loop, so a port
 * that sends to itself from its callback does not exhaust the stack. */
#define MAX_DEPTH 50

aemp__port *aemp__port_find(aemp_node *n, uint32_t id)
{
    aemp__port *p = aemp__map_get(&n->ports, &id, sizeof id);
    return p && !p->dead ? p : NULL;
}

aemp__port *aemp__port_by_name(aemp_node *n, const char *name)
{
    aemp__port *p = aemp__map_get(&n->names, name, strlen(name));
    return p && !p->dead ? p : NULL;
}

bool aemp__pid_is_local(const aemp_node *n, const aemp_addr *a, uint32_t *id)
{
    if (a->kind != AEMP_ADDR_PID || a->creation != n->creation || a->num > 0x7fff ||
        a->serial > 0x1fff || strcmp(a->node, n->name) != 0)
        return false;
    *id = a->num | (a->serial << 15);
    return true;
}

static void port_free(aemp_node *n, aemp__port *p)
{
    while (p->watches) {
        aemp__watch *w = p->watches;
        p->watches = w->next;
        aemp_buf_free(&w->target);
        aemp_buf_free(&w->watcher);
        aemp_buf_free(&w->ref);
        free(w);
    }
    free(p->regname);
    free(p);
}

int aemp_port_open(aemp_node *n, aemp_recv_cb cb, void *arg, aemp_port *out)
{
    if (!n || !cb || !out) return AEMP_EINVAL;
    if (n->closing) return AEMP_ECLOSED;
    if (n->next_port >= AEMP__PORT_ID_MAX) return AEMP_ETOOBIG; /* ids are never reused */
    aemp__port *p = calloc(1, sizeof *p);
    if (!p) return AEMP_ENOMEM;
    p->id = ++n->next_port;
    p->cb = cb;
    p->arg = arg;
    if (aemp__map_put(&n->ports, &p->id, sizeof p->id, p)) {
        free(p);
        return AEMP_ENOMEM;
    }
    out->id = p->id;
    return 0;
}

void aemp__port_kill(aemp_node *n, aemp__port *p, const aemp_term *reason)
{
    if (p->dead) return;
    p->dead = true;
    if (p->regname) aemp__map_del(&n->names, p->regname, strlen(p->regname));
    aemp__map_del(&n->ports, &p->id, sizeof p->id);
    for (aemp__watch *w = p->watches; w; w = w->next)
        aemp__ctl_port_died(n, p->id, w, reason);
    char why[200];
    aemp_term_print(reason, why, sizeof why);
    if (strcmp(why, "normal") != 0 && strcmp(why, "shutdown") != 0)
        AEMP_LOGI("port %u died: %s", p->id, why);
    if (p->in_cb == 0) port_free(n, p);
}

static int kill_with_atom(aemp_node *n, aemp__port *p, const char *atom)
{
    aemp_buf r = AEMP_BUF_INIT;
    int rc = aemp__enc_atom(&r, atom);
    if (!rc) {
        aemp_term t = aemp_buf_term(&r);
        aemp__port_kill(n, p, &t);
    }
    aemp_buf_free(&r);
    return rc;
}

int aemp_port_close(aemp_node *n, aemp_port port)
{
    if (!n) return AEMP_EINVAL;
    aemp__port *p = aemp__port_find(n, port.id);
    if (!p) return 0;
    return kill_with_atom(n, p, "normal");
}

static void close_one(const char *key, void *val, void *arg)
{
    kill_with_atom(arg, val, "shutdown");
}

void aemp__ports_close_all(aemp_node *n)
{
    aemp__map_each(&n->ports, close_one, n);
}

struct down_ctx {
    aemp_node *n;
    const char *peer;
    aemp__port **kill;
    size_t nkill, cap;
};

static void drop_watches(const char *key, void *val, void *arg)
{
    struct down_ctx *d = arg;
    aemp__port *p = val;
    bool linked = false;
    for (aemp__watch **pw = &p->watches; *pw;) {
        aemp__watch *w = *pw;
        if (strcmp(w->peer, d->peer) != 0) {
            pw = &w->next;
            continue;
        }
        linked |= w->is_link;
        *pw = w->next;
        aemp_buf_free(&w->target);
        aemp_buf_free(&w->watcher);
        aemp_buf_free(&w->ref);
        free(w);
    }
    if (linked && d->nkill < d->cap) d->kill[d->nkill++] = p;
}

void aemp__ports_node_down(aemp_node *n, const char *peer)
{
    /* A link to a process on a lost node breaks with noconnection; ports
     * are killed after the walk so the table is not changed under it. */
    struct down_ctx d = {n, peer, NULL, 0, n->ports.count};
    if (d.cap) d.kill = malloc(d.cap * sizeof *d.kill);
    if (!d.kill) d.cap = 0;
    aemp__map_each(&n->ports, drop_watches, &d);
    for (size_t i = 0; i < d.nkill; i++)
        kill_with_atom(n, d.kill[i], "noconnection");
    free(d.kill);
}

int aemp_port_addr(aemp_node *n, aemp_port port, aemp_addr *out)
{
    if (!n || !out) return AEMP_EINVAL;
    if (!aemp__port_find(n, port.id)) return AEMP_ENOENT;
    memset(out, 0, sizeof *out);
    out->kind = AEMP_ADDR_PID;
    aemp__strlcpy(out->node, n->name, sizeof out->node);
    out->num = port.id & 0x7fff;
    out->serial = (port.id >> 15) & 0x1fff;
    out->creation = n->creation;
    return 0;
}

int aemp_port_of_addr(aemp_node *n, const aemp_addr *addr, aemp_port *out)
{
    uint32_t id;
    if (!n || !addr || !out) return AEMP_EINVAL;
    if (addr->kind == AEMP_ADDR_NAME) {
        if (strcmp(addr->node, n->name) != 0) return AEMP_ENOENT;
        aemp__port *p = aemp__port_by_name(n, addr->name);
        if (!p) return AEMP_ENOENT;
        out->id = p->id;
        return 0;
    }
    if (!aemp__pid_is_local(n, addr, &id) || !aemp__port_find(n, id)) return AEMP_ENOENT;
    out->id = id;
    return 0;
}

int aemp_register(aemp_node *n, const char *name, aemp_port port)
{
    if (!n || !name || !*name || strlen(name) > AEMP_MAXATOMLEN) return AEMP_EINVAL;
    if (strcmp(name, "net_kernel") == 0 || aemp__map_get(&n->names, name, strlen(name)))
        return AEMP_EEXIST;
    aemp__port *p = aemp__port_find(n, port.id);
    if (!p) return AEMP_ENOENT;
    if (p->regname) return AEMP_EEXIST; /* one name per port, as in Erlang */
    p->regname = strdup(name);
    if (!p->regname) return AEMP_ENOMEM;
    if (aemp__map_put(&n->names, name, strlen(name), p)) {
        free(p->regname);
        p->regname = NULL;
        return AEMP_ENOMEM;
    }
    return 0;
}

int aemp_unregister(aemp_node *n, const char *name)
{
    if (!n || !name) return AEMP_EINVAL;
    aemp__port *p = aemp__map_del(&n->names, name, strlen(name));
    if (!p) return AEMP_ENOENT;
    free(p->regname);
    p->regname = NULL;
    return 0;
}

/* ------------------------------------------------------------------ */
/* delivery                                                           */
/* ------------------------------------------------------------------ */

static void call_port(aemp_node *n, aemp__port *p, const aemp_term *msg, const aemp_addr *from)
{
    aemp_port self = {p->id};
    p->in_cb++;
    n->depth++;
    p->cb(n, self, msg, from, p->arg);
    n->depth--;
    p->in_cb--;
    if (p->dead && p->in_cb == 0) port_free(n, p);
}

/* Deferred record: u32 length, u32 to, u32 from (0: none), message. */
static int defer(aemp_node *n, uint32_t id, const aemp_term *msg, uint32_t from)
{
    int rc = aemp__buf_reserve(&n->deferred, 12 + msg->len);
    if (rc) return rc;
    aemp__buf_put_u32(&n->deferred, (uint32_t)(12 + msg->len));
    aemp__buf_put_u32(&n->deferred, id);
    aemp__buf_put_u32(&n->deferred, from);
    aemp__buf_append(&n->deferred, msg->data, msg->len);
    uv_idle_start(&n->deferred_idle, aemp__deliver_deferred);
    return 0;
}

void aemp__deliver_deferred(uv_idle_t *h)
{
    aemp_node *n = h->data;
    aemp_addr *from = malloc(sizeof *from);
    /* Only what was queued before this turn: new deferrals wait a turn. */
    size_t end = n->deferred.len;
    while (from && n->deferred_pos < end) {
        const char *r = n->deferred.data + n->deferred_pos;
        uint32_t len = aemp__get_u32(r), to = aemp__get_u32(r + 4), fid = aemp__get_u32(r + 8);
        n->deferred_pos += len;
        aemp__port *p = aemp__port_find(n, to);
        if (!p) continue;
        /* The record may move if the callback defers more: copy the view. */
        aemp_buf copy = AEMP_BUF_INIT;
        if (aemp__buf_append(&copy, r + 12, len - 12)) continue;
        aemp_term msg = aemp_buf_term(&copy);
        bool has_from = fid && aemp_port_addr(n, (aemp_port){fid}, from) == 0;
        call_port(n, p, &msg, has_from ? from : NULL);
        aemp_buf_free(&copy);
    }
    free(from);
    if (n->deferred_pos >= n->deferred.len) {
        n->deferred.len = 0;
        n->deferred_pos = 0;
        uv_idle_stop(&n->deferred_idle);
    }
}

void aemp__deliver(aemp_node *n, uint32_t id, const aemp_term *msg, const aemp_addr *from)
{
    aemp__port *p = aemp__port_find(n, id);
    if (!p) return;
    call_port(n, p, msg, from);
}

static int send_local(aemp_node *n, uint32_t from, uint32_t to, const aemp_term *msg)
{
    aemp__port *p = aemp__port_find(n, to);
    if (!p) return 0; /* sending to a port that is gone drops the message */
    /* Keep order: once anything is deferred, later sends queue behind it. */
    if (n->depth >= MAX_DEPTH || n->deferred.len > n->deferred_pos) return defer(n, to, msg, from);
    aemp_addr *fa = NULL;
    if (from) {
        fa = malloc(sizeof *fa);
        if (!fa) return AEMP_ENOMEM;
        if (aemp_port_addr(n, (aemp_port){from}, fa)) {
            free(fa);
            fa = NULL;
        }
    }
    call_port(n, p, msg, fa);
    free(fa);
    return 0;
}

int aemp_send(aemp_node *n, aemp_port from, const aemp_addr *to, const aemp_term *msg)
{
    if (!n || !to || !msg || !msg->data || !msg->len) return AEMP_EINVAL;
    if (n->closing) return AEMP_ECLOSED;
    if (to->kind != AEMP_ADDR_PID && to->kind != AEMP_ADDR_NAME) return AEMP_EINVAL;
    if (strcmp(to->node, n->name) == 0) {
        uint32_t id;
        if (to->kind == AEMP_ADDR_NAME) {
            aemp__port *p = aemp__port_by_name(n, to->name);
            return p ? send_local(n, from.id, p->id, msg) : 0;
        }
        if (!aemp__pid_is_local(n, to, &id)) return 0; /* a pid of an earlier incarnation: gone */
        return send_local(n, from.id, id, msg);
    }
    if (!aemp__node_name_valid(to->node)) return AEMP_EINVAL;
    aemp__conn *c = aemp__conn_get_or_start(n, to->node);
    if (!c) {
        AEMP_LOGW("cannot send to %s: no connection can be made (limit %u connections)", to->node,
                  n->max_connections);
        return n->nconns >= n->max_connections ? AEMP_EBUSY : AEMP_ENOMEM;
    }
    size_t queued = aemp__conn_queued(c);
    if (queued > 0 && queued + msg->len > n->max_pending) {
        AEMP_LOGD("send to %s refused: %zu bytes queued (limit %zu)", to->node, queued,
                  n->max_pending);
        return AEMP_EBUSY;
    }
    if (c->state == AEMP__C_UP) return aemp__ctl_send(c, from.id, to, msg);
    return aemp__pend_add(c, from.id, to, msg);
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
