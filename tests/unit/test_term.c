/* test_term.c - the term layer: format, cursor, tag, print, addresses, validation. */
#include <criterion/criterion.h>

#include "aemp_impl.h"

#include <ei.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <time.h>

/* ------------------------------------------------------------------ */
/* helpers                                                             */
/* ------------------------------------------------------------------ */

static void expect_bytes(const aemp_buf *b, const void *exp, size_t n)
{
    cr_assert_eq(b->len, n, "length %zu, expected %zu", b->len, n);
    cr_assert(memcmp(b->data, exp, n) == 0, "bytes differ");
}

/* Print the single term held in b and compare. */
static void expect_print(const aemp_buf *b, const char *exp)
{
    char out[512];
    aemp_term t = aemp_buf_term(b);
    int n = aemp_term_print(&t, out, sizeof out);
    cr_assert_str_eq(out, exp);
    cr_assert_eq(n, (int)strlen(exp));
}

static void expect_format_print(const char *fmt, const char *exp)
{
    aemp_buf b = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_format(&b, fmt), 0, "format %s", fmt);
    expect_print(&b, exp);
    aemp_buf_free(&b);
}

static aemp_addr test_pid(void)
{
    aemp_addr a;
    memset(&a, 0, sizeof a);
    aemp__addr_pid(&a, aemp__intern("foo@host", 8), 1700000000, 42);
    return a;
}

/* ------------------------------------------------------------------ */
/* format                                                              */
/* ------------------------------------------------------------------ */

Test(format, bare_and_quoted_atoms)
{
    aemp_buf b = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_format(&b, "foo"), 0);
    expect_bytes(&b,
                 "\x77\x03"
                 "foo",
                 5);
    aemp__buf_reset(&b);
    cr_assert_eq(aemp_term_format(&b, "'Foo bar'"), 0);
    expect_bytes(&b,
                 "\x77\x07"
                 "Foo bar",
                 9);
    aemp__buf_reset(&b);
    cr_assert_eq(aemp_term_format(&b, "'it\\'s'"), 0);
    expect_bytes(&b,
                 "\x77\x04"
                 "it's",
                 6);
    aemp__buf_reset(&b);
    cr_assert_eq(aemp_term_format(&b, "''"), 0);
    expect_bytes(&b, "\x77\x00", 2);
    aemp__buf_reset(&b);
    cr_assert_eq(aemp_term_format(&b, "node_1@host"), 0);
    expect_bytes(&b,
                 "\x77\x0b"
                 "node_1@host",
                 13);
    aemp_buf_free(&b);
}

Test(format, atom_directive_and_long_utf8_atoms)
{
    aemp_buf b = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_format(&b, "~a", "hello"), 0);
    expect_bytes(&b,
                 "\x77\x05"
                 "hello",
                 7);

    /* 150 x U+00E9: 300 bytes, 150 characters -> ATOM_UTF8_EXT */
    char big[301];
    for (int i = 0; i < 150; i++) {
        big[2 * i] = (char)0xC3;
        big[2 * i + 1] = (char)0xA9;
    }
    big[300] = 0;
    aemp__buf_reset(&b);
    cr_assert_eq(aemp_term_format(&b, "~a", big), 0);
    cr_assert_eq(b.len, 303);
    cr_assert_eq((uint8_t)b.data[0], 118);
    cr_assert_eq(aemp__get_u16(b.data + 1), 300);

    /* 256 characters: too long for an atom */
    char toolong[257];
    memset(toolong, 'a', 256);
    toolong[256] = 0;
    aemp__buf_reset(&b);
    cr_assert_eq(aemp_term_format(&b, "~a", toolong), AEMP_EINVAL);
    cr_assert_eq(b.len, 0);
    /* invalid UTF-8 */
    cr_assert_eq(aemp_term_format(&b, "~a", "\xff"), AEMP_EINVAL);
    cr_assert_eq(aemp_term_format(&b, "~a", (const char *)NULL), AEMP_EINVAL);
    aemp_buf_free(&b);
}

Test(format, integers_smallest_encoding)
{
    aemp_buf b = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_format(&b, "0"), 0);
    expect_bytes(&b, "\x61\x00", 2);
    aemp__buf_reset(&b);
    cr_assert_eq(aemp_term_format(&b, "255"), 0);
    expect_bytes(&b, "\x61\xff", 2);
    aemp__buf_reset(&b);
    cr_assert_eq(aemp_term_format(&b, "256"), 0);
    expect_bytes(&b, "\x62\x00\x00\x01\x00", 5);
    aemp__buf_reset(&b);
    cr_assert_eq(aemp_term_format(&b, "-1"), 0);
    expect_bytes(&b, "\x62\xff\xff\xff\xff", 5);
    aemp__buf_reset(&b);
    cr_assert_eq(aemp_term_format(&b, "~i", (int64_t)-2147483648LL), 0);
    expect_bytes(&b, "\x62\x80\x00\x00\x00", 5);
    aemp__buf_reset(&b);
    cr_assert_eq(aemp_term_format(&b, "~i", (int64_t)2147483648LL), 0);
    expect_bytes(&b, "\x6e\x04\x00\x00\x00\x00\x80", 7);
    aemp__buf_reset(&b);
    cr_assert_eq(aemp_term_format(&b, "~u", UINT64_MAX), 0);
    expect_bytes(&b, "\x6e\x08\x00\xff\xff\xff\xff\xff\xff\xff\xff", 11);
    aemp__buf_reset(&b);
    cr_assert_eq(aemp_term_format(&b, "~i", INT64_MIN), 0);
    expect_bytes(&b, "\x6e\x08\x01\x00\x00\x00\x00\x00\x00\x00\x80", 11);
    aemp_buf_free(&b);
}

Test(format, integer_literal_limits)
{
    aemp_buf b = AEMP_BUF_INIT;
    aemp_cursor c;
    uint64_t u;
    int64_t i;
    aemp_term t;

    cr_assert_eq(aemp_term_format(&b, "18446744073709551615"), 0);
    t = aemp_buf_term(&b);
    c = aemp_cursor_of(&t);
    cr_assert_eq(aemp_get_uint64(&c, &u), 0);
    cr_assert_eq(u, UINT64_MAX);

    aemp__buf_reset(&b);
    cr_assert_eq(aemp_term_format(&b, "-9223372036854775808"), 0);
    t = aemp_buf_term(&b);
    c = aemp_cursor_of(&t);
    cr_assert_eq(aemp_get_int64(&c, &i), 0);
    cr_assert_eq(i, INT64_MIN);

    aemp__buf_reset(&b);
    cr_assert_eq(aemp_term_format(&b, "18446744073709551616"), AEMP_EINVAL);
    cr_assert_eq(aemp_term_format(&b, "-9223372036854775809"), AEMP_EINVAL);
    cr_assert_eq(b.len, 0);
    aemp_buf_free(&b);
}

Test(format, floats)
{
    aemp_buf b = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_format(&b, "1.5"), 0);
    expect_bytes(&b, "\x46\x3f\xf8\x00\x00\x00\x00\x00\x00", 9);
    aemp__buf_reset(&b);
    cr_assert_eq(aemp_term_format(&b, "~f", -0.25), 0);
    expect_bytes(&b, "\x46\xbf\xd0\x00\x00\x00\x00\x00\x00", 9);
    aemp__buf_reset(&b);
    cr_assert_eq(aemp_term_format(&b, "1.0e10"), 0);
    aemp_term t = aemp_buf_term(&b);
    aemp_cursor c = aemp_cursor_of(&t);
    double d;
    cr_assert_eq(aemp_get_double(&c, &d), 0);
    cr_assert_eq(d, 1.0e10);
    aemp__buf_reset(&b);
    cr_assert_eq(aemp_term_format(&b, "-2.5E-3"), 0);
    t = aemp_buf_term(&b);
    c = aemp_cursor_of(&t);
    cr_assert_eq(aemp_get_double(&c, &d), 0);
    cr_assert_eq(d, -2.5e-3);

    aemp__buf_reset(&b);
    cr_assert_eq(aemp_term_format(&b, "~f", NAN), AEMP_EINVAL);
    cr_assert_eq(aemp_term_format(&b, "~f", INFINITY), AEMP_EINVAL);
    cr_assert_eq(aemp_term_format(&b, "1.0e999"), AEMP_EINVAL);
    cr_assert_eq(b.len, 0);
    aemp_buf_free(&b);
}

