/*
 * redis_bus: one sharded pub/sub subscriber on the loop (see redis_bus.h).
 *
 * The connection goes: connecting (non-blocking connect, handshake and
 * SSUBSCRIBEs written at once, replies counted) -> up (every channel
 * confirmed; "smessage" pushes handed to on_msg) -> dropped (back-off,
 * then again). A PING every RB_PING_MS while up, answered within
 * RB_DEADLINE_MS, tells a Redis that went silent from a quiet channel.
 */
#include "redis_bus.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <hiredis/hiredis.h>
#include "../../common/redis_conn.h"
#include "log.h"

#define RB_DEADLINE_MS   2000   /* connect + handshake, and a PING's answer */
#define RB_PING_MS       5000
#define RB_BACKOFF_MIN   100
#define RB_BACKOFF_MAX   2000

struct redis_bus {
    loop            *loop;
    redis_url        url;
    int              url_ok;
    char             where[300];
    char           **channels;
    int              nchannels;
    redis_bus_msg_cb on_msg;
    redis_bus_up_cb  on_up;
    void            *ud;

    redisContext    *c;
    int              up;
    int              replies_left;   /* handshake + confirmations before up */
    int              want_write;
    uint64_t         deadline;       /* 0: none */
    unsigned         backoff;
    loop_timer      *timer;          /* reconnect, deadline or ping */
};

static void bus_connect(redis_bus *b);

static void timer_set(redis_bus *b, uint64_t ms, loop_timer_cb cb)
{
    loop_timer_cancel(b->loop, b->timer);
    b->timer = loop_timer_add(b->loop, ms, cb, b);
}

static void reconnect_cb(loop *l, void *ud)
{
    (void)l;
    redis_bus *b = ud;
    b->timer = NULL;
    bus_connect(b);
}

static void bus_drop(redis_bus *b, const char *why)
{
    if (b->c) {
        log_warn("redis bus %s: BOSH00650: subscriber connection %s: %s; messages "
                 "published to this node meanwhile are lost (senders see 0 receivers)",
                 b->where, b->up ? "lost" : "failed", why);
        loop_unwatch(b->loop, b->c->fd);
        redisFree(b->c);
        b->c = NULL;
    }
    b->up = 0;
    b->deadline = 0;
    if (!b->backoff) b->backoff = RB_BACKOFF_MIN;
    timer_set(b, b->backoff, reconnect_cb);
    b->backoff = b->backoff * 2 > RB_BACKOFF_MAX ? RB_BACKOFF_MAX : b->backoff * 2;
}

static void on_io(loop *l, int fd, unsigned events, void *ud);

static void watch_io(redis_bus *b)
{
    loop_watch(b->loop, b->c->fd, LOOP_READ | (b->want_write ? LOOP_WRITE : 0), on_io, b);
}

static void flush_out(redis_bus *b)
{
    int done = 0;
    if (redisBufferWrite(b->c, &done) != REDIS_OK) { bus_drop(b, b->c->errstr); return; }
    b->want_write = !done;
    watch_io(b);
}

static void ping_cb(loop *l, void *ud);

static void deadline_cb(loop *l, void *ud)
{
    (void)l;
    redis_bus *b = ud;
    b->timer = NULL;
    bus_drop(b, b->up ? "no answer to PING" : "connect or subscribe timed out");
}

static void ping_cb(loop *l, void *ud)
{
    (void)l;
    redis_bus *b = ud;
    b->timer = NULL;
    if (!b->c) return;
    const char *argv[] = { "PING" };
    redisAppendCommandArgv(b->c, 1, argv, NULL);
    b->replies_left++;
    flush_out(b);
    if (b->c) timer_set(b, RB_DEADLINE_MS, deadline_cb);
}

/* ["smessage", channel, payload] or a confirmation / PING answer. */
static void handle_reply(redis_bus *b, redisReply *r)
{
    if (r->type == REDIS_REPLY_ERROR) { bus_drop(b, r->str); return; }
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
        r->element[0]->type == REDIS_REPLY_STRING &&
        strcmp(r->element[0]->str, "smessage") == 0 &&
        r->element[2]->type == REDIS_REPLY_STRING) {
        b->on_msg(r->element[1]->str, r->element[2]->str, r->element[2]->len, b->ud);
        return;
    }
    if (b->replies_left > 0 && --b->replies_left == 0) {
        if (!b->up) {
            b->up = 1;
            b->backoff = 0;
            log_info("redis bus %s: BOSH00651: subscribed to %d channel(s)", b->where,
                     b->nchannels);
            timer_set(b, RB_PING_MS, ping_cb);
            b->on_up(b->ud);
        } else {
            timer_set(b, RB_PING_MS, ping_cb);     /* PING answered */
        }
    }
}

