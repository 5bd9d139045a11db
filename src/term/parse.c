/*
 * parse.c - Erlang term syntax to the external term format (aemp_term_parse).
 *
 * The text is read into a small tree first (nodes in one array, the
 * children of a container as a range of indexes), because three things of
 * term_to_binary's output are only known once a container is closed: a list
 * whose tail is a list is one list ([a|[b]] is [a,b], [1|"ab"] is "\1ab"),
 * a proper list of integers 0..255 is a STRING_EXT, and map keys come in
 * Erlang's term order with a later duplicate key winning (maps are made
 * canonical when they close, so that maps can be compared as keys).
 *
 * Parsing, comparing and encoding recurse one call per nesting level, and
 * nesting is bounded by MAX_DEPTH (as aemp_term_format and aemp_term_print
 * bound theirs), so the stack is bounded whatever the input. Nothing large
 * lives in a recursive frame: text buffers are in the parser. Memory is
 * bounded by the input: every node, child index and arena byte comes from
 * at least one byte of text, except the bits of binary segments with a
 * size, which draw on a budget of 16 bytes per byte of text plus 1 MiB.
 */
#include "term_local.h"

#include <math.h>
#include <stdlib.h>

#define MAX_DEPTH AEMP__PRINT_MAX_DEPTH
/* Largest integer magnitude read, in bytes (131072 bits, 39457 decimal
 * digits): converting text to binary is quadratic in the length. */
#define MAX_INT_BYTES 16384
/* Longest float literal, in characters. */
#define MAX_FLOAT_TEXT 1024
/* Atoms hold at most 255 characters, as in Erlang. */
#define MAX_ATOM_CHARS 255
/* Budget for the bits binary segments make: BUDGET_PER_BYTE bytes per byte
 * of text, plus BUDGET_BASE. */
#define BUDGET_PER_BYTE 16
#define BUDGET_BASE ((size_t)1 << 20)
/* Largest Size of a binary segment (times its unit, at most 256). */
#define MAX_SEGMENT_SIZE ((uint64_t)1 << 32)

#define NONE UINT32_MAX

enum kind {
    N_INT,   /* n magnitude bytes, little-endian: u.mag if n <= 8, else arena */
    N_FLOAT, /* u.f */
    N_ATOM,  /* n bytes of UTF-8 in the arena */
    N_BITS,  /* n bytes in the arena, `bits` of the last one used (1..8) */
    N_CHARS, /* a string literal: n code points (uint32_t) in the arena */
    N_NIL,   /* [] and "" */
    N_LIST,  /* n elements (kids) and a tail (NONE: proper) */
    N_TUPLE, /* n elements */
    N_MAP,   /* n / 2 pairs: key, value, ...; sorted by key, keys unique */
    N_RAW,   /* n bytes already encoded in the arena: pids, references, funs */
};

/* Classes in Erlang's term order (number < atom < reference < fun < port <
 * pid < tuple < map < nil < list < bitstring). */
enum cls { C_NUMBER, C_ATOM, C_REF, C_FUN, C_PORT, C_PID, C_TUPLE, C_MAP, C_NIL, C_LIST, C_BITS };

struct node {
    uint8_t kind;
    uint8_t neg;  /* N_INT: negative (never for zero) */
    uint8_t bits; /* N_BITS: bits used in the last byte */
    uint8_t cls;  /* N_RAW: its class */
    uint32_t n;
    uint32_t tail; /* N_LIST */
    union {
        size_t off;   /* arena offset, or first index in kids */
        uint64_t mag; /* N_INT with n <= 8 */
        double f;     /* N_FLOAT */
    } u;
};

struct parser {
    const char *s;
    size_t len, pos;
    size_t err; /* where the error was found */
    int depth;
    struct node *nodes;
    size_t nn, ncap;
    uint32_t *kids; /* children of closed containers */
    size_t nk, kcap;
    uint32_t *pend; /* children of open containers */
    size_t np, pcap;
    aemp_buf arena;   /* atom text, magnitudes, binaries, code points, raw terms */
    aemp_buf scratch; /* the digits of a number */
    size_t budget;    /* bytes binary segments may still make */
    char atom[AEMP_MAXATOMLEN + 1];
    char addr[AEMP_MAXNODELEN + 128];
};

static int fail(struct parser *p, size_t pos, int rc)
{
    p->err = pos;
    return rc;
}

static int peek(const struct parser *p)
{
    return p->pos < p->len ? (uint8_t)p->s[p->pos] : -1;
}

static int peek_at(const struct parser *p, size_t k)
{
    return k < p->len - p->pos ? (uint8_t)p->s[p->pos + k] : -1;
}

static int starts(const struct parser *p, size_t at, const char *w)
{
    size_t n = strlen(w);
    return at <= p->len && p->len - at >= n && memcmp(p->s + at, w, n) == 0;
}

/* Whitespace (every control character and space, as erl_scan) and
 * %-comments. */
static void skip_ws(struct parser *p)
{
    while (p->pos < p->len) {
        uint8_t c = (uint8_t)p->s[p->pos];
        if (c == '%') {
            while (p->pos < p->len && p->s[p->pos] != '\n')
                p->pos++;
        } else if (c >= 1 && c <= ' ') {
            p->pos++;
        } else {
            break;
        }
    }
}

static int is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static int digit_value(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'z') return c - 'a' + 10;
    if (c >= 'A' && c <= 'Z') return c - 'A' + 10;
    return 99;
}

/* A code point Erlang's scanner takes (no surrogates, no U+FFFE/U+FFFF). */
static int is_unicode(uint32_t c)
{
    return c < 0xD800 || (c > 0xDFFF && c < 0xFFFE) || (c > 0xFFFF && c <= 0x10FFFF);
}

/* The UTF-8 character at s[0..avail): its length, or 0 if it is not valid
 * (overlong, surrogate, beyond U+10FFFF, cut short). */
static size_t utf8_get(const uint8_t *s, size_t avail, uint32_t *cp)
{
    if (avail == 0) return 0;
    uint8_t c = s[0];
    size_t n;
    uint32_t v, min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if ((c & 0xE0) == 0xC0) {
        n = 2, v = c & 0x1Fu, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        n = 3, v = c & 0x0Fu, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        n = 4, v = c & 0x07u, min = 0x10000;
    } else {
        return 0;
    }
    if (avail < n) return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        v = v << 6 | (s[i] & 0x3Fu);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    *cp = v;
    return n;
}

static size_t utf8_put(uint32_t c, uint8_t *o)
{
    if (c < 0x80) {
        o[0] = (uint8_t)c;
        return 1;
    }
    if (c < 0x800) {
        o[0] = (uint8_t)(0xC0 | c >> 6);
        o[1] = (uint8_t)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        o[0] = (uint8_t)(0xE0 | c >> 12);
        o[1] = (uint8_t)(0x80 | (c >> 6 & 0x3F));
        o[2] = (uint8_t)(0x80 | (c & 0x3F));
        return 3;
    }
    o[0] = (uint8_t)(0xF0 | c >> 18);
    o[1] = (uint8_t)(0x80 | (c >> 12 & 0x3F));
    o[2] = (uint8_t)(0x80 | (c >> 6 & 0x3F));
    o[3] = (uint8_t)(0x80 | (c & 0x3F));
    return 4;
}

/* The character at p->pos as a code point (0 if it is not valid UTF-8). */
static size_t char_at(const struct parser *p, size_t at, uint32_t *cp)
{
    return utf8_get((const uint8_t *)p->s + at, p->len - at, cp);
}

/* ------------------------------------------------------------------ */
/* the tree                                                           */
/* ------------------------------------------------------------------ */

static int grow(void **arr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 16;
    while (c < need) {
        if (c > SIZE_MAX / 2 / elem) return AEMP_ENOMEM;
        c *= 2;
    }
    void *n = realloc(*arr, c * elem);
    if (!n) return AEMP_ENOMEM;
    *arr = n;
    *cap = c;
    return 0;
}

