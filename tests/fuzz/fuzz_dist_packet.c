/*
 * fuzz_dist_packet.c - the distribution packet parser and control-message
 * dispatch (aemp__dist_packet, then the process layer's handlers) of a real
 * node, against a connection that
 * is up but has no socket.
 *
 * One node (client only, fixed creation, so that the seeds can name its
 * pids) lives across inputs, with three ports: "echo" (registered; sends each
 * message back to a sender on the peer node), "victim" (registered; closes
 * itself on a message tagged `stop`, so its watchers get exit signals) and
 * an anonymous port. Each input gets a fresh connection in state UP, and is
 * closed afterwards, which drops the peer's monitors and links; ports that
 * died are reopened under the same ids. So an input's effect never reaches
 * the next one, and a crash reproduces from its input alone.
 *
 * Input: if the first byte is 112 (the pass-through byte) the whole input is
 * one packet. Otherwise the first byte is skipped and the rest is a sequence
 * of packets, each with a 2-byte big-endian length (a length beyond the end
 * takes what is left), fed in order until the connection closes.
 */
#include "fuzz_common.h"

#include "svc/svc.h"

#define NODE_NAME "fuzz@localhost"
#define PEER_NAME "peer@localhost"
#define COOKIE "fuzzcookie"
#define CREATION 0x5eed0001u
#define NPORTS 3

static uv_loop_t loop;
static aemp_node *node;
static uint64_t port_ids[NPORTS] = {1, 2, 3};
static const char *port_names[NPORTS] = {"echo", "victim", NULL};
static bool conn_down;

static void walk_msg(const aemp_term *msg)
{
    char text[256], tag[64];
    FUZZ_CHECK(aemp_term_print(msg, text, sizeof text) >= 0);
    (void)aemp_term_tag(msg, tag, sizeof tag);
}

static void on_echo(aemp_node *n, aemp_port self, const aemp_term *msg, const aemp_addr *from,
                    void *arg)
{
    walk_msg(msg);
    /* Only to the peer: another node would start a real connection. */
    if (from && strcmp(aemp_addr_node_name(from), PEER_NAME) == 0)
        (void)aemp_send(n, self, from, msg);
}

static void on_victim(aemp_node *n, aemp_port self, const aemp_term *msg, const aemp_addr *from,
                      void *arg)
{
    char tag[64];
    walk_msg(msg);
    if (aemp_term_tag(msg, tag, sizeof tag) == 0 && strcmp(tag, "stop") == 0)
        (void)aemp_port_close(n, self);
}

static void on_plain(aemp_node *n, aemp_port self, const aemp_term *msg, const aemp_addr *from,
                     void *arg)
{
    walk_msg(msg);
}

static aemp_recv_cb port_cbs[NPORTS] = {on_echo, on_victim, on_plain};

static void on_nodes(aemp_node *n, const char *peer, int up, const char *reason, void *arg)
{
    if (!up && strcmp(peer, PEER_NAME) == 0) conn_down = true;
}

/* Reopen the ports that died, under their old ids (ids are otherwise never
 * reused; here they must be, so that the seeds' pids keep matching). */
static void restore_ports(void)
{
    /* ports made by earlier inputs (spawns) may live on: their ids must
     * not be handed out again */
    uint64_t next = node->proc->next_id;
    for (int i = 0; i < NPORTS; i++) {
        if (aemp__proc_port(node, port_ids[i])) continue;
        aemp_port p;
        aemp__proc_set_next_id(node, port_ids[i] - 1);
        FUZZ_CHECK(aemp_port_open(node, port_cbs[i], NULL, &p) == 0 && p.id == port_ids[i]);
        if (port_names[i]) FUZZ_CHECK(aemp_register(node, port_names[i], p) == 0);
    }
    /* past the node's own service ports */
    aemp__proc_set_next_id(node, next > 1000 ? next : 1000);
}

static void setup(void)
{
    fuzz_quiet_logs();
    FUZZ_CHECK(uv_loop_init(&loop) == 0);
    aemp_node_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.name = NODE_NAME;
    cfg.cookie = COOKIE;
    cfg.client_only = 1;
    cfg.nodes_cb = on_nodes;
    FUZZ_CHECK(aemp_node_create(&loop, &cfg, &node) == 0);
    node->creation = CREATION;
    node->dist.creation = CREATION;
    /* The net_kernel service took the first id, which the seeds' pids give
     * to "echo": start it again after the fuzz ports. */
    aemp_buf normal = AEMP_BUF_INIT;
    FUZZ_CHECK(aemp_term_format(&normal, "normal") == 0);
    aemp_term nt = aemp_buf_term(&normal);
    aemp__proc_kill(node, node->svc->net_kernel.id, &nt);
    aemp_buf_free(&normal);
    restore_ports();
    FUZZ_CHECK(aemp__net_kernel_start(node) == 0);
}

/* A connection as handshake_done leaves it, without a socket (tcp_init is
 * false, so closing it touches no handle and frees it at once). */
static aemp__conn *conn_up(void)
{
    aemp__dist *d = &node->dist;
    aemp__conn *c = calloc(1, sizeof *c);
    FUZZ_CHECK(c);
    c->d = d;
    c->state = AEMP__C_UP;
    aemp__strlcpy(c->peer, PEER_NAME, sizeof c->peer);
    c->peer_h = aemp__intern(PEER_NAME, strlen(PEER_NAME));
    c->flags = aemp__dflags_offered();
    c->started_ms = c->last_recv_ms = c->last_send_ms = uv_now(&loop);
    c->next = d->conns;
    if (d->conns) d->conns->prev = c;
    d->conns = c;
    d->nconns++;
    FUZZ_CHECK(aemp__map_put(&node->conns, &c->peer_h, sizeof c->peer_h, c) == 0);
    c->in_table = true;
    node->last_conn = NULL;
    conn_down = false;
    return c;
}

