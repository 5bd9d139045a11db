/*
 * conn.c - one distribution connection: set-up (resolve, EPMD lookup,
 * connect), handshake, framing, ticks, coalesced writes, and teardown.
 *
 * Lifetime: a connection is freed once every handle and request it started
 * has called back (c->refs reaches 0) after aemp__conn_close().
 */
#include "node_int.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <netinet/in.h>
#include <sys/socket.h>

#define READ_CHUNK 65536
/* Buffers up to BUSY_BUF_KEEP stay allocated while traffic flows, so that a
 * stream of large messages does not regrow them for every write; once a
 * connection has been quiet for a housekeeping period, empty buffers above
 * IDLE_BUF_KEEP are released. */
#define IDLE_BUF_KEEP (256 * 1024)
#define BUSY_BUF_KEEP (16 * 1024 * 1024)

/* Read batching. A peer that writes each small message as it goes (an
 * Erlang node does: its distribution sockets have TCP_NODELAY) sends a TCP
 * segment per message or two while its receiver keeps up, and the sender's
 * kernel then spends more time on each message than the sender itself. When
 * the receiver falls behind, the peer's writes pile up in its socket buffer
 * and leave in large segments, cheaply. So the node falls behind on
 * purpose, a little: a connection with a peer on this host starts with a
 * small receive buffer (BATCH_RCVBUF: the kernel sizes the window from it),
 * and once the peer has sent BATCH_STREAK small reads in a row with nothing
 * written back, the node waits read_batch_ms each time it has caught up
 * before reading again; the window closes meanwhile and the peer's writes
 * coalesce. Anything written to the peer restarts the count, so
 * request/reply traffic is never delayed. A buffer may grow but never
 * shrink safely once data flows (the kernel drops what arrives beyond a
 * buffer made smaller than the window it already offered), so it is set
 * right after connect/accept, and the first packet over BATCH_MAX_PACKET,
 * or BATCH_BIG_READS reads of BATCH_BIG_READ bytes or more in a row (a
 * peer that batches its writes itself), gives the connection a large
 * buffer and ends batching on it for good. */
#define BATCH_SMALL_READ 4096
#define BATCH_STREAK 8
#define BATCH_MAX_PACKET 4096
#define BATCH_BIG_READ (16 * 1024)
#define BATCH_BIG_READS 16
/* SO_RCVBUF values asked for; the kernel doubles them, and caps them at
 * 2 x net.core.rmem_max. */
#define BATCH_RCVBUF (96 * 1024)
#define BATCH_OPEN_RCVBUF (4 * 1024 * 1024)

static void conn_unref(aemp__conn *c);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void list_add(aemp_node *n, aemp__conn *c)
{
    c->next = n->conns;
    c->prev = NULL;
    if (n->conns) n->conns->prev = c;
    n->conns = c;
}

