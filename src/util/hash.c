/* hash.c - SipHash (Aumasson and Bernstein), written from the paper's
 * description, and the process's random key. */
#include "hash.h"

#include "../aemp_impl.h"

#include <pthread.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ROTL(x, b) (((x) << (b)) | ((x) >> (64 - (b))))

struct sip {
    uint64_t v0, v1, v2, v3;
};

static void rounds(struct sip *s, int n)
{
    for (int i = 0; i < n; i++) {
        s->v0 += s->v1;
        s->v1 = ROTL(s->v1, 13);
        s->v1 ^= s->v0;
        s->v0 = ROTL(s->v0, 32);
        s->v2 += s->v3;
        s->v3 = ROTL(s->v3, 16);
        s->v3 ^= s->v2;
        s->v0 += s->v3;
        s->v3 = ROTL(s->v3, 21);
        s->v3 ^= s->v0;
        s->v2 += s->v1;
        s->v1 = ROTL(s->v1, 17);
        s->v1 ^= s->v2;
        s->v2 = ROTL(s->v2, 32);
    }
}

/* (written out: compilers make it one load on a little-endian machine) */
static uint64_t le64(const uint8_t *p)
{
    return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24 |
           (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 | (uint64_t)p[6] << 48 |
           (uint64_t)p[7] << 56;
}

uint64_t aemp__siphash(const uint64_t k[2], int c, int d, const void *p, size_t n)
{
    const uint8_t *b = p;
    struct sip s = {k[0] ^ 0x736f6d6570736575ULL, k[1] ^ 0x646f72616e646f6dULL,
                    k[0] ^ 0x6c7967656e657261ULL, k[1] ^ 0x7465646279746573ULL};
    size_t whole = n & ~(size_t)7;
    for (size_t i = 0; i < whole; i += 8) {
        uint64_t m = le64(b + i);
        s.v3 ^= m;
        rounds(&s, c);
        s.v0 ^= m;
    }
    /* the last 0 to 7 bytes, and the length's low byte on top */
    uint64_t m = (uint64_t)n << 56;
    for (size_t i = whole; i < n; i++)
        m |= (uint64_t)b[i] << (8 * (i - whole));
    s.v3 ^= m;
    rounds(&s, c);
    s.v0 ^= m;
    s.v2 ^= 0xff;
    rounds(&s, d);
    return s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
}

static uint64_t key[2];
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

static void key_init(void)
{
    if (aemp__random(key, sizeof key) == 0) return;
    /* no randomness to be had: as unpredictable as the process can make
     * it without */
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    uint64_t seed[2] = {(uint64_t)t.tv_nsec ^ (uint64_t)t.tv_sec << 30 ^ (uint64_t)getpid(),
                        (uint64_t)(uintptr_t)&t ^ (uint64_t)(uintptr_t)&key};
    key[0] = aemp__siphash(seed, 2, 4, "aemp key 0", 10);
    key[1] = aemp__siphash(seed, 2, 4, "aemp key 1", 10);
}

uint64_t aemp__hash_keyed(const void *p, size_t n)
{
    pthread_once(&key_once, key_init);
    return aemp__siphash(key, 1, 3, p, n);
}

uint64_t aemp__hash_mult(void)
{
    pthread_once(&key_once, key_init);
    /* odd, and with its top bit set: the slot is taken from the high bits
     * of the product */
    return aemp__siphash(key, 1, 3, "aemp idmap multiplier", 21) | 1 | 1ULL << 63;
}

uint64_t aemp__hash_keyed64(uint64_t x)
{
    pthread_once(&key_once, key_init);
    struct sip s = {key[0] ^ 0x736f6d6570736575ULL, key[1] ^ 0x646f72616e646f6dULL,
                    key[0] ^ 0x6c7967656e657261ULL, key[1] ^ 0x7465646279746573ULL};
    /* aemp__siphash of x's 8 bytes, little-endian: one whole word, then
     * the empty tail with the length */
    s.v3 ^= x;
    rounds(&s, 1);
    s.v0 ^= x;
    const uint64_t m = (uint64_t)8 << 56;
    s.v3 ^= m;
    rounds(&s, 1);
    s.v0 ^= m;
    s.v2 ^= 0xff;
    rounds(&s, 3);
    return s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
}
