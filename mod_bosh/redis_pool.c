/*
 * redis_pool.c - per-child Redis connection pool with a hard cap.
 * See redis_pool.h for the rules it enforces.
 *
 * Slots are counted, not sockets: `total` includes connections being
 * opened, so the cap holds while a connect is in flight even though the
 * connect itself runs without the lock held.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mod_bosh.h"
#include "redis_pool.h"
#include "relay_client.h"     /* relay_now_ms */
#include "redis_cap.h"

#define RP_BACKOFF_MIN_MS 200
#define RP_BACKOFF_MAX_MS 2000
/* Waiting for another child to free a BoshRedisMaxTotal slot: there is
 * no cross-process wake-up, so look again this often. */
#define RP_TOTAL_CAP_POLL_MS 10
/* After another child was refused by the total cap, keep no idle
 * connections for this long (see under_pressure). */
#define RP_PRESSURE_MS 2000

typedef struct idle_conn {
    redisContext *c;
    int64_t       since_ms;
    unsigned      gen;        /* master generation it was opened for */
} idle_conn;

/* Every RP_SENTINEL_CHECK_MS a child holding connections asks the
 * sentinels whether the master moved (SENTINEL FAILOVER leaves the old
 * master up and writable for a while; its connections would go on being
 * used). */
#define RP_SENTINEL_CHECK_MS 2000
#define RP_SENTINEL_RETRY_MS 10000

struct redis_pool {
    server_rec       *s;
    redis_pool_config cfg;
    char              addr[300];
    char              prefix[200];

    pthread_mutex_t   mu;
    pthread_cond_t    cv;         /* a slot or an idle connection freed */
    idle_conn        *idle;       /* stack: oldest at 0, newest on top */
    int               nidle;
    int               in_use;
    int               total;      /* in_use + nidle + connecting */
    int               stopping;
    unsigned          seq;        /* for connection names */
    int64_t           retry_at_ms;
    int               backoff_ms;
    int               nwaiting;   /* callers in acquire's wait */
    unsigned          seen_refusals;
    int64_t           pressure_until_ms;
    redis_pool_stats  st;
    unsigned          next_sentinel;  /* the one to ask first */
    redis_url         master;         /* last master the sentinels named */
    unsigned          gen;            /* ++ when the master moves */
    idle_conn        *busy;           /* handed out: which generation */
    int               nbusy;
    int64_t           next_check_ms;
};

/* Remember which generation a handed-out connection belongs to (lock held). */
static void busy_add_locked(redis_pool *p, redisContext *c, unsigned gen)
{
    if (p->nbusy < p->cfg.max_per_child) {
        p->busy[p->nbusy].c = c;
        p->busy[p->nbusy].gen = gen;
        p->nbusy++;
    }
}

/* Its generation, and forget it (lock held). */
static unsigned busy_take_locked(redis_pool *p, redisContext *c)
{
    int i;
    for (i = 0; i < p->nbusy; i++)
        if (p->busy[i].c == c) {
            unsigned gen = p->busy[i].gen;
            p->busy[i] = p->busy[--p->nbusy];
            return gen;
        }
    return p->gen;
}

/* Mirror the counters into this child's shared-memory slot (lock held). */
static void publish_locked(redis_pool *p)
{
    redis_cap_publish(p->in_use, p->nidle, p->st.waits, p->st.acquire_timeouts,
                      p->st.failures);
}

/* 1 while some child was refused by BoshRedisMaxTotal recently: idle
 * connections are then closed rather than kept, so the total cap goes to
 * the children that have work (lock held). */
static int under_pressure_locked(redis_pool *p, int64_t now)
{
    int total, max;
    unsigned refusals;

    redis_cap_get(&total, &max, &refusals);
    if (refusals != p->seen_refusals) {
        p->seen_refusals = refusals;
        p->pressure_until_ms = now + RP_PRESSURE_MS;
    }
    return now < p->pressure_until_ms;
}

