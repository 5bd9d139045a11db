/*
 * node_int.h - the node layer's private structures: the node, its
 * connections and its local ports, and the distribution control messages.
 */
#ifndef AEMP_NODE_INT_H
#define AEMP_NODE_INT_H

#include "../aemp_impl.h"
#include "../dist/tls.h"
#include "../util/map.h"

#include <ei.h>

/* Distribution control message tags (erts/doc erl_dist_protocol). */
enum aemp__ctl {
    AEMP__CTL_LINK = 1,                    /* {1, FromPid, ToPid} */
    AEMP__CTL_SEND = 2,                    /* {2, Unused, ToPid} + Msg */
    AEMP__CTL_EXIT = 3,                    /* {3, FromPid, ToPid, Reason} */
    AEMP__CTL_UNLINK = 4,                  /* {4, FromPid, ToPid} (pre UNLINK_ID) */
    AEMP__CTL_NODE_LINK = 5,               /* {5} */
    AEMP__CTL_REG_SEND = 6,                /* {6, FromPid, Unused, ToName} + Msg */
    AEMP__CTL_GROUP_LEADER = 7,            /* {7, FromPid, ToPid} */
    AEMP__CTL_EXIT2 = 8,                   /* {8, FromPid, ToPid, Reason} */
    AEMP__CTL_SEND_TT = 12,                /* {12, Unused, ToPid, TraceToken} + Msg */
    AEMP__CTL_EXIT_TT = 13,                /* {13, FromPid, ToPid, TraceToken, Reason} */
    AEMP__CTL_REG_SEND_TT = 16,            /* {16, FromPid, Unused, ToName, TraceToken} + Msg */
    AEMP__CTL_EXIT2_TT = 18,               /* {18, FromPid, ToPid, TraceToken, Reason} */
    AEMP__CTL_MONITOR_P = 19,              /* {19, FromPid, ToProc, Ref} */
    AEMP__CTL_DEMONITOR_P = 20,            /* {20, FromPid, ToProc, Ref} */
    AEMP__CTL_MONITOR_P_EXIT = 21,         /* {21, FromProc, ToPid, Ref, Reason} */
    AEMP__CTL_SEND_SENDER = 22,            /* {22, FromPid, ToPid} + Msg */
    AEMP__CTL_SEND_SENDER_TT = 23,         /* {23, FromPid, ToPid, TraceToken} + Msg */
    AEMP__CTL_PAYLOAD_EXIT = 24,           /* {24, FromPid, ToPid} + Reason */
    AEMP__CTL_PAYLOAD_EXIT_TT = 25,        /* {25, FromPid, ToPid, TraceToken} + Reason */
    AEMP__CTL_PAYLOAD_EXIT2 = 26,          /* {26, FromPid, ToPid} + Reason */
    AEMP__CTL_PAYLOAD_EXIT2_TT = 27,       /* {27, FromPid, ToPid, TraceToken} + Reason */
    AEMP__CTL_PAYLOAD_MONITOR_P_EXIT = 28, /* {28, FromProc, ToPid, Ref} + Reason */
    AEMP__CTL_SPAWN_REQUEST = 29,    /* {29, ReqId, From, GroupLeader, {M,F,Arity}, Opts} + Args */
    AEMP__CTL_SPAWN_REQUEST_TT = 30, /* ... TraceToken} + Args */
    AEMP__CTL_SPAWN_REPLY = 31,      /* {31, ReqId, To, Flags, Result} */
    AEMP__CTL_SPAWN_REPLY_TT = 32,   /* {32, ReqId, To, Flags, Result, TraceToken} */
    AEMP__CTL_ALIAS_SEND = 33,       /* {33, FromPid, Alias} + Msg */
    AEMP__CTL_ALIAS_SEND_TT = 34,    /* {34, FromPid, Alias, TraceToken} + Msg */
    AEMP__CTL_UNLINK_ID = 35,        /* {35, Id, FromPid, ToPid} */
    AEMP__CTL_UNLINK_ID_ACK = 36,    /* {36, Id, FromPid, ToPid} */
};

/* First byte of a distribution packet without a distribution header. */
#define AEMP__PASS_THROUGH 112
/* A distribution header: 131, then this tag (erl_ext_dist). */
#define AEMP__DIST_HEADER 68
/* Entries of a connection's atom cache: 8 segments of 256. */
#define AEMP__ATOM_CACHE_SIZE 2048

/* Port ids are unique per node incarnation: num is 15 bits and serial 13 bits
 * of a pid, as Erlang's own local pids; id 0 is the node port. */
#define AEMP__PORT_ID_MAX ((1u << 28) - 1)

