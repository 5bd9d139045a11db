/* profile.c - named node configurations in a private rc file. */
#include "../aemp_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef PATH_MAX
#define PATH_MAX 4096
#endif

/* A profile file holds a few settings; anything bigger is a mistake. */
#define MAX_FILE_SIZE (1024 * 1024)
/* Parent chains are short in practice; the bound keeps a typo from costing
 * more than a clear error. */
#define MAX_DEPTH 16
#define MAX_NAME_LEN 128

enum key_id {
    K_PARENT,
    K_NODEID,
    K_SECRET,
    K_LISTEN_PORT,
    K_EPMD_PORT,
    K_NET_TICKTIME,
    K_HS_TIMEOUT,
    K_MAX_PACKET,
    K_MAX_CONNECTIONS,
    K_MAX_PENDING,
    K_READ_BATCH,
    K_TLS_CERT,
    K_TLS_KEY,
    K_TLS_CA,
    K_TLS_VERIFY,
    K_MAX_TERM_DEPTH,
    /* seeds (issue 10, part "seeds") */
    K_SEEDS,
    K_SEED_MIN,
    K_SEED_MAX,
    K_MESH_INTERVAL,
    K_PG_SCOPES,          /* pg */
    K_PG_MAX_MEMBERS,     /* pg */
    K_DB_MAX_BYTES,       /* c-db */
    K_PG_MAX_GROUP_TERM,  /* pg */
    K_PG_MAX_GROUP_NAMES, /* pg */
    K_PG_REDISCOVER,      /* pg */
    K_MAX_WATCHES,        /* links and monitors per peer */
    K_COUNT
};

enum value_kind {
    V_PROFILE, /* a profile name */
    V_NODE,    /* a node name: printable, no blanks */
    V_SECRET,  /* as V_NODE, but never echoed in messages */
    V_NUMBER,  /* decimal in [min, max] */
    V_MS_OFF,  /* decimal in [min, max] (0: the default), or off */
    V_PATH,    /* absolute file name */
    V_BOOL,    /* yes or no */
    V_NODES,   /* node names alive@host, separated by commas or blanks */
    V_SCOPES,  /* none, or pg scope names separated by commas */
};

/* Every key a profile may hold, in the order `show` lists them. */
static const struct key_def {
    const char *name;
    enum value_kind kind;
    uint64_t min, max;
} keys[K_COUNT] = {
    [K_PARENT] = {"parent", V_PROFILE, 0, 0},
    [K_NODEID] = {"nodeid", V_NODE, 1, AEMP_MAXNODELEN},
    /* the node keeps the cookie in 256 bytes with its NUL */
    [K_SECRET] = {"secret", V_SECRET, 1, 255},
    /* 0: any free port, as listen_port 0 in aemp_node_config */
    [K_LISTEN_PORT] = {"listen_port", V_NUMBER, 0, 65535},
    /* 0: $ERL_EPMD_PORT or 4369, as epmd_port 0 in aemp_node_config */
    [K_EPMD_PORT] = {"epmd_port", V_NUMBER, 0, 65535},
    /* the range `aemp run --ticktime` accepts */
    [K_NET_TICKTIME] = {"net_ticktime", V_NUMBER, 1, 86400},
    [K_HS_TIMEOUT] = {"handshake_timeout_ms", V_NUMBER, 1, 3600000},
    /* distribution packets carry a 4-byte length */
    [K_MAX_PACKET] = {"max_packet", V_NUMBER, 1, UINT32_MAX},
    [K_MAX_CONNECTIONS] = {"max_connections", V_NUMBER, 1, 1048576},
    [K_MAX_PENDING] = {"max_pending", V_NUMBER, 1, SIZE_MAX},
    /* milliseconds, 0 the default (1), off turns read batching off, as
     * aemp_node_config.read_batch_ms and aemp run --read-batch */
    [K_READ_BATCH] = {"read_batch_ms", V_MS_OFF, 0, 1000},
    [K_TLS_CERT] = {"tls_cert", V_PATH, 1, PATH_MAX - 1},
    [K_TLS_KEY] = {"tls_key", V_PATH, 1, PATH_MAX - 1},
    [K_TLS_CA] = {"tls_ca", V_PATH, 1, PATH_MAX - 1},
    [K_TLS_VERIFY] = {"tls_verify", V_BOOL, 0, 0},
    [K_MAX_TERM_DEPTH] = {"max_term_depth", V_NUMBER, 1, 1000000},
    /* at most AEMP__MAX_SEEDS names, as aemp_node_config.seeds */
    [K_SEEDS] = {"seeds", V_NODES, 1, AEMP__MAX_SEEDS},
    [K_SEED_MIN] = {"seed_min_ms", V_NUMBER, 1, 3600000},
    [K_SEED_MAX] = {"seed_max_ms", V_NUMBER, 1, 3600000},
    /* off: no meshing (mesh_interval_ms < 0) */
    [K_MESH_INTERVAL] = {"mesh_interval_ms", V_MS_OFF, 1, 3600000},
    /* pg: aemp_node_config.pg_scopes (at most 16 names of at most 255
     * characters) and pg_max_members */
    [K_PG_SCOPES] = {"pg_scopes", V_SCOPES, 1, 16},
    [K_PG_MAX_MEMBERS] = {"pg_max_members", V_NUMBER, 1, UINT32_MAX},
    /* the database: aemp_node_config.db_max_bytes */
    [K_DB_MAX_BYTES] = {"db_max_bytes", V_NUMBER, 1, SIZE_MAX},
    /* pg: aemp_node_config.pg_max_group_term, pg_max_group_names and
     * pg_rediscover_ms */
    [K_PG_MAX_GROUP_TERM] = {"pg_max_group_term", V_NUMBER, 1, 16777216},
    [K_PG_MAX_GROUP_NAMES] = {"pg_max_group_names", V_NUMBER, 1, SIZE_MAX},
    [K_PG_REDISCOVER] = {"pg_rediscover_ms", V_NUMBER, 1, 3600000},
    /* aemp_node_config.max_watches_per_peer */
    [K_MAX_WATCHES] = {"max_watches_per_peer", V_NUMBER, 1, UINT32_MAX},
};

