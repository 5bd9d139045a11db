/*
 * epmd_int.h - private to src/epmd and its tests: the pure EPMD codec.
 *
 * Every parser reads at most len bytes of buf, never trusts a length field
 * beyond the bounds below, and returns:
 *   AEMP__EPMD_MORE  the bytes so far are a valid prefix; call again with more
 *   0                one message parsed; *consumed is its size in bytes
 *   < 0              AEMP_EPROTO (malformed), AEMP_ETOOBIG (a length over a
 *                    bound) or AEMP_ENOTSUP (well framed, unknown code)
 * Builders append to an aemp_buf and leave it unchanged on error
 * (AEMP_EINVAL for a bad name or field, AEMP_ENOMEM).
 */
#ifndef AEMP_EPMD_INT_H
#define AEMP_EPMD_INT_H

#include "../aemp_impl.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest alive name in bytes (Erlang's node name limit). */
#define AEMP__EPMD_MAX_NAME 255
/* Longest Extra field accepted; Erlang always sends it empty. */
#define AEMP__EPMD_MAX_EXTRA 512
/* Longest request the embedded server accepts (the 2-byte length field):
 * an ALIVE2_REQ with the longest name and extra fits. */
#define AEMP__EPMD_MAX_REQ 1024
/* The embedded server serves at most this many connections at once, and
 * drops a connection that has not completed a request within IDLE_MS.
 * Connections that have not completed a request yet have a pool of their
 * own (MAX_PENDING; when full, the oldest makes way for a new one) and one
 * address a share of it (MAX_PENDING_PER_ADDRESS; beyond it a connection is
 * closed at once), so idle clients cannot keep nodes from registering.
 * Refusals are logged as one line with counts per REFUSAL_LOG_MS. */
#define AEMP__EPMD_MAX_CLIENTS 1024
#define AEMP__EPMD_IDLE_MS 10000
#define AEMP__EPMD_MAX_PENDING 128
#define AEMP__EPMD_MAX_PENDING_PER_ADDRESS 16
#define AEMP__EPMD_REFUSAL_LOG_MS 10000
/* Distribution protocol version we register and announce (OTP 23+). */
#define AEMP__EPMD_DIST_VERSION 6
/* Protocol byte: TCP/IPv4. */
#define AEMP__EPMD_PROTO_TCP 0

/* Parser result: need more bytes. */
#define AEMP__EPMD_MORE 1

/* A node as ALIVE2_REQ announces it and PORT2_RESP returns it. */
struct aemp__epmd_node {
    uint16_t port;
    uint8_t node_type; /* AEMP__EPMD_NODE_HIDDEN or _NORMAL */
    uint8_t protocol;  /* AEMP__EPMD_PROTO_TCP */
    uint16_t highest;
    uint16_t lowest;
    char name[AEMP__EPMD_MAX_NAME + 1]; /* NUL-terminated */
    size_t name_len;
    uint8_t extra[AEMP__EPMD_MAX_EXTRA];
    size_t extra_len;
};

/* A request as the embedded server sees it. */
struct aemp__epmd_req {
    uint8_t code;                /* enum aemp__epmd_code, or the unknown code */
    struct aemp__epmd_node node; /* ALIVE2_REQ: all of it; PORT_PLEASE2_REQ: name */
};

/* 1 if p[0..len) can be an alive name: 1..AEMP__EPMD_MAX_NAME bytes, no
 * control bytes (NUL or a newline would corrupt the NAMES text). */
bool aemp__epmd_name_valid(const char *p, size_t len);

/* Fill n for a registration of name (TCP, version 6, no extra). */
int aemp__epmd_node_init(struct aemp__epmd_node *n, const char *name, uint16_t port,
                         uint8_t node_type);

/* Client requests, each framed with its 2-byte length. */
int aemp__epmd_build_alive2_req(aemp_buf *b, const struct aemp__epmd_node *n);
int aemp__epmd_build_port_please2_req(aemp_buf *b, const char *name);
int aemp__epmd_build_names_req(aemp_buf *b);

/* Server responses (not length framed, as real EPMD sends them). extended:
 * ALIVE2_X_RESP with a 32-bit creation, else ALIVE2_RESP with 16 bits.
 * port2_resp with n NULL answers "no such name" (result 1). The NAMES answer
 * is names_resp once, then one names_line per registered node. */
int aemp__epmd_build_alive2_resp(aemp_buf *b, uint8_t result, uint32_t creation, bool extended);
int aemp__epmd_build_port2_resp(aemp_buf *b, const struct aemp__epmd_node *n);
int aemp__epmd_build_names_resp(aemp_buf *b, uint32_t epmd_port);
int aemp__epmd_build_names_line(aemp_buf *b, const char *name, uint16_t port);

/* Server side: one framed request of at most max_len bytes (length field);
 * a longer one is AEMP_ETOOBIG as soon as its length is seen. Zero length,
 * inconsistent inner lengths, bad names or trailing bytes inside the frame
 * are AEMP_EPROTO. An unknown code is AEMP_ENOTSUP with req->code and
 * *consumed set, so the caller can name it in its log. */
int aemp__epmd_parse_req(const void *buf, size_t len, size_t max_len, struct aemp__epmd_req *req,
                         size_t *consumed);

/* Client side: ALIVE2_X_RESP (6 bytes) or ALIVE2_RESP (4 bytes). *result is
 * EPMD's result byte (0: registered, else the name is taken). */
int aemp__epmd_parse_alive2_resp(const void *buf, size_t len, uint8_t *result, uint32_t *creation,
                                 size_t *consumed);
/* Client side: PORT2_RESP; n is filled only when *result is 0. */
int aemp__epmd_parse_port2_resp(const void *buf, size_t len, uint8_t *result,
                                struct aemp__epmd_node *n, size_t *consumed);
/* Client side: the whole NAMES answer once the server closed: the EPMD port,
 * then the text from *text_off to len. AEMP__EPMD_MORE if under 4 bytes. */
int aemp__epmd_parse_names_resp(const void *buf, size_t len, uint32_t *epmd_port, size_t *text_off);
/* Look for the line "name <name> at port <N>" in a NAMES text: 0 and *port,
 * or AEMP_ENONODE. Malformed lines are skipped. */
int aemp__epmd_names_find(const char *text, size_t len, const char *name, uint16_t *port);

#endif /* AEMP_EPMD_INT_H */
