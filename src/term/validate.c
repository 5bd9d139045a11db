/*
 * validate.c - bounded, iterative check of untrusted external-format terms.
 *
 * ei's decoders trust the buffer: they take no length, copy into fixed-size
 * structs and recurse on nesting. Every term that comes from the network goes
 * through aemp__term_validate() first; once it passes, any ei decode of it
 * stays inside the buffer and inside ei's fixed buffers, and any recursive ei
 * walk stays within the depth the caller allowed (AEMP__TERM_MAX_DEPTH by
 * default). The walk itself is iterative: its frames live on the stack for
 * the first STACK_FRAMES levels, then in memory that grows with the term.
 */
#include "term_local.h"

#include <limits.h>
#include <stdlib.h>

#define STACK_FRAMES 64

/* ei.h does not name this tag: a reference to the atom cache of a
 * distribution header (erl_ext_dist). */
#define ERL_ATOM_CACHE_REF 82

/* Largest bignum magnitude accepted, in bytes. Nothing legitimate comes near
 * it, and converting or printing larger numbers costs more than it is worth. */
#define MAX_BIG_BYTES (16u << 20)
/* Erlang atoms hold at most 255 characters; ei converts latin-1 atoms to UTF-8
 * (up to 2 bytes per character) into char[MAXATOMLEN_UTF8], so a longer
 * latin-1 atom would make ei's decoders fail where we accepted it. */
#define MAX_LATIN1_ATOM 255
/* ei's erlang_ref holds at most this many ID words. */
#define MAX_REF_WORDS 5
/* The text of an old FLOAT_EXT. */
#define OLD_FLOAT_LEN 31

enum frame_kind {
    FRAME_SEQ, /* tuple, list (elements + tail), map, old fun free variables */
    FRAME_FUN, /* NEW_FUN free variables: must end exactly at `end` */
};

struct frame {
    size_t remaining; /* values still to read in this container */
    size_t end;
    int kind;
};

struct walk {
    const uint8_t *p;
    size_t len;
    size_t pos;
    /* Atom cache references: allowed with an index below nrefs, and their
     * offsets recorded (u32 each) in refpos; with refpos NULL, refused. */
    unsigned nrefs;
    aemp_buf *refpos;
    /* With match: the offsets of the atoms whose text is match (mlen
     * bytes) are recorded in refpos too (aemp__term_find_atom). */
    const uint8_t *match;
    size_t mlen;
    /* the frames: st[0..cap), local or on the heap; at most max_depth deep */
    struct frame *st;
    int cap;
    int max_depth;
    bool too_deep;
    struct frame local[STACK_FRAMES];
};

static size_t avail(const struct walk *w)
{
    return w->len - w->pos;
}

static int take(struct walk *w, size_t n)
{
    if (n > avail(w)) return -1;
    w->pos += n;
    return 0;
}

static int get8(struct walk *w, uint32_t *v)
{
    if (avail(w) < 1) return -1;
    *v = w->p[w->pos];
    w->pos += 1;
    return 0;
}

static int get16(struct walk *w, uint32_t *v)
{
    if (avail(w) < 2) return -1;
    *v = aemp__get_u16(w->p + w->pos);
    w->pos += 2;
    return 0;
}

static int get32(struct walk *w, uint32_t *v)
{
    if (avail(w) < 4) return -1;
    *v = aemp__get_u32(w->p + w->pos);
    w->pos += 4;
    return 0;
}

/* ATOM_CACHE_REF Index, as it stands where an atom may stand. */
static int cache_ref(struct walk *w, size_t start)
{
    uint32_t idx;
    if (!w->refpos || get8(w, &idx) || idx >= w->nrefs) return -1;
    return aemp__buf_put_u32(w->refpos, (uint32_t)start) ? -1 : 0;
}

static int skip_atom(struct walk *w)
{
    uint32_t tag, n;
    size_t start = w->pos;
    if (get8(w, &tag)) return -1;
    switch (tag) {
    case ERL_ATOM_CACHE_REF:
        return cache_ref(w, start);
    case ERL_ATOM_EXT:
        if (get16(w, &n) || n > MAX_LATIN1_ATOM) return -1;
        break;
    case ERL_SMALL_ATOM_EXT:
    case ERL_SMALL_ATOM_UTF8_EXT:
        if (get8(w, &n)) return -1;
        break;
    case ERL_ATOM_UTF8_EXT:
        if (get16(w, &n) || n > AEMP_MAXATOMLEN) return -1;
        break;
    default:
        return -1;
    }
    if (w->match && n == w->mlen && n <= avail(w) && memcmp(w->p + w->pos, w->match, n) == 0 &&
        aemp__buf_put_u32(w->refpos, (uint32_t)start))
        return -1;
    return take(w, n);
}

