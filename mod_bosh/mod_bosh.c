/*
 * mod_bosh.c - module declaration, directives and lifecycle hooks.
 *
 * mod_bosh serves BOSH (XEP-0124/0206) by relaying every request to a
 * chatd node over one multiplexed connection per child (relay_client.c).
 * This file owns the configuration and the life of the per-child state:
 *
 *  - post_config (second pass only: the first is a preflight and the DSO
 *    is reloaded in between) checks Redis maxclients against our worst
 *    case and closes that connection before any child is forked; a first
 *    start refuses when it is too low, a restart only warns (refusing
 *    there would stop a serving httpd);
 *  - child_init builds the relay clients, the Redis pool and a small
 *    housekeeping thread (idle Redis connections, prefork stop detection);
 *  - child_stopping (event/worker) sends RELAY_DRAIN so held requests
 *    return at once and the old child can exit;
 *  - a pre-cleanup on pchild stops the threads and closes every socket.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "ap_mpm.h"
#include "mpm_common.h"
#include "apr_strings.h"
#include "mod_status.h"

#define MOD_BOSH_DECLARES_MODULE
#include "mod_bosh.h"
#include "redis_cap.h"
#include "../common/relay_proto.h"
#include "../common/relay_secret.h"

#define DEFAULT_DOMAIN              "localhost"
#define DEFAULT_MAX_BODY            65536
#define DEFAULT_MAX_WAIT            60
/* Relay liveness (issue 14): PING a relay connection that has been silent
 * this long, and give the node up when nothing at all comes back within
 * the timeout. 10 s + 5 s: a stopped or black-holed chatd is noticed in
 * about 15 s instead of parking every new session for BoshMaxWait + 15 s,
 * and an idle child costs chatd one 12-byte frame every 10 s. */
#define DEFAULT_RELAY_PING_S        10
#define DEFAULT_RELAY_PING_TIMEOUT_S 5
/* The largest BoshMaxBodySize a relay REQUEST can carry: chatd refuses any
 * frame over RELAY_MAX_PAYLOAD (4 MiB) and closes the whole connection,
 * failing every request held on it; the other fields of a REQUEST (sid,
 * address, vouched user and display name) get 64 KiB. */
#define BOSH_MAX_BODY_CEILING       ((int)(RELAY_MAX_PAYLOAD - 65536))
#define DEFAULT_REDIS_PER_CHILD     2
#define DEFAULT_REDIS_MAX_TOTAL     64
#define DEFAULT_REDIS_ACQUIRE_MS    500
#define DEFAULT_REDIS_IDLE_S        30
#define DEFAULT_REDIS_CONNECT_MS    1000
#define DEFAULT_REDIS_COMMAND_MS    1000
/* Redis connections left for chatd's pool and admin tools in the
 * start-up check (BoshRedisReserve). */
#define DEFAULT_REDIS_RESERVE       32

bosh_child *bosh_child_state;
worker_budget bosh_budget;

/* Housekeeping thread of this child. */
static pthread_t housekeeper;
static int housekeeper_started;
static volatile int housekeeper_stop;
/* 1 under event and worker (they call child_stopping); set in child_init. */
static int child_threaded;

bosh_server_conf *bosh_conf(const server_rec *s)
{
    return ap_get_module_config(s->module_config, &bosh_module);
}

/* ---- configuration ---- */

static void *bosh_create_server_config(apr_pool_t *p, server_rec *s)
{
    bosh_server_conf *c = apr_pcalloc(p, sizeof(*c));
    (void)s;
    c->nodes = apr_array_make(p, 2, sizeof(bosh_node_conf));
    c->allow_origins = apr_array_make(p, 2, sizeof(const char *));
    c->trusted_proxies = apr_array_make(p, 2, sizeof(apr_ipsubnet_t *));
    c->hostmeta_urls = apr_array_make(p, 1, sizeof(const char *));
    c->max_body = BOSH_UNSET;
    c->max_wait = BOSH_UNSET;
    c->redis_max_per_child = BOSH_UNSET;
    c->redis_max_total = BOSH_UNSET;
    c->redis_acquire_ms = BOSH_UNSET;
    c->redis_idle_s = BOSH_UNSET;
    c->redis_connect_ms = BOSH_UNSET;
    c->redis_command_ms = BOSH_UNSET;
    c->redis_check_warn = BOSH_UNSET;
    c->redis_reserve = BOSH_UNSET;
    c->signin = BOSH_UNSET;
    c->signin_rate = BOSH_UNSET;
    c->signin_burst = BOSH_UNSET;
    c->signin_per_addr = BOSH_UNSET;
    c->relay_ping_s = BOSH_UNSET;
    c->relay_ping_timeout_s = BOSH_UNSET;
    c->max_held_share = BOSH_UNSET;
    c->max_sessions = BOSH_UNSET;
    return c;
}

#define MERGE_INT(f) m->f = (add->f != BOSH_UNSET) ? add->f : base->f

static void *bosh_merge_server_config(apr_pool_t *p, void *basev, void *addv)
{
    bosh_server_conf *base = basev, *add = addv;
    bosh_server_conf *m = apr_pcalloc(p, sizeof(*m));

    m->nodes = base->nodes;                 /* global only */
    m->redis_url = base->redis_url;         /* global only */
    m->redis_sentinels = base->redis_sentinels;   /* global only */
    m->relay_secret_file = base->relay_secret_file;   /* global only */
    m->relay_secret = base->relay_secret;
    m->relay_secret_len = base->relay_secret_len;
    m->allow_origins = add->allow_origins->nelts ? add->allow_origins
                                                 : base->allow_origins;
    m->trusted_proxies = add->trusted_proxies->nelts ? add->trusted_proxies
                                                     : base->trusted_proxies;
    m->hostmeta_urls = add->hostmeta_urls->nelts ? add->hostmeta_urls
                                                 : base->hostmeta_urls;
    m->domain = add->domain ? add->domain : base->domain;
    MERGE_INT(max_body);
    MERGE_INT(max_wait);
    MERGE_INT(redis_max_per_child);
    MERGE_INT(redis_max_total);
    MERGE_INT(redis_acquire_ms);
    MERGE_INT(redis_idle_s);
    MERGE_INT(redis_connect_ms);
    MERGE_INT(redis_command_ms);
    MERGE_INT(redis_check_warn);
    MERGE_INT(redis_reserve);
    MERGE_INT(signin);
    MERGE_INT(signin_rate);
    MERGE_INT(signin_burst);
    MERGE_INT(signin_per_addr);
    MERGE_INT(relay_ping_s);
    MERGE_INT(relay_ping_timeout_s);
    MERGE_INT(max_held_share);
    MERGE_INT(max_sessions);
    return m;
}

