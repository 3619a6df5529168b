/*
 * chatctl: the operator's tool for accounts (and later rooms, sessions,
 * the sign-in gate). It talks to Redis directly with one blocking,
 * named connection (CLIENT LIST shows chatctl:<host>:<pid>:1).
 *
 *   chatctl [-c chatd.conf | -r REDIS_URL] adduser NAME PASSWORD
 *           (neither: /etc/chatd/chatd.conf if it exists, else chatd's defaults)
 *   chatctl ... passwd NAME PASSWORD       (PASSWORD "-": read one line from stdin)
 *   chatctl ... deluser NAME
 *   chatctl ... users
 *   chatctl ... signin close [--reason TEXT] [--for DURATION]   (90s, 10m, 1h, 1h30m)
 *   chatctl ... signin open
 *   chatctl ... signin status
 *   chatctl -c chatd.conf stats             (these ask the running chatd over
 *   chatctl -c chatd.conf sessions list      its admin_socket, chatd/core/admin.h)
 *   chatctl -c chatd.conf sessions kick JID
 *   chatctl -c chatd.conf rooms list
 *   chatctl -c chatd.conf rooms destroy ROOM
 *
 * signin drives the sign-in gate, hash chat:signin {closed, reason, until}
 * (common/admission.h): mod_bosh and chatd refuse new sessions with 503
 * while it is closed; `until` (Redis's clock) ends a closure by itself.
 * Only SCRAM verifiers (SHA-1 and SHA-256, 4096 iterations, 16-byte
 * random salt) are written; the password itself never reaches Redis.
 *
 * Exit status: 0 done; 1 refused (user exists, no such user, bad name or
 * password); 2 usage; 3 configuration or Redis unavailable.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "config.h"
#include "users.h"
#include "../../common/admission.h"
#include "../../common/redis_conn.h"
#include "../../common/redis_sentinel.h"
#include "../../common/scram.h"

enum { EXIT_OK = 0, EXIT_REFUSED = 1, EXIT_USAGE = 2, EXIT_UNAVAILABLE = 3 };

#define CONNECT_MS 3000
#define COMMAND_MS 5000
#define SALT_LEN   16

typedef struct ctl {
    const char   *redis_url;
    redisContext *redis;        /* opened on first use */
    const char   *admin_socket; /* chatd's control socket; NULL: off or unknown */
    const redis_sentinels *sentinels;  /* from chatd.conf; NULL or n == 0: none */
} ctl;

typedef struct command {
    const char *name;
    int         nargs;          /* exact number of arguments after the name;
                                   -1: any, the command checks them itself */
    const char *usage;
    int       (*run)(ctl *c, char **argv);
} command;

static redisContext *ctl_redis(ctl *c) {
    redis_url u;
    char err[512], host[128], name[200];
    if (c->redis) return c->redis;
    if (redis_url_parse(c->redis_url, &u, err, sizeof err) != 0) {
        fprintf(stderr, "chatctl: %s\n", err);
        return NULL;
    }
    if (gethostname(host, sizeof host) != 0) strcpy(host, "localhost");
    host[sizeof host - 1] = '\0';
    for (char *p = host; *p; p++)        /* CLIENT SETNAME forbids spaces */
        if (*p == ' ') *p = '_';
    snprintf(name, sizeof name, "chatctl:%s:%ld:1", host, (long)getpid());
    if (c->sentinels && c->sentinels->n > 0) {
        /* chatd.conf names sentinels: write where chatd writes, the master */
        unsigned next = 0;
        c->redis = redis_sentinel_open_master(c->sentinels, &next, &u, name, CONNECT_MS,
                                              COMMAND_MS, NULL, err, sizeof err);
    } else {
        c->redis = redis_conn_open(&u, name, CONNECT_MS, COMMAND_MS, err, sizeof err);
    }
    if (!c->redis) fprintf(stderr, "chatctl: cannot use Redis: %s\n", err);
    return c->redis;
}

