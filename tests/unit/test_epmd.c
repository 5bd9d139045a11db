/* test_epmd.c - EPMD codec, client, registration and embedded server, also
 * against the real epmd binary and real erl nodes. */
#include "epmd/epmd_int.h"

#include <criterion/criterion.h>

#include "testutil.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <glob.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

static uv_loop_t loop;
static bool loop_ready;

/* Children started by a test; killed in teardown whatever happened. */
#define MAX_CHILDREN 8
static pid_t children[MAX_CHILDREN];
static int nchildren;

static char logbuf[16384];
static size_t loglen;

static void capture_log(int level, const char *msg, void *arg)
{
    (void)level;
    (void)arg;
    int n = snprintf(logbuf + loglen, sizeof logbuf - loglen, "%s\n", msg);
    if (n > 0 && (size_t)n < sizeof logbuf - loglen) loglen += (size_t)n;
}

static void setup(void)
{
    cr_assert_eq(uv_loop_init(&loop), 0);
    loop_ready = true;
    loglen = 0;
    logbuf[0] = 0;
    aemp_log_set_callback(capture_log, NULL);
    aemp_log_set_level(AEMP_LOG_DEBUG);
}

static void kill_children(void)
{
    for (int i = 0; i < nchildren; i++) {
        if (children[i] > 0) {
            kill(-children[i], SIGKILL);
            kill(children[i], SIGKILL);
            waitpid(children[i], NULL, 0);
            children[i] = 0;
        }
    }
    nchildren = 0;
}

static void teardown(void)
{
    kill_children();
    aemp_log_set_callback(NULL, NULL);
}

static void on_deadline(uv_timer_t *t)
{
    *(bool *)t->data = true;
}

/* Run the loop until *cond or ms pass; returns *cond. */
static bool run_until(const bool *cond, unsigned ms)
{
    bool expired = false;
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    t.data = &expired;
    uv_timer_start(&t, on_deadline, ms, 0);
    while (!*cond && !expired)
        uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    return *cond;
}

static bool ticked;
static void on_tick(uv_timer_t *t)
{
    (void)t;
    ticked = true;
}

/* Let the loop run for ms (poll interval while waiting for a condition
 * that has no callback of its own, e.g. an external process). */
static void run_for(unsigned ms)
{
    ticked = false;
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    uv_timer_start(&t, on_tick, ms, 0);
    while (!ticked)
        uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
}

static void walk_close(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

/* Every handle must be gone by now: a leak fails the test. */
static void finish_loop(void)
{
    uv_run(&loop, UV_RUN_NOWAIT);
    int rc = uv_loop_close(&loop);
    if (rc != 0) {
        uv_walk(&loop, walk_close, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
    }
    loop_ready = false;
    cr_assert_eq(rc, 0, "handles left open on the loop");
}

struct regstate {
    int ok;
    int errors;
    int last;
    uint32_t creation;
    bool changed;
};

static void reg_cb(int status, uint32_t creation, void *arg)
{
    struct regstate *s = arg;
    s->last = status;
    if (status == 0) {
        s->ok++;
        s->creation = creation;
    } else {
        s->errors++;
    }
    s->changed = true;
}

static void set_flag(void *arg)
{
    *(bool *)arg = true;
}

static bool wait_reg(struct regstate *s, unsigned ms)
{
    s->changed = false;
    return run_until(&s->changed, ms);
}

static void close_reg(aemp__epmd_reg *r)
{
    bool done = false;
    aemp__epmd_reg_close(r, set_flag, &done);
    cr_assert(run_until(&done, 5000), "registration close did not complete");
}

static void close_server(aemp__epmd_server *s)
{
    bool done = false;
    aemp__epmd_server_close(s, set_flag, &done);
    cr_assert(run_until(&done, 5000), "server close did not complete");
}

struct qstate {
    bool done;
    int calls;
    int status;
    uint16_t port;
    char text[65536];
    size_t len;
};

static void port_cb(int status, uint16_t port, void *arg)
{
    struct qstate *q = arg;
    q->calls++;
    q->status = status;
    q->port = port;
    q->done = true;
}

static void names_cb(int status, const char *text, size_t len, void *arg)
{
    struct qstate *q = arg;
    q->calls++;
    q->status = status;
    if (len >= sizeof q->text) len = sizeof q->text - 1;
    memcpy(q->text, text, len);
    q->text[len] = 0;
    q->len = len;
    q->done = true;
}

static int port_please(const char *host, uint16_t eport, const char *name, uint16_t *port)
{
    static struct qstate q;
    memset(&q, 0, sizeof q);
    aemp__epmd_query *h = NULL;
    cr_assert_eq(aemp__epmd_port_please(&loop, host, eport, name, port_cb, &q, &h), 0);
    cr_assert(run_until(&q.done, 10000), "port_please never answered");
    cr_assert_eq(q.calls, 1);
    if (port) *port = q.port;
    return q.status;
}

static int names(const char *host, uint16_t eport, char *text, size_t size)
{
    static struct qstate q;
    memset(&q, 0, sizeof q);
    aemp__epmd_query *h = NULL;
    cr_assert_eq(aemp__epmd_names(&loop, host, eport, names_cb, &q, &h), 0);
    cr_assert(run_until(&q.done, 10000), "names never answered");
    cr_assert_eq(q.calls, 1);
    aemp__strlcpy(text, q.text, size);
    return q.status;
}

/* Poll port_please until the name is (want_found) or is not registered. */
static bool wait_port(uint16_t eport, const char *name, bool want_found, uint16_t *port,
                      unsigned ms)
{
    uint64_t end = uv_hrtime() + (uint64_t)ms * 1000000;
    while (uv_hrtime() < end) {
        int rc = port_please("127.0.0.1", eport, name, port);
        if (want_found ? rc == 0 : rc == AEMP_ENONODE) return true;
        run_for(50);
    }
    return false;
}

/* Start a long-lived child in its own process group; it dies with us. */
static pid_t start_child(char *const argv[])
{
    cr_assert(nchildren < MAX_CHILDREN);
    pid_t parent = getpid();
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127);
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
            if (!getenv("TEST_EPMD_VERBOSE")) dup2(null, 2);
        }
        execvp(argv[0], argv);
        _exit(127);
    }
    children[nchildren++] = pid;
    return pid;
}

/* Run a short command under the loop (which may be serving it), capturing
 * stdout. Returns the exit status, or -1 if it had to be killed. */
struct capture {
    uv_process_t proc;
    uv_pipe_t out;
    char buf[16384];
    size_t len;
    bool exited;
    bool eof;
    int64_t status;
};

static void cap_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
    (void)sz;
    struct capture *c = h->data;
    size_t room = sizeof c->buf - 1 - c->len;
    *b = uv_buf_init(c->buf + c->len, (unsigned)(room ? room : 1));
}

static void cap_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    (void)b;
    struct capture *c = s->data;
    if (n < 0) {
        c->eof = true;
        uv_close((uv_handle_t *)&c->out, NULL);
        return;
    }
    if (c->len + (size_t)n < sizeof c->buf) c->len += (size_t)n;
    c->buf[c->len] = 0;
}

static void cap_exit(uv_process_t *p, int64_t status, int sig)
{
    (void)sig;
    struct capture *c = p->data;
    c->status = status;
    c->exited = true;
    uv_close((uv_handle_t *)p, NULL);
}

static bool cap_done;

