/*
 * aemp.h - a C node in an Erlang/Elixir cluster, with the AnyEvent::MP model.
 *
 * Every fallible call returns 0 on success or a negative AEMP_E* code;
 * aemp_strerror() names it. Constructors assign their out-parameter only on
 * success. All calls on one node must come from the thread running its
 * uv loop. Reference documentation: docs/reference.md.
 */
#ifndef AEMP_H
#define AEMP_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The library is built with -fvisibility=hidden: what this header declares
 * is all it exports. */
#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

#define AEMP_VERSION "0.1.0"

/* Longest node name `alive@host` in bytes (Erlang allows 255 characters). */
#define AEMP_MAXNODELEN 255
/* Longest atom in bytes (255 UTF-8 characters of up to 4 bytes). */
#define AEMP_MAXATOMLEN 1020

/* Error codes. */
enum aemp_err {
    AEMP_OK = 0,
    AEMP_EINVAL = -1,        /* bad argument */
    AEMP_ENOMEM = -2,        /* out of memory */
    AEMP_ENOENT = -3,        /* no such port, name or node */
    AEMP_EEXIST = -4,        /* name already registered */
    AEMP_ECLOSED = -5,       /* node or port closed */
    AEMP_EBADTERM = -6,      /* malformed or unsupported term */
    AEMP_ETOOBIG = -7,       /* value exceeds a limit */
    AEMP_EPROTO = -8,        /* protocol violation by the peer */
    AEMP_EAUTH = -9,         /* authentication failed (cookie) */
    AEMP_ECONNREFUSED = -10, /* connection refused */
    AEMP_ETIMEDOUT = -11,    /* timed out */
    AEMP_EIO = -12,          /* I/O error (see log) */
    AEMP_ENOTSUP = -13,      /* not supported */
    AEMP_ENONODE = -14,      /* node not registered with EPMD */
    AEMP_ENOMATCH = -15,     /* term does not have the requested shape */
    AEMP_EBUSY = -16,        /* send queue full (max_pending) or too many connections */
    AEMP_ENOCONN = -17,      /* connection lost (Erlang's noconnection) */
    AEMP_EDIE = -18,         /* a port's callback failed (aemp_die) */
};

/* Name of an error code; never NULL. */
const char *aemp_strerror(int err);

/* ------------------------------------------------------------------ */
/* Logging                                                             */
/* ------------------------------------------------------------------ */

enum aemp_log_level {
    AEMP_LOG_ERROR = 0,
    AEMP_LOG_WARN = 1,
    AEMP_LOG_INFO = 2,
    AEMP_LOG_DEBUG = 3,
};

/* Receives every log line at or below the current level. `msg` has no
 * trailing newline and is valid only during the call. */
typedef void (*aemp_log_cb)(int level, const char *msg, void *arg);

/* Set the process-wide log level. The initial level comes from the
 * environment variable AEMP_LOG (error, warn, info, debug), default warn. */
void aemp_log_set_level(int level);
int aemp_log_get_level(void);
/* Route log lines to cb instead of stderr; cb NULL restores stderr. */
void aemp_log_set_callback(aemp_log_cb cb, void *arg);

/* ------------------------------------------------------------------ */
/* Terms                                                               */
/* ------------------------------------------------------------------ */

/*
 * A term is a view of bytes in Erlang's external term format, without the
 * leading version byte (131). A received term points into the packet it came
 * in: it is valid only during the callback that received it. Copy it with
 * aemp_buf_put_term() to keep it.
 */
typedef struct aemp_term {
    const char *data;
    size_t len;
} aemp_term;

/* A growable byte buffer that owns its memory. Zero-initialise it
 * (AEMP_BUF_INIT), fill it, release with aemp_buf_free(). */
typedef struct aemp_buf {
    char *data;
    size_t len;
    size_t cap;
} aemp_buf;
#define AEMP_BUF_INIT                                                                              \
    {                                                                                              \
        NULL, 0, 0                                                                                 \
    }

void aemp_buf_free(aemp_buf *b);
/* The encoded term held in b (no copy; valid until b changes). */
aemp_term aemp_buf_term(const aemp_buf *b);

/*
 * An address: a pid (AEMP_ADDR_PID), a registered name on a node
 * (AEMP_ADDR_NAME), a reference (AEMP_ADDR_REF, e.g. a monitor's) or a
 * process alias (AEMP_ADDR_ALIAS: a reference messages can be sent to). It
 * is a plain 32-byte value: copy it freely, compare it with
 * aemp_addr_equal(). Node and registered names are held as handles into a
 * process-wide table of interned names (as Erlang's atoms: never freed,
 * bounded, docs/security.md); read them with aemp_addr_node_name() and
 * aemp_addr_reg_name(). Of the fields, read `kind` (an aemp_addr_kind) as
 * you like; the others are described only so that the size is known.
 * A zeroed aemp_addr is no address. An Erlang alias arrives as a
 * reference; aemp_send() to a reference on another node sends to it as to
 * an alias.
 */
typedef enum aemp_addr_kind {
    AEMP_ADDR_PID = 1,
    AEMP_ADDR_NAME = 2,
    AEMP_ADDR_REF = 3,
    AEMP_ADDR_ALIAS = 4,
} aemp_addr_kind;
typedef struct aemp_addr {
    uint8_t kind;      /* aemp_addr_kind */
    uint8_t nwords;    /* REF, ALIAS: words used in w (1..5) */
    uint16_t reserved; /* 0 */
    uint32_t node;     /* the node name's handle */
    uint32_t creation; /* PID, REF, ALIAS: the node incarnation */
    uint32_t w[5];     /* PID: ID and Serial; NAME: the name's handle; REF, ALIAS: words */
} aemp_addr;

/* The node name of an address (`alive@host`), or NULL for none; valid for
 * the life of the process. */
const char *aemp_addr_node_name(const aemp_addr *a);
/* The registered name of an AEMP_ADDR_NAME address, else NULL; valid for the
 * life of the process. */
const char *aemp_addr_reg_name(const aemp_addr *a);

/* Format an address as a port ID: `node#name` for names,
 * `node#<id.serial.creation>` for pids, `node#Ref<creation.w0.w1...>` and
 * `node#Alias<creation.w0.w1...>` for references and aliases. Returns the
 * length it needs (as snprintf does) or a negative error. */
int aemp_addr_format(const aemp_addr *a, char *out, size_t size);
/* Parse a port ID written by aemp_addr_format(). AEMP_EINVAL if s is not
 * one, AEMP_ETOOBIG if the table of interned names is full. */
int aemp_addr_parse(const char *s, aemp_addr *out);
/* Fill a name address. */
int aemp_addr_name(aemp_addr *out, const char *node, const char *name);
/* 1 if both addresses are the same (same kind and fields), else 0: a name
 * and the pid registered under it are different addresses. */
int aemp_addr_equal(const aemp_addr *a, const aemp_addr *b);

/*
 * Build a term from a format string, appending to b (which must hold only
 * terms built this way, or be empty). Format:
 *   ~a  atom            (const char *, UTF-8)
 *   ~s  binary string   (const char *, NUL-terminated, UTF-8)
 *   ~l  charlist        (const char *, NUL-terminated)
 *   ~b  binary          (const void *, size_t)
 *   ~i  integer         (int64_t)
 *   ~u  integer         (uint64_t)
 *   ~f  float           (double)
 *   ~p  pid or reference (const aemp_addr *, kind PID, REF or ALIAS)
 *   ~t  encoded term    (const aemp_term *)
 *   {...} tuple, [...] proper list, #{K => V, ...} map, and bare atoms
 *   (foo, 'Foo bar'), integers (-12) and floats (1.5) written literally.
 * Example: aemp_term_format(&b, "{echo, ~p, #{n => ~i}}", &self, (int64_t)7)
 * Returns 0, AEMP_EINVAL (bad format) or AEMP_ENOMEM; on error b is
 * unchanged.
 */
int aemp_term_format(aemp_buf *b, const char *fmt, ...);
int aemp_term_vformat(aemp_buf *b, const char *fmt, va_list ap);