/* A reply that is NULL or an error: report it, return 1. */
static int reply_failed(ctl *c, redisReply *r, const char *what) {
    if (!r) {
        fprintf(stderr, "chatctl: %s: %s\n", what, c->redis->errstr[0] ? c->redis->errstr : "no reply");
        return 1;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        fprintf(stderr, "chatctl: %s: %s\n", what, r->str);
        freeReplyObject(r);
        return 1;
    }
    return 0;
}

static int check_name(const char *in, char *out, size_t outcap) {
    if (users_normalize_localpart(in, out, outcap) != 0) {
        fprintf(stderr, "chatctl: invalid user name '%s' (1-%d of a-z 0-9 . _ -)\n",
                in, USERS_MAX_LOCALPART);
        return -1;
    }
    return 0;
}

/* "-" reads the password from stdin (keeps it out of ps and history). */
static char *get_password(const char *arg) {
    char *pw;
    if (strcmp(arg, "-") == 0) {
        char line[1024];
        if (!fgets(line, sizeof line, stdin)) return NULL;
        line[strcspn(line, "\r\n")] = '\0';
        pw = strdup(line);
        OPENSSL_cleanse(line, sizeof line);
    } else {
        pw = strdup(arg);
    }
    if (!pw) abort();
    if (!pw[0]) {
        free(pw);
        return NULL;
    }
    return pw;
}

/* Writes both verifiers. mode "new": fail if the user exists (adds
 * 'created'); "update": fail if not. One script so it is atomic.
 * Returns 1 written, 0 exists (new), -1 missing (update). */
static const char SET_USER_LUA[] =
    "local exists = redis.call('EXISTS', KEYS[1]) == 1\n"
    "if ARGV[4] == 'new' and exists then return 0 end\n"
    "if ARGV[4] == 'update' and not exists then return -1 end\n"
    "redis.call('HSET', KEYS[1], 'scram-sha-1', ARGV[1], 'scram-sha-256', ARGV[2])\n"
    "if ARGV[4] == 'new' then redis.call('HSET', KEYS[1], 'created', ARGV[3]) end\n"
    "redis.call('SADD', KEYS[2], ARGV[5])\n"
    "return 1\n";

static int set_user(ctl *c, char **argv, const char *mode) {
    char name[USERS_MAX_LOCALPART + 1], key[sizeof USERS_KEY_PREFIX + USERS_MAX_LOCALPART];
    char v1[256], v256[256], created[32];
    unsigned char salt1[SALT_LEN], salt256[SALT_LEN];
    scram_verifier v;

    if (check_name(argv[0], name, sizeof name) != 0) return EXIT_REFUSED;
    char *pw = get_password(argv[1]);
    if (!pw) {
        fprintf(stderr, "chatctl: empty password\n");
        return EXIT_REFUSED;
    }
    if (RAND_bytes(salt1, SALT_LEN) != 1 || RAND_bytes(salt256, SALT_LEN) != 1) {
        fprintf(stderr, "chatctl: no randomness for the salt\n");
        OPENSSL_cleanse(pw, strlen(pw));
        free(pw);
        return EXIT_UNAVAILABLE;
    }
    int ok = scram_make_verifier(SCRAM_SHA1, pw, salt1, SALT_LEN, SCRAM_DEFAULT_ITERATIONS, &v) == 0 &&
             scram_verifier_format(&v, v1, sizeof v1) > 0 &&
             scram_make_verifier(SCRAM_SHA256, pw, salt256, SALT_LEN, SCRAM_DEFAULT_ITERATIONS, &v) == 0 &&
             scram_verifier_format(&v, v256, sizeof v256) > 0;
    OPENSSL_cleanse(&v, sizeof v);
    OPENSSL_cleanse(pw, strlen(pw));
    free(pw);
    if (!ok) {
        fprintf(stderr, "chatctl: could not compute the SCRAM verifiers\n");
        return EXIT_UNAVAILABLE;
    }

    redisContext *r = ctl_redis(c);
    if (!r) return EXIT_UNAVAILABLE;
    snprintf(key, sizeof key, USERS_KEY_PREFIX "%s", name);
    snprintf(created, sizeof created, "%lld", (long long)time(NULL));
    redisReply *rep = redisCommand(r, "EVAL %s 2 %s %s %s %s %s %s %s", SET_USER_LUA,
                                   key, USERS_SET_KEY, v1, v256, created, mode, name);
    if (reply_failed(c, rep, "writing the user")) return EXIT_UNAVAILABLE;
    long long res = rep->type == REDIS_REPLY_INTEGER ? rep->integer : -2;
    freeReplyObject(rep);
    if (res == 0) {
        fprintf(stderr, "chatctl: user '%s' already exists (use passwd to change the password)\n", name);
        return EXIT_REFUSED;
    }
    if (res == -1) {
        fprintf(stderr, "chatctl: no such user '%s'\n", name);
        return EXIT_REFUSED;
    }
    if (res != 1) {
        fprintf(stderr, "chatctl: unexpected reply from Redis\n");
        return EXIT_UNAVAILABLE;
    }
    printf("%s %s\n", strcmp(mode, "new") == 0 ? "added" : "password changed for", name);
    return EXIT_OK;
}

