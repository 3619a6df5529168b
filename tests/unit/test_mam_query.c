/*
 * test_mam_query: XEP-0313 query parsing (form, RSM) and the id range it
 * turns into (chatd/features/mam_query.c), without Redis.
 */
#include <stdint.h>
#include "unit.h"
#include "mam_query.h"

static xs_node *parse(const char *xml)
{
    xs_node *n = NULL;
    char err[128];
    if (xs_parse_document(xml, strlen(xml), 65536, &n, err, sizeof(err)) != XS_OK) {
        fprintf(stderr, "bad test xml: %s\n", err);
        return NULL;
    }
    return n;
}

/* Parse <query/> built from a form's fields and a <set/>'s children. */
static int query(const char *form, const char *set, mam_query *q, const char **cond)
{
    char xml[4096];
    snprintf(xml, sizeof(xml),
             "<query xmlns='urn:xmpp:mam:2' queryid='q1'>%s%s%s%s%s%s</query>",
             form ? "<x xmlns='jabber:x:data' type='submit'>"
                    "<field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>" : "",
             form ? form : "", form ? "</x>" : "",
             set ? "<set xmlns='http://jabber.org/protocol/rsm'>" : "", set ? set : "",
             set ? "</set>" : "");
    xs_node *n = parse(xml);
    if (!n) return -2;
    int rc = mam_query_parse(n, q, 50, 250, cond);
    /* queryid points into n: check it before freeing */
    if (rc == 0) CHECK_STR(q->queryid, "q1");
    q->queryid = NULL;
    xs_free(n);
    return rc;
}

static void test_ids(void)
{
    mam_id id;
    CHECK(mam_id_parse("1733300000123-7", &id) == 0 && id.ms == 1733300000123ULL && id.seq == 7);
    CHECK(mam_id_parse("18446744073709551615-18446744073709551615", &id) == 0 &&
          id.ms == UINT64_MAX && id.seq == UINT64_MAX);
    CHECK(mam_id_parse("18446744073709551616-0", &id) < 0);   /* overflows */
    CHECK(mam_id_parse("12", &id) < 0);
    CHECK(mam_id_parse("-1", &id) < 0);
    CHECK(mam_id_parse("1-", &id) < 0);
    CHECK(mam_id_parse("1-2-3", &id) < 0);
    CHECK(mam_id_parse("a-1", &id) < 0);
    CHECK(mam_id_parse("1 -1", &id) < 0);
    CHECK(mam_id_parse(NULL, &id) < 0);
    char buf[MAM_ID_LEN];
    CHECK_STR(mam_id_format((mam_id){ 5, 0 }, buf, sizeof(buf)), "5-0");
    CHECK(mam_id_cmp((mam_id){ 1, 9 }, (mam_id){ 2, 0 }) < 0);
    CHECK(mam_id_cmp((mam_id){ 2, 1 }, (mam_id){ 2, 0 }) > 0);
    CHECK(mam_id_cmp((mam_id){ 2, 1 }, (mam_id){ 2, 1 }) == 0);

    /* the generator: strictly increasing, also when the clock stalls or
     * goes back */
    mam_idgen g = { 0, 0 };
    mam_id a = mam_id_next(&g, 1000), b = mam_id_next(&g, 1000), c = mam_id_next(&g, 999),
           e = mam_id_next(&g, 1001);
    CHECK(a.ms == 1000 && a.seq == 0);
    CHECK(b.ms == 1000 && b.seq == 1);
    CHECK(c.ms == 1000 && c.seq == 2);
    CHECK(e.ms == 1001 && e.seq == 0);
}

static void test_time(void)
{
    int64_t ms;
    CHECK(mam_time_parse("1970-01-01T00:00:01Z", &ms) == 0 && ms == 1000);
    CHECK(mam_time_parse("2024-05-01T12:00:00.5Z", &ms) == 0 && ms == 1714564800500LL);
    CHECK(mam_time_parse("2024-05-01T12:00:00.123456Z", &ms) == 0 && ms == 1714564800123LL);
    CHECK(mam_time_parse("2024-05-01T14:00:00+02:00", &ms) == 0 && ms == 1714564800000LL);
    CHECK(mam_time_parse("2024-05-01T12:00:00", &ms) < 0);     /* no zone */
    CHECK(mam_time_parse("yesterday", &ms) < 0);
}

