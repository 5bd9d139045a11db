/*
 * handshake.c - the distribution handshake (version 6, 'N' messages) as a
 * pure state machine: bytes in, framed bytes out, no I/O. Both roles follow
 * OTP 25's kernel/src/dist_util.erl:
 *
 *   initiator                         acceptor
 *   send_name 'N' flags creation name ->
 *                                     <- status 's' "ok" | "ok_simultaneous" |
 *                                              "nok" | "not_allowed" | "alive"
 *   ("alive" only: status 's' "true" ->)
 *                                     <- challenge 'N' flags chal creation name
 *   challenge_reply 'r' chal digest   ->
 *                                     <- challenge_ack 'a' digest
 *
 * The complement message 'c' of OTP 23/24 is sent by an initiator that opened
 * with the version-5 send_name 'n'. We never send 'n' and refuse it as
 * acceptor (as OTP 25 does), so a 'c' can never be legitimate here: it is
 * reported as an unexpected message with that explanation.
 */
#include "../aemp_impl.h"

#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>

/* The longest legitimate message is a challenge with a 255-byte name (274
 * bytes); OTP may append data after the name that we must ignore, so leave
 * generous room, but never let a peer make us wait for megabytes. */
#define HS_MAX_MSG 2048

#define DIGEST_LEN 16
#define NAME_MSG_FIXED 15      /* 'N' flags(8) creation(4) nlen(2) */
#define CHALLENGE_MSG_FIXED 19 /* 'N' flags(8) challenge(4) creation(4) nlen(2) */
#define REPLY_MSG_LEN (1 + 4 + DIGEST_LEN)
#define ACK_MSG_LEN (1 + DIGEST_LEN)

/* Message tags (dist_util.erl). */
enum {
    TAG_NAME_V5 = 'n',
    TAG_NAME = 'N', /* send_name and challenge share it */
    TAG_STATUS = 's',
    TAG_REPLY = 'r',
    TAG_ACK = 'a',
    TAG_COMPLEMENT = 'c',
};

/* hs->state values; a failed handshake keeps its (negative) error code. */
enum {
    HS_I_NEW = 1,   /* initiator before aemp__hs_start */
    HS_I_STATUS,    /* initiator waiting for the status */
    HS_I_CHALLENGE, /* initiator waiting for the challenge */
    HS_I_ACK,       /* initiator waiting for the challenge ack */
    HS_A_NAME,      /* acceptor waiting for send_name */
    HS_A_REPLY,     /* acceptor waiting for the challenge reply */
    HS_DONE,
};

static const char *state_name(int state)
{
    switch (state) {
    case HS_I_STATUS:
        return "status";
    case HS_I_CHALLENGE:
        return "challenge";
    case HS_I_ACK:
        return "challenge ack";
    case HS_A_NAME:
        return "send_name";
    case HS_A_REPLY:
        return "challenge reply";
    default:
        return "nothing";
    }
}

__attribute__((format(printf, 3, 4))) static int fail(aemp__hs *hs, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(hs->error, sizeof hs->error, fmt, ap);
    va_end(ap);
    hs->state = rc;
    return rc;
}

/* Who the error is about: the peer's name once we trust its format. */
static const char *peer_label(const aemp__hs *hs)
{
    if (hs->peer_name[0]) return hs->peer_name;
    if (hs->role == AEMP__HS_INITIATOR && hs->expect_name[0]) return hs->expect_name;
    return "unknown peer";
}

/* Copy untrusted bytes for an error line: control bytes would break the
 * one-line promise of hs->error. */
static void printable(char *dst, size_t size, const uint8_t *p, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k + 4 < size; i++)
        dst[k++] = (p[i] < 0x20 || p[i] == 0x7f) ? '?' : (char)p[i];
    if (k < n && k + 4 <= size) {
        memcpy(dst + k, "...", 3);
        k += 3;
    }
    dst[k] = 0;
}

