/*
 * cli.h - what the files of the aemp command-line tool share: options,
 * the temporary client node of ping, snd and mon, terms on the command
 * line, and the aemp_demo module of `aemp run`.
 */
#ifndef AEMP_CLI_H
#define AEMP_CLI_H

#include "aemp.h"
#include "profile.h"

#include <stdbool.h>
#include <stdio.h>

/* The usage of the aemp tool (aemp.c). */
void aemp__cli_usage(FILE *f);

/* The options of run and of the commands that start a client node, and
 * their positional arguments. */
struct aemp__cli_opts {
    const char *cookie;
    unsigned port;
    const char *tls_cert, *tls_key, *tls_ca;
    unsigned ticktime;
    int read_batch_ms; /* as aemp_node_config: 0 default, -1 off */
    const char *profile;
    unsigned timeout_ms; /* rpc, cal: 0 no limit */
    const char *seeds;   /* run: --seeds, node names separated by commas or blanks */
    const char *args[4];
    int nargs;
};

/* Options and up to maxargs positional arguments of cmd (each option only
 * for the commands that take it). Returns 0, or 2 after a usage error has
 * been reported. */
int aemp__cli_parse_opts(const char *cmd, int maxargs, int argc, char **argv,
                         struct aemp__cli_opts *o);

/* Set what the options give (cookie, TLS files) in cfg. */
void aemp__cli_config(const struct aemp__cli_opts *o, aemp_node_config *cfg);

/* A node name as the commands take it: `alive@host`, or `alive` for
 * alive@<short host name>, into out. Returns 0, or -1 if it does not fit. */
int aemp__cli_node_name(const char *in, char *out, size_t size);

/*
 * A port as the commands take it: NODE#NAME (a registered name),
 * NODE#<ID.SERIAL.CREATION> (a pid, as aemp_addr_format writes it), NODE
 * as aemp__cli_node_name takes it; or an Erlang term: {Name, Node} or a pid
 * (#Pid<...>). Returns 0, or 2 after a usage error has been reported.
 */
int aemp__cli_port(const char *cmd, const char *what, const char *in, aemp_addr *out);

/* Read an Erlang term given on the command line into b. Returns 0, or 2
 * after a usage error naming `what` and where the text goes wrong. */
int aemp__cli_term(const char *cmd, const char *what, const char *in, aemp_buf *b);

/* Print t in Erlang syntax, whole, and a newline. */
void aemp__cli_print_term(FILE *f, const aemp_term *t);

/*
 * A temporary client-only node that connects to one peer (ping, snd, mon).
 * aemp__cli_client_run() creates it (named aemp_CMD_OSPID on the peer's
 * host), connects, calls on_up once the peer is up and returns the exit
 * status once aemp__cli_client_finish() was called. A connection that
 * fails or is not up within 15 s ends with status 1 and "PREFIX PEER:
 * reason" on stderr (prefix "pang:" for ping, "aemp CMD: cannot reach"
 * for the others); on_down (may be NULL, then the same) is told when the
 * connection is lost once up.
 */
struct aemp__cli_client {
    const char *cmd;
    const char *fail_prefix;
    char peer[AEMP_MAXNODELEN + 1];
    void (*on_up)(struct aemp__cli_client *c);
    void (*on_down)(struct aemp__cli_client *c, const char *reason);
    void *arg;
    /* (db) the peer is also a seed: the client meshes with the nodes it is
     * connected to (unless the profile names seeds) */
    bool mesh;
    /* set by aemp__cli_client_run */
    aemp_node *node;
    uv_timer_t timer;
    int status; /* -1 while running */
    bool up;
};

int aemp__cli_client_run(struct aemp__cli_client *c, const struct aemp__cli_opts *o);
/* End the command with status (once; later calls do nothing): the node
 * closes after flushing what was sent. */
void aemp__cli_client_finish(struct aemp__cli_client *c, int status);

/* `aemp ping NODE`, `aemp snd PORT TERM`, `aemp mon PORT`, `aemp rpc
 * NODE MOD FUN [ARGS]`, `aemp cal PORT TERM` (client.c). */
int aemp__cli_ping(int argc, char **argv);
int aemp__cli_snd(int argc, char **argv);
int aemp__cli_mon(int argc, char **argv);
int aemp__cli_rpc(int argc, char **argv);
int aemp__cli_cal(int argc, char **argv);

/* `aemp db FAMILY [NODE]` (db.c; c-db). */
int aemp__cli_db(int argc, char **argv);

/* Export the aemp_demo module of `aemp run` on node (demo.c). */
int aemp__cli_demo_export(aemp_node *node);
/* Join port to family aemp_demo (pg group aemp_demo in the node's scopes;
 * nothing when it has none) and say so (demo.c). */
int aemp__cli_demo_join(aemp_node *node, aemp_port port);
/* The echo of the echo ports: msg {Pid, Msg} sends Msg to Pid from self;
 * anything else is logged and ignored. Returns aemp_send's error. */
int aemp__cli_echo(aemp_node *node, aemp_port self, const aemp_term *msg);

#endif /* AEMP_CLI_H */
