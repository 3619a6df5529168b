/*
 * test_bosh_body: attribute parsing and ranges, namespace rewrite of
 * payloads, and everything that must be rejected as bad-request.
 */
#include "../../common/bosh_body.h"
#include "unit.h"

#include <string.h>

static int parse(const char *s, bosh_body *b, char *err) {
    return bosh_body_parse(s, strlen(s), 65536, b, err, 128);
}

static void test_session_create(void) {
    bosh_body b;
    char err[128];
    const char *req =
        "<body content='text/xml; charset=utf-8' hold='1' rid='1573741820' to='example.com'"
        " route='xmpp:example.com:9999' secure='true' ver='1.6' wait='60' ack='1'"
        " xml:lang='en' xmpp:version='1.0' xmlns='http://jabber.org/protocol/httpbind'"
        " xmlns:xmpp='urn:xmpp:xbosh'/>";
    CHECK(parse(req, &b, err) == 0);
    CHECK(b.rid == 1573741820ULL);
    CHECK(b.flags == (BB_HAS_RID | BB_HAS_WAIT | BB_HAS_HOLD | BB_HAS_VER | BB_HAS_ACK));
    CHECK(b.wait == 60 && b.hold == 1 && b.ack == 1);
    CHECK(b.ver_major == 1 && b.ver_minor == 6);
    CHECK_STR(b.to, "example.com");
    CHECK_STR(b.route, "xmpp:example.com:9999");
    CHECK_STR(b.lang, "en");
    CHECK_STR(b.content, "text/xml; charset=utf-8");
    CHECK_STR(b.xmpp_version, "1.0");
    CHECK(b.sid == NULL && b.type == NULL && b.from == NULL && b.key == NULL);
    CHECK(b.npayloads == 0);
    bosh_body_free(&b);
    CHECK(b.root == NULL);
}

static void test_payloads(void) {
    bosh_body b;
    char err[128];
    strbuf out = STRBUF_INIT;
    const char *req =
        "<body rid='9007199254740991' sid='n1-0123456789abcdef0123456789abcdef'"
        " xmlns='http://jabber.org/protocol/httpbind'>\n"
        "  <message to='a@b' type='chat'><body>hello</body><x xmlns='jabber:x:oob'><url>u</url></x></message>\n"
        "  <iq xmlns='jabber:client' type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>\n"
        "</body>";
    CHECK(parse(req, &b, err) == 0);
    CHECK(b.rid == 9007199254740991ULL);
    CHECK_STR(b.sid, "n1-0123456789abcdef0123456789abcdef");
    CHECK(b.npayloads == 2);
    /* Whitespace at wrapper level is gone; children are the stanzas. */
    xs_node *m = b.root->first_child;
    CHECK(xs_is(m, JABBER_CLIENT_NS, "message"));
    CHECK(xs_is(xs_child(m, NULL, "body"), JABBER_CLIENT_NS, "body"));
    CHECK(xs_is(xs_child(m, NULL, "x"), "jabber:x:oob", "x"));
    CHECK(xs_is(xs_child(xs_child(m, NULL, "x"), NULL, "url"), "jabber:x:oob", "url"));
    CHECK(xs_is(m->next, JABBER_CLIENT_NS, "iq"));
    CHECK(m->next->next == NULL);
    xs_serialize(m, JABBER_CLIENT_NS, &out);
    CHECK_STR(out.data, "<message to='a@b' type='chat'><body>hello</body>"
                        "<x xmlns='jabber:x:oob'><url>u</url></x></message>");
    bosh_body_free(&b);
    sb_free(&out);
}

static void test_flags(void) {
    bosh_body b;
    char err[128];
    CHECK(parse("<body rid='2' sid='s' xmpp:restart='true' xmlns:xmpp='urn:xmpp:xbosh'"
                " xmlns='http://jabber.org/protocol/httpbind'/>", &b, err) == 0);
    CHECK(b.flags & BB_RESTART);
    CHECK(!(b.flags & BB_TERMINATE));
    bosh_body_free(&b);
    /* restart without the xbosh namespace is just an unknown attribute */
    CHECK(parse("<body rid='2' sid='s' restart='true' xmlns='http://jabber.org/protocol/httpbind'/>", &b, err) == 0);
    CHECK(!(b.flags & BB_RESTART));
    bosh_body_free(&b);
    CHECK(parse("<body rid='3' sid='s' type='terminate' pause='0' xmlns='http://jabber.org/protocol/httpbind'>"
                "<presence type='unavailable'/></body>", &b, err) == 0);
    CHECK(b.flags & BB_TERMINATE);
    CHECK((b.flags & BB_HAS_PAUSE) && b.pause == 0);
    CHECK_STR(b.type, "terminate");
    CHECK(b.npayloads == 1);
    bosh_body_free(&b);
}

