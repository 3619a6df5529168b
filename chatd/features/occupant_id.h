/*
 * occupant_id: XEP-0421 anonymous unique occupant identifiers, no I/O.
 *
 * A room stamps <occupant-id xmlns='urn:xmpp:occupant-id:0' id='...'/> on
 * every presence and groupchat message from an occupant, so clients can
 * tell that two nicks (or a rejoin) are the same person without learning
 * the real JID. The id is HMAC-SHA256(key, room JID NUL bare real JID) in
 * base64url without padding: stable for a user within a room, different
 * between rooms, and nobody without the key can compute or forge one.
 * muc.c does the stanzas; tests/unit/test_occupant_id.c drives this file.
 */
#ifndef CHATD_OCCUPANT_ID_H
#define CHATD_OCCUPANT_ID_H

#include "../../common/xml_stream.h"

#define NS_OCCUPANT_ID  "urn:xmpp:occupant-id:0"
#define OCCUPANT_ID_KEY 32
#define OCCUPANT_ID_LEN 43            /* base64url of 32 bytes, unpadded */

/* The key: derived from the server secret (auth_secret: stable across
 * restarts and nodes) or, when there is none (NULL or ""), random. 0 or -1. */
int  occupant_id_key(const char *server_secret, unsigned char key[OCCUPANT_ID_KEY]);

/* out gets OCCUPANT_ID_LEN characters and a NUL. */
void occupant_id_make(const unsigned char key[OCCUPANT_ID_KEY], const char *room,
                      const char *bare, char out[OCCUPANT_ID_LEN + 1]);

/* Remove every <occupant-id/> child of st (what a client sent is never
 * passed on: only the room's own id may appear). */
void occupant_id_strip(xs_node *st);

/* Strip, then add the room's <occupant-id/> for bare to st. */
void occupant_id_stamp(xs_node *st, const unsigned char key[OCCUPANT_ID_KEY],
                       const char *room, const char *bare);

#endif