/* A new node of kind k; its index in *out. */
static int new_node(struct parser *p, int k, uint32_t *out)
{
    if (p->nn >= NONE - 1) return fail(p, p->pos, AEMP_ETOOBIG);
    if (grow((void **)&p->nodes, &p->ncap, p->nn + 1, sizeof *p->nodes))
        return fail(p, p->pos, AEMP_ENOMEM);
    struct node *x = &p->nodes[p->nn];
    memset(x, 0, sizeof *x);
    x->kind = (uint8_t)k;
    x->tail = NONE;
    *out = (uint32_t)p->nn++;
    return 0;
}

static int push_pending(struct parser *p, uint32_t i)
{
    if (grow((void **)&p->pend, &p->pcap, p->np + 1, sizeof *p->pend))
        return fail(p, p->pos, AEMP_ENOMEM);
    p->pend[p->np++] = i;
    return 0;
}

static int arena_put(struct parser *p, const void *d, size_t n)
{
    if (n == 0) return 0;
    return aemp__buf_append(&p->arena, d, n) ? fail(p, p->pos, AEMP_ENOMEM) : 0;
}

/* An integer node from a magnitude (n little-endian bytes, no zero top). */
static int int_node(struct parser *p, int neg, const uint8_t *m, size_t n, uint32_t *out)
{
    int rc = new_node(p, N_INT, out);
    if (rc) return rc;
    struct node *x = &p->nodes[*out];
    x->neg = (uint8_t)(neg && n > 0);
    x->n = (uint32_t)n;
    if (n <= 8) {
        for (size_t i = 0; i < n; i++)
            x->u.mag |= (uint64_t)m[i] << (8 * i);
        return 0;
    }
    x->u.off = p->arena.len;
    return arena_put(p, m, n);
}

static size_t mag_bytes(uint64_t v, uint8_t m[8])
{
    size_t n = 0;
    for (; v; v >>= 8)
        m[n++] = (uint8_t)v;
    return n;
}

static int small_int_node(struct parser *p, int neg, uint64_t v, uint32_t *out)
{
    uint8_t m[8];
    return int_node(p, neg, m, mag_bytes(v, m), out);
}

/* The magnitude of an integer node. */
static const uint8_t *mag_of(const struct parser *p, const struct node *x, uint8_t tmp[8])
{
    if (x->n > 8) return (const uint8_t *)p->arena.data + x->u.off;
    for (size_t i = 0; i < 8; i++)
        tmp[i] = (uint8_t)(x->u.mag >> (8 * i));
    return tmp;
}

static uint32_t code_point(const struct parser *p, const struct node *x, size_t i)
{
    uint32_t c;
    memcpy(&c, p->arena.data + x->u.off + 4 * i, sizeof c);
    return c;
}

/* ------------------------------------------------------------------ */
/* term order (for map keys)                                          */
/* ------------------------------------------------------------------ */

static int cls_of(const struct node *x)
{
    switch (x->kind) {
    case N_INT:
    case N_FLOAT:
        return C_NUMBER;
    case N_ATOM:
        return C_ATOM;
    case N_BITS:
        return C_BITS;
    case N_NIL:
        return C_NIL;
    case N_LIST:
    case N_CHARS:
        return C_LIST;
    case N_TUPLE:
        return C_TUPLE;
    case N_MAP:
        return C_MAP;
    default:
        return x->cls;
    }
}

static int sign(long long v)
{
    return v < 0 ? -1 : v > 0;
}

static int cmp_bytes(const void *a, size_t an, const void *b, size_t bn)
{
    int r = memcmp(a, b, an < bn ? an : bn);
    return r ? sign(r) : sign((long long)an - (long long)bn);
}

static int cmp_int(const struct parser *p, const struct node *a, const struct node *b)
{
    if (a->neg != b->neg) return a->neg ? -1 : 1;
    int r = 0;
    if (a->n != b->n) {
        r = a->n < b->n ? -1 : 1;
    } else {
        uint8_t ta[8], tb[8];
        const uint8_t *ma = mag_of(p, a, ta), *mb = mag_of(p, b, tb);
        for (size_t i = a->n; i-- > 0 && !r;)
            r = ma[i] < mb[i] ? -1 : ma[i] > mb[i];
    }
    return a->neg ? -r : r;
}

static int cmp_bits(const struct parser *p, const struct node *a, const struct node *b)
{
    const uint8_t *da = (const uint8_t *)p->arena.data + a->u.off;
    const uint8_t *db = (const uint8_t *)p->arena.data + b->u.off;
    size_t na = a->n ? (size_t)(a->n - 1) * 8 + a->bits : 0;
    size_t nb = b->n ? (size_t)(b->n - 1) * 8 + b->bits : 0;
    size_t common = na < nb ? na : nb;
    int r = memcmp(da, db, common / 8);
    if (r) return sign(r);
    if (common % 8) {
        unsigned sh = 8 - (unsigned)(common % 8);
        unsigned x = da[common / 8] >> sh, y = db[common / 8] >> sh;
        if (x != y) return x < y ? -1 : 1;
    }
    return sign((long long)na - (long long)nb);
}

/* Walks the elements of a list across spliced tails and string literals. */
struct chain {
    const struct parser *p;
    const struct node *cur; /* NULL at the end */
    uint32_t i;
    struct node tmp; /* a character of a string, as an integer node */
};

/* The next element into *e (1), or 0 at the end with *tail the improper
 * tail, or NULL for a proper list. */
static int chain_next(struct chain *c, const struct node **e, const struct node **tail)
{
    for (;;) {
        const struct node *x = c->cur;
        if (!x) {
            *tail = NULL;
            return 0;
        }
        if (x->kind == N_LIST && c->i < x->n) {
            *e = &c->p->nodes[c->p->kids[x->u.off + c->i++]];
            return 1;
        }
        if (x->kind == N_CHARS && c->i < x->n) {
            uint8_t m[8];
            uint32_t cp = code_point(c->p, x, c->i++);
            memset(&c->tmp, 0, sizeof c->tmp);
            c->tmp.kind = N_INT;
            c->tmp.n = (uint32_t)mag_bytes(cp, m);
            c->tmp.u.mag = cp;
            *e = &c->tmp;
            return 1;
        }
        c->i = 0;
        if (x->kind == N_LIST) {
            c->cur = x->tail == NONE ? NULL : &c->p->nodes[x->tail];
        } else if (x->kind == N_CHARS || x->kind == N_NIL) {
            c->cur = NULL;
        } else {
            c->cur = NULL;
            *tail = x;
            return 0;
        }
    }
}

static int cmp(const struct parser *p, const struct node *a, const struct node *b);

static int cmp_list(const struct parser *p, const struct node *a, const struct node *b)
{
    struct chain ca = {p, a, 0, {0}}, cb = {p, b, 0, {0}};
    for (;;) {
        const struct node *ea = NULL, *eb = NULL, *ta = NULL, *tb = NULL;
        int ha = chain_next(&ca, &ea, &ta), hb = chain_next(&cb, &eb, &tb);
        if (ha && hb) {
            int r = cmp(p, ea, eb);
            if (r) return r;
            continue;
        }
        /* what is left of each: a cons (class list), nil or an improper tail */
        int ra = ha ? C_LIST : ta ? cls_of(ta) : C_NIL;
        int rb = hb ? C_LIST : tb ? cls_of(tb) : C_NIL;
        if (ra != rb) return ra < rb ? -1 : 1;
        return ta && tb ? cmp(p, ta, tb) : 0;
    }
}

/* Erlang's term order, exact as for map keys: an integer is less than any
 * float; -0.0 and 0.0 differ (as from OTP 27). Recursion is bounded by the
 * nesting of the tree, at most MAX_DEPTH. */