Test(format, binaries_and_strings)
{
    aemp_buf b = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_format(&b, "~s", "hi"), 0);
    expect_bytes(&b, "\x6d\x00\x00\x00\x02hi", 7);
    aemp__buf_reset(&b);
    cr_assert_eq(aemp_term_format(&b, "~s", ""), 0);
    expect_bytes(&b, "\x6d\x00\x00\x00\x00", 5);
    aemp__buf_reset(&b);
    const uint8_t raw[3] = {0, 1, 255};
    cr_assert_eq(aemp_term_format(&b, "~b", raw, sizeof raw), 0);
    expect_bytes(&b, "\x6d\x00\x00\x00\x03\x00\x01\xff", 8);
    aemp__buf_reset(&b);
    cr_assert_eq(aemp_term_format(&b, "~l", "abc"), 0);
    expect_bytes(&b,
                 "\x6b\x00\x03"
                 "abc",
                 6);
    aemp__buf_reset(&b);
    cr_assert_eq(aemp_term_format(&b, "~l", ""), 0);
    expect_bytes(&b, "\x6a", 1);
    aemp__buf_reset(&b);
    cr_assert_eq(aemp_term_format(&b, "~b", (const void *)NULL, (size_t)0), 0);
    expect_bytes(&b, "\x6d\x00\x00\x00\x00", 5);
    aemp__buf_reset(&b);
    cr_assert_eq(aemp_term_format(&b, "~b", (const void *)NULL, (size_t)3), AEMP_EINVAL);
    cr_assert_eq(aemp_term_format(&b, "~s", (const char *)NULL), AEMP_EINVAL);
    cr_assert_eq(aemp_term_format(&b, "~l", (const char *)NULL), AEMP_EINVAL);
    aemp_buf_free(&b);
}

Test(format, long_charlist_is_list_of_small_ints)
{
    size_t n = 70000;
    char *s = malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        s[i] = (char)('a' + i % 26);
    s[n] = 0;
    aemp_buf b = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_format(&b, "~l", s), 0);
    cr_assert_eq(b.len, 5 + 2 * n + 1);
    cr_assert_eq((uint8_t)b.data[0], ERL_LIST_EXT);
    cr_assert_eq(aemp__get_u32(b.data + 1), n);
    cr_assert_eq((uint8_t)b.data[b.len - 1], ERL_NIL_EXT);
    char *back = malloc(n + 1);
    aemp_term t = aemp_buf_term(&b);
    aemp_cursor c = aemp_cursor_of(&t);
    cr_assert_eq(aemp_get_charlist(&c, back, n), AEMP_ETOOBIG);
    cr_assert_eq(c.pos, 0);
    cr_assert_eq(aemp_get_charlist(&c, back, n + 1), 0);
    cr_assert_str_eq(back, s);
    cr_assert_eq(c.pos, b.len);
    free(back);
    free(s);
    aemp_buf_free(&b);
}

Test(format, pid_matches_ei)
{
    aemp_addr a = test_pid();
    aemp_buf b = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_format(&b, "~p", &a), 0);
    cr_assert_eq((uint8_t)b.data[0], ERL_NEW_PID_EXT);
    erlang_pid p;
    int ix = 0;
    cr_assert_eq(ei_decode_pid(b.data, &ix, &p), 0);
    cr_assert_eq((size_t)ix, b.len);
    cr_assert_str_eq(p.node, "foo@host");
    cr_assert_eq(p.num, 42);
    cr_assert_eq(p.serial, 0);
    cr_assert_eq(p.creation, 1700000000u);

    aemp_addr name;
    cr_assert_eq(aemp_addr_name(&name, "foo@host", "srv"), 0);
    size_t len = b.len;
    cr_assert_eq(aemp_term_format(&b, "~p", &name), AEMP_EINVAL);
    cr_assert_eq(aemp_term_format(&b, "~p", (const aemp_addr *)NULL), AEMP_EINVAL);
    cr_assert_eq(b.len, len);
    aemp_buf_free(&b);
}

Test(format, embedded_term)
{
    aemp_buf inner = AEMP_BUF_INIT, b = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_format(&inner, "{x, [1, 2]}"), 0);
    aemp_term t = aemp_buf_term(&inner);
    cr_assert_eq(aemp_term_format(&b, "{wrap, ~t}", &t), 0);
    expect_print(&b, "{wrap,{x,[1,2]}}");

    /* not exactly one valid term */
    aemp_term bad = {"\x68\x02\x61", 3};
    aemp__buf_reset(&b);
    cr_assert_eq(aemp_term_format(&b, "~t", &bad), AEMP_EINVAL);
    aemp_term trailing = {"\x61\x01\x61", 3};
    cr_assert_eq(aemp_term_format(&b, "~t", &trailing), AEMP_EINVAL);
    aemp_term empty = {NULL, 0};
    cr_assert_eq(aemp_term_format(&b, "~t", &empty), AEMP_EINVAL);
    cr_assert_eq(b.len, 0);
    aemp_buf_free(&inner);
    aemp_buf_free(&b);
}

Test(format, nesting_matches_ei_format)
{
    const char *fmt = "{a,[1,{b,[c,d]},[]],{},\"str\",-7,70000}";
    aemp_buf b = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_format(&b, "{a,[1,{b,[c,d]},[]],{},~l,-7,70000}", "str"), 0);
    ei_x_buff x;
    ei_x_new(&x);
    cr_assert_eq(ei_x_format_wo_ver(&x, fmt), 0);
    expect_bytes(&b, x.buff, (size_t)x.index);
    ei_x_free(&x);
    aemp_buf_free(&b);
}

Test(format, maps)
{
    aemp_buf b = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_format(&b, "#{k => [c, d], 1 => #{}}"), 0);
    expect_bytes(&b,
                 "\x74\x00\x00\x00\x02"
                 "\x77\x01k"
                 "\x6c\x00\x00\x00\x02\x77\x01"
                 "c"
                 "\x77\x01"
                 "d"
                 "\x6a"
                 "\x61\x01"
                 "\x74\x00\x00\x00\x00",
                 5 + 3 + 12 + 2 + 5);
    expect_print(&b, "#{k => [c,d],1 => #{}}");
    aemp_buf_free(&b);
}

Test(format, large_tuple)
{
    char fmt[2048];
    size_t n = 0;
    fmt[n++] = '{';
    for (int i = 0; i < 300; i++)
        n += (size_t)snprintf(fmt + n, sizeof fmt - n, i ? ",%d" : "%d", i % 10);
    fmt[n++] = '}';
    fmt[n] = 0;
    aemp_buf b = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_format(&b, fmt), 0);
    cr_assert_eq((uint8_t)b.data[0], ERL_LARGE_TUPLE_EXT);
    aemp_term t = aemp_buf_term(&b);
    aemp_cursor c = aemp_cursor_of(&t);
    uint32_t arity;
    cr_assert_eq(aemp_get_tuple(&c, &arity), 0);
    cr_assert_eq(arity, 300);
    for (int i = 0; i < 300; i++) {
        int64_t v;
        cr_assert_eq(aemp_get_int64(&c, &v), 0);
        cr_assert_eq(v, i % 10);
    }
    cr_assert_eq(c.pos, b.len);
    size_t used;
    cr_assert_eq(aemp__term_validate(b.data, b.len, &used), 0);
    cr_assert_eq(used, b.len);
    aemp_buf_free(&b);
}

Test(format, whitespace_insensitive)
{
    aemp_buf a = AEMP_BUF_INIT, b = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_format(&a, "{a,[1,2],#{k=>v},'x y',~i}", (int64_t)5), 0);
    cr_assert_eq(
        aemp_term_format(&b, " \n{ a ,\t[ 1 , 2 ] , #{ k => v } , 'x y' , ~i }\r\n ", (int64_t)5),
        0);
    expect_bytes(&b, a.data, a.len);
    aemp_buf_free(&a);
    aemp_buf_free(&b);
}