/* Why a node name is unacceptable, or NULL. OTP requires exactly one '@'
 * with a non-empty alive and host part (dist_util:is_name_ok). */
static const char *name_problem(const uint8_t *p, size_t n)
{
    size_t at = 0, ats = 0;
    if (n == 0) return "empty node name";
    if (n > AEMP_MAXNODELEN) return "node name longer than 255 bytes";
    for (size_t i = 0; i < n; i++) {
        if (p[i] < 0x20 || p[i] == 0x7f) return "node name with a control character";
        if (p[i] == '@') {
            at = i;
            ats++;
        }
    }
    if (ats == 0) return "node name without '@'";
    if (ats > 1) return "node name with more than one '@'";
    if (at == 0 || at == n - 1) return "node name with an empty alive or host part";
    return NULL;
}

static int digest(const char *cookie, uint32_t challenge, uint8_t out[DIGEST_LEN])
{
    char num[16];
    int k = snprintf(num, sizeof num, "%" PRIu32, challenge);
    unsigned int olen = 0;
    int ok = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx && EVP_DigestInit_ex(ctx, EVP_md5(), NULL) == 1 &&
        EVP_DigestUpdate(ctx, cookie, strlen(cookie)) == 1 &&
        EVP_DigestUpdate(ctx, num, (size_t)k) == 1 && EVP_DigestFinal_ex(ctx, out, &olen) == 1 &&
        olen == DIGEST_LEN)
        ok = 1;
    EVP_MD_CTX_free(ctx);
    return ok ? 0 : AEMP_EIO;
}

void aemp__hs_digest(const char *cookie, uint32_t challenge, uint8_t out[16])
{
    if (digest(cookie, challenge, out) == 0) return;
    /* MD5 unavailable (e.g. a FIPS-only OpenSSL): a fixed filler would let
     * two such nodes "agree" on any cookie, random bytes never match. */
    if (aemp__random(out, DIGEST_LEN) != 0) memset(out, 0xa5, DIGEST_LEN);
}

/* Peers may announce MANDATORY_25_DIGEST alone in place of the OTP 25 set
 * (dist_util:expand_mandatory_25_flag). */
static uint64_t expand_flags(uint64_t f)
{
    if (f & AEMP__DFLAG_MANDATORY_25_DIGEST) {
        for (const struct aemp__dflag *d = aemp__dflags; d->bit; d++)
            if (d->mandatory_since == 25) f |= d->bit;
    }
    return f;
}

/* Append one framed message in a single reservation, so out never holds a
 * partial frame. */
static int send_msg(aemp__hs *hs, aemp_buf *out, const uint8_t *body, size_t n)
{
    uint8_t hdr[4];
    if (hs->len_bytes == 2)
        aemp__put_u16(hdr, (uint16_t)n);
    else
        aemp__put_u32(hdr, (uint32_t)n);
    if (aemp__buf_reserve(out, hs->len_bytes + n) != 0)
        return fail(hs, AEMP_ENOMEM, "out of memory in handshake with %s", peer_label(hs));
    memcpy(out->data + out->len, hdr, hs->len_bytes);
    memcpy(out->data + out->len + hs->len_bytes, body, n);
    out->len += hs->len_bytes + n;
    return 0;
}

static int send_status(aemp__hs *hs, aemp_buf *out, const char *text)
{
    uint8_t m[32];
    size_t n = strlen(text);
    m[0] = TAG_STATUS;
    memcpy(m + 1, text, n);
    return send_msg(hs, out, m, 1 + n);
}

static int bad_tag(aemp__hs *hs, uint8_t tag)
{
    if (tag == TAG_COMPLEMENT)
        return fail(hs, AEMP_EPROTO,
                    "unexpected complement 'c' from %s while waiting for %s"
                    " (it only follows a version-5 send_name)",
                    peer_label(hs), state_name(hs->state));
    if (tag >= 0x20 && tag < 0x7f)
        return fail(hs, AEMP_EPROTO,
                    "unexpected handshake message '%c' from %s while waiting for %s", tag,
                    peer_label(hs), state_name(hs->state));
    return fail(hs, AEMP_EPROTO, "unexpected handshake message 0x%02x from %s while waiting for %s",
                tag, peer_label(hs), state_name(hs->state));
}