static int run_capture(char **argv, char *out, size_t size, unsigned ms)
{
    static struct capture c;
    memset(&c, 0, sizeof c);
    uv_pipe_init(&loop, &c.out, 0);
    c.out.data = &c;
    c.proc.data = &c;
    uv_stdio_container_t stdio[3];
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[1].data.stream = (uv_stream_t *)&c.out;
    stdio[2].flags = getenv("TEST_EPMD_VERBOSE") ? UV_INHERIT_FD : UV_IGNORE;
    stdio[2].data.fd = 2;
    uv_process_options_t opt;
    memset(&opt, 0, sizeof opt);
    opt.file = argv[0];
    opt.args = argv;
    opt.exit_cb = cap_exit;
    opt.stdio = stdio;
    opt.stdio_count = 3;
    int rc = uv_spawn(&loop, &c.proc, &opt);
    cr_assert_eq(rc, 0, "spawn %s: %s", argv[0], uv_strerror(rc));
    uv_read_start((uv_stream_t *)&c.out, cap_alloc, cap_read);
    uint64_t end = uv_hrtime() + (uint64_t)ms * 1000000;
    while (!(c.exited && c.eof) && uv_hrtime() < end) {
        cap_done = c.exited && c.eof;
        run_until(&cap_done, 100);
    }
    int result = (int)c.status;
    if (!c.exited) {
        uv_process_kill(&c.proc, SIGKILL);
        cap_done = false;
        while (!c.exited)
            run_until(&cap_done, 100);
        result = -1;
    }
    if (!c.eof) {
        uv_read_stop((uv_stream_t *)&c.out);
        uv_close((uv_handle_t *)&c.out, NULL);
    }
    uv_run(&loop, UV_RUN_NOWAIT);
    aemp__strlcpy(out, c.buf, size);
    return result;
}

