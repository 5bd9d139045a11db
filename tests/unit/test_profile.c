/*
 * test_profile.c - profiles: parsing, parent chains, validation, file
 * permissions, updates, apply() and secrets.
 */
#include <criterion/criterion.h>

#include "aemp.h"

#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[64], file[128];

/* Everything logged during a test, to check that errors name file:line. */
static char logged[8192];

static void on_log(int level, const char *msg, void *arg)
{
    size_t n = strlen(logged);
    snprintf(logged + n, sizeof logged - n, "%s\n", msg);
}

static void prof_setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/aemp-prof-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(file, sizeof file, "%s/profiles", dir);
    logged[0] = 0;
    aemp_log_set_level(AEMP_LOG_INFO);
    aemp_log_set_callback(on_log, NULL);
    unsetenv("AEMP_PROFILES");
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void prof_teardown(void)
{
    aemp_log_set_callback(NULL, NULL);
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(profile, .init = prof_setup, .fini = prof_teardown, .timeout = 30);

static void write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    cr_assert_eq(fchmod(fd, mode), 0);
    close(fd);
}

static char *read_text(const char *path)
{
    static char buf[4096];
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "cannot open %s", path);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

static mode_t mode_of(const char *path)
{
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    return st.st_mode & 07777;
}

/* No temporary file may be left beside the profile file. */
static void assert_only_profiles(void)
{
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            cr_assert_str_eq(e->d_name, "profiles", "stray file %s", e->d_name);
    closedir(d);
}

static int load_rc(const char *text)
{
    write_file(file, text, 0600);
    aemp_profile *p = NULL;
    int rc = aemp_profile_load(file, "a", &p);
    aemp_profile_free(p);
    return rc;
}

/* The numbers profile `name` of text gives a config (its strings are
 * not to be read: the profile is freed). */
static aemp_node_config applied(const char *text, const char *name)
{
    write_file(file, text, 0600);
    aemp_profile *p = NULL;
    aemp_node_config cfg = {0};
    cr_assert_eq(aemp_profile_load(file, name, &p), 0, "%s", logged);
    cr_assert_eq(aemp_profile_apply(p, &cfg), 0);
    aemp_profile_free(p);
    return cfg;
}

static void assert_logged(const char *what)
{
    cr_assert_not_null(strstr(logged, what), "log lacks '%s':\n%s", what, logged);
}

/* ------------------------------------------------------------------ */

Test(profile, parse_keys_comments_and_blanks)
{
    write_file(file,
               "# node profiles\n"
               "\n"
               "[a]\n"
               "  nodeid   =  a@localhost  \n"
               "secret=s3cr#et\r\n"
               "\t# indented comment\n"
               "listen_port = 0\n"
               "epmd_port = 4370\n"
               "net_ticktime = 30\n"
               "handshake_timeout_ms = 5000\n"
               "max_packet = 4294967295\n"
               "max_connections = 10\n"
               "max_pending = 1048576\n"
               "read_batch_ms = 5\n"
               "tls_cert = /etc/aemp/my cert.pem\n"
               "tls_key = /etc/aemp/a.key\n"
               "tls_ca = /etc/aemp/ca.pem\n"
               "tls_verify = no\n"
               "[ b ]\n"
               "nodeid = b@localhost",
               0600);
    aemp_profile *p = NULL;
    cr_assert_eq(aemp_profile_load(file, "a", &p), 0, "%s", logged);
    cr_assert_str_eq(aemp_profile_get(p, "nodeid"), "a@localhost");
    cr_assert_str_eq(aemp_profile_get(p, "secret"), "s3cr#et");
    cr_assert_str_eq(aemp_profile_get(p, "listen_port"), "0");
    cr_assert_str_eq(aemp_profile_get(p, "max_packet"), "4294967295");
    cr_assert_str_eq(aemp_profile_get(p, "read_batch_ms"), "5");
    cr_assert_str_eq(aemp_profile_get(p, "tls_cert"), "/etc/aemp/my cert.pem");
    cr_assert_str_eq(aemp_profile_get(p, "tls_verify"), "no");
    cr_assert_null(aemp_profile_get(p, "parent"));
    cr_assert_null(aemp_profile_get(p, "colour"));
    aemp_profile_free(p);

    cr_assert_eq(aemp_profile_load(file, "b", &p), 0, "%s", logged);
    cr_assert_str_eq(aemp_profile_get(p, "nodeid"), "b@localhost");
    cr_assert_null(aemp_profile_get(p, "secret"));
    aemp_profile_free(p);
}

