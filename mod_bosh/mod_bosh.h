/*
 * mod_bosh.h - shared types of the mod_bosh httpd module.
 *
 * Configuration is read per server; the per-child state (relay clients,
 * Redis pool, counters) exists once per child process and is built in
 * child_init from the main server's configuration.
 */
#ifndef MOD_BOSH_MOD_BOSH_H
#define MOD_BOSH_MOD_BOSH_H

#include "httpd.h"
#include "http_config.h"
#include "http_log.h"
#include "apr_tables.h"
#include "util_filter.h"

#include "bosh_route.h"
#include "redis_pool.h"
#include "relay_client.h"
#include "worker_budget.h"

/* mod_bosh.c gets this from AP_DECLARE_MODULE. */
#ifndef MOD_BOSH_DECLARES_MODULE
APLOG_USE_MODULE(bosh);
#endif
extern module AP_MODULE_DECLARE_DATA bosh_module;

#define BOSH_UNSET (-1)

typedef struct bosh_node_conf {
    const char   *id;
    const char   *url;
    bosh_endpoint ep;
} bosh_node_conf;

typedef struct bosh_server_conf {
    apr_array_header_t *nodes;          /* bosh_node_conf, main server only */
    apr_array_header_t *allow_origins;  /* const char * */
    apr_array_header_t *hostmeta_urls;  /* const char *, BoshHostMetaURL */
    const char *domain;
    const char *redis_url;
    redis_sentinels *redis_sentinels;   /* BoshRedisSentinel*; NULL: none */
    /* BoshRelaySecretFile: read as root at configuration time (main
     * server only); sent in HELLO to every chatd node. */
    const char *relay_secret_file;
    const char *relay_secret;           /* NULL: none */
    apr_size_t  relay_secret_len;
    int  max_body;
    int  max_wait;
    int  redis_max_per_child;
    int  redis_max_total;
    int  redis_acquire_ms;
    int  redis_idle_s;
    int  redis_connect_ms;
    int  redis_command_ms;
    int  redis_check_warn;              /* BoshRedisCheck warn */
    int  redis_reserve;                 /* BoshRedisReserve: chatd's pool + tools */
    int  signin;                        /* BoshSignin on|off */
    double signin_rate;                 /* BoshSigninRate (per s, 0 = no cap); <0 unset */
    int  signin_burst;
    int  signin_per_addr;               /* BoshSigninPerAddress (per minute) */
    int  relay_ping_s;                  /* BoshRelayPing (0 = off) */
    int  relay_ping_timeout_s;          /* BoshRelayPingTimeout */
    apr_array_header_t *trusted_proxies; /* apr_ipsubnet_t *, BoshTrustedProxy */
    int  max_held_share;                /* BoshMaxHeldShare, percent */
    int  max_sessions;                  /* BoshMaxSessions: start-up check only */
} bosh_server_conf;

/* Everything one child owns. One instance, created in child_init. */
typedef struct bosh_child {
    server_rec        *s;
    bosh_server_conf  *conf;            /* main server's */
    relay_client     **relays;          /* one per BoshChatd, same order */
    int                nrelays;
    redis_pool        *redis;           /* NULL without BoshRedis */
    apr_uint32_t       rr_cursor;       /* round robin for new sessions */
    apr_uint32_t       sessions_refused;/* 503 on creation */
    /* Why (each refusal counts in one of these and in sessions_refused):
     * gate = closed by chatctl or BoshSignin off; rate = BoshSigninRate;
     * addr = BoshSigninPerAddress; busy = Redis unreachable / pool full;
     * chatd = chatd answered 503 (its max_sessions_per_addr cap). */
    apr_uint32_t       refused_gate, refused_rate, refused_addr;
    apr_uint32_t       refused_busy, refused_chatd;
    /* workers = BoshMaxHeldShare of httpd's workers already hold requests */
    apr_uint32_t       refused_workers;
    apr_uint32_t       sessions_admitted;/* passed admission, sent to chatd */
    apr_uint32_t       bad_requests;
    volatile apr_uint32_t stopping;     /* child is stopping: drain done */
} bosh_child;

