/*
 * redis_async: a small pool of hiredis 0.14 async connections on chatd's loop.
 *
 * Why this way:
 *  - hiredis ships no APR adapter, so ac->ev.* map onto loop_watch().
 *  - A connection takes commands only once AUTH/SELECT/CLIENT SETNAME have
 *    been answered ("up"); until then, and whenever none is up, a command
 *    fails at once. Nothing ever queues behind a dead Redis.
 *  - 0.14 async has no timeouts. Each command gets a deadline; a sweep timer
 *    drops any connection whose oldest command (replies come in order) or
 *    whose connect/handshake is overdue. Dropping a connection makes hiredis
 *    call every pending callback with a NULL reply, which we turn into err.
 *  - Dropped connections come back through a back-off timer.
 */
#include "redis_async.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <hiredis/async.h>
#include "../../common/redis_conn.h"
#include "log.h"

#define RA_COMMAND_TIMEOUT_MS  2000
#define RA_CONNECT_TIMEOUT_MS  2000
#define RA_SWEEP_MS            250
#define RA_BACKOFF_MIN_MS      100
#define RA_BACKOFF_MAX_MS      5000

typedef struct ra_conn ra_conn;

enum { CONN_DOWN, CONN_CONNECTING, CONN_UP };

struct redis_async_req {
    redis_async_req *prev, *next;   /* in the connection's pending list */
    ra_conn         *conn;
    redis_async_cb   cb;            /* NULL once forgotten */
    void            *ud;
    uint64_t         deadline;
    int              internal;      /* handshake command, not a user's */
};

struct ra_conn {
    redis_async       *ra;
    int                n;            /* 1-based, part of the client name */
    redisAsyncContext *ac;
    int                state;
    int                fd;
    unsigned           events;       /* what hiredis asked for */
    int                handshake_left; /* replies before "up" */
    uint64_t           connect_deadline;
    unsigned           backoff_ms;
    loop_timer        *reconnect;
    redis_async_req   *head, *tail;  /* pending, oldest first */
    const char        *drop_reason;  /* err for callbacks of a dropped conn */
};

struct redis_async {
    loop       *loop;
    redis_url   url;
    int         url_ok;
    char        where[300];
    int         nconns;
    ra_conn    *conns;
    int         next_rr;
    loop_timer *sweep;
    int         freeing;
};

static void conn_connect(ra_conn *c);

/* ---- pending list ---- */

static void req_link(ra_conn *c, redis_async_req *r) {
    r->conn = c;
    r->prev = c->tail;
    r->next = NULL;
    if (c->tail) c->tail->next = r; else c->head = r;
    c->tail = r;
}

static void req_unlink(redis_async_req *r) {
    ra_conn *c = r->conn;
    if (!c) return;
    if (r->prev) r->prev->next = r->next; else c->head = r->next;
    if (r->next) r->next->prev = r->prev; else c->tail = r->prev;
    r->prev = r->next = NULL;
    r->conn = NULL;
}

/* ---- loop adapter (ac->ev) ---- */

static void conn_io(loop *l, int fd, unsigned events, void *ud) {
    (void)l; (void)fd;
    ra_conn *c = ud;
    redisAsyncContext *ac = c->ac;
    if (!ac) return;
    if (events & LOOP_READ) redisAsyncHandleRead(ac);
    /* The read may have dropped the connection (c->ac cleared). */
    if ((events & LOOP_WRITE) && c->ac == ac) redisAsyncHandleWrite(ac);
}

static void conn_update_watch(ra_conn *c) {
    if (c->fd < 0) return;
    loop_watch(c->ra->loop, c->fd, c->events, conn_io, c);
}

static void ev_add_read(void *p)  { ra_conn *c = p; c->events |= LOOP_READ;   conn_update_watch(c); }
static void ev_del_read(void *p)  { ra_conn *c = p; c->events &= ~LOOP_READ;  conn_update_watch(c); }
static void ev_add_write(void *p) { ra_conn *c = p; c->events |= LOOP_WRITE;  conn_update_watch(c); }
static void ev_del_write(void *p) { ra_conn *c = p; c->events &= ~LOOP_WRITE; conn_update_watch(c); }
static void ev_cleanup(void *p) {
    ra_conn *c = p;
    if (c->fd >= 0) loop_unwatch(c->ra->loop, c->fd);
    c->fd = -1;
    c->events = 0;
}

