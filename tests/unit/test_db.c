/*
 * test_db.c - the database: the store's winner rule and stamps, the
 * added/changed/deleted lists, share encoding (pure), and the service
 * between two C nodes: replication, guards, db_reg, queries from the loop,
 * a node's share vanishing, hostile messages dropped.
 */
#include "harness.h"

#include "svc/db.h"

TestSuite(dbstore);
TestSuite(db, .init = setup, .fini = teardown, .timeout = 60);

/* ------------------------------------------------------------------ */
/* the store                                                          */
/* ------------------------------------------------------------------ */

static aemp_term atom_term(aemp_buf *b, const char *a)
{
    aemp__buf_reset(b);
    cr_assert_eq(aemp_term_format(b, "~a", a), 0);
    return aemp_buf_term(b);
}

/* An owner of store s named node (a node name). */
static aemp__dbs_owner *owner(aemp__dbs *s, const char *node)
{
    aemp__dbs_owner *o = aemp__dbs_owner_new(s, aemp__intern(node, strlen(node)));
    cr_assert_not_null(o);
    return o;
}

static void expect_visible(aemp__dbs *s, const char *fam, const char *key, const char *want,
                           const char *owner)
{
    aemp__dbs_fam *f = aemp__dbs_family(s, fam, strlen(fam));
    aemp__dbs_ent e;
    if (!want) {
        cr_assert(!f || aemp__dbs_get(f, key, strlen(key), &e), "%s/%s still visible", fam, key);
        return;
    }
    cr_assert(f, "no family %s", fam);
    cr_assert_eq(aemp__dbs_get(f, key, strlen(key), &e), 0, "%s/%s not visible", fam, key);
    char text[64];
    aemp_term_print(&e.value, text, sizeof text);
    cr_assert_str_eq(text, want);
    cr_assert_str_eq(aemp__intern_text(e.owner_h, NULL), owner);
}

Test(dbstore, greatest_stamp_then_node_name_wins)
{
    aemp__dbs *s = aemp__dbs_new();
    uint32_t ha = aemp__intern("a@h", 3), hb = aemp__intern("b@h", 3),
             hab = aemp__intern("a@hh", 4);
    aemp__dbs_owner *a = aemp__dbs_owner_new(s, ha), *b = aemp__dbs_owner_new(s, hb),
                    *ab = aemp__dbs_owner_new(s, hab);
    aemp_buf v = AEMP_BUF_INIT;
    aemp_term t = atom_term(&v, "one");
    cr_assert_eq(aemp__dbs_set(s, a, "f", 1, "k", 1, 5, &t), 0);
    expect_visible(s, "f", "k", "one", "a@h");
    /* a lower stamp loses whatever the node */
    t = atom_term(&v, "two");
    cr_assert_eq(aemp__dbs_set(s, b, "f", 1, "k", 1, 4, &t), 0);
    expect_visible(s, "f", "k", "one", "a@h");
    /* the same stamp: the greater node name (as atoms compare) */
    cr_assert_eq(aemp__dbs_set(s, b, "f", 1, "k", 1, 5, &t), 0);
    expect_visible(s, "f", "k", "two", "b@h");
    t = atom_term(&v, "three");
    cr_assert_eq(aemp__dbs_set(s, ab, "f", 1, "k", 1, 5, &t), 0);
    expect_visible(s, "f", "k", "two", "b@h");
    cr_assert(aemp__dbs_cmp(5, hab, 5, ha) > 0, "a prefix is less");
    cr_assert(aemp__dbs_cmp(6, ha, 5, hb) > 0, "stamps first");
    cr_assert(aemp__dbs_cmp(0, 0, 1, ha) < 0, "pg members lose to every entry");
    /* deleting the winner shows the next; dropping an owner too */
    cr_assert_eq(aemp__dbs_del(s, b, "f", 1, "k", 1), 0);
    expect_visible(s, "f", "k", "three", "a@hh");
    cr_assert_eq(aemp__dbs_del(s, b, "f", 1, "k", 1), AEMP_ENOENT);
    aemp__dbs_owner_free(s, ab);
    expect_visible(s, "f", "k", "one", "a@h");
    cr_assert_eq(aemp__dbs_count(aemp__dbs_family(s, "f", 1)), 1);
    aemp__dbs_owner_free(s, a);
    expect_visible(s, "f", "k", NULL, NULL);
    cr_assert_null(aemp__dbs_family(s, "f", 1), "an empty family unwatched is freed");
    aemp__dbs_owner_free(s, b);
    aemp__dbs_free(s);
    aemp_buf_free(&v);
}

static int in_list(const char **l, size_t n, const char *k)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(l[i], k) == 0) return 1;
    return 0;
}

/* The next diff of f, the only dirty family: "new" added, "chg"
 * changed, "gone" deleted, nothing else. */
static void expect_new_chg_gone(aemp__dbs *s, aemp__dbs_fam *f)
{
    aemp__dbs_diff d;
    cr_assert_eq(aemp__dbs_next_dirty(s), f);
    cr_assert_eq(aemp__dbs_take_diff(s, f, &d), 0);
    cr_assert_eq(d.nadded, 1);
    cr_assert_str_eq(d.added[0], "new");
    cr_assert_eq(d.nchanged, 1);
    cr_assert_str_eq(d.changed[0], "chg");
    cr_assert_eq(d.ndeleted, 1);
    cr_assert_str_eq(d.deleted[0], "gone");
    aemp__dbs_diff_done(s, f, &d);
}

Test(dbstore, diffs_list_added_changed_deleted)
{
    aemp__dbs *s = aemp__dbs_new();
    aemp__dbs_owner *a = owner(s, "a@h");
    aemp__dbs_owner *b = owner(s, "b@h");
    aemp_buf v = AEMP_BUF_INIT;
    aemp_term t = atom_term(&v, "x");
    /* unwatched families record nothing */
    cr_assert_eq(aemp__dbs_set(s, a, "other", 5, "k", 1, 1, &t), 0);
    aemp__dbs_fam *f = aemp__dbs_watch(s, "f", 1);
    cr_assert_not_null(f);
    cr_assert_eq(aemp__dbs_set(s, a, "f", 1, "stay", 4, 1, &t), 0);
    cr_assert_eq(aemp__dbs_set(s, a, "f", 1, "chg", 3, 1, &t), 0);
    cr_assert_eq(aemp__dbs_set(s, a, "f", 1, "gone", 4, 1, &t), 0);
    cr_assert_eq(aemp__dbs_next_dirty(s), f);
    cr_assert_null(aemp__dbs_next_dirty(s));
    aemp__dbs_diff d;
    cr_assert_eq(aemp__dbs_take_diff(s, f, &d), 0);
    cr_assert_eq(d.nadded, 3);
    cr_assert_eq(d.nchanged + d.ndeleted, 0);
    aemp__dbs_diff_done(s, f, &d);
    /* change (another owner wins), delete, a set then deleted, a new one */
    cr_assert_eq(aemp__dbs_set(s, b, "f", 1, "chg", 3, 2, &t), 0);
    cr_assert_eq(aemp__dbs_del(s, a, "f", 1, "gone", 4), 0);
    cr_assert_eq(aemp__dbs_set(s, a, "f", 1, "brief", 5, 3, &t), 0);
    cr_assert_eq(aemp__dbs_del(s, a, "f", 1, "brief", 5), 0);
    cr_assert_eq(aemp__dbs_set(s, b, "f", 1, "new", 3, 3, &t), 0);
    /* a losing entry changes nothing visible */
    cr_assert_eq(aemp__dbs_set(s, a, "f", 1, "new", 3, 1, &t), 0);
    expect_new_chg_gone(s, f);
    /* the owner of the winners goes: "new" falls back to a, chg to a */
    aemp__dbs_owner_free(s, b);
    cr_assert_eq(aemp__dbs_next_dirty(s), f);
    cr_assert_eq(aemp__dbs_take_diff(s, f, &d), 0);
    cr_assert_eq(d.nchanged, 2);
    cr_assert(in_list(d.changed, d.nchanged, "new") && in_list(d.changed, d.nchanged, "chg"));
    aemp__dbs_diff_done(s, f, &d);
    aemp__dbs_owner_free(s, a);
    cr_assert_eq(aemp__dbs_next_dirty(s), f);
    cr_assert_eq(aemp__dbs_take_diff(s, f, &d), 0);
    cr_assert_eq(d.ndeleted, 3);
    cr_assert_eq(d.nadded + d.nchanged, 0);
    aemp__dbs_diff_done(s, f, &d);
    aemp__dbs_unwatch(s, f);
    cr_assert_null(aemp__dbs_family(s, "f", 1));
    aemp__dbs_free(s);
    aemp_buf_free(&v);
}

/* A share replacing an owner's last (mark, set, sweep): what is the same
 * again is no change; the rest shows as added, changed and deleted. */
