/* test_handshake.c - the handshake state machine and the flag table. */
#include "aemp_impl.h"

#include <criterion/criterion.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>

#define INI_NAME "ini@hosta"
#define ACC_NAME "acc@hostb"
#define MANDATORY_25 0x01070F94ULL

/* One end of an in-memory connection: bytes the other end sent wait in
 * wire; they are handed to the machine chunk bytes at a time via inbox. */
typedef struct side {
    aemp__hs hs;
    aemp_buf out;   /* what hs asked to send */
    aemp_buf wire;  /* sent by the other side, not yet delivered */
    aemp_buf inbox; /* delivered, not yet consumed by hs */
    int rc;
} side;

static void side_free(side *s)
{
    aemp_buf_free(&s->out);
    aemp_buf_free(&s->wire);
    aemp_buf_free(&s->inbox);
}

static void setup_pair(side *ini, side *acc, const char *icookie, const char *acookie,
                       uint64_t iflags, uint64_t aflags, unsigned lb)
{
    memset(ini, 0, sizeof *ini);
    memset(acc, 0, sizeof *acc);
    cr_assert_eq(
        aemp__hs_init(&ini->hs, AEMP__HS_INITIATOR, lb, INI_NAME, icookie, 111, iflags, ACC_NAME),
        0);
    cr_assert_eq(
        aemp__hs_init(&acc->hs, AEMP__HS_ACCEPTOR, lb, ACC_NAME, acookie, 222, aflags, NULL), 0);
    ini->rc = acc->rc = AEMP__HS_MORE;
    cr_assert_eq(aemp__hs_start(&ini->hs, &ini->out), 0);
}

static bool transfer(side *from, side *to)
{
    if (!from->out.len) return false;
    cr_assert_eq(aemp__buf_append(&to->wire, from->out.data, from->out.len), 0);
    aemp__buf_reset(&from->out);
    return true;
}

/* Deliver up to chunk bytes (0: all) to s and run it. */
static bool deliver(side *s, size_t chunk)
{
    if (s->rc != AEMP__HS_MORE || !s->wire.len) return false;
    size_t n = chunk && chunk < s->wire.len ? chunk : s->wire.len;
    cr_assert_eq(aemp__buf_append(&s->inbox, s->wire.data, n), 0);
    aemp__buf_consume(&s->wire, n);
    size_t used = 12345;
    s->rc = aemp__hs_input(&s->hs, s->inbox.data, s->inbox.len, &used, &s->out);
    cr_assert_leq(used, s->inbox.len);
    aemp__buf_consume(&s->inbox, used);
    return true;
}

static void run(side *ini, side *acc, size_t chunk)
{
    for (int guard = 0; guard < 100000; guard++) {
        bool moved = transfer(ini, acc);
        moved |= transfer(acc, ini);
        moved |= deliver(acc, chunk);
        moved |= deliver(ini, chunk);
        if (!moved) return;
    }
    cr_assert_fail("handshake did not settle");
}

static void check_success(side *ini, side *acc)
{
    cr_assert_eq(ini->rc, AEMP__HS_DONE, "initiator: %d %s", ini->rc, ini->hs.error);
    cr_assert_eq(acc->rc, AEMP__HS_DONE, "acceptor: %d %s", acc->rc, acc->hs.error);
    cr_assert_str_eq(ini->hs.peer_name, ACC_NAME);
    cr_assert_str_eq(acc->hs.peer_name, INI_NAME);
    cr_assert_eq(ini->hs.peer_creation, 222);
    cr_assert_eq(acc->hs.peer_creation, 111);
    cr_assert_eq(ini->hs.peer_flags, acc->hs.my_flags);
    cr_assert_eq(acc->hs.peer_flags, ini->hs.my_flags);
    cr_assert_eq(aemp__hs_flags(&ini->hs), aemp__hs_flags(&acc->hs));
    cr_assert_eq(ini->hs.peer_challenge, acc->hs.my_challenge);
    cr_assert_eq(acc->hs.peer_challenge, ini->hs.my_challenge);
    cr_assert_eq(ini->inbox.len + ini->wire.len + acc->inbox.len + acc->wire.len, 0);
}

static void full_run(unsigned lb, size_t chunk)
{
    side ini, acc;
    uint64_t f = aemp__dflags_offered();
    setup_pair(&ini, &acc, "secret", "secret", f, f, lb);
    run(&ini, &acc, chunk);
    check_success(&ini, &acc);
    cr_assert_eq(aemp__hs_flags(&ini.hs), f);
    side_free(&ini);
    side_free(&acc);
}

Test(handshake, tcp_whole_messages)
{
    full_run(2, 0);
}

Test(handshake, tls_framing)
{
    full_run(4, 0);
}

Test(handshake, byte_at_a_time)
{
    full_run(2, 1);
    full_run(4, 1);
}

Test(handshake, odd_chunks)
{
    for (size_t c = 2; c < 40; c += 3)
        full_run(2, c);
}

Test(handshake, negotiated_flags_are_the_and)
{
    side ini, acc;
    uint64_t f = aemp__dflags_offered();
    uint64_t g = aemp__dflags_required() | AEMP__DFLAG_PUBLISHED | AEMP__DFLAG_SPAWN;
    setup_pair(&ini, &acc, "c", "c", f, g, 2);
    run(&ini, &acc, 0);
    check_success(&ini, &acc);
    cr_assert_eq(aemp__hs_flags(&ini.hs), f & g);
    side_free(&ini);
    side_free(&acc);
}

