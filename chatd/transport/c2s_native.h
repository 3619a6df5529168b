/*
 * c2s_native: the native XMPP transport (RFC 6120 over TCP, port 5222).
 *
 * Accepts client sockets on cfg.c2s_listen ("host:port", or "off"), runs
 * one xs_parser per connection, feeds a c2s session and implements its
 * c2s_transport (stream header, bounded output, stream errors, STARTTLS).
 */
#ifndef CHATD_C2S_NATIVE_H
#define CHATD_C2S_NATIVE_H

#include "chatd.h"

int  c2s_native_start(chatd *d);
/* The RFC 7395 WebSocket listener on cfg.ws_listen (none when off); its
 * connections are handled here too (ws.h says why). */
int  c2s_ws_start(chatd *d);
/* Close the listeners (native and WebSocket) and every connection, with stream error condition
 * (NULL: a normal </stream:stream>); flushes briefly, then frees all. */
void c2s_native_stop(chatd *d, const char *condition);

#endif
