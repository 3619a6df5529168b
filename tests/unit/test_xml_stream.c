/*
 * test_xml_stream: stream mode (split feeds, caps, prohibitions, reset),
 * document mode, tree helpers and the serializer.
 */
#include "../../common/xml_stream.h"
#include "unit.h"

#include <stdlib.h>
#include <string.h>

#define STREAM_NS "http://etherx.jabber.org/streams"

/* Collects everything the parser reports as one transcript string. */
typedef struct collector {
    strbuf log;
    int stanzas, starts, ends;
    xs_parser *p;
    int stop_after;      /* call xs_parser_stop after this many stanzas */
    int reset_after;     /* call xs_parser_reset after this many stanzas */
} collector;

static void on_stream_start(void *ud, const char *ns, const char *name, const char **attrs) {
    collector *c = ud;
    c->starts++;
    sb_printf(&c->log, "START{%s}%s", ns, name);
    for (size_t i = 0; attrs[i]; i += 2) sb_printf(&c->log, " %s=%s", attrs[i], attrs[i + 1]);
    sb_puts(&c->log, "\n");
}

static void on_stanza(void *ud, xs_node *s) {
    collector *c = ud;
    c->stanzas++;
    sb_printf(&c->log, "STANZA{%s}:", s->ns);
    xs_serialize(s, NULL, &c->log);
    sb_puts(&c->log, "\n");
    xs_free(s);
    if (c->stop_after && c->stanzas == c->stop_after) xs_parser_stop(c->p);
    if (c->reset_after && c->stanzas == c->reset_after) xs_parser_reset(c->p);
}

static void on_stream_end(void *ud) {
    collector *c = ud;
    c->ends++;
    sb_puts(&c->log, "END\n");
}

static const xs_callbacks CB = { on_stream_start, on_stanza, on_stream_end };

static void collector_init(collector *c, size_t cap) {
    memset(c, 0, sizeof *c);
    sb_init(&c->log);
    c->p = xs_parser_new(&CB, c, cap);
}

static void collector_free(collector *c) {
    xs_parser_free(c->p);
    sb_free(&c->log);
}

static const char STREAM[] =
    "<?xml version='1.0'?>"
    "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
    " to='example.com' version='1.0' xml:lang='en'>\n"
    "<message to='a@b' type='chat'><body>hi &amp; &lt;bye&gt; \xc3\xa9</body></message> \n"
    "<iq type='get' id='1'><query xmlns='jabber:iq:roster'/></iq>"
    "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>"
    "<presence><x xmlns='urn:x' xmlns:p='urn:p' p:attr='v'/></presence>"
    "</stream:stream>";

static char *transcript_whole(void) {
    collector c;
    collector_init(&c, 0);
    CHECK(xs_parser_feed(c.p, STREAM, strlen(STREAM)) == XS_OK);
    char *s = strdup(c.log.data);
    collector_free(&c);
    return s;
}

static void test_stream_whole(void) {
    char *t = transcript_whole();
    CHECK_STR(t,
        "START{http://etherx.jabber.org/streams}stream to=example.com version=1.0 xml:lang=en\n"
        "STANZA{jabber:client}:<message xmlns='jabber:client' to='a@b' type='chat'><body>hi &amp; &lt;bye&gt; \xc3\xa9</body></message>\n"
        "STANZA{jabber:client}:<iq xmlns='jabber:client' type='get' id='1'><query xmlns='jabber:iq:roster'/></iq>\n"
        "STANZA{http://etherx.jabber.org/streams}:<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>\n"
        "STANZA{jabber:client}:<presence xmlns='jabber:client'><x xmlns='urn:x' xmlns:ns0='urn:p' ns0:attr='v'/></presence>\n"
        "END\n");
    free(t);
}

