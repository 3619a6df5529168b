/*
 * pep: XEP-0163 Personal Eventing Protocol, the pubsub service on every
 * account's bare JID: publish (with XEP-0060 publish-options), retract,
 * items, owner configure; events to the owner's resources and to contacts
 * with a presence subscription ('from'/'both') whose clients asked for
 * the node with "<node>+notify" (caps.c). Carries XEP-0402 bookmarks
 * (whitelist: the owner only) and XEP-0084 avatars (presence: contacts).
 *
 * Storage (Redis, not the chat path): chat:pep:<local> hash node -> its
 * configuration (pep_rules.h), chat:pep-items:<local>:<node> hash id ->
 * item, chat:pep-order:<local>:<node> list of ids newest first,
 * chat:pep-use:<local> bytes stored. Each operation is one Lua script, so
 * the limits (pep_max_nodes, pep_max_items, pep_max_item_bytes,
 * pep_max_bytes) and a publish-options precondition are checked and the
 * write done atomically. Events go through the router's session interface.
 */
#ifndef CHATD_PEP_H
#define CHATD_PEP_H

#include "chatd.h"
#include "pep_rules.h"
#include "../router/iq_dispatch.h"

/* iq table rows: NS_PUBSUB (own account: publish, retract, items; another
 * account: items, by access model) and NS_PUBSUB_OWNER (configure). */
int  pep_iq(const iq_request *req);
int  pep_owner_iq(const iq_request *req);

/* Events for `items` (an <items/> in NS_PUBSUB_EVENT) of local's node:
 * to the owner's interested sessions, and unless access is whitelist to
 * its subscribed contacts' (private_storage.c's XEP-0402 compat). */
void pep_notify(chatd *d, const char *local, const char *node, int access,
                const xs_node *items);

/* An account's disco#info: identity pubsub/pep and the PEP features. */
void pep_disco_account(xs_node *query);

/* rs's +notify list became known (caps.c): send it the last item of each
 * node it wants, of its own account and of its contacts (XEP-0163 §6.2). */
void pep_interest(chatd *d, struct rsession *rs);
/* owner approved contact's subscription: contact's interested sessions
 * get owner's last items (XEP-0163 §6.2, "on_sub"). */
void pep_subscribed(chatd *d, struct ruser *owner, const char *contact_bare);

#endif
