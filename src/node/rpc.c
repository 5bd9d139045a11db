/*
 * rpc.c - serving rpc:call / erpc:call / rpc:cast from Erlang with C
 * functions exported by name. Erlang's calls arrive as spawn requests of
 * erpc:execute_call/4 (Ref, M, F, A) and erpc:execute_cast/3 (M, F, A); the
 * "process" that runs the call gets a fresh pid and exits at once with the
 * result as its exit reason, which the caller's monitor delivers.
 *
 * Only exported functions run: anything else is answered as Erlang answers
 * a call of an undefined function (undef). There is no way to make a C
 * node evaluate code it has not exported.
 */
#include "node_int.h"

#include <stdlib.h>

struct export
{
    aemp_fun_cb cb;
    void *arg;
};

static int export_key(char *key, size_t size, const char *module, const char *function)
{
    if ((size_t)snprintf(key, size, "%s:%s", module, function) >= size) return AEMP_ETOOBIG;
    return 0;
}

int aemp_export(aemp_node *n, const char *module, const char *function, aemp_fun_cb cb, void *arg)
{
    char key[2 * AEMP_MAXATOMLEN + 2];
    if (!n || !module || !function || !cb || !*module || !*function ||
        strlen(module) > AEMP_MAXATOMLEN || strlen(function) > AEMP_MAXATOMLEN)
        return AEMP_EINVAL;
    export_key(key, sizeof key, module, function);
    struct export *e = aemp__map_get(&n->exports, key, strlen(key));
    if (e) {
        e->cb = cb;
        e->arg = arg;
        return 0;
    }
    e = malloc(sizeof *e);
    if (!e) return AEMP_ENOMEM;
    e->cb = cb;
    e->arg = arg;
    if (aemp__map_put(&n->exports, key, strlen(key), e)) {
        free(e);
        return AEMP_ENOMEM;
    }
    return 0;
}

int aemp_unexport(aemp_node *n, const char *module, const char *function)
{
    char key[2 * AEMP_MAXATOMLEN + 2];
    if (!n || !module || !function || export_key(key, sizeof key, module, function))
        return AEMP_EINVAL;
    struct export *e = aemp__map_del(&n->exports, key, strlen(key));
    if (!e) return AEMP_ENOENT;
    free(e);
    return 0;
}

static void free_export(const char *key, void *val, void *arg)
{
    free(val);
}

void aemp__rpc_free(aemp_node *n)
{
    aemp__map_each(&n->exports, free_export, NULL);
    aemp__map_free(&n->exports);
}

/* Erlang sends a list of small integers as a byte string (STRING_EXT);
 * functions are promised a proper list, so such arguments are rewritten as
 * one (LIST_EXT of SMALL_INTEGER_EXT, then NIL_EXT). */
static int args_as_list(const aemp_term *args, aemp_buf *out)
{
    if (args->len < 3 || (uint8_t)args->data[0] != 107) return aemp_buf_put_term(out, args);
    uint16_t n = aemp__get_u16(args->data + 1);
    int rc = aemp__buf_reserve(out, 6 + 2 * (size_t)n);
    if (rc) return rc;
    aemp__buf_put_u8(out, 108);
    aemp__buf_put_u32(out, n);
    for (uint16_t i = 0; i < n; i++) {
        aemp__buf_put_u8(out, 97);
        aemp__buf_put_u8(out, (uint8_t)args->data[3 + i]);
    }
    return aemp__buf_put_u8(out, 106);
}

