/*
 * db.c - the `aemp_db` service and the C database API (docs/database.md).
 *
 * A port registered as aemp_db speaks the replication protocol (version
 * 3: the shape of OTP 29's data_publisher, with each family of a share as
 * {Values, Stamps}, Stamps one binary of records): on every node up it
 * sends {discover, Self, 3} to {aemp_db, Node}; a discover is answered
 * with the '$gen_cast' local_data of this node's share, and its sender
 * becomes a peer (monitored, discovered back); local_data replaces a
 * peer's share, update changes it; a peer's 'DOWN' drops its share. Local
 * changes go to every peer as updates. What arrives is checked whole
 * before anything is applied: a message of another shape is logged and
 * dropped, and the bytes held for other nodes' shares are bounded
 * (db_max_bytes).
 *
 * The store (db_store.c) decides the visible entries. Callbacks (queries,
 * db_mon) run from one timer of the loop, never inside an API call.
 */
#include "pg.h"

#include <stdlib.h>

#define DB_VSN 3

struct peer {
    uint32_t node_h;
    aemp_addr pid;
    aemp_addr mref;
    aemp__dbs_owner *o;
    bool shared; /* it has had our share since it became our peer */
};

enum guard_kind { G_ENTRY = 1, G_MON = 2 };

struct mon;

struct guard {
    uint64_t id;
    int kind;
    /* G_ENTRY: this node's entry family/subkey as set with stamp */
    char *fam, *key;
    size_t flen, klen;
    uint64_t stamp;
    uint64_t pg_port; /* db_reg: the port it joined to pg group fam, or 0 */
    struct mon *m;    /* G_MON */
};

struct mon {
    struct mon *next;
    aemp__dbs_fam *f;
    aemp_db_mon_cb cb;
    void *arg;
    bool fresh; /* its first call is still to come */
    bool dead;  /* released: freed after the callbacks running now */
};

enum query_kind { Q_FAMILY = 1, Q_KEYS = 2, Q_VALUES = 3 };

struct query {
    struct query *next;
    int kind;
    void *cb;
    void *arg;
    size_t flen;
    char fam[];
};

/* A port's db_reg entries: the families (subkey = its port ID). */
struct reg {
    size_t n, cap;
    char **fams;
    size_t *flens;
};

struct aemp__db {
    aemp_node *n;
    aemp__dbs *store;
    aemp__dbs_owner *self; /* this node's share */
    aemp__dbs_owner *pg;   /* pg members without entries */
    aemp_port port;
    aemp_addr pid;
    uint64_t clock;  /* Lamport clock */
    aemp__map peers; /* node handle (4 bytes) -> struct peer */
    size_t max_bytes;
    size_t remote_bytes;
    aemp__map guards; /* id (8 bytes) -> struct guard */
    uint64_t next_guard;
    aemp__map regs; /* port id (8 bytes) -> struct reg */
    struct mon *mons;
    struct query *q_head, *q_tail;
    uv_timer_t timer;
    bool timer_open;
    bool running; /* the timer's callback runs */
    aemp__sub *sub;
    uint64_t pg_watch;  /* the watch of every pg family, 0: no pg */
    aemp_buf undef;     /* the atom undefined, encoded once: pg members' value */
    size_t share_len;   /* bytes of the last local_data sent: the next one's size */
    aemp__map mirrored; /* family -> (void *)1: its pg members are in store */
};

typedef struct aemp__db db_t;

struct aemp_db_view {
    aemp__dbs_fam *f;
    const char *name;
};

/* ------------------------------------------------------------------ */
/* views                                                              */
/* ------------------------------------------------------------------ */

const char *aemp_db_view_family(const aemp_db_view *v)
{
    return v ? v->name : NULL;
}

size_t aemp_db_view_count(const aemp_db_view *v)
{
    return v ? aemp__dbs_count(v->f) : 0;
}

static void entry_out(const aemp__dbs_ent *e, aemp_db_entry *out)
{
    out->subkey = e->subkey;
    out->subkey_len = e->subkey_len;
    out->value = e->value;
    const char *o = e->owner_h ? aemp__intern_text(e->owner_h, NULL) : NULL;
    out->owner = o ? o : "";
    out->stamp = e->stamp;
}

int aemp_db_view_at(const aemp_db_view *v, size_t i, aemp_db_entry *out)
{
    if (!v || !out || i >= aemp__dbs_count(v->f)) return AEMP_EINVAL;
    aemp__dbs_ent e;
    aemp__dbs_at(v->f, i, &e);
    entry_out(&e, out);
    return 0;
}

int aemp_db_view_get(const aemp_db_view *v, const char *subkey, aemp_db_entry *out)
{
    if (!v || !subkey || !out) return AEMP_EINVAL;
    aemp__dbs_ent e;
    if (aemp__dbs_get(v->f, subkey, strlen(subkey), &e)) return AEMP_ENOENT;
    entry_out(&e, out);
    return 0;
}

/* ------------------------------------------------------------------ */
/* the loop's turn: queries and monitors                              */
/* ------------------------------------------------------------------ */

static void on_timer(uv_timer_t *t);

static bool work_waits(db_t *db)
{
    if (db->q_head) return true;
    for (struct mon *m = db->mons; m; m = m->next)
        if (m->fresh && !m->dead) return true;
    return false;
}

