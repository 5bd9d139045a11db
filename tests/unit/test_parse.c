/* test_parse.c - aemp_term_parse: Erlang term syntax to the external term format. */
#include <criterion/criterion.h>

#include "aemp_impl.h"

#include <stdio.h>
#include <stdlib.h>

/*
 * Each text with the bytes Erlang makes of it, after the version byte 131.
 * Obtained on this machine (OTP 25) with
 *   erl -noshell -eval 'io:format("~w", [term_to_binary(T, [{minor_version, 2}])])'
 * for T the text read by erl_scan/erl_parse/erl_eval (minor_version 2:
 * UTF-8 atoms, the default from OTP 26 and what the distribution sends;
 * OTP 25's default writes latin-1 atoms as ATOM_EXT). OTP 27 and 29 give the
 * same bytes for all of them (maps included: their keys here are no atoms
 * created in another order than their text's, see aemp.h).
 */
static const struct {
    const char *text;
    const char *bytes;
} fixtures[] = {
    {"abc", "119,3,97,98,99"},
    {"''", "119,0"},
    {"'hello world'", "119,11,104,101,108,108,111,32,119,111,114,108,100"},
    {"'ŝŝΩ'", "119,6,197,157,197,157,206,169"},
    {"'\\n\\t\\x{3a9}\\101'", "119,5,10,9,206,169,65"},
    {"[]", "106"},
    {"\"\"", "106"},
    {"\"abc\"", "107,0,3,97,98,99"},
    {"\"ŝŝΩ\"", "108,0,0,0,3,98,0,0,1,93,98,0,0,1,93,98,0,0,3,169,106"},
    {"\"a\\x{100}\"", "108,0,0,0,2,97,97,98,0,0,1,0,106"},
    {"[1|\"ab\"]", "107,0,3,1,97,98"},
    {"[a|\"bc\"]", "108,0,0,0,3,119,1,97,97,98,97,99,106"},
    {"\"ab\" \"cd\"", "107,0,4,97,98,99,100"},
    {"[1,2,3]", "107,0,3,1,2,3"},
    {"[256,1]", "108,0,0,0,2,98,0,0,1,0,97,1,106"},
    {"[-1,2]", "108,0,0,0,2,98,255,255,255,255,97,2,106"},
    {"[a|b]", "108,0,0,0,1,119,1,97,119,1,98"},
    {"[1,2|3]", "108,0,0,0,2,97,1,97,2,97,3"},
    {"[[]|a]", "108,0,0,0,1,106,119,1,97"},
    {"[\"\"|a]", "108,0,0,0,1,106,119,1,97"},
    {"[a|[b|[c|[]]]]", "108,0,0,0,3,119,1,97,119,1,98,119,1,99,106"},
    {"[a|[b|c]]", "108,0,0,0,2,119,1,97,119,1,98,119,1,99"},
    {"{}", "104,0"},
    {"{a}", "104,1,119,1,97"},
    {"{1,2,3}", "104,3,97,1,97,2,97,3"},
    {"{{},{{}},[{}]}", "104,3,104,0,104,1,104,0,108,0,0,0,1,104,0,106"},
    {"#{}", "116,0,0,0,0"},
    {"#{a => 1}", "116,0,0,0,1,119,1,97,97,1"},
    {"#{b => 1, a => 2}", "116,0,0,0,2,119,1,97,97,2,119,1,98,97,1"},
    {"#{a => 1, a => 2}", "116,0,0,0,1,119,1,97,97,2"},
    {"#{1.0 => a, 2 => b, b=>1, a=>2, \"x\" => 1, [] => 2, <<>> => 3, {} => 4}",
     "116,0,0,0,8,97,2,119,1,98,70,63,240,0,0,0,0,0,0,119,1,97,119,1,97,97,2,119,1,98,97,1,104,0,"
     "97,4,106,97,2,107,0,1,120,97,1,109,0,0,0,0,97,3"},
    {"#{{1,2} => x, {1} => y, [1] => z, [1,2] => w, \"ab\" => v, [a] => u}",
     "116,0,0,0,6,104,1,97,1,119,1,121,104,2,97,1,97,2,119,1,120,107,0,1,1,119,1,122,107,0,2,1,2,"
     "119,1,119,107,0,2,97,98,119,1,118,108,0,0,0,1,119,1,97,106,119,1,117"},
    {"#{<<1:3>> => a, <<1>> => b, <<0,1>> => c, <<>> => d}",
     "116,0,0,0,4,109,0,0,0,0,119,1,100,109,0,0,0,2,0,1,119,1,99,109,0,0,0,1,1,119,1,98,77,0,0,0,1,"
     "3,32,119,1,97"},
    {"#{1 => a, -1 => b, 100000000000000000000 => c, -100000000000000000000 => d, 2.5 => e, -2.5 "
     "=> f}",
     "116,0,0,0,6,110,9,1,0,0,16,99,45,94,199,107,5,119,1,100,98,255,255,255,255,119,1,98,97,1,119,"
     "1,97,110,9,0,0,0,16,99,45,94,199,107,5,119,1,99,70,192,4,0,0,0,0,0,0,119,1,102,70,64,4,0,0,0,"
     "0,0,0,119,1,101"},
    {"#{#{a => 1} => x, #{} => y, #{a => 0} => z, #{b => 0} => w}",
     "116,0,0,0,4,116,0,0,0,0,119,1,121,116,0,0,0,1,119,1,97,97,0,119,1,122,116,0,0,0,1,119,1,97,"
     "97,1,119,1,120,116,0,0,0,1,119,1,98,97,0,119,1,119"},
    {"#{[a|b] => 1, [a] => 2, [a,b] => 3, [a|c] => 4}",
     "116,0,0,0,4,108,0,0,0,1,119,1,97,119,1,98,97,1,108,0,0,0,1,119,1,97,119,1,99,97,4,108,0,0,0,"
     "1,119,1,97,106,97,2,108,0,0,0,2,119,1,97,119,1,98,106,97,3"},
    {"0", "97,0"},
    {"1", "97,1"},
    {"255", "97,255"},
    {"256", "98,0,0,1,0"},
    {"-1", "98,255,255,255,255"},
    {"-256", "98,255,255,255,0"},
    {"134217727", "98,7,255,255,255"},
    {"-134217728", "98,248,0,0,0"},
    {"2147483647", "98,127,255,255,255"},
    {"-2147483648", "98,128,0,0,0"},
    {"2147483648", "110,4,0,0,0,0,128"},
    {"-2147483649", "110,4,1,1,0,0,128"},
    {"4294967296", "110,5,0,0,0,0,0,1"},
    {"9223372036854775807", "110,8,0,255,255,255,255,255,255,255,127"},
    {"-9223372036854775808", "110,8,1,0,0,0,0,0,0,0,128"},
    {"9223372036854775808", "110,8,0,0,0,0,0,0,0,0,128"},
    {"18446744073709551615", "110,8,0,255,255,255,255,255,255,255,255"},
    {"18446744073709551616", "110,9,0,0,0,0,0,0,0,0,0,1"},
    {"-18446744073709551616", "110,9,1,0,0,0,0,0,0,0,0,1"},
    {"123456789012345678901234567890", "110,13,0,210,10,63,78,238,224,115,195,246,15,233,142,1"},
    {"-123456789012345678901234567890", "110,13,1,210,10,63,78,238,224,115,195,246,15,233,142,1"},
    {"16#ff", "97,255"},
    {"-16#FF", "98,255,255,255,1"},
    {"2#1010", "97,10"},
    {"36#zz", "98,0,0,5,15"},
    {"1_000_000", "98,0,15,66,64"},
    {"$a", "97,97"},
    {"$\\n", "97,10"},
    {"$\\^a", "97,1"},
    {"$ŝ", "98,0,0,1,93"},
    {"-$a", "98,255,255,255,159"},
    {"0.0", "70,0,0,0,0,0,0,0,0"},
    {"-0.0", "70,128,0,0,0,0,0,0,0"},
    {"1.0", "70,63,240,0,0,0,0,0,0"},
    {"-1.5", "70,191,248,0,0,0,0,0,0"},
    {"3.141592653589793", "70,64,9,33,251,84,68,45,24"},
    {"1.0e300", "70,126,55,228,60,136,0,117,156"},
    {"-1.0e-300", "70,129,165,110,31,194,248,243,89"},
    {"5.0e-324", "70,0,0,0,0,0,0,0,1"},
    {"1.7976931348623157e308", "70,127,239,255,255,255,255,255,255"},
    {"2.2250738585072014e-308", "70,0,16,0,0,0,0,0,0"},
    {"1.0E10", "70,66,2,160,95,32,0,0,0"},
    {"1.5e+3", "70,64,151,112,0,0,0,0,0"},
    {"0.1_5", "70,63,195,51,51,51,51,51,51"},
    {"<<>>", "109,0,0,0,0"},
    {"<<\"abc\">>", "109,0,0,0,3,97,98,99"},
    {"<<1,2,3>>", "109,0,0,0,3,1,2,3"},
    {"<<256,-1>>", "109,0,0,0,2,0,255"},
    {"<<1:4,2:4>>", "109,0,0,0,1,18"},
    {"<<1:3>>", "77,0,0,0,1,3,32"},
    {"<<255,7:5>>", "77,0,0,0,2,5,255,56"},
    {"<<\"abc\",5:4>>", "77,0,0,0,4,4,97,98,99,80"},
    {"<<1:12/little>>", "77,0,0,0,2,4,1,0"},
    {"<<16#1FF:9/little>>", "77,0,0,0,2,1,255,128"},
    {"<<-1:16/little>>", "109,0,0,0,2,255,255"},
    {"<<1:16/big>>", "109,0,0,0,2,0,1"},
    {"<<1.5/float>>", "109,0,0,0,8,63,248,0,0,0,0,0,0"},
    {"<<1:32/float>>", "109,0,0,0,4,63,128,0,0"},
    {"<<2.5:32/float-little>>", "109,0,0,0,4,0,0,32,64"},
    {"<<1.5:16/float>>", "109,0,0,0,2,62,0"},
    {"<<65504.0:16/float>>", "109,0,0,0,2,123,255"},
    {"<<1.0e-7:16/float>>", "109,0,0,0,2,0,2"},
    {"<<6.0e-8:16/float>>", "109,0,0,0,2,0,1"},
    {"<<$a/utf8, \"ŝ\"/utf16>>", "109,0,0,0,3,97,1,93"},
    {"<<\"ŝ\"/utf8>>", "109,0,0,0,2,197,157"},
    {"<<\"ŝ\">>", "109,0,0,0,1,93"},
    {"<<\"ab\":16>>", "109,0,0,0,4,0,97,0,98"},
    {"<<\"ab\"/utf32-little>>", "109,0,0,0,8,97,0,0,0,98,0,0,0"},
    {"<<16#1F600/utf16>>", "109,0,0,0,4,216,61,222,0"},
    {"<<16#1F600/utf8>>", "109,0,0,0,4,240,159,152,128"},
    {"<<<<1,2>>/binary, 3>>", "109,0,0,0,3,1,2,3"},
    {"<<<<1:3>>/bits, 1:5>>", "109,0,0,0,1,33"},
    {"<<<<1,2>>:1/binary>>", "109,0,0,0,1,1"},
    {"<<1:3/unit:8>>", "109,0,0,0,3,0,0,1"},
    {"<<(1):8>>", "109,0,0,0,1,1"},
    {"<<1:0>>", "109,0,0,0,0"},
    {"<<\"a\":0>>", "109,0,0,0,0"},
    {"<<1:8/signed-little-integer>>", "109,0,0,0,1,1"},
    {"<<16#123456789ABCDEF0123:80>>", "109,0,0,0,10,1,35,69,103,137,171,205,239,1,35"},
    {"<<-5:70>>", "77,0,0,0,9,6,255,255,255,255,255,255,255,255,236"},
    {"<<1:1,0:1,1:1>>", "77,0,0,0,1,3,160"},
    {"fun lists:sum/1", "113,119,5,108,105,115,116,115,119,3,115,117,109,97,1"},
    {"fun erlang:node/0", "113,119,6,101,114,108,97,110,103,119,4,110,111,100,101,97,0"},
    {"fun 'Elixir.Enum':map/2",
     "113,119,11,69,108,105,120,105,114,46,69,110,117,109,119,3,109,97,112,97,2"},
    {"{ok, [1, 2.0, \"x\", <<\"y\">>, #{k => [v]}]}",
     "104,2,119,2,111,107,108,0,0,0,5,97,1,70,64,0,0,0,0,0,0,0,107,0,1,120,109,0,0,0,1,121,116,0,0,"
     "0,1,119,1,107,108,0,0,0,1,119,1,118,106,106"},
    {"[{a, 1}, {b, 2}]", "108,0,0,0,2,104,2,119,1,97,97,1,104,2,119,1,98,97,2,106"},
    {"<<1.0e300:32/float>>", "109,0,0,0,4,127,128,0,0"},
    {"<<70000.0:16/float>>", "109,0,0,0,2,124,0"},
    {"<<65520.0:16/float>>", "109,0,0,0,2,124,0"},
    {"<<-70000.0:16/float>>", "109,0,0,0,2,252,0"},
    {"<<65519.0:16/float>>", "109,0,0,0,2,123,255"},
    {"<<3.0e-8:16/float>>", "109,0,0,0,2,0,1"},
    {"<<2.9e-8:16/float>>", "109,0,0,0,2,0,0"},
    {"<<1.0e-30:16/float>>", "109,0,0,0,2,0,0"},
    {"<<-1.0e-30:16/float>>", "109,0,0,0,2,128,0"},
    {"<<6.103515625e-5:16/float>>", "109,0,0,0,2,4,0"},
    {"<<6.1e-5:16/float>>", "109,0,0,0,2,3,255"},
    {"<<16#1FFFFFFFFFFFFFFFFFFFF/float>>", "109,0,0,0,8,69,0,0,0,0,0,0,0"},
    {"<<-0.0/float>>", "109,0,0,0,8,128,0,0,0,0,0,0,0"},
    {"<<1/float>>", "109,0,0,0,8,63,240,0,0,0,0,0,0"},
    {"<<-3:32/float>>", "109,0,0,0,4,192,64,0,0"},
};

