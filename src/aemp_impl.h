/*
 * aemp_impl.h - the private aggregate header: internal interfaces between
 * the layers (util, term, epmd, dist, node). Internal non-static symbols use
 * the prefix aemp__. Nothing here is part of the public API.
 */
#ifndef AEMP_IMPL_H
#define AEMP_IMPL_H

#include "aemp.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* util: buffers, byte order, logging                                  */
/* ------------------------------------------------------------------ */

/* Make room for n more bytes; AEMP_ENOMEM on failure (b unchanged). */
int aemp__buf_reserve(aemp_buf *b, size_t n);
int aemp__buf_append(aemp_buf *b, const void *p, size_t n);
int aemp__buf_put_u8(aemp_buf *b, uint8_t v);
int aemp__buf_put_u16(aemp_buf *b, uint16_t v); /* big endian */
int aemp__buf_put_u32(aemp_buf *b, uint32_t v); /* big endian */
/* Drop the first n bytes (memmove of the rest). */
void aemp__buf_consume(aemp_buf *b, size_t n);
/* Keep the memory, forget the contents. */
static inline void aemp__buf_reset(aemp_buf *b)
{
    b->len = 0;
}

static inline uint16_t aemp__get_u16(const void *p)
{
    const uint8_t *s = (const uint8_t *)p;
    return (uint16_t)((s[0] << 8) | s[1]);
}
static inline uint32_t aemp__get_u32(const void *p)
{
    const uint8_t *s = (const uint8_t *)p;
    return ((uint32_t)s[0] << 24) | ((uint32_t)s[1] << 16) | ((uint32_t)s[2] << 8) | s[3];
}
static inline uint64_t aemp__get_u64(const void *p)
{
    const uint8_t *s = (const uint8_t *)p;
    return ((uint64_t)aemp__get_u32(s) << 32) | aemp__get_u32(s + 4);
}
static inline void aemp__put_u16(void *p, uint16_t v)
{
    uint8_t *d = (uint8_t *)p;
    d[0] = (uint8_t)(v >> 8);
    d[1] = (uint8_t)v;
}
static inline void aemp__put_u32(void *p, uint32_t v)
{
    uint8_t *d = (uint8_t *)p;
    d[0] = (uint8_t)(v >> 24);
    d[1] = (uint8_t)(v >> 16);
    d[2] = (uint8_t)(v >> 8);
    d[3] = (uint8_t)v;
}
static inline void aemp__put_u64(void *p, uint64_t v)
{
    uint8_t *d = (uint8_t *)p;
    aemp__put_u32(d, (uint32_t)(v >> 32));
    aemp__put_u32(d + 4, (uint32_t)v);
}

/* Bounded string copy: always NUL-terminates when size > 0; returns
 * strlen(src) (truncated if >= size), like strlcpy. */
size_t aemp__strlcpy(char *dst, const char *src, size_t size);
/* Room for one more element of size `size` in the array whose pointer is
 * at arr (n used of *cap): the capacity doubles, from `first`. The
 * pointer is read and written as bytes, as it may be of any object type.
 * 0 or AEMP_ENOMEM (the array is unchanged). */
int aemp__grow(void *arr, size_t n, size_t *cap, size_t size, size_t first);
/* Room for want elements of size at *arr (a pointer to the array's
 * pointer; capacity *cap, doubled from 4 until it holds want): 0 or
 * AEMP_ENOMEM, the array unchanged. */
int aemp__reserve(void *arr, size_t want, size_t *cap, size_t size);

/* Whether host names this machine: gethostname() or its part before the
 * first dot, ignoring case. Resolvers fall back to 127.0.0.1 for such a
 * host when it does not resolve, as erl does (inet:gethostbyname_self). */
bool aemp__host_is_self(const char *host);

/* printf-style log line at level; cheap when the level is filtered out. */
void aemp__log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define AEMP_LOGE(...) aemp__log(AEMP_LOG_ERROR, __VA_ARGS__)
#define AEMP_LOGW(...) aemp__log(AEMP_LOG_WARN, __VA_ARGS__)
#define AEMP_LOGI(...) aemp__log(AEMP_LOG_INFO, __VA_ARGS__)
#define AEMP_LOGD(...) aemp__log(AEMP_LOG_DEBUG, __VA_ARGS__)

/* Fill p with n cryptographically random bytes (OpenSSL). */
int aemp__random(void *p, size_t n);

