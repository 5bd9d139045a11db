/*
 * print.c - Erlang-syntax text of a term (aemp_term_print).
 *
 * Iterative with an explicit stack: the term is validated first (every
 * length is in bounds), then printed without recursion; values nested deeper
 * than AEMP__PRINT_MAX_DEPTH print as `...`. Output stops as soon as the
 * buffer is full.
 *
 * Choices: pids print as #Pid<node.num.serial.creation>, ports as
 * #Port<node.id>, references as #Ref<node.w1.w2...>, closures as
 * #Fun<module.index.uniq>, exports as fun m:f/a (as ei prints them: a C node
 * has no local/remote shorthand). Integers wider than 64 bits print as
 * 16#HEX (valid Erlang). Strings and binaries print as text when every byte
 * is printable ASCII (or \t \n \r), else as integers.
 */
#include "term_local.h"

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>

struct out {
    char *p;
    size_t size;
    size_t len;
    int full;
};

static void put(struct out *o, const char *s, size_t n)
{
    if (o->full) return;
    size_t room = o->size - 1 - o->len;
    if (n > room) {
        memcpy(o->p + o->len, s, room);
        o->len += room;
        o->full = 1;
        return;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

static void puts_(struct out *o, const char *s)
{
    put(o, s, strlen(s));
}

static void putf(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(struct out *o, const char *fmt, ...)
{
    char tmp[96];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) put(o, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static const char *const reserved_words[] = {
    "after", "and",   "andalso", "band",   "begin",   "bnot", "bor", "bsl",  "bsr", "bxor",
    "case",  "catch", "cond",    "div",    "else",    "end",  "fun", "if",   "let", "maybe",
    "not",   "of",    "or",      "orelse", "receive", "rem",  "try", "when", "xor",
};

int aemp__term_reserved_word(const char *s, size_t n)
{
    for (size_t i = 0; i < sizeof reserved_words / sizeof reserved_words[0]; i++)
        if (strlen(reserved_words[i]) == n && memcmp(reserved_words[i], s, n) == 0) return 1;
    return 0;
}

static int atom_needs_quotes(const char *s, size_t n)
{
    if (n == 0 || !(s[0] >= 'a' && s[0] <= 'z')) return 1;
    for (size_t i = 1; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '@'))
            return 1;
    }
    return aemp__term_reserved_word(s, n);
}

/* One character of quoted text; returns nothing, escapes what Erlang would. */
static void put_char_escaped(struct out *o, uint8_t ch, char quote)
{
    switch (ch) {
    case '\n':
        puts_(o, "\\n");
        return;
    case '\t':
        puts_(o, "\\t");
        return;
    case '\r':
        puts_(o, "\\r");
        return;
    case '\\':
        puts_(o, "\\\\");
        return;
    default:
        break;
    }
    if (ch == (uint8_t)quote) {
        char e[2] = {'\\', quote};
        put(o, e, 2);
    } else if (ch < 0x20 || ch == 0x7f) {
        putf(o, "\\x{%X}", ch);
    } else {
        char c = (char)ch;
        put(o, &c, 1);
    }
}

static void put_atom_text(struct out *o, const char *s, size_t n, int latin1)
{
    if (!atom_needs_quotes(s, n)) {
        put(o, s, n);
        return;
    }
    put(o, "'", 1);
    for (size_t i = 0; i < n && !o->full; i++) {
        uint8_t ch = (uint8_t)s[i];
        if (latin1 && (ch & 0x80)) {
            char u[2] = {(char)(0xC0 | (ch >> 6)), (char)(0x80 | (ch & 0x3F))};
            put(o, u, 2);
        } else if (ch & 0x80) {
            put(o, (const char *)&s[i], 1); /* UTF-8 byte: pass through */
        } else {
            put_char_escaped(o, ch, '\'');
        }
    }
    put(o, "'", 1);
}

/* The atom at p (validated); returns its encoded size. */
static size_t put_atom_at(struct out *o, const char *p, size_t len)
{
    const char *s;
    size_t n, total;
    int latin1;
    if (aemp__term_atom_view(p, len, &s, &n, &latin1, &total))
        return len; /* cannot happen after validation; stop safely */
    put_atom_text(o, s, n, latin1);
    return total;
}

static int printable(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 0x20 && s[i] < 0x7f) || s[i] == '\n' || s[i] == '\t' || s[i] == '\r'))
            return 0;
    return 1;
}

