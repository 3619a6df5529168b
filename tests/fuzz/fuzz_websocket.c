/*
 * fuzz_websocket: libFuzzer entry point for common/websocket.c, the bytes
 * a browser (through httpd's proxy) or any local process sends to chatd's
 * WebSocket listener. The first input byte picks the target:
 *   0 mod 4: the opening handshake parser (the rest as the HTTP request);
 *   2 mod 4: the same after a valid request line and upgrade headers, so
 *            the rest are more headers of a request that can succeed;
 *   odd:  the frame reader (the rest as frames, read as a transport
 *         would: consume, act on each event, stop at the first error).
 * Invariants checked: consumed never exceeds what was given, a need-more
 * answer consumes nothing, TEXT is valid UTF-8 within the message limit,
 * control payloads stay within 125 bytes, and a text message re-encoded
 * as a client frame reads back identical.
 *
 *   make build/fuzz/fuzz_websocket && build/fuzz/fuzz_websocket -max_total_time=30
 */
#include "../../common/websocket.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void handshake(const uint8_t *data, size_t size) {
    ws_handshake h;
    size_t used = 0;
    int status = 0;
    const char *why = NULL;
    ws_hs_status st = ws_handshake_parse((const char *)data, size, &h, &used, &status, &why);
    if (st == WS_HS_OK) {
        if (used > size || used < 4) __builtin_trap();
        char acc[29];
        if (ws_accept_key(h.key, acc) != 0 || strlen(acc) != 28) __builtin_trap();
        if (h.path[0] != '/' || !h.host[0]) __builtin_trap();
        ws_origin_allowed(h.has_origin ? h.origin : NULL,
                          h.fwd_host[0] ? h.fwd_host : h.host, NULL, 0);
    } else if (st == WS_HS_BAD) {
        if (!why || status < 400 || status > 499) __builtin_trap();
        strbuf out = STRBUF_INIT;
        ws_http_error(&out, status, why);
        sb_free(&out);
    } else if (size >= WS_MAX_HANDSHAKE) {
        __builtin_trap();
    }
}

static void frames(const uint8_t *data, size_t size) {
    char *buf = malloc(size ? size : 1);
    if (!buf) return;
    memcpy(buf, data, size);
    size_t max = 64 + (size ? data[0] : 0) * 16, off = 0;
    ws_reader r;
    ws_reader_init(&r, max);
    for (;;) {
        ws_event ev;
        size_t n = ws_read(&r, buf + off, size - off, &ev);
        if (n > size - off) __builtin_trap();
        if (ev.kind == WS_EV_ERROR) {
            if (n || ev.code < 1000) __builtin_trap();
            break;
        }
        if (ev.kind == WS_EV_MORE && n == 0) break;
        if (ev.kind == WS_EV_TEXT) {
            if (ev.len > max || !ws_utf8_valid(ev.data, ev.len)) __builtin_trap();
            /* Round trip through the client encoder and a fresh reader. */
            static const uint8_t mask[4] = { 1, 2, 3, 4 };
            strbuf enc = STRBUF_INIT;
            ws_frame_put_client(&enc, WS_OP_TEXT, 1, mask, ev.data, ev.len);
            ws_reader r2;
            ws_reader_init(&r2, max);
            ws_event e2;
            size_t n2 = ws_read(&r2, enc.data, enc.len, &e2);
            if (n2 != enc.len || e2.kind != WS_EV_TEXT || e2.len != ev.len ||
                memcmp(e2.data, ev.data, ev.len) != 0) __builtin_trap();
            ws_reader_free(&r2);
            sb_free(&enc);
        }
        if ((ev.kind == WS_EV_PING || ev.kind == WS_EV_PONG) && ev.len > 125) __builtin_trap();
        if (ev.kind == WS_EV_CLOSE && ev.len > 123) __builtin_trap();
        off += n;
    }
    ws_reader_free(&r);
    free(buf);
}

static const char VALID_HEAD[] =
    "GET /xmpp-websocket HTTP/1.1\r\nHost: chat.example.com\r\nUpgrade: websocket\r\n"
    "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    if (data[0] & 1) {
        frames(data + 1, size - 1);
    } else if (data[0] & 2) {
        size_t hl = sizeof(VALID_HEAD) - 1;
        uint8_t *req = malloc(hl + size + 4);
        if (!req) return 0;
        memcpy(req, VALID_HEAD, hl);
        memcpy(req + hl, data + 1, size - 1);
        memcpy(req + hl + size - 1, "\r\n\r\n", 4);
        handshake(req, hl + size + 3);
        free(req);
    } else {
        handshake(data + 1, size - 1);
    }
    return 0;
}
