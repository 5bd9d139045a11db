/*
 * cursor.c - read terms in place (aemp_get_*, aemp_term_tag).
 *
 * Every read checks the cursor's length itself rather than trusting ei's
 * length-less decoders, so a cursor over any bytes is safe, validated or not.
 *
 * Lists: aemp_get_list() reads the header of LIST_EXT (*arity elements
 * follow, then the tail, which for a proper list is read with aemp_get_nil()).
 * On the empty list (NIL_EXT) it gives *arity 0 and does NOT advance, so the
 * same loop `get_list; n x get_elem; get_nil` reads empty and non-empty
 * lists alike. STRING_EXT (a list of bytes as Erlang sends it) is not a list
 * header to this call: it gives AEMP_ENOMATCH; read it with
 * aemp_get_charlist().
 */
#include "term_local.h"

#include <limits.h>

static int have(const aemp_cursor *c, size_t n)
{
    return c && c->data && c->pos <= c->len && n <= c->len - c->pos;
}

static const uint8_t *here(const aemp_cursor *c)
{
    return (const uint8_t *)c->data + c->pos;
}

static size_t left(const aemp_cursor *c)
{
    return c->len - c->pos;
}

aemp_cursor aemp_cursor_of(const aemp_term *t)
{
    aemp_cursor c = {NULL, 0, 0};
    if (t) {
        c.data = t->data;
        c.len = t->data ? t->len : 0;
    }
    return c;
}

int aemp_get_type(const aemp_cursor *c)
{
    if (!have(c, 1)) return AEMP_ENOMATCH;
    return here(c)[0];
}

int aemp_get_tuple(aemp_cursor *c, uint32_t *arity)
{
    if (!have(c, 1)) return AEMP_ENOMATCH;
    const uint8_t *p = here(c);
    uint32_t n;
    size_t hdr;
    if (p[0] == ERL_SMALL_TUPLE_EXT && have(c, 2)) {
        n = p[1];
        hdr = 2;
    } else if (p[0] == ERL_LARGE_TUPLE_EXT && have(c, 5)) {
        n = aemp__get_u32(p + 1);
        hdr = 5;
    } else {
        return AEMP_ENOMATCH;
    }
    if (arity) *arity = n;
    c->pos += hdr;
    return 0;
}

int aemp_get_list(aemp_cursor *c, uint32_t *arity)
{
    if (!have(c, 1)) return AEMP_ENOMATCH;
    const uint8_t *p = here(c);
    if (p[0] == ERL_NIL_EXT) {
        if (arity) *arity = 0;
        return 0;
    }
    if (p[0] != ERL_LIST_EXT || !have(c, 5)) return AEMP_ENOMATCH;
    if (arity) *arity = aemp__get_u32(p + 1);
    c->pos += 5;
    return 0;
}

int aemp_get_nil(aemp_cursor *c)
{
    if (!have(c, 1) || here(c)[0] != ERL_NIL_EXT) return AEMP_ENOMATCH;
    c->pos += 1;
    return 0;
}

int aemp_get_map(aemp_cursor *c, uint32_t *pairs)
{
    if (!have(c, 5) || here(c)[0] != ERL_MAP_EXT) return AEMP_ENOMATCH;
    if (pairs) *pairs = aemp__get_u32(here(c) + 1);
    c->pos += 5;
    return 0;
}

int aemp_get_atom(aemp_cursor *c, char *out, size_t size)
{
    const char *s;
    size_t n, total;
    int latin1, rc;
    if (!have(c, 0)) return AEMP_ENOMATCH;
    if ((rc = aemp__term_atom_view(c->data + c->pos, left(c), &s, &n, &latin1, &total))) return rc;
    if ((rc = aemp__term_atom_utf8(s, n, latin1, out, size))) return rc;
    c->pos += total;
    return 0;
}

