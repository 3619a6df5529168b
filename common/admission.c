/*
 * admission.c: the sign-in admission script, the argv that runs it, and
 * the pure interpretation of its reply (see admission.h for why).
 *
 * Keep the script and admission_interpret in step: the reply shape
 * {verdict, hint_ms, text} is their contract, and chatd sends the same
 * script through its async pool.
 */
#include "admission.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

/*
 * KEYS[1] gate hash, KEYS[2] bucket hash, KEYS[3] ADMISSION_ADDR_PREFIX<ip>
 * ("" = no per-address cap). ARGV[1] rate/s (0 = unlimited), ARGV[2] burst,
 * ARGV[3] creations per address per minute (0 = unlimited), ARGV[4] hint
 * in ms while closed without `until`.
 *
 * Order matters: the gate first (closed refuses without touching any
 * counter), then the per-address cap (a noisy address must not drain the
 * shared bucket), then the bucket; only an admitted sign-in counts
 * against its address. A refused one consumes nothing, so retrying at the
 * hint is enough. The address key gets its minute appended here, from
 * Redis's clock; that key is not in KEYS, which is fine on one Redis but
 * would need a hash tag under Redis Cluster.
 *
 * Pacing a backlog: `due` in the bucket is when the clients refused so
 * far can all have had a token (each refusal books 1/rate s after the
 * previous booking, never earlier than now, at most ADMISSION_MAX_DUE_MS
 * ahead). A refused client's hint is that time, so a storm of N clients
 * is told to come back spread over N/rate seconds instead of all within
 * the jitter window, where most would be refused again (a storm that
 * outgrows the window would otherwise re-synchronise itself every few
 * seconds). The booking is only a hint: the bucket alone decides.
 *
 * Every outcome is counted server-wide (operators' view, `chatctl signin
 * status`; the storm test reads them): HINCRBY on ADMISSION_STATS_KEY,
 * fields admitted / closed / rate / address, and admissions per second of
 * Redis's clock in ADMISSION_SEC_PREFIX<unix second> (EXPIRE
 * ADMISSION_SEC_TTL), which shows the pace the bucket lets through.
 * Counter keys get their EXPIRE only when INCR creates them: the script
 * is the only writer, so a counter never lives without one, and a
 * sign-in costs one command less. These
 * are not in KEYS either (same Redis Cluster caveat as the address key).
 *
 * TIME is non-deterministic: Redis before 5 replicates a script only by
 * its effects if asked (redis.replicate_commands); later ones always do.
 */
#define STRINGIFY_(x) #x
#define STRINGIFY(x) STRINGIFY_(x)

const char admission_script[] =
    "if redis.replicate_commands then redis.replicate_commands() end\n"
    "local t = redis.call('TIME')\n"
    "local now_s = tonumber(t[1])\n"
    "local now_ms = now_s * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local gate = redis.call('HMGET', KEYS[1], 'closed', 'reason', 'until')\n"
    "local function count(f) redis.call('HINCRBY', '" ADMISSION_STATS_KEY "', f, 1) end\n"
    "if gate[1] and gate[1] ~= '0' and gate[1] ~= '' then\n"
    "  local till = tonumber(gate[3]) or 0\n"
    "  if till <= 0 then count('closed'); return {1, tonumber(ARGV[4]) or 0, gate[2] or ''} end\n"
    "  if till > now_s then count('closed'); return {1, till * 1000 - now_ms, gate[2] or ''} end\n"
    "end\n"
    "local limit = tonumber(ARGV[3]) or 0\n"
    "local addr_key = nil\n"
    "if limit > 0 and KEYS[3] ~= '' then\n"
    "  addr_key = KEYS[3] .. ':' .. string.format('%d', math.floor(now_s / 60))\n"
    "  local n = tonumber(redis.call('GET', addr_key)) or 0\n"
    "  if n >= limit then\n"
    "    count('address')\n"
    "    return {3, 60000 - (now_ms % 60000), 'too many sign-ins from your address'}\n"
    "  end\n"
    "end\n"
    "local rate = tonumber(ARGV[1]) or 0\n"
    "if rate > 0 then\n"
    "  local burst = math.max(tonumber(ARGV[2]) or 1, 1)\n"
    "  local b = redis.call('HMGET', KEYS[2], 'tokens', 'ts', 'due')\n"
    "  local tokens, ts = tonumber(b[1]), tonumber(b[2])\n"
    "  local due = math.max(tonumber(b[3]) or 0, now_ms)\n"
    "  if not tokens or not ts then tokens = burst\n"
    "  elseif now_ms > ts then tokens = tokens + (now_ms - ts) * rate / 1000 end\n"
    "  tokens = math.min(tokens, burst)\n"
    "  local refused = tokens < 1\n"
    "  if not refused then tokens = tokens - 1\n"
    "  else due = math.min(due + 1000 / rate, now_ms + " STRINGIFY(ADMISSION_MAX_DUE_MS) ") end\n"
    "  redis.call('HSET', KEYS[2], 'tokens', tokens, 'ts', now_ms, 'rate', ARGV[1], 'burst', burst, 'due', due)\n"
    "  redis.call('PEXPIRE', KEYS[2], math.ceil(math.max(burst * 1000 / rate, due - now_ms)) + 1000)\n"
    "  if refused then\n"
    "    count('rate')\n"
    "    return {2, math.ceil(math.max((1 - tokens) * 1000 / rate, due - now_ms)),\n"
    "            'too many sign-ins right now'}\n"
    "  end\n"
    "end\n"
    "if addr_key then\n"
    "  if redis.call('INCR', addr_key) == 1 then\n"
    "    redis.call('EXPIRE', addr_key, " STRINGIFY(ADMISSION_ADDR_TTL) ")\n"
    "  end\n"
    "end\n"
    "count('admitted')\n"
    "local sec_key = '" ADMISSION_SEC_PREFIX "' .. string.format('%d', now_s)\n"
    "if redis.call('INCR', sec_key) == 1 then\n"
    "  redis.call('EXPIRE', sec_key, " STRINGIFY(ADMISSION_SEC_TTL) ")\n"
    "end\n"
    "return {0, 0, ''}\n";

