/*
 * csi.c: XEP-0352 importance rule and the per-session hold queue (csi.h).
 *
 * The queue is a list in arrival order. A presence or chat state replaces
 * the held one of the same kind from the same full JID (and moves to the
 * end), so a contact flapping between away and online costs one entry and
 * the client sees only where it ended.
 */
#include <stdlib.h>
#include <string.h>
#include "csi.h"
#include <stdio.h>
#include "jid.h"

#define NS_CLIENT     "jabber:client"
#define NS_CARBONS    "urn:xmpp:carbons:2"
#define NS_FORWARD    "urn:xmpp:forward:0"
#define NS_CHATSTATES "http://jabber.org/protocol/chatstates"
#define NS_MUC_USER   "http://jabber.org/protocol/muc#user"
#define NS_CONFERENCE "jabber:x:conference"

/* A child in jabber:client (or in no namespace: bytes from the MUC fan-out
 * are serialized inside the stream's default namespace). */
static xs_node *client_child(const xs_node *st, const char *name)
{
    xs_node *c = xs_child(st, NS_CLIENT, name);
    return c ? c : xs_child(st, "", name);
}

static int type_is(const xs_node *st, const char *t)
{
    const char *v = xs_attr_get(st, "type");
    return strcmp(v ? v : "", t) == 0;
}

static csi_kind classify_message(const xs_node *st, int depth)
{
    if (type_is(st, "error")) return CSI_IMPORTANT;
    if (type_is(st, "headline")) return CSI_OTHER;
    if (xs_child(st, NS_CARBONS, "sent")) return CSI_IMPORTANT;   /* the user's own words */
    xs_node *rc = xs_child(st, NS_CARBONS, "received");
    if (rc && depth == 0) {
        xs_node *f = xs_child(rc, NS_FORWARD, "forwarded");
        xs_node *inner = f ? xs_child(f, NULL, "message") : NULL;
        return inner ? classify_message(inner, 1) : CSI_OTHER;
    }
    if (client_child(st, "body") || client_child(st, "subject")) return CSI_IMPORTANT;
    if (xs_child(st, NS_CONFERENCE, "x")) return CSI_IMPORTANT;
    xs_node *mx = xs_child(st, NS_MUC_USER, "x");
    if (mx && xs_child(mx, NS_MUC_USER, "invite")) return CSI_IMPORTANT;
    if (xs_child(st, NS_CHATSTATES, NULL)) return CSI_CHATSTATE;
    return CSI_OTHER;
}

csi_kind csi_classify(const xs_node *st)
{
    if (!st || !st->name) return CSI_IMPORTANT;
    if (strcmp(st->name, "presence") == 0) {
        const char *t = xs_attr_get(st, "type");
        if (t && strcmp(t, "unavailable") != 0) return CSI_IMPORTANT; /* subscriptions, errors */
        xs_node *mx = xs_child(st, NS_MUC_USER, "x");
        for (xs_node *s = mx ? xs_child(mx, NS_MUC_USER, "status") : NULL; s;
             s = xs_next_elem(s, NS_MUC_USER, "status")) {
            const char *code = xs_attr_get(s, "code");
            if (code && strcmp(code, "110") == 0) return CSI_IMPORTANT;  /* about us */
        }
        return CSI_PRESENCE;
    }
    if (strcmp(st->name, "message") == 0) return classify_message(st, 0);
    return CSI_IMPORTANT;       /* iq and anything else */
}

typedef struct held {
    struct held *next;
    csi_kind kind;
    char    *from;      /* full sender JID ("" if none) */
    char    *bare;      /* its bare JID */
    char    *xml;
    size_t   len;
} held;

struct csi_queue {
    held  *head, *tail;
    size_t n, max;
};

csi_queue *csi_queue_new(size_t max)
{
    csi_queue *q = calloc(1, sizeof(*q));
    if (!q) abort();
    q->max = max ? max : 1;
    return q;
}

static void held_free(held *h)
{
    free(h->from);
    free(h->bare);
    free(h->xml);
    free(h);
}

void csi_queue_free(csi_queue *q)
{
    if (!q) return;
    while (q->head) {
        held *h = q->head;
        q->head = h->next;
        held_free(h);
    }
    free(q);
}

size_t csi_queue_len(const csi_queue *q) { return q ? q->n : 0; }

/* Unlink the entry after prev (prev NULL: the head) and return it. */
static held *unlink_after(csi_queue *q, held *prev)
{
    held *h = prev ? prev->next : q->head;
    if (prev) prev->next = h->next;
    else q->head = h->next;
    if (q->tail == h) q->tail = prev;
    q->n--;
    return h;
}

/* Emit (and drop) the held entries matching bare (NULL: all), in order. */
static void emit_matching(csi_queue *q, const char *bare, csi_emit emit, void *ud)
{
    held *prev = NULL, *h = q->head;
    while (h) {
        if (!bare || strcmp(h->bare, bare) == 0) {
            held *x = unlink_after(q, prev);
            h = x->next;
            emit(ud, x->xml, x->len);
            held_free(x);
        } else {
            prev = h;
            h = h->next;
        }
    }
}

void csi_flush(csi_queue *q, csi_emit emit, void *ud)
{
    if (q) emit_matching(q, NULL, emit, ud);
}

static char *dup_n(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (!d) abort();
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

int csi_offer(csi_queue *q, const xs_node *st, const char *xml, size_t len,
              csi_emit emit, void *ud)
{
    const char *from = xs_attr_get(st, "from");
    /* A <received/> carbon comes from the user's own bare JID: key it by
     * the contact who wrote, so two contacts' chat states do not collapse. */
    xs_node *rc = xs_child(st, NS_CARBONS, "received");
    xs_node *fw = rc ? xs_child(rc, NS_FORWARD, "forwarded") : NULL;
    xs_node *inner = fw ? xs_child(fw, NULL, "message") : NULL;
    if (inner && xs_attr_get(inner, "from")) from = xs_attr_get(inner, "from");
    char bare[JID_MAX + 1];
    if (!from) from = "";
    if (!jid_bare_str(from, bare, sizeof(bare))) snprintf(bare, sizeof(bare), "%s", from);

    csi_kind k = csi_classify(st);
    if (k == CSI_IMPORTANT) {
        emit_matching(q, bare, emit, ud);       /* keep the conversation's order */
        return 0;
    }
    if (k == CSI_PRESENCE || k == CSI_CHATSTATE) {
        for (held *prev = NULL, *h = q->head; h; prev = h, h = h->next)
            if (h->kind == k && strcmp(h->from, from) == 0) {
                held_free(unlink_after(q, prev));
                break;
            }
    }
    if (q->n >= q->max) emit_matching(q, NULL, emit, ud);
    held *h = calloc(1, sizeof(*h));
    if (!h) abort();
    h->kind = k;
    h->from = dup_n(from, strlen(from));
    h->bare = dup_n(bare, strlen(bare));
    h->xml = dup_n(xml, len);
    h->len = len;
    if (q->tail) q->tail->next = h;
    else q->head = h;
    q->tail = h;
    q->n++;
    return 1;
}
