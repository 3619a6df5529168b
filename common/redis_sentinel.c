/*
 * redis_sentinel.c: the sentinel list, reading the sentinels' answers, the
 * jittered back-off, and the blocking "open the master" used by mod_bosh's
 * pool and chatctl (see redis_sentinel.h for why).
 */
#include "redis_sentinel.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SENTINEL_DEFAULT_PORT 26379

static void set_err(char *err, size_t errlen, const char *fmt, const char *arg) {
    if (err && errlen) snprintf(err, errlen, fmt, arg ? arg : "");
}

/* One "host[:port]" or "[v6][:port]" entry of n bytes. */
static int add_one(redis_sentinels *s, const char *p, size_t n, char *err, size_t errlen) {
    char buf[300], url[310];
    if (n == 0) { set_err(err, errlen, "redis sentinels: empty entry in the list%s", NULL); return -1; }
    if (n >= sizeof buf) { set_err(err, errlen, "redis sentinels: entry too long%s", NULL); return -1; }
    memcpy(buf, p, n);
    buf[n] = '\0';
    if (strpbrk(buf, "/@?# \t")) {
        set_err(err, errlen, "redis sentinels: '%s' is not host:port", buf);
        return -1;
    }
    if (s->n >= REDIS_SENTINEL_MAX) {
        set_err(err, errlen, "redis sentinels: more than 16%s", NULL);
        return -1;
    }
    const char *rb = strchr(buf, ']');
    int has_port = buf[0] == '[' ? (rb && rb[1] == ':') : strchr(buf, ':') != NULL;
    snprintf(url, sizeof url, "redis://%s", buf);
    redis_url *u = &s->addr[s->n];
    char why[256], pw[sizeof u->password];
    /* set_password fills every slot, before or after the list */
    memcpy(pw, u->password, sizeof pw);
    if (redis_url_parse(url, u, why, sizeof why) != 0) {
        if (err && errlen) snprintf(err, errlen, "redis sentinels: '%s': %s", buf, why);
        return -1;
    }
    if (!has_port) u->port = SENTINEL_DEFAULT_PORT;
    memcpy(u->password, pw, sizeof pw);
    s->n++;
    return 0;
}

int redis_sentinels_add(redis_sentinels *s, const char *list, char *err, size_t errlen) {
    if (!list || !*list) { set_err(err, errlen, "redis sentinels: empty list%s", NULL); return -1; }
    const char *p = list;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        while (n && isspace((unsigned char)*p)) { p++; n--; }
        while (n && isspace((unsigned char)p[n - 1])) n--;
        if (add_one(s, p, n, err, errlen) != 0) return -1;
        if (!comma) break;
        p = comma + 1;
    }
    return 0;
}

int redis_sentinels_set_master(redis_sentinels *s, const char *name, char *err, size_t errlen) {
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n >= sizeof s->master) {
        set_err(err, errlen, "redis sentinel master name: 1..127 characters%s", NULL);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!isalnum(c) && c != '-' && c != '_' && c != '.') {
            set_err(err, errlen, "redis sentinel master name '%s': letters, digits, '-', '_', '.' only",
                    name);
            return -1;
        }
    }
    memcpy(s->master, name, n + 1);
    return 0;
}

int redis_sentinels_set_password(redis_sentinels *s, const char *pw, char *err, size_t errlen) {
    size_t n = pw ? strlen(pw) : 0;
    if (n >= sizeof s->addr[0].password) {
        set_err(err, errlen, "redis sentinel password too long%s", NULL);
        return -1;
    }
    for (int i = 0; i < REDIS_SENTINEL_MAX; i++) {
        memset(s->addr[i].password, 0, sizeof s->addr[i].password);
        if (n) memcpy(s->addr[i].password, pw, n);
    }
    return 0;
}

int redis_sentinels_check(const redis_sentinels *s, const redis_url *master,
                          char *err, size_t errlen) {
    if (s->n == 0 && !s->master[0]) return 0;
    if (s->n == 0) {
        set_err(err, errlen, "a sentinel master name is set but no sentinels%s", NULL);
        return -1;
    }
    if (!s->master[0]) {
        set_err(err, errlen, "sentinels are set but no master name (the name in the "
                "sentinels' 'sentinel monitor <name> ...')%s", NULL);
        return -1;
    }
    if (master && master->is_unix) {
        set_err(err, errlen, "with sentinels the Redis URL must be redis:// (the sentinels "
                "hand out TCP addresses; its password and database still apply)%s", NULL);
        return -1;
    }
    return 0;
}

int redis_sentinel_parse_master(const redisReply *r, char *host, size_t hostlen,
                                int *port, char *err, size_t errlen) {
    if (!r) { set_err(err, errlen, "no reply%s", NULL); return -1; }
    if (r->type == REDIS_REPLY_NIL) return 1;
    if (r->type == REDIS_REPLY_ERROR) { set_err(err, errlen, "%s", r->str); return -1; }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_STRING) {
        set_err(err, errlen, "unexpected answer to SENTINEL get-master-addr-by-name%s", NULL);
        return -1;
    }
    const redisReply *h = r->element[0], *p = r->element[1];
    if (h->len == 0 || h->len >= hostlen || memchr(h->str, '\0', h->len)) {
        set_err(err, errlen, "bad master host in the sentinel's answer%s", NULL);
        return -1;
    }
    long v = 0;
    if (p->len == 0 || p->len > 5) { set_err(err, errlen, "bad master port%s", NULL); return -1; }
    for (size_t i = 0; i < p->len; i++) {
        if (!isdigit((unsigned char)p->str[i])) { set_err(err, errlen, "bad master port%s", NULL); return -1; }
        v = v * 10 + (p->str[i] - '0');
    }
    if (v < 1 || v > 65535) { set_err(err, errlen, "bad master port%s", NULL); return -1; }
    memcpy(host, h->str, h->len);
    host[h->len] = '\0';
    *port = (int)v;
    return 0;
}

