/*
 * test_xml_reuse: one document parser reused across documents (chatd
 * parses every relayed BOSH body with the same one, XML_ParserReset in
 * between). A rejected document must leave nothing behind: the next good
 * document parses exactly as with a fresh parser, and every limit (DTD,
 * comment, PI, byte cap, tree budget, nesting) still holds afterwards.
 * The stream parser's restart (after SASL) resets expat too: its limits
 * are checked after a restart here as well.
 */
#include "../../common/bosh_body.h"
#include "../../common/strbuf.h"
#include "unit.h"

#include <stdlib.h>
#include <string.h>

#define GOOD "<body xmlns='http://jabber.org/protocol/httpbind' rid='5' xml:lang='de'" \
             " xmlns:xmpp='urn:xmpp:xbosh' xmpp:version='1.0'>" \
             "<message xmlns='jabber:client' to='r@conference.localhost'>" \
             "<body>gr\xc3\xbc\xc3\x9f &amp; x</body></message> </body>"

/* What a fresh parser makes of GOOD, serialized: the reference. */
static void serialize_doc(xs_parser *p, const char *doc, size_t len, size_t cap,
                          xs_status *st, strbuf *out) {
    xs_node *root = NULL;
    char err[128];
    *st = p ? xs_doc_parse(p, doc, len, cap, &root, err, sizeof err)
            : xs_parse_document(doc, len, cap, &root, err, sizeof err);
    if (root) xs_serialize(root, NULL, out);
    if (*st != XS_OK && root) sb_puts(out, "(tree on failure)");
    xs_free(root);
}

static int good_parses(xs_parser *p) {
    static strbuf ref = STRBUF_INIT;
    strbuf got = STRBUF_INIT;
    xs_status st;
    if (!ref.len) {
        serialize_doc(NULL, GOOD, strlen(GOOD), 4096, &st, &ref);
        if (st != XS_OK) return 0;
    }
    serialize_doc(p, GOOD, strlen(GOOD), 4096, &st, &got);
    int ok = st == XS_OK && got.len == ref.len && memcmp(got.data, ref.data, ref.len) == 0;
    if (!ok) fprintf(stderr, "reused parser: status %d, got %.*s\n", (int)st,
                     (int)got.len, got.data ? got.data : "");
    sb_free(&got);
    return ok;
}

static xs_status parse(xs_parser *p, const char *doc, size_t len, size_t cap, char *err) {
    xs_node *root = NULL;
    xs_status st = xs_doc_parse(p, doc, len, cap, &root, err, 128);
    if (st != XS_OK && root) st = (xs_status)-1;   /* a tree must never escape a failure */
    xs_free(root);
    return st;
}

/* <body><x xmlns='LONG'><a/>...</x></body>: few bytes, a big tree. */
static void amplifying(strbuf *sb) {
    sb_puts(sb, "<body rid='1' xmlns='" BOSH_NS "'><x xmlns='urn:");
    for (int i = 0; i < 3000; i++) sb_append(sb, "n", 1);
    sb_puts(sb, "'>");
    for (int i = 0; i < 1000; i++) sb_puts(sb, "<a/>");
    sb_puts(sb, "</x></body>");
}

static void test_reuse_after_rejects(void) {
    xs_parser *p = xs_doc_parser_new();
    char err[128];
    const char *dtd = "<!DOCTYPE a [<!ENTITY e 'boom'>]><a>&e;</a>";
    const char *lol = "<!DOCTYPE l [<!ENTITY l 'lol'><!ENTITY l2 '&l;&l;&l;'>]><a>&l2;</a>";
    const char *pi = "<a><?php x?></a>";
    const char *comment = "<a><b/><!-- c --></a>";
    const char *bad = "<a><b></a>";
    const char *cut = "<body xmlns='http://jabber.org/protocol/httpbind'><message><body>x";
    strbuf amp = STRBUF_INIT, deep = STRBUF_INIT;
    amplifying(&amp);
    for (int i = 0; i < 300; i++) sb_puts(&deep, "<d>");
    for (int i = 0; i < 300; i++) sb_puts(&deep, "</d>");

    CHECK(good_parses(p));
    for (int round = 0; round < 2; round++) {   /* still enforced the second time */
        CHECK(parse(p, dtd, strlen(dtd), 4096, err) == XS_ERR_FORBIDDEN);
        CHECK(strstr(err, "DTD") != NULL);
        CHECK(good_parses(p));
        CHECK(parse(p, lol, strlen(lol), 0, err) == XS_ERR_FORBIDDEN);
        CHECK(good_parses(p));
        CHECK(parse(p, pi, strlen(pi), 4096, err) == XS_ERR_FORBIDDEN);
        CHECK(good_parses(p));
        CHECK(parse(p, comment, strlen(comment), 4096, err) == XS_ERR_FORBIDDEN);
        CHECK(good_parses(p));
        CHECK(parse(p, GOOD, strlen(GOOD), 50, err) == XS_ERR_TOO_BIG);   /* byte cap */
        CHECK(good_parses(p));
        CHECK(parse(p, bad, strlen(bad), 4096, err) == XS_ERR_SYNTAX);
        CHECK(good_parses(p));
        CHECK(parse(p, cut, strlen(cut), 4096, err) == XS_ERR_SYNTAX);     /* open elements left */
        CHECK(good_parses(p));
        CHECK(parse(p, amp.data, amp.len, 8192, err) == XS_ERR_TOO_BIG);  /* tree budget */
        CHECK(strstr(err, "too complex") != NULL);
        CHECK(good_parses(p));
        CHECK(parse(p, deep.data, deep.len, 0, err) == XS_ERR_TOO_BIG);   /* nesting */
        CHECK(good_parses(p));
        CHECK(parse(p, "", 0, 4096, err) == XS_ERR_SYNTAX);
        CHECK(good_parses(p));
    }
    /* Uncapped, the same amplifying body is fine: the cap is per call. */
    CHECK(parse(p, amp.data, amp.len, 0, err) == XS_OK);
    CHECK(parse(p, amp.data, amp.len, 8192, err) == XS_ERR_TOO_BIG);
    CHECK(good_parses(p));
    sb_free(&amp);
    sb_free(&deep);
    xs_parser_free(p);
}