/* Something for the loop: answer it on the next turn. */
static void kick(db_t *db)
{
    if (db->running || !db->timer_open || db->n->closing) return;
    uv_timer_start(&db->timer, on_timer, 0, 0);
}

static void mirror(db_t *db, const char *family, size_t flen);

static void answer_query(db_t *db, struct query *q, int status)
{
    aemp_node *n = db->n;
    if (!status) mirror(db, q->fam, q->flen);
    aemp__dbs_fam *f = status ? NULL : aemp__dbs_family(db->store, q->fam, q->flen);
    aemp_db_view view = {f, q->fam};
    size_t cnt = aemp__dbs_count(f);
    if (q->kind == Q_FAMILY) {
        /* the family stays while cb runs, whatever cb changes */
        if (f) aemp__dbs_hold(f);
        ((aemp_db_family_cb)q->cb)(n, status, &view, q->arg);
        if (f) aemp__dbs_release(db->store, f);
        return;
    }
    void *arr = malloc((cnt ? cnt : 1) * (q->kind == Q_KEYS ? sizeof(char *) : sizeof(aemp_term)));
    if (!arr) {
        AEMP_LOGE("db: out of memory: a query of family %s is answered empty", q->fam);
        cnt = 0;
    }
    for (size_t i = 0; arr && i < cnt; i++) {
        aemp__dbs_ent e;
        aemp__dbs_at(f, i, &e);
        if (q->kind == Q_KEYS)
            ((const char **)arr)[i] = e.subkey;
        else
            ((aemp_term *)arr)[i] = e.value;
    }
    if (q->kind == Q_KEYS)
        ((aemp_db_keys_cb)q->cb)(n, status, (const char *const *)arr, cnt, q->arg);
    else
        ((aemp_db_values_cb)q->cb)(n, status, (const aemp_term *)arr, cnt, q->arg);
    free(arr);
}

static void initial_call(db_t *db, struct mon *m)
{
    m->fresh = false;
    size_t cnt = aemp__dbs_count(m->f);
    const char **all = malloc((cnt ? cnt : 1) * sizeof *all);
    if (!all) {
        AEMP_LOGE("db: out of memory: db_mon's first call lists no subkeys");
        cnt = 0;
    }
    for (size_t i = 0; i < cnt; i++) {
        aemp__dbs_ent e;
        aemp__dbs_at(m->f, i, &e);
        all[i] = e.subkey;
    }
    aemp_db_diff d = {all, cnt, NULL, 0, NULL, 0};
    aemp_db_view view = {m->f, aemp__dbs_fam_name(m->f, NULL)};
    m->cb(db->n, &view, &d, m->arg);
    free(all);
}

static void sweep_mons(db_t *db)
{
    struct mon **pp = &db->mons;
    while (*pp) {
        struct mon *m = *pp;
        if (m->dead) {
            *pp = m->next;
            aemp__dbs_unwatch(db->store, m->f);
            free(m);
        } else {
            pp = &m->next;
        }
    }
}

static void on_timer(uv_timer_t *t)
{
    db_t *db = t->data;
    if (db->n->closing) return;
    db->running = true;
    /* queries asked until now */
    struct query *q = db->q_head;
    db->q_head = db->q_tail = NULL;
    while (q) {
        struct query *next = q->next;
        answer_query(db, q, 0);
        free(q);
        q = next;
    }
    /* changes, to the monitors that have had their first call */
    aemp__dbs_fam *f;
    while ((f = aemp__dbs_next_dirty(db->store))) {
        aemp__dbs_diff sd;
        if (aemp__dbs_take_diff(db->store, f, &sd))
            AEMP_LOGE("db: out of memory: changes of a family are not reported");
        if (sd.nadded + sd.nchanged + sd.ndeleted) {
            aemp_db_diff d = {sd.added,    sd.nadded,  sd.changed,
                              sd.nchanged, sd.deleted, sd.ndeleted};
            aemp_db_view view = {f, aemp__dbs_fam_name(f, NULL)};
            for (struct mon *m = db->mons; m; m = m->next)
                if (m->f == f && !m->fresh && !m->dead) m->cb(db->n, &view, &d, m->arg);
        }
        aemp__dbs_diff_done(db->store, f, &sd);
        if (db->n->closing) break;
    }
    /* first calls */
    for (struct mon *m = db->mons; m && !db->n->closing; m = m->next)
        if (m->fresh && !m->dead) initial_call(db, m);
    sweep_mons(db);
    db->running = false;
    if (!db->n->closing && (work_waits(db) || aemp__dbs_has_dirty(db->store))) kick(db);
}

/* ------------------------------------------------------------------ */
/* peers                                                              */
/* ------------------------------------------------------------------ */

static void drop_peer(db_t *db, struct peer *p)
{
    aemp__map_del(&db->peers, &p->node_h, sizeof p->node_h);
    db->remote_bytes -= aemp__dbs_owner_bytes(p->o);
    aemp__dbs_owner_free(db->store, p->o);
    free(p);
    kick(db);
}

