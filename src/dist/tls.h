/* tls.h - TLS sessions over memory BIOs for distribution connections. */
#ifndef AEMP_TLS_H
#define AEMP_TLS_H

#include "../aemp_impl.h"

#include <arpa/inet.h>

typedef struct aemp__tls_config {
    const char *cert; /* PEM certificate chain */
    const char *key;  /* PEM private key */
    const char *ca;   /* PEM CA certificates to trust */
    bool verify;      /* verify peers (and, as client, their host name) */
} aemp__tls_config;

typedef struct aemp__tls_ctx aemp__tls_ctx;
typedef struct aemp__tls aemp__tls;

/* Load certificates; on error err explains in one line. */
int aemp__tls_ctx_new(const aemp__tls_config *cfg, aemp__tls_ctx **out, char *err, size_t errlen);
void aemp__tls_ctx_free(aemp__tls_ctx *t);

/* A session; peer_host (client side) is checked against the server's
 * certificate and sent as SNI. */
int aemp__tls_new(aemp__tls_ctx *ctx, bool server, const char *peer_host, aemp__tls **out);
void aemp__tls_free(aemp__tls *t);
/* Client: produce the first handshake bytes into out. */
int aemp__tls_start(aemp__tls *t, aemp_buf *out);
/* Ciphertext in; plaintext appended to plain; ciphertext to send appended
 * to out. Returns 0 or a negative error (aemp__tls_error explains). */
int aemp__tls_feed(aemp__tls *t, const char *cipher, size_t len, aemp_buf *plain, aemp_buf *out);
/* Encrypt plain (only once established); ciphertext appended to out. */
int aemp__tls_write(aemp__tls *t, const char *plain, size_t len, aemp_buf *out);
bool aemp__tls_established(const aemp__tls *t);
const char *aemp__tls_error(const aemp__tls *t);
/* Acceptor, after the distribution handshake: the client certificate must
 * name the host part of the node name it claimed. */
int aemp__tls_check_peer_host(aemp__tls *t, const char *host);

#endif
