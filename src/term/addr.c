/*
 * addr.c - port IDs: `node#name` and `node#<num.serial.creation>`.
 *
 * The node part ends at the first '#' (node names `alive@host` hold none);
 * whatever follows is the name, so a registered name may itself hold '#'. A
 * rest of the exact form <N.N.N> (decimal, 32-bit) is a pid.
 */
#include "term_local.h"

#include <stdio.h>

static int node_ok(const char *node, size_t n)
{
    return n > 0 && n <= AEMP_MAXNODELEN && memchr(node, '@', n) != NULL;
}

int aemp_addr_name(aemp_addr *out, const char *node, const char *name)
{
    if (!out || !node || !name) return AEMP_EINVAL;
    size_t nn = strlen(node), an = strlen(name);
    if (!node_ok(node, nn) || an == 0 || an > AEMP_MAXATOMLEN) return AEMP_EINVAL;
    aemp_addr a;
    memset(&a, 0, sizeof a);
    a.kind = AEMP_ADDR_NAME;
    memcpy(a.node, node, nn);
    memcpy(a.name, name, an);
    *out = a;
    return 0;
}

int aemp_addr_format(const aemp_addr *a, char *out, size_t size)
{
    int n;
    if (!a || (!out && size)) return AEMP_EINVAL;
    /* the fields are fixed arrays: never read past them, even unterminated */
    int nl = (int)strnlen(a->node, sizeof a->node);
    switch (a->kind) {
    case AEMP_ADDR_PID:
        n = snprintf(out, size, "%.*s#<%u.%u.%u>", nl, a->node, (unsigned)a->num,
                     (unsigned)a->serial, (unsigned)a->creation);
        break;
    case AEMP_ADDR_NAME:
        n = snprintf(out, size, "%.*s#%.*s", nl, a->node, (int)strnlen(a->name, sizeof a->name),
                     a->name);
        break;
    default:
        return AEMP_EINVAL;
    }
    return n < 0 ? AEMP_EINVAL : n;
}

/* A decimal uint32 with no sign, no spaces, no leading junk. */
static const char *parse_u32(const char *s, uint32_t *v)
{
    uint64_t x = 0;
    const char *start = s;
    while (*s >= '0' && *s <= '9') {
        x = x * 10 + (uint64_t)(*s - '0');
        if (x > UINT32_MAX) return NULL;
        s++;
    }
    if (s == start) return NULL;
    *v = (uint32_t)x;
    return s;
}

static int parse_pid(const char *s, aemp_addr *a)
{
    if (*s++ != '<') return -1;
    if (!(s = parse_u32(s, &a->num)) || *s++ != '.') return -1;
    if (!(s = parse_u32(s, &a->serial)) || *s++ != '.') return -1;
    if (!(s = parse_u32(s, &a->creation)) || *s++ != '>') return -1;
    return *s == 0 ? 0 : -1;
}

int aemp_addr_parse(const char *s, aemp_addr *out)
{
    if (!s || !out) return AEMP_EINVAL;
    const char *hash = strchr(s, '#');
    if (!hash) return AEMP_EINVAL;
    size_t nn = (size_t)(hash - s);
    if (!node_ok(s, nn)) return AEMP_EINVAL;
    const char *rest = hash + 1;
    aemp_addr a;
    memset(&a, 0, sizeof a);
    memcpy(a.node, s, nn);
    if (rest[0] == '<' && parse_pid(rest, &a) == 0) {
        a.kind = AEMP_ADDR_PID;
    } else {
        size_t an = strlen(rest);
        /* a malformed pid is an error, not a name that looks like one */
        if (an == 0 || an > AEMP_MAXATOMLEN || rest[0] == '<') return AEMP_EINVAL;
        a.kind = AEMP_ADDR_NAME;
        memcpy(a.name, rest, an);
    }
    *out = a;
    return 0;
}

int aemp_addr_equal(const aemp_addr *a, const aemp_addr *b)
{
    if (!a || !b || a->kind != b->kind) return 0;
    if (strncmp(a->node, b->node, sizeof a->node) != 0) return 0;
    switch (a->kind) {
    case AEMP_ADDR_PID:
        return a->num == b->num && a->serial == b->serial && a->creation == b->creation;
    case AEMP_ADDR_NAME:
        return strncmp(a->name, b->name, sizeof a->name) == 0;
    default:
        return 0;
    }
}
