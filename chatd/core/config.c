/*
 * config: chatd's configuration file, "key value" per line, '#' comments.
 *
 * Defaults first (those documented in config.h), then the file. Unknown
 * keys and bad values are errors naming the line: a typo in a daemon's
 * config should stop it at start (or at `chatd -t`), not be ignored.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <pwd.h>
#include <sys/stat.h>
#include <arpa/inet.h>
#include "../../common/relay_secret.h"
#include "log.h"

static int set_str(char **dst, const char *v) {
    char *s = strdup(v);
    if (!s) return -1;
    free(*dst);
    *dst = s;
    return 0;
}

static int parse_bool(const char *v, int *out) {
    if (!strcasecmp(v, "yes") || !strcasecmp(v, "on") || !strcasecmp(v, "true") || !strcmp(v, "1"))
        *out = 1;
    else if (!strcasecmp(v, "no") || !strcasecmp(v, "off") || !strcasecmp(v, "false") || !strcmp(v, "0"))
        *out = 0;
    else
        return -1;
    return 0;
}

static int parse_ulong(const char *v, unsigned long long max, unsigned long long *out) {
    if (!isdigit((unsigned char)*v)) return -1;
    errno = 0;
    char *end;
    unsigned long long n = strtoull(v, &end, 10);
    if (errno || *end || n > max) return -1;
    *out = n;
    return 0;
}

static int parse_level(const char *v, int *out) {
    static const char *names[] = { "error", "warn", "info", "debug" };
    for (int i = 0; i < 4; i++)
        if (!strcasecmp(v, names[i])) { *out = i; return 0; }
    if (!strcasecmp(v, "warning")) { *out = LOG_WARN; return 0; }
    return -1;
}

static int valid_node_id(const char *v) {
    size_t n = strlen(v);
    if (n < 1 || n > 16) return 0;
    for (size_t i = 0; i < n; i++)
        if (!(islower((unsigned char)v[i]) || isdigit((unsigned char)v[i]))) return 0;
    return 1;
}

/* byte_burst unset: 256 KiB, but at most a quarter of max_output, so
 * that one sender's room-message burst never fills a recipient's buffer
 * (docs/configuration.md, byte_burst). */
#define BYTE_BURST_AUTO   0xffffffffu
#define BYTE_BURST_DEFAULT 262144u

#define REDIS_WAIT_AUTO 0xffffffffu

static void set_defaults(chatd_config *c) {
    memset(c, 0, sizeof(*c));
    c->domain = strdup("localhost");
    c->node_id = strdup("n1");
    c->redis_url = strdup("redis://127.0.0.1:6379/0");
    c->redis_max_conns = 4;
    c->redis_wait_replicas = REDIS_WAIT_AUTO;   /* 1 with sentinels, else 0 */
    c->redis_wait_timeout = 200;
    c->relay_listen = strdup("unix:/run/chatd/relay.sock");
    c->c2s_listen = strdup("127.0.0.1:5222");
    c->allow_plain_without_tls = 0;
    c->max_stanza = 262144;
    c->max_output = 1048576;
    c->relay_max_output = 64u << 20;
    c->bosh_max_wait = 60;
    c->bosh_max_hold = 1;
    c->bosh_inactivity = 60;
    c->bosh_max_pause = 120;
    c->bosh_polling = 2;
    c->muc_history = 20;
    c->muc_history_buffer = 4u << 20;
    c->muc_max_rooms_per_user = 20;
    c->muc_room_idle = 300;
    c->mam_max_messages = 10000;
    c->mam_retention_days = 0;
    c->mam_buffer = 4u << 20;
    c->max_sessions = 0;
    c->log_level = LOG_INFO;
    c->daemonize = 0;
    c->auto_provision = 1;
    c->relay_peer_user = strdup("www-data");
    c->c2s_auth_timeout = 30;
    c->c2s_keepalive = 60;
    c->c2s_ping_idle = 120;
    c->c2s_ping_timeout = 30;
    c->c2s_read_budget = 65536;
    c->stanza_rate = 20;
    c->stanza_burst = 100;
    c->stanza_flood_close = 100;
    c->byte_rate = 65536;
    c->byte_burst = BYTE_BURST_AUTO;     /* resolved against max_output below */
    c->bosh_ack_buffer = 1048576;
    c->auth_fail_account = 5;
    c->auth_fail_addr = 20;
    c->auth_fail_decay = 60;
    c->auth_fail_delay_ms = 3000;
    c->auth_threads = 2;
    c->auth_queue = 64;
    c->offline_max_messages = 100;
    c->offline_max_bytes = 1048576;
    c->offline_sender_share = 25;
    c->max_roster_items = 2000;
    c->max_directed_presences = 1000;
    c->upload_max_size = 10485760;
    c->upload_quota = 104857600;
    c->upload_slot_ttl = 300;
    c->upload_retention = 30;
    c->pep_max_nodes = 20;
    c->pep_max_items = 100;
    c->pep_max_item_bytes = 131072;
    c->pep_max_bytes = 1048576;
    c->ws_trusted_proxy = strdup("127.0.0.1 ::1");
    c->cluster = 0;
    c->cluster_ttl_ms = 3000;
    c->sm_max_unacked = 1000;
    c->sm_max_unacked_bytes = 1048576;
    c->sm_resume_timeout = 300;
    c->sm_ack_every = 10;
    c->sm_ack_interval = 30;
}