static void test_stream_split(void) {
    char *whole = transcript_whole();
    size_t len = strlen(STREAM);

    /* One byte at a time. */
    collector c;
    collector_init(&c, 0);
    xs_status st = XS_OK;
    for (size_t i = 0; i < len && st == XS_OK; i++) st = xs_parser_feed(c.p, STREAM + i, 1);
    CHECK(st == XS_OK);
    CHECK_STR(c.log.data, whole);
    CHECK(c.stanzas == 4 && c.starts == 1 && c.ends == 1);
    collector_free(&c);

    /* Random chunks, several seeds. */
    srand(12345);
    for (int round = 0; round < 50; round++) {
        collector_init(&c, 0);
        st = XS_OK;
        for (size_t i = 0; i < len && st == XS_OK;) {
            size_t n = 1 + (size_t)rand() % 40;
            if (n > len - i) n = len - i;
            st = xs_parser_feed(c.p, STREAM + i, n);
            i += n;
        }
        CHECK(st == XS_OK);
        CHECK(c.log.data && strcmp(c.log.data, whole) == 0);
        collector_free(&c);
    }
    free(whole);
}

static xs_status feed_all(const char *doc, size_t cap, collector *c) {
    collector_init(c, cap);
    return xs_parser_feed(c->p, doc, strlen(doc));
}

static void test_forbidden(void) {
    collector c;
    const char *hdr = "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";
    char buf[512];

    CHECK(feed_all("<!DOCTYPE x [<!ENTITY a 'b'>]><x/>", 0, &c) == XS_ERR_FORBIDDEN);
    collector_free(&c);
    CHECK(feed_all("<!DOCTYPE x SYSTEM 'http://evil/'><x/>", 0, &c) == XS_ERR_FORBIDDEN);
    collector_free(&c);

    snprintf(buf, sizeof buf, "%s<!-- hi --><message/>", hdr);
    CHECK(feed_all(buf, 0, &c) == XS_ERR_FORBIDDEN);
    CHECK(c.stanzas == 0);
    CHECK(strstr(xs_parser_error(c.p), "comment") != NULL);
    collector_free(&c);

    snprintf(buf, sizeof buf, "%s<message><!-- hi --></message>", hdr);
    CHECK(feed_all(buf, 0, &c) == XS_ERR_FORBIDDEN);
    CHECK(c.stanzas == 0);
    collector_free(&c);

    snprintf(buf, sizeof buf, "%s<message><?php evil()?></message>", hdr);
    CHECK(feed_all(buf, 0, &c) == XS_ERR_FORBIDDEN);
    collector_free(&c);

    /* Undefined entity reference: not well-formed. */
    snprintf(buf, sizeof buf, "%s<message>&foo;</message>", hdr);
    CHECK(feed_all(buf, 0, &c) == XS_ERR_SYNTAX);
    collector_free(&c);

    /* Errors are sticky. */
    snprintf(buf, sizeof buf, "%s<a></b>", hdr);
    CHECK(feed_all(buf, 0, &c) == XS_ERR_SYNTAX);
    CHECK(xs_parser_feed(c.p, "<x/>", 4) == XS_ERR_SYNTAX);
    collector_free(&c);

    /* XML declaration and CDATA are fine. */
    snprintf(buf, sizeof buf, "<?xml version='1.0' encoding='UTF-8'?>%s<message><![CDATA[<b>]]></message>", hdr);
    CHECK(feed_all(buf, 0, &c) == XS_OK);
    CHECK(strstr(c.log.data, "<message xmlns='jabber:client'>&lt;b&gt;</message>") != NULL);
    collector_free(&c);
}