static int cmd_adduser(ctl *c, char **argv) { return set_user(c, argv, "new"); }
static int cmd_passwd(ctl *c, char **argv)  { return set_user(c, argv, "update"); }

/* The account, its roster and its offline messages go; other users'
 * rosters keep their entry (as on any XMPP server). */
static const char DEL_USER_LUA[] =
    "if redis.call('DEL', KEYS[1]) == 0 then return 0 end\n"
    "redis.call('SREM', KEYS[2], ARGV[1])\n"
    "redis.call('DEL', KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7])\n"
    "return 1\n";

static int cmd_deluser(ctl *c, char **argv) {
    char name[USERS_MAX_LOCALPART + 1], key[200], roster[200], offline[200];
    char use[200], lease[200], subin[200];
    if (check_name(argv[0], name, sizeof name) != 0) return EXIT_REFUSED;
    redisContext *r = ctl_redis(c);
    if (!r) return EXIT_UNAVAILABLE;
    snprintf(key, sizeof key, USERS_KEY_PREFIX "%s", name);
    snprintf(roster, sizeof roster, "chat:roster:%s", name);
    snprintf(offline, sizeof offline, "chat:offline:%s", name);
    /* Offline quota usage and lease, pending subscription requests (issue
     * 14): a user created again with the name must not inherit them. */
    snprintf(use, sizeof use, "chat:offline-use:%s", name);
    snprintf(lease, sizeof lease, "chat:offline-lease:%s", name);
    snprintf(subin, sizeof subin, "chat:subin:%s", name);
    redisReply *rep = redisCommand(r, "EVAL %s 7 %s %s %s %s %s %s %s %s", DEL_USER_LUA,
                                   key, USERS_SET_KEY, roster, offline, use, lease, subin,
                                   name);
    if (reply_failed(c, rep, "deleting the user")) return EXIT_UNAVAILABLE;
    long long res = rep->type == REDIS_REPLY_INTEGER ? rep->integer : -2;
    freeReplyObject(rep);
    if (res == 0) {
        fprintf(stderr, "chatctl: no such user '%s'\n", name);
        return EXIT_REFUSED;
    }
    printf("deleted %s\n", name);
    return EXIT_OK;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmd_users(ctl *c, char **argv) {
    (void)argv;
    redisContext *r = ctl_redis(c);
    if (!r) return EXIT_UNAVAILABLE;
    redisReply *rep = redisCommand(r, "SMEMBERS %s", USERS_SET_KEY);
    if (reply_failed(c, rep, "listing users")) return EXIT_UNAVAILABLE;
    if (rep->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(rep);
        fprintf(stderr, "chatctl: unexpected reply from Redis\n");
        return EXIT_UNAVAILABLE;
    }
    size_t n = rep->elements;
    char **names = calloc(n ? n : 1, sizeof *names);
    if (!names) abort();
    for (size_t i = 0; i < n; i++)
        names[i] = rep->element[i]->type == REDIS_REPLY_STRING ? rep->element[i]->str : "";
    qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n; i++) printf("%s\n", names[i]);
    free(names);
    freeReplyObject(rep);
    return EXIT_OK;
}

