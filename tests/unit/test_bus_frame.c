/* bus_frame: the cross-node frame codec round-trips and refuses junk. */
#include "unit.h"
#include "../../chatd/router/bus_frame.h"

int main(void)
{
    strbuf sb = STRBUF_INIT;
    bus_frame_begin(&sb, 'F', "n2");
    bus_frame_arg(&sb, "alice@localhost/res one");
    bus_frame_arg(&sb, "bob@localhost/x");
    bus_frame_body(&sb, "<message/>", 10);
    bus_frame f;
    CHECK(bus_frame_parse(sb.data, sb.len, &f) == 0);
    CHECK(f.kind == 'F');
    CHECK_STR(f.node, "n2");
    CHECK(f.body_len == 10 && memcmp(f.body, "<message/>", 10) == 0);
    const char *cur = f.args;
    char buf[64];
    CHECK(bus_frame_next_arg(&f, &cur, buf, sizeof(buf)) == 1);
    CHECK_STR(buf, "alice@localhost/res one");
    CHECK(bus_frame_next_arg(&f, &cur, buf, sizeof(buf)) == 1);
    CHECK_STR(buf, "bob@localhost/x");
    CHECK(bus_frame_next_arg(&f, &cur, buf, sizeof(buf)) == 0);
    /* an arg too long for the buffer is reported and skipped */
    cur = f.args;
    CHECK(bus_frame_next_arg(&f, &cur, buf, 5) == -1);
    CHECK(bus_frame_next_arg(&f, &cur, buf, sizeof(buf)) == 1);
    CHECK_STR(buf, "bob@localhost/x");

    /* no args, empty body */
    sb_reset(&sb);
    bus_frame_begin(&sb, 'N', "n10");
    bus_frame_body(&sb, NULL, 0);
    CHECK(bus_frame_parse(sb.data, sb.len, &f) == 0);
    CHECK(f.kind == 'N' && f.body_len == 0);
    cur = f.args;
    CHECK(bus_frame_next_arg(&f, &cur, buf, sizeof(buf)) == 0);

    /* junk */
    CHECK(bus_frame_parse("", 0, &f) < 0);
    CHECK(bus_frame_parse("D n1\nx\n", 7, &f) < 0);           /* no blank line */
    CHECK(bus_frame_parse("D N1\n\n", 6, &f) < 0);            /* bad node id */
    CHECK(bus_frame_parse("D \n\n", 4, &f) < 0);              /* empty node id */
    CHECK(bus_frame_parse("Dn1\n\n", 5, &f) < 0);
    CHECK(bus_frame_parse("D n12345678901234567\n\n", 22, &f) < 0);
    sb_free(&sb);
    return unit_done("bus_frame");
}
