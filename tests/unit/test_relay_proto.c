/*
 * test_relay_proto: frame encode/decode, split reads, limits, truncated
 * fields and skipping of unknown tags.
 */
#include "../../common/relay_proto.h"
#include "unit.h"

#include <string.h>

static void test_encode_bytes(void) {
    strbuf out = STRBUF_INIT;
    size_t off = relay_begin(&out, RELAY_REQUEST, 0x01020304);
    CHECK(off == 0);
    relay_put_str(&out, RT_SID, "n1-ab");
    relay_put_u16(&out, RT_HTTP_STATUS, 200);
    relay_put_str(&out, RT_AUTH_USER, NULL);        /* writes nothing */
    relay_end(&out, off);
    static const unsigned char want[] = {
        1, 3, 0, 0, 1, 2, 3, 4, 0, 0, 0, 19,
        0, 14, 0, 0, 0, 5, 'n', '1', '-', 'a', 'b',
        0, 20, 0, 0, 0, 2, 0, 200,
    };
    CHECK(out.len == sizeof want);
    CHECK(memcmp(out.data, want, sizeof want) == 0);
    sb_free(&out);
}

static void test_roundtrip_split(void) {
    strbuf out = STRBUF_INIT;
    /* Two frames back to back, the second with an unknown tag first. */
    size_t a = relay_begin(&out, RELAY_RESPONSE, 7);
    relay_put_u16(&out, RT_HTTP_STATUS, 200);
    relay_put_str(&out, RT_CONTENT_TYPE, "text/xml; charset=utf-8");
    relay_put(&out, RT_BODY, "<body/>", 7);
    relay_put_u32(&out, RT_RETRY_AFTER, 0xdeadbeef);
    relay_end(&out, a);
    size_t first_len = out.len;
    size_t b = relay_begin(&out, RELAY_DRAIN, 0);
    relay_put(&out, 999, "future", 6);
    relay_put(&out, RT_PEER_NAME, "", 0);
    relay_end(&out, b);
    CHECK(b == first_len);

    /* Feed byte by byte, like a socket that returns 1 byte per read. */
    int frames = 0;
    size_t have = 0, start = 0;
    for (size_t i = 1; i <= out.len; i++) {
        have = i - start;
        relay_header h;
        size_t need = 0;
        relay_decode_status st = relay_decode(out.data + start, have, RELAY_MAX_PAYLOAD, &h, &need);
        CHECK(st != RELAY_BAD);
        if (st == RELAY_NEED_MORE) {
            CHECK(need > have);
            continue;
        }
        CHECK(need == have);
        const char *pl = out.data + start + RELAY_HEADER_LEN;
        relay_field f;
        if (frames == 0) {
            CHECK(h.version == RELAY_VERSION && h.type == RELAY_RESPONSE && h.req_id == 7);
            CHECK(h.length == first_len - RELAY_HEADER_LEN);
            uint16_t status = 0;
            uint32_t ra = 0;
            CHECK(relay_find(pl, h.length, RT_HTTP_STATUS, &f) && relay_field_u16(&f, &status) && status == 200);
            CHECK(relay_find(pl, h.length, RT_BODY, &f) && f.len == 7 && memcmp(f.data, "<body/>", 7) == 0);
            CHECK(relay_find(pl, h.length, RT_CONTENT_TYPE, &f) && f.len == 23);
            CHECK(relay_find(pl, h.length, RT_RETRY_AFTER, &f) && relay_field_u32(&f, &ra) && ra == 0xdeadbeef);
            CHECK(!relay_field_u16(&f, &status));       /* wrong width */
            CHECK(!relay_find(pl, h.length, RT_SID, &f));
        } else {
            CHECK(h.type == RELAY_DRAIN && h.req_id == 0);
            /* Iterating sees the unknown tag and can skip it. */
            uint32_t pos = 0;
            CHECK(relay_next_field(pl, h.length, &pos, &f) == 1 && f.tag == 999 && f.len == 6);
            CHECK(relay_next_field(pl, h.length, &pos, &f) == 1 && f.tag == RT_PEER_NAME && f.len == 0);
            CHECK(relay_next_field(pl, h.length, &pos, &f) == 0);
            CHECK(relay_find(pl, h.length, RT_PEER_NAME, &f) && f.len == 0);
        }
        frames++;
        start += need;
    }
    CHECK(frames == 2);
    CHECK(start == out.len);
    sb_free(&out);
}

