/*
 * atomref.c - the sending side of a distribution header's atom cache: a
 * term with chosen atoms written as ATOM_CACHE_REF (erl_ext_dist). The
 * offsets come from aemp__term_find_atom (validate.c); the receiving side
 * is replace_refs in src/dist/packet.c.
 */
#include "term_local.h"

#include <stdlib.h>

/* Bytes the atom at p takes (its tag, length and text). */
static size_t atom_bytes(const char *p)
{
    switch ((uint8_t)p[0]) {
    case ERL_SMALL_ATOM_EXT:
    case ERL_SMALL_ATOM_UTF8_EXT:
        return 2 + (uint8_t)p[1];
    default: /* ATOM_EXT, ATOM_UTF8_EXT */
        return 3 + (size_t)aemp__get_u16(p + 1);
    }
}

int aemp__term_atoms_to_ref(const char *t, size_t tlen, const aemp_buf *pos, uint8_t idx,
                            aemp_buf *out)
{
    int rc = 0;
    size_t prev = 0;
    out->len = 0;
    for (size_t k = 0; k + 4 <= pos->len && !rc; k += 4) {
        uint32_t at = aemp__get_u32(pos->data + k);
        if (at & AEMP__TERM_FUN_MARK) continue;
        rc = aemp__buf_append(out, t + prev, at - prev);
        if (!rc) rc = aemp__buf_put_u8(out, 82); /* ATOM_CACHE_REF */
        if (!rc) rc = aemp__buf_put_u8(out, idx);
        prev = at + atom_bytes(t + at);
    }
    if (!rc) rc = aemp__buf_append(out, t + prev, tlen - prev);
    if (rc) return rc;
    /* Each fun: its new place is its old one less what the atoms before it
     * shrank; its Size shrinks by what those inside it did. Offsets come
     * in walk order and funs nest: one pass with a stack of open funs. */
    struct open_fun {
        size_t start, end, shrunk_before;
    };
    aemp_buf stack = AEMP_BUF_INIT; /* of struct open_fun: funs are rare */
    size_t sp = 0, shrunk = 0;
    for (size_t k = 0; k <= pos->len && !rc; k += 4) {
        bool last = k + 4 > pos->len;
        uint32_t e = last ? 0 : aemp__get_u32(pos->data + k);
        size_t at = last ? SIZE_MAX : (e & ~AEMP__TERM_FUN_MARK);
        struct open_fun *st = (struct open_fun *)(void *)stack.data;
        while (sp > 0 && st[sp - 1].end <= at) {
            struct open_fun *f = &st[--sp];
            char *size = out->data + (f->start - f->shrunk_before) + 1;
            aemp__put_u32(size, aemp__get_u32(size) - (uint32_t)(shrunk - f->shrunk_before));
        }
        if (last) break;
        if (e & AEMP__TERM_FUN_MARK) {
            struct open_fun f = {at, at + 1 + aemp__get_u32(t + at + 1), shrunk};
            stack.len = sp * sizeof f;
            rc = aemp__buf_append(&stack, &f, sizeof f);
            sp++;
        } else {
            shrunk += atom_bytes(t + at) - 2;
        }
    }
    aemp_buf_free(&stack);
    return rc;
}