#define NFIXTURES (sizeof fixtures / sizeof fixtures[0])

/* "1,2,3" as bytes into out; returns their count. */
static size_t decimal_bytes(const char *s, uint8_t *out, size_t max)
{
    size_t n = 0;
    while (*s) {
        char *end;
        unsigned long v = strtoul(s, &end, 10);
        cr_assert(end != s && v <= 255 && n < max, "bad fixture bytes at '%s'", s);
        out[n++] = (uint8_t)v;
        s = *end == ',' ? end + 1 : end;
    }
    return n;
}

static void expect_parse(const char *text, const uint8_t *exp, size_t n)
{
    aemp_buf b = AEMP_BUF_INIT;
    size_t pos = 12345;
    int rc = aemp_term_parse(&b, text, strlen(text), &pos);
    cr_assert_eq(rc, 0, "parse %s: %s at %zu", text, aemp_strerror(rc), pos);
    cr_assert_eq(b.len, n, "parse %s: %zu bytes, expected %zu", text, b.len, n);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq((uint8_t)b.data[i], exp[i], "parse %s: byte %zu is %u, expected %u", text, i,
                     (uint8_t)b.data[i], exp[i]);
    aemp_buf_free(&b);
}

static void expect_error(const char *text, int code, size_t at)
{
    aemp_buf b = AEMP_BUF_INIT;
    size_t pos = 12345;
    int rc = aemp_term_parse(&b, text, strlen(text), &pos);
    cr_assert_eq(rc, code, "parse '%s': %s, expected %s", text, aemp_strerror(rc),
                 aemp_strerror(code));
    cr_assert_eq(pos, at, "parse '%s': error at %zu, expected %zu", text, pos, at);
    cr_assert_eq(b.len, 0, "parse '%s' failed but wrote %zu bytes", text, b.len);
    aemp_buf_free(&b);
}

