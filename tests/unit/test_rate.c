/* rate.c: token bucket and read budget maths, with a fake clock. */
#include "unit.h"
#include "../../chatd/session/rate.h"

static void test_bucket_burst_then_rate(void) {
    token_bucket b = {0};
    int ok = 0;
    /* 10 per second, burst 5: five at once, then refused. */
    for (int i = 0; i < 8; i++) ok += tb_take(&b, 10, 5, 1, 1000);
    CHECK(ok == 5);
    CHECK(!tb_take(&b, 10, 5, 1, 1000));
    CHECK(tb_wait_ms(&b, 10, 5, 1, 1000) == 100);
    /* 100 ms later one token is back, not two. */
    CHECK(tb_take(&b, 10, 5, 1, 1100));
    CHECK(!tb_take(&b, 10, 5, 1, 1100));
    /* A long quiet spell refills to the burst, never above. */
    ok = 0;
    for (int i = 0; i < 20; i++) ok += tb_take(&b, 10, 5, 1, 60000);
    CHECK(ok == 5);
    /* Sustained: over 10 s at 10/s about 100 pass, whatever is asked. */
    ok = 0;
    for (uint64_t t = 60000; t < 70000; t += 10)
        for (int i = 0; i < 3; i++) ok += tb_take(&b, 10, 5, 1, t);
    CHECK(ok >= 99 && ok <= 101);
}

static void test_bucket_unlimited_and_clock(void) {
    token_bucket b = {0};
    for (int i = 0; i < 1000; i++) CHECK(tb_take(&b, 0, 0, 1, 0));
    CHECK(tb_wait_ms(&b, 0, 0, 1, 0) == 0);
    /* A clock that goes back does not mint tokens. */
    token_bucket c = {0};
    CHECK(tb_take(&c, 1, 1, 1, 5000));
    CHECK(!tb_take(&c, 1, 1, 1, 4000));
    CHECK(!tb_take(&c, 1, 1, 1, 5000));
    CHECK(tb_take(&c, 1, 1, 1, 6000));
}

static void test_bucket_bytes_large_item(void) {
    /* Bytes: 1000 B/s, burst 4000. A 10000-byte item passes from a full
     * bucket and then the sender pays: nothing for 10 s. */
    token_bucket b = {0};
    CHECK(tb_take(&b, 1000, 4000, 10000, 0));
    CHECK(!tb_take(&b, 1000, 4000, 1, 5000));
    CHECK(!tb_take(&b, 1000, 4000, 100, 6000));
    CHECK(tb_take(&b, 1000, 4000, 100, 6100));
    /* From a bucket that is not full the large item waits. */
    token_bucket c = {0};
    CHECK(tb_take(&c, 1000, 4000, 1000, 0));
    CHECK(!tb_take(&c, 1000, 4000, 10000, 0));
    CHECK(tb_wait_ms(&c, 1000, 4000, 10000, 0) == 1000);
    CHECK(tb_take(&c, 1000, 4000, 10000, 1000));
}

static void test_read_budget(void) {
    CHECK(read_budget_next(65536, 0, 16384) == 16384);
    CHECK(read_budget_next(65536, 60000, 16384) == 5536);
    CHECK(read_budget_next(65536, 65536, 16384) == 0);
    CHECK(read_budget_next(65536, 70000, 16384) == 0);
    CHECK(read_budget_next(0, 1u << 30, 16384) == 16384);
    /* A socket with 1 MiB waiting is served in 16 turns of 64 KiB. */
    size_t pending = 1u << 20, turns = 0;
    while (pending) {
        size_t used = 0, n;
        while (pending && (n = read_budget_next(65536, used, 16384)) > 0) {
            if (n > pending) n = pending;
            pending -= n;
            used += n;
        }
        turns++;
    }
    CHECK(turns == 16);
}

int main(void) {
    test_bucket_burst_then_rate();
    test_bucket_unlimited_and_clock();
    test_bucket_bytes_large_item();
    test_read_budget();
    return unit_done("rate");
}
