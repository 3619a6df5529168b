/* test_jid: JID parsing, validation, bare forms and comparison. */
#include <string.h>
#include "unit.h"
#include "../../chatd/core/jid.h"

int main(void)
{
    jid j;
    char buf[JID_MAX + 1];

    CHECK(jid_parse("Alice@Localhost/Res One", &j) == 0);
    CHECK_STR(j.local, "alice");
    CHECK_STR(j.domain, "localhost");
    CHECK_STR(j.resource, "Res One");
    CHECK(jid_is_full(&j));
    CHECK_STR(jid_bare(&j, buf, sizeof(buf)), "alice@localhost");
    CHECK_STR(jid_full(&j, buf, sizeof(buf)), "alice@localhost/Res One");

    /* domain only, domain/resource */
    CHECK(jid_parse("localhost", &j) == 0);
    CHECK_STR(j.local, "");
    CHECK_STR(j.domain, "localhost");
    CHECK(!jid_is_full(&j));
    CHECK(jid_parse("conference.localhost/nick@x", &j) == 0);
    CHECK_STR(j.local, "");
    CHECK_STR(j.resource, "nick@x");

    /* '@' after the slash belongs to the resource */
    CHECK(jid_parse("room@muc.example/who@where/x", &j) == 0);
    CHECK_STR(j.local, "room");
    CHECK_STR(j.domain, "muc.example");
    CHECK_STR(j.resource, "who@where/x");

    /* invalid */
    CHECK(jid_parse("", &j) < 0);
    CHECK(jid_parse("@localhost", &j) < 0);
    CHECK(jid_parse("alice@", &j) < 0);
    CHECK(jid_parse("alice@localhost/", &j) < 0);
    CHECK(jid_parse("al ice@localhost", &j) < 0);
    CHECK(jid_parse("a<b@localhost", &j) < 0);
    CHECK(jid_parse("a:b@localhost", &j) < 0);
    CHECK(jid_parse("alice@local host", &j) < 0);
    CHECK(jid_parse("alice@localhost.", &j) < 0);
    CHECK(jid_parse(NULL, &j) < 0);

    /* part length limits */
    char big[1100];
    memset(big, 'a', 1023);
    strcpy(big + 1023, "@localhost");
    CHECK(jid_parse(big, &j) == 0);
    memset(big, 'a', 1024);
    strcpy(big + 1024, "@localhost");
    CHECK(jid_parse(big, &j) < 0);

    /* bare forms and comparison */
    CHECK_STR(jid_bare_str("BOB@Example.COM/phone", buf, sizeof(buf)), "bob@example.com");
    CHECK(jid_bare_str("bad@", buf, sizeof(buf)) == NULL);
    CHECK(jid_bare_str("bob@example.com", buf, 5) == NULL);   /* does not fit */
    CHECK(jid_same_bare("bob@example.com/a", "Bob@Example.com/b"));
    CHECK(!jid_same_bare("bob@example.com", "bob@example.org"));
    CHECK(!jid_same_bare("bob@example.com", "x@"));

    CHECK(jid_local_valid("alice.smith-1"));
    CHECK(!jid_local_valid("a&b"));
    CHECK(!jid_local_valid(""));
    return unit_done("jid");
}