static pthread_once_t sha_once = PTHREAD_ONCE_INIT;
static char script_sha[41];

static void compute_sha(void) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    static const char hex[] = "0123456789abcdef";
    if (EVP_Digest(admission_script, strlen(admission_script), md, &mdlen,
                   EVP_sha1(), NULL) != 1 || mdlen != 20) {
        script_sha[0] = '\0';   /* EVALSHA then fails with NOSCRIPT: EVAL follows */
        return;
    }
    for (unsigned i = 0; i < 20; i++) {
        script_sha[2 * i] = hex[md[i] >> 4];
        script_sha[2 * i + 1] = hex[md[i] & 15];
    }
    script_sha[40] = '\0';
}

const char *admission_script_sha1(void) {
    pthread_once(&sha_once, compute_sha);
    return script_sha;
}

void admission_config_defaults(admission_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->rate = 0;
    cfg->burst = 0;
    cfg->per_addr_per_min = 0;
    cfg->retry_window_s = 10;
    cfg->closed_retry_s = 30;
}

static void put_arg(admission_argv *a, const char *s) {
    a->argv[a->argc] = s;
    a->argvlen[a->argc] = strlen(s);
    a->argc++;
}

void admission_build_argv(admission_argv *a, const admission_config *cfg,
                          const char *client_addr, int use_sha) {
    double rate = cfg->rate > 0 ? cfg->rate : 0;
    unsigned burst = cfg->burst ? cfg->burst : 1;

    a->argc = 0;
    if (client_addr && client_addr[0] && cfg->per_addr_per_min) {
        /* Addresses come from the network layer, but a key is a key: cut
         * anything long and keep only the characters an address has. */
        size_t o = strlen(ADMISSION_ADDR_PREFIX);
        memcpy(a->addr_key, ADMISSION_ADDR_PREFIX, o);
        for (size_t i = 0; client_addr[i] && i < ADMISSION_MAX_ADDR; i++) {
            char ch = client_addr[i];
            a->addr_key[o++] = (isxdigit((unsigned char)ch) || ch == '.' || ch == ':')
                               ? ch : '_';
        }
        a->addr_key[o] = '\0';
    } else {
        a->addr_key[0] = '\0';
    }
    snprintf(a->num[0], sizeof a->num[0], "%.9g", rate);
    snprintf(a->num[1], sizeof a->num[1], "%u", burst);
    snprintf(a->num[2], sizeof a->num[2], "%u", cfg->per_addr_per_min);
    snprintf(a->num[3], sizeof a->num[3], "%llu",
             (unsigned long long)cfg->closed_retry_s * 1000ULL);

    put_arg(a, use_sha ? "EVALSHA" : "EVAL");
    put_arg(a, use_sha ? admission_script_sha1() : admission_script);
    put_arg(a, "3");
    put_arg(a, ADMISSION_GATE_KEY);
    put_arg(a, ADMISSION_BUCKET_KEY);
    put_arg(a, a->addr_key);
    for (int i = 0; i < 4; i++) put_arg(a, a->num[i]);
}

int admission_is_noscript(const redisReply *reply) {
    return reply && reply->type == REDIS_REPLY_ERROR && reply->str &&
           strncmp(reply->str, "NOSCRIPT", 8) == 0;
}

unsigned admission_retry_after(long long hint_ms, unsigned window_s, uint32_t rnd) {
    const long long max_hint_ms = 366LL * 86400 * 1000;   /* keeps the sum in range */
    if (hint_ms < 0) hint_ms = 0;
    if (hint_ms > max_hint_ms) hint_ms = max_hint_ms;
    if (window_s > 86400) window_s = 86400;
    unsigned base = (unsigned)((hint_ms + 999) / 1000);
    /* Multiply-shift maps rnd onto 0..window_s evenly (no modulo bias
     * worth the name for windows this small). */
    unsigned jitter = (unsigned)(((uint64_t)rnd * ((uint64_t)window_s + 1)) >> 32);
    unsigned v = base + jitter;
    return v ? v : 1;
}

