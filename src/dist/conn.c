/*
 * conn.c - one distribution connection: set-up (resolve, EPMD lookup,
 * connect), handshake, framing, ticks, coalesced writes, and teardown.
 *
 * Lifetime: a connection is freed once every handle and request it started
 * has called back (c->refs reaches 0) after aemp__conn_close().
 */
#include "dist.h"

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
static void flush_pending(aemp__conn *c);
static void maybe_release(aemp__conn *c);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void list_add(aemp__dist *d, aemp__conn *c)
{
    c->next = d->conns;
    c->prev = NULL;
    if (d->conns) d->conns->prev = c;
    d->conns = c;
}

static void list_del(aemp__dist *d, aemp__conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        d->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static uint64_t now_ms(const aemp__dist *d)
{
    return uv_now(d->loop);
}

static void dist_maybe_closed(aemp__dist *d)
{
    if (!d->closing || d->pending_closes > 0 || d->conns) return;
    d->pending_closes = -1; /* finished: never again */
    memset(d->cookie, 0, sizeof d->cookie);
    aemp__map_free(&d->per_addr);
    if (d->closed_cb) d->closed_cb(d->closed_arg);
}

size_t aemp__conn_queued(const aemp__conn *c)
{
    return c->wbuf.len + c->wflight.len + c->tbuf.len + c->pend.len;
}

/* ------------------------------------------------------------------ */
/* connection slots                                                   */
/* ------------------------------------------------------------------ */

static unsigned addr_count(aemp__dist *d, uint32_t addr)
{
    return (unsigned)(uintptr_t)aemp__map_get(&d->per_addr, &addr, sizeof addr);
}

static void addr_add(aemp__dist *d, uint32_t addr, int delta)
{
    unsigned n = addr_count(d, addr) + (unsigned)delta;
    if (n == 0)
        aemp__map_del(&d->per_addr, &addr, sizeof addr);
    else if (aemp__map_put(&d->per_addr, &addr, sizeof addr, (void *)(uintptr_t)n))
        return; /* out of memory: the count stays low, nothing worse */
}

static void slot_release(aemp__conn *c)
{
    aemp__dist *d = c->d;
    if (c->slot == AEMP__SLOT_NONE) return;
    d->nslot[c->slot]--;
    if (c->slot == AEMP__SLOT_HANDSHAKE) addr_add(d, c->addr, -1);
    c->slot = AEMP__SLOT_NONE;
}

static void slot_take(aemp__conn *c, int slot)
{
    slot_release(c);
    c->slot = (uint8_t)slot;
    c->d->nslot[slot]++;
    if (slot == AEMP__SLOT_HANDSHAKE) addr_add(c->d, c->addr, 1);
}

/* A detail line about an incoming connection that failed: the first few
 * of an interval, then only the counts of the summary. */
static bool detail_ok(aemp__dist *d)
{
    return d->refused.logged++ < AEMP__REFUSAL_DETAIL_LINES;
}

static void refusal_summary(aemp__dist *d, uint64_t now)
{
    struct aemp__refusals *r = &d->refused;
    if (now - r->since_ms < AEMP__REFUSAL_LOG_MS) return;
    if (r->per_address || r->evicted || r->timeouts || r->failed || r->peers) {
        char ip[INET_ADDRSTRLEN] = "";
        struct in_addr a = {r->last_addr};
        inet_ntop(AF_INET, &a, ip, sizeof ip);
        AEMP_LOGW("in the last %llu s: %llu handshakes dropped for newer ones from the "
                  "same address (limit %u, last %s), %llu for newer ones from anywhere (limit "
                  "%u), %llu set-ups timed out, %llu handshakes failed, %llu peers refused "
                  "over max_connections (%u)",
                  (unsigned long long)((now - r->since_ms) / 1000),
                  (unsigned long long)r->per_address, d->max_handshakes_per_address,
                  r->per_address ? ip : "-", (unsigned long long)r->evicted, d->max_handshakes,
                  (unsigned long long)r->timeouts, (unsigned long long)r->failed,
                  (unsigned long long)r->peers, d->max_connections);
    }
    memset(r, 0, sizeof *r);
    r->since_ms = now;
}

static aemp__conn *conn_new(aemp__dist *d)
{
    aemp__conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    d->nconns++;
    c->d = d;
    c->started_ms = c->last_recv_ms = c->last_send_ms = now_ms(d);
    list_add(d, c);
    return c;
}

static void conn_free(aemp__conn *c)
{
    aemp__dist *d = c->d;
    d->nconns--;
    list_del(d, c);
    if (c->dirty) {
        for (aemp__conn **pc = &d->dirty; *pc; pc = &(*pc)->next_dirty)
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
    aemp_buf_free(&c->sc_ctl);
    aemp_buf_free(&c->ac_pos);
    aemp_buf_free(&c->ac_scratch);
    aemp_buf_free(&c->ac_ctl);
    aemp_buf_free(&c->ac_msg);
    aemp_buf_free(&c->rc_key);
    aemp_buf_free(&c->rc_ctl);
    if (c->atoms) {
        for (size_t i = 0; i < AEMP__ATOM_CACHE_SIZE; i++)
            free(c->atoms[i]);
        free(c->atoms);
    }
    aemp__tls_free(c->tls);
    memset(c->hs.cookie, 0, sizeof c->hs.cookie);
    free(c);
    dist_maybe_closed(d);
}

static void conn_unref(aemp__conn *c)
{
    if (--c->refs == 0 && c->state == AEMP__C_CLOSING) conn_free(c);
}

static void on_tcp_closed(uv_handle_t *h)
{
    conn_unref(h->data);
}

void aemp__conn_close(aemp__conn *c, int err, const char *reason)
{
    if (c->state == AEMP__C_CLOSING) return;
    aemp__dist *d = c->d;
    int was = c->state;
    c->state = AEMP__C_CLOSING;
    slot_release(c);
    if (c->query) {
        aemp__epmd_query_cancel(c->query);
        c->query = NULL;
    }
    if (c->gai_busy) uv_cancel((uv_req_t *)&c->gai);
    if (c->tcp_init && !uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
    size_t dropped = c->npend;
    aemp_buf_free(&c->pend);
    c->npend = 0;
    if (d->closing) {
        AEMP_LOGD("connection to %s abandoned: node closed", c->peer[0] ? c->peer : c->ip);
    } else if (was == AEMP__C_UP) {
        AEMP_LOGI("connection to %s closed: %s", c->peer, reason);
        d->ops->down(d->ops_arg, c, err, reason);
    } else {
        if (c->initiator && !c->silent && !c->quiet)
            AEMP_LOGW("cannot connect to %s: %s%s", c->peer, reason,
                      dropped ? " (queued messages dropped)" : "");
        else if (c->initiator && !c->silent)
            AEMP_LOGD("cannot connect to %s: %s%s", c->peer, reason,
                      dropped ? " (queued messages dropped)" : "");
        d->ops->fail(d->ops_arg, c, err, reason, dropped);
    }
    c->refs++; /* balance: free below if nothing is outstanding */
    conn_unref(c);
}

void aemp__conn_take_pending(aemp__conn *to, aemp__conn *from)
{
    if (!from->npend) return;
    aemp_buf t = to->pend;
    size_t n = to->npend;
    to->pend = from->pend;
    to->npend = from->npend;
    from->pend = t;
    from->npend = n;
}

/* ------------------------------------------------------------------ */
/* writing                                                            */
/* ------------------------------------------------------------------ */

static void on_prepare(uv_prepare_t *h)
{
    aemp__dist_flush(h->data);
}

static void mark_dirty(aemp__conn *c)
{
    if (c->dirty) return;
    c->dirty = true;
    c->next_dirty = c->d->dirty;
    c->d->dirty = c;
    uv_prepare_start(&c->d->flusher, on_prepare);
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
        if (!c->writing) maybe_release(c);
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
    c->small_reads = 0; /* the peer may be waiting for this: no batching */
    c->last_send_ms = now_ms(c->d);
    /* Most batches fit in the socket's buffer: hand them over at once,
     * without a write request and its callback. */
    uv_buf_t b = uv_buf_init(out->data, (unsigned)out->len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n == (int)out->len) {
        out->len = 0;
        if (c->shutdown) flush(c);
        if (c->held) maybe_release(c);
        return;
    }
    if (n < 0 && n != UV_EAGAIN) {
        AEMP_LOGW("connection to %s: write failed: %s", c->peer, uv_strerror(n));
        aemp__conn_close(c, AEMP_EIO, uv_strerror(n));
        return;
    }
    /* The rest goes through a write request; new sends accumulate in the
     * other buffer meanwhile. */
    size_t done = n > 0 ? (size_t)n : 0;
    aemp_buf t = c->wflight;
    c->wflight = *out;
    *out = t;
    out->len = 0;
    b = uv_buf_init(c->wflight.data + done, (unsigned)(c->wflight.len - done));
    c->wreq.data = c;
    int rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (rc) {
        AEMP_LOGW("connection to %s: write failed: %s", c->peer, uv_strerror(rc));
        aemp__conn_close(c, AEMP_EIO, uv_strerror(rc));
        return;
    }
    c->writing = true;
    c->refs++;
}

void aemp__dist_flush(aemp__dist *d)
{
    while (d->dirty) {
        aemp__conn *c = d->dirty;
        d->dirty = c->next_dirty;
        c->dirty = false;
        flush(c);
    }
    uv_prepare_stop(&d->flusher);
}

static void conn_shutdown(aemp__conn *c)
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
        if (plen <= c->d->max_packet && plen + 4 > c->rbuf.len + want)
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
    if (now_ms(c->d) - c->last_send_ms < TICK_ANSWER_QUIET_MS || c->writing || c->wbuf.len) return;
    if (aemp__buf_put_u32(&c->wbuf, 0) == 0) mark_dirty(c);
}

/*
 * Bounded memory per peer. Sends of the application stop at max_pending
 * (AEMP_EBUSY, the node checks); what the node itself answers on the
 * control path (rpc results, spawn replies, exit and monitor signals) may
 * go reply_room further. Beyond that the node takes no more work from the
 * peer: it stops reading it (what the peer sent waits in the socket, then
 * in the peer) until the queue is back under max_pending. A peer that
 * never reads is then silent to us as well, and dropped after net_ticktime;
 * two nodes that flood each other with messages keep reading (their queues
 * are full of messages, not replies), so they drain each other.
 */
static bool over_reply_room(const aemp__conn *c)
{
    return aemp__conn_queued(c) > c->d->max_pending + c->d->reply_room;
}

static void hold(aemp__conn *c)
{
    if (c->held) return;
    c->held = true;
    c->holds++;
    if (!c->paused) uv_read_stop((uv_stream_t *)&c->tcp);
    AEMP_LOGD("connection to %s: %zu bytes queued: reading held", c->peer, aemp__conn_queued(c));
}

static void process_packets(aemp__conn *c);

/* After a write: take the peer's work again once the queue has drained. */
static void maybe_release(aemp__conn *c)
{
    if (!c->held || c->state != AEMP__C_UP || aemp__conn_queued(c) >= c->d->max_pending) return;
    c->held = false;
    AEMP_LOGD("connection to %s: reading again", c->peer);
    process_packets(c); /* what was read before the hold */
    if (c->state == AEMP__C_UP && !c->held && !c->paused &&
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read))
        aemp__conn_close(c, AEMP_EIO, "read failed");
}

/* Handle whole packets in rbuf; keep the partial rest. */
static void process_packets(aemp__conn *c)
{
    size_t pos = 0;
    aemp__dist *d = c->d;
    while (c->state == AEMP__C_UP && !c->held && c->rbuf.len - pos >= 4) {
        size_t plen = aemp__get_u32(c->rbuf.data + pos);
        if (plen > d->max_packet) {
            AEMP_LOGW("connection to %s: packet of %zu bytes exceeds the limit of %zu: closing",
                      c->peer, plen, d->max_packet);
            aemp__conn_close(c, AEMP_ETOOBIG, "packet too large");
            return;
        }
        if (plen > BATCH_MAX_PACKET) c->big_packet = true;
        if (c->rbuf.len - pos - 4 < plen) break;
        pos += 4;
        c->packets++;
        if (plen > 0)
            aemp__dist_packet(c, c->rbuf.data + pos, plen);
        else
            answer_tick(c);
        pos += plen;
        if (c->state == AEMP__C_UP && over_reply_room(c)) hold(c);
    }
    if (c->state == AEMP__C_CLOSING) return;
    aemp__buf_consume(&c->rbuf, pos);
    if (c->rbuf.len == 0 && c->rbuf.cap > BUSY_BUF_KEEP) aemp_buf_free(&c->rbuf);
}

static void handshake_done(aemp__conn *c)
{
    aemp__dist *d = c->d;
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
    if (d->nslot[AEMP__SLOT_UP] >= d->max_connections) {
        d->refused.peers++;
        aemp__conn_close(c, AEMP_EBUSY, "too many peers (max_connections)");
        return;
    }
    slot_take(c, AEMP__SLOT_UP);
    c->peer_h = aemp__intern(c->peer, strlen(c->peer));
    const char *why = "out of memory";
    int rc = c->peer_h ? d->ops->up(d->ops_arg, c, &why) : AEMP_ENOMEM;
    if (rc) {
        aemp__conn_close(c, rc, why);
        return;
    }
    c->state = AEMP__C_UP;
    memset(c->hs.cookie, 0, sizeof c->hs.cookie);
    char flags[512];
    aemp__dflags_describe(c->flags, flags, sizeof flags);
    AEMP_LOGI("connected to %s (%s)", c->peer, c->initiator ? "outgoing" : "incoming");
    AEMP_LOGD("flags with %s: %s", c->peer, flags);
    if (c->npend) flush_pending(c);
    if (c->state == AEMP__C_UP) d->ops->established(d->ops_arg, c);
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
    if (!c->initiator) c->d->refused.failed++;
    if (c->hs.error[0] && rc != AEMP_ECONNREFUSED && (c->initiator || detail_ok(c->d)))
        AEMP_LOGW("handshake with %s failed: %s", who, c->hs.error);
    if (rc == AEMP_ECONNREFUSED && c->initiator && strstr(c->hs.error, "nok")) {
        /* The peer's own connection to us wins: keep our queued messages
         * for it and wait (bounded by the handshake timeout). */
        AEMP_LOGD("simultaneous connect with %s: waiting for its connection", c->peer);
        c->state = AEMP__C_WAIT;
        c->started_ms = now_ms(c->d);
        if (c->tcp_init && !uv_is_closing((uv_handle_t *)&c->tcp)) {
            uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
            c->tcp_init = false;
        }
        return;
    }
    if (rc == AEMP_ECONNREFUSED && !c->initiator) {
        /* We refused: the status message is the first and only thing we
         * wrote, small enough to hand to the socket at once. */
        if (detail_ok(c->d)) AEMP_LOGI("refused connection from %s: %s", who, c->hs.error);
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
    if (!c->d->read_batch_ms || !peer_on_this_host(c)) return;
    c->batching = true;
    set_rcvbuf((uv_handle_t *)&c->tcp, BATCH_RCVBUF);
}

static void on_batch_timer(uv_timer_t *t)
{
    aemp__dist *d = t->data;
    for (aemp__conn *c = d->conns, *next; c; c = next) {
        next = c->next;
        if (!c->paused) continue;
        c->paused = false;
        if (c->state == AEMP__C_UP && !c->held &&
            uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read))
            aemp__conn_close(c, AEMP_EIO, "read failed");
    }
}

/* After a read of nread bytes was handled: pause this connection if the
 * peer streams small packets. */
static void batch_reads(aemp__conn *c, size_t nread)
{
    aemp__dist *d = c->d;
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
    if (!uv_is_active((uv_handle_t *)&d->batch_timer))
        uv_timer_start(&d->batch_timer, on_batch_timer, d->read_batch_ms, 0);
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
            if (!c->initiator) c->d->refused.failed++;
            if (c->initiator || detail_ok(c->d))
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
    c->last_recv_ms = now_ms(c->d);
    c->reads++;
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
        aemp__dist_flush(c->d);
    }
}