Test(format, errors_leave_buffer_unchanged)
{
    static const char *const bad[] = {
        "",       "   ",     "{",        "}",        "{a,}",  "{a b}",   "{,a}",  "[a,]",
        "[a|b]",  "#{a}",    "#{a => }", "#{a=>b,}", "#[",    "# {}",    "Foo",   "_x",
        "~z",     "~",       "'abc",     "'ab\\",    "{a}}",  "1.",      "1e5",   "--1",
        "- 1",    "a b",     "{a} {b}",  "1.5e",     "1.5e+", "\"str\"", "<<1>>", "#{a := 1}",
        "[1,,2]", "{~i ~i}", "a.",       "@",
    };
    aemp_buf b = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_format(&b, "{keep, me}"), 0);
    aemp_buf ref = AEMP_BUF_INIT;
    aemp__buf_append(&ref, b.data, b.len);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = aemp_term_format(&b, bad[i], (int64_t)1, (int64_t)2);
        cr_assert_eq(rc, AEMP_EINVAL, "format \"%s\" gave %d", bad[i], rc);
        expect_bytes(&b, ref.data, ref.len);
    }
    cr_assert_eq(aemp_term_format(NULL, "a"), AEMP_EINVAL);
    cr_assert_eq(aemp_term_format(&b, NULL), AEMP_EINVAL);
    aemp_buf_free(&b);
    aemp_buf_free(&ref);
}

Test(format, nesting_depth_bounded)
{
    size_t depth = AEMP__PRINT_MAX_DEPTH + 1;
    char *fmt = malloc(2 * depth + 1);
    memset(fmt, '[', depth);
    memset(fmt + depth, ']', depth);
    fmt[2 * depth] = 0;
    aemp_buf b = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_format(&b, fmt), AEMP_EINVAL);
    cr_assert_eq(b.len, 0);
    /* at the limit it works */
    fmt[depth - 1] = ' ';
    fmt[depth] = ' ';
    cr_assert_eq(aemp_term_format(&b, fmt), 0);
    free(fmt);
    aemp_buf_free(&b);
}

Test(format, appends_after_existing_terms)
{
    aemp_buf b = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_format(&b, "first"), 0);
    size_t mark = b.len;
    cr_assert_eq(aemp_term_format(&b, "{second, 2}"), 0);
    aemp_term t = {b.data + mark, b.len - mark};
    char out[64];
    cr_assert_eq(aemp_term_print(&t, out, sizeof out), 10);
    cr_assert_str_eq(out, "{second,2}");
    aemp_buf_free(&b);
}

/* ------------------------------------------------------------------ */
/* cursor                                                              */
/* ------------------------------------------------------------------ */

Test(cursor, round_trip_every_type)
{
    aemp_addr self = test_pid();
    aemp_buf inner = AEMP_BUF_INIT, b = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_format(&inner, "{in, 1}"), 0);
    aemp_term it = aemp_buf_term(&inner);
    const char raw[4] = {1, 0, 2, 3};
    cr_assert_eq(aemp_term_format(&b, "{~a, ~s, ~l, ~b, ~i, ~u, ~f, ~p, ~t, [1, x], [], #{a => 1}}",
                                  "atm", "bin", "chars", raw, sizeof raw, (int64_t)-5,
                                  (uint64_t)1 << 40, 2.25, &self, &it),
                 0);
    aemp_term t = aemp_buf_term(&b);
    aemp_cursor c = aemp_cursor_of(&t);
    uint32_t n;
    char s[64];
    const void *p;
    size_t len;
    int64_t i;
    uint64_t u;
    double d;
    aemp_addr a;
    aemp_term sub;

    cr_assert_eq(aemp_get_type(&c), ERL_SMALL_TUPLE_EXT);
    cr_assert_eq(aemp_get_tuple(&c, &n), 0);
    cr_assert_eq(n, 12);
    cr_assert_eq(aemp_get_type(&c), ERL_SMALL_ATOM_UTF8_EXT);
    cr_assert_eq(aemp_get_atom(&c, s, sizeof s), 0);
    cr_assert_str_eq(s, "atm");
    cr_assert_eq(aemp_get_binary(&c, &p, &len), 0);
    cr_assert_eq(len, 3);
    cr_assert(memcmp(p, "bin", 3) == 0);
    cr_assert(p > (const void *)b.data && p < (const void *)(b.data + b.len), "no copy");
    cr_assert_eq(aemp_get_charlist(&c, s, sizeof s), 0);
    cr_assert_str_eq(s, "chars");
    cr_assert_eq(aemp_get_binary(&c, &p, &len), 0);
    cr_assert_eq(len, 4);
    cr_assert(memcmp(p, raw, 4) == 0);
    cr_assert_eq(aemp_get_int64(&c, &i), 0);
    cr_assert_eq(i, -5);
    cr_assert_eq(aemp_get_uint64(&c, &u), 0);
    cr_assert_eq(u, (uint64_t)1 << 40);
    cr_assert_eq(aemp_get_double(&c, &d), 0);
    cr_assert_eq(d, 2.25);
    cr_assert_eq(aemp_get_pid(&c, &a), 0);
    cr_assert(aemp_addr_equal(&a, &self));
    cr_assert_eq(aemp_get_term(&c, &sub), 0);
    cr_assert_eq(sub.len, inner.len);
    cr_assert(memcmp(sub.data, inner.data, inner.len) == 0);
    cr_assert_eq(aemp_get_list(&c, &n), 0);
    cr_assert_eq(n, 2);
    cr_assert_eq(aemp_get_int64(&c, &i), 0);
    cr_assert_eq(aemp_get_atom(&c, s, sizeof s), 0);
    cr_assert_eq(aemp_get_nil(&c), 0);
    /* the empty list: arity 0, NIL left for aemp_get_nil */
    size_t before = c.pos;
    cr_assert_eq(aemp_get_list(&c, &n), 0);
    cr_assert_eq(n, 0);
    cr_assert_eq(c.pos, before);
    cr_assert_eq(aemp_get_nil(&c), 0);
    cr_assert_eq(aemp_get_map(&c, &n), 0);
    cr_assert_eq(n, 1);
    cr_assert_eq(aemp_get_atom(&c, s, sizeof s), 0);
    cr_assert_str_eq(s, "a");
    cr_assert_eq(aemp_get_int64(&c, &i), 0);
    cr_assert_eq(i, 1);
    cr_assert_eq(c.pos, b.len);
    cr_assert_eq(aemp_get_type(&c), AEMP_ENOMATCH);
    cr_assert_eq(aemp_get_term(&c, &sub), AEMP_ENOMATCH);
    aemp_buf_free(&inner);
    aemp_buf_free(&b);
}

Test(cursor, mismatch_leaves_position)
{
    aemp_buf b = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_format(&b, "{~l, 7, ~s}", "ab", "z"), 0);
    aemp_term t = aemp_buf_term(&b);
    aemp_cursor c = aemp_cursor_of(&t);
    uint32_t n;
    char s[8];
    int64_t i;
    uint64_t u;
    double d;
    aemp_addr a;
    const void *p;
    size_t len;
    cr_assert_eq(aemp_get_list(&c, &n), AEMP_ENOMATCH);
    cr_assert_eq(aemp_get_nil(&c), AEMP_ENOMATCH);
    cr_assert_eq(aemp_get_map(&c, &n), AEMP_ENOMATCH);
    cr_assert_eq(aemp_get_atom(&c, s, sizeof s), AEMP_ENOMATCH);
    cr_assert_eq(aemp_get_int64(&c, &i), AEMP_ENOMATCH);
    cr_assert_eq(aemp_get_double(&c, &d), AEMP_ENOMATCH);
    cr_assert_eq(aemp_get_pid(&c, &a), AEMP_ENOMATCH);
    cr_assert_eq(aemp_get_binary(&c, &p, &len), AEMP_ENOMATCH);
    cr_assert_eq(c.pos, 0);
    cr_assert_eq(aemp_get_tuple(&c, &n), 0);
    /* STRING_EXT is not a list header */
    cr_assert_eq(aemp_get_list(&c, &n), AEMP_ENOMATCH);
    cr_assert_eq(aemp_get_charlist(&c, s, 2), AEMP_ETOOBIG);
    cr_assert_eq(c.pos, 2);
    cr_assert_eq(aemp_get_charlist(&c, s, sizeof s), 0);
    cr_assert_str_eq(s, "ab");
    cr_assert_eq(aemp_get_tuple(&c, &n), AEMP_ENOMATCH);
    cr_assert_eq(aemp_get_uint64(&c, &u), 0);
    cr_assert_eq(u, 7);
    cr_assert_eq(aemp_get_atom(&c, s, sizeof s), AEMP_ENOMATCH);
    cr_assert_eq(aemp_get_binary(&c, &p, &len), 0);
    cr_assert_eq(c.pos, b.len);
    aemp_buf_free(&b);
}

