/*
 * control.c - distribution control messages: encoding what we send and
 * dispatching what we receive. Every received term is checked by
 * aemp__term_validate before ei looks at it.
 */
#include "node_int.h"

#include <stdlib.h>

/* ei's encoders compute the size when given no buffer: size, reserve, write. */
#define ENCODE(b, call)                                                                            \
    do {                                                                                           \
        int i_ = 0;                                                                                \
        char *buf = NULL;                                                                          \
        int *idx = &i_;                                                                            \
        if ((call) < 0) return AEMP_EINVAL;                                                        \
        int rc_ = aemp__buf_reserve((b), (size_t)i_);                                              \
        if (rc_) return rc_;                                                                       \
        buf = (b)->data + (b)->len;                                                                \
        i_ = 0;                                                                                    \
        if ((call) < 0) return AEMP_EINVAL;                                                        \
        (b)->len += (size_t)i_;                                                                    \
        return 0;                                                                                  \
    } while (0)

int aemp__enc_tuple(aemp_buf *b, int arity)
{
    ENCODE(b, ei_encode_tuple_header(buf, idx, arity));
}

int aemp__enc_long(aemp_buf *b, long long v)
{
    ENCODE(b, ei_encode_longlong(buf, idx, v));
}

int aemp__enc_atom(aemp_buf *b, const char *a)
{
    ENCODE(b, ei_encode_atom_len_as(buf, idx, a, (int)strlen(a), ERLANG_UTF8, ERLANG_UTF8));
}

static int enc_erlang_pid(aemp_buf *b, const erlang_pid *p)
{
    ENCODE(b, ei_encode_pid(buf, idx, p));
}

int aemp__enc_pid(aemp_buf *b, const aemp_addr *a)
{
    erlang_pid p;
    memset(&p, 0, sizeof p);
    aemp__strlcpy(p.node, a->node, sizeof p.node);
    p.num = a->num;
    p.serial = a->serial;
    p.creation = a->creation;
    return enc_erlang_pid(b, &p);
}

int aemp__enc_local_pid(aemp_buf *b, const aemp_node *n, uint32_t id)
{
    erlang_pid p;
    memset(&p, 0, sizeof p);
    aemp__strlcpy(p.node, n->name, sizeof p.node);
    p.num = id & 0x7fff;
    p.serial = (id >> 15) & 0x1fff;
    p.creation = n->creation;
    return enc_erlang_pid(b, &p);
}

/* ------------------------------------------------------------------ */
/* sending                                                            */
/* ------------------------------------------------------------------ */

/* Control message for a send, into ctl. */
static int enc_send_ctl(aemp__conn *c, aemp_buf *ctl, uint32_t from, const aemp_addr *to)
{
    int rc;
    if (to->kind == AEMP_ADDR_NAME) {
        /* {REG_SEND, FromPid, Unused, ToName} */
        if ((rc = aemp__enc_tuple(ctl, 4)) || (rc = aemp__enc_long(ctl, AEMP__CTL_REG_SEND)) ||
            (rc = aemp__enc_local_pid(ctl, c->node, from)) || (rc = aemp__enc_atom(ctl, "")) ||
            (rc = aemp__enc_atom(ctl, to->name)))
            return rc;
        return 0;
    }
    if (from && (c->flags & AEMP__DFLAG_SEND_SENDER)) {
        if ((rc = aemp__enc_tuple(ctl, 3)) || (rc = aemp__enc_long(ctl, AEMP__CTL_SEND_SENDER)) ||
            (rc = aemp__enc_local_pid(ctl, c->node, from)) || (rc = aemp__enc_pid(ctl, to)))
            return rc;
        return 0;
    }
    if ((rc = aemp__enc_tuple(ctl, 3)) || (rc = aemp__enc_long(ctl, AEMP__CTL_SEND)) ||
        (rc = aemp__enc_atom(ctl, "")) || (rc = aemp__enc_pid(ctl, to)))
        return rc;
    return 0;
}

/*
 * A packet starts with the pass-through byte, and each term with its version
 * byte; or, when the peer asked for distribution headers
 * (DIST_HDR_ATOM_CACHE), with a header of no atom cache references, and the
 * terms without version bytes (then Erlang refuses pass-through packets).
 */
static bool headed(const aemp__conn *c)
{
    return (c->flags & AEMP__DFLAG_DIST_HDR_ATOM_CACHE) != 0;
}

static int packet_head(aemp__conn *c)
{
    static const char with_header[] = {(char)131, AEMP__DIST_HEADER, 0};
    static const char pass_through[] = {AEMP__PASS_THROUGH, (char)131};
    return headed(c) ? aemp__buf_append(&c->wbuf, with_header, sizeof with_header)
                     : aemp__buf_append(&c->wbuf, pass_through, sizeof pass_through);
}

/* Before the message that follows the control message. */
static int term_start(aemp__conn *c)
{
    return headed(c) ? 0 : aemp__buf_put_u8(&c->wbuf, 131);
}