Test(handshake, mandatory_25_digest_stands_for_the_set)
{
    side ini, acc;
    uint64_t f = aemp__dflags_offered();
    setup_pair(&ini, &acc, "c", "c", AEMP__DFLAG_MANDATORY_25_DIGEST | AEMP__DFLAG_SPAWN, f, 2);
    run(&ini, &acc, 0);
    cr_assert_eq(acc.rc, AEMP__HS_DONE, "%s", acc.hs.error);
    cr_assert_eq(acc.hs.peer_flags & MANDATORY_25, MANDATORY_25);
    side_free(&ini);
    side_free(&acc);
}

Test(handshake, wrong_cookie_acceptor_side)
{
    side ini, acc;
    uint64_t f = aemp__dflags_offered();
    setup_pair(&ini, &acc, "right", "wrong", f, f, 2);
    run(&ini, &acc, 0);
    cr_assert_eq(acc.rc, AEMP_EAUTH);
    cr_assert(strstr(acc.hs.error, "wrong cookie"), "%s", acc.hs.error);
    cr_assert(strstr(acc.hs.error, INI_NAME), "%s", acc.hs.error);
    /* No ack was sent: the initiator still waits (its connection closes). */
    cr_assert_eq(ini.rc, AEMP__HS_MORE);
    side_free(&ini);
    side_free(&acc);
}

/* ---- hand-made messages ------------------------------------------- */

static void frame(aemp_buf *b, unsigned lb, const void *body, size_t n)
{
    if (lb == 2)
        aemp__buf_put_u16(b, (uint16_t)n);
    else
        aemp__buf_put_u32(b, (uint32_t)n);
    aemp__buf_append(b, body, n);
}

static void frame_status(aemp_buf *b, const char *text)
{
    char m[64];
    size_t n = strlen(text);
    m[0] = 's';
    memcpy(m + 1, text, n);
    frame(b, 2, m, n + 1);
}

/* An 'N' message: challenge if with_challenge, else send_name. */
static void frame_n(aemp_buf *b, uint64_t flags, uint32_t challenge, uint32_t creation,
                    const char *name, size_t nlen, size_t claimed_nlen, bool with_challenge)
{
    uint8_t m[1024];
    size_t k = 0;
    m[k++] = 'N';
    aemp__put_u32(m + k, (uint32_t)(flags >> 32));
    aemp__put_u32(m + k + 4, (uint32_t)flags);
    k += 8;
    if (with_challenge) {
        aemp__put_u32(m + k, challenge);
        k += 4;
    }
    aemp__put_u32(m + k, creation);
    k += 4;
    aemp__put_u16(m + k, (uint16_t)claimed_nlen);
    k += 2;
    memcpy(m + k, name, nlen);
    k += nlen;
    frame(b, 2, m, k);
}

static void frame_challenge(aemp_buf *b, uint64_t flags, uint32_t challenge, const char *name)
{
    frame_n(b, flags, challenge, 222, name, strlen(name), strlen(name), true);
}

static void frame_send_name(aemp_buf *b, uint64_t flags, const char *name)
{
    frame_n(b, flags, 0, 111, name, strlen(name), strlen(name), false);
}

static void ack_for(aemp_buf *b, const char *cookie, uint32_t challenge)
{
    uint8_t m[17];
    m[0] = 'a';
    aemp__hs_digest(cookie, challenge, m + 1);
    frame(b, 2, m, sizeof m);
}

static void reply_for(aemp_buf *b, const char *cookie, uint32_t their, uint32_t mine)
{
    uint8_t m[21];
    m[0] = 'r';
    aemp__put_u32(m + 1, mine);
    aemp__hs_digest(cookie, their, m + 5);
    frame(b, 2, m, sizeof m);
}

static void new_ini(aemp__hs *hs, aemp_buf *out)
{
    cr_assert_eq(aemp__hs_init(hs, AEMP__HS_INITIATOR, 2, INI_NAME, "cookie", 111,
                               aemp__dflags_offered(), ACC_NAME),
                 0);
    cr_assert_eq(aemp__hs_start(hs, out), 0);
}

static void new_acc(aemp__hs *hs)
{
    cr_assert_eq(aemp__hs_init(hs, AEMP__HS_ACCEPTOR, 2, ACC_NAME, "cookie", 222,
                               aemp__dflags_offered(), NULL),
                 0);
}

static int feed(aemp__hs *hs, const aemp_buf *in, size_t *used, aemp_buf *out)
{
    return aemp__hs_input(hs, in->data, in->len, used, out);
}

Test(handshake, send_name_format)
{
    aemp__hs hs;
    aemp_buf out = AEMP_BUF_INIT;
    new_ini(&hs, &out);
    size_t nl = strlen(INI_NAME);
    cr_assert_eq(out.len, 2 + 15 + nl);
    cr_assert_eq(aemp__get_u16(out.data), 15 + nl);
    cr_assert_eq(out.data[2], 'N');
    cr_assert_eq(aemp__get_u64(out.data + 3), aemp__dflags_offered());
    cr_assert_eq(aemp__get_u32(out.data + 11), 111);
    cr_assert_eq(aemp__get_u16(out.data + 15), nl);
    cr_assert_eq(memcmp(out.data + 17, INI_NAME, nl), 0);
    aemp_buf_free(&out);
}