static void put_quoted(struct out *o, const uint8_t *s, size_t n)
{
    put(o, "\"", 1);
    for (size_t i = 0; i < n && !o->full; i++)
        put_char_escaped(o, s[i], '"');
    put(o, "\"", 1);
}

static void put_bytes_list(struct out *o, const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n && !o->full; i++)
        putf(o, i ? ",%u" : "%u", s[i]);
}

/* Bignum: n little-endian magnitude bytes at d. */
static void put_big(struct out *o, int neg, const uint8_t *d, size_t n)
{
    while (n > 0 && d[n - 1] == 0)
        n--;
    if (n <= 8) {
        uint64_t m = 0;
        for (size_t i = 0; i < n; i++)
            m |= (uint64_t)d[i] << (8 * i);
        putf(o, "%s%" PRIu64, neg && m ? "-" : "", m);
        return;
    }
    putf(o, "%s16#%X", neg ? "-" : "", d[n - 1]);
    for (size_t i = n - 1; i-- > 0 && !o->full;)
        putf(o, "%02X", d[i]);
}

static void put_double_at(struct out *o, const char *p, size_t len)
{
    aemp_cursor c = {p, len, 0};
    double d = 0;
    char text[64];
    aemp_get_double(&c, &d);
    aemp__term_fmt_double(text, sizeof text, d);
    puts_(o, text);
}

static void put_int_at(struct out *o, const char *p, size_t len, size_t *used)
{
    aemp_cursor c = {p, len, 0};
    int64_t v = 0;
    aemp_get_int64(&c, &v);
    putf(o, "%" PRId64, v);
    *used = c.pos;
}

/* Pids, ports and references: node atom then integer words. */
static void put_identifier(struct out *o, const char *p, size_t len)
{
    const uint8_t *u = (const uint8_t *)p;
    uint8_t tag = u[0];
    size_t pos = 1, words = 0;
    switch (tag) {
    case ERL_PID_EXT:
    case ERL_NEW_PID_EXT: {
        /* the node as the atom it is (printing interns nothing) */
        puts_(o, "#Pid<");
        pos += put_atom_at(o, p + pos, len - pos);
        unsigned creation = tag == ERL_PID_EXT ? (u[pos + 8] & 0x03u) : aemp__get_u32(u + pos + 8);
        putf(o, ".%u.%u.%u>", aemp__get_u32(u + pos), aemp__get_u32(u + pos + 4), creation);
        return;
    }
    case ERL_PORT_EXT:
    case ERL_NEW_PORT_EXT:
    case ERL_V4_PORT_EXT: {
        puts_(o, "#Port<");
        pos += put_atom_at(o, p + pos, len - pos);
        uint64_t id = tag == ERL_V4_PORT_EXT ? aemp__get_u64(u + pos) : aemp__get_u32(u + pos);
        putf(o, ".%" PRIu64 ">", id);
        return;
    }
    case ERL_REFERENCE_EXT:
        words = 1;
        break;
    default: /* NEW_REFERENCE_EXT, NEWER_REFERENCE_EXT */
        words = aemp__get_u16(u + 1);
        pos += 2;
        break;
    }
    puts_(o, "#Ref<");
    pos += put_atom_at(o, p + pos, len - pos);
    if (tag == ERL_NEW_REFERENCE_EXT)
        pos += 1; /* creation */
    else if (tag == ERL_NEWER_REFERENCE_EXT)
        pos += 4;
    for (size_t i = 0; i < words; i++)
        putf(o, ".%u", aemp__get_u32(u + pos + 4 * i));
    puts_(o, ">");
}

