/*
 * opts.c - what the commands of the aemp tool share: the usage text, the
 * options (parsed the same way for every command) and the node settings
 * they give.
 */
#include "cli.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void aemp__cli_usage(FILE *f)
{
    fprintf(f, "usage:\n"
               "  aemp run NAME [--cookie C] [--port P]   run a node with an `echo` port,\n"
               "                                          rpc functions aemp:echo, aemp:fail, "
               "aemp:send\n"
               "                                          and the module aemp_demo\n"
               "  aemp ping NODE [--cookie C]             check that NODE answers\n"
               "  aemp snd PORT TERM [--cookie C]         send TERM to PORT\n"
               "  aemp mon PORT [--cookie C]              wait until PORT dies, print why\n"
               "  aemp rpc NODE MOD FUN [ARGS] [--timeout S]\n"
               "                                          call MOD:FUN(ARGS...), print the result\n"
               "  aemp cal PORT TERM [--timeout S]        send TERM with a reply pid added,\n"
               "                                          print the reply\n"
               "  aemp db FAMILY [NODE] [--cookie C]      print the database family as seen\n"
               "                                          through NODE (default: the nodeid of\n"
               "                                          --profile P), then every change\n"
               "  aemp names [HOST]                       list EPMD registrations\n"
               "  aemp gencert DIR [--name N] [HOST...]   make a CA and a node certificate\n"
               "  aemp profile NAME show | set KEY VALUE | unset KEY | delete | gensecret\n"
               "  aemp profile NAME gencert DIR [HOST...] manage node profiles\n"
               "  aemp version | --version                print the version\n"
               "run, ping, snd, mon, rpc, cal and db take --tls-cert FILE --tls-key FILE\n"
               "--tls-ca FILE for TLS distribution (as erl -proto_dist inet_tls) and\n"
               "--profile P: the settings of profile P win over the options; run needs no\n"
               "NAME when P sets nodeid. run takes --ticktime S (as net_ticktime, default\n"
               "60), --read-batch MS|off (read batching, 0 the default of 1 ms) and\n"
               "--seeds NODE,NODE... (nodes to stay connected to, meshing with the nodes\n"
               "they know); rpc and cal take --timeout S (default none; cal then ends when\n"
               "PORT dies).\n"
               "NAME and NODE are alive@host, or alive for alive@<short host name>. PORT is\n"
               "NODE#NAME (a registered name), NODE#<ID.SERIAL.CREATION> (a pid), or the\n"
               "Erlang term {NAME, NODE}. TERM and ARGS are Erlang terms, ARGS a list\n"
               "(default []): '{hello, [1, <<\"x\">>]}'.\n"
               "The cookie defaults to ~/.erlang.cookie; AEMP_LOG=debug|info|warn|error\n"
               "sets the log level, ERL_EPMD_PORT the EPMD port.\n"
               "Exit status: 0 done, 1 failed (ping: pang; mon: the connection failed;\n"
               "rpc, cal: what went wrong on stderr, first its kind: error, throw, exit,\n"
               "badrpc, timeout, noconnection), 2 usage error (what is wrong, then this\n"
               "text, on stderr).\n");
}

static void usage(FILE *f)
{
    aemp__cli_usage(f);
}

/* What run and the client commands take alike: the cookie and the TLS files. */
void aemp__cli_config(const struct aemp__cli_opts *o, aemp_node_config *cfg)
{
    cfg->cookie = o->cookie;
    cfg->tls_cert = o->tls_cert;
    cfg->tls_key = o->tls_key;
    cfg->tls_ca = o->tls_ca;
}

/* The options of run and the client commands; each takes a value. `only`:
 * the commands that take it (NULL: all of them), and how to say so. */
