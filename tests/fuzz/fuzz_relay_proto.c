/*
 * fuzz_relay_proto: libFuzzer entry point for the relay frame decoder.
 * The input is treated as bytes arriving on the socket: frames are
 * decoded one after another, their fields walked, and every decoded frame
 * is re-encoded and compared with the original bytes.
 *
 * Build and run (from the top of the checkout):
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE \
 *       tests/fuzz/fuzz_relay_proto.c common/relay_proto.c common/strbuf.c \
 *       -o build/fuzz_relay_proto
 *   build/fuzz_relay_proto -max_total_time=30
 */
#include "../../common/relay_proto.h"

#include <stdint.h>
#include <stddef.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *buf = (const char *)data;
    size_t off = 0;
    /* A small cap so the limit path is exercised too. */
    uint32_t max = size > 0 ? (uint32_t)data[0] * 64 : 0;

    while (off < size) {
        relay_header h;
        size_t need = 0;
        relay_decode_status st = relay_decode(buf + off, size - off, max, &h, &need);
        if (st == RELAY_BAD) break;
        if (st == RELAY_NEED_MORE) {
            if (need <= size - off) __builtin_trap();
            break;
        }
        if (need != RELAY_HEADER_LEN + (size_t)h.length || need > size - off)
            __builtin_trap();
        const char *pl = buf + off + RELAY_HEADER_LEN;

        /* Walk every field; rebuild the frame from the ones that parse. */
        strbuf out = STRBUF_INIT;
        size_t hdr = relay_begin(&out, (relay_type)h.type, h.req_id);
        uint32_t pos = 0;
        relay_field f;
        int rc;
        while ((rc = relay_next_field(pl, h.length, &pos, &f)) == 1) {
            if (f.data < pl || f.data + f.len > pl + h.length) __builtin_trap();
            uint16_t v16;
            uint32_t v32;
            relay_field_u16(&f, &v16);
            relay_field_u32(&f, &v32);
            relay_put(&out, f.tag, f.data, f.len);
        }
        relay_end(&out, hdr);
        if (rc == 0) {
            /* Fully well-formed payload: re-encoding gives the same bytes
             * (flags are always written as 0). */
            if (out.len != need) __builtin_trap();
            if (memcmp(out.data + 4, buf + off + 4, need - 4) != 0) __builtin_trap();
        }
        relay_find(pl, h.length, RT_BODY, &f);
        sb_free(&out);
        off += need;
    }
    return 0;
}