static void list_del(aemp_node *n, aemp__conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        n->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void map_del(aemp__conn *c)
{
    if (!c->in_map) return;
    aemp_node *n = c->node;
    if (aemp__map_get(&n->conn_by_name, c->peer, strlen(c->peer)) == c)
        aemp__map_del(&n->conn_by_name, c->peer, strlen(c->peer));
    c->in_map = false;
}

size_t aemp__conn_queued(const aemp__conn *c)
{
    return c->wbuf.len + c->wflight.len + c->tbuf.len + c->pend.len;
}

static aemp__conn *conn_new(aemp_node *n)
{
    if (n->nconns >= n->max_connections) return NULL;
    aemp__conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    n->nconns++;
    c->node = n;
    c->started_ms = c->last_recv_ms = c->last_send_ms = aemp__now_ms(n);
    list_add(n, c);
    return c;
}

static void conn_free(aemp__conn *c)
{
    aemp_node *n = c->node;
    n->nconns--;
    list_del(n, c);
    if (c->dirty) {
        for (aemp__conn **pc = &n->dirty; *pc; pc = &(*pc)->next_dirty)
            if (*pc == c) {
                *pc = c->next_dirty;
                break;
            }
    }
    aemp_buf_free(&c->rbuf);
    aemp_buf_free(&c->wbuf);
    aemp_buf_free(&c->wflight);
    aemp_buf_free(&c->pend);
    aemp_buf_free(&c->cbuf);
    aemp_buf_free(&c->tbuf);
    aemp_buf_free(&c->refpos);
    aemp_buf_free(&c->ctl_scratch);
    aemp_buf_free(&c->msg_scratch);
    if (c->atoms) {
        for (size_t i = 0; i < AEMP__ATOM_CACHE_SIZE; i++)
            free(c->atoms[i]);
        free(c->atoms);
    }
    aemp__tls_free(c->tls);
    memset(c->hs.cookie, 0, sizeof c->hs.cookie);
    free(c);
    aemp__node_maybe_finish_close(n);
}

static void conn_unref(aemp__conn *c)
{
    if (--c->refs == 0 && c->state == AEMP__C_CLOSING) conn_free(c);
}

static void on_tcp_closed(uv_handle_t *h)
{
    conn_unref(h->data);
}

static void report_dropped(aemp__conn *c, int err, const char *reason)
{
    aemp_node *n = c->node;
    size_t dropped = c->npend;
    aemp_buf_free(&c->pend);
    c->npend = 0;
    if (!c->initiator) return;
    if (n->closing) {
        AEMP_LOGD("connection to %s abandoned: node closed", c->peer);
        return;
    }
    AEMP_LOGW("cannot connect to %s: %s%s", c->peer, reason,
              dropped ? " (queued messages dropped)" : "");
    if (n->fail_cb) n->fail_cb(n, c->peer, err, reason, dropped, n->fail_arg);
}

void aemp__conn_close(aemp__conn *c, int err, const char *reason)
{
    if (c->state == AEMP__C_CLOSING) return;
    aemp_node *n = c->node;
    int was = c->state;
    c->state = AEMP__C_CLOSING;
    map_del(c);
    if (c->query) {
        aemp__epmd_query_cancel(c->query);
        c->query = NULL;
    }
    if (c->gai_busy) uv_cancel((uv_req_t *)&c->gai);
    if (c->tcp_init && !uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
    if (was == AEMP__C_UP) {
        AEMP_LOGI("connection to %s closed: %s", c->peer, reason);
        aemp__ports_node_down(n, c->peer);
        if (n->nodes_cb && !n->closing) n->nodes_cb(n, c->peer, 0, reason, n->nodes_arg);
    } else if (c->npend || c->initiator) {
        report_dropped(c, err, reason);
    }
    c->refs++; /* balance: free below if nothing is outstanding */
    conn_unref(c);
}

/* ------------------------------------------------------------------ */
/* writing                                                            */
/* ------------------------------------------------------------------ */

static void on_prepare(uv_prepare_t *h)
{
    aemp__conn_flush_all(h->data);
}

static void mark_dirty(aemp__conn *c)
{
    if (c->dirty) return;
    c->dirty = true;
    c->next_dirty = c->node->dirty;
    c->node->dirty = c;
    uv_prepare_start(&c->node->flusher, on_prepare);
}

static void flush(aemp__conn *c);

static void on_write(uv_write_t *req, int status)
{
    aemp__conn *c = req->data;
    c->writing = false;
    c->wflight.len = 0;
    if (c->wflight.cap > BUSY_BUF_KEEP) aemp_buf_free(&c->wflight);
    if (status < 0) {
        if (c->state != AEMP__C_CLOSING) {
            AEMP_LOGW("connection to %s: write failed: %s", c->peer, uv_strerror(status));
            aemp__conn_close(c, AEMP_EIO, uv_strerror(status));
        }
    } else if (c->state != AEMP__C_CLOSING) {
        flush(c);
    }
    conn_unref(c);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    aemp__conn *c = req->data;
    aemp__conn_close(c, 0, "node closed");
    conn_unref(c);
}

static void flush(aemp__conn *c)
{
    if (c->writing || !c->tcp_init || c->state == AEMP__C_CLOSING) return;
    aemp_buf *out = &c->wbuf;
    if (c->tls) {
        /* Plaintext waits in wbuf until TLS is established. */
        if (c->wbuf.len && aemp__tls_established(c->tls)) {
            int rc = aemp__tls_write(c->tls, c->wbuf.data, c->wbuf.len, &c->tbuf);
            c->wbuf.len = 0;
            if (rc) {
                AEMP_LOGW("connection to %s: %s", c->peer, aemp__tls_error(c->tls));
                aemp__conn_close(c, rc, aemp__tls_error(c->tls));
                return;
            }
        }
        out = &c->tbuf;
    }
    if (out->len == 0) {
        if (c->shutdown) {
            c->shutdown = false;
            c->sreq.data = c;
            if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) == 0)
                c->refs++;
            else
                aemp__conn_close(c, 0, "node closed");
        }
        return;
    }
    /* Swap: new sends accumulate while this batch is written. */
    aemp_buf t = c->wflight;
    c->wflight = *out;
    *out = t;
    out->len = 0;
    uv_buf_t b = uv_buf_init(c->wflight.data, (unsigned)c->wflight.len);
    c->wreq.data = c;
    int rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (rc) {
        AEMP_LOGW("connection to %s: write failed: %s", c->peer, uv_strerror(rc));
        aemp__conn_close(c, AEMP_EIO, uv_strerror(rc));
        return;
    }
    c->writing = true;
    c->small_reads = 0; /* the peer may be waiting for this: no batching */
    c->refs++;
    c->last_send_ms = aemp__now_ms(c->node);
}

