/* testutil.h - small helpers shared by the unit tests. */
#ifndef AEMP_TESTUTIL_H
#define AEMP_TESTUTIL_H

#include <criterion/criterion.h>

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* A TCP port nobody listens on right now, for a test's private EPMD or
 * listener. Not the kernel's pick (bind to port 0): that comes from the
 * ephemeral range, which the kernel goes on handing out to the sockets of
 * tests running beside this one, so another test's listener could take
 * the port before this test binds it (a node then spoke EPMD to another
 * node's distribution port: a flaky test). Ports below the ephemeral
 * range, picked at random (seeded by pid and time) and checked free. */
static inline uint16_t free_port(void)
{
    static unsigned seed;
    unsigned lo = 32768, hi = 60999;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (f) {
        if (fscanf(f, "%u %u", &lo, &hi) != 2) lo = 32768;
        fclose(f);
    }
    /* the window: [10000, lo) when there is room, else above hi */
    unsigned base = lo > 12000 ? 10000 : hi + 1, span = lo > 12000 ? lo - 10000 : 65535 - hi;
    cr_assert(span > 100, "no room for test ports outside the ephemeral range %u-%u", lo, hi);
    if (!seed) seed = (unsigned)getpid() * 2654435761u ^ (unsigned)time(NULL);
    for (int tries = 0; tries < 200; tries++) {
        uint16_t port = (uint16_t)(base + (unsigned)rand_r(&seed) % span);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        cr_assert(fd >= 0);
        struct sockaddr_in a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_port = htons(port);
        int ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
        close(fd);
        if (ok) return port;
    }
    cr_assert_fail("no free port found outside the ephemeral range");
    return 0;
}

#endif
