/*
 * packet.c - received distribution packets: the distribution header and
 * the peer's atom cache, the control message and its payload (each term
 * checked by aemp__term_validate before anything decodes it), handed to the
 * layer above through ops->ctl.
 *
 * The hot path: a stream of sends between the same two processes repeats
 * the same control message, byte for byte. The bytes that started the last
 * send packet are kept with the control message parsed from them; a packet
 * that starts with the same bytes skips the parse and validation of its
 * control message, and the handler learns it through `repeat` (and keeps
 * what it derived in the connection's memo). A header that defines an atom
 * cache entry changes what later bytes mean: it drops the cache.
 */
#include "dist.h"

#include <stdlib.h>

/*
 * Parse a distribution header (131, 68, NumberOfAtomCacheRefs, Flags,
 * AtomCacheRefs; erl_ext_dist) at p, updating c's atom cache. A header that
 * names one cache entry twice is refused: Erlang never sends one, and it
 * would free an entry this header still refers to.
 */
static int parse_dist_header(aemp__conn *c, const uint8_t *p, size_t len,
                             struct aemp__dist_header *h, size_t *used, bool *defined)
{
    size_t pos = 2;
    if (len < 3) return AEMP_EPROTO;
    unsigned n = p[pos++];
    h->n = n;
    if (n == 0) {
        *used = pos;
        return 0;
    }
    size_t flen = n / 2 + 1;
    if (len - pos < flen) return AEMP_EPROTO;
    const uint8_t *flags = p + pos;
    pos += flen;
    /* the half byte after the references' flags: bit 0 is LongAtoms */
    bool long_atoms = ((flags[n / 2] >> ((n & 1) ? 4 : 0)) & 1) != 0;
    if (!c->atoms) {
        c->atoms = calloc(AEMP__ATOM_CACHE_SIZE, sizeof *c->atoms);
        if (!c->atoms) return AEMP_ENOMEM;
    }
    uint8_t seen[AEMP__ATOM_CACHE_SIZE / 8];
    memset(seen, 0, sizeof seen);
    for (unsigned i = 0; i < n; i++) {
        unsigned f = (flags[i / 2] >> ((i & 1) ? 4 : 0)) & 0xf;
        if (pos >= len) return AEMP_EPROTO;
        unsigned idx = (f & 7) * 256 + p[pos++];
        if (seen[idx / 8] & (1u << (idx % 8))) return AEMP_EPROTO;
        seen[idx / 8] |= (uint8_t)(1u << (idx % 8));
        if (f & 8) {
            size_t alen;
            if (long_atoms) {
                if (len - pos < 2) return AEMP_EPROTO;
                alen = aemp__get_u16(p + pos);
                pos += 2;
            } else {
                if (len - pos < 1) return AEMP_EPROTO;
                alen = p[pos++];
            }
            if (alen > AEMP_MAXATOMLEN || len - pos < alen) return AEMP_EPROTO;
            char *a = malloc(2 + alen);
            if (!a) return AEMP_ENOMEM;
            aemp__put_u16(a, (uint16_t)alen);
            memcpy(a + 2, p + pos, alen);
            pos += alen;
            free(c->atoms[idx]);
            c->atoms[idx] = a;
            *defined = true;
        } else if (!c->atoms[idx]) {
            return AEMP_EPROTO; /* a reference to an entry never defined */
        }
        h->atom[i] = c->atoms[idx] + 2;
        h->alen[i] = aemp__get_u16(c->atoms[idx]);
    }
    *used = pos;
    return 0;
}

/* Bytes an atom takes instead of its 2-byte cache reference. */
static size_t atom_size(const struct aemp__dist_header *h, unsigned i)
{
    return (h->alen[i] <= 255 ? 2 : 3) + (size_t)h->alen[i];
}

/* What the reference at t + at grows by as its atom. */
static int64_t growth(const char *t, uint32_t at, void *arg)
{
    return (int64_t)atom_size(arg, (uint8_t)t[at + 1]) - 2;
}

/* The atom of the cache reference at t + at, from the header arg. */
static int put_atom(aemp_buf *out, const char *t, uint32_t at, void *arg, size_t *old)
{
    const struct aemp__dist_header *h = arg;
    unsigned i = (uint8_t)t[at + 1];
    int rc;
    *old = 2;
    if (h->alen[i] <= 255) {
        rc = aemp__buf_put_u8(out, AEMP__EXT_SMALL_ATOM_UTF8);
        if (!rc) rc = aemp__buf_put_u8(out, (uint8_t)h->alen[i]);
    } else {
        rc = aemp__buf_put_u8(out, AEMP__EXT_ATOM_UTF8);
        if (!rc) rc = aemp__buf_put_u16(out, h->alen[i]);
    }
    return rc ? rc : aemp__buf_append(out, h->atom[i], h->alen[i]);
}