static void put_fun(struct out *o, const char *p, size_t len)
{
    uint8_t tag = (uint8_t)p[0];
    size_t pos, used;
    aemp_cursor c = {p, len, 0};
    if (tag == ERL_EXPORT_EXT) {
        puts_(o, "fun ");
        pos = 1;
        pos += put_atom_at(o, p + pos, len - pos);
        puts_(o, ":");
        pos += put_atom_at(o, p + pos, len - pos);
        puts_(o, "/");
        put_int_at(o, p + pos, len - pos, &used);
        return;
    }
    if (tag == ERL_NEW_FUN_EXT) {
        pos = 1 + 4 + 1 + 16 + 4 + 4;
    } else {
        /* FUN_EXT: free-variable count, then the creator pid */
        aemp_term skip;
        c.pos = 1 + 4;
        if (aemp_get_term(&c, &skip)) return;
        pos = c.pos;
    }
    puts_(o, "#Fun<");
    pos += put_atom_at(o, p + pos, len - pos);
    puts_(o, ".");
    put_int_at(o, p + pos, len - pos, &used);
    pos += used;
    puts_(o, ".");
    put_int_at(o, p + pos, len - pos, &used);
    puts_(o, ">");
}

/* A value that is not a container, at p (validated, size `size`). */
static void put_leaf(struct out *o, const char *p, size_t size)
{
    const uint8_t *u = (const uint8_t *)p;
    size_t used, n;
    switch (u[0]) {
    case ERL_SMALL_INTEGER_EXT:
    case ERL_INTEGER_EXT:
        put_int_at(o, p, size, &used);
        return;
    case ERL_SMALL_BIG_EXT:
        put_big(o, u[2] != 0, u + 3, u[1]);
        return;
    case ERL_LARGE_BIG_EXT:
        put_big(o, u[5] != 0, u + 6, aemp__get_u32(u + 1));
        return;
    case ERL_FLOAT_EXT:
    case NEW_FLOAT_EXT:
        put_double_at(o, p, size);
        return;
    case ERL_ATOM_EXT:
    case ERL_SMALL_ATOM_EXT:
    case ERL_ATOM_UTF8_EXT:
    case ERL_SMALL_ATOM_UTF8_EXT:
        put_atom_at(o, p, size);
        return;
    case ERL_NIL_EXT:
        puts_(o, "[]");
        return;
    case ERL_STRING_EXT:
        n = aemp__get_u16(u + 1);
        if (n == 0) {
            puts_(o, "[]");
        } else if (printable(u + 3, n)) {
            put_quoted(o, u + 3, n);
        } else {
            puts_(o, "[");
            put_bytes_list(o, u + 3, n);
            puts_(o, "]");
        }
        return;
    case ERL_BINARY_EXT:
        n = aemp__get_u32(u + 1);
        puts_(o, "<<");
        if (n && printable(u + 5, n))
            put_quoted(o, u + 5, n);
        else
            put_bytes_list(o, u + 5, n);
        puts_(o, ">>");
        return;
    case ERL_BIT_BINARY_EXT: {
        n = aemp__get_u32(u + 1);
        unsigned bits = u[5];
        puts_(o, "<<");
        if (n) {
            put_bytes_list(o, u + 6, n - 1);
            /* the used bits are the high ones of the last byte */
            putf(o, "%s%u:%u", n > 1 ? "," : "", (unsigned)(u[6 + n - 1] >> (8 - bits)), bits);
        }
        puts_(o, ">>");
        return;
    }
    case ERL_NEW_FUN_EXT:
    case ERL_FUN_EXT:
    case ERL_EXPORT_EXT:
        put_fun(o, p, size);
        return;
    default:
        put_identifier(o, p, size);
        return;
    }
}

