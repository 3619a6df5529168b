/*
 * bosh_body: parse and validate one BOSH <body/> (XEP-0124 §wrapper).
 *
 * Why shared: mod_bosh validates every request before it crosses the
 * relay (bad input never reaches chatd), and chatd parses the same bytes
 * to drive the session. One parser means one definition of "valid".
 *
 * Pure logic: no I/O, no APR. Driven directly by unit tests and fuzzers.
 */
#ifndef COMMON_BOSH_BODY_H
#define COMMON_BOSH_BODY_H

#include <stdint.h>
#include <stddef.h>
#include "xml_stream.h"

#define BOSH_NS        "http://jabber.org/protocol/httpbind"
#define XBOSH_NS       "urn:xmpp:xbosh"
#define JABBER_CLIENT_NS "jabber:client"
#define STREAM_NS      "http://etherx.jabber.org/streams"

/* Attribute present flags. */
enum {
    BB_HAS_RID     = 1u << 0,
    BB_HAS_WAIT    = 1u << 1,
    BB_HAS_HOLD    = 1u << 2,
    BB_HAS_VER     = 1u << 3,
    BB_HAS_ACK     = 1u << 4,
    BB_HAS_PAUSE   = 1u << 5,
    BB_RESTART     = 1u << 6,   /* xmpp:restart='true' */
    BB_TERMINATE   = 1u << 7    /* type='terminate' */
};

typedef struct bosh_body {
    xs_node    *root;      /* the <body/> element; children are the payloads */
    unsigned    flags;
    uint64_t    rid;
    uint64_t    ack;
    unsigned    wait, hold, pause;           /* valid when the flag is set */
    unsigned    ver_major, ver_minor;        /* valid with BB_HAS_VER */
    /* Pointers into root's attributes (NULL when absent). */
    const char *sid, *to, *from, *route, *lang, *content, *type,
               *key, *newkey, *stream, *xmpp_version;
    size_t      npayloads;                   /* child elements of body */
} bosh_body;

/*
 * Parse data[0..len). Returns 0 and fills *b on success; on failure
 * returns -1 and writes a short reason to err. Failures are all
 * "bad-request" in BOSH terms. Enforces: size <= max_bytes, root is
 * BOSH_NS body, no DTD/PI/comment, no non-whitespace text at wrapper
 * level, numeric attributes in range (rid 1..2^53-1), rid present.
 * Children in BOSH_NS (no xmlns given) are moved to jabber:client.
 */
int  bosh_body_parse(const char *data, size_t len, size_t max_bytes,
                     bosh_body *b, char *err, size_t errlen);
/* The same with a document parser from xs_doc_parser_new (NULL: a fresh
 * one for this body). Per thread: see xs_doc_parse. */
int  bosh_body_parse_with(xs_parser *p, const char *data, size_t len,
                          size_t max_bytes, bosh_body *b, char *err, size_t errlen);
/* Validate only (mod_bosh, issue 15): the same verdict and the same root
 * attributes as bosh_body_parse_with, but the payloads are checked without
 * being built (xs_doc_parse_shallow), so b->root has no children and
 * b->npayloads is 0. p NULL: a full parse with a fresh parser. */
int  bosh_body_check_with(xs_parser *p, const char *data, size_t len,
                          size_t max_bytes, bosh_body *b, char *err, size_t errlen);
void bosh_body_free(bosh_body *b);   /* frees root; b may be reused */

#endif
