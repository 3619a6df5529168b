/*
 * test_websocket: RFC 6455 server side (common/websocket.c): the opening
 * handshake, the accept key, frames (masking, fragments, control frames
 * between fragments, limits, UTF-8, close codes) and the Origin guard.
 */
#include "../../common/websocket.h"
#include "unit.h"

#include <stdint.h>
#include <string.h>

static const uint8_t MASK[4] = { 0x37, 0xfa, 0x21, 0x3d };

#define REQ_HEAD "GET /xmpp-websocket HTTP/1.1\r\nHost: 127.0.0.1:5290\r\n" \
    "Upgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n" \
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"

static ws_hs_status hs(const char *req, ws_handshake *h, int *status) {
    size_t used = 0;
    const char *why = NULL;
    return ws_handshake_parse(req, strlen(req), h, &used, status, &why);
}

static void test_handshake(void) {
    ws_handshake h;
    int st;
    const char *ok = REQ_HEAD "Sec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: chat, xmpp\r\nOrigin: https://chat.example.com\r\n"
        "X-Forwarded-Proto: https\r\nX-Forwarded-For: 6.6.6.6, 192.0.2.7\r\n"
        "X-Forwarded-Host: evil.example, chat.example.com\r\n\r\n\x81\x80";
    size_t used = 0;
    const char *why;
    CHECK(ws_handshake_parse(ok, strlen(ok), &h, &used, &st, &why) == WS_HS_OK);
    CHECK(used == strlen(ok) - 2);      /* the frame bytes after it are not eaten */
    CHECK_STR(h.path, "/xmpp-websocket");
    CHECK(h.proto_xmpp == 1);
    CHECK(h.has_origin == 1);
    CHECK_STR(h.origin, "https://chat.example.com");
    CHECK_STR(h.fwd_proto, "https");
    CHECK_STR(h.fwd_for, "192.0.2.7");          /* the last: our proxy's */
    CHECK_STR(h.fwd_host, "chat.example.com");
    CHECK_STR(h.host, "127.0.0.1:5290");

    /* Not all there yet. */
    CHECK(ws_handshake_parse(ok, 40, &h, &used, &st, &why) == WS_HS_MORE);

    /* Without xmpp: parsed, the caller refuses (RFC 7395 3.1). */
    CHECK(hs(REQ_HEAD "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: XMPP2\r\n\r\n",
             &h, &st) == WS_HS_OK && h.proto_xmpp == 0);
    CHECK(hs(REQ_HEAD "Sec-WebSocket-Version: 8\r\n\r\n", &h, &st) == WS_HS_BAD && st == 426);
    CHECK(hs("POST / HTTP/1.1\r\nHost: x\r\n\r\n", &h, &st) == WS_HS_BAD && st == 405);
    CHECK(hs("GET / HTTP/1.0\r\nHost: x\r\n\r\n", &h, &st) == WS_HS_BAD && st == 400);
    CHECK(hs("GET /x HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Version: 13\r\n\r\n", &h, &st) == WS_HS_BAD && st == 400);
    CHECK(hs("GET /x HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: c2hvcnQ=\r\n\r\n", &h, &st)
          == WS_HS_BAD && st == 400);   /* a key that is not 16 bytes */
    CHECK(hs("GET /x HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
             &h, &st) == WS_HS_BAD && st == 400);   /* no Upgrade: websocket */
    CHECK(hs(REQ_HEAD "Sec-WebSocket-Version: 13\r\nX-Foo: a\r\n b\r\n\r\n", &h, &st)
          == WS_HS_BAD && st == 400);   /* obs-fold */
    CHECK(hs(REQ_HEAD "Sec-WebSocket-Version: 13\r\nOrigin: a\r\nOrigin: b\r\n\r\n", &h, &st)
          == WS_HS_BAD);

    /* Too big without a blank line: 431, not MORE forever. */
    static char big[WS_MAX_HANDSHAKE + 10];
    memset(big, 'a', sizeof(big) - 1);
    memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
    CHECK(ws_handshake_parse(big, sizeof(big) - 1, &h, &used, &st, &why) == WS_HS_BAD && st == 431);
}