Test(cursor, integer_ranges)
{
    aemp_buf b = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_format(&b, "[~u, -1, ~i, 9223372036854775807]", UINT64_MAX, INT64_MIN),
                 0);
    aemp_term t = aemp_buf_term(&b);
    aemp_cursor c = aemp_cursor_of(&t);
    uint32_t n;
    int64_t i;
    uint64_t u;
    cr_assert_eq(aemp_get_list(&c, &n), 0);
    cr_assert_eq(aemp_get_int64(&c, &i), AEMP_ENOMATCH);
    cr_assert_eq(aemp_get_uint64(&c, &u), 0);
    cr_assert_eq(u, UINT64_MAX);
    cr_assert_eq(aemp_get_uint64(&c, &u), AEMP_ENOMATCH);
    cr_assert_eq(aemp_get_int64(&c, &i), 0);
    cr_assert_eq(i, -1);
    size_t at = c.pos;
    cr_assert_eq(aemp_get_uint64(&c, &u), AEMP_ENOMATCH);
    cr_assert_eq(c.pos, at);
    cr_assert_eq(aemp_get_int64(&c, &i), 0);
    cr_assert_eq(i, INT64_MIN);
    cr_assert_eq(aemp_get_int64(&c, &i), 0);
    cr_assert_eq(i, INT64_MAX);
    cr_assert_eq(aemp_get_nil(&c), 0);

    /* 2^64 as a 9-byte bignum fits neither */
    aemp_term big = {"\x6e\x09\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01", 12};
    c = aemp_cursor_of(&big);
    cr_assert_eq(aemp_get_uint64(&c, &u), AEMP_ENOMATCH);
    cr_assert_eq(aemp_get_int64(&c, &i), AEMP_ENOMATCH);
    /* a 9-byte bignum with a zero top byte does */
    aemp_term wide = {"\x6e\x09\x00\x05\x00\x00\x00\x00\x00\x00\x00\x00", 12};
    c = aemp_cursor_of(&wide);
    cr_assert_eq(aemp_get_uint64(&c, &u), 0);
    cr_assert_eq(u, 5);
    aemp_buf_free(&b);
}

Test(cursor, atoms_latin1_and_sizes)
{
    /* ATOM_EXT 'café' in latin-1 reads as UTF-8 */
    aemp_term t = {"\x64\x00\x04"
                   "caf\xe9",
                   7};
    aemp_cursor c = aemp_cursor_of(&t);
    char s[16];
    cr_assert_eq(aemp_get_atom(&c, s, 5), AEMP_ETOOBIG);
    cr_assert_eq(c.pos, 0);
    cr_assert_eq(aemp_get_atom(&c, s, 6), 0);
    cr_assert_str_eq(s, "caf\xc3\xa9");
    cr_assert_eq(c.pos, 7);
    /* truncated atom */
    aemp_term cut = {"\x77\x05"
                     "ab",
                     4};
    c = aemp_cursor_of(&cut);
    cr_assert_eq(aemp_get_atom(&c, s, sizeof s), AEMP_ENOMATCH);
    /* empty term */
    aemp_term none = {NULL, 0};
    c = aemp_cursor_of(&none);
    cr_assert_eq(aemp_get_type(&c), AEMP_ENOMATCH);
    cr_assert_eq(aemp_get_atom(&c, s, sizeof s), AEMP_ENOMATCH);
}

Test(cursor, binary_is_not_bitstring_and_bounds)
{
    aemp_term bits = {"\x4d\x00\x00\x00\x01\x03\xe0", 7};
    aemp_cursor c = aemp_cursor_of(&bits);
    const void *p;
    size_t len;
    cr_assert_eq(aemp_get_binary(&c, &p, &len), AEMP_ENOMATCH);
    aemp_term lies = {"\x6d\x00\x00\x10\x00"
                      "abcd",
                      9};
    c = aemp_cursor_of(&lies);
    cr_assert_eq(aemp_get_binary(&c, &p, &len), AEMP_ENOMATCH);
    cr_assert_eq(aemp_get_term(&c, NULL), AEMP_EBADTERM);
    cr_assert_eq(c.pos, 0);
}

Test(cursor, old_pid_and_old_float)
{
    /* PID_EXT with a SMALL_ATOM_EXT node */
    aemp_term t = {"\x67\x73\x03"
                   "a@b"
                   "\x00\x00\x00\x07\x00\x00\x00\x02\x03",
                   15};
    aemp_cursor c = aemp_cursor_of(&t);
    aemp_addr a;
    cr_assert_eq(aemp_get_pid(&c, &a), 0);
    cr_assert_eq(a.kind, AEMP_ADDR_PID);
    cr_assert_str_eq(aemp_addr_node_name(&a), "a@b");
    cr_assert_eq(a.w[0], 7);
    cr_assert_eq(a.w[1], 2);
    cr_assert_eq(a.creation, 3);
    cr_assert_eq(c.pos, 15);

    char f[32] = "\x63"
                 "1.50000000000000000000e+00";
    aemp_term ft = {f, 32};
    c = aemp_cursor_of(&ft);
    double d;
    cr_assert_eq(aemp_get_double(&c, &d), 0);
    cr_assert_eq(d, 1.5);
    cr_assert_eq(c.pos, 32);
}

Test(cursor, term_tag)
{
    aemp_buf b = AEMP_BUF_INIT;
    char tag[16];
    cr_assert_eq(aemp_term_format(&b, "{hello, 1, 2}"), 0);
    aemp_term t = aemp_buf_term(&b);
    cr_assert_eq(aemp_term_tag(&t, tag, sizeof tag), 0);
    cr_assert_str_eq(tag, "hello");
    cr_assert_eq(aemp_term_tag(&t, tag, 3), AEMP_ETOOBIG);

    static const char *const nomatch[] = {"{}", "{1, a}", "hello", "[hello]", "{<<1>>}"};
    for (size_t i = 0; i < sizeof nomatch / sizeof nomatch[0]; i++) {
        aemp__buf_reset(&b);
        if (strcmp(nomatch[i], "{<<1>>}") == 0)
            cr_assert_eq(aemp_term_format(&b, "{~s}", "x"), 0);
        else
            cr_assert_eq(aemp_term_format(&b, nomatch[i]), 0);
        t = aemp_buf_term(&b);
        cr_assert_eq(aemp_term_tag(&t, tag, sizeof tag), AEMP_ENOMATCH, "%s", nomatch[i]);
    }
    aemp_buf_free(&b);
}

/* ------------------------------------------------------------------ */
/* print                                                               */
/* ------------------------------------------------------------------ */

Test(print, sample_terms)
{
    aemp_addr self = test_pid();
    aemp_buf b = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_format(&b, "{echo, ~p, #{n => ~i}}", &self, (int64_t)7), 0);
    expect_print(&b, "{echo,#Pid<foo@host.42.0.1700000000>,#{n => 7}}");
    aemp_buf_free(&b);

    expect_format_print("[1,2,3]", "[1,2,3]");
    expect_format_print("{}", "{}");
    expect_format_print("[]", "[]");
    expect_format_print("#{}", "#{}");
    expect_format_print("'Foo bar'", "'Foo bar'");
    expect_format_print("'it\\'s'", "'it\\'s'");
    expect_format_print("'end'", "'end'");
    expect_format_print("'a\\nb'", "'a\\nb'");
    expect_format_print("''", "''");
    expect_format_print("ok_Atom@1", "ok_Atom@1");
    expect_format_print("1.5", "1.5");
    expect_format_print("0.1", "0.1");
    expect_format_print("-2.5", "-2.5");
    expect_format_print("1.0e10", "1.0e+10");
    expect_format_print("1.0e300", "1.0e+300");
    expect_format_print("-300", "-300");
    expect_format_print("18446744073709551615", "18446744073709551615");
    expect_format_print("-9223372036854775808", "-9223372036854775808");
    expect_format_print("{a,{b,{c,[d,[e]]}}}", "{a,{b,{c,[d,[e]]}}}");
}

Test(print, strings_and_binaries)
{
    aemp_buf b = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_format(&b, "{~l, ~s, ~l, ~s}", "hello", "hi \"q\"", "\x01\x02", ""), 0);
    expect_print(&b, "{\"hello\",<<\"hi \\\"q\\\"\">>,[1,2],<<>>}");
    aemp__buf_reset(&b);
    const uint8_t raw[3] = {0, 1, 255};
    cr_assert_eq(aemp_term_format(&b, "~b", raw, sizeof raw), 0);
    expect_print(&b, "<<0,1,255>>");
    aemp_buf_free(&b);
}

