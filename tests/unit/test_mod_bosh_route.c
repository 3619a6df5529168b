/*
 * test_mod_bosh_route: the pure routing/policy helpers of mod_bosh.
 * mod_bosh is built by apxs, not into a library, so the pure file is
 * compiled in here directly; it needs nothing from httpd.
 */
#include "unit.h"
#include "../../mod_bosh/bosh_route.c"

static void test_endpoint(void) {
    bosh_endpoint e;
    char err[128];

    CHECK(bosh_endpoint_parse("unix:/run/chatd/relay.sock", &e, err, sizeof err) == 0);
    CHECK(e.is_unix == 1);
    CHECK_STR(e.path, "/run/chatd/relay.sock");

    CHECK(bosh_endpoint_parse("tcp:127.0.0.1:5280", &e, err, sizeof err) == 0);
    CHECK(e.is_unix == 0);
    CHECK_STR(e.host, "127.0.0.1");
    CHECK(e.port == 5280);

    CHECK(bosh_endpoint_parse("tcp:[::1]:7000", &e, err, sizeof err) == 0);
    CHECK_STR(e.host, "::1");
    CHECK(e.port == 7000);

    CHECK(bosh_endpoint_parse("tcp:host:0", &e, err, sizeof err) == -1);
    CHECK(bosh_endpoint_parse("tcp:host:70000", &e, err, sizeof err) == -1);
    CHECK(bosh_endpoint_parse("tcp:host:12x", &e, err, sizeof err) == -1);
    CHECK(bosh_endpoint_parse("tcp::80", &e, err, sizeof err) == -1);
    CHECK(bosh_endpoint_parse("unix:relative", &e, err, sizeof err) == -1);
    CHECK(bosh_endpoint_parse("http://x", &e, err, sizeof err) == -1);
    CHECK(strstr(err, "unix: or tcp:") != NULL);
}

static void test_sid_node(void) {
    char node[BOSH_NODE_ID_MAX];

    CHECK(bosh_sid_node("n1-0123456789abcdef0123456789abcdef", node, sizeof node) == 0);
    CHECK_STR(node, "n1");
    CHECK(bosh_sid_node("chat.a_2-ff-ee", node, sizeof node) == 0);
    CHECK_STR(node, "chat.a_2");
    CHECK(bosh_sid_node("nodash", node, sizeof node) == -1);
    CHECK(bosh_sid_node("-abc", node, sizeof node) == -1);
    CHECK(bosh_sid_node("a/b-abc", node, sizeof node) == -1);
    CHECK(bosh_sid_node(NULL, node, sizeof node) == -1);
    CHECK(bosh_sid_node("abcdef-1", node, 4) == -1);   /* does not fit */

    CHECK(bosh_node_id_valid("n1") == 1);
    CHECK(bosh_node_id_valid("n-1") == 0);
    CHECK(bosh_node_id_valid("") == 0);
}

static void test_pick(void) {
    int up[3] = {1, 1, 1};
    int down1[3] = {1, 0, 1};
    int none[3] = {0, 0, 0};

    CHECK(bosh_pick_node(0, up, 3) == 0);
    CHECK(bosh_pick_node(1, up, 3) == 1);
    CHECK(bosh_pick_node(5, up, 3) == 2);
    CHECK(bosh_pick_node(1, down1, 3) == 2);   /* skips the dead node */
    CHECK(bosh_pick_node(4, down1, 3) == 2);
    CHECK(bosh_pick_node(2, down1, 3) == 2);
    CHECK(bosh_pick_node(0, none, 3) == -1);
    CHECK(bosh_pick_node(0, up, 0) == -1);
}

static void test_retry_after(void) {
    unsigned lo = 1000, hi = 0;
    uint32_t r;

    CHECK(bosh_retry_after(5, 0, 12345) == 5);
    CHECK(bosh_retry_after(0, 0, 7) == 1);
    CHECK(bosh_retry_after(5, 10, 0) == 5);
    CHECK(bosh_retry_after(5, 10, 10) == 15);
    CHECK(bosh_retry_after(5, 10, 11) == 5);
    for (r = 0; r < 1000; r++) {
        unsigned v = bosh_retry_after(5, 10, r * 2654435761u);
        if (v < lo) lo = v;
        if (v > hi) hi = v;
    }
    CHECK(lo == 5);
    CHECK(hi == 15);
}

static void test_has_ver(void) {
    const char *a = "<body rid='1' ver='1.6' xmlns='http://jabber.org/protocol/httpbind'";
    const char *b = "<body rid='1' to='ver=x'>";
    const char *c = "<?xml version='1.0'?>\n<body\n ver = \"1.6\" rid='2'><broken";
    const char *d = "<b:body xmlns:b='x' ver='1.6'/>";
    const char *e = "<body rid='1'/><x ver='1'/>";
    const char *f = "<html ver='1'>";

    CHECK(bosh_raw_has_ver(a, strlen(a)) == 1);
    CHECK(bosh_raw_has_ver(b, strlen(b)) == 0);
    CHECK(bosh_raw_has_ver(c, strlen(c)) == 1);
    CHECK(bosh_raw_has_ver(d, strlen(d)) == 1);
    CHECK(bosh_raw_has_ver(e, strlen(e)) == 0);
    CHECK(bosh_raw_has_ver(f, strlen(f)) == 0);
    CHECK(bosh_raw_has_ver("", 0) == 0);
}

