/*
 * auth_guard: failed password sign-ins counted per account and per client
 * address, across streams and sessions, so that neither reconnecting nor
 * BOSH multi-streams give an attacker fresh guesses (issue 13).
 *
 * Why node-local (in chatd's memory) and not in Redis: every password
 * check already runs on one chatd node, the counter is consulted on each
 * attempt and must keep working while Redis is down (an outage must not
 * turn the limit off), and it costs no extra round trip on the sign-in
 * path. The price: with N chatd nodes an address may spread its guesses
 * over N nodes, so the effective limit is N x the configured one; the
 * per-address session-creation rate in Redis (admission) still caps how
 * fast it can open sessions anywhere.
 *
 * The counter is a leaky bucket: each failure adds 1, one failure is
 * forgotten every decay_ms. Once max_account failures of an account (or
 * max_addr of an address) are remembered (score > max - 1), an attempt is
 * "blocked": chatd answers it after a delay with not-authorized without
 * checking the password. A blocked attempt is itself a failure (the score
 * keeps growing, capped at twice the limit, so the block ends at most
 * (limit + 1) x decay after the attacker stops). A success clears the ACCOUNT's score only: an
 * attacker with one valid account must not be able to reset the score of
 * its address by signing in with it between guesses at other accounts.
 *
 * Pure: times come in as arguments (ms, monotonic); no I/O, no logging.
 * Memory is bounded (AUTH_GUARD_MAX_ENTRIES); when full, entries that
 * decayed to zero go first, then all those at or below the mean score.
 */
#ifndef CHATD_AUTH_GUARD_H
#define CHATD_AUTH_GUARD_H

#include <stddef.h>
#include <stdint.h>

#define AUTH_GUARD_MAX_ENTRIES 65536

typedef struct auth_guard auth_guard;

/* max_account / max_addr: 0 turns that counter off. decay_ms >= 1. */
auth_guard *auth_guard_new(unsigned max_account, unsigned max_addr, uint64_t decay_ms);
void        auth_guard_free(auth_guard *g);

/* 1 if an attempt for account (NULL/"" = not known yet) from addr
 * (NULL/"" = unknown) must be refused without checking the password. */
int         auth_guard_blocked(auth_guard *g, const char *account, const char *addr,
                               uint64_t now_ms);
/* Count one failure for both; returns 1 if either is now blocked. */
int         auth_guard_fail(auth_guard *g, const char *account, const char *addr,
                            uint64_t now_ms);
/* A successful sign-in: forget the account's failures (not the address's). */
void        auth_guard_success(auth_guard *g, const char *account);
/* Current scores (after decay), for tests and chatctl. */
double      auth_guard_score_account(auth_guard *g, const char *account, uint64_t now_ms);
double      auth_guard_score_addr(auth_guard *g, const char *addr, uint64_t now_ms);
size_t      auth_guard_size(const auth_guard *g);

#endif