Test(print, erlang_samples)
{
    /* bytes from term_to_binary on OTP 25 */
    static const uint8_t bits[] = {0x4D, 0x00, 0x00, 0x00, 0x03, 0x05, 0x01, 0x02, 0x18};
    static const uint8_t export[] = {0x71, 0x64, 0x00, 0x05, 0x6C, 0x69, 0x73, 0x74, 0x73,
                                     0x64, 0x00, 0x03, 0x6D, 0x61, 0x70, 0x61, 0x02};
    static const uint8_t bigneg[] = {0x6E, 0x0D, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
                                     0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10};
    static const uint8_t latin1[] = {0x64, 0x00, 0x04, 0x63, 0x61, 0x66, 0xE9};
    static const uint8_t improper[] = {0x6C, 0x00, 0x00, 0x00, 0x02, 0x61,
                                       0x01, 0x61, 0x02, 0x61, 0x03};
    static const uint8_t fun[] = {
        0x70, 0x00, 0x00, 0x00, 0x4E, 0x01, 0x72, 0xBC, 0x84, 0x34, 0xB3, 0x80, 0xDA, 0xD5,
        0x45, 0x8F, 0x1E, 0x06, 0x45, 0x33, 0x01, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x01, 0x64, 0x00, 0x08, 0x61, 0x65, 0x6D, 0x70, 0x67, 0x65, 0x6E, 0x32, 0x61,
        0x00, 0x62, 0x03, 0x95, 0xE4, 0x21, 0x58, 0x64, 0x00, 0x0D, 0x6E, 0x6F, 0x6E, 0x6F,
        0x64, 0x65, 0x40, 0x6E, 0x6F, 0x68, 0x6F, 0x73, 0x74, 0x00, 0x00, 0x00, 0x09, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x61, 0x66};
    struct {
        const uint8_t *p;
        size_t n;
        const char *text;
    } cases[] = {
        {bits, sizeof bits, "<<1,2,3:5>>"},
        {export, sizeof export, "fun lists:map/2"},
        {bigneg, sizeof bigneg, "-16#10000000000000000000000000"},
        {latin1, sizeof latin1, "'caf\xc3\xa9'"},
        {improper, sizeof improper, "[1,2|3]"},
        {fun, sizeof fun, "#Fun<aempgen2.0.60154913>"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[128];
        aemp_term t = {(const char *)cases[i].p, cases[i].n};
        int n = aemp_term_print(&t, out, sizeof out);
        cr_assert_str_eq(out, cases[i].text);
        cr_assert_eq(n, (int)strlen(cases[i].text));
    }
}

Test(print, truncation)
{
    aemp_buf b = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_format(&b, "{aaaa,bbbb}"), 0);
    aemp_term t = aemp_buf_term(&b);
    char out[32];
    cr_assert_eq(aemp_term_print(&t, out, 12), 11);
    cr_assert_str_eq(out, "{aaaa,bbbb}");
    cr_assert_eq(aemp_term_print(&t, out, 11), 10);
    cr_assert_str_eq(out, "{aaaa,b...");
    cr_assert_eq(aemp_term_print(&t, out, 8), 7);
    cr_assert_str_eq(out, "{aaa...");
    cr_assert_eq(aemp_term_print(&t, out, 3), 2);
    cr_assert_str_eq(out, "..");
    cr_assert_eq(aemp_term_print(&t, out, 1), 0);
    cr_assert_str_eq(out, "");
    cr_assert_eq(aemp_term_print(&t, out, 0), AEMP_EINVAL);
    aemp_buf_free(&b);

    /* a 1 MiB binary stops printing when the buffer is full */
    size_t n = 1 << 20;
    char *big = calloc(1, n);
    aemp_buf bb = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_format(&bb, "~b", big, n), 0);
    t = aemp_buf_term(&bb);
    cr_assert_eq(aemp_term_print(&t, out, sizeof out), 31);
    cr_assert_eq(strlen(out), 31);
    cr_assert(strncmp(out, "<<0,0,0,", 8) == 0);
    cr_assert_str_eq(out + 28, "...");
    free(big);
    aemp_buf_free(&bb);
}

Test(print, bad_terms)
{
    char out[32];
    aemp_term bad = {"\x68\x02\x61\x01", 4};
    cr_assert_eq(aemp_term_print(&bad, out, sizeof out), AEMP_EBADTERM);
    cr_assert_str_eq(out, "<bad term>");

    /* 200,000 nested tuples: refused, no recursion */
    size_t depth = 200000;
    char *deep = malloc(2 * depth + 1);
    for (size_t i = 0; i < depth; i++) {
        deep[2 * i] = ERL_SMALL_TUPLE_EXT;
        deep[2 * i + 1] = 1;
    }
    deep[2 * depth] = ERL_NIL_EXT;
    aemp_term t = {deep, 2 * depth + 1};
    cr_assert_eq(aemp_term_print(&t, out, sizeof out), AEMP_EBADTERM);
    free(deep);
}

/* ------------------------------------------------------------------ */
/* addresses                                                           */
/* ------------------------------------------------------------------ */

Test(addr, format_parse_round_trip)
{
    aemp_addr p = test_pid(), back;
    char s[600];
    int n = aemp_addr_format(&p, s, sizeof s);
    cr_assert_str_eq(s, "foo@host#<42.0.1700000000>");
    cr_assert_eq(n, (int)strlen(s));
    cr_assert_eq(aemp_addr_parse(s, &back), 0);
    cr_assert(aemp_addr_equal(&p, &back));

    aemp_addr name;
    cr_assert_eq(aemp_addr_name(&name, "foo@host", "my#server"), 0);
    n = aemp_addr_format(&name, s, sizeof s);
    cr_assert_str_eq(s, "foo@host#my#server");
    cr_assert_eq(aemp_addr_parse(s, &back), 0);
    cr_assert_eq(back.kind, AEMP_ADDR_NAME);
    cr_assert_str_eq(aemp_addr_reg_name(&back), "my#server");
    cr_assert(aemp_addr_equal(&name, &back));
    cr_assert(!aemp_addr_equal(&name, &p));

    /* like snprintf: the needed length, truncated output */
    char small[8];
    cr_assert_eq(aemp_addr_format(&p, small, sizeof small), 26);
    cr_assert_str_eq(small, "foo@hos");
    cr_assert_eq(aemp_addr_format(&p, NULL, 0), 26);

    aemp_addr max;
    cr_assert_eq(aemp_addr_parse("a@b#<4294967295.4294967295.4294967295>", &max), 0);
    cr_assert_eq(max.w[0], UINT32_MAX);
    cr_assert_eq(max.creation, UINT32_MAX);
}

Test(addr, equality)
{
    aemp_addr a = test_pid(), b = test_pid();
    cr_assert(aemp_addr_equal(&a, &b));
    b.creation++;
    cr_assert(!aemp_addr_equal(&a, &b));
    b = a;
    b.w[1] = 1;
    cr_assert(!aemp_addr_equal(&a, &b));
    b = a;
    b.node = aemp__intern("bar@host", 8);
    cr_assert(!aemp_addr_equal(&a, &b));
    aemp_addr n1, n2;
    cr_assert_eq(aemp_addr_name(&n1, "x@y", "srv"), 0);
    cr_assert_eq(aemp_addr_name(&n2, "x@y", "srv2"), 0);
    cr_assert(!aemp_addr_equal(&n1, &n2));
    cr_assert(!aemp_addr_equal(&n1, NULL));
}

Test(addr, rejects)
{
    char longnode[300], longname[1100];
    memset(longnode, 'a', 256);
    memcpy(longnode + 256, "@h#x", 5);
    memcpy(longname, "a@b#", 4);
    memset(longname + 4, 'n', 1021);
    longname[1025] = 0;
    static const char *const bad[] = {
        "",
        "foo",
        "#x",
        "nohost#x",
        "a@b#",
        "a@b#<1.2>",
        "a@b#<1.2.3",
        "a@b#<1.2.3>x",
        "a@b#<1.2.4294967296>",
        "a@b#<-1.2.3>",
        "a@b#< 1.2.3>",
        "a@b#<1..3>",
        "a@b#<>",
    };
    aemp_addr a, keep = test_pid();
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        a = keep;
        cr_assert_eq(aemp_addr_parse(bad[i], &a), AEMP_EINVAL, "parsed \"%s\"", bad[i]);
        cr_assert(aemp_addr_equal(&a, &keep), "out changed on failure");
    }
    cr_assert_eq(aemp_addr_parse(longnode, &a), AEMP_EINVAL);
    cr_assert_eq(aemp_addr_parse(longname, &a), AEMP_EINVAL);
    longname[1024] = 0; /* 1020 bytes of name: the limit */
    cr_assert_eq(aemp_addr_parse(longname, &a), 0);
    cr_assert_eq(aemp_addr_parse(NULL, &a), AEMP_EINVAL);
    cr_assert_eq(aemp_addr_name(&a, "nohost", "x"), AEMP_EINVAL);
    cr_assert_eq(aemp_addr_name(&a, "a@b", ""), AEMP_EINVAL);
    cr_assert_eq(aemp_addr_name(&a, "", "x"), AEMP_EINVAL);
    aemp_addr weird = keep;
    weird.kind = (aemp_addr_kind)7;
    char s[64];
    cr_assert_eq(aemp_addr_format(&weird, s, sizeof s), AEMP_EINVAL);
}

