/* codec.c - EPMD messages to and from bytes; no I/O, no allocation but b. */
#include "epmd_int.h"

#include <stdio.h>
#include <stdlib.h>

/* Fixed part of an ALIVE2_REQ after the code byte: port, type, protocol,
 * highest, lowest, name length; then the name, the extra length, extra. */
#define ALIVE2_FIXED 10
/* Fixed part of a PORT2_RESP after code and result: as ALIVE2_FIXED. */
#define PORT2_FIXED 10

bool aemp__epmd_name_valid(const char *p, size_t len)
{
    if (len == 0 || len > AEMP__EPMD_MAX_NAME) return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c < 0x20 || c == 0x7f) return false;
    }
    return true;
}

int aemp__epmd_node_init(struct aemp__epmd_node *n, const char *name, uint16_t port,
                         uint8_t node_type)
{
    size_t len = strlen(name);
    if (!aemp__epmd_name_valid(name, len)) return AEMP_EINVAL;
    memset(n, 0, sizeof *n);
    n->port = port;
    n->node_type = node_type;
    n->protocol = AEMP__EPMD_PROTO_TCP;
    n->highest = AEMP__EPMD_DIST_VERSION;
    n->lowest = AEMP__EPMD_DIST_VERSION;
    memcpy(n->name, name, len);
    n->name[len] = 0;
    n->name_len = len;
    return 0;
}

static bool node_valid(const struct aemp__epmd_node *n)
{
    return aemp__epmd_name_valid(n->name, n->name_len) && n->extra_len <= AEMP__EPMD_MAX_EXTRA;
}

/* The fields shared by ALIVE2_REQ and PORT2_RESP, in wire order. */
static int put_node(aemp_buf *b, const struct aemp__epmd_node *n)
{
    int rc = 0;
    rc = rc ? rc : aemp__buf_put_u16(b, n->port);
    rc = rc ? rc : aemp__buf_put_u8(b, n->node_type);
    rc = rc ? rc : aemp__buf_put_u8(b, n->protocol);
    rc = rc ? rc : aemp__buf_put_u16(b, n->highest);
    rc = rc ? rc : aemp__buf_put_u16(b, n->lowest);
    rc = rc ? rc : aemp__buf_put_u16(b, (uint16_t)n->name_len);
    rc = rc ? rc : aemp__buf_append(b, n->name, n->name_len);
    rc = rc ? rc : aemp__buf_put_u16(b, (uint16_t)n->extra_len);
    rc = rc ? rc : aemp__buf_append(b, n->extra, n->extra_len);
    return rc;
}

int aemp__epmd_build_alive2_req(aemp_buf *b, const struct aemp__epmd_node *n)
{
    if (!node_valid(n)) return AEMP_EINVAL;
    size_t start = b->len;
    size_t body = 1 + ALIVE2_FIXED + n->name_len + 2 + n->extra_len;
    int rc = aemp__buf_reserve(b, 2 + body);
    rc = rc ? rc : aemp__buf_put_u16(b, (uint16_t)body);
    rc = rc ? rc : aemp__buf_put_u8(b, AEMP__EPMD_ALIVE2_REQ);
    rc = rc ? rc : put_node(b, n);
    if (rc) b->len = start;
    return rc;
}

int aemp__epmd_build_port_please2_req(aemp_buf *b, const char *name)
{
    size_t len = strlen(name);
    if (!aemp__epmd_name_valid(name, len)) return AEMP_EINVAL;
    size_t start = b->len;
    int rc = aemp__buf_reserve(b, 3 + len);
    rc = rc ? rc : aemp__buf_put_u16(b, (uint16_t)(1 + len));
    rc = rc ? rc : aemp__buf_put_u8(b, AEMP__EPMD_PORT_PLEASE2_REQ);
    rc = rc ? rc : aemp__buf_append(b, name, len);
    if (rc) b->len = start;
    return rc;
}

int aemp__epmd_build_names_req(aemp_buf *b)
{
    uint8_t req[3] = {0, 1, AEMP__EPMD_NAMES_REQ};
    return aemp__buf_append(b, req, sizeof req);
}

