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
 *  - Dropped connections come back through a jittered back-off timer.
 *  - With sentinels (issue 16, Redis HA) the master's address is not
 *    configured but asked for: one more connection, to a sentinel, asks
 *    SENTINEL get-master-addr-by-name at start, every RA_SENTINEL_POLL_MS,
 *    and at once when a master connection fails or answers -READONLY /
 *    -LOADING / -MASTERDOWN. A new address drops the connections to the
 *    old one. A master connection is "up" only after ROLE said master. All
 *    of it runs on the loop: during a failover commands fail fast (sign-in
 *    answers "try again"), sessions and chat go on (docs/operations.md).
 */
#include "redis_async.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <hiredis/async.h>
#include "../../common/redis_conn.h"
#include "../../common/redis_sentinel.h"
#include "log.h"

#define RA_COMMAND_TIMEOUT_MS  2000
#define RA_CONNECT_TIMEOUT_MS  2000
#define RA_SWEEP_MS            250
#define RA_BACKOFF_MIN_MS      100
#define RA_BACKOFF_MAX_MS      5000
/* How often the sentinels are asked while all is well: bounds how long
 * chatd may keep writing to a master the sentinels have replaced. */
#define RA_SENTINEL_POLL_MS    1000
/* A master that had a replica this recently may be in the middle of a
 * failover when it shows none: durable writes keep waiting for one (and
 * fail, to be tried again) rather than go unprotected. */
#define RA_REPLICA_GRACE_MS    10000
/* At most one question to the sentinels this often when failures ask. */
#define RA_SENTINEL_MIN_ASK_MS 100

typedef struct ra_conn ra_conn;

enum { CONN_DOWN, CONN_CONNECTING, CONN_UP };

struct redis_async_req {
    redis_async_req *prev, *next;   /* in the connection's pending list */
    ra_conn         *conn;
    redis_async_cb   cb;            /* NULL once forgotten */
    void            *ud;
    uint64_t         deadline;
    int              internal;      /* handshake command, not a user's;
                                       RA_ROLE_CHECK: ROLE, must say master */
};

#define RA_ROLE_CHECK 2

struct ra_conn {
    redis_async       *ra;
    int                n;            /* 1-based, part of the client name */
    int                is_sentinel;  /* the connection to a sentinel */
    redisAsyncContext *ac;
    int                state;
    int                fd;
    unsigned           events;       /* what hiredis asked for */
    int                handshake_left; /* replies before "up" */
    uint64_t           connect_deadline;
    unsigned           attempt;      /* failed connects in a row */
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
    unsigned    seed;            /* for the back-off's jitter */
    /* Sentinel mode (sent.n > 0): url's host and port come from them. */
    redis_sentinels sent;
    int         have_master;
    ra_conn     sconn;           /* to sent.addr[sent_idx] */
    unsigned    sent_idx;
    char        swhere[300];
    loop_timer *ask_timer;       /* next SENTINEL get-master-addr-by-name */
    uint64_t    ask_due;
    int         asking;          /* one in flight */
    uint64_t    last_ask;
    /* The master's connected replicas, from ROLE (handshake and each poll). */
    int         replicas;        /* -1: not known */
    uint64_t    replica_seen;    /* last time ROLE showed at least one */
    int         role_asking;
};

/* A ROLE reply from the master: how many replicas are connected. */
static void note_role(redis_async *ra, const redisReply *rep) {
    if (!redis_role_is_master(rep) || rep->elements < 3 ||
        rep->element[2]->type != REDIS_REPLY_ARRAY)
        return;
    ra->replicas = (int)rep->element[2]->elements;
    if (ra->replicas > 0) ra->replica_seen = loop_now_ms(ra->loop);
}

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

/* Jittered: the pools of several chatd nodes that lost the same Redis
 * must not come back in step. */
static void schedule_reconnect(ra_conn *c) {
    redis_async *ra = c->ra;
    if (ra->freeing || c->reconnect) return;
    unsigned ms = redis_backoff_ms(c->attempt, RA_BACKOFF_MIN_MS, RA_BACKOFF_MAX_MS,
                                   (uint32_t)rand_r(&ra->seed));
    c->attempt++;
    c->reconnect = loop_timer_add(ra->loop, ms, reconnect_cb, c);
}

static void sentinel_ask_soon(redis_async *ra);