/* ------------------------------------------------------------------ */
/* validate                                                            */
/* ------------------------------------------------------------------ */

struct sample {
    char *p;
    size_t n;
};

#define MAX_SAMPLES 64
static struct sample samples[MAX_SAMPLES];
static size_t nsamples;

static void add_sample(const void *p, size_t n)
{
    cr_assert(nsamples < MAX_SAMPLES);
    samples[nsamples].p = malloc(n);
    memcpy(samples[nsamples].p, p, n);
    samples[nsamples].n = n;
    nsamples++;
}

static void add_x(ei_x_buff *x)
{
    add_sample(x->buff, (size_t)x->index);
    ei_x_free(x);
    ei_x_new(x);
}

static void build_samples(void)
{
    static const uint8_t erlang_terms[][96] = {
        /* fun() -> ok end */
        {0x70, 0x00, 0x00, 0x00, 0x4B, 0x00, 0x1E, 0xA1, 0xD3, 0x35, 0xB5, 0x68, 0xD4,
         0x8D, 0x9F, 0x68, 0x2B, 0xC3, 0x73, 0x25, 0xAC, 0x68, 0x00, 0x00, 0x00, 0x00,
         0x00, 0x00, 0x00, 0x00, 0x64, 0x00, 0x07, 0x61, 0x65, 0x6D, 0x70, 0x67, 0x65,
         0x6E, 0x61, 0x00, 0x62, 0x00, 0xF5, 0x0E, 0x99, 0x58, 0x64, 0x00, 0x0D, 0x6E,
         0x6F, 0x6E, 0x6F, 0x64, 0x65, 0x40, 0x6E, 0x6F, 0x68, 0x6F, 0x73, 0x74, 0x00,
         0x00, 0x00, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00},
        /* a closure with one free variable */
        {0x70, 0x00, 0x00, 0x00, 0x4E, 0x01, 0x72, 0xBC, 0x84, 0x34, 0xB3, 0x80, 0xDA, 0xD5,
         0x45, 0x8F, 0x1E, 0x06, 0x45, 0x33, 0x01, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
         0x00, 0x01, 0x64, 0x00, 0x08, 0x61, 0x65, 0x6D, 0x70, 0x67, 0x65, 0x6E, 0x32, 0x61,
         0x00, 0x62, 0x03, 0x95, 0xE4, 0x21, 0x58, 0x64, 0x00, 0x0D, 0x6E, 0x6F, 0x6E, 0x6F,
         0x64, 0x65, 0x40, 0x6E, 0x6F, 0x68, 0x6F, 0x73, 0x74, 0x00, 0x00, 0x00, 0x09, 0x00,
         0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x61, 0x66},
        /* fun lists:map/2 */
        {0x71, 0x64, 0x00, 0x05, 0x6C, 0x69, 0x73, 0x74, 0x73, 0x64, 0x00, 0x03, 0x6D, 0x61, 0x70,
         0x61, 0x02},
        /* 1.5 as FLOAT_EXT */
        {0x63, 0x31, 0x2E, 0x35, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30,
         0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30,
         0x30, 0x65, 0x2B, 0x30, 0x30, 0x00, 0x00, 0x00, 0x00, 0x00},
        /* make_ref() */
        {0x5A, 0x00, 0x03, 0x64, 0x00, 0x0D, 0x6E, 0x6F, 0x6E, 0x6F, 0x64, 0x65,
         0x40, 0x6E, 0x6F, 0x68, 0x6F, 0x73, 0x74, 0x00, 0x00, 0x00, 0x00, 0x00,
         0x03, 0x06, 0x3A, 0xD9, 0x3C, 0x00, 0x02, 0x4F, 0x19, 0x09, 0x51},
        /* a port */
        {0x59, 0x64, 0x00, 0x0D, 0x6E, 0x6F, 0x6E, 0x6F, 0x64, 0x65, 0x40, 0x6E, 0x6F,
         0x68, 0x6F, 0x73, 0x74, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00},
        /* <<1,2,3:5>> */
        {0x4D, 0x00, 0x00, 0x00, 0x03, 0x05, 0x01, 0x02, 0x18},
        /* -(1 bsl 100) */
        {0x6E, 0x0D, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
         0x10},
        /* 'café' as ATOM_EXT */
        {0x64, 0x00, 0x04, 0x63, 0x61, 0x66, 0xE9},
        /* #{a => 1, <<"b">> => [1,2|3]} */
        {0x74, 0x00, 0x00, 0x00, 0x02, 0x64, 0x00, 0x01, 0x61, 0x61, 0x01, 0x6D, 0x00, 0x00,
         0x00, 0x01, 0x62, 0x6C, 0x00, 0x00, 0x00, 0x02, 0x61, 0x01, 0x61, 0x02, 0x61, 0x03},
        /* {ok, [1.0e10, -3, "x", <<>>, [], {}], 'Quoted Atom'} */
        {0x68, 0x03, 0x64, 0x00, 0x02, 0x6F, 0x6B, 0x6C, 0x00, 0x00, 0x00, 0x06, 0x46, 0x42,
         0x02, 0xA0, 0x5F, 0x20, 0x00, 0x00, 0x00, 0x62, 0xFF, 0xFF, 0xFF, 0xFD, 0x6B, 0x00,
         0x01, 0x78, 0x6D, 0x00, 0x00, 0x00, 0x00, 0x6A, 0x68, 0x00, 0x6A, 0x64, 0x00, 0x0B,
         0x51, 0x75, 0x6F, 0x74, 0x65, 0x64, 0x20, 0x41, 0x74, 0x6F, 0x6D},
        /* old FUN_EXT: 1 free var; pid; module m; index 1; uniq 2; free var 7 */
        {0x75, 0x00, 0x00, 0x00, 0x01, 0x67, 0x73, 0x03, 0x61, 0x40, 0x62, 0x00, 0x00, 0x00, 0x01,
         0x00, 0x00, 0x00, 0x00, 0x00, 0x73, 0x01, 0x6D, 0x61, 0x01, 0x61, 0x02, 0x61, 0x07},
        /* V4_PORT_EXT */
        {0x78, 0x77, 0x03, 0x61, 0x40, 0x62, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x02, 0x00,
         0x00, 0x00, 0x03},
        /* old REFERENCE_EXT and NEW_REFERENCE_EXT */
        {0x65, 0x73, 0x03, 0x61, 0x40, 0x62, 0x00, 0x00, 0x00, 0x05, 0x01},
        {0x72, 0x00, 0x02, 0x73, 0x03, 0x61, 0x40, 0x62, 0x01, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00,
         0x00, 0x06},
        /* old PORT_EXT */
        {0x66, 0x73, 0x03, 0x61, 0x40, 0x62, 0x00, 0x00, 0x00, 0x05, 0x01},
    };
    static const size_t erlang_sizes[] = {76, 79, 17, 32, 35, 25, 9,  16,
                                          7,  28, 53, 29, 18, 11, 17, 11};
    for (size_t i = 0; i < sizeof erlang_sizes / sizeof erlang_sizes[0]; i++)
        add_sample(erlang_terms[i], erlang_sizes[i]);

    ei_x_buff x;
    ei_x_new(&x);
    ei_x_format_wo_ver(&x, "{hello, [1, 2, 3], {a, \"str\", 3.25}, [], {}}");
    add_x(&x);
    ei_x_encode_atom(&x, "atom");
    add_x(&x);
    ei_x_encode_longlong(&x, LLONG_MIN);
    add_x(&x);
    ei_x_encode_ulonglong(&x, ULLONG_MAX);
    add_x(&x);
    ei_x_encode_long(&x, 100000);
    add_x(&x);
    ei_x_encode_double(&x, -1.0e-7);
    add_x(&x);
    ei_x_encode_string(&x, "a string");
    add_x(&x);
    ei_x_encode_binary(&x, "\0\1\2", 3);
    add_x(&x);
    ei_x_encode_bitstring(&x, "\xff\x80", 0, 9);
    add_x(&x);
    erlang_pid pid;
    memset(&pid, 0, sizeof pid);
    memcpy(pid.node, "n@h", 4);
    pid.num = 1;
    pid.creation = 9;
    ei_x_encode_pid(&x, &pid);
    add_x(&x);
    erlang_ref ref;
    memset(&ref, 0, sizeof ref);
    memcpy(ref.node, "n@h", 4);
    ref.len = 3;
    ref.n[0] = 1;
    ref.creation = 2;
    ei_x_encode_ref(&x, &ref);
    add_x(&x);
    erlang_port port;
    memset(&port, 0, sizeof port);
    memcpy(port.node, "n@h", 4);
    port.id = 77;
    ei_x_encode_port(&x, &port);
    add_x(&x);
    ei_x_encode_map_header(&x, 2);
    ei_x_encode_atom(&x, "k");
    ei_x_encode_tuple_header(&x, 300);
    for (int i = 0; i < 300; i++)
        ei_x_encode_long(&x, i);
    ei_x_encode_list_header(&x, 1);
    ei_x_encode_atom(&x, "e");
    ei_x_encode_atom(&x, "tail");
    ei_x_encode_empty_list(&x);
    add_x(&x);
    ei_x_free(&x);

    aemp_buf b = AEMP_BUF_INIT;
    aemp_addr self = test_pid();
    aemp_term_format(&b, "{~p, ~s, ~l, #{x => [y, 'Z z', 1.5, -77777777777]}, ~u}", &self, "bin",
                     "list", UINT64_MAX);
    add_sample(b.data, b.len);
    aemp_buf_free(&b);
}

