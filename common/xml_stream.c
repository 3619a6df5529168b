/*
 * xml_stream: expat-based stream/document parser, tree and serializer.
 *
 * Why expat: it is small, fast, incremental and battle-tested; we only add
 * the XMPP restrictions (no DTD, entities, PIs, comments), a byte cap per
 * stanza, a nesting cap, and the tree that callers work with.
 *
 * Trees are plain malloc: every node, name, namespace, text and attribute
 * string is its own allocation owned by the node, so callers may replace
 * a field with free() + strdup().
 */
#include "xml_stream.h"

#include <expat.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

/* Built outside the Makefile (no probe result): go by the version, which
 * is right for upstream expat; Debian's backport is found by the probe. */
#ifndef HAVE_XML_REPARSE_DEFERRAL
#define HAVE_XML_REPARSE_DEFERRAL \
    (XML_MAJOR_VERSION > 2 || (XML_MAJOR_VERSION == 2 && XML_MINOR_VERSION >= 6))
#endif

#define XML_NS_URI     "http://www.w3.org/XML/1998/namespace"
#define STREAMS_NS_URI "http://etherx.jabber.org/streams"
#define NS_SEP         '|'

/* Deeper nesting than this is refused (XS_ERR_TOO_BIG): it bounds the
 * recursion of xs_free/xs_copy/xs_serialize on hostile input. */
#define XS_MAX_DEPTH   256

/*
 * Tree budget. Bytes alone do not bound what a tree costs: expat reports
 * every element as "URI|local", and each node keeps its own copy of the
 * namespace, so one 30 KB xmlns declaration followed by thousands of
 * 4-byte children (<a/>) would cost tens of megabytes from a 64 KB
 * document. With a byte cap set, the tree of one document or stanza may
 * cost at most XS_TREE_FACTOR times that cap (at least XS_TREE_FLOOR),
 * counted as the sizes we allocate plus XS_ALLOC_COST per allocation;
 * past it the parse stops with XS_ERR_TOO_BIG. A whole document's budget
 * comes from its actual length instead of the cap, so mod_bosh (cap:
 * BoshMaxBodySize) and chatd (cap: the relayed length) agree on which
 * bodies are valid. Ordinary XMPP stays far
 * below: a roster item in its namespace costs about 8 times its bytes.
 */
#define XS_TREE_FACTOR 16
#define XS_TREE_FLOOR  65536
#define XS_ALLOC_COST  16

/* A reused document parser keeps expat's buffers only after documents up
 * to this size (see xs_doc_parse). */
#define XS_DOC_KEEP_MAX 65536

static void oom(void) {
    fputs("xml_stream: out of memory\n", stderr);
    abort();
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) oom();
    return p;
}

static void *xrealloc(void *p, size_t n) {
    p = realloc(p, n ? n : 1);
    if (!p) oom();
    return p;
}

