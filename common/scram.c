/*
 * scram.c: SCRAM-SHA-1 / SCRAM-SHA-256 maths and message handling.
 *
 * Everything here is pure (no I/O, no randomness: callers pass salts and
 * nonces in) so the RFC 5802 / RFC 7677 vectors can be replayed exactly.
 * OpenSSL does the hashing; comparisons of secrets use CRYPTO_memcmp.
 */
#include "scram.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

static const EVP_MD *scram_md(scram_hash h) {
    return h == SCRAM_SHA256 ? EVP_sha256() : EVP_sha1();
}

size_t scram_hash_len(scram_hash h) { return h == SCRAM_SHA256 ? 32 : 20; }

const char *scram_mech_name(scram_hash h) {
    return h == SCRAM_SHA256 ? "SCRAM-SHA-256" : "SCRAM-SHA-1";
}

const char *scram_field_name(scram_hash h) {
    return h == SCRAM_SHA256 ? "scram-sha-256" : "scram-sha-1";
}

/* ---------------------------------------------------------------- base64 */

size_t scram_b64_encode(const unsigned char *in, size_t len, char *out) {
    if (len == 0) { out[0] = '\0'; return 0; }
    return (size_t)EVP_EncodeBlock((unsigned char *)out, in, (int)len);
}

static int b64_char_ok(char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
           (c >= '0' && c <= '9') || c == '+' || c == '/';
}

/* EVP_DecodeBlock skips whitespace and ignores padding in its count, so
 * the input is checked to be canonical first and the padding subtracted. */
int scram_b64_decode(const char *in, size_t len, unsigned char *out,
                     size_t outcap, size_t *outlen) {
    size_t pad = 0, i;
    if (len == 0) { *outlen = 0; return 0; }
    if (len % 4 != 0 || len > 0x7fffffff) return -1;
    if (in[len - 1] == '=') pad++;
    if (in[len - 2] == '=') pad++;
    for (i = 0; i < len - pad; i++)
        if (!b64_char_ok(in[i])) return -1;
    size_t n = len / 4 * 3 - pad;
    if (n > outcap) return -1;
    unsigned char *tmp = malloc(len / 4 * 3 + 1);
    if (!tmp) abort();
    int r = EVP_DecodeBlock(tmp, (const unsigned char *)in, (int)len);
    if (r < 0) { free(tmp); return -1; }
    memcpy(out, tmp, n);
    OPENSSL_cleanse(tmp, len / 4 * 3 + 1);
    free(tmp);
    *outlen = n;
    return 0;
}

/* ------------------------------------------------------------- the maths */

static void hmac(scram_hash h, const unsigned char *key, size_t keylen,
                 const void *data, size_t len, unsigned char *out) {
    unsigned int outlen = 0;
    HMAC(scram_md(h), key, (int)keylen, data, len, out, &outlen);
}

static void digest(scram_hash h, const unsigned char *data, size_t len,
                   unsigned char *out) {
    unsigned int outlen = 0;
    EVP_Digest(data, len, out, &outlen, scram_md(h), NULL);
}

int scram_salted_password(scram_hash h, const char *password, size_t pwlen,
                          const unsigned char *salt, size_t salt_len,
                          unsigned iterations, unsigned char *out) {
    if (iterations == 0 || iterations > SCRAM_MAX_ITERATIONS) return -1;
    return PKCS5_PBKDF2_HMAC(password, (int)pwlen, salt, (int)salt_len,
                             (int)iterations, scram_md(h),
                             (int)scram_hash_len(h), out) == 1 ? 0 : -1;
}

/* StoredKey and ServerKey from SaltedPassword (RFC 5802 §3). */
static void keys_from_salted(scram_hash h, const unsigned char *salted,
                             unsigned char *stored_key, unsigned char *server_key) {
    size_t hl = scram_hash_len(h);
    unsigned char client_key[SCRAM_MAX_KEY];
    hmac(h, salted, hl, "Client Key", 10, client_key);
    digest(h, client_key, hl, stored_key);
    if (server_key) hmac(h, salted, hl, "Server Key", 10, server_key);
    OPENSSL_cleanse(client_key, sizeof client_key);
}