Test(parse, the_bytes_of_term_to_binary)
{
    static uint8_t exp[4096];
    for (size_t i = 0; i < NFIXTURES; i++) {
        size_t n = decimal_bytes(fixtures[i].bytes, exp, sizeof exp);
        expect_parse(fixtures[i].text, exp, n);
    }
}

/* aemp_term_print writes what aemp_term_parse reads back to the same bytes. */
Test(parse, round_trip_through_print)
{
    for (size_t i = 0; i < NFIXTURES; i++) {
        aemp_buf b = AEMP_BUF_INIT, again = AEMP_BUF_INIT;
        char text[4096];
        size_t pos = 0;
        cr_assert_eq(aemp_term_parse(&b, fixtures[i].text, strlen(fixtures[i].text), NULL), 0);
        aemp_term t = aemp_buf_term(&b);
        int n = aemp_term_print(&t, text, sizeof text);
        cr_assert(n > 0 && (size_t)n < sizeof text - 1, "print %s", fixtures[i].text);
        int rc = aemp_term_parse(&again, text, (size_t)n, &pos);
        cr_assert_eq(rc, 0, "%s printed as %s: %s at %zu", fixtures[i].text, text,
                     aemp_strerror(rc), pos);
        cr_assert(again.len == b.len && memcmp(again.data, b.data, b.len) == 0,
                  "%s printed as %s reads back to other bytes", fixtures[i].text, text);
        aemp_buf_free(&b);
        aemp_buf_free(&again);
    }
}

