/*
 * test_call.c - calls into other nodes, C to C (two nodes on one loop):
 * aemp_cal and aemp_gen_call between C ports, locally and across nodes,
 * with timeouts, deaths and lost connections; aemp_gen_reply's From forms;
 * aemp_call of functions another C node exported (erpc:execute_call),
 * each result kind; every callback exactly once and from the loop, and
 * AEMP_ECLOSED for calls still waiting when their node closes.
 */
#include "harness.h"

#include "proc/proc.h"
#include "svc/db.h"

/* these tests count ports and monitors exactly: no aemp_db service (its
 * peer monitors would count) */
__attribute__((constructor)) static void no_db_service(void)
{
    aemp__db_test_off = true;
}

#include <unistd.h>

TestSuite(call, .init = setup, .fini = teardown, .timeout = 120);

/* ------------------------------------------------------------------ */
/* answers                                                            */
/* ------------------------------------------------------------------ */

struct answer {
    int calls;       /* times the callback ran */
    int status;      /* the last status */
    char text[512];  /* its result printed, "" for none */
    int inside;      /* the callback ran inside the call that started it */
    int after_close; /* the callback ran after the node's closed_cb */
    int *closed;     /* the node's closed flag, if watched */
};

static int starting; /* a call is being started: its callback must not run */

static void answer_cb(aemp_node *n, int status, const aemp_term *result, void *arg)
{
    struct answer *a = arg;
    a->calls++;
    a->status = status;
    if (result)
        aemp_term_print(result, a->text, sizeof a->text);
    else
        a->text[0] = 0;
    if (starting) a->inside = 1;
    if (a->closed && *a->closed) a->after_close = 1;
}

#define START(expr)                                                                                \
    do {                                                                                           \
        starting = 1;                                                                              \
        int rc_ = (expr);                                                                          \
        starting = 0;                                                                              \
        cr_assert_eq(rc_, 0, "%s: %s", #expr, aemp_strerror(rc_));                                 \
    } while (0)

/* Wait for a's one answer and check it. */
static void expect_answer(struct answer *a, int status, const char *text)
{
    cr_assert(wait_int(&a->calls, 1, 10000), "no answer (want %s)", text);
    cr_assert_eq(a->calls, 1, "answered %d times", a->calls);
    cr_assert_eq(a->inside, 0, "the callback ran inside the call");
    cr_assert_eq(a->status, status, "status %d (%s), want %d; result %s", a->status,
                 aemp_strerror(a->status), status, a->text);
    cr_assert_str_eq(a->text, text);
}

static void term_of(aemp_buf *b, const char *fmt)
{
    b->len = 0;
    cr_assert_eq(aemp_term_format(b, fmt), 0);
}

/* ------------------------------------------------------------------ */
/* servers                                                            */
/* ------------------------------------------------------------------ */

/* Answers a cal ({..., ReplyPid}) with {got, FirstElement, Arity}, or, when
 * holding, keeps the reply pid to answer later. */
struct cal_server {
    int hold;
    int got;
    aemp_addr reply_to;
    aemp_port port;
};

static void cal_server_cb(aemp_node *n, aemp_port self, const aemp_term *msg, const aemp_addr *from,
                          void *arg)
{
    struct cal_server *s = arg;
    aemp_cursor c = aemp_cursor_of(msg);
    uint32_t arity;
    aemp_term first;
    if (aemp_get_tuple(&c, &arity) || arity < 2 || aemp_get_term(&c, &first)) return;
    for (uint32_t i = 2; i < arity; i++)
        aemp_get_term(&c, NULL);
    if (aemp_get_pid(&c, &s->reply_to)) return;
    s->got++;
    if (!s->hold)
        cr_assert_eq(aemp_sendf(n, self, &s->reply_to, "{got, ~t, ~u}", &first, (uint64_t)arity),
                     0);
}

/* Answers {'$gen_call', From, Req} with {ok, Req} through aemp_gen_reply,
 * or, when holding, keeps From to answer later. */
struct gen_server {
    int hold;
    int got;
    aemp_buf from;
    aemp_port port;
};

static void gen_server_cb(aemp_node *n, aemp_port self, const aemp_term *msg,
                          const aemp_addr *sender, void *arg)
{
    struct gen_server *s = arg;
    aemp_cursor c = aemp_cursor_of(msg);
    uint32_t arity;
    char tag[32];
    aemp_term from, req;
    if (aemp_get_tuple(&c, &arity) || arity != 3 || aemp_get_atom(&c, tag, sizeof tag) ||
        strcmp(tag, "$gen_call") || aemp_get_term(&c, &from) || aemp_get_term(&c, &req))
        return;
    s->got++;
    s->from.len = 0;
    cr_assert_eq(aemp_buf_put_term(&s->from, &from), 0);
    if (s->hold) return;
    aemp_buf r = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_format(&r, "{ok, ~t}", &req), 0);
    aemp_term rt = aemp_buf_term(&r);
    cr_assert_eq(aemp_gen_reply(n, &from, &rt), 0);
    aemp_buf_free(&r);
}