static void on_peer_down(aemp_node *n, const aemp_addr *target, const aemp_term *reason, void *arg)
{
    (void)arg;
    db_t *db = n->svc ? n->svc->db : NULL;
    if (!db || n->closing) return;
    struct peer *p = aemp__map_get(&db->peers, &target->node, sizeof target->node);
    if (!p || !aemp_addr_equal(&p->pid, target)) return;
    if (aemp_log_get_level() >= AEMP_LOG_INFO) {
        char why[128];
        aemp_term_print(reason, why, sizeof why);
        AEMP_LOGI("db: peer %s down (%s): its share is dropped", aemp_addr_node_name(target), why);
    }
    drop_peer(db, p);
}

/* The peer of pid's node, made (monitored) if new; one of another pid (an
 * aemp_db server that restarted) is replaced. NULL when it cannot be
 * monitored (its node is fenced) or memory is short. *made: it is new. */
static struct peer *peer_of(db_t *db, const aemp_addr *pid, bool *made)
{
    *made = false;
    struct peer *p = aemp__map_get(&db->peers, &pid->node, sizeof pid->node);
    if (p && aemp_addr_equal(&p->pid, pid)) return p;
    if (p) {
        aemp_demonitor(db->n, &p->mref);
        drop_peer(db, p);
    }
    p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->node_h = pid->node;
    p->pid = *pid;
    p->o = aemp__dbs_owner_new(db->store, pid->node);
    if (!p->o) goto fail;
    int rc = aemp_mon(db->n, pid, on_peer_down, NULL, &p->mref);
    if (rc) {
        AEMP_LOGW("db: cannot monitor the aemp_db of %s: %s", aemp_addr_node_name(pid),
                  aemp_strerror(rc));
        goto fail;
    }
    if (aemp__map_put(&db->peers, &p->node_h, sizeof p->node_h, p)) {
        aemp_demonitor(db->n, &p->mref);
        goto fail;
    }
    *made = true;
    return p;
fail:
    aemp__dbs_owner_free(db->store, p->o);
    free(p);
    return NULL;
}

static void send_discover(db_t *db, const aemp_addr *to)
{
    int rc = aemp_sendf(db->n, db->port, to, "{discover, ~p, ~i}", &db->pid, (int64_t)DB_VSN);
    if (rc)
        AEMP_LOGW("db: discover to %s not sent: %s", aemp_addr_node_name(to), aemp_strerror(rc));
}

/* The message is written in one buffer, sized by the last one: its head
 * with [] where the share goes (the last byte, since nothing follows the
 * share), then the share over it. A share of megabytes is encoded once
 * and neither copied nor walked again before the connection takes it. */
static void send_local_data(db_t *db, const aemp_addr *to)
{
    aemp_buf m = AEMP_BUF_INIT;
    int rc =
        aemp_term_format(&m, "{'$gen_cast', {local_data, ~p, ~i, []}}", &db->pid, (int64_t)DB_VSN);
    if (!rc && (m.len == 0 || (unsigned char)m.data[m.len - 1] != AEMP__EXT_NIL)) rc = AEMP_EINVAL;
    if (!rc) {
        m.len--;
        rc = aemp__buf_reserve(&m, db->share_len);
    }
    if (!rc) rc = aemp__dbs_encode_share(db->store, db->self, &m);
    if (!rc) {
        db->share_len = m.len;
        aemp_term t = aemp_buf_term(&m);
        rc = aemp_send(db->n, db->port, to, &t);
    }
    if (rc)
        AEMP_LOGW("db: local_data to %s not sent: %s", aemp_addr_node_name(to), aemp_strerror(rc));
    aemp_buf_free(&m);
}

struct bcast {
    db_t *db;
    const aemp_term *msg;
};

static void bcast_one(const char *k, void *val, void *arg)
{
    (void)k;
    struct peer *p = val;
    struct bcast *b = arg;
    int rc = aemp_send(b->db->n, b->db->port, &p->pid, b->msg);
    if (rc)
        AEMP_LOGW("db: update to %s not sent: %s", aemp_addr_node_name(&p->pid), aemp_strerror(rc));
}

/* {update, Self, Ops} to every peer; ops is the encoded list. */
static void broadcast(db_t *db, const aemp_buf *ops)
{
    if (!db->peers.count) return;
    aemp_buf msg = AEMP_BUF_INIT;
    aemp_term o = aemp_buf_term(ops);
    if (aemp_term_format(&msg, "{update, ~p, ~t}", &db->pid, &o)) {
        AEMP_LOGE("db: out of memory: an update is not sent");
        return;
    }
    aemp_term t = aemp_buf_term(&msg);
    struct bcast b = {db, &t};
    aemp__map_each(&db->peers, bcast_one, &b);
    aemp_buf_free(&msg);
}

/* ------------------------------------------------------------------ */
/* received messages                                                  */
/* ------------------------------------------------------------------ */

static void log_dropped(const char *why, const aemp_term *msg, const aemp_addr *from)
{
    char text[256], who[160] = "unknown";
    aemp_term_print(msg, text, sizeof text);
    if (from) aemp_addr_format(from, who, sizeof who);
    AEMP_LOGW("db: dropped a message from %s: %s: %s", who, why, text);
}

static void clock_see(db_t *db, uint64_t stamp)
{
    if (stamp > db->clock) db->clock = stamp;
}

