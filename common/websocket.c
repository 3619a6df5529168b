/*
 * websocket: RFC 6455 server side without I/O (see websocket.h for why).
 *
 * The handshake parser is strict where laxness would let a hostile
 * request through (CRLF line ends only, no folded headers, bounded
 * sizes, a key that really is 16 bytes) and indifferent to what it does
 * not need. The frame reader needs a whole frame in the buffer before it
 * acts, and refuses an oversized one from its header alone, so a peer
 * cannot make the caller buffer more than one message's worth.
 */
#include "websocket.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* ---- handshake ---- */

static int is_ows(char c) { return c == ' ' || c == '\t'; }

/* Does the comma list [v, v+n) hold token (ASCII case-insensitive when
 * nocase)? */
static int list_has(const char *v, size_t n, const char *token, int nocase) {
    size_t tl = strlen(token), i = 0;
    while (i < n) {
        while (i < n && (is_ows(v[i]) || v[i] == ',')) i++;
        size_t s = i;
        while (i < n && v[i] != ',') i++;
        size_t e = i;
        while (e > s && is_ows(v[e - 1])) e--;
        if (e - s == tl && (nocase ? strncasecmp(v + s, token, tl) : strncmp(v + s, token, tl)) == 0)
            return 1;
    }
    return 0;
}

/* Copy [v, v+n) trimmed into out. -1 if it does not fit (or has a NUL). */
static int copy_val(const char *v, size_t n, char *out, size_t outsz) {
    while (n && is_ows(*v)) { v++; n--; }
    while (n && is_ows(v[n - 1])) n--;
    if (n >= outsz || memchr(v, '\0', n)) return -1;
    memcpy(out, v, n);
    out[n] = '\0';
    return 0;
}

/* The last element of a comma list, trimmed. */
static int copy_last(const char *v, size_t n, char *out, size_t outsz) {
    const char *c = NULL;
    for (size_t i = 0; i < n; i++) if (v[i] == ',') c = v + i;
    if (c) { n -= (size_t)(c + 1 - v); v = c + 1; }
    return copy_val(v, n, out, outsz);
}

static int hname(const char *name, size_t nl, const char *want) {
    return strlen(want) == nl && strncasecmp(name, want, nl) == 0;
}

static int key_ok(const char *key) {
    unsigned char raw[24];
    if (strlen(key) != 24 || key[22] != '=' || key[23] != '=') return 0;
    for (int i = 0; i < 22; i++)
        if (!isalnum((unsigned char)key[i]) && key[i] != '+' && key[i] != '/') return 0;
    return EVP_DecodeBlock(raw, (const unsigned char *)key, 24) == 18;
}

