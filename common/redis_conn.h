/*
 * redis_conn: one blocking hiredis connection, set up the way every part of
 * this project needs it: one URL form for TCP and Unix sockets, connect
 * and command timeouts, TCP keepalive (TCP only), AUTH, SELECT, CLIENT
 * SETNAME (so CLIENT LIST shows who holds it), validated with a round trip
 * before it is handed out (Redis at maxclients accepts, then refuses on
 * the first command).
 *
 * URL forms:  redis://[:password@]host[:port][/db]
 *             unix:///path/to/redis.sock[?db=N][&password=P]
 */
#ifndef COMMON_REDIS_CONN_H
#define COMMON_REDIS_CONN_H

#include <stddef.h>
#include <hiredis/hiredis.h>

typedef struct redis_url {
    int  is_unix;
    char host[256];
    int  port;                 /* default 6379 */
    char path[256];            /* unix socket path */
    char password[256];        /* "" = no AUTH */
    int  db;                   /* default 0 */
} redis_url;

int  redis_url_parse(const char *url, redis_url *out, char *err, size_t errlen);
/* "host:port" or "unix:/path" for log lines. */
const char *redis_url_describe(const redis_url *u, char *buf, size_t buflen);

/* Connect, AUTH, SELECT, CLIENT SETNAME name (NULL: none), PING.
 * connect_ms bounds connect; command_ms (0 = none) becomes the socket
 * timeout for every later command. Returns NULL with err filled. */
redisContext *redis_conn_open(const redis_url *u, const char *name,
                              int connect_ms, int command_ms,
                              char *err, size_t errlen);

#endif
