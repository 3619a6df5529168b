/*
 * carbons: XEP-0280 Message Carbons, so every device of a user sees the
 * whole 1:1 conversation, not just the one the message was routed to.
 *
 * In memory only (rsession->carbons): no Redis on the path of a message.
 * Copies go out through the router's session interface (session_send).
 */
#ifndef CHATD_CARBONS_H
#define CHATD_CARBONS_H

#include "chatd.h"
#include "../../common/xml_stream.h"

#define NS_CARBONS "urn:xmpp:carbons:2"
#define NS_FORWARD "urn:xmpp:forward:0"

struct rsession;
struct ruser;

/* Pure: 1 if msg may be copied (XEP-0280 §6): type chat, or normal with
 * a <body/>; never groupchat/headline/error, never with <private/> or a
 * <no-copy/> hint, never a carbon itself, never a MUC private message
 * (<x xmlns='...muc#user'/>: the other devices are not in the room). */
int      carbons_eligible(const xs_node *msg);

/* Pure: the wrapper <message from=bare to=to type=msg's><dir><forwarded>
 * msg</forwarded></dir></message>, dir "received" or "sent". Caller frees. */
xs_node *carbons_wrap(const char *bare, const char *to, const char *dir,
                      const xs_node *msg);

/* An iq set <enable/>/<disable/> from rs to its own account (or the
 * server): switch carbons for that session and answer. 0 if it was one. */
int      carbons_iq(chatd *d, struct rsession *rs, const xs_node *st);

/* msg was just delivered to `to` (a session of u): copy it as <received/>
 * to u's other carbons-enabled sessions. */
void     carbons_received(struct ruser *u, struct rsession *to, const xs_node *msg);

/* origin sent msg (addressed to its 'to'): copy it as <sent/> to the
 * user's other carbons-enabled sessions. */
void     carbons_sent(struct rsession *origin, const xs_node *msg);

#endif
