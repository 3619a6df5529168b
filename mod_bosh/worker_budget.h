/*
 * worker_budget: how many httpd workers mod_bosh may keep for held BOSH
 * requests, so the host site never starves (BoshMaxHeldShare, issue 15).
 *
 * Why: httpd 2.4 cannot park a request without a worker (see
 * httpd-conf/bosh-mpm.conf), so every signed-in chat user occupies one
 * worker all the time. On stock sizing (event, MaxRequestWorkers 150; or
 * prefork, one process per worker) the 151st chat user left no worker for
 * the site's own pages: they waited in the listen backlog until some held
 * request was answered (up to BOSH `wait`, 60 s). mod_bosh now holds
 * requests only up to a share of the workers and refuses NEW sessions
 * beyond it (503 + Retry-After); the rest of the workers stay for the site.
 *
 * Pure arithmetic, apart from httpd, so unit tests drive it
 * (tests/unit/test_mod_bosh_route.c).
 */
#ifndef MOD_BOSH_WORKER_BUDGET_H
#define MOD_BOSH_WORKER_BUDGET_H

#define WORKER_BUDGET_DEFAULT_SHARE 75   /* percent: a quarter stays for the site */

typedef struct worker_budget {
    int share;              /* BoshMaxHeldShare, percent (1..100) */
    int threads_per_child;  /* AP_MPMQ_MAX_THREADS (1 under prefork) */
    int workers;            /* server-wide: AP_MPMQ_MAX_DAEMONS x threads */
    int max_held;           /* server-wide held requests allowed */
    int child_max_held;     /* per child (threaded MPMs; 1 under prefork) */
} worker_budget;

/* Fill b from the MPM's figures. Below 100 % at least one worker is always
 * left for the site, server-wide and (threaded MPMs) in every child. */
void worker_budget_compute(worker_budget *b, int max_daemons,
                           int threads_per_child, int share);

typedef enum worker_budget_verdict {
    WB_ADMIT = 0,
    WB_FULL_SERVER,         /* the server-wide share is taken */
    WB_FULL_CHILD           /* this child's share is taken */
} worker_budget_verdict;

/* May a NEW session start? server_held < 0: no server-wide count (no
 * shared memory), only the child's share applies. Requests of existing
 * sessions are never asked (see bosh_handler.c). */
worker_budget_verdict worker_budget_admit(const worker_budget *b,
                                          long server_held, long child_held);

/* Workers needed so that `sessions` held requests fit in the share:
 * the MaxRequestWorkers the start-up check suggests. */
long worker_budget_workers_for(const worker_budget *b, long sessions);

#endif