struct aemp_profile {
    char *val[K_COUNT];
    /* seeds: the names of val[K_SEEDS], each in seed_text, NULL-terminated */
    char *seed_text;
    const char **seeds;
};

enum line_kind { L_OTHER, L_SECTION, L_KEY };

/* One line of the file, kept as written so that an update rewrites only the
 * lines it changes and keeps the user's comments. */
struct line {
    char *text;
    enum line_kind kind;
    char *name; /* section name, or key */
    char *value;
    int key; /* L_KEY: its key_id */
};

struct pfile {
    char path[PATH_MAX];
    struct line *lines;
    size_t n, cap;
};

#define NONE SIZE_MAX

/* ------------------------------------------------------------------ */
/* Values                                                             */
/* ------------------------------------------------------------------ */

static int find_key(const char *name)
{
    for (int i = 0; i < K_COUNT; i++)
        if (strcmp(keys[i].name, name) == 0) return i;
    return -1;
}

const char *aemp_profile_key(size_t i)
{
    return i < K_COUNT ? keys[i].name : NULL;
}

static bool valid_profile_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > MAX_NAME_LEN) return false;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '-' || c == '.' || c == '@';
        if (!ok) return false;
    }
    return true;
}

static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* Printable, with no control characters, and with no blanks at either end
 * (which reading would strip); `inner_blanks` allows them inside. */
static bool clean_text(const char *s, bool inner_blanks)
{
    if (!*s || is_blank(s[0]) || is_blank(s[strlen(s) - 1])) return false;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7f) return false;
        if (c == ' ' && !inner_blanks) return false;
    }
    return true;
}

static bool parse_number(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    if (!*s) return false;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return false;
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10) return false;
        v = v * 10 + d;
    }
    if (v < min || v > max) return false;
    *out = v;
    return true;
}

static bool is_sep(char c)
{
    return c == ',' || is_blank(c);
}

/* Each name of a list of node names in turn (fn may be NULL): how many, or
 * -1 when one is not alive@host (both parts non-empty, printable, at most
 * AEMP_MAXNODELEN bytes). */
static long each_node(const char *v, void (*fn)(const char *s, size_t n, void *arg), void *arg)
{
    long count = 0;
    for (;;) {
        while (is_sep(*v))
            v++;
        if (!*v) return count;
        const char *s = v, *at = NULL;
        for (; *v && !is_sep(*v); v++) {
            unsigned char c = (unsigned char)*v;
            if (c < 0x21 || c == 0x7f) return -1;
            if (c == '@') {
                if (at) return -1;
                at = v;
            }
        }
        size_t n = (size_t)(v - s);
        if (!at || at == s || at == v - 1 || n > AEMP_MAXNODELEN) return -1;
        if (fn) fn(s, n, arg);
        count++;
    }
}

/* none, or 1 to max names separated by commas, each 1 to 255 characters
 * (UTF-8), printable, without blanks. */
static bool valid_scopes(const char *v, uint64_t max)
{
    if (strcmp(v, "none") == 0) return true;
    if (!clean_text(v, false)) return false;
    uint64_t names = 0;
    for (const char *p = v;;) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p), chars = 0;
        for (size_t i = 0; i < n; i++)
            if (((unsigned char)p[i] & 0xC0) != 0x80) chars++;
        if (chars == 0 || chars > 255 || ++names > max) return false;
        if (!e) return true;
        p = e + 1;
    }
}

