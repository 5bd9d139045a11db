/*
 * spawn.c - spawn requests from Erlang (spawn_request/5, and so erpc and
 * rpc): a new port is made for the process, linked to or monitored by the
 * requester as its options ask, the reply sent, and the init function
 * registered for Module:Function run as that port. Services register the
 * init functions (rpc registers erpc's); nothing here knows them by name.
 */
#include "watch.h"

#include <stdlib.h>

struct spawn_fn {
    aemp__spawn_fn fn;
    void *arg;
};

static int spawn_key(char *key, size_t size, const char *module, size_t mlen, const char *function,
                     size_t flen)
{
    if (mlen + 1 + flen + 1 > size) return AEMP_ETOOBIG;
    memcpy(key, module, mlen);
    key[mlen] = ':';
    memcpy(key + mlen + 1, function, flen);
    key[mlen + 1 + flen] = 0;
    return (int)(mlen + 1 + flen);
}

int aemp__proc_spawn_fn(aemp_node *n, const char *module, const char *function, aemp__spawn_fn fn,
                        void *arg)
{
    char key[2 * AEMP_MAXATOMLEN + 2];
    int klen = spawn_key(key, sizeof key, module, strlen(module), function, strlen(function));
    if (klen < 0) return klen;
    struct spawn_fn *s = aemp__map_get(&n->proc->spawns, key, (size_t)klen);
    if (!s) {
        s = malloc(sizeof *s);
        if (!s) return AEMP_ENOMEM;
        if (aemp__map_put(&n->proc->spawns, key, (size_t)klen, s)) {
            free(s);
            return AEMP_ENOMEM;
        }
    }
    s->fn = fn;
    s->arg = arg;
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

/* {SPAWN_REPLY, ReqId, To, Flags, Result}: Result a pid or an error atom. */
static void reply(aemp__conn *c, const aemp_term *req, const aemp_term *to, uint64_t flags,
                  const aemp_addr *pid, const char *error)
{
    aemp_buf ctl = AEMP_BUF_INIT;
    int rc = pid ? aemp__ctl_enc(&ctl, AEMP__CTL_SPAWN_REPLY, "ttia", req, to, flags, pid)
                 : aemp__ctl_enc(&ctl, AEMP__CTL_SPAWN_REPLY, "ttiA", req, to, flags, error);
    if (!rc) rc = aemp__conn_ctl(c, &ctl, NULL);
    if (rc) AEMP_LOGE("spawn reply to %s lost: %s", c->peer, aemp_strerror(rc));
    aemp_buf_free(&ctl);
}

void aemp__spawn_request(void *arg, aemp__conn *c, const aemp__ctl_in *m, aemp__ctl_memo *memo)
{
    /* {SPAWN_REQUEST, ReqId, From, GroupLeader, {M, F, Arity}, Opts} + Args */
    aemp_node *n = arg;
    const aemp_term *req = &m->el[1], *from_t = &m->el[2];
    aemp_cursor mc = aemp_cursor_of(&m->el[4]);
    uint32_t arity;
    char mod[AEMP_MAXATOMLEN + 1], fun[AEMP_MAXATOMLEN + 1], key[2 * AEMP_MAXATOMLEN + 2];
    struct spawn_fn *s = NULL;
    if (aemp_get_tuple(&mc, &arity) == 0 && arity == 3 &&
        aemp_get_atom(&mc, mod, sizeof mod) == 0 && aemp_get_atom(&mc, fun, sizeof fun) == 0) {
        int klen = spawn_key(key, sizeof key, mod, strlen(mod), fun, strlen(fun));
        if (klen > 0) s = aemp__map_get(&n->proc->spawns, key, (size_t)klen);
    } else {
        aemp__strlcpy(mod, "?", sizeof mod);
        aemp__strlcpy(fun, "?", sizeof fun);
    }
    if (!s) {
        AEMP_LOGI("spawn request from %s of %s:%s refused: nothing is registered to run it",
                  c->peer, mod, fun);
        reply(c, req, from_t, 0, NULL, "notsup");
        return;
    }
    aemp_addr from, reqid;
    size_t used;
    if (aemp__dec_addr(from_t->data, from_t->len, AEMP__WANT(AEMP_ADDR_PID), n->name_h, &from,
                       &used) ||
        aemp__dec_addr(req->data, req->len, AEMP__WANT(AEMP_ADDR_REF), n->name_h, &reqid, &used)) {
        AEMP_LOGW("spawn request from %s: malformed requester or request id", c->peer);
        reply(c, req, from_t, 0, NULL, "badarg");
        return;
    }
    bool monitor, link;
    parse_opts(&m->el[5], &monitor, &link);
    aemp_port self;
    if (aemp__proc_open(n, NULL, NULL, &self)) {
        reply(c, req, from_t, 0, NULL, "system_limit");
        return;
    }
    aemp_addr pid;
    aemp__addr_pid(&pid, n->name_h, n->creation, self.id);
    /* The monitor's reference is the request id, as OTP's spawn_request. */
    if ((link && aemp__watch_link(n, &from, &pid)) ||
        (monitor && aemp__watch_monitor(n, &from, &pid, &reqid))) {
        aemp__proc_kill_atom(n, self.id, "normal");
        reply(c, req, from_t, 0, NULL, "system_limit");
        return;
    }
    reply(c, req, from_t,
          (link ? AEMP__SPAWN_FLAG_LINK : 0) | (monitor ? AEMP__SPAWN_FLAG_MONITOR : 0), &pid,
          NULL);
    uint64_t outer = n->proc->self;
    n->proc->self = self.id;
    s->fn(n, self, &m->payload, s->arg);
    n->proc->self = outer;
}