int redis_role_is_master(const redisReply *r) {
    return r && r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
           (r->element[0]->type == REDIS_REPLY_STRING || r->element[0]->type == REDIS_REPLY_STATUS) &&
           r->element[0]->len == 6 && memcmp(r->element[0]->str, "master", 6) == 0;
}

int redis_error_means_failover(const char *e) {
    return e && (strncmp(e, "READONLY", 8) == 0 || strncmp(e, "LOADING", 7) == 0 ||
                 strncmp(e, "MASTERDOWN", 10) == 0 || strstr(e, ": READONLY") ||
                 strstr(e, ": LOADING") || strstr(e, ": MASTERDOWN"));
}

unsigned redis_backoff_ms(unsigned attempt, unsigned min_ms, unsigned max_ms, uint32_t rnd) {
    if (min_ms == 0) min_ms = 1;
    if (max_ms < min_ms) max_ms = min_ms;
    unsigned d = min_ms;
    for (unsigned i = 0; i < attempt && d < max_ms; i++)
        d = d > max_ms / 2 ? max_ms : d * 2;
    if (d > max_ms) d = max_ms;
    unsigned half = d / 2;
    return half + (unsigned)(rnd % (uint32_t)(d - half + 1));
}

/* One sentinel's answer: 0 with host/port, else -1 with err. */
static int ask_one(const redis_url *sent, const char *master_name, const char *name,
                   int connect_ms, int command_ms, char *host, size_t hostlen, int *port,
                   char *err, size_t errlen) {
    char sname[300], where[300], why[256];
    snprintf(sname, sizeof sname, "%s:sentinel", name && *name ? name : "client");
    redis_url_describe(sent, where, sizeof where);
    redisContext *c = redis_conn_open(sent, sname, connect_ms, command_ms, why, sizeof why);
    if (!c) {
        if (err && errlen) snprintf(err, errlen, "sentinel %s: %s", where, why);
        return -1;
    }
    redisReply *r = redisCommand(c, "SENTINEL get-master-addr-by-name %s", master_name);
    int rc = redis_sentinel_parse_master(r, host, hostlen, port, why, sizeof why);
    if (rc != 0 && err && errlen) {
        if (rc > 0) snprintf(err, errlen, "sentinel %s does not know master '%s'", where, master_name);
        else snprintf(err, errlen, "sentinel %s: %s", where, !r && c->errstr[0] ? c->errstr : why);
    }
    if (r) freeReplyObject(r);
    redisFree(c);
    return rc == 0 ? 0 : -1;
}

int redis_sentinel_ask(const redis_sentinels *s, unsigned *next, const char *name,
                       int connect_ms, int command_ms, char *host, size_t hostlen,
                       int *port, char *err, size_t errlen) {
    char why[1024] = "";
    unsigned start = next ? *next : 0;
    if (s->n <= 0) { set_err(err, errlen, "no sentinels configured%s", NULL); return -1; }
    for (int i = 0; i < s->n; i++) {
        unsigned k = (start + (unsigned)i) % (unsigned)s->n;
        if (ask_one(&s->addr[k], s->master, name, connect_ms, command_ms, host, hostlen,
                    port, why, sizeof why) == 0)
            return 0;
        if (next) *next = (k + 1) % (unsigned)s->n;   /* start elsewhere next time */
    }
    if (err && errlen) snprintf(err, errlen, "no sentinel answered (last: %s)", why);
    return -1;
}

redisContext *redis_sentinel_open_master(const redis_sentinels *s, unsigned *next,
                                         const redis_url *master, const char *name,
                                         int connect_ms, int command_ms,
                                         redis_url *found, char *err, size_t errlen) {
    char host[256], why[1024] = "";
    int port = 0;
    if (redis_sentinel_ask(s, next, name, connect_ms, command_ms, host, sizeof host, &port,
                           err, errlen) != 0)
        return NULL;
    redis_url u = *master;
    snprintf(u.host, sizeof u.host, "%s", host);
    u.port = port;
    u.is_unix = 0;
    if (found) *found = u;
    redisContext *c = redis_conn_open(&u, name, connect_ms, command_ms, why, sizeof why);
    memset(&u, 0, sizeof u);
    if (!c) {
        if (err && errlen) snprintf(err, errlen, "master %s:%d (from the sentinels): %s",
                                    host, port, why);
        return NULL;
    }
    redisReply *r = redisCommand(c, "ROLE");
    int ok = redis_role_is_master(r);
    if (r) freeReplyObject(r);
    if (!ok) {
        /* The sentinels have not caught up yet: a retry asks them again. */
        if (err && errlen) snprintf(err, errlen, "%s:%d, named master by the sentinels, "
                                    "is not a master (yet)", host, port);
        redisFree(c);
        return NULL;
    }
    return c;
}
