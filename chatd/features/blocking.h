/*
 * blocking: XEP-0191 Blocking Command. A user blocks a JID: nothing from
 * it reaches any of the user's devices, nothing the user sends reaches
 * it, and it sees the user go unavailable.
 *
 * The list is Redis set chat:blocklist:<localpart>, loaded when the
 * account's first session binds and kept in memory while it is online, so
 * no Redis command runs on the path of a message. Fail closed: while the
 * list is not known (loading, or the load failed), stanzas to that user
 * from other accounts are refused ('wait') and blocklist iqs answered
 * 'wait'; the next bind or blocklist iq loads again.
 */
#ifndef CHATD_BLOCKING_H
#define CHATD_BLOCKING_H

#include "chatd.h"
#include "jid.h"
#include "../../common/xml_stream.h"

#define NS_BLOCKING        "urn:xmpp:blocking"
#define NS_BLOCKING_ERRORS "urn:xmpp:blocking:errors"

struct ruser;
struct rsession;

/* Pure: does `addr` fall under blocklist item `item` (XEP-0191 §3.4 using
 * XEP-0016 JID matching: full JID, bare JID, domain/resource, domain)? */
int  blocking_item_matches(const char *item, const char *addr);
/* Pure: the (normalised) items that would match addr, so a stored list can
 * be asked with set membership alone (e.g. inside a Redis script): domain,
 * domain/resource, bare, full; "" where addr has no such form. Returns the
 * number filled (0 if addr is no JID). */
#define BLOCKING_CANDIDATES 4
int  blocking_candidates(const char *addr, char out[BLOCKING_CANDIDATES][JID_MAX + 1]);

/* A session of u bound: load u's list unless it is loaded or loading. */
void blocking_user_online(chatd *d, struct ruser *u);
void blocking_user_free(struct ruser *u);

/* An iq to the own account with a payload in NS_BLOCKING. 0 if handled. */
int  blocking_iq(chatd *d, struct rsession *rs, const xs_node *st);

/* Inbound: st (from another account) is for local user `local`. 1 if it
 * must not be delivered (it has been answered as XEP-0191 says). */
int  blocking_inbound(chatd *d, const char *local, const xs_node *st);
/* Does local's loaded list block addr? 0 when offline or not loaded (no
 * holding: for paths that cannot replay, e.g. subscriptions). */
int  blocking_blocks(chatd *d, const char *local, const char *addr);
/* A message for `local`, who has no available session, would go to
 * offline storage. Signed in (not available): stored at once (the loaded
 * list was asked by blocking_inbound). No session: check the stored list first (the offline path uses Redis
 * anyway), then store it, or bounce it (blocked: service-unavailable;
 * list unreadable: wait, fail closed). Does not take st. */
void blocking_offline_store(chatd *d, const char *local, const xs_node *st);
/* Outbound: rs sends st to `to`. 1 if refused (answered already). */
int  blocking_outbound(chatd *d, struct rsession *rs, const char *to, const xs_node *st);

#endif