static int cmp(const struct parser *p, const struct node *a, const struct node *b)
{
    int ca = cls_of(a), cb = cls_of(b);
    if (ca != cb) return ca < cb ? -1 : 1;
    const char *ar = p->arena.data;
    switch (a->kind) {
    case N_INT:
        if (b->kind != N_INT) return -1;
        return cmp_int(p, a, b);
    case N_FLOAT:
        if (b->kind != N_FLOAT) return 1;
        if (a->u.f != b->u.f) return a->u.f < b->u.f ? -1 : 1;
        return signbit(a->u.f) == signbit(b->u.f) ? 0 : signbit(a->u.f) ? -1 : 1;
    case N_ATOM:
        return cmp_bytes(ar + a->u.off, a->n, ar + b->u.off, b->n);
    case N_BITS:
        return cmp_bits(p, a, b);
    case N_NIL:
        return 0;
    case N_LIST:
    case N_CHARS:
        return cmp_list(p, a, b);
    case N_TUPLE:
    case N_MAP:
        /* tuples by size, then elements; maps by size, then keys in order,
         * then values (their keys are sorted already) */
        if (a->n != b->n) return a->n < b->n ? -1 : 1;
        for (int pass = 0; pass < (a->kind == N_MAP ? 2 : 1); pass++) {
            for (uint32_t i = 0; i < a->n; i++) {
                if (a->kind == N_MAP && (i & 1) != (uint32_t)pass) continue;
                int r = cmp(p, &p->nodes[p->kids[a->u.off + i]], &p->nodes[p->kids[b->u.off + i]]);
                if (r) return r;
            }
        }
        return 0;
    default: /* N_RAW: by its bytes, enough for equality */
        return cmp_bytes(ar + a->u.off, a->n, ar + b->u.off, b->n);
    }
}

/* ------------------------------------------------------------------ */
/* containers                                                         */
/* ------------------------------------------------------------------ */

static int key_cmp(const struct parser *p, size_t base, uint32_t x, uint32_t y)
{
    return cmp(p, &p->nodes[p->pend[base + 2 * (size_t)x]],
               &p->nodes[p->pend[base + 2 * (size_t)y]]);
}

/* The pairs pend[base..np) of a map: sorted by key (stable), and of equal
 * keys only the last kept, as in #{a => 1, a => 2}. */
static int sort_map(struct parser *p, size_t base)
{
    size_t m = (p->np - base) / 2;
    if (m < 2) return 0;
    uint32_t *idx = malloc(2 * m * sizeof *idx);
    uint32_t *out = malloc(2 * m * sizeof *out);
    if (!idx || !out) {
        free(idx);
        free(out);
        return fail(p, p->pos, AEMP_ENOMEM);
    }
    uint32_t *a = idx, *t = idx + m;
    for (size_t i = 0; i < m; i++)
        a[i] = (uint32_t)i;
    for (size_t w = 1; w < m; w *= 2) {
        for (size_t lo = 0; lo < m; lo += 2 * w) {
            size_t mid = lo + w < m ? lo + w : m, hi = lo + 2 * w < m ? lo + 2 * w : m;
            size_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi)
                t[k++] = key_cmp(p, base, a[j], a[i]) < 0 ? a[j++] : a[i++];
            while (i < mid)
                t[k++] = a[i++];
            while (j < hi)
                t[k++] = a[j++];
        }
        uint32_t *s = a;
        a = t;
        t = s;
    }
    size_t k = 0;
    for (size_t j = 0; j < m; j++) {
        if (j + 1 < m && key_cmp(p, base, a[j], a[j + 1]) == 0) continue;
        out[k++] = p->pend[base + 2 * (size_t)a[j]];
        out[k++] = p->pend[base + 2 * (size_t)a[j] + 1];
    }
    memcpy(p->pend + base, out, k * sizeof *out);
    p->np = base + k;
    free(idx);
    free(out);
    return 0;
}

/* Close a container: its children are pend[base..np). */
static int close_container(struct parser *p, int kind, size_t base, uint32_t tail, uint32_t *out)
{
    int rc;
    if (kind == N_MAP && (rc = sort_map(p, base))) return rc;
    size_t n = p->np - base;
    if (kind == N_LIST && n == 0) return new_node(p, N_NIL, out);
    if (n >= NONE) return fail(p, p->pos, AEMP_ETOOBIG);
    if (grow((void **)&p->kids, &p->kcap, p->nk + n, sizeof *p->kids))
        return fail(p, p->pos, AEMP_ENOMEM);
    if ((rc = new_node(p, kind, out))) return rc;
    struct node *x = &p->nodes[*out];
    x->n = (uint32_t)n;
    x->tail = tail;
    x->u.off = p->nk;
    if (n) memcpy(p->kids + p->nk, p->pend + base, n * sizeof *p->kids);
    p->nk += n;
    p->np = base;
    return 0;
}

static int value(struct parser *p, uint32_t *out);

static int expect(struct parser *p, const char *w)
{
    skip_ws(p);
    if (!starts(p, p->pos, w)) return fail(p, p->pos, AEMP_EINVAL);
    p->pos += strlen(w);
    return 0;
}

/* {...}, [...] and #{...} at p->pos. */
static int container(struct parser *p, char open, uint32_t *out)
{
    size_t start = p->pos, base = p->np;
    int kind = open == '{' ? N_TUPLE : open == '[' ? N_LIST : N_MAP;
    char close = open == '[' ? ']' : '}';
    uint32_t v, tail = NONE;
    int rc;
    if (p->depth >= MAX_DEPTH) return fail(p, start, AEMP_ETOOBIG);
    p->pos += open == '#' ? 2 : 1;
    p->depth++;
    skip_ws(p);
    if (peek(p) == close) {
        p->pos++;
    } else {
        for (;;) {
            if ((rc = value(p, &v)) || (rc = push_pending(p, v))) return rc;
            if (kind == N_MAP &&
                ((rc = expect(p, "=>")) || (rc = value(p, &v)) || (rc = push_pending(p, v))))
                return rc;
            skip_ws(p);
            int c = peek(p);
            if (c != ',' && c != close && (c != '|' || kind != N_LIST))
                return fail(p, p->pos, AEMP_EINVAL);
            p->pos++;
            if (c == ',') continue;
            if (c == '|' && ((rc = value(p, &tail)) || (rc = expect(p, "]")))) return rc;
            break;
        }
    }
    p->depth--;
    return close_container(p, kind, base, tail, out);
}

/* ------------------------------------------------------------------ */
/* atoms, strings, characters                                         */
/* ------------------------------------------------------------------ */

/* One character of quoted text or of a $ literal, escapes resolved. */
static int text_char(struct parser *p, uint32_t *cp)
{
    size_t start = p->pos, k;
    int c = peek(p);
    if (c < 0) return fail(p, start, AEMP_EINVAL);
    if (c != '\\') {
        if (!(k = char_at(p, p->pos, cp)) || !is_unicode(*cp)) return fail(p, start, AEMP_EINVAL);
        p->pos += k;
        return 0;
    }
    c = peek_at(p, 1);
    if (c < 0) return fail(p, start, AEMP_EINVAL);
    p->pos += 2;
    if (c >= '0' && c <= '7') {
        uint32_t v = (uint32_t)(c - '0');
        for (int i = 0; i < 2 && peek(p) >= '0' && peek(p) <= '7'; i++)
            v = v * 8 + (uint32_t)(p->s[p->pos++] - '0');
        *cp = v;
        return 0;
    }
    switch (c) {
    case 'x': {
        uint32_t v = 0;
        if (peek(p) == '{') {
            size_t n = 0;
            p->pos++;
            while (digit_value(peek(p)) < 16) {
                v = v > 0x10FFFF ? v : v * 16 + (uint32_t)digit_value(peek(p));
                p->pos++;
                n++;
            }
            if (peek(p) != '}' || n == 0 || !is_unicode(v)) return fail(p, start, AEMP_EINVAL);
            p->pos++;
        } else {
            if (digit_value(peek(p)) >= 16 || digit_value(peek_at(p, 1)) >= 16)
                return fail(p, start, AEMP_EINVAL);
            v = (uint32_t)(digit_value(peek(p)) * 16 + digit_value(peek_at(p, 1)));
            p->pos += 2;
        }
        *cp = v;
        return 0;
    }
    case '^':
        if (!(k = char_at(p, p->pos, cp)) || !is_unicode(*cp)) return fail(p, start, AEMP_EINVAL);
        p->pos += k;
        *cp &= 31;
        return 0;
    case 'n':
        *cp = '\n';
        return 0;
    case 'r':
        *cp = '\r';
        return 0;
    case 't':
        *cp = '\t';
        return 0;
    case 'v':
        *cp = '\v';
        return 0;
    case 'b':
        *cp = '\b';
        return 0;
    case 'f':
        *cp = '\f';
        return 0;
    case 'e':
        *cp = 27;
        return 0;
    case 's':
        *cp = ' ';
        return 0;
    case 'd':
        *cp = 127;
        return 0;
    default: /* any other character stands for itself */
        p->pos--;
        if (!(k = char_at(p, p->pos, cp)) || !is_unicode(*cp)) return fail(p, start, AEMP_EINVAL);
        p->pos += k;
        return 0;
    }
}

