/* usage.c - how every command of the aemp tool reports a usage error. */
#include "profile.h"

#include <stdarg.h>
#include <stdio.h>

int aemp__cli_usage_error(aemp__cli_usage_fn *print_usage, const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "aemp%s%s: ", cmd ? " " : "", cmd ? cmd : "");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    print_usage(stderr);
    return 2;
}