void aemp__conn_flush_all(aemp_node *n)
{
    while (n->dirty) {
        aemp__conn *c = n->dirty;
        n->dirty = c->next_dirty;
        c->dirty = false;
        flush(c);
    }
    uv_prepare_stop(&n->flusher);
}

size_t aemp__conn_packet_begin(aemp__conn *c, int *rc)
{
    size_t start = c->wbuf.len;
    *rc = aemp__buf_put_u32(&c->wbuf, 0);
    return start;
}

void aemp__conn_packet_end(aemp__conn *c, size_t start)
{
    size_t len = c->wbuf.len - start - 4;
    aemp__put_u32(c->wbuf.data + start, (uint32_t)len);
    mark_dirty(c);
}

void aemp__conn_shutdown(aemp__conn *c)
{
    if (c->state != AEMP__C_UP) {
        aemp__conn_close(c, AEMP_ECLOSED, "node closed");
        return;
    }
    c->shutdown = true;
    mark_dirty(c);
}

/* ------------------------------------------------------------------ */
/* reading                                                            */
/* ------------------------------------------------------------------ */

/* The free space at the end of b, with at least want bytes; a NULL base
 * when memory is short (on_read reports it). */
static void read_space(aemp_buf *b, size_t want, uv_buf_t *buf)
{
    if (aemp__buf_reserve(b, want)) {
        buf->base = NULL;
        buf->len = 0;
        return;
    }
    buf->base = b->data + b->len;
    buf->len = b->cap - b->len;
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    aemp__conn *c = h->data;
    size_t want = READ_CHUNK;
    if (c->tls) {
        read_space(&c->cbuf, want, buf);
        return;
    }
    /* A large packet in progress: read straight into its final place. */
    if (c->state == AEMP__C_UP && c->rbuf.len >= 4) {
        size_t plen = aemp__get_u32(c->rbuf.data);
        if (plen <= c->node->max_packet && plen + 4 > c->rbuf.len + want)
            want = plen + 4 - c->rbuf.len;
    }
    read_space(&c->rbuf, want, buf);
}

/* A peer with a shorter net_ticktime than ours expects to hear from us more
 * often than our own ticks: answer its ticks, as ei-based nodes do. Only when
 * we have been quiet for a while, so two nodes never tick back and forth. */
#define TICK_ANSWER_QUIET_MS 500

static void answer_tick(aemp__conn *c)
{
    if (aemp__now_ms(c->node) - c->last_send_ms < TICK_ANSWER_QUIET_MS || c->writing || c->wbuf.len)
        return;
    if (aemp__buf_put_u32(&c->wbuf, 0) == 0) mark_dirty(c);
}

/* Handle whole packets in rbuf; keep the partial rest. */
static void process_packets(aemp__conn *c)
{
    size_t pos = 0;
    aemp_node *n = c->node;
    while (c->state == AEMP__C_UP && c->rbuf.len - pos >= 4) {
        size_t plen = aemp__get_u32(c->rbuf.data + pos);
        if (plen > n->max_packet) {
            AEMP_LOGW("connection to %s: packet of %zu bytes exceeds the limit of %zu: closing",
                      c->peer, plen, n->max_packet);
            aemp__conn_close(c, AEMP_ETOOBIG, "packet too large");
            return;
        }
        if (plen > BATCH_MAX_PACKET) c->big_packet = true;
        if (c->rbuf.len - pos - 4 < plen) break;
        pos += 4;
        if (plen > 0)
            aemp__ctl_packet(c, c->rbuf.data + pos, plen);
        else
            answer_tick(c);
        pos += plen;
    }
    if (c->state == AEMP__C_CLOSING) return;
    aemp__buf_consume(&c->rbuf, pos);
    if (c->rbuf.len == 0 && c->rbuf.cap > BUSY_BUF_KEEP) aemp_buf_free(&c->rbuf);
}

