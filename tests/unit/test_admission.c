/*
 * test_admission: the sign-in admission core.
 *
 * Pure part: the script's reply -> admission_result, the Retry-After
 * jitter (range and spread), the argv, duration parsing.
 * Real part: a private redis-server on a unix socket in a temp dir runs
 * the actual script: gate closed / expired, burst then rate refusal and
 * recovery after the hint, per-address cap, EVALSHA/NOSCRIPT fallback.
 * No redis-server is a failure, not a skip.
 */
#include "unit.h"
#include "../../common/admission.h"

#include <errno.h>
#include <stdarg.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---------- pure: reply interpretation ---------- */

static redisReply r_int(long long v) {
    redisReply r;
    memset(&r, 0, sizeof r);
    r.type = REDIS_REPLY_INTEGER;
    r.integer = v;
    return r;
}

static redisReply r_str(const char *s) {
    redisReply r;
    memset(&r, 0, sizeof r);
    r.type = REDIS_REPLY_STRING;
    r.str = (char *)s;
    r.len = strlen(s);
    return r;
}

/* Interpret {verdict, hint, text} built by hand. */
static int interpret3(long long verdict, long long hint, const char *text,
                      unsigned window, uint32_t rnd, admission_result *out) {
    redisReply v = r_int(verdict), h = r_int(hint), t = r_str(text);
    redisReply *elems[3] = { &v, &h, &t };
    redisReply arr;
    char err[128];
    memset(&arr, 0, sizeof arr);
    arr.type = REDIS_REPLY_ARRAY;
    arr.elements = 3;
    arr.element = elems;
    return admission_interpret(&arr, window, rnd, out, err, sizeof err);
}

static void test_interpret(void) {
    admission_result res;
    char err[128];

    CHECK(interpret3(0, 0, "", 10, 12345, &res) == 0);
    CHECK(res.verdict == ADMIT_OK);
    CHECK(res.retry_after_s == 0);
    CHECK_STR(res.reason, "");

    /* closed with a reason: hint 30 s, rnd 0 -> exactly the hint */
    CHECK(interpret3(1, 30000, "maintenance", 10, 0, &res) == 0);
    CHECK(res.verdict == ADMIT_CLOSED);
    CHECK(res.retry_hint_ms == 30000);
    CHECK(res.retry_after_s == 30);
    CHECK_STR(res.reason, "sign-in is closed: maintenance; try again in 30 s");

    /* closed, no reason, top of the window */
    CHECK(interpret3(1, 30000, "", 10, UINT32_MAX, &res) == 0);
    CHECK(res.retry_after_s == 40);
    CHECK_STR(res.reason, "sign-in is closed for now; try again in 40 s");

    /* rate: 250 ms rounds up to 1 s */
    CHECK(interpret3(2, 250, "too many sign-ins right now", 0, 999, &res) == 0);
    CHECK(res.verdict == ADMIT_RATE);
    CHECK(res.retry_after_s == 1);
    CHECK_STR(res.reason, "too many sign-ins right now; try again in 1 s");

    CHECK(interpret3(3, 59001, "too many sign-ins from your address", 0, 0, &res) == 0);
    CHECK(res.verdict == ADMIT_ADDRESS);
    CHECK(res.retry_after_s == 60);

    /* control characters in an operator's reason do not reach the body */
    CHECK(interpret3(1, 1000, "a\r\nb\tc", 0, 0, &res) == 0);
    CHECK_STR(res.reason, "sign-in is closed: a  b c; try again in 1 s");

    /* a negative hint is treated as none */
    CHECK(interpret3(2, -5, "x", 0, 0, &res) == 0);
    CHECK(res.retry_hint_ms == 0);
    CHECK(res.retry_after_s == 1);

    /* not the script's reply */
    CHECK(interpret3(4, 0, "", 10, 0, &res) == -1);
    CHECK(interpret3(-1, 0, "", 10, 0, &res) == -1);
    CHECK(admission_interpret(NULL, 10, 0, &res, err, sizeof err) == -1);

    redisReply e;
    memset(&e, 0, sizeof e);
    e.type = REDIS_REPLY_ERROR;
    e.str = "ERR max number of clients reached";
    e.len = strlen(e.str);
    err[0] = '\0';
    CHECK(admission_interpret(&e, 10, 0, &res, err, sizeof err) == -1);
    CHECK(strstr(err, "max number of clients reached") != NULL);
    CHECK(!admission_is_noscript(&e));
    e.str = "NOSCRIPT No matching script. Please use EVAL.";
    CHECK(admission_is_noscript(&e));

    redisReply s = r_str("OK");
    CHECK(admission_interpret(&s, 10, 0, &res, err, sizeof err) == -1);

    redisReply v = r_str("0"), h = r_int(0);
    redisReply *two[2] = { &v, &h };
    redisReply arr;
    memset(&arr, 0, sizeof arr);
    arr.type = REDIS_REPLY_ARRAY;
    arr.elements = 2;
    arr.element = two;
    CHECK(admission_interpret(&arr, 10, 0, &res, err, sizeof err) == -1);
}

