/*
 * bosh_gzip: HTTP content coding for mod_bosh (XEP-0124 §overview lets a
 * connection manager compress answers when the request's Accept-Encoding
 * allows it, and §session-response `accept` lists the encodings it can
 * decompress in requests).
 *
 * Why here and not mod_deflate: mod_bosh writes each answer in one piece
 * with a Content-Length (never chunked, §overview), so it compresses the
 * whole body first and states the compressed length. Request bodies are
 * inflated with a cap on the inflated size (BoshMaxBodySize), so a small
 * "zip bomb" cannot make us allocate more than an uncompressed body could.
 *
 * Pure logic on memory buffers (zlib + an APR pool); no httpd.
 */
#ifndef MOD_BOSH_BOSH_GZIP_H
#define MOD_BOSH_BOSH_GZIP_H

#include <stddef.h>
#include "apr_pools.h"

/* Answers shorter than this are sent as they are (not worth a header). */
#define BOSH_GZIP_MIN 512

/* 1 if an Accept-Encoding value allows gzip (a "gzip", "x-gzip" or "*"
 * token whose q is not 0, and no "gzip;q=0"). NULL: 0. */
int bosh_accepts_gzip(const char *accept_encoding);

/* gzip in[0..len) into a pool buffer. Returns 0 with *out and *out_len set, or -1
 * (then send the body uncompressed). */
int bosh_gzip(apr_pool_t *p, const char *in, size_t len,
              char **out, size_t *out_len);

typedef enum {
    BOSH_GUNZIP_OK = 0,
    BOSH_GUNZIP_TOO_BIG,        /* inflated size would exceed max */
    BOSH_GUNZIP_BAD             /* not a valid gzip stream */
} bosh_gunzip_status;

/* Inflate one gzip stream into a NUL-terminated pool buffer of at most
 * max bytes (the buffer is max + 1: never more, whatever the input). */
bosh_gunzip_status bosh_gunzip(apr_pool_t *p, const char *in, size_t len,
                               size_t max, char **out, size_t *out_len);

#endif