static void open_at(struct node_ctx *c, const char *name, aemp_recv_cb cb, void *arg, aemp_port *p,
                    aemp_addr *addr)
{
    cr_assert_eq(aemp_port_open(c->node, cb, arg, p), 0);
    if (name) {
        cr_assert_eq(aemp_register(c->node, name, *p), 0);
        name_addr(addr, c->node, name);
    } else {
        cr_assert_eq(aemp_port_addr(c->node, *p, addr), 0);
    }
}

/* Nodes a and b on the test's loop. */
static void start_two(struct node_ctx *a, struct node_ctx *b)
{
    start_node(a, "a@127.0.0.1", "secret");
    start_node(b, "b@127.0.0.1", "secret");
}

static void stop_two(struct node_ctx *a, struct node_ctx *b)
{
    stop_node(a);
    stop_node(b);
}

/* Drop a's connection to b, as a network failure would: b's ports live on,
 * a's monitors of them fire with noconnection. */
static void lose_connection(struct node_ctx *a, struct node_ctx *b)
{
    int err;
    aemp__conn *c = aemp__node_conn(a->node, b->node->name_h, false, &err);
    cr_assert(c != NULL);
    int downs = a->downs;
    aemp__conn_close(c, AEMP_EIO, "lost in a test");
    cr_assert(wait_int(&a->downs, downs + 1, 5000));
}

/* ------------------------------------------------------------------ */
/* aemp_cal                                                           */
/* ------------------------------------------------------------------ */

/* The reply port's pid is appended to a tuple and pairs with anything
 * else; the first message is the answer; locally and across nodes. */
Test(call, cal_answers)
{
    struct node_ctx a, b;
    start_two(&a, &b);
    struct cal_server rs = {0}, ls = {0};
    aemp_addr remote, local;
    size_t ports = a.node->proc->ports.count; /* the node's own */
    open_at(&b, "calsrv", cal_server_cb, &rs, &rs.port, &remote);
    open_at(&a, NULL, cal_server_cb, &ls, &ls.port, &local);
    aemp_buf m = AEMP_BUF_INIT;
    struct answer ans[4];
    memset(ans, 0, sizeof ans);
    term_of(&m, "{ping, 7}");
    aemp_term mt = aemp_buf_term(&m);
    START(aemp_cal(a.node, &remote, &mt, 5000, answer_cb, &ans[0]));
    START(aemp_cal(a.node, &local, &mt, 5000, answer_cb, &ans[1]));
    term_of(&m, "hello");
    mt = aemp_buf_term(&m);
    START(aemp_cal(a.node, &remote, &mt, 0, answer_cb, &ans[2]));
    START(aemp_cal(a.node, &local, &mt, 0, answer_cb, &ans[3]));
    /* the local server answered at once, yet the callback waits for the loop */
    cr_assert_eq(ls.got, 2);
    cr_assert_eq(ans[1].calls + ans[3].calls, 0);
    expect_answer(&ans[0], AEMP_RPC_RETURN, "{got,ping,3}");
    expect_answer(&ans[1], AEMP_RPC_RETURN, "{got,ping,3}");
    expect_answer(&ans[2], AEMP_RPC_RETURN, "{got,hello,2}");
    expect_answer(&ans[3], AEMP_RPC_RETURN, "{got,hello,2}");
    /* the reply ports are closed: no call port is left */
    cr_assert_eq(a.node->proc->ports.count, ports + 1); /* ls, and nothing else */
    aemp_buf_free(&m);
    stop_two(&a, &b);
}

/* A timeout ends the wait; the answer that comes later is dropped (the
 * reply port is gone) and the callback is not called again. */