/* ---------- pure: jitter ---------- */

static void test_jitter(void) {
    CHECK(admission_retry_after(0, 0, 0) == 1);           /* never 0 */
    CHECK(admission_retry_after(0, 10, 0) == 1);
    CHECK(admission_retry_after(1, 0, 0) == 1);
    CHECK(admission_retry_after(1000, 0, 0) == 1);
    CHECK(admission_retry_after(1001, 0, 0) == 2);
    CHECK(admission_retry_after(5000, 10, 0) == 5);
    CHECK(admission_retry_after(5000, 10, UINT32_MAX) == 15);
    CHECK(admission_retry_after(5000, 10, 0x80000000u) == 10);   /* middle */
    CHECK(admission_retry_after(-100, 3, 0) == 1);
    /* absurd hints are clamped, not wrapped */
    CHECK(admission_retry_after(1LL << 60, 10, 0) == 366u * 86400);

    /* Spread: 110000 pseudo-random inputs, hint 7.5 s, window 10 -> every
     * value in [8, 18], each of the 11 about equally often. */
    unsigned counts[11] = { 0 };
    uint32_t x = 2463534242u;
    int out_of_range = 0;
    for (int i = 0; i < 110000; i++) {
        x ^= x << 13; x ^= x >> 17; x ^= x << 5;          /* xorshift32 */
        unsigned v = admission_retry_after(7500, 10, x);
        if (v < 8 || v > 18) out_of_range++;
        else counts[v - 8]++;
    }
    CHECK(out_of_range == 0);
    for (int i = 0; i < 11; i++) {
        CHECK(counts[i] > 9400 && counts[i] < 10600);    /* 10000 +- 6% */
        if (counts[i] <= 9400 || counts[i] >= 10600)
            fprintf(stderr, "  value %d seen %u times\n", i + 8, counts[i]);
    }
}

/* ---------- pure: argv, durations ---------- */

static void test_argv(void) {
    admission_config cfg;
    admission_argv a;
    admission_config_defaults(&cfg);
    CHECK(cfg.rate == 0 && cfg.per_addr_per_min == 0);
    CHECK(cfg.retry_window_s == 10 && cfg.closed_retry_s == 30);

    cfg.rate = 2.5;
    cfg.burst = 20;
    cfg.per_addr_per_min = 6;
    admission_build_argv(&a, &cfg, "10.0.0.1", 1);
    CHECK(a.argc == ADMISSION_ARGC);
    CHECK_STR(a.argv[0], "EVALSHA");
    CHECK(strlen(a.argv[1]) == 40);
    CHECK_STR(a.argv[2], "3");
    CHECK_STR(a.argv[3], "chat:signin");
    CHECK_STR(a.argv[4], "chat:signin:bucket");
    CHECK_STR(a.argv[5], "chat:signin:addr:10.0.0.1");
    CHECK_STR(a.argv[6], "2.5");
    CHECK_STR(a.argv[7], "20");
    CHECK_STR(a.argv[8], "6");
    CHECK_STR(a.argv[9], "30000");
    for (int i = 0; i < a.argc; i++) CHECK(a.argvlen[i] == strlen(a.argv[i]));

    /* anything that is not an address character becomes '_' */
    admission_build_argv(&a, &cfg, "a b\r\n{c}", 0);
    CHECK_STR(a.argv[0], "EVAL");
    CHECK(a.argv[1] == admission_script);
    CHECK_STR(a.argv[5], "chat:signin:addr:a_b___c_");

    /* no cap, or no address: no address key */
    admission_build_argv(&a, &cfg, NULL, 1);
    CHECK_STR(a.argv[5], "");
    cfg.per_addr_per_min = 0;
    admission_build_argv(&a, &cfg, "10.0.0.1", 1);
    CHECK_STR(a.argv[5], "");
}