static void free_samples(void)
{
    for (size_t i = 0; i < nsamples; i++)
        free(samples[i].p);
    nsamples = 0;
}

/* Validate on an exact-size heap copy, so ASan sees any read past it. */
static int validate_copy(const void *p, size_t n, size_t *used)
{
    char *c = malloc(n ? n : 1);
    memcpy(c, p, n);
    int rc = aemp__term_validate(c, n, used);
    free(c);
    return rc;
}

Test(validate, accepts_samples_and_agrees_with_ei, .init = build_samples, .fini = free_samples)
{
    cr_assert_gt(nsamples, 25);
    for (size_t i = 0; i < nsamples; i++) {
        size_t used = 0;
        cr_assert_eq(validate_copy(samples[i].p, samples[i].n, &used), 0, "sample %zu", i);
        cr_assert_eq(used, samples[i].n, "sample %zu", i);
        int ix = 0;
        cr_assert_eq(ei_skip_term(samples[i].p, &ix), 0, "sample %zu", i);
        cr_assert_eq((size_t)ix, used, "sample %zu: ei %d, us %zu", i, ix, used);

        /* trailing bytes are not part of the term */
        char *more = malloc(samples[i].n + 3);
        memcpy(more, samples[i].p, samples[i].n);
        memcpy(more + samples[i].n, "\x6a\x6a\x6a", 3);
        cr_assert_eq(aemp__term_validate(more, samples[i].n + 3, &used), 0);
        cr_assert_eq(used, samples[i].n);
        free(more);

        char out[256];
        aemp_term t = {samples[i].p, samples[i].n};
        cr_assert_geq(aemp_term_print(&t, out, sizeof out), 0, "sample %zu", i);
        aemp_cursor c = aemp_cursor_of(&t);
        aemp_term whole;
        cr_assert_eq(aemp_get_term(&c, &whole), 0);
        cr_assert_eq(whole.len, samples[i].n);
    }
}

Test(validate, rejects_every_truncation, .init = build_samples, .fini = free_samples)
{
    for (size_t i = 0; i < nsamples; i++)
        for (size_t n = 0; n < samples[i].n; n++) {
            size_t used;
            cr_assert_eq(validate_copy(samples[i].p, n, &used), AEMP_EBADTERM,
                         "sample %zu accepted at %zu of %zu bytes", i, n, samples[i].n);
        }
}

/* Mutate each byte of each sample: never crash; when accepted, ei agrees on
 * the size and stays inside the buffer. */
Test(validate, mutations_agree_with_ei, .init = build_samples, .fini = free_samples)
{
    static const uint8_t values[] = {0, 1, 2, 0x7f, 0x80, 0xfe, 0xff, 'h', 'l', 'j', 'w', 'X'};
    for (size_t i = 0; i < nsamples; i++) {
        char *m = malloc(samples[i].n);
        for (size_t k = 0; k < samples[i].n; k++)
            for (size_t v = 0; v < sizeof values; v++) {
                memcpy(m, samples[i].p, samples[i].n);
                m[k] = (char)values[v];
                size_t used;
                if (aemp__term_validate(m, samples[i].n, &used) != 0) continue;
                cr_assert_leq(used, samples[i].n);
                int ix = 0;
                if (ei_skip_term(m, &ix) == 0)
                    cr_assert_eq((size_t)ix, used, "sample %zu byte %zu value %u", i, k, values[v]);
                char out[64];
                aemp_term t = {m, samples[i].n};
                aemp_term_print(&t, out, sizeof out);
            }
        free(m);
    }
}

Test(validate, length_beyond_buffer)
{
    size_t used;
    /* a binary claiming 4096 bytes in 9 */
    cr_assert_eq(validate_copy("\x6d\x00\x00\x10\x00"
                               "abcd",
                               9, &used),
                 AEMP_EBADTERM);
    cr_assert_eq(validate_copy("\x6d\xff\xff\xff\xff"
                               "abcd",
                               9, &used),
                 AEMP_EBADTERM);
    cr_assert_eq(validate_copy("\x6b\x00\x10"
                               "ab",
                               5, &used),
                 AEMP_EBADTERM);
    cr_assert_eq(validate_copy("\x4d\xff\xff\xff\xff\x08"
                               "ab",
                               8, &used),
                 AEMP_EBADTERM);
    cr_assert_eq(validate_copy("\x6f\xff\xff\xff\xff\x00"
                               "ab",
                               8, &used),
                 AEMP_EBADTERM);
    cr_assert_eq(validate_copy("\x6e\xff\x00"
                               "ab",
                               5, &used),
                 AEMP_EBADTERM);
    cr_assert_eq(validate_copy("\x76\xff\xff"
                               "ab",
                               5, &used),
                 AEMP_EBADTERM);
    cr_assert_eq(validate_copy("", 0, &used), AEMP_EBADTERM);
    cr_assert_eq(aemp__term_validate(NULL, 0, &used), AEMP_EBADTERM);
    cr_assert_eq(aemp__term_validate(NULL, 5, &used), AEMP_EBADTERM);
}

Test(validate, huge_arities_fail_fast)
{
    size_t used;
    cr_assert_eq(validate_copy("\x69\xff\xff\xff\xff\x6a", 6, &used), AEMP_EBADTERM);
    cr_assert_eq(validate_copy("\x6c\xff\xff\xff\xff\x6a", 6, &used), AEMP_EBADTERM);
    cr_assert_eq(validate_copy("\x74\xff\xff\xff\xff\x6a\x6a", 7, &used), AEMP_EBADTERM);
    cr_assert_eq(validate_copy("\x74\x80\x00\x00\x00\x6a\x6a", 7, &used), AEMP_EBADTERM);
    cr_assert_eq(validate_copy("\x68\xff\x6a\x6a", 4, &used), AEMP_EBADTERM);
    /* a list needs room for its tail too */
    cr_assert_eq(validate_copy("\x6c\x00\x00\x00\x01\x6a", 6, &used), AEMP_EBADTERM);
    cr_assert_eq(validate_copy("\x6c\x00\x00\x00\x01\x6a\x6a", 7, &used), 0);
    /* funs with huge free-variable counts */
    cr_assert_eq(validate_copy("\x75\xff\xff\xff\xff\x67\x73\x03"
                               "a@b"
                               "\x00\x00\x00\x01\x00"
                               "\x00\x00\x00\x00\x73\x01m\x61\x01\x61\x02\x61\x07",
                               29, &used),
                 AEMP_EBADTERM);
}