#define DEFAULT_INT(f, v) if (c->f == BOSH_UNSET) c->f = (v)

/* Replace "unset" by the defaults; run for every server in post_config. */
static void bosh_conf_finalize(bosh_server_conf *c)
{
    if (!c->domain)
        c->domain = DEFAULT_DOMAIN;
    DEFAULT_INT(max_body, DEFAULT_MAX_BODY);
    DEFAULT_INT(max_wait, DEFAULT_MAX_WAIT);
    DEFAULT_INT(redis_max_per_child, DEFAULT_REDIS_PER_CHILD);
    DEFAULT_INT(redis_max_total, DEFAULT_REDIS_MAX_TOTAL);
    DEFAULT_INT(redis_acquire_ms, DEFAULT_REDIS_ACQUIRE_MS);
    DEFAULT_INT(redis_idle_s, DEFAULT_REDIS_IDLE_S);
    DEFAULT_INT(redis_connect_ms, DEFAULT_REDIS_CONNECT_MS);
    DEFAULT_INT(redis_command_ms, DEFAULT_REDIS_COMMAND_MS);
    DEFAULT_INT(redis_check_warn, 0);
    DEFAULT_INT(redis_reserve, DEFAULT_REDIS_RESERVE);
    DEFAULT_INT(signin, 1);
    DEFAULT_INT(signin_rate, 0);
    DEFAULT_INT(signin_burst, 0);
    DEFAULT_INT(signin_per_addr, 0);
    DEFAULT_INT(relay_ping_s, DEFAULT_RELAY_PING_S);
    DEFAULT_INT(relay_ping_timeout_s, DEFAULT_RELAY_PING_TIMEOUT_S);
    DEFAULT_INT(max_held_share, WORKER_BUDGET_DEFAULT_SHARE);
    DEFAULT_INT(max_sessions, 0);
}

static const char *set_chatd(cmd_parms *cmd, void *dummy, const char *id,
                             const char *url)
{
    bosh_server_conf *c = bosh_conf(cmd->server);
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    bosh_node_conf *n;
    char why[256];
    int i;
    (void)dummy;

    if (err)
        return err;
    if (!bosh_node_id_valid(id))
        return apr_psprintf(cmd->pool, "BoshChatd: node id '%s' must be 1-63 "
                            "characters of [A-Za-z0-9_.] (it is the sid prefix)", id);
    for (i = 0; i < c->nodes->nelts; i++)
        if (strcmp(APR_ARRAY_IDX(c->nodes, i, bosh_node_conf).id, id) == 0)
            return apr_psprintf(cmd->pool, "BoshChatd: node '%s' given twice", id);
    n = apr_array_push(c->nodes);
    n->id = id;
    n->url = url;
    if (bosh_endpoint_parse(url, &n->ep, why, sizeof(why)) != 0)
        return apr_psprintf(cmd->pool, "BoshChatd: %s", why);
    return NULL;
}

static const char *set_redis(cmd_parms *cmd, void *dummy, const char *url)
{
    bosh_server_conf *c = bosh_conf(cmd->server);
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    redis_url u;
    char why[256];
    (void)dummy;

    if (err)
        return err;
    if (redis_url_parse(url, &u, why, sizeof(why)) != 0)
        return apr_psprintf(cmd->pool, "BoshRedis: %s", why);
    c->redis_url = url;
    /* httpd reads its configuration as root: a password belongs in a file
     * only root reads (docs/configuration.md, BoshRedis), not in
     * mods-available/bosh.conf, which everyone may read. */
    if (u.password[0] && cmd->directive && cmd->directive->filename) {
        struct stat st;
        if (stat(cmd->directive->filename, &st) == 0 && (st.st_mode & S_IROTH))
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, cmd->server,
                         "mod_bosh: BOSH00161: BoshRedis in %s carries a password "
                         "and that file is readable by everyone (mode %04o): move "
                         "the line to a file only root reads, e.g. "
                         "/etc/apache2/bosh-secrets.conf 0600",
                         cmd->directive->filename, (unsigned)(st.st_mode & 07777));
    }
    memset(&u, 0, sizeof(u));
    return NULL;
}

/* The sentinels' list, made on first use in the config pool; its
 * password is wiped when the pool goes. */
static apr_status_t zero_sentinels(void *data)
{
    memset(data, 0, sizeof(redis_sentinels));
    return APR_SUCCESS;
}

static redis_sentinels *conf_sentinels(cmd_parms *cmd)
{
    bosh_server_conf *c = bosh_conf(cmd->server);
    if (!c->redis_sentinels) {
        c->redis_sentinels = apr_pcalloc(cmd->pool, sizeof(redis_sentinels));
        apr_pool_cleanup_register(cmd->pool, c->redis_sentinels, zero_sentinels,
                                  apr_pool_cleanup_null);
    }
    return c->redis_sentinels;
}

/* BoshRedisSentinel host:port [host:port ...] (commas also separate). */
static const char *set_redis_sentinel(cmd_parms *cmd, void *dummy, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    char why[256];
    (void)dummy;

    if (err)
        return err;
    if (redis_sentinels_add(conf_sentinels(cmd), arg, why, sizeof(why)) != 0)
        return apr_psprintf(cmd->pool, "BoshRedisSentinel: %s", why);
    return NULL;
}