/* ---- signin: the operators' switch for new sessions ---- */

#define SIGNIN_MAX_REASON 200

/* "1h2m3s" style; buf >= 32. */
static const char *fmt_secs(long long s, char *buf, size_t len) {
    long long h = s / 3600, m = (s % 3600) / 60, sec = s % 60;
    if (h) snprintf(buf, len, "%lldh%02lldm%02llds", h, m, sec);
    else if (m) snprintf(buf, len, "%lldm%02llds", m, sec);
    else snprintf(buf, len, "%llds", sec);
    return buf;
}

static const char *fmt_utc(long long t, char *buf, size_t len) {
    time_t tt = (time_t)t;
    struct tm tm;
    if (!gmtime_r(&tt, &tm) || !strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm))
        snprintf(buf, len, "%lld", t);
    return buf;
}

/* Sets the gate with Redis's clock (the one the admission script reads),
 * so `--for` means the same on every frontend. Returns {until, now}. */
static const char SIGNIN_CLOSE_LUA[] =
    "if redis.replicate_commands then redis.replicate_commands() end\n"
    "local now = tonumber(redis.call('TIME')[1])\n"
    "local till = 0\n"
    "if tonumber(ARGV[2]) > 0 then till = now + tonumber(ARGV[2]) end\n"
    "redis.call('HSET', KEYS[1], 'closed', '1', 'reason', ARGV[1], 'until', till)\n"
    "return {till, now}\n";

static int signin_close(ctl *c, char **argv) {
    const char *reason = "", *dur = NULL;
    long long secs = 0;
    char buf[64], when[64];

    for (int i = 0; argv[i]; i++) {
        if (strcmp(argv[i], "--reason") == 0 && argv[i + 1]) reason = argv[++i];
        else if (strncmp(argv[i], "--reason=", 9) == 0) reason = argv[i] + 9;
        else if (strcmp(argv[i], "--for") == 0 && argv[i + 1]) dur = argv[++i];
        else if (strncmp(argv[i], "--for=", 6) == 0) dur = argv[i] + 6;
        else {
            fprintf(stderr, "chatctl: signin close: unexpected '%s'\n"
                            "usage: chatctl signin close [--reason TEXT] [--for DURATION]\n", argv[i]);
            return EXIT_USAGE;
        }
    }
    if (dur && (admission_parse_duration(dur, &secs) != 0 || secs <= 0)) {
        fprintf(stderr, "chatctl: --for wants a positive duration like 90s, 10m, 1h or 1h30m, not '%s'\n", dur);
        return EXIT_USAGE;
    }
    if (strlen(reason) > SIGNIN_MAX_REASON) {
        fprintf(stderr, "chatctl: the reason is longer than %d bytes\n", SIGNIN_MAX_REASON);
        return EXIT_USAGE;
    }
    for (const char *p = reason; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            fprintf(stderr, "chatctl: the reason must be one line of text (users see it)\n");
            return EXIT_USAGE;
        }

    redisContext *r = ctl_redis(c);
    if (!r) return EXIT_UNAVAILABLE;
    redisReply *rep = redisCommand(r, "EVAL %s 1 %s %s %lld", SIGNIN_CLOSE_LUA,
                                   ADMISSION_GATE_KEY, reason, secs);
    if (reply_failed(c, rep, "closing sign-in")) return EXIT_UNAVAILABLE;
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2) {
        freeReplyObject(rep);
        fprintf(stderr, "chatctl: unexpected reply from Redis\n");
        return EXIT_UNAVAILABLE;
    }
    long long till = rep->element[0]->integer;
    freeReplyObject(rep);
    if (till)
        printf("sign-in closed for %s, until %s", fmt_secs(secs, buf, sizeof buf),
               fmt_utc(till, when, sizeof when));
    else
        printf("sign-in closed until `chatctl signin open`");
    printf("%s%s\n", reason[0] ? ": " : "", reason);
    return EXIT_OK;
}

