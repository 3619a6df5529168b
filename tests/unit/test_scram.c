/*
 * test_scram: SCRAM maths against the RFC 5802 (SHA-1) and RFC 7677
 * (SHA-256) example exchanges, the stored verifier form, base64.
 */
#include "unit.h"
#include "../../common/scram.h"

#include <stdlib.h>

/* Replays an RFC exchange through scram_server: the server nonce is the
 * part of the RFC's combined nonce after the client's. */
static void rfc_exchange(scram_hash h, const char *salt_b64,
                         const char *client_first, const char *server_nonce,
                         const char *want_server_first, const char *client_final,
                         const char *want_server_final) {
    unsigned char salt[64];
    size_t salt_len = 0;
    scram_verifier v;
    scram_server s;
    char out[128];

    CHECK(scram_b64_decode(salt_b64, strlen(salt_b64), salt, sizeof salt, &salt_len) == 0);
    CHECK(scram_make_verifier(h, "pencil", salt, salt_len, 4096, &v) == 0);

    scram_server_init(&s, h);
    CHECK(scram_server_start(&s, client_first, strlen(client_first)) == 0);
    CHECK_STR(s.username, "user");
    CHECK_STR(s.gs2_header, "n,,");
    CHECK_STR(scram_server_first(&s, &v, server_nonce), want_server_first);
    CHECK(scram_server_final(&s, client_final, strlen(client_final), out, sizeof out) == 0);
    CHECK_STR(out, want_server_final);

    /* One flipped proof byte must fail with -2. */
    char *bad = strdup(client_final);
    char *p = strstr(bad, ",p=") + 3;
    *p = *p == 'A' ? 'B' : 'A';
    CHECK(scram_server_final(&s, bad, strlen(bad), out, sizeof out) == -2);
    /* A different nonce fails too, even with the right proof. */
    free(bad);
    bad = strdup(client_final);
    p = strstr(bad, ",r=") + 3;
    *p = *p == 'x' ? 'y' : 'x';
    CHECK(scram_server_final(&s, bad, strlen(bad), out, sizeof out) == -2);
    free(bad);
    scram_server_clear(&s);
}

static void test_rfc5802(void) {
    rfc_exchange(SCRAM_SHA1, "QSXCR+Q6sek8bf92",
                 "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
                 "3rfcNHYJY1ZVvWVs7j",
                 "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
                 "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
                 "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=");
}

