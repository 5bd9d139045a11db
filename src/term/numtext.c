/* numtext.c - locale-independent number text for the term layer. */
#include "term_local.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;
static locale_t c_locale;

static void c_locale_init(void)
{
    /* Created once and kept for the life of the process. */
    c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
}

locale_t aemp__term_c_locale(void)
{
    pthread_once(&c_locale_once, c_locale_init);
    return c_locale;
}

double aemp__term_strtod(const char *s, char **end)
{
    locale_t l = aemp__term_c_locale();
    return l ? strtod_l(s, end, l) : strtod(s, end);
}

int aemp__term_fmt_double(char *out, size_t size, double d)
{
    char tmp[64];
    locale_t l = aemp__term_c_locale();
    locale_t old = l ? uselocale(l) : (locale_t)0;
    int prec;
    for (prec = 1; prec < 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, d);
        if (aemp__term_strtod(tmp, NULL) == d) break;
    }
    if (prec == 17) snprintf(tmp, sizeof tmp, "%.17g", d);
    if (l) uselocale(old);

    /* Erlang floats need digits on both sides of a '.': 1e+20 -> 1.0e+20. */
    const char *e = strchr(tmp, 'e');
    int special = strchr(tmp, 'n') != NULL; /* inf, nan: cannot come from Erlang */
    if (!special && !strchr(tmp, '.')) {
        size_t mant = e ? (size_t)(e - tmp) : strlen(tmp);
        return snprintf(out, size, "%.*s.0%s", (int)mant, tmp, tmp + mant);
    }
    return snprintf(out, size, "%s", tmp);
}

int aemp__term_old_float(const char *text31, double *out)
{
    char text[32];
    const char *nul = memchr(text31, 0, 31);
    /* without a NUL in its 31 bytes, ei's sscanf would read past them */
    if (!nul || nul == text31) return -1;
    size_t n = (size_t)(nul - text31);
    /* only what Erlang's "%.20e" writes: hex, inf, nan and spaces, which
     * strtod and sscanf treat differently, are refused */
    if (strspn(text31, "0123456789.eE+-") != n) return -1;
    memcpy(text, text31, n);
    text[n] = 0;
    char *end;
    double d = aemp__term_strtod(text, &end);
    if (end != text + n) return -1;
    if (out) *out = d;
    return 0;
}
