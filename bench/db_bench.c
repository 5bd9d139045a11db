/*
 * db_bench - the C node of the database and pg benchmark (bench/db.sh
 * drives it; docs/benchmarks.md "Database and pg").
 *
 * Usage: db_bench --name alive@host [--cookie COOKIE] [--read-batch-ms MS] ROLE ARGS...
 *
 *   hold-pg N FAMILY        open N ports, each aemp_pg_join()s FAMILY
 *   hold-reg N FAMILY       open N ports, each aemp_db_reg()s FAMILY
 *   hold-set N FAMILY       aemp_db_set() N subkeys of FAMILY (value: an integer)
 *   join-pg TARGET N FAMILY connect to TARGET; time until aemp_pg_members()
 *                           of FAMILY counts N
 *   join-db TARGET N FAMILY db_mon FAMILY, connect to TARGET; time until the
 *                           view counts N
 *   lat-recv K FAMILY       db_set FAMILY/ready, then take K changes of
 *                           FAMILY/t (value: the sender's CLOCK_REALTIME in
 *                           ns), or those that came before a second passed
 *                           without one (two sets arriving in one turn of
 *                           the loop are one change), and print the
 *                           latencies' p50, p99, max and their count
 *   lat-send TARGET K FAMILY INTERVAL_MS
 *                           connect to TARGET, wait for FAMILY/ready (the
 *                           receiver's share has arrived), then db_set
 *                           FAMILY/t to the time K times, INTERVAL_MS apart
 *
 * Holders print "ready" once their entries or members are in place and run
 * until killed; lat-recv prints "ready" once it watches. Joiners print "RESULT ms cpu_ms" (from the
 * connect call to the complete view: CLOCK_MONOTONIC, and this process's CPU time) and exit. Only
 * the public API.
 */
#include "aemp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static aemp_node *node;
static uv_loop_t *loop;
static const char *role, *target, *family;
static long n_want, k_want, interval_ms;
static double t0, cpu0;
static int started;
static uv_check_t check;
static uv_timer_t timer;
static aemp_buf val = AEMP_BUF_INIT;

/* lat-recv */
static double *lat;
static long nlat;

static double mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* CPU time of this process (user + system), ms: the cost of a join,
 * which other load on the machine does not inflate as it does the wall
 * time */
static double cpu_ms(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}

static int64_t real_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "db_bench %s: %s: %s\n", node ? aemp_node_name(node) : "?", what,
            aemp_strerror(rc));
    fflush(stderr);
    exit(1);
}

static void done(double ms)
{
    printf("RESULT %.3f %.3f\n", ms, cpu_ms() - cpu0);
    fflush(stdout);
    exit(0);
}

static void noop_recv(aemp_node *nd, aemp_port self, const aemp_term *msg, const aemp_addr *from,
                      void *arg)
{
    (void)nd, (void)self, (void)msg, (void)from, (void)arg;
}

static void set_int(int64_t v)
{
    val.len = 0;
    aemp_term_format(&val, "~i", v);
}

static void connect_target(void)
{
    t0 = mono_ms();
    cpu0 = cpu_ms();
    started = 1;
    int rc = aemp_node_connect(node, target);
    if (rc != 0) die("aemp_node_connect", rc);
}