static const char *epmd_binary(void)
{
    static char path[512];
    if (access("/usr/bin/epmd", X_OK) == 0) return "/usr/bin/epmd";
    glob_t g;
    if (glob("/usr/lib/erlang/erts-*/bin/epmd", 0, NULL, &g) == 0 && g.gl_pathc > 0) {
        aemp__strlcpy(path, g.gl_pathv[0], sizeof path);
        globfree(&g);
        return path;
    }
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Codec                                                               */
/* ------------------------------------------------------------------ */

TestSuite(epmd_codec);

static struct aemp__epmd_node sample_node(const char *name)
{
    struct aemp__epmd_node n;
    cr_assert_eq(aemp__epmd_node_init(&n, name, 4242, AEMP__EPMD_NODE_HIDDEN), 0);
    return n;
}

Test(epmd_codec, alive2_req_round_trip_and_every_prefix)
{
    struct aemp__epmd_node n = sample_node("alice");
    n.extra[0] = 'x';
    n.extra[1] = 'y';
    n.extra_len = 2;
    aemp_buf b = AEMP_BUF_INIT;
    cr_assert_eq(aemp__epmd_build_alive2_req(&b, &n), 0);
    cr_assert_eq(b.len, 2 + 13 + 5 + 2);
    cr_assert_eq(aemp__get_u16(b.data), b.len - 2);
    cr_assert_eq((uint8_t)b.data[2], AEMP__EPMD_ALIVE2_REQ);
    /* As erl_epmd.erl lays it out: port, 'H', 0, 6, 6, nlen, name, elen. */
    cr_assert_eq(aemp__get_u16(b.data + 3), 4242);
    cr_assert_eq(b.data[5], 'H');
    cr_assert_eq(b.data[6], 0);
    cr_assert_eq(aemp__get_u16(b.data + 7), 6);
    cr_assert_eq(aemp__get_u16(b.data + 9), 6);
    cr_assert_eq(aemp__get_u16(b.data + 11), 5);
    cr_assert_eq(memcmp(b.data + 13, "alice", 5), 0);

    struct aemp__epmd_req req;
    size_t used = 0;
    cr_assert_eq(aemp__epmd_parse_req(b.data, b.len, AEMP__EPMD_MAX_REQ, &req, &used), 0);
    cr_assert_eq(used, b.len);
    cr_assert_eq(req.code, AEMP__EPMD_ALIVE2_REQ);
    cr_assert_eq(req.node.port, 4242);
    cr_assert_eq(req.node.node_type, AEMP__EPMD_NODE_HIDDEN);
    cr_assert_eq(req.node.protocol, 0);
    cr_assert_eq(req.node.highest, 6);
    cr_assert_eq(req.node.lowest, 6);
    cr_assert_str_eq(req.node.name, "alice");
    cr_assert_eq(req.node.extra_len, 2);
    cr_assert_eq(memcmp(req.node.extra, "xy", 2), 0);
    for (size_t i = 0; i < b.len; i++)
        cr_assert_eq(aemp__epmd_parse_req(b.data, i, AEMP__EPMD_MAX_REQ, &req, &used),
                     AEMP__EPMD_MORE, "prefix %zu", i);
    /* Bytes after the frame are the next request's, not this one's. */
    cr_assert_eq(aemp__buf_put_u8(&b, 0), 0);
    cr_assert_eq(aemp__epmd_parse_req(b.data, b.len, AEMP__EPMD_MAX_REQ, &req, &used), 0);
    cr_assert_eq(used, b.len - 1);
    aemp_buf_free(&b);
}

Test(epmd_codec, port_please2_and_names_req)
{
    aemp_buf b = AEMP_BUF_INIT;
    cr_assert_eq(aemp__epmd_build_port_please2_req(&b, "bob"), 0);
    cr_assert_eq(b.len, 6);
    cr_assert_eq(memcmp(b.data, "\0\4\172bob", 6), 0);
    struct aemp__epmd_req req;
    size_t used = 0;
    cr_assert_eq(aemp__epmd_parse_req(b.data, b.len, AEMP__EPMD_MAX_REQ, &req, &used), 0);
    cr_assert_eq(req.code, AEMP__EPMD_PORT_PLEASE2_REQ);
    cr_assert_str_eq(req.node.name, "bob");
    cr_assert_eq(used, 6);
    for (size_t i = 0; i < b.len; i++)
        cr_assert_eq(aemp__epmd_parse_req(b.data, i, AEMP__EPMD_MAX_REQ, &req, &used),
                     AEMP__EPMD_MORE);
    aemp__buf_reset(&b);
    cr_assert_eq(aemp__epmd_build_names_req(&b), 0);
    cr_assert_eq(b.len, 3);
    cr_assert_eq(memcmp(b.data, "\0\1\156", 3), 0);
    cr_assert_eq(aemp__epmd_parse_req(b.data, b.len, AEMP__EPMD_MAX_REQ, &req, &used), 0);
    cr_assert_eq(req.code, AEMP__EPMD_NAMES_REQ);
    cr_assert_eq(used, 3);
    for (size_t i = 0; i < b.len; i++)
        cr_assert_eq(aemp__epmd_parse_req(b.data, i, AEMP__EPMD_MAX_REQ, &req, &used),
                     AEMP__EPMD_MORE);
    aemp_buf_free(&b);
}

Test(epmd_codec, builders_refuse_bad_names_and_leave_buffer)
{
    char big[300];
    memset(big, 'a', sizeof big);
    big[256] = 0;
    aemp_buf b = AEMP_BUF_INIT;
    cr_assert_eq(aemp__buf_append(&b, "keep", 4), 0);
    cr_assert_eq(aemp__epmd_build_port_please2_req(&b, big), AEMP_EINVAL);
    cr_assert_eq(aemp__epmd_build_port_please2_req(&b, ""), AEMP_EINVAL);
    cr_assert_eq(aemp__epmd_build_port_please2_req(&b, "a\nb"), AEMP_EINVAL);
    cr_assert_eq(aemp__epmd_build_names_line(&b, "a\nname x at port 1", 1), AEMP_EINVAL);
    struct aemp__epmd_node n;
    cr_assert_eq(aemp__epmd_node_init(&n, big, 1, AEMP__EPMD_NODE_HIDDEN), AEMP_EINVAL);
    cr_assert_eq(aemp__epmd_node_init(&n, "", 1, AEMP__EPMD_NODE_HIDDEN), AEMP_EINVAL);
    n = sample_node("ok");
    n.extra_len = AEMP__EPMD_MAX_EXTRA + 1;
    cr_assert_eq(aemp__epmd_build_alive2_req(&b, &n), AEMP_EINVAL);
    cr_assert_eq(aemp__epmd_build_port2_resp(&b, &n), AEMP_EINVAL);
    cr_assert_eq(b.len, 4);
    cr_assert_eq(memcmp(b.data, "keep", 4), 0);
    /* Exactly 255 bytes is a valid name. */
    big[255] = 0;
    cr_assert_eq(aemp__epmd_build_port_please2_req(&b, big), 0);
    cr_assert_eq(b.len, 4 + 3 + 255);
    aemp_buf_free(&b);
}

/* Frame body (code and payload) with a 2-byte length in front. */
static size_t frame(uint8_t *out, const void *body, size_t len)
{
    aemp__put_u16(out, (uint16_t)len);
    memcpy(out + 2, body, len);
    return len + 2;
}

static int parse(const uint8_t *p, size_t len, size_t max, struct aemp__epmd_req *req)
{
    size_t used = 0;
    return aemp__epmd_parse_req(p, len, max, req, &used);
}

Test(epmd_codec, parse_req_malformed)
{
    uint8_t buf[70000];
    uint8_t body[70000];
    struct aemp__epmd_req req;
    size_t used = 0;

    /* Zero length. */
    cr_assert_eq(parse((const uint8_t *)"\0\0", 2, 1024, &req), AEMP_EPROTO);
    /* Oversized length: refused from the 2 length bytes alone. */
    cr_assert_eq(parse((const uint8_t *)"\4\1", 2, 1024, &req), AEMP_ETOOBIG);
    cr_assert_eq(parse((const uint8_t *)"\377\377", 2, 1024, &req), AEMP_ETOOBIG);
    /* Unknown and client-only codes. */
    static const uint8_t codes[] = {0, 100, 107, 115, 118, 119, 121, 255};
    for (size_t i = 0; i < sizeof codes; i++) {
        uint8_t r[3] = {0, 1, codes[i]};
        cr_assert_eq(aemp__epmd_parse_req(r, 3, 1024, &req, &used), AEMP_ENOTSUP);
        cr_assert_eq(req.code, codes[i]);
        cr_assert_eq(used, 3);
    }
    /* NAMES_REQ with a payload. */
    cr_assert_eq(parse((const uint8_t *)"\0\2\156x", 4, 1024, &req), AEMP_EPROTO);
    /* PORT_PLEASE2_REQ: empty name, control bytes, too long. */
    cr_assert_eq(parse((const uint8_t *)"\0\1\172", 3, 1024, &req), AEMP_EPROTO);
    cr_assert_eq(parse((const uint8_t *)"\0\4\172a\0b", 6, 1024, &req), AEMP_EPROTO);
    cr_assert_eq(parse((const uint8_t *)"\0\4\172a\nb", 6, 1024, &req), AEMP_EPROTO);
    body[0] = AEMP__EPMD_PORT_PLEASE2_REQ;
    memset(body + 1, 'n', 256);
    size_t n = frame(buf, body, 257);
    cr_assert_eq(parse(buf, n, 65535, &req), AEMP_ETOOBIG);
    n = frame(buf, body, 256);
    cr_assert_eq(parse(buf, n, 65535, &req), 0);
    cr_assert_eq(req.node.name_len, 255);

    /* ALIVE2_REQ variants built by hand. */
    uint8_t a[64] = {
        AEMP__EPMD_ALIVE2_REQ, 0x10, 0x92, 'H', 0, 0, 6, 0, 6, 0, 3, 'a', 'b', 'c', 0, 0};
    size_t alen = 16;
    n = frame(buf, a, alen);
    cr_assert_eq(parse(buf, n, 1024, &req), 0);
    cr_assert_str_eq(req.node.name, "abc");
    cr_assert_eq(req.node.port, 0x1092);
    /* Frame shorter than the fixed part. */
    for (size_t k = 1; k < alen; k++) {
        n = frame(buf, a, k);
        cr_assert_eq(parse(buf, n, 1024, &req), AEMP_EPROTO, "cut at %zu", k);
    }
    /* Trailing byte inside the frame. */
    a[alen] = 'z';
    n = frame(buf, a, alen + 1);
    cr_assert_eq(parse(buf, n, 1024, &req), AEMP_EPROTO);
    /* Name length 0, longer than the frame, over 255. */
    uint8_t z[32];
    memcpy(z, a, alen);
    z[9] = 0;
    z[10] = 0;
    n = frame(buf, z, alen);
    cr_assert_eq(parse(buf, n, 1024, &req), AEMP_EPROTO);
    z[10] = 9;
    n = frame(buf, z, alen);
    cr_assert_eq(parse(buf, n, 1024, &req), AEMP_EPROTO);
    memset(body, 0, sizeof body);
    memcpy(body, a, 9);
    aemp__put_u16(body + 9, 256);
    memset(body + 11, 'q', 256);
    n = frame(buf, body, 11 + 256 + 2);
    cr_assert_eq(parse(buf, n, 65535, &req), AEMP_ETOOBIG);
    /* Extra length over the bound, and claiming more than the frame. */
    memcpy(z, a, alen);
    aemp__put_u16(z + 14, AEMP__EPMD_MAX_EXTRA + 1);
    n = frame(buf, z, alen);
    cr_assert_eq(parse(buf, n, 1024, &req), AEMP_ETOOBIG);
    aemp__put_u16(z + 14, 4);
    n = frame(buf, z, alen);
    cr_assert_eq(parse(buf, n, 1024, &req), AEMP_EPROTO);
    /* Control byte in the name. */
    memcpy(z, a, alen);
    z[12] = '\n';
    n = frame(buf, z, alen);
    cr_assert_eq(parse(buf, n, 1024, &req), AEMP_EPROTO);
}

Test(epmd_codec, alive2_resp)
{
    aemp_buf b = AEMP_BUF_INIT;
    cr_assert_eq(aemp__epmd_build_alive2_resp(&b, 0, 0xdeadbeef, true), 0);
    cr_assert_eq(b.len, 6);
    cr_assert_eq((uint8_t)b.data[0], 118);
    uint8_t result = 9;
    uint32_t cr = 0;
    size_t used = 0;
    for (size_t i = 0; i < b.len; i++)
        cr_assert_eq(aemp__epmd_parse_alive2_resp(b.data, i, &result, &cr, &used), AEMP__EPMD_MORE);
    cr_assert_eq(aemp__epmd_parse_alive2_resp(b.data, b.len, &result, &cr, &used), 0);
    cr_assert_eq(result, 0);
    cr_assert_eq(cr, 0xdeadbeef);
    cr_assert_eq(used, 6);

    aemp__buf_reset(&b);
    cr_assert_eq(aemp__epmd_build_alive2_resp(&b, 1, 3, false), 0);
    cr_assert_eq(b.len, 4);
    cr_assert_eq((uint8_t)b.data[0], 121);
    for (size_t i = 0; i < b.len; i++)
        cr_assert_eq(aemp__epmd_parse_alive2_resp(b.data, i, &result, &cr, &used), AEMP__EPMD_MORE);
    cr_assert_eq(aemp__epmd_parse_alive2_resp(b.data, b.len, &result, &cr, &used), 0);
    cr_assert_eq(result, 1);
    cr_assert_eq(cr, 3);
    cr_assert_eq(used, 4);

    static const uint8_t bad[] = {119, 0, 0, 0, 0, 0};
    cr_assert_eq(aemp__epmd_parse_alive2_resp(bad, sizeof bad, &result, &cr, &used), AEMP_EPROTO);
    cr_assert_eq(aemp__epmd_parse_alive2_resp("H", 1, &result, &cr, &used), AEMP_EPROTO);
    aemp_buf_free(&b);
}

Test(epmd_codec, port2_resp)
{
    struct aemp__epmd_node n = sample_node("carol");
    aemp_buf b = AEMP_BUF_INIT;
    cr_assert_eq(aemp__epmd_build_port2_resp(&b, &n), 0);
    cr_assert_eq(b.len, 2 + 10 + 5 + 2);
    uint8_t result = 9;
    struct aemp__epmd_node got;
    size_t used = 0;
    for (size_t i = 0; i < b.len; i++)
        cr_assert_eq(aemp__epmd_parse_port2_resp(b.data, i, &result, &got, &used), AEMP__EPMD_MORE,
                     "prefix %zu", i);
    cr_assert_eq(aemp__epmd_parse_port2_resp(b.data, b.len, &result, &got, &used), 0);
    cr_assert_eq(result, 0);
    cr_assert_eq(used, b.len);
    cr_assert_eq(got.port, 4242);
    cr_assert_str_eq(got.name, "carol");
    cr_assert_eq(got.highest, 6);

    aemp__buf_reset(&b);
    cr_assert_eq(aemp__epmd_build_port2_resp(&b, NULL), 0);
    cr_assert_eq(b.len, 2);
    cr_assert_eq(aemp__epmd_parse_port2_resp(b.data, 1, &result, &got, &used), AEMP__EPMD_MORE);
    cr_assert_eq(aemp__epmd_parse_port2_resp(b.data, 2, &result, &got, &used), 0);
    cr_assert_eq(result, 1);
    cr_assert_eq(used, 2);

    uint8_t bad[300] = {118, 0};
    cr_assert_eq(aemp__epmd_parse_port2_resp(bad, 2, &result, &got, &used), AEMP_EPROTO);
    /* Name length 0, over 255; extra length over the bound. */
    uint8_t r[300] = {119, 0, 0, 1, 'H', 0, 0, 6, 0, 6, 0, 0};
    cr_assert_eq(aemp__epmd_parse_port2_resp(r, 12, &result, &got, &used), AEMP_EPROTO);
    aemp__put_u16(r + 10, 256);
    cr_assert_eq(aemp__epmd_parse_port2_resp(r, 12, &result, &got, &used), AEMP_ETOOBIG);
    aemp__put_u16(r + 10, 1);
    r[12] = 'x';
    aemp__put_u16(r + 13, 60000);
    cr_assert_eq(aemp__epmd_parse_port2_resp(r, 15, &result, &got, &used), AEMP_ETOOBIG);
    r[12] = 0;
    aemp__put_u16(r + 13, 0);
    cr_assert_eq(aemp__epmd_parse_port2_resp(r, 15, &result, &got, &used), AEMP_EPROTO);
    aemp_buf_free(&b);
}

Test(epmd_codec, names_text)
{
    aemp_buf b = AEMP_BUF_INIT;
    cr_assert_eq(aemp__epmd_build_names_resp(&b, 4369), 0);
    cr_assert_eq(aemp__epmd_build_names_line(&b, "foobar", 1), 0);
    cr_assert_eq(aemp__epmd_build_names_line(&b, "foo", 65535), 0);
    cr_assert_eq(aemp__buf_append(&b, "name bad at port 70000\nname x at port\ngarbage\n", 46), 0);
    cr_assert_eq(aemp__buf_append(&b, "name last at port 7", 19), 0);
    uint32_t ep = 0;
    size_t off = 0;
    for (size_t i = 0; i < 4; i++)
        cr_assert_eq(aemp__epmd_parse_names_resp(b.data, i, &ep, &off), AEMP__EPMD_MORE);
    cr_assert_eq(aemp__epmd_parse_names_resp(b.data, b.len, &ep, &off), 0);
    cr_assert_eq(ep, 4369);
    cr_assert_eq(off, 4);
    const char *t = b.data + off;
    size_t tl = b.len - off;
    cr_assert_eq(strncmp(t, "name foobar at port 1\nname foo at port 65535\n", 45), 0);
    uint16_t port = 0;
    cr_assert_eq(aemp__epmd_names_find(t, tl, "foo", &port), 0);
    cr_assert_eq(port, 65535);
    cr_assert_eq(aemp__epmd_names_find(t, tl, "foobar", &port), 0);
    cr_assert_eq(port, 1);
    cr_assert_eq(aemp__epmd_names_find(t, tl, "last", &port), 0);
    cr_assert_eq(port, 7);
    cr_assert_eq(aemp__epmd_names_find(t, tl, "fo", &port), AEMP_ENONODE);
    cr_assert_eq(aemp__epmd_names_find(t, tl, "bad", &port), AEMP_ENONODE);
    cr_assert_eq(aemp__epmd_names_find(t, tl, "x", &port), AEMP_ENONODE);
    cr_assert_eq(aemp__epmd_names_find(t, 0, "foo", &port), AEMP_ENONODE);
    aemp_buf_free(&b);
}

/* Deterministic garbage through every parser: must never read past len
 * (ASan checks that) and must report a consistent outcome. */
Test(epmd_codec, random_garbage)
{
    uint32_t x = 12345;
    for (int iter = 0; iter < 200000; iter++) {
        size_t len = 0;
        x = x * 1103515245u + 12345u;
        len = (x >> 16) % 40;
        uint8_t *p = malloc(len ? len : 1);
        for (size_t i = 0; i < len; i++) {
            x = x * 1103515245u + 12345u;
            p[i] = (uint8_t)(x >> 16);
        }
        /* Bias toward known codes and small lengths so deep paths run. */
        if (len > 2 && (iter & 1)) {
            p[0] = 0;
            p[1] = (uint8_t)(len - 2 - (iter & 2 ? 0 : 1));
            static const uint8_t k[] = {120, 122, 110};
            p[2] = k[iter % 3];
        }
        struct aemp__epmd_req req;
        struct aemp__epmd_node node;
        uint8_t result;
        uint32_t cr;
        uint32_t ep;
        size_t used = 0;
        int rc = aemp__epmd_parse_req(p, len, AEMP__EPMD_MAX_REQ, &req, &used);
        if (rc == 0) cr_assert(used <= len);
        used = 0;
        rc = aemp__epmd_parse_alive2_resp(p, len, &result, &cr, &used);
        if (rc == 0) cr_assert(used <= len);
        used = 0;
        rc = aemp__epmd_parse_port2_resp(p, len, &result, &node, &used);
        if (rc == 0) cr_assert(used <= len);
        aemp__epmd_parse_names_resp(p, len, &ep, &used);
        uint16_t port;
        aemp__epmd_names_find((const char *)p, len, "a", &port);
        free(p);
    }
}

Test(epmd_codec, epmd_port_from_env)
{
    unsetenv("ERL_EPMD_PORT");
    cr_assert_eq(aemp__epmd_port(0), 4369);
    cr_assert_eq(aemp__epmd_port(1234), 1234);
    setenv("ERL_EPMD_PORT", "5555", 1);
    cr_assert_eq(aemp__epmd_port(0), 5555);
    cr_assert_eq(aemp__epmd_port(7), 7);
    static const char *bad[] = {"", "abc", "12x", "-1", "0", "65536", "99999999999999", " 12"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        setenv("ERL_EPMD_PORT", bad[i], 1);
        cr_assert_eq(aemp__epmd_port(0), 4369, "'%s'", bad[i]);
    }
    unsetenv("ERL_EPMD_PORT");
}

/* ------------------------------------------------------------------ */
/* Client, registration and embedded server                            */
/* ------------------------------------------------------------------ */

/* Raw connection that sends bytes and waits for the server to close. */
struct raw {
    uv_tcp_t tcp;
    uv_connect_t conn;
    uv_write_t wr;
    char *data;
    size_t len;
    char in[256];
    size_t inlen;
    bool connected;
    bool closed;
};

static void raw_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
    (void)sz;
    struct raw *r = h->data;
    size_t room = sizeof r->in - r->inlen;
    *b = uv_buf_init(r->in + r->inlen, (unsigned)(room ? room : 1));
}

