/*
 * redis_pool: the capped, per-child pool of Redis connections.
 *
 * Why hand-rolled rather than apr_reslist: we need an idle count for the
 * status page, closing of idle connections without traffic (an idle child
 * must end up holding zero connections), a connect back-off (no reconnect
 * storm when Redis is down), and connects made outside the pool lock.
 *
 * Rules (docs/architecture.md, notes on the HipChat outage):
 *  - created in child_init, never before fork; min = 0 (no eager connect);
 *  - hard cap per child; acquire waits at most acquire_ms, then fails so
 *    the caller answers 503 quickly;
 *  - a connection that saw an error is never handed out again, and the
 *    idle ones are flushed with it (after a Redis restart they are dead too);
 *  - never held across a relay wait: acquire, one command, release.
 */
#ifndef MOD_BOSH_REDIS_POOL_H
#define MOD_BOSH_REDIS_POOL_H

#include "httpd.h"
#include "../common/redis_conn.h"
#include "../common/redis_sentinel.h"

typedef struct redis_pool redis_pool;

typedef struct redis_pool_config {
    redis_url url;
    int  max_per_child;
    int  acquire_ms;
    int  idle_s;
    int  connect_ms;
    int  command_ms;
    const char *name_prefix;     /* "mod_bosh:<host>:<pid>"; ":<n>" is added */
    /* Non-NULL: every new connection asks these sentinels for the master
     * (url gives password and db) and checks ROLE; it lives as long as
     * the configuration. */
    const redis_sentinels *sentinels;
} redis_pool_config;

typedef enum redis_pool_status {
    RP_OK = 0,
    RP_TIMEOUT,      /* cap reached and nobody released in time */
    RP_DOWN,         /* connect failed (or back-off after a failure) */
    RP_TOTAL_CAP,    /* BoshRedisMaxTotal reached across all children */
    RP_STOPPING      /* the child is going away */
} redis_pool_status;

typedef struct redis_pool_stats {
    int      in_use, idle, total, max;
    unsigned opened, closed_idle, waits, acquire_timeouts, failures,
             total_cap_refusals;
} redis_pool_stats;

redis_pool *redis_pool_create(server_rec *s, const redis_pool_config *cfg);
redis_pool_status redis_pool_acquire(redis_pool *p, redisContext **out);
/* broken: the connection saw an error (c->err, NULL reply); discard it. */
void redis_pool_release(redis_pool *p, redisContext *c, int broken);
/* Close idle connections older than idle_s. Cheap; call every second. */
void redis_pool_maintain(redis_pool *p);
/* With sentinels: at most every 2 s, while the child holds connections,
 * ask whether the master moved; if so the connections to the old one are
 * closed (idle ones now, busy ones on release). Blocking (a sentinel round
 * trip): call from the housekeeping thread only. */
void redis_pool_check_master(redis_pool *p);
/* Child exit: refuse new acquires, close idle connections. Uses a
 * try-lock, so it is safe even from prefork's signal-handler exit. */
void redis_pool_shutdown(redis_pool *p);
void redis_pool_get_stats(redis_pool *p, redis_pool_stats *st);
const char *redis_pool_address(const redis_pool *p);

#endif
