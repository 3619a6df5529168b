/*
 * ws: XMPP over WebSocket (RFC 7395), the transport a browser reaches
 * through httpd's proxy (mod_proxy_wstunnel / mod_proxy_http
 * upgrade=websocket) at e.g. /xmpp-websocket.
 *
 * Connection handling (buffers, read budget, sign-in admission, auth
 * timeout, idle ping, lingering close, descriptor exhaustion) is the
 * native transport's, in c2s_native.c: a WebSocket connection is a native
 * connection whose bytes are framed (common/websocket.c) and whose stream
 * is RFC 7395's <open/>/<close/> instead of <stream:stream>. So every
 * protection of port 5222 holds here by construction, and both drive the
 * same session (c2s.c). This file holds what is WebSocket's own: who may
 * connect and what the handshake proves (policy), and the RFC 7395 shape
 * of what is sent.
 */
#ifndef CHATD_WS_H
#define CHATD_WS_H

#include <stddef.h>
#include "chatd.h"
#include "../../common/strbuf.h"
#include "../../common/websocket.h"

#define WS_FRAMING_NS "urn:ietf:params:xml:ns:xmpp-framing"

/* What an accepted handshake tells the session. */
typedef struct ws_verdict {
    int  status;            /* 0: accept; else the HTTP status to refuse with */
    const char *why;        /* refusal reason */
    int  secure;            /* the browser's connection was https: PLAIN may be offered */
    char client_addr[46];   /* (INET6_ADDRSTRLEN) the browser's address (per-address limits, logs) */
} ws_verdict;

/* Decide on a parsed handshake. peer_trusted: the peer is httpd (a unix
 * peer that passed the relay_peer_user check, or a ws_trusted_proxy
 * address), so its X-Forwarded-* headers are believed; peer_addr: the
 * socket peer's address (used when nothing trusted says otherwise). */
void ws_decide(const chatd_config *cfg, const ws_handshake *h, int peer_trusted,
               const char *peer_addr, ws_verdict *v);

/* Is addr (numeric IPv4/IPv6) one of cfg.ws_trusted_proxy? */
int  ws_proxy_trusted(const chatd_config *cfg, const char *addr);

/* One serialized top-level element as an RFC 7395 text message: each
 * message must stand alone, so an element that relied on the stream's
 * default namespace (jabber:client) or on its stream: prefix gets the
 * declaration written into its own start tag. */
void ws_put_element(strbuf *out, const char *xml, size_t len);
/* <open/> (the server's stream header) and the end of the stream: an
 * optional <stream:error/>, then <close/>, each its own message. */
void ws_put_open(strbuf *out, const char *domain, const char *id);
void ws_put_close(strbuf *out, const char *condition, const char *text);

#endif