/* One "key value" pair. Returns 0, or -1 with a reason in err. */
static int apply(chatd_config *c, const char *key, const char *val,
                 char *err, size_t errlen) {
    unsigned long long n;
    struct { const char *key; char **dst; } strs[] = {
        { "domain", &c->domain }, { "muc_domain", &c->muc_domain },
        { "redis", &c->redis_url }, { "relay_listen", &c->relay_listen },
        { "c2s_listen", &c->c2s_listen }, { "tls_cert", &c->tls_cert },
        { "tls_key", &c->tls_key }, { "pidfile", &c->pidfile },
        { "logfile", &c->logfile }, { "admin_socket", &c->admin_socket },
        { "relay_peer_user", &c->relay_peer_user },
        { "relay_secret_file", &c->relay_secret_file },
        { "auth_secret", &c->auth_secret },
        { "upload_url", &c->upload_url }, { "upload_domain", &c->upload_domain },
        { "upload_key_file", &c->upload_key_file },
        { "ws_listen", &c->ws_listen }, { "ws_origin", &c->ws_origin },
        { "ws_trusted_proxy", &c->ws_trusted_proxy },
    };
    struct { const char *key; unsigned *dst; unsigned max; } uints[] = {
        { "bosh_max_wait", &c->bosh_max_wait, 3600 },
        { "bosh_max_hold", &c->bosh_max_hold, 16 },
        { "bosh_inactivity", &c->bosh_inactivity, 86400 },
        { "bosh_max_pause", &c->bosh_max_pause, 86400 },
        { "bosh_polling", &c->bosh_polling, 3600 },
        { "muc_history", &c->muc_history, 10000 },
        { "muc_history_buffer", &c->muc_history_buffer, 1u << 30 },
        { "muc_max_rooms_per_user", &c->muc_max_rooms_per_user, 1000000 },
        { "muc_room_idle", &c->muc_room_idle, 30u * 86400 },
        { "mam_max_messages", &c->mam_max_messages, 10000000 },
        { "mam_retention_days", &c->mam_retention_days, 36500 },
        { "mam_buffer", &c->mam_buffer, 1u << 30 },
        { "max_sessions", &c->max_sessions, 10000000 },
        { "signin_burst", &c->signin_burst, 1000000 },
        { "signin_per_addr", &c->signin_per_addr, 1000000 },
        { "max_sessions_per_addr", &c->max_sessions_per_addr, 10000000 },
        { "c2s_auth_timeout", &c->c2s_auth_timeout, 86400 },
        { "c2s_keepalive", &c->c2s_keepalive, 86400 },
        { "c2s_ping_idle", &c->c2s_ping_idle, 86400 },
        { "c2s_ping_timeout", &c->c2s_ping_timeout, 86400 },
        { "c2s_read_budget", &c->c2s_read_budget, 1u << 30 },
        { "stanza_rate", &c->stanza_rate, 1000000 },
        { "stanza_burst", &c->stanza_burst, 1000000 },
        { "stanza_flood_close", &c->stanza_flood_close, 1000000 },
        { "byte_rate", &c->byte_rate, 1u << 30 },
        { "byte_burst", &c->byte_burst, 1u << 30 },
        { "auth_fail_account", &c->auth_fail_account, 1000000 },
        { "auth_fail_addr", &c->auth_fail_addr, 1000000 },
        { "auth_fail_delay_ms", &c->auth_fail_delay_ms, 600000 },
        { "offline_max_messages", &c->offline_max_messages, 100000 },
        { "max_roster_items", &c->max_roster_items, 1000000 },
        { "max_directed_presences", &c->max_directed_presences, 1000000 },
        { "upload_retention", &c->upload_retention, 36500 },
        { "pep_max_nodes", &c->pep_max_nodes, 10000 },
        { "pep_max_items", &c->pep_max_items, 100000 },
        { "pep_max_item_bytes", &c->pep_max_item_bytes, 1u << 30 },
        { "pep_max_bytes", &c->pep_max_bytes, 1u << 30 },
        { "sm_max_unacked", &c->sm_max_unacked, 1000000 },
        { "sm_max_unacked_bytes", &c->sm_max_unacked_bytes, 1u << 30 },
        { "sm_resume_timeout", &c->sm_resume_timeout, 86400 },
        { "sm_ack_every", &c->sm_ack_every, 1000000 },
        { "sm_ack_interval", &c->sm_ack_interval, 86400 },
    };

    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
        if (!strcmp(key, strs[i].key)) {
            if (!*val) { snprintf(err, errlen, "%s needs a value", key); return -1; }
            return set_str(strs[i].dst, val);
        }
    for (size_t i = 0; i < sizeof(uints) / sizeof(uints[0]); i++)
        if (!strcmp(key, uints[i].key)) {
            if (parse_ulong(val, uints[i].max, &n) < 0) {
                snprintf(err, errlen, "%s: expected a number 0..%u, got '%s'", key, uints[i].max, val);
                return -1;
            }
            *uints[i].dst = (unsigned)n;
            return 0;
        }
    if (!strcmp(key, "node_id")) {
        if (!valid_node_id(val)) {
            snprintf(err, errlen, "node_id must be 1-16 of [a-z0-9], got '%s'", val);
            return -1;
        }
        return set_str(&c->node_id, val);
    }
    if (!strcmp(key, "auth_fail_decay") || !strcmp(key, "auth_threads") ||
        !strcmp(key, "auth_queue")) {
        unsigned max = key[5] == 'f' ? 86400 : key[5] == 't' ? 64 : 100000;
        if (parse_ulong(val, max, &n) < 0 || n < 1) {
            snprintf(err, errlen, "%s: expected 1..%u, got '%s'", key, max, val);
            return -1;
        }
        *(key[5] == 'f' ? &c->auth_fail_decay : key[5] == 't' ? &c->auth_threads
                                                              : &c->auth_queue) = (unsigned)n;
        return 0;
    }
    if (!strcmp(key, "redis_wait_replicas") || !strcmp(key, "redis_wait_timeout")) {
        int t = key[11] == 't';
        if (parse_ulong(val, t ? 60000 : 16, &n) < 0 || (t && n < 1)) {
            snprintf(err, errlen, "%s: expected %s, got '%s'", key,
                     t ? "1..60000 (ms)" : "0..16", val);
            return -1;
        }
        *(t ? &c->redis_wait_timeout : &c->redis_wait_replicas) = (unsigned)n;
        return 0;
    }
    if (!strcmp(key, "redis_sentinels")) {
        c->redis_sentinels.n = 0;           /* the last line wins, as for other keys */
        return redis_sentinels_add(&c->redis_sentinels, val, err, errlen);
    }
    if (!strcmp(key, "redis_sentinel_master"))
        return redis_sentinels_set_master(&c->redis_sentinels, val, err, errlen);
    if (!strcmp(key, "redis_sentinel_password"))
        return redis_sentinels_set_password(&c->redis_sentinels, val, err, errlen);
    if (!strcmp(key, "redis_max_conns")) {
        if (parse_ulong(val, 1024, &n) < 0 || n < 1) {
            snprintf(err, errlen, "redis_max_conns: expected 1..1024, got '%s'", val);
            return -1;
        }
        c->redis_max_conns = (int)n;
        return 0;
    }
    if (!strcmp(key, "max_stanza") || !strcmp(key, "max_output")) {
        if (parse_ulong(val, 1ull << 30, &n) < 0 || n < 1024) {
            snprintf(err, errlen, "%s: expected a byte count 1024..2^30, got '%s'", key, val);
            return -1;
        }
        if (key[4] == 's') c->max_stanza = (size_t)n; else c->max_output = (size_t)n;
        return 0;
    }
    if (!strcmp(key, "bosh_ack_buffer")) {
        if (parse_ulong(val, 1ull << 30, &n) < 0 || n < 1024) {
            snprintf(err, errlen, "%s: expected a byte count 1024..2^30, got '%s'", key, val);
            return -1;
        }
        c->bosh_ack_buffer = (size_t)n;
        return 0;
    }
    if (!strcmp(key, "offline_max_bytes")) {
        if (parse_ulong(val, 1ull << 30, &n) < 0) {
            snprintf(err, errlen, "%s: expected a byte count 0..2^30, got '%s'", key, val);
            return -1;
        }
        c->offline_max_bytes = (size_t)n;
        return 0;
    }
    if (!strcmp(key, "offline_sender_share")) {
        if (parse_ulong(val, 100, &n) < 0 || n < 1) {
            snprintf(err, errlen, "%s: expected a percentage 1..100, got '%s'", key, val);
            return -1;
        }
        c->offline_sender_share = (unsigned)n;
        return 0;
    }
    if (!strcmp(key, "upload_max_size") || !strcmp(key, "upload_quota")) {
        if (parse_ulong(val, 1ull << 40, &n) < 0 || (key[7] == 'm' && n < 1)) {
            snprintf(err, errlen, "%s: expected a byte count %d..2^40, got '%s'", key,
                     key[7] == 'm' ? 1 : 0, val);
            return -1;
        }
        *(key[7] == 'm' ? &c->upload_max_size : &c->upload_quota) = n;
        return 0;
    }
    if (!strcmp(key, "upload_slot_ttl")) {
        if (parse_ulong(val, 86400, &n) < 0 || n < 10) {
            snprintf(err, errlen, "%s: expected seconds 10..86400, got '%s'", key, val);
            return -1;
        }
        c->upload_slot_ttl = (unsigned)n;
        return 0;
    }
    if (!strcmp(key, "relay_max_output")) {
        if (parse_ulong(val, 1ull << 32, &n) < 0 || n < 1024) {
            snprintf(err, errlen, "%s: expected a byte count 1024..2^32, got '%s'", key, val);
            return -1;
        }
        c->relay_max_output = (size_t)n;
        return 0;
    }
    if (!strcmp(key, "plain_without_tls") || !strcmp(key, "daemonize")) {
        int *dst = key[0] == 'p' ? &c->allow_plain_without_tls : &c->daemonize;
        if (parse_bool(val, dst) < 0) {
            snprintf(err, errlen, "%s: expected yes or no, got '%s'", key, val);
            return -1;
        }
        return 0;
    }
    if (!strcmp(key, "cluster")) {
        if (parse_bool(val, &c->cluster) < 0) {
            snprintf(err, errlen, "%s: expected yes or no, got '%s'", key, val);
            return -1;
        }
        return 0;
    }
    if (!strcmp(key, "cluster_ttl_ms")) {
        if (parse_ulong(val, 600000, &n) < 0 || n < 300) {
            snprintf(err, errlen, "%s: expected 300..600000, got '%s'", key, val);
            return -1;
        }
        c->cluster_ttl_ms = (unsigned)n;
        return 0;
    }
    if (!strcmp(key, "auto_provision")) {
        if (parse_bool(val, &c->auto_provision) < 0) {
            snprintf(err, errlen, "%s: expected yes or no, got '%s'", key, val);
            return -1;
        }
        return 0;
    }
    if (!strcmp(key, "signin_rate")) {
        char *end;
        errno = 0;
        double r = strtod(val, &end);
        if (errno || end == val || *end || !(r >= 0 && r <= 1e6)) {
            snprintf(err, errlen, "signin_rate: expected sign-ins per second 0..1000000, got '%s'", val);
            return -1;
        }
        c->signin_rate = r;
        return 0;
    }
    if (!strcmp(key, "log_level")) {
        if (parse_level(val, &c->log_level) < 0) {
            snprintf(err, errlen, "log_level: expected error|warn|info|debug, got '%s'", val);
            return -1;
        }
        return 0;
    }
    snprintf(err, errlen, "unknown key '%s'", key);
    return -1;
}

