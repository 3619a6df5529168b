/*
 * caps: XEP-0115 Entity Capabilities, to learn which PEP nodes a client
 * wants notifications for ("<node>+notify" features, XEP-0163 §4.4).
 *
 * A client's available presence carries <c node ver hash/>. chatd asks
 * that client's disco#info for node#ver once (iq_await), keeps the +notify
 * features of the answer per session, and caches them by ver for every
 * later client announcing the same ver, but only when the answer hashes to
 * ver (XEP-0115 §5.4): a client that lies about its hash affects only its
 * own session. The cache is in memory, bounded (CAPS_CACHE_MAX).
 */
#ifndef CHATD_CAPS_H
#define CHATD_CAPS_H

#include <stddef.h>
#include "chatd.h"
#include "../../common/xml_stream.h"

#define NS_CAPS "http://jabber.org/protocol/caps"

struct rsession;

/* Pure: XEP-0115 §5.1 verification string of a disco#info <query/>
 * hashed with SHA-1, base64, into out (at least 29 bytes). 0 or -1. */
int  caps_ver_compute(const xs_node *query, char *out, size_t outlen);

/* Pure: the "\n<node>\n<node>\n" list of the +notify features of a
 * disco#info <query/> (malloc'd; "\n" when none). */
char *caps_notify_list(const xs_node *query);

/* An available presence from rs (after it was broadcast). */
void caps_presence(chatd *d, struct rsession *rs, const xs_node *pres);
/* Does rs want notifications for node? */
int  caps_wants(const struct rsession *rs, const char *node);
void caps_session_free(struct rsession *rs);

#endif
