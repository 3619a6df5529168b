/*
 * worker_budget.c - the share of httpd's workers held BOSH requests may
 * take. See worker_budget.h for why.
 */
#include "worker_budget.h"

void worker_budget_compute(worker_budget *b, int max_daemons,
                           int threads_per_child, int share)
{
    long workers, held, child;

    if (max_daemons < 1)
        max_daemons = 1;
    if (threads_per_child < 1)
        threads_per_child = 1;
    if (share < 1)
        share = 1;
    if (share > 100)
        share = 100;
    workers = (long)max_daemons * threads_per_child;
    held = workers * share / 100;
    if (share < 100 && held >= workers)
        held = workers - 1;             /* the site keeps at least one */
    if (threads_per_child == 1) {
        /* prefork: a child is one worker; only the server-wide share means
         * anything, and a child asked for a new session holds nothing. */
        child = 1;
    }
    else {
        child = (long)threads_per_child * share / 100;
        if (share < 100 && child >= threads_per_child)
            child = threads_per_child - 1;
    }
    b->share = share;
    b->threads_per_child = threads_per_child;
    b->workers = workers > 0x7fffffffL ? 0x7fffffff : (int)workers;
    b->max_held = held > 0x7fffffffL ? 0x7fffffff : (int)held;
    b->child_max_held = (int)child;
}

worker_budget_verdict worker_budget_admit(const worker_budget *b,
                                          long server_held, long child_held)
{
    if (server_held >= 0 && server_held >= b->max_held)
        return WB_FULL_SERVER;
    if (child_held >= b->child_max_held)
        return WB_FULL_CHILD;
    return WB_ADMIT;
}

long worker_budget_workers_for(const worker_budget *b, long sessions)
{
    /* smallest w with w * share / 100 >= sessions */
    long w = (sessions * 100 + b->share - 1) / b->share;
    if (b->share < 100)
        w = w > sessions ? w : sessions + 1;
    return w;
}