static void test_caps(void) {
    collector c;
    const char *hdr = "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";
    strbuf sb = STRBUF_INIT;

    /* A 100-byte stanza under a 100-byte cap passes; 101 bytes does not. */
    sb_puts(&sb, hdr);
    sb_puts(&sb, "<m>");
    for (int i = 0; i < 100 - 7; i++) sb_putc(&sb, 'x');
    sb_puts(&sb, "</m>");
    CHECK(feed_all(sb.data, 100, &c) == XS_OK);
    CHECK(c.stanzas == 1);
    collector_free(&c);
    sb_reset(&sb);
    sb_puts(&sb, hdr);
    sb_puts(&sb, "<m>");
    for (int i = 0; i < 100 - 6; i++) sb_putc(&sb, 'x');
    sb_puts(&sb, "</m>");
    CHECK(feed_all(sb.data, 100, &c) == XS_ERR_TOO_BIG);
    CHECK(c.stanzas == 0);
    collector_free(&c);

    /* Many small stanzas: the cap is per stanza, not per stream. */
    collector_init(&c, 64);
    CHECK(xs_parser_feed(c.p, hdr, strlen(hdr)) == XS_OK);
    for (int i = 0; i < 1000; i++) CHECK(xs_parser_feed(c.p, "<m>hello</m> ", 13) == XS_OK);
    CHECK(c.stanzas == 1000);
    collector_free(&c);

    /* Whitespace keepalives between stanzas never add up to the cap. */
    collector_init(&c, 16);
    CHECK(xs_parser_feed(c.p, hdr, strlen(hdr)) == XS_OK);
    for (int i = 0; i < 200; i++) CHECK(xs_parser_feed(c.p, " ", 1) == XS_OK);
    CHECK(xs_parser_feed(c.p, "\n\n\n<m/>\n", 8) == XS_OK);
    CHECK(c.stanzas == 1);
    collector_free(&c);

    /* An unfinished huge start tag is caught while expat still buffers it. */
    collector_init(&c, 1000);
    CHECK(xs_parser_feed(c.p, hdr, strlen(hdr)) == XS_OK);
    xs_status st = xs_parser_feed(c.p, "<m a='", 6);
    CHECK(st == XS_OK);
    char chunk[256];
    memset(chunk, 'y', sizeof chunk);
    for (int i = 0; i < 10 && st == XS_OK; i++) st = xs_parser_feed(c.p, chunk, sizeof chunk);
    CHECK(st == XS_ERR_TOO_BIG);
    collector_free(&c);

    /* Same for data fed in one-byte pieces inside a stanza. */
    collector_init(&c, 50);
    CHECK(xs_parser_feed(c.p, hdr, strlen(hdr)) == XS_OK);
    st = xs_parser_feed(c.p, "<m>", 3);
    for (int i = 0; i < 100 && st == XS_OK; i++) st = xs_parser_feed(c.p, "z", 1);
    CHECK(st == XS_ERR_TOO_BIG);
    collector_free(&c);

    /* Nesting depth cap. */
    sb_reset(&sb);
    sb_puts(&sb, hdr);
    for (int i = 0; i < 300; i++) sb_puts(&sb, "<a>");
    CHECK(feed_all(sb.data, 0, &c) == XS_ERR_TOO_BIG);
    collector_free(&c);
    sb_free(&sb);
}

static void test_stop_and_reset(void) {
    collector c;
    const char *hdr = "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";
    strbuf sb = STRBUF_INIT;

    sb_printf(&sb, "%s<a/><b/><c/>", hdr);
    collector_init(&c, 0);
    c.stop_after = 2;
    CHECK(xs_parser_feed(c.p, sb.data, sb.len) == XS_ERR_STOPPED);
    CHECK(c.stanzas == 2);
    CHECK(xs_parser_feed(c.p, "<d/>", 4) == XS_ERR_STOPPED);
    CHECK(c.stanzas == 2);
    collector_free(&c);

    /* Reset from inside the callback: the bytes after <auth/> are a new
     * stream header, parsed by the fresh parser in the same feed. */
    sb_reset(&sb);
    sb_printf(&sb, "%s<auth/>%s<iq/>", hdr, hdr);
    collector_init(&c, 0);
    c.reset_after = 1;
    CHECK(xs_parser_feed(c.p, sb.data, sb.len) == XS_OK);
    CHECK(c.starts == 2);
    CHECK(c.stanzas == 2);
    CHECK(strstr(c.log.data, "<iq xmlns='jabber:client'/>") != NULL);
    collector_free(&c);

    /* Same, split one byte at a time. */
    collector_init(&c, 0);
    c.reset_after = 1;
    xs_status st = XS_OK;
    for (size_t i = 0; i < sb.len && st == XS_OK; i++) st = xs_parser_feed(c.p, sb.data + i, 1);
    CHECK(st == XS_OK);
    CHECK(c.starts == 2 && c.stanzas == 2);
    collector_free(&c);

    /* Reset from outside, after an error, clears it. */
    collector_init(&c, 0);
    CHECK(xs_parser_feed(c.p, "<a></b>", 7) == XS_ERR_SYNTAX);
    xs_parser_reset(c.p);
    CHECK(xs_parser_feed(c.p, hdr, strlen(hdr)) == XS_OK);
    CHECK(xs_parser_feed(c.p, "<x/>", 4) == XS_OK);
    CHECK(c.stanzas == 1);
    collector_free(&c);
    sb_free(&sb);
}

