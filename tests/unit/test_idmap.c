/*
 * test_idmap.c - the id map (src/util/idmap.c) against a plain array:
 * random puts, replaces and deletes (deletion shifts entries back, which
 * must never lose one), growth to 200,000 entries and shrinking back.
 */
#include <criterion/criterion.h>

#include "aemp_impl.h"
#include "util/hash.h"
#include "util/idmap.h"

#include <stdlib.h>

#define SPACE 4096

Test(idmap, random_ops_match_a_reference)
{
    aemp__idmap m;
    aemp__idmap_init(&m);
    static void *ref[SPACE];
    memset(ref, 0, sizeof ref);
    size_t count = 0;
    srand(7);
    for (int op = 0; op < 400000; op++) {
        /* ids from a small space collide in the table often */
        uint64_t id = 1 + (uint64_t)(rand() % (SPACE - 1)) * 0x10000;
        size_t k = (size_t)(id / 0x10000);
        if (rand() % 3) {
            void *v = (void *)(uintptr_t)(op + 1);
            cr_assert_eq(aemp__idmap_put(&m, id, v), 0);
            if (!ref[k]) count++;
            ref[k] = v;
        } else {
            cr_assert_eq(aemp__idmap_del(&m, id), ref[k]);
            if (ref[k]) count--;
            ref[k] = NULL;
        }
        cr_assert_eq(m.count, count);
        if (op % 997 == 0)
            for (size_t j = 0; j < SPACE; j++)
                cr_assert_eq(aemp__idmap_get(&m, 1 + (uint64_t)j * 0x10000), ref[j]);
    }
    aemp__idmap_free(&m);
}

Test(idmap, grows_and_shrinks)
{
    aemp__idmap m;
    aemp__idmap_init(&m);
    for (uint64_t id = 1; id <= 200000; id++)
        cr_assert_eq(aemp__idmap_put(&m, id, (void *)(uintptr_t)id), 0);
    cr_assert_eq(m.count, 200000);
    cr_assert_geq(m.mask + 1, 4 * 200000 / 3);
    for (uint64_t id = 1; id <= 200000; id++)
        cr_assert_eq(aemp__idmap_get(&m, id), (void *)(uintptr_t)id);
    cr_assert_null(aemp__idmap_get(&m, 200001));
    cr_assert_eq(aemp__idmap_put(&m, 0, &m), AEMP_EINVAL);
    for (uint64_t id = 1; id <= 199990; id++)
        cr_assert_eq(aemp__idmap_del(&m, id), (void *)(uintptr_t)id);
    cr_assert_eq(m.count, 10);
    cr_assert_leq(m.mask + 1, 1024, "the table shrank to %zu slots", m.mask + 1);
    for (uint64_t id = 199991; id <= 200000; id++)
        cr_assert_eq(aemp__idmap_get(&m, id), (void *)(uintptr_t)id);
    aemp__idmap_free(&m);
}

Test(idmap, slots_follow_the_process_multiplier)
{
    aemp__idmap m;
    aemp__idmap_init(&m);
    cr_assert_eq(aemp__idmap_put(&m, 42, &m), 0);
    cr_assert_eq(m.mult, aemp__hash_mult());
    /* the entry sits at its home under that multiplier (no collision in a
     * table of one) */
    cr_assert_eq(m.slots[aemp__idmap_home(&m, 42)].id, 42);
    aemp__idmap_free(&m);
    cr_assert_null(aemp__idmap_get(&m, 42));
    cr_assert_eq(aemp__idmap_put(&m, 7, &m), 0);
    cr_assert_eq(aemp__idmap_get(&m, 7), &m);
    aemp__idmap_free(&m);
}
