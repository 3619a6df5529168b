/*
 * test_muc_history: the XEP-0045 §7.2.14 history request
 * (chatd/features/muc_history.c): maxstanzas, maxchars, seconds, since, together;
 * XEP-0082 DateTime parsing; the stamp of a stored entry.
 */
#include "unit.h"
#include "../../chatd/features/muc_history.h"
#include "../../chatd/router/xmpp_internal.h"

/* An entry as muc.c stores it: the message, then the room's <delay/>. */
static void push(muc_room *r, const char *body, time_t t)
{
    char stamp[32], xml[512];
    xmpp_timestamp(stamp, sizeof(stamp), t);
    snprintf(xml, sizeof(xml),
             "<message xmlns=\"jabber:client\" from=\"r@m/n\" type=\"groupchat\">"
             "<body>%s</body><delay xmlns=\"urn:xmpp:delay\" from=\"r@m\" stamp=\"%s\"/>"
             "</message>", body, stamp);
    muc_history_push(r, xml, strlen(xml));
}

static unsigned first(muc_room *r, const char *ms, const char *mc, const char *secs,
                      const char *since, time_t now)
{
    muc_hist_req q;
    muc_hist_req_parse(&q, ms, mc, secs, since, now);
    return muc_history_first(r, &q);
}

static void test_datetime(void)
{
    time_t t;
    CHECK(xmpp_datetime_parse("1970-01-01T00:00:00Z", &t) == 0 && t == 0);
    CHECK(xmpp_datetime_parse("2026-12-04T16:00:00Z", &t) == 0 && t == 1796400000);
    CHECK(xmpp_datetime_parse("2026-12-04T17:30:00.123+01:30", &t) == 0 && t == 1796400000);
    CHECK(xmpp_datetime_parse("2026-12-04T14:00:00-02:00", &t) == 0 && t == 1796400000);
    CHECK(xmpp_datetime_parse("2026-12-04T16:00:00", &t) == -1);    /* no zone */
    CHECK(xmpp_datetime_parse("2026-13-04T16:00:00Z", &t) == -1);
    CHECK(xmpp_datetime_parse("2026-12-04T16:00:00Zjunk", &t) == -1);
    CHECK(xmpp_datetime_parse("yesterday", &t) == -1);
    CHECK(xmpp_datetime_parse(NULL, &t) == -1);
}

static void test_stamp(void)
{
    time_t t;
    const char *two = "<message><delay xmlns='urn:xmpp:delay' stamp='2000-01-01T00:00:00Z'/>"
                      "<body>x</body><delay xmlns=\"urn:xmpp:delay\" from=\"r@m\" "
                      "stamp=\"2026-12-04T16:00:00Z\"/></message>";
    CHECK(muc_history_stamp(two, strlen(two), &t) == 0 && t == 1796400000);  /* the last */
    const char *none = "<message><body>stamp=\"2026-12-04T16:00:00Z\"</body></message>";
    CHECK(muc_history_stamp(none, strlen(none), &t) == -1);
}

static void test_select(void)
{
    time_t now = 1796400000;
    muc_room *r = muc_room_new("r@m", 10);
    /* five messages, 100 s apart; the newest 10 s ago */
    for (int i = 0; i < 5; i++) {
        char b[8];
        snprintf(b, sizeof(b), "m%d", i);
        push(r, b, now - 410 + 100 * i);
    }
    CHECK(r->hist_count == 5);
    CHECK(first(r, NULL, NULL, NULL, NULL, now) == 0);           /* all */
    CHECK(first(r, "2", NULL, NULL, NULL, now) == 3);            /* the last two */
    CHECK(first(r, "0", NULL, NULL, NULL, now) == 5);            /* none */
    CHECK(first(r, "99", NULL, NULL, NULL, now) == 0);
    CHECK(first(r, NULL, NULL, "0", NULL, now) == 5);            /* seconds=0: none */
    CHECK(first(r, NULL, NULL, "150", NULL, now) == 3);          /* stamps -110, -10 */
    CHECK(first(r, NULL, NULL, "5", NULL, now) == 5);
    CHECK(first(r, NULL, "0", NULL, NULL, now) == 5);            /* maxchars=0: none */
    size_t len;
    muc_history_get(r, 4, &len);
    char mc[16];
    snprintf(mc, sizeof(mc), "%zu", 2 * len + 1);                /* room for two */
    CHECK(first(r, NULL, mc, NULL, NULL, now) == 3);
    char since[32];
    xmpp_timestamp(since, sizeof(since), now - 210);             /* m2 exactly */
    CHECK(first(r, NULL, NULL, NULL, since, now) == 2);
    CHECK(first(r, NULL, NULL, NULL, "2099-01-01T00:00:00Z", now) == 5);
    /* together: the most restrictive wins */
    CHECK(first(r, "1", NULL, NULL, since, now) == 4);
    CHECK(first(r, "4", NULL, "150", NULL, now) == 3);
    CHECK(first(r, NULL, NULL, "1000", since, now) == 2);
    /* malformed values are ignored */
    CHECK(first(r, "-1", "x", "soon", "yesterday", now) == 0);
    muc_room_free(r, NULL);
}

int main(void)
{
    test_datetime();
    test_stamp();
    test_select();
    return unit_done("muc_history");
}