Test(parse, appends_and_leaves_the_buffer_alone_on_error)
{
    aemp_buf b = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_format(&b, "{x}"), 0);
    cr_assert_eq(aemp_term_parse(&b, "ok", 2, NULL), 0);
    cr_assert_eq(b.len, 5 + 4);
    cr_assert(memcmp(b.data, "\x68\x01\x77\x01x\x77\x02ok", 9) == 0);
    cr_assert_eq(aemp_term_parse(&b, "{ok, [1, 2 | }", 14, NULL), AEMP_EINVAL);
    cr_assert_eq(b.len, 9);
    /* the text needs no NUL: only len bytes are read */
    cr_assert_eq(aemp_term_parse(&b, "abc}}}", 3, NULL), 0);
    cr_assert_eq(b.len, 9 + 5);
    aemp_buf_free(&b);
}

Test(parse, bad_arguments)
{
    aemp_buf b = AEMP_BUF_INIT;
    size_t pos = 7;
    cr_assert_eq(aemp_term_parse(NULL, "a", 1, &pos), AEMP_EINVAL);
    cr_assert_eq(aemp_term_parse(&b, NULL, 1, &pos), AEMP_EINVAL);
    cr_assert_eq(pos, 0);
    expect_error("", AEMP_EINVAL, 0);
    expect_error("   % only a comment\n", AEMP_EINVAL, 20);
}