/* Check value for key k; on failure describe the rule in why. */
static bool check_value(int k, const char *v, char *why, size_t size)
{
    const struct key_def *d = &keys[k];
    uint64_t num;
    size_t len = strlen(v);
    switch (d->kind) {
    case V_PROFILE:
        if (valid_profile_name(v)) return true;
        snprintf(why, size, "a profile name (1 to %d of A-Z a-z 0-9 _ - . @)", MAX_NAME_LEN);
        return false;
    case V_NODE:
    case V_SECRET:
        if (clean_text(v, false) && len >= d->min && len <= d->max) return true;
        snprintf(why, size, "%" PRIu64 " to %" PRIu64 " printable characters without blanks",
                 d->min, d->max);
        return false;
    case V_MS_OFF:
        if (strcmp(v, "off") == 0 || parse_number(v, d->min, d->max, &num)) return true;
        snprintf(why, size, "off or a number of milliseconds from %" PRIu64 " to %" PRIu64, d->min,
                 d->max);
        return false;
    case V_NUMBER:
        if (parse_number(v, d->min, d->max, &num)) return true;
        snprintf(why, size, "a number from %" PRIu64 " to %" PRIu64, d->min, d->max);
        return false;
    case V_SCOPES:
        if (valid_scopes(v, d->max)) return true;
        snprintf(why, size, "none, or 1 to %" PRIu64 " scope names separated by commas (no blanks)",
                 d->max);
        return false;
    case V_PATH:
        if (v[0] == '/' && clean_text(v, true) && len <= d->max) return true;
        snprintf(why, size, "an absolute file name");
        return false;
    case V_BOOL:
        if (strcmp(v, "yes") == 0 || strcmp(v, "no") == 0) return true;
        snprintf(why, size, "yes or no");
        return false;
    case V_NODES: {
        long count = each_node(v, NULL, NULL);
        if (count >= (long)d->min && count <= (long)d->max) return true;
        snprintf(why, size,
                 "%" PRIu64 " to %" PRIu64 " node names alive@host separated by commas or blanks",
                 d->min, d->max);
        return false;
    }
    }
    return false;
}

/* Log a bad value; a secret is never repeated, even a malformed one. */
static void log_bad_value(const char *where, int k, const char *v, const char *why)
{
    if (keys[k].kind == V_SECRET)
        AEMP_LOGE("%s%s must be %s", where, keys[k].name, why);
    else
        AEMP_LOGE("%s%s must be %s, not '%s'", where, keys[k].name, why, v);
}

/* ------------------------------------------------------------------ */
/* The file                                                           */
/* ------------------------------------------------------------------ */

int aemp_profile_path(char *out, size_t size)
{
    if (!out || size == 0) return AEMP_EINVAL;
    const char *env = getenv("AEMP_PROFILES");
    size_t n;
    if (env && *env) {
        n = (size_t)snprintf(out, size, "%s", env);
    } else {
        /* The XDG spec says to ignore a relative XDG_CONFIG_HOME. */
        const char *xdg = getenv("XDG_CONFIG_HOME");
        if (xdg && xdg[0] == '/') {
            n = (size_t)snprintf(out, size, "%s/aemp/profiles", xdg);
        } else {
            char home[PATH_MAX];
            size_t hl = sizeof home;
            if (uv_os_homedir(home, &hl) != 0) {
                AEMP_LOGE("cannot find the profile file: no home directory");
                out[0] = 0;
                return AEMP_ENOENT;
            }
            n = (size_t)snprintf(out, size, "%s/.config/aemp/profiles", home);
        }
    }
    if (n >= size) {
        out[0] = 0;
        return AEMP_ETOOBIG;
    }
    return 0;
}

static int set_path(struct pfile *f, const char *file)
{
    if (!file) return aemp_profile_path(f->path, sizeof f->path);
    if (!*file) return AEMP_EINVAL;
    if (aemp__strlcpy(f->path, file, sizeof f->path) >= sizeof f->path) return AEMP_ETOOBIG;
    return 0;
}

static void line_free(struct line *l)
{
    free(l->text);
    free(l->name);
    free(l->value);
}

static void pf_free(struct pfile *f)
{
    for (size_t i = 0; i < f->n; i++)
        line_free(&f->lines[i]);
    free(f->lines);
    f->lines = NULL;
    f->n = f->cap = 0;
}

/* Make room for a line at index at (shifting the rest down) and return it,
 * zeroed; NULL when out of memory. */
static struct line *pf_insert(struct pfile *f, size_t at)
{
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 32;
        struct line *p = realloc(f->lines, cap * sizeof *p);
        if (!p) return NULL;
        f->lines = p;
        f->cap = cap;
    }
    memmove(&f->lines[at + 1], &f->lines[at], (f->n - at) * sizeof *f->lines);
    f->n++;
    memset(&f->lines[at], 0, sizeof f->lines[at]);
    return &f->lines[at];
}

static void pf_remove(struct pfile *f, size_t at)
{
    line_free(&f->lines[at]);
    memmove(&f->lines[at], &f->lines[at + 1], (f->n - at - 1) * sizeof *f->lines);
    f->n--;
}

