/*
 * dist.h - the distribution layer: one endpoint (listener, connections,
 * ticks, write coalescing, read batching, TLS pumping) and its connections
 * (set-up, handshake, framing, distribution headers and atom cache, control
 * messages in and out).
 *
 * The layer never calls the node or anything above it by name: what it has
 * to tell goes through the aemp__dist_ops table it is given (a connection
 * came up or went down, an attempt failed, a control message arrived). See
 * docs/design.md.
 */
#ifndef AEMP_DIST_H
#define AEMP_DIST_H

#include "../aemp_impl.h"
#include "../util/map.h"
#include "tls.h"

typedef struct aemp__dist aemp__dist;
typedef struct aemp__conn aemp__conn;

/* A received control message: the tuple's elements as views (el[0] is the
 * tag), valid during the handler call only. */
typedef struct aemp__ctl_in {
    int64_t tag;
    uint32_t arity;
    aemp_term el[8];
    aemp_term payload;
    bool has_payload;
    /* The control message is byte for byte the one before it on this
     * connection (a stream of sends between the same two processes): what
     * the handler derived from it last time and kept in the memo holds. */
    bool repeat;
} aemp__ctl_in;

/* Kept per connection for the control-message handler (the hot path): what
 * it derived from the last control message, valid while `repeat` says the
 * message is the same and the handler's own stamp (epoch) agrees. */
typedef struct aemp__ctl_memo {
    bool valid;
    bool has_from;
    uint64_t epoch;
    void *target;
    aemp_addr from;
} aemp__ctl_memo;

typedef struct aemp__dist_ops {
    /* Acceptor: the peer named itself; answer an aemp__hs_decision. */
    int (*decide)(void *arg, aemp__conn *c, const char *peer);
    /* The handshake completed: 0 takes the connection (the messages queued
     * for the peer are written next), an error closes it with that reason. */
    int (*up)(void *arg, aemp__conn *c, const char **why);
    /* The connection is up and what was queued for it is written. */
    void (*established)(void *arg, aemp__conn *c);
    /* A connection that was up is gone (err, reason say why). */
    void (*down)(void *arg, aemp__conn *c, int err, const char *reason);
    /* A connection that never came up is gone (for outgoing ones: the
     * attempt failed); `dropped` queued messages were discarded. */
    void (*fail)(void *arg, aemp__conn *c, int err, const char *reason, size_t dropped);
    /* A control message arrived on an up connection. */
    void (*ctl)(void *arg, aemp__conn *c, const aemp__ctl_in *m, aemp__ctl_memo *memo);
} aemp__dist_ops;

typedef struct aemp__dist_config {
    const char *name; /* alive@host */
    const char *cookie;
    uint32_t creation;
    uint16_t epmd_port;
    unsigned net_ticktime;
    unsigned hs_timeout_ms;
    size_t max_packet;
    unsigned max_connections; /* authenticated peers */
    unsigned max_handshakes;  /* incoming, not yet authenticated */
    unsigned max_handshakes_per_address;
    unsigned max_connecting; /* outgoing, not yet up */
    size_t max_pending;      /* bytes queued for one peer */
    unsigned read_batch_ms;  /* 0: off */
    unsigned max_term_depth;
    aemp__tls_ctx *tls_ctx; /* NULL: plain TCP; owned by the caller */
    const aemp__dist_ops *ops;
    void *ops_arg;
} aemp__dist_config;

enum aemp__conn_state {
    AEMP__C_RESOLVE = 1, /* resolving the peer's host */
    AEMP__C_LOOKUP,      /* asking the peer's EPMD for its port */
    AEMP__C_CONNECTING,  /* TCP connect in progress */
    AEMP__C_HANDSHAKE,   /* distribution handshake */
    AEMP__C_WAIT,        /* lost a simultaneous connect: waiting for the peer's */
    AEMP__C_UP,          /* connected */
    AEMP__C_CLOSING,     /* handles closing */
};

/* The pools connections count in, each with its own limit, so that no kind
 * of connection can take the others' places: incoming connections not yet
 * authenticated (also per peer address), outgoing ones not yet up, and
 * authenticated peers. */