Test(handshake, wrong_cookie_initiator_side)
{
    aemp__hs hs;
    aemp_buf out = AEMP_BUF_INIT, in = AEMP_BUF_INIT;
    size_t used;
    new_ini(&hs, &out);
    frame_status(&in, "ok");
    frame_challenge(&in, aemp__dflags_offered(), 42, ACC_NAME);
    cr_assert_eq(feed(&hs, &in, &used, &out), AEMP__HS_MORE);
    cr_assert_eq(used, in.len);
    aemp__buf_reset(&in);
    ack_for(&in, "not-the-cookie", hs.my_challenge);
    cr_assert_eq(feed(&hs, &in, &used, &out), AEMP_EAUTH);
    cr_assert(strstr(hs.error, "wrong cookie (challenge ack digest mismatch"), "%s", hs.error);
    cr_assert(strstr(hs.error, ACC_NAME), "%s", hs.error);
    /* A failed handshake stays failed. */
    cr_assert_eq(feed(&hs, &in, &used, &out), AEMP_EAUTH);
    aemp_buf_free(&out);
    aemp_buf_free(&in);
}

Test(handshake, initiator_reply_digest_and_trailing_data)
{
    aemp__hs hs;
    aemp_buf out = AEMP_BUF_INIT, in = AEMP_BUF_INIT;
    size_t used;
    new_ini(&hs, &out);
    aemp__buf_reset(&out);
    frame_status(&in, "ok_simultaneous");
    frame_challenge(&in, aemp__dflags_offered(), 4000000000u, ACC_NAME);
    cr_assert_eq(feed(&hs, &in, &used, &out), AEMP__HS_MORE);
    /* The reply answers the peer's challenge with our cookie. */
    cr_assert_eq(out.len, 2 + 21);
    cr_assert_eq(out.data[2], 'r');
    cr_assert_eq(aemp__get_u32(out.data + 3), hs.my_challenge);
    uint8_t want[16];
    aemp__hs_digest("cookie", 4000000000u, want);
    cr_assert_eq(memcmp(out.data + 7, want, 16), 0);

    aemp__buf_reset(&in);
    ack_for(&in, "cookie", hs.my_challenge);
    size_t ack_len = in.len;
    aemp__buf_append(&in, "\0\0\0\0garbage", 11);
    cr_assert_eq(feed(&hs, &in, &used, &out), AEMP__HS_DONE, "%s", hs.error);
    cr_assert_eq(used, ack_len);
    cr_assert_eq(hs.peer_creation, 222);
    /* Input after DONE consumes nothing. */
    cr_assert_eq(feed(&hs, &in, &used, &out), AEMP__HS_DONE);
    cr_assert_eq(used, 0);
    aemp_buf_free(&out);
    aemp_buf_free(&in);
}

Test(handshake, all_initiator_messages_at_once)
{
    /* Status, challenge and (as a pipelining peer could not, but a replay
     * would) garbage in one read: only complete handshake messages count. */
    aemp__hs hs;
    aemp_buf out = AEMP_BUF_INIT, in = AEMP_BUF_INIT;
    size_t used;
    new_ini(&hs, &out);
    frame_status(&in, "ok");
    frame_challenge(&in, aemp__dflags_offered(), 7, ACC_NAME);
    size_t two = in.len;
    aemp__buf_append(&in, "\0", 1);
    cr_assert_eq(feed(&hs, &in, &used, &out), AEMP__HS_MORE);
    cr_assert_eq(used, two);
    aemp_buf_free(&out);
    aemp_buf_free(&in);
}

Test(handshake, acceptor_trailing_data_after_reply)
{
    aemp__hs hs;
    aemp_buf out = AEMP_BUF_INIT, in = AEMP_BUF_INIT;
    size_t used;
    new_acc(&hs);
    frame_send_name(&in, aemp__dflags_offered(), INI_NAME);
    cr_assert_eq(feed(&hs, &in, &used, &out), AEMP__HS_MORE, "%s", hs.error);
    cr_assert_eq(used, in.len);
    /* status "ok" then the challenge */
    cr_assert_eq(aemp__get_u16(out.data), 3);
    cr_assert_eq(memcmp(out.data + 2, "sok", 3), 0);
    const char *c = out.data + 5;
    cr_assert_eq(aemp__get_u16(c), 19 + strlen(ACC_NAME));
    cr_assert_eq(c[2], 'N');
    cr_assert_eq(aemp__get_u64(c + 3), aemp__dflags_offered());
    cr_assert_eq(aemp__get_u32(c + 11), hs.my_challenge);
    cr_assert_eq(aemp__get_u32(c + 15), 222);
    cr_assert_eq(aemp__get_u16(c + 19), strlen(ACC_NAME));
    cr_assert_eq(memcmp(c + 21, ACC_NAME, strlen(ACC_NAME)), 0);
    aemp__buf_reset(&out);

    aemp__buf_reset(&in);
    reply_for(&in, "cookie", hs.my_challenge, 99);
    size_t rlen = in.len;
    aemp__buf_append(&in, "\0\0\0\x05\x70\x83xyz", 9);
    cr_assert_eq(feed(&hs, &in, &used, &out), AEMP__HS_DONE, "%s", hs.error);
    cr_assert_eq(used, rlen);
    cr_assert_eq(hs.peer_challenge, 99);
    cr_assert_eq(out.len, 2 + 17);
    cr_assert_eq(out.data[2], 'a');
    uint8_t want[16];
    aemp__hs_digest("cookie", 99, want);
    cr_assert_eq(memcmp(out.data + 3, want, 16), 0);
    aemp_buf_free(&out);
    aemp_buf_free(&in);
}