int aemp__ctl_raw(aemp__conn *c, const aemp_buf *ctl, const aemp_term *payload)
{
    int rc;
    size_t start = aemp__conn_packet_begin(c, &rc);
    if (rc) return rc;
    if ((rc = packet_head(c)) || (rc = aemp__buf_append(&c->wbuf, ctl->data, ctl->len))) goto fail;
    if (payload && (rc = term_start(c))) goto fail;
    if (payload && (rc = aemp__buf_append(&c->wbuf, payload->data, payload->len))) goto fail;
    aemp__conn_packet_end(c, start);
    return 0;
fail:
    c->wbuf.len = start;
    return rc;
}

int aemp__ctl_send(aemp__conn *c, uint32_t from, const aemp_addr *to, const aemp_term *msg)
{
    /* Encode the control tuple straight into the write buffer: no copy of the
     * message beyond the one into the socket buffer. */
    int rc;
    size_t start = aemp__conn_packet_begin(c, &rc);
    if (rc) return rc;
    if ((rc = packet_head(c)) || (rc = enc_send_ctl(c, &c->wbuf, from, to)) ||
        (rc = term_start(c)) || (rc = aemp__buf_append(&c->wbuf, msg->data, msg->len))) {
        c->wbuf.len = start;
        return rc;
    }
    aemp__conn_packet_end(c, start);
    return 0;
}

/*
 * Messages queued before the connection is up are kept as records, since
 * the control message depends on the flags the handshake negotiates:
 * u32 record length, u32 from, u8 kind, u32 num, u32 serial, u32 creation,
 * u16 name length, name, message.
 */
int aemp__pend_add(aemp__conn *c, uint32_t from, const aemp_addr *to, const aemp_term *msg)
{
    const char *name = to->kind == AEMP_ADDR_NAME ? to->name : "";
    size_t nlen = strlen(name);
    size_t total = 4 + 4 + 1 + 12 + 2 + nlen + msg->len;
    if (total > UINT32_MAX) return AEMP_ETOOBIG;
    int rc = aemp__buf_reserve(&c->pend, total);
    if (rc) return rc;
    aemp__buf_put_u32(&c->pend, (uint32_t)total);
    aemp__buf_put_u32(&c->pend, from);
    aemp__buf_put_u8(&c->pend, (uint8_t)to->kind);
    aemp__buf_put_u32(&c->pend, to->num);
    aemp__buf_put_u32(&c->pend, to->serial);
    aemp__buf_put_u32(&c->pend, to->creation);
    aemp__buf_put_u16(&c->pend, (uint16_t)nlen);
    aemp__buf_append(&c->pend, name, nlen);
    aemp__buf_append(&c->pend, msg->data, msg->len);
    c->npend++;
    return 0;
}

void aemp__ctl_flush_pending(aemp__conn *c)
{
    aemp_addr *to = malloc(sizeof *to);
    if (!to) {
        AEMP_LOGE("out of memory flushing %zu queued messages to %s", c->npend, c->peer);
        aemp__conn_close(c, AEMP_ENOMEM, "out of memory");
        return;
    }
    size_t pos = 0;
    while (pos < c->pend.len) {
        const char *r = c->pend.data + pos;
        uint32_t total = aemp__get_u32(r);
        memset(to, 0, sizeof *to);
        uint32_t from = aemp__get_u32(r + 4);
        to->kind = (aemp_addr_kind)(uint8_t)r[8];
        to->num = aemp__get_u32(r + 9);
        to->serial = aemp__get_u32(r + 13);
        to->creation = aemp__get_u32(r + 17);
        uint16_t nlen = aemp__get_u16(r + 21);
        memcpy(to->name, r + 23, nlen);
        to->name[nlen] = 0;
        aemp__strlcpy(to->node, c->peer, sizeof to->node);
        aemp_term msg = {r + 23 + nlen, total - 23 - nlen};
        if (aemp__ctl_send(c, from, to, &msg))
            AEMP_LOGE("out of memory: dropped a queued message to %s", c->peer);
        pos += total;
    }
    free(to);
    aemp_buf_free(&c->pend);
    c->npend = 0;
}

/* ------------------------------------------------------------------ */
/* receiving                                                          */
/* ------------------------------------------------------------------ */

/* A parsed control message: the tuple's elements as views. */
struct ctl {
    int64_t tag;
    uint32_t arity;
    aemp_term el[8]; /* el[0] is the tag */
    aemp_term payload;
    bool has_payload;
};