Test(dbstore, a_replaced_share_reports_only_what_changed)
{
    aemp__dbs *s = aemp__dbs_new();
    aemp__dbs_owner *a = owner(s, "a@h");
    aemp_buf v = AEMP_BUF_INIT;
    aemp_term t = atom_term(&v, "x");
    aemp__dbs_fam *f = aemp__dbs_watch(s, "f", 1);
    cr_assert_not_null(f);
    cr_assert_eq(aemp__dbs_set(s, a, "f", 1, "same", 4, 1, &t), 0);
    cr_assert_eq(aemp__dbs_set(s, a, "f", 1, "chg", 3, 1, &t), 0);
    cr_assert_eq(aemp__dbs_set(s, a, "f", 1, "gone", 4, 1, &t), 0);
    aemp__dbs_diff d;
    cr_assert_eq(aemp__dbs_next_dirty(s), f);
    cr_assert_eq(aemp__dbs_take_diff(s, f, &d), 0);
    aemp__dbs_diff_done(s, f, &d);
    /* set again as it is: nothing to tell */
    cr_assert_eq(aemp__dbs_set(s, a, "f", 1, "same", 4, 1, &t), 0);
    cr_assert_null(aemp__dbs_next_dirty(s));
    aemp__dbs_owner_mark(a);
    cr_assert_eq(aemp__dbs_set(s, a, "f", 1, "same", 4, 1, &t), 0);
    cr_assert_eq(aemp__dbs_set(s, a, "f", 1, "chg", 3, 2, &t), 0);
    cr_assert_eq(aemp__dbs_set(s, a, "f", 1, "new", 3, 2, &t), 0);
    aemp__dbs_owner_sweep(s, a);
    expect_new_chg_gone(s, f);
    cr_assert_eq(aemp__dbs_count(f), 3);
    aemp_buf b = AEMP_BUF_INIT;
    cr_assert_eq(aemp__dbs_encode_share(s, a, &b), 0);
    cr_assert_eq(aemp__dbs_owner_bytes(a),
                 aemp__dbs_cost(1, 4, t.len) + 2 * aemp__dbs_cost(1, 3, t.len));
    aemp_buf_free(&b);
    aemp__dbs_owner_free(s, a);
    aemp__dbs_unwatch(s, f);
    aemp__dbs_free(s);
    aemp_buf_free(&v);
}

/* Many subkeys, values short (kept in the entry) and long (allocated),
 * two owners on some: every one is found while the family grows and
 * shrinks, and the diff's names stay readable while their entries go
 * (under ASan: no use after free). */
Test(dbstore, a_large_family_grows_and_shrinks)
{
    enum { N = 20000 };
    aemp__dbs *s = aemp__dbs_new();
    aemp__dbs_owner *a = owner(s, "a@h");
    aemp__dbs_owner *b = owner(s, "b@h");
    aemp_buf v = AEMP_BUF_INIT;
    char key[32], want[64];
    aemp__dbs_fam *f = aemp__dbs_watch(s, "f", 1);
    for (int i = 0; i < N; i++) {
        aemp__buf_reset(&v);
        if (i % 2)
            cr_assert_eq(aemp_term_format(&v, "~i", (int64_t)i), 0);
        else
            cr_assert_eq(aemp_term_format(&v, "{a_longer_value, ~i}", (int64_t)i), 0);
        aemp_term t = aemp_buf_term(&v);
        int n = snprintf(key, sizeof key, "k%d", i);
        cr_assert_eq(aemp__dbs_set(s, a, "f", 1, key, (size_t)n, 1, &t), 0);
        if (i % 3 == 0) cr_assert_eq(aemp__dbs_set(s, b, "f", 1, key, (size_t)n, 0, &t), 0);
    }
    cr_assert_eq(aemp__dbs_count(f), N);
    cr_assert_eq(aemp__dbs_next_dirty(s), f);
    aemp__dbs_diff d;
    cr_assert_eq(aemp__dbs_take_diff(s, f, &d), 0);
    cr_assert_eq(d.nadded, N);
    /* while the diff is out, its subkeys go */
    for (int i = 0; i < N; i += 2) {
        int n = snprintf(key, sizeof key, "k%d", i);
        cr_assert_eq(aemp__dbs_del(s, a, "f", 1, key, (size_t)n), 0);
    }
    size_t named = 0;
    for (size_t i = 0; i < d.nadded; i++)
        named += d.added[i][0] == 'k';
    cr_assert_eq(named, N);
    aemp__dbs_diff_done(s, f, &d);
    /* the odd ones and b's third of the even ones are left */
    size_t left = N / 2 + (N / 2 + 2) / 3;
    cr_assert_eq(aemp__dbs_count(f), left);
    for (int i = 0; i < N; i++) {
        int n = snprintf(key, sizeof key, "k%d", i);
        aemp__dbs_ent e;
        int rc = aemp__dbs_get(f, key, (size_t)n, &e);
        if (i % 2 == 0 && i % 3 != 0) {
            cr_assert_eq(rc, AEMP_ENOENT, "%s still there", key);
            continue;
        }
        cr_assert_eq(rc, 0, "%s lost", key);
        if (i % 2)
            snprintf(want, sizeof want, "%d", i);
        else
            snprintf(want, sizeof want, "{a_longer_value,%d}", i);
        char text[64];
        aemp_term_print(&e.value, text, sizeof text);
        cr_assert_str_eq(text, want);
        cr_assert_str_eq(aemp__intern_text(e.owner_h, NULL), i % 2 ? "a@h" : "b@h");
    }
    cr_assert_eq(aemp__dbs_next_dirty(s), f);
    cr_assert_eq(aemp__dbs_take_diff(s, f, &d), 0);
    cr_assert_eq(d.ndeleted, N / 2 - (N / 2 + 2) / 3);
    cr_assert_eq(d.nchanged, (N / 2 + 2) / 3);
    aemp__dbs_diff_done(s, f, &d);
    aemp__dbs_owner_free(s, a);
    aemp__dbs_owner_free(s, b);
    cr_assert_eq(aemp__dbs_count(f), 0);
    cr_assert_eq(aemp__dbs_next_dirty(s), f);
    cr_assert_eq(aemp__dbs_take_diff(s, f, &d), 0);
    cr_assert_eq(d.ndeleted, left);
    aemp__dbs_diff_done(s, f, &d);
    aemp__dbs_unwatch(s, f);
    cr_assert_null(aemp__dbs_family(s, "f", 1));
    aemp__dbs_free(s);
    aemp_buf_free(&v);
}

Test(dbstore, share_encodes_as_the_protocol_says)
{
    aemp__dbs *s = aemp__dbs_new();
    aemp__dbs_owner *a = owner(s, "a@h");
    aemp_buf v = AEMP_BUF_INIT, out = AEMP_BUF_INIT;
    aemp_term t = atom_term(&v, "x");
    cr_assert_eq(aemp__dbs_set(s, a, "f", 1, "k", 1, 300, &t), 0);
    cr_assert_eq(aemp__dbs_set(s, a, "g", 1, "k", 1, (uint64_t)1 << 40, &t), 0);
    cr_assert_eq(aemp__dbs_encode_share(s, a, &out), 0);
    /* map order is the hash's (a parsed map's is sorted): either is the
     * same map */
    const char *fv = "{#{<<\"k\">> => x}, <<1:32, \"k\", 300:64>>}";
    const char *gv = "{#{<<\"k\">> => x}, <<1:32, \"k\", 1099511627776:64>>}";
    aemp_buf fg = AEMP_BUF_INIT, gf = AEMP_BUF_INIT;
    for (int i = 0; i < 2; i++) {
        aemp_buf *w = i ? &gf : &fg;
        const char *first = i ? "g" : "f", *second = i ? "f" : "g";
        const char *v1 = i ? gv : fv, *v2 = i ? fv : gv;
        cr_assert_eq(aemp__buf_append(w, "\x74\0\0\0\x02\x6d\0\0\0\x01", 10), 0);
        cr_assert_eq(aemp__buf_append(w, first, 1), 0);
        cr_assert_eq(aemp_term_parse(w, v1, strlen(v1), NULL), 0);
        cr_assert_eq(aemp__buf_append(w, "\x6d\0\0\0\x01", 5), 0);
        cr_assert_eq(aemp__buf_append(w, second, 1), 0);
        cr_assert_eq(aemp_term_parse(w, v2, strlen(v2), NULL), 0);
    }
    char text[256];
    aemp_term share = aemp_buf_term(&out);
    aemp_term_print(&share, text, sizeof text);
    cr_assert((out.len == fg.len && memcmp(out.data, fg.data, fg.len) == 0) ||
                  (out.len == gf.len && memcmp(out.data, gf.data, gf.len) == 0),
              "share %s", text);
    aemp_buf_free(&fg);
    aemp_buf_free(&gf);
    size_t used;
    cr_assert_eq(aemp__term_validate(out.data, out.len, &used), 0);
    cr_assert_eq(used, out.len);
    aemp__dbs_owner_free(s, a);
    aemp__dbs_free(s);
    aemp_buf_free(&v);
    aemp_buf_free(&out);
}

