/*
 * profile.c - `aemp profile`: manage the node profiles kept in the profile
 * file, and --profile for the commands that start a node. Uses the public
 * API only.
 */
#include "profile.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef PATH_MAX
#define PATH_MAX 4096
#endif

static void profile_usage(FILE *f)
{
    fprintf(f, "usage:\n"
               "  aemp profile NAME show                 print the settings (with inherited ones)\n"
               "  aemp profile NAME set KEY VALUE        set a key (creates the profile)\n"
               "  aemp profile NAME unset KEY            remove a key\n"
               "  aemp profile NAME delete               remove the profile\n"
               "  aemp profile NAME gensecret            store a new random secret\n"
               "  aemp profile NAME gencert DIR [HOST...]\n"
               "                                         make certificates in DIR, store their "
               "paths\n"
               "keys:");
    for (size_t i = 0; aemp_profile_key(i); i++)
        fprintf(f, " %s", aemp_profile_key(i));
    fprintf(f, "\nfile: $AEMP_PROFILES, else $XDG_CONFIG_HOME/aemp/profiles, else "
               "~/.config/aemp/profiles\n");
}

/* The file named in messages; the library explains the details in its log. */
static const char *file_name(char *buf, size_t size)
{
    return aemp_profile_path(buf, size) == 0 ? buf : "the profile file";
}

static void report(const char *name, const char *what, int rc)
{
    char path[PATH_MAX];
    if (rc == AEMP_ENOENT)
        fprintf(stderr, "aemp: %s: no profile %s in %s\n", what, name,
                file_name(path, sizeof path));
    else if (rc == AEMP_EAUTH)
        fprintf(stderr, "aemp: %s: %s must be private to its owner (chmod 600)\n", what,
                file_name(path, sizeof path));
    else if (rc == AEMP_EINVAL)
        fprintf(stderr, "aemp: %s: profile %s: refused (see the error above)\n", what, name);
    else
        fprintf(stderr, "aemp: %s: profile %s: %s\n", what, name, aemp_strerror(rc));
}

static int is_path_key(const char *key)
{
    return strcmp(key, "tls_cert") == 0 || strcmp(key, "tls_key") == 0 ||
           strcmp(key, "tls_ca") == 0;
}

/* A profile serves commands started from any directory, so a file name
 * given relative to this one is stored absolute. */
static int absolute(const char *in, char *out, size_t size)
{
    if (in[0] == '/') return snprintf(out, size, "%s", in) < (int)size ? 0 : -1;
    char *real = realpath(in, NULL);
    if (real) {
        int n = snprintf(out, size, "%s", real);
        free(real);
        return n < (int)size ? 0 : -1;
    }
    char cwd[PATH_MAX];
    size_t cl = sizeof cwd;
    if (uv_cwd(cwd, &cl) != 0) return -1;
    return snprintf(out, size, "%s/%s", cwd, in) < (int)size ? 0 : -1;
}

static int cmd_show(const char *name)
{
    aemp_profile *p;
    int rc = aemp_profile_load(NULL, name, &p);
    if (rc) {
        report(name, "show", rc);
        return 1;
    }
    for (size_t i = 0; aemp_profile_key(i); i++) {
        const char *key = aemp_profile_key(i);
        const char *v = aemp_profile_get(p, key);
        if (!v) continue;
        if (strcmp(key, "secret") == 0) v = "********";
        printf("%s = %s\n", key, v);
    }
    aemp_profile_free(p);
    return 0;
}

static int cmd_set(const char *name, const char *key, const char *value)
{
    char abs[PATH_MAX];
    if (value && is_path_key(key)) {
        if (absolute(value, abs, sizeof abs)) {
            fprintf(stderr, "aemp: set: file name too long: %s\n", value);
            return 1;
        }
        value = abs;
    }
    int rc = aemp_profile_set(NULL, name, key, value);
    if (rc == AEMP_ENOENT && !value) {
        fprintf(stderr, "aemp: unset: profile %s has no %s\n", name, key);
        return 1;
    }
    if (rc == AEMP_ENOENT && strcmp(key, "parent") == 0) {
        fprintf(stderr, "aemp: set: parent profile %s does not exist\n", value);
        return 1;
    }
    if (rc) {
        report(name, value ? "set" : "unset", rc);
        return 1;
    }
    return 0;
}

static int cmd_gensecret(const char *name)
{
    char secret[AEMP_PROFILE_SECRET_LEN + 1];
    int rc = aemp_profile_gensecret(secret, sizeof secret);
    if (!rc) rc = aemp_profile_set(NULL, name, "secret", secret);
    memset(secret, 0, sizeof secret);
    if (rc) {
        report(name, "gensecret", rc);
        return 1;
    }
    printf("aemp: new secret stored in profile %s\n", name);
    return 0;
}