static void handshake_done(aemp__conn *c)
{
    aemp_node *n = c->node;
    aemp__strlcpy(c->peer, c->hs.peer_name, sizeof c->peer);
    if (c->tls && !c->initiator) {
        /* A certificate vouches for a host: the node name must match it. */
        const char *host = strchr(c->peer, '@') + 1;
        if (aemp__tls_check_peer_host(c->tls, host)) {
            AEMP_LOGW("refused connection from %s: %s", c->peer, aemp__tls_error(c->tls));
            aemp__conn_close(c, AEMP_EAUTH, aemp__tls_error(c->tls));
            return;
        }
    }
    c->flags = aemp__hs_flags(&c->hs);
    aemp__conn *old = aemp__map_get(&n->conn_by_name, c->peer, strlen(c->peer));
    if (old && old != c) {
        /* Our own attempt lost a simultaneous connect, or the peer restarted
         * while we still held its old connection: this one replaces it, and
         * inherits the messages queued there. */
        if (old->npend) {
            aemp_buf t = c->pend;
            c->pend = old->pend;
            c->npend = old->npend;
            old->pend = t;
            old->npend = 0;
        }
        old->initiator = false; /* superseded, not failed: no failure report */
        aemp__conn_close(old, AEMP_ECLOSED, "replaced by a new connection");
    }
    if (aemp__map_put(&n->conn_by_name, c->peer, strlen(c->peer), c)) {
        aemp__conn_close(c, AEMP_ENOMEM, "out of memory");
        return;
    }
    c->in_map = true;
    c->state = AEMP__C_UP;
    memset(c->hs.cookie, 0, sizeof c->hs.cookie);
    aemp__node_conn_up(c);
    if (c->state != AEMP__C_UP) return;
    if (c->npend) aemp__ctl_flush_pending(c);
}

static void handshake_input(aemp__conn *c)
{
    size_t consumed = 0;
    int rc = aemp__hs_input(&c->hs, c->rbuf.data, c->rbuf.len, &consumed, &c->wbuf);
    if (c->wbuf.len) mark_dirty(c);
    aemp__buf_consume(&c->rbuf, consumed);
    if (rc == AEMP__HS_MORE) return;
    if (rc == AEMP__HS_DONE) {
        handshake_done(c);
        if (c->state == AEMP__C_UP && c->rbuf.len) process_packets(c);
        return;
    }
    const char *who = c->hs.peer_name[0] ? c->hs.peer_name : c->peer[0] ? c->peer : c->ip;
    if (c->hs.error[0] && rc != AEMP_ECONNREFUSED)
        AEMP_LOGW("handshake with %s failed: %s", who, c->hs.error);
    if (rc == AEMP_ECONNREFUSED && c->initiator && strstr(c->hs.error, "nok")) {
        /* The peer's own connection to us wins: keep our queued messages
         * for it and wait (bounded by the handshake timeout). */
        AEMP_LOGD("simultaneous connect with %s: waiting for its connection", c->peer);
        c->state = AEMP__C_WAIT;
        c->started_ms = aemp__now_ms(c->node);
        if (c->tcp_init && !uv_is_closing((uv_handle_t *)&c->tcp)) {
            uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
            c->tcp_init = false;
        }
        return;
    }
    if (rc == AEMP_ECONNREFUSED && !c->initiator) {
        /* We refused: the status message is the first and only thing we
         * wrote, small enough to hand to the socket at once. */
        AEMP_LOGI("refused connection from %s: %s", who, c->hs.error);
        aemp_buf *out = &c->wbuf;
        if (c->tls && aemp__tls_write(c->tls, c->wbuf.data, c->wbuf.len, &c->tbuf) == 0)
            out = &c->tbuf;
        if (out->len) {
            uv_buf_t b = uv_buf_init(out->data, (unsigned)out->len);
            (void)uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        }
    }
    aemp__conn_close(c, rc, c->hs.error[0] ? c->hs.error : aemp_strerror(rc));
}

/* ------------------------------------------------------------------ */
/* read batching                                                      */
/* ------------------------------------------------------------------ */

/* Setting SO_RCVBUF ends the kernel's automatic sizing of this socket's
 * buffer, which for a peer on this host (microsecond round trips) is never
 * needed. */
