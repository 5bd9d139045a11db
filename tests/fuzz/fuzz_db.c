/*
 * fuzz_db.c - the database's store fed what a hostile peer sends: byte 0
 * picks the owner (one of three, bit 0..1) and the kind (bit 2: a Share
 * as in local_data, else Ops as in update); the rest must validate as a
 * term (as the network path validates every message first). What passes
 * aemp__dbs_walk_share/_ops unapplied is applied; a local_data replaces
 * the owner's share (mark, apply, sweep), as the service does. Family "f" is watched.
 *
 * Checks after each input: every visible entry of every family the input
 * named is found again by its subkey with the same value, owner and stamp;
 * every value of an applied Share has its own stamp (its subkey's last
 * record's in the Stamps binary, else 0; found by a plain scan);
 * the owner's share encodes to one term that validates and walks back as
 * a Share of the same cost, which another store takes whole (as much held,
 * as long encoded again); db_mon's diff lists are disjoint. The store lives
 * across inputs; what an owner holds is dropped every 64 inputs, so it
 * stays small and dropping is exercised too.
 */
#include "fuzz_common.h"

#include "svc/db.h"

static aemp__dbs *store;
static aemp__dbs_owner *owners[3];
static aemp__dbs_fam *watched;
static unsigned rounds;

static void setup(void)
{
    fuzz_quiet_logs();
    store = aemp__dbs_new();
    FUZZ_CHECK(store);
    const char *names[3] = {"a@h", "b@h", "c@hh"};
    for (int i = 0; i < 3; i++) {
        owners[i] = aemp__dbs_owner_new(store, aemp__intern(names[i], strlen(names[i])));
        FUZZ_CHECK(owners[i]);
    }
    watched = aemp__dbs_watch(store, "f", 1);
    FUZZ_CHECK(watched);
}

static void check_family(aemp__dbs_fam *f)
{
    size_t n = aemp__dbs_count(f);
    for (size_t i = 0; i < n; i++) {
        aemp__dbs_ent e, g;
        aemp__dbs_at(f, i, &e);
        FUZZ_CHECK(aemp__dbs_get(f, e.subkey, e.subkey_len, &g) == 0);
        FUZZ_CHECK(g.subkey == e.subkey && g.value.data == e.value.data && g.owner_h == e.owner_h &&
                   g.stamp == e.stamp);
        size_t used;
        FUZZ_CHECK(aemp__term_validate(e.value.data, e.value.len, &used) == 0 &&
                   used == e.value.len);
    }
}

/* Every family named in a checked Share or Ops, looked at again. */
static void check_named(const aemp_term *t, int share)
{
    aemp_cursor c = aemp_cursor_of(t);
    uint32_t n, k, arity;
    const void *p;
    size_t len;
    if (share) {
        if (aemp_get_map(&c, &n)) return;
        for (uint32_t i = 0; i < n; i++) {
            /* Family => {Values, Stamps} */
            if (aemp_get_binary(&c, &p, &len) || aemp_get_tuple(&c, &arity) || aemp_get_map(&c, &k))
                return;
            check_family(aemp__dbs_family(store, p, len));
            for (uint32_t j = 0; j < k; j++)
                if (aemp_get_term(&c, &(aemp_term){0}) || aemp_get_term(&c, &(aemp_term){0}))
                    return;
            if (aemp_get_term(&c, &(aemp_term){0})) return;
        }
        return;
    }
    if (aemp_get_list(&c, &n)) return;
    for (uint32_t i = 0; i < n; i++) {
        aemp_cursor e = c;
        if (aemp_get_term(&c, &(aemp_term){0})) return;
        if (aemp_get_tuple(&e, &arity) || aemp_get_term(&e, &(aemp_term){0}) ||
            aemp_get_binary(&e, &p, &len))
            return;
        check_family(aemp__dbs_family(store, p, len));
    }
}

