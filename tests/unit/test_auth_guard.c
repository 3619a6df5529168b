/*
 * test_auth_guard: the per-account / per-address failure counters behind
 * the sign-in throttle (chatd/session/auth_guard.h): limits, decay, what a
 * success clears, the cap on memory.
 */
#include "unit.h"
#include "../../chatd/session/auth_guard.h"

#include <stdio.h>

static void test_account_limit(void) {
    auth_guard *g = auth_guard_new(3, 10, 60000);
    uint64_t t = 1000;
    CHECK(!auth_guard_blocked(g, "alice", "192.0.2.1", t));
    CHECK(auth_guard_fail(g, "alice", "192.0.2.1", t) == 0);
    CHECK(auth_guard_fail(g, "alice", "192.0.2.2", t) == 0);
    CHECK(!auth_guard_blocked(g, "alice", "192.0.2.3", t));
    /* the third failure (from a third address) reaches the account limit */
    CHECK(auth_guard_fail(g, "alice", "192.0.2.3", t) == 1);
    CHECK(auth_guard_blocked(g, "alice", "198.51.100.7", t));   /* any address */
    CHECK(!auth_guard_blocked(g, "bob", "192.0.2.1", t));        /* others not */
    /* the limit counts failures that leaked a little: 3 within 2 s block */
    auth_guard *h = auth_guard_new(3, 0, 60000);
    for (int i = 0; i < 3; i++) auth_guard_fail(h, "carl", NULL, t + 1000u * (unsigned)i);
    CHECK(auth_guard_blocked(h, "carl", NULL, t + 2000));
    auth_guard_free(h);
    /* one failure leaks away every decay: after 60 s the score is 2 */
    CHECK(auth_guard_blocked(g, "alice", "198.51.100.7", t + 59999));
    CHECK(!auth_guard_blocked(g, "alice", "198.51.100.7", t + 60000));
    auth_guard_free(g);
}

static void test_addr_limit_and_success(void) {
    auth_guard *g = auth_guard_new(100, 4, 60000);
    uint64_t t = 5;
    /* guesses at different accounts from one address */
    CHECK(auth_guard_fail(g, "a1", "203.0.113.9", t) == 0);
    CHECK(auth_guard_fail(g, "a2", "203.0.113.9", t) == 0);
    /* the attacker signs in with its own valid account in between */
    auth_guard_success(g, "mine");
    CHECK(auth_guard_fail(g, "a3", "203.0.113.9", t) == 0);
    auth_guard_success(g, "a3");
    CHECK(auth_guard_score_account(g, "a3", t) == 0);          /* account cleared */
    CHECK(auth_guard_score_addr(g, "203.0.113.9", t) == 3);    /* address not */
    CHECK(auth_guard_fail(g, "a4", "203.0.113.9", t) == 1);
    CHECK(auth_guard_blocked(g, "mine", "203.0.113.9", t));     /* even a valid account */
    CHECK(!auth_guard_blocked(g, "mine", "203.0.113.10", t));   /* elsewhere fine */
    /* blocked attempts keep counting, capped at twice the limit */
    for (int i = 0; i < 50; i++) auth_guard_fail(g, "x", "203.0.113.9", t);
    CHECK(auth_guard_score_addr(g, "203.0.113.9", t) == 8);
    /* ... so the block ends (score down to 3 = limit - 1) 5 decays later */
    CHECK(auth_guard_blocked(g, NULL, "203.0.113.9", t + 5 * 60000 - 1));
    CHECK(!auth_guard_blocked(g, NULL, "203.0.113.9", t + 5 * 60000));
    auth_guard_free(g);
}

static void test_off_and_unknown(void) {
    auth_guard *g = auth_guard_new(0, 0, 1000);
    for (int i = 0; i < 100; i++) CHECK(auth_guard_fail(g, "u", "a", 1) == 0);
    CHECK(!auth_guard_blocked(g, "u", "a", 1));
    CHECK(auth_guard_size(g) == 0);                   /* nothing stored when off */
    auth_guard_free(g);
    g = auth_guard_new(2, 2, 1000);
    /* no account name yet / no address: only the other is counted */
    CHECK(auth_guard_fail(g, NULL, "a", 1) == 0);
    CHECK(auth_guard_fail(g, "", "a", 1) == 1);
    CHECK(auth_guard_size(g) == 1);
    auth_guard_free(g);
}

static void test_bounded(void) {
    auth_guard *g = auth_guard_new(5, 5, 1000);
    char name[32];
    /* one busy address, then a flood of made-up account names */
    for (int i = 0; i < 4; i++) auth_guard_fail(g, "victim", "192.0.2.50", 0);
    for (int i = 0; i < AUTH_GUARD_MAX_ENTRIES + 100; i++) {
        snprintf(name, sizeof name, "u%d", i);
        auth_guard_fail(g, name, NULL, 10);
    }
    CHECK(auth_guard_size(g) <= AUTH_GUARD_MAX_ENTRIES);
    CHECK(auth_guard_size(g) < AUTH_GUARD_MAX_ENTRIES / 2);   /* evicted in bulk */
    /* the hot entries (score 4, the flood's 1 each) survive eviction */
    CHECK(auth_guard_score_account(g, "victim", 10) > 3.9);
    CHECK(auth_guard_score_addr(g, "192.0.2.50", 10) > 3.9);
    auth_guard_free(g);
}

int main(void) {
    test_account_limit();
    test_addr_limit_and_success();
    test_off_and_unknown();
    test_bounded();
    return unit_done("auth_guard");
}
