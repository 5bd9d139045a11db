/*
 * watch.h - what the files of the process layer share among themselves.
 */
#ifndef AEMP_PROC_WATCH_H
#define AEMP_PROC_WATCH_H

#include "proc.h"

/* port.c */
aemp__port *aemp__proc_resolve(aemp_node *n, const aemp_addr *a);
void aemp__port_free(aemp_node *n, aemp__port *port);
void aemp__port_unlist(aemp_node *n, aemp__port *port);
/* Deliver msg to a local port (synchronously unless recursion is deep). */
int aemp__proc_deliver(aemp_node *n, aemp__port *port, const aemp_term *msg, const aemp_addr *from);
/* From the loop: deferred deliveries; true if more wait (rcv.c). */
bool aemp__proc_run_deferred(aemp_node *n);
/* The same, from the loop (never inside the caller's call). */
int aemp__proc_deliver_later(aemp_node *n, aemp__port *port, const aemp_term *msg,
                             const aemp_addr *from);

/* watch.c */
/* Is t the atom `atom`? */
bool aemp__is_atom(const aemp_term *t, const char *atom);
int aemp__watch_init(aemp_node *n, const aemp_node_config *cfg);
void aemp__watch_free(aemp_node *n);
void aemp__proc_kill_atom(aemp_node *n, uint64_t id, const char *atom);
/* A link between a remote pid and a local port; 0, AEMP_ENOMEM, or
 * AEMP_ETOOBIG when the remote end's node holds max_watches_per_peer
 * records here (nothing recorded). */
int aemp__watch_link(aemp_node *n, const aemp_addr *a, const aemp_addr *b);
/* A monitor: watcher watches target (as given) under ref; errors as
 * aemp__watch_link. */
int aemp__watch_monitor(aemp_node *n, const aemp_addr *watcher, const aemp_addr *target,
                        const aemp_addr *ref);
/* Can `more` new records with an end on node peer_h be held
 * (max_watches_per_peer)? Always for this node. */
bool aemp__watch_room(aemp_node *n, uint32_t peer_h, unsigned more);
/* The peer of c asked for a link or monitor beyond the limit: counted,
 * logged at most once per AEMP__REFUSAL_LOG_MS per peer. */
void aemp__watch_refused(aemp_node *n, const aemp__conn *c);
/* Is from (the sender of a LINK, MONITOR_P or SPAWN_REQUEST from c) a
 * process of c's node? Logged if not: the message is then ignored, as a
 * peer may not make records in another node's name. */
bool aemp__watch_from_peer(aemp_node *n, const aemp__conn *c, const aemp_addr *from,
                           const char *what);
/* The exit signal of a link from `from` to the remote pid `to`, as if
 * there had been a link between them. */
void aemp__watch_send_exit(aemp_node *n, const aemp_addr *from, const aemp_addr *to,
                           const aemp_term *reason);

/* rcv.c */
/* Dispatch msg to port's AEMP callbacks (tags, default, raw, unhandled). */
void aemp__rcv_dispatch(aemp_node *n, aemp__port *port, const aemp_term *msg,
                        const aemp_addr *from);
/* The port dies with reason: kept for its gone callback. */
void aemp__rcv_exit(aemp__port *port, const aemp_term *reason);
/* Free the port's AEMP part, telling its gone callback first. */
void aemp__rcv_free(aemp_node *n, aemp__port *port);

/* mon.c */
void aemp__mon_init(aemp_node *n);
void aemp__mon_close(aemp_node *n);
void aemp__mon_free(aemp_node *n);
/* From the loop: mons of absent ports fire with noproc. */
void aemp__mon_run_pending(aemp_node *n);
/* Run the kills deferred by aemp__proc_kill_later (from the loop). */
void aemp__proc_run_kills(aemp_node *n);

/* alias.c */
void aemp__alias_init(aemp_node *n);
void aemp__alias_free(aemp_node *n);

/* spawn.c */
void aemp__spawn_request(void *arg, aemp__conn *c, const aemp__ctl_in *m, aemp__ctl_memo *memo);
/* Set up spawning (its reply handler, its event subscription); close: every
 * spawn of ours still waiting for its reply fails with AEMP_ECLOSED; free. */
int aemp__spawn_init(aemp_node *n);
void aemp__spawn_close(aemp_node *n);
/* From the loop: the callbacks of spawns on this node; true if more wait. */
bool aemp__spawn_run_local(aemp_node *n);
void aemp__spawn_free(aemp_node *n);

#endif