static const char *ctl_name(int64_t tag)
{
    switch (tag) {
    case AEMP__CTL_LINK:
        return "LINK";
    case AEMP__CTL_SEND:
        return "SEND";
    case AEMP__CTL_EXIT:
        return "EXIT";
    case AEMP__CTL_UNLINK:
        return "UNLINK";
    case AEMP__CTL_NODE_LINK:
        return "NODE_LINK";
    case AEMP__CTL_REG_SEND:
        return "REG_SEND";
    case AEMP__CTL_GROUP_LEADER:
        return "GROUP_LEADER";
    case AEMP__CTL_EXIT2:
        return "EXIT2";
    case AEMP__CTL_MONITOR_P:
        return "MONITOR_P";
    case AEMP__CTL_DEMONITOR_P:
        return "DEMONITOR_P";
    case AEMP__CTL_MONITOR_P_EXIT:
        return "MONITOR_P_EXIT";
    case AEMP__CTL_SPAWN_REQUEST:
        return "SPAWN_REQUEST";
    case AEMP__CTL_SPAWN_REPLY:
        return "SPAWN_REPLY";
    case AEMP__CTL_ALIAS_SEND:
        return "ALIAS_SEND";
    default:
        return "control message";
    }
}

static bool get_pid(const aemp_term *t, aemp_addr *a)
{
    aemp_cursor cur = aemp_cursor_of(t);
    return aemp_get_pid(&cur, a) == 0;
}

static bool get_atom(const aemp_term *t, char *out, size_t size)
{
    aemp_cursor cur = aemp_cursor_of(t);
    return aemp_get_atom(&cur, out, size) == 0;
}

static bool is_atom(const aemp_term *t, const char *want)
{
    char a[64];
    return get_atom(t, a, sizeof a) && strcmp(a, want) == 0;
}

/* Our local port for a pid term, or NULL (a stale or foreign pid). */
static aemp__port *local_port_of(aemp_node *n, const aemp_term *t)
{
    uint32_t id;
    aemp_addr *a = &n->pkt_addr[0];
    if (!get_pid(t, a) || !aemp__pid_is_local(n, a, &id)) return NULL;
    return aemp__port_find(n, id);
}

static void deliver_to_pid(aemp__conn *c, const aemp_term *to, const aemp_term *msg,
                           const aemp_term *from)
{
    aemp_node *n = c->node;
    aemp__port *p = local_port_of(n, to);
    if (!p) {
        AEMP_LOGD("message from %s to a pid that is not here: dropped", c->peer);
        return;
    }
    aemp_addr *fa = &n->pkt_addr[1];
    aemp__deliver(n, p->id, msg, from && get_pid(from, fa) ? fa : NULL);
}

/* Reply to a `'$gen_call'` addressed to net_kernel: `{is_auth, Node}` -> yes. */
static void net_kernel_call(aemp__conn *c, const aemp_term *msg)
{
    aemp_cursor cur = aemp_cursor_of(msg);
    uint32_t arity, farity;
    char tag[32];
    aemp_term from_pid, reply_tag, request;
    if (aemp_get_tuple(&cur, &arity) || arity != 3 || aemp_get_atom(&cur, tag, sizeof tag) ||
        strcmp(tag, "$gen_call") || aemp_get_tuple(&cur, &farity) || farity != 2 ||
        aemp_get_term(&cur, &from_pid) || aemp_get_term(&cur, &reply_tag) ||
        aemp_get_term(&cur, &request)) {
        AEMP_LOGD("net_kernel: ignored a message from %s", c->peer);
        return;
    }
    aemp_cursor rc = aemp_cursor_of(&request);
    uint32_t rarity;
    char what[32];
    const char *answer = "yes";
    if (aemp_get_tuple(&rc, &rarity) || rarity < 1 || aemp_get_atom(&rc, what, sizeof what) ||
        strcmp(what, "is_auth") != 0) {
        AEMP_LOGD("net_kernel: unsupported call from %s", c->peer);
        answer = "error";
    }
    /* {Tag, yes} to the caller's pid; Tag echoed exactly as received (it may
     * be a reference or an [alias|Ref] list). */
    aemp_buf ctl = AEMP_BUF_INIT, body = AEMP_BUF_INIT;
    if (aemp__enc_tuple(&body, 2) == 0 && aemp_buf_put_term(&body, &reply_tag) == 0 &&
        aemp__enc_atom(&body, answer) == 0 && aemp__enc_tuple(&ctl, 3) == 0 &&
        aemp__enc_long(&ctl, AEMP__CTL_SEND) == 0 && aemp__enc_atom(&ctl, "") == 0 &&
        aemp_buf_put_term(&ctl, &from_pid) == 0) {
        aemp_term t = aemp_buf_term(&body);
        aemp__ctl_raw(c, &ctl, &t);
    }
    aemp_buf_free(&ctl);
    aemp_buf_free(&body);
}

static void deliver_to_name(aemp__conn *c, const aemp_term *name, const aemp_term *msg,
                            const aemp_term *from)
{
    char reg[AEMP_MAXATOMLEN + 1];
    if (!get_atom(name, reg, sizeof reg)) {
        AEMP_LOGW("REG_SEND from %s with a name that is not an atom: ignored", c->peer);
        return;
    }
    if (strcmp(reg, "net_kernel") == 0) {
        net_kernel_call(c, msg);
        return;
    }
    aemp__port *p = aemp__port_by_name(c->node, reg);
    if (!p) {
        AEMP_LOGD("message from %s to unregistered name '%s': dropped", c->peer, reg);
        return;
    }
    aemp_addr *fa = &c->node->pkt_addr[1];
    aemp__deliver(c->node, p->id, msg, from && get_pid(from, fa) ? fa : NULL);
}

