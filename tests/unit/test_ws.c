/*
 * test_ws: what is WebSocket's own in chatd's RFC 7395 transport
 * (chatd/transport/ws.c): the handshake policy (subprotocol, Origin,
 * whose X-Forwarded-* count) and the shape of what is sent (every
 * message a standalone element, <open/>, stream errors, <close/>).
 */
#include "../../chatd/transport/ws.h"
#include "unit.h"

#include <string.h>

/* The payload of the single unmasked server frame at the start of sb. */
static const char *payload(const strbuf *sb, size_t *len) {
    const unsigned char *u = (const unsigned char *)sb->data;
    size_t n = u[1] & 0x7f, off = 2;
    if (n == 126) { n = (size_t)u[2] << 8 | u[3]; off = 4; }
    *len = n;
    return sb->data + off;
}

static int frame_is(const strbuf *sb, const char *want) {
    size_t n;
    const char *p = payload(sb, &n);
    if ((unsigned char)sb->data[0] != 0x81) return 0;
    if (n != strlen(want) || memcmp(p, want, n) != 0) {
        fprintf(stderr, "frame: %.*s\n  want: %s\n", (int)n, p, want);
        return 0;
    }
    return 1;
}

static void test_elements(void) {
    strbuf sb = STRBUF_INIT;
    /* A stanza serialized in the stream's default namespace gets it. */
    ws_put_element(&sb, "<message to='a@b'><body>x</body></message>", 42);
    CHECK(frame_is(&sb, "<message xmlns='jabber:client' to='a@b'><body>x</body></message>"));
    sb_reset(&sb);
    ws_put_element(&sb, "<presence/>", 11);
    CHECK(frame_is(&sb, "<presence xmlns='jabber:client'/>"));
    /* One that declares its own namespace is left alone. */
    sb_reset(&sb);
    const char *sasl = "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>";
    ws_put_element(&sb, sasl, strlen(sasl));
    CHECK(frame_is(&sb, sasl));
    /* An xmlns inside an attribute value or a child does not count. */
    sb_reset(&sb);
    const char *tricky = "<iq id='xmlns=x' type='result'><query xmlns='q'/></iq>";
    ws_put_element(&sb, tricky, strlen(tricky));
    CHECK(frame_is(&sb, "<iq xmlns='jabber:client' id='xmlns=x' type='result'><query xmlns='q'/></iq>"));
    /* stream: prefixed elements get the prefix declared. */
    sb_reset(&sb);
    const char *feat = "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>";
    ws_put_element(&sb, feat, strlen(feat));
    CHECK(frame_is(&sb, "<stream:features xmlns:stream='http://etherx.jabber.org/streams'>"
                        "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>"));
    sb_free(&sb);
}

static void test_open_close(void) {
    strbuf sb = STRBUF_INIT;
    ws_put_open(&sb, "example.com", "abc'1");
    CHECK(frame_is(&sb, "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' id='abc&apos;1' "
                        "from='example.com' version='1.0' xml:lang='en'/>"));
    sb_reset(&sb);
    ws_put_close(&sb, NULL, NULL);
    CHECK(frame_is(&sb, "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>"));
    sb_reset(&sb);
    ws_put_close(&sb, "reset", "go <away>");
    /* Two messages: the error, then <close/>. */
    CHECK(frame_is(&sb, "<stream:error xmlns:stream='http://etherx.jabber.org/streams'>"
                        "<reset xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
                        "<text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>go &lt;away&gt;</text>"
                        "</stream:error>"));
    size_t n;
    payload(&sb, &n);
    strbuf rest = STRBUF_INIT;
    size_t first = (size_t)(payload(&sb, &n) - sb.data) + n;
    sb_append(&rest, sb.data + first, sb.len - first);
    CHECK(frame_is(&rest, "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>"));
    sb_free(&rest);
    sb_free(&sb);
}

static ws_handshake hs(const char *origin, int xmpp) {
    ws_handshake h;
    memset(&h, 0, sizeof(h));
    strcpy(h.host, "localhost");
    strcpy(h.fwd_host, "chat.example.com");
    strcpy(h.fwd_proto, "https");
    strcpy(h.fwd_for, "192.0.2.7");
    h.proto_xmpp = xmpp;
    if (origin) { h.has_origin = 1; strcpy(h.origin, origin); }
    return h;
}

static void test_decide(void) {
    chatd_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    char trusted[] = "127.0.0.1 ::1";
    cfg.ws_trusted_proxy = trusted;
    ws_verdict v;
    ws_handshake h = hs("https://chat.example.com", 1);

    /* httpd (trusted): same site, https, the forwarded address. */
    ws_decide(&cfg, &h, 1, "unix", &v);
    CHECK(v.status == 0 && v.secure == 1);
    CHECK_STR(v.client_addr, "192.0.2.7");
    /* Not trusted: X-Forwarded-* ignored, so the site is Host (localhost)
     * and the page's origin is not same-site. */
    ws_decide(&cfg, &h, 0, "10.0.0.9", &v);
    CHECK(v.status == 403);
    h = hs("http://localhost", 1);
    ws_decide(&cfg, &h, 0, "10.0.0.9", &v);
    CHECK(v.status == 0 && v.secure == 0);
    CHECK_STR(v.client_addr, "10.0.0.9");
    /* Cross-site, no subprotocol, no Origin. */
    h = hs("https://evil.example", 1);
    ws_decide(&cfg, &h, 1, "unix", &v);
    CHECK(v.status == 403);
    h = hs("https://chat.example.com", 0);
    ws_decide(&cfg, &h, 1, "unix", &v);
    CHECK(v.status == 400);
    h = hs(NULL, 1);
    ws_decide(&cfg, &h, 1, "unix", &v);
    CHECK(v.status == 0);
    /* ws_origin replaces same-site. */
    char origins[] = "https://app.example.com, https://intranet.example.com";
    cfg.ws_origin = origins;
    h = hs("https://intranet.example.com", 1);
    ws_decide(&cfg, &h, 1, "unix", &v);
    CHECK(v.status == 0);
    h = hs("https://chat.example.com", 1);
    ws_decide(&cfg, &h, 1, "unix", &v);
    CHECK(v.status == 403);
    /* A forwarded "address" that is not one is not used. */
    cfg.ws_origin = NULL;
    h = hs("https://chat.example.com", 1);
    strcpy(h.fwd_for, "unknown");
    ws_decide(&cfg, &h, 1, "unix", &v);
    CHECK_STR(v.client_addr, "unix");

    CHECK(ws_proxy_trusted(&cfg, "127.0.0.1"));
    CHECK(ws_proxy_trusted(&cfg, "::1"));
    CHECK(ws_proxy_trusted(&cfg, "0:0:0:0:0:0:0:1"));
    CHECK(!ws_proxy_trusted(&cfg, "127.0.0.2"));
    CHECK(!ws_proxy_trusted(&cfg, "unix"));
}

int main(void) {
    test_elements();
    test_open_close();
    test_decide();
    return unit_done("ws");
}
