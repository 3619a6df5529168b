/*
 * chatd: the daemon's shared context. One instance, owned by main.c.
 * Subsystems are opaque here; each has its own header.
 */
#ifndef CHATD_CHATD_H
#define CHATD_CHATD_H

#include <stdint.h>
#include "config.h"
#include "loop.h"
#include "redis_async.h"

struct router;          /* router.h: jid -> sessions, delivery */
struct muc_service;     /* muc.h: rooms at muc_domain */
struct mam_service;     /* mam.h: XEP-0313 archives */
struct relay_server;    /* relay_server.h: connections from mod_bosh */
struct bosh_mgr;        /* bosh.h: BOSH sessions */
struct c2s_listener;    /* c2s_native.h: port 5222 */
struct tls_ctx;         /* tls.h */
struct admin_server;    /* admin.h: chatctl's control socket */
struct addr_count;      /* addr_count.h: live sessions per client address */
struct auth_guard;      /* auth_guard.h: failed sign-ins per account / address */
struct pw_pool;         /* pw_pool.h: password hashing threads */
struct cluster;         /* cluster.h: other nodes, through Redis (issue 16) */

typedef struct chatd_stats {
    uint64_t c2s_sessions, bosh_sessions;        /* current */
    uint64_t stanzas_in, stanzas_out;            /* totals */
    uint64_t auth_ok, auth_fail;
    uint64_t relay_conns, relay_requests;
    uint64_t relay_overflows;   /* relay conns closed over cfg.relay_max_output */
    uint64_t relay_refused;     /* relay peers refused: uid or secret (issue 13) */
    /* native sign-in admission (c2s_native.c) and the max_sessions cap */
    uint64_t signin_refused, signin_unavailable, sessions_refused;
    /* cfg.max_sessions_per_addr (admin.h chatd_addr_slot_take) */
    uint64_t addr_refused;
    /* issue 14: flood control (c2s.c), native liveness and accept pauses
     * (c2s_native.c), BOSH ack buffer (bosh.c) */
    uint64_t stanzas_refused, flood_closed;
    uint64_t auth_timeouts, ping_timeouts, accept_paused;
    uint64_t bosh_ack_overflows;
    /* password sign-ins (issue 13): PBKDF2 runs on the hash threads, attempts
     * refused by the failure throttle, checks refused with a full queue */
    uint64_t pbkdf2_runs, auth_throttled, auth_overloaded;
    /* issue 16 (cluster.c): frames published / received, publishes that
     * reached no node (their stanzas went to offline storage or bounced) */
    uint64_t cluster_out, cluster_in, cluster_unreached;
    /* XEP-0198 (c2s.c): sessions waiting for a resume now; resumed, not
     * resumed in time, ended over the unacked bound (totals) */
    uint64_t sm_detached, sm_resumed, sm_expired, sm_overflows;
} chatd_stats;

typedef struct chatd {
    chatd_config          cfg;
    loop                 *loop;
    redis_async          *redis;
    struct router        *router;
    struct muc_service   *muc;
    struct mam_service   *mam;
    struct relay_server  *relay;
    struct bosh_mgr      *bosh;
    struct c2s_listener  *c2s;
    struct c2s_listener  *ws;           /* RFC 7395 WebSocket listener (ws.h) */
    struct tls_ctx       *tls;
    chatd_stats           stats;
    int                   stopping;     /* SIGTERM received */
    struct admin_server  *admin;
    struct addr_count    *addr_sessions;  /* NULL until the first counted session */
    struct auth_guard    *auth_guard;     /* users_init */
    struct pw_pool       *pw_pool;        /* users_init */
    struct cluster       *cluster;        /* NULL unless cfg.cluster */
    struct c2s           *sm_sessions;    /* c2s.c: sessions a client may resume (XEP-0198) */
} chatd;

#endif
