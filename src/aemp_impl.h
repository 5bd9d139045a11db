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

/* Bounded string copy: always NUL-terminates when size > 0; returns
 * strlen(src) (truncated if >= size), like strlcpy. */
size_t aemp__strlcpy(char *dst, const char *src, size_t size);

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

/* Deepest nesting accepted in a received term (tuples, lists, maps, funs,
 * improper list tails all count). ei recurses; this keeps it safe. */
#define AEMP__TERM_MAX_DEPTH 512

/*
 * Check that buf[0..len) starts with one well-formed term (no version byte)
 * that ei can decode safely: every length is inside the buffer, nesting is at
 * most AEMP__TERM_MAX_DEPTH, tags are known (ATOM_CACHE_REF and compressed
 * terms are refused), atoms fit AEMP_MAXATOMLEN. Iterative: bounded stack
 * whatever the input. On success *used is the term's size in bytes.
 * Returns 0 or AEMP_EBADTERM.
 */
int aemp__term_validate(const char *buf, size_t len, size_t *used);
/* The same, for a term that follows a distribution header: ATOM_CACHE_REF
 * with an index below nrefs is accepted where an atom may stand, and the
 * offset of each one is appended to refpos (u32 each, in order), so the
 * caller can replace them by the atoms before any ei decoder sees the term.
 * The offset of each NEW_FUN_EXT is appended too, or'ed with
 * AEMP__TERM_FUN_MARK: its Size field must grow with the references inside. */
#define AEMP__TERM_FUN_MARK 0x80000000u
int aemp__term_validate_refs(const char *buf, size_t len, size_t *used, unsigned nrefs,
                             aemp_buf *refpos);

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
