/*
 * ws: what is WebSocket's own in the RFC 7395 transport (see ws.h); the
 * connection I/O is c2s_native.c's.
 *
 * Who to believe. chatd's WebSocket listener is meant to be reached only
 * through httpd's proxy (a Unix socket by default; loopback otherwise), so
 * what the browser's connection was (https or not, its address, the host
 * it asked for) arrives as X-Forwarded-* headers. They are believed only
 * from a peer known to be httpd, as mod_bosh believes X-Forwarded-Proto
 * only from a BoshTrustedProxy: a unix peer whose uid passed the
 * relay_peer_user check, or a TCP peer listed in ws_trusted_proxy. Of a
 * list the last value counts: the one our proxy appended.
 *
 * Cross-site WebSocket hijacking: a page on another site can open a
 * WebSocket to ours, and unlike fetch() nothing (no CORS) stops it from
 * reading the answers. Browsers always send Origin on a WebSocket
 * handshake, so it is checked: against ws_origin, or by default against
 * the host the browser connected to (X-Forwarded-Host from httpd).
 */
#include "ws.h"

#include <arpa/inet.h>
#include <string.h>
#include <strings.h>

#define STREAM_NS_URI "http://etherx.jabber.org/streams"
#define STREAMS_ERR_NS "urn:ietf:params:xml:ns:xmpp-streams"
#define MAX_ORIGINS 32

/* Split a space/comma separated list in place into at most max items. */
static size_t split(char *s, char **items, size_t max) {
    size_t n = 0;
    for (char *save = NULL, *t = strtok_r(s, ", \t", &save); t && n < max;
         t = strtok_r(NULL, ", \t", &save))
        items[n++] = t;
    return n;
}

static int same_ip(const char *a, const char *b) {
    unsigned char x[16], y[16];
    int fa = strchr(a, ':') ? AF_INET6 : AF_INET, fb = strchr(b, ':') ? AF_INET6 : AF_INET;
    if (fa != fb || inet_pton(fa, a, x) != 1 || inet_pton(fb, b, y) != 1) return 0;
    return memcmp(x, y, fa == AF_INET ? 4 : 16) == 0;
}

int ws_proxy_trusted(const chatd_config *cfg, const char *addr) {
    if (!cfg->ws_trusted_proxy || !addr) return 0;
    char buf[1024], *items[MAX_ORIGINS];
    snprintf(buf, sizeof(buf), "%s", cfg->ws_trusted_proxy);
    size_t n = split(buf, items, MAX_ORIGINS);
    for (size_t i = 0; i < n; i++)
        if (same_ip(items[i], addr)) return 1;
    return 0;
}

void ws_decide(const chatd_config *cfg, const ws_handshake *h, int peer_trusted,
               const char *peer_addr, ws_verdict *v) {
    memset(v, 0, sizeof(*v));
    snprintf(v->client_addr, sizeof(v->client_addr), "%s", peer_addr ? peer_addr : "?");
    if (!h->proto_xmpp) {
        /* RFC 7395 3.1: the client must ask for the xmpp subprotocol. */
        v->status = 400;
        v->why = "Sec-WebSocket-Protocol must include xmpp (RFC 7395)";
        return;
    }
    const char *site = peer_trusted && h->fwd_host[0] ? h->fwd_host : h->host;
    char buf[2048], *items[MAX_ORIGINS];
    size_t n = 0;
    if (cfg->ws_origin) {
        snprintf(buf, sizeof(buf), "%s", cfg->ws_origin);
        n = split(buf, items, MAX_ORIGINS);
    }
    if (!ws_origin_allowed(h->has_origin ? h->origin : NULL, site,
                           (const char *const *)items, n)) {
        v->status = 403;
        v->why = "this page's origin may not open an XMPP WebSocket here (ws_origin)";
        return;
    }
    if (peer_trusted) {
        v->secure = strcasecmp(h->fwd_proto, "https") == 0;
        if (h->fwd_for[0]) {
            unsigned char tmp[16];
            /* Only an address: it keys per-address limits. */
            if (inet_pton(strchr(h->fwd_for, ':') ? AF_INET6 : AF_INET, h->fwd_for, tmp) == 1)
                snprintf(v->client_addr, sizeof(v->client_addr), "%.*s",
                         (int)sizeof(v->client_addr) - 1, h->fwd_for);
        }
    }
}