static int watch_copy(aemp_buf *dst, const aemp_term *t)
{
    dst->data = NULL;
    dst->len = dst->cap = 0;
    return aemp_buf_put_term(dst, t);
}

static void send_monitor_exit(aemp__conn *c, const aemp_term *target, const aemp_term *watcher,
                              const aemp_term *ref, const char *reason)
{
    aemp_buf ctl = AEMP_BUF_INIT;
    if (aemp__enc_tuple(&ctl, 5) == 0 && aemp__enc_long(&ctl, AEMP__CTL_MONITOR_P_EXIT) == 0 &&
        aemp_buf_put_term(&ctl, target) == 0 && aemp_buf_put_term(&ctl, watcher) == 0 &&
        aemp_buf_put_term(&ctl, ref) == 0 && aemp__enc_atom(&ctl, reason) == 0)
        aemp__ctl_raw(c, &ctl, NULL);
    aemp_buf_free(&ctl);
}

static void send_exit(aemp__conn *c, const aemp_term *from, const aemp_term *to, const char *reason)
{
    aemp_buf ctl = AEMP_BUF_INIT;
    if (aemp__enc_tuple(&ctl, 4) == 0 && aemp__enc_long(&ctl, AEMP__CTL_EXIT) == 0 &&
        aemp_buf_put_term(&ctl, from) == 0 && aemp_buf_put_term(&ctl, to) == 0 &&
        aemp__enc_atom(&ctl, reason) == 0)
        aemp__ctl_raw(c, &ctl, NULL);
    aemp_buf_free(&ctl);
}

static void add_watch(aemp__conn *c, aemp__port *p, bool is_link, const aemp_term *target,
                      const aemp_term *watcher, const aemp_term *ref)
{
    aemp__watch *w = calloc(1, sizeof *w);
    if (!w) return;
    w->is_link = is_link;
    aemp__strlcpy(w->peer, c->peer, sizeof w->peer);
    if ((target && watch_copy(&w->target, target)) || watch_copy(&w->watcher, watcher) ||
        (ref && watch_copy(&w->ref, ref))) {
        aemp_buf_free(&w->target);
        aemp_buf_free(&w->watcher);
        aemp_buf_free(&w->ref);
        free(w);
        return;
    }
    w->next = p->watches;
    p->watches = w;
}

static bool term_eq(const aemp_buf *b, const aemp_term *t)
{
    return b->len == t->len && memcmp(b->data, t->data, t->len) == 0;
}

static void del_watch(aemp__port *p, bool is_link, const aemp_term *watcher, const aemp_term *ref)
{
    for (aemp__watch **pw = &p->watches; *pw; pw = &(*pw)->next) {
        aemp__watch *w = *pw;
        if (w->is_link != is_link || !term_eq(&w->watcher, watcher) ||
            (ref && !term_eq(&w->ref, ref)))
            continue;
        *pw = w->next;
        aemp_buf_free(&w->target);
        aemp_buf_free(&w->watcher);
        aemp_buf_free(&w->ref);
        free(w);
        return;
    }
}

static void on_monitor(aemp__conn *c, struct ctl *m)
{
    /* {MONITOR_P, FromPid, ToProc, Ref}: ToProc is our pid or a name. */
    aemp_node *n = c->node;
    aemp__port *p = NULL;
    char reg[AEMP_MAXATOMLEN + 1];
    if (get_atom(&m->el[2], reg, sizeof reg)) {
        /* net_kernel lives as long as the node: the monitor never fires */
        if (strcmp(reg, "net_kernel") == 0) return;
        p = aemp__port_by_name(n, reg);
    } else {
        p = local_port_of(n, &m->el[2]);
    }
    if (!p) {
        /* Unknown: answer at once, or the Erlang caller waits forever. */
        send_monitor_exit(c, &m->el[2], &m->el[1], &m->el[3], "noproc");
        return;
    }
    add_watch(c, p, false, &m->el[2], &m->el[1], &m->el[3]);
}

static void on_demonitor(aemp__conn *c, struct ctl *m)
{
    aemp_node *n = c->node;
    char reg[AEMP_MAXATOMLEN + 1];
    aemp__port *p = NULL;
    if (get_atom(&m->el[2], reg, sizeof reg))
        p = aemp__port_by_name(n, reg);
    else
        p = local_port_of(n, &m->el[2]);
    if (p) del_watch(p, false, &m->el[1], &m->el[3]);
}

static void on_link(aemp__conn *c, struct ctl *m)
{
    aemp__port *p = local_port_of(c->node, &m->el[2]);
    if (!p) {
        send_exit(c, &m->el[2], &m->el[1], "noproc");
        return;
    }
    add_watch(c, p, true, NULL, &m->el[1], NULL);
}

