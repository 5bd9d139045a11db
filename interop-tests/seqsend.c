/*
 * seqsend.c - the C side of the no-silent-holes interop test
 * (test_holes.sh), on the public API only.
 *
 *   seqsend NAME COOKIE PEER
 *
 * A port monitors the registered name `recv` on PEER and, while that
 * monitor is in place, sends it {seq, N} for N = 1, 2, 3, ... (a few
 * messages every millisecond, for ever). Each time the monitor fires it
 * prints
 *
 *   down S REASON
 *
 * with S the last number sent before (0: none yet), and monitors again at
 * once: the sender never sends unmonitored, so every message lost must
 * have been reported by a `down` line printed before any later message
 * could get through. A refused send (AEMP_EBUSY) is not counted and is
 * tried again on the next tick. Prints "ready NAME" once registered with
 * EPMD; on SIGTERM prints "sent S" and exits 0.
 */
#include "node_main.h"

#include <stdlib.h>
#include <string.h>

#define BATCH 5   /* messages per tick */
#define TICK_MS 1 /* between ticks */

static aemp_port self;
static aemp_addr target;
static aemp_addr mon_ref;
static int monitored;
static unsigned long long sent;
static uv_timer_t tick;

static void monitor_target(void)
{
    int rc = aemp_monitor(node, self, &target, &mon_ref);
    if (rc)
        say("monitor failed: %s", aemp_strerror(rc)); /* tried again next tick */
    else
        monitored = 1;
}

/* Every message the port gets is a 'DOWN' of its monitor. */
static void on_msg(aemp_node *n, aemp_port port, const aemp_term *msg, const aemp_addr *from,
                   void *arg)
{
    (void)n;
    (void)port;
    (void)from;
    (void)arg;
    aemp_cursor c = aemp_cursor_of(msg);
    uint32_t arity;
    char tag[8], type[16], why[128];
    aemp_addr ref;
    aemp_term what, reason;
    if (aemp_get_tuple(&c, &arity) || arity != 5 || aemp_get_atom(&c, tag, sizeof tag) ||
        strcmp(tag, "DOWN") != 0 || aemp_get_ref(&c, &ref) ||
        aemp_get_atom(&c, type, sizeof type) || aemp_get_term(&c, &what) ||
        aemp_get_term(&c, &reason)) {
        aemp_term_print(msg, why, sizeof why);
        say("FAIL unexpected message %s", why);
        exit(1);
    }
    if (!monitored || !aemp_addr_equal(&ref, &mon_ref)) {
        say("FAIL a 'DOWN' of no current monitor");
        exit(1);
    }
    aemp_term_print(&reason, why, sizeof why);
    say("down %llu %s", sent, why);
    monitored = 0;
    monitor_target();
}

static void on_tick(uv_timer_t *t)
{
    (void)t;
    if (!monitored) monitor_target();
    for (int i = 0; i < BATCH && monitored; i++) {
        int rc = aemp_sendf(node, self, &target, "{seq, ~u}", (uint64_t)(sent + 1));
        if (rc == AEMP_EBUSY) return;
        if (rc) {
            say("FAIL send: %s", aemp_strerror(rc));
            exit(1);
        }
        sent++;
    }
}

static void start_sending(aemp_node *n)
{
    (void)n;
    monitor_target();
    uv_timer_start(&tick, on_tick, TICK_MS, TICK_MS);
}

static void stop_sending(void)
{
    uv_timer_stop(&tick);
    uv_close((uv_handle_t *)&tick, NULL);
    say("sent %llu", sent);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: seqsend NAME COOKIE PEER\n");
        return 2;
    }
    uv_loop_t *loop = uv_default_loop();
    int rc = node_start(loop, argv[1], argv[2]);
    if (!rc) rc = aemp_addr_name(&target, argv[3], "recv");
    if (!rc) rc = aemp_port_open(node, on_msg, NULL, &self);
    if (rc) {
        say("FAIL start: %s", aemp_strerror(rc));
        return 1;
    }
    uv_timer_init(loop, &tick);
    node_ready_hook = start_sending;
    node_stop_hook = stop_sending;
    return node_run(loop);
}
