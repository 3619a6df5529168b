/*
 * test_strbuf: growth, formatting, escaping, consume and detach.
 */
#include "../../common/strbuf.h"
#include "unit.h"

#include <stdlib.h>
#include <string.h>

int main(void) {
    strbuf sb = STRBUF_INIT;

    sb_puts(&sb, "hello");
    sb_putc(&sb, ' ');
    sb_append(&sb, "world!!", 5);
    CHECK_STR(sb.data, "hello world");
    CHECK(sb.len == 11);
    CHECK(sb.data[sb.len] == '\0');

    sb_printf(&sb, " %d-%s", 42, "x");
    CHECK_STR(sb.data, "hello world 42-x");

    /* printf larger than the current capacity */
    sb_reset(&sb);
    CHECK(sb.len == 0 && sb.data[0] == '\0');
    char big[1000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    sb_printf(&sb, "<%s>", big);
    CHECK(sb.len == 1001);
    CHECK(sb.data[0] == '<' && sb.data[1000] == '>' && sb.data[1001] == '\0');
    CHECK(sb.cap > sb.len);

    /* Binary data with NULs */
    sb_reset(&sb);
    sb_append(&sb, "a\0b", 3);
    CHECK(sb.len == 3 && memcmp(sb.data, "a\0b", 3) == 0);

    /* Escaping */
    sb_reset(&sb);
    const char *raw = "a<b>&'c\"d";
    sb_put_xml_escaped(&sb, raw, strlen(raw));
    CHECK_STR(sb.data, "a&lt;b&gt;&amp;&apos;c&quot;d");
    sb_reset(&sb);
    sb_put_xml_escaped(&sb, "plain", 5);
    CHECK_STR(sb.data, "plain");
    sb_reset(&sb);
    sb_put_xml_escaped(&sb, "&&", 1);
    CHECK_STR(sb.data, "&amp;");

    /* Consume */
    sb_reset(&sb);
    sb_puts(&sb, "0123456789");
    sb_consume(&sb, 4);
    CHECK_STR(sb.data, "456789");
    CHECK(sb.len == 6);
    sb_consume(&sb, 100);
    CHECK(sb.len == 0 && sb.data[0] == '\0');

    /* Many appends grow correctly */
    for (int i = 0; i < 10000; i++) sb_putc(&sb, (char)('a' + i % 26));
    CHECK(sb.len == 10000 && sb.data[9999] == 'a' + 9999 % 26 && sb.data[10000] == '\0');

    /* Detach */
    size_t n = 0;
    char *p = sb_detach(&sb, &n);
    CHECK(n == 10000 && p[0] == 'a');
    CHECK(sb.data == NULL && sb.len == 0 && sb.cap == 0);
    free(p);

    /* Detach of an empty buffer gives an empty string, not NULL */
    p = sb_detach(&sb, &n);
    CHECK(p != NULL && n == 0 && p[0] == '\0');
    free(p);

    /* Escaping into an empty buffer with nothing to write still gives "" */
    strbuf e;
    sb_init(&e);
    sb_put_xml_escaped(&e, "", 0);
    CHECK(e.data != NULL && e.data[0] == '\0');
    sb_free(&e);
    CHECK(e.data == NULL);

    sb_reserve(&sb, 100);
    CHECK(sb.cap >= 101 && sb.len == 0 && sb.data[0] == '\0');
    sb_free(&sb);
    return unit_done("strbuf");
}