static void set_rcvbuf(uv_handle_t *h, int bytes)
{
    uv_os_fd_t fd;
    if (uv_fileno(h, &fd) == 0) (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
}

/* Batching helps when the peer's CPU, not the network, limits the stream,
 * and only peers on this host are sure to be close: the peer's address is
 * a loopback address or the connection's own local address. */
static bool peer_on_this_host(aemp__conn *c)
{
    struct sockaddr_storage me, peer;
    int ml = sizeof me, pl = sizeof peer;
    if (uv_tcp_getsockname(&c->tcp, (struct sockaddr *)&me, &ml) ||
        uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&peer, &pl) || me.ss_family != AF_INET ||
        peer.ss_family != AF_INET)
        return false;
    const struct sockaddr_in *a = (const struct sockaddr_in *)&me;
    const struct sockaddr_in *b = (const struct sockaddr_in *)&peer;
    return (ntohl(b->sin_addr.s_addr) >> 24) == 127 || a->sin_addr.s_addr == b->sin_addr.s_addr;
}

static void batch_end(aemp__conn *c, const char *why)
{
    if (!c->batching) return;
    c->batching = false;
    set_rcvbuf((uv_handle_t *)&c->tcp, BATCH_OPEN_RCVBUF);
    AEMP_LOGD("connection to %s: no read batching (%s)", c->peer[0] ? c->peer : c->ip, why);
}

/* A socket just connected, before any data: read batching for a peer on
 * this host. The window offered so far is the SYN's, at most 64 KB, which
 * the small buffer holds. */
static void batch_begin(aemp__conn *c)
{
    if (!c->node->read_batch_ms || !peer_on_this_host(c)) return;
    c->batching = true;
    set_rcvbuf((uv_handle_t *)&c->tcp, BATCH_RCVBUF);
}

static void on_batch_timer(uv_timer_t *t)
{
    aemp_node *n = t->data;
    for (aemp__conn *c = n->conns, *next; c; c = next) {
        next = c->next;
        if (!c->paused) continue;
        c->paused = false;
        if (c->state == AEMP__C_UP && uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read))
            aemp__conn_close(c, AEMP_EIO, "read failed");
    }
}

/* After a read of nread bytes was handled: pause this connection if the
 * peer streams small packets. */
static void batch_reads(aemp__conn *c, size_t nread)
{
    aemp_node *n = c->node;
    if (!c->batching || c->state != AEMP__C_UP) return;
    if (c->big_packet) {
        batch_end(c, "large packets");
        return;
    }
    /* This read produced a reply: the peer may be waiting for it. */
    if (c->wbuf.len || c->tbuf.len) {
        c->small_reads = 0;
        return;
    }
    /* A large read: the node is behind, read on. Once the peer streams,
     * the large reads are what waited during a pause: the stream goes on. */
    if (nread >= BATCH_SMALL_READ) {
        if (c->small_reads >= BATCH_STREAK) return;
        c->small_reads = 0;
        /* Large reads in a row, none of them after a pause of ours (pauses
         * reset the count): the peer writes in large batches itself (a C
         * node does); the small buffer would only slow it down. */
        if (nread >= BATCH_BIG_READ && ++c->big_reads >= BATCH_BIG_READS)
            batch_end(c, "the peer writes in large batches");
        else if (nread < BATCH_BIG_READ)
            c->big_reads = 0;
        return;
    }
    c->big_reads = 0;
    /* Caught up: pause if the peer streams. */
    if (c->small_reads < BATCH_STREAK && ++c->small_reads == BATCH_STREAK)
        AEMP_LOGD("connection to %s: small packets streaming in, reading in batches", c->peer);
    if (c->small_reads < BATCH_STREAK) return;
    if (uv_read_stop((uv_stream_t *)&c->tcp)) return;
    c->paused = true;
    c->big_reads = 0;
    if (!uv_is_active((uv_handle_t *)&n->batch_timer))
        uv_timer_start(&n->batch_timer, on_batch_timer, n->read_batch_ms, 0);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    aemp__conn *c = s->data;
    if (c->state == AEMP__C_CLOSING) return;
    if (nread < 0) {
        const char *why = nread == UV_EOF ? "connection closed by peer" : uv_strerror((int)nread);
        if (c->state == AEMP__C_HANDSHAKE) {
            const char *who = c->hs.peer_name[0] ? c->hs.peer_name : c->peer[0] ? c->peer : c->ip;
            /* Erlang closes without a word when our digest is wrong. */
            bool auth = c->initiator && c->hs.state != 0 && c->hs.peer_challenge != 0;
            AEMP_LOGW("handshake with %s failed: %s%s", who, why,
                      auth ? " after our challenge reply (wrong cookie?)" : "");
            aemp__conn_close(c, auth ? AEMP_EAUTH : AEMP_EIO,
                             auth ? "connection closed during handshake (wrong cookie?)" : why);
        } else {
            aemp__conn_close(c, AEMP_EIO, why);
        }
        return;
    }
    if (nread == 0) return;
    if (!buf->base) {
        AEMP_LOGE("connection to %s: out of memory for the read buffer", c->peer);
        aemp__conn_close(c, AEMP_ENOMEM, "out of memory");
        return;
    }
    c->last_recv_ms = aemp__now_ms(c->node);
    if (c->tls) {
        c->cbuf.len += (size_t)nread;
        int rc = aemp__tls_feed(c->tls, c->cbuf.data, c->cbuf.len, &c->rbuf, &c->tbuf);
        c->cbuf.len = 0;
        if (c->tbuf.len) mark_dirty(c);
        if (rc) {
            const char *who = c->peer[0] ? c->peer : c->ip;
            AEMP_LOGW("TLS connection with %s failed: %s", who, aemp__tls_error(c->tls));
            aemp__conn_close(c, rc, aemp__tls_error(c->tls));
            return;
        }
        if (!aemp__tls_established(c->tls)) return;
        if (c->initiator && !c->hs_started) {
            c->hs_started = true;
            if (aemp__hs_start(&c->hs, &c->wbuf)) {
                aemp__conn_close(c, AEMP_ENOMEM, "handshake start failed");
                return;
            }
            mark_dirty(c);
        }
        if (c->rbuf.len == 0) return;
    } else {
        c->rbuf.len += (size_t)nread;
    }
    if (c->state == AEMP__C_HANDSHAKE) {
        handshake_input(c);
    } else if (c->state == AEMP__C_UP) {
        process_packets(c);
        batch_reads(c, (size_t)nread);
        /* libuv reads up to 32 chunks per wake-up before the loop turns;
         * replies (acks, answers) produced by this chunk leave now rather
         * than after all of them, so a peer waiting on them keeps sending. */
        aemp__conn_flush_all(c->node);
    }
}

