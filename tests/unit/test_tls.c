/*
 * test_tls.c - TLS distribution between C nodes, certificates from
 * aemp_tls_gencert, and the configurable limits.
 */
#include "harness.h"

#include <sys/stat.h>
#include <unistd.h>

static char dir[64], other[64];

static void tls_setup(void)
{
    setup();
    snprintf(dir, sizeof dir, "/tmp/aemp-tls-XXXXXX");
    snprintf(other, sizeof other, "/tmp/aemp-tls2-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    cr_assert_not_null(mkdtemp(other));
    const char *hosts[] = {"127.0.0.1", "localhost"};
    cr_assert_eq(aemp_tls_gencert(dir, "a", hosts, 2), 0);
    cr_assert_eq(aemp_tls_gencert(dir, "b", hosts, 2), 0);
    /* a certificate from another CA, and one for another host */
    cr_assert_eq(aemp_tls_gencert(other, "x", hosts, 2), 0);
    const char *elsewhere[] = {"10.9.9.9"};
    cr_assert_eq(aemp_tls_gencert(dir, "wronghost", elsewhere, 1), 0);
}

static void rm_dir(const char *d)
{
    const char *names[] = {"ca.pem", "ca.key", "a.pem", "a.key",         "b.pem",
                           "b.key",  "x.pem",  "x.key", "wronghost.pem", "wronghost.key"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char p[128];
        snprintf(p, sizeof p, "%s/%s", d, names[i]);
        unlink(p);
    }
    rmdir(d);
}

static void tls_teardown(void)
{
    teardown();
    rm_dir(dir);
    rm_dir(other);
}

struct paths {
    char cert[128], key[128], ca[128];
};

static void tls_node(struct node_ctx *c, const char *name, const char *cert_dir, const char *cert,
                     int no_tls)
{
    static struct paths p[4];
    static int next;
    struct paths *mine = &p[next++ % 4];
    snprintf(mine->cert, sizeof mine->cert, "%s/%s.pem", cert_dir, cert);
    snprintf(mine->key, sizeof mine->key, "%s/%s.key", cert_dir, cert);
    snprintf(mine->ca, sizeof mine->ca, "%s/ca.pem", cert_dir);
    aemp_node_config cfg = {0};
    cfg.name = name;
    cfg.cookie = "secret";
    if (!no_tls) {
        cfg.tls_cert = mine->cert;
        cfg.tls_key = mine->key;
        cfg.tls_ca = mine->ca;
    }
    start_node_cfg(c, cfg);
}

TestSuite(tls, .init = tls_setup, .fini = tls_teardown, .timeout = 60);

Test(tls, gencert_files_and_modes)
{
    char p[128];
    struct stat st;
    snprintf(p, sizeof p, "%s/a.key", dir);
    cr_assert_eq(stat(p, &st), 0);
    cr_assert_eq(st.st_mode & 077, 0, "key readable by others");
    snprintf(p, sizeof p, "%s/ca.key", dir);
    cr_assert_eq(stat(p, &st), 0);
    cr_assert_eq(st.st_mode & 077, 0);
    const char *none[] = {NULL};
    cr_assert_eq(aemp_tls_gencert(dir, "z", none, 0), AEMP_EINVAL);
    /* host names end up in OpenSSL config text: nothing else may pass */
    cr_assert_eq(aemp_tls_gencert(dir, "z", (const char *[]){"a,DNS:evil"}, 1), AEMP_EINVAL);
    cr_assert_eq(aemp_tls_gencert(dir, "z", (const char *[]){""}, 1), AEMP_EINVAL);
    /* a CA whose key is missing is an error, never silently replaced */
    char ca[128], key[128], moved[128];
    snprintf(ca, sizeof ca, "%s/ca.pem", dir);
    snprintf(key, sizeof key, "%s/ca.key", dir);
    snprintf(moved, sizeof moved, "%s/ca.key.moved", dir);
    struct stat before, after;
    cr_assert_eq(stat(ca, &before), 0);
    cr_assert_eq(rename(key, moved), 0);
    cr_assert_neq(aemp_tls_gencert(dir, "z", (const char *[]){"h"}, 1), 0);
    cr_assert_eq(rename(moved, key), 0);
    cr_assert_eq(stat(ca, &after), 0);
    cr_assert_eq(before.st_ino, after.st_ino, "the CA was replaced");
    cr_assert_eq(before.st_mtime, after.st_mtime, "the CA was rewritten");
    cr_assert_eq(aemp_tls_gencert(dir, "../z", (const char *[]){"h"}, 1), AEMP_EINVAL);
}

Test(tls, messages_flow_over_tls)
{
    struct node_ctx a, b;
    tls_node(&a, "a@127.0.0.1", dir, "a", 0);
    tls_node(&b, "b@127.0.0.1", dir, "b", 0);
    struct sink s = {0};
    aemp_addr to;
    sink_at(&b, "sink", &s, &to);
    send_numbers(&a, &to, 30);
    expect_numbers(&s, 30, 8000);
    /* a large message crosses many TLS records */
    static char big[3 << 20];
    memset(big, 'x', sizeof big);
    cr_assert_eq(aemp_sendf(a.node, (aemp_port){0}, &to, "{big, ~b}", big, sizeof big), 0);
    cr_assert(wait_sink(&s, 31, 8000));
    cr_assert_eq(a.fails, 0);
    stop_node(&a);
    stop_node(&b);
}

Test(tls, certificate_from_another_ca_is_refused)
{
    struct node_ctx a, b;
    tls_node(&a, "a@127.0.0.1", other, "x", 0);
    tls_node(&b, "b@127.0.0.1", dir, "b", 0);
    cr_assert_eq(aemp_node_connect(a.node, "b@127.0.0.1"), 0);
    cr_assert(run_until(&a.fails, 8000), "no failure reported");
    cr_assert_eq(a.ups, 0);
    cr_assert_eq(b.ups, 0);
    stop_node(&a);
    stop_node(&b);
}

Test(tls, plain_node_is_refused_and_tls_node_keeps_serving)
{
    struct node_ctx a, b, c;
    tls_node(&a, "a@127.0.0.1", dir, "a", 1);
    tls_node(&b, "b@127.0.0.1", dir, "b", 0);
    cr_assert_eq(aemp_node_connect(a.node, "b@127.0.0.1"), 0);
    cr_assert(run_until(&a.fails, 8000), "plain connect to a TLS node did not fail");
    cr_assert_eq(b.ups, 0);
    tls_node(&c, "c@127.0.0.1", dir, "a", 0);
    cr_assert_eq(aemp_node_connect(c.node, "b@127.0.0.1"), 0);
    cr_assert(run_until(&c.ups, 8000), "TLS node not served after a refusal");
    stop_node(&a);
    stop_node(&b);
    stop_node(&c);
}

Test(tls, certificate_for_another_host_is_refused)
{
    struct node_ctx a, b;
    tls_node(&a, "a@127.0.0.1", dir, "a", 0);
    tls_node(&b, "b@127.0.0.1", dir, "wronghost", 0);
    /* a (client) checks that b's certificate names 127.0.0.1 */
    cr_assert_eq(aemp_node_connect(a.node, "b@127.0.0.1"), 0);
    cr_assert(run_until(&a.fails, 8000));
    cr_assert_eq(a.ups, 0);
    /* b (client) connecting to a: a checks b's claimed host */
    cr_assert_eq(aemp_node_connect(b.node, "a@127.0.0.1"), 0);
    int down_or_fail = 0;
    for (int i = 0; i < 80 && !down_or_fail; i++) {
        run_until(&b.fails, 100);
        down_or_fail = b.fails || b.downs;
    }
    cr_assert(down_or_fail, "a accepted a certificate for another host");
    cr_assert_eq(a.ups, 0);
    stop_node(&a);
    stop_node(&b);
}

Test(tls, bad_files_are_reported)
{
    aemp_node *n = NULL;
    aemp_node_config cfg = {0};
    cfg.name = "a@127.0.0.1";
    cfg.cookie = "secret";
    cfg.tls_cert = "/nonexistent.pem";
    cfg.tls_key = "/nonexistent.key";
    cfg.tls_ca = "/nonexistent-ca.pem";
    cr_assert_eq(aemp_node_create(&loop, &cfg, &n), AEMP_EINVAL);
    cr_assert_null(n);
    cfg.tls_cert = NULL;
    cr_assert_eq(aemp_node_create(&loop, &cfg, &n), AEMP_EINVAL);
}

/* ------------------------------------------------------------------ */
/* limits                                                              */
/* ------------------------------------------------------------------ */

TestSuite(limits, .init = setup, .fini = teardown, .timeout = 60);

Test(limits, max_pending_refuses_with_ebusy)
{
    struct node_ctx a;
    aemp_node_config cfg = {0};
    cfg.name = "a@127.0.0.1";
    cfg.cookie = "secret";
    cfg.max_pending = 4096;
    start_node_cfg(&a, cfg);
    aemp_addr to;
    cr_assert_eq(aemp_addr_name(&to, "nosuch@127.0.0.1", "x"), 0);
    char blob[1000];
    memset(blob, 1, sizeof blob);
    int ok = 0, busy = 0;
    for (int i = 0; i < 10; i++) {
        int rc = aemp_sendf(a.node, (aemp_port){0}, &to, "~b", blob, sizeof blob);
        if (rc == 0)
            ok++;
        else if (rc == AEMP_EBUSY)
            busy++;
    }
    /* 4 KB hold three or four 1 KB messages with their routing records */
    cr_assert(ok >= 3 && ok <= 4, "%d queued", ok);
    cr_assert_eq(ok + busy, 10);
    cr_assert_geq(aemp_node_pending(a.node, "nosuch@127.0.0.1"), (size_t)ok * 1000);
    /* each queued message carries a few bytes of routing besides itself */
    cr_assert_leq(aemp_node_pending(a.node, "nosuch@127.0.0.1"), 4096 + 4 * 64);
    stop_node(&a);
}

Test(limits, oversized_packet_closes_connection)
{
    struct node_ctx a, b;
    start_node(&a, "a@127.0.0.1", "secret");
    aemp_node_config cfg = {0};
    cfg.name = "b@127.0.0.1";
    cfg.cookie = "secret";
    cfg.max_packet = 10000;
    start_node_cfg(&b, cfg);
    struct sink s = {0};
    aemp_addr to;
    sink_at(&b, "sink", &s, &to);
    cr_assert_eq(aemp_sendf(a.node, (aemp_port){0}, &to, "{n, 1}"), 0);
    cr_assert(wait_sink(&s, 1, 5000));
    static char big[20000];
    cr_assert_eq(aemp_sendf(a.node, (aemp_port){0}, &to, "{n, ~b}", big, sizeof big), 0);
    cr_assert(run_until(&b.downs, 5000), "oversized packet did not close the connection");
    cr_assert_eq(s.count, 1);
    /* b still serves: a reconnects on the next send */
    cr_assert(run_until(&a.downs, 5000));
    cr_assert_eq(aemp_sendf(a.node, (aemp_port){0}, &to, "{n, 2}"), 0);
    cr_assert(wait_sink(&s, 2, 5000));
    cr_assert_eq(s.values[1], 2);
    stop_node(&a);
    stop_node(&b);
}

Test(limits, max_connections_refuses_extra_peers)
{
    struct node_ctx a, b, c;
    aemp_node_config cfg = {0};
    cfg.name = "a@127.0.0.1";
    cfg.cookie = "secret";
    cfg.max_connections = 1;
    start_node_cfg(&a, cfg);
    start_node(&b, "b@127.0.0.1", "secret");
    start_node(&c, "c@127.0.0.1", "secret");
    cr_assert_eq(aemp_node_connect(b.node, "a@127.0.0.1"), 0);
    cr_assert(run_until(&a.ups, 5000));
    cr_assert_eq(aemp_node_connect(c.node, "a@127.0.0.1"), 0);
    cr_assert(run_until(&c.fails, 5000), "second connection was not refused");
    cr_assert_eq(a.ups, 1);
    cr_assert_eq(aemp_node_connect(a.node, "c@127.0.0.1"), AEMP_EBUSY);
    stop_node(&a);
    stop_node(&b);
    stop_node(&c);
}

/* A raw TCP client: connects, optionally writes bytes, records EOF. */
struct raw_peer {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;
    const char *send;
    size_t send_len;
    int closed; /* the node closed the connection */
    char buf[256];
};

static void raw_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct raw_peer *r = h->data;
    *b = uv_buf_init(r->buf, sizeof r->buf);
}