static void raw_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    (void)b;
    struct raw *r = s->data;
    if (n < 0) {
        r->closed = true;
        uv_read_stop(s);
        return;
    }
    if (r->inlen + (size_t)n <= sizeof r->in) r->inlen += (size_t)n;
}

static void raw_written(uv_write_t *w, int status)
{
    (void)w;
    (void)status;
}

static void raw_connected(uv_connect_t *c, int status)
{
    struct raw *r = c->data;
    cr_assert_eq(status, 0);
    r->connected = true;
    if (r->len) {
        uv_buf_t b = uv_buf_init(r->data, (unsigned)r->len);
        uv_write(&r->wr, (uv_stream_t *)&r->tcp, &b, 1, raw_written);
    }
    uv_read_start((uv_stream_t *)&r->tcp, raw_alloc, raw_read);
}

static void raw_open(struct raw *r, uint16_t port, const void *data, size_t len)
{
    memset(r, 0, sizeof *r);
    r->data = malloc(len ? len : 1);
    memcpy(r->data, data, len);
    r->len = len;
    uv_tcp_init(&loop, &r->tcp);
    r->tcp.data = r;
    r->conn.data = r;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", port, &a);
    cr_assert_eq(uv_tcp_connect(&r->conn, &r->tcp, (struct sockaddr *)&a, raw_connected), 0);
}