/* admin_socket: unset means admin.sock beside a unix: relay socket (both
 * are local-only, so they belong in the same protected directory), and
 * off for a tcp: relay; "off" means off. Off is stored as NULL. */
static int admin_socket_default(chatd_config *c) {
    if (c->admin_socket && !strcmp(c->admin_socket, "off")) {
        free(c->admin_socket);
        c->admin_socket = NULL;
        return 0;
    }
    if (c->admin_socket || !c->relay_listen || strncmp(c->relay_listen, "unix:", 5) != 0)
        return 0;
    const char *path = c->relay_listen + 5;
    const char *slash = strrchr(path, '/');
    size_t dirlen = slash ? (size_t)(slash - path) + 1 : 0;
    c->admin_socket = malloc(dirlen + sizeof("admin.sock"));
    if (!c->admin_socket) return -1;
    memcpy(c->admin_socket, path, dirlen);
    memcpy(c->admin_socket + dirlen, "admin.sock", sizeof("admin.sock"));
    return 0;
}

/* ws_listen: like admin_socket, unset means ws.sock beside a unix: relay
 * socket (httpd, which already reaches the relay there, proxies to it;
 * nothing else can), and off for a tcp: relay. ws_trusted_proxy entries
 * must be IP addresses and ws_origin entries origins, so that a typo
 * stops chatd -t instead of silently trusting nobody or everybody. */