/* An integer as sign and magnitude, if the magnitude fits 64 bits. */
static int get_integer(const aemp_cursor *c, int *neg, uint64_t *mag, size_t *size)
{
    if (!have(c, 2)) return AEMP_ENOMATCH;
    const uint8_t *p = here(c);
    size_t n, hdr;
    switch (p[0]) {
    case ERL_SMALL_INTEGER_EXT:
        *neg = 0;
        *mag = p[1];
        *size = 2;
        return 0;
    case ERL_INTEGER_EXT: {
        if (!have(c, 5)) return AEMP_ENOMATCH;
        int32_t v = (int32_t)aemp__get_u32(p + 1);
        *neg = v < 0;
        *mag = v < 0 ? (uint64_t)(-(int64_t)v) : (uint64_t)v;
        *size = 5;
        return 0;
    }
    case ERL_SMALL_BIG_EXT:
        n = p[1];
        hdr = 3;
        break;
    case ERL_LARGE_BIG_EXT:
        if (!have(c, 6)) return AEMP_ENOMATCH;
        n = aemp__get_u32(p + 1);
        hdr = 6;
        break;
    default:
        return AEMP_ENOMATCH;
    }
    if (!have(c, hdr) || n > left(c) - hdr) return AEMP_ENOMATCH;
    uint64_t m = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t d = p[hdr + i];
        if (i < 8)
            m |= (uint64_t)d << (8 * i);
        else if (d)
            return AEMP_ENOMATCH;
    }
    *neg = p[hdr - 1] != 0 && m != 0;
    *mag = m;
    *size = hdr + n;
    return 0;
}

int aemp_get_int64(aemp_cursor *c, int64_t *v)
{
    int neg;
    uint64_t mag;
    size_t size;
    if (get_integer(c, &neg, &mag, &size)) return AEMP_ENOMATCH;
    int64_t r;
    if (neg) {
        if (mag > (uint64_t)INT64_MAX + 1) return AEMP_ENOMATCH;
        r = mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
    } else {
        if (mag > (uint64_t)INT64_MAX) return AEMP_ENOMATCH;
        r = (int64_t)mag;
    }
    if (v) *v = r;
    c->pos += size;
    return 0;
}

int aemp_get_uint64(aemp_cursor *c, uint64_t *v)
{
    int neg;
    uint64_t mag;
    size_t size;
    if (get_integer(c, &neg, &mag, &size) || neg) return AEMP_ENOMATCH;
    if (v) *v = mag;
    c->pos += size;
    return 0;
}

int aemp_get_double(aemp_cursor *c, double *v)
{
    if (!have(c, 1)) return AEMP_ENOMATCH;
    const uint8_t *p = here(c);
    double d;
    if (p[0] == NEW_FLOAT_EXT && have(c, 9)) {
        uint64_t bits = aemp__get_u64(p + 1);
        memcpy(&d, &bits, sizeof d);
        if (v) *v = d;
        c->pos += 9;
        return 0;
    }
    if (p[0] == ERL_FLOAT_EXT && have(c, 32)) {
        if (aemp__term_old_float((const char *)p + 1, &d)) return AEMP_ENOMATCH;
        if (v) *v = d;
        c->pos += 32;
        return 0;
    }
    return AEMP_ENOMATCH;
}

int aemp_get_binary(aemp_cursor *c, const void **ptr, size_t *len)
{
    if (!have(c, 5) || here(c)[0] != ERL_BINARY_EXT) return AEMP_ENOMATCH;
    size_t n = aemp__get_u32(here(c) + 1);
    if (n > left(c) - 5) return AEMP_ENOMATCH;
    if (ptr) *ptr = here(c) + 5;
    if (len) *len = n;
    c->pos += 5 + n;
    return 0;
}