static void raw_closed(uv_handle_t *h)
{
    *(bool *)h->data = true;
}

static void raw_free(struct raw *r)
{
    bool done = false;
    r->tcp.data = &done;
    uv_close((uv_handle_t *)&r->tcp, raw_closed);
    while (!done)
        uv_run(&loop, UV_RUN_ONCE);
    free(r->data);
}

TestSuite(epmd_live, .init = setup, .fini = teardown, .timeout = 60);

Test(epmd_live, register_query_and_refuse_duplicate)
{
    uint16_t ep = free_port();
    struct regstate ra = {0};
    aemp__epmd_reg *a = NULL;
    cr_assert_eq(aemp__epmd_reg_start(&loop, ep, "alice", 12345, reg_cb, &ra, &a), 0);
    cr_assert(wait_reg(&ra, 5000));
    cr_assert_eq(ra.last, 0, "%s", aemp_strerror(ra.last));
    cr_assert_neq(ra.creation, 0);
    cr_assert_eq(aemp__epmd_reg_is_server(a), 1, "nobody served the port: a must embed EPMD");

    uint16_t port = 0;
    cr_assert_eq(port_please("127.0.0.1", ep, "alice", &port), 0);
    cr_assert_eq(port, 12345);
    cr_assert_eq(port_please("localhost", ep, "alice", &port), 0);
    cr_assert_eq(port, 12345);
    cr_assert_eq(port_please("127.0.0.1", ep, "nobody", &port), AEMP_ENONODE);

    char text[4096];
    cr_assert_eq(names("localhost", ep, text, sizeof text), 0);
    cr_assert(strstr(text, "name alice at port 12345\n"), "names: %s", text);

    struct regstate rb = {0};
    aemp__epmd_reg *b = NULL;
    cr_assert_eq(aemp__epmd_reg_start(&loop, ep, "alice", 2222, reg_cb, &rb, &b), 0);
    cr_assert(wait_reg(&rb, 5000));
    cr_assert_eq(rb.last, AEMP_EEXIST);
    cr_assert_eq(aemp__epmd_reg_is_server(b), 0);
    /* No retry after a refused first registration. */
    run_for(400);
    cr_assert_eq(rb.errors, 1);
    cr_assert_eq(rb.ok, 0);
    close_reg(b);
    cr_assert_eq(port_please("127.0.0.1", ep, "alice", &port), 0);
    cr_assert_eq(port, 12345);
    close_reg(a);
    cr_assert_eq(ra.ok, 1);
    cr_assert_eq(ra.errors, 0);
    cr_assert_eq(port_please("127.0.0.1", ep, "alice", &port), AEMP_ECONNREFUSED);
    finish_loop();
}

Test(epmd_live, closing_connection_unregisters)
{
    uint16_t ep = free_port();
    aemp__epmd_server *srv = NULL;
    cr_assert_eq(aemp__epmd_server_start(&loop, ep, &srv), 0);
    aemp__epmd_server *again = NULL;
    cr_assert_eq(aemp__epmd_server_start(&loop, ep, &again), AEMP_EEXIST);
    cr_assert_null(again);

    struct regstate ra = {0}, rb = {0};
    aemp__epmd_reg *a = NULL, *b = NULL;
    cr_assert_eq(aemp__epmd_reg_start(&loop, ep, "one", 1001, reg_cb, &ra, &a), 0);
    cr_assert_eq(aemp__epmd_reg_start(&loop, ep, "two", 1002, reg_cb, &rb, &b), 0);
    cr_assert(wait_reg(&ra, 5000) || ra.ok);
    cr_assert(rb.ok || wait_reg(&rb, 5000));
    cr_assert_eq(ra.ok, 1);
    cr_assert_eq(rb.ok, 1);
    cr_assert_neq(ra.creation, rb.creation);
    cr_assert_eq(aemp__epmd_reg_is_server(a), 0);
    cr_assert_eq(aemp__epmd_reg_is_server(b), 0);

    char text[4096];
    cr_assert_eq(names("127.0.0.1", ep, text, sizeof text), 0);
    cr_assert(strstr(text, "name one at port 1001\n"), "%s", text);
    cr_assert(strstr(text, "name two at port 1002\n"), "%s", text);

    close_reg(a);
    cr_assert(wait_port(ep, "one", false, NULL, 5000));
    uint16_t port = 0;
    cr_assert_eq(port_please("127.0.0.1", ep, "two", &port), 0);
    cr_assert_eq(port, 1002);
    /* The freed name can be registered again. */
    struct regstate rc = {0};
    aemp__epmd_reg *c = NULL;
    cr_assert_eq(aemp__epmd_reg_start(&loop, ep, "one", 1003, reg_cb, &rc, &c), 0);
    cr_assert(wait_reg(&rc, 5000));
    cr_assert_eq(rc.last, 0);
    cr_assert_eq(port_please("127.0.0.1", ep, "one", &port), 0);
    cr_assert_eq(port, 1003);

    /* Losing the server sends the clients into their retry delay; closing
     * them then must not call back. */
    close_server(srv);
    close_reg(c);
    close_reg(b);
    run_for(400);
    cr_assert_eq(rb.ok + rb.errors, 1);
    cr_assert_eq(rc.ok + rc.errors, 1);
    finish_loop();
}