/* Syntax errors and values Erlang refuses, with where they were found. */
Test(parse, errors_and_their_positions)
{
    static const struct {
        const char *text;
        size_t len; /* 0: strlen(text) */
        int code;
        size_t at;
    } bad[] = {
        {"X", 0, AEMP_EINVAL, 0}, /* a variable */
        {"{a, _}", 0, AEMP_EINVAL, 4},
        {"end", 0, AEMP_EINVAL, 0}, /* a reserved word */
        {"[a, 'end', b | fun]", 0, AEMP_EINVAL, 18},
        {"{a,b,,c}", 0, AEMP_EINVAL, 5},
        {"{1,2", 0, AEMP_EINVAL, 4},
        {"[1 2]", 0, AEMP_EINVAL, 3},
        {"\"abc", 0, AEMP_EINVAL, 0}, /* never closed */
        {"'abc", 0, AEMP_EINVAL, 0},
        {"{a} b", 0, AEMP_EINVAL, 4}, /* text after the term */
        {"a. b", 0, AEMP_EINVAL, 3},
        {"1.0e400", 0, AEMP_EINVAL, 0}, /* beyond a double */
        {"-1.0e400", 0, AEMP_EINVAL, 0},
        {"37#1", 0, AEMP_EINVAL, 0}, /* bases are 2..36 */
        {"16#", 0, AEMP_EINVAL, 3},
        {"2#102", 0, AEMP_EINVAL, 4},
        {"1__0", 0, AEMP_EINVAL, 1},
        {"1e5", 0, AEMP_EINVAL, 1},
        {"- a", 0, AEMP_EINVAL, 2},
        {"#{a := 1}", 0, AEMP_EINVAL, 4},
        {"[a => b]", 0, AEMP_EINVAL, 3},
        {"#rec{}", 0, AEMP_EINVAL, 0},
        {"<0.1.2>", 0, AEMP_EINVAL, 0},
        {"[|a]", 0, AEMP_EINVAL, 1},
        {"[a|b|c]", 0, AEMP_EINVAL, 4},
        {"abc(1)", 0, AEMP_EINVAL, 3},
        {"'\\x{110000}'", 0, AEMP_EINVAL, 1},    /* not a code point */
        {"\"a\\x{D800}\"", 0, AEMP_EINVAL, 2},   /* a surrogate */
        {"\"\\x4\"", 0, AEMP_EINVAL, 1},         /* \xHH needs two digits */
        {"\"a\xff\"", 0, AEMP_EINVAL, 2},        /* not UTF-8 */
        {"\"\xc3\xa9\xc3\"", 0, AEMP_EINVAL, 3}, /* cut short */
        {"\xc5\x9d", 0, AEMP_EINVAL, 0},         /* U+015D is no letter of unquoted atoms */
        {"a\0b", 3, AEMP_EINVAL, 1},
        {"<<1/unit:8>>", 0, AEMP_EINVAL, 2}, /* unit needs a size */
        {"<<1.0>>", 0, AEMP_EINVAL, 2},      /* the default type is integer */
        {"<<\"abc\"/binary>>", 0, AEMP_EINVAL, 2},
        {"<<<<1>>>>", 0, AEMP_EINVAL, 2}, /* a binary needs /binary */
        {"<<<<1:3>>/binary>>", 0, AEMP_EINVAL, 2},
        {"<<<<1>>:2/binary>>", 0, AEMP_EINVAL, 2}, /* more than it has */
        {"<<16#D800/utf8>>", 0, AEMP_EINVAL, 2},
        {"<<1:8/utf8>>", 0, AEMP_EINVAL, 2},
        {"<<1.5:8/float>>", 0, AEMP_EINVAL, 2},
        {"<<1/integer-float>>", 0, AEMP_EINVAL, 12},
        {"<<1/frob>>", 0, AEMP_EINVAL, 4},
        {"<<1, 2", 0, AEMP_EINVAL, 6},
        {"<<(1 + 2)>>", 0, AEMP_EINVAL, 5},
        {"fun lists:sum/256", 0, AEMP_EINVAL, 14},
        {"fun lists:sum", 0, AEMP_EINVAL, 13},
        {"#Ref<a@b.1.2>", 0, AEMP_EINVAL, 0}, /* print's form lacks the creation */
        {"a@b#<1.2>", 0, AEMP_EINVAL, 0},
        {"nohost#<1.2.3>", 0, AEMP_EINVAL, 0}, /* a node name has an @ */
        {"a@b#name", 0, AEMP_EINVAL, 3},       /* a registered name is no term */
        {"#Pid<a@b.1.2>", 0, AEMP_EINVAL, 0},
        {"#Pid<a@b.1.2.3", 0, AEMP_EINVAL, 14},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t len = bad[i].len ? bad[i].len : strlen(bad[i].text);
        aemp_buf b = AEMP_BUF_INIT;
        size_t pos = 12345;
        int rc = aemp_term_parse(&b, bad[i].text, len, &pos);
        cr_assert_eq(rc, bad[i].code, "parse '%s': %s, expected %s", bad[i].text, aemp_strerror(rc),
                     aemp_strerror(bad[i].code));
        cr_assert_eq(pos, bad[i].at, "parse '%s': error at %zu, expected %zu", bad[i].text, pos,
                     bad[i].at);
        cr_assert_eq(b.len, 0);
        aemp_buf_free(&b);
    }
}

