/*
 * bus_frame: the cross-node frame codec (see bus_frame.h).
 */
#include <string.h>
#include "bus_frame.h"

int bus_frame_parse(const char *p, size_t len, bus_frame *f)
{
    const char *end = p + len;
    memset(f, 0, sizeof(*f));
    if (len < 4 || p[1] != ' ') return -1;
    const char *nl = memchr(p, '\n', len);
    if (!nl) return -1;
    size_t nlen = (size_t)(nl - (p + 2));
    if (nlen < 1 || nlen > BUS_NODE_MAX) return -1;
    for (const char *c = p + 2; c < nl; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9'))) return -1;
    f->kind = p[0];
    memcpy(f->node, p + 2, nlen);
    f->node[nlen] = '\0';
    const char *a = nl + 1;
    f->args = a;
    for (;;) {
        if (a >= end) return -1;                    /* no blank line */
        if (*a == '\n') break;
        const char *e = memchr(a, '\n', (size_t)(end - a));
        if (!e) return -1;
        a = e + 1;
    }
    f->args_end = a;
    f->body = a + 1;
    f->body_len = (size_t)(end - f->body);
    return 0;
}

int bus_frame_next_arg(const bus_frame *f, const char **cur, char *buf, size_t buflen)
{
    for (;;) {
        const char *a = *cur;
        if (a >= f->args_end) return 0;
        const char *e = memchr(a, '\n', (size_t)(f->args_end - a) + 1);
        size_t n = (size_t)(e - a);
        *cur = e + 1;
        if (n + 1 > buflen) return -1;
        memcpy(buf, a, n);
        buf[n] = '\0';
        return 1;
    }
}

void bus_frame_begin(strbuf *out, char kind, const char *node)
{
    sb_putc(out, kind);
    sb_putc(out, ' ');
    sb_puts(out, node);
    sb_putc(out, '\n');
}

void bus_frame_arg(strbuf *out, const char *arg)
{
    sb_puts(out, arg);
    sb_putc(out, '\n');
}

void bus_frame_body(strbuf *out, const char *body, size_t len)
{
    sb_putc(out, '\n');
    if (body && len) sb_append(out, body, len);
}