/* ---- connection lifecycle ---- */

static void reconnect_cb(loop *l, void *ud) {
    (void)l;
    ra_conn *c = ud;
    c->reconnect = NULL;
    conn_connect(c);
}

static void schedule_reconnect(ra_conn *c) {
    if (c->ra->freeing || c->reconnect) return;
    if (c->backoff_ms == 0) c->backoff_ms = RA_BACKOFF_MIN_MS;
    c->reconnect = loop_timer_add(c->ra->loop, c->backoff_ms, reconnect_cb, c);
    c->backoff_ms *= 2;
    if (c->backoff_ms > RA_BACKOFF_MAX_MS) c->backoff_ms = RA_BACKOFF_MAX_MS;
}

/* The context is gone (hiredis frees it after this returns). */
static void conn_gone(ra_conn *c) {
    c->ac = NULL;
    c->state = CONN_DOWN;
    c->fd = -1;
    c->events = 0;
    schedule_reconnect(c);
}

static void on_connect(const redisAsyncContext *ac, int status) {
    ra_conn *c = ac->data;
    if (status != REDIS_OK) {
        log_warn("redis %s: connection %d failed: %s", c->ra->where, c->n,
                 ac->errstr ? ac->errstr : "error");
        c->drop_reason = "redis connection failed";
        /* hiredis frees ac after this; no disconnect callback follows. */
        conn_gone(c);
    }
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
    ra_conn *c = ac->data;
    if (status != REDIS_OK && !c->ra->freeing)
        log_warn("redis %s: connection %d lost: %s", c->ra->where, c->n,
                 ac->errstr ? ac->errstr : "error");
    conn_gone(c);
}

/* Drop a live context: pending callbacks get c->drop_reason. */
static void conn_drop(ra_conn *c, const char *reason) {
    if (!c->ac) return;
    c->drop_reason = reason;
    c->state = CONN_DOWN;
    redisAsyncContext *ac = c->ac;
    int connected = (ac->c.flags & REDIS_CONNECTED) != 0;
    redisAsyncFree(ac);
    /* Without REDIS_CONNECTED hiredis does not call on_disconnect. */
    if (!connected && c->ac == ac) conn_gone(c);
}

/* Every command's reply comes here; privdata is our request. */
static void on_reply(redisAsyncContext *ac, void *reply, void *privdata) {
    redis_async_req *r = privdata;
    ra_conn *c = r->conn;
    req_unlink(r);
    redisReply *rep = reply;
    const char *err = NULL;
    if (!rep) {
        /* The context is going away: take no more commands on it. */
        if (c && c->ac == ac) c->state = CONN_DOWN;
        err = (c && c->drop_reason) ? c->drop_reason
            : (ac && ac->errstr && ac->err) ? ac->errstr : "redis connection lost";
    }
    if (r->internal) {
        /* Handshake: AUTH / SELECT / CLIENT SETNAME. */
        if (c && c->ac == ac && (c->state == CONN_CONNECTING || !rep)) {
            if (!rep || rep->type == REDIS_REPLY_ERROR) {
                log_warn("redis %s: connection %d setup failed: %s", c->ra->where,
                         c->n, rep ? rep->str : err);
                if (rep) {
                    /* Not inside a hiredis free: drop after the callback. */
                    c->drop_reason = "redis setup failed";
                    redisAsyncFree(ac);
                }
            } else if (--c->handshake_left == 0) {
                c->state = CONN_UP;
                c->backoff_ms = 0;
                log_info("redis %s: connection %d up", c->ra->where, c->n);
            }
        }
    } else if (r->cb) {
        r->cb(rep, err, r->ud);
    }
    free(r);
}

