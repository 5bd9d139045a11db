/*
 * fuzz_dist_packet.c - the distribution packet parser and control-message
 * dispatcher (aemp__ctl_packet) of a real node, against a connection that
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

#include "node/node_int.h"

#define NODE_NAME "fuzz@localhost"
#define PEER_NAME "peer@localhost"
#define COOKIE "fuzzcookie"
#define CREATION 0x5eed0001u
#define NPORTS 3

static uv_loop_t loop;
static aemp_node *node;
static uint32_t port_ids[NPORTS] = {1, 2, 3};
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
    if (from && strcmp(from->node, PEER_NAME) == 0) (void)aemp_send(n, self, from, msg);
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
    for (int i = 0; i < NPORTS; i++) {
        if (aemp__port_find(node, port_ids[i])) continue;
        aemp_port p;
        node->next_port = port_ids[i] - 1;
        FUZZ_CHECK(aemp_port_open(node, port_cbs[i], NULL, &p) == 0 && p.id == port_ids[i]);
        if (port_names[i]) FUZZ_CHECK(aemp_register(node, port_names[i], p) == 0);
    }
    node->next_port = NPORTS;
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
    restore_ports();
}

/* A connection as handshake_done leaves it, without a socket (tcp_init is
 * false, so closing it touches no handle and frees it at once). */
static aemp__conn *conn_up(void)
{
    aemp__conn *c = calloc(1, sizeof *c);
    FUZZ_CHECK(c);
    c->node = node;
    c->state = AEMP__C_UP;
    aemp__strlcpy(c->peer, PEER_NAME, sizeof c->peer);
    c->flags = aemp__dflags_offered();
    c->started_ms = c->last_recv_ms = c->last_send_ms = aemp__now_ms(node);
    c->next = node->conns;
    if (node->conns) node->conns->prev = c;
    node->conns = c;
    node->nconns++;
    FUZZ_CHECK(aemp__map_put(&node->conn_by_name, c->peer, strlen(c->peer), c) == 0);
    c->in_map = true;
    conn_down = false;
    return c;
}

/* What the node queued for the peer must be well-formed packets: a 4-byte
 * length, then either 112 and a control term and at most one payload term,
 * each with its version byte, or (the connection negotiated
 * DIST_HDR_ATOM_CACHE) a distribution header without references (131, 68,
 * 0) and the terms without version bytes; each term validates, and nothing
 * else follows. */
static void check_wbuf(const aemp_buf *w)
{
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
        if (headed) {
            FUZZ_CHECK((uint8_t)p[1] == AEMP__DIST_HEADER && p[2] == 0);
            k = 3;
        } else {
            FUZZ_CHECK((uint8_t)p[0] == AEMP__PASS_THROUGH);
            k = 1;
        }
        while (k < n) {
            if (!headed) FUZZ_CHECK((uint8_t)p[k++] == 131);
            FUZZ_CHECK(aemp__term_validate(p + k, n - k, &used) == 0);
            k += used;
            terms++;
        }
        FUZZ_CHECK(k == n && terms >= 1 && terms <= 2);
        pos += n;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!node) setup();
    if (size == 0) return 0;
    aemp__conn *c = conn_up();
    if (data[0] == AEMP__PASS_THROUGH) {
        aemp__ctl_packet(c, (const char *)data, size);
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
            if (n) aemp__ctl_packet(c, pkt, n);
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
    FUZZ_CHECK(node->conns == NULL && node->nconns == 0 && node->dirty == NULL);
    FUZZ_CHECK(aemp__map_get(&node->conn_by_name, PEER_NAME, strlen(PEER_NAME)) == NULL);
    /* Local sends are the only source of deferred deliveries: none here. */
    FUZZ_CHECK(node->deferred.len == 0);
    restore_ports();
    return 0;
}
