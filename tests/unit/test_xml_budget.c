/*
 * test_xml_budget: the tree a document or stanza builds is bounded by its
 * byte cap, not only its bytes. Without the budget one long xmlns and
 * thousands of 4-byte children cost megabytes from a few KB (every node
 * copies its namespace URI); with it the parse stops early. The heap is
 * measured (glibc mallinfo2, or the sanitizer allocator under ASan), so
 * the bound shown is what the process really holds.
 */
#include "../../common/bosh_body.h"
#include "../../common/strbuf.h"
#include "unit.h"

#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
/* From <sanitizer/allocator_interface.h>, which gcc does not ship. */
size_t __sanitizer_get_current_allocated_bytes(void);
static size_t heap_in_use(void) { return __sanitizer_get_current_allocated_bytes(); }
#else
static size_t heap_in_use(void) { return mallinfo2().uordblks; }
#endif

#define CAP        8192
#define BUDGET     ((size_t)CAP * 16 > 65536 ? (size_t)CAP * 16 : 65536)

/* <body ...><x xmlns='LONG'><a/><a/>...</x></body>: well under CAP bytes. */
static void hostile_body(strbuf *sb, size_t ns_len, size_t children) {
    sb_puts(sb, "<body rid='1' xmlns='" BOSH_NS "'><x xmlns='urn:");
    for (size_t i = 0; i < ns_len; i++) sb_append(sb, "n", 1);
    sb_puts(sb, "'>");
    for (size_t i = 0; i < children; i++) sb_puts(sb, "<a/>");
    sb_puts(sb, "</x></body>");
}

static size_t tree_heap(const char *data, size_t len, size_t cap, int *ok) {
    bosh_body b;
    char err[128];
    size_t before = heap_in_use();
    *ok = bosh_body_parse(data, len, cap, &b, err, sizeof err) == 0;
    size_t held = heap_in_use() - before;
    if (*ok) bosh_body_free(&b);
    return held;
}

static void test_namespace_amplification(void) {
    strbuf sb = STRBUF_INIT;
    int ok;
    hostile_body(&sb, 3000, 1000);
    CHECK(sb.len < CAP);

    /* No cap: the tree really costs megabytes (the attack is real). */
    size_t uncapped = tree_heap(sb.data, sb.len, 0, &ok);
    CHECK(ok);
    CHECK(uncapped > 20 * BUDGET);

    /* Cap: refused, and nothing is held afterwards. */
    bosh_body b;
    char err[128];
    size_t before = heap_in_use();
    CHECK(bosh_body_parse(sb.data, sb.len, CAP, &b, err, sizeof err) != 0);
    CHECK(strstr(err, "too complex") != NULL);
    CHECK(heap_in_use() - before < 4096);   /* tcache may keep a few chunks */
    sb_free(&sb);
}

/* Many tiny elements and attributes: accepted while within the budget,
 * and then the tree really held is within the budget. */
static void test_many_small_nodes(void) {
    strbuf sb = STRBUF_INIT;
    int ok;
    sb_puts(&sb, "<body rid='1' xmlns='" BOSH_NS "'><m xmlns='jabber:client'>");
    while (sb.len < CAP - 40) sb_puts(&sb, "<a b='' c=''/>");
    sb_puts(&sb, "</m></body>");
    size_t held = tree_heap(sb.data, sb.len, CAP, &ok);
    if (ok) CHECK(held <= BUDGET);
    else CHECK(held < 4096);
    sb_free(&sb);
}

/* mod_bosh parses with cap BoshMaxBodySize, chatd with cap = the body's
 * length: the verdict must not depend on the cap. */
static void test_verdict_independent_of_cap(void) {
    for (size_t children = 50; children <= 1600; children *= 2) {
        strbuf sb = STRBUF_INIT;
        bosh_body b;
        char err[128];
        hostile_body(&sb, 600, children);
        int small = bosh_body_parse(sb.data, sb.len, sb.len, &b, err, sizeof err) == 0;
        if (small) bosh_body_free(&b);
        int large = bosh_body_parse(sb.data, sb.len, 1 << 20, &b, err, sizeof err) == 0;
        if (large) bosh_body_free(&b);
        CHECK(small == large);
        if (children == 50) CHECK(small);          /* modest: accepted */
        if (children == 1600) CHECK(!small);       /* 600 B ns x 1600: refused */
        sb_free(&sb);
    }
}

/* An ordinary body near the cap (text-heavy, a few stanzas) still parses. */
static void test_ordinary_body_passes(void) {
    strbuf sb = STRBUF_INIT;
    bosh_body b;
    char err[128];
    sb_puts(&sb, "<body rid='1' xmlns='" BOSH_NS "'>");
    for (int i = 0; i < 20; i++)
        sb_puts(&sb, "<iq type='set' id='r1' xmlns='jabber:client'><query "
                     "xmlns='jabber:iq:roster'><item jid='someone@example.com' "
                     "name='Someone'><group>Friends</group></item></query></iq>");
    sb_puts(&sb, "<message to='a@b' xmlns='jabber:client'><body>");
    while (sb.len < CAP - 64) sb_puts(&sb, "lorem ipsum ");
    sb_puts(&sb, "</body></message></body>");
    CHECK(sb.len <= CAP);
    CHECK(bosh_body_parse(sb.data, sb.len, CAP, &b, err, sizeof err) == 0);
    CHECK(b.npayloads == 21);
    bosh_body_free(&b);
    sb_free(&sb);
}

/* Stream mode: the same budget per stanza; the next stanza starts afresh. */
static int stanzas;
static void on_stanza(void *ud, xs_node *s) { (void)ud; stanzas++; xs_free(s); }

static void test_stream_budget(void) {
    static const xs_callbacks cb = { NULL, on_stanza, NULL };
    strbuf sb = STRBUF_INIT;
    xs_parser *p = xs_parser_new(&cb, NULL, CAP);
    const char *hdr = "<stream:stream xmlns='jabber:client' "
                      "xmlns:stream='http://etherx.jabber.org/streams'>";
    CHECK(xs_parser_feed(p, hdr, strlen(hdr)) == XS_OK);
    /* 100 ordinary stanzas in a row: every one under budget. */
    for (int i = 0; i < 100; i++) sb_puts(&sb, "<presence><show>away</show></presence>");
    CHECK(xs_parser_feed(p, sb.data, sb.len) == XS_OK);
    CHECK(stanzas == 100);
    sb_reset(&sb);
    sb_puts(&sb, "<iq><q xmlns='urn:");
    for (int i = 0; i < 3000; i++) sb_append(&sb, "n", 1);
    sb_puts(&sb, "'>");
    for (int i = 0; i < 1000; i++) sb_puts(&sb, "<a/>");
    sb_puts(&sb, "</q></iq>");
    CHECK(xs_parser_feed(p, sb.data, sb.len) == XS_ERR_TOO_BIG);
    CHECK(strstr(xs_parser_error(p), "too complex") != NULL);
    xs_parser_free(p);
    sb_free(&sb);
}

int main(void) {
    test_namespace_amplification();
    test_many_small_nodes();
    test_verdict_independent_of_cap();
    test_ordinary_body_passes();
    test_stream_budget();
    return unit_done("xml_budget");
}