/* 'quoted' at p->pos: its UTF-8 text into p->atom, *n bytes. */
static int quoted_atom(struct parser *p, size_t *n)
{
    size_t start = p->pos, chars = 0, o = 0;
    uint32_t cp;
    int rc;
    p->pos++;
    for (;;) {
        if (peek(p) < 0) return fail(p, start, AEMP_EINVAL); /* never closed */
        if (peek(p) == '\'') break;
        size_t at = p->pos;
        if ((rc = text_char(p, &cp))) return rc;
        if (++chars > MAX_ATOM_CHARS) return fail(p, at, AEMP_ETOOBIG);
        o += utf8_put(cp, (uint8_t *)p->atom + o);
    }
    p->pos++;
    *n = o;
    return 0;
}

/* Characters of unquoted atoms, as erl_scan (Latin-1 letters included). */
static int name_start(uint32_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= 0xDF && c <= 0xFF && c != 0xF7);
}

static int var_start(uint32_t c)
{
    return (c >= 'A' && c <= 'Z') || c == '_' || (c >= 0xC0 && c <= 0xDE && c != 0xD7);
}

static int name_char(uint32_t c)
{
    return name_start(c) || var_start(c) || is_digit((int)c) || c == '@';
}

/* The unquoted name at p->pos (which starts with name_char): its UTF-8
 * text into p->atom, *n bytes. */
static int bare_name(struct parser *p, size_t *n)
{
    size_t start = p->pos, chars = 0, o = 0, k;
    uint32_t cp;
    while ((k = char_at(p, p->pos, &cp)) && name_char(cp)) {
        if (++chars > MAX_ATOM_CHARS) return fail(p, start, AEMP_ETOOBIG);
        memcpy(p->atom + o, p->s + p->pos, k);
        o += k;
        p->pos += k;
    }
    *n = o;
    return 0;
}

/* An atom, bare or quoted, into p->atom. */
static int atom_text(struct parser *p, size_t *n)
{
    uint32_t cp;
    size_t start = p->pos;
    int rc;
    if (peek(p) == '\'') return quoted_atom(p, n);
    if (!char_at(p, p->pos, &cp) || !name_start(cp)) return fail(p, start, AEMP_EINVAL);
    if ((rc = bare_name(p, n))) return rc;
    return aemp__term_reserved_word(p->atom, *n) ? fail(p, start, AEMP_EINVAL) : 0;
}

static int atom_node(struct parser *p, size_t n, uint32_t *out)
{
    int rc = new_node(p, N_ATOM, out);
    if (rc) return rc;
    p->nodes[*out].n = (uint32_t)n;
    p->nodes[*out].u.off = p->arena.len;
    return arena_put(p, p->atom, n);
}

/* "string" at p->pos, and any string literals right after it ("ab" "cd"
 * is "abcd"): their code points. */
static int string(struct parser *p, uint32_t *out)
{
    size_t off = p->arena.len, n = 0;
    uint32_t cp;
    int rc;
    for (;;) {
        size_t start = p->pos;
        p->pos++;
        while (peek(p) != '"') {
            if (peek(p) < 0) return fail(p, start, AEMP_EINVAL); /* never closed */
            if ((rc = text_char(p, &cp)) || (rc = arena_put(p, &cp, sizeof cp))) return rc;
            n++;
        }
        p->pos++;
        size_t after = p->pos;
        skip_ws(p);
        if (peek(p) != '"') {
            p->pos = after;
            break;
        }
    }
    if (n == 0) return new_node(p, N_NIL, out);
    if (n >= NONE) return fail(p, p->pos, AEMP_ETOOBIG);
    if ((rc = new_node(p, N_CHARS, out))) return rc;
    p->nodes[*out].n = (uint32_t)n;
    p->nodes[*out].u.off = off;
    return 0;
}

/* ------------------------------------------------------------------ */
/* numbers                                                            */
/* ------------------------------------------------------------------ */

/* Digits of base at p->pos, '_' allowed between two of them, appended to
 * p->scratch without the '_'; *count of them. */
static int digits(struct parser *p, int base, size_t *count)
{
    size_t n = 0;
    for (;;) {
        int c = peek(p);
        if (digit_value(c) < base) {
            if (aemp__buf_put_u8(&p->scratch, (uint8_t)c)) return fail(p, p->pos, AEMP_ENOMEM);
            n++;
            p->pos++;
        } else if (c == '_' && n > 0 && digit_value(peek_at(p, 1)) < base) {
            p->pos++;
        } else {
            break;
        }
    }
    *count = n;
    return 0;
}

/* The integer written d[0..n) in base (2..36). */
static int make_int(struct parser *p, size_t at, const char *d, size_t n, int base, int neg,
                    uint32_t *out)
{
    while (n > 1 && d[0] == '0')
        d++, n--;
    /* the value is at least base^(n-1) >= 2^(log2 * (n-1)) */
    unsigned log2 = 0;
    while ((2u << log2) <= (unsigned)base)
        log2++;
    if ((n - 1) / 8 * log2 > MAX_INT_BYTES) return fail(p, at, AEMP_ETOOBIG);
    size_t cap = n * 6 / 32 + 2, used = 0;
    uint32_t *limb = calloc(cap, sizeof *limb);
    if (!limb) return fail(p, at, AEMP_ENOMEM);
    uint32_t mul = 1, acc = 0;
    for (size_t i = 0; i <= n; i++) {
        /* flush when one more digit could overflow, and at the end */
        if (i == n || mul > UINT32_MAX / (unsigned)base) {
            uint64_t carry = acc;
            for (size_t j = 0; j < used; j++) {
                uint64_t t = (uint64_t)limb[j] * mul + carry;
                limb[j] = (uint32_t)t;
                carry = t >> 32;
            }
            if (carry) limb[used++] = (uint32_t)carry;
            mul = 1, acc = 0;
            if (i == n) break;
        }
        acc = acc * (uint32_t)base + (uint32_t)digit_value(d[i]);
        mul *= (uint32_t)base;
    }
    size_t bytes = used * 4;
    uint8_t *m = (uint8_t *)limb; /* rewritten in place, little-endian */
    for (size_t j = 0; j < used; j++) {
        uint32_t v = limb[j];
        m[4 * j] = (uint8_t)v, m[4 * j + 1] = (uint8_t)(v >> 8);
        m[4 * j + 2] = (uint8_t)(v >> 16), m[4 * j + 3] = (uint8_t)(v >> 24);
    }
    while (bytes > 0 && m[bytes - 1] == 0)
        bytes--;
    int rc = bytes > MAX_INT_BYTES ? fail(p, at, AEMP_ETOOBIG) : int_node(p, neg, m, bytes, out);
    free(limb);
    return rc;
}

/* A number at p->pos (a digit or $), negative if neg; `at` is where its
 * text starts (the sign, if any). */