/* ---- flags --------------------------------------------------------- */

Test(handshake, acceptor_refuses_peer_missing_flags)
{
    side ini, acc;
    uint64_t f = aemp__dflags_offered();
    /* Without the digest flag, which stands for the whole OTP 25 set. */
    uint64_t poor =
        f & ~(AEMP__DFLAG_BIG_CREATION | AEMP__DFLAG_MAP_TAG | AEMP__DFLAG_MANDATORY_25_DIGEST);
    setup_pair(&ini, &acc, "c", "c", poor, f, 2);
    run(&ini, &acc, 0);
    cr_assert_eq(acc.rc, AEMP_ENOTSUP);
    cr_assert(strstr(acc.hs.error, "MAP_TAG"), "%s", acc.hs.error);
    cr_assert(strstr(acc.hs.error, "BIG_CREATION"), "%s", acc.hs.error);
    cr_assert(strstr(acc.hs.error, INI_NAME), "%s", acc.hs.error);
    /* The acceptor said not_allowed before closing, as OTP does. */
    cr_assert_eq(ini.rc, AEMP_ECONNREFUSED);
    cr_assert(strstr(ini.hs.error, "not_allowed"), "%s", ini.hs.error);
    side_free(&ini);
    side_free(&acc);
}

Test(handshake, initiator_refuses_peer_missing_flags)
{
    side ini, acc;
    uint64_t f = aemp__dflags_offered();
    setup_pair(&ini, &acc, "c", "c", f,
               f & ~(AEMP__DFLAG_HANDSHAKE_23 | AEMP__DFLAG_MANDATORY_25_DIGEST), 2);
    run(&ini, &acc, 0);
    cr_assert_eq(ini.rc, AEMP_ENOTSUP);
    cr_assert(strstr(ini.hs.error, "HANDSHAKE_23"), "%s", ini.hs.error);
    cr_assert(strstr(ini.hs.error, ACC_NAME), "%s", ini.hs.error);
    side_free(&ini);
    side_free(&acc);
}

/* ---- decide ---------------------------------------------------------- */

struct decide_rec {
    int answer;
    char seen[AEMP_MAXNODELEN + 1];
    int calls;
};

static int decide(void *arg, const char *peer)
{
    struct decide_rec *r = arg;
    aemp__strlcpy(r->seen, peer, sizeof r->seen);
    r->calls++;
    return r->answer;
}

static void check_decision(int answer, const char *status, int acc_rc, int ini_rc)
{
    side ini, acc;
    uint64_t f = aemp__dflags_offered();
    struct decide_rec rec = {answer, "", 0};
    setup_pair(&ini, &acc, "c", "c", f, f, 2);
    acc.hs.decide = decide;
    acc.hs.decide_arg = &rec;
    /* Deliver send_name alone to see the status frame. */
    transfer(&ini, &acc);
    deliver(&acc, 0);
    cr_assert_eq(rec.calls, 1);
    cr_assert_str_eq(rec.seen, INI_NAME);
    size_t sl = strlen(status);
    cr_assert_geq(acc.out.len, 3 + sl);
    cr_assert_eq(aemp__get_u16(acc.out.data), 1 + sl);
    cr_assert_eq(acc.out.data[2], 's');
    cr_assert_eq(memcmp(acc.out.data + 3, status, sl), 0, "want %s", status);
    if (acc_rc == AEMP_ECONNREFUSED)
        cr_assert_eq(acc.out.len, 3 + sl); /* nothing after the status */
    run(&ini, &acc, 0);
    cr_assert_eq(acc.rc, acc_rc, "%d %s", acc.rc, acc.hs.error);
    cr_assert_eq(ini.rc, ini_rc, "%d %s", ini.rc, ini.hs.error);
    if (acc_rc == AEMP_ECONNREFUSED) cr_assert(strstr(acc.hs.error, INI_NAME), "%s", acc.hs.error);
    side_free(&ini);
    side_free(&acc);
}

Test(handshake, decide_answers)
{
    check_decision(AEMP__HS_ACCEPT, "ok", AEMP__HS_DONE, AEMP__HS_DONE);
    check_decision(AEMP__HS_ACCEPT_SIMUL, "ok_simultaneous", AEMP__HS_DONE, AEMP__HS_DONE);
    check_decision(AEMP__HS_REFUSE_SIMUL, "nok", AEMP_ECONNREFUSED, AEMP_ECONNREFUSED);
    check_decision(AEMP__HS_REFUSE_ALIVE, "not_allowed", AEMP_ECONNREFUSED, AEMP_ECONNREFUSED);
    check_decision(AEMP__HS_REFUSE, "not_allowed", AEMP_ECONNREFUSED, AEMP_ECONNREFUSED);
    check_decision(77, "not_allowed", AEMP_ECONNREFUSED, AEMP_ECONNREFUSED);
}