static void test_document(void) {
    xs_node *root = NULL;
    char err[128];
    const char *doc = "<body xmlns='http://jabber.org/protocol/httpbind' rid='5' xml:lang='de'"
                      " xmlns:xmpp='urn:xmpp:xbosh' xmpp:version='1.0'>"
                      "<message xmlns='jabber:client'><body>x</body></message> </body>";
    CHECK(xs_parse_document(doc, strlen(doc), 4096, &root, err, sizeof err) == XS_OK);
    CHECK(root != NULL);
    CHECK(xs_is(root, "http://jabber.org/protocol/httpbind", "body"));
    CHECK_STR(xs_attr_get(root, "rid"), "5");
    CHECK_STR(xs_attr_get(root, "xml:lang"), "de");
    CHECK_STR(xs_attr_get(root, "urn:xmpp:xbosh|version"), "1.0");
    CHECK(xs_attr_get(root, "xmlns") == NULL);
    xs_node *m = xs_child(root, "jabber:client", "message");
    CHECK(m != NULL);
    xs_node *b = xs_child(m, NULL, "body");
    char *t = xs_text(b);
    CHECK_STR(t, "x");
    free(t);
    CHECK(xs_next_elem(m, NULL, NULL) == NULL);
    xs_free(root);

    CHECK(xs_parse_document(doc, strlen(doc), 50, &root, err, sizeof err) == XS_ERR_TOO_BIG);
    CHECK(root == NULL);
    CHECK(xs_parse_document("<a><b></a>", 10, 0, &root, err, sizeof err) == XS_ERR_SYNTAX);
    CHECK(root == NULL);
    CHECK(xs_parse_document("<a>", 3, 0, &root, err, sizeof err) == XS_ERR_SYNTAX);
    CHECK(xs_parse_document("", 0, 0, &root, err, sizeof err) == XS_ERR_SYNTAX);
    CHECK(xs_parse_document("<a/><!--x-->", 12, 0, &root, err, sizeof err) == XS_ERR_FORBIDDEN);
    CHECK(root == NULL);
    const char *lol = "<!DOCTYPE lolz [<!ENTITY lol 'lol'><!ENTITY lol2 '&lol;&lol;'>]><a>&lol2;</a>";
    CHECK(xs_parse_document(lol, strlen(lol), 0, &root, err, sizeof err) == XS_ERR_FORBIDDEN);
    CHECK(strstr(err, "DTD") != NULL);
    CHECK(root == NULL);
}

