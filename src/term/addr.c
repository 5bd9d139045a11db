/*
 * addr.c - compact addresses: port IDs as text (`node#name`,
 * `node#<id.serial.creation>`, `node#Ref<creation.w0...>`), and the
 * encoding of pids, references and names in the external term format
 * without ei (the hot path encodes and decodes one or two per message).
 *
 * The node part of a port ID ends at the first '#' (node names `alive@host`
 * hold none); whatever follows is the name, so a registered name may itself
 * hold '#'. A rest of the exact form <N.N.N> (decimal, 32-bit) is a pid,
 * Ref<N.N...> a reference and Alias<N.N...> an alias.
 */
#include "term_local.h"

#include <stdio.h>

static int node_ok(const char *node, size_t n)
{
    return n > 0 && n <= AEMP_MAXNODELEN && memchr(node, '@', n) != NULL;
}

const char *aemp_addr_node_name(const aemp_addr *a)
{
    return a ? aemp__intern_text(a->node, NULL) : NULL;
}

const char *aemp_addr_reg_name(const aemp_addr *a)
{
    return a && a->kind == AEMP_ADDR_NAME ? aemp__intern_text(a->w[0], NULL) : NULL;
}

int aemp_addr_name(aemp_addr *out, const char *node, const char *name)
{
    if (!out || !node || !name) return AEMP_EINVAL;
    size_t nn = strlen(node), an = strlen(name);
    if (!node_ok(node, nn) || an == 0 || an > AEMP_MAXATOMLEN) return AEMP_EINVAL;
    aemp_addr a;
    memset(&a, 0, sizeof a);
    a.kind = AEMP_ADDR_NAME;
    a.node = aemp__intern(node, nn);
    a.w[0] = aemp__intern(name, an);
    if (!a.node || !a.w[0]) return AEMP_ETOOBIG;
    *out = a;
    return 0;
}

int aemp_addr_format(const aemp_addr *a, char *out, size_t size)
{
    if (!a || (!out && size)) return AEMP_EINVAL;
    const char *node = aemp__intern_text(a->node, NULL);
    if (!node) return AEMP_EINVAL;
    int n;
    switch (a->kind) {
    case AEMP_ADDR_PID:
        n = snprintf(out, size, "%s#<%u.%u.%u>", node, (unsigned)a->w[0], (unsigned)a->w[1],
                     (unsigned)a->creation);
        break;
    case AEMP_ADDR_NAME: {
        const char *name = aemp__intern_text(a->w[0], NULL);
        if (!name) return AEMP_EINVAL;
        n = snprintf(out, size, "%s#%s", node, name);
        break;
    }
    case AEMP_ADDR_REF:
    case AEMP_ADDR_ALIAS: {
        if (a->nwords < 1 || a->nwords > AEMP__REF_MAX_WORDS) return AEMP_EINVAL;
        char words[AEMP__REF_MAX_WORDS * 11 + 1];
        size_t w = 0;
        for (unsigned i = 0; i < a->nwords; i++)
            w += (size_t)snprintf(words + w, sizeof words - w, ".%u", (unsigned)a->w[i]);
        n = snprintf(out, size, "%s#%s<%u%s>", node, a->kind == AEMP_ADDR_REF ? "Ref" : "Alias",
                     (unsigned)a->creation, words);
        break;
    }
    default:
        return AEMP_EINVAL;
    }
    return n < 0 ? AEMP_EINVAL : n;
}

/* A decimal uint32 with no sign, no spaces, no leading junk. */
static const char *parse_u32(const char *s, uint32_t *v)
{
    uint64_t x = 0;
    const char *start = s;
    while (*s >= '0' && *s <= '9') {
        x = x * 10 + (uint64_t)(*s - '0');
        if (x > UINT32_MAX) return NULL;
        s++;
    }
    if (s == start) return NULL;
    *v = (uint32_t)x;
    return s;
}

static int parse_pid(const char *s, aemp_addr *a)
{
    if (*s++ != '<') return -1;
    if (!(s = parse_u32(s, &a->w[0])) || *s++ != '.') return -1;
    if (!(s = parse_u32(s, &a->w[1])) || *s++ != '.') return -1;
    if (!(s = parse_u32(s, &a->creation)) || *s++ != '>') return -1;
    return *s == 0 ? 0 : -1;
}

