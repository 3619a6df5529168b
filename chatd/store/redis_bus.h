/*
 * redis_bus: the node's one Redis subscriber connection (issue 16).
 *
 * Why its own connection and not the pool: a connection in subscribe mode
 * takes no other command, and hiredis 0.14's async layer knows SUBSCRIBE
 * but not Redis 7's sharded SSUBSCRIBE (an "smessage" reply trips its
 * assertion). So this is a plain non-blocking redisContext on chatd's loop:
 * we write the handshake and SSUBSCRIBEs, then read pushed messages with
 * redisBufferRead/redisGetReplyFromReader. It is named with CLIENT SETNAME
 * chatd:<host>:<pid>:bus (like the pool's chatd:<host>:<pid>:<n>) and
 * main.c takes it from redis_max_conns. Lost: reconnected with back-off,
 * and `up` is called again once every channel is subscribed, because
 * whatever was published meanwhile is gone (pub/sub keeps nothing).
 */
#ifndef CHATD_REDIS_BUS_H
#define CHATD_REDIS_BUS_H

#include <stddef.h>
#include "loop.h"

typedef struct redis_bus redis_bus;

typedef void (*redis_bus_msg_cb)(const char *channel, const char *payload, size_t len,
                                 void *ud);
/* Every channel is subscribed (first time or after a reconnect). */
typedef void (*redis_bus_up_cb)(void *ud);

redis_bus *redis_bus_new(loop *l, const char *url, const char *const *channels,
                         int nchannels, redis_bus_msg_cb on_msg, redis_bus_up_cb on_up,
                         void *ud);
void       redis_bus_free(redis_bus *b);
int        redis_bus_is_up(const redis_bus *b);

#endif
