/* test_roster_item: roster records in Redis and subscription states. */
#include <string.h>
#include "unit.h"
#include "../../chatd/features/roster_item.h"

int main(void)
{
    roster_item *it = roster_item_new("bob@localhost");
    strbuf sb = STRBUF_INIT;

    roster_item_format(it, &sb);
    CHECK_STR(sb.data, "sub=none;ask=;name=;groups=");

    it->sub = SUB_BOTH;
    it->ask = 1;
    roster_item_set_name(it, "Bob; the 100% =builder, jr");
    roster_item_add_group(it, "Friends");
    roster_item_add_group(it, "Work,Home");
    roster_item_add_group(it, "Friends");      /* duplicate ignored */
    CHECK(it->ngroups == 2);
    sb_reset(&sb);
    roster_item_format(it, &sb);
    CHECK_STR(sb.data, "sub=both;ask=subscribe;name=Bob%3B the 100%25 %3Dbuilder%2C jr;"
                       "groups=Friends,Work%2CHome");

    /* round trip */
    roster_item *back = roster_item_new("bob@localhost");
    CHECK(roster_item_parse(back, sb.data) == 0);
    CHECK(back->sub == SUB_BOTH);
    CHECK(back->ask == 1);
    CHECK_STR(back->name, "Bob; the 100% =builder, jr");
    CHECK(back->ngroups == 2);
    if (back->ngroups == 2) {
        CHECK_STR(back->groups[0], "Friends");
        CHECK_STR(back->groups[1], "Work,Home");
    }

    /* lenient: order, unknown keys, missing keys */
    CHECK(roster_item_parse(back, "groups=;name=Al;sub=from;extra=1") == 0);
    CHECK(back->sub == SUB_FROM && back->ask == 0 && back->ngroups == 0);
    CHECK_STR(back->name, "Al");
    CHECK(roster_item_parse(back, "sub=to") == 0);
    CHECK(back->sub == SUB_TO && back->name == NULL);
    CHECK(roster_item_parse(back, "") == 0);
    CHECK(back->sub == SUB_NONE);

    /* malformed */
    CHECK(roster_item_parse(back, "sub=sideways") < 0);
    CHECK(roster_item_parse(back, "sub") < 0);
    CHECK(roster_item_parse(back, "name=%4") < 0);
    CHECK(roster_item_parse(back, "name=%zz") < 0);

    /* subscription state bits */
    CHECK_STR(roster_sub_name(roster_sub_with(SUB_NONE, SUB_TO)), "to");
    CHECK_STR(roster_sub_name(roster_sub_with(SUB_TO, SUB_FROM)), "both");
    CHECK_STR(roster_sub_name(roster_sub_without(SUB_BOTH, SUB_TO)), "from");
    CHECK_STR(roster_sub_name(roster_sub_without(SUB_FROM, SUB_FROM)), "none");
    CHECK(roster_sub_has_to(SUB_BOTH) && roster_sub_has_from(SUB_BOTH));
    CHECK(!roster_sub_has_to(SUB_FROM) && !roster_sub_has_from(SUB_TO));
    CHECK(roster_sub_parse("both") == SUB_BOTH);
    CHECK(roster_sub_parse("x") == -1);

    /* RFC 6121 §3 rules (issue 14): an inbound "subscribed" that nobody
     * asked for is ignored (§3.1.6) */
    roster_item *r = roster_item_new("carol@localhost");
    CHECK(roster_item_inbound(r, "subscribed") == 0);
    CHECK(r->sub == SUB_NONE && r->ask == 0);
    r->sub = SUB_FROM;
    CHECK(roster_item_inbound(r, "subscribed") == 0);
    CHECK(r->sub == SUB_FROM);
    CHECK(roster_item_outbound(r, "subscribe") == 1);       /* now we ask */
    CHECK(r->ask == 1);
    CHECK(roster_item_outbound(r, "subscribe") == 0);       /* once */
    CHECK(roster_item_inbound(r, "subscribed") == 1);
    CHECK(r->sub == SUB_BOTH && r->ask == 0);
    CHECK(roster_item_inbound(r, "subscribed") == 0);       /* a repeat */
    CHECK(roster_item_inbound(r, "unsubscribe") == 1);
    CHECK(r->sub == SUB_TO);
    CHECK(roster_item_inbound(r, "unsubscribe") == 0);
    CHECK(roster_item_inbound(r, "unsubscribed") == 1);
    CHECK(r->sub == SUB_NONE);
    CHECK(roster_item_outbound(r, "subscribe") == 1);
    CHECK(roster_item_inbound(r, "unsubscribed") == 1);     /* denied */
    CHECK(r->sub == SUB_NONE && r->ask == 0);
    CHECK(roster_item_outbound(r, "subscribed") == 1);      /* approve theirs */
    CHECK(r->sub == SUB_FROM);
    CHECK(roster_item_outbound(r, "subscribed") == 0);
    CHECK(roster_item_outbound(r, "unsubscribed") == 1);
    CHECK(r->sub == SUB_NONE);
    CHECK(roster_item_outbound(r, "unsubscribe") == 0);
    CHECK(roster_item_inbound(r, "probe") == 0);
    roster_item_free(r);

    sb_free(&sb);
    roster_item_free(it);
    roster_item_free(back);
    return unit_done("roster_item");
}
