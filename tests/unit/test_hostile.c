/*
 * test_hostile.c - what a peer must not be able to do: a message nested
 * deeper than max_term_depth costs that message (counted), not the
 * connection; a peer claiming the node's own name is refused in the
 * handshake.
 */
#include "harness.h"

#include "aemp_impl.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>

TestSuite(hostile, .init = setup, .fini = teardown, .timeout = 60);

/* A list nested `depth` deep: [[[...[x]...]]]. */
static void deep_list(aemp_buf *b, unsigned depth)
{
    b->len = 0;
    for (unsigned i = 0; i < depth; i++) {
        cr_assert_eq(aemp__buf_put_u8(b, AEMP__EXT_LIST), 0);
        cr_assert_eq(aemp__buf_put_u32(b, 1), 0);
    }
    cr_assert_eq(aemp__buf_put_u8(b, AEMP__EXT_SMALL_INTEGER), 0);
    cr_assert_eq(aemp__buf_put_u8(b, 7), 0);
    for (unsigned i = 0; i < depth; i++)
        cr_assert_eq(aemp__buf_put_u8(b, AEMP__EXT_NIL), 0);
}

static void count_cb(aemp_node *n, aemp_port self, const aemp_term *msg, const aemp_addr *from,
                     void *arg)
{
    ++*(int *)arg;
}

static void deep_messages(unsigned limit, unsigned ok_depth, unsigned bad_depth)
{
    struct node_ctx a, b;
    aemp_node_config cfg = {0};
    cfg.cookie = "secret";
    cfg.name = "a@127.0.0.1";
    start_node_cfg(&a, cfg);
    cfg.name = "b@127.0.0.1";
    cfg.max_term_depth = limit;
    start_node_cfg(&b, cfg);
    int got = 0;
    aemp_port p;
    aemp_addr to;
    cr_assert_eq(aemp_port_open(b.node, count_cb, &got, &p), 0);
    cr_assert_eq(aemp_port_addr(b.node, p, &to), 0);
    aemp_buf m = AEMP_BUF_INIT;
    deep_list(&m, ok_depth);
    aemp_term t = aemp_buf_term(&m);
    cr_assert_eq(aemp_send(a.node, (aemp_port){0}, &to, &t), 0);
    cr_assert(wait_int(&got, 1, 5000), "a message %u deep did not arrive", ok_depth);
    deep_list(&m, bad_depth);
    t = aemp_buf_term(&m);
    cr_assert_eq(aemp_send(a.node, (aemp_port){0}, &to, &t), 0);
    /* the next message arrives: the connection stayed up */
    cr_assert_eq(aemp_sendf(a.node, (aemp_port){0}, &to, "{after}"), 0);
    cr_assert(wait_int(&got, 2, 5000));
    cr_assert_eq(got, 2, "the message %u deep was delivered", bad_depth);
    aemp_conn_stats st;
    cr_assert_eq(aemp_node_stats(b.node, "a@127.0.0.1", &st), 0);
    cr_assert_eq(st.dropped_deep, 1);
    cr_assert_eq(b.downs, 0);
    cr_assert(aemp_node_is_up(b.node, "a@127.0.0.1"));
    aemp_buf_free(&m);
    stop_node(&a);
    stop_node(&b);
}

Test(hostile, too_deep_message_is_dropped_not_the_connection)
{
    /* the default: 10000 levels */
    deep_messages(0, 9999, 10001);
}

Test(hostile, max_term_depth_is_a_setting)
{
    deep_messages(100, 99, 101);
}

/* Raw TCP: a peer that names itself as the node it connects to. */
Test(hostile, own_name_is_refused)
{
    struct node_ctx a;
    start_node(&a, "a@127.0.0.1", "secret");
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(fd >= 0);
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons(aemp_node_listen_port(a.node));
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    aemp__hs hs;
    aemp_buf out = AEMP_BUF_INIT;
    cr_assert_eq(aemp__hs_init(&hs, AEMP__HS_INITIATOR, 2, "a@127.0.0.1", "secret", 1234,
                               aemp__dflags_offered(), "a@127.0.0.1"),
                 0);
    cr_assert_eq(aemp__hs_start(&hs, &out), 0);
    cr_assert_eq(write(fd, out.data, out.len), (ssize_t)out.len);
    /* read the status while the node's loop runs */
    char in[256];
    size_t n = 0;
    int rc = AEMP__HS_MORE;
    for (int turn = 0; turn < 5000 && rc == AEMP__HS_MORE; turn++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        struct pollfd pf = {fd, POLLIN, 0};
        if (poll(&pf, 1, 1) <= 0) continue;
        ssize_t k = read(fd, in + n, sizeof in - n);
        if (k <= 0) break;
        n += (size_t)k;
        size_t used;
        out.len = 0;
        rc = aemp__hs_input(&hs, in, n, &used, &out);
    }
    cr_assert_eq(rc, AEMP_ECONNREFUSED, "handshake went on: %d (%s)", rc, hs.error);
    cr_assert(strstr(hs.error, "not_allowed") != NULL, "%s", hs.error);
    cr_assert_eq(a.ups, 0);
    close(fd);
    aemp_buf_free(&out);
    stop_node(&a);
}

