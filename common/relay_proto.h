/*
 * relay_proto: the frame codec between mod_bosh (client) and chatd (server).
 *
 * Why a frame protocol: one persistent connection per httpd child per chatd
 * carries many concurrent BOSH requests (held ones included); each frame
 * names the request it belongs to, so answers can come back in any order.
 * See common/RELAY.md for the full description and versioning rules.
 *
 * Wire format (all integers big-endian):
 *
 *   0       1       2               4               8              12
 *   +-------+-------+---------------+---------------+---------------+
 *   |version| type  |    flags      |    req_id     |    length     |
 *   +-------+-------+---------------+---------------+---------------+
 *   | payload: `length` bytes, a sequence of fields                 |
 *
 * Field:  u16 tag | u32 len | len bytes.  Unknown tags are skipped, so
 * either side may add optional fields without a version bump.
 *
 * Pure logic: no I/O. The decoder works on whatever bytes have arrived
 * and says how many it needs; unit tests and the fuzzer drive it directly.
 */
#ifndef COMMON_RELAY_PROTO_H
#define COMMON_RELAY_PROTO_H

#include <stdint.h>
#include <stddef.h>
#include "strbuf.h"

#define RELAY_VERSION       1
#define RELAY_HEADER_LEN    12
#define RELAY_MAX_PAYLOAD   (4u * 1024 * 1024)   /* hard ceiling for any frame */
/* RT_HTTP_STATUS value meaning "close the HTTP connection, send nothing"
 * (as nginx's 444): a plaintext request for a session created over HTTPS. */
#define RELAY_STATUS_CLOSE  444

typedef enum relay_type {
    RELAY_HELLO     = 1,  /* client -> chatd, req_id 0: who is connecting   */
    RELAY_WELCOME   = 2,  /* chatd -> client, req_id 0: node id, limits      */
    RELAY_REQUEST   = 3,  /* client -> chatd: one BOSH HTTP request          */
    RELAY_RESPONSE  = 4,  /* chatd -> client: the answer to req_id (exactly once) */
    RELAY_DRAIN     = 5,  /* client -> chatd, req_id 0: child is stopping;
                             answer every request held for this connection now */
    RELAY_CANCEL    = 6,  /* client -> chatd: the HTTP client of req_id went away
                             (chatd still answers it; the answer is discarded) */
    RELAY_PING      = 7,  /* either way, req_id echoed in RELAY_PONG */
    RELAY_PONG      = 8,
    RELAY_REFUSE    = 9   /* chatd -> client, req_id 0, instead of WELCOME: the
                             peer is not allowed (RT_REASON); chatd closes */
} relay_type;

typedef enum relay_tag {
    /* HELLO */
    RT_PEER_NAME    = 1,   /* "mod_bosh:<host>:<pid>" */
    RT_SECRET       = 3,   /* the relay's shared secret (relay_secret.h) */
    /* WELCOME */
    RT_NODE_ID      = 2,   /* chatd node id (appears as the sid prefix) */
    /* REFUSE */
    RT_REASON       = 4,   /* why chatd refused the peer, for its log */
    /* REQUEST */
    RT_BODY         = 10,  /* the raw BOSH <body/> bytes, already validated */
    RT_CLIENT_ADDR  = 11,  /* client IP as text */
    RT_SECURE       = 12,  /* 1 byte: 1 if the HTTP request came over TLS */
    RT_AUTH_USER    = 13,  /* identity httpd authenticated (r->user), if vouched */
    RT_SID          = 14,  /* sid parsed by mod_bosh (saves chatd a lookup) */
    RT_DISPLAY_NAME = 15,  /* display name the auth module gave, with RT_AUTH_USER */
    RT_PREBIND      = 16,  /* 1 byte: 1 = create a signed-in, bound session for
                              RT_AUTH_USER and answer JSON {jid, sid, rid} */
    RT_CONFIDENTIAL = 17,  /* 1 byte: 1 if the client's connection was encrypted up
                              to httpd or a BoshTrustedProxy (PLAIN may be offered) */
    /* RESPONSE */
    RT_HTTP_STATUS  = 20,  /* u16: 200 normally; 4xx only for legacy clients */
    RT_CONTENT_TYPE = 21,  /* response Content-Type (the session's `content`) */
    RT_RETRY_AFTER  = 22,  /* u32 seconds, with 503 */
    /* RT_BODY is reused for the response body */
} relay_tag;

typedef struct relay_header {
    uint8_t  version;
    uint8_t  type;
    uint16_t flags;
    uint32_t req_id;
    uint32_t length;
} relay_header;

typedef struct relay_field {
    uint16_t    tag;
    uint32_t    len;
    const char *data;     /* points into the frame payload */
} relay_field;

/* ---- encoding: build a frame into out (appends) ---- */
/* Begin a frame; returns the offset of its header inside out. */
size_t relay_begin(strbuf *out, relay_type type, uint32_t req_id);
void   relay_put(strbuf *out, uint16_t tag, const void *data, uint32_t len);
void   relay_put_str(strbuf *out, uint16_t tag, const char *s);   /* NULL: nothing */
void   relay_put_u16(strbuf *out, uint16_t tag, uint16_t v);
void   relay_put_u32(strbuf *out, uint16_t tag, uint32_t v);
/* Patch the length field of the frame begun at offset. */
void   relay_end(strbuf *out, size_t offset);

/* ---- decoding ---- */
typedef enum {
    RELAY_NEED_MORE = 0,  /* *need says how many bytes are required in total */
    RELAY_FRAME     = 1,  /* a full frame is at buf; header filled; *need = frame size */
    RELAY_BAD       = -1  /* protocol error: bad version or oversized frame */
} relay_decode_status;

relay_decode_status relay_decode(const char *buf, size_t len, uint32_t max_payload,
                                 relay_header *h, size_t *need);

/* Iterate fields of a payload. *pos starts at 0. Returns 1 with f filled,
 * 0 at the end, -1 on a truncated field. */
int relay_next_field(const char *payload, uint32_t len, uint32_t *pos, relay_field *f);
/* Find the first field with tag; returns 1 if found. */
int relay_find(const char *payload, uint32_t len, uint16_t tag, relay_field *f);
int relay_field_u16(const relay_field *f, uint16_t *v);   /* 1 if len == 2 */
int relay_field_u32(const relay_field *f, uint32_t *v);   /* 1 if len == 4 */

#endif