/* t with every atom cache reference (from refpos) replaced by its atom,
 * into out; NEW_FUN_EXT sizes grow by what their references grew. */
static int replace_refs(const char *t, size_t tlen, const aemp_buf *refpos,
                        const struct aemp__dist_header *h, aemp_buf *out)
{
    return aemp__term_splice(t, tlen, refpos, put_atom, growth, (void *)h, out);
}

/* One term at p[*pos]: with a version byte first in a pass-through packet; after a
 * distribution header without it, and with cache references replaced (in
 * scratch) when there are any, else in place. */
static int take_term(aemp__conn *c, const char *p, size_t len, size_t *pos,
                     const struct aemp__dist_header *h, aemp_buf *scratch, aemp_term *out)
{
    size_t used;
    if (!h) {
        if (*pos >= len || (uint8_t)p[*pos] != AEMP__EXT_VERSION) return AEMP_EPROTO;
        ++*pos;
        int rc = aemp__term_validate_depth(p + *pos, len - *pos, &used, c->d->max_term_depth);
        if (rc) return rc;
        out->data = p + *pos;
        out->len = used;
        *pos += used;
        return 0;
    }
    c->refpos.len = 0;
    int rc = aemp__term_validate_refs(p + *pos, len - *pos, &used, h->n, &c->refpos,
                                      c->d->max_term_depth);
    if (rc) return rc;
    if (c->refpos.len == 0) {
        out->data = p + *pos;
        out->len = used;
    } else {
        size_t check;
        if ((rc = replace_refs(p + *pos, used, &c->refpos, h, scratch))) return rc;
        if (aemp__term_validate_depth(scratch->data, scratch->len, &check, c->d->max_term_depth) ||
            check != scratch->len)
            return AEMP_EBADTERM;
        out->data = scratch->data;
        out->len = scratch->len;
    }
    *pos += used;
    return 0;
}

/* Parse the control message at p[pos] (and its payload) into m; *ctl_end is
 * the offset just after the control term. */
static int parse_ctl(aemp__conn *c, const char *p, size_t len, size_t pos,
                     const struct aemp__dist_header *h, aemp__ctl_in *m, size_t *ctl_end)
{
    aemp_term whole;
    int rc = take_term(c, p, len, &pos, h, &c->ctl_scratch, &whole);
    if (rc) return rc;
    *ctl_end = pos;
    aemp_cursor cur = aemp_cursor_of(&whole);
    if (aemp_get_tuple(&cur, &m->arity) || m->arity < 1 || aemp_get_int64(&cur, &m->tag))
        return AEMP_EPROTO;
    const struct aemp__ctl_info *info = aemp__ctl_info(m->tag);
    if (!info) {
        AEMP_LOGW("unknown control message %lld from %s: ignored", (long long)m->tag, c->peer);
        m->tag = -1;
        return 0;
    }
    if (m->arity < info->min_arity) {
        AEMP_LOGW("%s from %s has arity %u, expected %u", info->name, c->peer, m->arity,
                  info->min_arity);
        return AEMP_EPROTO;
    }
    /* The elements' extent (on a cache miss only: a repeated control
     * message is not walked again). */
    cur = aemp_cursor_of(&whole);
    aemp_get_tuple(&cur, &m->arity);
    for (uint32_t i = 0; i < m->arity && i < 8; i++) {
        size_t used;
        m->el[i].data = cur.data + cur.pos;
        if (aemp__term_validate_depth(cur.data + cur.pos, cur.len - cur.pos, &used,
                                      c->d->max_term_depth))
            return AEMP_EPROTO;
        m->el[i].len = used;
        cur.pos += used;
    }
    m->has_payload = info->payload;
    if (info->payload && (rc = take_term(c, p, len, &pos, h, &c->msg_scratch, &m->payload)))
        return rc;
    if (pos != len) {
        AEMP_LOGW("%s from %s: %zu trailing bytes", info->name, c->peer, len - pos);
        return AEMP_EPROTO;
    }
    return 0;
}