/* ------------------------------------------------------------------ */
/* set-up                                                             */
/* ------------------------------------------------------------------ */

static int start_tcp(aemp__conn *c)
{
    int rc = uv_tcp_init(c->d->loop, &c->tcp);
    if (rc) return rc;
    c->tcp.data = c;
    c->tcp_init = true;
    c->refs++;
    return 0;
}

static int decide(void *arg, const char *peer)
{
    aemp__conn *c = arg;
    aemp__dist *d = c->d;
    aemp__strlcpy(c->peer, peer, sizeof c->peer);
    /* A peer using our own name is an impostor or a misconfiguration:
     * refuse it, as net_kernel does. */
    if (strcmp(peer, d->name) == 0) {
        aemp__strlcpy(c->hs.error, "the peer claims this node's own name", sizeof c->hs.error);
        return AEMP__HS_REFUSE;
    }
    return d->ops->decide(d->ops_arg, c, peer);
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

/* The IPv4 address of a connected socket (network order), 0 if unknown. */
static uint32_t peer_addr(uv_tcp_t *t)
{
    struct sockaddr_storage ss;
    int sl = sizeof ss;
    if (uv_tcp_getpeername(t, (struct sockaddr *)&ss, &sl) || ss.ss_family != AF_INET) return 0;
    return ((const struct sockaddr_in *)&ss)->sin_addr.s_addr;
}

/* The oldest incoming connection still in its handshake (from addr, if
 * same_addr). */
static aemp__conn *oldest_handshake(aemp__dist *d, bool same_addr, uint32_t addr)
{
    aemp__conn *old = NULL;
    for (aemp__conn *c = d->conns; c; c = c->next)
        if (c->slot == AEMP__SLOT_HANDSHAKE && (!same_addr || c->addr == addr))
            old = c; /* the list is newest first */
    return old;
}

static void on_connection(uv_stream_t *server, int status)
{
    aemp__dist *d = server->data;
    if (status < 0) {
        AEMP_LOGW("accept failed: %s", uv_strerror(status));
        return;
    }
    aemp__conn *c = conn_new(d);
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
    /* Unauthenticated connections have a pool of their own, and one
     * address a share of it: a flood neither takes the places of the peers
     * already up nor, from one address, the pool. When the address's share
     * (or the pool) is full, its oldest handshake makes way for the new
     * one: a real peer's handshake takes milliseconds, what lingers is
     * stalling. */
    c->addr = peer_addr(&c->tcp);
    bool per_addr = addr_count(d, c->addr) >= d->max_handshakes_per_address;
    if (per_addr || d->nslot[AEMP__SLOT_HANDSHAKE] >= d->max_handshakes) {
        aemp__conn *old = oldest_handshake(d, per_addr, c->addr);
        if (per_addr) {
            d->refused.per_address++;
            d->refused.last_addr = c->addr;
        } else {
            d->refused.evicted++;
        }
        if (old) aemp__conn_close(old, AEMP_EBUSY, "dropped for a newer handshake");
    }
    slot_take(c, AEMP__SLOT_HANDSHAKE);
    peer_ip(&c->tcp, c->ip, sizeof c->ip);
    uv_tcp_nodelay(&c->tcp, 1);
    batch_begin(c);
    if (d->tls_ctx && aemp__tls_new(d->tls_ctx, true, NULL, &c->tls)) {
        aemp__conn_close(c, AEMP_ENOMEM, "out of memory");
        return;
    }
    aemp__hs_init(&c->hs, AEMP__HS_ACCEPTOR, c->tls ? 4 : 2, d->name, d->cookie, d->creation,
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
    aemp__dist *d = c->d;
    int rc = 0;
    if (d->tls_ctx) {
        rc = aemp__tls_new(d->tls_ctx, false, c->host, &c->tls);
        if (!rc) rc = aemp__tls_start(c->tls, &c->tbuf);
    }
    if (!rc)
        rc = aemp__hs_init(&c->hs, AEMP__HS_INITIATOR, c->tls ? 4 : 2, d->name, d->cookie,
                           d->creation, aemp__dflags_offered(), c->peer);
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
    if ((status < 0 || !res) && aemp__host_is_self(c->host)) {
        /* our own host name, not resolvable: this host, as erl takes it */
        uv_freeaddrinfo(res);
        aemp__strlcpy(c->ip, "127.0.0.1", sizeof c->ip);
    } else if (status < 0 || !res) {
        char why[300];
        snprintf(why, sizeof why, "cannot resolve host '%s': %s", c->host,
                 status < 0 ? uv_strerror(status) : "no address");
        uv_freeaddrinfo(res);
        aemp__conn_close(c, AEMP_ENOENT, why);
        conn_unref(c);
        return;
    } else {
        uv_ip4_name((const struct sockaddr_in *)res->ai_addr, c->ip, sizeof c->ip);
        uv_freeaddrinfo(res);
    }
    c->state = AEMP__C_LOOKUP;
    int rc =
        aemp__epmd_port_please(c->d->loop, c->ip, c->d->epmd_port, c->alive, on_port, c, &c->query);
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

aemp__conn *aemp__conn_connect(aemp__dist *d, const char *peer, int *err)
{
    size_t plen = strlen(peer);
    *err = AEMP_EINVAL;
    if (!aemp__node_name_valid(peer) || d->closing) return NULL;
    *err = AEMP_EBUSY;
    if (d->nslot[AEMP__SLOT_CONNECTING] >= d->max_connecting ||
        d->nslot[AEMP__SLOT_UP] >= d->max_connections)
        return NULL;
    const char *at = strchr(peer, '@');
    *err = AEMP_ENOMEM;
    aemp__conn *c = conn_new(d);
    if (!c) return NULL;
    slot_take(c, AEMP__SLOT_CONNECTING);
    c->initiator = true;
    c->state = AEMP__C_RESOLVE;
    memcpy(c->peer, peer, plen + 1);
    memcpy(c->alive, peer, (size_t)(at - peer));
    c->alive[at - peer] = 0;
    aemp__strlcpy(c->host, at + 1, sizeof c->host);
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    c->gai.data = c;
    int rc = uv_getaddrinfo(d->loop, &c->gai, on_resolved, c->host, NULL, &hints);
    if (rc) {
        c->silent = true; /* the caller hears of it from the NULL */
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
    if (c->ac_msg.cap > IDLE_BUF_KEEP) aemp_buf_free(&c->ac_msg);
    if (c->ac_pos.cap > IDLE_BUF_KEEP) aemp_buf_free(&c->ac_pos);
}

static void housekeeping(uv_timer_t *t)
{
    aemp__dist *d = t->data;
    uint64_t now = now_ms(d);
    refusal_summary(d, now);
    uint64_t tick = (uint64_t)d->net_ticktime * 1000;
    aemp__conn *c = d->conns, *next;
    for (; c; c = next) {
        next = c->next;
        if (c->state == AEMP__C_CLOSING) continue;
        if (c->state != AEMP__C_UP) {
            if (now - c->started_ms > d->hs_timeout_ms) {
                const char *who = c->peer[0] ? c->peer : c->ip;
                if (!c->initiator) d->refused.timeouts++;
                if (c->initiator || detail_ok(d))
                    AEMP_LOGW("connection with %s: set-up timed out after %u ms", who,
                              d->hs_timeout_ms);
                aemp__conn_close(c, AEMP_ETIMEDOUT, "connection set-up timed out");
            }
            continue;
        }
        release_idle_buffers(c, now);
        if (now - c->last_recv_ms > tick) {
            AEMP_LOGW("connection to %s: no traffic for %u s (net_ticktime): dropping", c->peer,
                      d->net_ticktime);
            aemp__conn_close(c, AEMP_ETIMEDOUT, "net_tick timeout");
            continue;
        }
        if (now - c->last_send_ms >= tick / 4 && !c->writing && c->wbuf.len == 0) {
            /* A tick is an empty packet. */
            if (aemp__buf_put_u32(&c->wbuf, 0) == 0) mark_dirty(c);
        }
    }
}

int aemp__dist_listen(aemp__dist *d, uint16_t port)
{
    struct sockaddr_in sin;
    int rc = uv_tcp_init(d->loop, &d->listener);
    if (rc) return rc;
    d->listener_init = true;
    d->listener.data = d;
    uv_ip4_addr("0.0.0.0", port, &sin);
    rc = uv_tcp_bind(&d->listener, (const struct sockaddr *)&sin, 0);
    if (!rc) rc = uv_listen((uv_stream_t *)&d->listener, 128, on_connection);
    if (rc) return rc;
    struct sockaddr_storage ss;
    int sl = sizeof ss;
    if (uv_tcp_getsockname(&d->listener, (struct sockaddr *)&ss, &sl) == 0)
        d->listen_port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return 0;
}

/* ------------------------------------------------------------------ */
/* the endpoint                                                       */
/* ------------------------------------------------------------------ */

int aemp__dist_init(aemp__dist *d, uv_loop_t *loop, const aemp__dist_config *cfg)
{
    memset(d, 0, sizeof *d);
    d->loop = loop;
    if (aemp__strlcpy(d->name, cfg->name, sizeof d->name) >= sizeof d->name ||
        aemp__strlcpy(d->cookie, cfg->cookie, sizeof d->cookie) >= sizeof d->cookie)
        return AEMP_EINVAL;
    d->name_h = aemp__intern(d->name, strlen(d->name));
    if (!d->name_h) return AEMP_ENOMEM;
    d->creation = cfg->creation;
    d->epmd_port = cfg->epmd_port;
    d->net_ticktime = cfg->net_ticktime;
    d->hs_timeout_ms = cfg->hs_timeout_ms;
    d->max_packet = cfg->max_packet;
    d->max_connections = cfg->max_connections;
    d->max_handshakes = cfg->max_handshakes;
    d->max_handshakes_per_address = cfg->max_handshakes_per_address;
    d->max_connecting = cfg->max_connecting;
    d->max_pending = cfg->max_pending;
    d->reply_room = cfg->max_pending / 4 > 65536 ? cfg->max_pending / 4 : 65536;
    aemp__map_init(&d->per_addr);
    d->refused.since_ms = uv_now(loop);
    d->read_batch_ms = cfg->read_batch_ms;
    d->max_term_depth = cfg->max_term_depth;
    d->tls_ctx = cfg->tls_ctx;
    d->ops = cfg->ops;
    d->ops_arg = cfg->ops_arg;
    uv_timer_init(loop, &d->timer);
    d->timer.data = d;
    uv_timer_init(loop, &d->batch_timer);
    d->batch_timer.data = d;
    uv_prepare_init(loop, &d->flusher);
    d->flusher.data = d;
    uint64_t period = (uint64_t)d->net_ticktime * 250;
    if (period > 1000) period = 1000;
    uv_timer_start(&d->timer, housekeeping, period, period);
    return 0;
}

static void on_handle_closed(uv_handle_t *h)
{
    aemp__dist *d = h->data;
    d->pending_closes--;
    dist_maybe_closed(d);
}

static void close_handle(aemp__dist *d, uv_handle_t *h)
{
    h->data = d;
    d->pending_closes++;
    uv_close(h, on_handle_closed);
}

void aemp__dist_close(aemp__dist *d, void (*closed_cb)(void *), void *arg)
{
    if (d->closing) return;
    d->closing = true;
    d->closed_cb = closed_cb;
    d->closed_arg = arg;
    d->pending_closes++; /* held until every close below has started */
    for (aemp__conn *c = d->conns, *next; c; c = next) {
        next = c->next;
        conn_shutdown(c);
    }
    aemp__dist_flush(d);
    close_handle(d, (uv_handle_t *)&d->timer);
    close_handle(d, (uv_handle_t *)&d->batch_timer);
    close_handle(d, (uv_handle_t *)&d->flusher);
    if (d->listener_init) close_handle(d, (uv_handle_t *)&d->listener);
    d->pending_closes--;
    dist_maybe_closed(d);
}

/* ------------------------------------------------------------------ */
/* sending                                                            */
/* ------------------------------------------------------------------ */

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

/* Entry of the peer's atom cache (segment 0) that holds this node's name. */
#define SELF_ATOM_SLOT 0

/* A term of more than SPARSE_MIN bytes that names this node less than once
 * in SPARSE_BYTES goes as it is: rewriting it is a copy of all of it, and
 * a few references save the peer less (a database share of megabytes
 * holds one pid; a pg group's sync, a pid every 15 bytes, is rewritten). */
#define SPARSE_MIN (64 * 1024)
#define SPARSE_BYTES 256

/* The term t (*len bytes) with this node's name as atom cache reference 0,
 * in out: true, with *len its new length; false when t does not name this
 * node (or is not one whole term: then it goes as it is). */
static bool self_refs(aemp__conn *c, const char *t, size_t *len, aemp_buf *out)
{
    const char *me = c->d->name;
    if (aemp__term_find_atom(t, *len, me, strlen(me), &c->ac_pos) || !c->ac_pos.len) return false;
    /* (only funs: nothing to replace) */
    size_t refs = 0;
    for (size_t k = 0; k + 4 <= c->ac_pos.len; k += 4)
        refs += !(aemp__get_u32(c->ac_pos.data + k) & AEMP__TERM_FUN_MARK);
    if (!refs || (*len > SPARSE_MIN && refs < *len / SPARSE_BYTES)) return false;
    if (aemp__term_atoms_to_ref(t, *len, &c->ac_pos, 0, out)) return false;
    *len = out->len;
    return true;
}

/* Packet head, control message, then the payload term's start: reserved in
 * one go, so that the common send is a few copies. On a connection with
 * distribution headers, the control message (ctl_refs 1: it names this
 * node by reference already; 0: it does not; -1: not known) and the
 * payload name this node by atom cache reference 0: an Erlang node then
 * finds the atom by its index, not by its text, in every pid of ours. */
static int put_packet(aemp__conn *c, const char *ctl, size_t clen, int ctl_refs,
                      const aemp_term *payload)
{
    static const char pass_through[] = {AEMP__EXT_PASS_THROUGH, (char)AEMP__EXT_VERSION};
    bool h = headed(c);
    bool refs = ctl_refs > 0;
    const char *pdata = payload ? payload->data : NULL;
    size_t plen = payload ? payload->len : 0;
    if (h && ctl_refs < 0 && self_refs(c, ctl, &clen, &c->ac_ctl)) {
        ctl = c->ac_ctl.data;
        refs = true;
    }
    if (h && payload && self_refs(c, pdata, &plen, &c->ac_msg)) {
        pdata = c->ac_msg.data;
        refs = true;
    }
    /* the header: no references, or this node's name (new the first time) */
    char head[8 + AEMP_MAXNODELEN];
    size_t hlen;
    if (!h) {
        memcpy(head, pass_through, sizeof pass_through);
        hlen = sizeof pass_through;
    } else {
        size_t nlen = strlen(c->d->name);
        bool def = refs && !c->self_sent, long_atoms = nlen > 255;
        head[0] = (char)AEMP__EXT_VERSION;
        head[1] = AEMP__EXT_DIST_HEADER;
        head[2] = refs ? 1 : 0;
        hlen = 3;
        if (refs) {
            /* flags: reference 0's half byte (new entry, segment 0), then
             * the half byte of LongAtoms */
            head[hlen++] = (char)((def ? 8 : 0) | (long_atoms ? 0x10 : 0));
            head[hlen++] = SELF_ATOM_SLOT;
            if (def) {
                if (long_atoms) {
                    aemp__put_u16(head + hlen, (uint16_t)nlen);
                    hlen += 2;
                } else {
                    head[hlen++] = (char)nlen;
                }
                memcpy(head + hlen, c->d->name, nlen);
                hlen += nlen;
            }
        }
    }
    size_t tlen = payload ? plen + (h ? 0 : 1) : 0;
    if (hlen + clen + tlen > UINT32_MAX) return AEMP_ETOOBIG;
    int rc = aemp__buf_reserve(&c->wbuf, 4 + hlen + clen + tlen);
    if (rc) return rc;
    char *d = c->wbuf.data + c->wbuf.len;
    aemp__put_u32(d, (uint32_t)(hlen + clen + tlen));
    memcpy(d + 4, head, hlen);
    memcpy(d + 4 + hlen, ctl, clen);
    d += 4 + hlen + clen;
    if (payload) {
        if (!h) *d++ = (char)AEMP__EXT_VERSION;
        memcpy(d, pdata, plen);
    }
    c->wbuf.len += 4 + hlen + clen + tlen;
    if (refs) c->self_sent = true;
    mark_dirty(c);
    return 0;
}

/* The control message of a send, cached per connection: a stream between
 * the same two processes encodes it once. */
static const aemp_buf *send_ctl(aemp__conn *c, const aemp_addr *from, const aemp_addr *to, int *rc)
{
    uint64_t fkey = from ? (uint64_t)from->w[1] << 32 | from->w[0] : UINT64_MAX;
    if (c->sc_valid && c->sc_from == fkey && memcmp(&c->sc_to, to, sizeof *to) == 0) {
        *rc = 0;
        return &c->sc_ctl;
    }
    aemp_buf *b = &c->sc_ctl;
    c->sc_valid = false;
    b->len = 0;
    aemp_addr none;
    if (!from) {
        /* REG_SEND needs a sender: pid 0 of this node stands for none */
        aemp__addr_pid(&none, c->d->name_h, c->d->creation, 0);
    }
    switch (to->kind) {
    case AEMP_ADDR_NAME:
        *rc = aemp__ctl_enc(b, AEMP__CTL_REG_SEND, "aea", from ? from : &none, to);
        break;
    case AEMP_ADDR_ALIAS:
    case AEMP_ADDR_REF: /* an Erlang alias is a reference */
        *rc = aemp__ctl_enc(b, AEMP__CTL_ALIAS_SEND, "aa", from ? from : &none, to);
        break;
    default:
        if (from && (c->flags & AEMP__DFLAG_SEND_SENDER))
            *rc = aemp__ctl_enc(b, AEMP__CTL_SEND_SENDER, "aa", from, to);
        else
            *rc = aemp__ctl_enc(b, AEMP__CTL_SEND, "ea", to);
    }
    if (*rc) return NULL;
    /* on a headed connection, with this node's name by reference, once */
    size_t len = b->len;
    c->sc_refs = headed(c) && self_refs(c, b->data, &len, &c->ac_scratch);
    if (c->sc_refs) {
        aemp_buf t = *b;
        *b = c->ac_scratch;
        c->ac_scratch = t;
    }
    c->sc_valid = true;
    c->sc_from = fkey;
    c->sc_to = *to;
    return b;
}

/*
 * Records queued before the connection is up, in order, since a send's
 * control message depends on the flags the handshake negotiates:
 * u32 record length, u8 type, then for a send: the sender's local id (0:
 * none; a sender is always a port of this node), the destination, message; for a control message:
 * u32 control length, control, payload (may be empty).
 */
enum { PEND_SEND = 1, PEND_CTL = 2 };
#define PEND_HEAD 5

static int pend_add(aemp__conn *c, int type, const void *a, size_t alen, const void *b, size_t blen,
                    const aemp_term *payload)
{
    size_t plen = payload ? payload->len : 0;
    size_t total = PEND_HEAD + alen + blen + plen;
    if (total > UINT32_MAX) return AEMP_ETOOBIG;
    int rc = aemp__buf_reserve(&c->pend, total);
    if (rc) return rc;
    aemp__buf_put_u32(&c->pend, (uint32_t)total);
    aemp__buf_put_u8(&c->pend, (uint8_t)type);
    aemp__buf_append(&c->pend, a, alen);
    aemp__buf_append(&c->pend, b, blen);
    if (plen) aemp__buf_append(&c->pend, payload->data, plen);
    c->npend++;
    return 0;
}

int aemp__conn_send(aemp__conn *c, const aemp_addr *from, const aemp_addr *to, const aemp_term *msg)
{
    int rc;
    if (c->state != AEMP__C_UP) {
        uint64_t fid = from ? aemp__addr_pid_id(from) : 0;
        return pend_add(c, PEND_SEND, &fid, sizeof fid, to, sizeof *to, msg);
    }
    const aemp_buf *ctl = send_ctl(c, from, to, &rc);
    if (!ctl) return rc;
    return put_packet(c, ctl->data, ctl->len, c->sc_refs, msg);
}

int aemp__conn_ctl(aemp__conn *c, const aemp_buf *ctl, const aemp_term *payload)
{
    if (c->state != AEMP__C_UP) {
        char len[4];
        aemp__put_u32(len, (uint32_t)ctl->len);
        return pend_add(c, PEND_CTL, len, 4, ctl->data, ctl->len, payload);
    }
    return put_packet(c, ctl->data, ctl->len, -1, payload);
}

static void flush_pending(aemp__conn *c)
{
    aemp_buf pend = c->pend;
    size_t n = c->npend;
    c->pend = (aemp_buf)AEMP_BUF_INIT;
    c->npend = 0;
    size_t pos = 0, lost = 0;
    while (pos < pend.len) {
        const char *r = pend.data + pos;
        uint32_t total = aemp__get_u32(r);
        const char *body = r + PEND_HEAD;
        int rc;
        if (r[4] == PEND_SEND) {
            uint64_t fid;
            aemp_addr from, to;
            memcpy(&fid, body, 8);
            memcpy(&to, body + 8, sizeof to);
            aemp__addr_pid(&from, c->d->name_h, c->d->creation, fid);
            aemp_term msg = {body + 8 + sizeof to, total - PEND_HEAD - 8 - sizeof to};
            rc = aemp__conn_send(c, fid ? &from : NULL, &to, &msg);
        } else {
            uint32_t clen = aemp__get_u32(body);
            aemp_buf ctl = {(char *)body + 4, clen, clen};
            aemp_term payload = {body + 4 + clen, total - PEND_HEAD - 4 - clen};
            rc = aemp__conn_ctl(c, &ctl, payload.len ? &payload : NULL);
        }
        lost += rc != 0;
        pos += total;
    }
    if (lost)
        AEMP_LOGE("out of memory: dropped %zu of %zu queued messages to %s", lost, n, c->peer);
    aemp_buf_free(&pend);
}