static void raw_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct raw_peer *r = s->data;
    if (n < 0) r->closed = 1;
}

static void raw_written(uv_write_t *w, int status) {}

static void raw_connected(uv_connect_t *req, int status)
{
    struct raw_peer *r = req->data;
    cr_assert_eq(status, 0);
    uv_read_start((uv_stream_t *)&r->tcp, raw_alloc, raw_read);
    if (r->send_len) {
        uv_buf_t b = uv_buf_init((char *)r->send, (unsigned)r->send_len);
        uv_write(&r->wreq, (uv_stream_t *)&r->tcp, &b, 1, raw_written);
    }
}

static void raw_connect(struct raw_peer *r, uint16_t port)
{
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", port, &a);
    uv_tcp_init(&loop, &r->tcp);
    r->tcp.data = r;
    r->creq.data = r;
    cr_assert_eq(uv_tcp_connect(&r->creq, &r->tcp, (struct sockaddr *)&a, raw_connected), 0);
}

Test(limits, silent_and_garbage_peers_are_dropped)
{
    struct node_ctx a;
    aemp_node_config cfg = {0};
    cfg.name = "a@127.0.0.1";
    cfg.cookie = "secret";
    cfg.handshake_timeout_ms = 500;
    start_node_cfg(&a, cfg);
    uint16_t port = aemp_node_listen_port(a.node);
    static struct raw_peer silent, garbage, huge;
    memset(&silent, 0, sizeof silent);
    memset(&garbage, 0, sizeof garbage);
    memset(&huge, 0, sizeof huge);
    garbage.send = "GET / HTTP/1.0\r\n\r\n";
    garbage.send_len = strlen(garbage.send);
    /* a handshake message claiming 65,000 bytes */
    huge.send = "\xfd\xe8N";
    huge.send_len = 3;
    raw_connect(&silent, port);
    raw_connect(&garbage, port);
    raw_connect(&huge, port);
    cr_assert(run_until(&garbage.closed, 2000), "garbage peer not dropped");
    cr_assert(run_until(&huge.closed, 2000), "oversized handshake message not refused");
    cr_assert_eq(silent.closed, 0, "silent peer dropped before the handshake timeout");
    cr_assert(run_until(&silent.closed, 3000), "silent peer not dropped");
    /* the node still serves a real peer */
    struct node_ctx b;
    start_node(&b, "b@127.0.0.1", "secret");
    cr_assert_eq(aemp_node_connect(b.node, "a@127.0.0.1"), 0);
    cr_assert(run_until(&b.ups, 5000));
    uv_close((uv_handle_t *)&silent.tcp, NULL);
    uv_close((uv_handle_t *)&garbage.tcp, NULL);
    uv_close((uv_handle_t *)&huge.tcp, NULL);
    stop_node(&a);
    stop_node(&b);
}