static void test_limits(void) {
    strbuf out = STRBUF_INIT;
    relay_header h;
    size_t need = 99;
    char payload[100];
    memset(payload, 'p', sizeof payload);

    CHECK(relay_decode("", 0, 1000, &h, &need) == RELAY_NEED_MORE && need == RELAY_HEADER_LEN);

    size_t off = relay_begin(&out, RELAY_REQUEST, 1);
    relay_put(&out, RT_BODY, payload, sizeof payload);   /* 106-byte payload */
    relay_end(&out, off);
    CHECK(relay_decode(out.data, out.len, 106, &h, &need) == RELAY_FRAME);
    CHECK(need == RELAY_HEADER_LEN + 106);
    /* Oversize is refused from the header alone, before the payload. */
    CHECK(relay_decode(out.data, RELAY_HEADER_LEN, 105, &h, &need) == RELAY_BAD);
    /* A length beyond the hard ceiling is refused whatever the caller asks. */
    unsigned char hdr[RELAY_HEADER_LEN] = { 1, 3, 0, 0, 0, 0, 0, 1, 0x7f, 0xff, 0xff, 0xff };
    CHECK(relay_decode((char *)hdr, sizeof hdr, 0xffffffffu, &h, &need) == RELAY_BAD);
    /* Wrong version */
    out.data[0] = 2;
    CHECK(relay_decode(out.data, out.len, RELAY_MAX_PAYLOAD, &h, &need) == RELAY_BAD);
    out.data[0] = 1;
    /* Flags are carried, not interpreted. */
    out.data[2] = 0x12; out.data[3] = 0x34;
    CHECK(relay_decode(out.data, out.len, RELAY_MAX_PAYLOAD, &h, &need) == RELAY_FRAME && h.flags == 0x1234);
    sb_free(&out);
}

static void test_truncated_fields(void) {
    relay_field f;
    uint32_t pos = 0;
    /* Header of a field claims 10 bytes, only 3 present. */
    const char bad1[] = { 0, 10, 0, 0, 0, 10, 'a', 'b', 'c' };
    CHECK(relay_next_field(bad1, sizeof bad1, &pos, &f) == -1);
    CHECK(!relay_find(bad1, sizeof bad1, 10, &f));
    /* Fewer than 6 bytes for a field header. */
    pos = 0;
    CHECK(relay_next_field(bad1, 5, &pos, &f) == -1);
    /* A good field then garbage: the good one is returned, then -1. */
    const char bad2[] = { 0, 1, 0, 0, 0, 1, 'x', 0, 2 };
    pos = 0;
    CHECK(relay_next_field(bad2, sizeof bad2, &pos, &f) == 1 && f.tag == 1 && f.len == 1 && f.data[0] == 'x');
    CHECK(relay_next_field(bad2, sizeof bad2, &pos, &f) == -1);
    /* Length near 2^32 must not wrap. */
    const char bad3[] = { 0, 1, (char)0xff, (char)0xff, (char)0xff, (char)0xfc, 'x' };
    pos = 0;
    CHECK(relay_next_field(bad3, sizeof bad3, &pos, &f) == -1);
    /* Empty payload: no fields. */
    pos = 0;
    CHECK(relay_next_field("", 0, &pos, &f) == 0);
}

int main(void) {
    test_encode_bytes();
    test_roundtrip_split();
    test_limits();
    test_truncated_fields();
    return unit_done("relay_proto");
}