/* "<creation.w0.w1...>" */
static int parse_ref(const char *s, aemp_addr *a)
{
    if (*s++ != '<' || !(s = parse_u32(s, &a->creation))) return -1;
    unsigned n = 0;
    while (*s == '.' && n < AEMP__REF_MAX_WORDS)
        if (!(s = parse_u32(s + 1, &a->w[n++]))) return -1;
    if (n == 0 || *s++ != '>' || *s) return -1;
    a->nwords = (uint8_t)n;
    return 0;
}

int aemp_addr_parse(const char *s, aemp_addr *out)
{
    if (!s || !out) return AEMP_EINVAL;
    const char *hash = strchr(s, '#');
    if (!hash) return AEMP_EINVAL;
    size_t nn = (size_t)(hash - s);
    if (!node_ok(s, nn)) return AEMP_EINVAL;
    const char *rest = hash + 1;
    aemp_addr a;
    memset(&a, 0, sizeof a);
    if (rest[0] == '<') {
        /* a malformed pid is an error, not a name that looks like one */
        if (parse_pid(rest, &a)) return AEMP_EINVAL;
        a.kind = AEMP_ADDR_PID;
    } else if (strncmp(rest, "Ref<", 4) == 0) {
        /* as for pids: a malformed reference is an error, not a name */
        if (parse_ref(rest + 3, &a)) return AEMP_EINVAL;
        a.kind = AEMP_ADDR_REF;
    } else if (strncmp(rest, "Alias<", 6) == 0) {
        if (parse_ref(rest + 5, &a)) return AEMP_EINVAL;
        a.kind = AEMP_ADDR_ALIAS;
    } else {
        size_t an = strlen(rest);
        if (an == 0 || an > AEMP_MAXATOMLEN) return AEMP_EINVAL;
        a.kind = AEMP_ADDR_NAME;
        if (!(a.w[0] = aemp__intern(rest, an))) return AEMP_ETOOBIG;
    }
    if (!(a.node = aemp__intern(s, nn))) return AEMP_ETOOBIG;
    *out = a;
    return 0;
}

int aemp_addr_equal(const aemp_addr *a, const aemp_addr *b)
{
    if (!a || !b || !a->kind) return 0;
    return memcmp(a, b, sizeof *a) == 0;
}

/* ------------------------------------------------------------------ */
/* encoding                                                           */
/* ------------------------------------------------------------------ */

static char *put_atom(char *d, const char *s, size_t n)
{
    if (n <= 255) {
        *d++ = (char)AEMP__EXT_SMALL_ATOM_UTF8;
        *d++ = (char)n;
    } else {
        *d++ = (char)AEMP__EXT_ATOM_UTF8;
        aemp__put_u16(d, (uint16_t)n);
        d += 2;
    }
    memcpy(d, s, n);
    return d + n;
}

int aemp__enc_atom_text(aemp_buf *b, const char *s, size_t n)
{
    if (n > AEMP_MAXATOMLEN) return AEMP_EINVAL;
    int rc = aemp__buf_reserve(b, 3 + n);
    if (rc) return rc;
    b->len = (size_t)(put_atom(b->data + b->len, s, n) - b->data);
    return 0;
}

int aemp__enc_atom_handle(aemp_buf *b, uint32_t h)
{
    size_t n;
    const char *s = aemp__intern_text(h, &n);
    return s ? aemp__enc_atom_text(b, s, n) : AEMP_EINVAL;
}

int aemp__enc_addr(aemp_buf *b, const aemp_addr *a)
{
    size_t nn;
    const char *node = aemp__intern_text(a->node, &nn);
    if (!node) return AEMP_EINVAL;
    if (a->kind == AEMP_ADDR_NAME) return aemp__enc_atom_handle(b, a->w[0]);
    bool pid = a->kind == AEMP_ADDR_PID;
    if (!pid && (a->kind != AEMP_ADDR_REF && a->kind != AEMP_ADDR_ALIAS)) return AEMP_EINVAL;
    if (!pid && (a->nwords < 1 || a->nwords > AEMP__REF_MAX_WORDS)) return AEMP_EINVAL;
    int rc = aemp__buf_reserve(b, 3 + 3 + nn + 4 + 4 * AEMP__REF_MAX_WORDS);
    if (rc) return rc;
    char *d = b->data + b->len;
    if (pid) {
        *d++ = (char)AEMP__EXT_NEW_PID;
        d = put_atom(d, node, nn);
        aemp__put_u32(d, a->w[0]);
        aemp__put_u32(d + 4, a->w[1]);
        aemp__put_u32(d + 8, a->creation);
        d += 12;
    } else {
        *d++ = (char)AEMP__EXT_NEWER_REFERENCE;
        aemp__put_u16(d, a->nwords);
        d = put_atom(d + 2, node, nn);
        aemp__put_u32(d, a->creation);
        d += 4;
        for (unsigned i = 0; i < a->nwords; i++, d += 4)
            aemp__put_u32(d, a->w[i]);
    }
    b->len = (size_t)(d - b->data);
    return 0;
}