/* NULL in the parent and before child_init. */
extern bosh_child *bosh_child_state;
/* The worker budget, computed in post_config from the MPM's figures and
 * BoshMaxHeldShare; children inherit it. */
extern worker_budget bosh_budget;

bosh_server_conf *bosh_conf(const server_rec *s);

/* Send RELAY_DRAIN on every relay connection (idempotent).
 * may_block = 0 from contexts that may be a signal handler. */
void bosh_child_drain(int may_block);
/* 1 once this child should DRAIN: after child_stopping under event and
 * worker, once the MPM says STOPPING under prefork (see mod_bosh.c). */
int  bosh_child_is_stopping(void);

/* Handlers (bosh_handler.c, bosh_status.c). */
int bosh_handler(request_rec *r);
int bosh_status_handler(request_rec *r);
int bosh_hostmeta_handler(request_rec *r);          /* bosh_hostmeta.c */

/* Output filter added by the bosh handler: headers an administrator set
 * with mod_headers win over ours (no duplicates). bosh_handler.c. */
#define BOSH_HEADERS_FILTER "BOSH_HEADERS"
apr_status_t bosh_headers_filter(ap_filter_t *f, apr_bucket_brigade *bb);
/* Every answer of a mod_bosh handler (bosh, bosh-prebind, bosh-status,
 * bosh-hostmeta), errors included, goes out with a sandboxing CSP,
 * X-Content-Type-Options: nosniff, Referrer-Policy and
 * Cross-Origin-Resource-Policy (issue 13). Call before answering;
 * idempotent. bosh_handler.c. */
void bosh_protect_answer(request_rec *r);
int bosh_status_hook(request_rec *r, int flags);   /* mod_status */

/* Single sign-on (bosh_sso.c, issue 8): per-directory configuration,
 * vouching for r->user, and the bosh-prebind handler. */
typedef struct bosh_dir_conf {
    int         auth_from_apache;       /* BoshAuthFromApache; BOSH_UNSET */
    const char *auth_jid;               /* BoshAuthJID template; NULL = "%u" */
    int         name_source;            /* bosh_name_source (bosh_auth.h) */
    const char *name_key;               /* header or variable name */
    int         name_set;
    const char *see_other_uri;          /* BoshSeeOtherURI; NULL = unset */
} bosh_dir_conf;

void *bosh_create_dir_config(apr_pool_t *p, char *dir);
void *bosh_merge_dir_config(apr_pool_t *p, void *basev, void *addv);
const char *bosh_set_auth_from_apache(cmd_parms *cmd, void *dconf, int on);
const char *bosh_set_auth_jid(cmd_parms *cmd, void *dconf, const char *tmpl);
const char *bosh_set_auth_display_name(cmd_parms *cmd, void *dconf, const char *spec);
/* Fill call->auth_user / display_name when this location vouches and httpd
 * authenticated the request; else leave them NULL. Returns 1 if vouched. */
int bosh_vouch(request_rec *r, relay_call *call);
int bosh_prebind_handler(request_rec *r);
/* BoshSeeOtherURI (bosh_handler.c): send every BOSH client elsewhere. */
const char *bosh_set_see_other_uri(cmd_parms *cmd, void *dconf, const char *url);
/* bosh_handler.c: admission + node choice + relay for a new session. */
const char *bosh_create_session_for(request_rec *r, relay_call *call,
                                    relay_call_status *st, unsigned *retry_after);

/* 1 if the client's connection is encrypted: TLS on this connection, or
 * the connection comes from a BoshTrustedProxy address and the proxy says
 * X-Forwarded-Proto: https (bosh_handler.c). Sent as RT_CONFIDENTIAL: chatd
 * offers SASL PLAIN only then (issue 13). */
int bosh_request_confidential(request_rec *r, const bosh_server_conf *conf);

#endif
