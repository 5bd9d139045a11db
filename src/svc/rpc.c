/*
 * rpc.c - the rpc service: rpc:call / erpc:call / rpc:cast from Erlang run
 * C functions exported by name. Erlang's calls arrive as spawn requests of
 * erpc:execute_call/4 (Ref, M, F, A) and erpc:execute_cast/3 (M, F, A);
 * this service registers the init functions for both with the process
 * layer, which makes the call's process (a port) with the link and monitor
 * the request asks for. The init runs the export and kills its port with
 * the result as exit reason, which the caller's monitor delivers.
 *
 * Only exported functions run: anything else is answered as Erlang answers
 * a call of an undefined function (undef). There is no way to make a C
 * node evaluate code it has not exported.
 */
#include "svc.h"

#include <stdio.h>
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
    struct export *e = aemp__map_get(&n->svc->exports, key, strlen(key));
    if (e) {
        e->cb = cb;
        e->arg = arg;
        return 0;
    }
    e = malloc(sizeof *e);
    if (!e) return AEMP_ENOMEM;
    e->cb = cb;
    e->arg = arg;
    if (aemp__map_put(&n->svc->exports, key, strlen(key), e)) {
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
    struct export *e = aemp__map_del(&n->svc->exports, key, strlen(key));
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
    aemp__map_each(&n->svc->exports, free_export, NULL);
    aemp__map_free(&n->svc->exports);
}

/* Run M:F(Args); the exit reason (erpc's reply tuple) goes to reason. */
static int run_call(aemp_node *n, const aemp_term *ref, const char *m, const char *f,
                    const aemp_term *args, aemp_buf *reason)
{
    char key[2 * AEMP_MAXATOMLEN + 2];
    struct export *e = NULL;
    if (export_key(key, sizeof key, m, f) == 0)
        e = aemp__map_get(&n->svc->exports, key, strlen(key));
    int rc;
    if (!e) {
        AEMP_LOGI("rpc: %s:%s is not exported: answered undef", m, f);
        /* {Ref, error, undef, [{M, F, Args, []}]} as Erlang's own reply */
        return aemp_term_format(reason, "{~t, error, undef, [{~a, ~a, ~t, []}]}", ref, m, f, args);
    }
    aemp_buf result = AEMP_BUF_INIT, list = AEMP_BUF_INIT;
    if ((rc = aemp__term_as_list(args, &list))) return rc;
    aemp_term largs = aemp_buf_term(&list);
    int kind = e->cb(n, &largs, &result, e->arg);
    aemp_buf_free(&list);
    aemp_term rt = aemp_buf_term(&result);
    size_t check;
    if (result.len == 0 || aemp__term_validate(result.data, result.len, &check) ||
        check != result.len) {
        AEMP_LOGW("rpc: %s:%s produced no valid result term", m, f);
        aemp_buf_free(&result);
        aemp_term_format(&result, "aemp_bad_result");
        kind = AEMP_RPC_ERROR;
        rt = aemp_buf_term(&result);
    }
    const char *k = kind == AEMP_RPC_RETURN  ? "return"
                    : kind == AEMP_RPC_THROW ? "throw"
                    : kind == AEMP_RPC_EXIT  ? "exit"
                                             : "error";
    if (kind == AEMP_RPC_RETURN || kind == AEMP_RPC_THROW || kind == AEMP_RPC_EXIT)
        rc = aemp_term_format(reason, "{~t, ~a, ~t}", ref, k, &rt);
    else
        rc = aemp_term_format(reason, "{~t, error, ~t, [{~a, ~a, ~t, []}]}", ref, &rt, m, f, args);
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

static void execute(aemp_node *n, aemp_port self, const aemp_term *payload, bool call)
{
    char *m = malloc(2 * (AEMP_MAXATOMLEN + 1));
    aemp_buf reason = AEMP_BUF_INIT;
    int rc = AEMP_ENOMEM;
    if (!m) goto done;
    char *f = m + AEMP_MAXATOMLEN + 1;
    aemp_term ref = {NULL, 0}, args;
    if (parse_args(payload, call, &ref, m, f, &args)) {
        AEMP_LOGW("rpc: malformed erpc arguments: the call exits with badarg");
        rc = aemp_term_format(&reason, "badarg");
        goto done;
    }
    if (call) {
        rc = run_call(n, &ref, m, f, &args, &reason);
    } else {
        /* A cast's result is dropped and its process exits normally. */
        aemp_buf scratch = AEMP_BUF_INIT;
        rc = aemp_term_format(&scratch, "cast");
        aemp_term cast_ref = aemp_buf_term(&scratch);
        if (!rc) rc = run_call(n, &cast_ref, m, f, &args, &reason);
        aemp_buf_free(&scratch);
        aemp__buf_reset(&reason);
        if (!rc) rc = aemp_term_format(&reason, "normal");
    }
done:
    if (rc) {
        AEMP_LOGE("rpc: out of memory running a call");
        aemp__buf_reset(&reason);
        aemp_term_format(&reason, "system_limit");
    }
    aemp_term rt = aemp_buf_term(&reason);
    aemp_port_kill(n, self, &rt);
    aemp_buf_free(&reason);
    free(m);
}

static void execute_call(aemp_node *n, aemp_port self, const aemp_term *args, void *arg)
{
    execute(n, self, args, true);
}

static void execute_cast(aemp_node *n, aemp_port self, const aemp_term *args, void *arg)
{
    execute(n, self, args, false);
}

int aemp__rpc_start(aemp_node *n)
{
    aemp__map_init(&n->svc->exports);
    int rc = aemp__proc_spawn_fn(n, "erpc", "execute_call", execute_call, NULL);
    if (!rc) rc = aemp__proc_spawn_fn(n, "erpc", "execute_cast", execute_cast, NULL);
    return rc;
}
