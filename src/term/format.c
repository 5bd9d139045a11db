/*
 * format.c - build terms from a format string (aemp_term_format).
 *
 * A recursive-descent parser that encodes as it reads. Container headers are
 * written as 5-byte placeholders and patched when the closing bracket gives
 * the element count, so the format string is read once. Nesting is bounded
 * by AEMP__PRINT_MAX_DEPTH, so recursion is too.
 */
#include "term_local.h"

#include <math.h>

struct fmt {
    const char *s;
    va_list ap;
    aemp_buf *b;
    int depth;
};

/* Longest number literal we read (digits, sign, '.', exponent). */
#define MAX_NUMBER_TEXT 128

static void skip_ws(struct fmt *f)
{
    while (*f->s == ' ' || *f->s == '\t' || *f->s == '\n' || *f->s == '\r')
        f->s++;
}

static int put_atom(aemp_buf *b, const char *s, size_t n)
{
    if (n > AEMP_MAXATOMLEN) return AEMP_EINVAL;
    /* UTF-8 in, UTF-8 atom out; ei checks the UTF-8 and the 255-character
     * limit. Its encoders take an index and no capacity: size with no
     * buffer first, then encode into reserved space. */
    int ix = 0;
    if (ei_encode_atom_len_as(NULL, &ix, s, (int)n, ERLANG_UTF8, ERLANG_UTF8) < 0)
        return AEMP_EINVAL;
    int rc = aemp__buf_reserve(b, (size_t)ix);
    if (rc) return rc;
    ix = 0;
    if (ei_encode_atom_len_as(b->data + b->len, &ix, s, (int)n, ERLANG_UTF8, ERLANG_UTF8) < 0)
        return AEMP_EINVAL;
    b->len += (size_t)ix;
    return 0;
}

static int put_binary(aemp_buf *b, const void *p, size_t n)
{
    if (n > UINT32_MAX || (!p && n)) return AEMP_EINVAL;
    int rc = aemp__buf_reserve(b, 5 + n);
    if (rc) return rc;
    aemp__buf_put_u8(b, ERL_BINARY_EXT);
    aemp__buf_put_u32(b, (uint32_t)n);
    aemp__buf_append(b, p, n);
    return 0;
}

/* As Erlang sends strings: STRING_EXT while the length fits 16 bits, else a
 * list of small integers. */
static int put_charlist(aemp_buf *b, const char *s)
{
    size_t n = strlen(s);
    int rc;
    if (n == 0) return aemp__buf_put_u8(b, ERL_NIL_EXT);
    if (n <= 0xffff) {
        if ((rc = aemp__buf_reserve(b, 3 + n))) return rc;
        aemp__buf_put_u8(b, ERL_STRING_EXT);
        aemp__buf_put_u16(b, (uint16_t)n);
        aemp__buf_append(b, s, n);
        return 0;
    }
    if (n > UINT32_MAX || n > (SIZE_MAX - 6) / 2) return AEMP_EINVAL;
    if ((rc = aemp__buf_reserve(b, 5 + 2 * n + 1))) return rc;
    aemp__buf_put_u8(b, ERL_LIST_EXT);
    aemp__buf_put_u32(b, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        b->data[b->len++] = ERL_SMALL_INTEGER_EXT;
        b->data[b->len++] = s[i];
    }
    aemp__buf_put_u8(b, ERL_NIL_EXT);
    return 0;
}

/* Integers as Erlang encodes them: the smallest of SMALL_INTEGER_EXT,
 * INTEGER_EXT (any int32; ei's encoder stops at 28 bits) and SMALL_BIG_EXT. */
static int put_integer(aemp_buf *b, int neg, uint64_t mag)
{
    uint8_t d[11];
    size_t n = 0;
    if (!neg && mag <= 0xff) {
        d[n++] = ERL_SMALL_INTEGER_EXT;
        d[n++] = (uint8_t)mag;
    } else if ((!neg && mag <= INT32_MAX) || (neg && mag <= (uint64_t)INT32_MAX + 1)) {
        uint32_t v = neg ? (uint32_t)(0u - (uint32_t)mag) : (uint32_t)mag;
        d[n++] = ERL_INTEGER_EXT;
        aemp__put_u32(d + n, v);
        n += 4;
    } else {
        d[n++] = ERL_SMALL_BIG_EXT;
        d[n++] = 0; /* digit count, set below */
        d[n++] = neg ? 1 : 0;
        while (mag) {
            d[n++] = (uint8_t)mag;
            mag >>= 8;
        }
        d[1] = (uint8_t)(n - 3);
    }
    return aemp__buf_append(b, d, n);
}