/* ------------------------------------------------------------------ */
/* term: validation of received terms                                  */
/* ------------------------------------------------------------------ */

/* Deepest nesting accepted in a term by default (tuples, lists, maps, funs,
 * improper list tails all count). ei recurses; this keeps it safe. A node's
 * limit for received messages is its max_term_depth. */
#define AEMP__TERM_MAX_DEPTH 10000
/* The most seeds a node takes (aemp_node_config.seeds, profile key seeds). */
#define AEMP__MAX_SEEDS 1024
/* Deepest term aemp_term_print() and aemp_term_format() walk into. */
#define AEMP__PRINT_MAX_DEPTH 512

/*
 * Check that buf[0..len) starts with one well-formed term (no version byte)
 * that ei can decode safely: every length is inside the buffer, nesting is at
 * most AEMP__TERM_MAX_DEPTH, tags are known (ATOM_CACHE_REF and compressed
 * terms are refused), atoms fit AEMP_MAXATOMLEN. Iterative: bounded stack
 * whatever the input. On success *used is the term's size in bytes.
 * Returns 0, AEMP_ETOOBIG (nested deeper than allowed: the rest unchecked)
 * or AEMP_EBADTERM.
 */
int aemp__term_validate(const char *buf, size_t len, size_t *used);
/* Is t exactly one well-formed term (data set, nothing after it)? What the
 * public calls that take a term (a message, a reason) check it with. */
bool aemp__term_whole(const aemp_term *t);
/*
 * View the atom at p (any of the four atom tags) within len bytes: *s and *n
 * give its text, *latin1 is 1 for ATOM_EXT / SMALL_ATOM_EXT (bytes are
 * latin-1, not UTF-8), *total is the encoded size. AEMP_ENOMATCH if p does
 * not hold a complete atom.
 */
int aemp__term_atom_view(const char *p, size_t len, const char **s, size_t *n, int *latin1,
                         size_t *total);
/* The same with another depth limit. */
int aemp__term_validate_depth(const char *buf, size_t len, size_t *used, unsigned max_depth);
/* The same, for a term that follows a distribution header: ATOM_CACHE_REF
 * with an index below nrefs is accepted where an atom may stand, and the
 * offset of each one is appended to refpos (u32 each, in order), so the
 * caller can replace them by the atoms before any ei decoder sees the term.
 * The offset of each NEW_FUN_EXT is appended too, or'ed with
 * AEMP__TERM_FUN_MARK: its Size field must grow with the references inside. */
#define AEMP__TERM_FUN_MARK 0x80000000u
int aemp__term_validate_refs(const char *buf, size_t len, size_t *used, unsigned nrefs,
                             aemp_buf *refpos, unsigned max_depth);
/* The sending side of the atom cache. aemp__term_find_atom: the offsets
 * (u32 each, in order, into pos) of every atom of the whole term buf whose
 * text is atom (alen bytes), with each NEW_FUN_EXT's or'ed with
 * AEMP__TERM_FUN_MARK as above; AEMP_EBADTERM if buf is not one valid
 * term. aemp__term_atoms_to_ref: buf with those atoms as ATOM_CACHE_REF
 * idx, into out (replaced), the Size of each fun shrunk by what its
 * atoms shrank. */
int aemp__term_find_atom(const char *buf, size_t len, const char *atom, size_t alen, aemp_buf *pos);
int aemp__term_atoms_to_ref(const char *buf, size_t len, const aemp_buf *pos, uint8_t idx,
                            aemp_buf *out);
/* The term t (tlen bytes) with each atom or reference at pos (offsets as
 * recorded above, funs marked) rewritten, into out (replaced): put writes
 * the new item for the one at t + at and says in *old how many bytes that
 * took in t; delta(t, at, arg) is what the item's size changed by, and the
 * Size of every NEW_FUN_EXT is made right with it. AEMP_ETOOBIG if one
 * would leave 32 bits, or AEMP_ENOMEM. Both sides of the atom cache. */
typedef int (*aemp__term_put_fn)(aemp_buf *out, const char *t, uint32_t at, void *arg, size_t *old);
typedef int64_t (*aemp__term_delta_fn)(const char *t, uint32_t at, void *arg);
int aemp__term_splice(const char *t, size_t tlen, const aemp_buf *pos, aemp__term_put_fn put,
                      aemp__term_delta_fn delta, void *arg, aemp_buf *out);

