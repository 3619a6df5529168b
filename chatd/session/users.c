/*
 * users.c: account lookup in Redis and the server side of PLAIN and
 * SCRAM-SHA-1/-256 (the maths lives in common/scram.c).
 *
 * One lookup per exchange: HMGET chat:user:<localpart> scram-sha-1
 * scram-sha-256. Redis unreachable or erroring is temporary-auth-failure
 * (the client may retry); an unknown user is indistinguishable on the wire
 * from a wrong password: SCRAM gets a made-up, stable salt for the name
 * and then fails the proof; PLAIN runs the same PBKDF2 against a made-up
 * verifier, so both take the same time (issue 13).
 *
 * PLAIN's PBKDF2 runs on the hash threads (pw_pool.h), never on the loop.
 * Attempts for an account or from an address over the failure limit
 * (auth_guard.h) are refused before any lookup or hashing; c2s.c counts
 * the failures and delays the answer.
 */
#include "users.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "auth_guard.h"
#include "log.h"
#include "pw_pool.h"
#include "redis_async.h"
#include "../../common/scram.h"

typedef enum { MECH_PLAIN, MECH_SCRAM, MECH_EXTERNAL } mech_kind;
typedef enum { ST_START, ST_WAIT_LOOKUP, ST_WAIT_FINAL, ST_DONE } sasl_state;

struct users_sasl {
    chatd            *d;
    mech_kind         kind;
    sasl_state        state;
    redis_async_req  *req;          /* pending lookup, NULL if none */
    pw_job           *job;          /* pending PLAIN hash, NULL if none */
    int               blocked;      /* refused by the failure throttle */
    char              addr[64];     /* client address (throttle), or "" */
    users_sasl_cb     cb;
    void             *ud;
    char              user[USERS_MAX_LOCALPART + 1];
    int               succeeded;
    char             *password;     /* PLAIN, only while the lookup runs */
    char             *display_name; /* EXTERNAL: name to store, or NULL */
    scram_server      scram;
};

const char *const users_sasl_mechanisms[] = {
    "SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN", NULL
};

/* Key for made-up salts of unknown users: from cfg.auth_secret, so that an
 * unknown name gets the same salt on every node and after every restart
 * (a salt that changed at restart while real ones stay would give the
 * name away); random per start when no secret is configured. */
static unsigned char fake_salt_key[32];

int users_init(chatd *d) {
    const char *secret = d->cfg.auth_secret;
    if (secret && *secret) {
        if (strlen(secret) < 16) {
            log_error("BOSH00200: auth_secret must be at least 16 characters");
            return -1;
        }
        unsigned int len = 0;
        static const char label[] = "chatd fake scram salt v1";
        HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)label,
             sizeof label - 1, fake_salt_key, &len);
    } else {
        if (RAND_bytes(fake_salt_key, sizeof fake_salt_key) != 1) {
            log_error("users: RAND_bytes failed");
            return -1;
        }
        log_warn("BOSH00201: no auth_secret: the made-up SCRAM salts of unknown accounts "
                 "change at each start (and differ between nodes), which tells an observer "
                 "that an account does not exist; set auth_secret in chatd.conf");
    }
    d->auth_guard = auth_guard_new(d->cfg.auth_fail_account, d->cfg.auth_fail_addr,
                                   (uint64_t)d->cfg.auth_fail_decay * 1000u);
    if (d->loop) {
        d->pw_pool = pw_pool_new(d->loop, d->cfg.auth_threads, d->cfg.auth_queue,
                                 &d->stats.pbkdf2_runs);
        if (!d->pw_pool) {
            auth_guard_free(d->auth_guard);
            d->auth_guard = NULL;
            return -1;
        }
    }
    return 0;
}

void users_free(chatd *d) {
    pw_pool_free(d->pw_pool);
    d->pw_pool = NULL;
    auth_guard_free(d->auth_guard);
    d->auth_guard = NULL;
}

static int throttled(users_sasl *x) {
    if (!x->d->auth_guard) return 0;
    return auth_guard_blocked(x->d->auth_guard, x->user, x->addr,
                              x->d->loop ? loop_now_ms(x->d->loop) : 0);
}