static void test_duration(void) {
    long long s = -1;
    CHECK(admission_parse_duration("90", &s) == 0 && s == 90);
    CHECK(admission_parse_duration("90s", &s) == 0 && s == 90);
    CHECK(admission_parse_duration("10m", &s) == 0 && s == 600);
    CHECK(admission_parse_duration("1h", &s) == 0 && s == 3600);
    CHECK(admission_parse_duration("1h30m", &s) == 0 && s == 5400);
    CHECK(admission_parse_duration("2d", &s) == 0 && s == 172800);
    CHECK(admission_parse_duration("0", &s) == 0 && s == 0);
    const char *bad[] = { "", "m", "10x", "-5", "1h30", "1.5h", " 10m", "10m ",
                          "99999999999999999999s", NULL };
    for (int i = 0; bad[i]; i++) {
        int rc = admission_parse_duration(bad[i], &s);
        CHECK(rc == -1);
        if (rc != -1) fprintf(stderr, "  accepted duration '%s'\n", bad[i]);
    }
    CHECK(admission_parse_duration(NULL, &s) == -1);
}

/* ---------- real Redis ---------- */

static long long mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void pause_ms(long ms) {          /* the poll interval, not a sync point */
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static char tmpdir[] = "/tmp/test_admission.XXXXXX";
static char sockpath[300];
static pid_t redis_pid = -1;

/* Start redis-server on a unix socket; wait until it answers PING. */
static redisContext *start_redis(void) {
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return NULL;
    }
    snprintf(sockpath, sizeof sockpath, "%s/redis.sock", tmpdir);
    redis_pid = fork();
    if (redis_pid < 0) return NULL;
    if (redis_pid == 0) {
        char logpath[320];
        snprintf(logpath, sizeof logpath, "%s/redis.log", tmpdir);
        execlp("redis-server", "redis-server", "--port", "0",
               "--unixsocket", sockpath, "--unixsocketperm", "700",
               "--dir", tmpdir, "--save", "", "--appendonly", "no",
               "--daemonize", "no", "--logfile", logpath, (char *)NULL);
        _exit(127);
    }
    long long deadline = mono_ms() + 10000;
    while (mono_ms() < deadline) {
        int status;
        if (waitpid(redis_pid, &status, WNOHANG) == redis_pid) {
            fprintf(stderr, "redis-server exited (status %d): is it installed?\n",
                    WIFEXITED(status) ? WEXITSTATUS(status) : -1);
            redis_pid = -1;
            return NULL;
        }
        redisContext *c = redisConnectUnix(sockpath);
        if (c && !c->err) {
            redisReply *r = redisCommand(c, "PING");
            int ok = r && r->type == REDIS_REPLY_STATUS;
            if (r) freeReplyObject(r);
            if (ok) return c;
        }
        if (c) redisFree(c);
        pause_ms(20);
    }
    fprintf(stderr, "redis-server did not answer within 10 s\n");
    return NULL;
}

static void stop_redis(void) {
    if (redis_pid > 0) {
        kill(redis_pid, SIGTERM);
        long long deadline = mono_ms() + 5000;
        int status;
        while (waitpid(redis_pid, &status, WNOHANG) == 0) {
            if (mono_ms() > deadline) {
                kill(redis_pid, SIGKILL);
                waitpid(redis_pid, &status, 0);
                break;
            }
            pause_ms(10);
        }
        redis_pid = -1;
    }
    char path[320];
    const char *files[] = { "redis.sock", "redis.log", "dump.rdb", NULL };
    for (int i = 0; files[i]; i++) {
        snprintf(path, sizeof path, "%s/%s", tmpdir, files[i]);
        unlink(path);
    }
    rmdir(tmpdir);
}

static void cmd(redisContext *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    CHECK(r && r->type != REDIS_REPLY_ERROR);
    if (r) freeReplyObject(r);
}

static long long redis_now_s(redisContext *c) {
    redisReply *r = redisCommand(c, "TIME");
    long long s = (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2)
                  ? atoll(r->element[0]->str) : 0;
    if (r) freeReplyObject(r);
    return s;
}

static int check(redisContext *c, const admission_config *cfg, const char *addr,
                 admission_result *res) {
    char err[256] = "";
    int rc = admission_check(c, cfg, addr, res, err, sizeof err);
    if (rc != 0) fprintf(stderr, "  admission_check: %s\n", err);
    return rc;
}

