/* log.c - leveled logging to stderr or a user callback. */
#include "../aemp_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

static int log_level = -1;
static aemp_log_cb log_cb;
static void *log_arg;

static int level_from_env(void)
{
    const char *e = getenv("AEMP_LOG");
    if (!e || !*e) return AEMP_LOG_WARN;
    static const char *names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++)
        if (strcasecmp(e, names[i]) == 0) return i;
    if (e[0] >= '0' && e[0] <= '3' && e[1] == 0) return e[0] - '0';
    return AEMP_LOG_WARN;
}

void aemp_log_set_level(int level)
{
    if (level < AEMP_LOG_ERROR) level = AEMP_LOG_ERROR;
    if (level > AEMP_LOG_DEBUG) level = AEMP_LOG_DEBUG;
    log_level = level;
}

int aemp_log_get_level(void)
{
    if (log_level < 0) log_level = level_from_env();
    return log_level;
}

void aemp_log_set_callback(aemp_log_cb cb, void *arg)
{
    log_cb = cb;
    log_arg = arg;
}

/* Log lines carry text peers chose (atoms, node names, reasons): a byte
 * that is not printable ASCII (a newline above all, which would forge a
 * line of its own) is written as \xNN, so one call is always one line. */
static void escape(const char *in, char *out, size_t size)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (; *in && o + 5 < size; in++) {
        unsigned char ch = (unsigned char)*in;
        if (ch >= 0x20 && ch < 0x7f) {
            out[o++] = (char)ch;
            continue;
        }
        out[o++] = '\\';
        out[o++] = 'x';
        out[o++] = hex[ch >> 4];
        out[o++] = hex[ch & 15];
    }
    out[o] = 0;
}

void aemp__log(int level, const char *fmt, ...)
{
    if (level > aemp_log_get_level()) return;
    char raw[1024], line[4 * sizeof raw];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    escape(raw, line, sizeof line);
    if (log_cb) {
        log_cb(level, line, log_arg);
        return;
    }
    static const char *tags[] = {"error", "warn", "info", "debug"};
    fprintf(stderr, "aemp %s: %s\n", tags[level], line);
}
