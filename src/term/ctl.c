/*
 * ctl.c - the table of distribution control messages (shape and name of
 * each tag) and their encoder. Where a control message is handled is the
 * business of the layers above (docs/design.md); what it looks like is here.
 */
#include "term_local.h"

#include <stdarg.h>

/* Indexed by tag; min_arity counts the tag itself. */
static const struct aemp__ctl_info table[AEMP__CTL_MAX] = {
    [AEMP__CTL_LINK] = {AEMP__CTL_LINK, 3, false, "LINK"},
    [AEMP__CTL_SEND] = {AEMP__CTL_SEND, 3, true, "SEND"},
    [AEMP__CTL_EXIT] = {AEMP__CTL_EXIT, 4, false, "EXIT"},
    [AEMP__CTL_UNLINK] = {AEMP__CTL_UNLINK, 3, false, "UNLINK"},
    [AEMP__CTL_NODE_LINK] = {AEMP__CTL_NODE_LINK, 1, false, "NODE_LINK"},
    [AEMP__CTL_REG_SEND] = {AEMP__CTL_REG_SEND, 4, true, "REG_SEND"},
    [AEMP__CTL_GROUP_LEADER] = {AEMP__CTL_GROUP_LEADER, 3, false, "GROUP_LEADER"},
    [AEMP__CTL_EXIT2] = {AEMP__CTL_EXIT2, 4, false, "EXIT2"},
    [AEMP__CTL_SEND_TT] = {AEMP__CTL_SEND_TT, 4, true, "SEND_TT"},
    [AEMP__CTL_EXIT_TT] = {AEMP__CTL_EXIT_TT, 5, false, "EXIT_TT"},
    [AEMP__CTL_REG_SEND_TT] = {AEMP__CTL_REG_SEND_TT, 5, true, "REG_SEND_TT"},
    [AEMP__CTL_EXIT2_TT] = {AEMP__CTL_EXIT2_TT, 5, false, "EXIT2_TT"},
    [AEMP__CTL_MONITOR_P] = {AEMP__CTL_MONITOR_P, 4, false, "MONITOR_P"},
    [AEMP__CTL_DEMONITOR_P] = {AEMP__CTL_DEMONITOR_P, 4, false, "DEMONITOR_P"},
    [AEMP__CTL_MONITOR_P_EXIT] = {AEMP__CTL_MONITOR_P_EXIT, 5, false, "MONITOR_P_EXIT"},
    [AEMP__CTL_SEND_SENDER] = {AEMP__CTL_SEND_SENDER, 3, true, "SEND_SENDER"},
    [AEMP__CTL_SEND_SENDER_TT] = {AEMP__CTL_SEND_SENDER_TT, 4, true, "SEND_SENDER_TT"},
    [AEMP__CTL_PAYLOAD_EXIT] = {AEMP__CTL_PAYLOAD_EXIT, 3, true, "PAYLOAD_EXIT"},
    [AEMP__CTL_PAYLOAD_EXIT_TT] = {AEMP__CTL_PAYLOAD_EXIT_TT, 4, true, "PAYLOAD_EXIT_TT"},
    [AEMP__CTL_PAYLOAD_EXIT2] = {AEMP__CTL_PAYLOAD_EXIT2, 3, true, "PAYLOAD_EXIT2"},
    [AEMP__CTL_PAYLOAD_EXIT2_TT] = {AEMP__CTL_PAYLOAD_EXIT2_TT, 4, true, "PAYLOAD_EXIT2_TT"},
    [AEMP__CTL_PAYLOAD_MONITOR_P_EXIT] = {AEMP__CTL_PAYLOAD_MONITOR_P_EXIT, 4, true,
                                          "PAYLOAD_MONITOR_P_EXIT"},
    [AEMP__CTL_SPAWN_REQUEST] = {AEMP__CTL_SPAWN_REQUEST, 6, true, "SPAWN_REQUEST"},
    [AEMP__CTL_SPAWN_REQUEST_TT] = {AEMP__CTL_SPAWN_REQUEST_TT, 7, true, "SPAWN_REQUEST_TT"},
    [AEMP__CTL_SPAWN_REPLY] = {AEMP__CTL_SPAWN_REPLY, 5, false, "SPAWN_REPLY"},
    [AEMP__CTL_SPAWN_REPLY_TT] = {AEMP__CTL_SPAWN_REPLY_TT, 6, false, "SPAWN_REPLY_TT"},
    [AEMP__CTL_ALIAS_SEND] = {AEMP__CTL_ALIAS_SEND, 3, true, "ALIAS_SEND"},
    [AEMP__CTL_ALIAS_SEND_TT] = {AEMP__CTL_ALIAS_SEND_TT, 4, true, "ALIAS_SEND_TT"},
    [AEMP__CTL_UNLINK_ID] = {AEMP__CTL_UNLINK_ID, 4, false, "UNLINK_ID"},
    [AEMP__CTL_UNLINK_ID_ACK] = {AEMP__CTL_UNLINK_ID_ACK, 4, false, "UNLINK_ID_ACK"},
};