static void send_internal(ra_conn *c, int argc, const char **argv) {
    redis_async_req *r = calloc(1, sizeof(*r));
    if (!r) abort();
    r->internal = 1;
    r->deadline = loop_now_ms(c->ra->loop) + RA_COMMAND_TIMEOUT_MS;
    req_link(c, r);
    c->handshake_left++;
    if (redisAsyncCommandArgv(c->ac, on_reply, r, argc, argv, NULL) != REDIS_OK) {
        req_unlink(r);
        c->handshake_left--;
        free(r);
    }
}

static void conn_connect(ra_conn *c) {
    redis_async *ra = c->ra;
    if (!ra->url_ok || ra->freeing || c->ac) return;
    redisAsyncContext *ac = ra->url.is_unix ? redisAsyncConnectUnix(ra->url.path)
                                            : redisAsyncConnect(ra->url.host, ra->url.port);
    if (!ac) { schedule_reconnect(c); return; }
    if (ac->err) {
        log_warn("redis %s: connection %d: %s", ra->where, c->n, ac->errstr);
        redisAsyncFree(ac);
        schedule_reconnect(c);
        return;
    }
    c->ac = ac;
    c->fd = ac->c.fd;
    c->events = 0;
    c->state = CONN_CONNECTING;
    c->handshake_left = 0;
    c->drop_reason = NULL;
    c->connect_deadline = loop_now_ms(ra->loop) + RA_CONNECT_TIMEOUT_MS;
    ac->data = c;
    ac->ev.data = c;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);

    if (ra->url.password[0]) {
        const char *argv[] = { "AUTH", ra->url.password };
        send_internal(c, 2, argv);
    }
    if (ra->url.db != 0) {
        char db[16];
        snprintf(db, sizeof(db), "%d", ra->url.db);
        const char *argv[] = { "SELECT", db };
        send_internal(c, 2, argv);
    }
    char host[128] = "localhost", name[200];
    gethostname(host, sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    /* Client names may not contain spaces; hostnames never do. */
    snprintf(name, sizeof(name), "chatd:%s:%d:%d", host, (int)getpid(), c->n);
    const char *argv[] = { "CLIENT", "SETNAME", name };
    send_internal(c, 3, argv);
}

/* Deadlines: an overdue connect/handshake or oldest command drops the conn. */
static void sweep_cb(loop *l, void *ud) {
    redis_async *ra = ud;
    uint64_t now = loop_now_ms(l);
    ra->sweep = NULL;
    for (int i = 0; i < ra->nconns; i++) {
        ra_conn *c = &ra->conns[i];
        if (!c->ac) continue;
        if (c->state == CONN_CONNECTING && now >= c->connect_deadline) {
            log_warn("redis %s: connection %d: connect timeout", ra->where, c->n);
            conn_drop(c, "redis connect timeout");
        } else if (c->head && now >= c->head->deadline) {
            log_warn("redis %s: connection %d: command timeout, dropping", ra->where, c->n);
            conn_drop(c, "redis command timeout");
        }
    }
    ra->sweep = loop_timer_add(l, RA_SWEEP_MS, sweep_cb, ra);
}

/* ---- public API ---- */

redis_async *redis_async_new(loop *l, const char *url, int max_conns) {
    redis_async *ra = calloc(1, sizeof(*ra));
    if (!ra) return NULL;
    ra->loop = l;
    if (max_conns < 1) max_conns = 1;
    ra->nconns = max_conns;
    ra->conns = calloc((size_t)max_conns, sizeof(*ra->conns));
    if (!ra->conns) { free(ra); return NULL; }
    char err[256];
    if (redis_url_parse(url, &ra->url, err, sizeof(err)) == 0) {
        ra->url_ok = 1;
        redis_url_describe(&ra->url, ra->where, sizeof(ra->where));
    } else {
        log_error("redis: bad url '%s': %s", url, err);
        snprintf(ra->where, sizeof(ra->where), "%s", url);
    }
    for (int i = 0; i < max_conns; i++) {
        ra->conns[i].ra = ra;
        ra->conns[i].n = i + 1;
        ra->conns[i].fd = -1;
    }
    for (int i = 0; i < max_conns; i++) conn_connect(&ra->conns[i]);
    ra->sweep = loop_timer_add(l, RA_SWEEP_MS, sweep_cb, ra);
    return ra;
}