Test(handshake, nok_error_text)
{
    aemp__hs hs;
    aemp_buf out = AEMP_BUF_INIT, in = AEMP_BUF_INIT;
    size_t used;
    new_ini(&hs, &out);
    frame_status(&in, "nok");
    cr_assert_eq(feed(&hs, &in, &used, &out), AEMP_ECONNREFUSED);
    cr_assert(strstr(hs.error, "has a simultaneous connection (nok)"), "%s", hs.error);
    cr_assert(strstr(hs.error, ACC_NAME), "%s", hs.error);
    aemp_buf_free(&out);
    aemp_buf_free(&in);
}

Test(handshake, alive_answers_true_and_continues)
{
    aemp__hs hs;
    aemp_buf out = AEMP_BUF_INIT, in = AEMP_BUF_INIT;
    size_t used;
    new_ini(&hs, &out);
    aemp__buf_reset(&out);
    frame_status(&in, "alive");
    cr_assert_eq(feed(&hs, &in, &used, &out), AEMP__HS_MORE);
    cr_assert_eq(out.len, 2 + 5);
    cr_assert_eq(memcmp(out.data, "\0\x05strue", 7), 0);
    aemp__buf_reset(&in);
    aemp__buf_reset(&out);
    frame_challenge(&in, aemp__dflags_offered(), 5, ACC_NAME);
    cr_assert_eq(feed(&hs, &in, &used, &out), AEMP__HS_MORE, "%s", hs.error);
    cr_assert_eq(out.data[2], 'r');
    aemp_buf_free(&out);
    aemp_buf_free(&in);
}

static void status_fails(const char *text, size_t n, int want, const char *needle)
{
    aemp__hs hs;
    aemp_buf out = AEMP_BUF_INIT, in = AEMP_BUF_INIT;
    size_t used;
    char m[64];
    new_ini(&hs, &out);
    m[0] = 's';
    memcpy(m + 1, text, n);
    frame(&in, 2, m, n + 1);
    cr_assert_eq(feed(&hs, &in, &used, &out), want, "%s", hs.error);
    cr_assert(strstr(hs.error, needle), "%s", hs.error);
    cr_assert_eq(strchr(hs.error, '\n'), NULL);
    aemp_buf_free(&out);
    aemp_buf_free(&in);
}

Test(handshake, other_statuses)
{
    status_fails("not_allowed", 11, AEMP_ECONNREFUSED, "not_allowed");
    status_fails("named:\0\x03"
                 "a@b\0\0\0\1",
                 15, AEMP_ENOTSUP, "named:");
    status_fails("okay", 4, AEMP_EPROTO, "unknown handshake status \"okay\"");
    status_fails("o\nk", 3, AEMP_EPROTO, "\"o?k\"");
    status_fails("", 0, AEMP_EPROTO, "unknown handshake status");
}

Test(handshake, wrong_peer_name)
{
    aemp__hs hs;
    aemp_buf out = AEMP_BUF_INIT, in = AEMP_BUF_INIT;
    size_t used;
    new_ini(&hs, &out);
    frame_status(&in, "ok");
    frame_challenge(&in, aemp__dflags_offered(), 5, "other@hostc");
    cr_assert_eq(feed(&hs, &in, &used, &out), AEMP_EPROTO);
    cr_assert_str_eq(hs.error, "connected to other@hostc, expected " ACC_NAME);
    aemp_buf_free(&out);
    aemp_buf_free(&in);
}

/* ---- malformed input ------------------------------------------------ */

/* Feed every proper prefix of in to a fresh machine: always MORE, and only
 * whole messages consumed. bounds lists message ends in in. */
static void prefixes(bool initiator, const aemp_buf *in, const size_t *bounds, size_t nb)
{
    for (size_t k = 0; k < in->len; k++) {
        aemp__hs hs;
        aemp_buf out = AEMP_BUF_INIT;
        size_t used = 999, whole = 0;
        if (initiator)
            new_ini(&hs, &out);
        else
            new_acc(&hs);
        for (size_t i = 0; i < nb; i++)
            if (bounds[i] <= k) whole = bounds[i];
        int rc = aemp__hs_input(&hs, in->data, k, &used, &out);
        cr_assert_eq(rc, AEMP__HS_MORE, "prefix %zu: %d %s", k, rc, hs.error);
        cr_assert_eq(used, whole, "prefix %zu", k);
        aemp_buf_free(&out);
    }
}

Test(handshake, truncated_prefixes_initiator)
{
    aemp_buf in = AEMP_BUF_INIT;
    size_t b[3];
    frame_status(&in, "ok");
    b[0] = in.len;
    frame_challenge(&in, aemp__dflags_offered(), 5, ACC_NAME);
    b[1] = in.len;
    ack_for(&in, "cookie", 1);
    b[2] = in.len;
    prefixes(true, &in, b, 3);
    aemp_buf_free(&in);
}

Test(handshake, truncated_prefixes_acceptor)
{
    aemp_buf in = AEMP_BUF_INIT;
    size_t b[2];
    frame_send_name(&in, aemp__dflags_offered(), INI_NAME);
    b[0] = in.len;
    reply_for(&in, "cookie", 1, 2);
    b[1] = in.len;
    prefixes(false, &in, b, 2);
    aemp_buf_free(&in);
}