/* The context is gone (hiredis frees it after this returns). */
static void conn_gone(ra_conn *c) {
    redis_async *ra = c->ra;
    c->ac = NULL;
    c->state = CONN_DOWN;
    c->fd = -1;
    c->events = 0;
    if (c->is_sentinel) {
        ra->asking = 0;
        /* the next one in the list; the back-off paces a round of them */
        if (ra->sent.n > 0) {
            ra->sent_idx = (ra->sent_idx + 1) % (unsigned)ra->sent.n;
            redis_url_describe(&ra->sent.addr[ra->sent_idx], ra->swhere, sizeof(ra->swhere));
        }
    } else if (ra->sent.n > 0 && !ra->freeing) {
        sentinel_ask_soon(ra);          /* failed over? */
    }
    schedule_reconnect(c);
}

static const char *conn_where(const ra_conn *c) {
    return c->is_sentinel ? c->ra->swhere : c->ra->where;
}

static void on_connect(const redisAsyncContext *ac, int status) {
    ra_conn *c = ac->data;
    if (status != REDIS_OK) {
        log_warn("redis %s: connection %d failed: %s", conn_where(c), c->n,
                 ac->errstr ? ac->errstr : "error");
        c->drop_reason = "redis connection failed";
        /* hiredis frees ac after this; no disconnect callback follows. */
        conn_gone(c);
    }
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
    ra_conn *c = ac->data;
    if (status != REDIS_OK && !c->ra->freeing)
        log_warn("redis %s: connection %d lost: %s", conn_where(c), c->n,
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
        /* Handshake: AUTH / SELECT / CLIENT SETNAME / ROLE. */
        if (c && c->ac == ac && (c->state == CONN_CONNECTING || !rep)) {
            int bad = !rep || rep->type == REDIS_REPLY_ERROR ||
                      (r->internal == RA_ROLE_CHECK && !redis_role_is_master(rep));
            if (bad) {
                if (rep && rep->type != REDIS_REPLY_ERROR)
                    log_warn("redis: BOSH00702: %s, named master by the sentinels, is not "
                             "a master (yet); asking them again", conn_where(c));
                else if (rep)
                    log_warn("redis %s: connection %d setup failed: %s", conn_where(c),
                             c->n, rep->str);
                /* !rep: the connection went; why was logged where it went */
                if (rep) {
                    /* Not inside a hiredis free: drop after the callback. */
                    c->drop_reason = "redis setup failed";
                    redisAsyncFree(ac);
                }
            } else if (r->internal == RA_ROLE_CHECK && rep && --c->handshake_left == 0) {
                note_role(c->ra, rep);
                c->state = CONN_UP;
                c->attempt = 0;
                log_info("redis %s: connection %d up", conn_where(c), c->n);
            } else if (r->internal == RA_ROLE_CHECK && rep) {
                note_role(c->ra, rep);
            } else if (--c->handshake_left == 0) {
                c->state = CONN_UP;
                c->attempt = 0;
                if (c->is_sentinel) {
                    log_info("redis: BOSH00703: sentinel %s connected", conn_where(c));
                    sentinel_ask_soon(c->ra);
                } else {
                    log_info("redis %s: connection %d up", conn_where(c), c->n);
                }
            }
        }
    } else {
        if (r->cb) r->cb(rep, err, r->ud);
        /* A replica or a master still loading: in sentinel mode this
         * connection points at the wrong server (failover); drop it
         * (deferred: we are in a hiredis callback) and ask again. */
        if (rep && rep->type == REDIS_REPLY_ERROR && c && c->ac == ac && !c->is_sentinel &&
            c->ra->sent.n > 0 && c->state == CONN_UP && redis_error_means_failover(rep->str)) {
            log_warn("redis: BOSH00704: %s answered '%.60s'; dropping connection %d and "
                     "asking the sentinels for the master", conn_where(c), rep->str, c->n);
            c->state = CONN_DOWN;
            c->drop_reason = "redis is failing over";
            redisAsyncFree(ac);
        }
    }
    free(r);
}