/* Take the peer's name from a message after checking it. */
static int take_name(aemp__hs *hs, const uint8_t *p, size_t n)
{
    const char *why = name_problem(p, n);
    if (why) {
        char shown[48];
        printable(shown, sizeof shown, p, n);
        return fail(hs, AEMP_EPROTO, "%s in handshake from %s (\"%s\")", why, peer_label(hs),
                    shown);
    }
    memcpy(hs->peer_name, p, n);
    hs->peer_name[n] = 0;
    return 0;
}

static uint64_t missing_flags(uint64_t peer_flags)
{
    return aemp__dflags_required() & ~peer_flags;
}

static int fail_missing(aemp__hs *hs, uint64_t missing)
{
    char names[120];
    aemp__dflags_describe(missing, names, sizeof names);
    return fail(hs, AEMP_ENOTSUP, "%s lacks required distribution flags: %s", peer_label(hs),
                names);
}

static int new_challenge(aemp__hs *hs)
{
    uint8_t r[4];
    if (aemp__random(r, sizeof r) != 0)
        return fail(hs, AEMP_EIO, "no random bytes for the challenge to %s", peer_label(hs));
    hs->my_challenge = aemp__get_u32(r);
    return 0;
}

static int make_digest(aemp__hs *hs, uint32_t challenge, uint8_t out[DIGEST_LEN])
{
    if (digest(hs->cookie, challenge, out) != 0)
        return fail(hs, AEMP_EIO, "MD5 unavailable in OpenSSL (handshake with %s)", peer_label(hs));
    return 0;
}

/* ---- initiator ---------------------------------------------------- */

static int on_status(aemp__hs *hs, const uint8_t *m, size_t n, aemp_buf *out)
{
    const char *s = (const char *)m + 1;
    size_t sn = n - 1;
    if (m[0] != TAG_STATUS) return bad_tag(hs, m[0]);
#define IS(lit) (sn == sizeof(lit) - 1 && memcmp(s, lit, sn) == 0)
    if (IS("ok") || IS("ok_simultaneous")) {
        hs->state = HS_I_CHALLENGE;
        return 0;
    }
    if (IS("alive")) {
        /* The peer still has a connection up to us and asks whether this
         * attempt should replace it. We only initiate when we have no
         * connection to the peer, so the old one is stale: "true" (as
         * net_kernel's is_pending answers for the pending owner). "false"
         * would abort and leave us unable to reconnect until the peer's
         * tick timeout noticed. */
        int rc = send_status(hs, out, "true");
        if (rc) return rc;
        hs->state = HS_I_CHALLENGE;
        return 0;
    }
    if (IS("nok"))
        return fail(hs, AEMP_ECONNREFUSED, "peer %s has a simultaneous connection (nok)",
                    peer_label(hs));
    if (IS("not_allowed"))
        return fail(hs, AEMP_ECONNREFUSED,
                    "peer %s refused the connection (not_allowed: not in its allow list,"
                    " or we lack a flag it requires)",
                    peer_label(hs));
#undef IS
    if (sn >= 6 && memcmp(s, "named:", 6) == 0)
        return fail(hs, AEMP_ENOTSUP,
                    "peer %s assigned us a dynamic name (named:), never asked for", peer_label(hs));
    char shown[40];
    printable(shown, sizeof shown, (const uint8_t *)s, sn);
    return fail(hs, AEMP_EPROTO, "unknown handshake status \"%s\" from %s", shown, peer_label(hs));
}