int scram_make_verifier(scram_hash h, const char *password,
                        const unsigned char *salt, size_t salt_len,
                        unsigned iterations, scram_verifier *out) {
    unsigned char salted[SCRAM_MAX_KEY];
    if (salt_len == 0 || salt_len > SCRAM_MAX_SALT) return -1;
    memset(out, 0, sizeof *out);
    if (scram_salted_password(h, password, strlen(password), salt, salt_len,
                              iterations, salted) != 0)
        return -1;
    out->hash = h;
    out->iterations = iterations;
    memcpy(out->salt, salt, salt_len);
    out->salt_len = salt_len;
    keys_from_salted(h, salted, out->stored_key, out->server_key);
    OPENSSL_cleanse(salted, sizeof salted);
    return 0;
}

int scram_check_password(const scram_verifier *v, const char *password) {
    unsigned char salted[SCRAM_MAX_KEY], stored[SCRAM_MAX_KEY];
    if (scram_salted_password(v->hash, password, strlen(password), v->salt,
                              v->salt_len, v->iterations, salted) != 0)
        return 0;
    keys_from_salted(v->hash, salted, stored, NULL);
    int ok = CRYPTO_memcmp(stored, v->stored_key, scram_hash_len(v->hash)) == 0;
    OPENSSL_cleanse(salted, sizeof salted);
    return ok;
}

/* ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage); the proof is
 * right when H(ClientKey) == StoredKey. */
int scram_verify_client_proof(const scram_verifier *v, const char *auth_message,
                              size_t am_len, const unsigned char *proof,
                              size_t proof_len) {
    size_t hl = scram_hash_len(v->hash), i;
    unsigned char sig[SCRAM_MAX_KEY], client_key[SCRAM_MAX_KEY], stored[SCRAM_MAX_KEY];
    if (proof_len != hl) return 0;
    hmac(v->hash, v->stored_key, hl, auth_message, am_len, sig);
    for (i = 0; i < hl; i++) client_key[i] = proof[i] ^ sig[i];
    digest(v->hash, client_key, hl, stored);
    int ok = CRYPTO_memcmp(stored, v->stored_key, hl) == 0;
    OPENSSL_cleanse(client_key, sizeof client_key);
    return ok;
}

void scram_server_signature(const scram_verifier *v, const char *auth_message,
                            size_t am_len, unsigned char *out) {
    hmac(v->hash, v->server_key, scram_hash_len(v->hash), auth_message, am_len, out);
}

void scram_client_proof(scram_hash h, const unsigned char *salted_password,
                        const char *auth_message, size_t am_len,
                        unsigned char *out) {
    size_t hl = scram_hash_len(h), i;
    unsigned char client_key[SCRAM_MAX_KEY], stored[SCRAM_MAX_KEY], sig[SCRAM_MAX_KEY];
    hmac(h, salted_password, hl, "Client Key", 10, client_key);
    digest(h, client_key, hl, stored);
    hmac(h, stored, hl, auth_message, am_len, sig);
    for (i = 0; i < hl; i++) out[i] = client_key[i] ^ sig[i];
}

/* ----------------------------------------------------------- stored form */

int scram_verifier_format(const scram_verifier *v, char *buf, size_t buflen) {
    char salt[4 * SCRAM_MAX_SALT / 3 + 8], sk[64], svk[64];
    size_t hl = scram_hash_len(v->hash);
    scram_b64_encode(v->salt, v->salt_len, salt);
    scram_b64_encode(v->stored_key, hl, sk);
    scram_b64_encode(v->server_key, hl, svk);
    int n = snprintf(buf, buflen, "%u,%s,%s,%s", v->iterations, salt, sk, svk);
    return (n < 0 || (size_t)n >= buflen) ? -1 : n;
}