/* ------------------------------------------------------------------ */
/* set-up                                                             */
/* ------------------------------------------------------------------ */

static int start_tcp(aemp__conn *c)
{
    int rc = uv_tcp_init(c->node->loop, &c->tcp);
    if (rc) return rc;
    c->tcp.data = c;
    c->tcp_init = true;
    c->refs++;
    return 0;
}

static int decide(void *arg, const char *peer)
{
    aemp__conn *c = arg;
    aemp_node *n = c->node;
    aemp__strlcpy(c->peer, peer, sizeof c->peer);
    aemp__conn *other = aemp__map_get(&n->conn_by_name, peer, strlen(peer));
    if (!other || other->state == AEMP__C_UP) return AEMP__HS_ACCEPT;
    if (other->state == AEMP__C_WAIT) return AEMP__HS_ACCEPT_SIMUL;
    /* Both sides are connecting: the greater name keeps its own attempt, as
     * net_kernel does. */
    if (strcmp(n->name, peer) > 0) return AEMP__HS_REFUSE_SIMUL;
    return AEMP__HS_ACCEPT_SIMUL;
}

/* "ip:port" of a connected socket, for log lines before a name is known. */
static void peer_ip(uv_tcp_t *t, char *out, size_t size)
{
    struct sockaddr_storage ss;
    int sl = sizeof ss;
    snprintf(out, size, "an unknown address");
    if (uv_tcp_getpeername(t, (struct sockaddr *)&ss, &sl) == 0 && ss.ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)&ss;
        char ip[INET_ADDRSTRLEN];
        uv_ip4_name(sin, ip, sizeof ip);
        snprintf(out, size, "%s:%u", ip, ntohs(sin->sin_port));
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    aemp_node *n = server->data;
    if (status < 0) {
        AEMP_LOGW("accept failed: %s", uv_strerror(status));
        return;
    }
    aemp__conn *c = conn_new(n);
    if (!c && n->nconns >= n->max_connections) {
        /* Accept and close at once, so that the peer is not left waiting. */
        uv_tcp_t *t = malloc(sizeof *t);
        if (t && uv_tcp_init(n->loop, t) == 0) {
            if (uv_accept(server, (uv_stream_t *)t) == 0) {
                char who[64];
                peer_ip(t, who, sizeof who);
                AEMP_LOGW("refused connection from %s: too many connections (limit %u)", who,
                          n->max_connections);
            }
            uv_close((uv_handle_t *)t, (uv_close_cb)free);
        } else {
            free(t);
        }
        return;
    }
    if (!c || start_tcp(c)) {
        AEMP_LOGE("out of memory accepting a connection");
        if (c) {
            c->state = AEMP__C_CLOSING;
            c->refs++;
            conn_unref(c);
        }
        return;
    }
    c->state = AEMP__C_HANDSHAKE;
    if (uv_accept(server, (uv_stream_t *)&c->tcp)) {
        aemp__conn_close(c, AEMP_EIO, "accept failed");
        return;
    }
    peer_ip(&c->tcp, c->ip, sizeof c->ip);
    uv_tcp_nodelay(&c->tcp, 1);
    batch_begin(c);
    if (n->tls_ctx && aemp__tls_new(n->tls_ctx, true, NULL, &c->tls)) {
        aemp__conn_close(c, AEMP_ENOMEM, "out of memory");
        return;
    }
    aemp__hs_init(&c->hs, AEMP__HS_ACCEPTOR, c->tls ? 4 : 2, n->name, n->cookie, n->creation,
                  aemp__dflags_offered(), NULL);
    c->hs.decide = decide;
    c->hs.decide_arg = c;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read))
        aemp__conn_close(c, AEMP_EIO, "read failed");
}