static void on_local_data(db_t *db, const aemp_addr *pid, aemp_cursor share, const aemp_term *msg,
                          const aemp_addr *from)
{
    size_t bytes = 0;
    uint64_t maxstamp = 0;
    aemp_cursor check = share;
    if (aemp__dbs_walk_share(NULL, NULL, &check, &bytes, &maxstamp)) {
        log_dropped("local_data with a share not of the form #{Family => {#{Subkey => Value}, "
                    "<<KeyLen:32, Subkey:KeyLen/binary, Stamp:64, ...>>}} (binaries, whole "
                    "records)",
                    msg, from);
        return;
    }
    bool made;
    struct peer *p = peer_of(db, pid, &made);
    if (!p) return;
    size_t old = aemp__dbs_owner_bytes(p->o);
    if (db->remote_bytes - old + bytes > db->max_bytes) {
        AEMP_LOGW("db: the share of %s (%zu bytes) would take the shares held over db_max_bytes "
                  "(%zu): dropped",
                  aemp_addr_node_name(pid), bytes, db->max_bytes);
        return;
    }
    clock_see(db, maxstamp);
    /* the share replaces the last: what is the same again is no change */
    aemp__dbs_owner_mark(p->o);
    int rc = aemp__dbs_walk_share(db->store, p->o, &share, NULL, NULL);
    aemp__dbs_owner_sweep(db->store, p->o);
    if (rc)
        AEMP_LOGE("db: the share of %s is incomplete: %s", aemp_addr_node_name(pid),
                  aemp_strerror(rc));
    db->remote_bytes = db->remote_bytes - old + aemp__dbs_owner_bytes(p->o);
    /* (from an unknown peer: recorded, as data_publisher does; its discover
     * of us comes with it) */
    kick(db);
}

static void on_update(db_t *db, const aemp_addr *pid, aemp_cursor ops, const aemp_term *msg,
                      const aemp_addr *from)
{
    size_t bytes = 0;
    uint64_t maxstamp = 0;
    aemp_cursor check = ops;
    if (aemp__dbs_walk_ops(NULL, NULL, &check, &bytes, &maxstamp)) {
        log_dropped("update whose operations are not [{set, Family, Subkey, Stamp, Value} | {del, "
                    "Family, Subkey}]",
                    msg, from);
        return;
    }
    struct peer *p = aemp__map_get(&db->peers, &pid->node, sizeof pid->node);
    if (!p || !aemp_addr_equal(&p->pid, pid)) {
        /* it raced the peer's 'DOWN' (docs/database.md) */
        AEMP_LOGD("db: an update from an unknown peer is dropped");
        return;
    }
    if (db->remote_bytes + bytes > db->max_bytes) {
        AEMP_LOGW("db: an update of %s (%zu bytes) would take the shares held over db_max_bytes "
                  "(%zu): dropped",
                  aemp_addr_node_name(pid), bytes, db->max_bytes);
        return;
    }
    clock_see(db, maxstamp);
    size_t old = aemp__dbs_owner_bytes(p->o);
    int rc = aemp__dbs_walk_ops(db->store, p->o, &ops, NULL, NULL);
    if (rc)
        AEMP_LOGE("db: an update of %s is incomplete: %s", aemp_addr_node_name(pid),
                  aemp_strerror(rc));
    db->remote_bytes = db->remote_bytes - old + aemp__dbs_owner_bytes(p->o);
    kick(db);
}

static bool atom_is(aemp_cursor *c, const char *want)
{
    char a[16];
    return aemp_get_atom(c, a, sizeof a) == 0 && strcmp(a, want) == 0;
}

static void on_msg(aemp_node *n, aemp_port self, const aemp_term *msg, const aemp_addr *from,
                   void *arg)
{
    (void)self;
    db_t *db = arg;
    if (n->closing) return;
    aemp_cursor c = aemp_cursor_of(msg);
    uint32_t arity, inner;
    char tag[16];
    aemp_addr pid;
    int64_t vsn;
    if (aemp_get_tuple(&c, &arity) || aemp_get_atom(&c, tag, sizeof tag)) {
        log_dropped("not a tuple with an atom tag", msg, from);
        return;
    }
    if (arity == 2 && strcmp(tag, "$gen_cast") == 0) {
        /* {'$gen_cast', {local_data, Pid, Vsn, Share}} */
        if (aemp_get_tuple(&c, &inner) || inner != 4 || !atom_is(&c, "local_data")) {
            log_dropped("a cast other than local_data", msg, from);
            return;
        }
        arity = 4;
        memcpy(tag, "local_data", sizeof "local_data");
    }
    if (strcmp(tag, "discover") == 0 && arity == 3) {
        if (aemp_get_pid(&c, &pid) || aemp_get_int64(&c, &vsn)) {
            log_dropped("discover without {discover, Pid, Version}", msg, from);
            return;
        }
        if (pid.node == n->name_h) return; /* ourselves */
        /* Both ends discover each other when they connect, and each
         * discovers back a peer it did not know: a peer that has had our
         * share since it became our peer (the same pid, monitored since)
         * has had every update too, and is not sent the share again. */
        bool made;
        struct peer *p = peer_of(db, &pid, &made);
        if (!p || !p->shared) send_local_data(db, &pid);
        if (p) p->shared = true;
        if (p && made) send_discover(db, &pid);
        return;
    }
    if (strcmp(tag, "local_data") == 0 && arity == 4) {
        if (aemp_get_pid(&c, &pid) || aemp_get_int64(&c, &vsn)) {
            log_dropped("local_data without {local_data, Pid, Version, Share}", msg, from);
            return;
        }
        if (pid.node == n->name_h) return;
        on_local_data(db, &pid, c, msg, from);
        return;
    }
    if (strcmp(tag, "update") == 0 && arity == 3) {
        if (aemp_get_pid(&c, &pid)) {
            log_dropped("update without {update, Pid, Ops}", msg, from);
            return;
        }
        on_update(db, &pid, c, msg, from);
        return;
    }
    log_dropped("not a message of the aemp_db protocol", msg, from);
}

