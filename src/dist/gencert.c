/* gencert.c - a small CA and node certificates for TLS distribution. */
#include "../aemp_impl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#define VALID_DAYS 3650

static int path_of(char *out, size_t size, const char *dir, const char *name, const char *ext)
{
    if ((size_t)snprintf(out, size, "%s/%s%s", dir, name, ext) >= size) return AEMP_ETOOBIG;
    return 0;
}

/* Open for writing with the given mode, replacing any old file. */
static FILE *create(const char *path, mode_t mode)
{
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) {
        AEMP_LOGE("gencert: cannot create %s: %s", path, strerror(errno));
        return NULL;
    }
    FILE *f = fdopen(fd, "w");
    if (!f) close(fd);
    return f;
}

static int write_key(const char *path, EVP_PKEY *key)
{
    FILE *f = create(path, 0600);
    if (!f) return AEMP_EIO;
    int ok = PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
    return fclose(f) == 0 && ok ? 0 : AEMP_EIO;
}

static int write_cert(const char *path, X509 *cert)
{
    FILE *f = create(path, 0644);
    if (!f) return AEMP_EIO;
    int ok = PEM_write_X509(f, cert);
    return fclose(f) == 0 && ok ? 0 : AEMP_EIO;
}

static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (!ext) return AEMP_EINVAL;
    int ok = X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    return ok ? 0 : AEMP_EINVAL;
}

static X509 *new_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key)
{
    X509 *cert = X509_new();
    if (!cert) return NULL;
    uint64_t serial;
    aemp__random(&serial, sizeof serial);
    ASN1_INTEGER_set_uint64(X509_get_serialNumber(cert), serial >> 1);
    X509_set_version(cert, 2);
    X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
    X509_gmtime_adj(X509_getm_notAfter(cert), (long)VALID_DAYS * 86400);
    X509_set_pubkey(cert, key);
    X509_NAME *name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, (const unsigned char *)"aemp", -1, -1, 0);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(cert, issuer ? X509_get_subject_name(issuer) : name);
    (void)issuer_key;
    return cert;
}

/* The CA in dir: AEMP_ENOENT only when neither file exists (then a new CA
 * is made); a CA that exists but cannot be read is an error, never
 * silently replaced (that would orphan every certificate it signed). */
static int load_ca(const char *cert_path, const char *key_path, X509 **cert, EVP_PKEY **key)
{
    *cert = NULL;
    *key = NULL;
    bool has_cert = access(cert_path, F_OK) == 0, has_key = access(key_path, F_OK) == 0;
    if (!has_cert && !has_key) return AEMP_ENOENT;
    FILE *f = fopen(cert_path, "r");
    if (!f) {
        AEMP_LOGE("gencert: cannot read the CA certificate %s: %s", cert_path, strerror(errno));
        return AEMP_EIO;
    }
    *cert = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    f = fopen(key_path, "r");
    if (!f) {
        AEMP_LOGE("gencert: cannot read the CA key %s: %s", key_path, strerror(errno));
        X509_free(*cert);
        *cert = NULL;
        return AEMP_EIO;
    }
    *key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    if (!*cert || !*key) {
        X509_free(*cert);
        EVP_PKEY_free(*key);
        AEMP_LOGE("gencert: cannot read the CA in %s / %s", cert_path, key_path);
        return AEMP_EINVAL;
    }
    return 0;
}

static int make_ca(const char *cert_path, const char *key_path, X509 **cert, EVP_PKEY **key)
{
    *key = EVP_EC_gen("P-256");
    if (!*key) return AEMP_ENOMEM;
    *cert = new_cert(*key, "aemp CA", NULL, NULL);
    int rc = *cert ? 0 : AEMP_ENOMEM;
    if (!rc) rc = add_ext(*cert, *cert, NID_basic_constraints, "critical,CA:TRUE");
    if (!rc) rc = add_ext(*cert, *cert, NID_key_usage, "critical,keyCertSign,cRLSign");
    if (!rc) rc = add_ext(*cert, *cert, NID_subject_key_identifier, "hash");
    if (!rc && !X509_sign(*cert, *key, EVP_sha256())) rc = AEMP_EINVAL;
    if (!rc) rc = write_key(key_path, *key);
    if (!rc) rc = write_cert(cert_path, *cert);
    if (rc) {
        X509_free(*cert);
        EVP_PKEY_free(*key);
        *cert = NULL;
        *key = NULL;
    }
    return rc;
}

