/*
 * tls: chatd's server-side TLS (STARTTLS on native c2s), OpenSSL.
 *
 * One SSL_CTX from cfg.tls_cert/tls_key; each connection gets an SSL on its
 * non-blocking socket. The helpers fold OpenSSL's WANT_READ/WANT_WRITE into
 * one result so the transport can drive them from the event loop.
 */
#ifndef CHATD_TLS_H
#define CHATD_TLS_H

#include <stddef.h>
#include <sys/types.h>
#include <openssl/ssl.h>
#include "chatd.h"

typedef struct tls_ctx tls_ctx;

/* d->tls = context when cert and key are configured (else NULL).
 * Returns 0, or -1 when they are set but cannot be loaded. */
int   tls_init(chatd *d);
void  tls_free(chatd *d);

SSL  *tls_session_new(tls_ctx *t, int fd);

enum { TLS_IO_OK = 1, TLS_IO_WANT_READ = 0, TLS_IO_WANT_WRITE = -2,
       TLS_IO_CLOSED = -3, TLS_IO_ERROR = -1 };

/* TLS_IO_OK when the handshake is complete. */
int     tls_handshake(SSL *ssl);
/* > 0 bytes read, or a TLS_IO_* code (never TLS_IO_OK). */
ssize_t tls_read(SSL *ssl, void *buf, size_t len);
/* > 0 bytes written, or a TLS_IO_* code (never TLS_IO_OK). */
ssize_t tls_write(SSL *ssl, const void *buf, size_t len);
const char *tls_last_error(void);

#endif
