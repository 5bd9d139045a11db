/* util.c - buffers, strings, errors, randomness. */
#include "../aemp_impl.h"

#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

int aemp__buf_reserve(aemp_buf *b, size_t n)
{
    if (n <= b->cap - b->len) return 0;
    if (n > SIZE_MAX / 2 - b->len) return AEMP_ENOMEM;
    size_t cap = b->cap ? b->cap : 64;
    while (cap - b->len < n)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) return AEMP_ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int aemp__buf_append(aemp_buf *b, const void *p, size_t n)
{
    if (n == 0) return 0;
    int rc = aemp__buf_reserve(b, n);
    if (rc) return rc;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

int aemp__buf_put_u8(aemp_buf *b, uint8_t v)
{
    return aemp__buf_append(b, &v, 1);
}

int aemp__buf_put_u16(aemp_buf *b, uint16_t v)
{
    uint8_t d[2];
    aemp__put_u16(d, v);
    return aemp__buf_append(b, d, 2);
}

int aemp__buf_put_u32(aemp_buf *b, uint32_t v)
{
    uint8_t d[4];
    aemp__put_u32(d, v);
    return aemp__buf_append(b, d, 4);
}

void aemp__buf_consume(aemp_buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

void aemp_buf_free(aemp_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

aemp_term aemp_buf_term(const aemp_buf *b)
{
    aemp_term t = {b->data, b->len};
    return t;
}

int aemp_buf_put_term(aemp_buf *b, const aemp_term *t)
{
    if (!t || (!t->data && t->len)) return AEMP_EINVAL;
    return aemp__buf_append(b, t->data, t->len);
}

bool aemp__host_is_self(const char *host)
{
    char self[256];
    if (gethostname(self, sizeof self - 1)) return false;
    self[sizeof self - 1] = 0;
    if (strcasecmp(host, self) == 0) return true;
    char *dot = strchr(self, '.');
    if (dot) *dot = 0;
    return strcasecmp(host, self) == 0;
}

int aemp__reserve(void *arr, size_t want, size_t *cap, size_t size)
{
    if (want <= *cap) return 0;
    size_t c = *cap ? *cap : 4;
    while (c < want)
        c *= 2;
    if (c > SIZE_MAX / size) return AEMP_ENOMEM;
    void *p;
    memcpy(&p, arr, sizeof p);
    void *q = realloc(p, c * size);
    if (!q) return AEMP_ENOMEM;
    memcpy(arr, &q, sizeof q);
    *cap = c;
    return 0;
}

int aemp__grow(void *arr, size_t n, size_t *cap, size_t size, size_t first)
{
    void *p;
    if (n < *cap) return 0;
    memcpy(&p, arr, sizeof p);
    size_t c = *cap ? 2 * *cap : first;
    void *q = realloc(p, c * size);
    if (!q) return AEMP_ENOMEM;
    memcpy(arr, &q, sizeof q);
    *cap = c;
    return 0;
}

size_t aemp__strlcpy(char *dst, const char *src, size_t size)
{
    size_t n = strlen(src);
    if (size) {
        size_t k = n < size - 1 ? n : size - 1;
        memcpy(dst, src, k);
        dst[k] = 0;
    }
    return n;
}

int aemp__random(void *p, size_t n)
{
    return RAND_bytes(p, (int)n) == 1 ? 0 : AEMP_EIO;
}

const char *aemp_strerror(int err)
{
    switch (err) {
    case AEMP_OK:
        return "ok";
    case AEMP_EINVAL:
        return "invalid argument";
    case AEMP_ENOMEM:
        return "out of memory";
    case AEMP_ENOENT:
        return "no such port, name or node";
    case AEMP_EEXIST:
        return "already exists";
    case AEMP_ECLOSED:
        return "closed";
    case AEMP_EBADTERM:
        return "malformed or unsupported term";
    case AEMP_ETOOBIG:
        return "too big";
    case AEMP_EPROTO:
        return "protocol error";
    case AEMP_EAUTH:
        return "authentication failed";
    case AEMP_ECONNREFUSED:
        return "connection refused";
    case AEMP_ETIMEDOUT:
        return "timed out";
    case AEMP_EIO:
        return "I/O error";
    case AEMP_ENOTSUP:
        return "not supported";
    case AEMP_ENONODE:
        return "node not registered with EPMD";
    case AEMP_ENOMATCH:
        return "term does not match";
    case AEMP_EBUSY:
        return "busy: send queue full or too many connections";
    case AEMP_ENOCONN:
        return "connection lost (noconnection)";
    case AEMP_EDIE:
        return "callback failed";
    default:
        return "unknown error";
    }
}
