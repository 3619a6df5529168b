/*
 * config: chatd's configuration file ("key value" lines, # comments).
 * Every key, its default and why: docs/configuration.md.
 */
#ifndef CHATD_CONFIG_H
#define CHATD_CONFIG_H

#include <stddef.h>

typedef struct chatd_config {
    char    *domain;            /* domain        localhost */
    char    *muc_domain;        /* muc_domain    conference.<domain> */
    char    *node_id;           /* node_id       n1  ([a-z0-9]{1,16}; prefix of every BOSH sid) */
    char    *redis_url;         /* redis         redis://127.0.0.1:6379/0 (or unix:///path?db=N) */
    int      redis_max_conns;   /* redis_max_conns 4 */
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
    unsigned max_sessions;      /* max_sessions  0 = unlimited */
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