static void acc_fails(const aemp_buf *in, int want, const char *needle)
{
    aemp__hs hs;
    aemp_buf out = AEMP_BUF_INIT;
    size_t used;
    new_acc(&hs);
    int rc = feed(&hs, in, &used, &out);
    cr_assert_eq(rc, want, "rc %d: %s", rc, hs.error);
    cr_assert(strstr(hs.error, needle), "want \"%s\" in \"%s\"", needle, hs.error);
    cr_assert_eq(strchr(hs.error, '\n'), NULL);
    cr_assert_leq(used, in->len);
    aemp_buf_free(&out);
}

Test(handshake, oversized_and_empty_frames)
{
    aemp_buf in = AEMP_BUF_INIT;
    aemp__buf_put_u16(&in, 0xffff); /* nothing else needed to know */
    acc_fails(&in, AEMP_EPROTO, "handshake message too long");
    aemp__buf_reset(&in);
    aemp__buf_put_u16(&in, 2049);
    acc_fails(&in, AEMP_EPROTO, "too long");
    aemp__buf_reset(&in);
    aemp__buf_put_u16(&in, 0);
    acc_fails(&in, AEMP_EPROTO, "empty handshake message");
    aemp_buf_free(&in);

    /* TLS framing: a 4-byte length. */
    aemp__hs hs;
    aemp_buf out = AEMP_BUF_INIT;
    size_t used;
    cr_assert_eq(aemp__hs_init(&hs, AEMP__HS_ACCEPTOR, 4, ACC_NAME, "c", 1, 0, NULL), 0);
    cr_assert_eq(aemp__hs_input(&hs, "\x7f\xff\xff\xff", 4, &used, &out), AEMP_EPROTO);
    cr_assert(strstr(hs.error, "too long"), "%s", hs.error);
    cr_assert_eq(aemp__hs_init(&hs, AEMP__HS_ACCEPTOR, 4, ACC_NAME, "c", 1, 0, NULL), 0);
    cr_assert_eq(aemp__hs_input(&hs, "\0\0\x08", 3, &used, &out), AEMP__HS_MORE);
    cr_assert_eq(used, 0);
    aemp_buf_free(&out);
}