static void expect_bad(const char *req, const char *why_substr) {
    bosh_body b;
    char err[128] = "";
    int rc = parse(req, &b, err);
    CHECK(rc == -1);
    CHECK(b.root == NULL);
    if (why_substr && !strstr(err, why_substr)) {
        fprintf(stderr, "  error '%s' lacks '%s' for %s\n", err, why_substr, req);
        unit_fail++;
    }
    if (rc == 0) bosh_body_free(&b);
}

static void test_rejects(void) {
#define NS " xmlns='http://jabber.org/protocol/httpbind'"
    expect_bad("<body" NS "/>", "rid");
    expect_bad("<body rid='0'" NS "/>", "rid");
    expect_bad("<body rid='9007199254740992'" NS "/>", "rid");
    expect_bad("<body rid='99999999999999999999999'" NS "/>", "rid");
    expect_bad("<body rid='-1'" NS "/>", "rid");
    expect_bad("<body rid=' 1'" NS "/>", "rid");
    expect_bad("<body rid='1x'" NS "/>", "rid");
    expect_bad("<body rid=''" NS "/>", "rid");
    expect_bad("<body rid='1' wait='65536'" NS "/>", "wait");
    expect_bad("<body rid='1' hold='256'" NS "/>", "hold");
    expect_bad("<body rid='1' pause='x'" NS "/>", "pause");
    expect_bad("<body rid='1' ver='1'" NS "/>", "ver");
    expect_bad("<body rid='1' ver='1.x'" NS "/>", "ver");
    expect_bad("<body rid='1' ver='.6'" NS "/>", "ver");
    expect_bad("<body rid='1'/>", "body");                         /* no namespace */
    expect_bad("<bodyx rid='1'" NS "/>", "body");
    expect_bad("<body rid='1'" NS ">hello</body>", "character data");
    expect_bad("<body rid='1'" NS "><message/>text</body>", "character data");
    expect_bad("<body rid='1'" NS "><!-- c --></body>", "comment");
    expect_bad("<?xml-stylesheet href='x'?><body rid='1'" NS "/>", "processing");
    expect_bad("<!DOCTYPE body><body rid='1'" NS "/>", "DTD");
    expect_bad("<body rid='1'" NS ">&ent;</body>", NULL);
    expect_bad("<body rid='1'" NS "><message>", NULL);
    expect_bad("", NULL);
    expect_bad("not xml", NULL);

    /* Size cap */
    bosh_body b;
    char err[128];
    const char *ok = "<body rid='1'" NS "/>";
    CHECK(bosh_body_parse(ok, strlen(ok), strlen(ok), &b, err, sizeof err) == 0);
    bosh_body_free(&b);
    CHECK(bosh_body_parse(ok, strlen(ok), strlen(ok) - 1, &b, err, sizeof err) == -1);
    CHECK(strstr(err, "big") != NULL);

    /* The largest legal values pass. */
    CHECK(parse("<body rid='1' wait='65535' hold='255' ver='65535.0'" NS "/>", &b, err) == 0);
    CHECK(b.wait == 65535 && b.hold == 255 && b.ver_major == 65535 && b.ver_minor == 0);
    bosh_body_free(&b);
    /* XML declaration is allowed. */
    CHECK(parse("<?xml version='1.0' encoding='utf-8'?><body rid='5'" NS "/>", &b, err) == 0);
    CHECK(b.rid == 5);
    bosh_body_free(&b);
#undef NS
}

/* bosh_body_check_with (mod_bosh validates without building the payload
 * tree, issue 15) must give the same verdict as the full parse for every
 * body, and the same root attributes; run both on one reused parser each,
 * interleaved, so state left by one body cannot change the next verdict. */