static void test_gate(redisContext *c) {
    admission_config cfg;
    admission_result res;
    admission_config_defaults(&cfg);
    cmd(c, "FLUSHALL");
    cmd(c, "SCRIPT FLUSH");

    /* open (no hash at all) -> admitted; the script got loaded on the way */
    CHECK(check(c, &cfg, "192.0.2.1", &res) == 0);
    CHECK(res.verdict == ADMIT_OK && res.retry_after_s == 0);
    redisReply *r = redisCommand(c, "SCRIPT EXISTS %s", admission_script_sha1());
    CHECK(r && r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
          r->element[0]->integer == 1);
    if (r) freeReplyObject(r);
    r = redisCommand(c, "SCRIPT LOAD %s", admission_script);
    CHECK(r && r->type == REDIS_REPLY_STRING);
    if (r && r->type == REDIS_REPLY_STRING) CHECK_STR(r->str, admission_script_sha1());
    if (r) freeReplyObject(r);

    /* closed indefinitely, with a reason */
    cmd(c, "HSET chat:signin closed 1 reason %s until 0", "maintenance window");
    CHECK(check(c, &cfg, "192.0.2.1", &res) == 0);
    CHECK(res.verdict == ADMIT_CLOSED);
    CHECK(res.retry_hint_ms == 30000);
    CHECK(res.retry_after_s >= 30 && res.retry_after_s <= 40);
    CHECK(strstr(res.reason, "sign-in is closed: maintenance window") != NULL);

    /* closed for ten more minutes: the hint is the time left */
    long long now = redis_now_s(c);
    cmd(c, "HSET chat:signin until %lld", now + 600);
    CHECK(check(c, &cfg, NULL, &res) == 0);
    CHECK(res.verdict == ADMIT_CLOSED);
    CHECK(res.retry_hint_ms > 597000 && res.retry_hint_ms <= 600000);
    CHECK(res.retry_after_s >= 598 && res.retry_after_s <= 610);

    /* `until` in the past: the closure has run out -> admitted */
    cmd(c, "HSET chat:signin until %lld", now - 5);
    CHECK(check(c, &cfg, NULL, &res) == 0);
    CHECK(res.verdict == ADMIT_OK);
    CHECK_STR(res.reason, "");

    /* closed 0 -> admitted, even with a stale reason */
    cmd(c, "HSET chat:signin closed 0 until 0");
    CHECK(check(c, &cfg, NULL, &res) == 0);
    CHECK(res.verdict == ADMIT_OK);
}

static void test_rate(redisContext *c) {
    admission_config cfg;
    admission_result res;
    admission_config_defaults(&cfg);
    cfg.rate = 4;          /* one token every 250 ms */
    cfg.burst = 3;
    cmd(c, "FLUSHALL");

    for (int i = 0; i < 3; i++) {
        CHECK(check(c, &cfg, "192.0.2.1", &res) == 0);
        CHECK(res.verdict == ADMIT_OK);
    }
    CHECK(check(c, &cfg, "192.0.2.1", &res) == 0);
    long long t0 = mono_ms();
    CHECK(res.verdict == ADMIT_RATE);
    CHECK(res.retry_hint_ms > 0 && res.retry_hint_ms <= 250);
    CHECK(res.retry_after_s >= 1 && res.retry_after_s <= 1 + cfg.retry_window_s);
    CHECK(strstr(res.reason, "too many sign-ins right now") != NULL);
    long long hint = res.retry_hint_ms;

    /* The bucket is visible to chatctl: rate and burst recorded. */
    redisReply *r = redisCommand(c, "HMGET chat:signin:bucket tokens rate burst");
    CHECK(r && r->type == REDIS_REPLY_ARRAY && r->elements == 3);
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 3) {
        CHECK(r->element[0]->type == REDIS_REPLY_STRING && atof(r->element[0]->str) < 1);
        CHECK(r->element[1]->type == REDIS_REPLY_STRING && strcmp(r->element[1]->str, "4") == 0);
        CHECK(r->element[2]->type == REDIS_REPLY_STRING && strcmp(r->element[2]->str, "3") == 0);
    }
    if (r) freeReplyObject(r);
    r = redisCommand(c, "PTTL chat:signin:bucket");
    CHECK(r && r->type == REDIS_REPLY_INTEGER && r->integer > 0 && r->integer <= 1750);
    if (r) freeReplyObject(r);

    /* Poll until admitted again (deadline 3 s); a refusal consumes no
     * token, so admission must come about when the hint said. */
    int admitted = 0, refusals = 0, other = 0;
    long long deadline = t0 + 3000, t_admit = 0;
    while (mono_ms() < deadline) {
        if (check(c, &cfg, "192.0.2.1", &res) != 0) { other++; break; }
        if (res.verdict == ADMIT_OK) { admitted = 1; t_admit = mono_ms(); break; }
        if (res.verdict == ADMIT_RATE) refusals++;
        else other++;
        pause_ms(10);
    }
    CHECK(admitted);
    CHECK(other == 0);
    CHECK(t_admit - t0 >= hint - 30);     /* not before the hint (clock slack) */
    CHECK(t_admit - t0 <= hint + 1000);
    /* and at once empty again */
    CHECK(check(c, &cfg, "192.0.2.1", &res) == 0);
    CHECK(res.verdict == ADMIT_RATE);

    /* rate 0 = unlimited: no bucket at all */
    cmd(c, "FLUSHALL");
    cfg.rate = 0;
    int all = 1;
    for (int i = 0; i < 50; i++)
        if (check(c, &cfg, "192.0.2.1", &res) != 0 || res.verdict != ADMIT_OK) all = 0;
    CHECK(all);
    r = redisCommand(c, "EXISTS chat:signin:bucket");
    CHECK(r && r->type == REDIS_REPLY_INTEGER && r->integer == 0);
    if (r) freeReplyObject(r);
}