users_sasl *users_sasl_new(chatd *d, const char *mechanism, const char *addr) {
    users_sasl *x;
    if (!mechanism) return NULL;
    x = calloc(1, sizeof *x);
    if (!x) abort();
    x->d = d;
    snprintf(x->addr, sizeof x->addr, "%s", addr ? addr : "");
    if (strcmp(mechanism, "PLAIN") == 0) {
        x->kind = MECH_PLAIN;
    } else if (strcmp(mechanism, "SCRAM-SHA-1") == 0) {
        x->kind = MECH_SCRAM;
        scram_server_init(&x->scram, SCRAM_SHA1);
    } else if (strcmp(mechanism, "SCRAM-SHA-256") == 0) {
        x->kind = MECH_SCRAM;
        scram_server_init(&x->scram, SCRAM_SHA256);
    } else {
        free(x);
        return NULL;
    }
    return x;
}

static void drop_password(users_sasl *x) {
    if (x->password) {
        OPENSSL_cleanse(x->password, strlen(x->password));
        free(x->password);
        x->password = NULL;
    }
}

users_sasl *users_sasl_new_external(chatd *d, const char *user,
                                    const char *display_name) {
    users_sasl *x;
    if (!user || strlen(user) > USERS_MAX_LOCALPART) return NULL;
    x = calloc(1, sizeof *x);
    if (!x) abort();
    x->d = d;
    x->kind = MECH_EXTERNAL;
    strcpy(x->user, user);
    if (display_name && *display_name) {
        x->display_name = strdup(display_name);
        if (!x->display_name) abort();
    }
    return x;
}

void users_sasl_free(users_sasl *x) {
    if (!x) return;
    if (x->req) redis_async_forget(x->req);
    if (x->job) pw_pool_forget(x->d->pw_pool, x->job);
    drop_password(x);
    free(x->display_name);
    scram_server_clear(&x->scram);
    OPENSSL_cleanse(x, sizeof *x);
    free(x);
}

const char *users_sasl_user(const users_sasl *x) {
    return x && x->succeeded ? x->user : NULL;
}

const char *users_sasl_attempted_user(const users_sasl *x) {
    return x ? x->user : "";
}

int users_sasl_throttled(const users_sasl *x) { return x && x->blocked; }

/* The last thing a step does: x may be freed by the callback. */
static void finish(users_sasl *x, users_sasl_result r, const char *data,
                   size_t len, const char *condition) {
    users_sasl_cb cb = x->cb;
    void *ud = x->ud;
    if (r != USERS_SASL_CONTINUE) {
        x->state = ST_DONE;
        drop_password(x);
    }
    if (r == USERS_SASL_SUCCESS) x->succeeded = 1;
    cb(ud, r, data, len, condition);
}

/* authzid must be empty, the user, or user@domain. */
static int authzid_ok(users_sasl *x, const char *authzid) {
    size_t ul = strlen(x->user);
    if (!authzid || !*authzid) return 1;
    if (strcmp(authzid, x->user) == 0) return 1;
    return strncmp(authzid, x->user, ul) == 0 && authzid[ul] == '@' &&
           x->d->cfg.domain && strcasecmp(authzid + ul + 1, x->d->cfg.domain) == 0;
}

/* Same name, same salt, every time: an attacker cannot tell an unknown
 * user from a known one by watching salts change. */
static void fake_verifier(users_sasl *x, scram_hash h, scram_verifier *v) {
    unsigned char mac[32];
    unsigned int len = 0;
    char msg[USERS_MAX_LOCALPART + 8];
    memset(v, 0, sizeof *v);
    /* one salt per (name, hash), like chatctl's two random salts */
    int ml = snprintf(msg, sizeof msg, "%s\n%s", scram_field_name(h), x->user);
    HMAC(EVP_sha256(), fake_salt_key, sizeof fake_salt_key, (const unsigned char *)msg,
         (size_t)ml, mac, &len);
    v->hash = h;
    v->iterations = SCRAM_DEFAULT_ITERATIONS;
    memcpy(v->salt, mac, 16);
    v->salt_len = 16;
    RAND_bytes(v->stored_key, sizeof v->stored_key);
    RAND_bytes(v->server_key, sizeof v->server_key);
}