static char *nested(size_t depth, char open, size_t *len)
{
    /* open = 'h': {{{...[]...}}}; open = 'l': [x|[x|...[]]] */
    size_t unit = open == 'h' ? 2 : 7;
    char *p = malloc(unit * depth + 1);
    for (size_t i = 0; i < depth; i++) {
        char *u = p + unit * i;
        if (open == 'h') {
            u[0] = ERL_SMALL_TUPLE_EXT;
            u[1] = 1;
        } else {
            memcpy(u, "\x6c\x00\x00\x00\x01\x61\x05", 7);
        }
    }
    p[unit * depth] = ERL_NIL_EXT;
    *len = unit * depth + 1;
    return p;
}

Test(validate, depth_limit)
{
    size_t len, used;
    char *p;
    p = nested(AEMP__TERM_MAX_DEPTH, 'h', &len);
    cr_assert_eq(aemp__term_validate(p, len, &used), 0);
    cr_assert_eq(used, len);
    free(p);
    p = nested(AEMP__TERM_MAX_DEPTH + 1, 'h', &len);
    cr_assert_eq(aemp__term_validate(p, len, &used), AEMP_ETOOBIG);
    /* a limit of one's own */
    cr_assert_eq(aemp__term_validate_depth(p, len, &used, AEMP__TERM_MAX_DEPTH + 1), 0);
    cr_assert_eq(aemp__term_validate_depth(p, len, &used, 100), AEMP_ETOOBIG);
    free(p);
    /* improper tails nest as deep as ei's recursion goes */
    p = nested(AEMP__TERM_MAX_DEPTH, 'l', &len);
    cr_assert_eq(aemp__term_validate(p, len, &used), 0);
    cr_assert_eq(used, len);
    int ix = 0;
    cr_assert_eq(ei_skip_term(p, &ix), 0);
    cr_assert_eq((size_t)ix, len);
    free(p);
    p = nested(AEMP__TERM_MAX_DEPTH + 1, 'l', &len);
    cr_assert_eq(aemp__term_validate(p, len, &used), AEMP_ETOOBIG);
    free(p);
}

Test(validate, very_deep_term_fails_quickly)
{
    size_t len, used;
    char *p = nested(200000, 'h', &len);
    cr_assert_eq(aemp__term_validate(p, len, &used), AEMP_ETOOBIG);
    aemp_term t = {p, len};
    aemp_cursor c = aemp_cursor_of(&t);
    cr_assert_eq(aemp_get_term(&c, NULL), AEMP_EBADTERM);
    free(p);
    p = nested(200000, 'l', &len);
    cr_assert_eq(aemp__term_validate(p, len, &used), AEMP_ETOOBIG);
    free(p);
}

Test(validate, refused_tags)
{
    size_t used;
    /* ATOM_CACHE_REF, compressed, LOCAL_EXT, the version byte, unknown */
    cr_assert_eq(validate_copy("\x52\x01", 2, &used), AEMP_EBADTERM);
    cr_assert_eq(validate_copy("\x50\x00\x00\x00\x02\x78\x9c", 7, &used), AEMP_EBADTERM);
    cr_assert_eq(validate_copy("\x79\x61\x01", 3, &used), AEMP_EBADTERM);
    cr_assert_eq(validate_copy("\x83\x61\x01", 3, &used), AEMP_EBADTERM);
    for (int tag = 0; tag < 256; tag++) {
        if (strchr("abcFdsvwerZfYxgXhitjklmMnopqu", tag) && tag != 0) continue;
        char t[64];
        memset(t, 0, sizeof t);
        t[0] = (char)tag;
        cr_assert_eq(validate_copy(t, sizeof t, &used), AEMP_EBADTERM, "tag %d", tag);
    }
    /* a cached atom inside a tuple */
    cr_assert_eq(validate_copy("\x68\x02\x61\x01\x52\x00", 6, &used), AEMP_EBADTERM);
}

Test(validate, field_limits)
{
    size_t used;
    /* UTF-8 atom of 1020 bytes is fine, 1021 is not */
    char *a = calloc(1, 3 + 1021);
    a[0] = ERL_ATOM_UTF8_EXT;
    aemp__put_u16(a + 1, 1020);
    memset(a + 3, 'a', 1021);
    cr_assert_eq(validate_copy(a, 3 + 1020, &used), 0);
    aemp__put_u16(a + 1, 1021);
    cr_assert_eq(validate_copy(a, 3 + 1021, &used), AEMP_EBADTERM);
    /* latin-1 atoms: 255 bytes */
    a[0] = ERL_ATOM_EXT;
    aemp__put_u16(a + 1, 255);
    cr_assert_eq(validate_copy(a, 3 + 255, &used), 0);
    aemp__put_u16(a + 1, 256);
    cr_assert_eq(validate_copy(a, 3 + 256, &used), AEMP_EBADTERM);
    free(a);

    /* references: at most 5 words */
    cr_assert_eq(validate_copy("\x5a\x00\x05\x73\x01n\x00\x00\x00\x01"
                               "\x00\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00\x03"
                               "\x00\x00\x00\x04\x00\x00\x00\x05",
                               30, &used),
                 0);
    cr_assert_eq(validate_copy("\x5a\x00\x06\x73\x01n\x00\x00\x00\x01"
                               "\x00\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00\x03"
                               "\x00\x00\x00\x04\x00\x00\x00\x05\x00\x00\x00\x06",
                               34, &used),
                 AEMP_EBADTERM);
    /* a pid whose node is not an atom */
    cr_assert_eq(
        validate_copy("\x58\x61\x01\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00", 15, &used),
        AEMP_EBADTERM);
    /* bitstrings as ei accepts them */
    cr_assert_eq(validate_copy("\x4d\x00\x00\x00\x01\x00\xff", 7, &used), AEMP_EBADTERM);
    cr_assert_eq(validate_copy("\x4d\x00\x00\x00\x01\x09\xff", 7, &used), AEMP_EBADTERM);
    cr_assert_eq(validate_copy("\x4d\x00\x00\x00\x00\x03", 6, &used), AEMP_EBADTERM);
    cr_assert_eq(validate_copy("\x4d\x00\x00\x00\x00\x00", 6, &used), 0);
    cr_assert_eq(validate_copy("\x4d\x00\x00\x00\x01\x08\xff", 7, &used), 0);
    /* old float text without a NUL would let sscanf run past it */
    char f[32];
    f[0] = ERL_FLOAT_EXT;
    memset(f + 1, '1', 31);
    cr_assert_eq(validate_copy(f, 32, &used), AEMP_EBADTERM);
    memset(f + 1, 0, 31);
    cr_assert_eq(validate_copy(f, 32, &used), AEMP_EBADTERM);
    /* bignums beyond 16 MiB of digits */
    cr_assert_eq(validate_copy("\x6f\x01\x00\x00\x01\x00", 6, &used), AEMP_EBADTERM);
}

Test(validate, new_fun_size_must_match)
{
    /* fun() -> ok end, with its Size field changed */
    static const uint8_t fun[] = {0x70, 0x00, 0x00, 0x00, 0x4B, 0x00, 0x1E, 0xA1, 0xD3, 0x35, 0xB5,
                                  0x68, 0xD4, 0x8D, 0x9F, 0x68, 0x2B, 0xC3, 0x73, 0x25, 0xAC, 0x68,
                                  0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x64, 0x00, 0x07,
                                  0x61, 0x65, 0x6D, 0x70, 0x67, 0x65, 0x6E, 0x61, 0x00, 0x62, 0x00,
                                  0xF5, 0x0E, 0x99, 0x58, 0x64, 0x00, 0x0D, 0x6E, 0x6F, 0x6E, 0x6F,
                                  0x64, 0x65, 0x40, 0x6E, 0x6F, 0x68, 0x6F, 0x73, 0x74, 0x00, 0x00,
                                  0x00, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x6a};
    uint8_t m[sizeof fun];
    size_t used;
    memcpy(m, fun, sizeof fun);
    cr_assert_eq(validate_copy(m, sizeof fun, &used), 0);
    cr_assert_eq(used, sizeof fun - 1);
    m[4] = 0x4C; /* claims one more byte than its fields hold */
    cr_assert_eq(validate_copy(m, sizeof fun, &used), AEMP_EBADTERM);
    m[4] = 0x4A;
    cr_assert_eq(validate_copy(m, sizeof fun, &used), AEMP_EBADTERM);
    m[4] = 0xFF;
    cr_assert_eq(validate_copy(m, sizeof fun, &used), AEMP_EBADTERM);
}
