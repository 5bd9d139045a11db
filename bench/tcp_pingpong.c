/*
 * tcp_pingpong - the floor under every round trip of the aemp benchmark:
 * two processes bouncing a message of a fixed size over one TCP connection
 * on loopback, with nothing else in the way (no framing, no encoding, no
 * event loop): blocking read and write, TCP_NODELAY on both ends.
 *
 * Usage: tcp_pingpong [--size BYTES] [--count K]
 *
 * Forks: the child accepts and echoes, the parent sends, one message at a
 * time, max(10, K/20) untimed round trips and then K timed ones. Prints
 * "MEDIAN_NS P99_NS" (nearest-rank percentiles) on one line. Both
 * processes inherit the caller's CPU affinity: run it under `taskset -c 0`
 * to measure both ends on one CPU.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* 0 once all n bytes are read, -1 on error or end of stream. */
static int read_full(int fd, char *p, size_t n)
{
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static int write_full(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t r = write(fd, p, n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static void nodelay(int fd)
{
    int on = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
}

static int cmp_u64(const void *x, const void *y)
{
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return (a > b) - (a < b);
}

static uint64_t percentile(const uint64_t *sorted, size_t len, size_t p)
{
    size_t rank = (p * len + 99) / 100;
    if (rank < 1) rank = 1;
    if (rank > len) rank = len;
    return sorted[rank - 1];
}

static void echo(int lfd, size_t size)
{
    char *buf = malloc(size);
    int fd = accept(lfd, NULL, NULL);
    if (buf == NULL || fd < 0) _exit(1);
    nodelay(fd);
    while (read_full(fd, buf, size) == 0)
        if (write_full(fd, buf, size) < 0) break;
    free(buf);
    _exit(0);
}

int main(int argc, char **argv)
{
    size_t size = 100, k = 10000;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--size") == 0 && i + 1 < argc) {
            size = strtoul(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--count") == 0 && i + 1 < argc) {
            k = strtoul(argv[++i], NULL, 10);
        } else {
            fputs("usage: tcp_pingpong [--size BYTES] [--count K]\n", stderr);
            return 2;
        }
    }
    if (size == 0 || k == 0) {
        fputs("tcp_pingpong: size and count must be positive\n", stderr);
        return 2;
    }

    struct sockaddr_in sa;
    socklen_t salen = sizeof sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lfd, 1) < 0 ||
        getsockname(lfd, (struct sockaddr *)&sa, &salen) < 0) {
        perror("tcp_pingpong: listen");
        return 1;
    }
    pid_t child = fork();
    if (child < 0) {
        perror("tcp_pingpong: fork");
        return 1;
    }
    if (child == 0) echo(lfd, size);
    close(lfd);

    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        perror("tcp_pingpong: connect");
        return 1;
    }
    nodelay(fd);
    char *buf = malloc(size);
    uint64_t *samples = calloc(k, sizeof *samples);
    if (buf == NULL || samples == NULL) return 1;
    memset(buf, 'x', size);
    size_t warm = k / 20 > 10 ? k / 20 : 10;
    for (size_t i = 0; i < warm + k; i++) {
        uint64_t t0 = now_ns();
        if (write_full(fd, buf, size) < 0 || read_full(fd, buf, size) < 0) {
            perror("tcp_pingpong: round trip");
            return 1;
        }
        if (i >= warm) samples[i - warm] = now_ns() - t0;
    }
    close(fd);
    waitpid(child, NULL, 0);
    qsort(samples, k, sizeof *samples, cmp_u64);
    printf("%llu %llu\n", (unsigned long long)percentile(samples, k, 50),
           (unsigned long long)percentile(samples, k, 99));
    free(samples);
    free(buf);
    return 0;
}
