/*
 * flood.c - a hostile client for the connection-slot test (test_flood.sh):
 * from source address SRC it keeps N idle connections and N half-done
 * handshakes (a send_name, then silence) open to a node's distribution
 * port, and N idle connections to EPMD, reopening each one the moment it
 * is closed, for SECONDS seconds or until SIGTERM. Prints how many
 * connections it opened and how many were closed under it, then exits 0.
 *
 * Usage: flood SRC NODE_PORT EPMD_PORT N SECONDS
 */
#include "say.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum kind { IDLE, HALF, EPMD_IDLE };

struct sock {
    int fd;
    enum kind kind;
};

static struct in_addr src;
static uint16_t node_port, epmd_port;
static unsigned long opened, dropped;
static volatile sig_atomic_t stop;

static void on_term(int sig)
{
    (void)sig;
    stop = 1;
}

static int open_one(enum kind kind)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in me = {.sin_family = AF_INET, .sin_addr = src};
    struct sockaddr_in to = {.sin_family = AF_INET,
                             .sin_port = htons(kind == EPMD_IDLE ? epmd_port : node_port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(fd, (struct sockaddr *)&me, sizeof me) ||
        connect(fd, (struct sockaddr *)&to, sizeof to)) {
        close(fd);
        return -1;
    }
    if (kind == HALF) {
        /* send_name, version 6: 'N', flags, creation, name */
        static const char name[] = "flood@nowhere";
        unsigned char m[2 + 1 + 8 + 4 + 2 + sizeof name - 1];
        size_t n = sizeof m - 2, k = 2;
        m[0] = (unsigned char)(n >> 8);
        m[1] = (unsigned char)n;
        m[k++] = 'N';
        uint64_t flags = 0x0000000D07DF7FBDULL;
        for (int i = 7; i >= 0; i--)
            m[k++] = (unsigned char)(flags >> (8 * i));
        memset(m + k, 0, 4);
        k += 4;
        m[k++] = 0;
        m[k++] = (unsigned char)(sizeof name - 1);
        memcpy(m + k, name, sizeof name - 1);
        if (write(fd, m, sizeof m) < 0) {
            close(fd);
            return -1;
        }
    }
    fcntl(fd, F_SETFL, O_NONBLOCK);
    opened++;
    return fd;
}

int main(int argc, char **argv)
{
    if (argc != 6 || inet_pton(AF_INET, argv[1], &src) != 1) {
        fprintf(stderr, "usage: flood SRC NODE_PORT EPMD_PORT N SECONDS\n");
        return 2;
    }
    node_port = (uint16_t)atoi(argv[2]);
    epmd_port = (uint16_t)atoi(argv[3]);
    int n = atoi(argv[4]);
    time_t end = time(NULL) + atoi(argv[5]);
    struct sock *s = calloc(3 * (size_t)n, sizeof *s);
    struct pollfd *pf = calloc(3 * (size_t)n, sizeof *pf);
    if (!s || !pf || n <= 0) return 2;
    for (int i = 0; i < 3 * n; i++) {
        s[i].kind = (enum kind)(i % 3);
        s[i].fd = open_one(s[i].kind);
    }
    signal(SIGTERM, on_term);
    say("flooding from %s", argv[1]);
    while (time(NULL) < end && !stop) {
        for (int i = 0; i < 3 * n; i++) {
            if (s[i].fd < 0) s[i].fd = open_one(s[i].kind);
            pf[i].fd = s[i].fd;
            pf[i].events = POLLIN;
            pf[i].revents = 0;
        }
        if (poll(pf, (nfds_t)(3 * n), 100) < 0 && errno != EINTR) return 1;
        for (int i = 0; i < 3 * n; i++) {
            if (s[i].fd < 0 || !(pf[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            char buf[512];
            ssize_t k = read(s[i].fd, buf, sizeof buf);
            if (k > 0) continue; /* the handshake's answer: stay silent */
            if (k < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            close(s[i].fd);
            s[i].fd = -1;
            dropped++;
        }
    }
    say("opened %lu connections, %lu closed under us", opened, dropped);
    for (int i = 0; i < 3 * n; i++)
        if (s[i].fd >= 0) close(s[i].fd);
    free(s);
    free(pf);
    return 0;
}
