/*
 * relay_server: chatd's side of the relay (common/RELAY.md).
 *
 * Accepts connections from httpd children (Unix socket or TCP), decodes
 * frames, and hands each REQUEST to the BOSH layer as a relay_req. The
 * BOSH layer answers every relay_req exactly once with relay_req_answer,
 * immediately or later (a held request). If the connection dies or the
 * child sends DRAIN, the relay server calls the request's on_release hook:
 * the holder must answer it right away (after conn loss the answer is
 * dropped, but the BOSH layer has buffered it for retransmission by rid).
 */
#ifndef CHATD_RELAY_SERVER_H
#define CHATD_RELAY_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include "chatd.h"

typedef struct relay_conn relay_conn;
typedef struct relay_req relay_req;

struct relay_req {
    /* Read-only for the handler; valid until answered. */
    relay_conn *conn;
    uint32_t    id;
    const char *body;  size_t body_len;     /* raw <body/> (validated by mod_bosh) */
    const char *client_addr;                 /* may be "" */
    const char *auth_user;                   /* NULL unless httpd vouched */
    const char *display_name;                /* NULL, or the auth module's name for auth_user */
    int         prebind;                     /* RT_PREBIND: sign in + bind server-side */
    int         secure;                      /* request came over HTTPS */
    int         confidential;                /* RT_CONFIDENTIAL or secure: may carry
                                                a password in clear (SASL PLAIN) */
    int         conn_alive;                  /* 0 after the relay conn died */
    /* Set by a handler that holds the request. */
    void      (*on_release)(relay_req *r, void *ud);
    void       *release_ud;
};

int   relay_server_start(chatd *d);          /* listen on cfg.relay_listen */
void  relay_server_stop(chatd *d);           /* close listener and connections */

/* The one way to answer. Frees r. status 200 normally; retry_after 0 = none. */
void  relay_req_answer(relay_req *r, int http_status, const char *content_type,
                       const char *body, size_t len, unsigned retry_after);

/* Entry point implemented by the BOSH layer (bosh.c). */
void  bosh_handle_request(chatd *d, relay_req *r);

#endif