/* ------------------------------------------------------------------ */
/* node and port events                                               */
/* ------------------------------------------------------------------ */

static int own_del(db_t *db, const char *fam, size_t flen, const char *key, size_t klen);

static void reg_free(struct reg *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->fams[i]);
    free(r->fams);
    free(r->flens);
    free(r);
}

static void on_event(aemp_node *n, const aemp__event_info *ev, void *arg)
{
    db_t *db = arg;
    if (n->closing) return;
    if (ev->kind == AEMP__EV_NODE_UP) {
        aemp_addr to;
        if (aemp_addr_name(&to, ev->peer, "aemp_db") == 0) send_discover(db, &to);
        return;
    }
    if (ev->kind != AEMP__EV_PORT_EXIT) return;
    struct reg *r = aemp__map_del(&db->regs, &ev->port, sizeof ev->port);
    if (!r) return;
    aemp_addr pid;
    char key[AEMP_MAXNODELEN + 64];
    aemp__addr_pid(&pid, n->name_h, n->creation, ev->port);
    int klen = aemp_addr_format(&pid, key, sizeof key);
    for (size_t i = 0; klen > 0 && (size_t)klen < sizeof key && i < r->n; i++)
        own_del(db, r->fams[i], r->flens[i], key, (size_t)klen);
    reg_free(r);
}

/* ------------------------------------------------------------------ */
/* this node's share                                                  */
/* ------------------------------------------------------------------ */

static int put_bin(aemp_buf *b, const char *p, size_t n)
{
    return aemp_term_format(b, "~b", p, n);
}

/* Tell every peer [{set, F, K, Stamp, V}] (value non-NULL) or
 * [{del, F, K}]. */
static void broadcast_op(db_t *db, const char *fam, size_t flen, const char *key, size_t klen,
                         uint64_t stamp, const aemp_term *value)
{
    if (!db->peers.count) return;
    aemp_buf ops = AEMP_BUF_INIT;
    int rc = aemp__buf_put_u8(&ops, AEMP__EXT_LIST);
    if (!rc) rc = aemp__buf_put_u32(&ops, 1);
    if (!rc) rc = aemp__buf_put_u8(&ops, AEMP__EXT_SMALL_TUPLE);
    if (!rc) rc = aemp__buf_put_u8(&ops, value ? 5 : 3);
    if (!rc) rc = aemp__enc_atom_text(&ops, value ? "set" : "del", 3);
    if (!rc) rc = put_bin(&ops, fam, flen);
    if (!rc) rc = put_bin(&ops, key, klen);
    if (!rc && value) rc = aemp_term_format(&ops, "~u", stamp);
    if (!rc && value) rc = aemp_buf_put_term(&ops, value);
    if (!rc) rc = aemp__buf_put_u8(&ops, AEMP__EXT_NIL);
    if (rc)
        AEMP_LOGE("db: out of memory: a change is not sent to the peers");
    else
        broadcast(db, &ops);
    aemp_buf_free(&ops);
}

static int own_set(db_t *db, const char *fam, size_t flen, const char *key, size_t klen,
                   const aemp_term *value, uint64_t *stamp)
{
    uint64_t s = db->clock + 1;
    int rc = aemp__dbs_set(db->store, db->self, fam, flen, key, klen, s, value);
    if (rc) return rc;
    db->clock = s;
    *stamp = s;
    broadcast_op(db, fam, flen, key, klen, s, value);
    kick(db);
    return 0;
}

static int own_del(db_t *db, const char *fam, size_t flen, const char *key, size_t klen)
{
    int rc = aemp__dbs_del(db->store, db->self, fam, flen, key, klen);
    if (rc) return rc;
    broadcast_op(db, fam, flen, key, klen, 0, NULL);
    kick(db);
    return 0;
}

/* ------------------------------------------------------------------ */
/* the API                                                            */
/* ------------------------------------------------------------------ */

static db_t *db_of(aemp_node *n)
{
    return n && n->svc ? n->svc->db : NULL;
}

static bool key_ok(const char *s, size_t *len)
{
    if (!s) return false;
    *len = strlen(s);
    return *len > 0 && *len <= AEMP_DB_MAXKEY;
}

static struct guard *guard_new(db_t *db, int kind)
{
    struct guard *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    g->id = ++db->next_guard;
    g->kind = kind;
    if (aemp__map_put(&db->guards, &g->id, sizeof g->id, g)) {
        free(g);
        return NULL;
    }
    return g;
}

static void guard_free(struct guard *g)
{
    free(g->fam);
    free(g->key);
    free(g);
}