static int on_challenge(aemp__hs *hs, const uint8_t *m, size_t n, aemp_buf *out)
{
    if (m[0] != TAG_NAME) return bad_tag(hs, m[0]);
    if (n < CHALLENGE_MSG_FIXED)
        return fail(hs, AEMP_EPROTO, "challenge from %s too short (%zu bytes)", peer_label(hs), n);
    uint64_t flags = aemp__get_u64(m + 1);
    uint32_t challenge = aemp__get_u32(m + 9);
    uint32_t creation = aemp__get_u32(m + 13);
    size_t nlen = aemp__get_u16(m + 17);
    /* Bytes after the name are allowed (erl_dist_protocol: "must be accepted
     * and ignored"). */
    if (nlen > n - CHALLENGE_MSG_FIXED)
        return fail(hs, AEMP_EPROTO, "challenge from %s: name length %zu exceeds the message",
                    peer_label(hs), nlen);
    const uint8_t *name = m + CHALLENGE_MSG_FIXED;
    int rc = take_name(hs, name, nlen);
    if (rc) return rc;
    if (strcmp(hs->peer_name, hs->expect_name) != 0) {
        char got[AEMP_MAXNODELEN + 1];
        aemp__strlcpy(got, hs->peer_name, sizeof got);
        hs->peer_name[0] = 0;
        return fail(hs, AEMP_EPROTO, "connected to %s, expected %s", got, hs->expect_name);
    }
    hs->peer_flags = expand_flags(flags);
    hs->peer_challenge = challenge;
    hs->peer_creation = creation;
    uint64_t missing = missing_flags(hs->peer_flags);
    if (missing) return fail_missing(hs, missing);
    if ((rc = new_challenge(hs)) != 0) return rc;

    uint8_t r[REPLY_MSG_LEN];
    r[0] = TAG_REPLY;
    aemp__put_u32(r + 1, hs->my_challenge);
    if ((rc = make_digest(hs, hs->peer_challenge, r + 5)) != 0) return rc;
    if ((rc = send_msg(hs, out, r, sizeof r)) != 0) return rc;
    hs->state = HS_I_ACK;
    return 0;
}

static int on_ack(aemp__hs *hs, const uint8_t *m, size_t n)
{
    if (m[0] != TAG_ACK) return bad_tag(hs, m[0]);
    if (n != ACK_MSG_LEN)
        return fail(hs, AEMP_EPROTO, "challenge ack from %s has %zu bytes, expected %d",
                    peer_label(hs), n, ACK_MSG_LEN);
    uint8_t want[DIGEST_LEN];
    int rc = make_digest(hs, hs->my_challenge, want);
    if (rc) return rc;
    if (CRYPTO_memcmp(want, m + 1, DIGEST_LEN) != 0)
        return fail(hs, AEMP_EAUTH, "wrong cookie (challenge ack digest mismatch from %s)",
                    peer_label(hs));
    hs->state = HS_DONE;
    return 0;
}

/* ---- acceptor ----------------------------------------------------- */