static int put_i64(aemp_buf *b, int64_t v)
{
    return v < 0 ? put_integer(b, 1, (uint64_t)0 - (uint64_t)v) : put_integer(b, 0, (uint64_t)v);
}

static int put_u64(aemp_buf *b, uint64_t v)
{
    return put_integer(b, 0, v);
}

static int put_double(aemp_buf *b, double d)
{
    /* Erlang has no infinities or NaN: binary_to_term would refuse them */
    if (!isfinite(d)) return AEMP_EINVAL;
    /* NEW_FLOAT_EXT: the IEEE 754 double, big-endian */
    uint64_t bits;
    memcpy(&bits, &d, sizeof bits);
    uint8_t e[9];
    e[0] = NEW_FLOAT_EXT;
    aemp__put_u64(e + 1, bits);
    return aemp__buf_append(b, e, sizeof e);
}

static int put_pid(aemp_buf *b, const aemp_addr *a)
{
    if (!a || a->kind == AEMP_ADDR_NAME) return AEMP_EINVAL;
    return aemp__enc_addr(b, a);
}

static int put_term(aemp_buf *b, const aemp_term *t)
{
    size_t used;
    if (!t || (!t->data && t->len)) return AEMP_EINVAL;
    /* exactly one well-formed term, or the result would not parse */
    if (aemp__term_validate(t->data, t->len, &used) || used != t->len) return AEMP_EINVAL;
    return aemp__buf_append(b, t->data, t->len);
}

static int directive(struct fmt *f)
{
    char c = *f->s++;
    switch (c) {
    case 'a': {
        const char *s = va_arg(f->ap, const char *);
        return s ? put_atom(f->b, s, strlen(s)) : AEMP_EINVAL;
    }
    case 's': {
        const char *s = va_arg(f->ap, const char *);
        return s ? put_binary(f->b, s, strlen(s)) : AEMP_EINVAL;
    }
    case 'l': {
        const char *s = va_arg(f->ap, const char *);
        return s ? put_charlist(f->b, s) : AEMP_EINVAL;
    }
    case 'b': {
        const void *p = va_arg(f->ap, const void *);
        size_t n = va_arg(f->ap, size_t);
        return put_binary(f->b, p, n);
    }
    case 'i':
        return put_i64(f->b, va_arg(f->ap, int64_t));
    case 'u':
        return put_u64(f->b, va_arg(f->ap, uint64_t));
    case 'f':
        return put_double(f->b, va_arg(f->ap, double));
    case 'p':
        return put_pid(f->b, va_arg(f->ap, const aemp_addr *));
    case 't':
        return put_term(f->b, va_arg(f->ap, const aemp_term *));
    default:
        return AEMP_EINVAL;
    }
}

static int is_atom_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '@';
}

static int bare_atom(struct fmt *f)
{
    const char *start = f->s;
    while (is_atom_char(*f->s))
        f->s++;
    return put_atom(f->b, start, (size_t)(f->s - start));
}

