/*
 * csi: XEP-0352 Client State Indication. A phone whose app is in the
 * background says <inactive/>; until it says <active/> the server holds
 * back what the user does not need at once (presence churn, typing
 * notifications) so the radio can sleep, and delivers at once what
 * matters (messages with a body, errors, iqs, subscription requests).
 *
 * Pure: classification and the bounded queue know nothing of sessions;
 * the router (session_send) offers each stanza and says how held bytes
 * go out (an emit callback), so unit tests drive it with a fake.
 */
#ifndef CHATD_CSI_H
#define CHATD_CSI_H

#include <stddef.h>
#include "../../common/xml_stream.h"

#define NS_CSI "urn:xmpp:csi:0"
/* Held stanzas per inactive session; a full queue is flushed whole
 * (Prosody's csi_simple does the same), so nothing is ever dropped. */
#define CSI_QUEUE_MAX 256

typedef enum {
    CSI_IMPORTANT = 0,  /* deliver now */
    CSI_PRESENCE,       /* available/unavailable: only the latest per sender JID */
    CSI_CHATSTATE,      /* bodiless chat state: only the latest per sender JID */
    CSI_OTHER           /* other unimportant (headline, receipt): held in order */
} csi_kind;

/* What Prosody (mod_csi_simple) and ejabberd (mod_client_state) deem
 * important: iq, errors, presence subscriptions, our own MUC presence
 * (status 110), messages with body/subject/invite, <sent/> carbons and
 * <received/> carbons of important messages. Stanzas parsed from bytes
 * without xmlns (MUC fan-out) count as jabber:client. */
csi_kind csi_classify(const xs_node *st);

typedef struct csi_queue csi_queue;
typedef void (*csi_emit)(void *ud, const char *xml, size_t len);

csi_queue *csi_queue_new(size_t max);
void       csi_queue_free(csi_queue *q);
size_t     csi_queue_len(const csi_queue *q);

/* Offer one outbound stanza (st, serialized as xml/len). Returns 1 if it
 * was held. Returns 0 if the caller must deliver it now; before that,
 * everything held from the same sender (bare JID) was emitted, so a
 * conversation keeps its order (presence, then the message). A full queue
 * is emitted whole first. */
int        csi_offer(csi_queue *q, const xs_node *st, const char *xml, size_t len,
                     csi_emit emit, void *ud);
/* Emit everything held, in order (on <active/> and when the session ends). */
void       csi_flush(csi_queue *q, csi_emit emit, void *ud);

#endif