static int on_name(aemp__hs *hs, const uint8_t *m, size_t n, aemp_buf *out)
{
    if (m[0] == TAG_NAME_V5)
        return fail(hs, AEMP_ENOTSUP,
                    "peer uses the version-5 handshake (send_name 'n', OTP 22 or older);"
                    " only version 6 ('N', OTP 23+) is supported");
    if (m[0] != TAG_NAME) return bad_tag(hs, m[0]);
    if (n < NAME_MSG_FIXED) return fail(hs, AEMP_EPROTO, "send_name too short (%zu bytes)", n);
    uint64_t flags = aemp__get_u64(m + 1);
    uint32_t creation = aemp__get_u32(m + 9);
    size_t nlen = aemp__get_u16(m + 13);
    if (nlen > n - NAME_MSG_FIXED)
        return fail(hs, AEMP_EPROTO, "send_name: name length %zu exceeds the message", nlen);
    int rc = take_name(hs, m + NAME_MSG_FIXED, nlen);
    if (rc) return rc;
    hs->peer_flags = expand_flags(flags);
    hs->peer_creation = creation;

    uint64_t missing = missing_flags(hs->peer_flags);
    if (missing) {
        /* As dist_util:check_dflags: tell the peer before closing. */
        if ((rc = send_status(hs, out, "not_allowed")) != 0) return rc;
        return fail_missing(hs, missing);
    }

    int decision = hs->decide ? hs->decide(hs->decide_arg, hs->peer_name) : AEMP__HS_ACCEPT;
    switch (decision) {
    case AEMP__HS_ACCEPT:
        rc = send_status(hs, out, "ok");
        break;
    case AEMP__HS_ACCEPT_SIMUL:
        rc = send_status(hs, out, "ok_simultaneous");
        break;
    case AEMP__HS_REFUSE_SIMUL:
        if ((rc = send_status(hs, out, "nok")) != 0) return rc;
        return fail(hs, AEMP_ECONNREFUSED,
                    "refused %s: our own simultaneous connection attempt wins (nok)",
                    hs->peer_name);
    case AEMP__HS_REFUSE_ALIVE:
        if ((rc = send_status(hs, out, "not_allowed")) != 0) return rc;
        return fail(hs, AEMP_ECONNREFUSED,
                    "refused %s: a connection to it is still up (not_allowed)", hs->peer_name);
    default:
        if ((rc = send_status(hs, out, "not_allowed")) != 0) return rc;
        return fail(hs, AEMP_ECONNREFUSED, "refused %s (not_allowed)", hs->peer_name);
    }
    if (rc) return rc;

    if ((rc = new_challenge(hs)) != 0) return rc;
    size_t mylen = strlen(hs->my_name);
    uint8_t c[CHALLENGE_MSG_FIXED + AEMP_MAXNODELEN];
    c[0] = TAG_NAME;
    aemp__put_u64(c + 1, hs->my_flags);
    aemp__put_u32(c + 9, hs->my_challenge);
    aemp__put_u32(c + 13, hs->my_creation);
    aemp__put_u16(c + 17, (uint16_t)mylen);
    memcpy(c + CHALLENGE_MSG_FIXED, hs->my_name, mylen);
    if ((rc = send_msg(hs, out, c, CHALLENGE_MSG_FIXED + mylen)) != 0) return rc;
    hs->state = HS_A_REPLY;
    return 0;
}

static int on_reply(aemp__hs *hs, const uint8_t *m, size_t n, aemp_buf *out)
{
    if (m[0] != TAG_REPLY) return bad_tag(hs, m[0]);
    if (n != REPLY_MSG_LEN)
        return fail(hs, AEMP_EPROTO, "challenge reply from %s has %zu bytes, expected %d",
                    hs->peer_name, n, REPLY_MSG_LEN);
    uint8_t want[DIGEST_LEN];
    int rc = make_digest(hs, hs->my_challenge, want);
    if (rc) return rc;
    if (CRYPTO_memcmp(want, m + 5, DIGEST_LEN) != 0)
        return fail(hs, AEMP_EAUTH, "wrong cookie from %s (challenge reply digest mismatch)",
                    hs->peer_name);
    hs->peer_challenge = aemp__get_u32(m + 1);

    uint8_t a[ACK_MSG_LEN];
    a[0] = TAG_ACK;
    if ((rc = make_digest(hs, hs->peer_challenge, a + 1)) != 0) return rc;
    if ((rc = send_msg(hs, out, a, sizeof a)) != 0) return rc;
    hs->state = HS_DONE;
    return 0;
}

/* ---- entry points ------------------------------------------------- */