static const char *set_redis_sentinel_master(cmd_parms *cmd, void *dummy, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    char why[256];
    (void)dummy;

    if (err)
        return err;
    if (redis_sentinels_set_master(conf_sentinels(cmd), arg, why, sizeof(why)) != 0)
        return apr_psprintf(cmd->pool, "BoshRedisSentinelMaster: %s", why);
    return NULL;
}

static const char *set_redis_sentinel_password(cmd_parms *cmd, void *dummy, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    char why[256];
    (void)dummy;

    if (err)
        return err;
    if (redis_sentinels_set_password(conf_sentinels(cmd), arg, why, sizeof(why)) != 0)
        return apr_psprintf(cmd->pool, "BoshRedisSentinelPassword: %s", why);
    /* Same rule as a password in BoshRedis. */
    if (*arg && cmd->directive && cmd->directive->filename) {
        struct stat st;
        if (stat(cmd->directive->filename, &st) == 0 && (st.st_mode & S_IROTH))
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, cmd->server,
                         "mod_bosh: BOSH00710: BoshRedisSentinelPassword in %s is "
                         "readable by everyone (mode %04o): move the line to a file "
                         "only root reads, e.g. /etc/apache2/bosh-secrets.conf 0600",
                         cmd->directive->filename, (unsigned)(st.st_mode & 07777));
    }
    return NULL;
}

static apr_status_t zero_secret(void *data)
{
    bosh_server_conf *c = data;
    if (c->relay_secret) {
        volatile char *p = (volatile char *)c->relay_secret;
        apr_size_t i;
        for (i = 0; i < c->relay_secret_len; i++)
            p[i] = 0;
    }
    return APR_SUCCESS;
}

/* Read now, while httpd reads its configuration as root: the file can be
 * one that www-data (the children) cannot read. The children inherit the
 * value in memory. */
static const char *set_relay_secret_file(cmd_parms *cmd, void *dummy,
                                         const char *path)
{
    bosh_server_conf *c = bosh_conf(cmd->server);
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    char why[512], *secret = NULL;
    size_t len = 0;
    (void)dummy;

    if (err)
        return err;
    path = ap_server_root_relative(cmd->pool, path);
    if (!path)
        return "BoshRelaySecretFile: bad path";
    if (relay_secret_load(path, &secret, &len, why, sizeof(why)) != 0)
        return apr_psprintf(cmd->pool, "BoshRelaySecretFile: %s", why);
    c->relay_secret_file = path;
    c->relay_secret = apr_pstrmemdup(cmd->pool, secret, len);
    c->relay_secret_len = len;
    relay_secret_free(secret, len);
    apr_pool_cleanup_register(cmd->pool, c, zero_secret, apr_pool_cleanup_null);
    return NULL;
}

static const char *set_domain(cmd_parms *cmd, void *dummy, const char *d)
{
    (void)dummy;
    bosh_conf(cmd->server)->domain = d;
    return NULL;
}

static const char *add_origin(cmd_parms *cmd, void *dummy, const char *o)
{
    (void)dummy;
    *(const char **)apr_array_push(bosh_conf(cmd->server)->allow_origins) = o;
    return NULL;
}

/* BoshTrustedProxy addr[/bits|/mask]...: the TCP peers (the address that
 * connected to httpd, not a forwarded one) whose X-Forwarded-Proto is
 * believed when deciding whether a password may be offered in clear. */
static const char *add_trusted_proxy(cmd_parms *cmd, void *dummy, const char *arg)
{
    char *ip = apr_pstrdup(cmd->pool, arg), *mask = strchr(ip, '/');
    apr_ipsubnet_t *sub;
    apr_status_t rv;
    char buf[120];
    (void)dummy;
    if (mask) *mask++ = '\0';
    rv = apr_ipsubnet_create(&sub, ip, mask, cmd->pool);
    if (rv != APR_SUCCESS)
        return apr_psprintf(cmd->pool, "BoshTrustedProxy: '%s' is not an IP address or "
                            "network (addr or addr/bits): %s", arg,
                            apr_strerror(rv, buf, sizeof buf));
    *(apr_ipsubnet_t **)apr_array_push(bosh_conf(cmd->server)->trusted_proxies) = sub;
    return NULL;
}

/* XEP-0156 links must be absolute http(s) URLs; nothing in them may need
 * quoting in XML or JSON (bosh_hostmeta.c writes them as they are). */
static const char *add_hostmeta_url(cmd_parms *cmd, void *dummy, const char *u)
{
    const char *c;
    (void)dummy;
    if (strncmp(u, "https://", 8) != 0 && strncmp(u, "http://", 7) != 0)
        return "BoshHostMetaURL: expected an absolute http:// or https:// URL";
    for (c = u; *c; c++)
        if ((unsigned char)*c <= 0x20 || *c == 0x7f || *c == '"' || *c == '\\' ||
            *c == '\'' || *c == '<' || *c == '>' || *c == '&')
            return "BoshHostMetaURL: the URL has a character that must be "
                   "percent-encoded";
    *(const char **)apr_array_push(bosh_conf(cmd->server)->hostmeta_urls) = u;
    return NULL;
}

static const char *set_signin(cmd_parms *cmd, void *dummy, int on)
{
    (void)dummy;
    bosh_conf(cmd->server)->signin = on ? 1 : 0;
    return NULL;
}

static const char *set_redis_check(cmd_parms *cmd, void *dummy, const char *v)
{
    (void)dummy;
    if (strcasecmp(v, "warn") == 0)
        bosh_conf(cmd->server)->redis_check_warn = 1;
    else if (strcasecmp(v, "refuse") == 0)
        bosh_conf(cmd->server)->redis_check_warn = 0;
    else
        return "BoshRedisCheck takes 'refuse' or 'warn'";
    return NULL;
}

static const char *set_signin_rate(cmd_parms *cmd, void *dummy, const char *rate,
                                   const char *burst)
{
    bosh_server_conf *c = bosh_conf(cmd->server);
    char *end;
    double v = strtod(rate, &end);
    (void)dummy;

    if (!*rate || *end || v < 0 || v > 1e6)
        return "BoshSigninRate: expected sign-ins per second (0 = no cap)";
    c->signin_rate = v;
    if (burst) {
        long b = strtol(burst, &end, 10);
        if (!*burst || *end || b < 1 || b > 1000000)
            return "BoshSigninRate: burst must be a whole number >= 1";
        c->signin_burst = (int)b;
    }
    return NULL;
}