/* What the node queued for the peer must be well-formed packets: a 4-byte
 * length, then either 112 and a control term and at most one payload term,
 * each with its version byte, or (the connection negotiated
 * DIST_HDR_ATOM_CACHE) a distribution header and the terms without version
 * bytes. The header has no references (131, 68, 0) or one: the node's own
 * name as entry 0 of segment 0, new (with its text) on the connection's
 * first such packet and old after. Each term validates (with that one
 * reference allowed), and nothing else follows. */
static void check_wbuf(const aemp_buf *w)
{
    static const char me[] = NODE_NAME;
    bool referred = false; /* a packet before referred to the entry */
    aemp_buf refs = AEMP_BUF_INIT;
    size_t pos = 0;
    while (pos < w->len) {
        FUZZ_CHECK(w->len - pos >= 4);
        size_t n = aemp__get_u32(w->data + pos);
        pos += 4;
        FUZZ_CHECK(n <= w->len - pos);
        if (n == 0) continue; /* a tick */
        const char *p = w->data + pos;
        size_t used, k, terms = 0;
        bool headed = n >= 3 && (uint8_t)p[0] == 131;
        unsigned nrefs = 0;
        if (headed) {
            FUZZ_CHECK((uint8_t)p[1] == AEMP__EXT_DIST_HEADER && (p[2] == 0 || p[2] == 1));
            k = 3;
            nrefs = (unsigned)p[2];
            if (nrefs) {
                /* flags (new or old, segment 0, short atoms), entry 0 */
                FUZZ_CHECK(n >= 5 && (p[3] == 8 || p[3] == 0) && p[4] == 0);
                /* defined once, before any packet refers to it as old (the
                 * buffer may start after the defining packet was written) */
                FUZZ_CHECK(p[3] == 0 || !referred);
                referred = true;
                k = 5;
                if (p[3] == 8) {
                    FUZZ_CHECK(n >= 6 && (uint8_t)p[5] == sizeof me - 1 && n - 6 >= sizeof me - 1 &&
                               memcmp(p + 6, me, sizeof me - 1) == 0);
                    k = 6 + sizeof me - 1;
                }
            }
        } else {
            FUZZ_CHECK((uint8_t)p[0] == AEMP__EXT_PASS_THROUGH);
            k = 1;
        }
        while (k < n) {
            if (!headed) FUZZ_CHECK((uint8_t)p[k++] == 131);
            refs.len = 0;
            FUZZ_CHECK(aemp__term_validate_refs(p + k, n - k, &used, nrefs, &refs,
                                                AEMP__TERM_MAX_DEPTH) == 0);
            k += used;
            terms++;
        }
        FUZZ_CHECK(k == n && terms >= 1 && terms <= 2);
        pos += n;
    }
    aemp_buf_free(&refs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!node) setup();
    if (size == 0) return 0;
    aemp__conn *c = conn_up();
    if (data[0] == AEMP__EXT_PASS_THROUGH) {
        aemp__dist_packet(c, (const char *)data, size);
        if (!conn_down) check_wbuf(&c->wbuf);
    } else {
        size_t pos = 1;
        while (pos < size && !conn_down) {
            size_t n = size - pos;
            if (n >= 2) {
                size_t want = aemp__get_u16(data + pos);
                pos += 2;
                n = size - pos;
                if (want < n) n = want;
            } else {
                pos = size;
                break;
            }
            /* a copy of exactly the packet, so an over-read is caught */
            char *pkt = malloc(n ? n : 1);
            FUZZ_CHECK(pkt);
            memcpy(pkt, data + pos, n);
            if (n) aemp__dist_packet(c, pkt, n);
            free(pkt);
            if (!conn_down) check_wbuf(&c->wbuf);
            pos += n;
        }
    }
    /* Whatever was queued is dropped with the connection; closing it also
     * removes the peer's monitors and links, as a real disconnect does. */
    if (!conn_down) {
        FUZZ_CHECK(c->state == AEMP__C_UP);
        aemp__conn_close(c, AEMP_ECLOSED, "end of fuzz input");
    }
    FUZZ_CHECK(conn_down);
    /* A reply to a pid on a third node (net_kernel answers any caller)
     * starts a connection there: abandon it. */
    while (node->dist.conns) {
        aemp__conn *o = node->dist.conns;
        FUZZ_CHECK(o->initiator && o->state != AEMP__C_UP);
        o->silent = true;
        aemp__conn_close(o, AEMP_ECLOSED, "end of fuzz input");
        while (node->dist.conns == o)
            uv_run(&loop, UV_RUN_ONCE);
    }
    FUZZ_CHECK(node->dist.conns == NULL && node->dist.nconns == 0 && node->dist.dirty == NULL);
    uint32_t peer_h = aemp__intern(PEER_NAME, strlen(PEER_NAME));
    FUZZ_CHECK(aemp__map_get(&node->conns, &peer_h, sizeof peer_h) == NULL);
    /* Deferred deliveries ('DOWN' messages aside) come from local sends: a
     * turn of the loop delivers what is left. */
    uv_run(&loop, UV_RUN_NOWAIT);
    restore_ports();
    return 0;
}
