/*
 * bus_frame: what one node publishes to another over Redis (issue 16),
 * pure so unit tests drive it.
 *
 *   <kind> <node>\n<arg>\n<arg>\n...\n\n<body>
 *
 * kind: one letter (router/cluster.c says what each means); node: the
 * sender's node id; args: one per line (JIDs never hold control characters,
 * RFC 7622, so a newline cannot be part of one); body: a serialized stanza
 * (may be empty). A frame that does not parse is dropped by the receiver.
 */
#ifndef CHATD_BUS_FRAME_H
#define CHATD_BUS_FRAME_H

#include <stddef.h>
#include "../../common/strbuf.h"

#define BUS_NODE_MAX 16

typedef struct bus_frame {
    char        kind;
    char        node[BUS_NODE_MAX + 1];
    const char *args;       /* first arg line, or end of args */
    const char *args_end;   /* the blank line that closes the args */
    const char *body;
    size_t      body_len;
} bus_frame;

/* 0, or -1 when p..p+len is not a frame. */
int  bus_frame_parse(const char *p, size_t len, bus_frame *f);
/* The next arg, copied NUL-terminated into buf: 1; none left: 0; an arg
 * longer than buflen-1: -1 (skipped). *cur starts at f->args. */
int  bus_frame_next_arg(const bus_frame *f, const char **cur, char *buf, size_t buflen);

void bus_frame_begin(strbuf *out, char kind, const char *node);
void bus_frame_arg(strbuf *out, const char *arg);
/* Closes the args; the body (may be NULL/0) follows. */
void bus_frame_body(strbuf *out, const char *body, size_t len);

#endif