/* Integer directives share one handler; cmd->info says which field and
 * its bounds, as mod_dbd's dbd_param_int does. */
typedef struct int_param {
    size_t offset;
    int    min, max;
} int_param;

#define INT_PARAM(f, lo, hi) \
    static const int_param param_##f = { APR_OFFSETOF(bosh_server_conf, f), lo, hi }
INT_PARAM(max_body, 256, BOSH_MAX_BODY_CEILING);
INT_PARAM(relay_ping_s, 0, 3600);
INT_PARAM(relay_ping_timeout_s, 1, 3600);
INT_PARAM(max_wait, 1, 3600);
INT_PARAM(redis_max_per_child, 1, 64);
INT_PARAM(redis_max_total, 1, 1000000);
INT_PARAM(redis_acquire_ms, 1, 60000);
INT_PARAM(redis_idle_s, 1, 86400);
INT_PARAM(redis_connect_ms, 1, 60000);
INT_PARAM(redis_command_ms, 0, 60000);
INT_PARAM(redis_reserve, 0, 1000000);
INT_PARAM(signin_per_addr, 0, 1000000);
INT_PARAM(max_held_share, 1, 100);
INT_PARAM(max_sessions, 0, 10000000);

static const char *set_int(cmd_parms *cmd, void *dummy, const char *arg)
{
    const int_param *ip = cmd->info;
    char *end;
    long v = strtol(arg, &end, 10);
    (void)dummy;

    if (ip == &param_max_body && !*end && v > ip->max)
        return apr_psprintf(cmd->pool, "BoshMaxBodySize: %ld is above %d, the "
                            "largest body a relay frame can carry (chatd refuses "
                            "frames over %u bytes, common/RELAY.md, and would drop "
                            "the whole relay connection with every request held "
                            "on it); use at most %d", v, ip->max,
                            RELAY_MAX_PAYLOAD, ip->max);
    if (!*arg || *end || v < ip->min || v > ip->max)
        return apr_psprintf(cmd->pool, "%s: expected a whole number between "
                            "%d and %d, got '%s'", cmd->cmd->name, ip->min,
                            ip->max, arg);
    *(int *)((char *)bosh_conf(cmd->server) + ip->offset) = (int)v;
    return NULL;
}

static const command_rec bosh_cmds[] = {
    AP_INIT_TAKE2("BoshChatd", set_chatd, NULL, RSRC_CONF,
                  "A chatd node: NODE_ID unix:/path | tcp:host:port (repeatable)"),
    AP_INIT_TAKE1("BoshRelaySecretFile", set_relay_secret_file, NULL, RSRC_CONF,
                  "File with the relay secret chatd expects in HELLO (chatd's "
                  "relay_secret_file); required for a tcp: BoshChatd"),
    AP_INIT_TAKE1("BoshDomain", set_domain, NULL, RSRC_CONF,
                  "The XMPP domain served (default localhost)"),
    AP_INIT_TAKE1("BoshMaxBodySize", set_int, (void *)&param_max_body, RSRC_CONF,
                  "Largest request body accepted, bytes (default 65536, at most 4128768)"),
    AP_INIT_TAKE1("BoshRelayPing", set_int, (void *)&param_relay_ping_s, RSRC_CONF,
                  "PING a relay connection silent this many seconds (default 10, 0 = off)"),
    AP_INIT_TAKE1("BoshRelayPingTimeout", set_int, (void *)&param_relay_ping_timeout_s,
                  RSRC_CONF, "Seconds without any answer to a PING before the chatd "
                  "node is taken out of service (default 5)"),
    AP_INIT_TAKE1("BoshMaxWait", set_int, (void *)&param_max_wait, RSRC_CONF,
                  "Longest BOSH wait a request may be held, seconds (default 60)"),
    AP_INIT_TAKE1("BoshRedis", set_redis, NULL, RSRC_CONF,
                  "Redis URL: redis://[:pw@]host[:port][/db] or unix:///path[?db=N]"),
    AP_INIT_ITERATE("BoshRedisSentinel", set_redis_sentinel, NULL, RSRC_CONF,
                    "Redis Sentinels that name the master: host:port ... (port "
                    "default 26379); BoshRedis then gives only password and db"),
    AP_INIT_TAKE1("BoshRedisSentinelMaster", set_redis_sentinel_master, NULL, RSRC_CONF,
                  "The master's name at the sentinels (their 'sentinel monitor NAME')"),
    AP_INIT_TAKE1("BoshRedisSentinelPassword", set_redis_sentinel_password, NULL,
                  RSRC_CONF, "The sentinels' password (requirepass on the sentinels)"),
    AP_INIT_TAKE1("BoshRedisMaxPerChild", set_int, (void *)&param_redis_max_per_child,
                  RSRC_CONF, "Redis connections per child at most (default 2)"),
    AP_INIT_TAKE1("BoshRedisMaxTotal", set_int, (void *)&param_redis_max_total,
                  RSRC_CONF, "Redis connections of all children at most (default 64)"),
    AP_INIT_TAKE1("BoshRedisAcquireTimeout", set_int, (void *)&param_redis_acquire_ms,
                  RSRC_CONF, "Longest wait for a pooled Redis connection, ms (default 500)"),
    AP_INIT_TAKE1("BoshRedisIdleTimeout", set_int, (void *)&param_redis_idle_s,
                  RSRC_CONF, "Close Redis connections idle this long, seconds (default 30)"),
    AP_INIT_TAKE1("BoshRedisConnectTimeout", set_int, (void *)&param_redis_connect_ms,
                  RSRC_CONF, "Redis connect timeout, ms (default 1000)"),
    AP_INIT_TAKE1("BoshRedisCommandTimeout", set_int, (void *)&param_redis_command_ms,
                  RSRC_CONF, "Redis command timeout, ms (default 1000, 0 = none)"),
    AP_INIT_TAKE1("BoshRedisReserve", set_int, (void *)&param_redis_reserve,
                  RSRC_CONF, "Redis connections the start-up check leaves for chatd's "
                  "pool and tools (default 32)"),
    AP_INIT_TAKE1("BoshRedisCheck", set_redis_check, NULL, RSRC_CONF,
                  "refuse (default) or warn when Redis maxclients is too low"),
    AP_INIT_FLAG("BoshSignin", set_signin, NULL, RSRC_CONF,
                 "On (default): new sessions allowed; Off: refuse with 503"),
    AP_INIT_TAKE12("BoshSigninRate", set_signin_rate, NULL, RSRC_CONF,
                   "New sessions per second for all frontends (0 = no cap) [burst]"),
    AP_INIT_TAKE1("BoshMaxHeldShare", set_int, (void *)&param_max_held_share,
                  RSRC_CONF, "Percent of httpd's workers held BOSH requests may take; "
                  "new sessions beyond it get 503 (default 75: a quarter stays "
                  "for the site)"),
    AP_INIT_TAKE1("BoshMaxSessions", set_int, (void *)&param_max_sessions,
                  RSRC_CONF, "BOSH sessions this server is sized for; the start-up "
                  "check warns when BoshMaxHeldShare of the workers cannot hold "
                  "them (default 0: no check)"),
    AP_INIT_TAKE1("BoshSigninPerAddress", set_int, (void *)&param_signin_per_addr,
                  RSRC_CONF, "New sessions per client address per minute (0 = no cap)"),
    AP_INIT_ITERATE("BoshAllowOrigin", add_origin, NULL, RSRC_CONF,
                    "Origins allowed for CORS (repeatable; * for any)"),
    AP_INIT_ITERATE("BoshTrustedProxy", add_trusted_proxy, NULL, RSRC_CONF,
                    "addresses/networks of TLS-terminating proxies whose "
                    "X-Forwarded-Proto: https lets chatd offer SASL PLAIN"),
    AP_INIT_ITERATE("BoshHostMetaURL", add_hostmeta_url, NULL, RSRC_CONF,
                    "BOSH URL(s) advertised by the bosh-hostmeta handler (XEP-0156)"),
    /* Single sign-on (bosh_sso.c): per location, never in .htaccess. */
    AP_INIT_FLAG("BoshAuthFromApache", bosh_set_auth_from_apache, NULL,
                 ACCESS_CONF | RSRC_CONF,
                 "On: vouch to chatd for the user httpd authenticated (SASL EXTERNAL)"),
    AP_INIT_TAKE1("BoshAuthJID", bosh_set_auth_jid, NULL, ACCESS_CONF | RSRC_CONF,
                  "JID for the authenticated user, %u = user (default %u)"),
    AP_INIT_TAKE1("BoshAuthDisplayName", bosh_set_auth_display_name, NULL,
                  ACCESS_CONF | RSRC_CONF,
                  "Display name source: header:NAME, env:NAME or none"),
    AP_INIT_TAKE1("BoshSeeOtherURI", bosh_set_see_other_uri, NULL,
                  ACCESS_CONF | RSRC_CONF,
                  "Answer every BOSH request with terminate see-other-uri "
                  "naming this URL (none = off)"),
    { NULL, { NULL }, NULL, 0, RAW_ARGS, NULL }
};