enum aemp__conn_state {
    AEMP__C_RESOLVE = 1, /* resolving the peer's host */
    AEMP__C_LOOKUP,      /* asking the peer's EPMD for its port */
    AEMP__C_CONNECTING,  /* TCP connect in progress */
    AEMP__C_HANDSHAKE,   /* distribution handshake */
    AEMP__C_WAIT,        /* lost a simultaneous connect: waiting for the peer's */
    AEMP__C_UP,          /* connected */
    AEMP__C_CLOSING,     /* handles closing */
};

typedef struct aemp__conn aemp__conn;
struct aemp__conn {
    aemp_node *node;
    aemp__conn *prev, *next; /* node->conns list */
    aemp__conn *next_dirty;  /* node->dirty list, when `dirty` */
    int state;
    bool initiator;
    bool dirty;
    bool writing;
    bool tcp_init; /* tcp handle initialised (needs uv_close) */
    bool gai_busy; /* getaddrinfo request outstanding */
    bool in_map;   /* node->conn_by_name holds this conn */
    bool shutdown; /* closing after flushing (node close) */
    int refs;      /* outstanding handles and requests */
    char peer[AEMP_MAXNODELEN + 1];
    char host[AEMP_MAXNODELEN + 1];
    char alive[AEMP_MAXNODELEN + 1];
    uv_tcp_t tcp;
    uv_getaddrinfo_t gai;
    uv_connect_t creq;
    uv_write_t wreq;
    uv_shutdown_t sreq;
    aemp__epmd_query *query;
    char ip[64];
    aemp__hs hs;
    bool hs_started;
    /* read batching (conn.c): */
    bool batching;        /* small receive buffer: batching possible */
    bool paused;          /* reading stopped until node->batch_timer fires */
    bool big_packet;      /* a packet over BATCH_MAX_PACKET arrived */
    uint16_t small_reads; /* small reads in a row with nothing written back */
    uint16_t big_reads;   /* reads of BATCH_BIG_READ or more in a row */
    aemp__tls *tls;       /* NULL on plain TCP */
    aemp_buf cbuf;        /* TLS: ciphertext received */
    aemp_buf tbuf;        /* TLS: ciphertext to send */
    uint64_t flags;       /* negotiated, once up */
    aemp_buf rbuf;
    aemp_buf wbuf;    /* queued, written at the end of this loop turn */
    aemp_buf wflight; /* being written */
    aemp_buf pend;    /* messages queued before the connection is up */
    /* Atom cache of the peer's distribution headers (DIST_HDR_ATOM_CACHE):
     * AEMP__ATOM_CACHE_SIZE entries, each a u16 length and the UTF-8 text;
     * allocated on the first header. */
    char **atoms;
    aemp_buf refpos;      /* offsets of cache references in a term */
    aemp_buf ctl_scratch; /* control message with the references replaced */
    aemp_buf msg_scratch; /* message with the references replaced */
    size_t npend;
    uint64_t started_ms, last_recv_ms, last_send_ms;
};

/* A remote process watching a local port: a monitor or a link. The terms are
 * kept as received, so replies echo them exactly. */
typedef struct aemp__watch aemp__watch;
struct aemp__watch {
    aemp__watch *next;
    bool is_link;
    char peer[AEMP_MAXNODELEN + 1];
    aemp_buf target;  /* monitor: the monitored process as given (pid or name) */
    aemp_buf watcher; /* the remote pid */
    aemp_buf ref;     /* monitor reference */
};

typedef struct aemp__port {
    uint32_t id;
    aemp_recv_cb cb;
    void *arg;
    char *regname;
    aemp__watch *watches;
    int in_cb;
    bool dead;
} aemp__port;

struct aemp_node {
    uv_loop_t *loop;
    char name[AEMP_MAXNODELEN + 1];
    char alive[AEMP_MAXNODELEN + 1];
    char host[AEMP_MAXNODELEN + 1];
    char cookie[256];
    uint32_t creation;
    uint16_t listen_port;
    uint16_t epmd_port;
    bool client_only;
    unsigned net_ticktime;
    unsigned hs_timeout_ms;
    size_t max_packet;
    unsigned max_connections;
    unsigned nconns;
    size_t max_pending;
    unsigned read_batch_ms; /* 0: off */
    void (*ready_cb)(aemp_node *, int, void *);
    void *ready_arg;
    bool ready_reported;
    aemp_nodes_cb nodes_cb;
    void *nodes_arg;
    aemp_fail_cb fail_cb;
    void *fail_arg;