/* Take text (Erlang syntax) as a received Share: checked (the result),
 * then, if it passed, applied to o in place of its share (mark, apply,
 * sweep). Both walks end at the term's end. *bytes and *maxstamp: the
 * check's. */
static int take_share(aemp__dbs *s, aemp__dbs_owner *o, const char *text, size_t *bytes,
                      uint64_t *maxstamp)
{
    aemp_buf b = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_parse(&b, text, strlen(text), NULL), 0, "parse %s", text);
    aemp_term t = aemp_buf_term(&b);
    aemp_cursor c = aemp_cursor_of(&t);
    size_t by = 0;
    uint64_t ms = 0;
    int rc = aemp__dbs_walk_share(NULL, NULL, &c, &by, &ms);
    if (rc == 0) {
        cr_assert_eq(c.pos, t.len, "the check of %s ends at its end", text);
        c = aemp_cursor_of(&t);
        aemp__dbs_owner_mark(o);
        cr_assert_eq(aemp__dbs_walk_share(s, o, &c, NULL, NULL), 0, "apply %s", text);
        aemp__dbs_owner_sweep(s, o);
        cr_assert_eq(c.pos, t.len, "applying %s ends at its end", text);
    }
    if (bytes) *bytes = by;
    if (maxstamp) *maxstamp = ms;
    aemp_buf_free(&b);
    return rc;
}

static void take_ok(aemp__dbs *s, aemp__dbs_owner *o, const char *text)
{
    cr_assert_eq(take_share(s, o, text, NULL, NULL), 0, "refused: %s", text);
}

/* o's own entry of fam/key has stamp want (want -1: o has none). */
static void expect_own(aemp__dbs *s, aemp__dbs_owner *o, const char *fam, const char *key,
                       int64_t want)
{
    uint64_t stamp = 0;
    int rc = aemp__dbs_own(s, o, fam, strlen(fam), key, strlen(key), &stamp);
    if (want < 0) {
        cr_assert_eq(rc, AEMP_ENOENT, "%s/%s is there (stamp %llu)", fam, key,
                     (unsigned long long)stamp);
        return;
    }
    cr_assert_eq(rc, 0, "%s/%s is not there", fam, key);
    cr_assert_eq(stamp, (uint64_t)want, "%s/%s has stamp %llu, not %lld", fam, key,
                 (unsigned long long)stamp, (long long)want);
}

/* Stamps recorded in another order than the values (a parsed map's keys
 * come sorted): each value still gets the stamp named with its subkey,
 * and the stamp decides against another owner. Whether the records go
 * out of step at the first value or after some, and whether the counts
 * agree. */
Test(dbstore, stamps_out_of_order_give_each_value_its_own)
{
    aemp__dbs *s = aemp__dbs_new();
    aemp__dbs_owner *a = owner(s, "a@h");
    aemp__dbs_owner *b = owner(s, "b@h");
    aemp_buf v = AEMP_BUF_INIT;
    aemp_term t = atom_term(&v, "theirs");
    const char *keys[] = {"a", "b", "c", "d", "j", "k"};
    for (size_t i = 0; i < 6; i++)
        cr_assert_eq(aemp__dbs_set(s, b, "f", 1, keys[i], 1, 5, &t), 0);
    uint64_t maxstamp;
    cr_assert_eq(take_share(s, a,
                            "#{<<\"f\">> => {#{<<\"j\">> => ja, <<\"k\">> => ka}, "
                            "<<1:32, \"k\", 9:64, 1:32, \"j\", 1:64>>}}",
                            NULL, &maxstamp),
                 0);
    cr_assert_eq(maxstamp, 9);
    expect_own(s, a, "f", "j", 1);
    expect_own(s, a, "f", "k", 9);
    expect_visible(s, "f", "j", "theirs", "b@h");
    expect_visible(s, "f", "k", "ka", "a@h");
    /* in step for a and b, out of step from c */
    take_ok(s, a,
            "#{<<\"f\">> => {#{<<\"a\">> => 1, <<\"b\">> => 2, <<\"c\">> => 3, "
            "<<\"d\">> => 4}, <<1:32, \"a\", 6:64, 1:32, \"b\", 2:64, 1:32, \"d\", 3:64, "
            "1:32, \"c\", 8:64>>}}");
    expect_own(s, a, "f", "a", 6);
    expect_own(s, a, "f", "b", 2);
    expect_own(s, a, "f", "c", 8);
    expect_own(s, a, "f", "d", 3);
    expect_own(s, a, "f", "j", -1); /* the new share replaced the last */
    expect_visible(s, "f", "a", "1", "a@h");
    expect_visible(s, "f", "b", "theirs", "b@h");
    expect_visible(s, "f", "c", "3", "a@h");
    expect_visible(s, "f", "d", "theirs", "b@h");
    /* more records than values, in another order */
    take_ok(s, a,
            "#{<<\"f\">> => {#{<<\"c\">> => 3, <<\"d\">> => 4}, "
            "<<1:32, \"d\", 7:64, 1:32, \"x\", 2:64, 1:32, \"c\", 1:64>>}}");
    expect_own(s, a, "f", "c", 1);
    expect_own(s, a, "f", "d", 7);
    expect_visible(s, "f", "c", "theirs", "b@h");
    expect_visible(s, "f", "d", "4", "a@h");
    aemp__dbs_owner_free(s, a);
    aemp__dbs_owner_free(s, b);
    aemp__dbs_free(s);
    aemp_buf_free(&v);
}

/* A subkey named twice: the last record counts, also when the first was
 * met in step (the family is taken again from its start). A subkey with no
 * record has stamp 0; a record for no value is no entry, but its stamp
 * counts for the clock. An empty family is nothing. */
Test(dbstore, stamps_last_pair_wins_missing_is_0_extra_is_ignored)
{
    aemp__dbs *s = aemp__dbs_new();
    aemp__dbs_owner *a = owner(s, "a@h");
    aemp__dbs_owner *b = owner(s, "b@h");
    aemp_buf v = AEMP_BUF_INIT;
    aemp_term t = atom_term(&v, "theirs");
    cr_assert_eq(aemp__dbs_set(s, b, "f", 1, "b", 1, 5, &t), 0);
    cr_assert_eq(aemp__dbs_set(s, b, "f", 1, "k", 1, 5, &t), 0);
    /* as many records as values: a and b in step, then b again */
    take_ok(s, a,
            "#{<<\"f\">> => {#{<<\"a\">> => 1, <<\"b\">> => 2, <<\"c\">> => 3}, "
            "<<1:32, \"a\", 1:64, 1:32, \"b\", 2:64, 1:32, \"b\", 7:64>>}}");
    expect_own(s, a, "f", "a", 1);
    expect_own(s, a, "f", "b", 7);
    expect_own(s, a, "f", "c", 0);
    expect_visible(s, "f", "b", "2", "a@h");
    /* more records than values: the last of three */
    take_ok(s, a,
            "#{<<\"f\">> => {#{<<\"k\">> => mine}, "
            "<<1:32, \"k\", 9:64, 1:32, \"k\", 3:64, 1:32, \"k\", 6:64>>}}");
    expect_own(s, a, "f", "k", 6);
    expect_visible(s, "f", "k", "mine", "a@h");
    take_ok(s, a,
            "#{<<\"f\">> => {#{<<\"k\">> => mine}, "
            "<<1:32, \"k\", 6:64, 1:32, \"k\", 3:64>>}}");
    expect_own(s, a, "f", "k", 3);
    expect_visible(s, "f", "k", "theirs", "b@h");
    /* missing and extra: only the values are entries, the extra stamp is
     * seen */
    size_t bytes;
    uint64_t maxstamp;
    cr_assert_eq(take_share(s, a,
                            "#{<<\"f\">> => {#{<<\"k\">> => mine, <<\"m\">> => x}, "
                            "<<1:32, \"k\", 8:64, 1:32, \"z\", 99:64>>}, "
                            "<<\"g\">> => {#{}, <<>>}}",
                            &bytes, &maxstamp),
                 0);
    expect_own(s, a, "f", "k", 8);
    expect_own(s, a, "f", "m", 0);
    expect_own(s, a, "f", "z", -1);
    cr_assert_eq(maxstamp, 99);
    aemp_buf x = AEMP_BUF_INIT;
    size_t xlen = atom_term(&x, "x").len;
    cr_assert_eq(bytes,
                 aemp__dbs_cost(1, 1, atom_term(&v, "mine").len) + aemp__dbs_cost(1, 1, xlen));
    cr_assert_eq(aemp__dbs_owner_bytes(a), bytes);
    cr_assert_null(aemp__dbs_family(s, "g", 1), "an empty family is nothing");
    cr_assert_eq(aemp__dbs_count(aemp__dbs_family(s, "f", 1)), 3);
    /* records only */
    cr_assert_eq(
        take_share(s, a, "#{<<\"f\">> => {#{}, <<1:32, \"k\", 12:64>>}}", &bytes, &maxstamp), 0);
    cr_assert_eq(maxstamp, 12);
    cr_assert_eq(bytes, 0);
    expect_own(s, a, "f", "k", -1);
    aemp__dbs_owner_free(s, a);
    aemp__dbs_owner_free(s, b);
    aemp__dbs_free(s);
    aemp_buf_free(&v);
    aemp_buf_free(&x);
}

