/* test_loop: timers fire in deadline order, cancel works, defers wait for
 * the next iteration, watch/unwatch on a pipe, stale events are skipped. */
#include <stdlib.h>
#include <unistd.h>
#include <fcntl.h>
#include "unit.h"
#include "../../chatd/core/loop.h"

static char order[64];
static size_t norder;

static void mark(loop *l, void *ud) { (void)l; order[norder++] = *(const char *)ud; }
static void mark_stop(loop *l, void *ud) { mark(l, ud); loop_stop(l); }

static loop_timer *to_cancel;
static void cancel_other(loop *l, void *ud) { mark(l, ud); loop_timer_cancel(l, to_cancel); }

static int defer_count;
static void defer_self(loop *l, void *ud) {
    (void)ud;
    if (++defer_count < 3) loop_timer_add(l, 0, defer_self, NULL);
}

static void test_timers(void) {
    loop *l = loop_new();
    CHECK(l != NULL);
    static const char a = 'a', b = 'b', c = 'c', d = 'd', e = 'e', x = 'x', s = 's';
    uint64_t t0 = loop_now_ms(l);
    loop_timer_add(l, 30, mark, (void *)&c);
    loop_timer_add(l, 10, mark, (void *)&a);
    loop_timer_add(l, 20, mark, (void *)&b);
    loop_timer_add(l, 20, mark, (void *)&e);   /* same deadline: after b */
    loop_timer *tx = loop_timer_add(l, 15, mark, (void *)&x);
    loop_timer_cancel(l, tx);
    to_cancel = loop_timer_add(l, 40, mark, (void *)&x);
    loop_timer_add(l, 35, cancel_other, (void *)&d);
    loop_timer_add(l, 60, mark_stop, (void *)&s);
    loop_timer_add(l, 0, defer_self, NULL);
    norder = 0;
    loop_run(l);
    order[norder] = 0;
    CHECK_STR(order, "abecds");
    CHECK(defer_count == 3);
    CHECK(loop_now_ms(l) - t0 >= 60);
    CHECK(loop_now_ms(l) - t0 < 1000);
    loop_free(l);
}

/* ---- pipes ---- */
static int pfd[2], pfd2[2];
static char got[16];
static int reads, reads2;

static void on_read(loop *l, int fd, unsigned ev, void *ud) {
    (void)ud;
    CHECK(ev & LOOP_READ);
    ssize_t n = read(fd, got, sizeof(got) - 1);
    if (n > 0) got[n] = 0;
    reads++;
    loop_unwatch(l, fd);
    loop_stop(l);
}

static int wrote;
static void on_write(loop *l, int fd, unsigned ev, void *ud) {
    (void)ud;
    CHECK(ev == LOOP_WRITE);
    CHECK(write(fd, "hi", 2) == 2);
    wrote++;
    loop_watch(l, fd, 0, on_write, NULL);     /* silent, still registered */
}

static void stop_cb(loop *l, void *ud) { (void)ud; loop_stop(l); }

/* Two readable pipes: whichever runs first unwatches and closes the other;
 * the other's already-collected event must not be delivered. */
static void kill_other(loop *l, int fd, unsigned ev, void *ud) {
    (void)ev;
    int other = *(int *)ud;
    char buf[8];
    if (read(fd, buf, sizeof(buf)) < 0) {}
    if (fd == pfd[0]) reads++; else reads2++;
    loop_unwatch(l, other);
    loop_unwatch(l, fd);
}

static void test_pipes(void) {
    loop *l = loop_new();
    CHECK(pipe2(pfd, O_NONBLOCK) == 0);
    CHECK(loop_watch(l, pfd[1], LOOP_WRITE, on_write, NULL) == 0);
    CHECK(loop_watch(l, pfd[0], LOOP_READ, on_read, NULL) == 0);
    loop_run(l);
    CHECK(wrote == 1);
    CHECK(reads == 1);
    CHECK_STR(got, "hi");

    /* Unwatched: data arrives but no callback; the timer stops the loop. */
    CHECK(write(pfd[1], "zz", 2) == 2);
    reads = 0;
    loop_timer_add(l, 30, stop_cb, NULL);
    loop_run(l);
    CHECK(reads == 0);
    loop_unwatch(l, pfd[1]);
    close(pfd[0]); close(pfd[1]);

    /* Stale events in the same round. */
    CHECK(pipe2(pfd, O_NONBLOCK) == 0);
    CHECK(pipe2(pfd2, O_NONBLOCK) == 0);
    CHECK(write(pfd[1], "a", 1) == 1);
    CHECK(write(pfd2[1], "b", 1) == 1);
    reads = reads2 = 0;
    loop_watch(l, pfd[0], LOOP_READ, kill_other, &pfd2[0]);
    loop_watch(l, pfd2[0], LOOP_READ, kill_other, &pfd[0]);
    loop_timer_add(l, 30, stop_cb, NULL);
    loop_run(l);
    CHECK(reads + reads2 == 1);
    close(pfd[0]); close(pfd[1]); close(pfd2[0]); close(pfd2[1]);
    loop_free(l);
}

int main(void) {
    test_timers();
    test_pipes();
    return unit_done("loop");
}
