/*
 * test_pep_rules: XEP-0163 node configuration (pep_rules.c) and the
 * XEP-0115 verification string and +notify list (caps.c).
 */
#include <string.h>
#include <stdlib.h>
#include "unit.h"
#include "../../chatd/features/pep_rules.h"
#include "../../chatd/features/caps.h"
#include "../../chatd/features/private_storage.h"
#include "../../chatd/features/pep.h"

static xs_node *doc(const char *xml)
{
    xs_node *n = NULL;
    char err[128];
    if (xs_parse_document(xml, strlen(xml), strlen(xml) + 1, &n, err, sizeof(err)) != XS_OK) {
        fprintf(stderr, "parse: %s\n", err);
        return NULL;
    }
    return n;
}

#define FORM(fields) \
    "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>" \
    "<value>http://jabber.org/protocol/pubsub#publish-options</value></field>" fields "</x>"
#define F(k, v) "<field var='pubsub#" k "'><value>" v "</value></field>"

static int server_has_pubsub, server_has_private;
static void feature(const char *f, void *ud)
{
    (void)ud;
    if (strcmp(f, NS_PUBSUB) == 0) server_has_pubsub++;
    if (strcmp(f, NS_PRIVATE) == 0) server_has_private++;
}

int main(void)
{
    /* iq table rows: PEP on account JIDs only (owner and others), its
     * owner namespace and private storage for the owner only */
    CHECK(iq_lookup(NS_PUBSUB, "pubsub", IQ_TO_OWN) != NULL);
    CHECK(iq_lookup(NS_PUBSUB, "pubsub", IQ_TO_OTHER) != NULL);
    CHECK(iq_lookup(NS_PUBSUB, "pubsub", IQ_TO_SERVER) == NULL);
    CHECK(iq_lookup(NS_PUBSUB_OWNER, "pubsub", IQ_TO_OWN) != NULL);
    CHECK(iq_lookup(NS_PUBSUB_OWNER, "pubsub", IQ_TO_OTHER) == NULL);
    CHECK(iq_lookup(NS_PRIVATE, "query", IQ_TO_OWN) != NULL);
    CHECK(iq_lookup(NS_PRIVATE, "query", IQ_TO_OTHER) == NULL);
    /* the server's disco#info: private storage yes; pubsub is the
     * account's (pep_disco_account), not the server's */
    iq_foreach_feature(feature, NULL);
    CHECK(server_has_private == 1 && server_has_pubsub == 0);

    char buf[PEP_CONFIG_MAX], pre[PEP_CONFIG_MAX];
    pep_config c;

    /* defaults: presence, one item; bookmarks are private */
    pep_config_default("urn:xmpp:avatar:metadata", 100, &c);
    pep_config_format(&c, 0, buf, sizeof(buf));
    CHECK_STR(buf, ";access_model=presence;max_items=1;send_last_published_item=on_sub_and_presence;");
    pep_config_default("urn:xmpp:bookmarks:1", 100, &c);
    CHECK(c.access == PEP_ACCESS_WHITELIST && c.max_items == 100 && c.send_last == PEP_SEND_NEVER);
    pep_config_default("storage:bookmarks", 100, &c);
    CHECK(c.access == PEP_ACCESS_WHITELIST);

    /* Converse's bookmark publish-options: 'max' is the cap */
    pep_config_default("urn:xmpp:bookmarks:1", 50, &c);
    xs_node *x = doc(FORM(F("persist_items", "true") F("max_items", "max")
                          F("send_last_published_item", "never") F("access_model", "whitelist")));
    CHECK(pep_form_read(x, 50, &c) == 0);
    xs_free(x);
    CHECK(c.max_items == 50 && c.mask == (PEP_F_ACCESS | PEP_F_MAX | PEP_F_SEND_LAST));
    pep_config_format(&c, 1, pre, sizeof(pre));
    CHECK_STR(pre, ";access_model=whitelist;max_items=50;send_last_published_item=never;");

    /* only the fields given form the precondition; none: no precondition */
    pep_config_default("urn:example", 50, &c);
    x = doc(FORM(F("access_model", "open")));
    CHECK(pep_form_read(x, 50, &c) == 0);
    xs_free(x);
    pep_config_format(&c, 1, pre, sizeof(pre));
    CHECK_STR(pre, ";access_model=open;");
    pep_config_format(&c, 0, buf, sizeof(buf));
    CHECK_STR(buf, ";access_model=open;max_items=1;send_last_published_item=on_sub_and_presence;");
    pep_config_default("urn:example", 50, &c);
    pep_config_format(&c, 1, pre, sizeof(pre));
    CHECK_STR(pre, "");

    /* values this service cannot meet */
    const char *bad[] = { FORM(F("access_model", "roster")), FORM(F("max_items", "51")),
                          FORM(F("max_items", "0")), FORM(F("max_items", "-1")),
                          FORM(F("max_items", "5x")), FORM(F("persist_items", "false")),
                          FORM(F("send_last_published_item", "sometimes")) };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        pep_config_default("urn:example", 50, &c);
        x = doc(bad[i]);
        CHECK(pep_form_read(x, 50, &c) == -1);
        xs_free(x);
    }
    /* unknown fields are ignored */
    pep_config_default("urn:example", 50, &c);
    x = doc(FORM(F("deliver_payloads", "1") F("max_items", "7")));
    CHECK(pep_form_read(x, 50, &c) == 0 && c.max_items == 7 && c.mask == PEP_F_MAX);
    xs_free(x);

    /* parse round trip, lenient */
    pep_config_default("urn:example", 50, &c);
    pep_config_parse(";access_model=whitelist;max_items=9;send_last_published_item=never;", &c);
    CHECK(c.access == PEP_ACCESS_WHITELIST && c.max_items == 9 && c.send_last == PEP_SEND_NEVER);
    pep_config_parse(";access_model=bogus;max_items=0;", &c);
    CHECK(c.access == PEP_ACCESS_WHITELIST && c.max_items == 9);

    /* access models */
    CHECK(pep_access_allows(PEP_ACCESS_WHITELIST, 1, 0) == 1);
    CHECK(pep_access_allows(PEP_ACCESS_WHITELIST, 0, 1) == 0);
    CHECK(pep_access_allows(PEP_ACCESS_PRESENCE, 0, 1) == 1);
    CHECK(pep_access_allows(PEP_ACCESS_PRESENCE, 0, 0) == 0);
    CHECK(pep_access_allows(PEP_ACCESS_OPEN, 0, 0) == 1);

    CHECK(pep_node_name_ok("urn:xmpp:bookmarks:1"));
    CHECK(!pep_node_name_ok(""));
    CHECK(!pep_node_name_ok("a b"));
    CHECK(!pep_node_name_ok(NULL));

    /* XEP-0115 §5.2, simple example */
    char ver[64];
    x = doc("<query xmlns='http://jabber.org/protocol/disco#info'>"
            "<identity category='client' name='Exodus 0.9.1' type='pc'/>"
            "<feature var='http://jabber.org/protocol/caps'/>"
            "<feature var='http://jabber.org/protocol/disco#info'/>"
            "<feature var='http://jabber.org/protocol/disco#items'/>"
            "<feature var='http://jabber.org/protocol/muc'/></query>");
    CHECK(caps_ver_compute(x, ver, sizeof(ver)) == 0);
    CHECK_STR(ver, "QgayPKawpkPSDYmwT/WM94uAlu0=");
    xs_free(x);

    /* XEP-0115 §5.3, complex example (xml:lang, an extended form) */
    x = doc("<query xmlns='http://jabber.org/protocol/disco#info'>"
            "<identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>"
            "<identity xml:lang='el' category='client' name='&#936; 0.11' type='pc'/>"
            "<feature var='http://jabber.org/protocol/caps'/>"
            "<feature var='http://jabber.org/protocol/disco#info'/>"
            "<feature var='http://jabber.org/protocol/disco#items'/>"
            "<feature var='http://jabber.org/protocol/muc'/>"
            "<x xmlns='jabber:x:data' type='result'>"
            "<field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>"
            "<field var='ip_version'><value>ipv4</value><value>ipv6</value></field>"
            "<field var='os'><value>Mac</value></field>"
            "<field var='os_version'><value>10.5.1</value></field>"
            "<field var='software'><value>Psi</value></field>"
            "<field var='software_version'><value>0.11</value></field></x></query>");
    CHECK(caps_ver_compute(x, ver, sizeof(ver)) == 0);
    CHECK_STR(ver, "q07IKJEyjvHSyhy//CH0CxmKi8w=");

    /* A '+notify' feature sorts after its base namespace: values are
     * sorted before '<' is appended (slixmpp 1.8.3's own ver for this). */
    xs_free(x);
    x = doc("<query xmlns='http://jabber.org/protocol/disco#info'>"
            "<identity category='client' type='bot'/>"
            "<feature var='http://jabber.org/protocol/disco#info'/><feature var='jabber:x:data'/>"
            "<feature var='http://jabber.org/protocol/muc'/><feature var='vcard-temp'/>"
            "<feature var='urn:xmpp:ping'/><feature var='http://jabber.org/protocol/shim'/>"
            "<feature var='http://jabber.org/protocol/shim#SubID'/>"
            "<feature var='http://jabber.org/protocol/caps'/>"
            "<feature var='urn:xmpp:avatar:metadata+notify'/>"
            "<feature var='urn:xmpp:avatar:metadata'/>"
            "<feature var='urn:xmpp:bookmarks:1+notify'/></query>");
    CHECK(caps_ver_compute(x, ver, sizeof(ver)) == 0);
    CHECK_STR(ver, "CTI5ESyOP6fTrsATq0fjIDaQs8M=");

    /* +notify features only */
    char *n = caps_notify_list(x);
    CHECK_STR(n, "\nurn:xmpp:avatar:metadata\nurn:xmpp:bookmarks:1\n");
    free(n);
    xs_free(x);
    x = doc("<query xmlns='http://jabber.org/protocol/disco#info'>"
            "<feature var='urn:xmpp:bookmarks:1+notify'/><feature var='+notify'/>"
            "<feature var='urn:xmpp:avatar:metadata+notify'/><feature var='urn:xmpp:ping'/></query>");
    n = caps_notify_list(x);
    CHECK_STR(n, "\nurn:xmpp:bookmarks:1\nurn:xmpp:avatar:metadata\n");
    free(n);
    xs_free(x);

    /* XEP-0402 §5.3 conversions, both ways */
    strbuf sb = STRBUF_INIT;
    char *id = NULL;
    x = doc("<conference xmlns='storage:bookmarks' jid='team@conference.example' name='Team'"
            " autojoin='1'><nick>al</nick><password>pw</password></conference>");
    xs_node *nat = bookmark_to_native(x, &id);
    CHECK_STR(id, "team@conference.example");
    xs_serialize(nat, NULL, &sb);
    CHECK_STR(sb.data, "<conference xmlns='urn:xmpp:bookmarks:1' name='Team' autojoin='true'>"
                       "<nick>al</nick><password>pw</password></conference>");
    xs_node *back = bookmark_to_legacy(id, nat);
    sb_reset(&sb);
    xs_serialize(back, NULL, &sb);
    CHECK_STR(sb.data, "<conference xmlns='storage:bookmarks' jid='team@conference.example'"
                       " name='Team' autojoin='true'><nick>al</nick><password>pw</password></conference>");
    xs_free(back);
    xs_free(nat);
    xs_free(x);
    free(id);
    x = doc("<conference xmlns='storage:bookmarks' name='no jid'/>");
    id = NULL;
    CHECK(bookmark_to_native(x, &id) == NULL && id == NULL);
    xs_free(x);
    x = doc("<conference xmlns='urn:xmpp:bookmarks:1'/>");
    back = bookmark_to_legacy("r@c", x);
    sb_reset(&sb);
    xs_serialize(back, NULL, &sb);
    CHECK_STR(sb.data, "<conference xmlns='storage:bookmarks' jid='r@c' autojoin='false'/>");
    xs_free(back);
    xs_free(x);
    sb_free(&sb);

    return unit_done("pep_rules");
}