/* join-pg: counted after every turn of the loop (cheap while empty) */
static void pg_check(uv_check_t *h)
{
    (void)h;
    if (!started) return;
    int c = aemp_pg_members(node, NULL, family, NULL, 0);
    if (c < 0) die("aemp_pg_members", c);
    if (c >= n_want) done(mono_ms() - t0);
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void lat_report(void)
{
    if (nlat == 0) return;
    qsort(lat, (size_t)nlat, sizeof *lat, cmp_d);
    size_t p50 = (size_t)((nlat - 1) * 50 / 100), p99 = (size_t)((nlat - 1) * 99 / 100);
    printf("RESULT %.1f %.1f %.1f %ld\n", lat[p50], lat[p99], lat[nlat - 1], nlat);
    fflush(stdout);
    exit(0);
}

/* Two sets that arrive in one turn of the loop are one change: after a
 * second without any, the samples taken are all there will be. */
static void quiet_cb(uv_timer_t *h)
{
    (void)h;
    lat_report();
}

static void on_t(const aemp_db_view *view)
{
    aemp_db_entry e;
    if (aemp_db_view_get(view, "t", &e) != 0) return;
    aemp_cursor c = aemp_cursor_of(&e.value);
    int64_t sent;
    if (aemp_get_int64(&c, &sent) != 0) return;
    lat[nlat++] = (double)(real_ns() - sent) / 1e3;
    if (nlat == k_want) lat_report();
    uv_timer_start(&timer, quiet_cb, 1000, 0);
}

static long sent_n;
static void send_tick(uv_timer_t *h)
{
    (void)h;
    set_int(real_ns());
    aemp_term t = aemp_buf_term(&val);
    int rc = aemp_db_set(node, family, "t", &t, NULL);
    if (rc != 0) die("aemp_db_set", rc);
    if (++sent_n == k_want) {
        uv_timer_stop(&timer);
        printf("RESULT sent %ld\n", sent_n);
        fflush(stdout);
        /* stay a moment so the last update leaves; the script kills us */
    }
}

static void mon_cb(aemp_node *nd, const aemp_db_view *view, const aemp_db_diff *diff, void *arg)
{
    (void)nd, (void)arg;
    if (strcmp(role, "join-db") == 0) {
        if (!started) {
            connect_target(); /* the first call: the family before joining */
            return;
        }
        if ((long)aemp_db_view_count(view) >= n_want) done(mono_ms() - t0);
    } else if (strcmp(role, "lat-recv") == 0) {
        for (size_t i = 0; i < diff->nadded + diff->nchanged; i++) {
            const char *k = i < diff->nadded ? diff->added[i] : diff->changed[i - diff->nadded];
            if (strcmp(k, "t") == 0) on_t(view);
        }
    } else if (strcmp(role, "lat-send") == 0 && !sent_n && !uv_is_active((uv_handle_t *)&timer)) {
        for (size_t i = 0; i < diff->nadded; i++)
            if (strcmp(diff->added[i], "ready") == 0) {
                uv_timer_start(&timer, send_tick, 200, (uint64_t)interval_ms);
                break;
            }
    }
}

static void ready_cb(aemp_node *nd, int status, void *arg)
{
    (void)arg;
    if (status != 0) die("EPMD registration", status);
    int rc = 0;
    aemp_guard g;
    if (strcmp(role, "hold-pg") == 0 || strcmp(role, "hold-reg") == 0) {
        int reg = role[5] == 'r';
        for (long i = 0; i < n_want && rc == 0; i++) {
            aemp_port p;
            rc = aemp_port_open(nd, noop_recv, NULL, &p);
            if (rc == 0)
                rc = reg ? aemp_db_reg(nd, family, p, NULL, NULL) : aemp_pg_join(nd, family, p);
        }
    } else if (strcmp(role, "hold-set") == 0) {
        char sub[32];
        for (long i = 0; i < n_want && rc == 0; i++) {
            snprintf(sub, sizeof sub, "k%ld", i);
            set_int(i);
            aemp_term t = aemp_buf_term(&val);
            rc = aemp_db_set(nd, family, sub, &t, NULL);
        }
    } else if (strcmp(role, "join-pg") == 0) {
        uv_check_init(loop, &check);
        uv_check_start(&check, pg_check);
        connect_target();
        return;
    } else if (strcmp(role, "join-db") == 0 || strcmp(role, "lat-send") == 0) {
        rc = aemp_db_mon(nd, family, mon_cb, NULL, &g);
        if (rc == 0 && role[0] == 'l') connect_target();
    } else if (strcmp(role, "lat-recv") == 0) {
        set_int(0);
        aemp_term t = aemp_buf_term(&val);
        rc = aemp_db_set(nd, family, "ready", &t, NULL);
        if (rc == 0) rc = aemp_db_mon(nd, family, mon_cb, NULL, &g);
    }
    if (rc != 0) die(role, rc);
    if (strncmp(role, "hold", 4) == 0 || strcmp(role, "lat-recv") == 0) {
        printf("ready\n");
        fflush(stdout);
    }
}

static void fail_cb(aemp_node *nd, const char *peer, int err, const char *reason, size_t dropped,
                    void *arg)
{
    (void)nd, (void)dropped, (void)arg;
    fprintf(stderr, "db_bench: connection to %s failed: %s (%s)\n", peer, reason ? reason : "?",
            aemp_strerror(err));
    if (target && strcmp(peer, target) == 0) exit(1);
}

static long num(const char *s)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*end || v < 0) {
        fprintf(stderr, "db_bench: not a count: %s\n", s);
        exit(2);
    }
    return v;
}

static void usage(void)
{
    fprintf(stderr, "usage: db_bench --name alive@host [--cookie C] ROLE ARGS (see its source)\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *name = NULL, *cookie = NULL;
    int read_batch_ms = 0;
    int i = 1;
    for (; i + 1 < argc && argv[i][0] == '-'; i += 2) {
        if (strcmp(argv[i], "--name") == 0)
            name = argv[i + 1];
        else if (strcmp(argv[i], "--cookie") == 0)
            cookie = argv[i + 1];
        else if (strcmp(argv[i], "--read-batch-ms") == 0)
            read_batch_ms = atoi(argv[i + 1]);
        else
            usage();
    }
    if (!name || i >= argc) usage();
    role = argv[i++];
    int left = argc - i;
    if (strncmp(role, "hold-", 5) == 0 && left == 2) {
        n_want = num(argv[i]);
        family = argv[i + 1];
    } else if ((strcmp(role, "join-pg") == 0 || strcmp(role, "join-db") == 0) && left == 3) {
        target = argv[i];
        n_want = num(argv[i + 1]);
        family = argv[i + 2];
    } else if (strcmp(role, "lat-recv") == 0 && left == 2) {
        k_want = num(argv[i]);
        family = argv[i + 1];
    } else if (strcmp(role, "lat-send") == 0 && left == 4) {
        target = argv[i];
        k_want = num(argv[i + 1]);
        family = argv[i + 2];
        interval_ms = num(argv[i + 3]);
    } else {
        usage();
    }
    if (k_want > 0 && !(lat = calloc((size_t)k_want, sizeof *lat))) return 1;

    loop = uv_default_loop();
    uv_timer_init(loop, &timer);
    aemp_node_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.name = name;
    cfg.cookie = cookie;
    cfg.read_batch_ms = read_batch_ms;
    cfg.ready_cb = ready_cb;
    cfg.fail_cb = fail_cb;
    cfg.pg_max_members = 10000000;
    cfg.db_max_bytes = (size_t)4 << 30;
    int rc = aemp_node_create(loop, &cfg, &node);
    if (rc != 0) die("aemp_node_create", rc);
    uv_run(loop, UV_RUN_DEFAULT);
    return 0;
}