Test(handshake, bad_names)
{
    uint64_t f = aemp__dflags_offered();
    aemp_buf in = AEMP_BUF_INIT;
    char big[300];
    memset(big, 'a', sizeof big);
    big[10] = '@';

    struct {
        const char *name;
        size_t len;
        const char *needle;
    } cases[] = {
        {"", 0, "empty node name"},          {big, 256, "longer than 255"},
        {"nohost", 6, "without '@'"},        {"a@b@c", 5, "more than one '@'"},
        {"@host", 5, "empty alive or host"}, {"alive@", 6, "empty alive or host"},
        {"a\n@b", 4, "control character"},   {"a\0@b", 4, "control character"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        aemp__buf_reset(&in);
        frame_n(&in, f, 0, 1, cases[i].name, cases[i].len, cases[i].len, false);
        acc_fails(&in, AEMP_EPROTO, cases[i].needle);
    }
    /* A 255-byte name is fine. */
    aemp__hs hs;
    aemp_buf out = AEMP_BUF_INIT;
    size_t used;
    new_acc(&hs);
    aemp__buf_reset(&in);
    frame_n(&in, f, 0, 1, big, 255, 255, false);
    cr_assert_eq(feed(&hs, &in, &used, &out), AEMP__HS_MORE, "%s", hs.error);
    cr_assert_eq(strlen(hs.peer_name), 255);
    /* Name length beyond the message. */
    aemp__buf_reset(&in);
    frame_n(&in, f, 0, 1, "a@b", 3, 4, false);
    acc_fails(&in, AEMP_EPROTO, "exceeds the message");
    /* Extra bytes after the name are ignored (erl_dist_protocol). */
    aemp__buf_reset(&in);
    frame_n(&in, f, 0, 1, "a@bXYZ", 6, 3, false);
    new_acc(&hs);
    aemp__buf_reset(&out);
    cr_assert_eq(feed(&hs, &in, &used, &out), AEMP__HS_MORE, "%s", hs.error);
    cr_assert_str_eq(hs.peer_name, "a@b");
    /* Too short for the fixed part. */
    aemp__buf_reset(&in);
    frame(&in, 2, "N\0\0\0\0\0\0\0", 8);
    acc_fails(&in, AEMP_EPROTO, "send_name too short");
    aemp_buf_free(&out);
    aemp_buf_free(&in);
}

Test(handshake, bad_challenge_names)
{
    aemp__hs hs;
    aemp_buf out = AEMP_BUF_INIT, in = AEMP_BUF_INIT;
    size_t used;
    new_ini(&hs, &out);
    frame_status(&in, "ok");
    frame_n(&in, aemp__dflags_offered(), 1, 2, "", 0, 0, true);
    cr_assert_eq(feed(&hs, &in, &used, &out), AEMP_EPROTO);
    cr_assert(strstr(hs.error, "empty node name"), "%s", hs.error);

    new_ini(&hs, &out);
    aemp__buf_reset(&in);
    frame_status(&in, "ok");
    frame(&in, 2, "N\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 18);
    cr_assert_eq(feed(&hs, &in, &used, &out), AEMP_EPROTO);
    cr_assert(strstr(hs.error, "too short"), "%s", hs.error);
    aemp_buf_free(&out);
    aemp_buf_free(&in);
}

Test(handshake, wrong_tags)
{
    aemp_buf in = AEMP_BUF_INIT;
    frame(&in, 2, "Xhello", 6);
    acc_fails(&in, AEMP_EPROTO, "unexpected handshake message 'X'");
    acc_fails(&in, AEMP_EPROTO, "waiting for send_name");
    aemp__buf_reset(&in);
    frame(&in, 2, "\x01", 1);
    acc_fails(&in, AEMP_EPROTO, "0x01");
    aemp__buf_reset(&in);
    frame(&in, 2, "c\0\0\0\0\0\0\0\0", 9);
    acc_fails(&in, AEMP_EPROTO, "complement");

    /* Initiator: a challenge where the status belongs. */
    aemp__hs hs;
    aemp_buf out = AEMP_BUF_INIT;
    size_t used;
    new_ini(&hs, &out);
    aemp__buf_reset(&in);
    frame_challenge(&in, aemp__dflags_offered(), 1, ACC_NAME);
    cr_assert_eq(feed(&hs, &in, &used, &out), AEMP_EPROTO);
    cr_assert(strstr(hs.error, "'N'") && strstr(hs.error, "waiting for status"), "%s", hs.error);

    /* Acceptor: a second send_name where the reply belongs. */
    new_acc(&hs);
    aemp__buf_reset(&in);
    frame_send_name(&in, aemp__dflags_offered(), INI_NAME);
    frame_send_name(&in, aemp__dflags_offered(), INI_NAME);
    cr_assert_eq(feed(&hs, &in, &used, &out), AEMP_EPROTO);
    cr_assert(strstr(hs.error, "waiting for challenge reply"), "%s", hs.error);
    cr_assert(strstr(hs.error, INI_NAME), "%s", hs.error);

    /* Wrong sizes of reply and ack. */
    new_acc(&hs);
    aemp__buf_reset(&in);
    frame_send_name(&in, aemp__dflags_offered(), INI_NAME);
    frame(&in, 2, "r\0\0\0\0", 5);
    cr_assert_eq(feed(&hs, &in, &used, &out), AEMP_EPROTO);
    cr_assert(strstr(hs.error, "challenge reply"), "%s", hs.error);

    new_ini(&hs, &out);
    aemp__buf_reset(&in);
    frame_status(&in, "ok");
    frame_challenge(&in, aemp__dflags_offered(), 1, ACC_NAME);
    frame(&in, 2, "a\0\0", 3);
    cr_assert_eq(feed(&hs, &in, &used, &out), AEMP_EPROTO);
    cr_assert(strstr(hs.error, "challenge ack"), "%s", hs.error);
    aemp_buf_free(&out);
    aemp_buf_free(&in);
}

Test(handshake, version5_send_name)
{
    aemp_buf in = AEMP_BUF_INIT;
    /* 'n' version(2) flags(4) name */
    frame(&in, 2, "n\0\x05\0\0\0\0a@b", 10);
    acc_fails(&in, AEMP_ENOTSUP, "version-5");
    aemp_buf_free(&in);
}

Test(handshake, acceptor_wrong_cookie_text)
{
    aemp__hs hs;
    aemp_buf out = AEMP_BUF_INIT, in = AEMP_BUF_INIT;
    size_t used;
    new_acc(&hs);
    frame_send_name(&in, aemp__dflags_offered(), INI_NAME);
    reply_for(&in, "nope", 12345, 1); /* our challenge is random: cannot match */
    cr_assert_eq(feed(&hs, &in, &used, &out), AEMP_EAUTH);
    cr_assert_str_eq(hs.error, "wrong cookie from " INI_NAME " (challenge reply digest mismatch)");
    aemp_buf_free(&out);
    aemp_buf_free(&in);
}

Test(handshake, init_arguments)
{
    aemp__hs hs;
    aemp_buf out = AEMP_BUF_INIT;
    char longcookie[300];
    memset(longcookie, 'x', sizeof longcookie - 1);
    longcookie[sizeof longcookie - 1] = 0;
    cr_assert_eq(aemp__hs_init(&hs, 3, 2, "a@b", "c", 0, 0, "x@y"), AEMP_EINVAL);
    cr_assert_eq(aemp__hs_init(&hs, AEMP__HS_INITIATOR, 3, "a@b", "c", 0, 0, "x@y"), AEMP_EINVAL);
    cr_assert_eq(aemp__hs_init(&hs, AEMP__HS_INITIATOR, 2, "ab", "c", 0, 0, "x@y"), AEMP_EINVAL);
    cr_assert_eq(aemp__hs_init(&hs, AEMP__HS_INITIATOR, 2, "a@b", "c", 0, 0, NULL), AEMP_EINVAL);
    cr_assert_eq(aemp__hs_init(&hs, AEMP__HS_INITIATOR, 2, "a@b", "c", 0, 0, "xy"), AEMP_EINVAL);
    cr_assert_eq(aemp__hs_init(&hs, AEMP__HS_INITIATOR, 2, "a@b", longcookie, 0, 0, "x@y"),
                 AEMP_EINVAL);
    cr_assert_eq(aemp__hs_init(&hs, AEMP__HS_ACCEPTOR, 2, "a@b", "c", 0, 0, NULL), 0);
    cr_assert_eq(aemp__hs_start(&hs, &out), AEMP_EINVAL);
    cr_assert_eq(out.len, 0);
    cr_assert_eq(aemp__hs_init(&hs, AEMP__HS_INITIATOR, 2, "a@b", "c", 0, 0, "x@y"), 0);
    size_t used;
    cr_assert_lt(aemp__hs_input(&hs, "x", 1, &used, &out), 0);
    aemp_buf_free(&out);
}

/* ---- digest -------------------------------------------------------- */

static void hex16(const uint8_t *d, char *out)
{
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

Test(handshake, digest_known_answers)
{
    uint8_t d[16];
    char hex[33];
    /* From `printf cookie12345 | md5sum` and erlang:md5(["cookie"|"12345"]). */
    aemp__hs_digest("cookie", 12345, d);
    hex16(d, hex);
    cr_assert_str_eq(hex, "5563360ee47f359fc1cb107e01052d08");
    aemp__hs_digest("cookie", 0, d);
    hex16(d, hex);
    cr_assert_str_eq(hex, "e607172a1a7adb262d2d98462463b1a9");
    /* Challenges are unsigned 32-bit: no sign in the decimal. */
    aemp__hs_digest("cookie", 4294967295u, d);
    hex16(d, hex);
    cr_assert_str_eq(hex, "de56ff9d11b071905bce597a85d67f4f");

    /* And against OpenSSL computed here over the literal string. */
    uint8_t e[EVP_MAX_MD_SIZE];
    unsigned int elen = 0;
    cr_assert_eq(EVP_Digest("secret987", 9, e, &elen, EVP_md5(), NULL), 1);
    aemp__hs_digest("secret", 987, d);
    cr_assert_eq(elen, 16);
    cr_assert_eq(memcmp(d, e, 16), 0);
}

/* ---- flag table ---------------------------------------------------- */

Test(flags, offered_and_required)
{
    uint64_t off = aemp__dflags_offered(), req = aemp__dflags_required();
    cr_assert_eq(off & MANDATORY_25, MANDATORY_25);
    cr_assert(off & AEMP__DFLAG_V4_NC);
    cr_assert(off & AEMP__DFLAG_UNLINK_ID);
    cr_assert(off & AEMP__DFLAG_MANDATORY_25_DIGEST);
    cr_assert(off & AEMP__DFLAG_DIST_MONITOR);
    cr_assert(off & AEMP__DFLAG_DIST_MONITOR_NAME);
    cr_assert(off & AEMP__DFLAG_SPAWN);
    cr_assert(off & AEMP__DFLAG_ALIAS);
    cr_assert_not(off & AEMP__DFLAG_PUBLISHED);
    cr_assert_not(off & AEMP__DFLAG_ATOM_CACHE);
    /* distribution headers are decoded (control.c), so the cache is offered */
    cr_assert(off & AEMP__DFLAG_DIST_HDR_ATOM_CACHE);
    cr_assert_not(off & AEMP__DFLAG_HIDDEN_ATOM_CACHE);
    cr_assert_not(off & AEMP__DFLAG_FRAGMENTS);
    cr_assert_not(off & AEMP__DFLAG_NAME_ME);
    cr_assert_eq(req & ~off, 0);
    cr_assert_eq(req, MANDATORY_25);
}

Test(flags, table_is_consistent)
{
    uint64_t seen = 0, m25 = 0, m26 = 0;
    for (const struct aemp__dflag *d = aemp__dflags; d->bit; d++) {
        cr_assert_eq(d->bit & (d->bit - 1), 0, "%s is not one bit", d->name);
        cr_assert_eq(seen & d->bit, 0, "%s twice", d->name);
        cr_assert(d->name && d->name[0]);
        seen |= d->bit;
        if (d->mandatory_since == 25) m25 |= d->bit;
        if (d->mandatory_since && d->mandatory_since <= 26) m26 |= d->bit;
        if (d->mandatory_since) cr_assert(d->offered, "%s is mandatory but not offered", d->name);
    }
    cr_assert_eq(m25, MANDATORY_25);
    cr_assert_eq(m26, MANDATORY_25 | AEMP__DFLAG_V4_NC | AEMP__DFLAG_UNLINK_ID);
}

Test(flags, describe)
{
    char s[256];
    aemp__dflags_describe(AEMP__DFLAG_EXTENDED_REFERENCES | AEMP__DFLAG_V4_NC, s, sizeof s);
    cr_assert_str_eq(s, "EXTENDED_REFERENCES,V4_NC");
    aemp__dflags_describe(AEMP__DFLAG_PUBLISHED | (1ULL << 60) | (1ULL << 40), s, sizeof s);
    cr_assert_str_eq(s, "PUBLISHED,0x1000010000000000");
    aemp__dflags_describe(0, s, sizeof s);
    cr_assert_str_eq(s, "");
    aemp__dflags_describe(~0ULL, s, 10);
    cr_assert_eq(strlen(s), 9);
    aemp__dflags_describe(~0ULL, s, 1);
    cr_assert_str_eq(s, "");
}
