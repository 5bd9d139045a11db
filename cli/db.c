/*
 * db.c - `aemp db FAMILY [NODE]`: a client node that connects to NODE
 * (default: the nodeid of --profile P) with NODE as its seed, so that it
 * meshes with the nodes NODE is connected to, and prints the database
 * family FAMILY as it sees it (the shares of every node it is connected
 * to, and the members of the pg family: docs/database.md), then every
 * change as it happens: `+ SUBKEY VALUE` for a subkey added, `~ SUBKEY
 * VALUE` for a new value, `- SUBKEY` for a subkey gone; values in Erlang
 * syntax, a line each, flushed at once. Runs until interrupted, or until
 * the connection to NODE is lost (status 1, after what went with it is
 * printed as gone). Uses the public API only.
 */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    aemp__cli_usage(f);
}

struct db_state {
    const char *family;
    struct aemp__cli_client *c;
    aemp_guard mon;
};

static void print_entry(const aemp_db_view *v, char mark, const char *subkey)
{
    aemp_db_entry e;
    if (mark == '-' || aemp_db_view_get(v, subkey, &e)) {
        printf("- %s\n", subkey);
        return;
    }
    printf("%c %s ", mark, subkey);
    aemp__cli_print_term(stdout, &e.value);
}

static void db_changed(aemp_node *node, const aemp_db_view *v, const aemp_db_diff *d, void *arg)
{
    for (size_t i = 0; i < d->nadded; i++)
        print_entry(v, '+', d->added[i]);
    for (size_t i = 0; i < d->nchanged; i++)
        print_entry(v, '~', d->changed[i]);
    for (size_t i = 0; i < d->ndeleted; i++)
        print_entry(v, '-', d->deleted[i]);
    fflush(stdout);
}

static int db_end(aemp_node *node, aemp_port self, void *arg)
{
    struct db_state *st = arg;
    aemp__cli_client_finish(st->c, 1);
    return 0;
}

static void db_up(struct aemp__cli_client *c)
{
    struct db_state *st = c->arg;
    int rc = aemp_db_mon(c->node, st->family, db_changed, st, &st->mon);
    if (rc) {
        fprintf(stderr, "aemp db: cannot watch %s: %s\n", st->family, aemp_strerror(rc));
        aemp__cli_client_finish(c, 1);
    }
}

static void db_down(struct aemp__cli_client *c, const char *reason)
{
    struct db_state *st = c->arg;
    fprintf(stderr, "aemp db: %s: connection lost: %s\n", c->peer, reason);
    /* the node's share went from the view when its monitor fired, before
     * this: its db_mon call is due on this turn of the loop, and a timer
     * of 0 ms started now runs after it */
    if (aemp_after_call(c->node, 0, db_end, st, NULL)) aemp__cli_client_finish(c, 1);
}

int aemp__cli_db(int argc, char **argv)
{
    struct aemp__cli_opts o = {0};
    int rc = aemp__cli_parse_opts("db", 2, argc, argv, &o);
    if (rc) return rc;
    if (o.nargs < 1) return aemp__cli_usage_error(usage, "db", "missing FAMILY");
    /* without NODE: the node profile P runs (its nodeid) */
    aemp_profile *prof = NULL;
    const char *node = o.nargs >= 2 ? o.args[1] : NULL;
    if (!node && o.profile && aemp_profile_load(NULL, o.profile, &prof) == 0)
        node = aemp_profile_get(prof, "nodeid");
    if (!node) {
        aemp_profile_free(prof);
        return aemp__cli_usage_error(usage, "db", "missing NODE (or --profile P with a nodeid)");
    }
    if (!o.args[0][0] || strlen(o.args[0]) > AEMP_DB_MAXKEY)
        return aemp__cli_usage_error(usage, "db", "bad FAMILY '%s'", o.args[0]);
    struct db_state st = {.family = o.args[0]};
    struct aemp__cli_client c = {.cmd = "db",
                                 .fail_prefix = "aemp db: cannot reach",
                                 .on_up = db_up,
                                 .on_down = db_down,
                                 .arg = &st,
                                 .mesh = true};
    st.c = &c;
    rc = aemp__cli_node_name(node, c.peer, sizeof c.peer);
    if (rc) fprintf(stderr, "aemp db: %s: node name too long\n", node);
    aemp_profile_free(prof);
    return rc ? 1 : aemp__cli_client_run(&c, &o);
}