static int quoted_atom(struct fmt *f)
{
    char text[AEMP_MAXATOMLEN];
    size_t n = 0;
    f->s++; /* opening quote */
    for (;;) {
        char c = *f->s++;
        if (c == 0) return AEMP_EINVAL;
        if (c == '\'') break;
        if (c == '\\') {
            c = *f->s++;
            switch (c) {
            case 0:
                return AEMP_EINVAL;
            case 'n':
                c = '\n';
                break;
            case 't':
                c = '\t';
                break;
            case 'r':
                c = '\r';
                break;
            case 's':
                c = ' ';
                break;
            default:
                break; /* \' \\ and any other character stand for themselves */
            }
        }
        if (n == sizeof text) return AEMP_EINVAL;
        text[n++] = c;
    }
    return put_atom(f->b, text, n);
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int number(struct fmt *f)
{
    const char *start = f->s;
    int neg = 0, is_float = 0;
    if (*f->s == '-') {
        neg = 1;
        f->s++;
    }
    if (!is_digit(*f->s)) return AEMP_EINVAL;
    uint64_t mag = 0;
    int overflow = 0;
    while (is_digit(*f->s)) {
        unsigned d = (unsigned)(*f->s++ - '0');
        if (mag > (UINT64_MAX - d) / 10)
            overflow = 1;
        else
            mag = mag * 10 + d;
    }
    if (*f->s == '.' && is_digit(f->s[1])) {
        is_float = 1;
        f->s++;
        while (is_digit(*f->s))
            f->s++;
        if (*f->s == 'e' || *f->s == 'E') {
            const char *e = f->s + 1;
            if (*e == '+' || *e == '-') e++;
            if (!is_digit(*e)) return AEMP_EINVAL;
            while (is_digit(*e))
                e++;
            f->s = e;
        }
    }
    if (is_float) {
        char text[MAX_NUMBER_TEXT + 1];
        size_t n = (size_t)(f->s - start);
        if (n > MAX_NUMBER_TEXT) return AEMP_EINVAL;
        memcpy(text, start, n);
        text[n] = 0;
        char *end;
        double d = aemp__term_strtod(text, &end);
        if (end != text + n) return AEMP_EINVAL;
        return put_double(f->b, d);
    }
    if (overflow) return AEMP_EINVAL;
    if (neg && mag > (uint64_t)INT64_MAX + 1) return AEMP_EINVAL;
    return put_integer(f->b, neg && mag != 0, mag);
}

static int value(struct fmt *f);

/* Elements up to `close`, comma separated; map elements are K => V pairs. */
static int elements(struct fmt *f, char close, int pairs, uint32_t *count)
{
    int rc;
    *count = 0;
    skip_ws(f);
    if (*f->s == close) {
        f->s++;
        return 0;
    }
    for (;;) {
        if ((rc = value(f))) return rc;
        if (pairs) {
            skip_ws(f);
            if (f->s[0] != '=' || f->s[1] != '>') return AEMP_EINVAL;
            f->s += 2;
            if ((rc = value(f))) return rc;
        }
        if (*count == UINT32_MAX) return AEMP_EINVAL;
        ++*count;
        skip_ws(f);
        if (*f->s == close) {
            f->s++;
            return 0;
        }
        if (*f->s != ',') return AEMP_EINVAL;
        f->s++;
    }
}

static int container(struct fmt *f, char open)
{
    aemp_buf *b = f->b;
    uint32_t n;
    int rc;
    if (f->depth >= AEMP__PRINT_MAX_DEPTH) return AEMP_EINVAL;
    size_t hdr = b->len;
    if ((rc = aemp__buf_reserve(b, 5))) return rc;
    memset(b->data + hdr, 0, 5);
    b->len += 5;
    f->depth++;
    rc = elements(f, open == '[' ? ']' : '}', open == '#', &n);
    f->depth--;
    if (rc) return rc;
    switch (open) {
    case '{':
        if (n <= 0xff) {
            memmove(b->data + hdr + 2, b->data + hdr + 5, b->len - hdr - 5);
            b->data[hdr] = ERL_SMALL_TUPLE_EXT;
            b->data[hdr + 1] = (char)n;
            b->len -= 3;
        } else {
            b->data[hdr] = ERL_LARGE_TUPLE_EXT;
            aemp__put_u32(b->data + hdr + 1, n);
        }
        return 0;
    case '[':
        if (n == 0) {
            /* the placeholder was the last thing written */
            b->data[hdr] = ERL_NIL_EXT;
            b->len = hdr + 1;
            return 0;
        }
        b->data[hdr] = ERL_LIST_EXT;
        aemp__put_u32(b->data + hdr + 1, n);
        return aemp__buf_put_u8(b, ERL_NIL_EXT);
    default:
        b->data[hdr] = ERL_MAP_EXT;
        aemp__put_u32(b->data + hdr + 1, n);
        return 0;
    }
}

static int value(struct fmt *f)
{
    skip_ws(f);
    char c = *f->s;
    if (c == '~') {
        f->s++;
        return directive(f);
    }
    if (c == '{' || c == '[') {
        f->s++;
        return container(f, c);
    }
    if (c == '#') {
        if (f->s[1] != '{') return AEMP_EINVAL;
        f->s += 2;
        return container(f, '#');
    }
    if (c == '\'') return quoted_atom(f);
    if (c >= 'a' && c <= 'z') return bare_atom(f);
    if (c == '-' || is_digit(c)) return number(f);
    return AEMP_EINVAL;
}

int aemp_term_vformat(aemp_buf *b, const char *fmt, va_list ap)
{
    struct fmt f;
    if (!b || !fmt) return AEMP_EINVAL;
    size_t saved = b->len;
    f.s = fmt;
    f.b = b;
    f.depth = 0;
    va_copy(f.ap, ap);
    int rc = value(&f);
    if (rc == 0) {
        skip_ws(&f);
        if (*f.s) rc = AEMP_EINVAL;
    }
    va_end(f.ap);
    if (rc) b->len = saved;
    return rc;
}

int aemp_term_format(aemp_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = aemp_term_vformat(b, fmt, ap);
    va_end(ap);
    return rc;
}