enum pkind { P_TOP, P_TUPLE, P_LIST, P_MAP };

struct pframe {
    int kind;
    size_t remaining;
    size_t index;
};

static int print_term(struct out *o, const char *data, size_t len)
{
    struct pframe st[AEMP__PRINT_MAX_DEPTH + 1];
    int sp = 0;
    size_t pos = 0, used;
    const uint8_t *u = (const uint8_t *)data;

    if (aemp__term_validate(data, len, &used)) return AEMP_EBADTERM;
    len = used;
    st[0].kind = P_TOP;
    st[0].remaining = 1;
    st[0].index = 0;
    while (!o->full) {
        struct pframe *f = &st[sp];
        if (f->remaining == 0) {
            if (f->kind == P_TUPLE || f->kind == P_MAP)
                puts_(o, "}");
            else if (f->kind == P_LIST)
                puts_(o, "]");
            if (sp == 0) break;
            sp--;
            continue;
        }
        if (f->kind == P_LIST && f->remaining == 1) {
            /* the tail: nothing to show for a proper list */
            if (u[pos] == ERL_NIL_EXT) {
                pos++;
                f->remaining = 0;
                continue;
            }
            puts_(o, "|");
        } else if (f->index > 0) {
            puts_(o, f->kind == P_MAP && (f->index & 1) ? " => " : ",");
        }
        f->remaining--;
        f->index++;

        uint8_t tag = u[pos];
        uint32_t n;
        int kind = -1;
        if (sp >= AEMP__PRINT_MAX_DEPTH) {
            /* deeper than is worth printing: the rest of this value as ... */
            if (aemp__term_validate(data + pos, len - pos, &used)) return AEMP_EBADTERM;
            puts_(o, "...");
            pos += used;
            continue;
        }
        switch (tag) {
        case ERL_SMALL_TUPLE_EXT:
            n = u[pos + 1];
            pos += 2;
            kind = P_TUPLE;
            puts_(o, "{");
            break;
        case ERL_LARGE_TUPLE_EXT:
            n = aemp__get_u32(u + pos + 1);
            pos += 5;
            kind = P_TUPLE;
            puts_(o, "{");
            break;
        case ERL_LIST_EXT:
            n = aemp__get_u32(u + pos + 1) + 1u;
            pos += 5;
            kind = P_LIST;
            puts_(o, "[");
            break;
        case ERL_MAP_EXT:
            n = aemp__get_u32(u + pos + 1);
            pos += 5;
            kind = P_MAP;
            puts_(o, "#{");
            break;
        default:
            /* a leaf: its size from the validator, which never recurses */
            if (aemp__term_validate(data + pos, len - pos, &used)) return AEMP_EBADTERM;
            put_leaf(o, data + pos, used);
            pos += used;
            continue;
        }
        /* the check above bounds the depth, so the stack holds */
        sp++;
        st[sp].kind = kind;
        st[sp].remaining = kind == P_MAP ? 2 * (size_t)n : n;
        st[sp].index = 0;
    }
    return 0;
}

int aemp_term_print(const aemp_term *t, char *out, size_t size)
{
    if (!out || size == 0) return AEMP_EINVAL;
    /* the length is returned as an int */
    if (size > (size_t)INT_MAX) size = (size_t)INT_MAX;
    struct out o = {out, size, 0, 0};
    int rc = t ? print_term(&o, t->data, t->len) : AEMP_EINVAL;
    if (rc) {
        o.len = 0;
        o.full = 0;
        puts_(&o, "<bad term>");
    }
    if (o.full) {
        size_t k = size - 1 < 3 ? size - 1 : 3;
        memset(out + size - 1 - k, '.', k);
        o.len = size - 1;
    }
    out[o.len] = 0;
    return rc ? rc : (int)o.len;
}