/* ---- configuration check (also under httpd -t / apachectl configtest) ---- */

/* A tcp: relay has no peer uid chatd could check: the secret is what
 * tells chatd that httpd is speaking, so a tcp BoshChatd needs one. */
static int bosh_check_config(apr_pool_t *pconf, apr_pool_t *plog,
                             apr_pool_t *ptemp, server_rec *s)
{
    bosh_server_conf *c = bosh_conf(s);
    int i, rv = OK;
    (void)pconf; (void)plog; (void)ptemp;

    for (i = 0; i < c->nodes->nelts; i++) {
        bosh_node_conf *n = &APR_ARRAY_IDX(c->nodes, i, bosh_node_conf);
        if (!n->ep.is_unix && !c->relay_secret) {
            ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_CRIT, 0, s,
                         "mod_bosh: BOSH00162: BoshChatd %s %s is a tcp relay and "
                         "needs BoshRelaySecretFile (the file with chatd's "
                         "relay_secret_file secret): without it chatd refuses the "
                         "connection", n->id, n->url);
            rv = HTTP_INTERNAL_SERVER_ERROR;
        }
    }
    return rv;
}

/* ---- start-up check ---- */

#define BOSH_STARTED_KEY "mod_bosh:started"

/*
 * Refuse to start when Redis would run out of connections before we hit
 * our own caps: that is how the 2012 HipChat outage started (maxclients
 * too low, extra Apache children holding connections). Old children still
 * finishing after a graceful restart count too, hence ServerLimit.
 */