Test(profile, key_list)
{
    size_t n = 0;
    while (aemp_profile_key(n))
        n++;
    cr_assert_eq(n, 27);
    cr_assert_str_eq(aemp_profile_key(0), "parent");
    cr_assert_str_eq(aemp_profile_key(10), "read_batch_ms");
    cr_assert_str_eq(aemp_profile_key(14), "tls_verify");
    cr_assert_str_eq(aemp_profile_key(15), "max_term_depth");
    cr_assert_str_eq(aemp_profile_key(16), "seeds");
    cr_assert_str_eq(aemp_profile_key(19), "mesh_interval_ms");
    cr_assert_str_eq(aemp_profile_key(20), "pg_scopes");
    cr_assert_str_eq(aemp_profile_key(21), "pg_max_members");
    cr_assert_str_eq(aemp_profile_key(22), "db_max_bytes");
    cr_assert_str_eq(aemp_profile_key(23), "pg_max_group_term");
    cr_assert_str_eq(aemp_profile_key(24), "pg_max_group_names");
    cr_assert_str_eq(aemp_profile_key(25), "pg_rediscover_ms");
    cr_assert_str_eq(aemp_profile_key(26), "max_watches_per_peer");
}

Test(profile, missing_file_or_profile)
{
    aemp_profile *p = (aemp_profile *)&p;
    cr_assert_eq(aemp_profile_load(file, "a", &p), AEMP_ENOENT);
    cr_assert_eq(p, (aemp_profile *)&p, "out-parameter assigned on failure");
    write_file(file, "[b]\n", 0600);
    cr_assert_eq(aemp_profile_load(file, "a", &p), AEMP_ENOENT);
    cr_assert_eq(aemp_profile_load(file, "bad name", &p), AEMP_EINVAL);
    cr_assert_eq(aemp_profile_load(file, NULL, &p), AEMP_EINVAL);
}

Test(profile, parent_chain_overrides)
{
    write_file(file,
               "[base]\n"
               "secret = basesecret\n"
               "net_ticktime = 10\n"
               "epmd_port = 4370\n"
               "[mid]\n"
               "parent = base\n"
               "net_ticktime = 20\n"
               "nodeid = mid@h\n"
               "[leaf]\n"
               "parent = mid\n"
               "nodeid = leaf@h\n",
               0600);
    aemp_profile *p = NULL;
    cr_assert_eq(aemp_profile_load(file, "leaf", &p), 0, "%s", logged);
    cr_assert_str_eq(aemp_profile_get(p, "nodeid"), "leaf@h");
    cr_assert_str_eq(aemp_profile_get(p, "net_ticktime"), "20");
    cr_assert_str_eq(aemp_profile_get(p, "secret"), "basesecret");
    cr_assert_str_eq(aemp_profile_get(p, "epmd_port"), "4370");
    cr_assert_str_eq(aemp_profile_get(p, "parent"), "mid");
    aemp_profile_free(p);

    cr_assert_eq(aemp_profile_load(file, "base", &p), 0);
    cr_assert_null(aemp_profile_get(p, "nodeid"));
    cr_assert_str_eq(aemp_profile_get(p, "net_ticktime"), "10");
    aemp_profile_free(p);
}

Test(profile, parent_cycle_refused)
{
    cr_assert_eq(load_rc("[a]\nparent = b\n[b]\nparent = c\n[c]\nparent = a\n"), AEMP_EINVAL);
    assert_logged("parent cycle: a -> b -> c -> a");
    char where[160];
    snprintf(where, sizeof where, "%s:6:", file);
    assert_logged(where);
}

Test(profile, self_parent_refused)
{
    cr_assert_eq(load_rc("[a]\nparent = a\n"), AEMP_EINVAL);
    assert_logged("parent cycle: a -> a");
}

Test(profile, parent_chain_depth_bounded)
{
    char text[2048];
    size_t n = (size_t)snprintf(text, sizeof text, "[a]\nparent = p1\n");
    for (int i = 1; i < 20; i++)
        n += (size_t)snprintf(text + n, sizeof text - n, "[p%d]\nparent = p%d\n", i, i + 1);
    n += (size_t)snprintf(text + n, sizeof text - n, "[p20]\n");
    cr_assert_eq(load_rc(text), AEMP_EINVAL);
    assert_logged("deeper than");
}

Test(profile, missing_parent_refused)
{
    cr_assert_eq(load_rc("[a]\nparent = nowhere\n"), AEMP_EINVAL);
    assert_logged("parent profile [nowhere] does not exist");
}

Test(profile, unknown_key_names_file_and_line)
{
    cr_assert_eq(load_rc("[a]\nnodeid = a@h\ncolour = blue\n"), AEMP_EINVAL);
    char where[200];
    snprintf(where, sizeof where, "%s:3: unknown key 'colour'", file);
    assert_logged(where);
}

Test(profile, unknown_key_in_another_profile_refused)
{
    /* the whole file must be valid, not only the profile asked for */
    cr_assert_eq(load_rc("[a]\n[b]\ncolour = blue\n"), AEMP_EINVAL);
}