/* A document past the size after which the parser is not kept. */
static void test_reuse_after_big_document(void) {
    xs_parser *p = xs_doc_parser_new();
    strbuf big = STRBUF_INIT;
    char err[128];
    sb_puts(&big, "<a>");
    for (int i = 0; i < 20000; i++) sb_puts(&big, "<b>x</b>");
    sb_puts(&big, "</a>");
    CHECK(parse(p, big.data, big.len, 0, err) == XS_OK);
    CHECK(good_parses(p));
    CHECK(parse(p, big.data, big.len, 1000, err) == XS_ERR_TOO_BIG);
    CHECK(good_parses(p));
    sb_free(&big);
    xs_parser_free(p);
}

/* bosh_body_parse_with gives what bosh_body_parse gives, body after body. */
static void test_bosh_body_with(void) {
    static const char *bodies[] = {
        "<body rid='1' xmlns='" BOSH_NS "' to='localhost' wait='60' hold='1' ver='1.6'/>",
        "<body rid='2' sid='s' xmlns='" BOSH_NS "'><message to='a@b'><body>hi</body></message></body>",
        "<body sid='s' xmlns='" BOSH_NS "'/>",                       /* no rid */
        "<body rid='3' xmlns='urn:other'/>",                          /* wrong root */
        "<!DOCTYPE body><body rid='4' xmlns='" BOSH_NS "'/>",
        "<body rid='5' xmlns='" BOSH_NS "'>text</body>",
        "<body rid='6' xmlns='" BOSH_NS "' type='terminate'><presence type='unavailable'/></body>",
        "<body rid='7' xmlns='" BOSH_NS "'><iq",
    };
    xs_parser *p = xs_doc_parser_new();
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
            bosh_body a, b;
            char ea[128] = "", eb[128] = "";
            size_t len = strlen(bodies[i]);
            int ra = bosh_body_parse(bodies[i], len, 65536, &a, ea, sizeof ea);
            int rb = bosh_body_parse_with(p, bodies[i], len, 65536, &b, eb, sizeof eb);
            CHECK(ra == rb);
            CHECK_STR(ea, eb);
            if (ra == 0 && rb == 0) {
                strbuf sa = STRBUF_INIT, sb = STRBUF_INIT;
                xs_serialize(a.root, NULL, &sa);
                xs_serialize(b.root, NULL, &sb);
                CHECK(sa.len == sb.len && memcmp(sa.data, sb.data, sa.len) == 0);
                CHECK(a.rid == b.rid && a.flags == b.flags && a.npayloads == b.npayloads);
                sb_free(&sa);
                sb_free(&sb);
                bosh_body_free(&a);
                bosh_body_free(&b);
            }
        }
    }
    xs_parser_free(p);
}

/* Stream mode: after xs_parser_reset (a stream restart) the limits hold. */
static int stanzas;
static void on_stanza(void *ud, xs_node *s) { (void)ud; stanzas++; xs_free(s); }

static void test_stream_restart_keeps_limits(void) {
    static const xs_callbacks cb = { NULL, on_stanza, NULL };
    const char *hdr = "<stream:stream xmlns='jabber:client' "
                      "xmlns:stream='http://etherx.jabber.org/streams'>";
    xs_parser *p = xs_parser_new(&cb, NULL, 64);
    CHECK(xs_parser_feed(p, hdr, strlen(hdr)) == XS_OK);
    CHECK(xs_parser_feed(p, "<a/>", 4) == XS_OK);
    CHECK(stanzas == 1);
    xs_parser_reset(p);
    const char *dtd = "<!DOCTYPE x [<!ENTITY e 'y'>]>";
    CHECK(xs_parser_feed(p, dtd, strlen(dtd)) == XS_ERR_FORBIDDEN);

    xs_parser_reset(p);
    CHECK(xs_parser_feed(p, hdr, strlen(hdr)) == XS_OK);
    strbuf big = STRBUF_INIT;
    sb_puts(&big, "<message><body>");
    for (int i = 0; i < 100; i++) sb_putc(&big, 'x');
    sb_puts(&big, "</body></message>");
    CHECK(xs_parser_feed(p, big.data, big.len) == XS_ERR_TOO_BIG);
    CHECK(stanzas == 1);

    xs_parser_reset(p);
    CHECK(xs_parser_feed(p, hdr, strlen(hdr)) == XS_OK);
    CHECK(xs_parser_feed(p, "<b/><!--c-->", 12) == XS_ERR_FORBIDDEN);
    CHECK(stanzas == 2);
    sb_free(&big);
    xs_parser_free(p);
}

int main(void) {
    test_reuse_after_rejects();
    test_reuse_after_big_document();
    test_bosh_body_with();
    test_stream_restart_keeps_limits();
    return unit_done("xml_reuse");
}