Test(call, cal_timeout_drops_late_answer)
{
    struct node_ctx a, b;
    start_two(&a, &b);
    struct cal_server rs = {.hold = 1}, echo = {0};
    aemp_addr remote, sync;
    open_at(&b, "calsrv", cal_server_cb, &rs, &rs.port, &remote);
    open_at(&b, "echo", cal_server_cb, &echo, &echo.port, &sync);
    aemp_buf m = AEMP_BUF_INIT;
    term_of(&m, "{ping, 1}");
    aemp_term mt = aemp_buf_term(&m);
    struct answer ans = {0}, later = {0};
    START(aemp_cal(a.node, &remote, &mt, 50, answer_cb, &ans));
    expect_answer(&ans, AEMP_ETIMEDOUT, "");
    cr_assert(wait_int(&rs.got, 1, 5000));
    /* the late answer, then a cal through the same connection: when its
     * answer is here, the late one has come and gone */
    cr_assert_eq(aemp_sendf(b.node, rs.port, &rs.reply_to, "{late}"), 0);
    START(aemp_cal(a.node, &sync, &mt, 5000, answer_cb, &later));
    expect_answer(&later, AEMP_RPC_RETURN, "{got,ping,3}");
    cr_assert_eq(ans.calls, 1);
    aemp_buf_free(&m);
    stop_two(&a, &b);
}

/* Without a timeout the target is monitored: its death is the answer
 * (exit reason, noproc when it is not there, noconnection as ENOCONN). */
Test(call, cal_without_timeout_watches_the_target)
{
    struct node_ctx a, b;
    start_two(&a, &b);
    struct cal_server rs = {.hold = 1}, ls = {.hold = 1};
    aemp_addr remote, local, nobody, nobody_far;
    open_at(&b, "calsrv", cal_server_cb, &rs, &rs.port, &remote);
    open_at(&a, NULL, cal_server_cb, &ls, &ls.port, &local);
    name_addr(&nobody, a.node, "nobody");
    name_addr(&nobody_far, b.node, "nobody");
    aemp_buf m = AEMP_BUF_INIT, r = AEMP_BUF_INIT;
    term_of(&m, "{ping, 1}");
    aemp_term mt = aemp_buf_term(&m);
    struct answer ans[5];
    memset(ans, 0, sizeof ans);
    START(aemp_cal(a.node, &remote, &mt, 0, answer_cb, &ans[0]));
    START(aemp_cal(a.node, &local, &mt, 0, answer_cb, &ans[1]));
    START(aemp_cal(a.node, &nobody, &mt, 0, answer_cb, &ans[2]));
    START(aemp_cal(a.node, &nobody_far, &mt, 0, answer_cb, &ans[3]));
    cr_assert(wait_int(&rs.got, 1, 5000));
    term_of(&r, "{bad, 1}");
    aemp_term rt = aemp_buf_term(&r);
    cr_assert_eq(aemp_port_kill(b.node, rs.port, &rt), 0);
    cr_assert_eq(aemp_port_kill(a.node, ls.port, &rt), 0);
    expect_answer(&ans[0], AEMP_RPC_EXIT, "{bad,1}");
    expect_answer(&ans[1], AEMP_RPC_EXIT, "{bad,1}");
    expect_answer(&ans[2], AEMP_RPC_EXIT, "noproc");
    expect_answer(&ans[3], AEMP_RPC_EXIT, "noproc");
    /* the target's node goes away */
    struct cal_server again = {.hold = 1};
    open_at(&b, "calsrv2", cal_server_cb, &again, &again.port, &remote);
    START(aemp_cal(a.node, &remote, &mt, 0, answer_cb, &ans[4]));
    cr_assert(wait_int(&again.got, 1, 5000));
    lose_connection(&a, &b);
    expect_answer(&ans[4], AEMP_ENOCONN, "noconnection");
    aemp_buf_free(&m);
    aemp_buf_free(&r);
    stop_two(&a, &b);
}

/* ------------------------------------------------------------------ */
/* aemp_gen_call and aemp_gen_reply                                    */
/* ------------------------------------------------------------------ */

/* A C port answers '$gen_call' with aemp_gen_reply; the caller's alias
 * takes the answer, locally and from another node. */