Test(profile, bad_numbers)
{
    const char *bad[] = {
        "net_ticktime = 0",        "net_ticktime = 86401",
        "listen_port = 65536",     "epmd_port = -1",
        "max_packet = 4294967296", "max_connections = 12abc",
        "handshake_timeout_ms = ", "max_pending = 0x10",
        "net_ticktime = +5",       "max_pending = 99999999999999999999999",
        "read_batch_ms = 1001",    "read_batch_ms = -1",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char text[256];
        snprintf(text, sizeof text, "[a]\n%s\n", bad[i]);
        logged[0] = 0;
        cr_assert_eq(load_rc(text), AEMP_EINVAL, "accepted: %s", bad[i]);
        char where[200];
        snprintf(where, sizeof where, "%s:2: ", file);
        assert_logged(where);
        assert_logged(strncmp(bad[i], "read_batch_ms", 13) == 0
                          ? "must be off or a number of milliseconds from 0 to 1000"
                          : "must be a number from");
    }
    cr_assert_eq(load_rc("[a]\nlisten_port = 65535\nepmd_port = 1\n"), 0, "%s", logged);
}

Test(profile, bad_values)
{
    const char *bad[] = {
        "tls_verify = maybe", "tls_cert = relative/a.pem", "nodeid = a b@h", "parent = bad name",
        "tls_key = ",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char text[256];
        snprintf(text, sizeof text, "[a]\n%s\n", bad[i]);
        cr_assert_eq(load_rc(text), AEMP_EINVAL, "accepted: %s", bad[i]);
    }
}

Test(profile, bad_secret_not_logged)
{
    cr_assert_eq(load_rc("[a]\nsecret = top secret\n"), AEMP_EINVAL);
    assert_logged("secret must be");
    cr_assert_null(strstr(logged, "top secret"), "secret echoed: %s", logged);
    logged[0] = 0;
    cr_assert_eq(aemp_profile_set(file, "a", "secret", "top secret"), AEMP_EINVAL);
    cr_assert_null(strstr(logged, "top secret"), "secret echoed: %s", logged);
}

