/*
 * test_blocking: XEP-0191 item matching (XEP-0016 JID rules) in
 * chatd/features/blocking.c: which senders a blocklist item covers.
 */
#include "unit.h"
#include "../../chatd/features/blocking.h"

int main(void)
{
    /* bare item: every resource of that account */
    CHECK(blocking_item_matches("bob@d", "bob@d"));
    CHECK(blocking_item_matches("bob@d", "bob@d/phone"));
    CHECK(!blocking_item_matches("bob@d", "bobby@d/phone"));
    CHECK(!blocking_item_matches("bob@d", "bob@e/phone"));
    /* full item: that resource only */
    CHECK(blocking_item_matches("bob@d/phone", "bob@d/phone"));
    CHECK(!blocking_item_matches("bob@d/phone", "bob@d/desk"));
    CHECK(!blocking_item_matches("bob@d/phone", "bob@d"));
    /* domain item: everyone there; domain/resource: that resource anywhere there */
    CHECK(blocking_item_matches("spam.example", "x@spam.example/r"));
    CHECK(blocking_item_matches("spam.example", "spam.example"));
    CHECK(!blocking_item_matches("spam.example", "x@ham.example/r"));
    CHECK(blocking_item_matches("spam.example/bot", "x@spam.example/bot"));
    CHECK(!blocking_item_matches("spam.example/bot", "x@spam.example/human"));
    /* rooms: a room JID blocks its occupants */
    CHECK(blocking_item_matches("room@muc.d", "room@muc.d/nick"));
    /* garbage never matches */
    CHECK(!blocking_item_matches("", "bob@d"));
    CHECK(!blocking_item_matches("bob@d", NULL));
    CHECK(!blocking_item_matches(NULL, "bob@d"));

    /* candidates: exactly the items that match, so a set lookup agrees
     * with blocking_item_matches */
    char c[BLOCKING_CANDIDATES][JID_MAX + 1];
    CHECK(blocking_candidates("Bob@D/phone", c) == 4);
    const char *items[] = { "d", "d/phone", "bob@d", "bob@d/phone", "d/desk", "bob@d/desk",
                            "e", "alice@d" };
    for (size_t i = 0; i < sizeof(items) / sizeof(items[0]); i++) {
        int listed = 0;
        for (int k = 0; k < BLOCKING_CANDIDATES; k++) listed |= strcmp(c[k], items[i]) == 0;
        CHECK(listed == blocking_item_matches(items[i], "bob@d/phone"));
    }
    CHECK(blocking_candidates("bob@d", c) == 2);
    CHECK_STR(c[0], "d");
    CHECK_STR(c[1], "bob@d");
    CHECK(c[2][0] == '\0' && c[3][0] == '\0');
    CHECK(blocking_candidates("d", c) == 1);
    CHECK(blocking_candidates("", c) == 0 && c[0][0] == '\0');
    CHECK(blocking_candidates(NULL, c) == 0);
    return unit_done("blocking");
}
