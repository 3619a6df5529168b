/* test_quota: issue 14's per-user limits (chatd/features/quota.c). */
#include "unit.h"
#include "../../chatd/features/quota.h"

int main(void)
{
    chatd_config c = {0};
    c.offline_max_messages = 100;
    c.offline_max_bytes = 1048576;
    c.offline_sender_share = 25;
    c.max_stanza = 262144;
    offline_limits l = quota_offline_limits(&c);
    CHECK(l.max_n == 100 && l.max_bytes == 1048576);
    CHECK(l.share_n == 25 && l.share_bytes == 262144);

    /* rounding down, never below one message; 100% is the whole cap */
    c.offline_max_messages = 3;
    c.offline_sender_share = 10;
    l = quota_offline_limits(&c);
    CHECK(l.share_n == 1);
    c.offline_sender_share = 100;
    l = quota_offline_limits(&c);
    CHECK(l.share_n == 3 && l.share_bytes == 1048576);
    c.offline_max_messages = 0;                 /* storage off */
    l = quota_offline_limits(&c);
    CHECK(l.share_n == 0);
    /* huge caps do not overflow */
    c.offline_max_bytes = 1ull << 30;
    c.offline_sender_share = 99;
    l = quota_offline_limits(&c);
    CHECK(l.share_bytes == (1ull << 30) / 100 * 99 + (1ull << 30) % 100 * 99 / 100);

    /* admission: each of the four limits refuses on its own */
    offline_limits q = { .max_n = 4, .max_bytes = 1000, .share_n = 2, .share_bytes = 500 };
    offline_usage u = {0};
    CHECK(quota_offline_admits(&q, &u, 500));
    CHECK(!quota_offline_admits(&q, &u, 501));          /* sender's bytes */
    u = (offline_usage){ .n = 3, .bytes = 300, .sender_n = 1, .sender_bytes = 100 };
    CHECK(quota_offline_admits(&q, &u, 100));
    u.sender_n = 2;                                      /* sender's count */
    CHECK(!quota_offline_admits(&q, &u, 1));
    u = (offline_usage){ .n = 4, .bytes = 300 };         /* recipient's count */
    CHECK(!quota_offline_admits(&q, &u, 1));
    u = (offline_usage){ .n = 1, .bytes = 900 };         /* recipient's bytes */
    CHECK(quota_offline_admits(&q, &u, 100));
    CHECK(!quota_offline_admits(&q, &u, 101));
    offline_limits off = {0};
    u = (offline_usage){0};
    CHECK(!quota_offline_admits(&off, &u, 1));

    /* roster: adding needs room, changing an item never does */
    CHECK(quota_roster_admits(1999, 1, 2000));
    CHECK(!quota_roster_admits(2000, 1, 2000));
    CHECK(quota_roster_admits(2000, 0, 2000));
    CHECK(quota_roster_admits(2500, 0, 2000));          /* cap lowered later */
    CHECK(!quota_roster_admits(0, 1, 0));

    /* directed presence */
    CHECK(quota_directed_admits(0, 0, 1));
    CHECK(!quota_directed_admits(1, 0, 1));
    CHECK(quota_directed_admits(1, 1, 1));              /* again to a known one */

    return unit_done("quota");
}
