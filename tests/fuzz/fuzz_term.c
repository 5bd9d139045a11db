/*
 * fuzz_term.c - aemp__term_validate on arbitrary bytes. When it accepts,
 * the term must be safe for every reader: aemp_term_print, the cursor API
 * (every element, walked iteratively), aemp_term_tag, and ei's own decoders
 * (ei_skip_term, ei_decode_*) run on a copy that ends at an
 * inaccessible page. Validate's `used` must equal ei_skip_term's result, at
 * the top and for every element.
 */
#include "fuzz_common.h"

#include <ei.h>

static char strbuf[FUZZ_GUARD_AREA + 1];

/* ei's decoders on the value at buf[pos]: they must stay inside the term
 * (the guard page catches any read past it) and, when they succeed, agree
 * with our size for it. */
static void ei_readers(const char *buf, size_t pos, size_t end, int type)
{
    int i = (int)pos;
    char atom[MAXATOMLEN_UTF8];
    switch (type) {
    case ERL_ATOM_EXT:
    case ERL_SMALL_ATOM_EXT:
    case ERL_ATOM_UTF8_EXT:
    case ERL_SMALL_ATOM_UTF8_EXT:
        if (ei_decode_atom_as(buf, &i, atom, sizeof atom, ERLANG_UTF8, NULL, NULL) == 0)
            FUZZ_CHECK((size_t)i == end);
        break;
    case ERL_SMALL_INTEGER_EXT:
    case ERL_INTEGER_EXT:
    case ERL_SMALL_BIG_EXT:
    case ERL_LARGE_BIG_EXT: {
        EI_LONGLONG v;
        EI_ULONGLONG u;
        if (ei_decode_longlong(buf, &i, &v) == 0) FUZZ_CHECK((size_t)i == end);
        i = (int)pos;
        if (ei_decode_ulonglong(buf, &i, &u) == 0) FUZZ_CHECK((size_t)i == end);
        break;
    }
    case ERL_FLOAT_EXT:
    case NEW_FLOAT_EXT: {
        double d;
        if (ei_decode_double(buf, &i, &d) == 0) FUZZ_CHECK((size_t)i == end);
        break;
    }
    case ERL_PID_EXT:
    case ERL_NEW_PID_EXT: {
        erlang_pid p;
        if (ei_decode_pid(buf, &i, &p) == 0) FUZZ_CHECK((size_t)i == end);
        break;
    }
    case ERL_PORT_EXT:
    case ERL_NEW_PORT_EXT:
    case ERL_V4_PORT_EXT: {
        erlang_port p;
        if (ei_decode_port(buf, &i, &p) == 0) FUZZ_CHECK((size_t)i == end);
        break;
    }
    case ERL_REFERENCE_EXT:
    case ERL_NEW_REFERENCE_EXT:
    case ERL_NEWER_REFERENCE_EXT: {
        erlang_ref r;
        if (ei_decode_ref(buf, &i, &r) == 0) FUZZ_CHECK((size_t)i == end);
        break;
    }
    case ERL_FUN_EXT:
    case ERL_NEW_FUN_EXT:
    case ERL_EXPORT_EXT: {
        erlang_fun f;
        if (ei_decode_fun(buf, &i, &f) == 0) {
            FUZZ_CHECK((size_t)i == end);
            free_fun(&f);
        }
        break;
    }
    case ERL_BINARY_EXT:
    case ERL_BIT_BINARY_EXT: {
        const char *bp;
        unsigned int off;
        size_t bits;
        if (ei_decode_bitstring(buf, &i, &bp, &off, &bits) == 0) FUZZ_CHECK((size_t)i == end);
        break;
    }
    case ERL_STRING_EXT:
    case ERL_LIST_EXT:
    case ERL_NIL_EXT:
        if (end - pos <= FUZZ_GUARD_AREA && ei_decode_string(buf, &i, strbuf) == 0)
            FUZZ_CHECK((size_t)i == end);
        break;
    default:
        break;
    }
    ei_term et;
    i = (int)pos;
    memset(&et, 0, sizeof et);
    (void)ei_decode_ei_term(buf, &i, &et);
}