static int number(struct parser *p, size_t at, int neg, uint32_t *out)
{
    size_t nd;
    int rc;
    if (peek(p) == '$') {
        uint32_t cp;
        p->pos++;
        if ((rc = text_char(p, &cp))) return rc;
        return small_int_node(p, neg, cp, out);
    }
    p->scratch.len = 0;
    if ((rc = digits(p, 10, &nd))) return rc;
    if (peek(p) == '#') {
        /* Base#Digits */
        int base = 0;
        for (size_t i = 0; i < p->scratch.len && base <= 36; i++)
            base = base * 10 + (p->scratch.data[i] - '0');
        if (base < 2 || base > 36) return fail(p, at, AEMP_EINVAL);
        p->pos++;
        p->scratch.len = 0;
        if ((rc = digits(p, base, &nd))) return rc;
        if (nd == 0) return fail(p, p->pos, AEMP_EINVAL);
        return make_int(p, at, p->scratch.data, nd, base, neg, out);
    }
    if (peek(p) != '.' || !is_digit(peek_at(p, 1)))
        return make_int(p, at, p->scratch.data, nd, 10, neg, out);
    /* a float: Digits.Digits[e[+-]Digits] */
    p->pos++;
    if (aemp__buf_put_u8(&p->scratch, '.') || digits(p, 10, &nd))
        return fail(p, p->pos, AEMP_ENOMEM);
    if (peek(p) == 'e' || peek(p) == 'E') {
        int s = peek_at(p, 1), k = s == '+' || s == '-' ? 2 : 1;
        if (!is_digit(peek_at(p, (size_t)k))) return fail(p, p->pos, AEMP_EINVAL);
        if (aemp__buf_put_u8(&p->scratch, 'e') ||
            (k == 2 && aemp__buf_put_u8(&p->scratch, (uint8_t)s)))
            return fail(p, p->pos, AEMP_ENOMEM);
        p->pos += (size_t)k;
        if ((rc = digits(p, 10, &nd))) return rc;
    }
    if (p->scratch.len > MAX_FLOAT_TEXT) return fail(p, at, AEMP_ETOOBIG);
    if (aemp__buf_put_u8(&p->scratch, 0)) return fail(p, p->pos, AEMP_ENOMEM);
    char *end;
    double d = aemp__term_strtod(p->scratch.data, &end);
    if (*end || !isfinite(d)) return fail(p, at, AEMP_EINVAL); /* as Erlang: no infinity */
    if ((rc = new_node(p, N_FLOAT, out))) return rc;
    p->nodes[*out].u.f = neg ? -d : d;
    return 0;
}

/* -Number, +Number (whitespace allowed after the sign), or a number. */
static int signed_number(struct parser *p, uint32_t *out)
{
    size_t at = p->pos;
    int neg = 0;
    if (peek(p) == '-' || peek(p) == '+') {
        neg = peek(p) == '-';
        p->pos++;
        skip_ws(p);
    }
    if (!is_digit(peek(p)) && peek(p) != '$') return fail(p, p->pos, AEMP_EINVAL);
    return number(p, at, neg, out);
}

/* ------------------------------------------------------------------ */
/* pids, references, funs                                             */
/* ------------------------------------------------------------------ */

static int node_byte(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '_' ||
           c == '@' || c == '.' || c == '-' || c >= 0x80;
}

/* Whether `#<`, `#Ref<` or `#Alias<` starts at `at`. */
static int addr_mark(const struct parser *p, size_t at)
{
    return starts(p, at, "#<") || starts(p, at, "#Ref<") || starts(p, at, "#Alias<");
}

/* The end of the run of node-name bytes from p->pos. */
static size_t node_run(const struct parser *p)
{
    size_t e = p->pos;
    while (e < p->len && node_byte((uint8_t)p->s[e]))
        e++;
    return e;
}

/* A node name a port ID can hold: UTF-8 (it is an atom), no '#', no NUL. */
static int node_name_ok(const char *s, size_t n)
{
    uint32_t cp;
    if (n == 0 || n > AEMP_MAXNODELEN) return 0;
    for (size_t i = 0, k; i < n; i += k)
        if (!(k = utf8_get((const uint8_t *)s + i, n - i, &cp)) || cp == '#' || cp == 0) return 0;
    return 1;
}

/* The encoding of the address written p->addr (aemp_addr_parse's form) as
 * a raw node; `at` is where its text starts. */
static int addr_node(struct parser *p, size_t at, uint32_t *out)
{
    aemp_addr a;
    int rc = aemp_addr_parse(p->addr, &a);
    if (rc || a.kind == AEMP_ADDR_NAME)
        return fail(p, at, rc == AEMP_ETOOBIG ? AEMP_ETOOBIG : AEMP_EINVAL);
    if ((rc = new_node(p, N_RAW, out))) return rc;
    struct node *x = &p->nodes[*out];
    x->cls = a.kind == AEMP_ADDR_PID ? C_PID : C_REF;
    x->u.off = p->arena.len;
    if (aemp__enc_addr(&p->arena, &a)) return fail(p, at, AEMP_ENOMEM);
    x->n = (uint32_t)(p->arena.len - x->u.off);
    return 0;
}

/* node#<id.serial.creation>, node#Ref<...>, node#Alias<...> as
 * aemp_addr_format writes them: the node name is node[0..n), p->pos is at
 * the '#'. */
static int address(struct parser *p, size_t at, const char *node, size_t n, uint32_t *out)
{
    size_t k = n;
    if (!node_name_ok(node, n)) return fail(p, at, AEMP_EINVAL);
    memmove(p->addr, node, n);
    while (k < sizeof p->addr - 1 && p->pos < p->len) {
        char c = p->s[p->pos++];
        p->addr[k++] = c;
        if (c == '>') break;
    }
    if (p->addr[k - 1] != '>') return fail(p, at, AEMP_EINVAL);
    p->addr[k] = 0;
    return addr_node(p, at, out);
}

/* #Pid<Node.Id.Serial.Creation>, as aemp_term_print writes a pid (Node an
 * atom, quoted or not). */
static int print_pid(struct parser *p, uint32_t *out)
{
    size_t at = p->pos, n;
    int rc;
    p->pos += 5;
    if (peek(p) == '\'') {
        if ((rc = quoted_atom(p, &n))) return rc;
    } else {
        /* the node is the run up to the third '.' from its end */
        size_t e = node_run(p), dots = 0;
        while (e > p->pos && dots < 3)
            dots += p->s[--e] == '.';
        if (dots < 3 || e - p->pos > AEMP_MAXNODELEN) return fail(p, at, AEMP_EINVAL);
        n = e - p->pos;
        memcpy(p->atom, p->s + p->pos, n);
        p->pos = e;
    }
    if (!node_name_ok(p->atom, n)) return fail(p, at, AEMP_EINVAL);
    memcpy(p->addr, p->atom, n);
    size_t k = n;
    p->addr[k++] = '#';
    p->addr[k++] = '<';
    for (int i = 0; i < 3; i++) {
        if (peek(p) != '.' || !is_digit(peek_at(p, 1))) return fail(p, p->pos, AEMP_EINVAL);
        p->pos++;
        for (size_t d = 0; is_digit(peek(p)); d++) {
            if (d == 10) return fail(p, p->pos, AEMP_EINVAL);
            p->addr[k++] = p->s[p->pos++];
        }
        p->addr[k++] = i < 2 ? '.' : '>';
    }
    p->addr[k] = 0;
    if (peek(p) != '>') return fail(p, p->pos, AEMP_EINVAL);
    p->pos++;
    return addr_node(p, at, out);
}

/* fun Module:Function/Arity (p->pos after `fun`): EXPORT_EXT. */
static int export_fun(struct parser *p, size_t at, uint32_t *out)
{
    size_t n;
    int rc;
    if ((rc = new_node(p, N_RAW, out))) return rc;
    size_t off = p->arena.len;
    p->nodes[*out].cls = C_FUN;
    p->nodes[*out].u.off = off;
    skip_ws(p);
    if ((rc = arena_put(p, "\x71", 1)) || (rc = atom_text(p, &n))) return rc;
    if (aemp__enc_atom_text(&p->arena, p->atom, n)) return fail(p, at, AEMP_ENOMEM);
    if ((rc = expect(p, ":"))) return rc;
    skip_ws(p);
    if ((rc = atom_text(p, &n))) return rc;
    if (aemp__enc_atom_text(&p->arena, p->atom, n)) return fail(p, at, AEMP_ENOMEM);
    if ((rc = expect(p, "/"))) return rc;
    skip_ws(p);
    unsigned arity = 0;
    size_t a = p->pos;
    while (is_digit(peek(p)) && arity <= 255)
        arity = arity * 10 + (unsigned)(p->s[p->pos++] - '0');
    if (p->pos == a || arity > 255) return fail(p, a, AEMP_EINVAL);
    uint8_t e[2] = {ERL_SMALL_INTEGER_EXT, (uint8_t)arity};
    if ((rc = arena_put(p, e, 2))) return rc;
    p->nodes[*out].n = (uint32_t)(p->arena.len - off);
    return 0;
}