static void send_internal(ra_conn *c, int argc, const char **argv, int kind) {
    redis_async_req *r = calloc(1, sizeof(*r));
    if (!r) abort();
    r->internal = kind;
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
    /* Master connections wait for the sentinels' answer. */
    if (!c->is_sentinel && ra->sent.n > 0 && !ra->have_master) return;
    const redis_url *u = c->is_sentinel ? &ra->sent.addr[ra->sent_idx] : &ra->url;
    redisAsyncContext *ac = u->is_unix ? redisAsyncConnectUnix(u->path)
                                       : redisAsyncConnect(u->host, u->port);
    if (!ac) { schedule_reconnect(c); return; }
    if (ac->err) {
        log_warn("redis %s: connection %d: %s", conn_where(c), c->n, ac->errstr);
        redisAsyncFree(ac);
        if (c->is_sentinel) {
            conn_gone(c);               /* the next sentinel */
            return;
        }
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

    if (u->password[0]) {
        const char *argv[] = { "AUTH", u->password };
        send_internal(c, 2, argv, 1);
    }
    if (!c->is_sentinel && u->db != 0) {
        char db[16];
        snprintf(db, sizeof(db), "%d", u->db);
        const char *argv[] = { "SELECT", db };
        send_internal(c, 2, argv, 1);
    }
    char host[128] = "localhost", name[200];
    gethostname(host, sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    /* Client names may not contain spaces; hostnames never do. */
    if (c->is_sentinel)
        snprintf(name, sizeof(name), "chatd:%s:%d:sentinel", host, (int)getpid());
    else
        snprintf(name, sizeof(name), "chatd:%s:%d:%d", host, (int)getpid(), c->n);
    const char *argv[] = { "CLIENT", "SETNAME", name };
    send_internal(c, 3, argv, 1);
    if (!c->is_sentinel && ra->sent.n > 0) {
        const char *role[] = { "ROLE" };
        send_internal(c, 1, role, RA_ROLE_CHECK);
    }
}

/* ---- sentinels ---- */

static redis_async_req *submit_on(redis_async *ra, ra_conn *c, redis_async_cb cb,
                                  void *ud, char *cmd, long long len);

/* The master changed (or is known for the first time): the connections
 * to the old address go (their pending commands fail, callers retry as on
 * any Redis error), the others connect now. */
static void set_master(redis_async *ra, const char *host, int port) {
    int first = !ra->have_master;
    char old[300];
    /* Drop first: pending commands fail with the old address in the log. */
    for (int i = 0; i < ra->nconns; i++)
        if (ra->conns[i].ac) conn_drop(&ra->conns[i], "redis master changed");
    snprintf(old, sizeof(old), "%s", ra->where);
    snprintf(ra->url.host, sizeof(ra->url.host), "%s", host);
    ra->url.port = port;
    ra->have_master = 1;
    ra->replicas = -1;              /* the new one's own, from its ROLE */
    ra->replica_seen = 0;
    redis_url_describe(&ra->url, ra->where, sizeof(ra->where));
    if (first)
        log_info("redis: BOSH00705: master '%s' is %s (sentinel %s)", ra->sent.master,
                 ra->where, ra->swhere);
    else
        log_warn("redis: BOSH00706: master '%s' moved from %s to %s (sentinel %s); "
                 "reconnecting", ra->sent.master, old, ra->where, ra->swhere);
    for (int i = 0; i < ra->nconns; i++) {
        ra_conn *c = &ra->conns[i];
        if (c->ac) conn_drop(c, "redis master changed");   /* reconnected meanwhile */
        loop_timer_cancel(ra->loop, c->reconnect);
        c->reconnect = NULL;
        c->attempt = 0;
        conn_connect(c);
    }
}

static void schedule_ask(redis_async *ra, uint64_t delay);
static ra_conn *pick_conn(redis_async *ra);

static void role_answer(redisReply *rep, const char *err, void *ud) {
    redis_async *ra = ud;
    ra->role_asking = 0;
    if (!err && rep && !ra->freeing) note_role(ra, rep);
}

/* With each poll: does the master still have its replicas? */
static void ask_role(redis_async *ra) {
    ra_conn *c = pick_conn(ra);
    if (ra->role_asking || !c) return;
    char *cmd = NULL;
    int len = redisFormatCommand(&cmd, "ROLE");
    ra->role_asking = 1;
    submit_on(ra, c, role_answer, ra, cmd, len);
}

static void sentinel_answer(redisReply *rep, const char *err, void *ud) {
    redis_async *ra = ud;
    char host[256], why[256];
    int port = 0;
    ra->asking = 0;
    if (ra->freeing) return;
    if (err) {
        /* the connection is going; conn_gone moves to the next sentinel */
        log_warn("redis: BOSH00707: sentinel %s: %s", ra->swhere, err);
        schedule_ask(ra, RA_SENTINEL_POLL_MS);
        return;
    }
    int rc = redis_sentinel_parse_master(rep, host, sizeof(host), &port, why, sizeof(why));
    if (rc != 0) {
        log_warn("redis: BOSH00708: sentinel %s cannot name master '%s': %s; asking "
                 "the next one", ra->swhere, ra->sent.master,
                 rc > 0 ? "it does not monitor that name" : why);
        ra->sconn.drop_reason = "sentinel did not answer";
        ra->sconn.state = CONN_DOWN;
        redisAsyncFree(ra->sconn.ac);   /* deferred: in its callback */
        return;
    }
    if (!ra->have_master || strcmp(host, ra->url.host) != 0 || port != ra->url.port)
        set_master(ra, host, port);
    else
        ask_role(ra);
    schedule_ask(ra, RA_SENTINEL_POLL_MS);
}

static void sentinel_ask_now(redis_async *ra) {
    ra_conn *s = &ra->sconn;
    if (ra->freeing || ra->asking || s->state != CONN_UP || !s->ac) return;
    char *cmd = NULL;
    int len = redisFormatCommand(&cmd, "SENTINEL get-master-addr-by-name %s", ra->sent.master);
    ra->asking = 1;
    ra->last_ask = loop_now_ms(ra->loop);
    submit_on(ra, s, sentinel_answer, ra, cmd, len);
}

static void ask_cb(loop *l, void *ud) {
    (void)l;
    redis_async *ra = ud;
    ra->ask_timer = NULL;
    sentinel_ask_now(ra);
}

/* Ask after delay ms, unless a question is due sooner already. */
static void schedule_ask(redis_async *ra, uint64_t delay) {
    uint64_t due = loop_now_ms(ra->loop) + delay;
    if (ra->freeing) return;
    if (ra->ask_timer) {
        if (ra->ask_due <= due) return;
        loop_timer_cancel(ra->loop, ra->ask_timer);
    }
    ra->ask_due = due;
    ra->ask_timer = loop_timer_add(ra->loop, delay, ask_cb, ra);
}

/* Something suggests a failover: ask now, but not more often than
 * RA_SENTINEL_MIN_ASK_MS (every dropped connection calls this). */
static void sentinel_ask_soon(redis_async *ra) {
    if (ra->sent.n == 0 || ra->freeing) return;
    uint64_t now = loop_now_ms(ra->loop), next = ra->last_ask + RA_SENTINEL_MIN_ASK_MS;
    schedule_ask(ra, next > now ? next - now : 0);
}

/* Deadlines: an overdue connect/handshake or oldest command drops the conn. */
static void sweep_cb(loop *l, void *ud) {
    redis_async *ra = ud;
    uint64_t now = loop_now_ms(l);
    ra->sweep = NULL;
    for (int i = -1; i < ra->nconns; i++) {
        ra_conn *c = i < 0 ? &ra->sconn : &ra->conns[i];
        if (!c->ac) continue;
        if (c->state == CONN_CONNECTING && now >= c->connect_deadline) {
            log_warn("redis %s: connection %d: connect timeout", conn_where(c), c->n);
            conn_drop(c, "redis connect timeout");
        } else if (c->head && now >= c->head->deadline) {
            log_warn("redis %s: connection %d: command timeout, dropping", conn_where(c), c->n);
            conn_drop(c, "redis command timeout");
        }
    }
    ra->sweep = loop_timer_add(l, RA_SWEEP_MS, sweep_cb, ra);
}

/* ---- public API ---- */

redis_async *redis_async_new(loop *l, const char *url, int max_conns) {
    return redis_async_new_ha(l, url, max_conns, NULL);
}

redis_async *redis_async_new_ha(loop *l, const char *url, int max_conns,
                                const redis_sentinels *sentinels) {
    redis_async *ra = calloc(1, sizeof(*ra));
    if (!ra) return NULL;
    ra->loop = l;
    ra->replicas = -1;
    ra->seed = (unsigned)getpid() ^ (unsigned)loop_now_ms(l) ^ (unsigned)(uintptr_t)ra;
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
    if (sentinels && sentinels->n > 0) {
        if (redis_sentinels_check(sentinels, &ra->url, err, sizeof(err)) != 0) {
            log_error("redis: BOSH00709: %s", err);
            ra->url_ok = 0;
        }
        ra->sent = *sentinels;
        snprintf(ra->where, sizeof(ra->where), "master '%s' (not known yet)", ra->sent.master);
        redis_url_describe(&ra->sent.addr[0], ra->swhere, sizeof(ra->swhere));
        ra->sconn.ra = ra;
        ra->sconn.n = 0;
        ra->sconn.is_sentinel = 1;
        ra->sconn.fd = -1;
    }
    for (int i = 0; i < max_conns; i++) {
        ra->conns[i].ra = ra;
        ra->conns[i].n = i + 1;
        ra->conns[i].fd = -1;
    }
    if (ra->sent.n > 0) conn_connect(&ra->sconn);
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
    if (ra->sent.n > 0) {
        loop_timer_cancel(ra->loop, ra->sconn.reconnect);
        ra->sconn.reconnect = NULL;
        conn_drop(&ra->sconn, "redis shutting down");
    }
    loop_timer_cancel(ra->loop, ra->ask_timer);
    loop_timer_cancel(ra->loop, ra->sweep);
    memset(&ra->sent, 0, sizeof(ra->sent));     /* the sentinels' password */
    memset(&ra->url, 0, sizeof(ra->url));
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

/* ---- durable writes: the command, then WAIT on the same connection ---- */

typedef struct durable {
    redis_async_cb cb;
    void          *ud;
    int            need;          /* replicas that must have it */
    int            failed;
    char           err[160];
    int            type;          /* the command's reply, copied (scalar) */
    long long      integer;
    char          *str;
    size_t         len;
} durable;

static void durable_first(redisReply *rep, const char *err, void *ud) {
    durable *w = ud;
    if (err || !rep) {
        w->failed = 1;
        snprintf(w->err, sizeof(w->err), "%s", err ? err : "no reply");
        return;
    }
    w->type = rep->type;
    w->integer = rep->integer;
    if (rep->str) {
        w->str = malloc(rep->len + 1);
        if (!w->str) abort();
        memcpy(w->str, rep->str, rep->len);
        w->str[rep->len] = '\0';
        w->len = rep->len;
    }
}

static void durable_wait(redisReply *rep, const char *err, void *ud) {
    durable *w = ud;
    if (w->failed) {
        w->cb(NULL, w->err, w->ud);
    } else if (err || !rep) {
        w->cb(NULL, err ? err : "no reply to WAIT", w->ud);
    } else if (w->type != REDIS_REPLY_ERROR &&
               (rep->type != REDIS_REPLY_INTEGER || rep->integer < w->need)) {
        /* Written on this master only: a failover now would lose it. */
        w->cb(NULL, "redis write not acknowledged by a replica in time", w->ud);
    } else {
        redisReply r;
        memset(&r, 0, sizeof(r));
        r.type = w->type;
        r.integer = w->integer;
        r.str = w->str;
        r.len = w->len;
        w->cb(&r, NULL, w->ud);
    }
    free(w->str);
    free(w);
}

/* How many replicas a durable write waits for: as configured while the
 * master has them (or had them RA_REPLICA_GRACE_MS ago: a failover may be
 * under way); else as many as it has, 0 for a master alone (a promoted
 * replica whose old master is gone: nothing to wait for, and no failover
 * target either). Not known yet: as configured. */
static int replicas_to_wait(redis_async *ra, int configured) {
    if (configured <= 0 || ra->replicas < 0 || ra->replicas >= configured) return configured;
    if (ra->replica_seen && loop_now_ms(ra->loop) - ra->replica_seen < RA_REPLICA_GRACE_MS)
        return configured;
    return ra->replicas;
}

int redis_async_commandargv_keyed_durable(redis_async *ra, const char *key, int replicas,
                                          int wait_ms, redis_async_cb cb, void *ud,
                                          int argc, const char **argv, const size_t *argvlen) {
    replicas = replicas_to_wait(ra, replicas);
    if (replicas <= 0) {
        redis_async_commandargv_keyed(ra, key, cb, ud, argc, argv, argvlen);
        return 0;
    }
    durable *w = calloc(1, sizeof(*w));
    if (!w) abort();
    w->cb = cb;
    w->ud = ud;
    w->need = replicas;
    ra_conn *c = pick_keyed(ra, key);
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    if (!submit_on(ra, c, durable_first, w, cmd, len)) {
        /* durable_first already ran with the error */
        cb(NULL, w->err, ud);
        free(w);
        return -1;
    }
    /* The same connection: WAIT counts this client's writes so far. */
    char *wcmd = NULL;
    int wlen = redisFormatCommand(&wcmd, "WAIT %d %d", replicas, wait_ms);
    submit_on(ra, c, durable_wait, w, wcmd, wlen);
    return 0;
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
