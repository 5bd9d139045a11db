/*
 * say.h - the progress lines of the interop and fault test programs
 * (cnode.c, fault/fault_node.c): one line to stdout, flushed at once,
 * since the test scripts wait on them.
 */
#ifndef AEMP_INTEROP_SAY_H
#define AEMP_INTEROP_SAY_H

#include <stdarg.h>
#include <stdio.h>

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

#endif