/* Latin-1 letters make unquoted atoms, as in Erlang; whitespace, comments
 * and an end dot go around tokens. */
Test(parse, layout)
{
    uint8_t exp[] = {119, 5, 0xc3, 0xa9, 't', 0xc3, 0xa9};
    expect_parse("\xc3\xa9t\xc3\xa9", exp, sizeof exp);
    uint8_t tuple[] = {104, 2, 119, 1, 'a', 108, 0, 0, 0, 1, 97, 1, 97, 2};
    expect_parse(" {\ta % a comment, }\n ,\r\n[ 1 |2 ] } . \n", tuple, sizeof tuple);
    expect_parse("{a,[1|2]}.", tuple, sizeof tuple);
}

/* Nesting beyond 512 levels is refused where it goes too deep, for every
 * kind of container, however deep the text goes. */
Test(parse, depth_is_bounded)
{
    static const struct {
        const char *open;
        size_t width; /* of one level */
    } kinds[] = {{"[", 1}, {"{", 1}, {"#{a => ", 7}, {"<<", 2}, {"[a|", 3}};
    size_t deep = 100000;
    char *text = malloc(deep * 8 + 16);
    cr_assert(text);
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        size_t w = strlen(kinds[k].open), n = 0;
        for (size_t i = 0; i < deep; i++, n += w)
            memcpy(text + n, kinds[k].open, w);
        aemp_buf b = AEMP_BUF_INIT;
        size_t pos = 0;
        cr_assert_eq(aemp_term_parse(&b, text, n, &pos), AEMP_ETOOBIG, "%s", kinds[k].open);
        size_t at = 512 * kinds[k].width;
        cr_assert_eq(pos, at, "%s: at %zu, expected %zu", kinds[k].open, pos, at);
        aemp_buf_free(&b);
    }
    /* 512 levels are fine */
    size_t n = 0;
    for (int i = 0; i < 512; i++)
        text[n++] = '[';
    for (int i = 0; i < 512; i++)
        text[n++] = ']';
    aemp_buf b = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_parse(&b, text, n, NULL), 0);
    size_t used;
    cr_assert_eq(aemp__term_validate(b.data, b.len, &used), 0);
    cr_assert_eq(used, b.len);
    aemp_buf_free(&b);
    free(text);
}