void redis_async_free(redis_async *ra) {
    if (!ra) return;
    ra->freeing = 1;
    for (int i = 0; i < ra->nconns; i++) {
        ra_conn *c = &ra->conns[i];
        loop_timer_cancel(ra->loop, c->reconnect);
        c->reconnect = NULL;
        conn_drop(c, "redis shutting down");
    }
    loop_timer_cancel(ra->loop, ra->sweep);
    free(ra->conns);
    free(ra);
}

static ra_conn *pick_conn(redis_async *ra) {
    for (int i = 0; i < ra->nconns; i++) {
        ra_conn *c = &ra->conns[(ra->next_rr + i) % ra->nconns];
        if (c->state == CONN_UP && c->ac) {
            ra->next_rr = (ra->next_rr + i + 1) % ra->nconns;
            return c;
        }
    }
    return NULL;
}

/* Formats with hiredis, then queues the formatted command on a live conn. */
static redis_async_req *submit_on(redis_async *ra, ra_conn *c, redis_async_cb cb,
                                  void *ud, char *cmd, long long len) {
    if (len < 0) {
        free(cmd);
        cb(NULL, "redis: bad command format", ud);
        return NULL;
    }
    if (!c) {
        free(cmd);
        cb(NULL, "redis unavailable", ud);
        return NULL;
    }
    redis_async_req *r = calloc(1, sizeof(*r));
    if (!r) abort();
    r->cb = cb;
    r->ud = ud;
    r->deadline = loop_now_ms(ra->loop) + RA_COMMAND_TIMEOUT_MS;
    req_link(c, r);
    int rc = redisAsyncFormattedCommand(c->ac, on_reply, r, cmd, (size_t)len);
    free(cmd);
    if (rc != REDIS_OK) {
        req_unlink(r);
        free(r);
        cb(NULL, "redis unavailable", ud);
        return NULL;
    }
    return r;
}

static redis_async_req *submit(redis_async *ra, redis_async_cb cb, void *ud,
                               char *cmd, long long len) {
    return submit_on(ra, ra->freeing ? NULL : pick_conn(ra), cb, ud, cmd, len);
}

/* The connection for a key: the same one for as long as it stays up, so
 * that commands about one key are run in the order they were issued. */
static ra_conn *pick_keyed(redis_async *ra, const char *key) {
    if (ra->freeing) return NULL;
    unsigned h = 5381;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) h = h * 33 + *p;
    ra_conn *c = &ra->conns[h % (unsigned)ra->nconns];
    return (c->state == CONN_UP && c->ac) ? c : pick_conn(ra);
}

redis_async_req *redis_async_command_keyed(redis_async *ra, const char *key,
                                           redis_async_cb cb, void *ud,
                                           const char *fmt, ...) {
    char *cmd = NULL;
    va_list ap;
    va_start(ap, fmt);
    int len = redisvFormatCommand(&cmd, fmt, ap);
    va_end(ap);
    return submit_on(ra, pick_keyed(ra, key), cb, ud, cmd, len);
}

redis_async_req *redis_async_commandargv_keyed(redis_async *ra, const char *key,
                                               redis_async_cb cb, void *ud, int argc,
                                               const char **argv, const size_t *argvlen) {
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    return submit_on(ra, pick_keyed(ra, key), cb, ud, cmd, len);
}

redis_async_req *redis_async_command(redis_async *ra, redis_async_cb cb, void *ud,
                                     const char *fmt, ...) {
    char *cmd = NULL;
    va_list ap;
    va_start(ap, fmt);
    int len = redisvFormatCommand(&cmd, fmt, ap);
    va_end(ap);
    return submit(ra, cb, ud, cmd, len);
}

redis_async_req *redis_async_commandargv(redis_async *ra, redis_async_cb cb, void *ud,
                                         int argc, const char **argv, const size_t *argvlen) {
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    return submit(ra, cb, ud, cmd, len);
}

void redis_async_forget(redis_async_req *req) {
    if (req) req->cb = NULL;
}

int redis_async_connected(const redis_async *ra) {
    int n = 0;
    for (int i = 0; i < ra->nconns; i++)
        if (ra->conns[i].state == CONN_UP && ra->conns[i].ac) n++;
    return n;
}