static char *dup_span(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

static void trim(const char **s, size_t *n)
{
    while (*n && is_blank(**s)) {
        (*s)++;
        (*n)--;
    }
    while (*n && is_blank((*s)[*n - 1]))
        (*n)--;
}

static bool is_comment(const char *text)
{
    while (is_blank(*text))
        text++;
    return *text == '#';
}

static size_t find_section(const struct pfile *f, const char *name)
{
    for (size_t i = 0; i < f->n; i++)
        if (f->lines[i].kind == L_SECTION && strcmp(f->lines[i].name, name) == 0) return i;
    return NONE;
}

/* Index just past the last line of the section starting at sec. */
static size_t section_end(const struct pfile *f, size_t sec)
{
    size_t i = sec + 1;
    while (i < f->n && f->lines[i].kind != L_SECTION)
        i++;
    return i;
}

static size_t find_line(const struct pfile *f, size_t sec, int key)
{
    size_t end = section_end(f, sec);
    for (size_t i = sec + 1; i < end; i++)
        if (f->lines[i].kind == L_KEY && f->lines[i].key == key) return i;
    return NONE;
}

/* Parse the text of line number no (1-based) into l. */
static int parse_line(const struct pfile *f, struct line *l, unsigned no, size_t cur_sec)
{
    const char *s = l->text;
    size_t n = strlen(s);
    trim(&s, &n);
    if (n == 0 || s[0] == '#') {
        l->kind = L_OTHER;
        return 0;
    }
    if (s[0] == '[') {
        if (s[n - 1] != ']') {
            AEMP_LOGE("%s:%u: a profile header must end with ']'", f->path, no);
            return AEMP_EINVAL;
        }
        const char *name = s + 1;
        size_t nl = n - 2;
        trim(&name, &nl);
        if (!(l->name = dup_span(name, nl))) return AEMP_ENOMEM;
        if (!valid_profile_name(l->name)) {
            AEMP_LOGE("%s:%u: bad profile name '%s' (1 to %d of A-Z a-z 0-9 _ - . @)", f->path, no,
                      l->name, MAX_NAME_LEN);
            return AEMP_EINVAL;
        }
        size_t prev = find_section(f, l->name);
        if (prev != NONE) {
            AEMP_LOGE("%s:%u: profile [%s] is already defined at line %zu", f->path, no, l->name,
                      prev + 1);
            return AEMP_EINVAL;
        }
        l->kind = L_SECTION;
        return 0;
    }
    const char *eq = memchr(s, '=', n);
    if (!eq) {
        AEMP_LOGE("%s:%u: expected '[profile]', 'key = value' or a '#' comment", f->path, no);
        return AEMP_EINVAL;
    }
    const char *k = s, *v = eq + 1;
    size_t kl = (size_t)(eq - s), vl = n - kl - 1;
    trim(&k, &kl);
    trim(&v, &vl);
    if (!(l->name = dup_span(k, kl)) || !(l->value = dup_span(v, vl))) return AEMP_ENOMEM;
    int key = find_key(l->name);
    if (key < 0) {
        AEMP_LOGE("%s:%u: unknown key '%s'", f->path, no, l->name);
        return AEMP_EINVAL;
    }
    if (cur_sec == NONE) {
        AEMP_LOGE("%s:%u: key '%s' comes before any [profile] header", f->path, no, l->name);
        return AEMP_EINVAL;
    }
    size_t prev = find_line(f, cur_sec, key);
    if (prev != NONE) {
        AEMP_LOGE("%s:%u: key '%s' is repeated in [%s] (first at line %zu)", f->path, no, l->name,
                  f->lines[cur_sec].name, prev + 1);
        return AEMP_EINVAL;
    }
    char why[128], where[PATH_MAX + 32];
    if (!check_value(key, l->value, why, sizeof why)) {
        snprintf(where, sizeof where, "%s:%u: ", f->path, no);
        log_bad_value(where, key, l->value, why);
        return AEMP_EINVAL;
    }
    l->kind = L_KEY;
    l->key = key;
    return 0;
}

/* Split buf into parsed lines appended to f. */
static int parse(struct pfile *f, const char *buf, size_t len)
{
    size_t cur_sec = NONE;
    unsigned no = 0;
    for (size_t pos = 0; pos < len;) {
        const char *s = buf + pos;
        const char *nl = memchr(s, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - s) : len - pos;
        pos += n + (nl ? 1 : 0);
        no++;
        if (memchr(s, 0, n)) {
            AEMP_LOGE("%s:%u: NUL byte in a text file", f->path, no);
            return AEMP_EINVAL;
        }
        if (n && s[n - 1] == '\r') n--;
        struct line *l = pf_insert(f, f->n);
        if (!l) return AEMP_ENOMEM;
        if (!(l->text = dup_span(s, n))) return AEMP_ENOMEM;
        int rc = parse_line(f, l, no, cur_sec);
        if (rc) return rc;
        if (l->kind == L_SECTION) cur_sec = f->n - 1;
    }
    return 0;
}

/* Read and parse f->path. AEMP_ENOENT (not logged) if it does not exist. */
static int pf_read(struct pfile *f)
{
    /* O_NONBLOCK: a FIFO planted in place of the file must not hang us
     * before fstat can refuse it. */
    int fd = open(f->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        if (errno == ENOENT) return AEMP_ENOENT;
        AEMP_LOGE("cannot open profile file %s: %s", f->path, strerror(errno));
        return AEMP_EIO;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        AEMP_LOGE("cannot stat profile file %s: %s", f->path, strerror(errno));
        close(fd);
        return AEMP_EIO;
    }
    /* As erl with ~/.erlang.cookie: a secret others can read is no secret,
     * and one others can write lets them pick our settings. */
    if (!S_ISREG(st.st_mode) || (st.st_mode & 077)) {
        AEMP_LOGE("profile file %s must be a regular file accessible by its owner only "
                  "(chmod 600 %s)",
                  f->path, f->path);
        close(fd);
        return AEMP_EAUTH;
    }
    if (st.st_size > MAX_FILE_SIZE) {
        AEMP_LOGE("profile file %s is larger than %d bytes", f->path, MAX_FILE_SIZE);
        close(fd);
        return AEMP_ETOOBIG;
    }
    /* One byte more than the limit tells a file that grew meanwhile. */
    char *buf = malloc(MAX_FILE_SIZE + 1);
    if (!buf) {
        close(fd);
        return AEMP_ENOMEM;
    }
    size_t len = 0;
    for (;;) {
        ssize_t r = read(fd, buf + len, MAX_FILE_SIZE + 1 - len);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            AEMP_LOGE("cannot read profile file %s: %s", f->path, strerror(errno));
            free(buf);
            close(fd);
            return AEMP_EIO;
        }
        if (r == 0) break;
        len += (size_t)r;
        if (len > MAX_FILE_SIZE) {
            AEMP_LOGE("profile file %s is larger than %d bytes", f->path, MAX_FILE_SIZE);
            free(buf);
            close(fd);
            return AEMP_ETOOBIG;
        }
    }
    close(fd);
    int rc = parse(f, buf, len);
    free(buf);
    return rc;
}