static const struct {
    const char *name;
    const char *const *only;
    const char *only_text;
} options[] = {
#define RUN ((const char *const[]){"run", NULL}), "aemp run only"
#define CALLS ((const char *const[]){"rpc", "cal", NULL}), "aemp rpc and cal only"
    {"--cookie", NULL, NULL},  {"--profile", NULL, NULL}, {"--tls-cert", NULL, NULL},
    {"--tls-key", NULL, NULL}, {"--tls-ca", NULL, NULL},  {"--port", RUN},
    {"--ticktime", RUN},       {"--read-batch", RUN},     {"--timeout", CALLS},
    {"--seeds", RUN},
#undef RUN
#undef CALLS
};

static bool option_for(size_t k, const char *cmd)
{
    if (!options[k].only) return true;
    for (const char *const *c = options[k].only; *c; c++)
        if (strcmp(*c, cmd) == 0) return true;
    return false;
}

/* Options start with "--": anything else (-5 too) is a positional argument. */
int aemp__cli_parse_opts(const char *cmd, int maxargs, int argc, char **argv,
                         struct aemp__cli_opts *o)
{
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) != 0) {
            if (o->nargs == maxargs || o->nargs == (int)(sizeof o->args / sizeof *o->args))
                return aemp__cli_usage_error(usage, cmd, "unexpected argument '%s'", arg);
            o->args[o->nargs++] = arg;
            continue;
        }
        size_t k = 0;
        while (k < sizeof options / sizeof *options && strcmp(arg, options[k].name) != 0)
            k++;
        if (k == sizeof options / sizeof *options)
            return aemp__cli_usage_error(usage, cmd, "unknown option '%s'", arg);
        if (!option_for(k, cmd))
            return aemp__cli_usage_error(usage, cmd, "option %s is for %s", arg,
                                         options[k].only_text);
        if (i + 1 >= argc || !argv[i + 1][0])
            return aemp__cli_usage_error(usage, cmd, "option %s needs a value", arg);
        const char *v = argv[++i];
        char *end;
        if (strcmp(arg, "--cookie") == 0) {
            o->cookie = v;
        } else if (strcmp(arg, "--profile") == 0) {
            o->profile = v;
        } else if (strcmp(arg, "--tls-cert") == 0) {
            o->tls_cert = v;
        } else if (strcmp(arg, "--tls-key") == 0) {
            o->tls_key = v;
        } else if (strcmp(arg, "--tls-ca") == 0) {
            o->tls_ca = v;
        } else if (strcmp(arg, "--seeds") == 0) {
            o->seeds = v; /* checked by aemp_node_create */
        } else if (strcmp(arg, "--timeout") == 0) {
            double t = strtod(v, &end);
            if (*end || !isdigit((unsigned char)v[0]) || !(t > 0) || t > 86400)
                return aemp__cli_usage_error(usage, cmd, "bad timeout '%s' (seconds, up to 86400)",
                                             v);
            o->timeout_ms = (unsigned)(t * 1000 + 0.5);
            if (!o->timeout_ms) o->timeout_ms = 1;
        } else if (strcmp(arg, "--port") == 0) {
            unsigned long p = strtoul(v, &end, 10);
            if (*end || !isdigit((unsigned char)v[0]) || p > 65535)
                return aemp__cli_usage_error(usage, cmd, "bad port '%s' (0..65535)", v);
            o->port = (unsigned)p;
        } else if (strcmp(arg, "--ticktime") == 0) {
            unsigned long t = strtoul(v, &end, 10);
            if (*end || !isdigit((unsigned char)v[0]) || t == 0 || t > 86400)
                return aemp__cli_usage_error(usage, cmd, "bad ticktime '%s' (seconds, 1..86400)",
                                             v);
            o->ticktime = (unsigned)t;
        } else { /* --read-batch: as read_batch_ms, 0 the default, off */
            unsigned long ms = strcmp(v, "off") == 0 ? 0 : strtoul(v, &end, 10);
            if (strcmp(v, "off") != 0 && (*end || !isdigit((unsigned char)v[0]) || ms > 1000))
                return aemp__cli_usage_error(
                    usage, cmd, "bad read batch '%s' (off, or milliseconds 0..1000, 0: 1 ms)", v);
            o->read_batch_ms = strcmp(v, "off") == 0 ? -1 : (int)ms;
        }
    }
    return 0;
}