/* Integers up to 131072 bits (the largest in LARGE_BIG_EXT); leading zeros
 * cost nothing. */
Test(parse, integer_limits)
{
    size_t nf = 32768;
    char *text = malloc(200000);
    cr_assert(text);
    memcpy(text, "-16#", 4);
    memset(text + 4, 'F', nf);
    text[4 + nf] = 0;
    aemp_buf b = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_parse(&b, text, 4 + nf, NULL), 0);
    cr_assert_eq(b.len, 6 + 16384);
    cr_assert_eq((uint8_t)b.data[0], 111);
    cr_assert_eq(aemp__get_u32(b.data + 1), 16384);
    cr_assert_eq(b.data[5], 1);
    for (size_t i = 0; i < 16384; i++)
        cr_assert_eq((uint8_t)b.data[6 + i], 0xff);
    aemp_buf_free(&b);

    memcpy(text, "16#1", 4);
    memset(text + 4, '0', nf);
    text[4 + nf] = 0;
    expect_error(text, AEMP_ETOOBIG, 0);
    memset(text, '9', 100000);
    text[100000] = 0;
    expect_error(text, AEMP_ETOOBIG, 0);
    memcpy(text, "{ok, 16#", 8);
    memset(text + 8, '0', 100000);
    memcpy(text + 8 + 100000, "1}", 3);
    uint8_t exp[] = {104, 2, 119, 2, 'o', 'k', 97, 1};
    expect_parse(text, exp, sizeof exp);
    free(text);
}

/* Sized segments draw on a budget (16 bytes per byte of text plus 1 MiB):
 * a short text cannot make a huge binary. */
Test(parse, binary_budget)
{
    expect_error("<<0:4294967296>>", AEMP_ETOOBIG, 2);
    expect_error("{<<1>>, <<0:9000000>>}", AEMP_ETOOBIG, 10);
    expect_error("<<0:100, 0:4294967297>>", AEMP_ETOOBIG, 11); /* Size beyond 2^32 */
    aemp_buf b = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_parse(&b, "<<7:8000000>>", 13, NULL), 0);
    cr_assert_eq(b.len, 5 + 1000000);
    cr_assert_eq(b.data[b.len - 1], 7);
    aemp_buf_free(&b);
}

Test(parse, strings_and_atoms_at_their_limits)
{
    size_t n = 70000;
    char *text = malloc(n + 8);
    cr_assert(text);
    for (size_t len = 65535; len <= 65536; len++) {
        text[0] = '"';
        memset(text + 1, 'a', len);
        text[len + 1] = '"';
        aemp_buf b = AEMP_BUF_INIT;
        cr_assert_eq(aemp_term_parse(&b, text, len + 2, NULL), 0);
        if (len == 65535) {
            cr_assert_eq((uint8_t)b.data[0], 107); /* STRING_EXT */
            cr_assert_eq(b.len, 3 + len);
        } else {
            cr_assert_eq((uint8_t)b.data[0], 108); /* a list of small integers */
            cr_assert_eq(b.len, 5 + 2 * len + 1);
        }
        aemp_buf_free(&b);
    }
    /* 255 characters make an atom (here of 510 bytes: ATOM_UTF8_EXT), 256 not */
    text[0] = '\'';
    for (size_t i = 0; i < 256; i++)
        memcpy(text + 1 + 2 * i, "\xc3\xa9", 2);
    text[1 + 2 * 255] = '\'';
    aemp_buf b = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_parse(&b, text, 2 + 2 * 255, NULL), 0);
    cr_assert_eq((uint8_t)b.data[0], 118);
    cr_assert_eq(aemp__get_u16(b.data + 1), 510);
    aemp_buf_free(&b);
    for (size_t i = 0; i < 256; i++)
        memcpy(text + 1 + 2 * i, "\xc3\xa9", 2);
    text[1 + 2 * 256] = '\'';
    size_t pos;
    cr_assert_eq(aemp_term_parse(&b, text, 2 + 2 * 256, &pos), AEMP_ETOOBIG);
    cr_assert_eq(pos, 1 + 2 * 255);
    free(text);
}

