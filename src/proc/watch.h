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
/* The same, from the loop (never inside the caller's call). */
int aemp__proc_deliver_later(aemp_node *n, aemp__port *port, const aemp_term *msg,
                             const aemp_addr *from);

/* watch.c */
int aemp__watch_init(aemp_node *n);
void aemp__watch_free(aemp_node *n);
void aemp__proc_kill_atom(aemp_node *n, uint64_t id, const char *atom);
/* A link between a remote pid and a local port; 0 or AEMP_ENOMEM. */
int aemp__watch_link(aemp_node *n, const aemp_addr *a, const aemp_addr *b);
/* A monitor: watcher watches target (as given) under ref. */
int aemp__watch_monitor(aemp_node *n, const aemp_addr *watcher, const aemp_addr *target,
                        const aemp_addr *ref);

/* spawn.c */
void aemp__spawn_request(void *arg, aemp__conn *c, const aemp__ctl_in *m, aemp__ctl_memo *memo);

#endif