static void on_unlink(aemp__conn *c, const aemp_term *from, const aemp_term *to)
{
    aemp__port *p = local_port_of(c->node, to);
    if (p) del_watch(p, true, from, NULL);
}

static void on_exit_signal(aemp__conn *c, const aemp_term *from, const aemp_term *to,
                           const aemp_term *reason, bool is_link_exit)
{
    aemp__port *p = local_port_of(c->node, to);
    if (!p) return;
    if (is_link_exit) del_watch(p, true, from, NULL);
    /* Ports do not trap exits: a normal exit signal is ignored, any other
     * kills the port with that reason. */
    if (is_atom(reason, "normal")) return;
    aemp__port_kill(c->node, p, reason);
}

static void on_spawn_request(aemp__conn *c, struct ctl *m)
{
    /* {SPAWN_REQUEST, ReqId, From, GroupLeader, {M, F, Arity}, Opts} + Args */
    aemp__rpc_spawn_request(c, &m->el[1], &m->el[2], &m->el[4], &m->el[5], &m->payload);
}

static void on_unlink_id(aemp__conn *c, struct ctl *m)
{
    /* {UNLINK_ID, Id, FromPid, ToPid}: remove the link, acknowledge. */
    on_unlink(c, &m->el[2], &m->el[3]);
    aemp_buf ctl = AEMP_BUF_INIT;
    if (aemp__enc_tuple(&ctl, 4) == 0 && aemp__enc_long(&ctl, AEMP__CTL_UNLINK_ID_ACK) == 0 &&
        aemp_buf_put_term(&ctl, &m->el[1]) == 0 && aemp_buf_put_term(&ctl, &m->el[3]) == 0 &&
        aemp_buf_put_term(&ctl, &m->el[2]) == 0)
        aemp__ctl_raw(c, &ctl, NULL);
    aemp_buf_free(&ctl);
}

/* Minimum arity and whether a payload term follows, per tag. */
static bool ctl_shape(int64_t tag, uint32_t *min_arity, bool *payload)
{
    *payload = false;
    switch (tag) {
    case AEMP__CTL_NODE_LINK:
        *min_arity = 1;
        return true;
    case AEMP__CTL_LINK:
    case AEMP__CTL_UNLINK:
    case AEMP__CTL_GROUP_LEADER:
        *min_arity = 3;
        return true;
    case AEMP__CTL_SEND:
    case AEMP__CTL_SEND_SENDER:
    case AEMP__CTL_ALIAS_SEND:
    case AEMP__CTL_PAYLOAD_EXIT:
    case AEMP__CTL_PAYLOAD_EXIT2:
        *min_arity = 3;
        *payload = true;
        return true;
    case AEMP__CTL_SEND_TT:
    case AEMP__CTL_SEND_SENDER_TT:
    case AEMP__CTL_ALIAS_SEND_TT:
    case AEMP__CTL_PAYLOAD_EXIT_TT:
    case AEMP__CTL_PAYLOAD_EXIT2_TT:
    case AEMP__CTL_PAYLOAD_MONITOR_P_EXIT:
        *min_arity = 4;
        *payload = true;
        return true;
    case AEMP__CTL_REG_SEND:
        *min_arity = 4;
        *payload = true;
        return true;
    case AEMP__CTL_REG_SEND_TT:
        *min_arity = 5;
        *payload = true;
        return true;
    case AEMP__CTL_EXIT:
    case AEMP__CTL_EXIT2:
    case AEMP__CTL_MONITOR_P:
    case AEMP__CTL_DEMONITOR_P:
    case AEMP__CTL_UNLINK_ID:
    case AEMP__CTL_UNLINK_ID_ACK:
        *min_arity = 4;
        return true;
    case AEMP__CTL_EXIT_TT:
    case AEMP__CTL_EXIT2_TT:
    case AEMP__CTL_MONITOR_P_EXIT:
    case AEMP__CTL_SPAWN_REPLY:
        *min_arity = 5;
        return true;
    case AEMP__CTL_SPAWN_REPLY_TT:
        *min_arity = 6;
        return true;
    case AEMP__CTL_SPAWN_REQUEST:
        *min_arity = 6;
        *payload = true;
        return true;
    case AEMP__CTL_SPAWN_REQUEST_TT:
        *min_arity = 7;
        *payload = true;
        return true;
    default:
        return false;
    }
}

/* The atoms a distribution header refers to, in the order of its references. */
struct dist_header {
    unsigned n;
    const char *atom[256];
    uint16_t alen[256];
};

/*
 * Parse a distribution header (131, 68, NumberOfAtomCacheRefs, Flags,
 * AtomCacheRefs; erl_ext_dist) at p, updating c's atom cache. A header that
 * names one cache entry twice is refused: Erlang never sends one, and it
 * would free an entry this header still refers to.
 */