Test(call, gen_call_between_c_ports)
{
    struct node_ctx a, b;
    start_two(&a, &b);
    struct gen_server rs = {0}, ls = {0};
    aemp_addr remote, local, remote_pid;
    open_at(&b, "gensrv", gen_server_cb, &rs, &rs.port, &remote);
    open_at(&a, NULL, gen_server_cb, &ls, &ls.port, &local);
    cr_assert_eq(aemp_port_addr(b.node, rs.port, &remote_pid), 0);
    aemp_buf q = AEMP_BUF_INIT;
    term_of(&q, "{get, [1, 2]}");
    aemp_term qt = aemp_buf_term(&q);
    struct answer ans[3];
    memset(ans, 0, sizeof ans);
    START(aemp_gen_call(a.node, &remote, &qt, 5000, answer_cb, &ans[0]));
    START(aemp_gen_call(a.node, &remote_pid, &qt, 0, answer_cb, &ans[1]));
    START(aemp_gen_call(a.node, &local, &qt, 0, answer_cb, &ans[2]));
    cr_assert_eq(ls.got, 1);
    cr_assert_eq(ans[2].calls, 0);
    for (int i = 0; i < 3; i++)
        expect_answer(&ans[i], AEMP_RPC_RETURN, "{ok,{get,[1,2]}}");
    /* the tag was [alias|Mref] and the aliases are gone */
    char from[256];
    aemp_term ft = aemp_buf_term(&ls.from);
    aemp_term_print(&ft, from, sizeof from);
    cr_assert(strstr(from, ",[alias|#Ref<") != NULL, "%s", from);
    cr_assert_eq(a.node->proc->aliases.count, 0);
    cr_assert_eq(aemp__watch_count(a.node), 0);
    aemp_buf_free(&q);
    aemp_buf_free(&rs.from);
    aemp_buf_free(&ls.from);
    stop_two(&a, &b);
}

/* After a timeout the alias is gone: the server's late reply is dropped. */
Test(call, gen_call_timeout_drops_late_reply)
{
    struct node_ctx a, b;
    start_two(&a, &b);
    struct gen_server slow = {.hold = 1}, fast = {0}, lslow = {.hold = 1};
    aemp_addr sa, fa, la;
    open_at(&b, "slow", gen_server_cb, &slow, &slow.port, &sa);
    open_at(&b, "fast", gen_server_cb, &fast, &fast.port, &fa);
    open_at(&a, "lslow", gen_server_cb, &lslow, &lslow.port, &la);
    aemp_buf q = AEMP_BUF_INIT, r = AEMP_BUF_INIT;
    term_of(&q, "ask");
    term_of(&r, "late");
    aemp_term qt = aemp_buf_term(&q), rt = aemp_buf_term(&r);
    struct answer ans = {0}, lans = {0}, sync = {0};
    START(aemp_gen_call(a.node, &sa, &qt, 50, answer_cb, &ans));
    START(aemp_gen_call(a.node, &la, &qt, 50, answer_cb, &lans));
    expect_answer(&ans, AEMP_ETIMEDOUT, "");
    expect_answer(&lans, AEMP_ETIMEDOUT, "");
    cr_assert_eq(slow.got, 1);
    aemp_term from = aemp_buf_term(&slow.from), lfrom = aemp_buf_term(&lslow.from);
    cr_assert_eq(aemp_gen_reply(b.node, &from, &rt), 0);
    cr_assert_eq(aemp_gen_reply(a.node, &lfrom, &rt), 0);
    START(aemp_gen_call(a.node, &fa, &qt, 5000, answer_cb, &sync));
    expect_answer(&sync, AEMP_RPC_RETURN, "{ok,ask}");
    cr_assert_eq(ans.calls, 1);
    cr_assert_eq(lans.calls, 1);
    aemp_buf_free(&q);
    aemp_buf_free(&r);
    aemp_buf_free(&slow.from);
    aemp_buf_free(&fast.from);
    aemp_buf_free(&lslow.from);
    stop_two(&a, &b);
}

/* The server's death is the answer: its reason, noproc for none, and a
 * lost connection is AEMP_ENOCONN. */
