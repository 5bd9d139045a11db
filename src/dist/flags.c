/*
 * flags.c - the one table of distribution capability flags.
 *
 * Every OTP release that made a flag mandatory broke non-Erlang nodes that
 * had scattered their flag constants, so what we know about each bit lives
 * here and nowhere else: the handshake asks this table what to announce and
 * what to demand.
 *
 * Sources for mandatory_since:
 *  - 25: MANDATORY_DFLAGS_25 in OTP 25's kernel include/dist.hrl
 *    (kernel-8.5.3 on this machine) = 0x01070F94.
 *  - 26: erl_dist_protocol (OTP 26) documents DFLAG_V4_NC and DFLAG_UNLINK_ID
 *    as mandatory as of OTP 26; an OTP 26 node refuses peers without them.
 *  - 27: the OTP 27 erl_dist_protocol document lists no flag that became
 *    mandatory in 27, so offering the 26 set is enough for 27 as well.
 */
#include "../aemp_impl.h"

#include <stdio.h>

const struct aemp__dflag aemp__dflags[] = {
    /* We stay hidden: a published node must speak the `global` protocol or
     * global:sync() blocks on every Erlang node of the cluster. */
    {AEMP__DFLAG_PUBLISHED, "PUBLISHED", 0, false, false},
    /* The old atom cache protocol; ei cannot decode cache references. */
    {AEMP__DFLAG_ATOM_CACHE, "ATOM_CACHE", 0, false, false},
    {AEMP__DFLAG_EXTENDED_REFERENCES, "EXTENDED_REFERENCES", 25, true, true},
    /* Without both monitor flags Erlang sends us no monitor signals. */
    {AEMP__DFLAG_DIST_MONITOR, "DIST_MONITOR", 0, true, false},
    {AEMP__DFLAG_FUN_TAGS, "FUN_TAGS", 25, true, true},
    {AEMP__DFLAG_DIST_MONITOR_NAME, "DIST_MONITOR_NAME", 0, true, false},
    {AEMP__DFLAG_HIDDEN_ATOM_CACHE, "HIDDEN_ATOM_CACHE", 0, false, false},
    {AEMP__DFLAG_NEW_FUN_TAGS, "NEW_FUN_TAGS", 25, true, true},
    {AEMP__DFLAG_EXTENDED_PIDS_PORTS, "EXTENDED_PIDS_PORTS", 25, true, true},
    {AEMP__DFLAG_EXPORT_PTR_TAG, "EXPORT_PTR_TAG", 25, true, true},
    {AEMP__DFLAG_BIT_BINARIES, "BIT_BINARIES", 25, true, true},
    {AEMP__DFLAG_NEW_FLOATS, "NEW_FLOATS", 25, true, true},
    {AEMP__DFLAG_UNICODE_IO, "UNICODE_IO", 0, true, false},
    /* Offered: received distribution headers are decoded and their atom
     * cache references replaced before ei sees a term (packet.c). Our own
     * packets name this node by cache reference 0 (conn.c, put_packet).
     * Erlang encodes and decodes faster with the cache. */
    {AEMP__DFLAG_DIST_HDR_ATOM_CACHE, "DIST_HDR_ATOM_CACHE", 0, true, false},
    {AEMP__DFLAG_SMALL_ATOM_TAGS, "SMALL_ATOM_TAGS", 0, true, false},
    {AEMP__DFLAG_UTF8_ATOMS, "UTF8_ATOMS", 25, true, true},
    {AEMP__DFLAG_MAP_TAG, "MAP_TAG", 25, true, true},
    {AEMP__DFLAG_BIG_CREATION, "BIG_CREATION", 25, true, true},
    {AEMP__DFLAG_SEND_SENDER, "SEND_SENDER", 0, true, false},
    {AEMP__DFLAG_BIG_SEQTRACE_LABELS, "BIG_SEQTRACE_LABELS", 0, true, false},
    {AEMP__DFLAG_EXIT_PAYLOAD, "EXIT_PAYLOAD", 0, true, false},
    /* Offered only once fragment reassembly exists. */
    {AEMP__DFLAG_FRAGMENTS, "FRAGMENTS", 0, false, false},
    /* The 'N' handshake messages: the only form we speak. */
    {AEMP__DFLAG_HANDSHAKE_23, "HANDSHAKE_23", 25, true, true},
    {AEMP__DFLAG_UNLINK_ID, "UNLINK_ID", 26, true, false},
    /* Stands for the whole OTP 25 set; a peer may send it alone. */
    {AEMP__DFLAG_MANDATORY_25_DIGEST, "MANDATORY_25_DIGEST", 0, true, false},
    {AEMP__DFLAG_SPAWN, "SPAWN", 0, true, false},
    /* Dynamic node names: we always have a static name. */
    {AEMP__DFLAG_NAME_ME, "NAME_ME", 0, false, false},
    {AEMP__DFLAG_V4_NC, "V4_NC", 26, true, false},
    {AEMP__DFLAG_ALIAS, "ALIAS", 0, true, false},
    {0, NULL, 0, false, false},
};

uint64_t aemp__dflags_offered(void)
{
    uint64_t f = 0;
    for (const struct aemp__dflag *d = aemp__dflags; d->bit; d++)
        if (d->offered) f |= d->bit;
    return f;
}

uint64_t aemp__dflags_required(void)
{
    uint64_t f = 0;
    for (const struct aemp__dflag *d = aemp__dflags; d->bit; d++)
        if (d->required) f |= d->bit;
    return f;
}

/* Append s at *pos, keeping out NUL-terminated; stops quietly when full. */
static void put_str(char *out, size_t size, size_t *pos, const char *s)
{
    size_t n = strlen(s);
    if (*pos + 1 >= size) return;
    size_t room = size - 1 - *pos;
    if (n > room) n = room;
    memcpy(out + *pos, s, n);
    *pos += n;
    out[*pos] = 0;
}

void aemp__dflags_describe(uint64_t flags, char *out, size_t size)
{
    size_t pos = 0;
    if (!out || size == 0) return;
    out[0] = 0;
    for (const struct aemp__dflag *d = aemp__dflags; d->bit; d++) {
        if (!(flags & d->bit)) continue;
        if (pos) put_str(out, size, &pos, ",");
        put_str(out, size, &pos, d->name);
        flags &= ~d->bit;
    }
    if (flags) {
        char hex[2 + 16 + 1];
        snprintf(hex, sizeof hex, "0x%llx", (unsigned long long)flags);
        if (pos) put_str(out, size, &pos, ",");
        put_str(out, size, &pos, hex);
    }
}