/*
 * Read a term written in Erlang syntax, text[0..len) (no NUL needed), and
 * append its encoding to b: the bytes term_to_binary(T, [{minor_version,
 * 2}]) gives for it (the default from OTP 26), without the version byte.
 * Whitespace and %-comments go anywhere between tokens; one final `.` is
 * allowed. It reads atoms (bare, 'quoted' with escapes, at most 255
 * characters), integers of any size up to 131072 bits (-12, 16#ff, 1_000,
 * $a), floats (1.5, -2.0e-3), strings ("abc" is a list of its characters,
 * as Erlang reads them: UTF-8 text gives code points), binaries and
 * bitstrings (<<"abc">>, <<1,2,3>>, <<1:3, -1:16/little, 2.5/float,
 * "é"/utf8>>), tuples, lists proper and improper ([a | b]), maps
 * (#{k => v}: keys in Erlang's term order, a later duplicate key wins),
 * `fun M:F/A`, and pids and references written as port IDs
 * (node#<id.serial.creation>, node#Ref<...>, see aemp_addr_format) or
 * as aemp_term_print writes pids (#Pid<node.id.serial.creation>). Nesting
 * deeper than 512 levels is refused. Maps with more than 32 keys, and maps
 * whose keys are atoms on OTP 26 and later, are ordered differently by
 * term_to_binary (Erlang decodes any order).
 * Returns 0, AEMP_EINVAL (not a term: a syntax error, or a value Erlang
 * refuses, such as a float beyond the range of a double or a segment
 * type that does not fit its value), AEMP_ETOOBIG (a limit above, or
 * binary segments making more than 16 bytes per byte of text plus 1 MiB)
 * or AEMP_ENOMEM. On error b is unchanged and *err_pos (may be NULL) is
 * the offset in text where the error was found. Reading a pid or reference
 * interns its node name (aemp_addr_parse).
 */
int aemp_term_parse(aemp_buf *b, const char *text, size_t len, size_t *err_pos);

/* Append an encoded term (a copy of t) to b. */
int aemp_buf_put_term(aemp_buf *b, const aemp_term *t);

/*
 * Decoding: a cursor walks a term in place, without copies. Each aemp_get_*
 * call reads one value at the cursor and advances past it, or returns a
 * negative error and leaves the cursor where it was: AEMP_ENOMATCH when the
 * value has another type, AEMP_ETOOBIG when it does not fit the output
 * buffer, AEMP_EINVAL for bad arguments, AEMP_EBADTERM for a malformed term.
 */
typedef struct aemp_cursor {
    const char *data;
    size_t len;
    size_t pos;
} aemp_cursor;

aemp_cursor aemp_cursor_of(const aemp_term *t);
/* Type of the value at the cursor, as ei's tags (e.g. 'h' small tuple,
 * 'v' atom, 'm' binary), or a negative error. */
int aemp_get_type(const aemp_cursor *c);
int aemp_get_tuple(aemp_cursor *c, uint32_t *arity);
/* Lists: *arity is the count of elements; a proper list ends with aemp_get_nil
 * after the elements (strings sent as lists of bytes are read with
 * aemp_get_charlist). */
int aemp_get_list(aemp_cursor *c, uint32_t *arity);
int aemp_get_nil(aemp_cursor *c);
int aemp_get_map(aemp_cursor *c, uint32_t *pairs);
/* Copies the atom (NUL-terminated) into out of size bytes. */
int aemp_get_atom(aemp_cursor *c, char *out, size_t size);
int aemp_get_int64(aemp_cursor *c, int64_t *v);
int aemp_get_uint64(aemp_cursor *c, uint64_t *v);
int aemp_get_double(aemp_cursor *c, double *v);
/* Binary: *ptr points into the term (no copy). */
int aemp_get_binary(aemp_cursor *c, const void **ptr, size_t *len);
/* A string sent as a list of bytes (Erlang "abc", STRING_EXT or a list of
 * integers 0..255): copies the bytes (latin-1) into out, NUL-terminated. */
int aemp_get_charlist(aemp_cursor *c, char *out, size_t size);
int aemp_get_pid(aemp_cursor *c, aemp_addr *out);
/* A reference (NEWER_REFERENCE_EXT or NEW_REFERENCE_EXT, at most 5 words):
 * an address of kind AEMP_ADDR_REF. */
int aemp_get_ref(aemp_cursor *c, aemp_addr *out);
/* Any value: *t views it in place. */
int aemp_get_term(aemp_cursor *c, aemp_term *t);

/* If t is a tuple whose first element is an atom, copy that atom to tag and
 * return 0; else AEMP_ENOMATCH. */
int aemp_term_tag(const aemp_term *t, char *tag, size_t size);

/* Print t in Erlang syntax into out (always NUL-terminated, truncated with
 * "..." if longer). Returns the length written or a negative error. */
int aemp_term_print(const aemp_term *t, char *out, size_t size);

/* ------------------------------------------------------------------ */
/* Nodes                                                               */
/* ------------------------------------------------------------------ */

typedef struct aemp_node aemp_node;

/* A local port (an Erlang process of this node). A value: a stale port is
 * detected (AEMP_ENOENT), never dereferenced. Ids are 64-bit and never
 * reused in a node's life (the pid's ID is the low, its Serial the high 32
 * bits); id 0 is no port. */
typedef struct aemp_port {
    uint64_t id;
} aemp_port;

/* Called for each message to a local port. msg and from live in the received
 * packet and are valid only during the call; from is NULL unless the sender
 * is known (Erlang sends to a registered name or with SEND_SENDER, or a local
 * aemp_send with a from port). */
typedef void (*aemp_recv_cb)(aemp_node *node, aemp_port self, const aemp_term *msg,
                             const aemp_addr *from, void *arg);

/* Node up/down: up 1 when a connection to `peer` is established, 0 when it is
 * lost; reason is a short text for down events ("connection closed",
 * "net_tick timeout", ...), NULL for up. Up and down strictly alternate. */
typedef void (*aemp_nodes_cb)(aemp_node *node, const char *peer, int up, const char *reason,
                              void *arg);

/* An outgoing connection attempt to `peer` failed (err is an AEMP_E* code,
 * reason a one-line explanation such as "wrong cookie" or "no such node");
 * `dropped` messages queued for the peer were discarded. */
typedef void (*aemp_fail_cb)(aemp_node *node, const char *peer, int err, const char *reason,
                             size_t dropped, void *arg);