Test(call, gen_call_server_dies)
{
    struct node_ctx a, b;
    start_two(&a, &b);
    struct gen_server s1 = {.hold = 1}, s2 = {.hold = 1};
    aemp_addr a1, a2, nobody, nobody_far;
    open_at(&b, "s1", gen_server_cb, &s1, &s1.port, &a1);
    open_at(&b, "s2", gen_server_cb, &s2, &s2.port, &a2);
    name_addr(&nobody, a.node, "nobody");
    name_addr(&nobody_far, b.node, "nobody");
    aemp_buf q = AEMP_BUF_INIT, r = AEMP_BUF_INIT;
    term_of(&q, "ask");
    term_of(&r, "{shutdown, why}");
    aemp_term qt = aemp_buf_term(&q), rt = aemp_buf_term(&r);
    struct answer ans[4];
    memset(ans, 0, sizeof ans);
    START(aemp_gen_call(a.node, &a1, &qt, 5000, answer_cb, &ans[0]));
    START(aemp_gen_call(a.node, &nobody, &qt, 5000, answer_cb, &ans[1]));
    START(aemp_gen_call(a.node, &nobody_far, &qt, 0, answer_cb, &ans[2]));
    cr_assert(wait_int(&s1.got, 1, 5000));
    cr_assert_eq(aemp_port_kill(b.node, s1.port, &rt), 0);
    expect_answer(&ans[0], AEMP_RPC_EXIT, "{shutdown,why}");
    expect_answer(&ans[1], AEMP_RPC_EXIT, "noproc");
    expect_answer(&ans[2], AEMP_RPC_EXIT, "noproc");
    START(aemp_gen_call(a.node, &a2, &qt, 0, answer_cb, &ans[3]));
    cr_assert(wait_int(&s2.got, 1, 5000));
    lose_connection(&a, &b);
    expect_answer(&ans[3], AEMP_ENOCONN, "noconnection");
    cr_assert_eq(a.node->proc->aliases.count, 0);
    aemp_buf_free(&q);
    aemp_buf_free(&r);
    aemp_buf_free(&s1.from);
    aemp_buf_free(&s2.from);
    stop_two(&a, &b);
}

struct inbox {
    int count;
    char last[256];
    char all[4][256]; /* the first four */
};

static void inbox_cb(aemp_node *n, aemp_port self, const aemp_term *msg, const aemp_addr *from,
                     void *arg)
{
    struct inbox *in = arg;
    aemp_term_print(msg, in->last, sizeof in->last);
    if (in->count < 4) memcpy(in->all[in->count], in->last, sizeof in->last);
    in->count++;
}

/* From = {Pid, Ref} answers the pid; {Pid, [[alias|A]|_]} the alias A;
 * anything else is refused. */
Test(call, gen_reply_from_forms)
{
    struct node_ctx a, b;
    start_two(&a, &b);
    struct inbox by_pid = {0}, by_alias = {0}, decoy = {0};
    aemp_port pp, ap, dp;
    aemp_addr pid, decoy_pid, alias_owner, ref;
    open_at(&a, NULL, inbox_cb, &by_pid, &pp, &pid);
    open_at(&a, NULL, inbox_cb, &by_alias, &ap, &alias_owner);
    open_at(&a, NULL, inbox_cb, &decoy, &dp, &decoy_pid);
    aemp__proc_ref(a.node, &ref);
    cr_assert_eq(aemp__alias_add(a.node, &ref, ap.id), 0);
    aemp_buf f = AEMP_BUF_INIT, r = AEMP_BUF_INIT;
    cr_assert_eq(aemp_term_format(&r, "{answer, 1}"), 0);
    aemp_term rt = aemp_buf_term(&r);
    /* {Pid, Ref}: to the pid, from b */
    cr_assert_eq(aemp_term_format(&f, "{~p, ~p}", &pid, &ref), 0);
    aemp_term ft = aemp_buf_term(&f);
    cr_assert_eq(aemp_gen_reply(b.node, &ft, &rt), 0);
    cr_assert(wait_int(&by_pid.count, 1, 5000));
    cr_assert(strstr(by_pid.last, "{#Ref<") == by_pid.last, "%s", by_pid.last);
    cr_assert(strstr(by_pid.last, ">,{answer,1}}") != NULL, "%s", by_pid.last);
    /* {Pid, [[alias|A]|x]}: to the alias, not the pid; from b and locally */
    f.len = 0;
    cr_assert_eq(aemp__buf_put_u8(&f, 104), 0); /* SMALL_TUPLE 2 */
    cr_assert_eq(aemp__buf_put_u8(&f, 2), 0);
    cr_assert_eq(aemp__enc_addr(&f, &decoy_pid), 0);
    cr_assert_eq(aemp__buf_put_u8(&f, 108), 0); /* [ [alias|A] | x ] */
    cr_assert_eq(aemp__buf_put_u32(&f, 1), 0);
    cr_assert_eq(aemp__buf_put_u8(&f, 108), 0);
    cr_assert_eq(aemp__buf_put_u32(&f, 1), 0);
    cr_assert_eq(aemp__enc_atom_text(&f, "alias", 5), 0);
    cr_assert_eq(aemp__enc_addr(&f, &ref), 0);
    cr_assert_eq(aemp__enc_atom_text(&f, "x", 1), 0);
    ft = aemp_buf_term(&f);
    cr_assert_eq(aemp_gen_reply(b.node, &ft, &rt), 0);
    cr_assert_eq(aemp_gen_reply(a.node, &ft, &rt), 0);
    cr_assert(wait_int(&by_alias.count, 2, 5000));
    cr_assert(strstr(by_alias.last, "{[[alias|#Ref<") == by_alias.last, "%s", by_alias.last);
    cr_assert(strstr(by_alias.last, "|x],{answer,1}}") != NULL, "%s", by_alias.last);
    /* a removed alias reaches nobody */
    aemp__alias_del(a.node, &ref);
    cr_assert_eq(aemp_gen_reply(a.node, &ft, &rt), 0);
    cr_assert_eq(aemp_gen_reply(b.node, &ft, &rt), 0);
    cr_assert_eq(aemp_gen_reply(b.node, &(aemp_term){f.data, 0}, &rt), AEMP_EINVAL);
    term_of(&f, "{notapid, tag}");
    ft = aemp_buf_term(&f);
    cr_assert_eq(aemp_gen_reply(b.node, &ft, &rt), AEMP_EINVAL);
    /* a message to the pid after all: it is the only one the decoy got */
    cr_assert_eq(aemp_sendf(b.node, (aemp_port){0}, &decoy_pid, "sync"), 0);
    cr_assert(wait_int(&decoy.count, 1, 5000));
    cr_assert_str_eq(decoy.last, "sync");
    cr_assert_eq(by_alias.count, 2);
    aemp_buf_free(&f);
    aemp_buf_free(&r);
    stop_two(&a, &b);
}

