/*
 * proc.c - the process layer's life (set-up, close, free), its turn of the
 * loop, and the public calls that end a port. The files below, bottom up:
 * port.c (the table), alias.c, rcv.c (delivery, AEMP dispatch), watch.c
 * (links, monitors, exits), mon.c (AEMP's mon, kil, timers; watch.c calls
 * it back through the hooks it installs), spawn.c.
 */
#include "watch.h"

#include <stdlib.h>

static struct aemp__proc *P(aemp_node *n)
{
    return n->proc;
}

int aemp_port_close(aemp_node *n, aemp_port port)
{
    if (!n) return AEMP_EINVAL;
    aemp__port *p = aemp__proc_port(n, port.id);
    if (p && p->system) return AEMP_EINVAL; /* a service of the node's own */
    if (p) aemp__proc_kill_atom(n, port.id, "normal");
    return 0;
}

int aemp_port_kill(aemp_node *n, aemp_port port, const aemp_term *reason)
{
    if (!n || !aemp__term_whole(reason)) return AEMP_EINVAL;
    aemp__port *p = aemp__proc_port(n, port.id);
    if (p && p->system) return AEMP_EINVAL;
    if (p) aemp__proc_kill(n, port.id, reason);
    return 0;
}

/* ------------------------------------------------------------------ */
/* set-up                                                             */
/* ------------------------------------------------------------------ */

static void on_idle_closed(uv_handle_t *h)
{
    aemp__node_part_closed(h->data);
}

static void free_spawn(const char *key, void *val, void *arg)
{
    free(val);
}

/* The process layer's turn of the loop: deferred deliveries, the mons of
 * absent ports, deferred kills, the callbacks of spawns on this node. */
static void on_idle(uv_idle_t *h)
{
    aemp_node *n = h->data;
    struct aemp__proc *p = P(n);
    bool more = aemp__proc_run_deferred(n);
    aemp__mon_run_pending(n);
    aemp__proc_run_kills(n);
    more = aemp__spawn_run_local(n) || more;
    if (!more && !p->deferred.len && !p->kills.len && !p->pending) uv_idle_stop(&p->deferred_idle);
}

int aemp__proc_init(aemp_node *n, const aemp_node_config *cfg)
{
    struct aemp__proc *p = calloc(1, sizeof *p);
    if (!p) return AEMP_ENOMEM;
    p->node = n;
    aemp__idmap_init(&p->ports);
    aemp__map_init(&p->names);
    aemp__map_init(&p->spawns);
    aemp__map_init(&p->acts);
    aemp__map_init(&p->timers);
    uv_idle_init(n->loop, &p->deferred_idle);
    p->deferred_idle.data = n;
    p->idle_fn = on_idle;
    n->proc = p;
    aemp__mon_init(n);
    aemp__alias_init(n);
    int rc = aemp__watch_init(n, cfg);
    if (!rc) rc = aemp__spawn_init(n);
    if (rc) {
        aemp__alias_free(n);
        aemp__spawn_free(n);
        n->proc = NULL;
        uv_close((uv_handle_t *)&p->deferred_idle, NULL);
        free(p);
    }
    return rc;
}

static void collect(uint64_t id, void *val, void *arg)
{
    aemp__buf_append(arg, &id, sizeof id);
}

void aemp__proc_close(aemp_node *n)
{
    struct aemp__proc *p = P(n);
    /* Ports die first, so that their exit signals are queued on the
     * connections, which then flush before they shut down. */
    aemp_buf ids = AEMP_BUF_INIT;
    aemp__idmap_each(&p->ports, collect, &ids);
    for (size_t i = 0; i + 8 <= ids.len; i += 8) {
        uint64_t id;
        memcpy(&id, ids.data + i, 8);
        aemp__proc_kill_atom(n, id, "shutdown");
    }
    aemp_buf_free(&ids);
    aemp__mon_close(n);
    aemp__spawn_close(n);
    aemp__node_hold(n);
    uv_close((uv_handle_t *)&p->deferred_idle, on_idle_closed);
}

void aemp__proc_free(aemp_node *n)
{
    struct aemp__proc *p = P(n);
    if (!p) return;
    aemp__watch_free(n);
    aemp__alias_free(n);
    aemp__mon_free(n);
    aemp_buf_free(&p->kills);
    aemp_buf_free(&p->die_text);
    aemp__spawn_free(n);
    aemp__idmap_free(&p->ports);
    aemp__map_free(&p->names);
    aemp__map_each(&p->spawns, free_spawn, NULL);
    aemp__map_free(&p->spawns);
    aemp_buf_free(&p->deferred);
    aemp_buf_free(&p->exits);
    aemp_buf_free(&p->exit_reason);
    free(p);
    n->proc = NULL;
}