static char *xstrndup(const char *s, size_t n) {
    char *d = xmalloc(n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

static char *xstrdup(const char *s) {
    return xstrndup(s, strlen(s));
}

/* ------------------------------------------------------------------ */
/* Tree                                                                */
/* ------------------------------------------------------------------ */

static xs_node *node_alloc(void) {
    xs_node *n = xmalloc(sizeof *n);
    memset(n, 0, sizeof *n);
    return n;
}

xs_node *xs_new(const char *ns, const char *name) {
    xs_node *n = node_alloc();
    n->ns = xstrdup(ns ? ns : "");
    n->name = xstrdup(name);
    return n;
}

void xs_free(xs_node *n) {
    if (!n) return;
    xs_node *c = n->first_child;
    while (c) {
        xs_node *next = c->next;
        xs_free(c);
        c = next;
    }
    for (size_t i = 0; i < n->nattrs; i++) {
        free(n->attrs[i].name);
        free(n->attrs[i].value);
    }
    free(n->attrs);
    free(n->ns);
    free(n->name);
    free(n->text);
    free(n);
}

xs_node *xs_copy(const xs_node *n) {
    if (!n) return NULL;
    xs_node *c = node_alloc();
    if (n->name) {
        c->ns = xstrdup(n->ns ? n->ns : "");
        c->name = xstrdup(n->name);
    } else {
        c->text = xstrndup(n->text ? n->text : "", n->text_len);
        c->text_len = n->text_len;
    }
    if (n->nattrs) {
        c->attrs = xmalloc(n->nattrs * sizeof *c->attrs);
        c->attrs_cap = n->nattrs;
        c->nattrs = n->nattrs;
        for (size_t i = 0; i < n->nattrs; i++) {
            c->attrs[i].name = xstrdup(n->attrs[i].name);
            c->attrs[i].value = xstrdup(n->attrs[i].value);
        }
    }
    for (const xs_node *k = n->first_child; k; k = k->next)
        xs_append_child(c, xs_copy(k));
    return c;
}

static void attr_push(xs_node *n, char *name, char *value) {
    if (n->nattrs == n->attrs_cap) {
        n->attrs_cap = n->attrs_cap ? n->attrs_cap * 2 : 4;
        n->attrs = xrealloc(n->attrs, n->attrs_cap * sizeof *n->attrs);
    }
    n->attrs[n->nattrs].name = name;
    n->attrs[n->nattrs].value = value;
    n->nattrs++;
}

void xs_set_attr(xs_node *n, const char *name, const char *value) {
    for (size_t i = 0; i < n->nattrs; i++) {
        if (strcmp(n->attrs[i].name, name) != 0) continue;
        if (value) {
            char *v = xstrdup(value);
            free(n->attrs[i].value);
            n->attrs[i].value = v;
        } else {
            free(n->attrs[i].name);
            free(n->attrs[i].value);
            memmove(&n->attrs[i], &n->attrs[i + 1],
                    (n->nattrs - i - 1) * sizeof *n->attrs);
            n->nattrs--;
        }
        return;
    }
    if (value) attr_push(n, xstrdup(name), xstrdup(value));
}

const char *xs_attr_get(const xs_node *n, const char *name) {
    if (!n) return NULL;
    for (size_t i = 0; i < n->nattrs; i++)
        if (strcmp(n->attrs[i].name, name) == 0) return n->attrs[i].value;
    return NULL;
}

void xs_unlink(xs_node *child) {
    xs_node *parent = child->parent;
    if (!parent) return;
    xs_node *prev = NULL;
    for (xs_node *c = parent->first_child; c; prev = c, c = c->next) {
        if (c != child) continue;
        if (prev) prev->next = c->next;
        else parent->first_child = c->next;
        if (parent->last_child == c) parent->last_child = prev;
        break;
    }
    child->parent = NULL;
    child->next = NULL;
}

xs_node *xs_append_child(xs_node *parent, xs_node *child) {
    if (child->parent) xs_unlink(child);
    child->parent = parent;
    child->next = NULL;
    if (parent->last_child) parent->last_child->next = child;
    else parent->first_child = child;
    parent->last_child = child;
    return child;
}

xs_node *xs_add_elem(xs_node *parent, const char *ns, const char *name) {
    return xs_append_child(parent, xs_new(ns, name));
}

/* Adjacent text is merged into one node: expat delivers character data in
 * pieces, and callers want one string. */
void xs_add_text(xs_node *parent, const char *text, size_t len) {
    xs_node *last = parent->last_child;
    if (last && !last->name) {
        last->text = xrealloc(last->text, last->text_len + len + 1);
        memcpy(last->text + last->text_len, text, len);
        last->text_len += len;
        last->text[last->text_len] = '\0';
        return;
    }
    xs_node *t = node_alloc();
    t->text = xstrndup(text, len);
    t->text_len = len;
    xs_append_child(parent, t);
}

int xs_is(const xs_node *n, const char *ns, const char *name) {
    if (!n || !n->name) return 0;
    if (ns && strcmp(n->ns ? n->ns : "", ns) != 0) return 0;
    if (name && strcmp(n->name, name) != 0) return 0;
    return 1;
}

xs_node *xs_next_elem(const xs_node *c, const char *ns, const char *name) {
    for (xs_node *k = c ? c->next : NULL; k; k = k->next)
        if (xs_is(k, ns, name)) return k;
    return NULL;
}

xs_node *xs_child(const xs_node *n, const char *ns, const char *name) {
    if (!n) return NULL;
    for (xs_node *k = n->first_child; k; k = k->next)
        if (xs_is(k, ns, name)) return k;
    return NULL;
}

char *xs_text(const xs_node *n) {
    size_t total = 0;
    for (const xs_node *k = n ? n->first_child : NULL; k; k = k->next)
        if (!k->name) total += k->text_len;
    char *s = xmalloc(total + 1), *p = s;
    for (const xs_node *k = n ? n->first_child : NULL; k; k = k->next) {
        if (k->name) continue;
        memcpy(p, k->text, k->text_len);
        p += k->text_len;
    }
    *p = '\0';
    return s;
}

/* ------------------------------------------------------------------ */
/* Serializer                                                          */
/* ------------------------------------------------------------------ */

static void put_attr_value(strbuf *out, const char *v) {
    sb_putc(out, '\'');
    sb_put_xml_escaped(out, v, strlen(v));
    sb_putc(out, '\'');
}

/*
 * Qualified attribute "URI|local": written as nsK:local with an
 * xmlns:nsK='URI' declaration, where K is the index of the first
 * attribute on this element with the same URI (so repeated URIs share
 * one prefix and no bookkeeping allocation is needed).
 */
static void put_attrs(const xs_node *n, strbuf *out) {
    for (size_t i = 0; i < n->nattrs; i++) {
        const char *name = n->attrs[i].name;
        const char *bar = strrchr(name, NS_SEP);
        if (!bar) {
            sb_putc(out, ' ');
            sb_puts(out, name);
            sb_putc(out, '=');
            put_attr_value(out, n->attrs[i].value);
            continue;
        }
        size_t urilen = (size_t)(bar - name);
        size_t first = i;
        for (size_t j = 0; j < i; j++) {
            const char *o = n->attrs[j].name, *obar = strrchr(o, NS_SEP);
            if (obar && (size_t)(obar - o) == urilen && memcmp(o, name, urilen) == 0) {
                first = j;
                break;
            }
        }
        if (first == i) {
            sb_printf(out, " xmlns:ns%zu='", i);
            sb_put_xml_escaped(out, name, urilen);
            sb_putc(out, '\'');
        }
        sb_printf(out, " ns%zu:%s=", first, bar + 1);
        put_attr_value(out, n->attrs[i].value);
    }
}

/*
 * scope_ns is the default namespace in force where n is written (NULL:
 * unknown, so any non-empty ns is declared). Elements in the streams
 * namespace use the "stream:" prefix declared by the enclosing stream
 * header or BOSH body; they do not change the default namespace, so their
 * children are compared against the same scope.
 */
void xs_serialize(const xs_node *n, const char *scope_ns, strbuf *out) {
    if (!n->name) {
        sb_put_xml_escaped(out, n->text ? n->text : "", n->text_len);
        return;
    }
    const char *ns = n->ns ? n->ns : "";
    const char *child_scope;
    int is_stream = strcmp(ns, STREAMS_NS_URI) == 0;

    sb_putc(out, '<');
    if (is_stream) {
        sb_puts(out, "stream:");
        sb_puts(out, n->name);
        child_scope = scope_ns;
    } else {
        sb_puts(out, n->name);
        if (scope_ns ? strcmp(ns, scope_ns) != 0 : ns[0] != '\0') {
            sb_puts(out, " xmlns=");
            put_attr_value(out, ns);
        }
        child_scope = ns;
    }
    put_attrs(n, out);
    if (!n->first_child) {
        sb_puts(out, "/>");
        return;
    }
    sb_putc(out, '>');
    for (const xs_node *k = n->first_child; k; k = k->next)
        xs_serialize(k, child_scope, out);
    sb_puts(out, "</");
    if (is_stream) sb_puts(out, "stream:");
    sb_puts(out, n->name);
    sb_putc(out, '>');
}

/* ------------------------------------------------------------------ */
/* Parser                                                              */
/* ------------------------------------------------------------------ */

struct xs_parser {
    XML_Parser    xp;
    xs_callbacks  cb;
    void         *ud;
    size_t        max_bytes;     /* per stanza (stream) or whole doc; 0 = none */
    int           doc_mode;

    int           depth;         /* open elements */
    xs_node      *root;          /* doc mode: the root element */
    xs_node      *stanza;        /* stream mode: stanza being built */
    xs_node      *cur;           /* innermost open element of the tree */
    unsigned long long stanza_start;   /* byte index of the stanza's '<' */

    unsigned long long fed;            /* bytes given to this expat parser */
    unsigned long long feed_base;      /* index where the current chunk starts */
    unsigned long long last_event_end; /* end of the last event expat reported */
    unsigned long long tree_cost;      /* what the current tree has cost */
    unsigned long long tree_budget;    /* 0: from max_bytes */

    xs_status     status;        /* sticky once not XS_OK */
    int           in_feed;
    int           reset_pending; /* xs_parser_reset called from a callback */
    int           doc_used;      /* xs_doc_parse ran: reset before the next */
    int           shallow;       /* doc mode: keep only the root and its text */
    int           prev_text;     /* shallow: the last event was character data */
    unsigned long salt;          /* doc parser: expat's hash salt; 0 = expat's own */
    char          err[160];
};

static void set_error(xs_parser *p, xs_status st, const char *msg) {
    if (p->status != XS_OK) return;
    p->status = st;
    snprintf(p->err, sizeof p->err, "%s", msg);
}

/* Stop expat from inside a handler with status st. */
static void halt(xs_parser *p, xs_status st, const char *msg) {
    set_error(p, st, msg);
    XML_StopParser(p->xp, XML_FALSE);
}

static int halted(const xs_parser *p) {
    return p->status != XS_OK || p->reset_pending;
}

/* Record where the current event ends, and enforce the per-stanza cap. */
static int track(xs_parser *p) {
    XML_Index idx = XML_GetCurrentByteIndex(p->xp);
    int count = XML_GetCurrentByteCount(p->xp);
    if (idx < 0) return 1;
    unsigned long long end = (unsigned long long)idx + (unsigned long long)(count > 0 ? count : 0);
    if (end > p->last_event_end) p->last_event_end = end;
    if (!p->doc_mode && p->max_bytes && p->stanza &&
        end - p->stanza_start > p->max_bytes) {
        halt(p, XS_ERR_TOO_BIG, "stanza too big");
        return 0;
    }
    return 1;
}

/* Charge cost to the tree being built; 0 (and halted) past the budget. */
static int charge(xs_parser *p, size_t cost) {
    unsigned long long budget;
    if (!p->max_bytes) return 1;
    budget = p->tree_budget ? p->tree_budget
                            : (unsigned long long)p->max_bytes * XS_TREE_FACTOR;
    if (budget < XS_TREE_FLOOR) budget = XS_TREE_FLOOR;
    p->tree_cost += cost;
    if (p->tree_cost > budget) {
        halt(p, XS_ERR_TOO_BIG, p->doc_mode ? "document too complex"
                                            : "stanza too complex");
        return 0;
    }
    return 1;
}

/* "URI|local" -> ns, local; "local" -> "", local. */
static xs_node *node_from_expat(const char *qname) {
    const char *bar = strrchr(qname, NS_SEP);
    xs_node *n = node_alloc();
    if (bar) {
        n->ns = xstrndup(qname, (size_t)(bar - qname));
        n->name = xstrdup(bar + 1);
    } else {
        n->ns = xstrdup("");
        n->name = xstrdup(qname);
    }
    return n;
}

/* Attribute name mapping: xml namespace -> "xml:local", others unchanged.
 * Returns a malloc'd string. */
static char *attr_name_from_expat(const char *qname) {
    static const char xmlns_prefix[] = XML_NS_URI "|";
    size_t plen = sizeof xmlns_prefix - 1;
    if (strncmp(qname, xmlns_prefix, plen) == 0) {
        size_t l = strlen(qname + plen);
        char *s = xmalloc(4 + l + 1);
        memcpy(s, "xml:", 4);
        memcpy(s + 4, qname + plen, l + 1);
        return s;
    }
    return xstrdup(qname);
}

static void stream_header(xs_parser *p, const char *qname, const char **atts) {
    size_t n = 0;
    while (atts[n]) n += 2;
    const char **mapped = xmalloc((n + 1) * sizeof *mapped);
    for (size_t i = 0; i < n; i += 2) {
        mapped[i] = attr_name_from_expat(atts[i]);
        mapped[i + 1] = atts[i + 1];
    }
    mapped[n] = NULL;
    xs_node *tmp = node_from_expat(qname);
    if (p->cb.stream_start) p->cb.stream_start(p->ud, tmp->ns, tmp->name, mapped);
    xs_free(tmp);
    for (size_t i = 0; i < n; i += 2) free((char *)mapped[i]);
    free(mapped);
}

static void XMLCALL on_start(void *ud, const XML_Char *qname, const XML_Char **atts) {
    xs_parser *p = ud;
    if (halted(p)) return;
    int depth = p->depth++;
    if (depth == 0 && p->stanza == NULL && !p->doc_mode) {
        track(p);
        stream_header(p, qname, atts);
        return;
    }
    if (depth == 1 && !p->doc_mode) {
        p->stanza_start = (unsigned long long)XML_GetCurrentByteIndex(p->xp);
        p->tree_cost = 0;
    }
    if (depth >= XS_MAX_DEPTH) {
        halt(p, XS_ERR_TOO_BIG, "elements nested too deep");
        return;
    }
    /* node + ns + name, then per attribute: a slot (the array may be
     * twice the count), name and value. */
    size_t cost = sizeof(xs_node) + strlen(qname) + 2 + 3 * XS_ALLOC_COST;
    size_t nattr = 0;
    for (size_t i = 0; atts[i]; i += 2, nattr++)
        cost += strlen(atts[i]) + strlen(atts[i + 1]) + 6 + 2 * XS_ALLOC_COST;
    if (nattr) cost += 2 * nattr * sizeof(xs_attr) + XS_ALLOC_COST;
    if (!charge(p, cost)) return;
    p->prev_text = 0;
    if (p->shallow && p->doc_mode && depth >= 1) {
        /* Shallow: below the root nothing is built, but every limit is
         * charged exactly as if it were, so the verdict is the same. */
        track(p);
        return;
    }
    xs_node *n = node_from_expat(qname);
    for (size_t i = 0; atts[i]; i += 2)
        attr_push(n, attr_name_from_expat(atts[i]), xstrdup(atts[i + 1]));
    if (p->cur) xs_append_child(p->cur, n);
    else if (p->doc_mode) p->root = n;
    else p->stanza = n;
    p->cur = n;
    track(p);
}

static void XMLCALL on_end(void *ud, const XML_Char *qname) {
    xs_parser *p = ud;
    (void)qname;
    if (halted(p)) return;
    if (!track(p)) return;
    int depth = --p->depth;
    p->prev_text = 0;
    if (p->doc_mode) {
        if (p->shallow && depth >= 1) return;       /* nothing was built */
        p->cur = p->cur ? p->cur->parent : NULL;
        return;
    }
    if (depth == 0) {
        if (p->cb.stream_end) p->cb.stream_end(p->ud);
        return;
    }
    p->cur = p->cur->parent;
    if (depth == 1) {
        xs_node *s = p->stanza;
        p->stanza = NULL;
        p->cur = NULL;
        if (p->cb.stanza) p->cb.stanza(p->ud, s);
        else xs_free(s);
    }
}

static void XMLCALL on_chars(void *ud, const XML_Char *s, int len) {
    xs_parser *p = ud;
    if (halted(p)) return;
    if (!track(p)) return;
    if (p->cur) {
        size_t cost = (size_t)len;
        int new_node = p->shallow ? !p->prev_text
                                  : !p->cur->last_child || p->cur->last_child->name;
        if (new_node)
            cost += sizeof(xs_node) + 1 + 2 * XS_ALLOC_COST;    /* a new text node */
        if (!charge(p, cost)) return;
        p->prev_text = 1;
        if (!p->shallow || p->depth == 1)
            xs_add_text(p->cur, s, (size_t)len);
    }
    /* else: text between stanzas (whitespace keepalives): ignored */
}

static void XMLCALL on_xmldecl(void *ud, const XML_Char *version,
                               const XML_Char *encoding, int standalone) {
    (void)version; (void)encoding; (void)standalone;
    track(ud);
}

static void XMLCALL on_doctype(void *ud, const XML_Char *name, const XML_Char *sysid,
                               const XML_Char *pubid, int has_internal_subset) {
    (void)name; (void)sysid; (void)pubid; (void)has_internal_subset;
    halt(ud, XS_ERR_FORBIDDEN, "DTD not allowed");
}

static void XMLCALL on_entity_decl(void *ud, const XML_Char *name, int is_param,
                                   const XML_Char *value, int value_len,
                                   const XML_Char *base, const XML_Char *sysid,
                                   const XML_Char *pubid, const XML_Char *notation) {
    (void)name; (void)is_param; (void)value; (void)value_len; (void)base;
    (void)sysid; (void)pubid; (void)notation;
    halt(ud, XS_ERR_FORBIDDEN, "entity declaration not allowed");
}

static void XMLCALL on_comment(void *ud, const XML_Char *data) {
    (void)data;
    halt(ud, XS_ERR_FORBIDDEN, "comment not allowed");
}

static void XMLCALL on_pi(void *ud, const XML_Char *target, const XML_Char *data) {
    (void)target; (void)data;
    halt(ud, XS_ERR_FORBIDDEN, "processing instruction not allowed");
}

/* Handlers and limits. XML_ParserReset clears all of them (and turns
 * reparse deferral back on), so this runs after every reset too. */
static void arm_expat(XML_Parser xp, xs_parser *p) {
    XML_SetUserData(xp, p);
    XML_SetElementHandler(xp, on_start, on_end);
    XML_SetCharacterDataHandler(xp, on_chars);
    XML_SetXmlDeclHandler(xp, on_xmldecl);
    XML_SetStartDoctypeDeclHandler(xp, on_doctype);
    XML_SetEntityDeclHandler(xp, on_entity_decl);
    XML_SetCommentHandler(xp, on_comment);
    XML_SetProcessingInstructionHandler(xp, on_pi);
    XML_SetParamEntityParsing(xp, XML_PARAM_ENTITY_PARSING_NEVER);
    /* Expat >= 2.6 (and Debian's 2.5.0 security backport) defers parsing
     * of incomplete tokens until "enough" new input arrives; a chat stream
     * must see every stanza as soon as its last byte is here. The cap on
     * buffered bytes (see xs_parser_feed) keeps the quadratic re-parse
     * that deferral guards against bounded. An expat without the
     * function (bookworm's 2.5.0-1+deb12u1) has no deferral either, so
     * there is nothing to turn off; mk/expat.mk probes which we have. */
#if HAVE_XML_REPARSE_DEFERRAL
    XML_SetReparseDeferralEnabled(xp, XML_FALSE);
#endif
}

/* Forget all per-stream state. The expat parser is reset rather than
 * freed and created again: creation is most of the cost of parsing a
 * small BOSH body (its hash tables, pools and buffer), and a reset keeps
 * those allocations while clearing everything a document left behind. */
static void parser_restart(xs_parser *p) {
    if (p->xp && XML_ParserReset(p->xp, "UTF-8") != XML_TRUE) {
        XML_ParserFree(p->xp);      /* only a child parser refuses a reset */
        p->xp = NULL;
    }
    if (!p->xp) {
        p->xp = XML_ParserCreateNS("UTF-8", NS_SEP);
        if (!p->xp) oom();
    }
    arm_expat(p->xp, p);
    /* Without a salt set, expat draws a new one from the kernel for every
     * document: a getrandom() system call per BOSH body. The salt keys
     * expat's name hash tables against collision floods; one secret salt
     * per parser protects them as well, as the tables are emptied by
     * every reset. */
    if (p->salt) XML_SetHashSalt(p->xp, p->salt);
    xs_free(p->stanza);
    xs_free(p->root);
    p->stanza = p->root = p->cur = NULL;
    p->depth = 0;
    p->stanza_start = p->fed = p->feed_base = p->last_event_end = 0;
    p->tree_cost = 0;
    p->prev_text = 0;
    p->status = XS_OK;
    p->reset_pending = 0;
    p->err[0] = '\0';
}

xs_parser *xs_parser_new(const xs_callbacks *cb, void *ud, size_t max_stanza_bytes) {
    xs_parser *p = xmalloc(sizeof *p);
    memset(p, 0, sizeof *p);
    if (cb) p->cb = *cb;
    p->ud = ud;
    p->max_bytes = max_stanza_bytes;
    parser_restart(p);
    return p;
}

void xs_parser_free(xs_parser *p) {
    if (!p) return;
    if (p->xp) XML_ParserFree(p->xp);
    xs_free(p->stanza);
    xs_free(p->root);
    free(p);
}

/*
 * Called from a callback (typically the stanza that completed SASL), the
 * reset is deferred: expat is stopped, and feed continues with the bytes
 * after the current event in a fresh parser.
 */
void xs_parser_reset(xs_parser *p) {
    if (p->in_feed) {
        if (!p->reset_pending) {
            p->reset_pending = 1;
            XML_StopParser(p->xp, XML_FALSE);
        }
        return;
    }
    parser_restart(p);
}

void xs_parser_stop(xs_parser *p) {
    if (p->in_feed) halt(p, XS_ERR_STOPPED, "stopped");
    else set_error(p, XS_ERR_STOPPED, "stopped");
}

const char *xs_parser_error(const xs_parser *p) {
    return p->err[0] ? p->err : "no error";
}

static void syntax_error(xs_parser *p) {
    enum XML_Error code = XML_GetErrorCode(p->xp);
    char msg[160];
    snprintf(msg, sizeof msg, "%s at line %lu col %lu",
             XML_ErrorString(code),
             (unsigned long)XML_GetCurrentLineNumber(p->xp),
             (unsigned long)XML_GetCurrentColumnNumber(p->xp));
    set_error(p, XS_ERR_SYNTAX, msg);
}

xs_status xs_parser_feed(xs_parser *p, const char *data, size_t len) {
    while (p->status == XS_OK && len > 0) {
        size_t chunk = len > (1u << 24) ? (1u << 24) : len;
        p->feed_base = p->fed;
        p->fed += chunk;
        p->in_feed = 1;
        enum XML_Status rc = XML_Parse(p->xp, data, (int)chunk, 0);
        p->in_feed = 0;
        if (p->reset_pending) {
            /* Continue after the event whose callback asked for the reset. */
            unsigned long long used = p->last_event_end > p->feed_base
                                    ? p->last_event_end - p->feed_base : 0;
            if (used > chunk) used = chunk;
            xs_status st = p->status;
            char err[sizeof p->err];
            memcpy(err, p->err, sizeof err);
            parser_restart(p);
            if (st != XS_OK) {          /* the callback also stopped us */
                p->status = st;
                memcpy(p->err, err, sizeof err);
                return st;
            }
            data += used;
            len -= (size_t)used;
            continue;
        }
        if (p->status != XS_OK) return p->status;
        if (rc != XML_STATUS_OK) {
            syntax_error(p);
            return p->status;
        }
        /* A token expat is still buffering counts against the cap too. */
        if (p->max_bytes) {
            unsigned long long pending = p->stanza ? p->fed - p->stanza_start
                                                   : p->fed - p->last_event_end;
            if (pending > p->max_bytes) {
                set_error(p, XS_ERR_TOO_BIG, "stanza too big");
                return p->status;
            }
        }
        data += chunk;
        len -= chunk;
    }
    return p->status;
}

xs_parser *xs_doc_parser_new(void) {
    xs_parser *p = xs_parser_new(NULL, NULL, 0);
    p->doc_mode = 1;
    if (getrandom(&p->salt, sizeof p->salt, GRND_NONBLOCK) != (ssize_t)sizeof p->salt)
        p->salt = 0;            /* no entropy yet: expat's per-document salt */
    if (p->salt) XML_SetHashSalt(p->xp, p->salt);
    return p;
}

xs_status xs_parse_document(const char *data, size_t len, size_t max_bytes,
                            xs_node **root, char *err, size_t errlen) {
    /* One document: expat's own salt, as before (no getrandom of ours). */
    xs_parser *p = xs_parser_new(NULL, NULL, 0);
    p->doc_mode = 1;
    xs_status st = xs_doc_parse(p, data, len, max_bytes, root, err, errlen);
    xs_parser_free(p);
    return st;
}

xs_status xs_doc_parse_shallow(xs_parser *p, const char *data, size_t len,
                               size_t max_bytes, xs_node **root, char *err,
                               size_t errlen) {
    xs_status st;
    p->shallow = 1;
    st = xs_doc_parse(p, data, len, max_bytes, root, err, errlen);
    p->shallow = 0;
    return st;
}

xs_status xs_doc_parse(xs_parser *p, const char *data, size_t len, size_t max_bytes,
                       xs_node **root, char *err, size_t errlen) {
    *root = NULL;
    if (max_bytes && len > max_bytes) {
        if (err && errlen) snprintf(err, errlen, "document too big");
        return XS_ERR_TOO_BIG;
    }
    if (len > (size_t)INT_MAX) {
        if (err && errlen) snprintf(err, errlen, "document too big");
        return XS_ERR_TOO_BIG;
    }
    /* Whatever the last document left (a tree cut short by a cap, a
     * stopped or failed expat) is cleared here, before the parse. */
    if (!p->xp || p->doc_used) parser_restart(p);
    p->doc_used = 1;
    p->doc_mode = 1;
    p->max_bytes = max_bytes;
    p->tree_budget = (unsigned long long)len * XS_TREE_FACTOR;
    p->in_feed = 1;
    enum XML_Status rc = XML_Parse(p->xp, data, (int)len, 1);
    p->in_feed = 0;
    if (p->status == XS_OK && rc != XML_STATUS_OK) syntax_error(p);
    if (p->status == XS_OK && !p->root) set_error(p, XS_ERR_SYNTAX, "no root element");
    xs_status st = p->status;
    if (st == XS_OK) {
        *root = p->root;
        p->root = NULL;
    } else if (err && errlen) {
        snprintf(err, errlen, "%s", p->err);
    }
    xs_free(p->root);       /* a partial tree, on failure */
    p->root = p->cur = NULL;
    /* A reset keeps expat's buffer, which holds the whole document: after
     * a big one, let the next document start from a fresh parser instead
     * of pinning that memory for the life of the process. */
    if (len > XS_DOC_KEEP_MAX) {
        XML_ParserFree(p->xp);
        p->xp = NULL;
    }
    return st;
}