/* Records left after the values were all met in step (never sent): one
 * naming a value again gives it its stamp (the last record wins, greater
 * or not), one for no value only counts for the clock. */
Test(dbstore, records_left_after_an_in_step_walk_still_count)
{
    static const struct {
        const char *recs; /* the Stamps of #{a => 1, b => 2} */
        int64_t a, b;     /* the stamps they get */
        uint64_t max;     /* the greatest seen */
    } cases[] = {
        /* the last subkey again, with a greater stamp: it wins */
        {"1:32, \"a\", 1:64, 1:32, \"b\", 2:64, 1:32, \"b\", 9:64", 1, 9, 9},
        /* with a smaller one: the last still wins */
        {"1:32, \"a\", 1:64, 1:32, \"b\", 9:64, 1:32, \"b\", 3:64", 1, 3, 9},
        /* the first subkey again */
        {"1:32, \"a\", 1:64, 1:32, \"b\", 2:64, 1:32, \"a\", 7:64", 7, 2, 7},
        /* a subkey of no value */
        {"1:32, \"a\", 4:64, 1:32, \"b\", 6:64, 1:32, \"z\", 50:64", 4, 6, 50},
    };
    aemp__dbs *s = aemp__dbs_new();
    aemp__dbs_owner *a = owner(s, "a@h");
    aemp__dbs_owner *b = owner(s, "b@h");
    aemp_buf v = AEMP_BUF_INIT;
    aemp_term t = atom_term(&v, "theirs");
    cr_assert_eq(aemp__dbs_set(s, b, "f", 1, "b", 1, 5, &t), 0);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char text[200];
        snprintf(text, sizeof text, "#{<<\"f\">> => {#{<<\"a\">> => 1, <<\"b\">> => 2}, <<%s>>}}",
                 cases[i].recs);
        uint64_t maxstamp;
        cr_assert_eq(take_share(s, a, text, NULL, &maxstamp), 0, "refused: %s", text);
        cr_assert_eq(maxstamp, cases[i].max, "%s", text);
        expect_own(s, a, "f", "a", cases[i].a);
        expect_own(s, a, "f", "b", cases[i].b);
        expect_own(s, a, "f", "z", -1);
        /* b's stamp decides against b@h's 5 */
        bool mine = cases[i].b > 5;
        expect_visible(s, "f", "b", mine ? "2" : "theirs", mine ? "a@h" : "b@h");
    }
    aemp__dbs_owner_free(s, a);
    aemp__dbs_owner_free(s, b);
    aemp__dbs_free(s);
    aemp_buf_free(&v);
}

/* Shares of other shapes are refused whole by the check: nothing of them
 * is applied. */
Test(dbstore, malformed_shares_are_refused)
{
    const char *bad[] = {
        "[]",
        "#{f => {#{}, <<>>}}",                                           /* family an atom */
        "#{<<\"f\">> => #{<<\"k\">> => {1, x}}}",                        /* version 1 */
        "#{<<\"f\">> => {#{<<\"k\">> => x}, [{<<\"k\">>, 1}]}}",         /* version 2 */
        "#{<<\"f\">> => {#{}, []}}",                                     /* version 2, empty */
        "#{<<\"f\">> => {#{<<\"k\">> => x}}}",                           /* arity 1 */
        "#{<<\"f\">> => {#{<<\"k\">> => x}, <<1:32, \"k\", 1:64>>, z}}", /* arity 3 */
        "#{<<\"f\">> => [#{<<\"k\">> => x}, <<1:32, \"k\", 1:64>>]}",    /* not a tuple */
        "#{<<\"f\">> => {<<1:32, \"k\", 1:64>>, #{<<\"k\">> => x}}}",    /* swapped */
        "#{<<\"f\">> => {#{<<\"k\">> => x}, #{}}}",                      /* stamps a map */
        "#{<<\"f\">> => {#{<<\"k\">> => x}, 1}}",                        /* an integer */
        "#{<<\"f\">> => {#{<<\"k\">> => x}, \"abc\"}}",                  /* a string */
        "#{<<\"f\">> => {#{k => x}, <<1:32, \"k\", 1:64>>}}",            /* subkey an atom */
        "#{<<\"f\">> => {#{\"k\" => x}, <<>>}}",                         /* subkey a string */
        /* a bitstring: whole records and 3 bits */
        "#{<<\"f\">> => {#{<<\"k\">> => x}, <<1:32, \"k\", 1:64, 1:3>>}}",
        "#{<<\"f\">> => {#{}, <<1:3>>}}",
        /* records not whole: a stamp of 7 bytes, KeyLen cut, KeyLen past
         * the end, a record after a good one cut */
        "#{<<\"f\">> => {#{<<\"k\">> => x}, <<1:32, \"k\", 1:56>>}}",
        "#{<<\"f\">> => {#{<<\"k\">> => x}, <<1:32, \"k\", 1:64, 0:24>>}}",
        "#{<<\"f\">> => {#{<<\"k\">> => x}, <<2:32, \"k\", 1:64>>}}",
        "#{<<\"f\">> => {#{<<\"k\">> => x}, <<4294967295:32, \"k\", 1:64>>}}",
        "#{<<\"f\">> => {#{<<\"k\">> => x}, <<1:32, \"k\", 1:64, 1:32, \"z\">>}}",
        "#{<<\"f\">> => {#{<<\"k\">> => x}, <<1:32, \"k\", 1:64, 0:32>>}}",
        "#{<<\"f\">> => {#{}, <<0>>}}",
        /* one good family and a bad one */
        "#{<<\"f\">> => {#{<<\"k\">> => x}, <<1:32, \"k\", 1:64>>}, <<\"g\">> => {#{}, <<1:32>>}}",
        /* subkeys (KeyLen too) and families over AEMP_DB_MAXKEY */
        "#{<<\"f\">> => {#{<<0:524288>> => x}, <<>>}}",
        "#{<<\"f\">> => {#{}, <<65536:32, 0:524288, 1:64>>}}",
        "#{<<0:524288>> => {#{}, <<>>}}",
    };
    aemp__dbs *s = aemp__dbs_new();
    aemp__dbs_owner *a = owner(s, "a@h");
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_assert_eq(take_share(s, a, bad[i], NULL, NULL), AEMP_ENOMATCH, "accepted: %s", bad[i]);
    cr_assert_eq(aemp__dbs_owner_bytes(a), 0);
    cr_assert_null(aemp__dbs_family(s, "f", 1));
    /* the bounds themselves are fine */
    uint64_t maxstamp;
    cr_assert_eq(take_share(s, a,
                            "#{<<0:524280>> => {#{<<1:524280>> => x}, "
                            "<<65535:32, 1:524280, 18446744073709551615:64>>}}",
                            NULL, &maxstamp),
                 0);
    cr_assert_eq(maxstamp, UINT64_MAX);
    /* an empty subkey (KeyLen 0), a stamp with the top bit set */
    take_ok(s, a,
            "#{<<\"f\">> => {#{<<>> => x, <<\"k\">> => y}, "
            "<<0:32, 5:64, 1:32, \"k\", 9223372036854775808:64>>}}");
    expect_own(s, a, "f", "", 5);
    uint64_t st;
    cr_assert_eq(aemp__dbs_own(s, a, "f", 1, "k", 1, &st), 0);
    cr_assert_eq(st, (uint64_t)1 << 63);
    aemp__dbs_owner_free(s, a);
    aemp__dbs_free(s);
}

/* An owner's share encoded and taken by another store: every entry with
 * its stamp; the Stamps binary names each subkey once, in the order of
 * the values (what receivers walk in step), as whole records. */
