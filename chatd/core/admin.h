/*
 * admin: chatd's local control socket for chatctl, and the node's cap on
 * sessions (cfg.max_sessions).
 *
 * Why a socket: sessions and rooms live only in chatd's memory, so
 * `chatctl sessions|rooms|stats` must ask the running daemon. The socket
 * is a Unix socket (cfg.admin_socket, mode 0600: whoever can use it can
 * kick anyone), served on chatd's loop like every other socket.
 *
 * Protocol: one command per line; the answer is zero or more text lines,
 * then a final "ok" or "error: <why>" line. The connection stays open for
 * further commands until the client closes its side.
 *   stats               "key value" lines (sessions, stanzas, auth, relay...)
 *   sessions            "<full jid> <c2s|bosh> <peer>" per bound session
 *   kick JID            closes that session (bare JID: all of its sessions)
 *                       with stream error policy-violation
 *   rooms               "<room jid> <occupants> <persistent|temporary>"
 *   room-destroy ROOM   destroys the room (occupants told, Redis state gone)
 */
#ifndef CHATD_ADMIN_H
#define CHATD_ADMIN_H

#include <stddef.h>
#include "chatd.h"
#include "../../common/strbuf.h"

/* 1 when cfg.max_sessions (0 = unlimited) sessions, native and BOSH
 * together, already exist: a new session must be refused. Native streams
 * check it at stream open (c2s_native.c); BOSH at session creation. */
int  chatd_session_slots_full(chatd *d);

/* The per-address cap on live sessions, cfg.max_sessions_per_addr (0 = no
 * cap), counted per node (why per node: addr_count.h). Take a slot when a
 * session starts: 1 = taken (release it exactly once when the session
 * ends), 0 = not counted (no address or no cap: release nothing), -1 =
 * the address is at its cap (stats.addr_refused counted; refuse). */
int  chatd_addr_slot_take(chatd *d, const char *addr);
void chatd_addr_slot_release(chatd *d, const char *addr);
/* A session that outlives its connection (XEP-0198, waiting for a resume)
 * keeps the address's slot: counted without the cap check, because the
 * connection releases its own slot right after. 1 if counted (release it
 * later), 0 if addresses are not counted. */
int  chatd_addr_slot_keep(chatd *d, const char *addr);
/* At shutdown. */
void chatd_addr_slots_free(chatd *d);

/* Listen on cfg.admin_socket (NULL: nothing to do). Returns 0 or -1. */
int  admin_start(chatd *d);
void admin_stop(chatd *d);

/* Pure-ish: run one command line against d, appending the answer (its
 * lines and the final ok/error line) to out. For tests and the socket. */
void admin_execute(chatd *d, const char *line, strbuf *out);

#endif
