/*
 * terms.c - building, printing and decoding terms; port IDs. No network.
 *
 * Usage: example_terms
 */
#include "aemp.h"

#include <stdio.h>
#include <string.h>

static int check(int rc, const char *what)
{
    if (rc < 0) fprintf(stderr, "terms: %s: %s\n", what, aemp_strerror(rc));
    return rc < 0;
}

/* Walk a list of integers: the same loop reads [] and [1,2,3]. */
static int sum_list(const aemp_term *t, int64_t *sum)
{
    aemp_cursor c = aemp_cursor_of(t);
    uint32_t n;
    int64_t v;
    *sum = 0;
    if (aemp_get_list(&c, &n)) return AEMP_ENOMATCH;
    for (uint32_t i = 0; i < n; i++) {
        if (aemp_get_int64(&c, &v)) return AEMP_ENOMATCH;
        *sum += v;
    }
    return aemp_get_nil(&c); /* fails for an improper list [1|2] */
}

int main(void)
{
    aemp_addr pid, name;
    char text[512];
    if (check(aemp_addr_parse("c@host#<42.0.7>", &pid), "parse pid") ||
        check(aemp_addr_name(&name, "erl@host", "logger"), "name"))
        return 1;
    if (check(aemp_addr_format(&name, text, sizeof text), "format name")) return 1;
    printf("name address: %s\n", text);

    /* Build {order, Pid, <<"C">>, "abc", [1, 2.5, -3], #{qty => 7, 'Unit' => kg}, <<1,2,3>>} */
    static const unsigned char raw[] = {1, 2, 3};
    aemp_buf b = AEMP_BUF_INIT;
    int rc =
        aemp_term_format(&b, "{order, ~p, ~s, ~l, [1, 2.5, -3], #{qty => ~i, 'Unit' => ~a}, ~b}",
                         &pid, "C", "abc", (int64_t)7, "kg", raw, sizeof raw);
    if (check(rc, "format")) return 1;
    aemp_term t = aemp_buf_term(&b);
    if (check(aemp_term_print(&t, text, sizeof text), "print")) return 1;
    printf("built: %s\n", text);

    char tag[32];
    if (aemp_term_tag(&t, tag, sizeof tag) == 0) printf("tag: %s\n", tag);

    /* Decode it again, element by element. */
    aemp_cursor c = aemp_cursor_of(&t);
    uint32_t arity, pairs;
    aemp_addr who;
    const void *bin;
    size_t binlen;
    char str[16];
    aemp_term list, value;
    if (aemp_get_tuple(&c, &arity) || arity != 7 || aemp_get_atom(&c, tag, sizeof tag) ||
        aemp_get_pid(&c, &who) || aemp_get_binary(&c, &bin, &binlen) ||
        aemp_get_charlist(&c, str, sizeof str) || aemp_get_term(&c, &list) ||
        aemp_get_map(&c, &pairs)) {
        fprintf(stderr, "terms: unexpected shape\n");
        return 1;
    }
    aemp_addr_format(&who, text, sizeof text);
    printf("pid: %s (equal to the original: %d)\n", text, aemp_addr_equal(&who, &pid));
    printf("binary: %.*s, charlist: %s\n", (int)binlen, (const char *)bin, str);
    for (uint32_t i = 0; i < pairs; i++) {
        char key[16];
        aemp_get_atom(&c, key, sizeof key);
        aemp_get_term(&c, &value);
        aemp_term_print(&value, text, sizeof text);
        printf("map: %s => %s\n", key, text);
    }

    /* The list holds a float: sum_list stops there; the cursor API says so. */
    int64_t sum;
    rc = sum_list(&list, &sum);
    printf("sum of [1, 2.5, -3]: %s\n", rc ? aemp_strerror(rc) : "ok");

    aemp_buf ints = AEMP_BUF_INIT, empty = AEMP_BUF_INIT;
    if (check(aemp_term_format(&ints, "[1, 2, 3]"), "format") ||
        check(aemp_term_format(&empty, "[]"), "format"))
        return 1;
    aemp_term ti = aemp_buf_term(&ints), te = aemp_buf_term(&empty);
    if (sum_list(&ti, &sum) == 0) printf("sum of [1, 2, 3]: %lld\n", (long long)sum);
    if (sum_list(&te, &sum) == 0) printf("sum of []: %lld\n", (long long)sum);

    aemp_buf_free(&ints);
    aemp_buf_free(&empty);
    aemp_buf_free(&b);
    return 0;
}