/* The value of "field:" in an INFO reply, or -1. */
static apr_int64_t info_field(const char *info, const char *field)
{
    size_t n = strlen(field);
    const char *p = info;

    while (p && *p) {
        if (strncmp(p, field, n) == 0 && p[n] == ':')
            return apr_atoi64(p + n + 1);
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return -1;
}

/* restarting: a graceful (or plain) restart of a running httpd, not its
 * first start. A refusal there is fatal for the whole server (the parent
 * exits and takes every serving child with it), so it becomes a warning:
 * the children already serving stay, and the operator sees the warning in
 * the error log instead of an outage. */
static int check_redis_capacity(apr_pool_t *ptemp, server_rec *s,
                                bosh_server_conf *c, int restarting)
{
    redis_url u;
    redisContext *rc;
    redisReply *reply;
    char err[256], addr[300];
    int server_limit = 0, per_child_max, worst;
    apr_int64_t maxclients = -1;

    if (redis_url_parse(c->redis_url, &u, err, sizeof(err)) != 0)
        return OK;                      /* already refused by the directive */
    redis_url_describe(&u, addr, sizeof(addr));
    ap_mpm_query(AP_MPMQ_HARD_LIMIT_DAEMONS, &server_limit);
    if (server_limit < 1)
        server_limit = 1;
    per_child_max = server_limit * c->redis_max_per_child;
    worst = (c->redis_max_total < per_child_max ? c->redis_max_total : per_child_max)
            + c->redis_reserve;

    if (c->redis_sentinels && c->redis_sentinels->n > 0) {
        /* The master the sentinels name now is the one to check; after a
         * failover the replica promoted must have the same maxclients
         * (docs/operations.md). */
        redis_url found = u;
        unsigned next = 0;
        rc = redis_sentinel_open_master(c->redis_sentinels, &next, &u,
                                        apr_psprintf(ptemp, "mod_bosh:%s:%d:check",
                                                     s->server_hostname ? s->server_hostname
                                                                        : "httpd",
                                                     (int)getpid()),
                                        c->redis_connect_ms, c->redis_command_ms,
                                        &found, err, sizeof(err));
        redis_url_describe(&found, addr, sizeof(addr));
        memset(&found, 0, sizeof(found));
    }
    else
        rc = redis_conn_open(&u, apr_psprintf(ptemp, "mod_bosh:%s:%d:check",
                                              s->server_hostname ? s->server_hostname
                                                                 : "httpd", (int)getpid()),
                             c->redis_connect_ms, c->redis_command_ms, err, sizeof(err));
    if (!rc) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                     "mod_bosh: Redis %s not reachable at start-up (%s); "
                     "maxclients not checked", addr, err);
        return OK;
    }
    reply = redisCommand(rc, "CONFIG GET maxclients");
    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
        reply->element[1]->type == REDIS_REPLY_STRING)
        maxclients = apr_atoi64(reply->element[1]->str);
    if (reply)
        freeReplyObject(reply);
    if (maxclients < 0 && !rc->err) {
        /* CONFIG renamed away or refused (managed services): Redis 7
         * reports maxclients in INFO clients as well. */
        reply = redisCommand(rc, "INFO clients");
        if (reply && reply->type == REDIS_REPLY_STRING)
            maxclients = info_field(reply->str, "maxclients");
        if (reply)
            freeReplyObject(reply);
    }
    redisFree(rc);                      /* nothing may be inherited by children */

    if (maxclients < 0) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                     "mod_bosh: Redis %s: could not read maxclients (neither "
                     "CONFIG GET nor INFO clients tell it); make sure it is at "
                     "least %d", addr, worst);
        return OK;
    }
    if (maxclients < worst && restarting && !c->redis_check_warn) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                     "mod_bosh: BOSH00350: Redis %s maxclients is %" APR_INT64_T_FMT
                     " but httpd may open %d connections (min(BoshRedisMaxTotal %d, "
                     "ServerLimit %d x BoshRedisMaxPerChild %d) + BoshRedisReserve %d "
                     "for chatd); restarting anyway because httpd is already serving "
                     "(a first start would refuse): raise maxclients or lower the caps",
                     addr, maxclients, worst, c->redis_max_total, server_limit,
                     c->redis_max_per_child, c->redis_reserve);
        return OK;
    }
    if (maxclients < worst) {
        ap_log_error(APLOG_MARK, c->redis_check_warn ? APLOG_WARNING : APLOG_CRIT, 0, s,
                     "mod_bosh: Redis %s maxclients is %" APR_INT64_T_FMT " but httpd may open %d "
                     "connections (min(BoshRedisMaxTotal %d, ServerLimit %d x "
                     "BoshRedisMaxPerChild %d) + BoshRedisReserve %d for chatd); "
                     "raise maxclients, lower the caps, or set BoshRedisCheck warn",
                     addr, maxclients, worst, c->redis_max_total, server_limit,
                     c->redis_max_per_child, c->redis_reserve);
        return c->redis_check_warn ? OK : HTTP_INTERNAL_SERVER_ERROR;
    }
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s,
                 "mod_bosh: Redis %s maxclients %" APR_INT64_T_FMT " >= worst case %d",
                 addr, maxclients, worst);
    return OK;
}

/*
 * The worker budget (worker_budget.h): held requests may take
 * BoshMaxHeldShare of the workers the MPM may run, server-wide
 * (MaxRequestWorkers: daemons x threads) and per child (ThreadsPerChild).
 * Say what that is at start-up, and warn when it cannot hold the sessions
 * the operator sized the server for (BoshMaxSessions).
 */
static void check_worker_budget(server_rec *s, bosh_server_conf *c)
{
    int daemons = 0, threads = 0;

    if (ap_mpm_query(AP_MPMQ_MAX_DAEMONS, &daemons) != APR_SUCCESS)
        daemons = 0;
    if (ap_mpm_query(AP_MPMQ_MAX_THREADS, &threads) != APR_SUCCESS)
        threads = 0;
    worker_budget_compute(&bosh_budget, daemons, threads, c->max_held_share);
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, s,
                 "mod_bosh: BOSH00401: worker budget: %d workers (%s, %d x %d); "
                 "BoshMaxHeldShare %d%% lets held BOSH requests take %d of them "
                 "(%d per child), the rest stay for the site",
                 bosh_budget.workers, ap_show_mpm(), daemons < 1 ? 1 : daemons,
                 bosh_budget.threads_per_child, bosh_budget.share,
                 bosh_budget.max_held, bosh_budget.child_max_held);
    if (bosh_budget.max_held < 1)
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                     "mod_bosh: BOSH00402: BoshMaxHeldShare %d%% of %d workers "
                     "is less than one: every new BOSH session will be refused; "
                     "raise MaxRequestWorkers or BoshMaxHeldShare",
                     bosh_budget.share, bosh_budget.workers);
    else if (c->max_sessions > bosh_budget.max_held)
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                     "mod_bosh: BOSH00403: BoshMaxSessions %d cannot be held: "
                     "every signed-in user keeps one request (one worker) held, "
                     "and BoshMaxHeldShare %d%% of %d workers is %d; sessions "
                     "beyond that are refused with 503. Raise MaxRequestWorkers "
                     "to at least %ld (httpd-conf/bosh-mpm.conf)",
                     c->max_sessions, bosh_budget.share, bosh_budget.workers,
                     bosh_budget.max_held,
                     worker_budget_workers_for(&bosh_budget, c->max_sessions));
}