redis_pool *redis_pool_create(server_rec *s, const redis_pool_config *cfg)
{
    redis_pool *p = calloc(1, sizeof(*p));
    pthread_condattr_t attr;

    p->s = s;
    p->cfg = *cfg;
    if (p->cfg.max_per_child < 1)
        p->cfg.max_per_child = 1;
    snprintf(p->prefix, sizeof(p->prefix), "%s", cfg->name_prefix);
    p->cfg.name_prefix = p->prefix;
    if (p->cfg.sentinels)
        snprintf(p->addr, sizeof(p->addr), "master '%s' (via sentinels)",
                 p->cfg.sentinels->master);
    else
        redis_url_describe(&p->cfg.url, p->addr, sizeof(p->addr));
    p->idle = calloc((size_t)p->cfg.max_per_child, sizeof(idle_conn));
    p->busy = calloc((size_t)p->cfg.max_per_child, sizeof(idle_conn));
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &attr);
    pthread_condattr_destroy(&attr);
    return p;
}

const char *redis_pool_address(const redis_pool *p)
{
    return p->addr;
}

/* Take every idle connection out of the pool (lock held); the caller
 * frees them after unlocking. Returns how many were put in out. */
/* Takes every idle connection out of the pool. They still count in
 * p->total: retire() closes them and only then gives their slots back. */
static int take_all_idle_locked(redis_pool *p, redisContext **out)
{
    int i, n = p->nidle;
    for (i = 0; i < n; i++)
        out[i] = p->idle[i].c;
    p->nidle = 0;
    return n;
}

/* Close connections taken out of the pool, then give back their slots.
 * In this order, because the cap is a promise about sockets Redis sees:
 * a waiter woken by a freed slot opens a new connection at once, and if
 * the old socket were still open the child would hold cap + 1 (test_45's
 * CLIENT LIST sampler caught exactly that). */
static void retire(redis_pool *p, redisContext **doomed, int n)
{
    int i;

    if (n <= 0)
        return;
    for (i = 0; i < n; i++)
        redisFree(doomed[i]);
    pthread_mutex_lock(&p->mu);
    p->total -= n;
    pthread_cond_broadcast(&p->cv);
    publish_locked(p);
    pthread_mutex_unlock(&p->mu);
    redis_cap_release((unsigned)n);
}

/* The sentinels named host:port. If that is not the master we had, the
 * connections to the old one go: idle ones now, handed-out ones when they
 * come back (generation). */
static void master_seen(redis_pool *p, const char *host, int port)
{
    redisContext *doomed[64];
    int n = 0;
    char was[300];

    pthread_mutex_lock(&p->mu);
    if (strcmp(host, p->master.host) == 0 && port == p->master.port) {
        pthread_mutex_unlock(&p->mu);
        return;
    }
    snprintf(was, sizeof(was), "%s", p->addr);
    snprintf(p->master.host, sizeof(p->master.host), "%s", host);
    p->master.port = port;
    redis_url_describe(&p->master, p->addr, sizeof(p->addr));
    /* gen 0: no master known yet, so no connection to close */
    if (p->gen++ > 0 && p->nidle <= 64)
        n = take_all_idle_locked(p, doomed);
    pthread_mutex_unlock(&p->mu);
    retire(p, doomed, n);
    ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, p->s,
                 "mod_bosh: BOSH00713: Redis master '%s' is %s (was %s), from the "
                 "sentinels; %d idle connection(s) to the old one closed",
                 p->cfg.sentinels->master, p->addr, was, n);
}

void redis_pool_check_master(redis_pool *p)
{
    char host[256], err[512];
    int port = 0;
    unsigned next;
    int64_t now = relay_now_ms();

    if (!p || !p->cfg.sentinels)
        return;
    pthread_mutex_lock(&p->mu);
    if (p->stopping || now < p->next_check_ms || (p->nidle == 0 && p->in_use == 0)) {
        pthread_mutex_unlock(&p->mu);
        return;
    }
    p->next_check_ms = now + RP_SENTINEL_CHECK_MS;
    next = p->next_sentinel;
    pthread_mutex_unlock(&p->mu);
    if (redis_sentinel_ask(p->cfg.sentinels, &next, p->prefix, p->cfg.connect_ms,
                           p->cfg.command_ms, host, sizeof(host), &port, err,
                           sizeof(err)) != 0) {
        /* Not every 2 s while they are away: this thread also notices a
         * stopping child (prefork) and each try may take connect_ms per
         * sentinel. */
        pthread_mutex_lock(&p->mu);
        p->next_check_ms = relay_now_ms() + RP_SENTINEL_RETRY_MS;
        pthread_mutex_unlock(&p->mu);
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, p->s,
                     "mod_bosh: BOSH00716: Redis sentinels: %s; asking again in %d s",
                     err, RP_SENTINEL_RETRY_MS / 1000);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->next_sentinel = next;
    pthread_mutex_unlock(&p->mu);
    master_seen(p, host, port);
}

