/*
 * fuzz_handshake.h - the body of fuzz_handshake_acceptor.c and
 * fuzz_handshake_initiator.c: the input plays the peer in a distribution
 * handshake (aemp__hs_*).
 *
 * Input layout:
 *   byte 0  mode: bit 0 frames with 4-byte lengths (TLS) instead of 2;
 *           bit 1 "correct digest": the stream is fed one frame at a time
 *           and the digest of a challenge reply ('r', acceptor) or challenge
 *           ack ('a', initiator) is replaced by the right one, so the fuzzer
 *           gets past the cookie check; bits 2-4 the acceptor's decision
 *           (enum aemp__hs_decision) once it knows the peer's name.
 *   bytes 1-3  chunk sizes, used in turn (0: everything left); ignored in
 *           digest mode.
 *   rest    the bytes the peer sends.
 * Bytes are delivered as the connection does it: received bytes are appended
 * to a buffer, aemp__hs_input is called on the whole buffer and the consumed
 * prefix is dropped; unconsumed bytes wait for the next chunk. Feeding stops
 * at DONE or at an error.
 */
#ifndef AEMP_FUZZ_HANDSHAKE_H
#define AEMP_FUZZ_HANDSHAKE_H

#include "fuzz_common.h"

#define HS_MY_NAME "fuzz@localhost"
#define HS_PEER_NAME "peer@localhost"
#define HS_COOKIE "fuzzcookie"

static int hs_decide(void *arg, const char *peer)
{
    FUZZ_CHECK(peer && strlen(peer) <= AEMP_MAXNODELEN && strchr(peer, '@'));
    return *(const int *)arg;
}

/* Every byte the handshake wrote must be whole frames. */
static void check_frames(const aemp_buf *out, unsigned lb)
{
    size_t pos = 0;
    while (pos < out->len) {
        FUZZ_CHECK(out->len - pos >= lb);
        size_t n = lb == 2 ? aemp__get_u16(out->data + pos) : aemp__get_u32(out->data + pos);
        FUZZ_CHECK(n > 0 && n <= out->len - pos - lb);
        pos += lb + n;
    }
}

/* Does out hold a frame with this tag (the last one we sent)? */
static bool sent_tag(const aemp_buf *out, unsigned lb, char tag)
{
    bool found = false;
    for (size_t pos = 0; pos + lb < out->len;) {
        size_t n = lb == 2 ? aemp__get_u16(out->data + pos) : aemp__get_u32(out->data + pos);
        found = out->data[pos + lb] == tag;
        pos += lb + n;
    }
    return found;
}

/* Feed bytes as conn.c does; returns the last status. */
static int hs_feed(aemp__hs *hs, aemp_buf *rbuf, aemp_buf *out, const uint8_t *p, size_t n)
{
    FUZZ_CHECK(aemp__buf_append(rbuf, p, n) == 0);
    size_t consumed = 12345;
    size_t before = out->len;
    int rc = aemp__hs_input(hs, rbuf->data, rbuf->len, &consumed, out);
    FUZZ_CHECK(consumed <= rbuf->len);
    FUZZ_CHECK(rc == AEMP__HS_MORE || rc == AEMP__HS_DONE || rc < 0);
    FUZZ_CHECK(out->len >= before);
    if (rc < 0) {
        FUZZ_CHECK(hs->error[0] != 0 && strlen(hs->error) < sizeof hs->error);
        /* a failed handshake stays failed */
        size_t c2;
        FUZZ_CHECK(aemp__hs_input(hs, rbuf->data, rbuf->len, &c2, out) == rc);
    }
    aemp__buf_consume(rbuf, consumed);
    return rc;
}

static void hs_run(int role, const uint8_t *data, size_t size)
{
    static int init;
    if (!init) {
        fuzz_quiet_logs();
        init = 1;
    }
    if (size < 4) return;
    uint8_t mode = data[0];
    unsigned lb = (mode & 1) ? 4 : 2;
    bool digest_mode = (mode & 2) != 0;
    int decision = (mode >> 2) & 7;
    const uint8_t *chunks = data + 1;
    data += 4;
    size -= 4;

    aemp__hs hs;
    aemp_buf out = AEMP_BUF_INIT, rbuf = AEMP_BUF_INIT;
    uint64_t flags = aemp__dflags_offered();
    FUZZ_CHECK(
        aemp__hs_init(&hs, role, lb, HS_MY_NAME, HS_COOKIE, 0x5eed0002u, flags, HS_PEER_NAME) == 0);
    if (role == AEMP__HS_ACCEPTOR) {
        hs.decide = hs_decide;
        hs.decide_arg = &decision;
    } else {
        FUZZ_CHECK(aemp__hs_start(&hs, &out) == 0);
    }

    /* the peer's bytes, in a copy the digest mode may patch */
    uint8_t *stream = malloc(size ? size : 1);
    FUZZ_CHECK(stream);
    if (size) memcpy(stream, data, size);

    int rc = AEMP__HS_MORE;
    size_t pos = 0;
    unsigned turn = 0;
    while (pos < size && rc == AEMP__HS_MORE) {
        size_t n = size - pos;
        if (digest_mode) {
            /* one frame (or what is left of it) per call */
            if (n >= lb) {
                size_t flen = lb == 2 ? aemp__get_u16(stream + pos) : aemp__get_u32(stream + pos);
                if (flen < n - lb) n = lb + flen;
                uint8_t *m = stream + pos + lb;
                size_t mlen = n - lb;
                uint8_t d[16];
                if (role == AEMP__HS_ACCEPTOR && mlen == 21 && m[0] == 'r' &&
                    sent_tag(&out, lb, 'N')) {
                    aemp__hs_digest(HS_COOKIE, hs.my_challenge, d);
                    memcpy(m + 5, d, 16);
                } else if (role == AEMP__HS_INITIATOR && mlen == 17 && m[0] == 'a' &&
                           sent_tag(&out, lb, 'r')) {
                    aemp__hs_digest(HS_COOKIE, hs.my_challenge, d);
                    memcpy(m + 1, d, 16);
                }
            }
        } else {
            size_t want = chunks[turn++ % 3];
            if (want && want < n) n = want;
        }
        rc = hs_feed(&hs, &rbuf, &out, stream + pos, n);
        pos += n;
    }
    check_frames(&out, lb);
    if (rc == AEMP__HS_DONE) {
        FUZZ_CHECK(hs.peer_name[0] && strchr(hs.peer_name, '@'));
        if (role == AEMP__HS_INITIATOR) FUZZ_CHECK(strcmp(hs.peer_name, HS_PEER_NAME) == 0);
        FUZZ_CHECK((aemp__hs_flags(&hs) & ~flags) == 0);
        /* what follows DONE is distribution traffic, left unconsumed */
        size_t consumed;
        FUZZ_CHECK(aemp__hs_input(&hs, rbuf.data, rbuf.len, &consumed, &out) == AEMP__HS_DONE);
    }
    free(stream);
    aemp_buf_free(&out);
    aemp_buf_free(&rbuf);
}

#endif