/* Our readers on one value at the cursor; containers report their count of
 * children (elements, plus the tail for lists). Returns -1 for a leaf. */
static long our_readers(aemp_cursor *cur, const aemp_cursor *after)
{
    static char atom[AEMP_MAXATOMLEN + 1];
    uint32_t n;
    int type = aemp_get_type(cur);
    FUZZ_CHECK(type >= 0);
    switch (type) {
    case ERL_SMALL_TUPLE_EXT:
    case ERL_LARGE_TUPLE_EXT:
        FUZZ_CHECK(aemp_get_tuple(cur, &n) == 0);
        return n;
    case ERL_LIST_EXT: {
        /* a list of bytes also reads as a charlist, in one go */
        aemp_cursor c2 = *cur;
        if (aemp_get_charlist(&c2, strbuf, sizeof strbuf) == 0) FUZZ_CHECK(c2.pos == after->pos);
        FUZZ_CHECK(aemp_get_list(cur, &n) == 0);
        return (long)n + 1;
    }
    case ERL_NIL_EXT:
        FUZZ_CHECK(aemp_get_list(cur, &n) == 0 && n == 0);
        FUZZ_CHECK(aemp_get_nil(cur) == 0);
        return -1;
    case ERL_MAP_EXT:
        FUZZ_CHECK(aemp_get_map(cur, &n) == 0);
        return 2 * (long)n;
    case ERL_ATOM_EXT:
    case ERL_SMALL_ATOM_EXT:
    case ERL_ATOM_UTF8_EXT:
    case ERL_SMALL_ATOM_UTF8_EXT:
        /* validate bounds atoms so that every one fits this buffer */
        FUZZ_CHECK(aemp_get_atom(cur, atom, sizeof atom) == 0);
        FUZZ_CHECK(strlen(atom) < sizeof atom);
        return -1;
    case NEW_FLOAT_EXT:
    case ERL_FLOAT_EXT: {
        double d;
        FUZZ_CHECK(aemp_get_double(cur, &d) == 0);
        return -1;
    }
    case ERL_BINARY_EXT: {
        const void *p;
        size_t len;
        FUZZ_CHECK(aemp_get_binary(cur, &p, &len) == 0);
        return -1;
    }
    case ERL_STRING_EXT:
        FUZZ_CHECK(aemp_get_charlist(cur, strbuf, sizeof strbuf) == 0);
        return -1;
    case ERL_SMALL_INTEGER_EXT:
    case ERL_INTEGER_EXT:
    case ERL_SMALL_BIG_EXT:
    case ERL_LARGE_BIG_EXT: {
        int64_t v;
        uint64_t u;
        aemp_cursor c2 = *cur;
        (void)aemp_get_uint64(&c2, &u);
        (void)aemp_get_int64(cur, &v);
        break;
    }
    case ERL_PID_EXT:
    case ERL_NEW_PID_EXT: {
        aemp_addr a;
        if (aemp_get_pid(cur, &a) == 0) {
            FUZZ_CHECK(cur->pos == after->pos);
            /* a port ID is printable and parseable both ways, for every
             * node name of the form alive@host (no '#', no NUL) */
            char text[600];
            aemp_addr b;
            int k = aemp_addr_format(&a, text, sizeof text);
            FUZZ_CHECK(k > 0 && (size_t)k < sizeof text);
            size_t nl;
            const char *node = aemp__intern_text(a.node, &nl);
            /* (an atom may hold a NUL, which no port ID can) */
            if (nl > 0 && nl <= AEMP_MAXNODELEN && strlen(node) == nl && strchr(node, '@') &&
                !strchr(node, '#')) {
                FUZZ_CHECK(aemp_addr_parse(text, &b) == 0);
                FUZZ_CHECK(aemp_addr_equal(&a, &b));
            }
        }
        break;
    }
    default:
        break;
    }
    /* leaves not consumed above are skipped whole */
    *cur = *after;
    return -1;
}