static int bosh_post_config(apr_pool_t *pconf, apr_pool_t *plog,
                            apr_pool_t *ptemp, server_rec *s)
{
    bosh_server_conf *main_conf = bosh_conf(s);
    server_rec *vs;
    int restarting;
    (void)pconf; (void)plog;

    for (vs = s; vs; vs = vs->next)
        bosh_conf_finalize(bosh_conf(vs));
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG)
        return OK;
    /* First start or restart? The process pool lives across restarts (and
     * across the DSO reload between the two passes of the first start), so
     * a flag left there by an earlier real pass means httpd is already
     * serving. The preflight pass returned above and never sets it. */
    {
        void *seen = NULL;
        apr_pool_userdata_get(&seen, BOSH_STARTED_KEY, s->process->pool);
        restarting = seen != NULL;
        if (!seen)
            apr_pool_userdata_set((const void *)1, BOSH_STARTED_KEY,
                                  apr_pool_cleanup_null, s->process->pool);
    }
    if (main_conf->nodes->nelts == 0 && !main_conf->redis_url)
        return OK;                      /* module loaded but not configured */
    check_worker_budget(s, main_conf);
    {
        int server_limit = 0;
        ap_mpm_query(AP_MPMQ_HARD_LIMIT_DAEMONS, &server_limit);
        /* Slots for old-generation children too; dead ones are reclaimed.
         * The segment also counts held requests, so it exists without
         * BoshRedis too. */
        redis_cap_init(s, (server_limit > 0 ? server_limit : 1) * 2 + 16,
                       main_conf->redis_max_total);
    }
    if (main_conf->redis_sentinels) {
        redis_url u;
        char why[256];
        if (!main_conf->redis_url) {
            ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s,
                         "mod_bosh: BOSH00711: BoshRedisSentinel needs BoshRedis "
                         "redis://[:password@]any-host[/db]: the master's password and "
                         "database come from it, its address from the sentinels");
            return HTTP_INTERNAL_SERVER_ERROR;
        }
        if (redis_url_parse(main_conf->redis_url, &u, why, sizeof(why)) == 0 &&
            redis_sentinels_check(main_conf->redis_sentinels, &u, why, sizeof(why)) != 0) {
            ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s,
                         "mod_bosh: BOSH00712: BoshRedisSentinel: %s", why);
            memset(&u, 0, sizeof(u));
            return HTTP_INTERNAL_SERVER_ERROR;
        }
        memset(&u, 0, sizeof(u));
    }
    if (main_conf->redis_url)
        return check_redis_capacity(ptemp, s, main_conf, restarting);
    return OK;
}

/* ---- child life ---- */

/*
 * Whether parked requests and the housekeeper should send DRAIN now.
 *
 * Under event and worker only once child_stopping has run. Those MPMs say
 * STOPPING at the top of signal_threads(), and on an ungraceful stop the
 * main thread then walks worker_sockets[] closing every client socket
 * (close_worker_sockets) before it runs child_stopping. A DRAIN sent from
 * a tick in between made chatd answer every held request at once, so
 * hundreds of workers finished inside that walk; a worker's connection
 * pool (and socket) freed there while the main thread still reads the
 * socket is the SIGSEGV in apr_os_sock_get() seen in the 10,000-session
 * benchmark (1000 threads a child). httpd's own workers can still race there (docs/benchmarks.md);
 * we no longer add to it. Prefork has no such walk and never calls
 * child_stopping on a graceful restart, so there the MPM state is what we
 * go by.
 */
int bosh_child_is_stopping(void)
{
    int state = AP_MPMQ_RUNNING;

    if (bosh_child_state && bosh_child_state->stopping)
        return 1;
    if (child_threaded)
        return 0;
    if (ap_mpm_query(AP_MPMQ_MPM_STATE, &state) == APR_SUCCESS &&
        state == AP_MPMQ_STOPPING)
        return 1;
    return 0;
}

void bosh_child_drain(int may_block)
{
    bosh_child *ch = bosh_child_state;
    int i;

    if (!ch)
        return;
    ch->stopping = 1;
    for (i = 0; i < ch->nrelays; i++)
        if (ch->relays[i])
            relay_client_drain(ch->relays[i], may_block);
}

/* Every second: close idle Redis connections; notice a stopping child
 * that got no child_stopping call (prefork graceful) and drain. */
static void *housekeeper_main(void *arg)
{
    bosh_child *ch = arg;

    while (!housekeeper_stop) {
        int i;
        for (i = 0; i < 10 && !housekeeper_stop; i++)
            usleep(100 * 1000);
        if (housekeeper_stop)
            break;
        redis_cap_reap();               /* counts of children killed -9 */
        if (ch->redis) {
            redis_pool_maintain(ch->redis);
            redis_pool_check_master(ch->redis);
        }
        if (bosh_child_is_stopping())
            bosh_child_drain(1);
    }
    return NULL;
}

static void bosh_child_stopping(apr_pool_t *pchild, int graceful)
{
    bosh_child *ch = bosh_child_state;
    int threaded = 0, i;
    (void)pchild;

    /* Prefork only calls this from clean_child_exit, which may be a
     * signal handler: never block there. Nor on an ungraceful stop: the
     * relays are broken just below, and a writer stuck on a full relay
     * socket must not hold the main thread past the parent's SIGKILL. */
    ap_mpm_query(AP_MPMQ_IS_THREADED, &threaded);
    bosh_child_drain(threaded != AP_MPMQ_NOT_SUPPORTED && graceful);
    /* Ungraceful stop: event has already closed every client socket
     * (close_worker_sockets), so no answer can reach anyone, and the main
     * thread now joins the workers. A parked request would wait for
     * chatd's DRAIN answer or its BOSH wait; if chatd is slow the parent
     * SIGKILLs us at 9 s. Break the relays (no join: the pre-cleanup
     * joins), which fails every parked request at once. */
    if (!graceful && ch)
        for (i = 0; i < ch->nrelays; i++)
            relay_client_stop(ch->relays[i], 0);
}