/* The stamp a Share gives subkey (kp, klen) in the family whose Stamps
 * binary is at l: its last record's, 0 if none (written plainly, a scan
 * of <<KeyLen:32, Subkey:KeyLen/binary, Stamp:64>> records). */
static uint64_t naive_stamp(aemp_cursor l, const void *kp, size_t klen)
{
    uint64_t stamp = 0;
    const void *bp;
    size_t blen;
    FUZZ_CHECK(aemp_get_binary(&l, &bp, &blen) == 0);
    const uint8_t *b = bp;
    size_t i = 0;
    while (i < blen) {
        FUZZ_CHECK(blen - i >= 4);
        size_t slen =
            ((size_t)b[i] << 24) | ((size_t)b[i + 1] << 16) | ((size_t)b[i + 2] << 8) | b[i + 3];
        FUZZ_CHECK(slen <= AEMP_DB_MAXKEY && blen - i - 4 >= slen + 8);
        uint64_t st = 0;
        for (size_t j = 0; j < 8; j++)
            st = st << 8 | b[i + 4 + slen + j];
        if (slen == klen && memcmp(b + i + 4, kp, klen) == 0) stamp = st;
        i += 4 + slen + 8;
    }
    FUZZ_CHECK(i == blen);
    return stamp;
}

/* Every value of an applied Share has in owner o the stamp the protocol
 * gives it (unless a family is named twice: then the later one counts). */
static void check_stamps(const aemp_term *t, aemp__dbs_owner *o)
{
    aemp_cursor c = aemp_cursor_of(t);
    uint32_t nf, nk, arity;
    const void *fp, *kp;
    size_t flen, klen;
    FUZZ_CHECK(aemp_get_map(&c, &nf) == 0);
    aemp_cursor fams = c;
    for (uint32_t i = 0; i < nf; i++) {
        FUZZ_CHECK(aemp_get_binary(&c, &fp, &flen) == 0 && aemp_get_term(&c, NULL) == 0);
        aemp_cursor d = c;
        for (uint32_t j = i + 1; j < nf; j++) {
            const void *gp;
            size_t glen;
            FUZZ_CHECK(aemp_get_binary(&d, &gp, &glen) == 0 && aemp_get_term(&d, NULL) == 0);
            if (glen == flen && memcmp(gp, fp, flen) == 0) return;
        }
    }
    c = fams;
    for (uint32_t i = 0; i < nf; i++) {
        FUZZ_CHECK(aemp_get_binary(&c, &fp, &flen) == 0 && aemp_get_tuple(&c, &arity) == 0);
        aemp_cursor l = c;
        FUZZ_CHECK(aemp_get_term(&l, NULL) == 0 && aemp_get_map(&c, &nk) == 0);
        for (uint32_t j = 0; j < nk; j++) {
            uint64_t stamp;
            FUZZ_CHECK(aemp_get_binary(&c, &kp, &klen) == 0 && aemp_get_term(&c, NULL) == 0);
            FUZZ_CHECK(aemp__dbs_own(store, o, fp, flen, kp, klen, &stamp) == 0);
            FUZZ_CHECK(stamp == naive_stamp(l, kp, klen));
        }
        c = l;
        FUZZ_CHECK(aemp_get_term(&c, NULL) == 0);
    }
}

/* (by identity: subkeys holding NUL read alike as C strings; each changed
 * subkey has one string in a diff) */
static bool in(const char **l, size_t n, const char *k)
{
    for (size_t i = 0; i < n; i++)
        if (l[i] == k) return true;
    return false;
}

static void check_diff(void)
{
    aemp__dbs_fam *f;
    while ((f = aemp__dbs_next_dirty(store))) {
        FUZZ_CHECK(f == watched);
        aemp__dbs_diff d;
        if (aemp__dbs_take_diff(store, f, &d) == 0) {
            for (size_t i = 0; i < d.nadded; i++) {
                FUZZ_CHECK(!in(d.changed, d.nchanged, d.added[i]));
                FUZZ_CHECK(!in(d.deleted, d.ndeleted, d.added[i]));
            }
            for (size_t i = 0; i < d.nchanged; i++)
                FUZZ_CHECK(!in(d.deleted, d.ndeleted, d.changed[i]));
        }
        aemp__dbs_diff_done(store, f, &d);
    }
    check_family(watched);
}