/* The hash thread's answer, on the loop. */
static void plain_checked(void *ud, int match) {
    users_sasl *x = ud;
    x->job = NULL;
    if (!match) {
        log_info("users: PLAIN failed for '%s'", x->user);
        finish(x, USERS_SASL_FAILURE, NULL, 0, "not-authorized");
    } else {
        finish(x, USERS_SASL_SUCCESS, NULL, 0, NULL);
    }
}

/* At most one line per 10 s however hard the queue is hit. */
static void log_ratelimited_overload(users_sasl *x) {
    static uint64_t last;
    static unsigned long suppressed;
    uint64_t now = x->d->loop ? loop_now_ms(x->d->loop) : 0;
    if (last && now - last < 10000) { suppressed++; return; }
    log_warn("BOSH00202: password check queue full (auth_queue %u): PLAIN for '%s' "
             "answered temporary-auth-failure (%lu more since the last line)",
             x->d->cfg.auth_queue, x->user, suppressed);
    last = now ? now : 1;
    suppressed = 0;
}

static void lookup_done(redisReply *reply, const char *err, void *ud) {
    users_sasl *x = ud;
    x->req = NULL;                  /* the handle dies with this callback */
    if (err || !reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2) {
        log_warn("users: lookup of '%s' failed: %s", x->user,
                 err ? err : (reply && reply->type == REDIS_REPLY_ERROR ? reply->str
                                                                        : "unexpected reply"));
        finish(x, USERS_SASL_FAILURE, NULL, 0, "temporary-auth-failure");
        return;
    }
    redisReply *f1 = reply->element[0], *f256 = reply->element[1];
    scram_verifier v;
    int have = 0;

    if (x->kind == MECH_PLAIN) {
        /* Either verifier proves the password; prefer SHA-256. */
        if (f256->type == REDIS_REPLY_STRING &&
            scram_verifier_parse(SCRAM_SHA256, f256->str, &v) == 0)
            have = 1;
        else if (f1->type == REDIS_REPLY_STRING &&
                 scram_verifier_parse(SCRAM_SHA1, f1->str, &v) == 0)
            have = 1;
        /* No account: the same PBKDF2 against a made-up verifier (which
         * no password matches), so known and unknown take the same time. */
        if (!have) fake_verifier(x, SCRAM_SHA256, &v);
        x->job = x->d->pw_pool ? pw_pool_check(x->d->pw_pool, &v, x->password, plain_checked, x)
                               : NULL;
        OPENSSL_cleanse(&v, sizeof v);
        if (!x->job) {
            x->d->stats.auth_overloaded++;
            log_ratelimited_overload(x);
            finish(x, USERS_SASL_FAILURE, NULL, 0, "temporary-auth-failure");
        }
        return;
    }

    redisReply *f = x->scram.hash == SCRAM_SHA256 ? f256 : f1;
    if (f->type == REDIS_REPLY_STRING) {
        if (scram_verifier_parse(x->scram.hash, f->str, &v) == 0) have = 1;
        else log_error("users: stored %s verifier of '%s' is unreadable",
                       scram_field_name(x->scram.hash), x->user);
    }
    if (!have) fake_verifier(x, x->scram.hash, &v);

    unsigned char rnd[18];
    char nonce[32];
    if (RAND_bytes(rnd, sizeof rnd) != 1) {
        finish(x, USERS_SASL_FAILURE, NULL, 0, "temporary-auth-failure");
        return;
    }
    scram_b64_encode(rnd, sizeof rnd, nonce);   /* no ',' in base64 */
    const char *first = scram_server_first(&x->scram, &v, nonce);
    OPENSSL_cleanse(&v, sizeof v);
    if (!first) {
        finish(x, USERS_SASL_FAILURE, NULL, 0, "malformed-request");
        return;
    }
    x->state = ST_WAIT_FINAL;
    finish(x, USERS_SASL_CONTINUE, first, strlen(first), NULL);
}