int aemp__hs_init(aemp__hs *hs, int role, unsigned len_bytes, const char *my_name,
                  const char *cookie, uint32_t creation, uint64_t flags, const char *expect_name)
{
    if (!hs || !my_name || !cookie) return AEMP_EINVAL;
    if (role != AEMP__HS_INITIATOR && role != AEMP__HS_ACCEPTOR) return AEMP_EINVAL;
    if (len_bytes != 2 && len_bytes != 4) return AEMP_EINVAL;
    if (name_problem((const uint8_t *)my_name, strlen(my_name))) return AEMP_EINVAL;
    if (strlen(cookie) >= sizeof hs->cookie) return AEMP_EINVAL;
    if (role == AEMP__HS_INITIATOR &&
        (!expect_name || name_problem((const uint8_t *)expect_name, strlen(expect_name))))
        return AEMP_EINVAL;

    memset(hs, 0, sizeof *hs);
    hs->role = role;
    hs->state = role == AEMP__HS_INITIATOR ? HS_I_NEW : HS_A_NAME;
    hs->len_bytes = len_bytes;
    aemp__strlcpy(hs->my_name, my_name, sizeof hs->my_name);
    aemp__strlcpy(hs->cookie, cookie, sizeof hs->cookie);
    hs->my_creation = creation;
    hs->my_flags = flags;
    if (role == AEMP__HS_INITIATOR)
        aemp__strlcpy(hs->expect_name, expect_name, sizeof hs->expect_name);
    return 0;
}

int aemp__hs_start(aemp__hs *hs, aemp_buf *out)
{
    if (hs->role != AEMP__HS_INITIATOR || hs->state != HS_I_NEW) return AEMP_EINVAL;
    size_t mylen = strlen(hs->my_name);
    uint8_t m[NAME_MSG_FIXED + AEMP_MAXNODELEN];
    m[0] = TAG_NAME;
    aemp__put_u64(m + 1, hs->my_flags);
    aemp__put_u32(m + 9, hs->my_creation);
    aemp__put_u16(m + 13, (uint16_t)mylen);
    memcpy(m + NAME_MSG_FIXED, hs->my_name, mylen);
    int rc = send_msg(hs, out, m, NAME_MSG_FIXED + mylen);
    if (rc) return rc;
    hs->state = HS_I_STATUS;
    return 0;
}

static int step(aemp__hs *hs, const uint8_t *m, size_t n, aemp_buf *out)
{
    switch (hs->state) {
    case HS_I_STATUS:
        return on_status(hs, m, n, out);
    case HS_I_CHALLENGE:
        return on_challenge(hs, m, n, out);
    case HS_I_ACK:
        return on_ack(hs, m, n);
    case HS_A_NAME:
        return on_name(hs, m, n, out);
    case HS_A_REPLY:
        return on_reply(hs, m, n, out);
    default:
        return fail(hs, AEMP_EINVAL, "handshake in an unexpected state %d", hs->state);
    }
}

int aemp__hs_input(aemp__hs *hs, const char *data, size_t len, size_t *consumed, aemp_buf *out)
{
    const uint8_t *d = (const uint8_t *)data;
    size_t pos = 0, lb = hs->len_bytes;
    *consumed = 0;
    if (hs->state < 0) return hs->state;
    if (hs->state == HS_DONE) return AEMP__HS_DONE;
    if (hs->state == HS_I_NEW)
        return fail(hs, AEMP_EINVAL, "handshake input before aemp__hs_start");

    while (len - pos >= lb) {
        size_t mlen = lb == 2 ? aemp__get_u16(d + pos) : aemp__get_u32(d + pos);
        if (mlen > HS_MAX_MSG) {
            *consumed = pos;
            return fail(hs, AEMP_EPROTO,
                        "handshake message too long (%zu bytes) from %s while waiting for %s", mlen,
                        peer_label(hs), state_name(hs->state));
        }
        if (mlen == 0) {
            *consumed = pos;
            return fail(hs, AEMP_EPROTO, "empty handshake message from %s while waiting for %s",
                        peer_label(hs), state_name(hs->state));
        }
        if (len - pos - lb < mlen) break;
        const uint8_t *m = d + pos + lb;
        pos += lb + mlen;
        *consumed = pos;
        int rc = step(hs, m, mlen, out);
        if (rc < 0) return rc;
        if (hs->state == HS_DONE) return AEMP__HS_DONE;
    }
    return AEMP__HS_MORE;
}