/* A guard of this node's entry fam/key as set with stamp. */
static int entry_guard(db_t *db, const char *fam, size_t flen, const char *key, size_t klen,
                       uint64_t stamp, aemp_guard *out)
{
    struct guard *g = guard_new(db, G_ENTRY);
    if (!g) return AEMP_ENOMEM;
    g->fam = malloc(flen + 1);
    g->key = malloc(klen + 1);
    if (!g->fam || !g->key) {
        aemp__map_del(&db->guards, &g->id, sizeof g->id);
        guard_free(g);
        return AEMP_ENOMEM;
    }
    memcpy(g->fam, fam, flen + 1);
    memcpy(g->key, key, klen + 1);
    g->flen = flen;
    g->klen = klen;
    g->stamp = stamp;
    out->id = g->id;
    return 0;
}

int aemp_guard_release(aemp_node *n, aemp_guard guard)
{
    if (!guard.id) return 0;
    db_t *db = db_of(n);
    if (!db) return AEMP_EINVAL;
    struct guard *g = aemp__map_del(&db->guards, &guard.id, sizeof guard.id);
    if (!g) return AEMP_ENOENT;
    int rc = 0;
    if (g->kind == G_MON) {
        g->m->dead = true;
        if (!db->running) sweep_mons(db);
    } else {
        uint64_t stamp;
        /* db_reg's: undo its pg join too (the port may be gone: no matter) */
        if (g->pg_port && !n->closing) aemp_pg_leave(n, g->fam, (aemp_port){g->pg_port});
        /* only the value this guard's set made */
        if (aemp__dbs_own(db->store, db->self, g->fam, g->flen, g->key, g->klen, &stamp) ||
            stamp != g->stamp)
            rc = AEMP_ENOENT;
        else if (!n->closing)
            rc = own_del(db, g->fam, g->flen, g->key, g->klen);
    }
    guard_free(g);
    return rc;
}

int aemp_db_set(aemp_node *n, const char *family, const char *subkey, const aemp_term *value,
                aemp_guard *guard)
{
    size_t flen, klen;
    db_t *db = db_of(n);
    if (!db || !key_ok(family, &flen) || !key_ok(subkey, &klen) || !value ||
        !aemp__term_whole(value))
        return AEMP_EINVAL;
    if (n->closing) return AEMP_ECLOSED;
    uint64_t stamp;
    int rc = own_set(db, family, flen, subkey, klen, value, &stamp);
    if (!rc && guard) rc = entry_guard(db, family, flen, subkey, klen, stamp, guard);
    return rc;
}

int aemp_db_del(aemp_node *n, const char *family, const char *subkey)
{
    size_t flen, klen;
    db_t *db = db_of(n);
    if (!db || !key_ok(family, &flen) || !key_ok(subkey, &klen)) return AEMP_EINVAL;
    if (n->closing) return AEMP_ECLOSED;
    return own_del(db, family, flen, subkey, klen);
}

int aemp_db_reg(aemp_node *n, const char *family, aemp_port port, const aemp_term *value,
                aemp_guard *guard)
{
    size_t flen;
    db_t *db = db_of(n);
    if (!db || !key_ok(family, &flen) || (value && !aemp__term_whole(value))) return AEMP_EINVAL;
    if (n->closing) return AEMP_ECLOSED;
    if (!port.id) port = aemp_self(n);
    aemp__port *pp = port.id ? aemp__proc_port(n, port.id) : NULL;
    if (!pp || pp->dead || pp->dying) return AEMP_ENOENT;
    aemp_addr pid;
    char key[AEMP_MAXNODELEN + 64];
    aemp__addr_pid(&pid, n->name_h, n->creation, port.id);
    int klen = aemp_addr_format(&pid, key, sizeof key);
    if (klen <= 0 || (size_t)klen >= sizeof key) return AEMP_EINVAL;
    /* remember it for the port's death (once per family) */
    struct reg *r = aemp__map_get(&db->regs, &port.id, sizeof port.id);
    bool new_r = !r;
    if (new_r) {
        r = calloc(1, sizeof *r);
        if (!r || aemp__map_put(&db->regs, &port.id, sizeof port.id, r)) {
            free(r);
            return AEMP_ENOMEM;
        }
    }
    bool known = false;
    for (size_t i = 0; i < r->n; i++)
        if (r->flens[i] == flen && memcmp(r->fams[i], family, flen) == 0) known = true;
    if (!known) {
        if (r->n == r->cap) {
            size_t cap = r->cap ? r->cap * 2 : 2;
            char **f = realloc(r->fams, cap * sizeof *f);
            if (f) r->fams = f;
            size_t *l = f ? realloc(r->flens, cap * sizeof *l) : NULL;
            if (l) r->flens = l;
            if (!f || !l) return AEMP_ENOMEM;
            r->cap = cap;
        }
        char *copy = malloc(flen + 1);
        if (!copy) return AEMP_ENOMEM;
        memcpy(copy, family, flen + 1);
        r->fams[r->n] = copy;
        r->flens[r->n++] = flen;
    }
    aemp_buf undef = AEMP_BUF_INIT;
    aemp_term v;
    if (!value) {
        if (aemp__enc_atom_text(&undef, "undefined", 9)) return AEMP_ENOMEM;
        v = aemp_buf_term(&undef);
        value = &v;
    }
    uint64_t stamp;
    int rc = own_set(db, family, flen, key, (size_t)klen, value, &stamp);
    aemp_buf_free(&undef);
    if (!rc && guard) rc = entry_guard(db, family, flen, key, (size_t)klen, stamp, guard);
    if (rc) return rc;
    /* and the pg group of that name in the node's scopes (none: nothing) */
    int prc = aemp_pg_join(n, family, port);
    if (prc && prc != AEMP_ENOTSUP)
        AEMP_LOGW("db: db_reg: port %s joins no pg group %s: %s", key, family, aemp_strerror(prc));
    if (!prc && guard) {
        struct guard *g = aemp__map_get(&db->guards, &guard->id, sizeof guard->id);
        if (g) g->pg_port = port.id;
    }
    return 0;
}

