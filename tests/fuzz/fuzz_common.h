/*
 * fuzz_common.h - helpers shared by the libFuzzer harnesses in tests/fuzz/.
 *
 * Every harness is one LLVMFuzzerTestOneInput; these helpers are static so
 * each harness stays a single translation unit plus the library sources.
 */
#ifndef AEMP_FUZZ_COMMON_H
#define AEMP_FUZZ_COMMON_H

#include "aemp_impl.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* A failed invariant: print it and abort, so libFuzzer saves the input. */
#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Log lines are formatted (the format code runs on peer data) but dropped. */
static inline void fuzz_log_sink(int level, const char *msg, void *arg)
{
    (void)level;
    (void)arg;
    /* Touch the whole line so a missing terminator shows up under ASan. */
    volatile size_t n = strlen(msg);
    (void)n;
}

static inline void fuzz_quiet_logs(void)
{
    aemp_log_set_level(AEMP_LOG_DEBUG);
    aemp_log_set_callback(fuzz_log_sink, NULL);
}

/*
 * A copy of n bytes that ends exactly at an inaccessible page. libei is not
 * built with ASan, so its reads past a buffer are invisible to the
 * sanitizer; with the copy flush against a PROT_NONE page they fault. Returns
 * NULL if n is larger than the area (the caller then uses its own bytes).
 */
#define FUZZ_GUARD_AREA (1u << 20)
static inline const char *fuzz_guarded_copy(const void *p, size_t n)
{
    static char *area;
    static size_t page;
    if (!area) {
        page = (size_t)sysconf(_SC_PAGESIZE);
        void *m = mmap(NULL, FUZZ_GUARD_AREA + page, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        FUZZ_CHECK(m != MAP_FAILED);
        area = m;
        FUZZ_CHECK(mprotect(area + FUZZ_GUARD_AREA, page, PROT_NONE) == 0);
    }
    if (n > FUZZ_GUARD_AREA) return NULL;
    char *dst = area + FUZZ_GUARD_AREA - n;
    if (n) memcpy(dst, p, n);
    return dst;
}

#endif
