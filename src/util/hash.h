/* hash.h - a keyed hash for the tables whose keys peers choose.
 *
 * A table that hashes what a peer sent (a family's subkeys, a group's
 * pids) with a fixed, public function lets the peer pick keys that all
 * land in one slot and make every insertion walk the ones before. These
 * tables hash with SipHash-1-3 under a key drawn at random once per
 * process, which a peer cannot learn: the chained maps (map.h), the
 * table of links and monitors (proc/watch.c), the interned names
 * (term/intern.c), the db store's subkeys and pg's member index. */
#ifndef AEMP_HASH_H
#define AEMP_HASH_H

#include <stddef.h>
#include <stdint.h>

/* SipHash-1-3 of the n bytes at p under the process's random key. */
uint64_t aemp__hash_keyed(const void *p, size_t n);
/* The same of one 64-bit number (its 8 bytes little-endian), without the
 * byte loop: for tables keyed by ids and numbers. */
uint64_t aemp__hash_keyed64(uint64_t x);

/* An odd 64-bit multiplier drawn from the process's key (the same for
 * the whole process), for multiplicative hashing of the ids this node
 * hands out itself (idmap.h). */
uint64_t aemp__hash_mult(void);

/* SipHash-c-d of the n bytes at p under key k (k[0]: key bytes 0-7, k[1]:
 * bytes 8-15, little-endian), for the tests' reference vectors. */
uint64_t aemp__siphash(const uint64_t k[2], int c, int d, const void *p, size_t n);

#endif