redis_pool_status redis_pool_acquire(redis_pool *p, redisContext **out)
{
    int64_t deadline = relay_now_ms() + p->cfg.acquire_ms;
    int waited = 0, total_capped = 0;

    *out = NULL;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        if (p->stopping) {
            pthread_mutex_unlock(&p->mu);
            return RP_STOPPING;
        }
        if (p->nidle > 0) {
            --p->nidle;
            *out = p->idle[p->nidle].c;     /* newest: most likely alive */
            busy_add_locked(p, *out, p->idle[p->nidle].gen);
            p->in_use++;
            publish_locked(p);
            pthread_mutex_unlock(&p->mu);
            return RP_OK;
        }
        if (p->total < p->cfg.max_per_child) {
            char name[256], err[256];
            redisContext *c;
            unsigned n;

            if (relay_now_ms() < p->retry_at_ms) {
                pthread_mutex_unlock(&p->mu);
                return RP_DOWN;
            }
            if (!redis_cap_reserve()) {     /* BoshRedisMaxTotal reached */
                /* Wait for one of ours to come back, or for another
                 * child to close one (it stops keeping idle ones when
                 * it sees our refusal), polling the shared counter. */
                if (!total_capped)
                    p->st.total_cap_refusals++;
                total_capped = 1;
                goto wait;
            }
            p->total++;                    /* reserve the slot */
            n = ++p->seq;
            pthread_mutex_unlock(&p->mu);

            snprintf(name, sizeof(name), "%s:%u", p->prefix, n);
            err[0] = '\0';
            if (p->cfg.sentinels) {
                /* Ask the sentinels on every new connection: connects are
                 * rare (idle ones are reused), and after a failover the
                 * broken connections are flushed, so the next one finds
                 * the new master by itself. */
                redis_url found = p->cfg.url;
                unsigned next = p->next_sentinel;
                c = redis_sentinel_open_master(p->cfg.sentinels, &next, &p->cfg.url, name,
                                               p->cfg.connect_ms, p->cfg.command_ms,
                                               &found, err, sizeof(err));
                pthread_mutex_lock(&p->mu);
                p->next_sentinel = next;
                pthread_mutex_unlock(&p->mu);
                if (c)
                    master_seen(p, found.host, found.port);
                memset(&found, 0, sizeof(found));
            }
            else
                c = redis_conn_open(&p->cfg.url, name, p->cfg.connect_ms,
                                    p->cfg.command_ms, err, sizeof(err));

            pthread_mutex_lock(&p->mu);
            if (!c) {
                p->total--;
                redis_cap_release(1);
                p->st.failures++;
                p->backoff_ms = p->backoff_ms ? p->backoff_ms * 2 : RP_BACKOFF_MIN_MS;
                if (p->backoff_ms > RP_BACKOFF_MAX_MS)
                    p->backoff_ms = RP_BACKOFF_MAX_MS;
                p->retry_at_ms = relay_now_ms() + p->backoff_ms;
                pthread_cond_signal(&p->cv);
                pthread_mutex_unlock(&p->mu);
                ap_log_error(APLOG_MARK, APLOG_ERR, 0, p->s,
                             "mod_bosh: Redis %s: cannot connect: %s",
                             p->addr, err[0] ? err : "unknown error");
                return RP_DOWN;
            }
            p->backoff_ms = 0;
            p->retry_at_ms = 0;
            p->in_use++;
            busy_add_locked(p, c, p->gen);
            p->st.opened++;
            publish_locked(p);
            pthread_mutex_unlock(&p->mu);
            *out = c;
            return RP_OK;
        }
        /* At the cap: wait for a release, bounded. */
wait:
        {
            int64_t now = relay_now_ms(), until = deadline;
            struct timespec ts;
            if (now >= deadline) {
                p->st.acquire_timeouts++;
                publish_locked(p);
                pthread_mutex_unlock(&p->mu);
                return total_capped && p->total == 0 ? RP_TOTAL_CAP : RP_TIMEOUT;
            }
            if (!waited) {
                p->st.waits++;
                waited = 1;
            }
            if (total_capped && now + RP_TOTAL_CAP_POLL_MS < until)
                until = now + RP_TOTAL_CAP_POLL_MS;
            ts.tv_sec = until / 1000;
            ts.tv_nsec = (until % 1000) * 1000000;
            p->nwaiting++;
            pthread_cond_timedwait(&p->cv, &p->mu, &ts);
            p->nwaiting--;
        }
    }
}