/* Elements of t if it is a proper list (NIL_EXT, STRING_EXT, or LIST_EXT
 * ending in []), else -1. */
int64_t aemp__term_list_len(const aemp_term *t);
/* Append t to out as a list of its elements: Erlang sends a list of small
 * integers as a byte string (STRING_EXT), which becomes LIST_EXT of
 * SMALL_INTEGER_EXT then NIL_EXT; anything else is copied as it is. For
 * callers promised a proper list. */
int aemp__term_as_list(const aemp_term *t, aemp_buf *out);

/* ------------------------------------------------------------------ */
/* term: the external term format tags we read and write ourselves     */
/* ------------------------------------------------------------------ */

/* Tags of Erlang's external term format (erts/doc erl_ext_dist), for the
 * codec paths that do not go through ei (addresses, control messages,
 * distribution headers). */
enum aemp__ext {
    AEMP__EXT_VERSION = 131,           /* first byte of a term on its own */
    AEMP__EXT_DIST_HEADER = 68,        /* after 131: a distribution header */
    AEMP__EXT_SMALL_INTEGER = 97,      /* u8 */
    AEMP__EXT_INTEGER = 98,            /* s32 */
    AEMP__EXT_ATOM_LATIN1 = 100,       /* ATOM_EXT: u16 length, latin-1 */
    AEMP__EXT_REFERENCE = 101,         /* old reference (refused) */
    AEMP__EXT_PID = 103,               /* PID_EXT: node, u32 id, u32 serial, u8 creation */
    AEMP__EXT_SMALL_TUPLE = 104,       /* u8 arity */
    AEMP__EXT_LARGE_TUPLE = 105,       /* u32 arity */
    AEMP__EXT_NIL = 106,               /* [] */
    AEMP__EXT_STRING = 107,            /* u16 length, bytes: a list of small integers */
    AEMP__EXT_LIST = 108,              /* u32 length, elements, tail */
    AEMP__EXT_BINARY = 109,            /* u32 length, bytes */
    AEMP__EXT_SMALL_BIG = 110,         /* u8 digits, sign, little-endian digits */
    AEMP__EXT_NEW_REFERENCE = 114,     /* u16 words, node, u8 creation, words */
    AEMP__EXT_SMALL_ATOM_LATIN1 = 115, /* u8 length, latin-1 */
    AEMP__EXT_ATOM_UTF8 = 118,         /* u16 length, UTF-8 */
    AEMP__EXT_SMALL_ATOM_UTF8 = 119,   /* u8 length, UTF-8 */
    AEMP__EXT_NEW_PID = 88,            /* node, u32 id, u32 serial, u32 creation */
    AEMP__EXT_NEWER_REFERENCE = 90,    /* u16 words, node, u32 creation, words */
    AEMP__EXT_PASS_THROUGH = 112,      /* first byte of a packet without a header */
};

/* ------------------------------------------------------------------ */
/* term: interned names and compact addresses                          */
/* ------------------------------------------------------------------ */

/* Bounds of the process-wide table of interned names (node names and
 * registered names held by addresses): names and bytes of text. */
#define AEMP__INTERN_MAX (1u << 20)
#define AEMP__INTERN_MAX_BYTES (64u << 20)

/* The handle of the text s[0..n) (added if new), or 0 when the table is full
 * or memory is short. The same text always gives the same handle. */
uint32_t aemp__intern(const char *s, size_t n);
/* The handle of s[0..n) if it is interned, else 0 (nothing is added). */
uint32_t aemp__intern_find(const char *s, size_t n);
/* The NUL-terminated text of handle h (and its length), NULL if h is none. */
const char *aemp__intern_text(uint32_t h, size_t *len);

/* Words of a reference we hold (NEWER_REFERENCE_EXT allows up to 5). */
#define AEMP__REF_MAX_WORDS 5

/* A pid of node (handle) from a 64-bit local id: ID the low, Serial the high
 * 32 bits of NEW_PID_EXT. */
static inline void aemp__addr_pid(aemp_addr *a, uint32_t node, uint32_t creation, uint64_t id)
{
    memset(a, 0, sizeof *a);
    a->kind = AEMP_ADDR_PID;
    a->node = node;
    a->creation = creation;
    a->w[0] = (uint32_t)id;
    a->w[1] = (uint32_t)(id >> 32);
}
static inline uint64_t aemp__addr_pid_id(const aemp_addr *a)
{
    return (uint64_t)a->w[1] << 32 | a->w[0];
}

