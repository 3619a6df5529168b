/*
 * c2s: one XMPP client session, whatever carries it.
 *
 * Why this interface: the router, presence, rosters and rooms must not know
 * whether a user is on a native socket (c2s_native.c) or a relayed BOSH
 * session (bosh.c). Both transports implement c2s_transport and feed the
 * session the same events; there is one implementation of stanza handling.
 *
 * Lifetime: the transport owns the session. It creates it with c2s_new and
 * destroys it with c2s_free (which sends unavailable presence, leaves rooms,
 * and unregisters from the router). When the session itself decides to end
 * the stream it calls ops->close; the transport then calls c2s_free once it
 * has flushed what it must (never from inside ops->close).
 *
 * XEP-0198 resumption: c2s_free on a session that enabled resumable stream
 * management and lost its connection (no </stream:stream>, no kick, no
 * policy close) does not end it: the session stays bound, detached from
 * any transport, for the granted time (cfg.sm_resume_timeout), still
 * counted against max_sessions and max_sessions_per_addr, queueing what is
 * sent to it. A new stream of the same account that sends <resume/> takes
 * it over; otherwise it ends as c2s_free would have ended it, and its
 * unacknowledged messages are routed again (another resource, or offline
 * storage). The transport never sees the difference.
 */
#ifndef CHATD_C2S_H
#define CHATD_C2S_H

#include <stddef.h>
#include "chatd.h"
#include "../../common/xml_stream.h"

typedef struct c2s c2s;

typedef struct c2s_transport {
    const char *kind;   /* "c2s" or "bosh": logs and stats */
    /* A new stream begins (first, and after each restart). Native writes
     * the <stream:stream> header with this id; BOSH writes nothing. */
    void (*stream_open)(void *t, const char *stream_id);
    /* One top-level element, serialized (stream:features, SASL, stanzas). */
    void (*send)(void *t, const char *xml, size_t len);
    /* End the stream. condition NULL: normal close (</stream:stream>);
     * otherwise an RFC 6120 stream error condition (e.g. "not-well-formed",
     * "policy-violation", "system-shutdown") with optional text. */
    void (*close)(void *t, const char *condition, const char *text);
    /* Optional (NULL when the transport cannot do TLS): the session has
     * queued <proceed/> with send(); the transport flushes it, then runs
     * the TLS handshake, resets its parser and later calls
     * c2s_set_secure(s, 1). Returns 0, or -1 if TLS is unavailable. */
    int  (*starttls)(void *t);
    /* Optional (NULL ok; BOSH restarts with xmpp:restart instead): SASL
     * succeeded and <success/> was just queued with send(). The client's
     * next bytes open a new stream, so the transport's parser must expect
     * a fresh header: native calls xs_parser_reset() here (allowed from
     * inside a parser callback) and then sees c2s_stream_start again. */
    void (*stream_restart)(void *t);
    /* 1: offer XEP-0198 Stream Management (acks, resumption) on this
     * transport. Native sets it; BOSH does not (its rid/ack already
     * recovers lost responses, and stock clients do not use SM over BOSH:
     * docs/conformance.md). */
    int stream_management;
} c2s_transport;

/* secure: the transport is encrypted (TLS) or trusted for PLAIN (BOSH from
 * httpd). peer: client address for logs. */
c2s  *c2s_new(chatd *d, const c2s_transport *ops, void *t, int secure,
              const char *peer);
void  c2s_free(c2s *s);
/* Transport learned it is now encrypted (after STARTTLS), or (BOSH) whether
 * the current request may carry a password in clear (RT_CONFIDENTIAL). */
void  c2s_set_secure(c2s *s, int secure);
/* Client address for the failure throttle (auth_guard.h); by default the
 * peer string given to c2s_new. Native sets the host without the port. */
void  c2s_set_client_addr(c2s *s, const char *addr);
/* The peer string for logs and chatctl, once the transport knows better
 * (WebSocket: the browser's address httpd forwarded, not the socket's). */
void  c2s_set_peer(c2s *s, const char *peer);
/* Identity vouched for by the transport (BOSH: httpd's authenticated user,
 * issue 8); enables SASL EXTERNAL for exactly that user. NULL clears. */
void  c2s_set_vouched_user(c2s *s, const char *user);
/* Display name the auth module gave for the vouched user (NULL ok): stored
 * on the account when EXTERNAL signs in (users_sasl_new_external). */
void  c2s_set_vouched_name(c2s *s, const char *name);

/* Events from the transport. */
void  c2s_stream_start(c2s *s, const char *to, const char *version,
                       const char *lang);
void  c2s_stanza(c2s *s, xs_node *stanza);   /* takes ownership */
void  c2s_stream_end(c2s *s);                /* client closed its stream */

/* Delivery from the router/rooms: serialize and hand to the transport. */
void  c2s_deliver(c2s *s, const xs_node *stanza);
/* Serialized form, for fan-out without re-serializing per recipient. */
void  c2s_deliver_raw(c2s *s, const char *xml, size_t len);

/* End the session's stream from the server side (kick, conflict,
 * shutdown): calls ops->close with the condition (NULL = normal). */
void  c2s_close(c2s *s, const char *condition, const char *text);

/* End every session waiting for a resumption (shutdown: while Redis is
 * still up to take their unacknowledged messages). */
void  c2s_sm_end_all(chatd *d);

/* Initialise/free the XMPP side (users, router, rooms): main.c calls these. */
int   xmpp_init(chatd *d);
void  xmpp_free(chatd *d);

/* One pointer of per-session state owned by the router (router.c). */
void **c2s_router_slot(c2s *s);

const char *c2s_jid(const c2s *s);   /* full JID once bound, else NULL */
int   c2s_is_bound(const c2s *s);
/* XEP-0199 server-to-client ping (an iq get from the domain); the
 * transport uses it to tell a live client from a half-open socket. Any
 * input afterwards, the result or an error, proves the client alive.
 * Returns -1 (nothing sent) before a resource is bound. */
int   c2s_send_ping(c2s *s);
const char *c2s_stream_id(const c2s *s);
/* For the admin socket (chatctl sessions list). */
const char *c2s_kind(const c2s *s);  /* ops->kind: "c2s" or "bosh" */
const char *c2s_peer(const c2s *s);  /* client address as given to c2s_new */

#endif
