/*
 * test_mod_bosh_auth: mod_bosh's vouching helpers (issue 8): the
 * BoshAuthJID template, the BoshAuthDisplayName source, the display name
 * clean-up. Pure file, compiled in directly (mod_bosh is built by apxs).
 */
#include "unit.h"
#include "../../mod_bosh/bosh_auth.c"

static void test_template(void) {
    CHECK(bosh_auth_template_ok("%u"));
    CHECK(bosh_auth_template_ok("%u@example.org"));
    CHECK(bosh_auth_template_ok("web.%u@example.org"));
    CHECK(bosh_auth_template_ok("100%%-%u@x"));
    CHECK(!bosh_auth_template_ok(""));
    CHECK(!bosh_auth_template_ok("alice@example.org"));      /* no %u */
    CHECK(!bosh_auth_template_ok("%u.%u@example.org"));      /* twice */
    CHECK(!bosh_auth_template_ok("%s@example.org"));
    CHECK(!bosh_auth_template_ok("%u@example.org%"));        /* dangling % */
}

static void test_map(void) {
    char out[64];
    CHECK(bosh_auth_map_jid("%u@example.org", "carol", out, sizeof out) == 0);
    CHECK_STR(out, "carol@example.org");
    CHECK(bosh_auth_map_jid("%u", "Carol.Smith", out, sizeof out) == 0);
    CHECK_STR(out, "Carol.Smith");
    CHECK(bosh_auth_map_jid("100%%-%u@x", "c", out, sizeof out) == 0);
    CHECK_STR(out, "100%-c@x");
    /* The authenticated name can never reach into domain or resource. */
    CHECK(bosh_auth_map_jid("%u@example.org", "carol@evil.org", out, sizeof out) == -1);
    CHECK(bosh_auth_map_jid("%u@example.org", "carol/res", out, sizeof out) == -1);
    CHECK(bosh_auth_map_jid("%u@example.org", "a b", out, sizeof out) == -1);
    CHECK(bosh_auth_map_jid("%u@example.org", "a\nb", out, sizeof out) == -1);
    CHECK(bosh_auth_map_jid("%u@example.org", "<x>", out, sizeof out) == -1);
    CHECK(bosh_auth_map_jid("%u@example.org", "", out, sizeof out) == -1);
    CHECK(bosh_auth_map_jid("%u@example.org", NULL, out, sizeof out) == -1);
    CHECK(bosh_auth_map_jid("%u@example.org", "carol", out, 10) == -1);   /* too long */
    CHECK(bosh_auth_map_jid("nouser", "carol", out, sizeof out) == -1);
}

static void test_source(void) {
    const char *key;
    CHECK(bosh_auth_name_source("header:X-Remote-Name", &key) == BOSH_NAME_HEADER);
    CHECK_STR(key, "X-Remote-Name");
    CHECK(bosh_auth_name_source("env:REMOTE_NAME", &key) == BOSH_NAME_ENV);
    CHECK_STR(key, "REMOTE_NAME");
    CHECK(bosh_auth_name_source("ENV:AUTHENTICATE_CN", &key) == BOSH_NAME_ENV);
    CHECK(bosh_auth_name_source("header:", &key) == BOSH_NAME_NONE);
    CHECK(bosh_auth_name_source("cookie:x", &key) == BOSH_NAME_NONE);
    CHECK(key == NULL);
}

static void test_clean_name(void) {
    char out[16];
    CHECK(bosh_auth_clean_name("  Carol Example  ", out, sizeof out) == 13);
    CHECK_STR(out, "Carol Example");
    CHECK(bosh_auth_clean_name("a\r\nb\tc", out, sizeof out) == 3);   /* controls dropped */
    CHECK_STR(out, "abc");
    CHECK(bosh_auth_clean_name("", out, sizeof out) == 0);
    CHECK(bosh_auth_clean_name(NULL, out, sizeof out) == 0);
    /* cut at 15 bytes, never inside a UTF-8 sequence: 7 x "é" is 14
     * bytes, the 8th would split */
    CHECK(bosh_auth_clean_name("\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9",
                               out, sizeof out) == 14);
    CHECK(bosh_auth_clean_name("abcdefghijklmn\xe2\x82\xac", out, sizeof out) == 14);
    CHECK_STR(out, "abcdefghijklmn");
}

int main(void) {
    test_template();
    test_map();
    test_source();
    test_clean_name();
    return unit_done("mod_bosh_auth");
}