ws_hs_status ws_handshake_parse(const char *buf, size_t len, ws_handshake *h,
                                size_t *used, int *status, const char **why) {
    memset(h, 0, sizeof(*h));
    *status = 400;
    size_t lim = len < WS_MAX_HANDSHAKE ? len : WS_MAX_HANDSHAKE;
    const char *end = NULL;
    for (size_t i = 0; i + 4 <= lim; i++)
        if (buf[i] == '\r' && !memcmp(buf + i, "\r\n\r\n", 4)) { end = buf + i; break; }
    if (!end) {
        if (len < WS_MAX_HANDSHAKE) return WS_HS_MORE;
        *status = 431;
        *why = "request headers too large";
        return WS_HS_BAD;
    }
    *used = (size_t)(end - buf) + 4;

    /* Request line: GET SP path SP HTTP/1.x */
    const char *p = buf, *eol = memchr(p, '\r', (size_t)(end - p) + 1);
    const char *sp1 = memchr(p, ' ', (size_t)(eol - p));
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
    if (!sp1 || !sp2 || eol[1] != '\n') { *why = "bad request line"; return WS_HS_BAD; }
    if (sp1 - p != 3 || memcmp(p, "GET", 3) != 0) {
        *status = 405;
        *why = "only GET opens a WebSocket";
        return WS_HS_BAD;
    }
    if (eol - sp2 - 1 != 8 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0 || sp2[8] < '1' || sp2[8] > '9') {
        *why = "HTTP/1.1 is required";
        return WS_HS_BAD;
    }
    if (copy_val(sp1 + 1, (size_t)(sp2 - sp1 - 1), h->path, sizeof(h->path)) < 0 ||
        h->path[0] != '/') {
        *why = "bad request target";
        return WS_HS_BAD;
    }

    int upgrade = 0, connection = 0, version = 0, have_host = 0, have_key = 0;
    p = eol + 2;
    while (p < end + 2) {
        eol = memchr(p, '\r', (size_t)(end + 2 - p));
        if (!eol || eol[1] != '\n') { *why = "bad line end"; return WS_HS_BAD; }
        if (is_ows(*p)) { *why = "folded header"; return WS_HS_BAD; }
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        if (!colon || colon == p) { *why = "bad header line"; return WS_HS_BAD; }
        for (const char *q = p; q < colon; q++)
            if (*q <= ' ' || *q >= 127) { *why = "bad header name"; return WS_HS_BAD; }
        size_t nl = (size_t)(colon - p), vl = (size_t)(eol - colon - 1);
        const char *v = colon + 1;
        if (memchr(v, '\0', vl) || memchr(v, '\n', vl)) { *why = "bad header value"; return WS_HS_BAD; }
        int bad = 0;
        if (hname(p, nl, "Host")) {
            if (have_host++) { *why = "two Host headers"; return WS_HS_BAD; }
            bad = copy_val(v, vl, h->host, sizeof(h->host));
        } else if (hname(p, nl, "Upgrade")) {
            upgrade |= list_has(v, vl, "websocket", 1);
        } else if (hname(p, nl, "Connection")) {
            connection |= list_has(v, vl, "upgrade", 1);
        } else if (hname(p, nl, "Sec-WebSocket-Version")) {
            char tmp[8];
            version = copy_val(v, vl, tmp, sizeof(tmp)) == 0 && !strcmp(tmp, "13");
        } else if (hname(p, nl, "Sec-WebSocket-Key")) {
            if (have_key++) { *why = "two keys"; return WS_HS_BAD; }
            bad = copy_val(v, vl, h->key, sizeof(h->key));
        } else if (hname(p, nl, "Sec-WebSocket-Protocol")) {
            h->proto_xmpp |= list_has(v, vl, "xmpp", 0);
        } else if (hname(p, nl, "Origin")) {
            if (h->has_origin++) { *why = "two Origin headers"; return WS_HS_BAD; }
            bad = copy_val(v, vl, h->origin, sizeof(h->origin));
        } else if (hname(p, nl, "X-Forwarded-Proto")) {
            bad = copy_last(v, vl, h->fwd_proto, sizeof(h->fwd_proto));
        } else if (hname(p, nl, "X-Forwarded-For")) {
            bad = copy_last(v, vl, h->fwd_for, sizeof(h->fwd_for));
        } else if (hname(p, nl, "X-Forwarded-Host")) {
            bad = copy_last(v, vl, h->fwd_host, sizeof(h->fwd_host));
        }
        if (bad) { *why = "header value too long"; return WS_HS_BAD; }
        p = eol + 2;
    }
    if (!have_host || !h->host[0]) { *why = "no Host"; return WS_HS_BAD; }
    if (!upgrade || !connection) { *why = "not a WebSocket upgrade"; return WS_HS_BAD; }
    if (!version) {
        *status = 426;
        *why = "Sec-WebSocket-Version 13 is required";
        return WS_HS_BAD;
    }
    if (!have_key || !key_ok(h->key)) { *why = "bad Sec-WebSocket-Key"; return WS_HS_BAD; }
    *status = 101;
    *why = NULL;
    return WS_HS_OK;
}

int ws_accept_key(const char *key, char out[29]) {
    unsigned char md[SHA_DIGEST_LENGTH];
    char cat[64 + sizeof(WS_GUID)];
    if (!key_ok(key)) return -1;
    size_t kl = strlen(key);
    memcpy(cat, key, kl);
    memcpy(cat + kl, WS_GUID, sizeof(WS_GUID) - 1);
    SHA1((const unsigned char *)cat, kl + sizeof(WS_GUID) - 1, md);
    EVP_EncodeBlock((unsigned char *)out, md, SHA_DIGEST_LENGTH);
    return 0;
}