/* Append the encoding of a (no version byte): a pid as NEW_PID_EXT, a
 * reference or alias as NEWER_REFERENCE_EXT, a name as its atom. */
int aemp__enc_addr(aemp_buf *b, const aemp_addr *a);
/* Append an atom (UTF-8 text s[0..n)). */
int aemp__enc_atom_text(aemp_buf *b, const char *s, size_t n);
/* Append an atom given by its interned handle. */
int aemp__enc_atom_handle(aemp_buf *b, uint32_t h);
/* Decode the pid (NEW_PID_EXT, PID_EXT) or reference (NEWER_REFERENCE_EXT,
 * NEW_REFERENCE_EXT) or atom (as a name on node `node`) at p[0..len) into
 * *a, its encoded size into *used. AEMP_ENOMATCH if p holds another type,
 * AEMP_ETOOBIG if the node name cannot be interned (table full). `want` is
 * a mask of (1 << AEMP_ADDR_*) kinds accepted. */
int aemp__dec_addr(const char *p, size_t len, unsigned want, uint32_t node, aemp_addr *a,
                   size_t *used);
#define AEMP__WANT(kind) (1u << (kind))

/* ------------------------------------------------------------------ */
/* term: distribution control messages (one table: ctl.c)             */
/* ------------------------------------------------------------------ */

/* Control message tags (erts/doc erl_dist_protocol). */
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
    AEMP__CTL_MAX = 37,              /* one past the highest tag */
};

/* SPAWN_REPLY flags (the Flags element). */
#define AEMP__SPAWN_FLAG_LINK 1
#define AEMP__SPAWN_FLAG_MONITOR 2

/* What the table knows of a tag; NULL for a tag it does not know. */
struct aemp__ctl_info {
    uint8_t tag;
    uint8_t min_arity; /* elements of the control tuple, the tag included */
    bool payload;      /* a second term (message, reason, arguments) follows */
    const char *name;
};
const struct aemp__ctl_info *aemp__ctl_info(int64_t tag);
/* Its name, or "control message" for an unknown tag. */
const char *aemp__ctl_name(int64_t tag);

/*
 * Append the control tuple {Tag, Args...} to b, no version byte. spec names
 * each argument: 'a' const aemp_addr * (pid, reference, or a name as its
 * atom), 't' const aemp_term * (copied as is), 'A' const char * (an atom),
 * 'i' uint64_t (an integer), 'e' the empty atom '' (no argument consumed).
 * On error b is unchanged.
 */
int aemp__ctl_enc(aemp_buf *b, enum aemp__ctl tag, const char *spec, ...);

/* ------------------------------------------------------------------ */
/* epmd: protocol codec (pure), client, embedded server                */
/* ------------------------------------------------------------------ */

/* EPMD request and response codes (erts/doc epmd protocol). */
enum aemp__epmd_code {
    AEMP__EPMD_ALIVE2_REQ = 120,
    AEMP__EPMD_ALIVE2_RESP = 121,
    AEMP__EPMD_ALIVE2_X_RESP = 118,
    AEMP__EPMD_PORT_PLEASE2_REQ = 122,
    AEMP__EPMD_PORT2_RESP = 119,
    AEMP__EPMD_NAMES_REQ = 110,
};

/* Default EPMD port, and the port in effect ($ERL_EPMD_PORT or 4369) when
 * configured is 0. */
#define AEMP__EPMD_DEFAULT_PORT 4369
uint16_t aemp__epmd_port(uint16_t configured);

/* Node-type byte and protocol numbers we register with. */
#define AEMP__EPMD_NODE_HIDDEN 72 /* 'H' */
#define AEMP__EPMD_NODE_NORMAL 77 /* 'M' */

/* Registration: connect to EPMD on 127.0.0.1:port and register alive with
 * listen_port (ALIVE2 v6, highest and lowest version 6), keeping the
 * connection open. If nothing answers, start an embedded EPMD server on that
 * port and register with it. If the connection is lost later (the EPMD or the
 * node embedding it died) retry after a short random delay: take over the
 * EPMD port if free, then register again. cb is called after each
 * registration attempt that completes: status 0 with the creation, or a
 * negative error (AEMP_EEXIST: name taken) — after an error on the first
 * attempt no retry is made. */
