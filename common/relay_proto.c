/*
 * relay_proto: encode and decode relay frames (see relay_proto.h and
 * common/RELAY.md for the wire format).
 *
 * Why hand-rolled big-endian helpers: the format is fixed-width and tiny;
 * explicit byte shuffling is portable and obviously bounds-checked, which
 * matters because the decoder faces whatever arrives on the socket.
 */
#include "relay_proto.h"

#include <string.h>

static void put_be16(unsigned char *p, uint16_t v) {
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

static void put_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static uint16_t get_be16(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t get_be32(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
           ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

/* ---- encoding ---- */

size_t relay_begin(strbuf *out, relay_type type, uint32_t req_id) {
    unsigned char h[RELAY_HEADER_LEN];
    size_t offset = out->len;
    h[0] = RELAY_VERSION;
    h[1] = (unsigned char)type;
    put_be16(h + 2, 0);
    put_be32(h + 4, req_id);
    put_be32(h + 8, 0);            /* patched by relay_end */
    sb_append(out, h, sizeof h);
    return offset;
}

void relay_put(strbuf *out, uint16_t tag, const void *data, uint32_t len) {
    unsigned char f[6];
    put_be16(f, tag);
    put_be32(f + 2, len);
    sb_reserve(out, sizeof f + len);
    sb_append(out, f, sizeof f);
    if (len) sb_append(out, data, len);
}

void relay_put_str(strbuf *out, uint16_t tag, const char *s) {
    if (s) relay_put(out, tag, s, (uint32_t)strlen(s));
}

void relay_put_u16(strbuf *out, uint16_t tag, uint16_t v) {
    unsigned char b[2];
    put_be16(b, v);
    relay_put(out, tag, b, sizeof b);
}

void relay_put_u32(strbuf *out, uint16_t tag, uint32_t v) {
    unsigned char b[4];
    put_be32(b, v);
    relay_put(out, tag, b, sizeof b);
}

void relay_end(strbuf *out, size_t offset) {
    size_t payload = out->len - offset - RELAY_HEADER_LEN;
    put_be32((unsigned char *)out->data + offset + 8, (uint32_t)payload);
}

/* ---- decoding ---- */

relay_decode_status relay_decode(const char *buf, size_t len, uint32_t max_payload,
                                 relay_header *h, size_t *need) {
    if (len < RELAY_HEADER_LEN) {
        *need = RELAY_HEADER_LEN;
        return RELAY_NEED_MORE;
    }
    h->version = (uint8_t)buf[0];
    h->type = (uint8_t)buf[1];
    h->flags = get_be16(buf + 2);
    h->req_id = get_be32(buf + 4);
    h->length = get_be32(buf + 8);
    if (h->version != RELAY_VERSION) return RELAY_BAD;
    if (max_payload == 0 || max_payload > RELAY_MAX_PAYLOAD)
        max_payload = RELAY_MAX_PAYLOAD;
    if (h->length > max_payload) return RELAY_BAD;
    *need = (size_t)RELAY_HEADER_LEN + h->length;
    return len >= *need ? RELAY_FRAME : RELAY_NEED_MORE;
}

int relay_next_field(const char *payload, uint32_t len, uint32_t *pos, relay_field *f) {
    if (*pos >= len) return 0;
    uint32_t left = len - *pos;
    if (left < 6) return -1;
    const char *p = payload + *pos;
    uint32_t flen = get_be32(p + 2);
    if (flen > left - 6) return -1;
    f->tag = get_be16(p);
    f->len = flen;
    f->data = p + 6;
    *pos += 6 + flen;
    return 1;
}

int relay_find(const char *payload, uint32_t len, uint16_t tag, relay_field *f) {
    uint32_t pos = 0;
    relay_field cur;
    while (relay_next_field(payload, len, &pos, &cur) == 1) {
        if (cur.tag == tag) {
            *f = cur;
            return 1;
        }
    }
    return 0;
}

int relay_field_u16(const relay_field *f, uint16_t *v) {
    if (f->len != 2) return 0;
    *v = get_be16(f->data);
    return 1;
}

int relay_field_u32(const relay_field *f, uint32_t *v) {
    if (f->len != 4) return 0;
    *v = get_be32(f->data);
    return 1;
}