int aemp__epmd_build_alive2_resp(aemp_buf *b, uint8_t result, uint32_t creation, bool extended)
{
    uint8_t resp[6];
    size_t n;
    if (extended) {
        resp[0] = AEMP__EPMD_ALIVE2_X_RESP;
        resp[1] = result;
        aemp__put_u32(resp + 2, creation);
        n = 6;
    } else {
        resp[0] = AEMP__EPMD_ALIVE2_RESP;
        resp[1] = result;
        aemp__put_u16(resp + 2, (uint16_t)creation);
        n = 4;
    }
    return aemp__buf_append(b, resp, n);
}

int aemp__epmd_build_port2_resp(aemp_buf *b, const struct aemp__epmd_node *n)
{
    if (!n) {
        uint8_t resp[2] = {AEMP__EPMD_PORT2_RESP, 1};
        return aemp__buf_append(b, resp, sizeof resp);
    }
    if (!node_valid(n)) return AEMP_EINVAL;
    size_t start = b->len;
    int rc = aemp__buf_reserve(b, 2 + PORT2_FIXED + n->name_len + 2 + n->extra_len);
    rc = rc ? rc : aemp__buf_put_u8(b, AEMP__EPMD_PORT2_RESP);
    rc = rc ? rc : aemp__buf_put_u8(b, 0);
    rc = rc ? rc : put_node(b, n);
    if (rc) b->len = start;
    return rc;
}

int aemp__epmd_build_names_resp(aemp_buf *b, uint32_t epmd_port)
{
    return aemp__buf_put_u32(b, epmd_port);
}

int aemp__epmd_build_names_line(aemp_buf *b, const char *name, uint16_t port)
{
    size_t len = strlen(name);
    if (!aemp__epmd_name_valid(name, len)) return AEMP_EINVAL;
    char tail[32];
    int k = snprintf(tail, sizeof tail, " at port %u\n", (unsigned)port);
    size_t start = b->len;
    int rc = aemp__buf_reserve(b, 5 + len + (size_t)k);
    rc = rc ? rc : aemp__buf_append(b, "name ", 5);
    rc = rc ? rc : aemp__buf_append(b, name, len);
    rc = rc ? rc : aemp__buf_append(b, tail, (size_t)k);
    if (rc) b->len = start;
    return rc;
}

/*
 * Read the shared node fields from p[0..len). Returns AEMP__EPMD_MORE if
 * len ends inside them, else 0 with *used set. Name and extra lengths are
 * checked before anything is copied.
 */
static int get_node(const uint8_t *p, size_t len, struct aemp__epmd_node *n, size_t *used)
{
    if (len < ALIVE2_FIXED) return AEMP__EPMD_MORE;
    size_t nlen = aemp__get_u16(p + 8);
    if (nlen == 0) return AEMP_EPROTO;
    if (nlen > AEMP__EPMD_MAX_NAME) return AEMP_ETOOBIG;
    if (len < ALIVE2_FIXED + nlen + 2) return AEMP__EPMD_MORE;
    const char *name = (const char *)p + ALIVE2_FIXED;
    if (!aemp__epmd_name_valid(name, nlen)) return AEMP_EPROTO;
    size_t elen = aemp__get_u16(p + ALIVE2_FIXED + nlen);
    if (elen > AEMP__EPMD_MAX_EXTRA) return AEMP_ETOOBIG;
    size_t total = ALIVE2_FIXED + nlen + 2 + elen;
    if (len < total) return AEMP__EPMD_MORE;
    n->port = aemp__get_u16(p);
    n->node_type = p[2];
    n->protocol = p[3];
    n->highest = aemp__get_u16(p + 4);
    n->lowest = aemp__get_u16(p + 6);
    memcpy(n->name, name, nlen);
    n->name[nlen] = 0;
    n->name_len = nlen;
    memcpy(n->extra, p + ALIVE2_FIXED + nlen + 2, elen);
    n->extra_len = elen;
    *used = total;
    return 0;
}

