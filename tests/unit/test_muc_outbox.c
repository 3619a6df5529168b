/* test_muc_outbox: unwritten room history, its retries and its bounds
 * (chatd/features/muc_outbox.c). */
#include <string.h>
#include "unit.h"
#include "../../chatd/features/muc_outbox.h"

static void add(mob_set *s, mob_box *b, const char *x, unsigned *dropped)
{
    unsigned d = mob_append(s, b, x, strlen(x));
    if (dropped) *dropped += d;
}

static void test_retry_keeps_order_and_backs_off(void)
{
    mob_set s = { 0 };
    mob_box *b = mob_get(&s, "r@m", 20);
    CHECK(mob_get(&s, "r@m", 20) == b);
    add(&s, b, "m1", NULL);
    add(&s, b, "m2", NULL);
    CHECK(mob_due(b, 0));
    mob_sent(b);
    CHECK(b->inflight == 2 && !mob_due(b, 0));
    add(&s, b, "m3", NULL);                     /* arrives during the write */
    mob_failed(b, 1000);                        /* the write failed: all kept */
    CHECK(b->n == 3 && b->inflight == 0 && b->attempts == 1);
    CHECK(!mob_due(b, 1999));
    CHECK(mob_due(b, 2000));
    CHECK(mob_backoff_ms(1) == 1000 && mob_backoff_ms(2) == 2000 && mob_backoff_ms(3) == 4000);
    CHECK(mob_backoff_ms(50) == MOB_BACKOFF_MAX_MS);
    mob_sent(b);
    mob_failed(b, 2000);
    CHECK(b->attempts == 2 && !mob_due(b, 3999) && mob_due(b, 4000));
    mob_sent(b);
    add(&s, b, "m4", NULL);
    mob_written(&s, b);                         /* m1..m3 in Redis; m4 waits */
    CHECK(b->n == 1 && strcmp(b->e[0], "m4") == 0 && b->attempts == 0);
    CHECK(mob_due(b, 0));
    CHECK(s.bytes == 2);
    mob_sent(b);
    mob_written(&s, b);
    CHECK(s.bytes == 0);
    mob_release(&s, b);
    CHECK(s.boxes == NULL);
}

static void test_bounded(void)
{
    mob_set s = { .cap_bytes = 10 };
    mob_box *a = mob_get(&s, "a@m", 3), *b = mob_get(&s, "b@m", 20);
    unsigned dropped = 0;
    /* per room: no more than the ring size, silently (Redis trims them) */
    add(&s, a, "a1", &dropped);
    add(&s, a, "a2", &dropped);
    add(&s, a, "a3", &dropped);
    add(&s, a, "a4", &dropped);
    CHECK(a->n == 3 && strcmp(a->e[0], "a2") == 0 && dropped == 0 && s.bytes == 6);
    /* over the byte cap: the oldest go, this room's first, then others' */
    add(&s, b, "b1", &dropped);
    add(&s, b, "b2", &dropped);                 /* 10 bytes: at the cap */
    CHECK(dropped == 0);
    add(&s, b, "b3", &dropped);                 /* b1 goes */
    CHECK(dropped == 1 && b->n == 2 && strcmp(b->e[0], "b2") == 0 && s.bytes == 10);
    mob_sent(b);                                /* b2, b3 in flight */
    add(&s, b, "b4", &dropped);                 /* b2 goes, out of the flight */
    CHECK(dropped == 2 && b->inflight == 1 && strcmp(b->e[0], "b3") == 0);
    mob_written(&s, b);                         /* removes b3 only */
    CHECK(b->n == 1 && strcmp(b->e[0], "b4") == 0);
    /* a single room's one entry is kept over the others' */
    mob_box *c = mob_get(&s, "c@m", 20);
    add(&s, c, "cccccccc", &dropped);           /* 8 bytes: a's go first */
    CHECK(s.bytes <= 10 && c->n == 1);
    CHECK(a->n < 3);
    /* an entry bigger than the cap alone: dropped too, never unbounded */
    dropped = 0;
    add(&s, c, "0123456789abcdef", &dropped);
    CHECK(s.bytes <= 10 && dropped >= 1);
    mob_free_all(&s);
    CHECK(s.boxes == NULL && s.bytes == 0);
}

static unsigned swept;
static void count_gone(mob_box *b, void *ud) { (void)b; (void)ud; swept++; }

/* mob_sweep frees, in one pass, the boxes with nothing to write and
 * nothing in flight, and keeps the others (mam.c's outboxes). */
static void test_sweep(void)
{
    mob_set s = { 0 };
    mob_box *a = mob_get(&s, "a@m", 5), *b = mob_get(&s, "b@m", 5);
    mob_get(&s, "c@m", 5);                      /* empty */
    add(&s, a, "x", NULL);
    add(&s, b, "y", NULL);
    mob_sent(b);
    mob_written(&s, b);                         /* b: written, now empty */
    add(&s, a, "z", NULL);
    mob_sent(a);                                /* a: in flight */
    swept = 0;
    mob_sweep(&s, count_gone, NULL);
    CHECK(swept == 2);
    CHECK(mob_find(&s, "a@m") == a && !mob_find(&s, "b@m") && !mob_find(&s, "c@m"));
    mob_written(&s, a);
    mob_sweep(&s, count_gone, NULL);
    CHECK(swept == 3 && s.boxes == NULL && s.bytes == 0);
}

int main(void)
{
    test_sweep();
    test_retry_keeps_order_and_backs_off();
    test_bounded();
    return unit_done("muc_outbox");
}