enum aemp__slot { AEMP__SLOT_NONE, AEMP__SLOT_HANDSHAKE, AEMP__SLOT_CONNECTING, AEMP__SLOT_UP };

/* What was refused or dropped since the last summary line (one per
 * AEMP__REFUSAL_LOG_MS at most, with the counts). */
struct aemp__refusals {
    uint64_t per_address; /* oldest of an address dropped: max_handshakes_per_address */
    uint64_t evicted;     /* oldest of all dropped: max_handshakes reached */
    uint64_t timeouts;    /* incoming set-up timed out */
    uint64_t failed;      /* incoming handshakes that failed (details logged up to a budget) */
    uint64_t peers;       /* authenticated, but max_connections peers are up */
    uint32_t last_addr;   /* the address last refused per address */
    unsigned logged;      /* detail lines in this interval */
    uint64_t since_ms;
};
#define AEMP__REFUSAL_LOG_MS 10000
#define AEMP__REFUSAL_DETAIL_LINES 10

/* Entries of a connection's atom cache: 8 segments of 256. */
#define AEMP__ATOM_CACHE_SIZE 2048

/* The atoms a distribution header refers to, in the order of its references. */
struct aemp__dist_header {
    unsigned n;
    const char *atom[256];
    uint16_t alen[256];
};

struct aemp__conn {
    aemp__dist *d;
    aemp__conn *prev, *next; /* d->conns list */
    aemp__conn *next_dirty;  /* d->dirty list, when `dirty` */
    int state;
    bool initiator;
    bool dirty;
    bool writing;
    bool tcp_init; /* tcp handle initialised (needs uv_close) */
    bool gai_busy; /* getaddrinfo request outstanding */
    bool shutdown; /* closing after flushing (node close) */
    bool silent;   /* superseded: its failure is no news (ops->fail knows) */
    bool quiet;    /* started by the seeds service, which logs its failure */
    uint8_t slot;  /* the pool it counts in: enum aemp__slot */
    uint32_t addr; /* incoming: the peer's IPv4 address (network order) */
    /* kept for the layer above (its connection table) */
    bool in_table;
    uint32_t peer_h; /* the peer's name, interned */
    int refs;        /* outstanding handles and requests */
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
    bool paused;          /* reading stopped until d->batch_timer fires */
    bool held;            /* reading stopped until what is queued drains */
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
    size_t npend;
    /* Atom cache of the peer's distribution headers (DIST_HDR_ATOM_CACHE):
     * AEMP__ATOM_CACHE_SIZE entries, each a u16 length and the UTF-8 text;
     * allocated on the first header. */
    char **atoms;
    aemp_buf refpos;      /* offsets of cache references in a term */
    aemp_buf ctl_scratch; /* control message with the references replaced */
    aemp_buf msg_scratch; /* message with the references replaced */
    /* Send cache: the control message of the last send (same sender, same
     * destination: the same bytes). */
    bool sc_valid;
    uint64_t sc_from;
    aemp_addr sc_to;
    aemp_buf sc_ctl;
    bool sc_refs; /* sc_ctl names this node by an atom cache reference */
    /* The sending side of the atom cache (headed connections): this node's
     * name is entry 0 of segment 0, defined by the first packet that
     * refers to it (self_sent), an old entry after. */
    bool self_sent;
    aemp_buf ac_pos;     /* offsets of this node's name in a term */
    aemp_buf ac_scratch; /* a term (or the send cache's control) with references */
    aemp_buf ac_ctl;     /* a control message with references */
    aemp_buf ac_msg;     /* a message with references */
    /* Receive cache: the bytes that started the last send packet (up to its
     * message) and the control message parsed from them (packet.c). */
    bool rc_valid;
    aemp_buf rc_key;
    aemp_buf rc_ctl;
    aemp__ctl_in rc_m;
    struct aemp__dist_header rc_h;
    bool rc_headed;
    aemp__ctl_memo memo;
    /* statistics (aemp_node_stats) */
    uint64_t reads, packets;
    uint64_t dropped_deep; /* messages nested deeper than max_term_depth */
    uint64_t holds;        /* times reading held for a full queue */
    uint64_t started_ms, last_recv_ms, last_send_ms;
};

