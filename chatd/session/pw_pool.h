/*
 * pw_pool: password hashing (PBKDF2 for SASL PLAIN) on a few worker
 * threads, off chatd's event loop (issue 13).
 *
 * Why: one PLAIN check is PBKDF2 with the stored iteration count (4096
 * HMAC-SHA-256 rounds and more); on the single event loop a burst of
 * wrong passwords stalls every chat message behind it. The loop hands a
 * job (a copy of the verifier and the password) to the pool and goes on;
 * a worker computes; the result comes back through an eventfd watched by
 * the loop, and the callback runs ON THE LOOP THREAD, so nothing else in
 * chatd needs a lock. The queue is bounded (cfg.auth_queue jobs waiting or
 * running): when it is full the caller answers temporary-auth-failure
 * rather than letting work pile up without end.
 *
 * Why not apr_thread_pool: it lives in apr-util, which chatd does not link;
 * the few lines of pthreads here are all we need.
 */
#ifndef CHATD_PW_POOL_H
#define CHATD_PW_POOL_H

#include "chatd.h"
#include "../../common/scram.h"

typedef struct pw_pool pw_pool;
typedef struct pw_job pw_job;

/* match: 1 the password is right, 0 not. Runs on the loop thread. */
typedef void (*pw_pool_cb)(void *ud, int match);

/* threads >= 1, queue >= 1 (jobs waiting or running). NULL on error. */
pw_pool *pw_pool_new(loop *l, unsigned threads, unsigned queue, uint64_t *runs_counter);
/* Joins the workers; pending callbacks never run. NULL ok. */
void     pw_pool_free(pw_pool *p);

/* Check password against v on a worker. Copies both. Returns NULL when the
 * queue is full (cb never runs), else a handle for pw_pool_forget. cb never
 * runs before this returns. */
pw_job  *pw_pool_check(pw_pool *p, const scram_verifier *v, const char *password,
                       pw_pool_cb cb, void *ud);
/* The requester went away: cb will not run (the job finishes and is freed). */
void     pw_pool_forget(pw_pool *p, pw_job *j);
/* Jobs waiting or running. */
unsigned pw_pool_pending(pw_pool *p);

#endif