static void test_per_address(redisContext *c) {
    admission_config cfg;
    admission_result res;
    admission_config_defaults(&cfg);
    cfg.per_addr_per_min = 3;
    cfg.rate = 0.001;      /* effectively no refill during the test */
    cfg.burst = 5;
    cmd(c, "FLUSHALL");

    /* The counter is per minute: keep clear of the minute's last seconds. */
    long long deadline = mono_ms() + 8000;
    while (redis_now_s(c) % 60 >= 54 && mono_ms() < deadline) pause_ms(50);
    long long minute = redis_now_s(c) / 60;

    for (int i = 0; i < 3; i++) {
        CHECK(check(c, &cfg, "192.0.2.7", &res) == 0);
        CHECK(res.verdict == ADMIT_OK);
    }
    CHECK(check(c, &cfg, "192.0.2.7", &res) == 0);
    CHECK(res.verdict == ADMIT_ADDRESS);
    CHECK(res.retry_hint_ms > 0 && res.retry_hint_ms <= 60000);
    CHECK(strstr(res.reason, "too many sign-ins from your address") != NULL);

    /* another address is still admitted */
    CHECK(check(c, &cfg, "2001:db8::1", &res) == 0);
    CHECK(res.verdict == ADMIT_OK);

    char key[128];
    snprintf(key, sizeof key, "chat:signin:addr:192.0.2.7:%lld", minute);
    redisReply *r = redisCommand(c, "GET %s", key);
    CHECK(r && r->type == REDIS_REPLY_STRING && strcmp(r->str, "3") == 0);
    if (r) freeReplyObject(r);
    r = redisCommand(c, "TTL %s", key);
    CHECK(r && r->type == REDIS_REPLY_INTEGER && r->integer > 0 && r->integer <= 120);
    if (r) freeReplyObject(r);

    /* The refused creation took no token from the shared bucket:
     * 5 - 3 (192.0.2.7) - 1 (2001:db8::1) = 1 left. */
    r = redisCommand(c, "HGET chat:signin:bucket tokens");
    CHECK(r && r->type == REDIS_REPLY_STRING);
    if (r && r->type == REDIS_REPLY_STRING) {
        double t = atof(r->str);
        CHECK(t >= 1.0 && t < 1.01);
    }
    if (r) freeReplyObject(r);
}

static void test_redis_gone(redisContext *c) {
    admission_config cfg;
    admission_result res;
    char err[256] = "";
    admission_config_defaults(&cfg);
    stop_redis();
    CHECK(admission_check(c, &cfg, "192.0.2.1", &res, err, sizeof err) == -1);
    CHECK(err[0] != '\0');
    CHECK(c->err != 0);
    CHECK(res.verdict == ADMIT_OK && res.retry_after_s == 0);  /* zeroed, caller decides */
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);   /* writing to the stopped server must fail, not kill us */
    test_interpret();
    test_jitter();
    test_argv();
    test_duration();

    redisContext *c = start_redis();
    CHECK(c != NULL);
    if (c) {
        test_gate(c);
        test_rate(c);
        test_per_address(c);
        test_redis_gone(c);
        redisFree(c);
    }
    stop_redis();
    return unit_done("admission");
}
