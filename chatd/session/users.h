/*
 * users: accounts (chat:user:<localpart>, SCRAM verifiers only) and the
 * SASL mechanisms that check them: PLAIN, SCRAM-SHA-1, SCRAM-SHA-256.
 *
 * Why a separate engine: c2s.c speaks the XMPP side of SASL (elements,
 * base64, stream restart); this file decides, from raw mechanism bytes,
 * whether the client knows the password. The account lookup is async
 * (redis_async), so each step answers through a callback, which may run
 * before users_sasl_step returns (Redis down: at once) or later.
 *
 * Passwords are never stored or logged: PLAIN recomputes StoredKey from
 * the stored salt/iterations and compares.
 */
#ifndef CHATD_USERS_H
#define CHATD_USERS_H

#include <stddef.h>
#include <ctype.h>
#include "chatd.h"

#define USERS_KEY_PREFIX   "chat:user:"     /* + localpart: hash */
#define USERS_SET_KEY      "chat:users"     /* set of localparts */
#define USERS_MAX_LOCALPART 64

/* Account names: ASCII, case-folded to lower case, [a-z0-9._-], 1..64
 * bytes. (No stringprep: one spelling per account, shared by chatctl and
 * chatd.) Returns 0 and writes the folded name, or -1. */
static inline int users_normalize_localpart(const char *in, char *out, size_t outcap) {
    size_t n = 0;
    if (!in || !*in) return -1;
    for (; *in; in++) {
        char c = (char)tolower((unsigned char)*in);
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return -1;
        if (n + 1 >= outcap || n >= USERS_MAX_LOCALPART) return -1;
        out[n++] = c;
    }
    out[n] = '\0';
    return 0;
}

int  users_init(chatd *d);
void users_free(chatd *d);

typedef enum {
    USERS_SASL_CONTINUE,    /* data: challenge to send */
    USERS_SASL_SUCCESS,     /* data: additional data (may be NULL) */
    USERS_SASL_FAILURE      /* condition: RFC 6120 §6.5 SASL condition */
} users_sasl_result;

/* data is raw (not base64); valid only during the call. The callback may
 * call users_sasl_free() only when it runs after users_sasl_step() has
 * returned; from inside the step, free it afterwards. */
typedef void (*users_sasl_cb)(void *ud, users_sasl_result result,
                              const char *data, size_t len,
                              const char *condition);

typedef struct users_sasl users_sasl;

/* NULL if the mechanism is not one we serve. addr: the client's address
 * (NULL ok), for the failure throttle (auth_guard.h). */
users_sasl *users_sasl_new(chatd *d, const char *mechanism, const char *addr);
/* Feed the client's (decoded) initial response or response. */
void        users_sasl_step(users_sasl *x, const char *in, size_t len,
                            users_sasl_cb cb, void *ud);
/* SASL EXTERNAL for a user the transport vouched for (BOSH: httpd's
 * authenticated user, issue 8). user is a normalized localpart. The step
 * takes the client's authzid (empty, the user, or user@domain) and looks
 * the account up; an unknown user is created without any password
 * verifier when cfg.auto_provision is on (field provisioned=external), else
 * the exchange fails with not-authorized. display_name (NULL ok) is stored
 * as the account's `name`. */
users_sasl *users_sasl_new_external(chatd *d, const char *user,
                                    const char *display_name);
/* Forgets a pending lookup: its callback will not run. NULL ok. */
void        users_sasl_free(users_sasl *x);
/* Folded localpart once the exchange succeeded, else NULL. */
const char *users_sasl_user(const users_sasl *x);
/* The folded localpart the client tried ("" before it was parsed). */
const char *users_sasl_attempted_user(const users_sasl *x);
/* 1 if the exchange failed because the account or address is over the
 * failure limit (no password was checked). */
int         users_sasl_throttled(const users_sasl *x);
/* Mechanisms we can serve, strongest first (NULL-terminated). */
extern const char *const users_sasl_mechanisms[];

#endif