/* ------------------------------------------------------------------ */
/* aemp_call                                                          */
/* ------------------------------------------------------------------ */

/* m:f(Kind, Value) answers Value as that kind; m:slow() blocks the loop
 * long enough for a short timeout to pass first. */
static int kinds(aemp_node *n, const aemp_term *args, aemp_buf *result, void *arg)
{
    aemp_cursor c = aemp_cursor_of(args);
    uint32_t len;
    char kind[16];
    aemp_term v;
    if (aemp_get_list(&c, &len) || len != 2 || aemp_get_atom(&c, kind, sizeof kind) ||
        aemp_get_term(&c, &v))
        return aemp_term_format(result, "bad_args"), AEMP_RPC_ERROR;
    aemp_buf_put_term(result, &v);
    if (strcmp(kind, "throw") == 0) return AEMP_RPC_THROW;
    if (strcmp(kind, "error") == 0) return AEMP_RPC_ERROR;
    if (strcmp(kind, "exit") == 0) return AEMP_RPC_EXIT;
    return AEMP_RPC_RETURN;
}

static int slow(aemp_node *n, const aemp_term *args, aemp_buf *result, void *arg)
{
    usleep(300 * 1000);
    return aemp_term_format(result, "slow_done"), AEMP_RPC_RETURN;
}

/* Every result kind of an exported function, mapped as erpc maps it; a
 * function not exported is error undef. */
Test(call, erpc_between_c_nodes)
{
    struct node_ctx a, b;
    start_two(&a, &b);
    cr_assert_eq(aemp_export(b.node, "m", "f", kinds, NULL), 0);
    static const struct {
        const char *args;
        int status;
        const char *text;
    } cases[] = {
        {"[return, {v, [1.5]}]", AEMP_RPC_RETURN, "{v,[1.5]}"},
        {"[throw, t]", AEMP_RPC_THROW, "t"},
        {"[error, {badmatch, 1}]", AEMP_RPC_ERROR, "{badmatch,1}"},
        {"[exit, gone]", AEMP_RPC_EXIT, "gone"},
    };
    enum { N = sizeof cases / sizeof *cases };
    struct answer ans[N + 1];
    memset(ans, 0, sizeof ans);
    size_t ports = a.node->proc->ports.count; /* the node's own */
    aemp_buf args = AEMP_BUF_INIT;
    for (int i = 0; i < N; i++) {
        term_of(&args, cases[i].args);
        aemp_term at = aemp_buf_term(&args);
        START(aemp_call(a.node, "b@127.0.0.1", "m", "f", &at, 5000, answer_cb, &ans[i]));
    }
    term_of(&args, "[1]");
    aemp_term at = aemp_buf_term(&args);
    START(aemp_call(a.node, "b@127.0.0.1", "m", "nothere", &at, 0, answer_cb, &ans[N]));
    for (int i = 0; i < N; i++)
        expect_answer(&ans[i], cases[i].status, cases[i].text);
    expect_answer(&ans[N], AEMP_RPC_ERROR, "undef");
    /* bad arguments are refused at once, with no callback */
    term_of(&args, "notalist");
    at = aemp_buf_term(&args);
    cr_assert_eq(aemp_call(a.node, "b@127.0.0.1", "m", "f", &at, 0, answer_cb, &ans[0]),
                 AEMP_EINVAL);
    term_of(&args, "[]");
    at = aemp_buf_term(&args);
    cr_assert_eq(aemp_call(a.node, "a@127.0.0.1", "m", "f", &at, 0, answer_cb, &ans[0]),
                 AEMP_EINVAL);
    cr_assert_eq(aemp_call(a.node, "nohost", "m", "f", &at, 0, answer_cb, &ans[0]), AEMP_EINVAL);
    /* nothing is left of the calls: ports, monitors, requests */
    cr_assert_eq(a.node->proc->ports.count, ports);
    cr_assert_eq(aemp__watch_count(a.node), 0);
    aemp_buf_free(&args);
    stop_two(&a, &b);
}