Test(dbstore, encoded_share_walks_back_in_step)
{
    enum { N = 300 };
    aemp__dbs *s = aemp__dbs_new(), *r = aemp__dbs_new();
    aemp__dbs_owner *a = owner(s, "a@h");
    aemp__dbs_owner *ra = aemp__dbs_owner_new(r, aemp__intern("a@h", 3));
    aemp_buf v = AEMP_BUF_INIT, out = AEMP_BUF_INIT;
    char key[16], fam[4];
    for (int i = 0; i < N; i++) {
        aemp__buf_reset(&v);
        cr_assert_eq(aemp_term_format(&v, "{v, ~i}", (int64_t)i), 0);
        aemp_term t = aemp_buf_term(&v);
        int n = snprintf(key, sizeof key, "k%d", i);
        snprintf(fam, sizeof fam, "f%d", i % 3);
        uint64_t stamp = i % 7 ? (uint64_t)i * 1000003 : UINT64_MAX - (uint64_t)i;
        cr_assert_eq(aemp__dbs_set(s, a, fam, 2, key, (size_t)n, stamp, &t), 0);
    }
    cr_assert_eq(aemp__dbs_encode_share(s, a, &out), 0);
    aemp_term share = aemp_buf_term(&out);
    /* in step */
    aemp_cursor c = aemp_cursor_of(&share);
    uint32_t nf, arity, nk;
    cr_assert_eq(aemp_get_map(&c, &nf), 0);
    cr_assert_eq(nf, 3);
    for (uint32_t i = 0; i < nf; i++) {
        cr_assert_eq(aemp_get_binary(&c, &(const void *){0}, &(size_t){0}), 0);
        cr_assert_eq(aemp_get_tuple(&c, &arity), 0);
        cr_assert_eq(arity, 2);
        aemp_cursor l = c;
        cr_assert_eq(aemp_get_term(&l, NULL), 0);
        cr_assert_eq(aemp_get_map(&c, &nk), 0);
        const void *bp;
        size_t blen;
        cr_assert_eq(aemp_get_binary(&l, &bp, &blen), 0);
        const uint8_t *p = bp, *end = p + blen;
        for (uint32_t j = 0; j < nk; j++) {
            const void *kp;
            size_t klen;
            cr_assert_eq(aemp_get_binary(&c, &kp, &klen), 0);
            cr_assert_eq(aemp_get_term(&c, NULL), 0);
            cr_assert_geq((size_t)(end - p), 4 + klen + 8, "record %u of family %u", j, i);
            cr_assert_eq(aemp__get_u32(p), klen, "record %u of family %u", j, i);
            cr_assert(memcmp(p + 4, kp, klen) == 0, "record %u of family %u", j, i);
            uint64_t stamp = aemp__get_u64(p + 4 + klen);
            char kt[16] = {0};
            cr_assert_lt(klen, sizeof kt);
            memcpy(kt, kp, klen);
            int k = atoi(kt + 1);
            cr_assert_eq(stamp, k % 7 ? (uint64_t)k * 1000003 : UINT64_MAX - (uint64_t)k);
            p += 4 + klen + 8;
        }
        cr_assert(p == end, "nothing after the records of family %u", i);
        c = l;
    }
    cr_assert_eq(c.pos, out.len);
    /* taken whole by another store */
    c = aemp_cursor_of(&share);
    size_t bytes = 0;
    uint64_t maxstamp = 0;
    cr_assert_eq(aemp__dbs_walk_share(NULL, NULL, &c, &bytes, &maxstamp), 0);
    cr_assert_eq(bytes, aemp__dbs_owner_bytes(a));
    cr_assert_eq(maxstamp, UINT64_MAX);
    c = aemp_cursor_of(&share);
    cr_assert_eq(aemp__dbs_walk_share(r, ra, &c, NULL, NULL), 0);
    cr_assert_eq(c.pos, out.len);
    cr_assert_eq(aemp__dbs_owner_bytes(ra), bytes);
    for (int i = 0; i < N; i++) {
        int n = snprintf(key, sizeof key, "k%d", i);
        snprintf(fam, sizeof fam, "f%d", i % 3);
        uint64_t want = i % 7 ? (uint64_t)i * 1000003 : UINT64_MAX - (uint64_t)i, stamp;
        cr_assert_eq(aemp__dbs_own(r, ra, fam, 2, key, (size_t)n, &stamp), 0);
        cr_assert_eq(stamp, want, "%s/%s", fam, key);
        aemp__dbs_ent e;
        cr_assert_eq(aemp__dbs_get(aemp__dbs_family(r, fam, 2), key, (size_t)n, &e), 0);
        char text[32], wtext[32];
        aemp_term_print(&e.value, text, sizeof text);
        snprintf(wtext, sizeof wtext, "{v,%d}", i);
        cr_assert_str_eq(text, wtext);
    }
    /* an owner without entries: an empty map */
    aemp__buf_reset(&out);
    aemp__dbs_owner_clear(s, a);
    cr_assert_eq(aemp__dbs_encode_share(s, a, &out), 0);
    char text[16];
    share = aemp_buf_term(&out);
    aemp_term_print(&share, text, sizeof text);
    cr_assert_str_eq(text, "#{}");
    aemp__dbs_owner_free(s, a);
    aemp__dbs_owner_free(r, ra);
    aemp__dbs_free(s);
    aemp__dbs_free(r);
    aemp_buf_free(&v);
    aemp_buf_free(&out);
}

/* ------------------------------------------------------------------ */
/* the service between two C nodes                                    */
/* ------------------------------------------------------------------ */

/* What a db_mon callback saw last: the family as sorted "key=value@owner "
 * and the last diff as "+added ~changed -deleted", each sorted. */
struct rec {
    int calls;
    char view[2048];
    char diff[1024];
};

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void join_sorted(char *out, size_t size, char **items, size_t n)
{
    qsort(items, n, sizeof *items, cmp_str);
    size_t len = strlen(out);
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(out + len, len < size ? size - len : 0, "%s ", items[i]);
}

static void view_text(const aemp_db_view *v, char *out, size_t size)
{
    size_t n = aemp_db_view_count(v);
    char **items = calloc(n + 1, sizeof *items);
    for (size_t i = 0; i < n; i++) {
        aemp_db_entry e;
        cr_assert_eq(aemp_db_view_at(v, i, &e), 0);
        char val[256];
        aemp_term_print(&e.value, val, sizeof val);
        items[i] = malloc(600);
        snprintf(items[i], 600, "%s=%s@%s", e.subkey, val, e.owner);
    }
    cr_assert_neq(aemp_db_view_at(v, n, &(aemp_db_entry){0}), 0);
    out[0] = 0;
    join_sorted(out, size, items, n);
    for (size_t i = 0; i < n; i++)
        free(items[i]);
    free(items);
}

static void diff_part(char *out, size_t size, char mark, const char *const *l, size_t n)
{
    char **items = calloc(n + 1, sizeof *items);
    for (size_t i = 0; i < n; i++) {
        items[i] = malloc(strlen(l[i]) + 2);
        items[i][0] = mark;
        memcpy(items[i] + 1, l[i], strlen(l[i]) + 1);
    }
    join_sorted(out, size, items, n);
    for (size_t i = 0; i < n; i++)
        free(items[i]);
    free(items);
}

static void rec_cb(aemp_node *n, const aemp_db_view *v, const aemp_db_diff *d, void *arg)
{
    struct rec *r = arg;
    r->calls++;
    view_text(v, r->view, sizeof r->view);
    r->diff[0] = 0;
    diff_part(r->diff, sizeof r->diff, '+', d->added, d->nadded);
    diff_part(r->diff, sizeof r->diff, '~', d->changed, d->nchanged);
    diff_part(r->diff, sizeof r->diff, '-', d->deleted, d->ndeleted);
}

/* Run the loop until r->view is want (or the deadline passes). */
static int wait_view(struct rec *r, const char *want, unsigned ms)
{
    int expired = 0;
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    t.data = &expired;
    uv_timer_start(&t, on_deadline, ms, 0);
    while (strcmp(r->view, want) != 0 && !expired)
        uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    return strcmp(r->view, want) == 0;
}

#define EXPECT_VIEW(r, want)                                                                       \
    cr_assert(wait_view(r, want, 5000), "view is \"%s\", want \"%s\"", (r)->view, want)

static void set_atom(aemp_node *n, const char *fam, const char *key, const char *val, aemp_guard *g)
{
    aemp_buf b = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_format(&b, "~a", val), 0);
    aemp_term t = aemp_buf_term(&b);
    cr_assert_eq(aemp_db_set(n, fam, key, &t, g), 0);
    aemp_buf_free(&b);
}

struct keys_answer {
    int calls;
    int status;
    char keys[256];
};

static void on_keys(aemp_node *n, int status, const char *const *keys, size_t nk, void *arg)
{
    struct keys_answer *a = arg;
    a->calls++;
    a->status = status;
    a->keys[0] = 0;
    char **items = calloc(nk + 1, sizeof *items);
    for (size_t i = 0; i < nk; i++)
        items[i] = (char *)keys[i];
    join_sorted(a->keys, sizeof a->keys, items, nk);
    free(items);
}

static void on_values(aemp_node *n, int status, const aemp_term *values, size_t nv, void *arg)
{
    struct keys_answer *a = arg;
    a->calls++;
    a->status = status;
    a->keys[0] = 0;
    char **items = calloc(nv + 1, sizeof *items);
    for (size_t i = 0; i < nv; i++) {
        items[i] = malloc(64);
        aemp_term_print(&values[i], items[i], 64);
    }
    join_sorted(a->keys, sizeof a->keys, items, nv);
    for (size_t i = 0; i < nv; i++)
        free(items[i]);
    free(items);
}

static void on_family(aemp_node *n, int status, const aemp_db_view *v, void *arg)
{
    struct keys_answer *a = arg;
    a->calls++;
    a->status = status;
    cr_assert_str_eq(aemp_db_view_family(v), "fam");
    view_text(v, a->keys, sizeof a->keys);
}

struct stamp_answer {
    int calls;
    uint64_t stamp;
};