static int ws_keys_check(chatd_config *c, char *err, size_t errlen) {
    if (c->ws_listen && !strcmp(c->ws_listen, "off")) {
        free(c->ws_listen);
        c->ws_listen = NULL;
    } else if (!c->ws_listen && c->relay_listen && !strncmp(c->relay_listen, "unix:", 5)) {
        const char *path = c->relay_listen + 5;
        const char *slash = strrchr(path, '/');
        size_t dirlen = slash ? (size_t)(slash - path) + 1 : 0;
        c->ws_listen = malloc(5 + dirlen + sizeof("ws.sock"));
        if (!c->ws_listen) { snprintf(err, errlen, "out of memory"); return -1; }
        memcpy(c->ws_listen, "unix:", 5);
        memcpy(c->ws_listen + 5, path, dirlen);
        memcpy(c->ws_listen + 5 + dirlen, "ws.sock", sizeof("ws.sock"));
    }
    char buf[2048], *save = NULL;
    snprintf(buf, sizeof(buf), "%s", c->ws_trusted_proxy ? c->ws_trusted_proxy : "");
    for (char *t = strtok_r(buf, ", \t", &save); t; t = strtok_r(NULL, ", \t", &save)) {
        unsigned char a[16];
        if (!strcmp(t, "none")) continue;
        if (inet_pton(strchr(t, ':') ? AF_INET6 : AF_INET, t, a) != 1) {
            snprintf(err, errlen, "ws_trusted_proxy: '%s' is not an IP address", t);
            return -1;
        }
    }
    save = NULL;
    snprintf(buf, sizeof(buf), "%s", c->ws_origin ? c->ws_origin : "");
    for (char *t = strtok_r(buf, ", \t", &save); t; t = strtok_r(NULL, ", \t", &save))
        if (strcmp(t, "*") && strncasecmp(t, "https://", 8) && strncasecmp(t, "http://", 7)) {
            snprintf(err, errlen, "ws_origin: '%s' is not an origin (https://host[:port]) or *", t);
            return -1;
        }
    return 0;
}