typedef struct aemp_node_config {
    /* `alive@host`, or `alive` for alive@<short host name> as erl -sname. */
    const char *name;
    /* Cookie; NULL reads the first line of ~/.erlang.cookie, which must be a
     * regular file readable by its owner only (else aemp_node_create fails
     * with AEMP_EAUTH, logged, as erl refuses such a file). */
    const char *cookie;
    /* TCP port to listen on; 0 picks one. */
    uint16_t listen_port;
    /* EPMD port; 0 uses $ERL_EPMD_PORT or 4369. */
    uint16_t epmd_port;
    /* Seconds of silence after which a peer is dropped (as Erlang's
     * net_ticktime); 0 means 60. Ticks are sent every net_ticktime/4. */
    unsigned net_ticktime;
    /* Handshake must complete within this many milliseconds; 0 means 10000. */
    unsigned handshake_timeout_ms;
    /* Largest accepted packet in bytes; 0 means 128 MiB. A bigger packet
     * closes the connection (logged). */
    size_t max_packet;
    /* Most authenticated peers connected at once; 0 means 1024. A peer
     * beyond it is refused after its handshake; a send or connect to a new
     * node fails with AEMP_EBUSY. */
    unsigned max_connections;
    /* Incoming connections not yet authenticated (in their handshake): at
     * most max_handshakes (0 means 64), at most max_handshakes_per_address
     * from one IP address (0 means 8). A new one from an address at its cap
     * drops the oldest handshake from that address; one beyond the pool
     * drops the oldest of all (a real handshake takes milliseconds; what
     * lingers is stalling). Peers already up are never affected.
     * Refusals are logged as one summary line with counts every 10 s. */
    unsigned max_handshakes;
    unsigned max_handshakes_per_address;
    /* Outgoing connection attempts not yet up (resolving, asking EPMD,
     * connecting, in the handshake); 0 means 64. Each is given
     * handshake_timeout_ms in all. A send that needs one more fails with
     * AEMP_EBUSY. */
    unsigned max_connecting;
    /* Most bytes queued for one peer and not yet written; 0 means 64 MiB.
     * A send that would go beyond it is refused with AEMP_EBUSY (the message
     * is not sent and the sender knows it) until the queue drains; a message
     * to a peer with an empty queue is always taken, however large. What
     * the node answers a peer by itself (rpc results, spawn replies, exit
     * and monitor signals) may go a quarter of max_pending further (at
     * least 64 KB); beyond that the node stops reading that peer until the
     * queue is back under max_pending (aemp_conn_stats.holds counts it), so
     * a peer that never reads cannot make the node hold more. */
    size_t max_pending;
    /* Read batching, in milliseconds, at most 1000 (more: aemp_node_create
     * fails with AEMP_EINVAL); 0 means 1, negative turns it off.
     * A connection with a peer on the same host gets a small TCP receive
     * buffer; when that peer streams small packets (4 KB or less) and this
     * node writes nothing back, the node waits read_batch_ms each time it
     * has caught up before reading again, so that the peer's writes
     * coalesce: it then sends many messages per TCP segment and spends far
     * less CPU per message (an Erlang sender streaming 100-byte messages
     * runs about 1.5 times as fast, docs/benchmarks.md). Messages of such a
     * stream wait up to read_batch_ms + 1 ms longer (libuv timers count
     * whole milliseconds); replies and request/reply traffic are never
     * delayed. Peers on other hosts are never batched; a packet over 4 KB,
     * or a peer that writes in large batches itself, gives the connection
     * a large buffer and ends batching on it. */
    int read_batch_ms;
    /* Deepest nesting accepted in a received message (tuples, lists, maps
     * and funs each count a level); 0 means 10000. A message nested deeper
     * is dropped, logged and counted (aemp_conn_stats.dropped_deep); the
     * connection stays up. (Erlang itself accepts any depth; ei, which a
     * callback may use on the message, recurses once per level.) */
    unsigned max_term_depth;
    /* Called once when the EPMD registration completes (status 0) or fails
     * (e.g. AEMP_EEXIST: the name is taken); may be NULL. */
    void (*ready_cb)(aemp_node *node, int status, void *arg);
    void *ready_arg;
    /* Node up/down callback (may be NULL). */
    aemp_nodes_cb nodes_cb;
    void *nodes_arg;
    /* Failed outgoing connections (may be NULL; failures are logged too). */
    aemp_fail_cb fail_cb;
    void *fail_arg;
    /* Nonzero: do not listen or register with EPMD (a node that only makes
     * outgoing connections, as `aemp ping` uses). */
    int client_only;
    /* TLS distribution, as `erl -proto_dist inet_tls`: PEM file names of
     * this node's certificate chain, its private key, and the CA
     * certificates to trust. With any of them set, TLS is on and all three
     * are needed (else aemp_node_create fails with AEMP_EINVAL, logged);
     * every connection, in and out, is TLS from the first byte. Peers are
     * verified by default: a peer
     * must present a certificate signed by the CA and naming the host part of
     * its node name. */
    const char *tls_cert;
    const char *tls_key;
    const char *tls_ca;
    /* Nonzero: do not verify peer certificates (for tests only). */
    int tls_no_verify;

    /* ---- seeds (issue 10, part "seeds"; docs/guide.md "Seeds") ---- */
    /* Nodes to stay connected to, as AnyEvent::MP's seeds: a NULL-terminated
     * list of `alive@host` names (NULL: none), at most 1024; copied by
     * aemp_node_create (more, or a malformed name: AEMP_EINVAL, logged). A
     * seed that is this node is ignored. The node connects to each at once
     * and, after a failure or a lost connection, again after a randomised,
     * exponentially growing wait (see seed_min_ms), never with more than one
     * attempt per seed at a time, until it closes. Failures are logged once
     * (warn), then summed up every 60 s while the seed stays unreachable. */
    const char *const *seeds;
    /* The backoff, in milliseconds, each at most 3600000: the interval
     * starts at seed_min_ms (0 means 500) and doubles after each failure up
     * to seed_max_ms (0 means 30000; below seed_min_ms: seed_min_ms); each
     * wait is drawn at random between half and all of it. A connection
     * that comes up resets it. */
    unsigned seed_min_ms;
    unsigned seed_max_ms;
    /* Meshing: when a seed's connection comes up, and then every
     * mesh_interval_ms while it stays up (0 means 30000, at most 3600000;
     * negative: never), the node asks the seed for the nodes it is
     * connected to (erlang:nodes([visible, hidden]), through aemp_call)
     * and connects once to each it is not connected to yet (at most 256
     * names of one answer). */
    int mesh_interval_ms;

    /* ---- pg (issue 10, part "pg"): families of ports (docs/database.md
     * "Families of ports and pg") ---- */
    /* The OTP pg scopes this node is a peer of: names separated by commas
     * (or blanks), at most 16, each at most 255 characters; each is a
     * service port registered under that name. NULL means "aemp"; "" means
     * none (aemp_pg_* calls then fail with AEMP_ENOTSUP). A name that is
     * taken (net_kernel) fails aemp_node_create with AEMP_EEXIST. */
    const char *pg_scopes;
    /* Most members of other nodes held, over all scopes (each membership
     * of a pid in a group counts); 0 means 100000. What a peer announces
     * beyond it is dropped (logged). */
    unsigned pg_max_members;
    /* (c-db) Most bytes held for the database shares of other nodes (each
     * entry counts its family, subkey and value plus 256); 0 means 256 MiB.
     * A share or change that would go beyond it is dropped and logged.
     * Profile key db_max_bytes. */
    size_t db_max_bytes;
    /* (pg) Most bytes of a group term (its encoding) a peer's join, leave
     * or sync may name; 0 means 1024, at most 16777216 (more:
     * aemp_node_create fails with AEMP_EINVAL). A message naming a larger
     * group is dropped whole (logged). Profile key pg_max_group_term. */
    unsigned pg_max_group_term;
    /* (pg) Most bytes of the names of the groups peers made on this node
     * (groups no one here had), over all scopes; 0 means 16 MiB. A member
     * of a new group beyond it is dropped (logged). Profile key
     * pg_max_group_names. */
    size_t pg_max_group_names;
    /* (pg) Every this many milliseconds each scope sends {discover, Self}
     * again to every node up that has no peer in it (a scope started or
     * restarted there after the connection came up: an Erlang scope never
     * discovers a hidden node); 0 means 5000, at most 3600000 (more:
     * AEMP_EINVAL). Profile key pg_rediscover_ms. */
    unsigned pg_rediscover_ms;
    /* Most links and monitors this node holds with their other end on one
     * peer node (monitors the peer made of our ports, monitors our ports
     * made of its processes, links either way), each about 100 bytes; 0
     * means 1000000. Beyond it the peer's monitor fires at once with reason
     * `system_limit`, its link breaks at once with an exit signal of that
     * reason, its spawn request with link or monitor is answered
     * system_limit (one log line per peer per 10 s at most, with a count;
     * the connection stays up); aemp_monitor(), aemp_link(), aemp_mon*()
     * and aemp_spawn() towards that node fail with AEMP_ETOOBIG. The count
     * drops as they go. Profile key max_watches_per_peer. */
    unsigned max_watches_per_peer;
} aemp_node_config;

/*
 * Create a node on loop: listen, register with EPMD (starting an embedded
 * EPMD if none answers), and serve connections. The node is usable at once;
 * messages to remote nodes are queued until their connection is up.
 * On success *out owns the node; free it with aemp_node_close().
 */
int aemp_node_create(uv_loop_t *loop, const aemp_node_config *cfg, aemp_node **out);

/*
 * Close the node: all ports die with reason `shutdown`, connections and the
 * EPMD registration close. closed_cb (may be NULL) runs from the loop once
 * every handle is closed; after it the node memory is released. From this
 * call on, no callback of the node (nodes_cb, fail_cb, ready_cb, port
 * callbacks) runs, except closed_cb and, inside this call, the callbacks of
 * aemp_spawn() still waiting for an answer (with AEMP_ECLOSED).
 */
void aemp_node_close(aemp_node *node, void (*closed_cb)(void *arg), void *arg);

/* This node's name (`alive@host`); valid while the node lives. */
const char *aemp_node_name(const aemp_node *node);
/* This node's creation: a random nonzero number chosen when the node is
 * created, told to peers in the handshake and part of every pid. */
uint32_t aemp_node_creation(const aemp_node *node);
/* TCP port the node listens on. */
uint16_t aemp_node_listen_port(const aemp_node *node);

