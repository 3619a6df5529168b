/*
 * config: chatd's configuration file ("key value" lines, # comments).
 * Every key, its default and why: docs/configuration.md.
 */
#ifndef CHATD_CONFIG_H
#define CHATD_CONFIG_H

#include <stddef.h>
#include <sys/types.h>
#include "../../common/redis_sentinel.h"

#define RELAY_PEER_UIDS_MAX 8

typedef struct chatd_config {
    char    *domain;            /* domain        localhost */
    char    *muc_domain;        /* muc_domain    conference.<domain> */
    char    *node_id;           /* node_id       n1  ([a-z0-9]{1,16}; prefix of every BOSH sid) */
    char    *redis_url;         /* redis         redis://127.0.0.1:6379/0 (or unix:///path?db=N) */
    int      redis_max_conns;   /* redis_max_conns 4 */
    unsigned redis_wait_replicas; /* redis_wait_replicas 1 with sentinels, else 0: an
                                     offline message counts as stored once WAIT says
                                     this many replicas have it */
    unsigned redis_wait_timeout;  /* redis_wait_timeout 200 (ms, WAIT's timeout) */
    redis_sentinels redis_sentinels; /* redis_sentinels h:p,h:p,...  redis_sentinel_master
                                        name  redis_sentinel_password pw  (issue 16: the
                                        master is asked for; redis then gives pw and db) */
    char    *relay_listen;      /* relay_listen  unix:/run/chatd/relay.sock | tcp:127.0.0.1:5281 */
    char    *c2s_listen;        /* c2s_listen    127.0.0.1:5222 ("off" disables) */
    char    *tls_cert, *tls_key;/* tls_cert/tls_key  (STARTTLS offered when both set) */
    int      allow_plain_without_tls; /* plain_without_tls no */
    size_t   max_stanza;        /* max_stanza    262144 */
    size_t   max_output;        /* max_output    1048576 (per connection, then disconnect) */
    size_t   relay_max_output;  /* relay_max_output 67108864 (answers an httpd child has not
                                   read; beyond it that relay connection is closed) */
    unsigned bosh_max_wait;     /* bosh_max_wait 60 */
    unsigned bosh_max_hold;     /* bosh_max_hold 1 */
    unsigned bosh_inactivity;   /* bosh_inactivity 60 */
    unsigned bosh_max_pause;    /* bosh_max_pause 120 */
    unsigned bosh_polling;      /* bosh_polling 2 */
    unsigned muc_history;       /* muc_history   20 */
    unsigned muc_history_buffer;/* muc_history_buffer 4194304 (bytes of room history whose
                                   write to Redis failed, kept for retries; 0 = no cap) */
    unsigned max_sessions;      /* max_sessions  0 = unlimited */
    /* XEP-0313 archives (mam.c) */
    unsigned mam_max_messages;  /* mam_max_messages 10000 (per archive; 0 = no cap) */
    unsigned mam_retention_days;/* mam_retention_days 0 (0 = kept until the cap) */
    unsigned mam_buffer;        /* mam_buffer 4194304 (bytes of archive entries not yet
                                   written to Redis, all archives; 0 = no cap) */
    unsigned muc_max_rooms_per_user; /* muc_max_rooms_per_user 20 (rooms one user may have
                                   created and not destroyed; 0 = no cap) */
    unsigned muc_room_idle;     /* muc_room_idle 300 (seconds a persistent room stays in
                                   memory with nobody in it; 0 = for ever) */
    char    *pidfile;           /* pidfile       (none) */
    char    *logfile;           /* logfile       (stderr) */
    int      log_level;         /* log_level     info (error|warn|info|debug) */
    int      daemonize;         /* daemonize     no */
    /* Added for admission on the native listener and the admin socket. */
    char    *admin_socket;      /* admin_socket  admin.sock next to a unix: relay socket,
                                   else off; "off" disables (NULL when off) */
    double   signin_rate;       /* signin_rate   0 (sign-ins/s, all frontends; 0 = no cap) */
    unsigned signin_burst;      /* signin_burst  0 (token bucket size; taken as >= 1) */
    unsigned signin_per_addr;   /* signin_per_addr 0 (per client address per minute) */
    unsigned max_sessions_per_addr; /* max_sessions_per_addr 0 (live sessions per client
                                   address on this node, native + BOSH; 0 = no cap) */
    int      auto_provision;    /* auto_provision yes (create accounts for users httpd
                                   vouches for, issue 8; no password verifier) */
    /* Relay peer authentication (issue 13, common/RELAY.md). */
    char    *relay_peer_user;   /* relay_peer_user www-data (names or uids, comma or
                                   space separated; "none": only root and chatd's uid) */
    uid_t    relay_peer_uids[RELAY_PEER_UIDS_MAX]; /* resolved, for a unix: relay */
    int      relay_peer_nuids;
    char    *relay_secret_file; /* relay_secret_file (none; required for a tcp: relay) */
    char    *relay_secret;      /* its content (relay_secret_load), or NULL */
    size_t   relay_secret_len;
    /* Issue 14: one misbehaving client must not hurt the loop or others.
     * Defaults are sized for a 1,000-person team; docs/configuration.md. */
    unsigned c2s_auth_timeout;  /* c2s_auth_timeout 30 (s to sign in and bind on the
                                   native port, else stream error connection-timeout; 0 off) */
    unsigned c2s_keepalive;     /* c2s_keepalive 60 (TCP keepalive idle s; 0 off) */
    unsigned c2s_ping_idle;     /* c2s_ping_idle 120 (XEP-0199 ping after s silent; 0 off) */
    unsigned c2s_ping_timeout;  /* c2s_ping_timeout 30 (s for any answer, then closed) */
    unsigned c2s_read_budget;   /* c2s_read_budget 65536 (bytes one native socket may
                                   feed per loop turn; 0 = no cap) */
    unsigned stanza_rate;       /* stanza_rate 20 (stanzas/s per session; 0 = no cap) */
    unsigned stanza_burst;      /* stanza_burst 100 (sign-in: roster, disco, room joins) */
    unsigned stanza_flood_close;/* stanza_flood_close 100 (refused in a row, then stream
                                   error policy-violation; 0 = never) */
    unsigned byte_rate;         /* byte_rate 65536 (stanza bytes/s per session; 0 = no cap) */
    unsigned byte_burst;        /* byte_burst 262144, at most max_output/4 when unset;
                                   more than max_output/2 is refused (a room message
                                   burst must not overflow a recipient) */
    size_t   bosh_ack_buffer;   /* bosh_ack_buffer 1048576 (bytes of unacknowledged
                                   BOSH responses kept per session) */
    /* Password sign-ins (issue 13): chatd/session/auth_guard.h, chatd/session/pw_pool.h. */
    unsigned auth_fail_account; /* auth_fail_account 5 (failed sign-ins per account,
                                   then throttled; 0 = no per-account limit) */
    unsigned auth_fail_addr;    /* auth_fail_addr 20 (failed sign-ins per client address;
                                   0 = no per-address limit) */
    unsigned auth_fail_decay;   /* auth_fail_decay 60 (seconds to forget one failure) */
    unsigned auth_fail_delay_ms;/* auth_fail_delay_ms 3000 (throttled: answer after this) */
    unsigned auth_threads;      /* auth_threads 2 (password hashing threads, 1..64) */
    unsigned auth_queue;        /* auth_queue 64 (hash jobs waiting or running; more:
                                   temporary-auth-failure) */
    char    *auth_secret;       /* auth_secret (none: random per start) key for the
                                   made-up salts of unknown accounts */
    /* Per-user data quotas (issue 14): one client cannot fill Redis or
     * chatd's memory on someone else's account. Sized for a 1,000-person
     * team; docs/configuration.md says why. */
    unsigned offline_max_messages; /* offline_max_messages 100 (stored per recipient) */
    size_t   offline_max_bytes; /* offline_max_bytes 1048576 (stored per recipient) */
    unsigned offline_sender_share; /* offline_sender_share 25 (% of both caps one
                                   sender may use at one recipient) */
    unsigned max_roster_items;  /* max_roster_items 2000 (per user; also caps
                                   stored pending subscription requests) */
    unsigned max_directed_presences; /* max_directed_presences 1000 (per session) */
    /* XEP-0363 HTTP File Upload (issue 17, chatd/features/upload.c): chatd
     * signs slots, mod_bosh's bosh-upload handler stores and serves. */
    char    *upload_url;        /* upload_url (none: no upload service) base URL of the
                                   bosh-upload location, e.g. https://chat.example.com/upload */
    char    *upload_domain;     /* upload_domain upload.<domain> (the service's JID) */
    char    *upload_key_file;   /* upload_key_file (required with upload_url; the same
                                   file as mod_bosh's BoshUploadKeyFile) */
    char    *upload_key;        /* its content (relay_secret_load), or NULL */
    size_t   upload_key_len;
    unsigned long long upload_max_size; /* upload_max_size 10485760 (bytes per file) */
    unsigned long long upload_quota;    /* upload_quota 104857600 (bytes per user within
                                   upload_retention; 0 = no quota) */
    unsigned upload_slot_ttl;   /* upload_slot_ttl 300 (s a slot may be used for its PUT) */
    unsigned upload_retention;  /* upload_retention 30 (days a file counts against the
                                   quota; = BoshUploadRetention; 0 = for ever) */
    /* XEP-0163 PEP (pep.c), per account. */
    unsigned pep_max_nodes;     /* pep_max_nodes 20 */
    unsigned pep_max_items;     /* pep_max_items 100 (per node) */
    unsigned pep_max_item_bytes; /* pep_max_item_bytes 131072 (one item, serialized) */
    unsigned pep_max_bytes;     /* pep_max_bytes 1048576 (all items of the account) */
    /* XMPP over WebSocket (RFC 7395, issue 17): chatd/transport/ws.h. */
    char    *ws_listen;         /* ws_listen  ws.sock next to a unix: relay socket, else off;
                                   unix:/path or host:port (loopback: httpd proxies to it);
                                   "off" disables (NULL when off) */
    char    *ws_origin;         /* ws_origin  (none: same site only) origins allowed to open
                                   a WebSocket, exact, space separated; "*" any */
    char    *ws_trusted_proxy;  /* ws_trusted_proxy 127.0.0.1 ::1 (TCP peers whose
                                   X-Forwarded-Proto/-For/-Host are believed) */
    /* Issue 16: several nodes form one chat through Redis (router/cluster.h). */
    int      cluster;           /* cluster no (yes: route to other nodes through
                                   Redis sharded pub/sub; one more Redis connection,
                                   taken from redis_max_conns) */
    unsigned cluster_ttl_ms;    /* cluster_ttl_ms 3000 (a node, its sessions and its
                                   room leases live this long after its last heartbeat;
                                   heartbeats every third of it) */
    /* XEP-0198 Stream Management on the native port (chatd/session/sm.h,
     * c2s.c; issue 17). */
    unsigned sm_max_unacked;    /* sm_max_unacked 1000 (stanzas sent and not yet acked
                                   per session; over it: stream error policy-violation;
                                   0 = stream management not offered) */
    unsigned sm_max_unacked_bytes; /* sm_max_unacked_bytes 1048576 (their bytes; 0 = no
                                   byte bound) */
    unsigned sm_resume_timeout; /* sm_resume_timeout 300 (s a dropped session stays
                                   bound, waiting for <resume/>; 0 = no resumption) */
    unsigned sm_ack_every;      /* sm_ack_every 10 (send <r/> after this many unacked
                                   stanzas; 0 = never for a count) */
    unsigned sm_ack_interval;   /* sm_ack_interval 30 (send <r/> when sent data stays
                                   unacked this many s; 0 = never for time) */
} chatd_config;

/* Where the packages install chatd's file; chatctl reads it when given
 * neither -c nor -r. */
#define CHATD_CONF_DEFAULT "/etc/chatd/chatd.conf"

/* path if a file is there (or something other than "no such file" stops
 * us from knowing, so that reading it reports the real error), else NULL:
 * the built-in defaults. */
const char *config_path_if_present(const char *path);

/* Defaults, then the file (path may be NULL). Returns 0 or -1 with err. */
int  config_load(chatd_config *c, const char *path, char *err, size_t errlen);
void config_free(chatd_config *c);

#endif