/* mkdir -p of the directory holding path; new directories get mode 0700. */
static int make_dirs(const char *path)
{
    char dir[PATH_MAX];
    aemp__strlcpy(dir, path, sizeof dir);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir) return 0;
    *slash = 0;
    for (char *p = dir + 1;; p++) {
        if (*p && *p != '/') continue;
        char c = *p;
        *p = 0;
        if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
            AEMP_LOGE("cannot create directory %s: %s", dir, strerror(errno));
            return AEMP_EIO;
        }
        *p = c;
        if (!c) return 0;
    }
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Replace the file by the lines of f: write a private temporary file in the
 * same directory and rename it over the old one, so that a reader sees the
 * old or the new file, never a part, and the secret is never readable by
 * others, not even briefly. */
static int pf_write(const struct pfile *f)
{
    aemp_buf out = AEMP_BUF_INIT;
    for (size_t i = 0; i < f->n; i++)
        if (aemp__buf_append(&out, f->lines[i].text, strlen(f->lines[i].text)) ||
            aemp__buf_put_u8(&out, '\n')) {
            aemp_buf_free(&out);
            return AEMP_ENOMEM;
        }
    int rc = make_dirs(f->path);
    if (rc) {
        aemp_buf_free(&out);
        return rc;
    }
    /* mkstemp's template: the path, a dot and six X it replaces */
    char tmp[PATH_MAX + 8];
    size_t plen = strlen(f->path);
    if (plen + 8 > sizeof tmp) {
        aemp_buf_free(&out);
        return AEMP_ETOOBIG;
    }
    memcpy(tmp, f->path, plen);
    tmp[plen] = '.';
    memset(tmp + plen + 1, 'X', 6);
    tmp[plen + 7] = 0;
    int fd = mkstemp(tmp); /* mode 0600 */
    if (fd < 0) {
        AEMP_LOGE("cannot create a temporary file beside %s: %s", f->path, strerror(errno));
        aemp_buf_free(&out);
        return AEMP_EIO;
    }
    const char *what = "write";
    if (fchmod(fd, 0600) != 0)
        what = "chmod";
    else if (write_all(fd, out.data ? out.data : "", out.len) != 0)
        what = "write";
    else if (fsync(fd) != 0)
        what = "sync";
    else
        what = NULL;
    int err = errno;
    if (close(fd) != 0 && !what) {
        what = "close";
        err = errno;
    }
    if (!what && rename(tmp, f->path) != 0) {
        what = "rename";
        err = errno;
    }
    aemp_buf_free(&out);
    if (what) {
        AEMP_LOGE("cannot update profile file %s (%s: %s)", f->path, what, strerror(err));
        unlink(tmp);
        return AEMP_EIO;
    }
    return 0;
}