/* Connect to peer now (otherwise connections are made on first send).
 * Success is reported through nodes_cb, failure through fail_cb.
 * AEMP_EINVAL if peer is not `alive@host` or is this node, AEMP_EBUSY if
 * max_connections connections exist. */
int aemp_node_connect(aemp_node *node, const char *peer);
/* 1 if a connection to peer is up, 0 otherwise. */
int aemp_node_is_up(aemp_node *node, const char *peer);
/* Bytes queued for peer and not yet written to the socket (0 if none). */
size_t aemp_node_pending(aemp_node *node, const char *peer);

/* Counters of the connection to a peer, since it was made. */
typedef struct aemp_conn_stats {
    uint64_t reads;        /* socket reads that returned data */
    uint64_t packets;      /* distribution packets received (ticks included) */
    size_t queued;         /* bytes waiting to be written (aemp_node_pending) */
    int batching;          /* 1 while read batching may pause this connection */
    uint64_t dropped_deep; /* messages dropped: nested deeper than max_term_depth */
    uint64_t holds;        /* times reading stopped: replies filled the queue */
} aemp_conn_stats;
/* Fill *out for the connection to peer; AEMP_ENOENT if there is none. */
int aemp_node_stats(aemp_node *node, const char *peer, aemp_conn_stats *out);

/* ------------------------------------------------------------------ */
/* Ports                                                               */
/* ------------------------------------------------------------------ */

/* Create a local port whose messages go to cb(arg). arg belongs to the
 * caller: the library only passes it to cb, and calls cb no more once the
 * port is dead (closed, killed, or its node closed), so arg may be freed
 * when the port's death is known: after aemp_port_close() or
 * aemp_port_kill() returns outside the port's own callback, after its own
 * callback that killed it returns, or when closed_cb of aemp_node_close()
 * runs. */
int aemp_port_open(aemp_node *node, aemp_recv_cb cb, void *arg, aemp_port *out);
/* Kill a local port normally (exit reason `normal`). Killing a port that is
 * gone is not an error. Its registered name is released; its links and
 * monitors fire. */
int aemp_port_close(aemp_node *node, aemp_port port);
/* Kill a local port with an exit reason (a term): processes linked to it
 * die too unless the reason is `normal` (Erlang processes that trap exits
 * get {'EXIT', Pid, Reason}); monitors deliver {'DOWN', Ref, process, Pid,
 * Reason}. AEMP_EINVAL for a malformed reason; a port that is gone is not
 * an error. */
int aemp_port_kill(aemp_node *node, aemp_port port, const aemp_term *reason);

/*
 * Monitor target (a pid or a registered name, local or remote) on behalf of
 * local port watcher. When the target dies (or is not there, or its node's
 * connection is lost), watcher receives {'DOWN', Ref, process, Target,
 * Reason} as Erlang's erlang:monitor/2 delivers it: Target is the pid, or
 * {Name, Node} for a name; Reason is the exit reason, `noproc`, or
 * `noconnection`. *ref (kind AEMP_ADDR_REF) identifies the monitor. Fires
 * at most once. AEMP_ENOENT if watcher is not a live local port;
 * AEMP_ECLOSED also while the target's node is fenced (see aemp_send());
 * AEMP_ETOOBIG if the node holds max_watches_per_peer links and monitors
 * with the target's node already (aemp_node_config).
 */
int aemp_monitor(aemp_node *node, aemp_port watcher, const aemp_addr *target, aemp_addr *ref);
/* Cancel a monitor made by aemp_monitor() (no 'DOWN' follows); AEMP_ENOENT
 * if it fired or was cancelled already. */
int aemp_demonitor(aemp_node *node, const aemp_addr *ref);
/* Link local port and pid (local or remote), as erlang:link/1: when either
 * dies with a reason other than `normal`, the other dies with the same
 * reason (ports do not trap exits; an Erlang process that does gets
 * {'EXIT', Pid, Reason}); a lost connection breaks the link with
 * `noconnection`. AEMP_ENOENT if either local end is not there;
 * AEMP_ECLOSED also while pid's node is fenced (see aemp_send());
 * AEMP_ETOOBIG as for aemp_monitor() (max_watches_per_peer). */
int aemp_link(aemp_node *node, aemp_port port, const aemp_addr *pid);
/* Remove a link (no error if there is none). Towards another node, as OTP's
 * link protocol: the link counts as gone at once (exit signals over it are
 * ignored, none are sent) and is forgotten when the other node
 * acknowledges (UNLINK_ID_ACK); a link request from the other end arriving
 * meanwhile is ignored; aemp_link() meanwhile makes it a link again. */
int aemp_unlink(aemp_node *node, aemp_port port, const aemp_addr *pid);
/* Send an exit signal from port to pid, as erlang:exit/2: `normal` is
 * ignored by a process that does not trap exits, `kill` kills it with
 * reason `killed`, anything else kills it with that reason. */
int aemp_exit(aemp_node *node, aemp_port from, const aemp_addr *pid, const aemp_term *reason);
/* The address (pid) of a local port. */
int aemp_port_addr(aemp_node *node, aemp_port port, aemp_addr *out);
/* Register a local port under an atom name (visible to Erlang as
 * {Name, Node}). AEMP_EEXIST if the name is taken. */
int aemp_register(aemp_node *node, const char *name, aemp_port port);
/* Remove a registered name. */
int aemp_unregister(aemp_node *node, const char *name);
/* Find a local port by address (a pid of this node, or a name registered
 * on it); AEMP_ENOENT if none. */
int aemp_port_of_addr(aemp_node *node, const aemp_addr *addr, aemp_port *out);

/*
 * Send msg to a pid or a registered name, on this node or any other. Returns
 * at once; msg is copied. from (id 0 for none) is given to the receiver as
 * the sender. Messages from one port to one destination arrive in order.
 * To a remote node that is not connected yet the message is queued and the
 * connection is started; if the connection fails, queued messages are
 * dropped and the failure is logged and reported to fail_cb. Sending to a
 * local port that does not exist drops the message (returns 0).
 * No silent holes: when a connection is lost, its monitors fire
 * (noconnection) before any later message to that node can be sent; if
 * their 'DOWN's must wait behind deferred local deliveries, the node is
 * fenced until they are delivered: messages to it are dropped (returns 0)
 * and monitors and links towards it refused (AEMP_ECLOSED).
 * AEMP_EBUSY: the message would take the bytes waiting for that peer over
 * max_pending, or a connection to a new node would exceed max_connections;
 * the message was not queued. aemp_node_pending() tells how much waits.
 */
int aemp_send(aemp_node *node, aemp_port from, const aemp_addr *to, const aemp_term *msg);
/* aemp_term_format() then aemp_send(). */
int aemp_sendf(aemp_node *node, aemp_port from, const aemp_addr *to, const char *fmt, ...);

/* ------------------------------------------------------------------ */
/* AEMP ports: tagged callbacks, $SELF, kil, mon, timers               */
/* ------------------------------------------------------------------ */

/*
 * The AEMP port model (docs/guide.md, "Ports"). A port made by
 * aemp_port_new() has no callback yet: a message it cannot dispatch kills it
 * with reason {unhandled_message, Tag}. aemp_rcv() gives it callbacks per
 * tag (the first element of a tuple message, an atom or a binary; the tag
 * is stripped) and a default callback for everything else. A callback that
 * returns non-zero kills its port with reason {die, Text} (Text a binary:
 * what aemp_die() said, else the error's name). Messages are dispatched
 * when they arrive: there is no mailbox.
 */

/* A message as a callback sees it. */
typedef struct aemp_msg {
    aemp_term term;        /* the whole message as received */
    const aemp_addr *from; /* the sender, or NULL */
    aemp_cursor args;      /* tag callback: at the first element after the tag;
                            * default callback: at the whole message */
    uint32_t nargs;        /* tag callback: elements after the tag; default: 1 */
} aemp_msg;

/* A callback of a port: 0, or an error that kills the port with {die, Text}.
 * m and what it points to are valid during the call only. */
typedef int (*aemp_rcv_cb)(aemp_node *node, aemp_port self, const aemp_msg *m, void *arg);