static void walk(const char *buf, size_t used)
{
    static long remaining[AEMP__TERM_MAX_DEPTH + 2];
    int sp = 0;
    aemp_term whole = {buf, used};
    aemp_cursor cur = aemp_cursor_of(&whole);
    remaining[0] = 1;
    for (;;) {
        while (remaining[sp] == 0) {
            if (sp == 0) {
                FUZZ_CHECK(cur.pos == used);
                return;
            }
            sp--;
        }
        remaining[sp]--;
        size_t pos = cur.pos;
        aemp_cursor after = cur;
        aemp_term el;
        FUZZ_CHECK(aemp_get_term(&after, &el) == 0);
        FUZZ_CHECK(el.data == buf + pos && after.pos == pos + el.len);
        int i = (int)pos;
        FUZZ_CHECK(ei_skip_term(buf, &i) == 0 && (size_t)i == after.pos);
        int type = aemp_get_type(&cur);
        ei_readers(buf, pos, after.pos, type);
        char tag[64];
        (void)aemp_term_tag(&el, tag, sizeof tag);
        long children = our_readers(&cur, &after);
        if (children >= 0) {
            FUZZ_CHECK(sp < AEMP__TERM_MAX_DEPTH);
            remaining[++sp] = children;
        }
    }
}

/* The sending side of the atom cache: the term with atom 'a' as cache
 * reference 0 is one valid term after a header of one reference, with as
 * many references as 'a's were found, and every fun's Size right (the
 * check refuses a fun that does not end where its Size says). */
static void atom_refs(const char *buf, size_t len)
{
    aemp_buf pos = AEMP_BUF_INIT, out = AEMP_BUF_INIT, refs = AEMP_BUF_INIT;
    FUZZ_CHECK(aemp__term_find_atom(buf, len, "a", 1, &pos) == 0);
    size_t found = 0;
    for (size_t k = 0; k + 4 <= pos.len; k += 4)
        found += !(aemp__get_u32(pos.data + k) & AEMP__TERM_FUN_MARK);
    if (aemp__term_atoms_to_ref(buf, len, &pos, 0, &out) == 0) {
        size_t used = 0, got = 0;
        FUZZ_CHECK(aemp__term_validate_refs(out.data, out.len, &used, 1, &refs,
                                            AEMP__TERM_MAX_DEPTH) == 0 &&
                   used == out.len);
        for (size_t k = 0; k + 4 <= refs.len; k += 4)
            got += !(aemp__get_u32(refs.data + k) & AEMP__TERM_FUN_MARK);
        FUZZ_CHECK(got == found);
        FUZZ_CHECK(out.len <= len);
    }
    aemp_buf_free(&pos);
    aemp_buf_free(&out);
    aemp_buf_free(&refs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    if (!init) {
        fuzz_quiet_logs();
        init = 1;
    }
    size_t used = 0;
    if (aemp__term_validate((const char *)data, size, &used) != 0) return 0;
    FUZZ_CHECK(used > 0 && used <= size);

    /* From here on nothing may read past the term's own bytes. */
    const char *buf = fuzz_guarded_copy(data, used);
    if (!buf) buf = (const char *)data;
    size_t again = 0;
    FUZZ_CHECK(aemp__term_validate(buf, used, &again) == 0 && again == used);

    int i = 0;
    FUZZ_CHECK(ei_skip_term(buf, &i) == 0 && (size_t)i == used);

    aemp_term t = {buf, used};
    char small[24], big[4096];
    size_t cut = data[0] % sizeof small + 1;
    int n = aemp_term_print(&t, small, cut);
    FUZZ_CHECK(n >= 0 && strlen(small) < cut);
    n = aemp_term_print(&t, big, sizeof big);
    FUZZ_CHECK(n >= 0 && strlen(big) < sizeof big);

    /* Not ei_s_print_term: libei 5.3 leaks the free variables of every
     * closure it prints (ei_printterm.c never calls free_fun), and the
     * library does not use it. */

    walk(buf, used);
    atom_refs(buf, used);
    return 0;
}
