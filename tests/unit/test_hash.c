/*
 * test_hash.c - the keyed hash (src/util/hash.c): SipHash-2-4 and -1-3
 * against reference values (the paper's key 00..0f and messages 00..n-1;
 * SipHash-1-3 with the zero key, the values Rust's DefaultHasher gives),
 * and the process key: stable within the process, not the zero key; a
 * word hashed alone (aemp__hash_keyed64) as its 8 bytes.
 */
#include <criterion/criterion.h>

#include "aemp_impl.h"
#include "util/hash.h"

static void message(uint8_t *m, size_t n)
{
    for (size_t i = 0; i < n; i++)
        m[i] = (uint8_t)i;
}

struct vector {
    size_t n; /* message 00..n-1 */
    uint64_t want;
};

/* SipHash-c-d under k of each vector's message is its value. */
static void check(const uint64_t k[2], int c, int d, const struct vector *v, size_t nv)
{
    uint8_t m[64];
    message(m, sizeof m);
    for (size_t i = 0; i < nv; i++)
        cr_assert_eq(aemp__siphash(k, c, d, m, v[i].n), v[i].want, "SipHash-%d-%d of %zu bytes", c,
                     d, v[i].n);
}

Test(hash, siphash_2_4_reference_vectors)
{
    const uint64_t k[2] = {0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL};
    static const struct vector v[] = {{0, 0x726fdb47dd0e0e31ULL},  {1, 0x74f839c593dc67fdULL},
                                      {7, 0xab0200f58b01d137ULL},  {8, 0x93f5f5799a932462ULL},
                                      {15, 0xa129ca6149be45e5ULL}, {16, 0x3f2acc7f57c29bdbULL},
                                      {63, 0x958a324ceb064572ULL}};
    check(k, 2, 4, v, sizeof v / sizeof v[0]);
}

Test(hash, siphash_1_3_reference_vectors)
{
    const uint64_t k[2] = {0, 0};
    static const struct vector v[] = {{0, 0xd1fba762150c532cULL},
                                      {3, 0x4d4c9a4a8ef6e0adULL},
                                      {8, 0xead411e67ebe2eeaULL},
                                      {15, 0xf30eb725bb91c9eaULL},
                                      {16, 0x8972188433a5c5b7ULL}};
    check(k, 1, 3, v, sizeof v / sizeof v[0]);
}

Test(hash, the_process_key_is_stable_and_not_zero)
{
    const uint64_t zero[2] = {0, 0};
    uint8_t m[15];
    message(m, sizeof m);
    uint64_t h = aemp__hash_keyed(m, sizeof m);
    cr_assert_eq(aemp__hash_keyed(m, sizeof m), h);
    /* (a zero or fixed key would give the public value) */
    cr_assert_neq(h, aemp__siphash(zero, 1, 3, m, sizeof m));
    cr_assert_neq(aemp__hash_keyed(m, 14), h);
}

Test(hash, a_keyed_word_is_the_keyed_hash_of_its_bytes)
{
    const uint64_t x[] = {0, 1, 0x4d4f4e, 0x0123456789abcdefULL, UINT64_MAX};
    for (size_t i = 0; i < sizeof x / sizeof x[0]; i++) {
        uint8_t le[8];
        for (int j = 0; j < 8; j++)
            le[j] = (uint8_t)(x[i] >> (8 * j));
        cr_assert_eq(aemp__hash_keyed64(x[i]), aemp__hash_keyed(le, sizeof le), "word %zu", i);
    }
    cr_assert_neq(aemp__hash_keyed64(1), aemp__hash_keyed64(2));
}

Test(hash, the_id_multiplier_is_odd_stable_and_secret)
{
    uint64_t k = aemp__hash_mult();
    cr_assert_eq(k & 1, 1);
    cr_assert_eq(k >> 63, 1);
    cr_assert_eq(aemp__hash_mult(), k);
    /* not the public Fibonacci constant the id maps used before */
    cr_assert_neq(k, 0x9E3779B97F4A7C15ULL);
}
