/*
 * redis_async: chatd's Redis pool, hiredis async on the event loop.
 *
 * Why async: chatd must never block on Redis (a slow Redis must not stall
 * chat). Connections are capped (redis_max_conns), named with CLIENT
 * SETNAME chatd:<host>:<pid>:<n>, reconnected with back-off, and a
 * connection that errors is dropped (its pending callbacks get err).
 * Commands are spread over the live connections; when none is up the
 * callback gets an error at once (sign-in then fails fast and retryably).
 */
#ifndef CHATD_REDIS_ASYNC_H
#define CHATD_REDIS_ASYNC_H

#include <hiredis/hiredis.h>
#include "loop.h"
#include "../../common/redis_sentinel.h"

typedef struct redis_async redis_async;
typedef struct redis_async_req redis_async_req;

/* reply is NULL when err is set; reply is freed after the callback returns. */
typedef void (*redis_async_cb)(redisReply *reply, const char *err, void *ud);

redis_async     *redis_async_new(loop *l, const char *url, int max_conns);
/* The same, finding the master through sentinels when sentinels->n > 0
 * (url then gives only the password and database): see redis_async.c. */
redis_async     *redis_async_new_ha(loop *l, const char *url, int max_conns,
                                    const redis_sentinels *sentinels);
void             redis_async_free(redis_async *ra);   /* pending callbacks get err */
/* Returns a handle (or NULL if the callback already ran with an error). */
redis_async_req *redis_async_command(redis_async *ra, redis_async_cb cb, void *ud,
                                     const char *fmt, ...);
redis_async_req *redis_async_commandargv(redis_async *ra, redis_async_cb cb, void *ud,
                                         int argc, const char **argv, const size_t *argvlen);
/* The same, on the connection that key maps to (while it is up): commands
 * issued about one key run in Redis in the order they were issued, e.g. a
 * room's history write before the load of the same room re-created. */
redis_async_req *redis_async_command_keyed(redis_async *ra, const char *key,
                                           redis_async_cb cb, void *ud,
                                           const char *fmt, ...);
redis_async_req *redis_async_commandargv_keyed(redis_async *ra, const char *key,
                                               redis_async_cb cb, void *ud, int argc,
                                               const char **argv, const size_t *argvlen);
/* A write that must survive a failover (issue 16): the command, then
 * WAIT replicas wait_ms on the same connection. cb gets the command's
 * reply (scalar replies only: type, integer, str) once at least that many
 * replicas have it; otherwise an err ("not acknowledged by a replica" when
 * only the master has it: the write may or may not survive, so the command
 * must be safe to run again). replicas <= 0: a plain keyed command. Not
 * forgettable: cb is always called. */
int              redis_async_commandargv_keyed_durable(redis_async *ra, const char *key,
                                                       int replicas, int wait_ms,
                                                       redis_async_cb cb, void *ud, int argc,
                                                       const char **argv,
                                                       const size_t *argvlen);
/* The requester is going away: its callback will not be called. The
 * handle is valid only until its callback runs: clear it there. */
void             redis_async_forget(redis_async_req *req);
int              redis_async_connected(const redis_async *ra);   /* live connections */

#endif