static void on_io(loop *l, int fd, unsigned events, void *ud)
{
    (void)l; (void)fd;
    redis_bus *b = ud;
    if (!b->c) return;
    if (events & LOOP_WRITE) { flush_out(b); if (!b->c) return; }
    if (!(events & LOOP_READ)) return;
    if (redisBufferRead(b->c) != REDIS_OK) { bus_drop(b, b->c->errstr); return; }
    void *reply;
    while (b->c) {
        if (redisGetReplyFromReader(b->c, &reply) != REDIS_OK) {
            bus_drop(b, b->c->errstr);
            return;
        }
        if (!reply) break;
        handle_reply(b, reply);     /* may drop b->c: the loop ends */
        freeReplyObject(reply);
    }
}

static void bus_connect(redis_bus *b)
{
    if (!b->url_ok || b->c) return;
    b->c = b->url.is_unix ? redisConnectUnixNonBlock(b->url.path)
                          : redisConnectNonBlock(b->url.host, b->url.port);
    if (!b->c || b->c->err) {
        log_warn("redis bus %s: BOSH00653: cannot connect the subscriber: %s", b->where,
                 b->c ? b->c->errstr : "out of memory");
        redisFree(b->c);
        b->c = NULL;
        bus_drop(b, NULL);
        return;
    }
    b->up = 0;
    b->replies_left = 0;
    if (b->url.password[0]) {
        const char *a[] = { "AUTH", b->url.password };
        redisAppendCommandArgv(b->c, 2, a, NULL);
        b->replies_left++;
    }
    if (b->url.db != 0) {
        char db[16];
        snprintf(db, sizeof(db), "%d", b->url.db);
        const char *a[] = { "SELECT", db };
        redisAppendCommandArgv(b->c, 2, a, NULL);
        b->replies_left++;
    }
    char host[128] = "localhost", name[200];
    gethostname(host, sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    snprintf(name, sizeof(name), "chatd:%s:%d:bus", host, (int)getpid());
    const char *a[] = { "CLIENT", "SETNAME", name };
    redisAppendCommandArgv(b->c, 3, a, NULL);
    b->replies_left++;
    for (int i = 0; i < b->nchannels; i++) {
        const char *s[] = { "SSUBSCRIBE", b->channels[i] };
        redisAppendCommandArgv(b->c, 2, s, NULL);
        b->replies_left++;
    }
    b->want_write = 1;
    watch_io(b);
    timer_set(b, RB_DEADLINE_MS, deadline_cb);
}

redis_bus *redis_bus_new(loop *l, const char *url, const char *const *channels,
                         int nchannels, redis_bus_msg_cb on_msg, redis_bus_up_cb on_up,
                         void *ud)
{
    redis_bus *b = calloc(1, sizeof(*b));
    if (!b) return NULL;
    b->loop = l;
    b->on_msg = on_msg;
    b->on_up = on_up;
    b->ud = ud;
    b->channels = calloc((size_t)nchannels, sizeof(char *));
    if (!b->channels) { free(b); return NULL; }
    for (int i = 0; i < nchannels; i++)
        if (!(b->channels[i] = strdup(channels[i]))) abort();
    b->nchannels = nchannels;
    char err[256];
    if (redis_url_parse(url, &b->url, err, sizeof(err)) == 0) {
        b->url_ok = 1;
        redis_url_describe(&b->url, b->where, sizeof(b->where));
    } else {
        log_error("redis bus: BOSH00652: bad url '%s': %s", url, err);
        snprintf(b->where, sizeof(b->where), "%s", url);
    }
    bus_connect(b);
    return b;
}

void redis_bus_free(redis_bus *b)
{
    if (!b) return;
    loop_timer_cancel(b->loop, b->timer);
    if (b->c) {
        loop_unwatch(b->loop, b->c->fd);
        redisFree(b->c);
    }
    for (int i = 0; i < b->nchannels; i++) free(b->channels[i]);
    free(b->channels);
    free(b);
}

int redis_bus_is_up(const redis_bus *b)
{
    return b && b->up;
}