void ws_handshake_response(strbuf *out, const char *accept, const char *protocol) {
    sb_puts(out, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Accept: ");
    sb_puts(out, accept);
    if (protocol) {
        sb_puts(out, "\r\nSec-WebSocket-Protocol: ");
        sb_puts(out, protocol);
    }
    sb_puts(out, "\r\n\r\n");
}

void ws_http_error(strbuf *out, int status, const char *why) {
    const char *text = status == 403 ? "Forbidden" : status == 405 ? "Method Not Allowed"
                     : status == 426 ? "Upgrade Required"
                     : status == 431 ? "Request Header Fields Too Large"
                     : status == 503 ? "Service Unavailable" : "Bad Request";
    size_t wl = why ? strlen(why) : 0;
    sb_printf(out, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                   "Content-Length: %zu\r\nConnection: close\r\n", status, text, wl + 1);
    if (status == 426) sb_puts(out, "Sec-WebSocket-Version: 13\r\n");
    if (status == 405) sb_puts(out, "Allow: GET\r\n");
    sb_puts(out, "\r\n");
    if (why) sb_append(out, why, wl);
    sb_putc(out, '\n');
}

int ws_origin_allowed(const char *origin, const char *site_host,
                      const char *const *allow, size_t nallow) {
    if (!origin) return 1;
    for (size_t i = 0; i < nallow; i++)
        if (!strcmp(allow[i], "*") || !strcasecmp(allow[i], origin)) return 1;
    if (nallow) return 0;
    const char *auth = strstr(origin, "://");
    if (!auth || !site_host || !*site_host) return 0;
    auth += 3;
    if (strncasecmp(origin, "https://", 8) && strncasecmp(origin, "http://", 7)) return 0;
    return strcasecmp(auth, site_host) == 0;
}

/* ---- frames ---- */

void ws_reader_init(ws_reader *r, size_t max_message) {
    memset(r, 0, sizeof(*r));
    r->max_message = max_message;
    sb_init(&r->msg);
}

void ws_reader_free(ws_reader *r) {
    sb_free(&r->msg);
}

static size_t fail(ws_reader *r, ws_event *ev, uint16_t code, const char *why) {
    r->failed = 1;
    r->fail_code = code;
    r->fail_why = why;
    ev->kind = WS_EV_ERROR;
    ev->code = code;
    ev->why = why;
    return 0;
}

static int close_code_ok(unsigned c) {
    if (c >= 3000 && c <= 4999) return 1;
    return (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014);
}

size_t ws_read(ws_reader *r, char *buf, size_t len, ws_event *ev) {
    const unsigned char *u = (const unsigned char *)buf;
    memset(ev, 0, sizeof(*ev));
    ev->kind = WS_EV_MORE;
    if (r->failed) return fail(r, ev, r->fail_code, r->fail_why);
    if (r->done) {
        sb_reset(&r->msg);
        r->done = 0;
        r->in_message = 0;
    }
    if (len < 2) return 0;
    int fin = u[0] & 0x80, op = u[0] & 0x0f;
    if (u[0] & 0x70) return fail(r, ev, WS_CLOSE_PROTOCOL, "reserved bits set (no extension was agreed)");
    if (op > 2 && op < 8) return fail(r, ev, WS_CLOSE_PROTOCOL, "unknown opcode");
    if (op > 10) return fail(r, ev, WS_CLOSE_PROTOCOL, "unknown opcode");
    if (!(u[1] & 0x80)) return fail(r, ev, WS_CLOSE_PROTOCOL, "unmasked client frame");
    uint64_t plen = u[1] & 0x7f;
    size_t hdr = 2;
    if (op >= 8) {
        if (!fin) return fail(r, ev, WS_CLOSE_PROTOCOL, "fragmented control frame");
        if (plen > 125) return fail(r, ev, WS_CLOSE_PROTOCOL, "control frame over 125 bytes");
    }
    if (plen == 126) {
        if (len < 4) return 0;
        plen = (uint64_t)u[2] << 8 | u[3];
        hdr = 4;
    } else if (plen == 127) {
        if (len < 10) return 0;
        plen = 0;
        for (int i = 2; i < 10; i++) plen = plen << 8 | u[i];
        if (plen >> 63) return fail(r, ev, WS_CLOSE_PROTOCOL, "frame length with the top bit set");
        hdr = 10;
    }
    if (op == WS_OP_BINARY) return fail(r, ev, WS_CLOSE_UNSUPPORTED, "binary frames are not XMPP (RFC 7395 3.2)");
    if (op == WS_OP_TEXT && r->in_message)
        return fail(r, ev, WS_CLOSE_PROTOCOL, "new message before the last one ended");
    if (op == WS_OP_CONT && !r->in_message)
        return fail(r, ev, WS_CLOSE_PROTOCOL, "continuation frame without a message");
    if (op < 8 && plen > r->max_message - r->msg.len)
        return fail(r, ev, WS_CLOSE_TOO_BIG, "message larger than the limit");
    hdr += 4;
    if (len < hdr || (uint64_t)(len - hdr) < plen) return 0;
    const unsigned char *mask = u + hdr - 4;
    char *pl = buf + hdr;
    for (size_t i = 0; i < (size_t)plen; i++) pl[i] = (char)(pl[i] ^ mask[i & 3]);
    size_t used = hdr + (size_t)plen;

    switch (op) {
    case WS_OP_PING: ev->kind = WS_EV_PING; ev->data = pl; ev->len = (size_t)plen; return used;
    case WS_OP_PONG: ev->kind = WS_EV_PONG; ev->data = pl; ev->len = (size_t)plen; return used;
    case WS_OP_CLOSE:
        if (plen == 0) { ev->kind = WS_EV_CLOSE; ev->code = WS_CLOSE_NO_STATUS; return used; }
        if (plen == 1) return fail(r, ev, WS_CLOSE_PROTOCOL, "close frame with a 1-byte body");
        ev->code = (uint16_t)((unsigned char)pl[0] << 8 | (unsigned char)pl[1]);
        if (!close_code_ok(ev->code)) return fail(r, ev, WS_CLOSE_PROTOCOL, "invalid close code");
        if (!ws_utf8_valid(pl + 2, (size_t)plen - 2))
            return fail(r, ev, WS_CLOSE_BAD_DATA, "close reason is not UTF-8");
        ev->kind = WS_EV_CLOSE;
        ev->data = pl + 2;
        ev->len = (size_t)plen - 2;
        return used;
    default:
        break;
    }
    sb_append(&r->msg, pl, (size_t)plen);
    if (!fin) {
        r->in_message = 1;
        return used;
    }
    if (!ws_utf8_valid(r->msg.data, r->msg.len))
        return fail(r, ev, WS_CLOSE_BAD_DATA, "text message is not UTF-8");
    r->done = 1;
    ev->kind = WS_EV_TEXT;
    ev->data = r->msg.data;
    ev->len = r->msg.len;
    return used;
}

static void put_header(strbuf *out, int b0, int mask, size_t len) {
    unsigned char h[10];
    size_t n = 2;
    h[0] = (unsigned char)b0;
    if (len < 126) h[1] = (unsigned char)len;
    else if (len < 65536) {
        h[1] = 126;
        h[2] = (unsigned char)(len >> 8);
        h[3] = (unsigned char)len;
        n = 4;
    } else {
        h[1] = 127;
        for (int i = 0; i < 8; i++) h[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
        n = 10;
    }
    if (mask) h[1] |= 0x80;
    sb_append(out, h, n);
}

void ws_frame_put(strbuf *out, int opcode, const void *data, size_t len) {
    put_header(out, 0x80 | (opcode & 0x0f), 0, len);
    if (len) sb_append(out, data, len);
}

void ws_close_put(strbuf *out, uint16_t code, const char *reason) {
    char body[125];
    size_t n = 0;
    if (code) {
        body[0] = (char)(code >> 8);
        body[1] = (char)(code & 0xff);
        n = 2;
        if (reason) {
            size_t rl = strlen(reason);
            if (rl > sizeof(body) - 2) rl = sizeof(body) - 2;
            /* Do not cut a UTF-8 sequence in half. */
            while (rl && !ws_utf8_valid(reason, rl)) rl--;
            memcpy(body + 2, reason, rl);
            n += rl;
        }
    }
    ws_frame_put(out, WS_OP_CLOSE, body, n);
}

void ws_frame_put_client(strbuf *out, int opcode, int fin, const uint8_t mask[4],
                         const void *data, size_t len) {
    put_header(out, (fin ? 0x80 : 0) | (opcode & 0x0f), 1, len);
    sb_append(out, mask, 4);
    sb_reserve(out, len);
    const unsigned char *d = data;
    for (size_t i = 0; i < len; i++) sb_putc(out, (char)(d[i] ^ mask[i & 3]));
}

int ws_utf8_valid(const char *s, size_t len) {
    const unsigned char *p = (const unsigned char *)s, *e = p + len;
    while (p < e) {
        unsigned c = *p;
        if (c < 0x80) { p++; continue; }
        size_t n;
        unsigned cp, min;
        if (c >= 0xc2 && c <= 0xdf) { n = 1; cp = c & 0x1f; min = 0x80; }
        else if (c >= 0xe0 && c <= 0xef) { n = 2; cp = c & 0x0f; min = 0x800; }
        else if (c >= 0xf0 && c <= 0xf4) { n = 3; cp = c & 0x07; min = 0x10000; }
        else return 0;
        if ((size_t)(e - p) <= n) return 0;
        for (size_t i = 1; i <= n; i++) {
            if ((p[i] & 0xc0) != 0x80) return 0;
            cp = cp << 6 | (p[i] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
        p += n + 1;
    }
    return 1;
}
