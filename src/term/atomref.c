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

/* What the atom at t + at shrinks by as a 2-byte reference. */
static int64_t shrink(const char *t, uint32_t at, void *arg)
{
    (void)arg;
    return 2 - (int64_t)atom_bytes(t + at);
}

/* After the items at pos were rewritten into out, each changing size by
 * delta(t, offset, arg) bytes: the Size of every NEW_FUN_EXT in out made
 * right. */
static int fix_funs(const char *t, const aemp_buf *pos, aemp_buf *out, aemp__term_delta_fn delta,
                    void *arg)
{
    /* Each fun: its new place is its old one plus what the atoms before it
     * changed by; its Size changes by what those inside it did. Offsets
     * come in walk order and funs nest: one pass with a stack of open
     * funs (as deep as terms may nest; funs are rare). */
    struct open_fun {
        size_t start, end;
        int64_t moved_before;
    };
    aemp_buf stack = AEMP_BUF_INIT;
    size_t sp = 0;
    int64_t moved = 0;
    int rc = 0;
    for (size_t k = 0; k <= pos->len && !rc; k += 4) {
        bool last = k + 4 > pos->len;
        uint32_t e = last ? 0 : aemp__get_u32(pos->data + k);
        size_t at = last ? SIZE_MAX : (e & ~AEMP__TERM_FUN_MARK);
        struct open_fun *st = (struct open_fun *)(void *)stack.data;
        while (sp > 0 && st[sp - 1].end <= at) {
            struct open_fun *f = &st[--sp];
            char *size = out->data + (int64_t)f->start + f->moved_before + 1;
            int64_t n = (int64_t)aemp__get_u32(size) + (moved - f->moved_before);
            if (n < 0 || n > UINT32_MAX) {
                rc = AEMP_ETOOBIG;
                break;
            }
            aemp__put_u32(size, (uint32_t)n);
        }
        if (last || rc) break;
        if (e & AEMP__TERM_FUN_MARK) {
            struct open_fun f = {at, at + 1 + aemp__get_u32(t + at + 1), moved};
            stack.len = sp * sizeof f;
            rc = aemp__buf_append(&stack, &f, sizeof f);
            sp++;
        } else {
            moved += delta(t, (uint32_t)at, arg);
        }
    }
    aemp_buf_free(&stack);
    return rc;
}

int aemp__term_splice(const char *t, size_t tlen, const aemp_buf *pos, aemp__term_put_fn put,
                      aemp__term_delta_fn delta, void *arg, aemp_buf *out)
{
    int rc = 0;
    size_t prev = 0;
    out->len = 0;
    for (size_t k = 0; k + 4 <= pos->len && !rc; k += 4) {
        uint32_t at = aemp__get_u32(pos->data + k);
        if (at & AEMP__TERM_FUN_MARK) continue;
        size_t old = 0;
        rc = aemp__buf_append(out, t + prev, at - prev);
        if (!rc) rc = put(out, t, at, arg, &old);
        prev = at + old;
    }
    if (!rc) rc = aemp__buf_append(out, t + prev, tlen - prev);
    if (rc) return rc;
    return fix_funs(t, pos, out, delta, arg);
}

/* The atom at t + at as ATOM_CACHE_REF *idx. */
static int put_ref(aemp_buf *out, const char *t, uint32_t at, void *arg, size_t *old)
{
    *old = atom_bytes(t + at);
    int rc = aemp__buf_put_u8(out, 82); /* ATOM_CACHE_REF */
    return rc ? rc : aemp__buf_put_u8(out, *(const uint8_t *)arg);
}

int aemp__term_atoms_to_ref(const char *t, size_t tlen, const aemp_buf *pos, uint8_t idx,
                            aemp_buf *out)
{
    return aemp__term_splice(t, tlen, pos, put_ref, shrink, &idx, out);
}