Test(profile, syntax_errors)
{
    const struct {
        const char *text, *msg;
    } bad[] = {
        {"nodeid = a@h\n[a]\n", ":1: key 'nodeid' comes before any [profile] header"},
        {"[a\n", ":1: a profile header must end with ']'"},
        {"[a]\njust words\n", ":2: expected '[profile]', 'key = value' or a '#' comment"},
        {"[a]\n[b]\n[a]\n", ":3: profile [a] is already defined at line 1"},
        {"[a]\nnodeid = x@h\nnodeid = y@h\n", ":3: key 'nodeid' is repeated in [a]"},
        {"[]\n", ":1: bad profile name ''"},
        {"[a/b]\n", ":1: bad profile name 'a/b'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        logged[0] = 0;
        cr_assert_eq(load_rc(bad[i].text), AEMP_EINVAL, "accepted: %s", bad[i].text);
        assert_logged(bad[i].msg);
    }
}

Test(profile, nul_byte_refused)
{
    int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert_eq(write(fd, "[a]\nnodeid = a\0b\n", 17), 17);
    close(fd);
    aemp_profile *p;
    cr_assert_eq(aemp_profile_load(file, "a", &p), AEMP_EINVAL);
    assert_logged(":2: NUL byte");
}

Test(profile, permissions_refused)
{
    const mode_t modes[] = {0644, 0640, 0604, 0620, 0602, 0700 | 0010};
    aemp_profile *p;
    for (size_t i = 0; i < sizeof modes / sizeof *modes; i++) {
        write_file(file, "[a]\nsecret = s\n", modes[i]);
        logged[0] = 0;
        cr_assert_eq(aemp_profile_load(file, "a", &p), AEMP_EAUTH, "mode %o accepted", modes[i]);
        assert_logged("must be a regular file accessible by its owner only");
        /* and an update must not touch it either */
        cr_assert_eq(aemp_profile_set(file, "a", "nodeid", "x@h"), AEMP_EAUTH);
        cr_assert_eq(mode_of(file), modes[i]);
        cr_assert_str_eq(read_text(file), "[a]\nsecret = s\n");
    }
    write_file(file, "[a]\nsecret = s\n", 0400);
    cr_assert_eq(aemp_profile_load(file, "a", &p), 0);
    aemp_profile_free(p);
}

Test(profile, directory_and_fifo_refused)
{
    aemp_profile *p;
    cr_assert_eq(mkdir(file, 0700), 0);
    cr_assert_eq(aemp_profile_load(file, "a", &p), AEMP_EAUTH);
    cr_assert_eq(rmdir(file), 0);
    cr_assert_eq(mkfifo(file, 0600), 0);
    cr_assert_eq(aemp_profile_load(file, "a", &p), AEMP_EAUTH);
}

Test(profile, set_creates_private_file_and_dirs)
{
    char nested[200];
    snprintf(nested, sizeof nested, "%s/x/y/profiles", dir);
    cr_assert_eq(aemp_profile_set(nested, "a", "nodeid", "a@h"), 0, "%s", logged);
    cr_assert_eq(mode_of(nested), 0600);
    char sub[200];
    snprintf(sub, sizeof sub, "%s/x", dir);
    cr_assert_eq(mode_of(sub), 0700);
    snprintf(sub, sizeof sub, "%s/x/y", dir);
    cr_assert_eq(mode_of(sub), 0700);
    cr_assert_str_eq(read_text(nested), "[a]\nnodeid = a@h\n");
}

Test(profile, set_unset_round_trip)
{
    cr_assert_eq(aemp_profile_set(file, "a", "nodeid", "a@h"), 0, "%s", logged);
    cr_assert_eq(aemp_profile_set(file, "a", "net_ticktime", "30"), 0);
    cr_assert_eq(aemp_profile_set(file, "b", "parent", "a"), 0, "%s", logged);
    cr_assert_eq(aemp_profile_set(file, "b", "net_ticktime", "40"), 0);
    cr_assert_eq(aemp_profile_set(file, "a", "net_ticktime", "35"), 0);
    cr_assert_eq(aemp_profile_set(file, "a", "tls_verify", "no"), 0);
    cr_assert_eq(mode_of(file), 0600);
    assert_only_profiles();
    cr_assert_str_eq(read_text(file), "[a]\n"
                                      "nodeid = a@h\n"
                                      "net_ticktime = 35\n"
                                      "tls_verify = no\n"
                                      "\n"
                                      "[b]\n"
                                      "parent = a\n"
                                      "net_ticktime = 40\n");
    aemp_profile *p = NULL;
    cr_assert_eq(aemp_profile_load(file, "b", &p), 0);
    cr_assert_str_eq(aemp_profile_get(p, "net_ticktime"), "40");
    cr_assert_str_eq(aemp_profile_get(p, "nodeid"), "a@h");
    aemp_profile_free(p);

    cr_assert_eq(aemp_profile_set(file, "b", "net_ticktime", NULL), 0);
    cr_assert_eq(aemp_profile_set(file, "b", "net_ticktime", NULL), AEMP_ENOENT);
    cr_assert_eq(aemp_profile_set(file, "c", "net_ticktime", NULL), AEMP_ENOENT);
    cr_assert_eq(aemp_profile_load(file, "b", &p), 0);
    cr_assert_str_eq(aemp_profile_get(p, "net_ticktime"), "35");
    aemp_profile_free(p);
    cr_assert_eq(mode_of(file), 0600);
    assert_only_profiles();
}

Test(profile, set_keeps_comments_and_layout)
{
    write_file(file,
               "# mine\n"
               "[a]\n"
               "nodeid = a@h   \n"
               "# about b\n"
               "\n"
               "[b]\n"
               "secret = x\n",
               0600);
    cr_assert_eq(aemp_profile_set(file, "a", "epmd_port", "4370"), 0, "%s", logged);
    cr_assert_eq(aemp_profile_set(file, "b", "secret", "y"), 0);
    cr_assert_str_eq(read_text(file), "# mine\n"
                                      "[a]\n"
                                      "nodeid = a@h   \n"
                                      "epmd_port = 4370\n"
                                      "# about b\n"
                                      "\n"
                                      "[b]\n"
                                      "secret = y\n");
}

Test(profile, set_validates)
{
    cr_assert_eq(aemp_profile_set(file, "a", "nodeid", "a@h"), 0);
    const char *before = "[a]\nnodeid = a@h\n";
    cr_assert_eq(aemp_profile_set(file, "a", "colour", "blue"), AEMP_EINVAL);
    assert_logged("unknown profile key 'colour'");
    cr_assert_eq(aemp_profile_set(file, "a", "net_ticktime", "0"), AEMP_EINVAL);
    cr_assert_eq(aemp_profile_set(file, "a", "listen_port", "99999"), AEMP_EINVAL);
    cr_assert_eq(aemp_profile_set(file, "a", "nodeid", " a@h"), AEMP_EINVAL);
    cr_assert_eq(aemp_profile_set(file, "a", "tls_ca", "ca.pem"), AEMP_EINVAL);
    cr_assert_eq(aemp_profile_set(file, "a", "tls_ca", "/x\n[evil]"), AEMP_EINVAL);
    cr_assert_eq(aemp_profile_set(file, "bad]name", "nodeid", "a@h"), AEMP_EINVAL);
    cr_assert_eq(aemp_profile_set(file, "a", NULL, "x"), AEMP_EINVAL);
    cr_assert_str_eq(read_text(file), before);
}

Test(profile, set_parent_checked)
{
    cr_assert_eq(aemp_profile_set(file, "a", "nodeid", "a@h"), 0);
    cr_assert_eq(aemp_profile_set(file, "b", "parent", "a"), 0);
    const char *before = read_text(file);
    char copy[512];
    snprintf(copy, sizeof copy, "%s", before);
    cr_assert_eq(aemp_profile_set(file, "a", "parent", "nowhere"), AEMP_ENOENT);
    cr_assert_eq(aemp_profile_set(file, "a", "parent", "b"), AEMP_EINVAL);
    assert_logged("parent cycle");
    cr_assert_eq(aemp_profile_set(file, "a", "parent", "a"), AEMP_EINVAL);
    cr_assert_str_eq(read_text(file), copy);
}

Test(profile, delete_round_trip)
{
    write_file(file,
               "# about a\n"
               "[a]\n"
               "nodeid = a@h\n"
               "\n"
               "# about b\n"
               "[b]\n"
               "nodeid = b@h\n"
               "[c]\n"
               "parent = b\n",
               0600);
    cr_assert_eq(aemp_profile_delete(file, "b"), AEMP_EINVAL, "deleted a parent");
    assert_logged("names it as parent");
    cr_assert_eq(aemp_profile_delete(file, "c"), 0, "%s", logged);
    cr_assert_eq(aemp_profile_delete(file, "c"), AEMP_ENOENT);
    cr_assert_eq(aemp_profile_delete(file, "a"), 0);
    cr_assert_eq(mode_of(file), 0600);
    assert_only_profiles();
    cr_assert_str_eq(read_text(file), "\n# about b\n[b]\nnodeid = b@h\n");
    aemp_profile *p;
    cr_assert_eq(aemp_profile_load(file, "a", &p), AEMP_ENOENT);
    cr_assert_eq(aemp_profile_load(file, "b", &p), 0);
    aemp_profile_free(p);
    cr_assert_eq(aemp_profile_delete(file, "b"), 0);
    cr_assert_eq(aemp_profile_delete(file, "b"), AEMP_ENOENT);
}

Test(profile, delete_missing_file)
{
    cr_assert_eq(aemp_profile_delete(file, "a"), AEMP_ENOENT);
    cr_assert_eq(access(file, F_OK), -1, "delete created the file");
}

Test(profile, apply_overrides_and_keeps)
{
    write_file(file,
               "[a]\n"
               "nodeid = prof@h\n"
               "secret = profsecret\n"
               "net_ticktime = 7\n"
               "max_packet = 1000\n"
               "tls_cert = /c.pem\n"
               "tls_key = /k.pem\n"
               "tls_ca = /ca.pem\n"
               "tls_verify = no\n",
               0600);
    aemp_profile *p = NULL;
    cr_assert_eq(aemp_profile_load(file, "a", &p), 0, "%s", logged);
    int arg;
    aemp_node_config cfg = {0};
    cfg.name = "cfg@h";
    cfg.cookie = "cfgcookie";
    cfg.listen_port = 1234;
    cfg.epmd_port = 4444;
    cfg.net_ticktime = 60;
    cfg.max_pending = 99;
    cfg.client_only = 1;
    cfg.ready_arg = &arg;
    cr_assert_eq(aemp_profile_apply(p, &cfg), 0);
    cr_assert_str_eq(cfg.name, "prof@h");
    cr_assert_str_eq(cfg.cookie, "profsecret");
    cr_assert_eq(cfg.net_ticktime, 7);
    cr_assert_eq(cfg.max_packet, 1000);
    cr_assert_str_eq(cfg.tls_cert, "/c.pem");
    cr_assert_str_eq(cfg.tls_key, "/k.pem");
    cr_assert_str_eq(cfg.tls_ca, "/ca.pem");
    cr_assert_eq(cfg.tls_no_verify, 1);
    /* not in the profile: unchanged */
    cr_assert_eq(cfg.listen_port, 1234);
    cr_assert_eq(cfg.epmd_port, 4444);
    cr_assert_eq(cfg.max_pending, 99);
    cr_assert_eq(cfg.handshake_timeout_ms, 0);
    cr_assert_eq(cfg.max_connections, 0);
    cr_assert_eq(cfg.client_only, 1);
    cr_assert_eq(cfg.ready_arg, &arg);
    aemp_profile_free(p);
    cr_assert_eq(aemp_profile_apply(NULL, &cfg), AEMP_EINVAL);
}

Test(profile, apply_tls_verify_yes_and_numbers)
{
    write_file(file,
               "[a]\ntls_verify = yes\nlisten_port = 0\nepmd_port = 65535\n"
               "handshake_timeout_ms = 3600000\nmax_connections = 1048576\n"
               "max_pending = 18446744073\nread_batch_ms = 0\n",
               0600);
    aemp_profile *p = NULL;
    cr_assert_eq(aemp_profile_load(file, "a", &p), 0, "%s", logged);
    aemp_node_config cfg = {0};
    cfg.tls_no_verify = 1;
    cfg.listen_port = 5;
    cr_assert_eq(aemp_profile_apply(p, &cfg), 0);
    cr_assert_eq(cfg.tls_no_verify, 0);
    cr_assert_eq(cfg.listen_port, 0, "a profile's 0 overrides too");
    cr_assert_eq(cfg.epmd_port, 65535);
    cr_assert_eq(cfg.handshake_timeout_ms, 3600000);
    cr_assert_eq(cfg.max_connections, 1048576);
    cr_assert_eq(cfg.max_pending, (size_t)18446744073ULL);
    cr_assert_eq(cfg.read_batch_ms, 0, "read_batch_ms = 0 is the default, as in the API");
    cr_assert_null(cfg.name);
    aemp_profile_free(p);
}

Test(profile, max_term_depth)
{
    cr_assert_eq(applied("[a]\nmax_term_depth = 20000\n", "a").max_term_depth, 20000);
    cr_assert_eq(load_rc("[a]\nmax_term_depth = 0\n"), AEMP_EINVAL);
}

Test(profile, seeds)
{
    write_file(file,
               "[a]\nseeds = x@h1, y@h2\ty@h3,,z@localhost\nseed_min_ms = 100\n"
               "seed_max_ms = 2000\nmesh_interval_ms = off\n[b]\nparent = a\n"
               "seeds = only@one\nmesh_interval_ms = 250\n",
               0600);
    aemp_profile *p = NULL;
    aemp_node_config cfg = {0};
    cr_assert_eq(aemp_profile_load(file, "a", &p), 0, "%s", logged);
    cr_assert_eq(aemp_profile_apply(p, &cfg), 0);
    cr_assert_not_null(cfg.seeds);
    const char *want[] = {"x@h1", "y@h2", "y@h3", "z@localhost"};
    for (int i = 0; i < 4; i++)
        cr_assert_str_eq(cfg.seeds[i], want[i]);
    cr_assert_null(cfg.seeds[4]);
    cr_assert_eq(cfg.seed_min_ms, 100);
    cr_assert_eq(cfg.seed_max_ms, 2000);
    cr_assert_eq(cfg.mesh_interval_ms, -1, "mesh_interval_ms = off: no meshing");
    cr_assert_str_eq(aemp_profile_get(p, "seeds"), "x@h1, y@h2\ty@h3,,z@localhost");
    aemp_profile_free(p);
    cr_assert_eq(aemp_profile_load(file, "b", &p), 0, "%s", logged);
    cr_assert_eq(aemp_profile_apply(p, &cfg), 0);
    cr_assert_str_eq(cfg.seeds[0], "only@one");
    cr_assert_null(cfg.seeds[1]);
    cr_assert_eq(cfg.seed_min_ms, 100, "inherited");
    cr_assert_eq(cfg.mesh_interval_ms, 250);
    aemp_profile_free(p);
    cr_assert_eq(load_rc("[a]\nseeds = nohost\n"), AEMP_EINVAL);
    cr_assert_eq(load_rc("[a]\nseeds = a@b@c\n"), AEMP_EINVAL);
    cr_assert_eq(load_rc("[a]\nseeds = @h\n"), AEMP_EINVAL);
    cr_assert_eq(load_rc("[a]\nseeds = ,,\n"), AEMP_EINVAL);
    cr_assert_eq(load_rc("[a]\nseed_min_ms = 0\n"), AEMP_EINVAL);
    cr_assert_eq(load_rc("[a]\nmesh_interval_ms = 3600001\n"), AEMP_EINVAL);
    write_file(file, "[a]\n", 0600);
    cr_assert_eq(aemp_profile_set(file, "a", "seeds", "bad"), AEMP_EINVAL);
    cr_assert_eq(aemp_profile_set(file, "a", "seeds", "n1@h n2@h"), 0);
}

Test(profile, pg_scopes)
{
    write_file(file, "[a]\npg_scopes = aemp,other\npg_max_members = 500\n[b]\npg_scopes = none\n",
               0600);
    aemp_profile *p = NULL;
    aemp_node_config cfg = {0};
    cr_assert_eq(aemp_profile_load(file, "a", &p), 0, "%s", logged);
    cr_assert_eq(aemp_profile_apply(p, &cfg), 0);
    cr_assert_str_eq(cfg.pg_scopes, "aemp,other");
    cr_assert_eq(cfg.pg_max_members, 500);
    aemp_profile_free(p);
    cr_assert_eq(aemp_profile_load(file, "b", &p), 0, "%s", logged);
    cr_assert_eq(aemp_profile_apply(p, &cfg), 0);
    cr_assert_str_eq(cfg.pg_scopes, "");
    aemp_profile_free(p);
    cr_assert_eq(load_rc("[a]\npg_scopes = a,,b\n"), AEMP_EINVAL);
    cr_assert_eq(load_rc("[a]\npg_scopes = a, b\n"), AEMP_EINVAL);
    cr_assert_eq(load_rc("[a]\npg_scopes = a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q\n"), AEMP_EINVAL);
    cr_assert_eq(load_rc("[a]\npg_max_members = 0\n"), AEMP_EINVAL);
}

Test(profile, pg_limits)
{
    write_file(file,
               "[a]\npg_max_group_term = 64\npg_max_group_names = 4096\npg_rediscover_ms = 250\n"
               "[b]\nparent = a\npg_rediscover_ms = 3600000\n",
               0600);
    aemp_profile *p = NULL;
    aemp_node_config cfg = {0};
    cr_assert_eq(aemp_profile_load(file, "b", &p), 0, "%s", logged);
    cr_assert_eq(aemp_profile_apply(p, &cfg), 0);
    cr_assert_eq(cfg.pg_max_group_term, 64, "inherited");
    cr_assert_eq(cfg.pg_max_group_names, 4096, "inherited");
    cr_assert_eq(cfg.pg_rediscover_ms, 3600000);
    aemp_profile_free(p);
    static const char *bad[] = {
        "[a]\npg_max_group_term = 0\n",   "[a]\npg_max_group_term = 16777217\n",
        "[a]\npg_max_group_names = 0\n",  "[a]\npg_rediscover_ms = 3600001\n",
        "[a]\npg_rediscover_ms = soon\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_assert_eq(load_rc(bad[i]), AEMP_EINVAL, "accepted: %s", bad[i]);
}

Test(profile, db_max_bytes)
{
    cr_assert_eq(applied("[a]\ndb_max_bytes = 1048576\n", "a").db_max_bytes, 1048576);
    cr_assert_eq(load_rc("[a]\ndb_max_bytes = 0\n"), AEMP_EINVAL);
    cr_assert_eq(load_rc("[a]\ndb_max_bytes = lots\n"), AEMP_EINVAL);
}

Test(profile, max_watches_per_peer)
{
    cr_assert_eq(
        applied("[a]\nmax_watches_per_peer = 5\n[b]\nparent = a\n", "b").max_watches_per_peer, 5,
        "inherited");
    cr_assert_eq(load_rc("[a]\nmax_watches_per_peer = 0\n"), AEMP_EINVAL);
    cr_assert_eq(load_rc("[a]\nmax_watches_per_peer = 4294967296\n"), AEMP_EINVAL);
    cr_assert_eq(load_rc("[a]\nmax_watches_per_peer = many\n"), AEMP_EINVAL);
}

Test(profile, read_batch_off)
{
    write_file(file, "[a]\nread_batch_ms = off\n[b]\nread_batch_ms = 7\n", 0600);
    aemp_profile *p = NULL;
    aemp_node_config cfg = {0};
    cr_assert_eq(aemp_profile_load(file, "a", &p), 0, "%s", logged);
    cr_assert_eq(aemp_profile_apply(p, &cfg), 0);
    cr_assert_eq(cfg.read_batch_ms, -1, "read_batch_ms = off turns batching off");
    aemp_profile_free(p);
    cr_assert_eq(aemp_profile_load(file, "b", &p), 0, "%s", logged);
    cr_assert_eq(aemp_profile_apply(p, &cfg), 0);
    cr_assert_eq(cfg.read_batch_ms, 7);
    aemp_profile_free(p);
}

static void on_closed(void *arg)
{
    *(int *)arg = 1;
}

/* The node copies what it needs: the profile may go right after create. */
Test(profile, node_outlives_profile)
{
    write_file(file, "[a]\nnodeid = fromprofile@localhost\nsecret = cookie1\n", 0600);
    aemp_profile *p = NULL;
    cr_assert_eq(aemp_profile_load(file, "a", &p), 0, "%s", logged);
    aemp_node_config cfg = {0};
    cfg.name = "other@localhost";
    cfg.client_only = 1;
    cr_assert_eq(aemp_profile_apply(p, &cfg), 0);
    uv_loop_t loop;
    cr_assert_eq(uv_loop_init(&loop), 0);
    aemp_node *node = NULL;
    cr_assert_eq(aemp_node_create(&loop, &cfg, &node), 0, "%s", logged);
    aemp_profile_free(p);
    cr_assert_str_eq(aemp_node_name(node), "fromprofile@localhost");
    int closed = 0;
    aemp_node_close(node, on_closed, &closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(closed, 1);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

Test(profile, gensecret_length_and_charset)
{
    char a[AEMP_PROFILE_SECRET_LEN + 1], b[64];
    cr_assert_eq(aemp_profile_gensecret(a, sizeof a), 0);
    cr_assert_eq(aemp_profile_gensecret(b, sizeof b), 0);
    cr_assert_eq(strlen(a), AEMP_PROFILE_SECRET_LEN);
    cr_assert_eq(strlen(b), AEMP_PROFILE_SECRET_LEN);
    for (size_t i = 0; i < AEMP_PROFILE_SECRET_LEN; i++) {
        cr_assert(isalnum((unsigned char)a[i]) && (unsigned char)a[i] < 128, "char %d", a[i]);
        cr_assert(isalnum((unsigned char)b[i]) && (unsigned char)b[i] < 128, "char %d", b[i]);
    }
    cr_assert_str_neq(a, b);
    cr_assert_eq(aemp_profile_gensecret(a, AEMP_PROFILE_SECRET_LEN), AEMP_ETOOBIG);
    cr_assert_eq(aemp_profile_gensecret(NULL, 64), AEMP_EINVAL);
    /* a generated secret is a valid profile secret */
    cr_assert_eq(aemp_profile_gensecret(a, sizeof a), 0);
    cr_assert_eq(aemp_profile_set(file, "a", "secret", a), 0, "%s", logged);
}

Test(profile, gensecret_uses_whole_alphabet)
{
    /* 100 secrets: 3200 characters; every one of the 62 should appear */
    int seen[128] = {0};
    for (int i = 0; i < 100; i++) {
        char s[AEMP_PROFILE_SECRET_LEN + 1];
        cr_assert_eq(aemp_profile_gensecret(s, sizeof s), 0);
        for (size_t j = 0; s[j]; j++)
            seen[(unsigned char)s[j]] = 1;
    }
    int n = 0;
    for (int c = 0; c < 128; c++)
        n += seen[c];
    cr_assert_eq(n, 62);
}

Test(profile, default_path_from_environment)
{
    char path[512], want[512];
    setenv("AEMP_PROFILES", file, 1);
    cr_assert_eq(aemp_profile_path(path, sizeof path), 0);
    cr_assert_str_eq(path, file);
    unsetenv("AEMP_PROFILES");

    setenv("XDG_CONFIG_HOME", dir, 1);
    cr_assert_eq(aemp_profile_path(path, sizeof path), 0);
    snprintf(want, sizeof want, "%s/aemp/profiles", dir);
    cr_assert_str_eq(path, want);

    /* a relative XDG_CONFIG_HOME is ignored, as the XDG spec says */
    setenv("XDG_CONFIG_HOME", "relative", 1);
    setenv("HOME", dir, 1);
    cr_assert_eq(aemp_profile_path(path, sizeof path), 0);
    snprintf(want, sizeof want, "%s/.config/aemp/profiles", dir);
    cr_assert_str_eq(path, want);
    unsetenv("XDG_CONFIG_HOME");
    cr_assert_eq(aemp_profile_path(path, sizeof path), 0);
    cr_assert_str_eq(path, want);
    cr_assert_eq(aemp_profile_path(path, 8), AEMP_ETOOBIG);

    /* NULL file means this path, for every call */
    cr_assert_eq(aemp_profile_set(NULL, "a", "nodeid", "a@h"), 0, "%s", logged);
    cr_assert_eq(mode_of(want), 0600);
    aemp_profile *p = NULL;
    cr_assert_eq(aemp_profile_load(NULL, "a", &p), 0);
    cr_assert_str_eq(aemp_profile_get(p, "nodeid"), "a@h");
    aemp_profile_free(p);
    cr_assert_eq(aemp_profile_delete(NULL, "a"), 0);
}

Test(profile, file_size_bounded)
{
    int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert_geq(fd, 0);
    char chunk[4096];
    memset(chunk, '#', sizeof chunk);
    for (int i = 0; i < 300; i++)
        cr_assert_eq(write(fd, chunk, sizeof chunk), (ssize_t)sizeof chunk);
    close(fd);
    aemp_profile *p;
    cr_assert_eq(aemp_profile_load(file, "a", &p), AEMP_ETOOBIG);
}

/* The point of profiles: TLS settings kept in a file start a TLS node. */
Test(profile, tls_profile_starts_tls_node)
{
    char certs[128], cert[160], key[160], ca[160];
    snprintf(certs, sizeof certs, "%s/certs", dir);
    const char *hosts[] = {"localhost", "127.0.0.1"};
    cr_assert_eq(aemp_tls_gencert(certs, "a", hosts, 2), 0);
    snprintf(cert, sizeof cert, "%s/a.pem", certs);
    snprintf(key, sizeof key, "%s/a.key", certs);
    snprintf(ca, sizeof ca, "%s/ca.pem", certs);
    cr_assert_eq(aemp_profile_set(file, "a", "nodeid", "a@localhost"), 0, "%s", logged);
    cr_assert_eq(aemp_profile_set(file, "a", "secret", "cookie1"), 0);
    cr_assert_eq(aemp_profile_set(file, "a", "tls_cert", cert), 0, "%s", logged);
    cr_assert_eq(aemp_profile_set(file, "a", "tls_key", key), 0);
    cr_assert_eq(aemp_profile_set(file, "a", "tls_ca", ca), 0);
    /* a broken copy: the certificate file does not exist */
    cr_assert_eq(aemp_profile_set(file, "broken", "parent", "a"), 0);
    cr_assert_eq(aemp_profile_set(file, "broken", "tls_cert", "/nonexistent/a.pem"), 0);

    uv_loop_t loop;
    cr_assert_eq(uv_loop_init(&loop), 0);
    aemp_profile *p = NULL;
    aemp_node_config cfg = {0};
    cfg.client_only = 1;
    cr_assert_eq(aemp_profile_load(file, "broken", &p), 0, "%s", logged);
    cr_assert_eq(aemp_profile_apply(p, &cfg), 0);
    aemp_node *node = NULL;
    cr_assert_neq(aemp_node_create(&loop, &cfg, &node), 0, "started without its certificate");
    aemp_profile_free(p);

    cr_assert_eq(aemp_profile_load(file, "a", &p), 0, "%s", logged);
    cr_assert_eq(aemp_profile_apply(p, &cfg), 0);
    cr_assert_eq(aemp_node_create(&loop, &cfg, &node), 0, "%s", logged);
    aemp_profile_free(p);
    int closed = 0;
    aemp_node_close(node, on_closed, &closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(closed, 1);
    cr_assert_eq(uv_loop_close(&loop), 0);
}