static void start_lookup(users_sasl *x) {
    x->state = ST_WAIT_LOOKUP;
    if (!x->d->redis) {
        finish(x, USERS_SASL_FAILURE, NULL, 0, "temporary-auth-failure");
        return;
    }
    /* If Redis is down, lookup_done runs before this returns and the
     * handle is NULL; x may then already be gone, so touch nothing. */
    redis_async_req *req = redis_async_command(x->d->redis, lookup_done, x,
                                               "HMGET " USERS_KEY_PREFIX "%s %s %s",
                                               x->user, scram_field_name(SCRAM_SHA1),
                                               scram_field_name(SCRAM_SHA256));
    if (req) x->req = req;
}

/* PLAIN message: authzid NUL authcid NUL passwd (RFC 4616). */
static void plain_step(users_sasl *x, const char *in, size_t len) {
    const char *nul1 = memchr(in, '\0', len);
    const char *nul2 = nul1 ? memchr(nul1 + 1, '\0', len - (size_t)(nul1 + 1 - in)) : NULL;
    if (!nul1 || !nul2) {
        finish(x, USERS_SASL_FAILURE, NULL, 0, "malformed-request");
        return;
    }
    size_t authz_len = (size_t)(nul1 - in);
    size_t authc_len = (size_t)(nul2 - nul1 - 1);
    size_t pw_len = len - (size_t)(nul2 + 1 - in);
    char authc[256], authz[512];
    if (authc_len == 0 || authc_len >= sizeof authc || authz_len >= sizeof authz ||
        pw_len == 0 || memchr(nul2 + 1, '\0', pw_len)) {
        finish(x, USERS_SASL_FAILURE, NULL, 0,
               authc_len == 0 || pw_len == 0 ? "not-authorized" : "malformed-request");
        return;
    }
    memcpy(authc, nul1 + 1, authc_len);
    authc[authc_len] = '\0';
    memcpy(authz, in, authz_len);
    authz[authz_len] = '\0';
    if (users_normalize_localpart(authc, x->user, sizeof x->user) != 0) {
        finish(x, USERS_SASL_FAILURE, NULL, 0, "not-authorized");
        return;
    }
    if (!authzid_ok(x, authz)) {
        finish(x, USERS_SASL_FAILURE, NULL, 0, "invalid-authzid");
        return;
    }
    if (throttled(x)) {
        /* over the failure limit: no lookup, no hashing (c2s.c delays) */
        x->blocked = 1;
        finish(x, USERS_SASL_FAILURE, NULL, 0, "not-authorized");
        return;
    }
    x->password = malloc(pw_len + 1);
    if (!x->password) abort();
    memcpy(x->password, nul2 + 1, pw_len);
    x->password[pw_len] = '\0';
    start_lookup(x);
}

static void scram_first_step(users_sasl *x, const char *in, size_t len) {
    int rc = scram_server_start(&x->scram, in, len);
    if (rc != 0) {
        finish(x, USERS_SASL_FAILURE, NULL, 0, "malformed-request");
        return;
    }
    if (users_normalize_localpart(x->scram.username, x->user, sizeof x->user) != 0) {
        finish(x, USERS_SASL_FAILURE, NULL, 0, "not-authorized");
        return;
    }
    if (!authzid_ok(x, x->scram.authzid)) {
        finish(x, USERS_SASL_FAILURE, NULL, 0, "invalid-authzid");
        return;
    }
    start_lookup(x);
}

static void scram_final_step(users_sasl *x, const char *in, size_t len) {
    char v[128];
    if (throttled(x)) {
        x->blocked = 1;
        finish(x, USERS_SASL_FAILURE, NULL, 0, "not-authorized");
        return;
    }
    int rc = scram_server_final(&x->scram, in, len, v, sizeof v);
    if (rc == -1) {
        finish(x, USERS_SASL_FAILURE, NULL, 0, "malformed-request");
    } else if (rc != 0) {
        log_info("users: %s failed for '%s'", scram_mech_name(x->scram.hash), x->user);
        finish(x, USERS_SASL_FAILURE, NULL, 0, "not-authorized");
    } else {
        finish(x, USERS_SASL_SUCCESS, v, strlen(v), NULL);
    }
}