/* ------------------------------------------------------------------ */
/* decoding                                                           */
/* ------------------------------------------------------------------ */

/* The atom at p as an interned handle. */
static int dec_atom(const char *p, size_t len, uint32_t *h, size_t *used)
{
    const char *s;
    size_t n, total;
    int latin1;
    if (aemp__term_atom_view(p, len, &s, &n, &latin1, &total)) return AEMP_ENOMATCH;
    bool ascii = true;
    for (size_t i = 0; latin1 && i < n; i++)
        ascii &= (uint8_t)s[i] < 0x80;
    if (latin1 && !ascii) {
        /* latin-1 text beyond ASCII: intern its UTF-8 form */
        char utf8[2 * 256 + 1];
        int rc = aemp__term_atom_utf8(s, n, latin1, utf8, sizeof utf8);
        if (rc) return rc;
        *h = aemp__intern(utf8, strlen(utf8));
    } else {
        *h = aemp__intern(s, n);
    }
    *used = total;
    return *h ? 0 : AEMP_ETOOBIG;
}

int aemp__dec_addr(const char *p, size_t len, unsigned want, uint32_t node, aemp_addr *a,
                   size_t *used)
{
    if (len < 1) return AEMP_ENOMATCH;
    uint8_t tag = (uint8_t)p[0];
    aemp_addr r;
    memset(&r, 0, sizeof r);
    size_t at = 0, pos = 1;
    int rc;
    switch (tag) {
    case AEMP__EXT_NEW_PID:
    case AEMP__EXT_PID: {
        if (!(want & AEMP__WANT(AEMP_ADDR_PID))) return AEMP_ENOMATCH;
        if ((rc = dec_atom(p + pos, len - pos, &r.node, &at))) return rc;
        pos += at;
        size_t tail = tag == AEMP__EXT_PID ? 9 : 12;
        if (len - pos < tail) return AEMP_ENOMATCH;
        r.kind = AEMP_ADDR_PID;
        r.w[0] = aemp__get_u32(p + pos);
        r.w[1] = aemp__get_u32(p + pos + 4);
        /* the old format keeps 2 bits of creation, as ei reads it */
        r.creation =
            tag == AEMP__EXT_PID ? ((uint8_t)p[pos + 8] & 0x03u) : aemp__get_u32(p + pos + 8);
        pos += tail;
        break;
    }
    case AEMP__EXT_NEWER_REFERENCE:
    case AEMP__EXT_NEW_REFERENCE: {
        if (!(want & AEMP__WANT(AEMP_ADDR_REF))) return AEMP_ENOMATCH;
        if (len < 3) return AEMP_ENOMATCH;
        unsigned words = aemp__get_u16(p + 1);
        if (words < 1 || words > AEMP__REF_MAX_WORDS) return AEMP_ENOMATCH;
        pos = 3;
        if ((rc = dec_atom(p + pos, len - pos, &r.node, &at))) return rc;
        pos += at;
        size_t cre = tag == AEMP__EXT_NEW_REFERENCE ? 1 : 4;
        if (len - pos < cre + 4 * (size_t)words) return AEMP_ENOMATCH;
        r.kind = AEMP_ADDR_REF;
        r.creation = cre == 1 ? ((uint8_t)p[pos] & 0x03u) : aemp__get_u32(p + pos);
        pos += cre;
        r.nwords = (uint8_t)words;
        for (unsigned i = 0; i < words; i++, pos += 4)
            r.w[i] = aemp__get_u32(p + pos);
        break;
    }
    default:
        if (!(want & AEMP__WANT(AEMP_ADDR_NAME))) return AEMP_ENOMATCH;
        if ((rc = dec_atom(p, len, &r.w[0], &at))) return rc;
        r.kind = AEMP_ADDR_NAME;
        r.node = node;
        pos = at;
        break;
    }
    *a = r;
    *used = pos;
    return 0;
}