static int signin_open(ctl *c) {
    redisContext *r = ctl_redis(c);
    if (!r) return EXIT_UNAVAILABLE;
    redisReply *rep = redisCommand(r, "HSET %s closed 0 reason %s until 0",
                                   ADMISSION_GATE_KEY, "");
    if (reply_failed(c, rep, "opening sign-in")) return EXIT_UNAVAILABLE;
    freeReplyObject(rep);
    printf("sign-in open\n");
    return EXIT_OK;
}

static const char *elem_str(const redisReply *r, size_t i) {
    if (!r || r->type != REDIS_REPLY_ARRAY || i >= r->elements) return NULL;
    return r->element[i]->type == REDIS_REPLY_STRING ? r->element[i]->str : NULL;
}

/* The admission script's server-wide counters (admission.h), all
 * frontends together: outcomes so far, and admissions per second of
 * Redis's clock over the last SIGNIN_SECONDS seconds, oldest first. */
#define SIGNIN_SECONDS 10
static int signin_counters(redisContext *r, long long now_s) {
    const char *argv[2 + SIGNIN_SECONDS];
    char keys[SIGNIN_SECONDS][64];
    redisReply *rep = redisCommand(r, "HMGET %s admitted closed rate address",
                                   ADMISSION_STATS_KEY);
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 4) {
        if (rep) freeReplyObject(rep);
        fprintf(stderr, "chatctl: cannot read %s\n", ADMISSION_STATS_KEY);
        return EXIT_UNAVAILABLE;
    }
    printf("sign-ins admitted: %s\n", elem_str(rep, 0) ? elem_str(rep, 0) : "0");
    printf("refused by gate: %s\n", elem_str(rep, 1) ? elem_str(rep, 1) : "0");
    printf("refused by rate: %s\n", elem_str(rep, 2) ? elem_str(rep, 2) : "0");
    printf("refused by address cap: %s\n", elem_str(rep, 3) ? elem_str(rep, 3) : "0");
    freeReplyObject(rep);

    argv[0] = "MGET";
    for (int i = 0; i < SIGNIN_SECONDS; i++) {
        snprintf(keys[i], sizeof keys[i], "%s%lld", ADMISSION_SEC_PREFIX,
                 now_s - SIGNIN_SECONDS + 1 + i);
        argv[1 + i] = keys[i];
    }
    rep = redisCommandArgv(r, 1 + SIGNIN_SECONDS, argv, NULL);
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != SIGNIN_SECONDS) {
        if (rep) freeReplyObject(rep);
        fprintf(stderr, "chatctl: cannot read the per-second counts\n");
        return EXIT_UNAVAILABLE;
    }
    printf("admitted per second, last %d s (oldest first):", SIGNIN_SECONDS);
    for (size_t i = 0; i < rep->elements; i++)
        printf(" %s", elem_str(rep, i) ? elem_str(rep, i) : "0");
    printf("\n");
    freeReplyObject(rep);
    return EXIT_OK;
}

