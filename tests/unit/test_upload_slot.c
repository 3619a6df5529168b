/*
 * test_upload_slot: the pure parts of XEP-0363 upload (issue 17): slot
 * signing and verification (every field counts, a forged or truncated
 * signature fails, another key fails), expiry, file-name sanitizing (no
 * path, no hidden file, idempotent), content-type normalizing, the type
 * a stored file is served with, and query escaping.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "unit.h"
#include "../../common/upload_slot.h"
#include "../../chatd/core/config.h"

static const unsigned char KEY[] = "0123456789abcdef0123456789abcdef";
#define KEYLEN (sizeof(KEY) - 1)

static upload_slot base_slot(void)
{
    upload_slot s = {
        .id = "0123456789abcdef0123456789abcdef", .name = "cat.png",
        .size = 1234, .content_type = "image/png", .expires = 1700000000,
        .user = "alice",
    };
    return s;
}

static void test_sign_verify(void)
{
    upload_slot s = base_slot(), t;
    char sig[UPLOAD_SIG_HEX + 1], sig2[UPLOAD_SIG_HEX + 1];

    CHECK(upload_slot_sign(KEY, KEYLEN, &s, sig) == 0);
    CHECK(strlen(sig) == UPLOAD_SIG_HEX);
    CHECK(upload_slot_verify(KEY, KEYLEN, &s, sig) == 1);
    /* Deterministic. */
    CHECK(upload_slot_sign(KEY, KEYLEN, &s, sig2) == 0);
    CHECK_STR(sig, sig2);

    /* Every field is covered. */
    t = s; t.id = "1123456789abcdef0123456789abcdef"; CHECK(upload_slot_verify(KEY, KEYLEN, &t, sig) == 0);
    t = s; t.name = "cat.html";  CHECK(upload_slot_verify(KEY, KEYLEN, &t, sig) == 0);
    t = s; t.size = 1235;        CHECK(upload_slot_verify(KEY, KEYLEN, &t, sig) == 0);
    t = s; t.content_type = "";  CHECK(upload_slot_verify(KEY, KEYLEN, &t, sig) == 0);
    t = s; t.expires++;          CHECK(upload_slot_verify(KEY, KEYLEN, &t, sig) == 0);
    t = s; t.user = "bob";       CHECK(upload_slot_verify(KEY, KEYLEN, &t, sig) == 0);
    /* Fields cannot bleed into each other (length-prefixed). */
    {
        upload_slot a = s, b = s;
        char sa[UPLOAD_SIG_HEX + 1], sb[UPLOAD_SIG_HEX + 1];
        a.content_type = "image/png"; a.user = "alice";
        b.content_type = "image/pn";  b.user = "galice";
        CHECK(upload_slot_sign(KEY, KEYLEN, &a, sa) == 0);
        CHECK(upload_slot_sign(KEY, KEYLEN, &b, sb) == 0);
        CHECK(strcmp(sa, sb) != 0);
    }

    /* Another key, a flipped digit, a short or long or upper-case sig. */
    {
        static const unsigned char other[] = "fedcba9876543210fedcba9876543210";
        char bad[UPLOAD_SIG_HEX + 2];
        CHECK(upload_slot_verify(other, sizeof(other) - 1, &s, sig) == 0);
        memcpy(bad, sig, sizeof(sig));
        bad[10] = bad[10] == '0' ? '1' : '0';
        CHECK(upload_slot_verify(KEY, KEYLEN, &s, bad) == 0);
        memcpy(bad, sig, sizeof(sig));
        bad[UPLOAD_SIG_HEX - 1] = '\0';
        CHECK(upload_slot_verify(KEY, KEYLEN, &s, bad) == 0);
        memcpy(bad, sig, UPLOAD_SIG_HEX);
        bad[UPLOAD_SIG_HEX] = '0'; bad[UPLOAD_SIG_HEX + 1] = '\0';
        CHECK(upload_slot_verify(KEY, KEYLEN, &s, bad) == 0);
        CHECK(upload_slot_verify(KEY, KEYLEN, &s, "") == 0);
        CHECK(upload_slot_verify(KEY, KEYLEN, &s, NULL) == 0);
    }
    /* Short key, bad id, unclean name: nothing is signed. */
    CHECK(upload_slot_sign(KEY, 8, &s, sig2) == -1);
    t = s; t.id = "0123456789ABCDEF0123456789abcdef"; CHECK(upload_slot_sign(KEY, KEYLEN, &t, sig2) == -1);
    t = s; t.id = "0123"; CHECK(upload_slot_sign(KEY, KEYLEN, &t, sig2) == -1);
    t = s; t.name = "../etc/passwd"; CHECK(upload_slot_sign(KEY, KEYLEN, &t, sig2) == -1);
    t = s; t.name = ""; CHECK(upload_slot_sign(KEY, KEYLEN, &t, sig2) == -1);
}