static int cmd_gencert(const char *name, int argc, char **argv)
{
    if (argc < 1) return aemp__cli_usage_error(profile_usage, "profile", "gencert needs DIR");
    const char *dir = argv[0];
    const char *hosts[64];
    size_t nhosts = 0;
    for (int i = 1; i < argc; i++) {
        if (nhosts == sizeof hosts / sizeof *hosts)
            return aemp__cli_usage_error(profile_usage, "profile", "gencert: at most %zu hosts",
                                         nhosts);
        hosts[nhosts++] = argv[i];
    }
    int rc = aemp__cli_gencert(dir, name, hosts, &nhosts);
    if (rc) return 1;
    char absdir[PATH_MAX], cert[PATH_MAX], key[PATH_MAX], ca[PATH_MAX];
    if (absolute(dir, absdir, sizeof absdir) ||
        snprintf(cert, sizeof cert, "%s/%s.pem", absdir, name) >= (int)sizeof cert ||
        snprintf(key, sizeof key, "%s/%s.key", absdir, name) >= (int)sizeof key ||
        snprintf(ca, sizeof ca, "%s/ca.pem", absdir) >= (int)sizeof ca) {
        fprintf(stderr, "aemp: gencert: file name too long in %s\n", dir);
        return 1;
    }
    if ((rc = aemp_profile_set(NULL, name, "tls_cert", cert)) ||
        (rc = aemp_profile_set(NULL, name, "tls_key", key)) ||
        (rc = aemp_profile_set(NULL, name, "tls_ca", ca))) {
        report(name, "gencert", rc);
        return 1;
    }
    printf("stored in profile %s as tls_cert, tls_key, tls_ca\n", name);
    return 0;
}

int aemp__cli_gencert(const char *dir, const char *name, const char **hosts, size_t *nhosts)
{
    /* By default this host's names and the loopback address. */
    static char host[256], fqdn[256];
    if (*nhosts == 0) {
        size_t hl = sizeof host;
        if (uv_os_gethostname(host, &hl) == 0) {
            memcpy(fqdn, host, sizeof fqdn);
            char *dot = strchr(host, '.');
            if (dot) *dot = 0;
            hosts[(*nhosts)++] = host;
            if (strcmp(fqdn, host) != 0) hosts[(*nhosts)++] = fqdn;
        }
        hosts[(*nhosts)++] = "localhost";
        hosts[(*nhosts)++] = "127.0.0.1";
    }
    int rc = aemp_tls_gencert(dir, name, hosts, *nhosts);
    if (rc) {
        fprintf(stderr, "aemp: gencert failed: %s\n", aemp_strerror(rc));
        return rc;
    }
    printf("CA:          %s/ca.pem (key %s/ca.key)\n", dir, dir);
    printf("certificate: %s/%s.pem (key %s/%s.key) for", dir, name, dir, name);
    for (size_t i = 0; i < *nhosts; i++)
        printf(" %s", hosts[i]);
    printf("\n");
    return 0;
}

int aemp__cli_profile(int argc, char **argv)
{
    if (argc < 1) return aemp__cli_usage_error(profile_usage, "profile", "missing profile NAME");
    if (argc < 2) return aemp__cli_usage_error(profile_usage, "profile", "missing command");
    const char *name = argv[0], *cmd = argv[1];
    int nargs = argc - 2;
    char **args = argv + 2;
    if (strcmp(cmd, "gencert") == 0) return cmd_gencert(name, nargs, args);
    /* The other commands take a fixed number of arguments. */
    static const struct {
        const char *cmd;
        int nargs;
        const char *args;
    } fixed[] = {{"show", 0, "no arguments"},
                 {"set", 2, "KEY VALUE"},
                 {"unset", 1, "KEY"},
                 {"delete", 0, "no arguments"},
                 {"gensecret", 0, "no arguments"}};
    size_t k = 0;
    while (k < sizeof fixed / sizeof *fixed && strcmp(cmd, fixed[k].cmd) != 0)
        k++;
    if (k == sizeof fixed / sizeof *fixed)
        return aemp__cli_usage_error(profile_usage, "profile", "unknown command '%s'", cmd);
    if (nargs != fixed[k].nargs)
        return aemp__cli_usage_error(profile_usage, "profile", "%s takes %s", cmd, fixed[k].args);
    if (strcmp(cmd, "show") == 0) return cmd_show(name);
    if (strcmp(cmd, "set") == 0) return cmd_set(name, args[0], args[1]);
    if (strcmp(cmd, "unset") == 0) return cmd_set(name, args[0], NULL);
    if (strcmp(cmd, "gensecret") == 0) return cmd_gensecret(name);
    int rc = aemp_profile_delete(NULL, name); /* delete */
    if (rc) report(name, "delete", rc);
    return rc ? 1 : 0;
}

int aemp__cli_apply_profile(const char *name, aemp_node_config *cfg, aemp_profile **keep)
{
    aemp_profile *p;
    int rc = aemp_profile_load(NULL, name, &p);
    if (rc) {
        report(name, "--profile", rc);
        return 1;
    }
    aemp_profile_apply(p, cfg);
    *keep = p;
    return 0;
}