static void test_check_same_verdict(void) {
#define NS " xmlns='http://jabber.org/protocol/httpbind'"
    static const char *bodies[] = {
        "<body rid='1' sid='n1-ab' to='localhost'" NS "/>",
        "<body rid='2' sid='n1-ab'" NS "><message xmlns='jabber:client' to='a@b'>"
            "<body>hi &amp; bye</body></message></body>",
        "<body rid='3' sid='n1-ab'" NS ">\n  <presence xmlns='jabber:client'/>\n</body>",
        "<body rid='4'" NS ">text at wrapper level</body>",
        "<body rid='4'" NS "><iq xmlns='jabber:client'/>late text</body>",
        "<body rid='5'" NS "><a xmlns='jabber:client'><b><c>deep</c></b></a></body>",
        "<body rid='6'" NS "><a xmlns='jabber:client'><b></a></body>",           /* bad nesting */
        "<body rid='7'" NS "><x:a xmlns='jabber:client'/></body>",               /* unbound prefix */
        "<body rid='8'" NS "><a xmlns='jabber:client'><!-- c --></a></body>",
        "<body rid='9'" NS "><a xmlns='jabber:client'><?pi x?></a></body>",
        "<!DOCTYPE body [<!ENTITY a 'aaaa'>]><body rid='1'" NS ">&a;</body>",
        "<body rid='10'" NS "><a xmlns='jabber:client' q='&#0;'/></body>",
        "<body rid='11'" NS "><a xmlns='jabber:client'>&undefined;</a></body>",
        "<body rid='x'" NS "/>",
        "<body" NS "/>",
        "<notbody rid='1'" NS "/>",
        "<body rid='12'" NS "><a xmlns='jabber:client'/></body><trailing/>",
        "<body rid='13'" NS "><a xmlns='jabber:client'>\xff\xfe</a></body>",
        "",
    };
    xs_parser *full = xs_doc_parser_new(), *shallow = xs_doc_parser_new();
    char deep[8192], many[16384], err1[160], err2[160];
    size_t k = 0;
    bosh_body b1, b2;

    /* deeper than XS_MAX_DEPTH, and attribute-heavy (tree budget) */
    k += (size_t)snprintf(deep + k, sizeof deep - k, "<body rid='20'" NS ">");
    for (int i = 0; i < 400 && k < sizeof deep - 16; i++)
        k += (size_t)snprintf(deep + k, sizeof deep - k, "<a>");
    k = 0;
    k += (size_t)snprintf(many + k, sizeof many - k, "<body rid='21'" NS "><a xmlns='jabber:client'");
    for (int i = 0; i < 900 && k < sizeof many - 32; i++)
        k += (size_t)snprintf(many + k, sizeof many - k, " a%d=''", i);
    snprintf(many + k, sizeof many - k, "/></body>");

    for (int round = 0; round < 2; round++) {
        for (size_t i = 0; i < sizeof bodies / sizeof bodies[0] + 2; i++) {
            const char *d = i < sizeof bodies / sizeof bodies[0] ? bodies[i]
                          : i == sizeof bodies / sizeof bodies[0] ? deep : many;
            size_t len = strlen(d);
            int r1 = bosh_body_parse_with(full, d, len, 65536, &b1, err1, sizeof err1);
            int r2 = bosh_body_check_with(shallow, d, len, 65536, &b2, err2, sizeof err2);
            CHECK(r1 == r2);
            if (r1 == 0 && r2 == 0) {
                CHECK(b1.rid == b2.rid);
                CHECK((b1.sid == NULL) == (b2.sid == NULL));
                if (b1.sid && b2.sid) CHECK_STR(b1.sid, b2.sid);
                CHECK((b1.to == NULL) == (b2.to == NULL));
                CHECK(b2.root->first_child == NULL);    /* nothing built below */
            }
            else if (r1 != 0 && r2 != 0) {
                CHECK_STR(err1, err2);
            }
            if (r1 == 0) bosh_body_free(&b1);
            if (r2 == 0) bosh_body_free(&b2);
        }
    }
    /* a tight byte cap: the same refusal */
    CHECK(bosh_body_parse_with(full, bodies[1], strlen(bodies[1]), 20, &b1, err1, sizeof err1) != 0);
    CHECK(bosh_body_check_with(shallow, bodies[1], strlen(bodies[1]), 20, &b2, err2, sizeof err2) != 0);
    CHECK_STR(err1, err2);
    xs_parser_free(full);
    xs_parser_free(shallow);
#undef NS
}

int main(void) {
    test_check_same_verdict();
    test_session_create();
    test_payloads();
    test_flags();
    test_rejects();
    return unit_done("bosh_body");
}