static void on_connect(uv_connect_t *req, int status)
{
    aemp__conn *c = req->data;
    if (c->state == AEMP__C_CLOSING) {
        conn_unref(c);
        return;
    }
    if (status < 0) {
        aemp__conn_close(c, AEMP_ECONNREFUSED, uv_strerror(status));
        conn_unref(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    batch_begin(c);
    c->state = AEMP__C_HANDSHAKE;
    aemp_node *n = c->node;
    int rc = 0;
    if (n->tls_ctx) {
        rc = aemp__tls_new(n->tls_ctx, false, c->host, &c->tls);
        if (!rc) rc = aemp__tls_start(c->tls, &c->tbuf);
    }
    if (!rc)
        rc = aemp__hs_init(&c->hs, AEMP__HS_INITIATOR, c->tls ? 4 : 2, n->name, n->cookie,
                           n->creation, aemp__dflags_offered(), c->peer);
    if (!rc && !c->tls) {
        c->hs_started = true;
        rc = aemp__hs_start(&c->hs, &c->wbuf);
    }
    if (!rc) rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rc)
        aemp__conn_close(c, AEMP_EIO, "handshake start failed");
    else
        mark_dirty(c);
    conn_unref(c);
}

static void on_port(int status, uint16_t port, void *arg)
{
    aemp__conn *c = arg;
    c->query = NULL;
    if (c->state == AEMP__C_CLOSING) {
        conn_unref(c);
        return;
    }
    if (status) {
        const char *why = status == AEMP_ENONODE        ? "no such node (not registered with EPMD)"
                          : status == AEMP_ECONNREFUSED ? "EPMD not reachable on the peer's host"
                                                        : aemp_strerror(status);
        aemp__conn_close(c, status == AEMP_ENONODE ? AEMP_ENONODE : status, why);
        conn_unref(c);
        return;
    }
    struct sockaddr_in sin;
    int rc = uv_ip4_addr(c->ip, port, &sin);
    if (!rc) rc = start_tcp(c);
    if (!rc) {
        c->creq.data = c;
        rc = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&sin, on_connect);
        if (!rc) c->refs++;
    }
    if (rc)
        aemp__conn_close(c, AEMP_EIO, uv_strerror(rc));
    else
        c->state = AEMP__C_CONNECTING;
    conn_unref(c);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    aemp__conn *c = req->data;
    c->gai_busy = false;
    if (c->state == AEMP__C_CLOSING) {
        uv_freeaddrinfo(res);
        conn_unref(c);
        return;
    }
    if (status < 0 || !res) {
        char why[300];
        snprintf(why, sizeof why, "cannot resolve host '%s': %s", c->host,
                 status < 0 ? uv_strerror(status) : "no address");
        uv_freeaddrinfo(res);
        aemp__conn_close(c, AEMP_ENOENT, why);
        conn_unref(c);
        return;
    }
    uv_ip4_name((const struct sockaddr_in *)res->ai_addr, c->ip, sizeof c->ip);
    uv_freeaddrinfo(res);
    c->state = AEMP__C_LOOKUP;
    int rc = aemp__epmd_port_please(c->node->loop, c->ip, c->node->epmd_port, c->alive, on_port, c,
                                    &c->query);
    if (rc) {
        aemp__conn_close(c, rc, "EPMD lookup failed");
    } else {
        c->refs++;
    }
    conn_unref(c);
}