    aemp__tls_ctx *tls_ctx; /* NULL: plain TCP */
    uv_tcp_t listener;
    bool listener_init;
    uv_timer_t timer;       /* ticks and handshake timeouts */
    uv_timer_t ready_timer; /* reports readiness of client-only nodes */
    uv_timer_t batch_timer; /* resumes connections paused by read batching */
    uv_prepare_t flusher;
    uv_idle_t deferred_idle;
    aemp__epmd_reg *epmd;

    aemp__conn *conns; /* every connection */
    aemp__conn *dirty; /* connections with bytes to write */
    aemp__map conn_by_name;

    aemp__map ports;   /* id (4 bytes) -> aemp__port */
    aemp__map names;   /* registered name -> aemp__port */
    aemp__map exports; /* "module:function" -> exported C function */
    /* Decoded pids of the packet being handled (control.c): packets are
     * handled one at a time, never nested, so one pair serves them all. */
    aemp_addr pkt_addr[2];
    uint32_t next_port; /* last id handed out */

    /* local deliveries deferred to bound recursion */
    aemp_buf deferred;
    size_t deferred_pos;
    int depth;

    bool closing;
    int pending_closes;
    void (*closed_cb)(void *);
    void *closed_arg;
};

/* node.c */
void aemp__node_conn_up(aemp__conn *c);
void aemp__node_maybe_finish_close(aemp_node *n);
uint64_t aemp__now_ms(const aemp_node *n);

/* conn.c */
/* `alive@host` with both parts non-empty, one '@', at most AEMP_MAXNODELEN. */
bool aemp__node_name_valid(const char *name);
aemp__conn *aemp__conn_get_or_start(aemp_node *n, const char *peer);
/* Listen on port (0: any); sets n->listen_port. Returns a uv error. */
int aemp__conn_listen(aemp_node *n, uint16_t port);
void aemp__conn_close(aemp__conn *c, int err, const char *reason);
void aemp__conn_shutdown(aemp__conn *c);
/* Start a packet in c->wbuf: returns the offset of its length field. */
size_t aemp__conn_packet_begin(aemp__conn *c, int *rc);
void aemp__conn_packet_end(aemp__conn *c, size_t start);
void aemp__conn_flush_all(aemp_node *n);
void aemp__conn_housekeeping(aemp_node *n);
/* Bytes waiting to be written to c's socket, queued records included. */
size_t aemp__conn_queued(const aemp__conn *c);

/* control.c */
void aemp__ctl_packet(aemp__conn *c, const char *p, size_t len);
int aemp__enc_tuple(aemp_buf *b, int arity);
int aemp__enc_long(aemp_buf *b, long long v);
int aemp__enc_atom(aemp_buf *b, const char *a);
int aemp__enc_local_pid(aemp_buf *b, const aemp_node *n, uint32_t id);
int aemp__enc_pid(aemp_buf *b, const aemp_addr *a);
/* Queue a message to a remote process on c (encodes the control message). */
int aemp__ctl_send(aemp__conn *c, uint32_t from, const aemp_addr *to, const aemp_term *msg);
/* Encode one pending record (see aemp__pend_add) into c's write buffer. */
void aemp__ctl_flush_pending(aemp__conn *c);
int aemp__pend_add(aemp__conn *c, uint32_t from, const aemp_addr *to, const aemp_term *msg);
/* Send a raw control message (term built in ctl) with optional payload. */
int aemp__ctl_raw(aemp__conn *c, const aemp_buf *ctl, const aemp_term *payload);

/* Tell a dying port's watcher (link or monitor) on its node. */
void aemp__ctl_port_died(aemp_node *n, uint32_t id, aemp__watch *w, const aemp_term *reason);

/* rpc.c */
void aemp__rpc_spawn_request(aemp__conn *c, const aemp_term *req, const aemp_term *from,
                             const aemp_term *mfa, const aemp_term *opts, const aemp_term *payload);
void aemp__rpc_free(aemp_node *n);

/* port.c */
aemp__port *aemp__port_find(aemp_node *n, uint32_t id);
aemp__port *aemp__port_by_name(aemp_node *n, const char *name);
/* Deliver msg to local port id (synchronously unless recursion is deep). */
void aemp__deliver(aemp_node *n, uint32_t id, const aemp_term *msg, const aemp_addr *from);
void aemp__deliver_deferred(uv_idle_t *h);
/* Kill a local port with reason (an encoded term); watchers are told. */
void aemp__port_kill(aemp_node *n, aemp__port *p, const aemp_term *reason);
/* Remove watches held by peer (node down); linked ports die with
 * noconnection. */
void aemp__ports_node_down(aemp_node *n, const char *peer);
void aemp__ports_close_all(aemp_node *n);
/* Is this pid one of ours (this node, this incarnation)? Sets *id. */
bool aemp__pid_is_local(const aemp_node *n, const aemp_addr *a, uint32_t *id);

#endif
