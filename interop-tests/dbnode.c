/*
 * dbnode.c - the C side of the database interop test (test_db.sh), written
 * with the public db API. It watches family `f` and prints each view; an
 * Erlang test process drives it through its registered port `ctl`.
 *
 * Usage: dbnode NAME COOKIE
 * Prints "ready NAME" once registered, then "view f: K=V@OWNER ..." (sorted)
 * for the first db_mon call of family f and after every change; runs until
 * SIGTERM (exit 0). Requests to {ctl, Node}, each answered {reply, Op,
 * Result}:
 *   {set, From, Fam, Key, Value}  -> ok          (aemp_db_set; binaries)
 *   {set_stamp, From, Fam, Key, Value} -> Stamp (aemp_db_set, aemp_db_read)
 *   {del, From, Fam, Key}         -> ok | enoent (aemp_db_del)
 *   {reg, From, Fam}              -> Pid: a new port, db_reg'd in Fam
 *   {family, From, Fam}           -> [{Key, Value, Owner, Stamp}] (aemp_db_family)
 *   {connect, From, Node}         -> ok (aemp_node_connect)
 */
#include "node_main.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void print_view(aemp_node *n, const aemp_db_view *v, const aemp_db_diff *d, void *arg)
{
    (void)n;
    (void)d;
    (void)arg;
    size_t cnt = aemp_db_view_count(v);
    char **items = calloc(cnt + 1, sizeof *items);
    for (size_t i = 0; i < cnt; i++) {
        aemp_db_entry e;
        char val[200];
        aemp_db_view_at(v, i, &e);
        aemp_term_print(&e.value, val, sizeof val);
        size_t len = strlen(e.subkey) + strlen(val) + strlen(e.owner) + 3;
        items[i] = malloc(len);
        snprintf(items[i], len, "%s=%s@%s", e.subkey, val, e.owner);
    }
    qsort(items, cnt, sizeof *items, cmp_str);
    char line[8192];
    size_t len = (size_t)snprintf(line, sizeof line, "view %s:", aemp_db_view_family(v));
    for (size_t i = 0; i < cnt; i++) {
        if (len < sizeof line)
            len += (size_t)snprintf(line + len, sizeof line - len, " %s", items[i]);
        free(items[i]);
    }
    free(items);
    say("%s", line);
}

/* The requester and a binary argument as a NUL-terminated string. */
static int get_str(aemp_cursor *c, char *out, size_t size)
{
    const void *p;
    size_t len;
    if (aemp_get_binary(c, &p, &len) || len >= size) return AEMP_ENOMATCH;
    memcpy(out, p, len);
    out[len] = 0;
    return 0;
}

static int reply(aemp_node *n, const aemp_addr *to, const char *op, const char *fmt_result, ...)
{
    aemp_buf r = AEMP_BUF_INIT;
    va_list ap;
    va_start(ap, fmt_result);
    int rc = aemp_term_vformat(&r, fmt_result, ap);
    va_end(ap);
    aemp_term t = aemp_buf_term(&r);
    if (!rc) rc = aemp_sendf(n, aemp_self(n), to, "{reply, ~a, ~t}", op, &t);
    aemp_buf_free(&r);
    return rc;
}

static int on_set(aemp_node *n, aemp_port self, const aemp_msg *m, void *arg)
{
    aemp_cursor c = m->args;
    aemp_addr from;
    char fam[256], key[256];
    aemp_term v;
    if (m->nargs != 4 || aemp_get_pid(&c, &from) || get_str(&c, fam, sizeof fam) ||
        get_str(&c, key, sizeof key) || aemp_get_term(&c, &v))
        return aemp_die(n, "bad request");
    int rc = aemp_db_set(n, fam, key, &v, NULL);
    return reply(n, &from, "set", rc ? "~a" : "ok", aemp_strerror(rc));
}

/* {set_stamp, From, Fam, Key, Value}: set, answer the entry's stamp (a
 * set is visible at once with its own stamp: it is the greatest seen). */
static void own_stamp(aemp_node *n, int status, const aemp_db_view *v, void *arg)
{
    const char *key = ((const char **)arg)[0];
    uint64_t *stamp = ((uint64_t **)arg)[1];
    aemp_db_entry e;
    if (aemp_db_view_get(v, key, &e) == 0) *stamp = e.stamp;
}

static int on_set_stamp(aemp_node *n, aemp_port self, const aemp_msg *m, void *arg)
{
    aemp_cursor c = m->args;
    aemp_addr from;
    char fam[256], key[256];
    aemp_term v;
    uint64_t stamp = 0;
    if (m->nargs != 4 || aemp_get_pid(&c, &from) || get_str(&c, fam, sizeof fam) ||
        get_str(&c, key, sizeof key) || aemp_get_term(&c, &v))
        return aemp_die(n, "bad request");
    int rc = aemp_db_set(n, fam, key, &v, NULL);
    void *args[2] = {key, &stamp};
    if (!rc) rc = aemp_db_read(n, fam, own_stamp, args);
    if (rc) return reply(n, &from, "set_stamp", "~a", aemp_strerror(rc));
    return reply(n, &from, "set_stamp", "~u", stamp);
}