int aemp__epmd_parse_req(const void *buf, size_t len, size_t max_len, struct aemp__epmd_req *req,
                         size_t *consumed)
{
    const uint8_t *p = buf;
    if (len < 2) return AEMP__EPMD_MORE;
    size_t rlen = aemp__get_u16(p);
    if (rlen == 0) return AEMP_EPROTO;
    if (rlen > max_len) return AEMP_ETOOBIG;
    if (len < 2 + rlen) return AEMP__EPMD_MORE;
    const uint8_t *body = p + 3;
    size_t blen = rlen - 1;
    memset(req, 0, sizeof *req);
    req->code = p[2];
    *consumed = 2 + rlen;
    switch (req->code) {
    case AEMP__EPMD_ALIVE2_REQ: {
        size_t used = 0;
        int rc = get_node(body, blen, &req->node, &used);
        /* The frame is complete, so a node cut short is malformed. */
        if (rc == AEMP__EPMD_MORE || (rc == 0 && used != blen)) return AEMP_EPROTO;
        return rc;
    }
    case AEMP__EPMD_PORT_PLEASE2_REQ:
        if (blen > AEMP__EPMD_MAX_NAME) return AEMP_ETOOBIG;
        if (!aemp__epmd_name_valid((const char *)body, blen)) return AEMP_EPROTO;
        memcpy(req->node.name, body, blen);
        req->node.name[blen] = 0;
        req->node.name_len = blen;
        return 0;
    case AEMP__EPMD_NAMES_REQ:
        return blen == 0 ? 0 : AEMP_EPROTO;
    default:
        return AEMP_ENOTSUP;
    }
}

int aemp__epmd_parse_alive2_resp(const void *buf, size_t len, uint8_t *result, uint32_t *creation,
                                 size_t *consumed)
{
    const uint8_t *p = buf;
    if (len < 1) return AEMP__EPMD_MORE;
    size_t need;
    if (p[0] == AEMP__EPMD_ALIVE2_X_RESP)
        need = 6;
    else if (p[0] == AEMP__EPMD_ALIVE2_RESP)
        need = 4;
    else
        return AEMP_EPROTO;
    if (len < need) return AEMP__EPMD_MORE;
    *result = p[1];
    *creation = need == 6 ? aemp__get_u32(p + 2) : aemp__get_u16(p + 2);
    *consumed = need;
    return 0;
}

int aemp__epmd_parse_port2_resp(const void *buf, size_t len, uint8_t *result,
                                struct aemp__epmd_node *n, size_t *consumed)
{
    const uint8_t *p = buf;
    if (len < 1) return AEMP__EPMD_MORE;
    if (p[0] != AEMP__EPMD_PORT2_RESP) return AEMP_EPROTO;
    if (len < 2) return AEMP__EPMD_MORE;
    if (p[1] != 0) {
        *result = p[1];
        *consumed = 2;
        return 0;
    }
    size_t used = 0;
    int rc = get_node(p + 2, len - 2, n, &used);
    if (rc) return rc;
    *result = 0;
    *consumed = 2 + used;
    return 0;
}

int aemp__epmd_parse_names_resp(const void *buf, size_t len, uint32_t *epmd_port, size_t *text_off)
{
    if (len < 4) return AEMP__EPMD_MORE;
    *epmd_port = aemp__get_u32(buf);
    *text_off = 4;
    return 0;
}

/* Parse a decimal port at s[0..len) exactly; -1 if it is not one. */
static long parse_port(const char *s, size_t len)
{
    if (len == 0 || len > 5) return -1;
    long v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v <= 65535 ? v : -1;
}

int aemp__epmd_names_find(const char *text, size_t len, const char *name, uint16_t *port)
{
    static const char pre[] = "name ";
    static const char mid[] = " at port ";
    size_t nlen = strlen(name);
    size_t pos = 0;
    while (pos < len) {
        const char *line = text + pos;
        const char *nl = memchr(line, '\n', len - pos);
        size_t llen = nl ? (size_t)(nl - line) : len - pos;
        pos += llen + (nl ? 1 : 0);
        size_t fixed = sizeof pre - 1 + sizeof mid - 1;
        if (llen <= fixed + nlen) continue;
        if (memcmp(line, pre, sizeof pre - 1) != 0) continue;
        const char *n = line + sizeof pre - 1;
        if (memcmp(n, name, nlen) != 0 || memcmp(n + nlen, mid, sizeof mid - 1) != 0) continue;
        const char *num = n + nlen + sizeof mid - 1;
        long v = parse_port(num, (size_t)(line + llen - num));
        if (v < 0) continue;
        *port = (uint16_t)v;
        return 0;
    }
    return AEMP_ENONODE;
}