/* A timeout abandons the request: no answer follows, the callback ran
 * once, the remote process ran to its end and the next call works. A node
 * that cannot be reached answers AEMP_ENOCONN. */
Test(call, erpc_timeout_and_noconnection)
{
    struct node_ctx a, b;
    start_two(&a, &b);
    cr_assert_eq(aemp_export(b.node, "m", "slow", slow, NULL), 0);
    cr_assert_eq(aemp_export(b.node, "m", "f", kinds, NULL), 0);
    aemp_buf args = AEMP_BUF_INIT;
    term_of(&args, "[]");
    aemp_term at = aemp_buf_term(&args);
    struct answer ans = {0}, next = {0}, far = {0};
    /* connected first, so that the request is on its way at once */
    cr_assert_eq(aemp_node_connect(a.node, "b@127.0.0.1"), 0);
    cr_assert(wait_int(&a.ups, 1, 5000));
    START(aemp_call(a.node, "b@127.0.0.1", "m", "slow", &at, 100, answer_cb, &ans));
    expect_answer(&ans, AEMP_ETIMEDOUT, "");
    term_of(&args, "[return, ok]");
    at = aemp_buf_term(&args);
    START(aemp_call(a.node, "b@127.0.0.1", "m", "f", &at, 5000, answer_cb, &next));
    expect_answer(&next, AEMP_RPC_RETURN, "ok");
    cr_assert_eq(ans.calls, 1);
    cr_assert_eq(aemp__watch_count(a.node), 0);
    START(aemp_call(a.node, "nosuch@127.0.0.1", "m", "f", &at, 0, answer_cb, &far));
    cr_assert(wait_int(&far.calls, 1, 15000), "no answer from an unreachable node");
    expect_answer(&far, AEMP_ENOCONN, "noconnection");
    aemp_buf_free(&args);
    stop_two(&a, &b);
}

/* An erpc process that stays (b's service replaced by one that keeps its
 * port): it is killed by a signal, or its connection is lost. */
static aemp_port stayed;
static int stays;

static void stay(aemp_node *n, aemp_port self, const aemp_term *args, void *arg)
{
    stayed = self;
    stays++;
}

/* A node that cannot run what it is asked: {SPAWN_REPLY, ReqId, From, 0,
 * notsup} to every spawn request. */
static void refuse_spawn(void *arg, aemp__conn *c, const aemp__ctl_in *m, aemp__ctl_memo *memo)
{
    aemp_buf ctl = AEMP_BUF_INIT;
    if (aemp__ctl_enc(&ctl, AEMP__CTL_SPAWN_REPLY, "ttiA", &m->el[1], &m->el[2], (uint64_t)0,
                      "notsup") == 0)
        aemp__conn_ctl(c, &ctl, NULL);
    aemp_buf_free(&ctl);
}

/* erpc's other answers: a refused spawn request is error {erpc, notsup},
 * a process killed by an exit signal R is exit {signal, R}, a connection
 * lost while the process runs is AEMP_ENOCONN. */
