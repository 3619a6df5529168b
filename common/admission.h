/*
 * admission: may this new session be created now? One answer for every
 * frontend (mod_bosh in each httpd child, chatd's native listener).
 *
 * Why: in the outage this project answers, every client reconnected at
 * once and operators had no way to pause sign-ins. So admission is
 *   1. the operators' switch: hash chat:signin {closed 0/1, reason,
 *      until (unix seconds, 0 = indefinitely)}, set by `chatctl signin`;
 *   2. a server-wide pace: a token bucket (rate per second, burst) in
 *      chat:signin:bucket, shared by every frontend;
 *   3. a per-address cap on session creations per minute, counted in
 *      chat:signin:addr:<ip>:<minute> (EXPIRE 120).
 * All three run in ONE Lua script (one round trip per sign-in, atomic),
 * which reads the time with redis.call('TIME'), so the frontends' clocks
 * do not matter. A refused client gets HTTP 503 with a Retry-After spread
 * over a window (admission_retry_after), so a storm is smoothed instead of
 * re-synchronised, and a readable reason.
 *
 * Script reply: { verdict, retry_hint_ms, text }
 *   verdict 0 admit, 1 closed (text = operator's reason, may be ""),
 *           2 over the server-wide rate, 3 over the per-address cap.
 *
 * Two ways to run it:
 *   - blocking: admission_check() on a redisContext (mod_bosh's pool);
 *   - async (chatd): admission_build_argv(..., use_sha = 1), send with
 *     redis_async_commandargv; if admission_is_noscript(reply), build again
 *     with use_sha = 0 (plain EVAL) and resend; then admission_interpret().
 */
#ifndef COMMON_ADMISSION_H
#define COMMON_ADMISSION_H

#include <stddef.h>
#include <stdint.h>
#include <hiredis/hiredis.h>

#define ADMISSION_GATE_KEY     "chat:signin"
#define ADMISSION_BUCKET_KEY   "chat:signin:bucket"
#define ADMISSION_ADDR_PREFIX  "chat:signin:addr:"   /* + <ip> + ":" + <minute> */
#define ADMISSION_ADDR_TTL     120
#define ADMISSION_MAX_ADDR     64     /* longer client addresses are cut */
/* Server-wide outcome counters, kept by the script (never reset by it):
 * hash fields admitted, closed, rate, address. */
#define ADMISSION_STATS_KEY    "chat:signin:stats"
/* Admissions in one second of Redis's clock: + <unix seconds>. */
#define ADMISSION_SEC_PREFIX   "chat:signin:sec:"
#define ADMISSION_SEC_TTL      120
/* The longest rate-refusal hint (a backlog of bookings, admission.c). */
#define ADMISSION_MAX_DUE_MS   600000

typedef enum admission_verdict {
    ADMIT_OK      = 0,
    ADMIT_CLOSED  = 1,   /* operators closed sign-in (chatctl signin close) */
    ADMIT_RATE    = 2,   /* server-wide sign-in rate exceeded */
    ADMIT_ADDRESS = 3    /* this client address created too many sessions */
} admission_verdict;

typedef struct admission_config {
    double   rate;              /* sign-ins per second, all frontends; 0 = unlimited */
    unsigned burst;             /* bucket size (taken as >= 1 when rate > 0) */
    unsigned per_addr_per_min;  /* creations per client address per minute; 0 = unlimited */
    unsigned retry_window_s;    /* Retry-After = hint + 0..window (jitter) */
    unsigned closed_retry_s;    /* hint while closed without `until` */
} admission_config;

typedef struct admission_result {
    int      verdict;            /* admission_verdict */
    unsigned retry_after_s;      /* 0 when admitted, else >= 1 (jittered) */
    long long retry_hint_ms;     /* the script's hint, before jitter */
    char     reason[256];        /* readable, for the 503 body ("" when admitted) */
} admission_result;

/* Unlimited rate and per-address cap, window 10 s, closed hint 30 s. */
void admission_config_defaults(admission_config *cfg);

/* The script itself and its SHA-1 (hex, 40 chars), for EVALSHA. */
extern const char admission_script[];
const char *admission_script_sha1(void);

/* Everything one EVALSHA/EVAL needs; argv points into this struct (and
 * at admission_script), so keep it alive until the command is sent. */
#define ADMISSION_ARGC 10
typedef struct admission_argv {
    int         argc;
    const char *argv[ADMISSION_ARGC];
    size_t      argvlen[ADMISSION_ARGC];
    char        addr_key[sizeof ADMISSION_ADDR_PREFIX + ADMISSION_MAX_ADDR];
    char        num[4][32];
} admission_argv;

/* use_sha: EVALSHA <sha> (else EVAL <script>). client_addr NULL or ""
 * skips the per-address cap. */
void admission_build_argv(admission_argv *a, const admission_config *cfg,
                          const char *client_addr, int use_sha);

/* 1 if reply is the NOSCRIPT error of an EVALSHA (resend with EVAL). */
int  admission_is_noscript(const redisReply *reply);

/* Pure: the script's reply -> result, with Retry-After jittered by rnd
 * over window_s. Returns 0, or -1 with err if the reply is not the
 * script's (Redis error replies included: their text goes to err). */
int  admission_interpret(const redisReply *reply, unsigned window_s, uint32_t rnd,
                         admission_result *out, char *err, size_t errlen);

/* Pure: Retry-After seconds for a hint in ms: ceil(hint) + a value in
 * 0..window_s spread uniformly by rnd. Never less than 1. */
unsigned admission_retry_after(long long hint_ms, unsigned window_s, uint32_t rnd);

/* Blocking: EVALSHA, falling back to EVAL on NOSCRIPT, then interpret
 * (rnd from OpenSSL). Returns 0 with *out filled, or -1 with err: Redis
 * failed (if c->err is set the connection is broken: discard it). The
 * caller decides whether a failure admits or refuses. */
int  admission_check(redisContext *c, const admission_config *cfg,
                     const char *client_addr, admission_result *out,
                     char *err, size_t errlen);

/* Pure: "90", "90s", "10m", "1h", "1h30m", "2d" -> seconds. 0 or -1. */
int  admission_parse_duration(const char *s, long long *seconds);

#endif