/* Does the start tag at xml[0..len) declare attr (e.g. "xmlns")? */
static int tag_declares(const char *xml, size_t len, size_t name_end, const char *attr) {
    size_t al = strlen(attr);
    char q = 0;
    for (size_t i = name_end; i < len; i++) {
        char ch = xml[i];
        if (q) { if (ch == q) q = 0; continue; }
        if (ch == '\'' || ch == '"') { q = ch; continue; }
        if (ch == '>') return 0;
        if ((ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r') && i + 1 + al < len &&
            !memcmp(xml + i + 1, attr, al) && (xml[i + 1 + al] == '=' || xml[i + 1 + al] == ' '))
            return 1;
    }
    return 0;
}

void ws_put_element(strbuf *out, const char *xml, size_t len) {
    size_t name_end = 1;
    while (name_end < len && !strchr(" \t\r\n/>", xml[name_end])) name_end++;
    if (len < 2 || xml[0] != '<') {
        ws_frame_put(out, WS_OP_TEXT, xml, len);
        return;
    }
    const char *decl = NULL;
    if (name_end > 8 && !memcmp(xml + 1, "stream:", 7)) {
        if (!tag_declares(xml, len, name_end, "xmlns:stream"))
            decl = " xmlns:stream='" STREAM_NS_URI "'";
    } else if (!tag_declares(xml, len, name_end, "xmlns")) {
        decl = " xmlns='jabber:client'";
    }
    if (!decl) {
        ws_frame_put(out, WS_OP_TEXT, xml, len);
        return;
    }
    strbuf tmp = STRBUF_INIT;
    sb_reserve(&tmp, len + strlen(decl));
    sb_append(&tmp, xml, name_end);
    sb_puts(&tmp, decl);
    sb_append(&tmp, xml + name_end, len - name_end);
    ws_frame_put(out, WS_OP_TEXT, tmp.data, tmp.len);
    sb_free(&tmp);
}

void ws_put_open(strbuf *out, const char *domain, const char *id) {
    strbuf m = STRBUF_INIT;
    sb_puts(&m, "<open xmlns='" WS_FRAMING_NS "' id='");
    sb_put_xml_escaped(&m, id, strlen(id));
    sb_puts(&m, "' from='");
    sb_put_xml_escaped(&m, domain, strlen(domain));
    sb_puts(&m, "' version='1.0' xml:lang='en'/>");
    ws_frame_put(out, WS_OP_TEXT, m.data, m.len);
    sb_free(&m);
}

void ws_put_close(strbuf *out, const char *condition, const char *text) {
    strbuf m = STRBUF_INIT;
    if (condition) {
        sb_puts(&m, "<stream:error xmlns:stream='" STREAM_NS_URI "'><");
        sb_puts(&m, condition);
        sb_puts(&m, " xmlns='" STREAMS_ERR_NS "'/>");
        if (text && *text) {
            sb_puts(&m, "<text xmlns='" STREAMS_ERR_NS "'>");
            sb_put_xml_escaped(&m, text, strlen(text));
            sb_puts(&m, "</text>");
        }
        sb_puts(&m, "</stream:error>");
        ws_frame_put(out, WS_OP_TEXT, m.data, m.len);
    }
    static const char close_el[] = "<close xmlns='" WS_FRAMING_NS "'/>";
    ws_frame_put(out, WS_OP_TEXT, close_el, sizeof(close_el) - 1);
    sb_free(&m);
}
