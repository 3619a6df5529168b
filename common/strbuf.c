/*
 * strbuf: a growable, always NUL-terminated byte buffer.
 *
 * Why: XML output and relay frames are built piece by piece; keeping the
 * length arithmetic here keeps it out of every caller. Allocation failure
 * aborts, as documented in strbuf.h.
 */
#include "strbuf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n);
    if (!q) {
        fputs("strbuf: out of memory\n", stderr);
        abort();
    }
    return q;
}

void sb_init(strbuf *sb) {
    sb->data = NULL;
    sb->len = 0;
    sb->cap = 0;
}

void sb_free(strbuf *sb) {
    free(sb->data);
    sb_init(sb);
}

void sb_reset(strbuf *sb) {
    sb->len = 0;
    if (sb->data) sb->data[0] = '\0';
}

/* Make room for `extra` more bytes plus the terminating NUL. */
void sb_reserve(strbuf *sb, size_t extra) {
    if (extra > (size_t)-1 - sb->len - 1) {
        fputs("strbuf: size overflow\n", stderr);
        abort();
    }
    size_t need = sb->len + extra + 1;
    if (need <= sb->cap) return;
    size_t cap = sb->cap ? sb->cap : 64;
    while (cap < need) cap = cap > ((size_t)-1) / 2 ? need : cap * 2;
    sb->data = xrealloc(sb->data, cap);
    sb->cap = cap;
    sb->data[sb->len] = '\0';
}

void sb_append(strbuf *sb, const void *data, size_t len) {
    sb_reserve(sb, len);
    if (len) memcpy(sb->data + sb->len, data, len);
    sb->len += len;
    sb->data[sb->len] = '\0';
}

void sb_puts(strbuf *sb, const char *s) {
    sb_append(sb, s, strlen(s));
}

void sb_putc(strbuf *sb, char c) {
    sb_reserve(sb, 1);
    sb->data[sb->len++] = c;
    sb->data[sb->len] = '\0';
}

void sb_vprintf(strbuf *sb, const char *fmt, va_list ap) {
    va_list ap2;
    va_copy(ap2, ap);
    /* Try the space we already have first; grow only when it is short. */
    size_t avail = sb->cap > sb->len ? sb->cap - sb->len : 0;
    int n = vsnprintf(avail ? sb->data + sb->len : NULL, avail, fmt, ap);
    if (n < 0) {
        va_end(ap2);
        return;
    }
    if ((size_t)n >= avail) {
        sb_reserve(sb, (size_t)n);
        vsnprintf(sb->data + sb->len, (size_t)n + 1, fmt, ap2);
    }
    va_end(ap2);
    sb->len += (size_t)n;
}

void sb_printf(strbuf *sb, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    sb_vprintf(sb, fmt, ap);
    va_end(ap);
}

/*
 * Escape in runs: copy the longest stretch without special characters in
 * one memcpy, then the entity. Text is mostly plain, so this is the fast
 * path for chat messages.
 */
void sb_put_xml_escaped(strbuf *sb, const char *s, size_t len) {
    size_t start = 0;
    sb_reserve(sb, len);
    for (size_t i = 0; i < len; i++) {
        const char *ent;
        size_t entlen;
        switch (s[i]) {
        case '&':  ent = "&amp;";  entlen = 5; break;
        case '<':  ent = "&lt;";   entlen = 4; break;
        case '>':  ent = "&gt;";   entlen = 4; break;
        case '\'': ent = "&apos;"; entlen = 6; break;
        case '"':  ent = "&quot;"; entlen = 6; break;
        default: continue;
        }
        if (i > start) sb_append(sb, s + start, i - start);
        sb_append(sb, ent, entlen);
        start = i + 1;
    }
    if (len > start) sb_append(sb, s + start, len - start);
    else if (!sb->data) sb_reserve(sb, 0);
}

void sb_consume(strbuf *sb, size_t n) {
    if (n >= sb->len) {
        sb_reset(sb);
        return;
    }
    memmove(sb->data, sb->data + n, sb->len - n);
    sb->len -= n;
    sb->data[sb->len] = '\0';
}

char *sb_detach(strbuf *sb, size_t *len_out) {
    if (!sb->data) sb_reserve(sb, 0);
    sb->data[sb->len] = '\0';
    char *p = sb->data;
    if (len_out) *len_out = sb->len;
    sb_init(sb);
    return p;
}