/* A socket on loopback that takes connections and never answers: the
 * kernel completes them into its backlog, nothing ever reads. */
static int silent_listener(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    cr_assert_eq(listen(fd, 512), 0);
    socklen_t len = sizeof sin;
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    *port = ntohs(sin.sin_port);
    return fd;
}

/* Register name at port with the EPMD on epmd_port (ALIVE2, version 6);
 * the registration lasts while the returned socket is open. */
static int epmd_register(uint16_t epmd, const char *name, uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {
        .sin_family = AF_INET, .sin_port = htons(epmd), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(connect(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    uint8_t req[64];
    size_t n = strlen(name), k = 2;
    req[k++] = 120;
    req[k++] = (uint8_t)(port >> 8);
    req[k++] = (uint8_t)port;
    req[k++] = 77;
    req[k++] = 0;
    req[k++] = 0, req[k++] = 6, req[k++] = 0, req[k++] = 6;
    req[k++] = 0, req[k++] = (uint8_t)n;
    memcpy(req + k, name, n);
    k += n;
    req[k++] = 0, req[k++] = 0;
    req[0] = (uint8_t)((k - 2) >> 8);
    req[1] = (uint8_t)(k - 2);
    cr_assert_eq(write(fd, req, k), (ssize_t)k);
    /* the answer: ALIVE2_X_RESP (118) or ALIVE2_RESP (121), result 0 */
    uint8_t resp[8];
    ssize_t got = 0;
    for (int i = 0; i < 5000 && got < 2; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        struct pollfd pf = {fd, POLLIN, 0};
        if (poll(&pf, 1, 1) > 0) {
            ssize_t r = read(fd, resp + got, sizeof resp - (size_t)got);
            if (r > 0) got += r;
        }
    }
    cr_assert(got >= 2 && (resp[0] == 118 || resp[0] == 121) && resp[1] == 0, "EPMD refused %s",
              name);
    return fd;
}

/* Outgoing attempts have a pool of their own: a program (or a peer making
 * it reply to pids on nodes that hang) can start max_connecting of them,
 * the next send to a new node gets AEMP_EBUSY, and peers can still connect
 * to the node meanwhile. */
Test(hostile, outgoing_attempts_have_their_own_pool)
{
    struct node_ctx a, b;
    aemp_node_config cfg = {0};
    cfg.cookie = "secret";
    cfg.name = "a@127.0.0.1";
    cfg.max_connecting = 8;
    start_node_cfg(&a, cfg);
    uint16_t hang_port;
    int hang = silent_listener(&hang_port);
    enum { N = 12 };
    int regs[N];
    aemp_addr to[N];
    for (int i = 0; i < N; i++) {
        char name[32];
        snprintf(name, sizeof name, "hang%d", i);
        regs[i] = epmd_register(epmd_port, name, hang_port);
        snprintf(name, sizeof name, "hang%d@127.0.0.1", i);
        cr_assert_eq(aemp_addr_name(&to[i], name, "x"), 0);
    }
    int ok = 0, busy = 0;
    for (int i = 0; i < N; i++) {
        int rc = aemp_sendf(a.node, (aemp_port){0}, &to[i], "{n, ~i}", (int64_t)i);
        if (rc == 0) ok++;
        if (rc == AEMP_EBUSY) busy++;
    }
    cr_assert_eq(ok, 8, "%d attempts started", ok);
    cr_assert_eq(busy, N - 8);
    /* a peer still gets in, and its message through */
    start_node(&b, "b@127.0.0.1", "secret");
    int got = 0;
    aemp_port p;
    aemp_addr pa;
    cr_assert_eq(aemp_port_open(a.node, count_cb, &got, &p), 0);
    cr_assert_eq(aemp_port_addr(a.node, p, &pa), 0);
    cr_assert_eq(aemp_sendf(b.node, (aemp_port){0}, &pa, "{hello}"), 0);
    cr_assert(wait_int(&got, 1, 5000), "the peer's message did not arrive");
    cr_assert_eq(a.fails, 0, "an attempt gave up early");
    for (int i = 0; i < N; i++)
        close(regs[i]);
    close(hang);
    stop_node(&b);
    stop_node(&a);
}
