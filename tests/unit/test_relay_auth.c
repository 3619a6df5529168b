/*
 * test_relay_auth: the relay's peer authentication (issue 13) in its pure
 * parts: HELLO with RT_SECRET and REFUSE with RT_REASON through the codec,
 * the constant-time compare, the secret file loader, and the config keys
 * relay_peer_user and relay_secret_file (tcp: needs a secret).
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include "unit.h"
#include "../../common/relay_proto.h"
#include "../../common/relay_secret.h"
#include "../../chatd/core/config.h"

/* unit_write_tmp's path is overwritten by the next call: keep a copy. */
static char *tmp_file(const char *text, mode_t mode) {
    const char *p = unit_write_tmp(text);
    if (!p) return NULL;
    chmod(p, mode);
    return strdup(p);
}

static void test_hello_and_refuse_frames(void) {
    strbuf out = STRBUF_INIT;
    size_t off = relay_begin(&out, RELAY_HELLO, 0);
    relay_put_str(&out, RT_PEER_NAME, "mod_bosh:h:1");
    relay_put_str(&out, RT_SECRET, "s3cret-s3cret-s3cret");
    relay_end(&out, off);
    static const unsigned char want_head[] = { 1, 1, 0, 0, 0, 0, 0, 0 };
    CHECK(memcmp(out.data, want_head, sizeof want_head) == 0);
    /* RT_SECRET is tag 3 on the wire */
    CHECK((unsigned char)out.data[12 + 6 + 12] == 0 && out.data[12 + 6 + 12 + 1] == 3);
    relay_header h;
    size_t need;
    CHECK(relay_decode(out.data, out.len, 0, &h, &need) == RELAY_FRAME);
    relay_field f;
    CHECK(relay_find(out.data + RELAY_HEADER_LEN, h.length, RT_SECRET, &f));
    CHECK(f.len == 20 && !memcmp(f.data, "s3cret-s3cret-s3cret", 20));
    /* An old chatd looking for RT_PEER_NAME still finds it (unknown tags skip). */
    CHECK(relay_find(out.data + RELAY_HEADER_LEN, h.length, RT_PEER_NAME, &f));
    sb_reset(&out);

    off = relay_begin(&out, RELAY_REFUSE, 0);
    relay_put_str(&out, RT_REASON, "no");
    relay_end(&out, off);
    static const unsigned char want[] = { 1, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8,
                                          0, 4, 0, 0, 0, 2, 'n', 'o' };
    CHECK(out.len == sizeof want && memcmp(out.data, want, sizeof want) == 0);
    sb_free(&out);
}

static void test_equal(void) {
    CHECK(relay_secret_equal("abcdef", 6, "abcdef", 6));
    CHECK(!relay_secret_equal("abcdef", 6, "abcdeg", 6));
    CHECK(!relay_secret_equal("abcdef", 6, "bbcdef", 6));
    CHECK(!relay_secret_equal("abcdef", 6, "abcde", 5));      /* prefix */
    CHECK(!relay_secret_equal("abcdef", 6, "abcdefg", 7));    /* longer */
    CHECK(!relay_secret_equal("abcdef", 6, "", 0));
    CHECK(!relay_secret_equal("ab\0\0", 4, "ab", 2));          /* zero padding is not equality */
    CHECK(relay_secret_equal("", 0, "", 0));
}

static void test_load(void) {
    char err[512], *s = NULL;
    size_t n = 0;
    char *p = tmp_file("0123456789abcdef-xyz\r\n\n", 0600);
    CHECK(relay_secret_load(p, &s, &n, err, sizeof err) == 0);
    CHECK(n == 20 && !strcmp(s, "0123456789abcdef-xyz"));
    relay_secret_free(s, n);
    chmod(p, 0640);                                     /* root:_chatd 0640 */
    CHECK(relay_secret_load(p, &s, &n, err, sizeof err) == 0);
    relay_secret_free(s, n);
    chmod(p, 0644);                                     /* everyone reads it */
    CHECK(relay_secret_load(p, &s, &n, err, sizeof err) == -1);
    CHECK(strstr(err, "by others") != NULL);
    chmod(p, 0602);                                     /* everyone writes it */
    CHECK(relay_secret_load(p, &s, &n, err, sizeof err) == -1);
    unlink(p);
    free(p);

    p = tmp_file("short\n", 0600);
    CHECK(relay_secret_load(p, &s, &n, err, sizeof err) == -1);
    CHECK(strstr(err, "16 to 1024 bytes") != NULL);
    unlink(p);
    free(p);

    CHECK(relay_secret_load("/nonexistent/relay.secret", &s, &n, err, sizeof err) == -1);
    CHECK(strstr(err, "/nonexistent/relay.secret") != NULL);
    CHECK(relay_secret_load("/", &s, &n, err, sizeof err) == -1);   /* a directory */
}

static int load_conf(chatd_config *c, const char *text, char *err, size_t errlen) {
    char *p = tmp_file(text, 0600);
    int rc = config_load(c, p, err, errlen);
    unlink(p);
    free(p);
    return rc;
}

static void test_config_keys(void) {
    chatd_config c;
    char err[512], text[1024];

    /* default: www-data (Debian's Apache user), for the default unix: relay */
    CHECK(config_load(&c, NULL, err, sizeof err) == 0);
    CHECK_STR(c.relay_peer_user, "www-data");
    CHECK(c.relay_peer_nuids == 1);
    CHECK(c.relay_secret == NULL);
    config_free(&c);

    CHECK(load_conf(&c, "relay_peer_user root, 1234  5678\n", err, sizeof err) == 0);
    CHECK(c.relay_peer_nuids == 3 && c.relay_peer_uids[0] == 0 &&
          c.relay_peer_uids[1] == 1234 && c.relay_peer_uids[2] == 5678);
    config_free(&c);
    CHECK(load_conf(&c, "relay_peer_user none\n", err, sizeof err) == 0);
    CHECK(c.relay_peer_nuids == 0);
    config_free(&c);
    CHECK(load_conf(&c, "relay_peer_user no-such-user-i13\n", err, sizeof err) == -1);
    CHECK(strstr(err, "no such user 'no-such-user-i13'") != NULL);
    config_free(&c);
    /* tcp: no peer uid to check; the name is not resolved */
    char *sec = tmp_file("0123456789abcdef0123\n", 0640);
    snprintf(text, sizeof text, "relay_listen tcp:127.0.0.1:5281\nrelay_secret_file %s\n"
             "relay_peer_user no-such-user-i13\n", sec);
    CHECK(load_conf(&c, text, err, sizeof err) == 0);
    CHECK(c.relay_peer_nuids == 0 && c.relay_secret_len == 20);
    config_free(&c);

    /* tcp: without a secret is refused, with a reason naming the key */
    CHECK(load_conf(&c, "relay_listen tcp:127.0.0.1:5281\n", err, sizeof err) == -1);
    CHECK(strstr(err, "relay_secret_file") != NULL);
    config_free(&c);
    /* a secret on unix: is allowed (required on top of the uid check) */
    snprintf(text, sizeof text, "relay_secret_file %s\n", sec);
    CHECK(load_conf(&c, text, err, sizeof err) == 0);
    CHECK(c.relay_secret != NULL);
    config_free(&c);
    chmod(sec, 0644);
    CHECK(load_conf(&c, text, err, sizeof err) == -1);
    CHECK(strstr(err, "relay_secret_file:") != NULL);
    config_free(&c);
    unlink(sec);
    free(sec);
}

int main(void) {
    test_hello_and_refuse_frames();
    test_equal();
    test_load();
    test_config_keys();
    return unit_done("relay_auth");
}