bool aemp__node_name_valid(const char *name)
{
    const char *at = strchr(name, '@');
    return at && at != name && at[1] && !strchr(at + 1, '@') && strlen(name) <= AEMP_MAXNODELEN;
}

aemp__conn *aemp__conn_get_or_start(aemp_node *n, const char *peer)
{
    size_t plen = strlen(peer);
    aemp__conn *c = aemp__map_get(&n->conn_by_name, peer, plen);
    if (c) return c;
    if (!aemp__node_name_valid(peer)) return NULL;
    const char *at = strchr(peer, '@');
    c = conn_new(n);
    if (!c) return NULL;
    c->initiator = true;
    c->state = AEMP__C_RESOLVE;
    memcpy(c->peer, peer, plen + 1);
    memcpy(c->alive, peer, (size_t)(at - peer));
    c->alive[at - peer] = 0;
    aemp__strlcpy(c->host, at + 1, sizeof c->host);
    if (aemp__map_put(&n->conn_by_name, peer, plen, c)) {
        c->state = AEMP__C_CLOSING;
        c->refs++;
        conn_unref(c);
        return NULL;
    }
    c->in_map = true;
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    c->gai.data = c;
    int rc = uv_getaddrinfo(n->loop, &c->gai, on_resolved, c->host, NULL, &hints);
    if (rc) {
        aemp__conn_close(c, AEMP_EIO, uv_strerror(rc));
        return NULL;
    }
    c->gai_busy = true;
    c->refs++;
    AEMP_LOGD("connecting to %s", peer);
    return c;
}

/* ------------------------------------------------------------------ */
/* ticks and timeouts                                                 */
/* ------------------------------------------------------------------ */

static void release_idle_buffers(aemp__conn *c, uint64_t now)
{
    if (now - c->last_recv_ms < 1000 || now - c->last_send_ms < 1000 || c->writing) return;
    aemp_buf *bufs[] = {&c->rbuf, &c->wbuf, &c->wflight, &c->cbuf, &c->tbuf};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        if (bufs[i]->len == 0 && bufs[i]->cap > IDLE_BUF_KEEP) aemp_buf_free(bufs[i]);
    /* scratch space holds a message only while its packet is handled */
    if (c->msg_scratch.cap > IDLE_BUF_KEEP) aemp_buf_free(&c->msg_scratch);
}

void aemp__conn_housekeeping(aemp_node *n)
{
    uint64_t now = aemp__now_ms(n);
    uint64_t tick = (uint64_t)n->net_ticktime * 1000;
    aemp__conn *c = n->conns, *next;
    for (; c; c = next) {
        next = c->next;
        if (c->state == AEMP__C_CLOSING) continue;
        if (c->state != AEMP__C_UP) {
            if (now - c->started_ms > n->hs_timeout_ms) {
                const char *who = c->peer[0] ? c->peer : c->ip;
                AEMP_LOGW("connection with %s: set-up timed out after %u ms", who,
                          n->hs_timeout_ms);
                aemp__conn_close(c, AEMP_ETIMEDOUT, "connection set-up timed out");
            }
            continue;
        }
        release_idle_buffers(c, now);
        if (now - c->last_recv_ms > tick) {
            AEMP_LOGW("connection to %s: no traffic for %u s (net_ticktime): dropping", c->peer,
                      n->net_ticktime);
            aemp__conn_close(c, AEMP_ETIMEDOUT, "net_tick timeout");
            continue;
        }
        if (now - c->last_send_ms >= tick / 4 && !c->writing && c->wbuf.len == 0) {
            /* A tick is an empty packet. */
            if (aemp__buf_put_u32(&c->wbuf, 0) == 0) mark_dirty(c);
        }
    }
}

/* Listener set-up lives here so that on_connection stays private. */
int aemp__conn_listen(aemp_node *n, uint16_t port)
{
    struct sockaddr_in sin;
    int rc = uv_tcp_init(n->loop, &n->listener);
    if (rc) return rc;
    n->listener_init = true;
    n->listener.data = n;
    uv_ip4_addr("0.0.0.0", port, &sin);
    rc = uv_tcp_bind(&n->listener, (const struct sockaddr *)&sin, 0);
    if (!rc) rc = uv_listen((uv_stream_t *)&n->listener, 128, on_connection);
    if (rc) return rc;
    struct sockaddr_storage ss;
    int sl = sizeof ss;
    if (uv_tcp_getsockname(&n->listener, (struct sockaddr *)&ss, &sl) == 0)
        n->listen_port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return 0;
}
