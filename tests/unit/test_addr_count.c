/*
 * test_addr_count: the per-address live-session table behind
 * max_sessions_per_addr (chatd/session/addr_count.h), and the cap itself
 * (chatd_addr_slot_take/release in admin.c) on a bare chatd context.
 */
#include "unit.h"
#include "../../chatd/session/addr_count.h"
#include "../../chatd/core/admin.h"

#include <stdio.h>
#include <string.h>

static void test_table(void) {
    addr_count *t = addr_count_new();
    CHECK(addr_count_get(t, "192.0.2.1") == 0);
    CHECK(addr_count_inc(t, "192.0.2.1") == 1);
    CHECK(addr_count_inc(t, "192.0.2.1") == 2);
    CHECK(addr_count_inc(t, "2001:db8::1") == 1);
    CHECK(addr_count_size(t) == 2);
    CHECK(addr_count_dec(t, "192.0.2.1") == 1);
    CHECK(addr_count_dec(t, "192.0.2.1") == 0);
    CHECK(addr_count_size(t) == 1);           /* gone at 0 */
    CHECK(addr_count_dec(t, "192.0.2.1") == 0);  /* never below 0 */
    CHECK(addr_count_get(t, "2001:db8::1") == 1);

    /* Many addresses: the table grows and every count stays right. */
    char a[64];
    for (int i = 0; i < 5000; i++) {
        snprintf(a, sizeof a, "10.%d.%d.%d", i >> 16, (i >> 8) & 255, i & 255);
        addr_count_inc(t, a);
        if (i % 3 == 0) addr_count_inc(t, a);
    }
    int ok = 1;
    for (int i = 0; i < 5000; i++) {
        snprintf(a, sizeof a, "10.%d.%d.%d", i >> 16, (i >> 8) & 255, i & 255);
        if (addr_count_get(t, a) != (i % 3 == 0 ? 2u : 1u)) ok = 0;
    }
    CHECK(ok);
    CHECK(addr_count_size(t) == 5001);
    for (int i = 0; i < 5000; i++) {
        snprintf(a, sizeof a, "10.%d.%d.%d", i >> 16, (i >> 8) & 255, i & 255);
        while (addr_count_dec(t, a) > 0) {}
    }
    CHECK(addr_count_size(t) == 1);
    addr_count_free(t);
}

static void test_cap(void) {
    chatd d;
    memset(&d, 0, sizeof d);

    /* No cap: nothing counted, nothing to release. */
    CHECK(chatd_addr_slot_take(&d, "192.0.2.1") == 0);
    CHECK(d.addr_sessions == NULL);

    d.cfg.max_sessions_per_addr = 2;
    CHECK(chatd_addr_slot_take(&d, "192.0.2.1") == 1);
    CHECK(chatd_addr_slot_take(&d, "192.0.2.1") == 1);
    CHECK(chatd_addr_slot_take(&d, "192.0.2.1") == -1);   /* third refused */
    CHECK(d.stats.addr_refused == 1);
    CHECK(chatd_addr_slot_take(&d, "192.0.2.2") == 1);    /* other address */
    CHECK(chatd_addr_slot_take(&d, "") == 0);             /* unknown address */
    CHECK(chatd_addr_slot_take(&d, NULL) == 0);
    chatd_addr_slot_release(&d, "192.0.2.1");             /* one session ends */
    CHECK(chatd_addr_slot_take(&d, "192.0.2.1") == 1);
    CHECK(chatd_addr_slot_take(&d, "192.0.2.1") == -1);
    CHECK(d.stats.addr_refused == 2);
    chatd_addr_slots_free(&d);
    CHECK(d.addr_sessions == NULL);
}

int main(void) {
    test_table();
    test_cap();
    return unit_done("addr_count");
}
