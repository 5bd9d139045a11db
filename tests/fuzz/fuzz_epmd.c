/*
 * fuzz_epmd.c - every parser of the EPMD codec (src/epmd/epmd_int.h).
 *
 * The first byte selects the parser (modulo 5), the rest is its input:
 *   0 aemp__epmd_parse_req        a stream of requests, as the embedded
 *                                 server reads them (max length from the
 *                                 second byte: 0 = AEMP__EPMD_MAX_REQ)
 *   1 aemp__epmd_parse_alive2_resp
 *   2 aemp__epmd_parse_port2_resp
 *   3 aemp__epmd_parse_names_resp then aemp__epmd_names_find
 *   4 aemp__epmd_names_find       "name\0text"
 * Each parser also sees every prefix length of its input it would see from a
 * socket (a MORE answer must stay MORE until the message is complete), and
 * what parses must build back to the same bytes.
 */
#include "fuzz_common.h"

#include "epmd/epmd_int.h"

static void check_node(const struct aemp__epmd_node *n)
{
    FUZZ_CHECK(n->name_len >= 1 && n->name_len <= AEMP__EPMD_MAX_NAME);
    FUZZ_CHECK(strlen(n->name) == n->name_len);
    FUZZ_CHECK(aemp__epmd_name_valid(n->name, n->name_len));
    FUZZ_CHECK(n->extra_len <= AEMP__EPMD_MAX_EXTRA);
}

/* A copy of p[0..n) in its own allocation, so ASan sees any over-read. */
static uint8_t *exact(const uint8_t *p, size_t n)
{
    uint8_t *c = malloc(n ? n : 1);
    FUZZ_CHECK(c);
    if (n) memcpy(c, p, n);
    return c;
}

static void fuzz_req(const uint8_t *p, size_t len)
{
    if (len < 1) return;
    size_t max_len = p[0] ? (size_t)p[0] * 8 : AEMP__EPMD_MAX_REQ;
    p++;
    len--;
    size_t pos = 0;
    while (pos < len) {
        struct aemp__epmd_req req;
        size_t consumed = 0;
        uint8_t *b = exact(p + pos, len - pos);
        int rc = aemp__epmd_parse_req(b, len - pos, max_len, &req, &consumed);
        if (rc == 0 || rc == AEMP_ENOTSUP || rc == AEMP_EPROTO) {
            if (rc != AEMP_EPROTO || consumed) FUZZ_CHECK(consumed >= 3 && consumed <= len - pos);
        }
        if (rc == 0 && req.code == AEMP__EPMD_ALIVE2_REQ) {
            check_node(&req.node);
            aemp_buf out = AEMP_BUF_INIT;
            FUZZ_CHECK(aemp__epmd_build_alive2_req(&out, &req.node) == 0);
            FUZZ_CHECK(out.len == consumed && memcmp(out.data, b, consumed) == 0);
            aemp_buf_free(&out);
        } else if (rc == 0 && req.code == AEMP__EPMD_PORT_PLEASE2_REQ) {
            check_node(&req.node);
            aemp_buf out = AEMP_BUF_INIT;
            FUZZ_CHECK(aemp__epmd_build_port_please2_req(&out, req.node.name) == 0);
            FUZZ_CHECK(out.len == consumed && memcmp(out.data, b, consumed) == 0);
            aemp_buf_free(&out);
        } else if (rc == 0) {
            FUZZ_CHECK(req.code == AEMP__EPMD_NAMES_REQ && consumed == 3);
        }
        if (rc == 0 || rc == AEMP_ENOTSUP) {
            /* shorter prefixes of a complete frame are MORE (all of them for
             * short frames, a sample for long ones) */
            for (size_t k = 0; k < consumed; k = (consumed <= 64 || k < 4) ? k + 1 : k * 2 + 1) {
                struct aemp__epmd_req r2;
                size_t c2 = 0;
                uint8_t *pre = exact(b, k);
                FUZZ_CHECK(aemp__epmd_parse_req(pre, k, max_len, &r2, &c2) == AEMP__EPMD_MORE);
                free(pre);
            }
        }
        free(b);
        if ((rc == 0 || rc == AEMP_ENOTSUP) && consumed)
            pos += consumed;
        else
            break;
    }
}