static int signin_status(ctl *c) {
    char buf[64], when[64];
    redisContext *r = ctl_redis(c);
    if (!r) return EXIT_UNAVAILABLE;

    /* One MULTI so the clock, gate and bucket are read at one instant. */
    redisAppendCommand(r, "MULTI");
    redisAppendCommand(r, "TIME");
    redisAppendCommand(r, "HMGET %s closed reason until", ADMISSION_GATE_KEY);
    redisAppendCommand(r, "HMGET %s tokens ts rate burst", ADMISSION_BUCKET_KEY);
    redisAppendCommand(r, "EXEC");
    redisReply *rep = NULL;
    for (int i = 0; i < 5; i++) {
        if (rep) freeReplyObject(rep);
        if (redisGetReply(r, (void **)&rep) != REDIS_OK) rep = NULL;
        if (reply_failed(c, rep, "reading the sign-in state")) return EXIT_UNAVAILABLE;
    }
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 3 ||
        rep->element[0]->type != REDIS_REPLY_ARRAY || rep->element[0]->elements != 2) {
        freeReplyObject(rep);
        fprintf(stderr, "chatctl: unexpected reply from Redis\n");
        return EXIT_UNAVAILABLE;
    }
    const redisReply *gate = rep->element[1], *bucket = rep->element[2];
    long long now_s = atoll(rep->element[0]->element[0]->str);
    long long now_ms = now_s * 1000 + atoll(rep->element[0]->element[1]->str) / 1000;
    const char *closed = elem_str(gate, 0), *reason = elem_str(gate, 1),
               *until = elem_str(gate, 2);
    long long till = until ? atoll(until) : 0;
    int is_closed = closed && closed[0] && strcmp(closed, "0") != 0;

    if (is_closed && (till <= 0 || till > now_s)) {
        printf("sign-in: closed\n");
        printf("reason: %s\n", reason && reason[0] ? reason : "(none given)");
        if (till > 0)
            printf("remaining: %s (until %s)\n", fmt_secs(till - now_s, buf, sizeof buf),
                   fmt_utc(till, when, sizeof when));
        else
            printf("remaining: indefinitely (until `chatctl signin open`)\n");
    } else if (is_closed) {
        printf("sign-in: open (the closure ran out %s ago, at %s)\n",
               fmt_secs(now_s - till, buf, sizeof buf), fmt_utc(till, when, sizeof when));
    } else {
        printf("sign-in: open\n");
    }

    /* The bucket as the admission script would see it now. */
    const char *tok = elem_str(bucket, 0), *ts = elem_str(bucket, 1),
               *rate = elem_str(bucket, 2), *burst = elem_str(bucket, 3);
    if (tok && ts && rate && burst && atof(rate) > 0) {
        double t = atof(tok), b = atof(burst), rt = atof(rate);
        long long last = atoll(ts);
        if (now_ms > last) t += (double)(now_ms - last) * rt / 1000.0;
        if (t > b) t = b;
        printf("bucket: %.1f of %.0f tokens, refill %s/s, last attempt %s ago\n",
               t, b, rate, fmt_secs((now_ms - last) / 1000, buf, sizeof buf));
    } else {
        printf("bucket: full (no sign-in within one refill time, or no rate configured)\n");
    }
    freeReplyObject(rep);
    return signin_counters(r, now_s);
}

static int cmd_signin(ctl *c, char **argv) {
    const char *sub = argv[0];
    if (sub && strcmp(sub, "close") == 0) return signin_close(c, argv + 1);
    if (sub && argv[1] == NULL) {
        if (strcmp(sub, "open") == 0) return signin_open(c);
        if (strcmp(sub, "status") == 0) return signin_status(c);
    }
    fprintf(stderr, "usage: chatctl signin close [--reason TEXT] [--for DURATION] | open | status\n");
    return EXIT_USAGE;
}

/* ---- commands for the running chatd (its admin socket) ---- */

#define ADMIN_TIMEOUT_MS 5000

static int elapsed_ms(const struct timespec *t0) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int)((now.tv_sec - t0->tv_sec) * 1000 + (now.tv_nsec - t0->tv_nsec) / 1000000);
}

/* Send one command line; print the answer's lines; the last line says
 * "ok" or "error: ...". chatd answers from memory, so a slow answer means
 * a stuck chatd: give up after ADMIN_TIMEOUT_MS. */