/* Pids and references as port IDs and as aemp_term_print writes pids: the
 * same bytes as aemp_term_format("~p"). */
Test(parse, pids_and_references)
{
    static const char *const ids[] = {
        "c@host#<1.2.3>",
        "c@host.example.com#<0.4294967295.1700000000>",
        "c@h#Ref<1700000000.1.2.3>",
        "c@h#Alias<7.1.2.3.4.5>",
    };
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        aemp_addr a;
        aemp_buf want = AEMP_BUF_INIT, got = AEMP_BUF_INIT;
        cr_assert_eq(aemp_addr_parse(ids[i], &a), 0);
        cr_assert_eq(aemp_term_format(&want, "{~p, [~p]}", &a, &a), 0);
        char text[200];
        snprintf(text, sizeof text, "{%s, [%s]}", ids[i], ids[i]);
        cr_assert_eq(aemp_term_parse(&got, text, strlen(text), NULL), 0, "%s", text);
        cr_assert(got.len == want.len && memcmp(got.data, want.data, got.len) == 0, "%s", text);
        if (a.kind == AEMP_ADDR_PID) {
            /* print, read back */
            char printed[300];
            aemp_term t = aemp_buf_term(&got);
            cr_assert(aemp_term_print(&t, printed, sizeof printed) > 0);
            cr_assert(strstr(printed, "#Pid<"), "%s", printed);
            aemp__buf_reset(&got);
            cr_assert_eq(aemp_term_parse(&got, printed, strlen(printed), NULL), 0, "%s", printed);
            cr_assert(got.len == want.len && memcmp(got.data, want.data, got.len) == 0, "%s",
                      printed);
        }
        aemp_buf_free(&want);
        aemp_buf_free(&got);
    }
    /* a node name that is not an unquoted atom comes quoted */
    aemp_addr a;
    aemp_buf want = AEMP_BUF_INIT, got = AEMP_BUF_INIT;
    cr_assert_eq(aemp_addr_parse("Big-Node@h#<1.2.3>", &a), 0);
    cr_assert_eq(aemp_term_format(&want, "~p", &a), 0);
    const char *forms[] = {"Big-Node@h#<1.2.3>", "'Big-Node@h'#<1.2.3>",
                           "#Pid<'Big-Node@h'.1.2.3>"};
    for (size_t i = 0; i < 3; i++) {
        aemp__buf_reset(&got);
        cr_assert_eq(aemp_term_parse(&got, forms[i], strlen(forms[i]), NULL), 0, "%s", forms[i]);
        cr_assert(got.len == want.len && memcmp(got.data, want.data, got.len) == 0, "%s", forms[i]);
    }
    aemp_buf_free(&want);
    aemp_buf_free(&got);
}

/* Map keys in term order whatever the count (term_to_binary orders maps of
 * more than 32 keys by hash; Erlang decodes either), duplicates merged with
 * the last value. */
Test(parse, large_maps)
{
    char text[4096];
    size_t n = (size_t)snprintf(text, sizeof text, "#{");
    for (int i = 40; i >= 1; i--)
        n += (size_t)snprintf(text + n, sizeof text - n, "%d => old, %d => %d, ", i, i, i);
    n += (size_t)snprintf(text + n, sizeof text - n, "0 => zero}");
    aemp_buf b = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_parse(&b, text, n, NULL), 0);
    aemp_term t = aemp_buf_term(&b);
    aemp_cursor c = aemp_cursor_of(&t);
    uint32_t pairs;
    cr_assert_eq(aemp_get_map(&c, &pairs), 0);
    cr_assert_eq(pairs, 41);
    for (int64_t i = 0; i <= 40; i++) {
        int64_t k, v;
        cr_assert_eq(aemp_get_int64(&c, &k), 0);
        cr_assert_eq(k, i);
        if (i == 0) {
            char atom[8];
            cr_assert_eq(aemp_get_atom(&c, atom, sizeof atom), 0);
            cr_assert_str_eq(atom, "zero");
        } else {
            cr_assert_eq(aemp_get_int64(&c, &v), 0);
            cr_assert_eq(v, i);
        }
    }
    aemp_buf_free(&b);
}
