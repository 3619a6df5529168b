/*
 * private_storage: XEP-0049 Private XML Storage, and through it the
 * XEP-0402 §5.2 compatibility with XEP-0048 bookmarks: a client that reads
 * or writes <storage xmlns='storage:bookmarks'/> in private storage reads
 * or writes the account's urn:xmpp:bookmarks:1 PEP node (one item per room,
 * whitelist), so old and new clients see the same bookmarks. chatd then
 * advertises urn:xmpp:bookmarks:1#compat, which is what makes Converse.js
 * use XEP-0402.
 *
 * Other namespaces are kept verbatim in Redis hash chat:private:<local>
 * ("<ns> <element>" -> XML), at most pep_max_nodes of them, each at most
 * pep_max_item_bytes.
 */
#ifndef CHATD_PRIVATE_STORAGE_H
#define CHATD_PRIVATE_STORAGE_H

#include "../router/iq_dispatch.h"

#define NS_PRIVATE        "jabber:iq:private"
#define NS_BOOKMARKS_OLD  "storage:bookmarks"
#define NS_BOOKMARKS2     "urn:xmpp:bookmarks:1"

/* iq table row (own account). */
int private_iq(const iq_request *req);

/* Pure (unit tested): XEP-0402 §5.3 conversions. An old <conference/>
 * (storage:bookmarks) to a new one (its jid is the item id, returned in
 * *id, malloc'd), NULL if it has no jid; and back, for item id. */
xs_node *bookmark_to_native(const xs_node *old_conf, char **id);
xs_node *bookmark_to_legacy(const char *id, const xs_node *native_conf);

#endif