typedef struct aemp__epmd_reg aemp__epmd_reg;
typedef void (*aemp__epmd_reg_cb)(int status, uint32_t creation, void *arg);
int aemp__epmd_reg_start(uv_loop_t *loop, uint16_t epmd_port, const char *alive,
                         uint16_t listen_port, aemp__epmd_reg_cb cb, void *arg,
                         aemp__epmd_reg **out);
/* Unregister (close the connection) and stop any embedded server; done runs
 * once every handle is closed and the object is freed. cb is not called
 * after this. */
void aemp__epmd_reg_close(aemp__epmd_reg *r, void (*done)(void *arg), void *arg);
/* 1 if this registration currently runs the embedded EPMD server. */
int aemp__epmd_reg_is_server(const aemp__epmd_reg *r);

/* One-shot queries. cb is called exactly once, after all handles of the
 * query are closed: status 0 with the result, a negative error (AEMP_ENONODE
 * for an unknown alive name), or AEMP_ECLOSED after aemp__epmd_query_cancel. */
typedef struct aemp__epmd_query aemp__epmd_query;
typedef void (*aemp__epmd_port_cb)(int status, uint16_t port, void *arg);
typedef void (*aemp__epmd_names_cb)(int status, const char *text, size_t len, void *arg);
int aemp__epmd_port_please(uv_loop_t *loop, const char *host, uint16_t epmd_port, const char *alive,
                           aemp__epmd_port_cb cb, void *arg, aemp__epmd_query **out);
int aemp__epmd_names(uv_loop_t *loop, const char *host, uint16_t epmd_port, aemp__epmd_names_cb cb,
                     void *arg, aemp__epmd_query **out);
void aemp__epmd_query_cancel(aemp__epmd_query *q);

/* Embedded EPMD server (ALIVE2, PORT_PLEASE2, NAMES; a registration lives
 * as long as its connection). AEMP_EEXIST if the port is in use. */
typedef struct aemp__epmd_server aemp__epmd_server;
int aemp__epmd_server_start(uv_loop_t *loop, uint16_t port, aemp__epmd_server **out);
void aemp__epmd_server_close(aemp__epmd_server *s, void (*done)(void *arg), void *arg);

/* ------------------------------------------------------------------ */
/* dist: capability flags (one table: flags.c)                         */
/* ------------------------------------------------------------------ */

#define AEMP__DFLAG_PUBLISHED 0x1ULL
#define AEMP__DFLAG_ATOM_CACHE 0x2ULL
#define AEMP__DFLAG_EXTENDED_REFERENCES 0x4ULL
#define AEMP__DFLAG_DIST_MONITOR 0x8ULL
#define AEMP__DFLAG_FUN_TAGS 0x10ULL
#define AEMP__DFLAG_DIST_MONITOR_NAME 0x20ULL
#define AEMP__DFLAG_HIDDEN_ATOM_CACHE 0x40ULL
#define AEMP__DFLAG_NEW_FUN_TAGS 0x80ULL
#define AEMP__DFLAG_EXTENDED_PIDS_PORTS 0x100ULL
#define AEMP__DFLAG_EXPORT_PTR_TAG 0x200ULL
#define AEMP__DFLAG_BIT_BINARIES 0x400ULL
#define AEMP__DFLAG_NEW_FLOATS 0x800ULL
#define AEMP__DFLAG_UNICODE_IO 0x1000ULL
#define AEMP__DFLAG_DIST_HDR_ATOM_CACHE 0x2000ULL
#define AEMP__DFLAG_SMALL_ATOM_TAGS 0x4000ULL
#define AEMP__DFLAG_UTF8_ATOMS 0x10000ULL
#define AEMP__DFLAG_MAP_TAG 0x20000ULL
#define AEMP__DFLAG_BIG_CREATION 0x40000ULL
#define AEMP__DFLAG_SEND_SENDER 0x80000ULL
#define AEMP__DFLAG_BIG_SEQTRACE_LABELS 0x100000ULL
#define AEMP__DFLAG_EXIT_PAYLOAD 0x400000ULL
#define AEMP__DFLAG_FRAGMENTS 0x800000ULL
#define AEMP__DFLAG_HANDSHAKE_23 0x1000000ULL
#define AEMP__DFLAG_UNLINK_ID 0x2000000ULL
#define AEMP__DFLAG_MANDATORY_25_DIGEST 0x4000000ULL
#define AEMP__DFLAG_SPAWN (1ULL << 32)
#define AEMP__DFLAG_NAME_ME (2ULL << 32)
#define AEMP__DFLAG_V4_NC (4ULL << 32)
#define AEMP__DFLAG_ALIAS (8ULL << 32)

