/*
 * fuzz_bosh_body: libFuzzer entry point for bosh_body_parse (and through
 * it xs_parse_document). Every parsed body is serialized again to walk
 * the tree the parser built. The same bytes also go through the stream
 * parser (xs_parser_feed) in pieces, as a c2s socket would deliver them.
 * And they go through one document parser kept across all inputs, as
 * chatd keeps one (bosh_body_parse_with): whatever earlier inputs did to
 * it, the verdict, the error and the tree must equal a fresh parser's.
 *
 * Build and run (from the top of the checkout):
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE \
 *       tests/fuzz/fuzz_bosh_body.c common/bosh_body.c common/xml_stream.c \
 *       common/strbuf.c -lexpat -o build/fuzz_bosh_body
 *   build/fuzz_bosh_body -max_total_time=30 -max_len=4096
 */
#include "../../common/bosh_body.h"

#include <stdint.h>
#include <stddef.h>
#include <string.h>

static void on_stanza(void *ud, xs_node *s) {
    strbuf *out = ud;
    xs_serialize(s, NULL, out);
    xs_free(s);
    if (out->len > 8192) sb_reset(out);
}

static void fuzz_stream(const uint8_t *data, size_t size) {
    static const xs_callbacks cb = { NULL, on_stanza, NULL };
    strbuf out = STRBUF_INIT;
    xs_parser *p = xs_parser_new(&cb, &out, 1024);
    /* First byte picks the piece size. */
    size_t piece = size ? 1 + data[0] % 16 : 1;
    for (size_t i = 0; i < size; i += piece) {
        size_t n = size - i < piece ? size - i : piece;
        if (xs_parser_feed(p, (const char *)data + i, n) != XS_OK) break;
    }
    xs_parser_free(p);
    sb_free(&out);
}

static void fuzz_reuse(const uint8_t *data, size_t size) {
    static xs_parser *kept;
    bosh_body a, b;
    char ea[128] = "", eb[128] = "";
    if (!kept) kept = xs_doc_parser_new();
    /* A cap below the size sometimes, so that the byte cap is hit too. */
    size_t cap = size && data[0] % 4 == 0 ? size / 2 + 1 : 65536;
    int ra = bosh_body_parse((const char *)data, size, cap, &a, ea, sizeof ea);
    int rb = bosh_body_parse_with(kept, (const char *)data, size, cap, &b, eb, sizeof eb);
    if (ra != rb || strcmp(ea, eb) != 0) __builtin_trap();
    if (ra == 0) {
        strbuf sa = STRBUF_INIT, sb = STRBUF_INIT;
        xs_serialize(a.root, NULL, &sa);
        xs_serialize(b.root, NULL, &sb);
        if (sa.len != sb.len || memcmp(sa.data, sb.data, sa.len) != 0) __builtin_trap();
        if (a.rid != b.rid || a.flags != b.flags) __builtin_trap();
        sb_free(&sa);
        sb_free(&sb);
        bosh_body_free(&a);
        bosh_body_free(&b);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    bosh_body b;
    fuzz_stream(data, size);
    fuzz_reuse(data, size);
    char err[128];
    if (bosh_body_parse((const char *)data, size, 65536, &b, err, sizeof err) == 0) {
        strbuf out = STRBUF_INIT;
        /* Invariants of a successful parse. */
        if (!(b.flags & BB_HAS_RID) || b.rid == 0 || b.rid > ((1ULL << 53) - 1))
            __builtin_trap();
        if ((b.flags & BB_HAS_HOLD) && b.hold > 255) __builtin_trap();
        size_t n = 0;
        for (xs_node *c = b.root->first_child; c; c = c->next) {
            if (!c->name) __builtin_trap();        /* wrapper text was removed */
            if (strcmp(c->ns, BOSH_NS) == 0) __builtin_trap();
            xs_serialize(c, JABBER_CLIENT_NS, &out);
            n++;
        }
        if (n != b.npayloads) __builtin_trap();
        /* The serialized payloads must parse again inside a body. */
        strbuf doc = STRBUF_INIT;
        sb_puts(&doc, "<body xmlns='" BOSH_NS "' xmlns:stream='" STREAM_NS "' rid='1'>");
        sb_append(&doc, out.data ? out.data : "", out.len);
        sb_puts(&doc, "</body>");
        bosh_body again;
        if (bosh_body_parse(doc.data, doc.len, 0, &again, err, sizeof err) != 0)
            __builtin_trap();
        if (again.npayloads != b.npayloads) __builtin_trap();
        bosh_body_free(&again);
        sb_free(&doc);
        sb_free(&out);
        bosh_body_free(&b);
    }
    return 0;
}