static void test_expiry(void)
{
    upload_slot s = base_slot();
    CHECK(upload_slot_expired(&s, s.expires - 1) == 0);
    CHECK(upload_slot_expired(&s, s.expires) == 0);
    CHECK(upload_slot_expired(&s, s.expires + 1) == 1);
}

static void test_ids(void)
{
    CHECK(upload_id_valid("0123456789abcdef0123456789abcdef"));
    CHECK(!upload_id_valid("0123456789abcdef0123456789abcde"));
    CHECK(!upload_id_valid("0123456789abcdef0123456789abcdef0"));
    CHECK(!upload_id_valid("0123456789abcdef0123456789abcdeg"));
    CHECK(!upload_id_valid("../3456789abcdef0123456789abcdef"));
    CHECK(!upload_id_valid(NULL));
}

static void test_sanitize(void)
{
    char out[UPLOAD_NAME_MAX + 1], again[UPLOAD_NAME_MAX + 1];
    static const struct { const char *in, *want; } cases[] = {
        { "cat.png", "cat.png" },
        { "../../etc/passwd", "passwd" },
        { "C:\\Users\\a\\x.jpg", "x.jpg" },
        { ".htaccess", "htaccess" },
        { "..", "file" },
        { "", "file" },
        { "dir/", "file" },
        { "-rf", "rf" },
        { "my photo (1).JPG", "my_photo_1_.JPG" },
        { "a\nb\r\x01.txt", "a_b_.txt" },
        { "\xc3\xa9t\xc3\xa9.png", "_t_.png" },
        { "shell.php", "shell.php" },
        { "%2e%2e%2fx", "_2e_2e_2fx" },
    };
    size_t i;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        upload_name_sanitize(cases[i].in, out);
        CHECK_STR(out, cases[i].want);
        upload_name_sanitize(out, again);           /* idempotent */
        CHECK_STR(again, out);
        CHECK(upload_name_is_clean(out));
    }
    upload_name_sanitize(NULL, out);
    CHECK_STR(out, "file");

    /* Long names are cut to the limit and keep their extension. */
    {
        char longname[400];
        memset(longname, 'a', sizeof(longname));
        strcpy(longname + 300, ".jpeg");
        upload_name_sanitize(longname, out);
        CHECK(strlen(out) == UPLOAD_NAME_MAX);
        CHECK(strcmp(out + UPLOAD_NAME_MAX - 5, ".jpeg") == 0);
        CHECK(upload_name_is_clean(out));
        memset(longname, 'b', sizeof(longname));
        longname[sizeof(longname) - 1] = '\0';
        upload_name_sanitize(longname, out);
        CHECK(strlen(out) == UPLOAD_NAME_MAX);
    }
    CHECK(!upload_name_is_clean("a/b"));
    CHECK(!upload_name_is_clean(".x"));
    CHECK(!upload_name_is_clean("a__b"));
    CHECK(!upload_name_is_clean(""));
    CHECK(!upload_name_is_clean(NULL));
}

static void test_ctype(void)
{
    char out[UPLOAD_CTYPE_MAX + 1];
    char longt[200];
    CHECK(upload_ctype_normalize("  Image/PNG ", out) == 0);
    CHECK_STR(out, "image/png");
    CHECK(upload_ctype_normalize(NULL, out) == 0);
    CHECK_STR(out, "");
    CHECK(upload_ctype_normalize("text/plain; charset=UTF-8", out) == 0);
    CHECK_STR(out, "text/plain; charset=utf-8");
    CHECK(upload_ctype_normalize("text/html\r\nX-Evil: 1", out) == -1);
    CHECK(upload_ctype_normalize("image/\xc3\xa9", out) == -1);
    memset(longt, 'x', sizeof(longt));
    longt[sizeof(longt) - 1] = '\0';
    CHECK(upload_ctype_normalize(longt, out) == -1);
}