struct aemp__dflag {
    uint64_t bit;
    const char *name;
    int mandatory_since; /* OTP release that requires it (0: never) */
    bool offered;        /* we announce it */
    bool required;       /* we refuse peers without it */
};
/* The table, terminated by an entry with bit 0. */
extern const struct aemp__dflag aemp__dflags[];
uint64_t aemp__dflags_offered(void);
uint64_t aemp__dflags_required(void);
/* Names of the bits of `missing` into out (comma separated). */
void aemp__dflags_describe(uint64_t flags, char *out, size_t size);

/* ------------------------------------------------------------------ */
/* dist: handshake state machine (pure: bytes in, bytes out)           */
/* ------------------------------------------------------------------ */

enum aemp__hs_role { AEMP__HS_INITIATOR = 1, AEMP__HS_ACCEPTOR = 2 };

/* Acceptor's answer once it knows the peer's name (simultaneous connects). */
enum aemp__hs_decision {
    AEMP__HS_ACCEPT = 0,       /* "ok" */
    AEMP__HS_ACCEPT_SIMUL = 1, /* "ok_simultaneous": we drop our own attempt */
    AEMP__HS_REFUSE_SIMUL = 2, /* "nok": our own attempt wins */
    AEMP__HS_REFUSE_ALIVE = 3, /* "alive" is not supported: refuse ("not_allowed") */
    AEMP__HS_REFUSE = 4,       /* "not_allowed" */
};

/* Results of aemp__hs_input. */
enum aemp__hs_status {
    AEMP__HS_MORE = 1, /* need more input */
    AEMP__HS_DONE = 2, /* connected */
};

typedef int (*aemp__hs_decide_fn)(void *arg, const char *peer_name);

typedef struct aemp__hs {
    int role;
    int state;
    unsigned len_bytes; /* 2 for TCP, 4 under TLS */
    char my_name[AEMP_MAXNODELEN + 1];
    char cookie[256];
    uint32_t my_creation;
    uint64_t my_flags;
    /* initiator: the node we mean to reach (its name is checked) */
    char expect_name[AEMP_MAXNODELEN + 1];
    /* learned */
    char peer_name[AEMP_MAXNODELEN + 1];
    uint64_t peer_flags;
    uint32_t peer_creation;
    uint32_t my_challenge;
    uint32_t peer_challenge;
    /* acceptor: asked once the peer's name is known; NULL accepts */
    aemp__hs_decide_fn decide;
    void *decide_arg;
    /* why the handshake failed, for the log ("wrong cookie", ...) */
    char error[160];
} aemp__hs;

/* Prepare a handshake. cookie is copied; expect_name is required for the
 * initiator and ignored for the acceptor. */
int aemp__hs_init(aemp__hs *hs, int role, unsigned len_bytes, const char *my_name,
                  const char *cookie, uint32_t creation, uint64_t flags, const char *expect_name);
/* Initiator: append the first packet (send_name) to out. */
int aemp__hs_start(aemp__hs *hs, aemp_buf *out);
/*
 * Feed received bytes. Packets to send are appended to out (framed). Returns
 * AEMP__HS_MORE, AEMP__HS_DONE (then *consumed bytes belonged to the
 * handshake; the rest is distribution traffic) or a negative error with
 * hs->error set (AEMP_EAUTH wrong cookie, AEMP_EPROTO malformed, AEMP_ENOTSUP
 * missing flags or version, AEMP_ECONNREFUSED refused by peer). *consumed is
 * set in every case.
 */
int aemp__hs_input(aemp__hs *hs, const char *data, size_t len, size_t *consumed, aemp_buf *out);
/* The negotiated flags (ours AND the peer's) after AEMP__HS_DONE. */
static inline uint64_t aemp__hs_flags(const aemp__hs *hs)
{
    return hs->my_flags & hs->peer_flags;
}
/* The digest: MD5(cookie ++ decimal(challenge)). */
void aemp__hs_digest(const char *cookie, uint32_t challenge, uint8_t out[16]);

#endif /* AEMP_IMPL_H */