static bool cacheable(int64_t tag)
{
    return tag == AEMP__CTL_SEND || tag == AEMP__CTL_SEND_SENDER || tag == AEMP__CTL_REG_SEND ||
           tag == AEMP__CTL_ALIAS_SEND;
}

void aemp__dist_forget(aemp__conn *c)
{
    c->rc_valid = false;
    c->memo.valid = false;
}

/* Keep the bytes p[0..key_len) and the control message parsed from them. */
static void remember(aemp__conn *c, const char *p, size_t key_len, const aemp__ctl_in *m,
                     const struct aemp__dist_header *h)
{
    aemp__dist_forget(c);
    /* only what el[] holds whole: at most 8 elements, in a small tuple
     * (its header the 2 bytes before the tag) */
    if (m->arity < 1 || m->arity > 8) return;
    const char *ctl = m->el[0].data - 2;
    const char *end = m->el[m->arity - 1].data + m->el[m->arity - 1].len;
    if ((uint8_t)ctl[0] != AEMP__EXT_SMALL_TUPLE) return;
    c->rc_key.len = 0;
    c->rc_ctl.len = 0;
    if (aemp__buf_append(&c->rc_key, p, key_len) ||
        aemp__buf_append(&c->rc_ctl, ctl, (size_t)(end - ctl)))
        return;
    c->rc_m = *m;
    for (uint32_t i = 0; i < m->arity; i++)
        c->rc_m.el[i].data = c->rc_ctl.data + (m->el[i].data - ctl);
    c->rc_headed = h != NULL;
    if (h) c->rc_h = *h;
    c->rc_valid = true;
}

void aemp__dist_packet(aemp__conn *c, const char *p, size_t len)
{
    /* A closing node runs no callback any more: what still arrives while its
     * connections flush and shut down is dropped, as by a node that is gone. */
    aemp__dist *d = c->d;
    if (d->closing) return;
    aemp__ctl_in m;
    int rc;
    if (c->rc_valid && len > c->rc_key.len && memcmp(p, c->rc_key.data, c->rc_key.len) == 0) {
        /* The same control message as last time: only the payload is new. */
        m = c->rc_m;
        m.repeat = true;
        size_t pos = c->rc_key.len;
        rc =
            take_term(c, p, len, &pos, c->rc_headed ? &c->rc_h : NULL, &c->msg_scratch, &m.payload);
        if (!rc && pos != len) rc = AEMP_EPROTO;
    } else {
        memset(&m, 0, sizeof m);
        const struct aemp__dist_header *hp = NULL;
        struct aemp__dist_header h;
        size_t start, ctl_end = 0;
        bool defined = false;
        if (len >= 1 && (uint8_t)p[0] == AEMP__EXT_PASS_THROUGH) {
            start = 1;
            rc = 0;
        } else if (len >= 2 && (uint8_t)p[0] == AEMP__EXT_VERSION &&
                   (uint8_t)p[1] == AEMP__EXT_DIST_HEADER) {
            rc = parse_dist_header(c, (const uint8_t *)p, len, &h, &start, &defined);
            hp = &h;
        } else {
            AEMP_LOGW("connection to %s: packet type %u not supported (no fragments were "
                      "negotiated)",
                      c->peer, len ? (unsigned)(uint8_t)p[0] : 0u);
            aemp__conn_close(c, AEMP_EPROTO, "unsupported packet type");
            return;
        }
        if (defined) aemp__dist_forget(c);
        if (!rc) rc = parse_ctl(c, p, len, start, hp, &m, &ctl_end);
        if (!rc && cacheable(m.tag)) remember(c, p, ctl_end, &m, hp);
    }
    if (rc == AEMP_ETOOBIG) {
        /* Nested deeper than max_term_depth: the packet's length is known,
         * so only this message is lost, not the connection. */
        if (c->dropped_deep++ % 1000 == 0)
            AEMP_LOGW("connection to %s: a message nested deeper than %u levels dropped (%llu "
                      "so far)",
                      c->peer, d->max_term_depth, (unsigned long long)c->dropped_deep);
        return;
    }
    if (rc) {
        AEMP_LOGW("connection to %s: malformed control message (%s): closing", c->peer,
                  aemp_strerror(rc));
        aemp__conn_close(c, rc, "malformed control message");
        return;
    }
    if (m.tag == -1) return;
    d->ops->ctl(d->ops_arg, c, &m, &c->memo);
}
