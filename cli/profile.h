/*
 * profile.h - the `aemp profile` subcommand and the --profile option of the
 * aemp command-line tool (cli/profile.c).
 */
#ifndef AEMP_CLI_PROFILE_H
#define AEMP_CLI_PROFILE_H

#include "aemp.h"

#include <stdio.h>

/* Prints the usage of a command (or subcommand) to f. */
typedef void aemp__cli_usage_fn(FILE *f);

/* A usage error: prints "aemp CMD: WHAT" (CMD NULL: "aemp: WHAT"), WHAT
 * formatted as printf does, as one line to stderr, then the usage
 * print_usage prints; returns 2, the exit status of a usage error.
 * Defined in usage.c. */
int aemp__cli_usage_error(aemp__cli_usage_fn *print_usage, const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* `aemp profile NAME show|set KEY VALUE|unset KEY|delete|gensecret|
 * gencert DIR [HOST...]`; argv[0] is NAME. Returns the exit status: 0 done,
 * 1 failed (explained on stderr), 2 usage error. */
int aemp__cli_profile(int argc, char **argv);

/* For --profile NAME: load profile NAME from the default file and apply it
 * to cfg (its settings win over those already in cfg). On success *keep owns
 * the profile, which cfg's strings point into: free it with
 * aemp_profile_free() once aemp_node_create() has returned. On failure
 * prints why and returns nonzero. */
int aemp__cli_apply_profile(const char *name, aemp_node_config *cfg, aemp_profile **keep);

/* aemp_tls_gencert() for `aemp gencert` and `aemp profile NAME gencert`:
 * with *nhosts 0, hosts gets this host's names, localhost and 127.0.0.1
 * (room for 4 is needed). Prints the files made, or the error; returns 0 or
 * the error. */
int aemp__cli_gencert(const char *dir, const char *name, const char **hosts, size_t *nhosts);

#endif /* AEMP_CLI_PROFILE_H */