static void fuzz_alive2_resp(const uint8_t *p, size_t len)
{
    uint8_t *b = exact(p, len);
    uint8_t result = 0;
    uint32_t creation = 0;
    size_t consumed = 0;
    int rc = aemp__epmd_parse_alive2_resp(b, len, &result, &creation, &consumed);
    FUZZ_CHECK(rc == 0 || rc == AEMP__EPMD_MORE || rc == AEMP_EPROTO);
    if (rc == 0) {
        FUZZ_CHECK(consumed <= len);
        aemp_buf out = AEMP_BUF_INIT;
        FUZZ_CHECK(aemp__epmd_build_alive2_resp(&out, result, creation, consumed == 6) == 0);
        FUZZ_CHECK(out.len == consumed && memcmp(out.data, b, consumed) == 0);
        aemp_buf_free(&out);
    }
    free(b);
}

static void fuzz_port2_resp(const uint8_t *p, size_t len)
{
    uint8_t *b = exact(p, len);
    uint8_t result = 0xee;
    struct aemp__epmd_node n;
    size_t consumed = 0;
    memset(&n, 0, sizeof n);
    int rc = aemp__epmd_parse_port2_resp(b, len, &result, &n, &consumed);
    if (rc == 0) {
        FUZZ_CHECK(consumed >= 2 && consumed <= len);
        aemp_buf out = AEMP_BUF_INIT;
        if (result == 0) {
            check_node(&n);
            FUZZ_CHECK(aemp__epmd_build_port2_resp(&out, &n) == 0);
            FUZZ_CHECK(out.len == consumed && memcmp(out.data, b, consumed) == 0);
        } else {
            FUZZ_CHECK(consumed == 2);
        }
        aemp_buf_free(&out);
        for (size_t k = 0; k < consumed; k++) {
            size_t c2 = 0;
            uint8_t r2;
            uint8_t *pre = exact(b, k);
            FUZZ_CHECK(aemp__epmd_parse_port2_resp(pre, k, &r2, &n, &c2) == AEMP__EPMD_MORE);
            free(pre);
        }
    }
    free(b);
}

static void find(const char *name, const uint8_t *text, size_t len)
{
    char *t = (char *)exact(text, len);
    uint16_t port = 0;
    int rc = aemp__epmd_names_find(t, len, name, &port);
    FUZZ_CHECK(rc == 0 || rc == AEMP_ENONODE);
    if (rc == 0 && aemp__epmd_name_valid(name, strlen(name))) {
        /* the line it found is there, up to the port number (which may be
         * written with leading zeros) */
        aemp_buf line = AEMP_BUF_INIT;
        FUZZ_CHECK(aemp__epmd_build_names_line(&line, name, port) == 0);
        const char *cut = memmem(line.data, line.len, " at port ", 9);
        FUZZ_CHECK(cut);
        size_t want = (size_t)(cut - line.data) + 9;
        FUZZ_CHECK(memmem(t, len, line.data, want) != NULL);
        aemp_buf_free(&line);
    }
    free(t);
}

static void fuzz_names_resp(const uint8_t *p, size_t len)
{
    uint8_t *b = exact(p, len);
    uint32_t port = 0;
    size_t off = 0;
    int rc = aemp__epmd_parse_names_resp(b, len, &port, &off);
    FUZZ_CHECK(rc == 0 || rc == AEMP__EPMD_MORE);
    if (rc == 0) {
        FUZZ_CHECK(off <= len);
        find("peer", b + off, len - off);
    }
    free(b);
}

static void fuzz_names_find(const uint8_t *p, size_t len)
{
    char name[AEMP__EPMD_MAX_NAME + 1];
    const uint8_t *nul = memchr(p, 0, len);
    size_t nlen = nul ? (size_t)(nul - p) : len;
    if (nlen > AEMP__EPMD_MAX_NAME) nlen = AEMP__EPMD_MAX_NAME;
    memcpy(name, p, nlen);
    name[nlen] = 0;
    size_t skip = nul ? (size_t)(nul - p) + 1 : len;
    find(name, p + skip, len - skip);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    if (!init) {
        fuzz_quiet_logs();
        init = 1;
    }
    if (size < 1) return 0;
    const uint8_t *p = data + 1;
    size_t len = size - 1;
    switch (data[0] % 5) {
    case 0:
        fuzz_req(p, len);
        break;
    case 1:
        fuzz_alive2_resp(p, len);
        break;
    case 2:
        fuzz_port2_resp(p, len);
        break;
    case 3:
        fuzz_names_resp(p, len);
        break;
    default:
        fuzz_names_find(p, len);
        break;
    }
    return 0;
}
