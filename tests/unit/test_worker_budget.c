/*
 * test_worker_budget: the share of httpd workers held BOSH requests may
 * take (mod_bosh/worker_budget.c, BoshMaxHeldShare).
 */
#include "unit.h"
#include "../../mod_bosh/worker_budget.c"

static void test_stock_event(void) {
    worker_budget b;
    /* Debian's mpm_event.conf: MaxRequestWorkers 150, ThreadsPerChild 25
     * -> 6 daemons. */
    worker_budget_compute(&b, 6, 25, WORKER_BUDGET_DEFAULT_SHARE);
    CHECK(b.workers == 150);
    CHECK(b.max_held == 112);
    CHECK(b.child_max_held == 18);
    CHECK(worker_budget_admit(&b, 0, 0) == WB_ADMIT);
    CHECK(worker_budget_admit(&b, 111, 17) == WB_ADMIT);
    CHECK(worker_budget_admit(&b, 112, 0) == WB_FULL_SERVER);
    CHECK(worker_budget_admit(&b, 5, 18) == WB_FULL_CHILD);
    /* no shared memory: only the child's share */
    CHECK(worker_budget_admit(&b, -1, 17) == WB_ADMIT);
    CHECK(worker_budget_admit(&b, -1, 18) == WB_FULL_CHILD);
}

static void test_prefork(void) {
    worker_budget b;
    /* prefork, MaxRequestWorkers 16: one worker per child */
    worker_budget_compute(&b, 16, 1, 75);
    CHECK(b.workers == 16);
    CHECK(b.max_held == 12);
    CHECK(b.child_max_held == 1);
    /* a child asked for a new session holds nothing itself */
    CHECK(worker_budget_admit(&b, 11, 0) == WB_ADMIT);
    CHECK(worker_budget_admit(&b, 12, 0) == WB_FULL_SERVER);
}

static void test_edges(void) {
    worker_budget b;
    /* 99 % of 16 would be all of them: one stays for the site */
    worker_budget_compute(&b, 2, 8, 99);
    CHECK(b.max_held == 15);
    CHECK(b.child_max_held == 7);
    /* 100 %: every worker may hold (the old behaviour) */
    worker_budget_compute(&b, 2, 8, 100);
    CHECK(b.max_held == 16);
    CHECK(b.child_max_held == 8);
    /* out of range values are clamped */
    worker_budget_compute(&b, 0, 0, 500);
    CHECK(b.workers == 1 && b.max_held == 1 && b.share == 100);
    worker_budget_compute(&b, 4, 1, 10);
    CHECK(b.max_held == 0);
    CHECK(worker_budget_admit(&b, 0, 0) == WB_FULL_SERVER);
}

static void test_workers_for(void) {
    worker_budget b;
    worker_budget_compute(&b, 6, 25, 75);
    CHECK(worker_budget_workers_for(&b, 150) == 200);
    CHECK(worker_budget_workers_for(&b, 10000) == 13334);
    /* the suggestion really holds them */
    worker_budget_compute(&b, 13334, 1, 75);
    CHECK(b.max_held >= 10000);
    worker_budget_compute(&b, 1, 1, 100);
    CHECK(worker_budget_workers_for(&b, 10) == 10);
    worker_budget_compute(&b, 1, 1, 99);
    CHECK(worker_budget_workers_for(&b, 1) == 2);
}

int main(void) {
    test_stock_event();
    test_prefork();
    test_edges();
    test_workers_for();
    return unit_done("worker_budget");
}