static int on_del(aemp_node *n, aemp_port self, const aemp_msg *m, void *arg)
{
    aemp_cursor c = m->args;
    aemp_addr from;
    char fam[256], key[256];
    if (m->nargs != 3 || aemp_get_pid(&c, &from) || get_str(&c, fam, sizeof fam) ||
        get_str(&c, key, sizeof key))
        return aemp_die(n, "bad request");
    int rc = aemp_db_del(n, fam, key);
    return reply(n, &from, "del", rc == AEMP_ENOENT ? "enoent" : rc ? "error" : "ok");
}

static int on_reg(aemp_node *n, aemp_port self, const aemp_msg *m, void *arg)
{
    aemp_cursor c = m->args;
    aemp_addr from, pa;
    char fam[256];
    aemp_port p;
    if (m->nargs != 2 || aemp_get_pid(&c, &from) || get_str(&c, fam, sizeof fam))
        return aemp_die(n, "bad request");
    int rc = aemp_port_new(n, &p);
    if (!rc) rc = aemp_db_reg(n, fam, p, NULL, NULL);
    if (!rc) rc = aemp_port_addr(n, p, &pa);
    if (rc) return reply(n, &from, "reg", "~a", aemp_strerror(rc));
    return reply(n, &from, "reg", "~p", &pa);
}

struct family_req {
    aemp_addr from;
};

static void on_family_answer(aemp_node *n, int status, const aemp_db_view *v, void *arg)
{
    struct family_req *q = arg;
    if (status == 0) {
        /* [{Key, Value, Owner, Stamp}]: the list's head by hand */
        size_t cnt = aemp_db_view_count(v);
        aemp_buf l = AEMP_BUF_INIT;
        unsigned char head[5] = {108, (unsigned char)(cnt >> 24), (unsigned char)(cnt >> 16),
                                 (unsigned char)(cnt >> 8), (unsigned char)cnt};
        aemp_term h = {(const char *)head, 5}, nil = {"\x6a", 1};
        if (cnt) aemp_buf_put_term(&l, &h);
        for (size_t i = 0; i < cnt; i++) {
            aemp_db_entry e;
            aemp_db_view_at(v, i, &e);
            aemp_term_format(&l, "{~b, ~t, ~a, ~u}", e.subkey, e.subkey_len, &e.value, e.owner,
                             e.stamp);
        }
        aemp_buf_put_term(&l, &nil);
        aemp_term t = aemp_buf_term(&l);
        aemp_sendf(n, (aemp_port){0}, &q->from, "{reply, family, ~t}", &t);
        aemp_buf_free(&l);
    }
    free(q);
}

static int on_family(aemp_node *n, aemp_port self, const aemp_msg *m, void *arg)
{
    aemp_cursor c = m->args;
    char fam[256];
    struct family_req *q = calloc(1, sizeof *q);
    if (!q) return AEMP_ENOMEM;
    if (m->nargs != 2 || aemp_get_pid(&c, &q->from) || get_str(&c, fam, sizeof fam)) {
        free(q);
        return aemp_die(n, "bad request");
    }
    int rc = aemp_db_family(n, fam, on_family_answer, q);
    if (rc) free(q);
    return rc;
}

static int on_connect(aemp_node *n, aemp_port self, const aemp_msg *m, void *arg)
{
    aemp_cursor c = m->args;
    aemp_addr from;
    char peer[256];
    if (m->nargs != 2 || aemp_get_pid(&c, &from) || aemp_get_atom(&c, peer, sizeof peer))
        return aemp_die(n, "bad request");
    int rc = aemp_node_connect(n, peer);
    return reply(n, &from, "connect", rc ? "~a" : "ok", aemp_strerror(rc));
}

static void ready(aemp_node *n)
{
    aemp_port ctl;
    if (aemp_port_new(n, &ctl) || aemp_register(n, "ctl", ctl) ||
        aemp_rcv(n, ctl, "set", on_set, NULL) || aemp_rcv(n, ctl, "del", on_del, NULL) ||
        aemp_rcv(n, ctl, "set_stamp", on_set_stamp, NULL) ||
        aemp_rcv(n, ctl, "reg", on_reg, NULL) || aemp_rcv(n, ctl, "family", on_family, NULL) ||
        aemp_rcv(n, ctl, "connect", on_connect, NULL) ||
        aemp_db_mon(n, "f", print_view, NULL, NULL)) {
        say("FAIL setup");
        exit(1);
    }
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        say("usage: dbnode NAME COOKIE");
        return 2;
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    node_ready_hook = ready;
    if (node_start(&loop, argv[1], argv[2])) {
        say("FAIL node_create");
        return 1;
    }
    return node_run(&loop);
}