static int admin_request(ctl *c, const char *line) {
    struct sockaddr_un sun;
    if (!c->admin_socket) {
        fprintf(stderr, "chatctl: no admin socket: give -c chatd.conf with admin_socket "
                        "(or a unix: relay_listen)\n");
        return EXIT_UNAVAILABLE;
    }
    if (strlen(c->admin_socket) >= sizeof sun.sun_path) {
        fprintf(stderr, "chatctl: admin socket path too long\n");
        return EXIT_UNAVAILABLE;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) { perror("chatctl: socket"); return EXIT_UNAVAILABLE; }
    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    strcpy(sun.sun_path, c->admin_socket);
    if (connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
        fprintf(stderr, "chatctl: cannot reach chatd at %s: %s (is it running?)\n",
                c->admin_socket, strerror(errno));
        close(fd);
        return EXIT_UNAVAILABLE;
    }
    size_t len = strlen(line);
    char *msg = malloc(len + 2);
    if (!msg) abort();
    memcpy(msg, line, len);
    msg[len++] = '\n';
    ssize_t w = send(fd, msg, len, MSG_NOSIGNAL);
    free(msg);
    if (w != (ssize_t)len) {
        fprintf(stderr, "chatctl: cannot talk to chatd at %s\n", c->admin_socket);
        close(fd);
        return EXIT_UNAVAILABLE;
    }
    shutdown(fd, SHUT_WR);   /* chatd closes once it has answered */

    char *buf = NULL;
    size_t n = 0, cap = 0;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        int left = ADMIN_TIMEOUT_MS - elapsed_ms(&t0);
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int pr = left > 0 ? poll(&p, 1, left) : 0;
        if (pr < 0 && errno == EINTR) continue;
        if (pr <= 0) {
            fprintf(stderr, "chatctl: no answer from chatd within %d ms\n", ADMIN_TIMEOUT_MS);
            free(buf);
            close(fd);
            return EXIT_UNAVAILABLE;
        }
        if (n + 4096 + 1 > cap) {
            cap = cap ? 2 * cap : 8192;
            buf = realloc(buf, cap);
            if (!buf) abort();
        }
        ssize_t r = recv(fd, buf + n, cap - n - 1, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        n += (size_t)r;
    }
    close(fd);
    if (!buf) buf = calloc(1, 1);
    if (!buf) abort();
    buf[n] = '\0';
    /* Split off the final status line. */
    while (n && buf[n - 1] == '\n') buf[--n] = '\0';
    char *last = strrchr(buf, '\n');
    char *status = last ? last + 1 : buf;
    if (last) *last = '\0';
    int rc;
    if (!strcmp(status, "ok")) {
        if (last) printf("%s\n", buf);
        rc = EXIT_OK;
    } else if (!strncmp(status, "error: ", 7)) {
        if (last) printf("%s\n", buf);
        fprintf(stderr, "chatctl: %s\n", status + 7);
        rc = EXIT_REFUSED;
    } else {
        fprintf(stderr, "chatctl: chatd's answer was cut short\n");
        rc = EXIT_UNAVAILABLE;
    }
    free(buf);
    return rc;
}

static int cmd_stats(ctl *c, char **argv) {
    (void)argv;
    return admin_request(c, "stats");
}

/* Command lines are single lines: no newline may sneak into an argument. */
static int one_line_arg(const char *what, const char *arg) {
    if (!*arg || strpbrk(arg, "\r\n")) {
        fprintf(stderr, "chatctl: bad %s '%s'\n", what, arg);
        return 0;
    }
    return 1;
}

static int cmd_sessions(ctl *c, char **argv) {
    char line[1200];
    if (argv[0] && !strcmp(argv[0], "list") && !argv[1]) return admin_request(c, "sessions");
    if (argv[0] && !strcmp(argv[0], "kick") && argv[1] && !argv[2]) {
        if (!one_line_arg("JID", argv[1]) || strlen(argv[1]) > 1100) return EXIT_USAGE;
        snprintf(line, sizeof line, "kick %s", argv[1]);
        return admin_request(c, line);
    }
    fprintf(stderr, "usage: chatctl sessions list | sessions kick JID\n");
    return EXIT_USAGE;
}

static int cmd_rooms(ctl *c, char **argv) {
    char line[1200];
    if (argv[0] && !strcmp(argv[0], "list") && !argv[1]) return admin_request(c, "rooms");
    if (argv[0] && !strcmp(argv[0], "destroy") && argv[1] && !argv[2]) {
        if (!one_line_arg("room", argv[1]) || strlen(argv[1]) > 1100) return EXIT_USAGE;
        snprintf(line, sizeof line, "room-destroy %s", argv[1]);
        return admin_request(c, line);
    }
    fprintf(stderr, "usage: chatctl rooms list | rooms destroy ROOM\n");
    return EXIT_USAGE;
}