/* Run M:F(Args); the exit reason (erpc's reply tuple) goes to reason. */
static int run_call(aemp_node *n, const aemp_term *ref, const char *m, const char *f,
                    const aemp_term *args, aemp_buf *reason)
{
    char key[2 * AEMP_MAXATOMLEN + 2];
    struct export *e = NULL;
    if (export_key(key, sizeof key, m, f) == 0) e = aemp__map_get(&n->exports, key, strlen(key));
    int rc;
    if (!e) {
        AEMP_LOGI("rpc: %s:%s is not exported: answered undef", m, f);
        /* {Ref, error, undef, [{M, F, Args, []}]} as Erlang's own reply */
        if ((rc = aemp__enc_tuple(reason, 4)) || (rc = aemp_buf_put_term(reason, ref)) ||
            (rc = aemp__enc_atom(reason, "error")) || (rc = aemp__enc_atom(reason, "undef")) ||
            (rc = aemp_term_format(reason, "[{~a, ~a, ~t, []}]", m, f, args)))
            return rc;
        return 0;
    }
    aemp_buf result = AEMP_BUF_INIT, list = AEMP_BUF_INIT;
    if ((rc = args_as_list(args, &list))) return rc;
    aemp_term largs = aemp_buf_term(&list);
    int kind = e->cb(n, &largs, &result, e->arg);
    aemp_buf_free(&list);
    aemp_term rt = aemp_buf_term(&result);
    size_t check;
    if (result.len == 0 || aemp__term_validate(result.data, result.len, &check) ||
        check != result.len) {
        AEMP_LOGW("rpc: %s:%s produced no valid result term", m, f);
        aemp_buf_free(&result);
        aemp__enc_atom(&result, "aemp_bad_result");
        kind = AEMP_RPC_ERROR;
        rt = aemp_buf_term(&result);
    }
    const char *k = kind == AEMP_RPC_RETURN  ? "return"
                    : kind == AEMP_RPC_THROW ? "throw"
                    : kind == AEMP_RPC_EXIT  ? "exit"
                                             : "error";
    bool error = strcmp(k, "error") == 0;
    rc = aemp__enc_tuple(reason, error ? 4 : 3);
    if (!rc) rc = aemp_buf_put_term(reason, ref);
    if (!rc) rc = aemp__enc_atom(reason, k);
    if (!rc) rc = aemp_buf_put_term(reason, &rt);
    if (!rc && error) rc = aemp_term_format(reason, "[{~a, ~a, ~t, []}]", m, f, args);
    aemp_buf_free(&result);
    return rc;
}

/* Parse erpc's argument list: [Ref, M, F, A] (call) or [M, F, A] (cast). */
static int parse_args(const aemp_term *payload, bool call, aemp_term *ref, char *m, char *f,
                      aemp_term *args)
{
    aemp_cursor c = aemp_cursor_of(payload);
    uint32_t n;
    if (aemp_get_list(&c, &n) || n != (call ? 4u : 3u)) return AEMP_ENOMATCH;
    if (call && aemp_get_term(&c, ref)) return AEMP_ENOMATCH;
    if (aemp_get_atom(&c, m, AEMP_MAXATOMLEN + 1) || aemp_get_atom(&c, f, AEMP_MAXATOMLEN + 1) ||
        aemp_get_term(&c, args))
        return AEMP_ENOMATCH;
    return 0;
}

/* monitor and link in the spawn options. */
static void parse_opts(const aemp_term *opts, bool *monitor, bool *link)
{
    aemp_cursor c = aemp_cursor_of(opts);
    uint32_t n;
    *monitor = *link = false;
    if (aemp_get_list(&c, &n)) return;
    for (uint32_t i = 0; i < n; i++) {
        char a[32];
        aemp_term el;
        if (aemp_get_term(&c, &el)) return;
        aemp_cursor e = aemp_cursor_of(&el);
        uint32_t arity;
        if (aemp_get_atom(&e, a, sizeof a) == 0 || (aemp_get_tuple(&e, &arity) == 0 && arity >= 1 &&
                                                    aemp_get_atom(&e, a, sizeof a) == 0)) {
            if (strcmp(a, "monitor") == 0)
                *monitor = true;
            else if (strcmp(a, "link") == 0)
                *link = true;
        }
    }
}

static void spawn_error(aemp__conn *c, const aemp_term *req, const aemp_term *from, const char *why)
{
    aemp_buf ctl = AEMP_BUF_INIT;
    if (aemp__enc_tuple(&ctl, 5) == 0 && aemp__enc_long(&ctl, AEMP__CTL_SPAWN_REPLY) == 0 &&
        aemp_buf_put_term(&ctl, req) == 0 && aemp_buf_put_term(&ctl, from) == 0 &&
        aemp__enc_long(&ctl, 0) == 0 && aemp__enc_atom(&ctl, why) == 0)
        aemp__ctl_raw(c, &ctl, NULL);
    aemp_buf_free(&ctl);
}