struct aemp__dist {
    uv_loop_t *loop;
    char name[AEMP_MAXNODELEN + 1];
    uint32_t name_h;
    char cookie[256];
    uint32_t creation;
    uint16_t epmd_port;
    uint16_t listen_port;
    unsigned net_ticktime;
    unsigned hs_timeout_ms;
    size_t max_packet;
    unsigned max_connections;
    unsigned max_handshakes;
    unsigned max_handshakes_per_address;
    unsigned max_connecting;
    size_t max_pending; /* sends beyond it are refused (the node checks) */
    size_t reply_room;  /* replies may go this far beyond; then reading holds */
    unsigned nconns;    /* allocated, closing ones included */
    unsigned nslot[4];  /* per enum aemp__slot */
    aemp__map per_addr; /* IPv4 address (4 bytes) -> handshakes from it */
    struct aemp__refusals refused;
    unsigned read_batch_ms;
    unsigned max_term_depth;
    aemp__tls_ctx *tls_ctx;
    const aemp__dist_ops *ops;
    void *ops_arg;
    uv_tcp_t listener;
    bool listener_init;
    uv_timer_t timer;       /* ticks and set-up timeouts */
    uv_timer_t batch_timer; /* resumes connections paused by read batching */
    uv_prepare_t flusher;
    aemp__conn *conns; /* every connection */
    aemp__conn *dirty; /* connections with bytes to write */
    bool closing;
    int pending_closes;
    void (*closed_cb)(void *);
    void *closed_arg;
};

/* Set up an endpoint (timers; no listener yet). The config's strings are
 * copied. */
int aemp__dist_init(aemp__dist *d, uv_loop_t *loop, const aemp__dist_config *cfg);
/* Listen on port (0: any); sets d->listen_port. Returns a uv error. */
int aemp__dist_listen(aemp__dist *d, uint16_t port);
/* Close every connection (up ones after flushing what is queued) and every
 * handle; closed_cb runs once all are closed. No ops are called after. */
void aemp__dist_close(aemp__dist *d, void (*closed_cb)(void *), void *arg);
/* Write what is queued on every connection now (also done once per loop
 * turn). */
void aemp__dist_flush(aemp__dist *d);

/* `alive@host` with both parts non-empty, one '@', at most AEMP_MAXNODELEN. */
bool aemp__node_name_valid(const char *name);

/* Start an outgoing connection to peer (resolve, EPMD lookup, connect,
 * handshake). NULL with *err AEMP_EBUSY when max_connecting attempts or
 * max_connections peers are there, AEMP_ENOMEM when memory is short. */
aemp__conn *aemp__conn_connect(aemp__dist *d, const char *peer, int *err);
/* Close c; ops->down (it was up) or ops->fail (it never was) follows. */
void aemp__conn_close(aemp__conn *c, int err, const char *reason);
static inline bool aemp__conn_up(const aemp__conn *c)
{
    return c->state == AEMP__C_UP;
}
/* Bytes waiting to be written to c's socket, queued records included. */
size_t aemp__conn_queued(const aemp__conn *c);
/* Move the messages queued on `from` (a superseded attempt) to `to`. */
void aemp__conn_take_pending(aemp__conn *to, aemp__conn *from);

/* Queue a message from `from` (NULL: none) to `to` (a pid, name or alias on
 * c's peer); before the connection is up it waits in order. */
int aemp__conn_send(aemp__conn *c, const aemp_addr *from, const aemp_addr *to,
                    const aemp_term *msg);
/* Queue a control message (a term built in ctl, without version byte) and
 * an optional payload term. Before the connection is up it waits in order. */
int aemp__conn_ctl(aemp__conn *c, const aemp_buf *ctl, const aemp_term *payload);

/* packet.c: handle one received packet (not a tick). */
void aemp__dist_packet(aemp__conn *c, const char *p, size_t len);
/* packet.c: forget the receive cache (the atom cache changed). */
void aemp__dist_forget(aemp__conn *c);

#endif