static void test_tree_and_serialize(void) {
    strbuf out = STRBUF_INIT;
    xs_node *m = xs_new("jabber:client", "message");
    xs_set_attr(m, "to", "a@b/c");
    xs_set_attr(m, "type", "chat");
    xs_set_attr(m, "xml:lang", "en");
    xs_set_attr(m, "type", "groupchat");   /* replaces */
    xs_node *b = xs_add_elem(m, "jabber:client", "body");
    xs_add_text(b, "1 < 2 & 'q' \"d\"", 15);
    xs_add_text(b, " more", 5);            /* merged with the previous text */
    CHECK(b->first_child == b->last_child);
    xs_node *x = xs_add_elem(m, "urn:x", "x");
    xs_set_attr(x, "urn:a|one", "1");
    xs_set_attr(x, "urn:b|two", "2");
    xs_set_attr(x, "urn:a|three", "3");
    xs_add_elem(x, "urn:x", "y");
    xs_add_elem(x, "", "z");

    xs_serialize(m, "jabber:client", &out);
    CHECK_STR(out.data,
        "<message to='a@b/c' type='groupchat' xml:lang='en'>"
        "<body>1 &lt; 2 &amp; &apos;q&apos; &quot;d&quot; more</body>"
        "<x xmlns='urn:x' xmlns:ns0='urn:a' ns0:one='1' xmlns:ns1='urn:b' ns1:two='2' ns0:three='3'>"
        "<y/><z xmlns=''/></x></message>");

    /* Round trip through the parser gives the same tree back. */
    xs_node *r = NULL;
    char err[64];
    sb_reset(&out);
    xs_serialize(m, NULL, &out);
    CHECK(xs_parse_document(out.data, out.len, 0, &r, err, sizeof err) == XS_OK);
    strbuf again = STRBUF_INIT;
    xs_serialize(r, NULL, &again);
    CHECK_STR(again.data, out.data);
    CHECK_STR(xs_attr_get(r, "xml:lang"), "en");
    CHECK_STR(xs_attr_get(xs_child(r, "urn:x", "x"), "urn:a|three"), "3");
    xs_free(r);
    sb_free(&again);

    /* Copy is deep and independent. */
    xs_node *c = xs_copy(m);
    xs_set_attr(m, "to", NULL);
    CHECK(xs_attr_get(m, "to") == NULL);
    CHECK_STR(xs_attr_get(c, "to"), "a@b/c");
    CHECK(m->nattrs == 2);
    xs_node *cb = xs_child(c, "jabber:client", "body");
    char *t = xs_text(cb);
    CHECK_STR(t, "1 < 2 & 'q' \"d\" more");
    free(t);

    /* Unlink the middle child. */
    xs_node *body = xs_child(m, NULL, "body");
    xs_unlink(body);
    CHECK(m->first_child == x && m->last_child == x);
    xs_free(body);
    xs_unlink(x);
    CHECK(m->first_child == NULL && m->last_child == NULL);
    xs_append_child(m, x);
    CHECK(m->first_child == x && x->parent == m);

    /* stream: prefix */
    sb_reset(&out);
    xs_node *f = xs_new(STREAM_NS, "features");
    xs_node *mech = xs_add_elem(f, "urn:ietf:params:xml:ns:xmpp-sasl", "mechanisms");
    xs_add_text(xs_add_elem(mech, "urn:ietf:params:xml:ns:xmpp-sasl", "mechanism"), "PLAIN", 5);
    xs_add_elem(f, "jabber:client", "foo");
    xs_serialize(f, "jabber:client", &out);
    CHECK_STR(out.data,
        "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
        "<mechanism>PLAIN</mechanism></mechanisms><foo/></stream:features>");
    sb_reset(&out);
    xs_node *e = xs_new(STREAM_NS, "error");
    xs_add_elem(e, "urn:ietf:params:xml:ns:xmpp-streams", "host-unknown");
    xs_serialize(e, NULL, &out);
    CHECK_STR(out.data, "<stream:error><host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>");

    /* xs_is / xs_child wildcards */
    CHECK(xs_is(f, STREAM_NS, "features"));
    CHECK(!xs_is(f, "jabber:client", "features"));
    CHECK(xs_is(f, NULL, NULL));
    CHECK(xs_child(f, NULL, "foo") != NULL);
    CHECK(xs_child(f, "urn:nope", NULL) == NULL);
    CHECK(xs_next_elem(xs_child(f, NULL, NULL), "jabber:client", NULL) == xs_child(f, NULL, "foo"));

    xs_free(e);
    xs_free(f);
    xs_free(c);
    xs_free(m);
    sb_free(&out);
}

int main(void) {
    test_stream_whole();
    test_stream_split();
    test_forbidden();
    test_caps();
    test_stop_and_reset();
    test_document();
    test_tree_and_serialize();
    return unit_done("xml_stream");
}