static void check_encoding(aemp__dbs_owner *o)
{
    aemp_buf b = AEMP_BUF_INIT;
    if (aemp__dbs_encode_share(store, o, &b) == 0) {
        size_t used, bytes = 0;
        uint64_t maxstamp = 0;
        FUZZ_CHECK(aemp__term_validate(b.data, b.len, &used) == 0 && used == b.len);
        aemp_term t = aemp_buf_term(&b);
        aemp_cursor c = aemp_cursor_of(&t);
        FUZZ_CHECK(aemp__dbs_walk_share(NULL, NULL, &c, &bytes, &maxstamp) == 0);
        FUZZ_CHECK(c.pos == b.len);
        FUZZ_CHECK(bytes == aemp__dbs_owner_bytes(o));
        /* taken by another store (in step), it holds as much and encodes
         * to as many bytes */
        aemp__dbs *s2 = aemp__dbs_new();
        aemp__dbs_owner *o2 = s2 ? aemp__dbs_owner_new(s2, aemp__intern("r@h", 3)) : NULL;
        c = aemp_cursor_of(&t);
        if (o2 && aemp__dbs_walk_share(s2, o2, &c, NULL, NULL) == 0) {
            FUZZ_CHECK(c.pos == b.len);
            FUZZ_CHECK(aemp__dbs_owner_bytes(o2) == bytes);
            aemp_buf b2 = AEMP_BUF_INIT;
            if (aemp__dbs_encode_share(s2, o2, &b2) == 0) FUZZ_CHECK(b2.len == b.len);
            aemp_buf_free(&b2);
        }
        aemp__dbs_owner_free(s2, o2);
        aemp__dbs_free(s2);
    }
    aemp_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!store) setup();
    if (size < 2) return 0;
    aemp__dbs_owner *o = owners[(data[0] & 3) % 3];
    int share = (data[0] >> 2) & 1;
    const char *buf = (const char *)data + 1;
    size_t len = size - 1, used;
    if (aemp__term_validate(buf, len, &used) != 0) return 0;
    aemp_term t = {buf, used};
    aemp_cursor c = aemp_cursor_of(&t);
    size_t bytes = 0;
    uint64_t maxstamp = 0;
    int rc = share ? aemp__dbs_walk_share(NULL, NULL, &c, &bytes, &maxstamp)
                   : aemp__dbs_walk_ops(NULL, NULL, &c, &bytes, &maxstamp);
    if (rc == 0 && bytes < ((size_t)64 << 20)) {
        c = aemp_cursor_of(&t);
        if (share) aemp__dbs_owner_mark(o);
        rc = share ? aemp__dbs_walk_share(store, o, &c, NULL, NULL)
                   : aemp__dbs_walk_ops(store, o, &c, NULL, NULL);
        if (share) aemp__dbs_owner_sweep(store, o);
        FUZZ_CHECK(rc == 0 || rc == AEMP_ENOMEM);
        /* a share replaced what the owner had: nothing else is left (the
         * check counted a subkey given twice twice) */
        if (share && rc == 0) {
            FUZZ_CHECK(aemp__dbs_owner_bytes(o) <= bytes);
            check_stamps(&t, o);
        }
        check_named(&t, share);
    }
    check_diff();
    check_encoding(o);
    if (++rounds % 64 == 0) {
        for (int i = 0; i < 3; i++)
            aemp__dbs_owner_clear(store, owners[i]);
        check_diff();
        FUZZ_CHECK(aemp__dbs_count(watched) == 0);
    }
    return 0;
}
