/*
 * test_pw_pool: PLAIN's PBKDF2 on worker threads (chatd/session/pw_pool.h): right
 * and wrong passwords come back on the loop thread, a full queue refuses
 * at once, a forgotten job's callback never runs, runs are counted.
 */
#include "unit.h"
#include "../../chatd/session/pw_pool.h"
#include "../../chatd/core/loop.h"

#include <pthread.h>

static int results[8], ncalls;
static pthread_t loop_thread;
static int wrong_thread;
static loop *L;

static void done(void *ud, int match) {
    int i = (int)(intptr_t)ud;
    if (!pthread_equal(pthread_self(), loop_thread)) wrong_thread = 1;
    results[i] = match ? 1 : 2;
    if (++ncalls == 3) loop_stop(L);
}

static void give_up(loop *l, void *ud) { (void)ud; loop_stop(l); }

int main(void) {
    scram_verifier v;
    const unsigned char salt[16] = "0123456789abcdef";
    CHECK(scram_make_verifier(SCRAM_SHA256, "secret", salt, sizeof salt, 4096, &v) == 0);
    L = loop_new();
    loop_thread = pthread_self();
    uint64_t runs = 0;
    pw_pool *p = pw_pool_new(L, 2, 3, &runs);
    CHECK(p != NULL);

    pw_job *a = pw_pool_check(p, &v, "secret", done, (void *)0);
    pw_job *b = pw_pool_check(p, &v, "wrong", done, (void *)1);
    pw_job *c = pw_pool_check(p, &v, "forgotten", done, (void *)2);
    CHECK(a && b && c);
    /* queue of 3: the fourth is refused at once, its callback never runs */
    CHECK(pw_pool_check(p, &v, "x", done, (void *)3) == NULL);
    CHECK(pw_pool_pending(p) == 3);
    pw_pool_forget(p, c);
    pw_job *d = NULL;
    /* room again once the others are done: wait for them on the loop */
    loop_timer_add(L, 20000, give_up, NULL);
    ncalls = 1;                 /* c never calls back: stop after a and b */
    loop_run(L);
    CHECK(results[0] == 1);     /* right password */
    CHECK(results[1] == 2);     /* wrong password */
    CHECK(results[2] == 0);     /* forgotten */
    CHECK(results[3] == 0);     /* refused */
    CHECK(!wrong_thread);
    CHECK(runs >= 2);
    d = pw_pool_check(p, &v, "secret", done, (void *)4);
    CHECK(d != NULL);
    pw_pool_free(p);            /* with a job pending: joins, no callback */
    CHECK(results[4] == 0);
    loop_free(L);
    return unit_done("pw_pool");
}