/* relay_peer_user: names or numeric uids, comma or space separated, or
 * "none". Resolved at load (so `chatd -t` names a user that does not
 * exist), and only for a unix: relay, the only one with a peer uid. */
static int resolve_peer_users(chatd_config *c, char *err, size_t errlen) {
    c->relay_peer_nuids = 0;
    if (!c->relay_listen || strncmp(c->relay_listen, "unix:", 5) != 0) return 0;
    if (!strcmp(c->relay_peer_user, "none")) return 0;
    char *copy = strdup(c->relay_peer_user), *save = NULL;
    if (!copy) { snprintf(err, errlen, "out of memory"); return -1; }
    for (char *tok = strtok_r(copy, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
        uid_t uid;
        unsigned long long n;
        if (parse_ulong(tok, 0x7fffffff, &n) == 0) {
            uid = (uid_t)n;
        } else {
            struct passwd *pw = getpwnam(tok);
            if (!pw) {
                snprintf(err, errlen, "relay_peer_user: no such user '%s' (the user httpd's "
                         "children run as, e.g. www-data, apache; or a uid)", tok);
                free(copy);
                return -1;
            }
            uid = pw->pw_uid;
        }
        if (c->relay_peer_nuids == RELAY_PEER_UIDS_MAX) {
            snprintf(err, errlen, "relay_peer_user: at most %d users", RELAY_PEER_UIDS_MAX);
            free(copy);
            return -1;
        }
        c->relay_peer_uids[c->relay_peer_nuids++] = uid;
    }
    free(copy);
    if (c->relay_peer_nuids == 0) {
        snprintf(err, errlen, "relay_peer_user: expected user names or uids, or none");
        return -1;
    }
    return 0;
}

/* A tcp: relay has no peer uid: anyone who reaches the port (any local
 * user, other hosts) could speak for httpd. The secret is what stops
 * them, so it is required there; on unix: it is optional, on top of
 * the uid check. */
static int load_relay_secret(chatd_config *c, char *err, size_t errlen) {
    int tcp = c->relay_listen && !strncmp(c->relay_listen, "tcp:", 4);
    if (!c->relay_secret_file) {
        if (!tcp) return 0;
        snprintf(err, errlen, "relay_listen %s needs relay_secret_file: without it any "
                 "process that reaches the port could sign in as any user", c->relay_listen);
        return -1;
    }
    char why[512];
    if (relay_secret_load(c->relay_secret_file, &c->relay_secret, &c->relay_secret_len,
                          why, sizeof(why)) < 0) {
        snprintf(err, errlen, "relay_secret_file: %s", why);
        return -1;
    }
    return 0;
}

/* XEP-0363 (issue 17): with upload_url the service exists, and its slots
 * are signed with the key in upload_key_file (the file mod_bosh reads as
 * BoshUploadKeyFile), so the key is required then. upload_domain defaults
 * to upload.<domain>. */
static int load_upload(chatd_config *c, char *err, size_t errlen) {
    if (!c->upload_url) return 0;
    if (strncmp(c->upload_url, "https://", 8) != 0 && strncmp(c->upload_url, "http://", 7) != 0) {
        snprintf(err, errlen, "upload_url: expected an absolute http:// or https:// URL, got '%s'",
                 c->upload_url);
        return -1;
    }
    for (const char *p = c->upload_url; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f || *p == '?' || *p == '#' || *p == '"' ||
            *p == '<' || *p == '>' || *p == '\\' || *p == '\'') {
            snprintf(err, errlen, "upload_url: '%s' has a character a slot URL cannot carry "
                     "(blank, quote, ?, #)", c->upload_url);
            return -1;
        }
    size_t ul = strlen(c->upload_url);
    while (ul > 8 && c->upload_url[ul - 1] == '/') c->upload_url[--ul] = '\0';
    if (!c->upload_key_file) {
        snprintf(err, errlen, "upload_url needs upload_key_file (the key slots are signed "
                 "with; mod_bosh's BoshUploadKeyFile names the same file)");
        return -1;
    }
    char why[512];
    if (relay_secret_load(c->upload_key_file, &c->upload_key, &c->upload_key_len,
                          why, sizeof(why)) < 0) {
        snprintf(err, errlen, "upload_key_file: %s", why);
        return -1;
    }
    if (!c->upload_domain) {
        size_t n = strlen(c->domain) + sizeof("upload.");
        if (!(c->upload_domain = malloc(n))) { snprintf(err, errlen, "out of memory"); return -1; }
        snprintf(c->upload_domain, n, "upload.%s", c->domain);
    }
    if (!strcmp(c->upload_domain, c->domain) || !strcmp(c->upload_domain, c->muc_domain)) {
        snprintf(err, errlen, "upload_domain %s must differ from domain and muc_domain",
                 c->upload_domain);
        return -1;
    }
    return 0;
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = '\0';
    return s;
}

const char *config_path_if_present(const char *path) {
    struct stat st;
    if (!path) return NULL;
    if (stat(path, &st) == 0) return path;
    return (errno == ENOENT || errno == ENOTDIR) ? NULL : path;
}

int config_load(chatd_config *c, const char *path, char *err, size_t errlen) {
    set_defaults(c);
    if (!c->domain || !c->node_id || !c->redis_url || !c->relay_listen || !c->c2s_listen) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (path) {
        FILE *fp = fopen(path, "re");
        if (!fp) {
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
            return -1;
        }
        char line[4096], why[512];
        int lineno = 0, rc = 0;
        while (fgets(line, sizeof(line), fp)) {
            lineno++;
            char *s = trim(line);
            if (!*s || *s == '#') continue;
            char *val = s;
            while (*val && !isspace((unsigned char)*val)) val++;
            if (*val) *val++ = '\0';
            val = trim(val);
            if (apply(c, s, val, why, sizeof(why)) < 0) {
                snprintf(err, errlen, "%s:%d: %s", path, lineno, why);
                rc = -1;
                break;
            }
        }
        fclose(fp);
        if (rc < 0) return -1;
    }
    if (!c->muc_domain) {
        size_t n = strlen(c->domain) + sizeof("conference.");
        c->muc_domain = malloc(n);
        if (!c->muc_domain) { snprintf(err, errlen, "out of memory"); return -1; }
        snprintf(c->muc_domain, n, "conference.%s", c->domain);
    }
    if (admin_socket_default(c) < 0) { snprintf(err, errlen, "out of memory"); return -1; }
    if (resolve_peer_users(c, err, errlen) < 0) return -1;
    if (ws_keys_check(c, err, errlen) < 0) return -1;
    if (load_relay_secret(c, err, errlen) < 0) return -1;
    if (load_upload(c, err, errlen) < 0) return -1;
    if (c->byte_burst == BYTE_BURST_AUTO) {
        c->byte_burst = BYTE_BURST_DEFAULT;
        if (c->byte_burst > c->max_output / 4) c->byte_burst = (unsigned)(c->max_output / 4);
    } else if (c->byte_rate && c->byte_burst > c->max_output / 2) {
        snprintf(err, errlen, "byte_burst %u is more than half of max_output %zu: one "
                 "sender's burst of room messages could disconnect slow occupants; "
                 "lower byte_burst or raise max_output", c->byte_burst, c->max_output);
        return -1;
    }
    if (c->redis_wait_replicas == REDIS_WAIT_AUTO)
        c->redis_wait_replicas = c->redis_sentinels.n > 0 ? 1 : 0;
    if (c->redis_sentinels.n > 0 || c->redis_sentinels.master[0]) {
        redis_url u;
        char why[256];
        if (redis_url_parse(c->redis_url, &u, why, sizeof(why)) != 0) {
            snprintf(err, errlen, "redis: %s", why);
            return -1;
        }
        if (redis_sentinels_check(&c->redis_sentinels, &u, why, sizeof(why)) != 0) {
            snprintf(err, errlen, "redis_sentinels: %s", why);
            return -1;
        }
    }
    if ((c->tls_cert == NULL) != (c->tls_key == NULL)) {
        snprintf(err, errlen, "tls_cert and tls_key must be set together");
        return -1;
    }
    if (c->cluster && c->redis_max_conns < 2) {
        snprintf(err, errlen, "cluster yes needs redis_max_conns >= 2: one of them is "
                 "the node's pub/sub subscriber");
        return -1;
    }
    return 0;
}

void config_free(chatd_config *c) {
    free(c->domain);
    free(c->muc_domain);
    free(c->node_id);
    free(c->redis_url);
    free(c->relay_listen);
    free(c->c2s_listen);
    free(c->tls_cert);
    free(c->tls_key);
    free(c->pidfile);
    free(c->logfile);
    free(c->admin_socket);
    free(c->relay_peer_user);
    free(c->relay_secret_file);
    relay_secret_free(c->relay_secret, c->relay_secret_len);
    free(c->auth_secret);
    free(c->upload_url);
    free(c->upload_domain);
    free(c->upload_key_file);
    relay_secret_free(c->upload_key, c->upload_key_len);
    free(c->ws_listen);
    free(c->ws_origin);
    free(c->ws_trusted_proxy);
    memset(c, 0, sizeof(*c));
}
