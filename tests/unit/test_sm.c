/*
 * test_sm: XEP-0198 counters and the unacknowledged queue (chatd/session/sm.c):
 * numbering, acks (repeats, too high), the wrap of h at 2^32, the bound,
 * and moving the state to a resumed session.
 */
#include "unit.h"
#include "../../chatd/session/sm.h"

static void push(sm_state *sm, const char *xml) {
    sm_push(sm, xml, strlen(xml), 1000, 0, 0);
}

static void test_counting_and_acks(void) {
    sm_state sm;
    sm_init(&sm);
    CHECK(sm.out_h == 0 && sm.n == 0);
    push(&sm, "<message id='1'/>");
    push(&sm, "<message id='2'/>");
    push(&sm, "<message id='3'/>");
    CHECK(sm.out_h == 3 && sm.n == 3);
    CHECK(sm.bytes == 3 * strlen("<message id='1'/>"));
    CHECK(sm_ack(&sm, 1) == 1);
    CHECK(sm.n == 2);
    CHECK_STR(sm.head->xml, "<message id='2'/>");
    CHECK(sm_ack(&sm, 1) == 0);             /* a repeat drops nothing */
    CHECK(sm.n == 2);
    CHECK(sm_ack(&sm, 4) == -1);            /* more than was sent */
    CHECK(sm.n == 2 && sm.acked == 1);      /* ... changes nothing */
    CHECK(!sm_ack_valid(&sm, 0));           /* going back is "too high" mod 2^32 */
    CHECK(sm_ack(&sm, 3) == 2);
    CHECK(sm.n == 0 && sm.bytes == 0 && !sm.head && !sm.tail);
    push(&sm, "<iq/>");                     /* the queue works after emptying */
    CHECK(sm.head == sm.tail && sm.n == 1 && sm.out_h == 4);
    CHECK(sm_count_in(&sm) == 1 && sm_count_in(&sm) == 2);
    sm_clear(&sm);
    CHECK(!sm.head && sm.n == 0);
}

static void test_wrap(void) {
    sm_state sm;
    sm_init_at(&sm, UINT32_MAX - 1);
    push(&sm, "<a1/>");                     /* number 2^32-1 */
    push(&sm, "<a2/>");                     /* number 0 */
    push(&sm, "<a3/>");                     /* number 1 */
    CHECK(sm.out_h == 1 && sm.n == 3);
    CHECK(sm_ack_valid(&sm, UINT32_MAX));
    CHECK(sm_ack_valid(&sm, 0));
    CHECK(sm_ack_valid(&sm, 1));
    CHECK(!sm_ack_valid(&sm, 2));
    CHECK(sm_ack(&sm, 0) == 2);             /* across the wrap */
    CHECK_STR(sm.head->xml, "<a3/>");
    CHECK(sm_ack(&sm, 1) == 1 && sm.n == 0);
    CHECK(sm_ack(&sm, 2) == -1);
    sm.in_h = UINT32_MAX;
    CHECK(sm_count_in(&sm) == 0);           /* h wraps to zero (XEP-0198 §4) */
    sm_clear(&sm);
}

static void test_bound(void) {
    sm_state sm;
    sm_init(&sm);
    CHECK(sm_push(&sm, "<x/>", 4, 0, 2, 0) == 0);
    CHECK(sm_push(&sm, "<x/>", 4, 0, 2, 0) == 0);
    CHECK(sm_push(&sm, "<x/>", 4, 0, 2, 0) == 1);   /* over the count */
    CHECK(sm.n == 3);                                /* kept: nothing lost */
    sm_clear(&sm);
    sm_init(&sm);
    CHECK(sm_push(&sm, "0123456789", 10, 0, 0, 15) == 0);
    CHECK(sm_push(&sm, "0123456789", 10, 0, 0, 15) == 1);  /* over the bytes */
    CHECK(sm_ack(&sm, 1) == 1 && sm.bytes == 10);
    CHECK(sm_push(&sm, "01234", 5, 0, 0, 15) == 0);        /* back under */
    CHECK(sm.since_request == 3);
    sm_clear(&sm);
}

static void test_move_and_parse(void) {
    sm_state a, b;
    uint32_t h = 7;
    sm_init(&a);
    sm_init(&b);
    push(&a, "<m1/>");
    push(&a, "<m2/>");
    sm_count_in(&a);
    sm_move(&b, &a);
    CHECK(a.n == 0 && !a.head && a.out_h == 0 && a.in_h == 0);
    CHECK(b.n == 2 && b.out_h == 2 && b.in_h == 1);
    /* a resume with h=1: the client got <m1/>; <m2/> is what to resend */
    CHECK(sm_ack(&b, 1) == 1);
    CHECK_STR(b.head->xml, "<m2/>");
    CHECK(b.head->stamp == 1000);
    sm_clear(&b);

    CHECK(sm_parse_h("0", &h) == 0 && h == 0);
    CHECK(sm_parse_h("4294967295", &h) == 0 && h == UINT32_MAX);
    CHECK(sm_parse_h("4294967296", &h) == -1);
    CHECK(sm_parse_h("-1", &h) == -1);
    CHECK(sm_parse_h("", &h) == -1);
    CHECK(sm_parse_h(NULL, &h) == -1);
    CHECK(sm_parse_h("12a", &h) == -1);
    CHECK(sm_parse_h(" 1", &h) == -1);
    CHECK(sm_parse_h("99999999999", &h) == -1);
}

int main(void) {
    test_counting_and_acks();
    test_wrap();
    test_bound();
    test_move_and_parse();
    return unit_done("sm");
}