/* The integers inside funs and exports, as ei_decode_long reads them. */
static int skip_small_int(struct walk *w)
{
    uint32_t tag, n;
    if (get8(w, &tag)) return -1;
    switch (tag) {
    case ERL_SMALL_INTEGER_EXT:
        return take(w, 1);
    case ERL_INTEGER_EXT:
        return take(w, 4);
    case ERL_SMALL_BIG_EXT: {
        /* must fit ei's long long, or ei_decode_long refuses it */
        uint32_t sign;
        if (get8(w, &n) || n > 8 || get8(w, &sign) || n > avail(w)) return -1;
        uint64_t mag = 0;
        for (uint32_t i = 0; i < n; i++)
            mag |= (uint64_t)w->p[w->pos + i] << (8 * i);
        if (mag > (sign ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX)) return -1;
        return take(w, n);
    }
    default:
        return -1;
    }
}

static int skip_pid(struct walk *w)
{
    uint32_t tag;
    if (get8(w, &tag)) return -1;
    if (tag != ERL_PID_EXT && tag != ERL_NEW_PID_EXT) return -1;
    if (skip_atom(w)) return -1;
    return take(w, tag == ERL_PID_EXT ? 9 : 12);
}

static int push(struct walk *w, int *sp, size_t remaining, int kind, size_t end)
{
    if (*sp >= w->max_depth) {
        w->too_deep = true;
        return -1;
    }
    if (*sp + 1 >= w->cap) {
        int cap = w->cap * 2 > w->max_depth + 1 ? w->max_depth + 1 : w->cap * 2;
        struct frame *st = malloc((size_t)cap * sizeof *st);
        if (!st) return -1;
        memcpy(st, w->st, (size_t)w->cap * sizeof *st);
        if (w->st != w->local) free(w->st);
        w->st = st;
        w->cap = cap;
    }
    ++*sp;
    w->st[*sp].remaining = remaining;
    w->st[*sp].kind = kind;
    w->st[*sp].end = end;
    return 0;
}

/* One value at w->pos: leaves are skipped, containers push a frame. */
static int step(struct walk *w, int *sp)
{
    size_t start = w->pos;
    uint32_t tag, n, m;
    if (get8(w, &tag)) return -1;
    switch (tag) {
    case ERL_SMALL_INTEGER_EXT:
        return take(w, 1);
    case ERL_INTEGER_EXT:
        return take(w, 4);
    case ERL_FLOAT_EXT:
        if (avail(w) < OLD_FLOAT_LEN || aemp__term_old_float((const char *)w->p + w->pos, NULL))
            return -1;
        return take(w, OLD_FLOAT_LEN);
    case NEW_FLOAT_EXT:
        return take(w, 8);
    case ERL_ATOM_EXT:
    case ERL_SMALL_ATOM_EXT:
    case ERL_ATOM_UTF8_EXT:
    case ERL_SMALL_ATOM_UTF8_EXT:
    case ERL_ATOM_CACHE_REF:
        w->pos = start;
        return skip_atom(w);
    case ERL_REFERENCE_EXT:
        if (skip_atom(w)) return -1;
        return take(w, 5);
    case ERL_NEW_REFERENCE_EXT:
    case ERL_NEWER_REFERENCE_EXT:
        if (get16(w, &n) || n > MAX_REF_WORDS || skip_atom(w)) return -1;
        return take(w, (tag == ERL_NEW_REFERENCE_EXT ? 1 : 4) + 4 * (size_t)n);
    case ERL_PORT_EXT:
        if (skip_atom(w)) return -1;
        return take(w, 5);
    case ERL_NEW_PORT_EXT:
        if (skip_atom(w)) return -1;
        return take(w, 8);
    case ERL_V4_PORT_EXT:
        if (skip_atom(w)) return -1;
        return take(w, 12);
    case ERL_PID_EXT:
    case ERL_NEW_PID_EXT:
        w->pos = start;
        return skip_pid(w);
    case ERL_SMALL_TUPLE_EXT:
        if (get8(w, &n) || n > avail(w)) return -1;
        return push(w, sp, n, FRAME_SEQ, 0);
    case ERL_LARGE_TUPLE_EXT:
        if (get32(w, &n) || n > avail(w)) return -1;
        return push(w, sp, n, FRAME_SEQ, 0);
    case ERL_MAP_EXT:
        if (get32(w, &n) || n > avail(w) / 2) return -1;
        return push(w, sp, 2 * (size_t)n, FRAME_SEQ, 0);
    case ERL_NIL_EXT:
        return 0;
    case ERL_STRING_EXT:
        if (get16(w, &n)) return -1;
        return take(w, n);
    case ERL_LIST_EXT:
        /* n elements and a tail, each at least one byte */
        if (get32(w, &n) || n >= avail(w)) return -1;
        return push(w, sp, (size_t)n + 1, FRAME_SEQ, 0);
    case ERL_BINARY_EXT:
        if (get32(w, &n)) return -1;
        return take(w, n);
    case ERL_BIT_BINARY_EXT:
        /* as ei_decode_bitstring: 1..8 bits used in the last byte of a
         * non-empty bitstring, 0 for an empty one */
        if (get32(w, &n) || get8(w, &m)) return -1;
        if ((m == 0) != (n == 0) || m > 8) return -1;
        return take(w, n);
    case ERL_SMALL_BIG_EXT:
        if (get8(w, &n)) return -1;
        return take(w, 1 + (size_t)n);
    case ERL_LARGE_BIG_EXT:
        if (get32(w, &n) || n > MAX_BIG_BYTES) return -1;
        return take(w, 1 + (size_t)n);
    case ERL_NEW_FUN_EXT: {
        /* Size counts itself and everything after the tag. */
        if (get32(w, &n) || n < 4 + 1 + 16 + 4 + 4 || n > w->len - start - 1) return -1;
        size_t end = start + 1 + (size_t)n;
        /* Replacing cache references inside changes its Size: note it,
         * before the references in its header, to keep offsets in order. */
        if (w->refpos && aemp__buf_put_u32(w->refpos, (uint32_t)start | AEMP__TERM_FUN_MARK))
            return -1;
        uint32_t nfree;
        if (take(w, 1 + 16 + 4) || get32(w, &nfree)) return -1;
        if (skip_atom(w) || skip_small_int(w) || skip_small_int(w) || skip_pid(w)) return -1;
        if (w->pos > end || nfree > end - w->pos) return -1;
        return push(w, sp, nfree, FRAME_FUN, end);
    }
    case ERL_EXPORT_EXT:
        if (skip_atom(w) || skip_atom(w)) return -1;
        return skip_small_int(w);
    case ERL_FUN_EXT: {
        uint32_t nfree;
        if (get32(w, &nfree) || skip_pid(w) || skip_atom(w) || skip_small_int(w) ||
            skip_small_int(w))
            return -1;
        if (nfree > avail(w)) return -1;
        return push(w, sp, nfree, FRAME_SEQ, 0);
    }
    default:
        /* compressed, LOCAL_EXT and unknown tags: ei cannot decode them (or,
         * for compressed, would need an unbounded inflate); ATOM_CACHE_REF is
         * handled with the atoms above */
        return -1;
    }
}