int scram_verifier_parse(scram_hash h, const char *s, scram_verifier *out) {
    const char *f[4], *end[4];
    size_t hl = scram_hash_len(h), n;
    int i;
    memset(out, 0, sizeof *out);
    out->hash = h;
    f[0] = s;
    for (i = 0; i < 4; i++) {
        const char *comma = strchr(f[i], ',');
        if (i < 3) {
            if (!comma) return -1;
            end[i] = comma;
            f[i + 1] = comma + 1;
        } else {
            if (comma) return -1;
            end[i] = f[i] + strlen(f[i]);
        }
    }
    char *num_end;
    unsigned long it = strtoul(f[0], &num_end, 10);
    if (num_end != end[0] || f[0] == end[0] || it == 0 || it > SCRAM_MAX_ITERATIONS)
        return -1;
    out->iterations = (unsigned)it;
    if (scram_b64_decode(f[1], (size_t)(end[1] - f[1]), out->salt, SCRAM_MAX_SALT,
                         &out->salt_len) != 0 || out->salt_len == 0)
        return -1;
    if (scram_b64_decode(f[2], (size_t)(end[2] - f[2]), out->stored_key,
                         SCRAM_MAX_KEY, &n) != 0 || n != hl)
        return -1;
    if (scram_b64_decode(f[3], (size_t)(end[3] - f[3]), out->server_key,
                         SCRAM_MAX_KEY, &n) != 0 || n != hl)
        return -1;
    return 0;
}

/* --------------------------------------------------------- server side */

void scram_server_init(scram_server *s, scram_hash h) {
    memset(s, 0, sizeof *s);
    s->hash = h;
}

void scram_server_clear(scram_server *s) {
    free(s->gs2_header);
    free(s->client_first_bare);
    free(s->server_first);
    free(s->nonce);
    OPENSSL_cleanse(&s->v, sizeof s->v);
    scram_hash h = s->hash;
    memset(s, 0, sizeof *s);
    s->hash = h;
}

static char *dup_range(const char *p, size_t n) {
    char *r = malloc(n + 1);
    if (!r) abort();
    memcpy(r, p, n);
    r[n] = '\0';
    return r;
}

/* saslname: "=2C" is ',', "=3D" is '='; any other '=' or a NUL is wrong. */
static int decode_saslname(const char *p, size_t n, char *out, size_t outcap) {
    size_t o = 0, i;
    if (n == 0) return -1;
    for (i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\0' || c == ',') return -1;
        if (c == '=') {
            if (i + 2 >= n) return -1;
            if (p[i + 1] == '2' && p[i + 2] == 'C') c = ',';
            else if (p[i + 1] == '3' && p[i + 2] == 'D') c = '=';
            else return -1;
            i += 2;
        }
        if (o + 1 >= outcap) return -1;
        out[o++] = c;
    }
    out[o] = '\0';
    return 0;
}

/* Printable nonce: %x21-2B / %x2D-7E (no comma). */
static int nonce_ok(const char *p, size_t n) {
    size_t i;
    if (n == 0) return 0;
    for (i = 0; i < n; i++)
        if ((unsigned char)p[i] < 0x21 || (unsigned char)p[i] > 0x7e || p[i] == ',')
            return 0;
    return 1;
}

/* Length of the comma-free field starting at p within [p, end). */
static size_t field_len(const char *p, const char *end) {
    const char *c = memchr(p, ',', (size_t)(end - p));
    return c ? (size_t)(c - p) : (size_t)(end - p);
}

int scram_server_start(scram_server *s, const char *msg, size_t len) {
    const char *p = msg, *end = msg + len;
    size_t n;
    if (len == 0 || memchr(msg, '\0', len)) return -1;

    /* gs2-cbind-flag */
    if (*p == 'p') return -2;
    if (*p != 'n' && *p != 'y') return -1;
    p++;
    if (p >= end || *p != ',') return -1;
    p++;
    /* [authzid] */
    n = field_len(p, end);
    if (n > 0) {
        if (n < 3 || p[0] != 'a' || p[1] != '=') return -1;
        if (decode_saslname(p + 2, n - 2, s->authzid, sizeof s->authzid) != 0) return -1;
    }
    p += n;
    if (p >= end || *p != ',') return -1;
    p++;
    free(s->gs2_header);
    s->gs2_header = dup_range(msg, (size_t)(p - msg));

    /* client-first-bare: n=user,r=nonce[,ext] ("m=" is mandatory-to-fail) */
    const char *bare = p;
    n = field_len(p, end);
    if (n < 3 || p[0] != 'n' || p[1] != '=') return -1;
    if (decode_saslname(p + 2, n - 2, s->username, sizeof s->username) != 0) return -1;
    p += n;
    if (p >= end || *p != ',') return -1;
    p++;
    n = field_len(p, end);
    if (n < 3 || p[0] != 'r' || p[1] != '=' || !nonce_ok(p + 2, n - 2)) return -1;
    free(s->nonce);
    s->nonce = dup_range(p + 2, n - 2);
    free(s->client_first_bare);
    s->client_first_bare = dup_range(bare, (size_t)(end - bare));
    return 0;
}