static void test_serve_type(void)
{
    CHECK_STR(upload_serve_type("cat.png"), "image/png");
    CHECK_STR(upload_serve_type("CAT.JPG"), "image/jpeg");
    CHECK_STR(upload_serve_type("a.pdf"), "application/pdf");
    CHECK_STR(upload_serve_type("a.html"), "application/octet-stream");
    CHECK_STR(upload_serve_type("a.htm"), "application/octet-stream");
    CHECK_STR(upload_serve_type("a.svg"), "application/octet-stream");
    CHECK_STR(upload_serve_type("a.php"), "application/octet-stream");
    CHECK_STR(upload_serve_type("a.js"), "application/octet-stream");
    CHECK_STR(upload_serve_type("png"), "application/octet-stream");
    CHECK_STR(upload_serve_type(NULL), "application/octet-stream");
}

static void test_escape(void)
{
    char out[64];
    CHECK(upload_query_escape("alice", out, sizeof(out)) == 5);
    CHECK_STR(out, "alice");
    CHECK(upload_query_escape("a&b=c d", out, sizeof(out)) != (size_t)-1);
    CHECK_STR(out, "a%26b%3Dc%20d");
    CHECK(upload_query_escape("abc", out, 3) == (size_t)-1);
    CHECK(upload_query_escape("&", out, 3) == (size_t)-1);
    CHECK(upload_query_escape("&", out, 4) == 3);
}

/* unit_write_tmp's path is overwritten by the next call: keep a copy. */
static char *tmp_file(const char *text, mode_t mode)
{
    const char *p = unit_write_tmp(text);
    if (!p) return NULL;
    chmod(p, mode);
    return strdup(p);
}

/* chatd's upload keys: off by default; upload_url needs a key file that
 * others cannot read; upload_domain defaults to upload.<domain>. */
static void test_config(void)
{
    chatd_config c;
    char err[512], text[1024];
    char *key = tmp_file("0123456789abcdef0123456789abcdef\n", 0600);
    char *open_key = tmp_file("0123456789abcdef0123456789abcdef\n", 0644);
    const char *p;

    CHECK(config_load(&c, NULL, err, sizeof(err)) == 0);
    CHECK(c.upload_url == NULL && c.upload_key == NULL && c.upload_domain == NULL);
    CHECK(c.upload_max_size == 10485760 && c.upload_quota == 104857600);
    CHECK(c.upload_slot_ttl == 300 && c.upload_retention == 30);
    config_free(&c);

    p = unit_write_tmp("upload_url https://chat.example.com/upload\n");
    CHECK(config_load(&c, p, err, sizeof(err)) == -1);
    CHECK(strstr(err, "upload_key_file") != NULL);
    config_free(&c);

    snprintf(text, sizeof(text), "domain example.com\nupload_url https://chat.example.com/upload/\n"
             "upload_key_file %s\nupload_max_size 1000\nupload_quota 0\n"
             "upload_slot_ttl 60\nupload_retention 0\n", key);
    p = unit_write_tmp(text);
    CHECK(config_load(&c, p, err, sizeof(err)) == 0);
    CHECK_STR(c.upload_url, "https://chat.example.com/upload");      /* no trailing / */
    CHECK_STR(c.upload_domain, "upload.example.com");
    CHECK(c.upload_key && c.upload_key_len == 32);
    CHECK(c.upload_max_size == 1000 && c.upload_quota == 0);
    CHECK(c.upload_slot_ttl == 60 && c.upload_retention == 0);
    config_free(&c);

    snprintf(text, sizeof(text), "upload_url https://x/upload\nupload_key_file %s\n", open_key);
    p = unit_write_tmp(text);
    CHECK(config_load(&c, p, err, sizeof(err)) == -1);
    CHECK(strstr(err, "readable") != NULL);
    config_free(&c);

    static const char *bad[] = {
        "upload_url ftp://x/upload\n", "upload_url https://x/up?a=1\n",
        "upload_max_size 0\n", "upload_slot_ttl 5\n", "upload_quota -1\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(text, sizeof(text), "%supload_key_file %s\n", bad[i], key);
        p = unit_write_tmp(text);
        CHECK(config_load(&c, p, err, sizeof(err)) == -1);
        config_free(&c);
    }
    snprintf(text, sizeof(text), "upload_url https://x/u\nupload_key_file %s\n"
             "upload_domain localhost\n", key);
    p = unit_write_tmp(text);
    CHECK(config_load(&c, p, err, sizeof(err)) == -1);
    CHECK(strstr(err, "upload_domain") != NULL);
    config_free(&c);
    unlink(key);
    unlink(open_key);
    free(key);
    free(open_key);
}

int main(void)
{
    test_config();
    test_sign_verify();
    test_expiry();
    test_ids();
    test_sanitize();
    test_ctype();
    test_serve_type();
    test_escape();
    return unit_done("upload_slot");
}
