/*
 * websocket: the server side of RFC 6455, as pure code (no I/O).
 *
 * Why here and pure: the WebSocket transport (chatd/transport/ws.c) reads
 * bytes from a socket that any local process, or through httpd's proxy any
 * browser, can write to. Every decision about those bytes (is this a valid
 * opening handshake, where does a frame end, is it masked, too big, valid
 * UTF-8, a legal close code) is made here, where unit tests and a fuzzer
 * (tests/fuzz/fuzz_websocket.c) can drive it without sockets.
 *
 * Scope: what an XMPP server (RFC 7395) needs. Text messages only (binary
 * is refused with 1003), no extensions (RSV bits must be 0, so no
 * permessage-deflate is ever negotiated), one subprotocol ("xmpp").
 */
#ifndef COMMON_WEBSOCKET_H
#define COMMON_WEBSOCKET_H

#include <stddef.h>
#include <stdint.h>
#include "strbuf.h"

/* ---- opening handshake (RFC 6455 4.2) ---- */

#define WS_MAX_HANDSHAKE 8192      /* request line + headers; more: 431 */

typedef struct ws_handshake {
    char path[256];
    char key[64];           /* Sec-WebSocket-Key, as sent (24 base64 chars) */
    char host[256];         /* Host */
    char origin[256];       /* Origin; has_origin says whether it was sent */
    int  has_origin;
    int  proto_xmpp;        /* "xmpp" is among Sec-WebSocket-Protocol */
    /* The last value of each list (the one our proxy added; earlier ones
     * came from the client). Empty when absent. */
    char fwd_proto[16];     /* X-Forwarded-Proto */
    char fwd_for[64];       /* X-Forwarded-For */
    char fwd_host[256];     /* X-Forwarded-Host */
} ws_handshake;

typedef enum { WS_HS_MORE, WS_HS_OK, WS_HS_BAD } ws_hs_status;

/* Parse the client's HTTP upgrade request at the start of buf. WS_HS_MORE:
 * the blank line has not arrived (and len < WS_MAX_HANDSHAKE). WS_HS_OK:
 * *used is the request's length (bytes after it are already frames).
 * WS_HS_BAD: *status is the HTTP status to answer (400, 405, 426, 431) and
 * *why a short reason. A request without "xmpp" among its subprotocols is
 * still OK here: the caller decides (RFC 7395 3.1 requires it). */
ws_hs_status ws_handshake_parse(const char *buf, size_t len, ws_handshake *h,
                                size_t *used, int *status, const char **why);

/* Sec-WebSocket-Accept for key: base64(SHA-1(key + GUID)), 28 chars + NUL.
 * Returns 0, or -1 if key is not 16 bytes in base64. */
int  ws_accept_key(const char *key, char out[29]);
/* The 101 answer, echoing protocol (NULL: no Sec-WebSocket-Protocol). */
void ws_handshake_response(strbuf *out, const char *accept, const char *protocol);
/* An HTTP error answer that closes the connection (426 names version 13). */
void ws_http_error(strbuf *out, int status, const char *why);

/* Cross-site WebSocket hijacking guard. origin: the Origin header (NULL:
 * none sent, which only non-browser clients do: allowed, since the attack
 * needs a victim's browser). site_host: the host[:port] the browser
 * connected to. allow: exact origins ("https://chat.example.com") or "*";
 * with none listed, only the same site (origin's host[:port] == site_host,
 * ASCII case-insensitive) is allowed. "null" is never same-site. */
int  ws_origin_allowed(const char *origin, const char *site_host,
                       const char *const *allow, size_t nallow);

/* ---- frames (RFC 6455 5) ---- */

enum { WS_OP_CONT = 0, WS_OP_TEXT = 1, WS_OP_BINARY = 2,
       WS_OP_CLOSE = 8, WS_OP_PING = 9, WS_OP_PONG = 10 };

/* Close codes (RFC 6455 7.4.1) this server sends. */
enum { WS_CLOSE_NORMAL = 1000, WS_CLOSE_GOING_AWAY = 1001,
       WS_CLOSE_PROTOCOL = 1002, WS_CLOSE_UNSUPPORTED = 1003,
       WS_CLOSE_NO_STATUS = 1005, WS_CLOSE_BAD_DATA = 1007,
       WS_CLOSE_POLICY = 1008, WS_CLOSE_TOO_BIG = 1009 };

typedef enum {
    WS_EV_MORE,     /* nothing complete yet: read more bytes */
    WS_EV_TEXT,     /* a whole text message (data, len), valid UTF-8 */
    WS_EV_PING,     /* data, len: the payload to echo in a pong */
    WS_EV_PONG,
    WS_EV_CLOSE,    /* peer's close: code (WS_CLOSE_NO_STATUS if none), reason */
    WS_EV_ERROR     /* fail the connection: send a close with code, why */
} ws_event_kind;

typedef struct ws_event {
    ws_event_kind kind;
    const char   *data;     /* TEXT/PING/PONG payload, CLOSE reason */
    size_t        len;
    uint16_t      code;     /* CLOSE: the peer's; ERROR: the one to send */
    const char   *why;      /* ERROR: for logs and the close reason */
} ws_event;

typedef struct ws_reader {
    size_t  max_message;    /* bytes of one (reassembled) message */
    strbuf  msg;            /* fragments of the message being assembled */
    int     in_message;     /* a text frame without FIN was seen */
    int     done;           /* last event was TEXT: msg is reset next call */
    int     failed;         /* an ERROR was returned: every call repeats it */
    uint16_t fail_code;
    const char *fail_why;
} ws_reader;

void ws_reader_init(ws_reader *r, size_t max_message);
void ws_reader_free(ws_reader *r);

/* Decode at most one frame from buf (masked, as a client must send;
 * unmasked in place). Returns the bytes consumed (0 with WS_EV_MORE when
 * the frame is not all there yet, or with WS_EV_ERROR). A frame larger
 * than the room left in max_message is refused as soon as its header is
 * read, so the caller never buffers more than max_message + 14 bytes.
 * TEXT data points into the reader, valid until the next call. */
size_t ws_read(ws_reader *r, char *buf, size_t len, ws_event *ev);

/* A server frame (unmasked, FIN set). */
void ws_frame_put(strbuf *out, int opcode, const void *data, size_t len);
/* A close frame: code 0 sends an empty body; reason is cut to fit 125. */
void ws_close_put(strbuf *out, uint16_t code, const char *reason);
/* A client frame (masked with mask, fin as given): for tests and the fuzzer. */
void ws_frame_put_client(strbuf *out, int opcode, int fin, const uint8_t mask[4],
                         const void *data, size_t len);

/* Strict UTF-8 (RFC 3629: no overlong forms, surrogates or > U+10FFFF). */
int  ws_utf8_valid(const char *s, size_t len);

#endif
