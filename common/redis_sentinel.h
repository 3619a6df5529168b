/*
 * redis_sentinel: finding the Redis master through Redis Sentinel (issue 16,
 * "Redis HA"), shared by chatd (async, chatd/redis_async.c), mod_bosh's
 * pool and chatctl (blocking, below).
 *
 * Why a layer of its own: after a failover the old master's address is a
 * replica (writes answer -READONLY) or nothing at all, so a fixed address
 * means sign-in never comes back by itself. The sentinels know the master:
 * SENTINEL get-master-addr-by-name on connect, and again whenever a
 * connection fails or answers -READONLY / -LOADING / -MASTERDOWN.
 *
 * The master's password and database number still come from the `redis`
 * URL (BoshRedis); with sentinels configured only its host and port are
 * replaced. Sentinels may have a password of their own (requirepass on the
 * sentinels).
 *
 * The pure parts (list parsing, reply reading, the back-off) are here so
 * unit tests drive them without a server.
 */
#ifndef COMMON_REDIS_SENTINEL_H
#define COMMON_REDIS_SENTINEL_H

#include <stddef.h>
#include <stdint.h>
#include <hiredis/hiredis.h>
#include "redis_conn.h"

#define REDIS_SENTINEL_MAX 16

typedef struct redis_sentinels {
    int       n;                           /* 0: no sentinels configured */
    redis_url addr[REDIS_SENTINEL_MAX];    /* host, port (default 26379), password */
    char      master[128];                 /* the name the sentinels monitor */
} redis_sentinels;

/* Append "host:port,host:port,..." ([v6]:port; port defaults to 26379) to
 * s. Returns 0, or -1 with err. */
int redis_sentinels_add(redis_sentinels *s, const char *list, char *err, size_t errlen);
/* Master name: letters, digits, '-', '_', '.', at most 127 bytes. */
int redis_sentinels_set_master(redis_sentinels *s, const char *name, char *err, size_t errlen);
/* Every sentinel's password (NULL or "" = none). */
int redis_sentinels_set_password(redis_sentinels *s, const char *pw, char *err, size_t errlen);
/* Whether the configuration is usable: sentinels and a master name, or
 * neither; and the master URL is TCP. 0 or -1 with err. */
int redis_sentinels_check(const redis_sentinels *s, const redis_url *master,
                          char *err, size_t errlen);

/* The answer to SENTINEL get-master-addr-by-name: 0 with host/port set;
 * 1 when the sentinel does not know the name (nil); -1 otherwise (err). */
int redis_sentinel_parse_master(const redisReply *r, char *host, size_t hostlen,
                                int *port, char *err, size_t errlen);
/* The answer to ROLE: 1 master, 0 anything else (replica, sentinel, error). */
int redis_role_is_master(const redisReply *r);
/* An error reply that means "this is not (or not yet) the master": ask
 * the sentinels again. READONLY, LOADING, MASTERDOWN. */
int redis_error_means_failover(const char *errstr);
/* Jittered exponential back-off: attempt 0 gives about min_ms; each later
 * attempt doubles, up to max_ms; the result is uniform in [d/2, d] where
 * d is that value (rnd: any random 32 bits). */
unsigned redis_backoff_ms(unsigned attempt, unsigned min_ms, unsigned max_ms, uint32_t rnd);

/* Blocking: ask the sentinels in turn (starting at *next, advanced past a
 * failing one) where the master is. 0 with host/port, or -1 with err. */
int redis_sentinel_ask(const redis_sentinels *s, unsigned *next, const char *name,
                       int connect_ms, int command_ms, char *host, size_t hostlen,
                       int *port, char *err, size_t errlen);

/* Blocking: ask the sentinels in turn (starting at *next, which is
 * advanced past a failing one) for the master, then open a named,
 * validated connection to it (redis_conn_open: CLOEXEC, AUTH, SELECT,
 * CLIENT SETNAME name) and check with ROLE that it is the master. The
 * sentinel connection is named "<name>:sentinel" and closed before
 * returning. master is the `redis` URL; *found gets the address used.
 * Returns NULL with err when no sentinel answered or the master refused. */
redisContext *redis_sentinel_open_master(const redis_sentinels *s, unsigned *next,
                                         const redis_url *master, const char *name,
                                         int connect_ms, int command_ms,
                                         redis_url *found, char *err, size_t errlen);

#endif
