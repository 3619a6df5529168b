/*
 * test_csi: XEP-0352 importance rule and hold queue (chatd/features/csi.c): what
 * an inactive client gets at once, what waits, latest-per-sender for
 * presence and chat states, per-sender order, the bound.
 */
#include "unit.h"
#include "../../chatd/features/csi.h"
#include "../../common/strbuf.h"

static xs_node *parse(const char *xml)
{
    xs_node *n = NULL;
    char err[128];
    if (xs_parse_document(xml, strlen(xml), 65536, &n, err, sizeof(err)) != XS_OK) {
        fprintf(stderr, "parse: %s: %s\n", err, xml);
        return NULL;
    }
    return n;
}

static csi_kind kind(const char *xml)
{
    xs_node *n = parse(xml);
    csi_kind k = csi_classify(n);
    xs_free(n);
    return k;
}

#define C "xmlns='jabber:client'"

static void test_classify(void)
{
    CHECK(kind("<presence " C " from='b@d/x'/>") == CSI_PRESENCE);
    CHECK(kind("<presence " C " from='b@d/x' type='unavailable'/>") == CSI_PRESENCE);
    CHECK(kind("<presence " C " from='b@d' type='subscribe'/>") == CSI_IMPORTANT);
    CHECK(kind("<presence " C " from='b@d' type='error'/>") == CSI_IMPORTANT);
    /* occupant presence from the MUC fan-out: bytes without xmlns */
    CHECK(kind("<presence from='r@m/n'><x xmlns='http://jabber.org/protocol/muc#user'>"
               "<item affiliation='none' role='participant'/></x></presence>") == CSI_PRESENCE);
    CHECK(kind("<presence from='r@m/me'><x xmlns='http://jabber.org/protocol/muc#user'>"
               "<status code='110'/></x></presence>") == CSI_IMPORTANT);
    CHECK(kind("<message " C " type='chat'><body>hi</body></message>") == CSI_IMPORTANT);
    CHECK(kind("<message type='groupchat'><body>room</body></message>") == CSI_IMPORTANT);
    CHECK(kind("<message " C " type='groupchat'><subject>t</subject></message>") == CSI_IMPORTANT);
    CHECK(kind("<message " C " type='error'/>") == CSI_IMPORTANT);
    CHECK(kind("<message " C " type='headline'><body>news</body></message>") == CSI_OTHER);
    CHECK(kind("<message " C " type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
          == CSI_CHATSTATE);
    CHECK(kind("<message " C "><received xmlns='urn:xmpp:receipts' id='1'/></message>") == CSI_OTHER);
    CHECK(kind("<message " C "><x xmlns='jabber:x:conference' jid='r@m'/></message>") == CSI_IMPORTANT);
    CHECK(kind("<message " C "><x xmlns='http://jabber.org/protocol/muc#user'><invite from='a@d'/></x></message>")
          == CSI_IMPORTANT);
    /* carbons: sent always matters; received as what it carries */
    CHECK(kind("<message " C "><sent xmlns='urn:xmpp:carbons:2'/></message>") == CSI_IMPORTANT);
    CHECK(kind("<message " C "><received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>"
               "<message " C " type='chat'><body>x</body></message></forwarded></received></message>")
          == CSI_IMPORTANT);
    CHECK(kind("<message " C "><received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>"
               "<message " C " type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/></message>"
               "</forwarded></received></message>") == CSI_CHATSTATE);
    CHECK(kind("<iq " C " type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>") == CSI_IMPORTANT);
}

static strbuf out;
static int emitted;

static void emit(void *ud, const char *xml, size_t len)
{
    (void)ud;
    sb_append(&out, xml, len);
    sb_putc(&out, '|');
    emitted++;
}

/* Offer xml; append "NOW:xml|" when the caller must deliver it. */
static int offer(csi_queue *q, const char *xml)
{
    xs_node *n = parse(xml);
    int held = csi_offer(q, n, xml, strlen(xml), emit, NULL);
    if (!held) { sb_puts(&out, "NOW:"); sb_puts(&out, xml); sb_putc(&out, '|'); }
    xs_free(n);
    return held;
}

static const char *got(void)
{
    sb_putc(&out, '\0');
    out.len--;
    return out.data;
}

static void test_queue(void)
{
    csi_queue *q = csi_queue_new(CSI_QUEUE_MAX);
    /* presence churn from two contacts: only the latest of each is kept */
    CHECK(offer(q, "<presence " C " from='b@d/x'><show>away</show></presence>"));
    CHECK(offer(q, "<presence " C " from='c@d/y'/>"));
    CHECK(offer(q, "<presence " C " from='b@d/x'><show>xa</show></presence>"));
    CHECK(offer(q, "<presence " C " from='b@d/x'/>"));
    CHECK(offer(q, "<message " C " from='c@d/y' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>"));
    CHECK(offer(q, "<message " C " from='c@d/y' type='chat'><paused xmlns='http://jabber.org/protocol/chatstates'/></message>"));
    CHECK(csi_queue_len(q) == 3);
    CHECK(emitted == 0);
    /* a message with body from c goes now, after what c had waiting */
    CHECK(!offer(q, "<message " C " from='c@d/y' type='chat'><body>hi</body></message>"));
    CHECK_STR(got(), "<presence xmlns='jabber:client' from='c@d/y'/>|"
                     "<message xmlns='jabber:client' from='c@d/y' type='chat'><paused xmlns='http://jabber.org/protocol/chatstates'/></message>|"
                     "NOW:<message xmlns='jabber:client' from='c@d/y' type='chat'><body>hi</body></message>|");
    CHECK(csi_queue_len(q) == 1);       /* b's presence still waits */
    sb_reset(&out);
    csi_flush(q, emit, NULL);
    CHECK_STR(got(), "<presence xmlns='jabber:client' from='b@d/x'/>|");
    CHECK(csi_queue_len(q) == 0);
    csi_queue_free(q);

    /* chat-state carbons of two contacts are kept apart (keyed by the writer) */
    sb_reset(&out);
    q = csi_queue_new(CSI_QUEUE_MAX);
#define CARBON(who, state) "<message " C " from='me@d' type='chat'><received xmlns='urn:xmpp:carbons:2'>" \
    "<forwarded xmlns='urn:xmpp:forward:0'><message " C " from='" who "' type='chat'><" state \
    " xmlns='http://jabber.org/protocol/chatstates'/></message></forwarded></received></message>"
    CHECK(offer(q, CARBON("x@d/1", "composing")));
    CHECK(offer(q, CARBON("y@d/1", "composing")));
    CHECK(offer(q, CARBON("x@d/1", "paused")));
    CHECK(csi_queue_len(q) == 2);
    csi_queue_free(q);

    /* bounded: a full queue goes out whole, then holds again */
    sb_reset(&out);
    emitted = 0;
    q = csi_queue_new(4);
    char xml[128];
    for (int i = 0; i < 5; i++) {
        snprintf(xml, sizeof(xml), "<presence " C " from='u%d@d/r'/>", i);
        CHECK(offer(q, xml));
    }
    CHECK(emitted == 4);
    CHECK(csi_queue_len(q) == 1);
    csi_queue_free(q);              /* frees what is held */
    sb_free(&out);
}

int main(void)
{
    test_classify();
    test_queue();
    return unit_done("csi");
}