/* Pre-cleanup on pchild: runs before the request pools die. */
static apr_status_t bosh_child_cleanup(void *data)
{
    bosh_child *ch = data;
    int threaded = 0, join, i;

    ap_mpm_query(AP_MPMQ_IS_THREADED, &threaded);
    /* Threaded MPMs run this from the main thread after joining the
     * workers; prefork may run it from a signal handler (just_die). */
    join = threaded != AP_MPMQ_NOT_SUPPORTED;
    ch->stopping = 1;
    housekeeper_stop = 1;
    if (housekeeper_started && join) {
        pthread_join(housekeeper, NULL);
        housekeeper_started = 0;
    }
    for (i = 0; i < ch->nrelays; i++)
        relay_client_stop(ch->relays[i], join);
    if (ch->redis)
        redis_pool_shutdown(ch->redis);
    redis_cap_child_detach();
    bosh_child_state = NULL;
    return APR_SUCCESS;
}

static void bosh_child_init(apr_pool_t *pchild, server_rec *s)
{
    bosh_server_conf *c = bosh_conf(s);
    bosh_child *ch;
    const char *host = s->server_hostname ? s->server_hostname : "httpd";
    const char *peer = apr_psprintf(pchild, "mod_bosh:%s:%d", host, (int)getpid());
    int i;

    if (c->nodes->nelts == 0 && !c->redis_url)
        return;                         /* module loaded but not configured */

    /* malloc, not pchild: under prefork the housekeeping and reader
     * threads are not joined (see bosh_child_cleanup) and may look at this
     * between the destruction of pchild and exit(). */
    ch = calloc(1, sizeof(*ch));
    ch->s = s;
    ch->conf = c;
    ch->nrelays = c->nodes->nelts;
    ch->relays = calloc((size_t)ch->nrelays + 1, sizeof(relay_client *));
    for (i = 0; i < ch->nrelays; i++) {
        bosh_node_conf *n = &APR_ARRAY_IDX(c->nodes, i, bosh_node_conf);
        ch->relays[i] = relay_client_create(s, n->id, n->url, &n->ep, peer,
                                            c->relay_secret, c->relay_secret_len,
                                            c->relay_ping_s * 1000,
                                            c->relay_ping_timeout_s * 1000);
    }
    if (c->redis_url) {
        redis_pool_config rc;
        char err[256];
        memset(&rc, 0, sizeof(rc));
        if (redis_url_parse(c->redis_url, &rc.url, err, sizeof(err)) == 0) {
            rc.max_per_child = c->redis_max_per_child;
            rc.acquire_ms = c->redis_acquire_ms;
            rc.idle_s = c->redis_idle_s;
            rc.connect_ms = c->redis_connect_ms;
            rc.command_ms = c->redis_command_ms;
            rc.name_prefix = peer;
            rc.sentinels = c->redis_sentinels && c->redis_sentinels->n > 0
                           ? c->redis_sentinels : NULL;
            ch->redis = redis_pool_create(s, &rc);
        }
    }
    if (redis_cap_child_attach() != 0)
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                     "mod_bosh: BOSH00404: no slot in the shared-memory table; "
                     "this child's Redis connections and held requests count "
                     "only against its own caps");
    bosh_child_state = ch;
    ap_mpm_query(AP_MPMQ_IS_THREADED, &child_threaded);
    child_threaded = child_threaded != AP_MPMQ_NOT_SUPPORTED;
    housekeeper_stop = 0;
    if (pthread_create(&housekeeper, NULL, housekeeper_main, ch) == 0)
        housekeeper_started = 1;
    else
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s,
                     "mod_bosh: cannot start the housekeeping thread; idle Redis "
                     "connections will only be closed on use");
    /* On pchild itself, so it runs before any subpool (mod_watchdog). */
    apr_pool_pre_cleanup_register(pchild, ch, bosh_child_cleanup);
}

/* An error answer httpd makes itself for one of our handlers (405, 413,
 * a bad chunked body ...) is built on a fresh filter chain: give it the
 * same protective headers as our own answers (bosh_protect_answer). */
static void bosh_insert_error_filter(request_rec *r)
{
    if (r->handler && (strcmp(r->handler, "bosh") == 0 ||
                       strcmp(r->handler, "bosh-prebind") == 0 ||
                       strcmp(r->handler, "bosh-status") == 0 ||
                       strcmp(r->handler, "bosh-hostmeta") == 0))
        bosh_protect_answer(r);
}

static void bosh_register_hooks(apr_pool_t *p)
{
    (void)p;
    ap_hook_check_config(bosh_check_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(bosh_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(bosh_child_init, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_stopping(bosh_child_stopping, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(bosh_handler, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(bosh_status_handler, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(bosh_prebind_handler, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(bosh_hostmeta_handler, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_insert_error_filter(bosh_insert_error_filter, NULL, NULL,
                                APR_HOOK_MIDDLE);
    /* After mod_headers (AP_FTYPE_CONTENT_SET), before the HTTP header. */
    ap_register_output_filter(BOSH_HEADERS_FILTER, bosh_headers_filter, NULL,
                              AP_FTYPE_PROTOCOL - 1);
    APR_OPTIONAL_HOOK(ap, status_hook, bosh_status_hook, NULL, NULL,
                      APR_HOOK_MIDDLE);
}

AP_DECLARE_MODULE(bosh) = {
    STANDARD20_MODULE_STUFF,
    bosh_create_dir_config,     /* create per-directory config structure */
    bosh_merge_dir_config,      /* merge per-directory config structures */
    bosh_create_server_config,  /* create per-server config structure */
    bosh_merge_server_config,   /* merge per-server config structures */
    bosh_cmds,                  /* command apr_table_t */
    bosh_register_hooks,        /* register hooks */
    AP_MODULE_FLAG_NONE         /* flags */
};
