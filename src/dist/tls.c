/*
 * tls.c - TLS for distribution connections (as OTP's inet_tls_dist: TLS
 * from the first byte, then the usual handshake with 4-byte framing).
 * OpenSSL runs over memory BIOs so that libuv keeps all socket I/O.
 */
#include "tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdlib.h>

struct aemp__tls_ctx {
    SSL_CTX *server;
    SSL_CTX *client;
    bool verify;
};

struct aemp__tls {
    SSL *ssl;
    BIO *rbio; /* ciphertext from the peer */
    BIO *wbio; /* ciphertext to the peer */
    bool server;
    bool established;
    bool verify;
    char host[AEMP_MAXNODELEN + 1];
    char error[AEMP_MAXNODELEN + 200];
};

static void openssl_error(char *out, size_t size, const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[160] = "";
    if (e) ERR_error_string_n(e, buf, sizeof buf);
    snprintf(out, size, "%s%s%s", what, e ? ": " : "", buf);
    ERR_clear_error();
}

static SSL_CTX *make_ctx(bool server, const aemp__tls_config *cfg, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (!ctx) {
        openssl_error(err, errlen, "cannot create a TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->cert) != 1) {
        char what[300];
        snprintf(what, sizeof what, "cannot load certificate %s", cfg->cert);
        openssl_error(err, errlen, what);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, cfg->key, SSL_FILETYPE_PEM) != 1) {
        char what[300];
        snprintf(what, sizeof what, "cannot load private key %s", cfg->key);
        openssl_error(err, errlen, what);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        openssl_error(err, errlen, "private key does not match the certificate");
        goto fail;
    }
    if (cfg->ca && SSL_CTX_load_verify_locations(ctx, cfg->ca, NULL) != 1) {
        char what[300];
        snprintf(what, sizeof what, "cannot load CA certificates %s", cfg->ca);
        openssl_error(err, errlen, what);
        goto fail;
    }
    if (cfg->verify) {
        int mode = SSL_VERIFY_PEER;
        if (server) mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
        SSL_CTX_set_verify(ctx, mode, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_RELEASE_BUFFERS);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

int aemp__tls_ctx_new(const aemp__tls_config *cfg, aemp__tls_ctx **out, char *err, size_t errlen)
{
    if (!cfg->cert || !cfg->key) {
        snprintf(err, errlen, "TLS needs a certificate and a key");
        return AEMP_EINVAL;
    }
    if (cfg->verify && !cfg->ca) {
        snprintf(err, errlen, "TLS peer verification needs a CA file");
        return AEMP_EINVAL;
    }
    aemp__tls_ctx *t = calloc(1, sizeof *t);
    if (!t) return AEMP_ENOMEM;
    t->verify = cfg->verify;
    t->server = make_ctx(true, cfg, err, errlen);
    if (t->server) t->client = make_ctx(false, cfg, err, errlen);
    if (!t->server || !t->client) {
        aemp__tls_ctx_free(t);
        return AEMP_EINVAL;
    }
    *out = t;
    return 0;
}

void aemp__tls_ctx_free(aemp__tls_ctx *t)
{
    if (!t) return;
    SSL_CTX_free(t->server);
    SSL_CTX_free(t->client);
    free(t);
}

static bool is_ip(const char *host)
{
    unsigned char b[16];
    return inet_pton(AF_INET, host, b) == 1 || inet_pton(AF_INET6, host, b) == 1;
}

int aemp__tls_new(aemp__tls_ctx *ctx, bool server, const char *peer_host, aemp__tls **out)
{
    aemp__tls *t = calloc(1, sizeof *t);
    if (!t) return AEMP_ENOMEM;
    t->server = server;
    t->verify = ctx->verify;
    t->ssl = SSL_new(server ? ctx->server : ctx->client);
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    if (!t->ssl || !t->rbio || !t->wbio) {
        BIO_free(t->rbio);
        BIO_free(t->wbio);
        SSL_free(t->ssl);
        free(t);
        return AEMP_ENOMEM;
    }
    SSL_set_bio(t->ssl, t->rbio, t->wbio);
    if (server) {
        SSL_set_accept_state(t->ssl);
    } else {
        SSL_set_connect_state(t->ssl);
        if (peer_host) {
            aemp__strlcpy(t->host, peer_host, sizeof t->host);
            if (!is_ip(peer_host)) SSL_set_tlsext_host_name(t->ssl, peer_host);
            /* The server's certificate must name the host we connect to. */
            if (t->verify) {
                X509_VERIFY_PARAM *p = SSL_get0_param(t->ssl);
                if (is_ip(peer_host))
                    X509_VERIFY_PARAM_set1_ip_asc(p, peer_host);
                else
                    X509_VERIFY_PARAM_set1_host(p, peer_host, 0);
            }
        }
    }
    *out = t;
    return 0;
}

void aemp__tls_free(aemp__tls *t)
{
    if (!t) return;
    SSL_free(t->ssl); /* frees both BIOs */
    free(t);
}

static int drain(aemp__tls *t, aemp_buf *out)
{
    size_t pending;
    while ((pending = BIO_ctrl_pending(t->wbio)) > 0) {
        int rc = aemp__buf_reserve(out, pending);
        if (rc) return rc;
        int n = BIO_read(t->wbio, out->data + out->len, (int)pending);
        if (n <= 0) break;
        out->len += (size_t)n;
    }
    return 0;
}

static void verify_error(aemp__tls *t)
{
    long v = SSL_get_verify_result(t->ssl);
    const char *who = t->server ? "client" : "server";
    switch (v) {
    case X509_V_OK:
        openssl_error(t->error, sizeof t->error, "TLS handshake failed");
        return;
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
        snprintf(t->error, sizeof t->error, "%s certificate is for another host (expected %s)", who,
                 t->host);
        break;
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
        snprintf(t->error, sizeof t->error, "%s certificate is not trusted (%s)", who,
                 X509_verify_cert_error_string(v));
        break;
    default:
        snprintf(t->error, sizeof t->error, "%s certificate rejected: %s", who,
                 X509_verify_cert_error_string(v));
    }
    ERR_clear_error();
}

static int handshake(aemp__tls *t, aemp_buf *out)
{
    int r = SSL_do_handshake(t->ssl);
    int drc = drain(t, out);
    if (drc) return drc;
    if (r == 1) {
        t->established = true;
        return 0;
    }
    int e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return 0;
    if (t->server && t->verify && SSL_get_verify_result(t->ssl) == X509_V_OK &&
        ERR_GET_REASON(ERR_peek_error()) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
        snprintf(t->error, sizeof t->error, "client sent no certificate");
        ERR_clear_error();
    } else if (ERR_GET_REASON(ERR_peek_error()) == SSL_R_CERTIFICATE_VERIFY_FAILED ||
               SSL_get_verify_result(t->ssl) != X509_V_OK) {
        verify_error(t);
    } else if (ERR_GET_REASON(ERR_peek_error()) == SSL_R_WRONG_VERSION_NUMBER ||
               ERR_GET_REASON(ERR_peek_error()) == SSL_R_HTTP_REQUEST ||
               ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNSUPPORTED_PROTOCOL) {
        snprintf(t->error, sizeof t->error,
                 "peer does not speak TLS (a node without -proto_dist inet_tls?)");
        ERR_clear_error();
    } else if (ERR_peek_error() == 0) {
        snprintf(t->error, sizeof t->error, "TLS handshake failed (peer closed or sent non-TLS)");
    } else {
        openssl_error(t->error, sizeof t->error, "TLS handshake failed");
    }
    return AEMP_EAUTH;
}

int aemp__tls_start(aemp__tls *t, aemp_buf *out)
{
    return handshake(t, out);
}

int aemp__tls_feed(aemp__tls *t, const char *cipher, size_t len, aemp_buf *plain, aemp_buf *out)
{
    if (len && BIO_write(t->rbio, cipher, (int)len) != (int)len) return AEMP_ENOMEM;
    if (!t->established) {
        int rc = handshake(t, out);
        if (rc || !t->established) return rc;
    }
    for (;;) {
        int rc = aemp__buf_reserve(plain, 16384);
        if (rc) return rc;
        size_t room = plain->cap - plain->len;
        int n =
            SSL_read(t->ssl, plain->data + plain->len, room > INT32_MAX ? INT32_MAX : (int)room);
        if (n > 0) {
            plain->len += (size_t)n;
            continue;
        }
        int e = SSL_get_error(t->ssl, n);
        /* Renegotiation or key updates may want to write. */
        int drc = drain(t, out);
        if (drc) return drc;
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return 0;
        if (e == SSL_ERROR_ZERO_RETURN) {
            snprintf(t->error, sizeof t->error, "peer closed the TLS session");
            return AEMP_EIO;
        }
        openssl_error(t->error, sizeof t->error, "TLS read failed");
        return AEMP_EPROTO;
    }
}

int aemp__tls_write(aemp__tls *t, const char *plain, size_t len, aemp_buf *out)
{
    size_t pos = 0;
    while (pos < len) {
        size_t chunk = len - pos > (1u << 30) ? (1u << 30) : len - pos;
        int n = SSL_write(t->ssl, plain + pos, (int)chunk);
        if (n <= 0) {
            openssl_error(t->error, sizeof t->error, "TLS write failed");
            return AEMP_EIO;
        }
        pos += (size_t)n;
        int rc = drain(t, out);
        if (rc) return rc;
    }
    return 0;
}

bool aemp__tls_established(const aemp__tls *t)
{
    return t->established;
}

const char *aemp__tls_error(const aemp__tls *t)
{
    return t->error[0] ? t->error : "TLS error";
}

int aemp__tls_check_peer_host(aemp__tls *t, const char *host)
{
    if (!t->verify) return 0;
    X509 *cert = SSL_get1_peer_certificate(t->ssl);
    if (!cert) {
        snprintf(t->error, sizeof t->error, "peer sent no certificate");
        return AEMP_EAUTH;
    }
    int ok =
        is_ip(host) ? X509_check_ip_asc(cert, host, 0) : X509_check_host(cert, host, 0, 0, NULL);
    X509_free(cert);
    if (ok != 1) {
        snprintf(t->error, sizeof t->error, "peer certificate is not for host %s", host);
        return AEMP_EAUTH;
    }
    return 0;
}