static void on_stamp(aemp_node *n, int status, const aemp_db_view *v, void *arg)
{
    struct stamp_answer *a = arg;
    aemp_db_entry e;
    cr_assert_eq(aemp_db_view_get(v, "k", &e), 0);
    cr_assert_eq(aemp_db_view_get(v, "nope", &e), AEMP_ENOENT);
    cr_assert_eq(aemp_db_view_get(v, "k", &e), 0);
    a->stamp = e.stamp;
    a->calls++;
}

Test(db, replicates_between_c_nodes)
{
    struct node_ctx a, b;
    start_node(&a, "a@127.0.0.1", "c");
    start_node(&b, "b@127.0.0.1", "c");
    set_atom(a.node, "fam", "k1", "v1", NULL);
    struct rec ra = {0}, rb = {0};
    aemp_guard gb;
    cr_assert_eq(aemp_db_mon(b.node, "fam", rec_cb, &rb, &gb), 0);
    cr_assert_eq(aemp_db_mon(a.node, "fam", rec_cb, &ra, NULL), 0);
    cr_assert_eq(rb.calls, 0, "db_mon calls back from the loop, not inside");
    /* the prompt first call, also for an empty family */
    cr_assert(wait_int(&rb.calls, 1, 2000));
    cr_assert_str_eq(rb.view, "");
    cr_assert_str_eq(rb.diff, "");
    cr_assert(wait_int(&ra.calls, 1, 2000));
    cr_assert_str_eq(ra.view, "k1=v1@a@127.0.0.1 ");
    cr_assert_str_eq(ra.diff, "+k1 ");
    /* a connection: the shares are exchanged */
    cr_assert_eq(aemp_node_connect(a.node, "b@127.0.0.1"), 0);
    EXPECT_VIEW(&rb, "k1=v1@a@127.0.0.1 ");
    cr_assert_str_eq(rb.diff, "+k1 ");
    /* b sets k1 after seeing a's set: b's stamp is greater, b wins on both */
    set_atom(b.node, "fam", "k1", "v2", NULL);
    EXPECT_VIEW(&rb, "k1=v2@b@127.0.0.1 ");
    cr_assert_str_eq(rb.diff, "~k1 ");
    EXPECT_VIEW(&ra, "k1=v2@b@127.0.0.1 ");
    cr_assert_str_eq(ra.diff, "~k1 ");
    /* a guard deletes its entry */
    aemp_guard g;
    set_atom(a.node, "fam", "k2", "v3", &g);
    EXPECT_VIEW(&rb, "k1=v2@b@127.0.0.1 k2=v3@a@127.0.0.1 ");
    cr_assert_str_eq(rb.diff, "+k2 ");
    cr_assert_eq(aemp_guard_release(a.node, g), 0);
    EXPECT_VIEW(&rb, "k1=v2@b@127.0.0.1 ");
    cr_assert_str_eq(rb.diff, "-k2 ");
    cr_assert_eq(aemp_guard_release(a.node, g), AEMP_ENOENT);
    /* a guard whose entry was set again releases nothing */
    set_atom(a.node, "fam", "k3", "v4", &g);
    set_atom(a.node, "fam", "k3", "v5", NULL);
    EXPECT_VIEW(&rb, "k1=v2@b@127.0.0.1 k3=v5@a@127.0.0.1 ");
    cr_assert_eq(aemp_guard_release(a.node, g), AEMP_ENOENT);
    cr_assert_eq(aemp_db_del(a.node, "fam", "k3"), 0);
    cr_assert_eq(aemp_db_del(a.node, "fam", "k3"), AEMP_ENOENT);
    EXPECT_VIEW(&rb, "k1=v2@b@127.0.0.1 ");
    /* db_reg: the port's ID, gone with the port */
    aemp_port p;
    cr_assert_eq(aemp_port_new(a.node, &p), 0);
    cr_assert_eq(aemp_db_reg(a.node, "fam", p, NULL, NULL), 0);
    aemp_addr pa;
    cr_assert_eq(aemp_port_addr(a.node, p, &pa), 0);
    char pid[128], want[512];
    aemp_addr_format(&pa, pid, sizeof pid);
    snprintf(want, sizeof want, "%s=undefined@a@127.0.0.1 k1=v2@b@127.0.0.1 ", pid);
    if (strcmp(pid, "k1") > 0)
        snprintf(want, sizeof want, "k1=v2@b@127.0.0.1 %s=undefined@a@127.0.0.1 ", pid);
    EXPECT_VIEW(&rb, want);
    cr_assert_eq(aemp_port_close(a.node, p), 0);
    EXPECT_VIEW(&rb, "k1=v2@b@127.0.0.1 ");
    cr_assert_eq(aemp_db_reg(a.node, "fam", p, NULL, NULL), AEMP_ENOENT);
    /* queries answer from the loop */
    struct keys_answer qk = {0}, qv = {0}, qf = {0};
    cr_assert_eq(aemp_db_keys(a.node, "fam", on_keys, &qk), 0);
    cr_assert_eq(aemp_db_values(a.node, "fam", on_values, &qv), 0);
    cr_assert_eq(aemp_db_family(a.node, "fam", on_family, &qf), 0);
    cr_assert_eq(qk.calls + qv.calls + qf.calls, 0);
    cr_assert(wait_int(&qf.calls, 1, 2000));
    cr_assert_eq(qk.calls, 1);
    cr_assert_str_eq(qk.keys, "k1 ");
    cr_assert_str_eq(qv.keys, "v2 ");
    cr_assert_str_eq(qf.keys, "k1=v2@b@127.0.0.1 ");
    cr_assert_eq(aemp_db_keys(a.node, "nothing", on_keys, &qk), 0);
    cr_assert(wait_int(&qk.calls, 2, 2000));
    cr_assert_str_eq(qk.keys, "");
    /* a's share vanishes with a; b's own stays */
    set_atom(a.node, "fam", "k4", "v6", NULL);
    EXPECT_VIEW(&rb, "k1=v2@b@127.0.0.1 k4=v6@a@127.0.0.1 ");
    stop_node(&a);
    EXPECT_VIEW(&rb, "k1=v2@b@127.0.0.1 ");
    cr_assert_str_eq(rb.diff, "-k4 ");
    /* a released monitor is not called again */
    int calls = rb.calls;
    cr_assert_eq(aemp_guard_release(b.node, gb), 0);
    set_atom(b.node, "fam", "k5", "v7", NULL);
    struct keys_answer q2 = {0};
    cr_assert_eq(aemp_db_keys(b.node, "fam", on_keys, &q2), 0);
    cr_assert(wait_int(&q2.calls, 1, 2000));
    cr_assert_eq(rb.calls, calls);
    stop_node(&b);
}

Test(db, errors)
{
    struct node_ctx a;
    start_node(&a, "a@127.0.0.1", "c");
    aemp_buf b = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_format(&b, "x"), 0);
    aemp_term t = aemp_buf_term(&b), bad = {b.data, b.len + 1};
    cr_assert_eq(aemp_db_set(a.node, "", "k", &t, NULL), AEMP_EINVAL);
    cr_assert_eq(aemp_db_set(a.node, "f", "", &t, NULL), AEMP_EINVAL);
    cr_assert_eq(aemp_db_set(a.node, "f", "k", NULL, NULL), AEMP_EINVAL);
    cr_assert_eq(aemp_db_set(a.node, "f", "k", &bad, NULL), AEMP_EINVAL);
    cr_assert_eq(aemp_db_del(a.node, "f", "k"), AEMP_ENOENT);
    cr_assert_eq(aemp_db_reg(a.node, "f", (aemp_port){0}, NULL, NULL), AEMP_ENOENT);
    cr_assert_eq(aemp_db_mon(a.node, "f", NULL, NULL, NULL), AEMP_EINVAL);
    cr_assert_eq(aemp_db_keys(a.node, NULL, on_keys, NULL), AEMP_EINVAL);
    cr_assert_eq(aemp_guard_release(a.node, (aemp_guard){0}), 0);
    cr_assert_eq(aemp_guard_release(a.node, (aemp_guard){12345}), AEMP_ENOENT);
    /* a query still waiting when the node closes is told */
    struct keys_answer q = {0};
    cr_assert_eq(aemp_db_keys(a.node, "f", on_keys, &q), 0);
    stop_node(&a);
    cr_assert_eq(q.calls, 1);
    cr_assert_eq(q.status, AEMP_ECLOSED);
    aemp_buf_free(&b);
}

/* Send text (Erlang syntax, %s standing for pid) from port p to to. */
static void send_text(aemp_node *n, aemp_port p, const aemp_addr *to, const char *fmt,
                      const char *pid)
{
    char text[512];
    snprintf(text, sizeof text, fmt, pid, pid);
    aemp_buf m = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_parse(&m, text, strlen(text), NULL), 0, "parse %s", text);
    aemp_term t = aemp_buf_term(&m);
    cr_assert_eq(aemp_send(n, p, to, &t), 0);
    aemp_buf_free(&m);
}