static int parse_dist_header(aemp__conn *c, const uint8_t *p, size_t len, struct dist_header *h,
                             size_t *used)
{
    size_t pos = 2;
    if (len < 3) return AEMP_EPROTO;
    unsigned n = p[pos++];
    h->n = n;
    if (n == 0) {
        *used = pos;
        return 0;
    }
    size_t flen = n / 2 + 1;
    if (len - pos < flen) return AEMP_EPROTO;
    const uint8_t *flags = p + pos;
    pos += flen;
    /* the half byte after the references' flags: bit 0 is LongAtoms */
    bool long_atoms = ((flags[n / 2] >> ((n & 1) ? 4 : 0)) & 1) != 0;
    if (!c->atoms) {
        c->atoms = calloc(AEMP__ATOM_CACHE_SIZE, sizeof *c->atoms);
        if (!c->atoms) return AEMP_ENOMEM;
    }
    uint8_t seen[AEMP__ATOM_CACHE_SIZE / 8];
    memset(seen, 0, sizeof seen);
    for (unsigned i = 0; i < n; i++) {
        unsigned f = (flags[i / 2] >> ((i & 1) ? 4 : 0)) & 0xf;
        if (pos >= len) return AEMP_EPROTO;
        unsigned idx = (f & 7) * 256 + p[pos++];
        if (seen[idx / 8] & (1u << (idx % 8))) return AEMP_EPROTO;
        seen[idx / 8] |= (uint8_t)(1u << (idx % 8));
        if (f & 8) {
            size_t alen;
            if (long_atoms) {
                if (len - pos < 2) return AEMP_EPROTO;
                alen = aemp__get_u16(p + pos);
                pos += 2;
            } else {
                if (len - pos < 1) return AEMP_EPROTO;
                alen = p[pos++];
            }
            if (alen > AEMP_MAXATOMLEN || len - pos < alen) return AEMP_EPROTO;
            char *a = malloc(2 + alen);
            if (!a) return AEMP_ENOMEM;
            aemp__put_u16(a, (uint16_t)alen);
            memcpy(a + 2, p + pos, alen);
            pos += alen;
            free(c->atoms[idx]);
            c->atoms[idx] = a;
        } else if (!c->atoms[idx]) {
            return AEMP_EPROTO; /* a reference to an entry never defined */
        }
        h->atom[i] = c->atoms[idx] + 2;
        h->alen[i] = aemp__get_u16(c->atoms[idx]);
    }
    *used = pos;
    return 0;
}

/* Bytes an atom takes instead of its 2-byte cache reference. */
static size_t atom_size(const struct dist_header *h, unsigned i)
{
    return (h->alen[i] <= 255 ? 2 : 3) + (size_t)h->alen[i];
}

/* t with every atom cache reference (from refpos) replaced by its atom,
 * into out; NEW_FUN_EXT sizes grow by what their references grew. */
static int replace_refs(const char *t, size_t tlen, const aemp_buf *refpos,
                        const struct dist_header *h, aemp_buf *out)
{
    int rc = 0;
    size_t prev = 0;
    out->len = 0;
    for (size_t k = 0; k + 4 <= refpos->len && !rc; k += 4) {
        uint32_t at = aemp__get_u32(refpos->data + k);
        if (at & AEMP__TERM_FUN_MARK) continue;
        unsigned i = (uint8_t)t[at + 1];
        rc = aemp__buf_append(out, t + prev, at - prev);
        if (!rc && h->alen[i] <= 255) {
            rc = aemp__buf_put_u8(out, 119); /* SMALL_ATOM_UTF8_EXT */
            if (!rc) rc = aemp__buf_put_u8(out, (uint8_t)h->alen[i]);
        } else if (!rc) {
            rc = aemp__buf_put_u8(out, 118); /* ATOM_UTF8_EXT */
            if (!rc) rc = aemp__buf_put_u16(out, h->alen[i]);
        }
        if (!rc) rc = aemp__buf_append(out, h->atom[i], h->alen[i]);
        prev = at + 2;
    }
    if (!rc) rc = aemp__buf_append(out, t + prev, tlen - prev);
    if (rc) return rc;
    /* Each fun: its new place is its old one plus the growth of the
     * references before it; its Size grows by that of those inside it.
     * Entries come in walk order and funs nest, so one pass with a stack of
     * open funs does it (the stack is as deep as terms may nest). */
    struct open_fun {
        size_t start, end, grown_before;
    } stack[AEMP__TERM_MAX_DEPTH + 1];
    int sp = 0;
    size_t grown = 0;
    for (size_t k = 0; k <= refpos->len; k += 4) {
        bool last = k + 4 > refpos->len;
        uint32_t e = last ? 0 : aemp__get_u32(refpos->data + k);
        size_t at = last ? SIZE_MAX : (e & ~AEMP__TERM_FUN_MARK);
        while (sp > 0 && stack[sp - 1].end <= at) {
            struct open_fun *f = &stack[--sp];
            char *size = out->data + f->start + f->grown_before + 1;
            uint64_t n = (uint64_t)aemp__get_u32(size) + (grown - f->grown_before);
            if (n > UINT32_MAX) return AEMP_ETOOBIG;
            aemp__put_u32(size, (uint32_t)n);
        }
        if (last) break;
        if (e & AEMP__TERM_FUN_MARK) {
            if (sp > AEMP__TERM_MAX_DEPTH) return AEMP_EBADTERM;
            stack[sp].start = at;
            stack[sp].end = at + 1 + aemp__get_u32(t + at + 1);
            stack[sp].grown_before = grown;
            sp++;
        } else {
            grown += atom_size(h, (uint8_t)t[at + 1]) - 2;
        }
    }
    return 0;
}