const char *scram_server_first(scram_server *s, const scram_verifier *v,
                               const char *server_nonce) {
    char salt[4 * SCRAM_MAX_SALT / 3 + 8];
    if (!s->nonce || v->hash != s->hash || !nonce_ok(server_nonce, strlen(server_nonce)))
        return NULL;
    s->v = *v;
    size_t cn = strlen(s->nonce), sn = strlen(server_nonce);
    char *nonce = malloc(cn + sn + 1);
    if (!nonce) abort();
    memcpy(nonce, s->nonce, cn);
    memcpy(nonce + cn, server_nonce, sn + 1);
    free(s->nonce);
    s->nonce = nonce;
    scram_b64_encode(v->salt, v->salt_len, salt);
    size_t need = strlen(nonce) + strlen(salt) + 32;
    free(s->server_first);
    s->server_first = malloc(need);
    if (!s->server_first) abort();
    snprintf(s->server_first, need, "r=%s,s=%s,i=%u", nonce, salt, v->iterations);
    return s->server_first;
}

int scram_server_final(scram_server *s, const char *msg, size_t len,
                       char *out, size_t outcap) {
    const char *p = msg, *end = msg + len;
    unsigned char cb[600], proof[SCRAM_MAX_KEY], sig[SCRAM_MAX_KEY];
    size_t n, cb_len, proof_len, hl = scram_hash_len(s->hash);
    int bad = 0;

    if (!s->server_first || len == 0 || memchr(msg, '\0', len)) return -1;
    /* c=<base64 of gs2-header> */
    n = field_len(p, end);
    if (n < 2 || p[0] != 'c' || p[1] != '=') return -1;
    if (scram_b64_decode(p + 2, n - 2, cb, sizeof cb, &cb_len) != 0) return -1;
    if (cb_len != strlen(s->gs2_header) || memcmp(cb, s->gs2_header, cb_len) != 0)
        bad = 1;
    p += n;
    if (p >= end || *p != ',') return -1;
    p++;
    /* r=<nonce> */
    n = field_len(p, end);
    if (n < 2 || p[0] != 'r' || p[1] != '=') return -1;
    if (n - 2 != strlen(s->nonce) || memcmp(p + 2, s->nonce, n - 2) != 0) bad = 1;
    p += n;
    /* [,extensions] ,p=<proof> : the proof is the last attribute. */
    const char *proof_attr = NULL;
    while (p < end) {
        if (*p != ',') return -1;
        p++;
        n = field_len(p, end);
        if (n >= 2 && p[0] == 'p' && p[1] == '=') {
            if (p + n != end) return -1;
            proof_attr = p;
        }
        p += n;
    }
    if (!proof_attr) return -1;
    if (scram_b64_decode(proof_attr + 2, (size_t)(end - proof_attr - 2), proof,
                         sizeof proof, &proof_len) != 0 || proof_len != hl)
        return -1;
    if (bad) return -2;

    /* AuthMessage = client-first-bare "," server-first "," client-final-without-proof */
    size_t without_proof = (size_t)(proof_attr - 1 - msg);
    size_t am_len = strlen(s->client_first_bare) + 1 + strlen(s->server_first) + 1 + without_proof;
    char *am = malloc(am_len + 1);
    if (!am) abort();
    snprintf(am, am_len + 1, "%s,%s,%.*s", s->client_first_bare, s->server_first,
             (int)without_proof, msg);
    int ok = scram_verify_client_proof(&s->v, am, am_len, proof, proof_len);
    if (ok) scram_server_signature(&s->v, am, am_len, sig);
    free(am);
    if (!ok) return -2;
    if (outcap < 2 + 4 * ((hl + 2) / 3) + 1) return -1;
    out[0] = 'v';
    out[1] = '=';
    scram_b64_encode(sig, hl, out + 2);
    return 0;
}