/* Messages a hostile peer may send to aemp_db: each is dropped, the view
 * stays, the node lives; shares over db_max_bytes are refused. */
Test(db, hostile_messages_are_dropped)
{
    struct node_ctx a, b;
    /* a runs no aemp_db: the port below speaks for a alone (a node has one
     * peer record: a real aemp_db of a would replace it) */
    aemp__db_test_off = true;
    start_node(&a, "a@127.0.0.1", "c");
    aemp__db_test_off = false;
    aemp_node_config cfg = {0};
    cfg.name = "b@127.0.0.1";
    cfg.cookie = "c";
    cfg.db_max_bytes = 4096;
    start_node_cfg(&b, cfg);
    struct rec rb = {0};
    cr_assert_eq(aemp_db_mon(b.node, "f", rec_cb, &rb, NULL), 0);
    aemp_port p;
    cr_assert_eq(aemp_port_new(a.node, &p), 0);
    aemp_addr me, to;
    cr_assert_eq(aemp_port_addr(a.node, p, &me), 0);
    char pid[128];
    aemp_addr_format(&me, pid, sizeof pid);
    name_addr(&to, b.node, "aemp_db");
    const char *bad[] = {
        "hello",
        "{discover}",
        "{discover, 1, 1}",
        "{update, %s, [{set, <<\"f\">>, <<\"k\">>, 1, x}]}", /* unknown peer: dropped */
        "{local_data, %s, 3, #{f => {#{<<\"k\">> => x}, <<1:32, \"k\", 1:64>>}}}",
        "{local_data, %s, 3, #{<<\"f\">> => {#{<<\"k\">> => x}, <<1:32, \"k\", 1:56>>}}}",
        "{local_data, %s, 3, #{<<\"f\">> => {#{<<\"k\">> => x}, <<9:32, \"k\", 1:64>>}}}",
        "{local_data, %s, 3, #{<<\"f\">> => {#{<<\"k\">> => x}, <<1:32, \"k\", 1:64, 1:1>>}}}",
        "{local_data, %s, 2, #{<<\"f\">> => {#{<<\"k\">> => x}, [{<<\"k\">>, 1}]}}}", /* v2 */
        "{local_data, %s, 1, #{<<\"f\">> => #{<<\"k\">> => {1, x}}}}", /* version 1's */
        "{local_data, %s, 3, #{<<\"f\">> => [a]}}",
        "{'$gen_cast', {other, %s}}",
        "{'$gen_cast', {local_data, %s, 3, [1, 2]}}",
        /* a share over the limit */
        "{local_data, %s, 3, #{<<\"f\">> => {#{<<\"k\">> => <<0:65536>>}, <<1:32, \"k\", 1:64>>}}}",
        /* a fine one (the stamp of a record for no value counts for the
         * clock) */
        ("{local_data, %s, 3, #{<<\"f\">> => {#{<<\"k\">> => ok}, <<1:32, \"k\", 7:64, "
         "4:32, \"gone\", 12:64>>}}}"),
        /* updates of bad shapes, and one over the limit: none applied */
        "{update, %s, [{del, <<\"f\">>, <<\"k\">>}, {set, <<\"f\">>, <<\"k2\">>, 8, x} | y]}",
        "{update, %s, [{del, <<\"f\">>, <<\"k\">>}, {put, <<\"f\">>, <<\"k2\">>, 8, x}]}",
        "{update, %s, [{del, <<\"f\">>, <<\"k\">>}, {set, <<\"f\">>, <<\"k2\">>, 8, <<0:65536>>}]}",
        "{update, %s, x}",
        /* then a fine update: its effect shows that all before were read */
        "{update, %s, [{set, <<\"f\">>, <<\"k3\">>, 9, fine}]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        send_text(a.node, p, &to, bad[i], pid);
    EXPECT_VIEW(&rb, "k3=fine@a@127.0.0.1 k=ok@a@127.0.0.1 ");
    /* the port that spoke for a dies: its share goes with it */
    cr_assert_eq(aemp_port_close(a.node, p), 0);
    EXPECT_VIEW(&rb, "");
    /* b's clock saw stamp 12 (a record for no value): its next set is stamped 13 */
    set_atom(b.node, "f", "k", "mine", NULL);
    EXPECT_VIEW(&rb, "k=mine@b@127.0.0.1 ");
    struct stamp_answer sa = {0};
    cr_assert_eq(aemp_db_family(b.node, "f", on_stamp, &sa), 0);
    cr_assert(wait_int(&sa.calls, 1, 2000));
    cr_assert_eq(sa.stamp, 13);
    stop_node(&a);
    stop_node(&b);
}

/* Counts what aemp_db sends a port: local_data casts and discovers. */
struct spy {
    int local_data, discover;
};

static void spy_cb(aemp_node *n, aemp_port self, const aemp_term *msg, const aemp_addr *from,
                   void *arg)
{
    (void)n;
    (void)self;
    (void)from;
    struct spy *sp = arg;
    aemp_cursor c = aemp_cursor_of(msg);
    uint32_t arity;
    char tag[16];
    if (aemp_get_tuple(&c, &arity) || aemp_get_atom(&c, tag, sizeof tag)) return;
    if (strcmp(tag, "discover") == 0) sp->discover++;
    if (strcmp(tag, "$gen_cast") == 0 && aemp_get_tuple(&c, &arity) == 0 &&
        aemp_get_atom(&c, tag, sizeof tag) == 0 && strcmp(tag, "local_data") == 0)
        sp->local_data++;
}

/* Both ends of a new connection discover each other, and each discovers
 * back a peer it did not know: a peer that has had the share is not sent
 * it again; one that became a peer anew is. */
Test(db, a_peer_that_has_the_share_is_not_sent_it_again)
{
    struct node_ctx a, b;
    aemp__db_test_off = true;
    start_node(&a, "a@127.0.0.1", "c");
    aemp__db_test_off = false;
    start_node(&b, "b@127.0.0.1", "c");
    set_atom(b.node, "f", "k", "x", NULL);
    struct spy sp = {0}, sq = {0};
    aemp_port p, q;
    cr_assert_eq(aemp_port_open(a.node, spy_cb, &sp, &p), 0);
    cr_assert_eq(aemp_port_open(a.node, spy_cb, &sq, &q), 0);
    aemp_addr pa, qa, to;
    char ptext[128], qtext[128];
    cr_assert_eq(aemp_port_addr(a.node, p, &pa), 0);
    cr_assert_eq(aemp_port_addr(a.node, q, &qa), 0);
    aemp_addr_format(&pa, ptext, sizeof ptext);
    aemp_addr_format(&qa, qtext, sizeof qtext);
    name_addr(&to, b.node, "aemp_db");
    send_text(a.node, p, &to, "{discover, %s, 2}", ptext);
    cr_assert(wait_int(&sp.local_data, 1, 5000));
    cr_assert(wait_int(&sp.discover, 1, 5000), "a new peer is discovered back");
    /* p discovers again (as it would, answering b's discover): then q,
     * whose answer shows that b has read p's */
    send_text(a.node, p, &to, "{discover, %s, 2}", ptext);
    send_text(a.node, q, &to, "{discover, %s, 2}", qtext);
    cr_assert(wait_int(&sq.local_data, 1, 5000));
    cr_assert_eq(sp.local_data, 1, "p had the share and was sent it %d times", sp.local_data);
    /* q took p's place as a's peer: p is new again and gets the share */
    send_text(a.node, p, &to, "{discover, %s, 2}", ptext);
    cr_assert(wait_int(&sp.local_data, 2, 5000));
    stop_node(&a);
    stop_node(&b);
}

/* pg's side (db.h's hook, as src/svc/pg.c calls it): members without an
 * entry show with value undefined and lose to any entry of the port. */
Test(db, pg_members_show_below_entries)
{
    struct node_ctx a;
    start_node(&a, "a@127.0.0.1", "c");
    struct rec r = {0};
    cr_assert_eq(aemp_db_mon(a.node, "grp", rec_cb, &r, NULL), 0);
    cr_assert(wait_int(&r.calls, 1, 2000));
    aemp_port p;
    aemp_addr pa;
    cr_assert_eq(aemp_port_new(a.node, &p), 0);
    cr_assert_eq(aemp_port_addr(a.node, p, &pa), 0);
    char id[128], want[512];
    aemp_addr_format(&pa, id, sizeof id);
    aemp__db_pg_member(a.node, "grp", 3, &pa, 1);
    aemp__db_pg_member(a.node, "grp", 3, &pa, 1); /* idempotent */
    snprintf(want, sizeof want, "%s=undefined@ ", id);
    EXPECT_VIEW(&r, want);
    snprintf(want, sizeof want, "+%s ", id);
    cr_assert_str_eq(r.diff, want);
    /* db_reg's entry wins over the membership: changed */
    aemp_buf b = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_format(&b, "busy"), 0);
    aemp_term t = aemp_buf_term(&b);
    cr_assert_eq(aemp_db_reg(a.node, "grp", p, &t, NULL), 0);
    snprintf(want, sizeof want, "%s=busy@a@127.0.0.1 ", id);
    EXPECT_VIEW(&r, want);
    snprintf(want, sizeof want, "~%s ", id);
    cr_assert_str_eq(r.diff, want);
    /* the port dies: its entry goes, the membership shows until pg says */
    cr_assert_eq(aemp_port_close(a.node, p), 0);
    snprintf(want, sizeof want, "%s=undefined@ ", id);
    EXPECT_VIEW(&r, want);
    aemp__db_pg_member(a.node, "grp", 3, &pa, 0);
    EXPECT_VIEW(&r, "");
    snprintf(want, sizeof want, "-%s ", id);
    cr_assert_str_eq(r.diff, want);
    aemp_buf_free(&b);
    stop_node(&a);
}