/* One term at p[*pos]: with a 131 first in a pass-through packet; after a
 * distribution header without it, and with cache references replaced (in
 * scratch) when there are any, else in place. */
static int take_term(aemp__conn *c, const char *p, size_t len, size_t *pos,
                     const struct dist_header *h, aemp_buf *scratch, aemp_term *out)
{
    size_t used;
    if (!h) {
        if (*pos >= len || (uint8_t)p[*pos] != 131) return AEMP_EPROTO;
        ++*pos;
        if (aemp__term_validate(p + *pos, len - *pos, &used)) return AEMP_EBADTERM;
        out->data = p + *pos;
        out->len = used;
        *pos += used;
        return 0;
    }
    c->refpos.len = 0;
    if (aemp__term_validate_refs(p + *pos, len - *pos, &used, h->n, &c->refpos))
        return AEMP_EBADTERM;
    if (c->refpos.len == 0) {
        out->data = p + *pos;
        out->len = used;
    } else {
        size_t check;
        if (replace_refs(p + *pos, used, &c->refpos, h, scratch)) return AEMP_ENOMEM;
        if (aemp__term_validate(scratch->data, scratch->len, &check) || check != scratch->len)
            return AEMP_EBADTERM;
        out->data = scratch->data;
        out->len = scratch->len;
    }
    *pos += used;
    return 0;
}

/* p: the packet after its type byte (pass-through) or the whole packet
 * (distribution header h already parsed, terms from *pos). */
static int parse_ctl(aemp__conn *c, const char *p, size_t len, size_t pos,
                     const struct dist_header *h, struct ctl *m)
{
    aemp_term whole;
    int rc = take_term(c, p, len, &pos, h, &c->ctl_scratch, &whole);
    if (rc) return rc;
    aemp_cursor cur = aemp_cursor_of(&whole);
    if (aemp_get_tuple(&cur, &m->arity) || m->arity < 1 || aemp_get_int64(&cur, &m->tag))
        return AEMP_EPROTO;
    uint32_t min_arity;
    bool payload;
    if (!ctl_shape(m->tag, &min_arity, &payload)) {
        AEMP_LOGW("unknown control message %lld from %s: ignored", (long long)m->tag, c->peer);
        m->tag = -1;
        return 0;
    }
    if (m->arity < min_arity) {
        AEMP_LOGW("%s from %s has arity %u, expected %u", ctl_name(m->tag), c->peer, m->arity,
                  min_arity);
        return AEMP_EPROTO;
    }
    cur = aemp_cursor_of(&whole);
    aemp_get_tuple(&cur, &m->arity);
    for (uint32_t i = 0; i < m->arity && i < 8; i++)
        aemp_get_term(&cur, &m->el[i]);
    m->has_payload = payload;
    if (payload && (rc = take_term(c, p, len, &pos, h, &c->msg_scratch, &m->payload))) return rc;
    if (pos != len) {
        AEMP_LOGW("%s from %s: %zu trailing bytes", ctl_name(m->tag), c->peer, len - pos);
        return AEMP_EPROTO;
    }
    return 0;
}