static int query(aemp_node *n, const char *family, int kind, void *cb, void *arg)
{
    size_t flen;
    db_t *db = db_of(n);
    if (!db || !cb || !key_ok(family, &flen)) return AEMP_EINVAL;
    if (n->closing) return AEMP_ECLOSED;
    struct query *q = malloc(sizeof *q + flen + 1);
    if (!q) return AEMP_ENOMEM;
    q->next = NULL;
    q->kind = kind;
    q->cb = cb;
    q->arg = arg;
    q->flen = flen;
    memcpy(q->fam, family, flen + 1);
    if (db->q_tail)
        db->q_tail->next = q;
    else
        db->q_head = q;
    db->q_tail = q;
    kick(db);
    return 0;
}

int aemp_db_family(aemp_node *n, const char *family, aemp_db_family_cb cb, void *arg)
{
    return query(n, family, Q_FAMILY, (void *)cb, arg);
}

int aemp_db_keys(aemp_node *n, const char *family, aemp_db_keys_cb cb, void *arg)
{
    return query(n, family, Q_KEYS, (void *)cb, arg);
}

int aemp_db_values(aemp_node *n, const char *family, aemp_db_values_cb cb, void *arg)
{
    return query(n, family, Q_VALUES, (void *)cb, arg);
}

int aemp_db_read(aemp_node *n, const char *family, aemp_db_family_cb cb, void *arg)
{
    size_t flen;
    db_t *db = db_of(n);
    if (!db || !cb || !key_ok(family, &flen)) return AEMP_EINVAL;
    if (n->closing) return AEMP_ECLOSED;
    mirror(db, family, flen);
    aemp_db_view view = {aemp__dbs_family(db->store, family, flen), family};
    /* the family stays while cb runs, whatever cb changes */
    if (view.f) aemp__dbs_hold(view.f);
    cb(n, 0, &view, arg);
    if (view.f) aemp__dbs_release(db->store, view.f);
    return 0;
}

int aemp_db_mon(aemp_node *n, const char *family, aemp_db_mon_cb cb, void *arg, aemp_guard *guard)
{
    size_t flen;
    db_t *db = db_of(n);
    if (!db || !cb || !key_ok(family, &flen)) return AEMP_EINVAL;
    if (n->closing) return AEMP_ECLOSED;
    struct mon *m = calloc(1, sizeof *m);
    if (!m) return AEMP_ENOMEM;
    mirror(db, family, flen); /* before the watch: no diff to make of them */
    struct guard *g = guard ? guard_new(db, G_MON) : NULL;
    m->f = aemp__dbs_watch(db->store, family, flen);
    if (!m->f || (guard && !g)) {
        if (m->f) aemp__dbs_unwatch(db->store, m->f);
        if (g) {
            aemp__map_del(&db->guards, &g->id, sizeof g->id);
            guard_free(g);
        }
        free(m);
        return AEMP_ENOMEM;
    }
    m->cb = cb;
    m->arg = arg;
    m->fresh = true;
    /* at the end: monitors are told in the order they were made */
    struct mon **pp = &db->mons;
    while (*pp)
        pp = &(*pp)->next;
    *pp = m;
    if (g) {
        g->m = m;
        guard->id = g->id;
    }
    kick(db);
    return 0;
}

/* ------------------------------------------------------------------ */
/* pg's hook                                                          */
/* ------------------------------------------------------------------ */

/* pg members show in their family's view (below any entry of the port).
 * They are copied into the store lazily: a family's members the first time
 * it is read or watched (mirror), and from then on every change (on_pg).
 * A node that takes a large pg group from a peer and never asks the
 * database about it pays pg's cost only (docs/benchmarks.md "Database and
 * pg": the copy was half of a C node's time to take a 100,000-member
 * group). */
static void on_pg(aemp_node *n, const char *family, size_t flen, const aemp_addr *member,
                  bool joined, void *arg)
{
    db_t *db = arg;
    if (!aemp__map_get(&db->mirrored, family, flen)) return;
    aemp__db_pg_member(n, family, flen, member, joined);
}

struct mirror_ctx {
    aemp_node *n;
    const char *family;
    size_t flen;
};

static void mirror_one(const aemp_addr *pid, void *arg)
{
    struct mirror_ctx *x = arg;
    aemp__db_pg_member(x->n, x->family, x->flen, pid, 1);
}

static void mirror(db_t *db, const char *family, size_t flen)
{
    if (!db->pg_watch || aemp__map_get(&db->mirrored, family, flen)) return;
    /* a family pg cannot hold (too long, a NUL inside) has no members */
    if (flen > 1000 || strlen(family) != flen) return;
    if (aemp__map_put(&db->mirrored, family, flen, (void *)1)) {
        AEMP_LOGE("db: out of memory: the pg members of family %s are not shown", family);
        return;
    }
    struct mirror_ctx x = {db->n, family, flen};
    aemp__pg_each(db->n, family, mirror_one, &x);
}