Test(epmd_live, takeover_when_serving_node_dies)
{
    uint16_t ep = free_port();
    struct regstate ra = {0}, rb = {0};
    aemp__epmd_reg *a = NULL, *b = NULL;
    cr_assert_eq(aemp__epmd_reg_start(&loop, ep, "nodea", 3001, reg_cb, &ra, &a), 0);
    cr_assert(wait_reg(&ra, 5000));
    cr_assert_eq(ra.last, 0);
    cr_assert_eq(aemp__epmd_reg_is_server(a), 1);
    cr_assert_eq(aemp__epmd_reg_start(&loop, ep, "nodeb", 3002, reg_cb, &rb, &b), 0);
    cr_assert(wait_reg(&rb, 5000));
    cr_assert_eq(rb.last, 0);
    cr_assert_eq(aemp__epmd_reg_is_server(b), 0);
    uint32_t first = rb.creation;

    close_reg(a);
    /* b notices, waits 20-300 ms, binds the port, registers again. */
    cr_assert(wait_reg(&rb, 5000), "b did not re-register");
    cr_assert_eq(rb.last, 0, "%s", aemp_strerror(rb.last));
    cr_assert_eq(rb.ok, 2);
    cr_assert_eq(aemp__epmd_reg_is_server(b), 1);
    cr_assert_neq(rb.creation, 0);
    cr_assert_neq(rb.creation, first, "a new EPMD hands out a new creation");
    uint16_t port = 0;
    cr_assert_eq(port_please("127.0.0.1", ep, "nodeb", &port), 0);
    cr_assert_eq(port, 3002);
    cr_assert_eq(port_please("127.0.0.1", ep, "nodea", &port), AEMP_ENONODE);
    cr_assert(strstr(logbuf, "re-registered 'nodeb'"), "log: %s", logbuf);
    close_reg(b);
    finish_loop();
}

Test(epmd_live, takeover_many_nodes)
{
    /* Several nodes lose their EPMD together: exactly one serves, all
     * register again. */
    enum { N = 6 };
    uint16_t ep = free_port();
    aemp__epmd_server *srv = NULL;
    cr_assert_eq(aemp__epmd_server_start(&loop, ep, &srv), 0);
    struct regstate rs[N];
    aemp__epmd_reg *r[N];
    memset(rs, 0, sizeof rs);
    for (int i = 0; i < N; i++) {
        char name[16];
        snprintf(name, sizeof name, "n%d", i);
        cr_assert_eq(
            aemp__epmd_reg_start(&loop, ep, name, (uint16_t)(5000 + i), reg_cb, &rs[i], &r[i]), 0);
    }
    for (int i = 0; i < N; i++)
        while (rs[i].ok == 0)
            cr_assert(wait_reg(&rs[i], 5000));
    close_server(srv);
    uint64_t end = uv_hrtime() + 5000ull * 1000000;
    for (;;) {
        int done = 0;
        for (int i = 0; i < N; i++)
            done += rs[i].ok == 2;
        if (done == N) break;
        cr_assert(uv_hrtime() < end, "only %d of %d re-registered", done, N);
        run_for(20);
    }
    int servers = 0;
    for (int i = 0; i < N; i++) {
        servers += aemp__epmd_reg_is_server(r[i]);
        cr_assert_eq(rs[i].errors, 0);
    }
    cr_assert_eq(servers, 1);
    char text[4096];
    cr_assert_eq(names("127.0.0.1", ep, text, sizeof text), 0);
    for (int i = 0; i < N; i++) {
        char line[64];
        snprintf(line, sizeof line, "name n%d at port %d\n", i, 5000 + i);
        cr_assert(strstr(text, line), "missing %s in %s", line, text);
    }
    for (int i = 0; i < N; i++)
        close_reg(r[i]);
    finish_loop();
}

Test(epmd_live, reregistration_retries_while_name_taken, .timeout = 40)
{
    aemp_log_set_level(AEMP_LOG_WARN);
    uint16_t ep = free_port();
    aemp__epmd_server *srv = NULL;
    cr_assert_eq(aemp__epmd_server_start(&loop, ep, &srv), 0);
    struct regstate rx = {0};
    aemp__epmd_reg *x = NULL;
    cr_assert_eq(aemp__epmd_reg_start(&loop, ep, "dup", 6001, reg_cb, &rx, &x), 0);
    cr_assert(wait_reg(&rx, 5000));
    cr_assert_eq(rx.last, 0);

    /* x loses its EPMD; a new one appears at once where the name is held
     * by someone else (as when an old registration lingers). x waits at
     * least 20 ms before trying again, so the holder is first. */
    close_server(srv);
    cr_assert_eq(aemp__epmd_server_start(&loop, ep, &srv), 0);
    struct aemp__epmd_node n = sample_node("dup");
    aemp_buf b = AEMP_BUF_INIT;
    cr_assert_eq(aemp__epmd_build_alive2_req(&b, &n), 0);
    struct raw holder;
    raw_open(&holder, ep, b.data, b.len);
    aemp_buf_free(&b);
    bool never = false;
    uint64_t end = uv_hrtime() + 5000ull * 1000000;
    while (holder.inlen < 6 && !holder.closed) {
        cr_assert(uv_hrtime() < end);
        run_until(&never, 5);
    }
    cr_assert_eq(holder.inlen, 6);
    cr_assert_eq(holder.in[1], 0, "the holder lost the race to x");

    end = uv_hrtime() + 5000ull * 1000000;
    while (!strstr(logbuf, "name still registered")) {
        cr_assert(uv_hrtime() < end, "x never met the taken name: %s", logbuf);
        run_for(20);
    }
    cr_assert_eq(rx.ok, 1);
    cr_assert_eq(rx.errors, 0);
    cr_assert_eq(aemp__epmd_reg_is_server(x), 0);
    /* The holder goes: x gets the name back on a later attempt. */
    raw_free(&holder);
    cr_assert(wait_reg(&rx, 15000), "x did not re-register");
    cr_assert_eq(rx.last, 0);
    cr_assert_eq(rx.ok, 2);
    uint16_t port = 0;
    cr_assert_eq(port_please("127.0.0.1", ep, "dup", &port), 0);
    cr_assert_eq(port, 6001);
    close_reg(x);
    close_server(srv);
    finish_loop();
}

Test(epmd_live, old_node_gets_16bit_creation)
{
    uint16_t ep = free_port();
    aemp__epmd_server *srv = NULL;
    cr_assert_eq(aemp__epmd_server_start(&loop, ep, &srv), 0);
    struct aemp__epmd_node n = sample_node("old");
    n.highest = 5;
    n.lowest = 5;
    aemp_buf b = AEMP_BUF_INIT;
    cr_assert_eq(aemp__epmd_build_alive2_req(&b, &n), 0);
    struct raw r;
    raw_open(&r, ep, b.data, b.len);
    aemp_buf_free(&b);
    bool never = false;
    while (r.inlen < 4 && !r.closed)
        run_until(&never, 20);
    cr_assert_eq(r.inlen, 4);
    cr_assert_eq((uint8_t)r.in[0], AEMP__EPMD_ALIVE2_RESP);
    cr_assert_eq(r.in[1], 0);
    uint16_t cr = aemp__get_u16(r.in + 2);
    cr_assert(cr >= 1 && cr <= 3, "creation %u", cr);
    uint16_t port = 0;
    cr_assert_eq(port_please("127.0.0.1", ep, "old", &port), 0);
    cr_assert_eq(port, 4242);
    raw_free(&r);
    close_server(srv);
    finish_loop();
}

Test(epmd_live, close_before_registered_calls_nothing)
{
    uint16_t ep = free_port();
    struct regstate ra = {0};
    aemp__epmd_reg *a = NULL;
    cr_assert_eq(aemp__epmd_reg_start(&loop, ep, "early", 1, reg_cb, &ra, &a), 0);
    close_reg(a);
    run_for(50);
    cr_assert_eq(ra.ok + ra.errors, 0);
    /* The embedded server (if it got that far) is gone too. */
    cr_assert_eq(port_please("127.0.0.1", ep, "early", NULL), AEMP_ECONNREFUSED);
    finish_loop();
}