int aemp_get_charlist(aemp_cursor *c, char *out, size_t size)
{
    if (!out || size == 0) return AEMP_EINVAL;
    if (!have(c, 1)) return AEMP_ENOMATCH;
    const uint8_t *p = here(c);
    size_t n;
    switch (p[0]) {
    case ERL_NIL_EXT:
        out[0] = 0;
        c->pos += 1;
        return 0;
    case ERL_STRING_EXT:
        if (!have(c, 3)) return AEMP_ENOMATCH;
        n = aemp__get_u16(p + 1);
        if (n > left(c) - 3) return AEMP_ENOMATCH;
        if (n >= size) return AEMP_ETOOBIG;
        memcpy(out, p + 3, n);
        out[n] = 0;
        c->pos += 3 + n;
        return 0;
    case ERL_LIST_EXT:
        if (!have(c, 5)) return AEMP_ENOMATCH;
        n = aemp__get_u32(p + 1);
        /* 2 bytes per small integer, then NIL */
        if (n > (left(c) - 5) / 2 || 5 + 2 * n >= left(c)) return AEMP_ENOMATCH;
        for (size_t i = 0; i < n; i++)
            if (p[5 + 2 * i] != ERL_SMALL_INTEGER_EXT) return AEMP_ENOMATCH;
        if (p[5 + 2 * n] != ERL_NIL_EXT) return AEMP_ENOMATCH;
        if (n >= size) return AEMP_ETOOBIG;
        for (size_t i = 0; i < n; i++)
            out[i] = (char)p[5 + 2 * i + 1];
        out[n] = 0;
        c->pos += 5 + 2 * n + 1;
        return 0;
    default:
        return AEMP_ENOMATCH;
    }
}

static int get_addr(aemp_cursor *c, unsigned want, aemp_addr *out)
{
    if (!out) return AEMP_EINVAL;
    if (!have(c, 1)) return AEMP_ENOMATCH;
    size_t used;
    int rc = aemp__dec_addr(c->data + c->pos, left(c), want, 0, out, &used);
    if (rc) return rc;
    c->pos += used;
    return 0;
}

int aemp_get_pid(aemp_cursor *c, aemp_addr *out)
{
    return get_addr(c, AEMP__WANT(AEMP_ADDR_PID), out);
}

int aemp_get_ref(aemp_cursor *c, aemp_addr *out)
{
    return get_addr(c, AEMP__WANT(AEMP_ADDR_REF), out);
}

int aemp_get_term(aemp_cursor *c, aemp_term *t)
{
    size_t used;
    if (!have(c, 1)) return AEMP_ENOMATCH;
    /* our iterative walker rather than ei_skip_term: bounded stack and
     * bounds-checked even for terms that were never validated */
    if (aemp__term_validate(c->data + c->pos, left(c), &used)) return AEMP_EBADTERM;
    if (t) {
        t->data = c->data + c->pos;
        t->len = used;
    }
    c->pos += used;
    return 0;
}

int aemp_term_tag(const aemp_term *t, char *tag, size_t size)
{
    aemp_cursor c = aemp_cursor_of(t);
    uint32_t arity;
    if (aemp_get_tuple(&c, &arity) || arity == 0) return AEMP_ENOMATCH;
    return aemp_get_atom(&c, tag, size);
}

int64_t aemp__term_list_len(const aemp_term *t)
{
    if (!t || !t->data) return -1;
    if (t->len >= 3 && (uint8_t)t->data[0] == AEMP__EXT_STRING) {
        size_t n = aemp__get_u16(t->data + 1);
        return 3 + n <= t->len ? (int64_t)n : -1;
    }
    aemp_cursor c = aemp_cursor_of(t);
    uint32_t n;
    if (aemp_get_list(&c, &n)) return -1;
    for (uint32_t i = 0; i < n; i++)
        if (aemp_get_term(&c, NULL)) return -1;
    return aemp_get_nil(&c) ? -1 : (int64_t)n;
}

int aemp__term_as_list(const aemp_term *t, aemp_buf *out)
{
    if (t->len < 3 || (uint8_t)t->data[0] != AEMP__EXT_STRING) return aemp_buf_put_term(out, t);
    uint16_t n = aemp__get_u16(t->data + 1);
    if (3 + (size_t)n > t->len) return AEMP_EBADTERM;
    int rc = aemp__buf_reserve(out, 6 + 2 * (size_t)n);
    if (rc) return rc;
    aemp__buf_put_u8(out, AEMP__EXT_LIST);
    aemp__buf_put_u32(out, n);
    for (uint16_t i = 0; i < n; i++) {
        aemp__buf_put_u8(out, AEMP__EXT_SMALL_INTEGER);
        aemp__buf_put_u8(out, (uint8_t)t->data[3 + i]);
    }
    return aemp__buf_put_u8(out, AEMP__EXT_NIL);
}