/* Replace the text of l by a, b and c joined: "[name]" or "key = value". */
static int set_text(struct line *l, const char *a, const char *b, const char *c)
{
    size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
    char *t = malloc(la + lb + lc + 1);
    if (!t) return AEMP_ENOMEM;
    memcpy(t, a, la);
    memcpy(t + la, b, lb);
    memcpy(t + la + lb, c, lc + 1);
    free(l->text);
    l->text = t;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Resolving parent chains                                            */
/* ------------------------------------------------------------------ */

/*
 * Collect into p the settings of profile name and its ancestors, nearest
 * first, so that a profile overrides what it inherits. Also the consistency
 * check of the chain after an update. AEMP_ENOENT (not logged) if name
 * itself is absent.
 */
static int resolve(const struct pfile *f, const char *name, aemp_profile *p)
{
    const char *chain[MAX_DEPTH];
    size_t depth = 0;
    size_t sec = find_section(f, name);
    if (sec == NONE) return AEMP_ENOENT;
    for (;;) {
        chain[depth++] = f->lines[sec].name;
        size_t end = section_end(f, sec), parent_line = NONE;
        for (size_t i = sec + 1; i < end; i++) {
            const struct line *l = &f->lines[i];
            if (l->kind != L_KEY) continue;
            if (l->key == K_PARENT) parent_line = i;
            if (p && !p->val[l->key] && !(p->val[l->key] = dup_span(l->value, strlen(l->value))))
                return AEMP_ENOMEM;
        }
        if (parent_line == NONE) return 0;
        const char *parent = f->lines[parent_line].value;
        for (size_t i = 0; i < depth; i++) {
            if (strcmp(chain[i], parent) != 0) continue;
            char path[1024];
            size_t len = 0;
            for (size_t j = i; j < depth && len < sizeof path; j++)
                len += (size_t)snprintf(path + len, sizeof path - len, "%s -> ", chain[j]);
            if (len < sizeof path) snprintf(path + len, sizeof path - len, "%s", parent);
            AEMP_LOGE("%s:%zu: parent cycle: %s", f->path, parent_line + 1, path);
            return AEMP_EINVAL;
        }
        if (depth == MAX_DEPTH) {
            AEMP_LOGE("%s:%zu: parent chain of [%s] is deeper than %d profiles", f->path,
                      parent_line + 1, name, MAX_DEPTH);
            return AEMP_EINVAL;
        }
        sec = find_section(f, parent);
        if (sec == NONE) {
            AEMP_LOGE("%s:%zu: parent profile [%s] does not exist", f->path, parent_line + 1,
                      parent);
            return AEMP_EINVAL;
        }
    }
}

/* ------------------------------------------------------------------ */
/* Public calls                                                       */
/* ------------------------------------------------------------------ */

struct seed_split {
    aemp_profile *p;
    size_t at, i;
};

static void put_seed(const char *s, size_t n, void *arg)
{
    struct seed_split *sp = arg;
    memcpy(sp->p->seed_text + sp->at, s, n);
    sp->p->seed_text[sp->at + n] = 0;
    sp->p->seeds[sp->i++] = sp->p->seed_text + sp->at;
    sp->at += n + 1;
}

/* The list aemp_profile_apply gives as aemp_node_config.seeds. */
static int split_seeds(aemp_profile *p)
{
    const char *v = p->val[K_SEEDS];
    if (!v) return 0;
    long count = each_node(v, NULL, NULL);
    if (count < 0) return AEMP_EINVAL; /* checked when read */
    p->seed_text = malloc(strlen(v) + 1);
    p->seeds = calloc((size_t)count + 1, sizeof *p->seeds);
    if (!p->seed_text || !p->seeds) return AEMP_ENOMEM;
    struct seed_split sp = {p, 0, 0};
    each_node(v, put_seed, &sp);
    return 0;
}

void aemp_profile_free(aemp_profile *p)
{
    if (!p) return;
    free(p->seed_text);
    free(p->seeds);
    for (int i = 0; i < K_COUNT; i++) {
        /* the secret should not linger in freed memory */
        if (i == K_SECRET && p->val[i]) memset(p->val[i], 0, strlen(p->val[i]));
        free(p->val[i]);
    }
    free(p);
}

static bool valid_name_arg(const char *name)
{
    if (name && valid_profile_name(name)) return true;
    AEMP_LOGE("bad profile name '%s' (1 to %d of A-Z a-z 0-9 _ - . @)", name ? name : "(null)",
              MAX_NAME_LEN);
    return false;
}

int aemp_profile_load(const char *file, const char *name, aemp_profile **out)
{
    if (!out || !valid_name_arg(name)) return AEMP_EINVAL;
    struct pfile *f = calloc(1, sizeof *f);
    aemp_profile *p = calloc(1, sizeof *p);
    int rc = AEMP_ENOMEM;
    if (!f || !p) goto fail;
    if ((rc = set_path(f, file))) goto fail;
    rc = pf_read(f);
    if (rc == AEMP_ENOENT) AEMP_LOGI("profile file %s does not exist", f->path);
    if (rc) goto fail;
    rc = resolve(f, name, p);
    if (rc == AEMP_ENOENT) AEMP_LOGI("no profile [%s] in %s", name, f->path);
    if (!rc) rc = split_seeds(p);
    if (rc) goto fail;
    pf_free(f);
    free(f);
    *out = p;
    return 0;
fail:
    if (f) pf_free(f);
    free(f);
    aemp_profile_free(p);
    return rc;
}

const char *aemp_profile_get(const aemp_profile *p, const char *key)
{
    if (!p || !key) return NULL;
    int k = find_key(key);
    return k < 0 ? NULL : p->val[k];
}

static uint64_t num_value(const aemp_profile *p, int k)
{
    uint64_t v = 0;
    /* validated when loaded: cannot fail */
    parse_number(p->val[k], keys[k].min, keys[k].max, &v);
    return v;
}

int aemp_profile_apply(const aemp_profile *p, aemp_node_config *cfg)
{
    if (!p || !cfg) return AEMP_EINVAL;
    for (int k = 0; k < K_COUNT; k++) {
        if (!p->val[k]) continue;
        switch ((enum key_id)k) {
        case K_PARENT:
        case K_COUNT:
            break;
        case K_NODEID:
            cfg->name = p->val[k];
            break;
        case K_SECRET:
            cfg->cookie = p->val[k];
            break;
        case K_LISTEN_PORT:
            cfg->listen_port = (uint16_t)num_value(p, k);
            break;
        case K_EPMD_PORT:
            cfg->epmd_port = (uint16_t)num_value(p, k);
            break;
        case K_NET_TICKTIME:
            cfg->net_ticktime = (unsigned)num_value(p, k);
            break;
        case K_HS_TIMEOUT:
            cfg->handshake_timeout_ms = (unsigned)num_value(p, k);
            break;
        case K_MAX_PACKET:
            cfg->max_packet = (size_t)num_value(p, k);
            break;
        case K_MAX_CONNECTIONS:
            cfg->max_connections = (unsigned)num_value(p, k);
            break;
        case K_MAX_PENDING:
            cfg->max_pending = (size_t)num_value(p, k);
            break;
        case K_MAX_TERM_DEPTH:
            cfg->max_term_depth = (unsigned)num_value(p, k);
            break;
        case K_PG_SCOPES:
            cfg->pg_scopes = strcmp(p->val[k], "none") == 0 ? "" : p->val[k];
            break;
        case K_PG_MAX_MEMBERS:
            cfg->pg_max_members = (unsigned)num_value(p, k);
            break;
        case K_DB_MAX_BYTES:
            cfg->db_max_bytes = (size_t)num_value(p, k);
            break;
        case K_PG_MAX_GROUP_TERM:
            cfg->pg_max_group_term = (unsigned)num_value(p, k);
            break;
        case K_PG_MAX_GROUP_NAMES:
            cfg->pg_max_group_names = (size_t)num_value(p, k);
            break;
        case K_PG_REDISCOVER:
            cfg->pg_rediscover_ms = (unsigned)num_value(p, k);
            break;
        case K_MAX_WATCHES:
            cfg->max_watches_per_peer = (unsigned)num_value(p, k);
            break;
        case K_READ_BATCH:
            cfg->read_batch_ms = strcmp(p->val[k], "off") == 0 ? -1 : (int)num_value(p, k);
            break;
        case K_TLS_CERT:
            cfg->tls_cert = p->val[k];
            break;
        case K_TLS_KEY:
            cfg->tls_key = p->val[k];
            break;
        case K_TLS_CA:
            cfg->tls_ca = p->val[k];
            break;
        case K_TLS_VERIFY:
            cfg->tls_no_verify = strcmp(p->val[k], "no") == 0;
            break;
        case K_SEEDS:
            cfg->seeds = p->seeds;
            break;
        case K_SEED_MIN:
            cfg->seed_min_ms = (unsigned)num_value(p, k);
            break;
        case K_SEED_MAX:
            cfg->seed_max_ms = (unsigned)num_value(p, k);
            break;
        case K_MESH_INTERVAL:
            cfg->mesh_interval_ms = strcmp(p->val[k], "off") == 0 ? -1 : (int)num_value(p, k);
            break;
        }
    }
    return 0;
}

/* Read the file for an update: a missing file is an empty one. */
static int open_for_update(struct pfile *f, const char *file)
{
    int rc = set_path(f, file);
    if (rc) return rc;
    rc = pf_read(f);
    if (rc == AEMP_ENOENT) {
        pf_free(f);
        return 0;
    }
    return rc;
}

/* Apply the change to the lines of f (not yet written). */
static int update(struct pfile *f, const char *name, int k, const char *value)
{
    size_t sec = find_section(f, name);
    size_t at = sec == NONE ? NONE : find_line(f, sec, k);
    if (!value) {
        if (sec == NONE) {
            AEMP_LOGI("no profile [%s] in %s", name, f->path);
            return AEMP_ENOENT;
        }
        if (at == NONE) {
            AEMP_LOGI("profile [%s] in %s has no key '%s'", name, f->path, keys[k].name);
            return AEMP_ENOENT;
        }
        pf_remove(f, at);
        return 0;
    }
    if (k == K_PARENT && find_section(f, value) == NONE) {
        AEMP_LOGI("parent profile [%s] does not exist in %s", value, f->path);
        return AEMP_ENOENT;
    }
    if (sec == NONE) {
        /* a blank line between profiles, for the reader */
        if (f->n && f->lines[f->n - 1].text[0]) {
            struct line *b = pf_insert(f, f->n);
            if (!b || !(b->text = dup_span("", 0))) return AEMP_ENOMEM;
        }
        struct line *h = pf_insert(f, f->n);
        if (!h || !(h->name = dup_span(name, strlen(name)))) return AEMP_ENOMEM;
        h->kind = L_SECTION;
        if (set_text(h, "[", name, "]")) return AEMP_ENOMEM;
        sec = f->n - 1;
    }
    if (at == NONE) {
        /* after the section's last setting, before trailing comments and
         * blank lines that introduce the next profile */
        at = sec + 1;
        for (size_t i = sec + 1, end = section_end(f, sec); i < end; i++)
            if (f->lines[i].kind == L_KEY) at = i + 1;
        struct line *l = pf_insert(f, at);
        if (!l || !(l->name = dup_span(keys[k].name, strlen(keys[k].name)))) return AEMP_ENOMEM;
        l->kind = L_KEY;
        l->key = k;
    }
    struct line *l = &f->lines[at];
    char *v = dup_span(value, strlen(value));
    if (!v || set_text(l, keys[k].name, " = ", value)) {
        free(v);
        return AEMP_ENOMEM;
    }
    free(l->value);
    l->value = v;
    return 0;
}

int aemp_profile_set(const char *file, const char *name, const char *key, const char *value)
{
    if (!valid_name_arg(name)) return AEMP_EINVAL;
    int k = key ? find_key(key) : -1;
    if (k < 0) {
        AEMP_LOGE("unknown profile key '%s'", key ? key : "(null)");
        return AEMP_EINVAL;
    }
    char why[128];
    if (value && !check_value(k, value, why, sizeof why)) {
        log_bad_value("", k, value, why);
        return AEMP_EINVAL;
    }
    struct pfile *f = calloc(1, sizeof *f);
    if (!f) return AEMP_ENOMEM;
    int rc = open_for_update(f, file);
    if (!rc) rc = update(f, name, k, value);
    /* refuse a change that would leave the profile unloadable (a cycle) */
    if (!rc && value && k == K_PARENT) rc = resolve(f, name, NULL);
    if (!rc) rc = pf_write(f);
    pf_free(f);
    free(f);
    return rc;
}

int aemp_profile_delete(const char *file, const char *name)
{
    if (!valid_name_arg(name)) return AEMP_EINVAL;
    struct pfile *f = calloc(1, sizeof *f);
    if (!f) return AEMP_ENOMEM;
    int rc = set_path(f, file);
    if (!rc) rc = pf_read(f);
    size_t sec = rc ? NONE : find_section(f, name);
    if (rc == AEMP_ENOENT || (!rc && sec == NONE)) {
        AEMP_LOGI("no profile [%s] in %s", name, f->path);
        rc = AEMP_ENOENT;
    }
    for (size_t i = 0; !rc && i < f->n; i++) {
        const struct line *l = &f->lines[i];
        if (l->kind == L_KEY && l->key == K_PARENT && strcmp(l->value, name) == 0) {
            AEMP_LOGE("%s:%zu: cannot delete profile [%s]: another profile names it as parent",
                      f->path, i + 1, name);
            rc = AEMP_EINVAL;
        }
    }
    if (!rc) {
        /* Comment lines just above a header describe that profile: take
         * the deleted profile's own with it, and leave those (and the blank
         * lines) that introduce the next one. */
        size_t first = sec, end = section_end(f, sec), last = end;
        while (first > 0 && f->lines[first - 1].kind == L_OTHER &&
               is_comment(f->lines[first - 1].text))
            first--;
        if (end < f->n)
            while (last > sec + 1 && f->lines[last - 1].kind == L_OTHER)
                last--;
        for (size_t i = last; i > first; i--)
            pf_remove(f, i - 1);
        rc = pf_write(f);
    }
    pf_free(f);
    free(f);
    return rc;
}

int aemp_profile_gensecret(char *out, size_t size)
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    if (!out) return AEMP_EINVAL;
    if (size < AEMP_PROFILE_SECRET_LEN + 1) return AEMP_ETOOBIG;
    size_t n = 0;
    while (n < AEMP_PROFILE_SECRET_LEN) {
        unsigned char r[64];
        if (aemp__random(r, sizeof r)) return AEMP_EIO;
        /* Only bytes below 4 * 62 = 248: the others would favour some
         * characters over the rest. */
        for (size_t i = 0; i < sizeof r && n < AEMP_PROFILE_SECRET_LEN; i++)
            if (r[i] < 248) out[n++] = alphabet[r[i] % 62];
        memset(r, 0, sizeof r);
    }
    out[n] = 0;
    return 0;
}