void aemp__db_pg_member(aemp_node *n, const char *group, size_t len, const aemp_addr *pid,
                        int joined)
{
    db_t *db = db_of(n);
    if (!db || n->closing || !group || !len || len > AEMP_DB_MAXKEY || !pid) return;
    char key[AEMP_MAXNODELEN + 64];
    int klen = aemp_addr_format(pid, key, sizeof key);
    if (klen <= 0 || (size_t)klen >= sizeof key) return;
    if (joined) {
        if (!db->undef.len && aemp__enc_atom_text(&db->undef, "undefined", 9) != 0) {
            db->undef.len = 0;
            AEMP_LOGE("db: out of memory: a pg member is not shown");
            return;
        }
        aemp_term v = aemp_buf_term(&db->undef);
        if (aemp__dbs_set(db->store, db->pg, group, len, key, (size_t)klen, 0, &v))
            AEMP_LOGE("db: out of memory: a pg member is not shown");
    } else {
        aemp__dbs_del(db->store, db->pg, group, len, key, (size_t)klen);
    }
    kick(db);
}

/* ------------------------------------------------------------------ */
/* the service's life                                                 */
/* ------------------------------------------------------------------ */

bool aemp__db_test_off;

int aemp__db_start(aemp_node *n, size_t max_bytes)
{
    if (aemp__db_test_off) return 0;
    db_t *db = calloc(1, sizeof *db);
    if (!db) return AEMP_ENOMEM;
    db->n = n;
    db->max_bytes = max_bytes ? max_bytes : AEMP__DB_MAX_BYTES_DEFAULT;
    aemp__map_init(&db->peers);
    aemp__map_init(&db->guards);
    aemp__map_init(&db->regs);
    aemp__map_init(&db->mirrored);
    n->svc->db = db;
    db->store = aemp__dbs_new();
    if (!db->store) return AEMP_ENOMEM;
    db->self = aemp__dbs_owner_new(db->store, n->name_h);
    db->pg = aemp__dbs_owner_new(db->store, 0);
    if (!db->self || !db->pg) return AEMP_ENOMEM;
    uv_timer_init(n->loop, &db->timer);
    db->timer.data = db;
    db->timer_open = true;
    aemp__node_hold(n);
    int rc = aemp__proc_open(n, on_msg, db, &db->port);
    if (!rc) rc = aemp_register(n, "aemp_db", db->port);
    if (!rc) {
        aemp__proc_protect(n, db->port);
        rc = aemp_port_addr(n, db->port, &db->pid);
    }
    if (!rc) rc = aemp__node_subscribe(n, on_event, db, &db->sub);
    /* every pg family's members (pg starts first; without a scope, none) */
    if (!rc) {
        int prc = aemp__pg_watch(n, NULL, on_pg, db, &db->pg_watch);
        if (prc && prc != AEMP_ENOTSUP) rc = prc;
    }
    return rc;
}

static void on_timer_closed(uv_handle_t *h)
{
    db_t *db = h->data;
    aemp__node_part_closed(db->n);
}

void aemp__db_close(aemp_node *n)
{
    db_t *db = db_of(n);
    if (!db) return;
    /* queries still waiting are told */
    struct query *q = db->q_head;
    db->q_head = db->q_tail = NULL;
    while (q) {
        struct query *next = q->next;
        answer_query(db, q, AEMP_ECLOSED);
        free(q);
        q = next;
    }
    if (db->timer_open) {
        db->timer_open = false;
        uv_timer_stop(&db->timer);
        uv_close((uv_handle_t *)&db->timer, on_timer_closed);
    }
}

static void free_peer(const char *k, void *v, void *arg)
{
    (void)k;
    struct peer *p = v;
    aemp__dbs_owner_free(arg, p->o);
    free(p);
}

static void free_guard(const char *k, void *v, void *arg)
{
    (void)k;
    (void)arg;
    guard_free(v);
}

static void free_reg(const char *k, void *v, void *arg)
{
    (void)k;
    (void)arg;
    reg_free(v);
}

void aemp__db_free(aemp_node *n)
{
    db_t *db = db_of(n);
    if (!db) return;
    aemp__map_each(&db->peers, free_peer, db->store);
    aemp__map_free(&db->peers);
    aemp__map_each(&db->guards, free_guard, NULL);
    aemp__map_free(&db->guards);
    aemp__map_each(&db->regs, free_reg, NULL);
    aemp__map_free(&db->regs);
    aemp__map_free(&db->mirrored);
    for (struct mon *m = db->mons; m; m = m->next)
        m->dead = true;
    if (db->store) sweep_mons(db);
    if (db->store) {
        aemp__dbs_owner_free(db->store, db->self);
        aemp__dbs_owner_free(db->store, db->pg);
        /* families left dirty are held by nobody now */
        aemp__dbs_fam *f;
        while ((f = aemp__dbs_next_dirty(db->store)))
            aemp__dbs_release(db->store, f);
    }
    aemp__dbs_free(db->store);
    aemp_buf_free(&db->undef);
    free(db);
    n->svc->db = NULL;
}