/* port(): a new local port with no callback (see above). */
int aemp_port_new(aemp_node *node, aemp_port *out);
/* rcv: call cb(arg) for messages to port tagged tag (exact match, UTF-8, at
 * most 255 bytes); tag NULL sets the default callback. cb NULL removes
 * the callback of that tag (or the default). Replaces an earlier callback
 * of the same tag. Only local ports; AEMP_ENOENT if port is gone. A port
 * made by aemp_port_open() keeps its callback as default until replaced. */
int aemp_rcv(aemp_node *node, aemp_port port, const char *tag, aemp_rcv_cb cb, void *arg);
/* $SELF: the port whose callback, peval, psub, timer or init function runs
 * now; id 0 outside of them. */
aemp_port aemp_self(aemp_node *node);
/* Set the text of the {die, Text} reason for the running callback's port
 * and return AEMP_EDIE, for `return aemp_die(node, "bad %s", what);`. */
int aemp_die(aemp_node *node, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Told once when a port is gone, whatever ended it (kil, a callback's
 * error, a link, aemp_port_close, the node's close), after its monitors
 * fired and after its last callback returned: from then on nothing of the
 * library uses the args given for it, which may be freed. reason is the
 * exit reason (valid during the call). */
typedef void (*aemp_gone_cb)(aemp_node *node, aemp_port port, const aemp_term *reason, void *arg);
/* Set (or with cb NULL clear) the port's gone callback (one per port). */
int aemp_port_gone(aemp_node *node, aemp_port port, aemp_gone_cb cb, void *arg);

/* Code run as a port: 0, or an error that kills the port with {die, Text}. */
typedef int (*aemp_fn)(aemp_node *node, aemp_port self, void *arg);
/* peval: run fn now with $SELF = port (a live local port, else
 * AEMP_ENOENT and fn does not run). */
int aemp_peval(aemp_node *node, aemp_port port, aemp_fn fn, void *arg);
/* psub: fn bound to the port that is $SELF now (or to none), for timers
 * and I/O callbacks. A plain value; nothing to free. */
typedef struct aemp_psub {
    aemp_node *node;
    aemp_port port;
    aemp_fn fn;
    void *arg;
} aemp_psub;
aemp_psub aemp_psub_of(aemp_node *node, aemp_fn fn, void *arg);
/* Run a psub in its port's context, as aemp_peval(); AEMP_ENOENT (fn not
 * run) if that port is gone. A psub bound to no port just runs fn. */
int aemp_psub_call(const aemp_psub *s);

/*
 * kil: end a port, local or remote, with reason (NULL or `normal`: a normal
 * kill). A local port is killed on the next turn of the loop, never inside
 * this call; no callback of it runs after kil. Its monitors and links fire
 * with reason; an abnormal death that nobody monitors is logged (warn).
 * A remote process gets an exit signal from $SELF, ordered with the
 * messages sent to it, as erlang:exit/2 (so `normal` does not end an Erlang
 * process that does not trap exits, and `kill` is untrappable). Killing a
 * port that is gone is not an error; the node's service ports cannot be
 * killed (AEMP_EINVAL).
 */
int aemp_kil(aemp_node *node, const aemp_addr *port, const aemp_term *reason);

/*
 * mon: watch a port (a pid or registered name, local or remote) and act
 * once when it dies, with its exit reason: `normal`, the reason it was
 * killed with, `noproc` if it was not there (fired on the next turn of
 * the loop), `noconnection` if its node's connection was lost or could not
 * be made. *ref (may be NULL) identifies the monitor: aemp_demonitor(ref)
 * cancels it (nothing fires after). AEMP_EINVAL for a target that is not a
 * pid or name; AEMP_ETOOBIG as aemp_monitor() (max_watches_per_peer).
 */
typedef void (*aemp_mon_cb)(aemp_node *node, const aemp_addr *target, const aemp_term *reason,
                            void *arg);
/* Call cb(target, reason, arg), in the context of no port. */
int aemp_mon(aemp_node *node, const aemp_addr *target, aemp_mon_cb cb, void *arg, aemp_addr *ref);
/* Kill local port `local` (id 0: $SELF) with the same reason if the death
 * is abnormal (not `normal`): a one-way link. The monitor goes when local
 * dies. AEMP_ENOENT if local is not a live local port. */
int aemp_mon_kill(aemp_node *node, const aemp_addr *target, aemp_port local, aemp_addr *ref);
/* Send msg with the reason added to `to` on any death: a tuple msg gets the
 * reason as a new last element, any other msg is sent as {Msg, Reason}. */
int aemp_mon_send(aemp_node *node, const aemp_addr *target, const aemp_addr *to,
                  const aemp_term *msg, aemp_addr *ref);
/* mon_guard: cancel the monitors refs[0..n) when local port `port` dies. */
int aemp_mon_guard(aemp_node *node, aemp_port port, const aemp_addr *refs, size_t n);

/*
 * after: a one-shot timer. aemp_after_send() sends msg to `to` (from $SELF
 * as it was at the call) after ms milliseconds; aemp_after_call() runs fn
 * then as aemp_psub_call() would (bound to $SELF as it is now: not run if
 * that port died). *timer (may be NULL) identifies it for
 * aemp_timer_cancel(); AEMP_ENOENT from that if it ran or was cancelled.
 */
int aemp_after_send(aemp_node *node, uint64_t ms, const aemp_addr *to, const aemp_term *msg,
                    uint64_t *timer);
int aemp_after_call(aemp_node *node, uint64_t ms, aemp_fn fn, void *arg, uint64_t *timer);
int aemp_timer_cancel(aemp_node *node, uint64_t timer);

/*
 * mon_nodes: cb(peer, up, reason) for every node coming up (up 1) or going
 * down (up 0, reason a short text); per node the calls strictly alternate,
 * starting with an up. Any number of watchers; *handle (may be NULL) for
 * aemp_mon_nodes_cancel().
 */
int aemp_mon_nodes(aemp_node *node, aemp_nodes_cb cb, void *arg, uint64_t *handle);
int aemp_mon_nodes_cancel(aemp_node *node, uint64_t handle);
/* up_nodes: the names of the nodes connected now, up to max of them into
 * names (in no particular order; valid for the life of the process);
 * returns how many are up. */
size_t aemp_up_nodes(aemp_node *node, const char **names, size_t max);
/* node_is_up in AEMP's three states: 1 up, 0 known (it was up, or a
 * connection was tried) but down now, AEMP_ENOENT never heard of. */
int aemp_node_state(aemp_node *node, const char *peer);

/* ------------------------------------------------------------------ */
/* Spawning                                                            */
/* ------------------------------------------------------------------ */

/*
 * An init function: Erlang's spawn(Node, Module, Function, Args) on this
 * node (spawn/4, spawn_link/4, spawn_monitor/4, spawn_opt/5,
 * spawn_request/5; and aemp_spawn() from another C node) makes a new port,
 * links it to or lets the requester monitor it as asked, answers the
 * requester with its pid, and then calls init with self (and $SELF) that
 * port and args the argument list (a proper list, valid during the call).
 * init installs the port's callbacks (aemp_rcv) and may send, monitor,
 * link. Return 0, or an error code: the port then dies with reason
 * {die, Text}, Text a binary: what aemp_die() said, else the error's name.
 */
typedef int (*aemp_init_cb)(aemp_node *node, aemp_port self, const aemp_term *args, void *arg);

/*
 * Make init the function spawns of Module:Function run (any number of
 * arguments). Re-exporting replaces it. A spawn of anything not exported
 * gives, as on an Erlang node where the function does not exist, a process
 * that exits at once with {undef, [{Module, Function, Args, []}]}; bad
 * spawn options are refused as Erlang refuses them (the caller gets
 * badarg). arg belongs to the caller: passed to init only, it may be freed
 * once aemp_unexport_init() has returned (outside init) or the node is
 * closed. AEMP_EINVAL for a bad name, AEMP_EEXIST for a name the node
 * serves itself (erpc:execute_call/4, erpc:execute_cast/3).
 */
int aemp_export_init(aemp_node *node, const char *module, const char *function, aemp_init_cb init,
                     void *arg);
/* Withdraw an init function; AEMP_ENOENT if there was none. */
int aemp_unexport_init(aemp_node *node, const char *module, const char *function);

/* aemp_spawn() flags. */
#define AEMP_SPAWN_LINK 1u    /* link `from` and the new process */
#define AEMP_SPAWN_MONITOR 2u /* `from` monitors the new process */

/*
 * The outcome of aemp_spawn(): err 0 and pid the new process (valid during
 * the call), monitor_ref the monitor's reference when AEMP_SPAWN_MONITOR was
 * asked (else NULL); or err an error and pid NULL: AEMP_EINVAL (the peer
 * refused the request as badarg or badopt), AEMP_ETOOBIG (system_limit, or
 * this node's max_watches_per_peer reached before the answer came: a link
 * the answer made is broken with that reason, a monitor taken back),
 * AEMP_ENOTSUP (the peer cannot spawn), AEMP_EPROTO (an answer that makes
 * no sense), AEMP_ENOENT (`from` died before the answer came: a link the
 * answer made is broken with from's exit reason, a monitor taken back), the
 * error of the connection to the peer when it could not be made or was
 * lost before the answer (AEMP_ENONODE, AEMP_ECONNREFUSED, AEMP_EAUTH,
 * AEMP_ETIMEDOUT, AEMP_EIO, ...), or AEMP_ECLOSED when this node is closed
 * first.
 */
typedef void (*aemp_spawn_cb)(aemp_node *node, int err, const aemp_addr *pid,
                              const aemp_addr *monitor_ref, void *arg);

/*
 * Spawn Module:Function(Args...) on node peer (an Erlang node runs the
 * function in a new process, a C node the init function exported under
 * that name), as Erlang's spawn_request/5 does. peer may be this node: the
 * new port is made, linked and monitored and its init run before this call
 * returns (a function not exported gives a port that dies with undef), and
 * cb follows from the loop as for any node. args is the argument
 * list (a proper list term, copied). flags: AEMP_SPAWN_LINK links local port
 * `from` and the new process (when either dies abnormally the other dies
 * with that reason); AEMP_SPAWN_MONITOR makes `from` monitor it: its death
 * delivers {'DOWN', Ref, process, Pid, Reason} to from, as aemp_monitor()
 * does, Ref the monitor_ref the callback got. The group leader of an Erlang
 * process spawned so is a port of this node that answers its io requests
 * (output is accepted and dropped, input is at end of file).
 *
 * Returns at once. On 0, cb (may be NULL) is called exactly once, from the
 * loop (never inside this call), with the outcome; arg belongs to the
 * caller and may be freed after that call. When the node is closed first,
 * cb is called with AEMP_ECLOSED inside aemp_node_close(). On an error
 * return cb is never called: AEMP_EINVAL (bad argument, peer not
 * `alive@host`, args not a proper list), AEMP_ENOENT (from is
 * not a live local port), AEMP_ENOTSUP (the connection to peer is up and
 * the peer cannot spawn), AEMP_ECLOSED (the node is closing), AEMP_EBUSY
 * (as aemp_send()), AEMP_ETOOBIG (a link or monitor asked and the node
 * holds max_watches_per_peer with peer: aemp_node_config), AEMP_ENOMEM.
 */
int aemp_spawn(aemp_node *node, aemp_port from, const char *peer, const char *module,
               const char *function, const aemp_term *args, unsigned flags, aemp_spawn_cb cb,
               void *arg);

/* ------------------------------------------------------------------ */
/* Functions callable from Erlang (rpc:call, erpc:call, rpc:cast)      */
/* ------------------------------------------------------------------ */

/* What an exported function's result means (its return value). */
enum aemp_rpc_kind {
    AEMP_RPC_RETURN = 0, /* result is the return value */
    AEMP_RPC_ERROR = 1,  /* an error: rpc:call gives {badrpc, {'EXIT', {Result, Stack}}},
                          * erpc:call raises error:{exception, Result, Stack} */
    AEMP_RPC_THROW = 2,  /* thrown: rpc:call returns Result, erpc:call throws Result */
    AEMP_RPC_EXIT = 3,   /* an exit: rpc:call gives {badrpc, {'EXIT', Result}},
                          * erpc:call exits with {exception, Result} */
};

/* A C function callable as Module:Function(Args...) from Erlang. args is
 * the argument list (a proper list; valid during the call). Append exactly
 * one term to result (empty on entry) and return an aemp_rpc_kind. The
 * export's arg belongs to the caller: it is passed to cb only, and may be
 * freed once aemp_unexport() has returned (outside cb) or the node is
 * closed. */
typedef int (*aemp_fun_cb)(aemp_node *node, const aemp_term *args, aemp_buf *result, void *arg);

/*
 * Make cb callable from Erlang as Module:Function with any number of
 * arguments: rpc:call(Node, Module, Function, Args) and erpc:call return
 * its result; rpc:cast runs it and drops the result. Re-exporting replaces
 * the callback. Only exported functions can be run remotely: a call of
 * anything else is answered with error undef, as Erlang answers a call of
 * an undefined function (the node is always in AEMP's "secure" mode).
 */
int aemp_export(aemp_node *node, const char *module, const char *function, aemp_fun_cb cb,
                void *arg);
/* Withdraw an export; AEMP_ENOENT if there was none. */
int aemp_unexport(aemp_node *node, const char *module, const char *function);

/* ------------------------------------------------------------------ */
/* Calls into other nodes                                              */
/* ------------------------------------------------------------------ */

/*
 * The answer to a call. status is an aemp_rpc_kind with result its value
 * (AEMP_RPC_RETURN), error reason, thrown term or exit reason, or a negative
 * error with result NULL unless said otherwise: AEMP_ETIMEDOUT (no answer
 * within the timeout; a late answer is dropped), AEMP_ENOCONN (the
 * connection to the node was lost, or could not be made; result is the atom
 * noconnection), AEMP_ECLOSED (the node was closed first). result is valid
 * during the call only (copy it with aemp_buf_put_term()).
 *
 * cb is called exactly once per call that returned 0, always from the loop:
 * never inside the call that started it, so arg may be freed in cb. When
 * the node is closed, calls still waiting get AEMP_ECLOSED from
 * aemp_node_close()'s loop turns, before its closed_cb; the node must not
 * be used in that cb.
 */
typedef void (*aemp_call_cb)(aemp_node *node, int status, const aemp_term *result, void *arg);

/*
 * Call module:function(args...) on node peer, as erpc:call/5: a spawn
 * request of erpc:execute_call/4 with a monitor, the answer taken from the
 * process's exit reason. args is a proper list (copied). On an Erlang node
 * any function can be called; on an aemp node, those it exported.
 * cb gets, as erpc:call returns or raises:
 *   AEMP_RPC_RETURN   the value;
 *   AEMP_RPC_THROW    the thrown term;
 *   AEMP_RPC_EXIT     the exit reason R (erpc raises exit:{exception, R}),
 *                     or {signal, R} when the process was killed by an exit
 *                     signal R (erpc raises exit:{signal, R});
 *   AEMP_RPC_ERROR    the error reason (erpc raises error:{exception, R,
 *                     Stack}; the stack is not given), or {erpc, Reason} when
 *                     erpc raises error:{erpc, Reason}: the node refused the
 *                     spawn request (e.g. {erpc, notsup} from a node that
 *                     cannot run erpc, {erpc, badarg}) or the function could
 *                     not be applied to args ({erpc, system_limit});
 *   AEMP_ENOCONN      the connection was lost before the answer (erpc raises
 *                     error:{erpc, noconnection});
 *   AEMP_ETIMEDOUT    no answer within timeout_ms (0: wait without limit).
 *                     As erpc does, the remote process is not killed: the
 *                     request is abandoned (no monitor or answer follows)
 *                     and it runs to its end.
 * Output of the remote function (io requests to its group leader, the
 * node's io service) is answered ok and dropped.
 * Returns 0, or AEMP_EINVAL (bad argument, args not a proper list, peer not
 * a node name or this node), AEMP_ECLOSED, AEMP_EBUSY, AEMP_ENOMEM; then cb
 * is never called.
 */
int aemp_call(aemp_node *node, const char *peer, const char *module, const char *function,
              const aemp_term *args, unsigned timeout_ms, aemp_call_cb cb, void *arg);

/*
 * Call a gen_server (or any process that answers OTP's calls), as
 * gen_server:call/3: the server (a pid or a registered name, on this node or
 * another) is monitored, gets {'$gen_call', {Pid, [alias|Mref]}, request}
 * and answers {[alias|Mref], Reply} to the alias Mref, as OTP 24+ does. cb
 * gets AEMP_RPC_RETURN with Reply; AEMP_RPC_EXIT with the server's exit
 * reason when it dies first (noproc: there is no such process); AEMP_ENOCONN
 * when the connection to its node is lost (gen_server:call exits with
 * {nodedown, Node}); AEMP_ETIMEDOUT when timeout_ms (0: no limit) passes.
 * After the answer, the death or the timeout the alias is removed: a late
 * reply is dropped. Returns 0, AEMP_EINVAL, AEMP_ECLOSED, AEMP_EBUSY or
 * AEMP_ENOMEM (then cb is never called).
 */
int aemp_gen_call(aemp_node *node, const aemp_addr *server, const aemp_term *request,
                  unsigned timeout_ms, aemp_call_cb cb, void *arg);

/*
 * Answer a gen_server:call made to a port: `from` is the From of the
 * {'$gen_call', From, Request} message the port received ({Pid, Tag}); reply
 * is sent as {Tag, reply}, to the alias in Tag when it holds one (Tag
 * [alias|Alias] or [[alias|Alias]|_], OTP 24 to 29) and to Pid otherwise (a
 * plain reference, as OTP sends for local calls without timeout). from and
 * reply are copied. The sender is the port whose callback runs, if any.
 * Returns 0, AEMP_EINVAL (from is not {Pid, Tag}), AEMP_ECLOSED, AEMP_EBUSY.
 */
int aemp_gen_reply(aemp_node *node, const aemp_term *from, const aemp_term *reply);

/*
 * AEMP's cal: send msg to port `to` (pid or registered name, anywhere)
 * with a fresh reply port's pid added as its last element ({Tag, A} becomes
 * {Tag, A, ReplyPid}; a message that is not a tuple becomes {Msg,
 * ReplyPid}); the first message the reply port gets is the answer
 * (AEMP_RPC_RETURN, the whole message). With timeout_ms, AEMP_ETIMEDOUT
 * when it passes first. With timeout_ms 0, the target is monitored instead:
 * its death before an answer gives AEMP_RPC_EXIT with the exit reason
 * (noproc if it is not there), a lost connection AEMP_ENOCONN. The reply
 * port is closed after the answer (later messages to it are dropped).
 * Returns 0, AEMP_EINVAL, AEMP_ECLOSED, AEMP_EBUSY or AEMP_ENOMEM (then cb is
 * never called).
 */
int aemp_cal(aemp_node *node, const aemp_addr *to, const aemp_term *msg, unsigned timeout_ms,
             aemp_call_cb cb, void *arg);

/* ------------------------------------------------------------------ */
/* Families of ports: OTP pg groups                                    */
/* ------------------------------------------------------------------ */

/*
 * The node is a peer of OTP `pg` scopes (aemp_node_config.pg_scopes,
 * default `aemp`) on every node it connects to, Erlang or C: a family is
 * the pg group that is the atom of its name (a binary when the name is
 * longer than 255 characters), so pg:get_members(aemp, Family) on an
 * Erlang node lists the ports that joined it, and this node sees the
 * processes that joined it there. Groups that are atoms or binaries of the
 * same text are one family. Family names are UTF-8 strings of 1 to 1000
 * bytes (AEMP_EINVAL otherwise). docs/database.md.
 */

/* Make local port `port` a member of family in every scope. A port may
 * join a family several times (as in pg): it stays a member until it left
 * as often, or dies (its memberships end with it, told to every peer).
 * AEMP_ENOENT (port not a live local port), AEMP_ENOTSUP (no scope),
 * AEMP_ECLOSED, AEMP_ENOMEM. */
int aemp_pg_join(aemp_node *node, const char *family, aemp_port port);
/* Undo one aemp_pg_join(); AEMP_ENOENT if port is not a member. */
int aemp_pg_leave(aemp_node *node, const char *family, aemp_port port);
/* The members of family as this node sees them: local ports and processes
 * of other nodes, each once, in scope `scope` (NULL: in any scope). Up to
 * max of them go to out (in no particular order); returns how many there
 * are (more than max when out was too small), or AEMP_EINVAL, AEMP_ENOENT
 * (scope is not one of the node's), AEMP_ENOTSUP (no scope), AEMP_ENOMEM.
 * A process of another node is seen from when its node's scope told this
 * node (on connecting, then every join) until it leaves or the connection
 * to its node is lost. */
int aemp_pg_members(aemp_node *node, const char *scope, const char *family, aemp_addr *out,
                    size_t max);
/* Distributed database (c-db; docs/database.md)                       */
/* ------------------------------------------------------------------ */

/*
 * AEMP's database: DB[family][subkey] = value, shared by every node of the
 * cluster that runs it (C nodes, and Erlang or Elixir nodes running the
 * `aemp` application). Families and subkeys are UTF-8 strings, values any
 * term. Each node owns the entries it sets (its share); a node's share
 * vanishes from every other node's view when it goes down. Two nodes may
 * set the same subkey: the visible value is the entry with the greatest
 * {Stamp, OwnerNode} (Lamport stamps, docs/database.md), the same on every
 * node. Replication runs over the node's `aemp_db` service: peers exchange
 * their shares when a connection comes up and their changes after that.
 *
 * Strings given to these calls are NUL-terminated UTF-8 (at most
 * AEMP_DB_MAXKEY bytes); values are copied. Queries and monitors call back
 * from the loop, never inside the call that started them.
 */

/* Longest family or subkey, in bytes. */
#define AEMP_DB_MAXKEY 65535

/* A guard: a handle that undoes what made it when released (the entry of
 * aemp_db_set()/aemp_db_reg() is deleted, the monitor of aemp_db_mon()
 * stops). A value; id 0 is no guard. A guard not released lives as long as
 * the node. */
typedef struct aemp_guard {
    uint64_t id;
} aemp_guard;
/* Release a guard: AEMP_ENOENT if it was released already (or its entry's
 * port died); releasing id 0 does nothing and returns 0. */
int aemp_guard_release(aemp_node *node, aemp_guard guard);

/* One visible entry of a family. subkey is NUL-terminated (subkey_len
 * bytes; one set from Erlang may hold NUL bytes), value the winning
 * entry's value, owner the node that set it (its node name, or "" for a
 * pg member without an entry), stamp its Lamport stamp (0 for a pg
 * member). All valid during the callback only. */
typedef struct aemp_db_entry {
    const char *subkey;
    size_t subkey_len;
    aemp_term value;
    const char *owner;
    uint64_t stamp;
} aemp_db_entry;

/* A family as a callback sees it (valid during the callback only). It is
 * live: a change the callback makes (aemp_db_set, ...) shows at once, and
 * entries read before it may then be stale. */
typedef struct aemp_db_view aemp_db_view;
/* The family's name. */
const char *aemp_db_view_family(const aemp_db_view *view);
/* How many entries the family has. */
size_t aemp_db_view_count(const aemp_db_view *view);
/* The i-th entry (0 <= i < count; order arbitrary): 0, or AEMP_EINVAL past
 * the end. */
int aemp_db_view_at(const aemp_db_view *view, size_t i, aemp_db_entry *out);
/* The entry of subkey: 0, or AEMP_ENOENT. */
int aemp_db_view_get(const aemp_db_view *view, const char *subkey, aemp_db_entry *out);

/*
 * db_set: set family/subkey to value (copied) in this node's share, and
 * tell every peer. Replaces this node's earlier value of that subkey. With
 * guard non-NULL, *guard deletes the entry when released (if it still
 * holds this value: a later set or del of the subkey makes the guard
 * release nothing). Returns 0, AEMP_EINVAL (empty or too long strings, a
 * malformed value), AEMP_ECLOSED, AEMP_ENOMEM.
 */
int aemp_db_set(aemp_node *node, const char *family, const char *subkey, const aemp_term *value,
                aemp_guard *guard);
/* db_del: delete this node's entry family/subkey (another node's entry of
 * the subkey, if any, becomes visible). AEMP_ENOENT if this node has none. */
int aemp_db_del(aemp_node *node, const char *family, const char *subkey);
/*
 * db_reg: set family/<port ID of port> (aemp_addr_format of its pid) to
 * value (NULL: the atom `undefined`), deleted when the port dies; the port
 * also joins the pg family of that name (aemp_pg_join: the OTP pg group in
 * every scope of pg_scopes; no scope, no join; a failure is logged). port
 * id 0 means $SELF. guard as aemp_db_set(), and its release also leaves the
 * pg group (aemp_pg_leave). AEMP_ENOENT if port is not a live local port;
 * else as aemp_db_set().
 */
int aemp_db_reg(aemp_node *node, const char *family, aemp_port port, const aemp_term *value,
                aemp_guard *guard);

/* The answers to the queries: status 0 and the family (empty when nobody
 * set anything in it), or AEMP_ECLOSED (the node was closed first; called
 * inside aemp_node_close() with nothing else). Valid during the call only. */
typedef void (*aemp_db_family_cb)(aemp_node *node, int status, const aemp_db_view *view, void *arg);
typedef void (*aemp_db_keys_cb)(aemp_node *node, int status, const char *const *keys, size_t n,
                                void *arg);
typedef void (*aemp_db_values_cb)(aemp_node *node, int status, const aemp_term *values, size_t n,
                                  void *arg);
/* db_family, db_keys, db_values: cb once, from the loop, with the family's
 * entries, its subkeys, or its values (in the same order as the subkeys)
 * as this node sees them then. Returns 0, AEMP_EINVAL, AEMP_ECLOSED or
 * AEMP_ENOMEM (then cb is never called). */
int aemp_db_family(aemp_node *node, const char *family, aemp_db_family_cb cb, void *arg);
int aemp_db_keys(aemp_node *node, const char *family, aemp_db_keys_cb cb, void *arg);
int aemp_db_values(aemp_node *node, const char *family, aemp_db_values_cb cb, void *arg);
/* The family as this node sees it now, for code that must answer at once
 * (an exported function): cb runs inside this call, with status 0. Returns
 * 0, AEMP_EINVAL or AEMP_ECLOSED (then cb is not called). */
int aemp_db_read(aemp_node *node, const char *family, aemp_db_family_cb cb, void *arg);

/* What changed: subkeys added (visible now, not before), changed (another
 * value won) and deleted; valid during the call only. (A subkey holding a
 * NUL byte, which only Erlang can set, reads as its part before the NUL.) */
typedef struct aemp_db_diff {
    const char *const *added;
    size_t nadded;
    const char *const *changed;
    size_t nchanged;
    const char *const *deleted;
    size_t ndeleted;
} aemp_db_diff;
typedef void (*aemp_db_mon_cb)(aemp_node *node, const aemp_db_view *view, const aemp_db_diff *diff,
                               void *arg);
/*
 * db_mon: watch a family. cb runs once promptly from the loop with the
 * whole family (every subkey in added; also for an empty family), then
 * from the loop after each change with the changes since the last call
 * (changes made in one turn of the loop come together; a subkey set and
 * deleted in between is not told). The family also shows the members of
 * the pg group of that name that have no entry (value `undefined`, owner
 * ""). *guard stops it when released (no call after that, even one
 * already due); arg may then be freed. Returns 0, AEMP_EINVAL,
 * AEMP_ECLOSED or AEMP_ENOMEM.
 */
int aemp_db_mon(aemp_node *node, const char *family, aemp_db_mon_cb cb, void *arg,
                aemp_guard *guard);

/* ------------------------------------------------------------------ */
/* TLS certificates                                                    */
/* ------------------------------------------------------------------ */

/*
 * Make certificates for TLS distribution in dir (created with mode 0700 if
 * missing): a CA (dir/ca.pem, dir/ca.key; reused when present, so several
 * nodes can share it) and a certificate for a node signed by that CA
 * (dir/NAME.pem, dir/NAME.key) valid for each entry of hosts (host names
 * and IP addresses; hosts[0] is also its common name). EC P-256 keys, 10
 * years validity; key files have mode 0600.
 */
int aemp_tls_gencert(const char *dir, const char *name, const char *const *hosts, size_t nhosts);

/* ------------------------------------------------------------------ */
/* Profiles                                                            */
/* ------------------------------------------------------------------ */

/*
 * A profile is a named node configuration kept in a file, as AnyEvent::MP's
 * rc-file profiles: `[name]` sections of `key = value` lines (docs/profiles.md).
 * The file is $AEMP_PROFILES, else $XDG_CONFIG_HOME/aemp/profiles, else
 * ~/.config/aemp/profiles. Because it may hold a secret, it is read only if
 * it is a regular file accessible by its owner alone (as ~/.erlang.cookie),
 * and written with mode 0600 (new directories 0700) by replacing it
 * atomically. Errors in the file are logged with file:line.
 */
typedef struct aemp_profile aemp_profile;

/* Length of a secret made by aemp_profile_gensecret(). */
#define AEMP_PROFILE_SECRET_LEN 32

/* The profile file used when a file argument is NULL, into out (always
 * NUL-terminated). Returns 0, AEMP_ETOOBIG if it does not fit, or
 * AEMP_ENOENT if no home directory is known. */
int aemp_profile_path(char *out, size_t size);

/* Name of the i-th profile key (parent, nodeid, secret, listen_port, ...),
 * or NULL past the last one: for listing keys. */
const char *aemp_profile_key(size_t i);

/*
 * Load profile name from file (NULL: the default file), with the settings
 * it inherits through its `parent` chain (a profile's own keys win over its
 * parent's). On success *out owns the profile; free it with
 * aemp_profile_free(). Errors: AEMP_ENOENT (no such file or profile),
 * AEMP_EINVAL (syntax error, unknown key, bad value, missing parent, parent
 * cycle, chain deeper than 16; all logged with file:line), AEMP_EAUTH (the
 * file is not a regular file private to its owner), AEMP_ETOOBIG (file over
 * 1 MiB), AEMP_EIO, AEMP_ENOMEM.
 */
int aemp_profile_load(const char *file, const char *name, aemp_profile **out);

/*
 * Set in cfg every field the profile defines (nodeid -> name, secret ->
 * cookie, tls_verify no -> tls_no_verify 1, the rest by their names); leave
 * the other fields as they are. As in AnyEvent::MP, the profile wins: call it
 * after filling cfg with your own settings. String fields then point into p:
 * keep p until aemp_node_create() has returned, which copies the name and
 * cookie and reads the TLS files; p may be freed after that.
 * Returns 0 or AEMP_EINVAL (NULL argument).
 */
int aemp_profile_apply(const aemp_profile *p, aemp_node_config *cfg);

/* The resolved value of key (own or inherited; for "parent", the profile's
 * own parent), or NULL if unset or not a key. Valid until aemp_profile_free. */
const char *aemp_profile_get(const aemp_profile *p, const char *key);

/* Free a profile (NULL is fine). */
void aemp_profile_free(aemp_profile *p);

/*
 * Set key to value in profile name of file (NULL: the default file),
 * creating the file and the profile as needed; value NULL removes the key.
 * The value is validated as on loading (numbers in range, absolute TLS
 * paths, tls_verify yes or no). Errors: AEMP_EINVAL (bad name, key or value,
 * or a parent cycle; logged), AEMP_ENOENT (value NULL and the key or profile
 * is absent, or the parent named does not exist), and the errors of
 * aemp_profile_load() for an existing file, which is then left unchanged.
 */
int aemp_profile_set(const char *file, const char *name, const char *key, const char *value);

/* Remove profile name with all its keys. AEMP_ENOENT if absent,
 * AEMP_EINVAL if another profile names it as parent (logged); otherwise as
 * aemp_profile_set(). */
int aemp_profile_delete(const char *file, const char *name);

/* Write a random secret (cookie) of AEMP_PROFILE_SECRET_LEN characters from
 * [A-Za-z0-9], NUL-terminated, into out. AEMP_ETOOBIG if size is less than
 * AEMP_PROFILE_SECRET_LEN + 1, AEMP_EIO if no randomness is available. */
int aemp_profile_gensecret(char *out, size_t size);

/* ------------------------------------------------------------------ */
/* EPMD                                                                */
/* ------------------------------------------------------------------ */

/* Ask the EPMD on host (NULL: localhost; port 0: $ERL_EPMD_PORT or 4369) for
 * its registrations. cb runs once from the loop with status 0 and the text
 * EPMD answered ("name foo at port 4711" lines), or a negative error. */
typedef void (*aemp_names_cb)(int status, const char *text, size_t len, void *arg);
int aemp_epmd_names(uv_loop_t *loop, const char *host, uint16_t epmd_port, aemp_names_cb cb,
                    void *arg);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif
#endif /* AEMP_H */
