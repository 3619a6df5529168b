/*
 * upload_slot: the signed XEP-0363 upload slot that chatd hands out and
 * mod_bosh's `bosh-upload` handler checks (issue 17). Pure: no I/O, so
 * both sides agree on one definition of "valid" and unit tests drive it.
 *
 * A slot is (id, name, size, content type, expiry, user). chatd signs it
 * with HMAC-SHA256 under the upload key (a file only root and chatd's
 * group read; mod_bosh reads it as root at configuration time) and puts
 * the signature in the PUT URL:
 *
 *   <upload_url>/<id>/<name>?e=<expiry>&s=<size>&u=<localpart>&h=<hex>
 *
 * The GET URL is the same without the query. The file on disk is
 * `<dir>/<id>-<name>`: both parts come from this file's validators, never
 * from a path the client chose.
 */
#ifndef COMMON_UPLOAD_SLOT_H
#define COMMON_UPLOAD_SLOT_H

#include <stddef.h>

#define UPLOAD_ID_LEN     32    /* hex characters (128 random bits) */
#define UPLOAD_NAME_MAX   100   /* bytes of a sanitized name */
#define UPLOAD_SIG_HEX    64    /* HMAC-SHA256, hex */
#define UPLOAD_CTYPE_MAX  127
#define UPLOAD_KEY_MIN    16    /* bytes */

typedef struct upload_slot {
    const char        *id;            /* UPLOAD_ID_LEN lowercase hex */
    const char        *name;          /* sanitized (upload_name_is_clean) */
    unsigned long long size;          /* exact byte count of the PUT */
    const char        *content_type;  /* normalized, "" when the request had none */
    long long          expires;       /* unix seconds; the PUT must come before */
    const char        *user;          /* localpart of the requester */
} upload_slot;

/* 1 if id is exactly UPLOAD_ID_LEN lowercase hex characters. */
int upload_id_valid(const char *id);

/* A file name a URL and a file system can carry as it is: the last path
 * component of `in` (after '/' or '\\'), every byte outside
 * [A-Za-z0-9._-] replaced by '_', runs of '_' collapsed, leading dots
 * and dashes dropped (no hidden file, no option-looking name), cut to
 * UPLOAD_NAME_MAX keeping the extension, "file" when nothing is left.
 * out needs UPLOAD_NAME_MAX + 1 bytes. Idempotent. */
void upload_name_sanitize(const char *in, char *out);

/* 1 if name is what upload_name_sanitize makes of it (non-empty). */
int upload_name_is_clean(const char *name);

/* Content type as signed and compared: ASCII, lowercased, surrounding
 * blanks cut. Returns 0, or -1 if it is too long or has a control or
 * non-ASCII byte (the slot request is refused). out needs
 * UPLOAD_CTYPE_MAX + 1 bytes. NULL in: "". */
int upload_ctype_normalize(const char *in, char *out);

/* HMAC-SHA256 over every field of s (each length-prefixed, so no field
 * can bleed into the next), as lowercase hex in sig (65 bytes).
 * Returns 0, -1 if s has an invalid id or name. */
int upload_slot_sign(const unsigned char *key, size_t keylen,
                     const upload_slot *s, char *sig);

/* 1 if sig is the signature of s, compared in constant time; 0 if not
 * (also for a malformed sig, id or name). Expiry is not looked at:
 * upload_slot_expired says that, so the caller can answer differently. */
int upload_slot_verify(const unsigned char *key, size_t keylen,
                       const upload_slot *s, const char *sig);

/* 1 if the slot's expiry is before now. */
int upload_slot_expired(const upload_slot *s, long long now);

/* The Content-Type a stored file is served with, from its (clean) name's
 * extension: a short list of types a browser only displays (images other
 * than SVG, audio, video, PDF, plain text); anything else, HTML and SVG
 * included, is application/octet-stream. */
const char *upload_serve_type(const char *name);

/* Percent-encode s for a URL query value (unreserved bytes as they are).
 * Returns the length written (NUL-terminated), or (size_t)-1 when out is
 * too small. */
size_t upload_query_escape(const char *s, char *out, size_t outlen);

#endif