/* EXTERNAL: the account exists, or is created (auto_provision) without a
 * verifier. One script, so two first sign-ins at once create it once.
 * Returns 1 existed, 2 created, 0 unknown and not provisioned. */
static const char PROVISION_LUA[] =
    "local exists = redis.call('EXISTS', KEYS[1]) == 1\n"
    "if not exists then\n"
    "  if ARGV[1] ~= '1' then return 0 end\n"
    "  redis.call('HSET', KEYS[1], 'created', ARGV[2], 'provisioned', 'external')\n"
    "  redis.call('SADD', KEYS[2], ARGV[4])\n"
    "end\n"
    "if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'name', ARGV[3]) end\n"
    "if exists then return 1 end\n"
    "return 2\n";

static void provision_done(redisReply *reply, const char *err, void *ud) {
    users_sasl *x = ud;
    x->req = NULL;
    if (err || !reply || reply->type != REDIS_REPLY_INTEGER) {
        log_warn("users: EXTERNAL lookup of '%s' failed: %s", x->user,
                 err ? err : (reply && reply->type == REDIS_REPLY_ERROR ? reply->str
                                                                        : "unexpected reply"));
        finish(x, USERS_SASL_FAILURE, NULL, 0, "temporary-auth-failure");
        return;
    }
    if (reply->integer == 0) {
        log_info("users: EXTERNAL refused for '%s': no account (auto_provision no)", x->user);
        finish(x, USERS_SASL_FAILURE, NULL, 0, "not-authorized");
        return;
    }
    if (reply->integer == 2)
        log_info("users: account '%s' provisioned for a vouched sign-in", x->user);
    finish(x, USERS_SASL_SUCCESS, NULL, 0, NULL);
}

static void external_step(users_sasl *x, const char *in, size_t len) {
    char authz[512], created[32];
    if (len >= sizeof authz || memchr(in, '\0', len)) {
        finish(x, USERS_SASL_FAILURE, NULL, 0, "invalid-authzid");
        return;
    }
    memcpy(authz, in, len);
    authz[len] = '\0';
    if (!authzid_ok(x, authz)) {
        finish(x, USERS_SASL_FAILURE, NULL, 0, "invalid-authzid");
        return;
    }
    x->state = ST_WAIT_LOOKUP;
    if (!x->d->redis) {
        finish(x, USERS_SASL_FAILURE, NULL, 0, "temporary-auth-failure");
        return;
    }
    snprintf(created, sizeof created, "%lld", (long long)time(NULL));
    /* As in start_lookup: on a dead Redis the callback has already run. */
    redis_async_req *req = redis_async_command(
        x->d->redis, provision_done, x, "EVAL %s 2 " USERS_KEY_PREFIX "%s " USERS_SET_KEY
        " %s %s %s %s", PROVISION_LUA, x->user, x->d->cfg.auto_provision ? "1" : "0",
        created, x->display_name ? x->display_name : "", x->user);
    if (req) x->req = req;
}

void users_sasl_step(users_sasl *x, const char *in, size_t len,
                     users_sasl_cb cb, void *ud) {
    x->cb = cb;
    x->ud = ud;
    switch (x->state) {
    case ST_START:
        if (x->kind == MECH_PLAIN) plain_step(x, in, len);
        else if (x->kind == MECH_EXTERNAL) external_step(x, in, len);
        else scram_first_step(x, in, len);
        break;
    case ST_WAIT_FINAL:
        scram_final_step(x, in, len);
        break;
    case ST_WAIT_LOOKUP:
    case ST_DONE:
    default:
        finish(x, USERS_SASL_FAILURE, NULL, 0, "malformed-request");
        break;
    }
}