/* A listener that accepts and never answers. */
struct silent {
    uv_tcp_t lst;
    uv_tcp_t conns[4];
    int n;
};

static void on_silent_conn(uv_stream_t *server, int status)
{
    struct silent *s = server->data;
    if (status < 0 || s->n == 4) return;
    uv_tcp_init(server->loop, &s->conns[s->n]);
    uv_accept(server, (uv_stream_t *)&s->conns[s->n]);
    s->n++;
}

static uint16_t silent_start(struct silent *s)
{
    memset(s, 0, sizeof *s);
    uv_tcp_init(&loop, &s->lst);
    s->lst.data = s;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    cr_assert_eq(uv_tcp_bind(&s->lst, (struct sockaddr *)&a, 0), 0);
    cr_assert_eq(uv_listen((uv_stream_t *)&s->lst, 8, on_silent_conn), 0);
    int len = sizeof a;
    uv_tcp_getsockname(&s->lst, (struct sockaddr *)&a, &len);
    return ntohs(a.sin_port);
}

static void silent_stop(struct silent *s)
{
    for (int i = 0; i < s->n; i++)
        uv_close((uv_handle_t *)&s->conns[i], NULL);
    uv_close((uv_handle_t *)&s->lst, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
}

Test(epmd_live, query_errors_and_cancel)
{
    uint16_t ep = free_port();
    uint16_t port;
    cr_assert_eq(port_please("127.0.0.1", ep, "x", &port), AEMP_ECONNREFUSED);
    char text[64];
    cr_assert_eq(names("127.0.0.1", ep, text, sizeof text), AEMP_ECONNREFUSED);
    cr_assert_eq(port_please("no-such-host.invalid", ep, "x", &port), AEMP_ENOENT);

    aemp__epmd_query *q = NULL;
    struct qstate s;
    memset(&s, 0, sizeof s);
    cr_assert_eq(aemp__epmd_port_please(&loop, "127.0.0.1", ep, "", port_cb, &s, &q), AEMP_EINVAL);
    cr_assert_eq(aemp__epmd_port_please(&loop, "", ep, "x", port_cb, &s, &q), AEMP_EINVAL);

    aemp__epmd_server *srv = NULL;
    cr_assert_eq(aemp__epmd_server_start(&loop, ep, &srv), 0);
    /* Cancel at once (resolver pending), and after some progress. */
    cr_assert_eq(aemp__epmd_port_please(&loop, "localhost", ep, "x", port_cb, &s, &q), 0);
    aemp__epmd_query_cancel(q);
    cr_assert(run_until(&s.done, 5000));
    cr_assert_eq(s.status, AEMP_ECLOSED);
    run_for(20);
    cr_assert_eq(s.calls, 1);
    close_server(srv);
    /* Cancel once connected and waiting for the answer. */
    struct silent sl;
    uint16_t sport = silent_start(&sl);
    memset(&s, 0, sizeof s);
    cr_assert_eq(aemp__epmd_names(&loop, "127.0.0.1", sport, names_cb, &s, &q), 0);
    bool never = false;
    run_until(&never, 200);
    cr_assert_eq(sl.n, 1);
    cr_assert_eq(s.calls, 0);
    aemp__epmd_query_cancel(q);
    cr_assert(run_until(&s.done, 5000));
    cr_assert_eq(s.status, AEMP_ECLOSED);
    cr_assert_eq(s.calls, 1);
    silent_stop(&sl);
    finish_loop();
}

Test(epmd_live, query_times_out)
{
    struct silent s;
    uint16_t ep = silent_start(&s);
    uint64_t t0 = uv_hrtime();
    cr_assert_eq(port_please("127.0.0.1", ep, "x", NULL), AEMP_ETIMEDOUT);
    uint64_t ms = (uv_hrtime() - t0) / 1000000;
    cr_assert(ms >= 4900 && ms < 8000, "took %llu ms", (unsigned long long)ms);
    silent_stop(&s);
    finish_loop();
}

static void expect_dropped(uint16_t ep, const void *data, size_t len, const char *logpart)
{
    loglen = 0;
    logbuf[0] = 0;
    struct raw r;
    raw_open(&r, ep, data, len);
    cr_assert(run_until(&r.closed, 5000), "server kept a connection that sent garbage");
    cr_assert(strstr(logbuf, logpart), "log lacks '%s': %s", logpart, logbuf);
    cr_assert(strstr(logbuf, "peer 127.0.0.1:"), "log lacks the peer: %s", logbuf);
    raw_free(&r);
}

Test(epmd_live, server_survives_hostile_input)
{
    aemp_log_set_level(AEMP_LOG_WARN);
    uint16_t ep = free_port();
    aemp__epmd_server *srv = NULL;
    cr_assert_eq(aemp__epmd_server_start(&loop, ep, &srv), 0);
    struct regstate ra = {0};
    aemp__epmd_reg *a = NULL;
    cr_assert_eq(aemp__epmd_reg_start(&loop, ep, "victim", 777, reg_cb, &ra, &a), 0);
    cr_assert(wait_reg(&ra, 5000));

    expect_dropped(ep, "\0\0", 2, "malformed request");
    expect_dropped(ep, "\xff\xff", 2, "too long");
    expect_dropped(ep, "\x04\x01", 2, "too long");
    expect_dropped(ep, "\0\1\x6b", 3, "unknown request code 107");
    expect_dropped(ep, "\0\1\x73", 3, "unknown request code 115");
    expect_dropped(ep, "\0\3\x7a\0x", 5, "malformed request");
    expect_dropped(ep, "\0\5\x78\0\0\0\0", 7, "malformed request");
    expect_dropped(ep, "\0\1\x6e\0\1\x6e", 6, "unexpected data");
    /* A name longer than 255 bytes. */
    uint8_t big[600];
    big[2] = AEMP__EPMD_PORT_PLEASE2_REQ;
    memset(big + 3, 'n', 300);
    aemp__put_u16(big, 301);
    expect_dropped(ep, big, 303, "too long");
    /* Registering the same name twice is refused, not a crash. */
    uint8_t dup[64];
    struct aemp__epmd_node n = sample_node("victim");
    aemp_buf b = AEMP_BUF_INIT;
    cr_assert_eq(aemp__epmd_build_alive2_req(&b, &n), 0);
    memcpy(dup, b.data, b.len);
    struct raw r;
    raw_open(&r, ep, dup, b.len);
    cr_assert(run_until(&r.closed, 5000));
    cr_assert_eq(r.inlen, 6);
    cr_assert_eq((uint8_t)r.in[0], AEMP__EPMD_ALIVE2_X_RESP);
    cr_assert_eq(r.in[1], 1);
    raw_free(&r);
    aemp_buf_free(&b);

    /* Still serving, and the victim still registered. */
    uint16_t port = 0;
    cr_assert_eq(port_please("127.0.0.1", ep, "victim", &port), 0);
    cr_assert_eq(port, 777);
    cr_assert_eq(ra.ok, 1);
    cr_assert_eq(ra.errors, 0);
    close_reg(a);
    close_server(srv);
    finish_loop();
}

Test(epmd_live, server_drops_silent_clients, .timeout = 40)
{
    aemp_log_set_level(AEMP_LOG_WARN);
    uint16_t ep = free_port();
    aemp__epmd_server *srv = NULL;
    cr_assert_eq(aemp__epmd_server_start(&loop, ep, &srv), 0);
    struct raw r;
    raw_open(&r, ep, "\0\7\x7a", 3);
    cr_assert(run_until(&r.connected, 5000));
    uint64_t t0 = uv_hrtime();
    cr_assert(run_until(&r.closed, AEMP__EPMD_IDLE_MS + 3000));
    uint64_t ms = (uv_hrtime() - t0) / 1000000;
    cr_assert(ms >= AEMP__EPMD_IDLE_MS - 500, "dropped after %llu ms", (unsigned long long)ms);
    cr_assert(strstr(logbuf, "no complete request"), "%s", logbuf);
    raw_free(&r);
    close_server(srv);
    finish_loop();
}

/* Idle clients from one address keep only their share of the pending
 * pool: each new one beyond it drops the oldest, and a real request from
 * the same address still gets through while they stay. */
Test(epmd_live, server_bounds_idle_clients, .timeout = 60)
{
    aemp_log_set_level(AEMP_LOG_WARN);
    uint16_t ep = free_port();
    aemp__epmd_server *srv = NULL;
    cr_assert_eq(aemp__epmd_server_start(&loop, ep, &srv), 0);
    enum { N = AEMP__EPMD_MAX_PENDING_PER_ADDRESS + 24 };
    struct raw *rs = calloc(N, sizeof *rs);
    for (int i = 0; i < N; i++) {
        raw_open(&rs[i], ep, "", 0);
        /* one at a time, so the accept order is the open order */
        cr_assert(run_until(&rs[i].connected, 5000));
        run_for(5);
    }
    int closed = 0;
    uint64_t end = uv_hrtime() + 5000ull * 1000000;
    while (closed < 24 && uv_hrtime() < end) {
        run_for(20);
        closed = 0;
        for (int i = 0; i < N; i++)
            closed += rs[i].closed;
    }
    cr_assert_eq(closed, 24, "%d of the %d idle connections were dropped", closed, N);
    for (int i = 0; i < N; i++)
        cr_assert_eq(rs[i].closed, i < 24, "connection %d %s", i,
                     rs[i].closed ? "dropped" : "kept");
    /* a real request from the same address while the idle ones stay */
    uint16_t port;
    cr_assert_eq(port_please("127.0.0.1", ep, "nobody", &port), AEMP_ENONODE);
    for (int i = 0; i < N; i++)
        raw_free(&rs[i]);
    free(rs);
    close_server(srv);
    finish_loop();
}

/* ------------------------------------------------------------------ */
/* Real epmd and real erl                                              */
/* ------------------------------------------------------------------ */

TestSuite(epmd_real, .init = setup, .fini = teardown, .timeout = 90);

Test(epmd_real, register_with_real_epmd)
{
    const char *bin = epmd_binary();
    if (!bin) cr_skip_test("no epmd binary");
    uint16_t ep = free_port();
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%u", (unsigned)ep);
    char *argv[] = {(char *)bin, "-port", portstr, NULL};
    start_child(argv);
    /* Ready when it answers NAMES. */
    char text[4096];
    uint64_t end = uv_hrtime() + 10000ull * 1000000;
    while (names("127.0.0.1", ep, text, sizeof text) != 0) {
        cr_assert(uv_hrtime() < end, "epmd did not start on port %u", (unsigned)ep);
        run_for(50);
    }
    struct regstate ra = {0};
    aemp__epmd_reg *a = NULL;
    cr_assert_eq(aemp__epmd_reg_start(&loop, ep, "cnode", 4711, reg_cb, &ra, &a), 0);
    cr_assert(wait_reg(&ra, 5000));
    cr_assert_eq(ra.last, 0, "%s", aemp_strerror(ra.last));
    cr_assert_eq(aemp__epmd_reg_is_server(a), 0);
    cr_assert_neq(ra.creation, 0);

    char out[16384];
    char *nargv[] = {(char *)bin, "-port", portstr, "-names", NULL};
    cr_assert_eq(run_capture(nargv, out, sizeof out, 10000), 0);
    cr_assert(strstr(out, "name cnode at port 4711"), "epmd -names said: %s", out);

    uint16_t port = 0;
    cr_assert_eq(port_please("127.0.0.1", ep, "cnode", &port), 0);
    cr_assert_eq(port, 4711);
    cr_assert_eq(port_please("127.0.0.1", ep, "other", &port), AEMP_ENONODE);

    /* Real epmd refuses a second registration of the name too. */
    struct regstate rb = {0};
    aemp__epmd_reg *b = NULL;
    cr_assert_eq(aemp__epmd_reg_start(&loop, ep, "cnode", 4712, reg_cb, &rb, &b), 0);
    cr_assert(wait_reg(&rb, 5000));
    cr_assert_eq(rb.last, AEMP_EEXIST);
    close_reg(b);

    /* The real epmd dies: we take its port over and register again. */
    kill_children();
    cr_assert(wait_reg(&ra, 5000), "no re-registration after epmd died");
    cr_assert_eq(ra.last, 0);
    cr_assert_eq(ra.ok, 2);
    cr_assert_eq(aemp__epmd_reg_is_server(a), 1);
    cr_assert_eq(port_please("127.0.0.1", ep, "cnode", &port), 0);
    cr_assert_eq(port, 4711);
    close_reg(a);
    finish_loop();
}

/* An erl node with its EPMD on ep; it stays up until killed. */
static void start_erl(const char *sname, uint16_t ep)
{
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%u", (unsigned)ep);
    setenv("ERL_EPMD_PORT", portstr, 1);
    char *argv[] = {"erl",      "-sname",      (char *)sname, "-setcookie", "epmdtest",
                    "-noshell", "-start_epmd", "false",       NULL};
    start_child(argv);
}

Test(epmd_real, erl_nodes_use_our_embedded_server)
{
    if (system("command -v erl >/dev/null 2>&1") != 0) cr_skip_test("no erl");
    uint16_t ep = free_port();
    struct regstate ra = {0};
    aemp__epmd_reg *a = NULL;
    cr_assert_eq(aemp__epmd_reg_start(&loop, ep, "cside", 4242, reg_cb, &ra, &a), 0);
    cr_assert(wait_reg(&ra, 5000));
    cr_assert_eq(ra.last, 0);
    cr_assert_eq(aemp__epmd_reg_is_server(a), 1);

    start_erl("epmdtest_b", ep);
    uint16_t bport = 0;
    cr_assert(wait_port(ep, "epmdtest_b", true, &bport, 30000), "erl never registered");
    cr_assert_neq(bport, 0);

    /* The real epmd binary as a client lists both. */
    const char *bin = epmd_binary();
    if (bin) {
        char portstr[16];
        snprintf(portstr, sizeof portstr, "%u", (unsigned)ep);
        char out[16384];
        char *nargv[] = {(char *)bin, "-port", portstr, "-names", NULL};
        cr_assert_eq(run_capture(nargv, out, sizeof out, 10000), 0);
        cr_assert(strstr(out, "name cside at port 4242"), "epmd -names: %s", out);
        char line[64];
        snprintf(line, sizeof line, "name epmdtest_b at port %u", (unsigned)bport);
        cr_assert(strstr(out, line), "epmd -names: %s", out);
    }

    /* A second erl node finds the first through our server. */
    char *pargv[] = {"erl",
                     "-sname",
                     "epmdtest_a",
                     "-setcookie",
                     "epmdtest",
                     "-noshell",
                     "-start_epmd",
                     "false",
                     "-eval",
                     "[_, H] = string:split(atom_to_list(node()), \"@\"),"
                     "R = net_adm:ping(list_to_atom(\"epmdtest_b@\" ++ H)),"
                     "io:format(\"ping=~p~n\", [R]), halt().",
                     NULL};
    char out[16384];
    int st = run_capture(pargv, out, sizeof out, 30000);
    cr_assert_eq(st, 0, "erl exited %d: %s", st, out);
    cr_assert(strstr(out, "ping=pong"), "erl said: %s", out);

    kill_children();
    cr_assert(wait_port(ep, "epmdtest_b", false, NULL, 10000), "killed erl stayed registered");
    close_reg(a);
    finish_loop();
}
