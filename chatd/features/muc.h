/*
 * muc: multi-user chat rooms (XEP-0045) at cfg.muc_domain.
 *
 * The router hands muc_route every stanza addressed to the MUC service,
 * a room (room@muc) or an occupant (room@muc/nick). Rooms live in memory;
 * persistent room configuration and the last messages are kept in Redis
 * (chat:room:<room>, chat:history:<room>) and read back when a room is
 * re-created after a restart. Groupchat fan-out is serialized once.
 */
#ifndef CHATD_MUC_H
#define CHATD_MUC_H

#include "chatd.h"
#include "c2s.h"
#include "../../common/xml_stream.h"

int   muc_init(chatd *d);
void  muc_free(chatd *d);
/* origin: the sending session (NULL for server-generated stanzas).
 * Does not take ownership of stanza. */
void  muc_route(chatd *d, c2s *origin, xs_node *stanza);
/* The same for a stanza another node's session sent (issue 16: this node
 * owns the room; 'from' was stamped by the sender's node). */
void  muc_route_remote(chatd *d, xs_node *stanza);
/* A session ended: it leaves every room it was in. */
void  muc_session_gone(chatd *d, const char *full_jid);

/* Write every room's history entries not yet in Redis now (SIGTERM), and
 * how many such writes still await Redis's answer. */
void     muc_flush_history(chatd *d);
unsigned muc_history_writes_pending(const chatd *d);

/* Admin socket: every room in memory, and destroying one (occupants get
 * unavailable presence with <destroy/>, XEP-0045 10.9; its Redis config
 * and history go). muc_admin_destroy returns 0, or -1 if no such room. */
void  muc_foreach_room(chatd *d, void (*fn)(const char *room_jid, size_t occupants,
                                            int persistent, void *ud), void *ud);
int   muc_admin_destroy(chatd *d, const char *room_jid, const char *reason);

#endif