static void test_origin(void) {
    const char *const list[] = {"https://chat.example.com", "http://localhost:8080"};
    const char *const star[] = {"*"};

    CHECK(bosh_origin_allowed("https://chat.example.com", list, 2) == 1);
    CHECK(bosh_origin_allowed("http://localhost:8080", list, 2) == 1);
    CHECK(bosh_origin_allowed("https://evil.example.com", list, 2) == 0);
    CHECK(bosh_origin_allowed("https://chat.example.com.evil", list, 2) == 0);
    CHECK(bosh_origin_allowed(NULL, list, 2) == 0);
    CHECK(bosh_origin_allowed("https://x", list, 0) == 0);
    CHECK(bosh_origin_allowed("https://x", star, 1) == 1);
}

static void test_origin_is_self(void) {
    CHECK(bosh_origin_is_self("http://127.0.0.1:8080", "http", "127.0.0.1", 8080) == 1);
    CHECK(bosh_origin_is_self("http://Chat.Example.com", "http", "chat.example.com", 80) == 1);
    CHECK(bosh_origin_is_self("https://chat.example.com:443", "https", "chat.example.com", 443) == 1);
    CHECK(bosh_origin_is_self("https://chat.example.com", "https", "chat.example.com", 0) == 1);
    CHECK(bosh_origin_is_self("http://[::1]:81", "http", "[::1]", 81) == 1);
    CHECK(bosh_origin_is_self("http://[::1]:81", "http", "::1", 81) == 1);
    CHECK(bosh_origin_is_self("http://127.0.0.1:8081", "http", "127.0.0.1", 8080) == 0);
    CHECK(bosh_origin_is_self("https://127.0.0.1:8080", "http", "127.0.0.1", 8080) == 0);
    CHECK(bosh_origin_is_self("http://127.0.0.2:8080", "http", "127.0.0.1", 8080) == 0);
    CHECK(bosh_origin_is_self("http://chat.example.com.evil", "http", "chat.example.com", 80) == 0);
    CHECK(bosh_origin_is_self("http://chat.example.com/", "http", "chat.example.com", 80) == 0);
    CHECK(bosh_origin_is_self("http://u@chat.example.com", "http", "chat.example.com", 80) == 0);
    CHECK(bosh_origin_is_self("http://chat.example.com:", "http", "chat.example.com", 80) == 0);
    CHECK(bosh_origin_is_self("http://chat.example.com:99999", "http", "chat.example.com", 80) == 0);
    CHECK(bosh_origin_is_self("null", "http", "chat.example.com", 80) == 0);
    CHECK(bosh_origin_is_self("", "http", "chat.example.com", 80) == 0);
    CHECK(bosh_origin_is_self(NULL, "http", "chat.example.com", 80) == 0);
}

static void test_prebind_policy(void) {
    const char *why;
    /* method */
    CHECK(bosh_prebind_policy(1, NULL, NULL, 0, 0, &why) == 0);
    CHECK(bosh_prebind_policy(0, NULL, NULL, 0, 0, &why) == 405 && why);
    CHECK(bosh_prebind_policy(0, "cross-site", NULL, 0, 0, &why) == 405);
    CHECK(bosh_prebind_policy(0, "none", NULL, 0, 0, &why) == 405);
    CHECK(bosh_prebind_policy(0, "same-origin", NULL, 0, 0, &why) == 0);
    /* Sec-Fetch-Site */
    CHECK(bosh_prebind_policy(1, "same-origin", "http://me", 1, 0, &why) == 0);
    CHECK(bosh_prebind_policy(1, "none", NULL, 0, 0, &why) == 0);
    CHECK(bosh_prebind_policy(1, "cross-site", "http://evil", 0, 0, &why) == 403 && why);
    CHECK(bosh_prebind_policy(1, "same-site", "http://sub.me", 0, 0, &why) == 403);
    CHECK(bosh_prebind_policy(1, "cross-site", NULL, 0, 0, &why) == 403);
    CHECK(bosh_prebind_policy(1, "weird", "http://me", 1, 0, &why) == 403);
    CHECK(bosh_prebind_policy(1, "cross-site", "https://app", 0, 1, &why) == 0);
    CHECK(bosh_prebind_policy(1, "same-site", "https://app", 0, 1, &why) == 0);
    /* Origin without fetch metadata (old browsers) */
    CHECK(bosh_prebind_policy(1, NULL, "http://evil", 0, 0, &why) == 403);
    CHECK(bosh_prebind_policy(1, NULL, "null", 0, 0, &why) == 403);
    CHECK(bosh_prebind_policy(1, NULL, "http://me", 1, 0, &why) == 0);
    CHECK(bosh_prebind_policy(1, NULL, "https://app", 0, 1, &why) == 0);
    /* a same-origin label with a foreign Origin is still refused */
    CHECK(bosh_prebind_policy(1, "same-origin", "http://evil", 0, 0, &why) == 403);
}

int main(void) {
    test_endpoint();
    test_sid_node();
    test_pick();
    test_retry_after();
    test_has_ver();
    test_origin();
    test_origin_is_self();
    test_prebind_policy();
    return unit_done("mod_bosh_route");
}
