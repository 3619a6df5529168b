/*
 * bosh_body: parse and validate one BOSH <body/> request wrapper.
 *
 * Why here: mod_bosh must reject bad requests before they cross the relay
 * and chatd must read the same attributes; one parser keeps the two in
 * agreement. Everything that makes a body "bad-request" lives in this file.
 */
#include "bosh_body.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_RID ((1ULL << 53) - 1)

/* Attribute names as xml_stream reports them. */
#define ATTR_XML_LANG      "xml:lang"
#define ATTR_XMPP_VERSION  XBOSH_NS "|version"
#define ATTR_XMPP_RESTART  XBOSH_NS "|restart"

static int fail(char *err, size_t errlen, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* Strict unsigned decimal: digits only, no sign or spaces, value <= max. */
static int parse_uint(const char *s, uint64_t max, uint64_t *out) {
    uint64_t v = 0;
    if (!s || !*s) return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return -1;
        unsigned d = (unsigned)(*s - '0');
        if (v > (max - d) / 10) return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* "major.minor", each 0..65535. */
static int parse_ver(const char *s, unsigned *major, unsigned *minor) {
    const char *dot = strchr(s, '.');
    char buf[8];
    uint64_t a, b;
    if (!dot || (size_t)(dot - s) >= sizeof buf) return -1;
    memcpy(buf, s, (size_t)(dot - s));
    buf[dot - s] = '\0';
    if (parse_uint(buf, 65535, &a) < 0 || parse_uint(dot + 1, 65535, &b) < 0)
        return -1;
    *major = (unsigned)a;
    *minor = (unsigned)b;
    return 0;
}

static int is_blank(const char *s, size_t len) {
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n') return 0;
    return 1;
}

/* Payloads sent without xmlns inherit the body's namespace; XEP-0206 says
 * they are jabber:client. Rewrite every BOSH_NS element in the subtree. */
static void rewrite_ns(xs_node *n) {
    for (xs_node *c = n->first_child; c; c = c->next) {
        if (!c->name) continue;
        if (strcmp(c->ns, BOSH_NS) == 0) {
            char *ns = strdup(JABBER_CLIENT_NS);
            if (!ns) abort();
            free(c->ns);
            c->ns = ns;
        }
        rewrite_ns(c);
    }
}

typedef struct num_attr {
    const char *name;
    uint64_t    min, max;
    unsigned    flag;
} num_attr;

static int read_attrs(bosh_body *b, char *err, size_t errlen) {
    const xs_node *r = b->root;
    uint64_t v;

    static const num_attr nums[] = {
        { "rid",   1, MAX_RID, BB_HAS_RID },
        { "ack",   0, MAX_RID, BB_HAS_ACK },
        { "wait",  0, 65535,   BB_HAS_WAIT },
        { "hold",  0, 255,     BB_HAS_HOLD },
        { "pause", 0, 65535,   BB_HAS_PAUSE },
    };
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        const char *s = xs_attr_get(r, nums[i].name);
        if (!s) continue;
        if (parse_uint(s, nums[i].max, &v) < 0 || v < nums[i].min)
            return fail(err, errlen, "bad %s attribute", nums[i].name);
        b->flags |= nums[i].flag;
        switch (nums[i].flag) {
        case BB_HAS_RID:   b->rid = v; break;
        case BB_HAS_ACK:   b->ack = v; break;
        case BB_HAS_WAIT:  b->wait = (unsigned)v; break;
        case BB_HAS_HOLD:  b->hold = (unsigned)v; break;
        case BB_HAS_PAUSE: b->pause = (unsigned)v; break;
        }
    }
    if (!(b->flags & BB_HAS_RID))
        return fail(err, errlen, "missing rid");

    const char *ver = xs_attr_get(r, "ver");
    if (ver) {
        if (parse_ver(ver, &b->ver_major, &b->ver_minor) < 0)
            return fail(err, errlen, "bad ver attribute");
        b->flags |= BB_HAS_VER;
    }

    b->sid = xs_attr_get(r, "sid");
    b->to = xs_attr_get(r, "to");
    b->from = xs_attr_get(r, "from");
    b->route = xs_attr_get(r, "route");
    b->lang = xs_attr_get(r, ATTR_XML_LANG);
    b->content = xs_attr_get(r, "content");
    b->type = xs_attr_get(r, "type");
    b->key = xs_attr_get(r, "key");
    b->newkey = xs_attr_get(r, "newkey");
    b->stream = xs_attr_get(r, "stream");
    b->xmpp_version = xs_attr_get(r, ATTR_XMPP_VERSION);

    const char *restart = xs_attr_get(r, ATTR_XMPP_RESTART);
    if (restart && (strcmp(restart, "true") == 0 || strcmp(restart, "1") == 0))
        b->flags |= BB_RESTART;
    if (b->type && strcmp(b->type, "terminate") == 0)
        b->flags |= BB_TERMINATE;
    return 0;
}

int bosh_body_parse(const char *data, size_t len, size_t max_bytes,
                    bosh_body *b, char *err, size_t errlen) {
    return bosh_body_parse_with(NULL, data, len, max_bytes, b, err, errlen);
}

static int parse_body(xs_parser *p, int shallow, const char *data, size_t len,
                      size_t max_bytes, bosh_body *b, char *err, size_t errlen) {
    char xerr[160];
    memset(b, 0, sizeof *b);

    xs_status st = shallow ? xs_doc_parse_shallow(p, data, len, max_bytes, &b->root,
                                                  xerr, sizeof xerr)
                 : p ? xs_doc_parse(p, data, len, max_bytes, &b->root, xerr, sizeof xerr)
                     : xs_parse_document(data, len, max_bytes, &b->root,
                                         xerr, sizeof xerr);
    if (st != XS_OK)
        return fail(err, errlen, "%s", xerr);

    if (!xs_is(b->root, BOSH_NS, "body")) {
        bosh_body_free(b);
        return fail(err, errlen, "root is not httpbind <body/>");
    }

    /* Wrapper level: elements only; whitespace is dropped. */
    xs_node *c = b->root->first_child;
    while (c) {
        xs_node *next = c->next;
        if (!c->name) {
            if (!is_blank(c->text, c->text_len)) {
                bosh_body_free(b);
                return fail(err, errlen, "character data in <body/>");
            }
            xs_unlink(c);
            xs_free(c);
        } else {
            b->npayloads++;
        }
        c = next;
    }

    if (read_attrs(b, err, errlen) < 0) {
        bosh_body_free(b);
        return -1;
    }
    rewrite_ns(b->root);
    return 0;
}

int bosh_body_parse_with(xs_parser *p, const char *data, size_t len,
                         size_t max_bytes, bosh_body *b, char *err, size_t errlen) {
    return parse_body(p, 0, data, len, max_bytes, b, err, errlen);
}

int bosh_body_check_with(xs_parser *p, const char *data, size_t len,
                         size_t max_bytes, bosh_body *b, char *err, size_t errlen) {
    if (!p) return parse_body(NULL, 0, data, len, max_bytes, b, err, errlen);
    return parse_body(p, 1, data, len, max_bytes, b, err, errlen);
}

void bosh_body_free(bosh_body *b) {
    xs_free(b->root);
    memset(b, 0, sizeof *b);
}