struct count_rec {
    int calls;
    size_t count, added;
};

static void count_cb(aemp_node *n, const aemp_db_view *v, const aemp_db_diff *d, void *arg)
{
    struct count_rec *r = arg;
    r->calls++;
    r->count = aemp_db_view_count(v);
    r->added += d->nadded;
}

static int count_is(struct count_rec *r, size_t want, unsigned ms)
{
    int expired = 0;
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    t.data = &expired;
    uv_timer_start(&t, on_deadline, ms, 0);
    while (r->count != want && !expired)
        uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    return r->count == want;
}

/* A 10,000-key family reaches a node that joins later, whole; and goes
 * whole when its node does. */
Test(db, a_large_family_syncs_to_a_new_node)
{
    enum { N = 10000 };
    struct node_ctx a, b;
    start_node(&a, "a@127.0.0.1", "c");
    start_node(&b, "b@127.0.0.1", "c");
    aemp_buf v = AEMP_BUF_INIT;
    char key[32];
    for (int i = 0; i < N; i++) {
        aemp__buf_reset(&v);
        cr_assert_eq(aemp_term_format(&v, "{value, ~i}", (int64_t)i), 0);
        aemp_term t = aemp_buf_term(&v);
        snprintf(key, sizeof key, "k%d", i);
        cr_assert_eq(aemp_db_set(a.node, "big", key, &t, NULL), 0);
    }
    struct count_rec r = {0};
    cr_assert_eq(aemp_db_mon(b.node, "big", count_cb, &r, NULL), 0);
    cr_assert(wait_int(&r.calls, 1, 2000));
    cr_assert_eq(r.count, 0);
    cr_assert_eq(aemp_node_connect(b.node, "a@127.0.0.1"), 0);
    cr_assert(count_is(&r, N, 10000), "b sees %zu of %d", r.count, N);
    cr_assert_eq(r.added, N);
    stop_node(&a);
    cr_assert(count_is(&r, 0, 10000), "b still sees %zu", r.count);
    aemp_buf_free(&v);
    stop_node(&b);
}

/* With pg (scope aemp on both nodes): db_reg joins the port to the pg
 * group, a plain pg member shows in db_mon of another node, and a db_reg
 * guard's release leaves the group too. */
Test(db, db_reg_joins_pg_and_members_show)
{
    struct node_ctx a, b;
    aemp_node_config cfg = {0};
    cfg.cookie = "c";
    cfg.pg_scopes = "aemp";
    cfg.name = "a@127.0.0.1";
    start_node_cfg(&a, cfg);
    cfg.name = "b@127.0.0.1";
    start_node_cfg(&b, cfg);
    struct rec r = {0};
    cr_assert_eq(aemp_db_mon(b.node, "grp", rec_cb, &r, NULL), 0);
    cr_assert_eq(aemp_node_connect(a.node, "b@127.0.0.1"), 0);
    aemp_port p, q;
    aemp_addr pa, qa;
    char pid[128], qid[128], want[512];
    cr_assert_eq(aemp_port_new(a.node, &p), 0);
    cr_assert_eq(aemp_port_new(a.node, &q), 0);
    cr_assert_eq(aemp_port_addr(a.node, p, &pa), 0);
    cr_assert_eq(aemp_port_addr(a.node, q, &qa), 0);
    aemp_addr_format(&pa, pid, sizeof pid);
    aemp_addr_format(&qa, qid, sizeof qid);
    /* p: db_reg (entry and pg member); q: pg member only */
    aemp_guard g;
    cr_assert_eq(aemp_db_reg(a.node, "grp", p, NULL, &g), 0);
    cr_assert_eq(aemp_pg_members(a.node, "aemp", "grp", NULL, 0), 1);
    cr_assert_eq(aemp_pg_join(a.node, "grp", q), 0);
    /* (sorted as view_text sorts them) */
    char ip[200], iq[200];
    snprintf(ip, sizeof ip, "%s=undefined@a@127.0.0.1", pid);
    snprintf(iq, sizeof iq, "%s=undefined@", qid);
    snprintf(want, sizeof want, "%s %s ", strcmp(ip, iq) < 0 ? ip : iq,
             strcmp(ip, iq) < 0 ? iq : ip);
    EXPECT_VIEW(&r, want);
    /* the guard deletes p's entry and leaves the group: p is gone at b */
    cr_assert_eq(aemp_guard_release(a.node, g), 0);
    cr_assert_eq(aemp_pg_members(a.node, "aemp", "grp", NULL, 0), 1);
    snprintf(want, sizeof want, "%s=undefined@ ", qid);
    EXPECT_VIEW(&r, want);
    /* q dies: its membership goes */
    cr_assert_eq(aemp_port_close(a.node, q), 0);
    EXPECT_VIEW(&r, "");
    stop_node(&a);
    stop_node(&b);
}

static void read_count_cb(aemp_node *n, int status, const aemp_db_view *v, void *arg)
{
    (void)n;
    *(long *)arg = status ? -1 : (long)aemp_db_view_count(v);
}

/* The database copies a family's pg members when the family is first read
 * or watched: members that joined before show in that first read, and
 * changes after it show too. */
Test(db, pg_members_before_the_first_read_show)
{
    struct node_ctx a;
    aemp_node_config cfg = {0};
    cfg.cookie = "c";
    cfg.pg_scopes = "aemp";
    cfg.name = "a@127.0.0.1";
    start_node_cfg(&a, cfg);
    aemp_port p, q;
    cr_assert_eq(aemp_port_new(a.node, &p), 0);
    cr_assert_eq(aemp_port_new(a.node, &q), 0);
    cr_assert_eq(aemp_pg_join(a.node, "late", p), 0);
    cr_assert_eq(aemp_pg_join(a.node, "late", q), 0);
    long cnt = -2;
    cr_assert_eq(aemp_db_read(a.node, "late", read_count_cb, &cnt), 0);
    cr_assert_eq(cnt, 2);
    cr_assert_eq(aemp_pg_leave(a.node, "late", p), 0);
    cr_assert_eq(aemp_db_read(a.node, "late", read_count_cb, &cnt), 0);
    cr_assert_eq(cnt, 1);
    /* a family never read is not copied; watching it shows its members */
    cr_assert_eq(aemp_pg_join(a.node, "later", p), 0);
    struct count_rec r = {0};
    cr_assert_eq(aemp_db_mon(a.node, "later", count_cb, &r, NULL), 0);
    cr_assert(count_is(&r, 1, 2000), "db_mon sees %zu", r.count);
    cr_assert_eq(aemp_pg_join(a.node, "later", q), 0);
    cr_assert(count_is(&r, 2, 2000), "db_mon sees %zu", r.count);
    stop_node(&a);
}

/* A node that restarts (same name, a new incarnation) brings its share
 * back; the old incarnation's entries stay gone. */
Test(db, a_restarted_node_syncs_again)
{
    struct node_ctx a, b;
    /* b first: it holds the embedded EPMD while a restarts */
    start_node(&b, "b@127.0.0.1", "c");
    start_node(&a, "a@127.0.0.1", "c");
    struct rec r = {0};
    cr_assert_eq(aemp_db_mon(b.node, "f", rec_cb, &r, NULL), 0);
    set_atom(a.node, "f", "old", "x", NULL);
    cr_assert_eq(aemp_node_connect(a.node, "b@127.0.0.1"), 0);
    EXPECT_VIEW(&r, "old=x@a@127.0.0.1 ");
    stop_node(&a);
    EXPECT_VIEW(&r, "");
    start_node(&a, "a@127.0.0.1", "c");
    set_atom(a.node, "f", "new", "y", NULL);
    cr_assert_eq(aemp_node_connect(a.node, "b@127.0.0.1"), 0);
    EXPECT_VIEW(&r, "new=y@a@127.0.0.1 ");
    /* and b's set reaches the new incarnation */
    struct rec ra = {0};
    cr_assert_eq(aemp_db_mon(a.node, "f", rec_cb, &ra, NULL), 0);
    set_atom(b.node, "f", "back", "z", NULL);
    EXPECT_VIEW(&ra, "back=z@b@127.0.0.1 new=y@a@127.0.0.1 ");
    stop_node(&a);
    stop_node(&b);
}
