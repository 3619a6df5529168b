/*
 * strbuf: a growable byte buffer.
 *
 * Why: every part builds XML and frames incrementally; one small,
 * malloc-based buffer keeps that code free of length arithmetic.
 * Allocation failure aborts (as hiredis does): a chat server that cannot
 * allocate a few bytes cannot do anything useful either.
 */
#ifndef COMMON_STRBUF_H
#define COMMON_STRBUF_H

#include <stddef.h>
#include <stdarg.h>

typedef struct strbuf {
    char  *data;   /* always NUL-terminated when non-NULL */
    size_t len;
    size_t cap;
} strbuf;

#define STRBUF_INIT { NULL, 0, 0 }

void   sb_init(strbuf *sb);
void   sb_free(strbuf *sb);                 /* releases memory, leaves sb empty */
void   sb_reset(strbuf *sb);                /* len = 0, keeps capacity */
void   sb_reserve(strbuf *sb, size_t extra);
void   sb_append(strbuf *sb, const void *data, size_t len);
void   sb_puts(strbuf *sb, const char *s);
void   sb_putc(strbuf *sb, char c);
void   sb_printf(strbuf *sb, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));
void   sb_vprintf(strbuf *sb, const char *fmt, va_list ap);
/* Append s with XML escaping (&, <, >, ', "). */
void   sb_put_xml_escaped(strbuf *sb, const char *s, size_t len);
/* Remove the first n bytes (consumed output). */
void   sb_consume(strbuf *sb, size_t n);
/* Hand the memory to the caller (must free()); sb becomes empty. */
char  *sb_detach(strbuf *sb, size_t *len_out);

#endif
