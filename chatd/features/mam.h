/*
 * mam: XEP-0313 Message Archive Management for 1:1 chats (each account's
 * archive) and rooms (each room's archive), kept in Redis streams
 * (chat:mam:<bare JID>), with XEP-0359 stanza-ids.
 *
 * No Redis command on the path of a message: the router and muc.c hand
 * each archivable message here, which stamps its stanza-id and appends it
 * to the archive's in-memory outbox (muc_outbox.c, bounded); a timer
 * writes each outbox in one EVAL a second, retried with back-off. Queries
 * are iqs, answered asynchronously from Redis; a query carries the
 * archive's unwritten entries and writes them first (idempotently, ids
 * already in the stream are skipped), so it sees a message sent just
 * before it.
 */
#ifndef CHATD_MAM_H
#define CHATD_MAM_H

#include "chatd.h"
#include "iq_dispatch.h"
#include "mam_query.h"

int      mam_init(chatd *d);
void     mam_free(chatd *d);

/* A message a local session (from_full) sent to the local account `to`,
 * after the blocking checks. Archived (chat or normal with a <body/>):
 * returns a copy stamped with <stanza-id by=recipient's bare JID/> to
 * deliver instead of st. Not archived: NULL. */
xs_node *mam_archive_chat(chatd *d, const char *from_full, const char *to_bare,
                          const xs_node *st);

/* A groupchat message with a body, before fan-out: stamps
 * <stanza-id by=room/> on out and archives it in the room's archive. */
void     mam_archive_room(chatd *d, const char *room_jid, const char *nick_jid,
                          xs_node *out);

/* A client may not forge our stanza-ids (XEP-0359 §4): drop those in
 * st claiming to be by a local account or a room. */
void     mam_strip_stanza_ids(chatd *d, xs_node *st);

/* iq table row: <query/> and <prefs/> at the sender's own bare JID. */
int      mam_iq(const iq_request *req);

/* muc.c: an iq with a urn:xmpp:mam:2 payload at a room, which already
 * decided that its sender may read the room's archive. */
void     mam_room_iq(chatd *d, const char *room_jid, const xs_node *st);

/* muc.c: a room destroyed for good takes its archive with it. */
void     mam_room_forget(chatd *d, const char *room_jid);

/* SIGTERM: write every outbox now; how many writes await Redis. */
void     mam_flush_all(chatd *d);
unsigned mam_writes_pending(const chatd *d);

#endif