static void test_rfc7677(void) {
    rfc_exchange(SCRAM_SHA256, "W22ZaJ0SNY7soEsUEjb6gQ==",
                 "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
                 "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
                 "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
                 "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                 "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
                 "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
}

/* Client-side proof from SaltedPassword gives the RFC 5802 proof bytes. */
static void test_client_proof(void) {
    unsigned char salt[16], salted[32], proof[32], want[32];
    size_t n, wn;
    const char *am = "n=user,r=fyko+d2lbbFgONRv9qkxdawL,"
                     "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096,"
                     "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j";
    CHECK(scram_b64_decode("QSXCR+Q6sek8bf92", 16, salt, sizeof salt, &n) == 0);
    CHECK(n == 12);
    CHECK(scram_salted_password(SCRAM_SHA1, "pencil", 6, salt, n, 4096, salted) == 0);
    scram_client_proof(SCRAM_SHA1, salted, am, strlen(am), proof);
    CHECK(scram_b64_decode("v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=", 28, want, sizeof want, &wn) == 0);
    CHECK(wn == 20 && memcmp(proof, want, 20) == 0);
}

static void test_verifier_roundtrip(void) {
    const unsigned char salt[16] = "0123456789abcdef";
    scram_verifier v, back;
    char buf[256];
    CHECK(scram_make_verifier(SCRAM_SHA256, "s3cret pass", salt, 16, 4096, &v) == 0);
    int n = scram_verifier_format(&v, buf, sizeof buf);
    CHECK(n > 0 && (size_t)n == strlen(buf));
    CHECK(strncmp(buf, "4096,MDEyMzQ1Njc4OWFiY2RlZg==,", 30) == 0);
    CHECK(strstr(buf, "s3cret") == NULL);
    CHECK(scram_verifier_parse(SCRAM_SHA256, buf, &back) == 0);
    CHECK(back.iterations == 4096 && back.salt_len == 16);
    CHECK(memcmp(back.stored_key, v.stored_key, 32) == 0);
    CHECK(memcmp(back.server_key, v.server_key, 32) == 0);
    CHECK(scram_check_password(&back, "s3cret pass") == 1);
    CHECK(scram_check_password(&back, "s3cret pasS") == 0);
    CHECK(scram_check_password(&back, "") == 0);
    /* Wrong hash length for the field, junk, missing parts. */
    CHECK(scram_verifier_parse(SCRAM_SHA1, buf, &back) == -1);
    CHECK(scram_verifier_parse(SCRAM_SHA256, "4096,abc", &back) == -1);
    CHECK(scram_verifier_parse(SCRAM_SHA256, "x,MDEy,AAAA,AAAA", &back) == -1);
    CHECK(scram_verifier_parse(SCRAM_SHA256, "", &back) == -1);
    buf[n] = ','; buf[n + 1] = '\0';
    CHECK(scram_verifier_parse(SCRAM_SHA256, buf, &back) == -1);

    /* SHA-1 RFC 5802 keys: known StoredKey / ServerKey. */
    unsigned char s1[16];
    size_t sl;
    scram_b64_decode("QSXCR+Q6sek8bf92", 16, s1, sizeof s1, &sl);
    CHECK(scram_make_verifier(SCRAM_SHA1, "pencil", s1, sl, 4096, &v) == 0);
    CHECK(scram_verifier_format(&v, buf, sizeof buf) > 0);
    CHECK_STR(buf, "4096,QSXCR+Q6sek8bf92,6dlGYMOdZcOPutkcNY8U2g7vK9Y=,D+CSWLOshSulAsxiupA+qs2/fTE=");
}

static void test_base64(void) {
    char enc[64];
    unsigned char dec[64];
    size_t n;
    CHECK(scram_b64_encode((const unsigned char *)"n,,", 3, enc) == 4);
    CHECK_STR(enc, "biws");
    CHECK(scram_b64_encode((const unsigned char *)"ab", 2, enc) == 4);
    CHECK_STR(enc, "YWI=");
    CHECK(scram_b64_encode((const unsigned char *)"", 0, enc) == 0);
    CHECK_STR(enc, "");
    CHECK(scram_b64_decode("YWI=", 4, dec, sizeof dec, &n) == 0);
    CHECK(n == 2 && memcmp(dec, "ab", 2) == 0);
    CHECK(scram_b64_decode("YQ==", 4, dec, sizeof dec, &n) == 0);
    CHECK(n == 1 && dec[0] == 'a');
    CHECK(scram_b64_decode("", 0, dec, sizeof dec, &n) == 0 && n == 0);
    CHECK(scram_b64_decode("YWI", 3, dec, sizeof dec, &n) == -1);      /* not %4 */
    CHECK(scram_b64_decode("Y WI", 4, dec, sizeof dec, &n) == -1);     /* space */
    CHECK(scram_b64_decode("=YWI", 4, dec, sizeof dec, &n) == -1);     /* pad first */
    CHECK(scram_b64_decode("Y=WI", 4, dec, sizeof dec, &n) == -1);
    CHECK(scram_b64_decode("YWJj", 4, dec, 2, &n) == -1);              /* too big */
    CHECK(scram_b64_decode("AGFsaWNlAHBhc3M=", 16, dec, sizeof dec, &n) == 0);
    CHECK(n == 11 && memcmp(dec, "\0alice\0pass", 11) == 0);
}

static void test_client_first_parsing(void) {
    scram_server s;
    scram_server_init(&s, SCRAM_SHA1);
    const char *m1 = "n,a=bob,n=a=2Cb=3Dc,r=abc";
    CHECK(scram_server_start(&s, m1, strlen(m1)) == 0);
    CHECK_STR(s.username, "a,b=c");
    CHECK_STR(s.authzid, "bob");
    CHECK_STR(s.gs2_header, "n,a=bob,");
    CHECK_STR(s.client_first_bare, "n=a=2Cb=3Dc,r=abc");
    scram_server_clear(&s);
    CHECK(scram_server_start(&s, "p=tls-unique,,n=u,r=x", 21) == -2);
    CHECK(scram_server_start(&s, "n,,n=u", 6) == -1);
    CHECK(scram_server_start(&s, "n,,m=ext,n=u,r=x", 16) == -1);
    CHECK(scram_server_start(&s, "n,,n=a=2,r=x", 12) == -1);
    CHECK(scram_server_start(&s, "x,,n=u,r=x", 10) == -1);
    CHECK(scram_server_start(&s, "n,,n=,r=x", 9) == -1);
    CHECK(scram_server_start(&s, "n,,n=u,r=", 9) == -1);
    CHECK(scram_server_start(&s, "n,,n=u\0,r=x", 11) == -1);
    CHECK(scram_server_start(&s, "y,,n=u,r=x", 10) == 0);
    CHECK_STR(s.gs2_header, "y,,");
    /* server-final before server-first is malformed, not a crash */
    char out[64];
    CHECK(scram_server_final(&s, "c=eSws,r=x,p=AAAA", 17, out, sizeof out) == -1);
    scram_server_clear(&s);
}

int main(void) {
    test_rfc5802();
    test_rfc7677();
    test_client_proof();
    test_verifier_roundtrip();
    test_base64();
    test_client_first_parsing();
    return unit_done("scram");
}
