/*
 * tls: the SSL_CTX for STARTTLS and thin non-blocking wrappers.
 *
 * Why wrappers: OpenSSL reports "try again" through SSL_get_error with
 * several codes; the transport only needs to know whether to wait for
 * readability, writability, or give up.
 */
#include "tls.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/err.h>
#include "log.h"

struct tls_ctx {
    SSL_CTX *ctx;
};

const char *tls_last_error(void) {
    static char buf[256];
    unsigned long e = ERR_peek_last_error();
    if (!e) return errno ? strerror(errno) : "connection closed";
    ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    return buf;
}

int tls_init(chatd *d) {
    d->tls = NULL;
    if (!d->cfg.tls_cert || !d->cfg.tls_key) return 0;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        log_error("tls: SSL_CTX_new: %s", tls_last_error());
        return -1;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                          SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                          SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_use_certificate_chain_file(ctx, d->cfg.tls_cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, d->cfg.tls_key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        log_error("tls: loading %s / %s: %s", d->cfg.tls_cert, d->cfg.tls_key,
                  tls_last_error());
        SSL_CTX_free(ctx);
        return -1;
    }
    struct tls_ctx *t = calloc(1, sizeof(*t));
    if (!t) { SSL_CTX_free(ctx); return -1; }
    t->ctx = ctx;
    d->tls = t;
    return 0;
}

void tls_free(chatd *d) {
    if (!d->tls) return;
    SSL_CTX_free(d->tls->ctx);
    free(d->tls);
    d->tls = NULL;
}

SSL *tls_session_new(tls_ctx *t, int fd) {
    SSL *ssl = SSL_new(t->ctx);
    if (!ssl) return NULL;
    if (SSL_set_fd(ssl, fd) != 1) { SSL_free(ssl); return NULL; }
    SSL_set_accept_state(ssl);
    return ssl;
}

static int map_error(SSL *ssl, int rc) {
    switch (SSL_get_error(ssl, rc)) {
    case SSL_ERROR_WANT_READ:   return TLS_IO_WANT_READ;
    case SSL_ERROR_WANT_WRITE:  return TLS_IO_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN: return TLS_IO_CLOSED;
    default:
        return TLS_IO_ERROR;     /* tls_last_error() tells why */
    }
}

/* SSL_get_error looks at this thread's error queue: start each call
 * with an empty one so a stale error elsewhere cannot fail this one. */
int tls_handshake(SSL *ssl) {
    ERR_clear_error();
    int rc = SSL_do_handshake(ssl);
    return rc == 1 ? TLS_IO_OK : map_error(ssl, rc);
}

ssize_t tls_read(SSL *ssl, void *buf, size_t len) {
    ERR_clear_error();
    int n = SSL_read(ssl, buf, (int)(len > 1 << 30 ? 1 << 30 : len));
    return n > 0 ? n : map_error(ssl, n);
}

ssize_t tls_write(SSL *ssl, const void *buf, size_t len) {
    ERR_clear_error();
    int n = SSL_write(ssl, buf, (int)(len > 1 << 30 ? 1 << 30 : len));
    return n > 0 ? n : map_error(ssl, n);
}