const struct aemp__ctl_info *aemp__ctl_info(int64_t tag)
{
    if (tag <= 0 || tag >= AEMP__CTL_MAX || !table[tag].name) return NULL;
    return &table[tag];
}

const char *aemp__ctl_name(int64_t tag)
{
    const struct aemp__ctl_info *i = aemp__ctl_info(tag);
    return i ? i->name : "control message";
}

static int enc_uint(aemp_buf *b, uint64_t v)
{
    int rc = aemp__buf_reserve(b, 11);
    if (rc) return rc;
    char *d = b->data + b->len;
    if (v < 256) {
        d[0] = (char)AEMP__EXT_SMALL_INTEGER;
        d[1] = (char)v;
        b->len += 2;
    } else if (v <= INT32_MAX) {
        d[0] = (char)AEMP__EXT_INTEGER;
        aemp__put_u32(d + 1, (uint32_t)v);
        b->len += 5;
    } else {
        /* SMALL_BIG_EXT: n digits, sign 0, little-endian digits */
        unsigned n = 0;
        for (uint64_t x = v; x; x >>= 8)
            d[3 + n++] = (char)(x & 0xff);
        d[0] = (char)AEMP__EXT_SMALL_BIG;
        d[1] = (char)n;
        d[2] = 0;
        b->len += 3 + n;
    }
    return 0;
}

int aemp__ctl_enc(aemp_buf *b, enum aemp__ctl tag, const char *spec, ...)
{
    size_t start = b->len, n = 1 + strlen(spec);
    int rc = aemp__buf_reserve(b, 2 + 2);
    if (rc) return rc;
    b->data[b->len++] = (char)AEMP__EXT_SMALL_TUPLE;
    b->data[b->len++] = (char)n;
    b->data[b->len++] = (char)AEMP__EXT_SMALL_INTEGER;
    b->data[b->len++] = (char)tag;
    va_list ap;
    va_start(ap, spec);
    for (const char *s = spec; *s && !rc; s++) {
        switch (*s) {
        case 'a':
            rc = aemp__enc_addr(b, va_arg(ap, const aemp_addr *));
            break;
        case 't': {
            const aemp_term *t = va_arg(ap, const aemp_term *);
            rc = aemp__buf_append(b, t->data, t->len);
            break;
        }
        case 'A': {
            const char *a = va_arg(ap, const char *);
            rc = aemp__enc_atom_text(b, a, strlen(a));
            break;
        }
        case 'i':
            rc = enc_uint(b, va_arg(ap, uint64_t));
            break;
        case 'e':
            rc = aemp__enc_atom_text(b, "", 0);
            break;
        default:
            rc = AEMP_EINVAL;
        }
    }
    va_end(ap);
    if (rc) b->len = start;
    return rc;
}
