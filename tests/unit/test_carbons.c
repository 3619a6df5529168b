/*
 * test_carbons: the XEP-0280 eligibility rule and the carbon wrapper
 * (chatd/features/carbons.c), on stanzas parsed as a client would send them.
 */
#include "unit.h"
#include "../../chatd/features/carbons.h"
#include "../../common/xml_stream.h"
#include "../../common/strbuf.h"

static xs_node *parse(const char *xml)
{
    xs_node *n = NULL;
    char err[128];
    if (xs_parse_document(xml, strlen(xml), 65536, &n, err, sizeof(err)) != XS_OK) {
        fprintf(stderr, "parse: %s\n", err);
        return NULL;
    }
    return n;
}

static int eligible(const char *xml)
{
    xs_node *n = parse(xml);
    int r = carbons_eligible(n);
    xs_free(n);
    return r;
}

#define C "xmlns='jabber:client'"

static void test_eligibility(void)
{
    CHECK(eligible("<message " C " type='chat'><body>hi</body></message>"));
    /* chat without a body (chat state) is still chat: copied */
    CHECK(eligible("<message " C " type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>"));
    CHECK(eligible("<message " C " type='normal'><body>hi</body></message>"));
    CHECK(eligible("<message " C "><body>no type is normal</body></message>"));
    CHECK(!eligible("<message " C " type='normal'><subject>x</subject></message>"));
    CHECK(!eligible("<message " C " type='groupchat'><body>room</body></message>"));
    CHECK(!eligible("<message " C " type='headline'><body>news</body></message>"));
    CHECK(!eligible("<message " C " type='error'><body>x</body></message>"));
    CHECK(!eligible("<message " C " type='chat'><body>secret</body>"
                    "<private xmlns='urn:xmpp:carbons:2'/></message>"));
    CHECK(!eligible("<message " C " type='chat'><body>x</body>"
                    "<no-copy xmlns='urn:xmpp:hints'/></message>"));
    CHECK(!eligible("<message " C " type='chat'><received xmlns='urn:xmpp:carbons:2'/></message>"));
    CHECK(!eligible("<message " C " type='chat'><sent xmlns='urn:xmpp:carbons:2'/></message>"));
    CHECK(!eligible("<message " C " type='chat'><body>pm</body>"
                    "<x xmlns='http://jabber.org/protocol/muc#user'/></message>"));
    /* <private/> in another namespace means nothing */
    CHECK(eligible("<message " C " type='chat'><body>x</body><private xmlns='urn:example'/></message>"));
    CHECK(!eligible("<presence " C "/>"));
    CHECK(!carbons_eligible(NULL));
}

static void test_wrap(void)
{
    xs_node *m = parse("<message " C " from='c@d/x' to='a@d/A' type='chat' id='m1'><body>hi</body></message>");
    xs_node *w = carbons_wrap("a@d", "a@d/B", "received", m);
    CHECK_STR(xs_attr_get(w, "from"), "a@d");
    CHECK_STR(xs_attr_get(w, "to"), "a@d/B");
    CHECK_STR(xs_attr_get(w, "type"), "chat");
    xs_node *r = xs_child(w, NS_CARBONS, "received");
    xs_node *f = r ? xs_child(r, NS_FORWARD, "forwarded") : NULL;
    xs_node *inner = f ? xs_child(f, "jabber:client", "message") : NULL;
    CHECK(inner != NULL);
    CHECK_STR(inner ? xs_attr_get(inner, "id") : NULL, "m1");
    CHECK(!carbons_eligible(w));           /* a carbon is never copied again */
    strbuf sb = STRBUF_INIT;
    xs_serialize(w, "jabber:client", &sb);
    sb_append(&sb, "", 1);
    CHECK(strstr(sb.data, "<forwarded xmlns=\"urn:xmpp:forward:0\"><message xmlns=\"jabber:client\"") ||
          strstr(sb.data, "<forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client'"));
    sb_free(&sb);
    xs_free(w);
    xs_free(m);
}

int main(void)
{
    test_eligibility();
    test_wrap();
    return unit_done("carbons");
}