/* An unquoted word at p->pos: an atom, `fun M:F/A`, or an address whose
 * node name is not quoted. */
static int word(struct parser *p, uint32_t *out)
{
    size_t start = p->pos, e = node_run(p), n;
    uint32_t cp;
    int rc;
    if (addr_mark(p, e)) {
        p->pos = e;
        return address(p, start, p->s + start, e - start, out);
    }
    if (is_digit(peek(p))) return number(p, start, 0, out);
    if (!char_at(p, p->pos, &cp) || !name_start(cp)) /* a variable, or no term */
        return fail(p, start, AEMP_EINVAL);
    if ((rc = bare_name(p, &n))) return rc;
    if (n == 3 && memcmp(p->atom, "fun", 3) == 0) return export_fun(p, start, out);
    if (aemp__term_reserved_word(p->atom, n)) return fail(p, start, AEMP_EINVAL);
    return atom_node(p, n, out);
}

/* ------------------------------------------------------------------ */
/* binaries                                                           */
/* ------------------------------------------------------------------ */

/* The bits of a binary being built. */
struct bits {
    aemp_buf b;
    size_t nbits;
};

/* Append nbits bits of src, starting at bit `off` (most significant first). */
static int put_bits(struct parser *p, struct bits *w, const uint8_t *src, size_t off, size_t nbits,
                    size_t at)
{
    if (nbits == 0) return 0;
    size_t need = (w->nbits + nbits + 7) / 8 - w->b.len;
    if (need > p->budget) return fail(p, at, AEMP_ETOOBIG);
    if (aemp__buf_reserve(&w->b, need)) return fail(p, at, AEMP_ENOMEM);
    p->budget -= need;
    memset(w->b.data + w->b.len, 0, need);
    w->b.len += need;
    uint8_t *d = (uint8_t *)w->b.data;
    size_t i = 0;
    if (w->nbits % 8 == 0 && off % 8 == 0) {
        memcpy(d + w->nbits / 8, src + off / 8, nbits / 8);
        i = nbits / 8 * 8;
    }
    for (; i < nbits; i++) {
        size_t s = off + i, t = w->nbits + i;
        if (src[s / 8] & (0x80 >> (s % 8))) d[t / 8] |= (uint8_t)(0x80 >> (t % 8));
    }
    w->nbits += nbits;
    return 0;
}

/* An integer segment: the low nbits bits of v, two's complement. */
static int seg_int(struct parser *p, struct bits *w, const struct node *v, uint64_t nbits,
                   int little, size_t at)
{
    if (nbits == 0) return 0;
    if (nbits / 8 >= p->budget) return fail(p, at, AEMP_ETOOBIG);
    size_t W = (size_t)((nbits + 7) / 8);
    uint8_t tmp[8];
    const uint8_t *m = mag_of(p, v, tmp);
    uint8_t *tc = calloc(2, W); /* little-endian two's complement, then big-endian */
    if (!tc) return fail(p, at, AEMP_ENOMEM);
    unsigned carry = 1;
    for (size_t i = 0; i < W; i++) {
        uint8_t b = i < v->n ? m[i] : 0;
        if (v->neg) {
            unsigned t = (uint8_t)~b + carry;
            b = (uint8_t)t;
            carry = t >> 8;
        }
        tc[i] = b;
    }
    int rc = 0;
    if (!little) {
        uint8_t *be = tc + W;
        for (size_t i = 0; i < W; i++)
            be[i] = tc[W - 1 - i];
        rc = put_bits(p, w, be, W * 8 - (size_t)nbits, (size_t)nbits, at);
    } else {
        /* whole bytes from the lowest, then the high bits that are left */
        size_t full = (size_t)(nbits / 8), r = (size_t)(nbits % 8);
        rc = put_bits(p, w, tc, 0, full * 8, at);
        if (!rc && r) {
            uint8_t last = (uint8_t)(tc[full] << (8 - r));
            rc = put_bits(p, w, &last, 0, r, at);
        }
    }
    free(tc);
    return rc;
}

/* A double as an IEEE 754 half, rounded to nearest even (too big for one:
 * infinity, as Erlang makes it). */
static uint16_t to_half(double d)
{
    uint64_t b;
    memcpy(&b, &d, sizeof b);
    uint16_t s = (uint16_t)(b >> 48 & 0x8000);
    int e = (int)(b >> 52 & 0x7FF) - 1023;
    uint64_t full = (b & ((1ull << 52) - 1)) | 1ull << 52;
    if (d == 0) return s;
    /* as a count of units of the half's last place: 2^(e-10) for normals,
     * 2^-24 for subnormals */
    if (e > 15) return (uint16_t)(s | 0x7C00);
    int shift = e >= -14 ? 42 : 28 - e;
    uint64_t m = shift >= 64 ? 0 : full >> shift;
    uint64_t rest = shift >= 64 ? full : full & ((1ull << shift) - 1);
    uint64_t half = shift >= 64 ? 1ull << 63 : 1ull << (shift - 1);
    if (shift < 64 && (rest > half || (rest == half && (m & 1)))) m++;
    if (e >= -14) {
        int he = e + 15;
        if (m == 0x800) {
            m = 0x400;
            he++;
        }
        if (he >= 31) return (uint16_t)(s | 0x7C00);
        return (uint16_t)(s | he << 10 | (m & 0x3FF));
    }
    return (uint16_t)(s | m); /* m == 0x400 is the smallest normal */
}

static double int_to_double(const struct parser *p, const struct node *v)
{
    uint8_t tmp[8];
    const uint8_t *m = mag_of(p, v, tmp);
    double d = 0;
    for (size_t i = v->n; i-- > 0;)
        d = d * 256 + m[i];
    return v->neg ? -d : d;
}

static int seg_float(struct parser *p, struct bits *w, const struct node *v, uint64_t nbits,
                     int little, size_t at)
{
    double d = v->kind == N_FLOAT ? v->u.f : int_to_double(p, v);
    uint8_t e[8];
    uint64_t bits;
    if (!isfinite(d)) return fail(p, at, AEMP_EINVAL);
    if (nbits == 64) {
        memcpy(&bits, &d, sizeof bits);
    } else if (nbits == 32) {
        float f = (float)d; /* too big: infinity, as Erlang makes it */
        uint32_t u;
        memcpy(&u, &f, sizeof u);
        bits = u;
    } else if (nbits == 16) {
        bits = to_half(d);
    } else {
        return fail(p, at, AEMP_EINVAL);
    }
    size_t n = (size_t)nbits / 8;
    for (size_t i = 0; i < n; i++)
        e[little ? i : n - 1 - i] = (uint8_t)(bits >> (8 * i));
    return put_bits(p, w, e, 0, n * 8, at);
}