int aemp_tls_gencert(const char *dir, const char *name, const char *const *hosts, size_t nhosts)
{
    if (!dir || !name || !*name || strchr(name, '/') || !hosts || nhosts == 0) return AEMP_EINVAL;
    char ca_pem[4096], ca_key[4096], pem[4096], key[4096];
    if (path_of(ca_pem, sizeof ca_pem, dir, "ca", ".pem") ||
        path_of(ca_key, sizeof ca_key, dir, "ca", ".key") ||
        path_of(pem, sizeof pem, dir, name, ".pem") || path_of(key, sizeof key, dir, name, ".key"))
        return AEMP_ETOOBIG;
    if (mkdir(dir, 0700) && errno != EEXIST) {
        AEMP_LOGE("gencert: cannot create %s: %s", dir, strerror(errno));
        return AEMP_EIO;
    }
    /* Subject alternative names: DNS for names, IP for addresses. The list
     * is OpenSSL config text, so a host may hold only name characters. */
    char san[4096] = "";
    size_t used = 0;
    for (size_t i = 0; i < nhosts; i++) {
        if (!hosts[i] || !*hosts[i] ||
            strspn(hosts[i], "abcdefghijklmnopqrstuvwxyz"
                             "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                             "0123456789.-_:*") != strlen(hosts[i])) {
            AEMP_LOGE("gencert: '%s' is not a host name or address", hosts[i] ? hosts[i] : "");
            return AEMP_EINVAL;
        }
        unsigned char b[16];
        bool ip = inet_pton(AF_INET, hosts[i], b) == 1 || inet_pton(AF_INET6, hosts[i], b) == 1;
        int w = snprintf(san + used, sizeof san - used, "%s%s:%s", i ? "," : "", ip ? "IP" : "DNS",
                         hosts[i]);
        if (w < 0 || (size_t)w >= sizeof san - used) return AEMP_ETOOBIG;
        used += (size_t)w;
    }
    X509 *ca = NULL, *cert = NULL;
    EVP_PKEY *cakey = NULL, *pkey = NULL;
    int rc = load_ca(ca_pem, ca_key, &ca, &cakey);
    if (rc == AEMP_ENOENT) rc = make_ca(ca_pem, ca_key, &ca, &cakey);
    if (rc) goto done;
    pkey = EVP_EC_gen("P-256");
    cert = pkey ? new_cert(pkey, hosts[0], ca, cakey) : NULL;
    rc = cert ? 0 : AEMP_ENOMEM;
    if (!rc) rc = add_ext(cert, ca, NID_basic_constraints, "critical,CA:FALSE");
    if (!rc) rc = add_ext(cert, ca, NID_key_usage, "critical,digitalSignature,keyAgreement");
    if (!rc) rc = add_ext(cert, ca, NID_ext_key_usage, "serverAuth,clientAuth");
    if (!rc) rc = add_ext(cert, ca, NID_subject_alt_name, san);
    if (!rc) rc = add_ext(cert, ca, NID_authority_key_identifier, "keyid");
    if (!rc && !X509_sign(cert, cakey, EVP_sha256())) rc = AEMP_EINVAL;
    if (!rc) rc = write_key(key, pkey);
    if (!rc) rc = write_cert(pem, cert);
    if (rc) {
        unsigned long e = ERR_get_error();
        char buf[200] = "";
        if (e) ERR_error_string_n(e, buf, sizeof buf);
        AEMP_LOGE("gencert: cannot make the certificate for %s: %s %s", name, aemp_strerror(rc),
                  buf);
    }
done:
    ERR_clear_error();
    X509_free(ca);
    X509_free(cert);
    EVP_PKEY_free(cakey);
    EVP_PKEY_free(pkey);
    return rc;
}