static void test_accept(void) {
    char acc[29];
    /* RFC 6455 1.3's example. */
    CHECK(ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", acc) == 0);
    CHECK_STR(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    CHECK(ws_accept_key("dGhlIHNhbXBsZSBub25jZQ", acc) < 0);
    strbuf out = STRBUF_INIT;
    ws_handshake_response(&out, acc, "xmpp");
    CHECK(strstr(out.data, "HTTP/1.1 101 ") == out.data);
    CHECK(strstr(out.data, "\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n") != NULL);
    CHECK(strstr(out.data, "\r\nSec-WebSocket-Protocol: xmpp\r\n\r\n") != NULL);
    sb_reset(&out);
    ws_http_error(&out, 426, "version");
    CHECK(strstr(out.data, "HTTP/1.1 426 ") == out.data);
    CHECK(strstr(out.data, "Sec-WebSocket-Version: 13\r\n") != NULL);
    sb_free(&out);
}

/* Feed a buffer to the reader, collecting events. */
static ws_event one(ws_reader *r, strbuf *in, size_t *used) {
    ws_event ev;
    *used = ws_read(r, in->data, in->len, &ev);
    return ev;
}

static void test_frames(void) {
    ws_reader r;
    ws_event ev;
    size_t used;
    strbuf in = STRBUF_INIT;

    ws_reader_init(&r, 1000);
    /* RFC 6455 5.7: a single-frame masked text message "Hello". */
    static const unsigned char hello[] = { 0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d,
                                           0x7f, 0x9f, 0x4d, 0x51, 0x58 };
    sb_append(&in, hello, sizeof(hello));
    /* Byte by byte: nothing until the whole frame is there. */
    for (size_t n = 0; n < sizeof(hello); n++) {
        used = ws_read(&r, in.data, n, &ev);
        CHECK(used == 0 && ev.kind == WS_EV_MORE);
    }
    ev = one(&r, &in, &used);
    CHECK(ev.kind == WS_EV_TEXT && used == sizeof(hello));
    CHECK(ev.len == 5 && memcmp(ev.data, "Hello", 5) == 0);

    /* Fragments with a ping between them; a UTF-8 character split across. */
    sb_reset(&in);
    ws_frame_put_client(&in, WS_OP_TEXT, 0, MASK, "caf\xc3", 4);
    ws_frame_put_client(&in, WS_OP_PING, 1, MASK, "p1", 2);
    ws_frame_put_client(&in, WS_OP_CONT, 1, MASK, "\xa9!", 2);
    size_t off = 0;
    used = ws_read(&r, in.data, in.len, &ev);
    CHECK(used > 0 && ev.kind == WS_EV_MORE);
    off += used;
    used = ws_read(&r, in.data + off, in.len - off, &ev);
    CHECK(ev.kind == WS_EV_PING && ev.len == 2 && !memcmp(ev.data, "p1", 2));
    off += used;
    used = ws_read(&r, in.data + off, in.len - off, &ev);
    CHECK(ev.kind == WS_EV_TEXT && ev.len == 6 && !memcmp(ev.data, "caf\xc3\xa9!", 6));
    CHECK(off + used == in.len);

    /* 16-bit length, then a close with code and reason. */
    sb_reset(&in);
    char mid[300];
    memset(mid, 'm', sizeof(mid));
    ws_frame_put_client(&in, WS_OP_TEXT, 1, MASK, mid, sizeof(mid));
    ev = one(&r, &in, &used);
    CHECK(ev.kind == WS_EV_TEXT && ev.len == 300 && used == 300 + 8);
    sb_reset(&in);
    ws_frame_put_client(&in, WS_OP_CLOSE, 1, MASK, "\x03\xe8" "bye", 5);
    ev = one(&r, &in, &used);
    CHECK(ev.kind == WS_EV_CLOSE && ev.code == 1000 && ev.len == 3 && !memcmp(ev.data, "bye", 3));
    sb_reset(&in);
    ws_frame_put_client(&in, WS_OP_CLOSE, 1, MASK, "", 0);
    ev = one(&r, &in, &used);
    CHECK(ev.kind == WS_EV_CLOSE && ev.code == WS_CLOSE_NO_STATUS);
    ws_reader_free(&r);

    /* Each bad frame fails the connection with its code; failure sticks. */
    struct { const char *name; int op, fin; const char *data; size_t len; int code; int raw; } bad[] = {
        { "binary", WS_OP_BINARY, 1, "x", 1, 1003, 0 },
        { "bad utf-8", WS_OP_TEXT, 1, "\xc0\x80", 2, 1007, 0 },
        { "surrogate", WS_OP_TEXT, 1, "\xed\xa0\x80", 3, 1007, 0 },
        { "continuation first", WS_OP_CONT, 1, "x", 1, 1002, 0 },
        { "fragmented ping", WS_OP_PING, 0, "x", 1, 1002, 0 },
        { "opcode 3", 3, 1, "x", 1, 1002, 0 },
        { "close 1 byte", WS_OP_CLOSE, 1, "\x03", 1, 1002, 0 },
        { "close 1005", WS_OP_CLOSE, 1, "\x03\xed", 2, 1002, 0 },
        { "close reason not utf-8", WS_OP_CLOSE, 1, "\x03\xe8\xff", 3, 1007, 0 },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ws_reader_init(&r, 1000);
        sb_reset(&in);
        ws_frame_put_client(&in, bad[i].op, bad[i].fin, MASK, bad[i].data, bad[i].len);
        ev = one(&r, &in, &used);
        if (!(ev.kind == WS_EV_ERROR && ev.code == bad[i].code))
            fprintf(stderr, "bad frame %s: kind %d code %d\n", bad[i].name, ev.kind, ev.code);
        CHECK(ev.kind == WS_EV_ERROR && ev.code == bad[i].code);
        ev = one(&r, &in, &used);
        CHECK(ev.kind == WS_EV_ERROR && ev.code == bad[i].code);
        ws_reader_free(&r);
    }

    /* Unmasked (as a server would send): 1002. */
    ws_reader_init(&r, 1000);
    sb_reset(&in);
    ws_frame_put(&in, WS_OP_TEXT, "hi", 2);
    ev = one(&r, &in, &used);
    CHECK(ev.kind == WS_EV_ERROR && ev.code == 1002);
    ws_reader_free(&r);

    /* RSV1 (permessage-deflate we never agreed to): 1002. */
    ws_reader_init(&r, 1000);
    sb_reset(&in);
    ws_frame_put_client(&in, WS_OP_TEXT, 1, MASK, "hi", 2);
    in.data[0] |= 0x40;
    ev = one(&r, &in, &used);
    CHECK(ev.kind == WS_EV_ERROR && ev.code == 1002);
    ws_reader_free(&r);

    /* A new text frame inside a fragmented message: 1002. */
    ws_reader_init(&r, 1000);
    sb_reset(&in);
    ws_frame_put_client(&in, WS_OP_TEXT, 0, MASK, "a", 1);
    used = ws_read(&r, in.data, in.len, &ev);
    CHECK(used == in.len && ev.kind == WS_EV_MORE);
    sb_reset(&in);
    ws_frame_put_client(&in, WS_OP_TEXT, 1, MASK, "b", 1);
    ev = one(&r, &in, &used);
    CHECK(ev.kind == WS_EV_ERROR && ev.code == 1002);
    ws_reader_free(&r);

    /* Too big: refused from the header alone (64-bit length, no payload). */
    ws_reader_init(&r, 1000);
    static const unsigned char huge[] = { 0x81, 0xff, 0, 0, 0, 1, 0, 0, 0, 0 };
    sb_reset(&in);
    sb_append(&in, huge, sizeof(huge));
    ev = one(&r, &in, &used);
    CHECK(ev.kind == WS_EV_ERROR && ev.code == 1009);
    ws_reader_free(&r);
    /* ... and fragments summing past the limit. */
    ws_reader_init(&r, 1000);
    sb_reset(&in);
    char k[600];
    memset(k, 'k', sizeof(k));
    ws_frame_put_client(&in, WS_OP_TEXT, 0, MASK, k, sizeof(k));
    used = ws_read(&r, in.data, in.len, &ev);
    CHECK(used == in.len && ev.kind == WS_EV_MORE);
    sb_reset(&in);
    ws_frame_put_client(&in, WS_OP_CONT, 1, MASK, k, sizeof(k));
    ev = one(&r, &in, &used);
    CHECK(ev.kind == WS_EV_ERROR && ev.code == 1009);
    ws_reader_free(&r);
    /* A 126-byte ping: control frames are capped at 125. */
    ws_reader_init(&r, 1000);
    sb_reset(&in);
    ws_frame_put_client(&in, WS_OP_PING, 1, MASK, k, 126);
    ev = one(&r, &in, &used);
    CHECK(ev.kind == WS_EV_ERROR && ev.code == 1002);
    ws_reader_free(&r);

    /* Server frames: length encodings. */
    sb_reset(&in);
    ws_frame_put(&in, WS_OP_TEXT, k, 125);
    CHECK(in.len == 127 && (unsigned char)in.data[0] == 0x81 && in.data[1] == 125);
    sb_reset(&in);
    ws_frame_put(&in, WS_OP_TEXT, k, 126);
    CHECK(in.len == 130 && in.data[1] == 126 && in.data[2] == 0 && in.data[3] == 126);
    sb_reset(&in);
    static char big[70000];
    ws_frame_put(&in, WS_OP_TEXT, big, sizeof(big));
    CHECK(in.len == sizeof(big) + 10 && in.data[1] == 127 && (unsigned char)in.data[7] == 1);
    sb_reset(&in);
    ws_close_put(&in, 1009, "too big");
    CHECK(in.len == 11 && (unsigned char)in.data[0] == 0x88 && in.data[1] == 9 &&
          (unsigned char)in.data[2] == 0x03 && (unsigned char)in.data[3] == 0xf1);
    sb_free(&in);
}

static void test_utf8(void) {
    CHECK(ws_utf8_valid("", 0));
    CHECK(ws_utf8_valid("h\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 10));
    CHECK(!ws_utf8_valid("\xc3", 1));                    /* truncated */
    CHECK(!ws_utf8_valid("\xe0\x80\xaf", 3));            /* overlong */
    CHECK(!ws_utf8_valid("\xf4\x90\x80\x80", 4));        /* > U+10FFFF */
    CHECK(!ws_utf8_valid("\xed\xbf\xbf", 3));            /* surrogate */
    CHECK(!ws_utf8_valid("\x80", 1));
    CHECK(!ws_utf8_valid("\xff", 1));
}

static void test_origin(void) {
    const char *list[] = { "https://app.example.com" };
    const char *star[] = { "*" };
    CHECK(ws_origin_allowed(NULL, "chat.example.com", NULL, 0));
    CHECK(ws_origin_allowed("https://chat.example.com", "chat.example.com", NULL, 0));
    CHECK(ws_origin_allowed("http://CHAT.example.com:8080", "chat.example.com:8080", NULL, 0));
    CHECK(!ws_origin_allowed("https://evil.example", "chat.example.com", NULL, 0));
    CHECK(!ws_origin_allowed("https://chat.example.com.evil.example", "chat.example.com", NULL, 0));
    CHECK(!ws_origin_allowed("null", "chat.example.com", NULL, 0));
    CHECK(!ws_origin_allowed("https://chat.example.com", "", NULL, 0));
    CHECK(ws_origin_allowed("https://app.example.com", "chat.example.com", list, 1));
    /* A list replaces the same-site default. */
    CHECK(!ws_origin_allowed("https://chat.example.com", "chat.example.com", list, 1));
    CHECK(ws_origin_allowed("https://anything.example", "chat.example.com", star, 1));
}

int main(void) {
    test_handshake();
    test_accept();
    test_frames();
    test_utf8();
    test_origin();
    return unit_done("websocket");
}
