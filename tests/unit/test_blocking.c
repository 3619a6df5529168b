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
    return unit_done("blocking");
}
