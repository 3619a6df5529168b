/*
 * scram: the SCRAM maths (RFC 5802, RFC 7677) and the stored verifier form.
 *
 * Why here, apart from I/O: chatd (SASL), chatctl (adduser) and the tests
 * all need the same bytes; keeping the maths pure lets the unit tests check
 * them against the RFC vectors. Passwords only pass through: what is stored
 * is "<iterations>,<salt b64>,<StoredKey b64>,<ServerKey b64>".
 *
 * Server side of one exchange (scram_server):
 *   client-first  -> scram_server_start()  -> user name to look up
 *   lookup done   -> scram_server_first()  -> server-first message
 *   client-final  -> scram_server_final()  -> server-final message (v=...)
 */
#ifndef COMMON_SCRAM_H
#define COMMON_SCRAM_H

#include <stddef.h>

typedef enum { SCRAM_SHA1 = 0, SCRAM_SHA256 = 1 } scram_hash;

#define SCRAM_MAX_KEY   32          /* SHA-256 output */
#define SCRAM_MAX_SALT  64
#define SCRAM_DEFAULT_ITERATIONS 4096
#define SCRAM_MIN_ITERATIONS     1024
#define SCRAM_MAX_ITERATIONS     1000000

typedef struct scram_verifier {
    scram_hash    hash;
    unsigned      iterations;
    unsigned char salt[SCRAM_MAX_SALT];
    size_t        salt_len;
    unsigned char stored_key[SCRAM_MAX_KEY];
    unsigned char server_key[SCRAM_MAX_KEY];
} scram_verifier;

size_t      scram_hash_len(scram_hash h);           /* 20 or 32 */
const char *scram_mech_name(scram_hash h);          /* "SCRAM-SHA-1" ... */
const char *scram_field_name(scram_hash h);         /* "scram-sha-1" (Redis hash field) */

/* ---- base64 (standard alphabet, padded; decode is strict) ---- */
/* Returns the encoded length; out needs 4*((len+2)/3)+1 bytes. */
size_t scram_b64_encode(const unsigned char *in, size_t len, char *out);
/* Returns 0 and *outlen, or -1 if the input is not canonical base64 or
 * does not fit in outcap. An empty input decodes to 0 bytes. */
int    scram_b64_decode(const char *in, size_t len, unsigned char *out,
                        size_t outcap, size_t *outlen);

/* ---- the maths ---- */
/* SaltedPassword = Hi(password, salt, i) (PBKDF2-HMAC). 0 or -1. */
int  scram_salted_password(scram_hash h, const char *password, size_t pwlen,
                           const unsigned char *salt, size_t salt_len,
                           unsigned iterations, unsigned char *out);
int  scram_make_verifier(scram_hash h, const char *password,
                         const unsigned char *salt, size_t salt_len,
                         unsigned iterations, scram_verifier *out);
/* PLAIN: recompute StoredKey from password; 1 match, 0 no match. */
int  scram_check_password(const scram_verifier *v, const char *password);
/* 1 if proof (ClientProof, hash_len bytes) is right for auth_message. */
int  scram_verify_client_proof(const scram_verifier *v, const char *auth_message,
                               size_t am_len, const unsigned char *proof,
                               size_t proof_len);
void scram_server_signature(const scram_verifier *v, const char *auth_message,
                            size_t am_len, unsigned char *out);
/* Client side, for tests and tools: ClientProof from SaltedPassword. */
void scram_client_proof(scram_hash h, const unsigned char *salted_password,
                        const char *auth_message, size_t am_len,
                        unsigned char *out);

/* ---- stored form ---- */
/* Writes "<i>,<salt>,<StoredKey>,<ServerKey>"; returns length or -1 if
 * buflen is too small (256 bytes always suffices). */
int  scram_verifier_format(const scram_verifier *v, char *buf, size_t buflen);
int  scram_verifier_parse(scram_hash h, const char *s, scram_verifier *out);

/* ---- server side of one exchange ---- */
typedef struct scram_server {
    scram_hash hash;
    char  username[256];        /* decoded (=2C/=3D) */
    char  authzid[256];         /* "" if none */
    char *gs2_header;           /* "n,," or "y,a=...," */
    char *client_first_bare;
    char *server_first;
    char *nonce;                /* client nonce + server nonce */
    scram_verifier v;
} scram_server;

void scram_server_init(scram_server *s, scram_hash h);
void scram_server_clear(scram_server *s);
/* Parse client-first. 0 ok (username set), -1 malformed, -2 channel
 * binding requested ("p=": we offer no -PLUS mechanism). */
int  scram_server_start(scram_server *s, const char *msg, size_t len);
/* Build server-first with this verifier and server nonce (printable,
 * no ','); the result stays owned by s. NULL on error. */
const char *scram_server_first(scram_server *s, const scram_verifier *v,
                               const char *server_nonce);
/* Check client-final. Returns 0 and writes "v=..." into out (outcap >= 64),
 * -1 malformed, -2 wrong proof / nonce / channel binding. */
int  scram_server_final(scram_server *s, const char *msg, size_t len,
                        char *out, size_t outcap);

#endif