static void test_parse(void)
{
    mam_query q;
    const char *cond = NULL;

    /* nothing: the default page, forward over everything, count cheap */
    CHECK(query(NULL, NULL, &q, &cond) == 0);
    CHECK(q.max == 50 && !q.with[0] && !q.has_start);
    mam_query_range(&q, 0);
    CHECK(!q.backward && !q.empty && q.want_count);
    CHECK_STR(q.lo, "0-0");
    CHECK_STR(q.hi, "18446744073709551615-18446744073709551615");

    /* the form */
    CHECK(query("<field var='with'><value>bob@localhost</value></field>"
                "<field var='start'><value>2024-05-01T12:00:00Z</value></field>"
                "<field var='end'><value>2024-05-01T13:00:00.250Z</value></field>",
                NULL, &q, &cond) == 0);
    CHECK_STR(q.with, "bob@localhost");
    mam_query_range(&q, 0);
    CHECK_STR(q.lo, "1714564800000-0");
    CHECK_STR(q.hi, "1714568400250-18446744073709551615");
    CHECK(!q.want_count);                     /* filtered: no cheap count */

    /* unknown field, bad JID, bad date, wrong FORM_TYPE: bad-request */
    CHECK(query("<field var='fulltext'><value>x</value></field>", NULL, &q, &cond) < 0);
    CHECK_STR(cond, "bad-request");
    CHECK(query("<field var='with'><value>@@</value></field>", NULL, &q, &cond) < 0);
    CHECK_STR(cond, "bad-request");
    CHECK(query("<field var='start'><value>today</value></field>", NULL, &q, &cond) < 0);
    CHECK_STR(cond, "bad-request");
    {
        xs_node *n = parse("<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'>"
                           "<field var='FORM_TYPE'><value>urn:xmpp:mam:1</value></field></x></query>");
        CHECK(n && mam_query_parse(n, &q, 50, 250, &cond) < 0);
        CHECK_STR(cond, "bad-request");
        xs_free(n);
    }
    /* an empty field filters nothing */
    CHECK(query("<field var='with'><value></value></field>", NULL, &q, &cond) == 0 && !q.with[0]);

    /* RSM: max clamped, after / before (exclusive), <before/> = last page */
    CHECK(query(NULL, "<max>1000</max>", &q, &cond) == 0 && q.max == 250);
    CHECK(query(NULL, "<max>0</max>", &q, &cond) == 0 && q.max == 0);
    CHECK(query(NULL, "<max>-1</max>", &q, &cond) < 0);
    CHECK_STR(cond, "bad-request");
    CHECK(query(NULL, "<max>ten</max>", &q, &cond) < 0);
    CHECK(query(NULL, "<index>3</index>", &q, &cond) < 0);

    CHECK(query(NULL, "<max>10</max><after>100-5</after>", &q, &cond) == 0);
    mam_query_range(&q, 0);
    CHECK(!q.backward && q.max == 10);
    CHECK_STR(q.lo, "100-6");
    CHECK(q.want_count);                      /* paging keeps the same result set */

    CHECK(query(NULL, "<max>10</max><before>100-0</before>", &q, &cond) == 0);
    mam_query_range(&q, 0);
    CHECK(q.backward);
    CHECK_STR(q.lo, "0-0");
    CHECK_STR(q.hi, "99-18446744073709551615");

    CHECK(query(NULL, "<before/>", &q, &cond) == 0);
    mam_query_range(&q, 0);
    CHECK(q.backward && q.rsm_before_last && !q.has_rsm_before);
    CHECK_STR(q.hi, "18446744073709551615-18446744073709551615");

    /* an id that is not one of ours cannot be in any archive */
    CHECK(query(NULL, "<after>not-an-id</after>", &q, &cond) < 0);
    CHECK_STR(cond, "item-not-found");
    CHECK(query(NULL, "<before>abc</before>", &q, &cond) < 0);
    CHECK_STR(cond, "item-not-found");
    CHECK(query("<field var='after-id'><value>x</value></field>", NULL, &q, &cond) < 0);
    CHECK_STR(cond, "item-not-found");

    /* the extended form's ids and RSM together: the tightest bound wins */
    CHECK(query("<field var='after-id'><value>50-0</value></field>"
                "<field var='before-id'><value>200-3</value></field>",
                "<after>60-1</after>", &q, &cond) == 0);
    mam_query_range(&q, 0);
    CHECK_STR(q.lo, "60-2");
    CHECK_STR(q.hi, "200-2");
    CHECK(!q.want_count);

    /* retention raises the floor; start below it changes nothing */
    CHECK(query("<field var='start'><value>1970-01-01T00:00:01Z</value></field>", NULL,
                &q, &cond) == 0);
    mam_query_range(&q, 5000);
    CHECK_STR(q.lo, "5000-0");

    /* bounds that cross: empty, and at the ends of the id space */
    CHECK(query("<field var='start'><value>2024-05-01T13:00:00Z</value></field>"
                "<field var='end'><value>2024-05-01T12:00:00Z</value></field>", NULL,
                &q, &cond) == 0);
    mam_query_range(&q, 0);
    CHECK(q.empty);
    CHECK(query(NULL, "<before>0-0</before>", &q, &cond) == 0);
    mam_query_range(&q, 0);
    CHECK(q.empty);
    CHECK(query(NULL, "<after>18446744073709551615-18446744073709551615</after>", &q,
                &cond) == 0);
    mam_query_range(&q, 0);
    CHECK(q.empty);
    CHECK(query(NULL, "<after>7-18446744073709551615</after>", &q, &cond) == 0);
    mam_query_range(&q, 0);
    CHECK(!q.empty);
    CHECK_STR(q.lo, "8-0");

    /* flip-page */
    {
        xs_node *n = parse("<query xmlns='urn:xmpp:mam:2'><flip-page/></query>");
        CHECK(n && mam_query_parse(n, &q, 50, 250, &cond) == 0 && q.flip && !q.queryid);
        xs_free(n);
    }
}

int main(void)
{
    test_ids();
    test_time();
    test_parse();
    return unit_done("mam_query");
}