void redis_pool_release(redis_pool *p, redisContext *c, int broken)
{
    redisContext *doomed[64];
    int ndoomed = 0, flushed = 0, stale = 0;
    char why[128] = "";

    if (!c)
        return;
    if (broken)
        snprintf(why, sizeof(why), "%s", c->err ? c->errstr : "bad reply");

    pthread_mutex_lock(&p->mu);
    p->in_use--;
    if (busy_take_locked(p, c) != p->gen)
        stale = 1;              /* to a master the sentinels replaced */
    if (broken || stale || p->stopping ||
        (p->nwaiting == 0 && under_pressure_locked(p, relay_now_ms()))) {
        doomed[ndoomed++] = c;
        if (broken) {
            p->st.failures++;
            /* Its idle siblings are probably dead too (Redis restart,
             * server-side timeout): flush them rather than hand them out
             * one failure at a time. */
            if (p->nidle <= 63) {
                flushed = take_all_idle_locked(p, doomed + ndoomed);
                ndoomed += flushed;
            }
        }
    }
    else {
        p->idle[p->nidle].c = c;
        p->idle[p->nidle].since_ms = relay_now_ms();
        p->idle[p->nidle].gen = p->gen;
        p->nidle++;
    }
    pthread_cond_signal(&p->cv);
    publish_locked(p);
    pthread_mutex_unlock(&p->mu);

    retire(p, doomed, ndoomed);
    if (broken)
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, p->s,
                     "mod_bosh: Redis %s: %s; connection discarded "
                     "(and %d idle one(s))", p->addr, why, flushed);
    redis_pool_maintain(p);
}

void redis_pool_maintain(redis_pool *p)
{
    redisContext *doomed[64];
    int n = 0, keep;
    int64_t now = relay_now_ms();
    int64_t cutoff = now - (int64_t)p->cfg.idle_s * 1000;

    pthread_mutex_lock(&p->mu);
    if (under_pressure_locked(p, now))
        cutoff = now;                   /* another child needs the slots */
    /* The oldest are at the bottom of the stack. */
    while (n < p->nidle && n < 64 && p->idle[n].since_ms <= cutoff) {
        doomed[n] = p->idle[n].c;
        n++;
    }
    if (n) {
        keep = p->nidle - n;
        memmove(p->idle, p->idle + n, (size_t)keep * sizeof(idle_conn));
        p->nidle = keep;
        p->st.closed_idle += (unsigned)n;
    }
    publish_locked(p);
    pthread_mutex_unlock(&p->mu);
    retire(p, doomed, n);
}

void redis_pool_shutdown(redis_pool *p)
{
    redisContext *doomed[64];
    int n = 0, i;

    if (!p)
        return;
    if (pthread_mutex_trylock(&p->mu) != 0)
        return;      /* interrupted mid-acquire: exit() closes the sockets */
    p->stopping = 1;        /* no connection is opened from here on */
    if (p->nidle <= 64) {
        n = take_all_idle_locked(p, doomed);
        p->total -= n;      /* so no retire(): it would lock mu again */
    }
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (i = 0; i < n; i++)
        redisFree(doomed[i]);
    redis_cap_release((unsigned)n);
}

void redis_pool_get_stats(redis_pool *p, redis_pool_stats *st)
{
    pthread_mutex_lock(&p->mu);
    *st = p->st;
    st->in_use = p->in_use;
    st->idle = p->nidle;
    st->total = p->total;
    st->max = p->cfg.max_per_child;
    pthread_mutex_unlock(&p->mu);
}