void aemp__ctl_packet(aemp__conn *c, const char *p, size_t len)
{
    /* A closing node runs no callback any more: what still arrives while its
     * connections flush and shut down is dropped, as by a node that is gone. */
    if (c->node->closing) return;
    struct ctl m;
    memset(&m, 0, sizeof m);
    int rc;
    if (len >= 1 && (uint8_t)p[0] == AEMP__PASS_THROUGH) {
        rc = parse_ctl(c, p, len, 1, NULL, &m);
    } else if (len >= 2 && (uint8_t)p[0] == 131 && (uint8_t)p[1] == AEMP__DIST_HEADER) {
        struct dist_header h;
        size_t used = 0;
        rc = parse_dist_header(c, (const uint8_t *)p, len, &h, &used);
        if (!rc) rc = parse_ctl(c, p, len, used, &h, &m);
    } else {
        AEMP_LOGW("connection to %s: packet type %u not supported (no fragments were negotiated)",
                  c->peer, len ? (unsigned)(uint8_t)p[0] : 0u);
        aemp__conn_close(c, AEMP_EPROTO, "unsupported packet type");
        return;
    }
    if (rc) {
        AEMP_LOGW("connection to %s: malformed control message (%s): closing", c->peer,
                  aemp_strerror(rc));
        aemp__conn_close(c, rc, "malformed control message");
        return;
    }
    switch (m.tag) {
    case -1:
        break;
    case AEMP__CTL_SEND:
    case AEMP__CTL_SEND_TT:
        deliver_to_pid(c, &m.el[2], &m.payload, NULL);
        break;
    case AEMP__CTL_SEND_SENDER:
    case AEMP__CTL_SEND_SENDER_TT:
        deliver_to_pid(c, &m.el[2], &m.payload, &m.el[1]);
        break;
    case AEMP__CTL_REG_SEND:
    case AEMP__CTL_REG_SEND_TT:
        deliver_to_name(c, &m.el[3], &m.payload, &m.el[1]);
        break;
    case AEMP__CTL_ALIAS_SEND:
    case AEMP__CTL_ALIAS_SEND_TT:
        /* We create no aliases: any alias is unknown, and an unknown alias
         * drops the message, as in Erlang. */
        AEMP_LOGD("alias send from %s to an unknown alias: dropped", c->peer);
        break;
    case AEMP__CTL_MONITOR_P:
        on_monitor(c, &m);
        break;
    case AEMP__CTL_DEMONITOR_P:
        on_demonitor(c, &m);
        break;
    case AEMP__CTL_LINK:
        on_link(c, &m);
        break;
    case AEMP__CTL_UNLINK:
        on_unlink(c, &m.el[1], &m.el[2]);
        break;
    case AEMP__CTL_UNLINK_ID:
        on_unlink_id(c, &m);
        break;
    case AEMP__CTL_EXIT:
        on_exit_signal(c, &m.el[1], &m.el[2], &m.el[3], true);
        break;
    case AEMP__CTL_EXIT_TT:
        on_exit_signal(c, &m.el[1], &m.el[2], &m.el[4], true);
        break;
    case AEMP__CTL_EXIT2:
        on_exit_signal(c, &m.el[1], &m.el[2], &m.el[3], false);
        break;
    case AEMP__CTL_EXIT2_TT:
        on_exit_signal(c, &m.el[1], &m.el[2], &m.el[4], false);
        break;
    case AEMP__CTL_PAYLOAD_EXIT:
    case AEMP__CTL_PAYLOAD_EXIT_TT:
        on_exit_signal(c, &m.el[1], &m.el[2], &m.payload, true);
        break;
    case AEMP__CTL_PAYLOAD_EXIT2:
    case AEMP__CTL_PAYLOAD_EXIT2_TT:
        on_exit_signal(c, &m.el[1], &m.el[2], &m.payload, false);
        break;
    case AEMP__CTL_SPAWN_REQUEST:
    case AEMP__CTL_SPAWN_REQUEST_TT:
        on_spawn_request(c, &m);
        break;
    case AEMP__CTL_NODE_LINK:
    case AEMP__CTL_GROUP_LEADER:
    case AEMP__CTL_UNLINK_ID_ACK:
    case AEMP__CTL_MONITOR_P_EXIT:
    case AEMP__CTL_PAYLOAD_MONITOR_P_EXIT:
    case AEMP__CTL_SPAWN_REPLY:
    case AEMP__CTL_SPAWN_REPLY_TT:
        /* We issue no monitors, links or spawns yet: nothing waits for these. */
        AEMP_LOGD("%s from %s ignored", ctl_name(m.tag), c->peer);
        break;
    default:
        break;
    }
}

void aemp__ctl_port_died(aemp_node *n, uint32_t id, aemp__watch *w, const aemp_term *reason)
{
    aemp__conn *c = aemp__map_get(&n->conn_by_name, w->peer, strlen(w->peer));
    if (!c || c->state != AEMP__C_UP) return;
    aemp_buf ctl = AEMP_BUF_INIT;
    aemp_term watcher = aemp_buf_term(&w->watcher);
    int rc;
    if (w->is_link) {
        /* {EXIT, FromPid, ToPid, Reason} */
        rc = aemp__enc_tuple(&ctl, 4);
        if (!rc) rc = aemp__enc_long(&ctl, AEMP__CTL_EXIT);
        if (!rc) rc = aemp__enc_local_pid(&ctl, n, id);
        if (!rc) rc = aemp_buf_put_term(&ctl, &watcher);
    } else {
        /* {MONITOR_P_EXIT, FromProc, ToPid, Ref, Reason} */
        aemp_term target = aemp_buf_term(&w->target), ref = aemp_buf_term(&w->ref);
        rc = aemp__enc_tuple(&ctl, 5);
        if (!rc) rc = aemp__enc_long(&ctl, AEMP__CTL_MONITOR_P_EXIT);
        if (!rc) rc = aemp_buf_put_term(&ctl, &target);
        if (!rc) rc = aemp_buf_put_term(&ctl, &watcher);
        if (!rc) rc = aemp_buf_put_term(&ctl, &ref);
    }
    if (!rc) rc = aemp_buf_put_term(&ctl, reason);
    if (!rc) aemp__ctl_raw(c, &ctl, NULL);
    aemp_buf_free(&ctl);
}