static int seg_utf(struct parser *p, struct bits *w, uint32_t c, int width, int little, size_t at)
{
    uint8_t e[4];
    size_t n = 0;
    if (c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return fail(p, at, AEMP_EINVAL);
    if (width == 8) {
        n = utf8_put(c, e);
    } else {
        uint16_t u[2];
        size_t k = 0;
        if (width == 32) {
            u[k++] = (uint16_t)(c >> 16), u[k++] = (uint16_t)c;
        } else if (c < 0x10000) {
            u[k++] = (uint16_t)c;
        } else {
            u[k++] = (uint16_t)(0xD800 + ((c - 0x10000) >> 10));
            u[k++] = (uint16_t)(0xDC00 + ((c - 0x10000) & 0x3FF));
        }
        if (width == 32 && little) {
            uint16_t t = u[0];
            u[0] = u[1], u[1] = t;
        }
        for (size_t i = 0; i < k; i++) {
            e[n++] = (uint8_t)(little ? u[i] : u[i] >> 8);
            e[n++] = (uint8_t)(little ? u[i] >> 8 : u[i]);
        }
    }
    return put_bits(p, w, e, 0, n * 8, at);
}

enum seg_type { T_DEFAULT, T_INTEGER, T_FLOAT, T_BINARY, T_BITSTRING, T_UTF8, T_UTF16, T_UTF32 };

struct seg {
    int type;
    int little;
    int has_size, has_unit;
    uint64_t size;
    unsigned unit;
};

static int little_host(void)
{
    uint16_t one = 1;
    uint8_t b;
    memcpy(&b, &one, 1);
    return b;
}

/* A decimal size or unit at p->pos, at most max. */
static int seg_number(struct parser *p, uint64_t max, uint64_t *v)
{
    size_t at = p->pos;
    uint64_t x = 0;
    skip_ws(p);
    if (!is_digit(peek(p))) return fail(p, p->pos, AEMP_EINVAL);
    while (is_digit(peek(p)) || (peek(p) == '_' && is_digit(peek_at(p, 1)))) {
        if (peek(p) != '_') x = x * 10 + (uint64_t)(peek(p) - '0');
        if (x > max) return fail(p, at, AEMP_ETOOBIG);
        p->pos++;
    }
    *v = x;
    return 0;
}

/* :Size and /Type-Specifiers of a segment. */
static int seg_spec(struct parser *p, struct seg *sp)
{
    static const struct {
        const char *name;
        int type;   /* or T_DEFAULT */
        int little; /* 1 little, 0 big, -1 native, 2 no endianness */
    } words[] = {
        {"integer", T_INTEGER, 2}, {"float", T_FLOAT, 2},         {"binary", T_BINARY, 2},
        {"bytes", T_BINARY, 2},    {"bitstring", T_BITSTRING, 2}, {"bits", T_BITSTRING, 2},
        {"utf8", T_UTF8, 2},       {"utf16", T_UTF16, 2},         {"utf32", T_UTF32, 2},
        {"signed", T_DEFAULT, 2},  {"unsigned", T_DEFAULT, 2},    {"big", T_DEFAULT, 0},
        {"little", T_DEFAULT, 1},  {"native", T_DEFAULT, -1},
    };
    int rc;
    memset(sp, 0, sizeof *sp);
    skip_ws(p);
    if (peek(p) == ':') {
        p->pos++;
        if ((rc = seg_number(p, MAX_SEGMENT_SIZE, &sp->size))) return rc;
        sp->has_size = 1;
        skip_ws(p);
    }
    if (peek(p) != '/') return 0;
    p->pos++;
    for (;;) {
        skip_ws(p);
        size_t at = p->pos, n = 0;
        while ((peek(p) >= 'a' && peek(p) <= 'z') || is_digit(peek(p)))
            p->pos++;
        n = p->pos - at;
        if (n == 4 && memcmp(p->s + at, "unit", 4) == 0) {
            uint64_t u;
            if (sp->has_unit) return fail(p, at, AEMP_EINVAL);
            if ((rc = expect(p, ":")) || (rc = seg_number(p, 256, &u))) return rc;
            if (u == 0) return fail(p, at, AEMP_EINVAL);
            sp->unit = (unsigned)u;
            sp->has_unit = 1;
        } else {
            size_t k = 0;
            while (k < sizeof words / sizeof *words &&
                   (strlen(words[k].name) != n || memcmp(words[k].name, p->s + at, n) != 0))
                k++;
            if (k == sizeof words / sizeof *words) return fail(p, at, AEMP_EINVAL);
            if (words[k].type != T_DEFAULT) {
                if (sp->type != T_DEFAULT) return fail(p, at, AEMP_EINVAL);
                sp->type = words[k].type;
            }
            if (words[k].little != 2)
                sp->little = words[k].little < 0 ? little_host() : words[k].little;
        }
        skip_ws(p);
        if (peek(p) != '-') return 0;
        p->pos++;
    }
}

static int binary(struct parser *p, uint32_t *out);

/* One segment: Value[:Size][/Types], appended to w. */
static int segment(struct parser *p, struct bits *w)
{
    size_t at;
    uint32_t v;
    int rc;
    skip_ws(p);
    at = p->pos;
    int c = peek(p);
    if (c == '(') {
        p->pos++;
        if ((rc = value(p, &v)) || (rc = expect(p, ")"))) return rc;
    } else if (c == '"') {
        rc = string(p, &v);
    } else if (c == '<' && peek_at(p, 1) == '<') {
        rc = binary(p, &v);
    } else {
        rc = signed_number(p, &v);
    }
    if (rc) return rc;
    struct seg sp;
    if ((rc = seg_spec(p, &sp))) return rc;
    const struct node *x = &p->nodes[v];
    int k = x->kind;
    int type = sp.type;
    if (type == T_DEFAULT) type = k == N_BITS ? -1 : T_INTEGER; /* a binary needs /binary */
    int utf = type == T_UTF8 || type == T_UTF16 || type == T_UTF32;
    if (utf && (sp.has_size || sp.has_unit)) return fail(p, at, AEMP_EINVAL);
    if (sp.has_unit && !sp.has_size) return fail(p, at, AEMP_EINVAL);
    uint64_t unit = sp.has_unit ? sp.unit : type == T_BINARY ? 8 : 1;
    uint64_t nbits = sp.size * unit;
    int width = type == T_UTF8 ? 8 : type == T_UTF16 ? 16 : 32;
    if (k == N_CHARS || k == N_NIL) {
        /* a string: each character as a segment of its own */
        if (type != T_INTEGER && !utf) return fail(p, at, AEMP_EINVAL);
        if (!sp.has_size) nbits = 8;
        struct node ch;
        memset(&ch, 0, sizeof ch);
        ch.kind = N_INT;
        for (uint32_t i = 0; k == N_CHARS && i < x->n; i++) {
            uint8_t m[8];
            uint32_t cp = code_point(p, x, i);
            ch.n = (uint32_t)mag_bytes(cp, m);
            ch.u.mag = cp;
            rc = utf ? seg_utf(p, w, cp, width, sp.little, at)
                     : seg_int(p, w, &ch, nbits, sp.little, at);
            if (rc) return rc;
            x = &p->nodes[v];
        }
        return 0;
    }
    if (k == N_INT && type == T_INTEGER)
        return seg_int(p, w, x, sp.has_size ? nbits : 8, sp.little, at);
    if ((k == N_INT || k == N_FLOAT) && type == T_FLOAT)
        return seg_float(p, w, x, sp.has_size ? nbits : 64, sp.little, at);
    if (k == N_INT && utf) {
        uint64_t cp = x->n > 4 || x->neg ? UINT64_MAX : x->u.mag;
        return seg_utf(p, w, cp > 0x10FFFF ? 0xFFFFFFFFu : (uint32_t)cp, width, sp.little, at);
    }
    if (k == N_BITS && (type == T_BINARY || type == T_BITSTRING)) {
        size_t have = x->n ? (size_t)(x->n - 1) * 8 + x->bits : 0;
        if (!sp.has_size) {
            if (type == T_BINARY && have % 8) return fail(p, at, AEMP_EINVAL);
            nbits = have;
        }
        if (nbits > have) return fail(p, at, AEMP_EINVAL);
        /* the value's bytes are in the arena, which put_bits does not touch */
        return put_bits(p, w, (const uint8_t *)p->arena.data + x->u.off, 0, (size_t)nbits, at);
    }
    return fail(p, at, AEMP_EINVAL);
}

/* <<Segment, ...>> at p->pos. */
static int binary(struct parser *p, uint32_t *out)
{
    size_t start = p->pos;
    struct bits w = {AEMP_BUF_INIT, 0};
    int rc = 0;
    if (p->depth >= MAX_DEPTH) return fail(p, start, AEMP_ETOOBIG);
    p->depth++;
    p->pos += 2;
    skip_ws(p);
    if (!starts(p, p->pos, ">>")) {
        for (;;) {
            if ((rc = segment(p, &w))) goto done;
            skip_ws(p);
            if (peek(p) == ',') {
                p->pos++;
                continue;
            }
            if (starts(p, p->pos, ">>")) break;
            rc = fail(p, p->pos, AEMP_EINVAL);
            goto done;
        }
    }
    p->pos += 2;
    p->depth--;
    if (w.b.len >= NONE) {
        rc = fail(p, start, AEMP_ETOOBIG);
        goto done;
    }
    if ((rc = new_node(p, N_BITS, out))) goto done;
    p->nodes[*out].n = (uint32_t)w.b.len;
    p->nodes[*out].bits = (uint8_t)(w.nbits % 8 ? w.nbits % 8 : 8);
    p->nodes[*out].u.off = p->arena.len;
    rc = arena_put(p, w.b.data, w.b.len);
done:
    aemp_buf_free(&w.b);
    return rc;
}

/* ------------------------------------------------------------------ */
/* any value                                                          */
/* ------------------------------------------------------------------ */

static int value(struct parser *p, uint32_t *out)
{
    skip_ws(p);
    size_t start = p->pos, n;
    int c = peek(p), rc;
    switch (c) {
    case '{':
    case '[':
        return container(p, (char)c, out);
    case '#':
        if (peek_at(p, 1) == '{') return container(p, '#', out);
        if (starts(p, p->pos, "#Pid<")) return print_pid(p, out);
        return fail(p, start, AEMP_EINVAL);
    case '<':
        if (peek_at(p, 1) == '<') return binary(p, out);
        return fail(p, start, AEMP_EINVAL);
    case '"':
        return string(p, out);
    case '\'':
        if ((rc = quoted_atom(p, &n))) return rc;
        if (addr_mark(p, p->pos)) return address(p, start, p->atom, n, out);
        return atom_node(p, n, out);
    case '-':
    case '+':
    case '$':
        return signed_number(p, out);
    default:
        if (c > ' ' && node_byte(c)) return word(p, out);
        return fail(p, start, AEMP_EINVAL);
    }
}

/* ------------------------------------------------------------------ */
/* encoding                                                           */
/* ------------------------------------------------------------------ */

static int put_int(aemp_buf *b, int neg, const uint8_t *m, size_t n)
{
    uint8_t e[6];
    uint64_t v = 0;
    for (size_t i = 0; i < n && i < 8; i++)
        v |= (uint64_t)m[i] << (8 * i);
    if (n <= 8 && !neg && v <= 0xff) {
        e[0] = ERL_SMALL_INTEGER_EXT;
        e[1] = (uint8_t)v;
        return aemp__buf_append(b, e, 2);
    }
    if (n <= 8 && ((!neg && v <= INT32_MAX) || (neg && v <= (uint64_t)INT32_MAX + 1))) {
        e[0] = ERL_INTEGER_EXT;
        aemp__put_u32(e + 1, neg ? (uint32_t)(0u - (uint32_t)v) : (uint32_t)v);
        return aemp__buf_append(b, e, 5);
    }
    size_t h = 0;
    if (n <= 255) {
        e[h++] = ERL_SMALL_BIG_EXT;
        e[h++] = (uint8_t)n;
    } else {
        e[h++] = ERL_LARGE_BIG_EXT;
        aemp__put_u32(e + h, (uint32_t)n);
        h += 4;
    }
    e[h++] = (uint8_t)(neg != 0);
    int rc = aemp__buf_append(b, e, h);
    return rc ? rc : aemp__buf_append(b, m, n);
}

static int put_header(aemp_buf *b, uint8_t tag, uint32_t n)
{
    uint8_t e[5] = {tag};
    aemp__put_u32(e + 1, n);
    return aemp__buf_append(b, e, 5);
}

static int is_byte(const struct node *x)
{
    return x->kind == N_INT && !x->neg && x->n <= 1;
}

static int enc(const struct parser *p, const struct node *x, aemp_buf *b);

/* A list with its spliced tails: STRING_EXT when it is a proper list of at
 * most 65535 integers 0..255, as term_to_binary. */
static int enc_list(const struct parser *p, const struct node *x, aemp_buf *b)
{
    struct chain c = {p, x, 0, {0}};
    const struct node *e, *tail;
    size_t total = 0;
    int bytes = 1, rc;
    while (chain_next(&c, &e, &tail)) {
        total++;
        bytes &= is_byte(e);
    }
    if (tail == NULL && bytes && total <= 0xffff) {
        uint8_t h[3] = {ERL_STRING_EXT, (uint8_t)(total >> 8), (uint8_t)total};
        if ((rc = aemp__buf_reserve(b, 3 + total))) return rc;
        aemp__buf_append(b, h, 3);
        c = (struct chain){p, x, 0, {0}};
        while (chain_next(&c, &e, &tail))
            b->data[b->len++] = (char)e->u.mag;
        return 0;
    }
    if (total > UINT32_MAX) return AEMP_ETOOBIG;
    if ((rc = put_header(b, ERL_LIST_EXT, (uint32_t)total))) return rc;
    c = (struct chain){p, x, 0, {0}};
    while (chain_next(&c, &e, &tail))
        if ((rc = enc(p, e, b))) return rc;
    return tail ? enc(p, tail, b) : aemp__buf_put_u8(b, ERL_NIL_EXT);
}

/* Recursion is bounded by the nesting of the tree, at most MAX_DEPTH. */
static int enc(const struct parser *p, const struct node *x, aemp_buf *b)
{
    const char *ar = p->arena.data;
    uint8_t tmp[8];
    int rc;
    switch (x->kind) {
    case N_INT:
        return put_int(b, x->neg, mag_of(p, x, tmp), x->n);
    case N_FLOAT: {
        uint64_t bits;
        uint8_t e[9] = {NEW_FLOAT_EXT};
        memcpy(&bits, &x->u.f, sizeof bits);
        aemp__put_u64(e + 1, bits);
        return aemp__buf_append(b, e, sizeof e);
    }
    case N_ATOM:
        return aemp__enc_atom_text(b, ar + x->u.off, x->n);
    case N_BITS:
        if (x->bits == 8) {
            rc = put_header(b, ERL_BINARY_EXT, x->n);
        } else {
            rc = put_header(b, ERL_BIT_BINARY_EXT, x->n);
            if (!rc) rc = aemp__buf_put_u8(b, x->bits);
        }
        return rc ? rc : aemp__buf_append(b, ar + x->u.off, x->n);
    case N_NIL:
        return aemp__buf_put_u8(b, ERL_NIL_EXT);
    case N_CHARS:
    case N_LIST:
        return enc_list(p, x, b);
    case N_TUPLE:
        if (x->n <= 0xff) {
            uint8_t h[2] = {ERL_SMALL_TUPLE_EXT, (uint8_t)x->n};
            rc = aemp__buf_append(b, h, 2);
        } else {
            rc = put_header(b, ERL_LARGE_TUPLE_EXT, x->n);
        }
        break;
    case N_MAP:
        rc = put_header(b, ERL_MAP_EXT, x->n / 2);
        break;
    default:
        return aemp__buf_append(b, ar + x->u.off, x->n);
    }
    for (uint32_t i = 0; i < x->n && !rc; i++)
        rc = enc(p, &p->nodes[p->kids[x->u.off + i]], b);
    return rc;
}

int aemp_term_parse(aemp_buf *b, const char *text, size_t len, size_t *err_pos)
{
    struct parser *p;
    uint32_t root;
    int rc;
    if (err_pos) *err_pos = 0;
    if (!b || (!text && len)) return AEMP_EINVAL;
    if (!(p = calloc(1, sizeof *p))) return AEMP_ENOMEM;
    p->s = text;
    p->len = len;
    /* never NULL, so that empty texts and binaries point somewhere */
    if (aemp__buf_reserve(&p->arena, 64)) {
        free(p);
        return AEMP_ENOMEM;
    }
    p->budget = (len > (SIZE_MAX - BUDGET_BASE) / BUDGET_PER_BYTE ? SIZE_MAX - BUDGET_BASE
                                                                  : len * BUDGET_PER_BYTE) +
                BUDGET_BASE;
    rc = value(p, &root);
    if (!rc) {
        /* an optional end dot, as in file:consult */
        skip_ws(p);
        if (peek(p) == '.') {
            p->pos++;
            skip_ws(p);
        }
        if (p->pos != p->len) rc = fail(p, p->pos, AEMP_EINVAL);
    }
    if (!rc) {
        size_t saved = b->len;
        rc = enc(p, &p->nodes[root], b);
        if (rc) {
            b->len = saved;
            p->err = p->len;
        }
    }
    if (rc && err_pos) *err_pos = p->err;
    free(p->nodes);
    free(p->kids);
    free(p->pend);
    aemp_buf_free(&p->arena);
    aemp_buf_free(&p->scratch);
    free(p);
    return rc;
}