int aemp__term_validate(const char *buf, size_t len, size_t *used)
{
    return aemp__term_validate_refs(buf, len, used, 0, NULL, AEMP__TERM_MAX_DEPTH);
}

bool aemp__term_whole(const aemp_term *t)
{
    size_t used;
    return t && t->data && t->len && aemp__term_validate(t->data, t->len, &used) == 0 &&
           used == t->len;
}

int aemp__term_validate_depth(const char *buf, size_t len, size_t *used, unsigned max_depth)
{
    return aemp__term_validate_refs(buf, len, used, 0, NULL, max_depth);
}

static int walk_term(const char *buf, size_t len, size_t *used, unsigned nrefs, aemp_buf *refpos,
                     unsigned max_depth, const char *match, size_t mlen)
{
    struct walk w;
    w.p = (const uint8_t *)buf;
    w.len = len;
    w.pos = 0;
    w.nrefs = nrefs;
    w.refpos = refpos;
    w.match = (const uint8_t *)match;
    w.mlen = mlen;
    w.st = w.local;
    w.cap = STACK_FRAMES;
    w.max_depth = max_depth > INT_MAX - 1 ? INT_MAX - 1 : (int)max_depth;
    w.too_deep = false;
    int sp = 0, rc = AEMP_EBADTERM;

    if (!buf && len) return AEMP_EBADTERM;
    /* ei indexes terms with int */
    if (w.len > (size_t)INT_MAX) w.len = (size_t)INT_MAX;
    /* frame 0 stands for the single top-level value; it adds no depth */
    w.st[0].remaining = 1;
    w.st[0].kind = FRAME_SEQ;
    w.st[0].end = 0;
    for (;;) {
        while (w.st[sp].remaining == 0) {
            if (w.st[sp].kind == FRAME_FUN && w.pos != w.st[sp].end) goto done;
            if (sp == 0) {
                if (used) *used = w.pos;
                rc = 0;
                goto done;
            }
            sp--;
        }
        w.st[sp].remaining--;
        if (step(&w, &sp)) {
            if (w.too_deep) rc = AEMP_ETOOBIG;
            goto done;
        }
    }
done:
    if (w.st != w.local) free(w.st);
    return rc;
}

int aemp__term_validate_refs(const char *buf, size_t len, size_t *used, unsigned nrefs,
                             aemp_buf *refpos, unsigned max_depth)
{
    return walk_term(buf, len, used, nrefs, refpos, max_depth, NULL, 0);
}

int aemp__term_find_atom(const char *buf, size_t len, const char *atom, size_t alen, aemp_buf *pos)
{
    size_t used;
    pos->len = 0;
    int rc = walk_term(buf, len, &used, 0, pos, AEMP__TERM_MAX_DEPTH, atom, alen);
    return rc ? rc : used == len ? 0 : AEMP_EBADTERM;
}