static void set_err(char *err, size_t errlen, const char *fmt, const char *arg) {
    if (err && errlen) snprintf(err, errlen, fmt, arg ? arg : "");
}

int admission_interpret(const redisReply *reply, unsigned window_s, uint32_t rnd,
                        admission_result *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    if (!reply) {
        set_err(err, errlen, "admission: no reply%s", NULL);
        return -1;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        set_err(err, errlen, "admission: Redis: %s", reply->str);
        return -1;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
        reply->element[0]->type != REDIS_REPLY_INTEGER ||
        reply->element[1]->type != REDIS_REPLY_INTEGER ||
        (reply->element[2]->type != REDIS_REPLY_STRING &&
         reply->element[2]->type != REDIS_REPLY_NIL)) {
        set_err(err, errlen, "admission: unexpected reply from the script%s", NULL);
        return -1;
    }
    long long verdict = reply->element[0]->integer;
    long long hint = reply->element[1]->integer;
    const redisReply *text = reply->element[2];
    char said[200] = "";

    if (verdict < ADMIT_OK || verdict > ADMIT_ADDRESS) {
        set_err(err, errlen, "admission: unknown verdict from the script%s", NULL);
        return -1;
    }
    out->verdict = (int)verdict;
    out->retry_hint_ms = hint < 0 ? 0 : hint;
    if (verdict == ADMIT_OK) return 0;

    if (text->type == REDIS_REPLY_STRING && text->len) {
        /* One line, printable: it goes into a 503 body and a log line. */
        size_t n = text->len < sizeof said - 1 ? text->len : sizeof said - 1;
        for (size_t i = 0; i < n; i++) {
            unsigned char ch = (unsigned char)text->str[i];
            said[i] = (ch < 0x20 || ch == 0x7f) ? ' ' : (char)ch;
        }
        said[n] = '\0';
    }
    out->retry_after_s = admission_retry_after(out->retry_hint_ms, window_s, rnd);
    switch (out->verdict) {
    case ADMIT_CLOSED:
        if (said[0])
            snprintf(out->reason, sizeof out->reason,
                     "sign-in is closed: %s; try again in %u s", said, out->retry_after_s);
        else
            snprintf(out->reason, sizeof out->reason,
                     "sign-in is closed for now; try again in %u s", out->retry_after_s);
        break;
    default:   /* rate, address: the script's own words */
        snprintf(out->reason, sizeof out->reason, "%s; try again in %u s",
                 said[0] ? said : "sign-in refused", out->retry_after_s);
        break;
    }
    return 0;
}

int admission_check(redisContext *c, const admission_config *cfg,
                    const char *client_addr, admission_result *out,
                    char *err, size_t errlen) {
    admission_config defaults;
    admission_argv a;
    redisReply *reply;
    uint32_t rnd = 0;

    if (!cfg) {
        admission_config_defaults(&defaults);
        cfg = &defaults;
    }
    admission_build_argv(&a, cfg, client_addr, 1);
    reply = redisCommandArgv(c, a.argc, a.argv, a.argvlen);
    if (admission_is_noscript(reply)) {     /* first use, or after SCRIPT FLUSH */
        freeReplyObject(reply);
        admission_build_argv(&a, cfg, client_addr, 0);
        reply = redisCommandArgv(c, a.argc, a.argv, a.argvlen);
    }
    if (!reply) {
        memset(out, 0, sizeof *out);
        set_err(err, errlen, "admission: Redis: %s", c->errstr[0] ? c->errstr : "no reply");
        return -1;
    }
    if (RAND_bytes((unsigned char *)&rnd, sizeof rnd) != 1)
        rnd = (uint32_t)(uintptr_t)&rnd ^ (uint32_t)c->fd;   /* jitter only, not secrecy */
    int rc = admission_interpret(reply, cfg->retry_window_s, rnd, out, err, errlen);
    freeReplyObject(reply);
    return rc;
}

int admission_parse_duration(const char *s, long long *seconds) {
    long long total = 0;
    const char *p = s;
    int parts = 0;

    if (!s || !*s) return -1;
    while (*p) {
        long long n = 0, unit;
        if (!isdigit((unsigned char)*p)) return -1;
        while (isdigit((unsigned char)*p)) {
            n = n * 10 + (*p - '0');
            if (n > 100LL * 365 * 86400) return -1;   /* a century is enough */
            p++;
        }
        switch (*p) {
        case '\0':
            if (parts) return -1;                    /* "1h30": unit missing */
            unit = 1; break;
        case 's': unit = 1; p++; break;
        case 'm': unit = 60; p++; break;
        case 'h': unit = 3600; p++; break;
        case 'd': unit = 86400; p++; break;
        default: return -1;
        }
        total += n * unit;
        parts++;
        if (total > 100LL * 365 * 86400) return -1;
    }
    *seconds = total;
    return 0;
}