Test(call, erpc_refused_signal_and_lost_connection)
{
    struct node_ctx a, b;
    start_two(&a, &b);
    aemp_buf args = AEMP_BUF_INIT, r = AEMP_BUF_INIT;
    term_of(&args, "[]");
    aemp_term at = aemp_buf_term(&args);
    struct answer ans[3];
    memset(ans, 0, sizeof ans);
    cr_assert_eq(aemp__proc_spawn_fn(b.node, "erpc", "execute_call", stay, NULL), 0);
    START(aemp_call(a.node, "b@127.0.0.1", "m", "f", &at, 0, answer_cb, &ans[0]));
    cr_assert(wait_int(&stays, 1, 5000));
    term_of(&r, "die");
    aemp_term rt = aemp_buf_term(&r);
    cr_assert_eq(aemp_port_kill(b.node, stayed, &rt), 0);
    expect_answer(&ans[0], AEMP_RPC_EXIT, "{signal,die}");
    START(aemp_call(a.node, "b@127.0.0.1", "m", "f", &at, 0, answer_cb, &ans[1]));
    cr_assert(wait_int(&stays, 2, 5000));
    lose_connection(&a, &b);
    expect_answer(&ans[1], AEMP_ENOCONN, "noconnection");
    /* b refuses every spawn request now */
    aemp__node_on_ctl(b.node, AEMP__CTL_SPAWN_REQUEST, refuse_spawn, NULL);
    START(aemp_call(a.node, "b@127.0.0.1", "m", "f", &at, 0, answer_cb, &ans[2]));
    expect_answer(&ans[2], AEMP_RPC_ERROR, "{erpc,notsup}");
    cr_assert_eq(aemp__watch_count(a.node), 0);
    aemp_buf_free(&args);
    aemp_buf_free(&r);
    stop_two(&a, &b);
}

/* ------------------------------------------------------------------ */
/* closing                                                            */
/* ------------------------------------------------------------------ */

static void flag_closed(void *arg)
{
    *(int *)arg = 1;
}

/* Calls still waiting when their node closes get AEMP_ECLOSED, once,
 * before closed_cb; new calls on a closing node are refused. */
Test(call, node_close_answers_eclosed)
{
    struct node_ctx a, b;
    start_two(&a, &b);
    struct cal_server cs = {.hold = 1};
    struct gen_server gs = {.hold = 1};
    aemp_addr ca, ga, la;
    open_at(&b, "cal", cal_server_cb, &cs, &cs.port, &ca);
    open_at(&b, "gen", gen_server_cb, &gs, &gs.port, &ga);
    struct cal_server ls = {.hold = 1};
    open_at(&a, NULL, cal_server_cb, &ls, &ls.port, &la);
    int closed = 0;
    struct answer ans[5];
    memset(ans, 0, sizeof ans);
    for (int i = 0; i < 5; i++)
        ans[i].closed = &closed;
    aemp_buf m = AEMP_BUF_INIT;
    term_of(&m, "{ping}");
    aemp_term mt = aemp_buf_term(&m);
    START(aemp_cal(a.node, &ca, &mt, 0, answer_cb, &ans[0]));
    START(aemp_cal(a.node, &la, &mt, 60000, answer_cb, &ans[1]));
    START(aemp_gen_call(a.node, &ga, &mt, 0, answer_cb, &ans[2]));
    cr_assert(wait_int(&cs.got, 1, 5000));
    cr_assert(wait_int(&gs.got, 1, 5000));
    /* one answered, its callback not yet run: it keeps its answer */
    cr_assert_eq(aemp_sendf(a.node, (aemp_port){0}, &ls.reply_to, "{done}"), 0);
    term_of(&m, "[]");
    mt = aemp_buf_term(&m);
    START(aemp_call(a.node, "b@127.0.0.1", "m", "none", &mt, 0, answer_cb, &ans[3]));
    aemp_node_close(a.node, flag_closed, &closed);
    cr_assert_eq(aemp_call(a.node, "b@127.0.0.1", "m", "none", &mt, 0, answer_cb, &ans[4]),
                 AEMP_ECLOSED);
    cr_assert_eq(ans[0].calls + ans[2].calls + ans[3].calls, 0, "called inside aemp_node_close");
    cr_assert(run_until(&closed, 5000), "node did not close");
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(ans[i].calls, 1, "call %d answered %d times", i, ans[i].calls);
        cr_assert_eq(ans[i].after_close, 0, "call %d answered after closed_cb", i);
        cr_assert_eq(ans[i].status, i == 1 ? AEMP_RPC_RETURN : AEMP_ECLOSED, "call %d: %d", i,
                     ans[i].status);
    }
    cr_assert_str_eq(ans[1].text, "{done}");
    cr_assert_eq(ans[4].calls, 0);
    aemp_buf_free(&m);
    aemp_buf_free(&gs.from);
    stop_node(&b);
}
