/*
 * atom.c - the four atom encodings read in place: the text of an atom and
 * its UTF-8 form, for the cursor, addresses and the printer.
 */
#include "term_local.h"

int aemp__term_atom_view(const char *p, size_t len, const char **s, size_t *n, int *latin1,
                         size_t *total)
{
    const uint8_t *u = (const uint8_t *)p;
    size_t hdr, k;
    if (!p || len < 2) return AEMP_ENOMATCH;
    switch (u[0]) {
    case ERL_SMALL_ATOM_EXT:
    case ERL_SMALL_ATOM_UTF8_EXT:
        hdr = 2;
        k = u[1];
        break;
    case ERL_ATOM_EXT:
    case ERL_ATOM_UTF8_EXT:
        if (len < 3) return AEMP_ENOMATCH;
        hdr = 3;
        k = aemp__get_u16(u + 1);
        break;
    default:
        return AEMP_ENOMATCH;
    }
    if (k > len - hdr) return AEMP_ENOMATCH;
    *s = p + hdr;
    *n = k;
    *latin1 = u[0] == ERL_ATOM_EXT || u[0] == ERL_SMALL_ATOM_EXT;
    *total = hdr + k;
    return 0;
}

int aemp__term_atom_utf8(const char *s, size_t n, int latin1, char *out, size_t size)
{
    if (!out || size == 0) return AEMP_EINVAL;
    size_t need = n;
    if (latin1)
        for (size_t i = 0; i < n; i++)
            need += ((uint8_t)s[i] & 0x80) != 0;
    if (need >= size) return AEMP_ETOOBIG;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t ch = (uint8_t)s[i];
        if (latin1 && (ch & 0x80)) {
            out[o++] = (char)(0xC0 | (ch >> 6));
            out[o++] = (char)(0x80 | (ch & 0x3F));
        } else {
            out[o++] = (char)ch;
        }
    }
    out[o] = 0;
    return 0;
}
