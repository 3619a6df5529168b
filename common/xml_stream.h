/*
 * xml_stream: expat-based XML for XMPP, shared by chatd and mod_bosh.
 *
 * Why: XMPP is one long document whose second-level elements (stanzas)
 * arrive over time; BOSH bodies are small whole documents. One parser
 * covers both: in stream mode it reports the stream header, then each
 * complete depth-1 element as a tree, then the stream end; in document
 * mode it returns the root element as a tree. Both modes refuse DTDs,
 * entity declarations, processing instructions and comments (XMPP forbids
 * them, RFC 6120 §11.1) and enforce a byte cap per stanza/document so that
 * a hostile peer cannot make us allocate without bound.
 *
 * Names: expat runs with namespace processing. Each element carries its
 * namespace URI (ns, "" when none) and local name. Attribute names are
 * the local name for unqualified attributes, "xml:lang" for the xml
 * namespace, and "URI|local" for any other qualified attribute.
 * Namespace declarations (xmlns, xmlns:p) are not kept as attributes.
 */
#ifndef COMMON_XML_STREAM_H
#define COMMON_XML_STREAM_H

#include <stddef.h>
#include "strbuf.h"

typedef struct xs_attr {
    char *name;
    char *value;
} xs_attr;

typedef struct xs_node xs_node;
struct xs_node {
    xs_node *parent, *next, *first_child, *last_child;
    char    *ns;          /* element: namespace URI ("" if none); text: NULL */
    char    *name;        /* element: local name; text node: NULL */
    char    *text;        /* text node: the characters (NUL-terminated) */
    size_t   text_len;
    xs_attr *attrs;
    size_t   nattrs, attrs_cap;
};

/* ---- tree construction and access (malloc-based; xs_free releases) ---- */
xs_node    *xs_new(const char *ns, const char *name);
void        xs_free(xs_node *n);                       /* recursive; NULL ok */
xs_node    *xs_copy(const xs_node *n);                 /* deep copy */
void        xs_set_attr(xs_node *n, const char *name, const char *value); /* replaces; value NULL removes */
const char *xs_attr_get(const xs_node *n, const char *name);            /* NULL if absent */
xs_node    *xs_append_child(xs_node *parent, xs_node *child);          /* returns child */
xs_node    *xs_add_elem(xs_node *parent, const char *ns, const char *name); /* new child element */
void        xs_add_text(xs_node *parent, const char *text, size_t len);
void        xs_unlink(xs_node *child);                                  /* detach from parent */
/* First child element with that ns (NULL = any) and name (NULL = any). */
xs_node    *xs_child(const xs_node *n, const char *ns, const char *name);
/* Next sibling element after c with that ns/name (NULL = any). */
xs_node    *xs_next_elem(const xs_node *c, const char *ns, const char *name);
/* Concatenated text of the direct text children; caller frees. Never NULL. */
char       *xs_text(const xs_node *n);
int         xs_is(const xs_node *n, const char *ns, const char *name);

/*
 * Serialize n. xmlns='ns' is written on n when n->ns differs from
 * parent_ns (pass NULL to always write it when non-empty), and on any
 * descendant whose ns differs from its parent's.
 * Elements in http://etherx.jabber.org/streams are written with the
 * prefix "stream:" (<stream:features>, <stream:error>) and no xmlns: the
 * stream header or BOSH <body xmlns:stream=...> declares the prefix.
 * Their children are compared against the default namespace in force
 * outside them (parent_ns). Attribute "xml:lang" is written as-is; an
 * attribute "URI|local" gets an xmlns:nsK='URI' declaration.
 */
void        xs_serialize(const xs_node *n, const char *parent_ns, strbuf *out);

/* ---- streaming parser ----
 * Rules for callbacks: they may call xs_parser_stop() and
 * xs_parser_reset() (the reset is deferred: the rest of the fed bytes go
 * to the fresh parser), but must NOT call xs_parser_free() on the parser
 * that is calling them. Elements nested deeper than 256 levels are
 * refused with XS_ERR_TOO_BIG. Node strings (ns, name, text, attribute
 * names/values) are separate malloc'd allocations owned by the node. */
typedef struct xs_parser xs_parser;

typedef struct xs_callbacks {
    /* Stream header (depth-0 start tag). attrs: NULL-terminated
     * name/value pairs, as expat gives them after name mapping above. */
    void (*stream_start)(void *ud, const char *ns, const char *name,
                         const char **attrs);
    /* A complete depth-1 element. Ownership of the tree passes to ud. */
    void (*stanza)(void *ud, xs_node *stanza);
    /* </stream:stream> (depth-0 end tag). */
    void (*stream_end)(void *ud);
} xs_callbacks;

typedef enum {
    XS_OK = 0,
    XS_ERR_SYNTAX,          /* not well-formed */
    XS_ERR_TOO_BIG,         /* stanza or document larger than the cap */
    XS_ERR_FORBIDDEN,       /* DTD, entity, PI, comment */
    XS_ERR_STOPPED          /* a callback called xs_parser_stop() */
} xs_status;

/* max_stanza_bytes: cap on one stanza's bytes in stream mode (0 = no cap). */
xs_parser  *xs_parser_new(const xs_callbacks *cb, void *ud, size_t max_stanza_bytes);
void        xs_parser_free(xs_parser *p);
xs_status   xs_parser_feed(xs_parser *p, const char *data, size_t len);
/* After a stream restart (SASL success): a fresh stream header is expected. */
void        xs_parser_reset(xs_parser *p);
/* Called from inside a callback: stop parsing; feed returns XS_ERR_STOPPED. */
void        xs_parser_stop(xs_parser *p);
const char *xs_parser_error(const xs_parser *p);   /* human-readable last error */

/* With a byte cap (max_stanza_bytes / max_bytes), the tree built for one
 * stanza or document is also capped: it may cost at most 16 times the cap
 * (64 KiB at least) in allocations, else XS_ERR_TOO_BIG ("too complex");
 * for a document, 16 times its actual length (so the verdict does not
 * depend on the cap, only on whether there is one).
 * Bytes alone do not bound it: each node copies its namespace URI. */

/* Document mode: parse one whole document of at most max_bytes.
 * On success *root holds the root element (caller frees). */
xs_status   xs_parse_document(const char *data, size_t len, size_t max_bytes,
                              xs_node **root, char *err, size_t errlen);

/* The same with a parser kept from one document to the next: its expat
 * parser is reset (XML_ParserReset) instead of created and freed each
 * time, which is most of the cost of a small document. Every limit above
 * holds for each document whatever the previous one did. NOT thread-safe:
 * one thread at a time (chatd keeps one for its loop; mod_bosh's workers
 * borrow one from a small per-child free list, bosh_handler.c). Free it
 * with xs_parser_free. */
xs_parser  *xs_doc_parser_new(void);
xs_status   xs_doc_parse(xs_parser *p, const char *data, size_t len, size_t max_bytes,
                         xs_node **root, char *err, size_t errlen);
/* The same verdict (every check and limit, charged as if the tree were
 * built), but *root keeps only the root element, its attributes and its
 * own text: nothing below it is allocated. For a caller that validates a
 * document and reads only the root (mod_bosh; issue 15). */
xs_status   xs_doc_parse_shallow(xs_parser *p, const char *data, size_t len,
                                 size_t max_bytes, xs_node **root, char *err,
                                 size_t errlen);

#endif