void aemp__rpc_spawn_request(aemp__conn *c, const aemp_term *req, const aemp_term *from,
                             const aemp_term *mfa, const aemp_term *opts, const aemp_term *payload)
{
    aemp_node *n = c->node;
    char mod[32], fun[32];
    uint32_t arity;
    aemp_cursor mc = aemp_cursor_of(mfa);
    if (aemp_get_tuple(&mc, &arity) || arity != 3 || aemp_get_atom(&mc, mod, sizeof mod) ||
        aemp_get_atom(&mc, fun, sizeof fun) || strcmp(mod, "erpc") != 0 ||
        (strcmp(fun, "execute_call") != 0 && strcmp(fun, "execute_cast") != 0)) {
        /* Spawning C init functions by name comes with remote spawn. */
        AEMP_LOGI("spawn request from %s refused: only rpc/erpc calls are served", c->peer);
        spawn_error(c, req, from, "notsup");
        return;
    }
    bool call = strcmp(fun, "execute_call") == 0;
    char *m = malloc(2 * (AEMP_MAXATOMLEN + 1));
    if (!m) {
        spawn_error(c, req, from, "system_limit");
        return;
    }
    char *f = m + AEMP_MAXATOMLEN + 1;
    aemp_term ref = {NULL, 0}, args;
    if (parse_args(payload, call, &ref, m, f, &args)) {
        AEMP_LOGW("spawn request from %s: malformed erpc arguments", c->peer);
        spawn_error(c, req, from, "badarg");
        free(m);
        return;
    }
    bool monitor, link;
    parse_opts(opts, &monitor, &link);
    /* The call's "process": a pid of its own, never reused. */
    if (n->next_port >= AEMP__PORT_ID_MAX) {
        spawn_error(c, req, from, "system_limit");
        free(m);
        return;
    }
    uint32_t pid = ++n->next_port;
    aemp_buf ctl = AEMP_BUF_INIT, reason = AEMP_BUF_INIT;
    /* {SPAWN_REPLY, ReqId, To, Flags, Pid} */
    int rc = aemp__enc_tuple(&ctl, 5);
    if (!rc) rc = aemp__enc_long(&ctl, AEMP__CTL_SPAWN_REPLY);
    if (!rc) rc = aemp_buf_put_term(&ctl, req);
    if (!rc) rc = aemp_buf_put_term(&ctl, from);
    if (!rc) rc = aemp__enc_long(&ctl, (link ? 1 : 0) | (monitor ? 2 : 0));
    if (!rc) rc = aemp__enc_local_pid(&ctl, n, pid);
    if (!rc) rc = aemp__ctl_raw(c, &ctl, NULL);
    if (rc) {
        AEMP_LOGE("rpc: out of memory answering %s", c->peer);
        goto done;
    }
    if (call) {
        rc = run_call(n, &ref, m, f, &args, &reason);
    } else {
        /* A cast's result is dropped and its process exits normally. */
        aemp_buf scratch = AEMP_BUF_INIT;
        rc = aemp__enc_atom(&scratch, "cast");
        aemp_term cast_ref = aemp_buf_term(&scratch);
        if (!rc) rc = run_call(n, &cast_ref, m, f, &args, &reason);
        aemp_buf_free(&scratch);
        aemp__buf_reset(&reason);
        if (!rc) rc = aemp__enc_atom(&reason, "normal");
    }
    if (rc || (c->state != AEMP__C_UP)) goto done;
    aemp_term rt = aemp_buf_term(&reason);
    bool payload_exit = (c->flags & AEMP__DFLAG_EXIT_PAYLOAD) != 0;
    if (monitor) {
        aemp__buf_reset(&ctl);
        rc = aemp__enc_tuple(&ctl, payload_exit ? 4 : 5);
        if (!rc)
            rc = aemp__enc_long(&ctl, payload_exit ? AEMP__CTL_PAYLOAD_MONITOR_P_EXIT
                                                   : AEMP__CTL_MONITOR_P_EXIT);
        if (!rc) rc = aemp__enc_local_pid(&ctl, n, pid);
        if (!rc) rc = aemp_buf_put_term(&ctl, from);
        if (!rc) rc = aemp_buf_put_term(&ctl, req); /* the monitor ref is the request id */
        if (!rc && !payload_exit) rc = aemp_buf_put_term(&ctl, &rt);
        if (!rc) aemp__ctl_raw(c, &ctl, payload_exit ? &rt : NULL);
    }
    if (link) {
        aemp__buf_reset(&ctl);
        rc = aemp__enc_tuple(&ctl, payload_exit ? 3 : 4);
        if (!rc) rc = aemp__enc_long(&ctl, payload_exit ? AEMP__CTL_PAYLOAD_EXIT : AEMP__CTL_EXIT);
        if (!rc) rc = aemp__enc_local_pid(&ctl, n, pid);
        if (!rc) rc = aemp_buf_put_term(&ctl, from);
        if (!rc && !payload_exit) rc = aemp_buf_put_term(&ctl, &rt);
        if (!rc) aemp__ctl_raw(c, &ctl, payload_exit ? &rt : NULL);
    }
done:
    aemp_buf_free(&ctl);
    aemp_buf_free(&reason);
    free(m);
}