static const command commands[] = {
    { "adduser", 2, "adduser NAME PASSWORD   add an account (fails if it exists)", cmd_adduser },
    { "passwd",  2, "passwd NAME PASSWORD    set an existing account's password", cmd_passwd },
    { "deluser", 1, "deluser NAME            delete an account, its roster and offline messages", cmd_deluser },
    { "users",   0, "users                   list accounts", cmd_users },
    { "signin", -1, "signin close [--reason TEXT] [--for DURATION]\n"
                    "                          refuse new sessions (503 + Retry-After); DURATION 90s, 10m, 1h\n"
                    "  signin open             admit new sessions again\n"
                    "  signin status           closed/open, reason, time left, the rate bucket", cmd_signin },
    { "stats",    0, "stats                   the running chatd's counters (needs -c: admin_socket)", cmd_stats },
    { "sessions", -1, "sessions list           bound sessions: JID, c2s|bosh, client address\n"
                      "  sessions kick JID       end a session (bare JID: all of that user's)", cmd_sessions },
    { "rooms",    -1, "rooms list              rooms in memory: JID, occupants, persistent|temporary\n"
                      "  rooms destroy ROOM      destroy a room (occupants are told; Redis state goes)", cmd_rooms },
    { NULL, 0, NULL, NULL }
};

static void usage(FILE *f) {
    fprintf(f, "usage: chatctl [-c chatd.conf | -r REDIS_URL] COMMAND [ARGS]\n"
               "Neither -c nor -r: " CHATD_CONF_DEFAULT " if it exists, else chatd's defaults.\n"
               "PASSWORD \"-\" reads the password from standard input.\ncommands:\n");
    for (const command *c = commands; c->name; c++) fprintf(f, "  %s\n", c->usage);
    fprintf(f, "exit status: 0 done, 1 refused, 2 usage, 3 config, Redis or chatd unavailable\n");
}

int main(int argc, char **argv) {
    const char *conf = NULL, *url = NULL;
    int opt;
    while ((opt = getopt(argc, argv, "+c:r:h")) != -1) {
        switch (opt) {
        case 'c': conf = optarg; break;
        case 'r': url = optarg; break;
        case 'h': usage(stdout); return EXIT_OK;
        default:  usage(stderr); return EXIT_USAGE;
        }
    }
    if (conf && url) {
        fprintf(stderr, "chatctl: give -c or -r, not both\n");
        return EXIT_USAGE;
    }
    if (optind >= argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const command *cmd = NULL;
    for (const command *c = commands; c->name; c++)
        if (strcmp(c->name, argv[optind]) == 0) cmd = c;
    if (!cmd) {
        fprintf(stderr, "chatctl: unknown command '%s'\n", argv[optind]);
        usage(stderr);
        return EXIT_USAGE;
    }
    if (cmd->nargs >= 0 && argc - optind - 1 != cmd->nargs) {
        fprintf(stderr, "usage: chatctl %s\n", cmd->usage);
        return EXIT_USAGE;
    }

    chatd_config cfg;
    char err[512];
    int cfg_loaded = 0;
    memset(&cfg, 0, sizeof cfg);
    if (!url) {
        /* Neither -c nor -r: the installed /etc/chatd/chatd.conf when there
         * is one (what the running chatd uses), else chatd's defaults
         * (redis://127.0.0.1:6379/0). One that exists but cannot be read is
         * an error, not a silent fall-back to another Redis. */
        int implicit = !conf;
        if (implicit) conf = config_path_if_present(CHATD_CONF_DEFAULT);
        if (config_load(&cfg, conf, err, sizeof err) != 0) {
            fprintf(stderr, "chatctl: %s\n", err);
            if (implicit)
                fprintf(stderr, "chatctl: (read by default; run as root or group _chatd, "
                                "or give -c FILE or -r REDIS_URL)\n");
            return EXIT_UNAVAILABLE;
        }
        cfg_loaded = 1;
        url = cfg.redis_url;
    }
    ctl c = { url, NULL, cfg_loaded ? cfg.admin_socket : NULL,
              cfg_loaded ? &cfg.redis_sentinels : NULL };
    int rc = cmd->run(&c, argv + optind + 1);
    if (c.redis) redisFree(c.redis);
    if (cfg_loaded) config_free(&cfg);
    return rc;
}
