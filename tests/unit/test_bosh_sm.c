/*
 * test_bosh_sm: the pure BOSH state machine, driven with fake times and
 * fake request handles (addresses in R[]).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/sha.h>
#include "unit.h"
#include "../../chatd/transport/bosh_sm.h"

static int R[64];
#define REQ(i) ((void *)&R[i])

static const bosh_action *find(const bosh_actions *a, bosh_act_type t, void *req) {
    for (size_t i = 0; i < a->n; i++)
        if (a->a[i].type == t && a->a[i].req == req) return &a->a[i];
    return NULL;
}

static long pos(const bosh_actions *a, bosh_act_type t, void *req) {
    for (size_t i = 0; i < a->n; i++)
        if (a->a[i].type == t && a->a[i].req == req) return (long)i;
    return -1;
}

static int has_end(const bosh_actions *a) {
    for (size_t i = 0; i < a->n; i++) if (a->a[i].type == BOSH_ACT_END) return 1;
    return 0;
}

static int any_condition(const bosh_actions *a, const char *cond) {
    for (size_t i = 0; i < a->n; i++)
        if (a->a[i].type == BOSH_ACT_ANSWER && a->a[i].body &&
            strstr(a->a[i].body, cond)) return 1;
    return 0;
}

static bosh_sm_params std_params(void) {
    bosh_sm_params p = { .wait = 60, .hold = 1, .requests = 2, .inactivity = 60,
                         .polling = 2, .maxpause = 120, .ver_major = 1,
                         .ver_minor = 11, .acks = 1 };
    return p;
}

#define EMPTY "<body xmlns='http://jabber.org/protocol/httpbind'/>"

/* A session created with rid 1000 at t=0, creation answered. */
static bosh_sm *new_session(bosh_actions *a) {
    bosh_sm_params p = std_params();
    bosh_sm *sm = bosh_sm_new(&p, 1000, 0);
    bosh_sm_creation_answer(sm, 0, REQ(0), "n1-00", "localhost", a);
    bosh_actions_clear(a);
    return sm;
}

static void test_negotiate(void) {
    bosh_sm_limits lim = { .max_wait = 60, .max_hold = 1, .inactivity = 60,
                           .maxpause = 120, .polling = 2 };
    bosh_sm_client c = { 1, 1, 1, 120, 2, 1, 6, 0, 0 };
    bosh_sm_params p;
    bosh_sm_negotiate(&lim, &c, &p);
    CHECK(p.wait == 60 && p.hold == 1 && p.requests == 2);
    CHECK(p.ver_major == 1 && p.ver_minor == 6);
    CHECK(p.inactivity == 60 && p.maxpause == 120 && p.polling == 2);

    bosh_sm_client c2 = { 1, 1, 1, 30, 0, 1, 12, 0, 0 };
    bosh_sm_negotiate(&lim, &c2, &p);
    CHECK(p.wait == 30 && p.hold == 0 && p.requests == 1);
    CHECK(p.ver_major == 1 && p.ver_minor == 11);

    bosh_sm_client c3 = { 0 };
    lim.max_hold = 50;
    bosh_sm_negotiate(&lim, &c3, &p);
    CHECK(p.wait == 60 && p.hold == 1 && p.requests == 2);
    CHECK(p.ver_major == 1 && p.ver_minor == 11);
    bosh_sm_client c4 = { 0, 1, 0, 0, 200, 0, 0, 0, 0 };
    bosh_sm_negotiate(&lim, &c4, &p);
    CHECK(p.hold == BOSH_SM_MAX_HOLD && p.requests == BOSH_SM_MAX_HOLD + 1);
}

static void test_creation(void) {
    bosh_actions a; bosh_actions_init(&a);
    bosh_sm_params p = std_params();
    bosh_sm *sm = bosh_sm_new(&p, 1000, 5);
    const char *feat = "<stream:features><mechanisms/></stream:features>";
    bosh_sm_output(sm, feat, strlen(feat));
    bosh_sm_creation_answer(sm, 5, REQ(0), "n1-ab", "example.org", &a);
    CHECK(a.n == 1);
    const bosh_action *ans = find(&a, BOSH_ACT_ANSWER, REQ(0));
    CHECK(ans && ans->status == 200 && ans->rid == 1000);
    const char *want =
        "<body xmlns='http://jabber.org/protocol/httpbind' xmlns:xmpp='urn:xmpp:xbosh'"
        " xmlns:stream='http://etherx.jabber.org/streams' sid='n1-ab' wait='60'"
        " requests='2' hold='1' inactivity='60' polling='2' maxpause='120'"
        " ver='1.11' from='example.org' ack='1000' xmpp:version='1.0'"
        " xmpp:restartlogic='true'><stream:features><mechanisms/></stream:features></body>";
    CHECK_STR(ans ? ans->body : NULL, want);
    CHECK(ans && ans->len == strlen(want));
    CHECK(bosh_sm_pending(sm) == 0);
    bosh_actions_clear(&a);
    /* The creation response is buffered: a retry of rid 1000 gets it. */
    bosh_sm_request(sm, 10, 1000, 0, 0, REQ(1), &a);
    ans = find(&a, BOSH_ACT_ANSWER, REQ(1));
    CHECK_STR(ans ? ans->body : NULL, want);
    bosh_actions_clear(&a);
    bosh_sm_free(sm);
}

static void test_in_order_delivery(void) {
    bosh_actions a; bosh_actions_init(&a);
    bosh_sm *sm = new_session(&a);

    bosh_sm_request(sm, 100, 1001, 0, 0, REQ(1), &a);
    CHECK(a.n == 1 && a.a[0].type == BOSH_ACT_PROCESS && a.a[0].rid == 1001);
    CHECK(bosh_sm_held(sm) == 1);
    bosh_actions_clear(&a);

    /* 1003 before 1002: buffered, nothing processed yet. */
    bosh_sm_request(sm, 110, 1003, 0, 0, REQ(3), &a);
    CHECK(a.n == 0);
    CHECK(bosh_sm_last_rid(sm) == 1001);

    /* 1002 arrives: 1001 answered, 1002 processed, then 1003. */
    bosh_sm_request(sm, 120, 1002, 0, 0, REQ(2), &a);
    long a1 = pos(&a, BOSH_ACT_ANSWER, REQ(1));
    long p2 = pos(&a, BOSH_ACT_PROCESS, REQ(2));
    long a2 = pos(&a, BOSH_ACT_ANSWER, REQ(2));
    long p3 = pos(&a, BOSH_ACT_PROCESS, REQ(3));
    CHECK(a1 >= 0 && p2 > a1 && a2 > p2 && p3 > a2);
    CHECK(find(&a, BOSH_ACT_ANSWER, REQ(3)) == NULL);
    CHECK(bosh_sm_last_rid(sm) == 1003);
    CHECK(bosh_sm_held(sm) == 1);
    /* ack = highest rid received in order, since it differs from 1001. */
    CHECK_STR(a.a[a1].body, "<body xmlns='http://jabber.org/protocol/httpbind' ack='1002'/>");
    CHECK(!has_end(&a));
    bosh_actions_clear(&a);
    bosh_sm_free(sm);
}

static void test_window_overflow(void) {
    bosh_actions a; bosh_actions_init(&a);
    bosh_sm *sm = new_session(&a);
    bosh_sm_request(sm, 100, 1001, 0, 0, REQ(1), &a);
    bosh_actions_clear(&a);
    /* requests=2: 1003 is inside the window, 1004 is beyond it. */
    bosh_sm_request(sm, 110, 1004, 0, 0, REQ(4), &a);
    const bosh_action *x = find(&a, BOSH_ACT_ANSWER, REQ(4));
    CHECK(x && x->condition && strcmp(x->condition, "item-not-found") == 0);
    CHECK_STR(x ? x->body : NULL, "<body xmlns='http://jabber.org/protocol/httpbind'"
              " type='terminate' condition='item-not-found'/>");
    /* the held request is answered too, and the session ends. */
    CHECK(find(&a, BOSH_ACT_ANSWER, REQ(1)) != NULL);
    CHECK(has_end(&a));
    CHECK(bosh_sm_get_state(sm) == BOSH_SM_DONE);
    bosh_actions_clear(&a);
    bosh_sm_free(sm);

    /* A rid whose response is no longer buffered. */
    sm = new_session(&a);
    for (int i = 1; i <= 4; i++) {
        bosh_sm_request(sm, 100 * i, 1000 + i, 0, 0, REQ(i), &a);
        bosh_actions_clear(&a);
    }
    /* buffer keeps 2 responses (1002, 1003): 1001 is gone. */
    bosh_sm_request(sm, 1000, 1002, 0, 0, REQ(10), &a);
    x = find(&a, BOSH_ACT_ANSWER, REQ(10));
    CHECK(x && x->condition == NULL && !has_end(&a));
    bosh_actions_clear(&a);
    bosh_sm_request(sm, 1000, 1001, 0, 0, REQ(11), &a);
    x = find(&a, BOSH_ACT_ANSWER, REQ(11));
    CHECK(x && x->condition && strcmp(x->condition, "item-not-found") == 0);
    CHECK(has_end(&a));
    CHECK(find(&a, BOSH_ACT_ANSWER, REQ(4)) != NULL);   /* held one answered */
    bosh_actions_clear(&a);
    bosh_sm_free(sm);
}

static void test_retransmission(void) {
    bosh_actions a; bosh_actions_init(&a);
    bosh_sm *sm = new_session(&a);
    bosh_sm_request(sm, 100, 1001, 0, 0, REQ(1), &a);
    bosh_actions_clear(&a);
    const char *m = "<message xmlns='jabber:client' to='a@b'><body>hi</body></message>";
    bosh_sm_output(sm, m, strlen(m));
    bosh_sm_output(sm, m, strlen(m));
    CHECK(bosh_sm_pending(sm) == 2 * strlen(m));
    bosh_sm_flush(sm, 150, &a);
    const bosh_action *x = find(&a, BOSH_ACT_ANSWER, REQ(1));
    char first[512] = "";
    CHECK(x != NULL);
    if (x) {
        CHECK(x->len < sizeof first);
        memcpy(first, x->body, x->len);
        first[x->len] = 0;
    }
    CHECK(strstr(first, "<body>hi</body></message><message") != NULL);
    CHECK(strncmp(first, "<body xmlns='http://jabber.org/protocol/httpbind'>", 50) == 0);
    CHECK(bosh_sm_pending(sm) == 0);
    bosh_actions_clear(&a);

    /* The answer was lost; the client resends rid 1001. */
    bosh_sm_request(sm, 200, 1001, 0, 0, REQ(2), &a);
    x = find(&a, BOSH_ACT_ANSWER, REQ(2));
    CHECK(x && x->len == strlen(first) && memcmp(x->body, first, x->len) == 0);
    CHECK(a.n == 1);       /* nothing processed again */
    bosh_actions_clear(&a);
    bosh_sm_free(sm);
}

static void test_repeated_held_rid(void) {
    bosh_actions a; bosh_actions_init(&a);
    bosh_sm *sm = new_session(&a);
    bosh_sm_request(sm, 100, 1001, 0, 0, REQ(1), &a);
    bosh_actions_clear(&a);
    bosh_sm_request(sm, 200, 1001, 0, 0, REQ(2), &a);
    /* old HTTP request released with a recoverable error (§rids-broken;
     * Strophe reads type='error' as a plain empty body), payloads not
     * processed again */
    CHECK(a.n == 1);
    const bosh_action *x = find(&a, BOSH_ACT_ANSWER, REQ(1));
    CHECK_STR(x ? x->body : NULL,
              "<body xmlns='http://jabber.org/protocol/httpbind' type='error'/>");
    CHECK(x && x->status == 200 && x->condition == NULL);
    CHECK(bosh_sm_held(sm) == 1);
    bosh_actions_clear(&a);
    bosh_sm_output(sm, "<iq/>", 5);
    bosh_sm_flush(sm, 210, &a);
    x = find(&a, BOSH_ACT_ANSWER, REQ(2));
    CHECK_STR(x ? x->body : NULL,
              "<body xmlns='http://jabber.org/protocol/httpbind'><iq/></body>");
    bosh_actions_clear(&a);
    /* and that is what a retry of 1001 gets, not the empty one */
    bosh_sm_request(sm, 220, 1001, 0, 0, REQ(3), &a);
    x = find(&a, BOSH_ACT_ANSWER, REQ(3));
    CHECK_STR(x ? x->body : NULL,
              "<body xmlns='http://jabber.org/protocol/httpbind'><iq/></body>");
    bosh_actions_clear(&a);
    bosh_sm_free(sm);
}

static void test_hold_one_second_request(void) {
    bosh_actions a; bosh_actions_init(&a);
    bosh_sm *sm = new_session(&a);
    bosh_sm_request(sm, 100, 1001, 0, 0, REQ(1), &a);
    bosh_actions_clear(&a);
    bosh_sm_output(sm, "<presence/>", 11);   /* not yet flushed */
    bosh_sm_request(sm, 105, 1002, 0, 0, REQ(2), &a);
    const bosh_action *x = find(&a, BOSH_ACT_ANSWER, REQ(1));
    CHECK_STR(x ? x->body : NULL,
              "<body xmlns='http://jabber.org/protocol/httpbind' ack='1002'><presence/></body>");
    CHECK(find(&a, BOSH_ACT_PROCESS, REQ(2)) != NULL);
    CHECK(find(&a, BOSH_ACT_ANSWER, REQ(2)) == NULL);
    CHECK(!any_condition(&a, "policy-violation"));
    CHECK(bosh_sm_held(sm) == 1);
    bosh_actions_clear(&a);
    /* a third, still within the window, behaves the same */
    bosh_sm_request(sm, 106, 1003, 0, 0, REQ(3), &a);
    CHECK(find(&a, BOSH_ACT_ANSWER, REQ(2)) != NULL && !has_end(&a));
    bosh_actions_clear(&a);
    bosh_sm_free(sm);
}

static void test_wait_expiry(void) {
    bosh_actions a; bosh_actions_init(&a);
    bosh_sm *sm = new_session(&a);
    bosh_sm_request(sm, 1000, 1001, 0, 0, REQ(1), &a);
    bosh_actions_clear(&a);
    CHECK(bosh_sm_deadline(sm) == 61000);
    bosh_sm_tick(sm, 60999, &a);
    CHECK(a.n == 0);
    bosh_sm_tick(sm, 61000, &a);
    const bosh_action *x = find(&a, BOSH_ACT_ANSWER, REQ(1));
    CHECK_STR(x ? x->body : NULL, EMPTY);
    CHECK(bosh_sm_held(sm) == 0);
    bosh_actions_clear(&a);
    /* now the inactivity clock runs from the answer */
    CHECK(bosh_sm_deadline(sm) == 61000 + 60000);
    bosh_sm_free(sm);
}

static void test_inactivity(void) {
    bosh_actions a; bosh_actions_init(&a);
    bosh_sm *sm = new_session(&a);          /* created at t=0 */
    CHECK(bosh_sm_deadline(sm) == 60000);
    bosh_sm_tick(sm, 59999, &a);
    CHECK(a.n == 0);
    bosh_sm_output(sm, "<message/>", 10);
    bosh_sm_tick(sm, 60000, &a);
    /* silent: no answer, just the end */
    CHECK(a.n == 1 && a.a[0].type == BOSH_ACT_END);
    CHECK(bosh_sm_get_state(sm) == BOSH_SM_DONE);
    CHECK(bosh_sm_deadline(sm) == 0);
    bosh_actions_clear(&a);
    /* a late request gets item-not-found */
    bosh_sm_request(sm, 61000, 1001, 0, 0, REQ(1), &a);
    const bosh_action *x = find(&a, BOSH_ACT_ANSWER, REQ(1));
    CHECK(x && x->condition && strcmp(x->condition, "item-not-found") == 0);
    bosh_actions_clear(&a);
    bosh_sm_free(sm);

    /* a held request keeps the session alive */
    sm = new_session(&a);
    bosh_sm_request(sm, 50000, 1001, 0, 0, REQ(1), &a);
    bosh_actions_clear(&a);
    bosh_sm_tick(sm, 70000, &a);
    CHECK(a.n == 0 && bosh_sm_get_state(sm) == BOSH_SM_ACTIVE);
    bosh_sm_free(sm);
}

static void test_terminate(void) {
    bosh_actions a; bosh_actions_init(&a);
    bosh_sm_params p = std_params();
    p.hold = 2; p.requests = 3;
    bosh_sm *sm = bosh_sm_new(&p, 1000, 0);
    bosh_sm_creation_answer(sm, 0, REQ(0), "s", "d", &a);
    bosh_actions_clear(&a);
    bosh_sm_request(sm, 10, 1001, 0, 0, REQ(1), &a);
    bosh_sm_request(sm, 11, 1002, 0, 0, REQ(2), &a);
    bosh_actions_clear(&a);
    CHECK(bosh_sm_held(sm) == 2);
    bosh_sm_output(sm, "<message/>", 10);
    bosh_sm_request(sm, 12, 1003, BOSH_REQ_TERMINATE, 0, REQ(3), &a);
    long p3 = pos(&a, BOSH_ACT_PROCESS, REQ(3));
    long a1 = pos(&a, BOSH_ACT_ANSWER, REQ(1));
    long a2 = pos(&a, BOSH_ACT_ANSWER, REQ(2));
    long a3 = pos(&a, BOSH_ACT_ANSWER, REQ(3));
    CHECK(p3 >= 0 && a1 > p3 && a2 > a1 && a3 > a2);
    if (a1 >= 0) CHECK_STR(a.a[a1].body, "<body xmlns='http://jabber.org/protocol/httpbind'"
                           " type='terminate'><message/></body>");
    if (a2 >= 0) CHECK_STR(a.a[a2].body, EMPTY);
    if (a3 >= 0) CHECK_STR(a.a[a3].body, EMPTY);
    CHECK(has_end(&a) && a.a[a.n - 1].type == BOSH_ACT_END);
    CHECK(bosh_sm_get_state(sm) == BOSH_SM_DONE);
    bosh_actions_clear(&a);
    bosh_sm_free(sm);

    /* terminate alone: it is the oldest, so it carries type='terminate' */
    sm = new_session(&a);
    bosh_sm_request(sm, 10, 1001, BOSH_REQ_TERMINATE, 0, REQ(1), &a);
    const bosh_action *x = find(&a, BOSH_ACT_ANSWER, REQ(1));
    CHECK_STR(x ? x->body : NULL,
              "<body xmlns='http://jabber.org/protocol/httpbind' type='terminate'/>");
    CHECK(pos(&a, BOSH_ACT_PROCESS, REQ(1)) == 0 && has_end(&a));
    bosh_actions_clear(&a);
    bosh_sm_free(sm);

    /* terminate arriving out of order waits for its turn */
    sm = new_session(&a);
    bosh_sm_request(sm, 10, 1002, BOSH_REQ_TERMINATE, 0, REQ(2), &a);
    CHECK(a.n == 0);
    bosh_sm_request(sm, 11, 1001, 0, 0, REQ(1), &a);
    CHECK(pos(&a, BOSH_ACT_PROCESS, REQ(1)) < pos(&a, BOSH_ACT_PROCESS, REQ(2)));
    CHECK(find(&a, BOSH_ACT_ANSWER, REQ(1)) && find(&a, BOSH_ACT_ANSWER, REQ(2)));
    CHECK(has_end(&a));
    bosh_actions_clear(&a);
    bosh_sm_free(sm);
}

/* Strophe/Converse keepalive: the page reloads while rid 1001 is held; the
 * new page resumes with 1002 (or repeats 1001). Never policy-violation. */
static void test_page_reload(void) {
    bosh_actions a; bosh_actions_init(&a);
    bosh_sm *sm = new_session(&a);
    bosh_sm_request(sm, 100, 1001, 0, 0, REQ(1), &a);
    bosh_actions_clear(&a);
    /* new page: next rid, while 1001 is still open */
    bosh_sm_request(sm, 3000, 1002, 0, 0, REQ(2), &a);
    CHECK(find(&a, BOSH_ACT_ANSWER, REQ(1)) != NULL);
    CHECK(find(&a, BOSH_ACT_PROCESS, REQ(2)) != NULL);
    CHECK(!any_condition(&a, "terminate") && !has_end(&a));
    bosh_actions_clear(&a);
    /* Strophe sends its next requests normally */
    bosh_sm_request(sm, 3100, 1003, 0, 0, REQ(3), &a);
    CHECK(find(&a, BOSH_ACT_ANSWER, REQ(2)) && !has_end(&a));
    bosh_actions_clear(&a);
    /* reload again, this time repeating the held rid */
    bosh_sm_request(sm, 5000, 1003, 0, 0, REQ(4), &a);
    CHECK(find(&a, BOSH_ACT_ANSWER, REQ(3)) && !has_end(&a));
    CHECK(!any_condition(&a, "terminate"));
    bosh_actions_clear(&a);
    bosh_sm_request(sm, 5100, 1004, 0, 0, REQ(5), &a);
    CHECK(find(&a, BOSH_ACT_ANSWER, REQ(4)) && find(&a, BOSH_ACT_PROCESS, REQ(5)));
    CHECK(!has_end(&a));
    bosh_actions_clear(&a);
    /* reload that skipped a rid (1005 built but never sent): after the gap
     * timeout the session carries on */
    bosh_sm_request(sm, 8000, 1006, 0, 0, REQ(6), &a);
    CHECK(a.n == 0);
    CHECK(bosh_sm_deadline(sm) == 8000 + BOSH_SM_GAP_MS);
    bosh_sm_tick(sm, 8000 + BOSH_SM_GAP_MS, &a);
    CHECK(find(&a, BOSH_ACT_ANSWER, REQ(5)) && find(&a, BOSH_ACT_PROCESS, REQ(6)));
    CHECK(!has_end(&a) && bosh_sm_last_rid(sm) == 1006);
    bosh_actions_clear(&a);
    /* the skipped rid showing up late is answered, not fatal */
    bosh_sm_request(sm, 10500, 1005, 0, 0, REQ(7), &a);
    const bosh_action *x = find(&a, BOSH_ACT_ANSWER, REQ(7));
    CHECK_STR(x ? x->body : NULL, EMPTY);
    CHECK(!has_end(&a));
    bosh_actions_clear(&a);
    bosh_sm_free(sm);
}

static void test_pause(void) {
    bosh_actions a; bosh_actions_init(&a);
    bosh_sm *sm = new_session(&a);
    bosh_sm_request(sm, 100, 1001, 0, 0, REQ(1), &a);
    bosh_actions_clear(&a);
    bosh_sm_output(sm, "<message/>", 10);
    bosh_sm_request(sm, 200, 1002, BOSH_REQ_PAUSE, 30, REQ(2), &a);
    const bosh_action *x1 = find(&a, BOSH_ACT_ANSWER, REQ(1));
    const bosh_action *x2 = find(&a, BOSH_ACT_ANSWER, REQ(2));
    CHECK(x1 && x2);
    CHECK(x1 && !strstr(x1->body, "<message/>"));
    CHECK_STR(x2 ? x2->body : NULL, EMPTY);
    CHECK(bosh_sm_pending(sm) == 10);      /* output waits for the return */
    CHECK(bosh_sm_held(sm) == 0);
    CHECK(bosh_sm_deadline(sm) == 200 + 30000);
    bosh_actions_clear(&a);
    bosh_sm_tick(sm, 30199, &a);
    CHECK(a.n == 0);
    /* client returns: output delivered, normal inactivity again */
    bosh_sm_request(sm, 30000, 1003, 0, 0, REQ(3), &a);
    bosh_actions_clear(&a);
    bosh_sm_flush(sm, 30001, &a);
    const bosh_action *x3 = find(&a, BOSH_ACT_ANSWER, REQ(3));
    CHECK(x3 && strstr(x3->body, "<message/>"));
    CHECK(bosh_sm_deadline(sm) == 30001 + 60000);
    bosh_actions_clear(&a);
    bosh_sm_free(sm);

    /* pause above maxpause is clamped, never policy-violation */
    sm = new_session(&a);
    bosh_sm_request(sm, 100, 1001, BOSH_REQ_PAUSE, 9999, REQ(1), &a);
    CHECK(!any_condition(&a, "policy-violation") && !has_end(&a));
    CHECK(bosh_sm_deadline(sm) == 100 + 120000);
    bosh_actions_clear(&a);
    bosh_sm_tick(sm, 100 + 120000, &a);
    CHECK(has_end(&a));
    bosh_actions_clear(&a);
    bosh_sm_free(sm);
}

static void test_release(void) {
    bosh_actions a; bosh_actions_init(&a);
    bosh_sm *sm = new_session(&a);
    bosh_sm_request(sm, 100, 1001, 0, 0, REQ(1), &a);
    bosh_sm_request(sm, 101, 1003, 0, 0, REQ(3), &a);   /* buffered */
    bosh_actions_clear(&a);
    bosh_sm_output(sm, "<iq/>", 5);
    CHECK(bosh_sm_release(sm, 150, REQ(1), &a) == 0);
    const bosh_action *x = find(&a, BOSH_ACT_ANSWER, REQ(1));
    CHECK_STR(x ? x->body : NULL,
              "<body xmlns='http://jabber.org/protocol/httpbind'><iq/></body>");
    bosh_actions_clear(&a);
    CHECK(bosh_sm_release(sm, 150, REQ(3), &a) == 0);
    x = find(&a, BOSH_ACT_ANSWER, REQ(3));
    CHECK(x && x->status == 503 && x->len == 0);
    bosh_actions_clear(&a);
    CHECK(bosh_sm_release(sm, 150, REQ(9), &a) == -1 && a.n == 0);
    /* the client retries 1001 through another child: nothing lost */
    bosh_sm_request(sm, 200, 1001, 0, 0, REQ(4), &a);
    x = find(&a, BOSH_ACT_ANSWER, REQ(4));
    CHECK_STR(x ? x->body : NULL,
              "<body xmlns='http://jabber.org/protocol/httpbind'><iq/></body>");
    bosh_actions_clear(&a);
    /* and resends 1003, which is processed after 1002 */
    bosh_sm_request(sm, 210, 1003, 0, 0, REQ(5), &a);
    CHECK(a.n == 0);
    bosh_sm_request(sm, 211, 1002, 0, 0, REQ(6), &a);
    CHECK(pos(&a, BOSH_ACT_PROCESS, REQ(6)) < pos(&a, BOSH_ACT_PROCESS, REQ(5)));
    bosh_actions_clear(&a);
    bosh_sm_free(sm);
}

static void test_server_close(void) {
    bosh_actions a; bosh_actions_init(&a);
    bosh_sm *sm = new_session(&a);
    bosh_sm_request(sm, 100, 1001, 0, 0, REQ(1), &a);
    bosh_actions_clear(&a);
    bosh_sm_output(sm, "<message/>", 10);
    bosh_sm_close(sm, 120, "remote-stream-error",
                  "<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
                  &a);
    const bosh_action *x = find(&a, BOSH_ACT_ANSWER, REQ(1));
    CHECK_STR(x ? x->body : NULL,
              "<body xmlns='http://jabber.org/protocol/httpbind'"
              " xmlns:stream='http://etherx.jabber.org/streams' type='terminate'"
              " condition='remote-stream-error'><message/><stream:error><conflict"
              " xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></body>");
    CHECK(has_end(&a));
    bosh_actions_clear(&a);
    bosh_sm_free(sm);

    /* nothing held: the next request carries the terminate */
    sm = new_session(&a);
    bosh_sm_close(sm, 100, "system-shutdown", NULL, &a);
    CHECK(a.n == 0 && bosh_sm_get_state(sm) == BOSH_SM_CLOSING);
    bosh_sm_request(sm, 200, 1001, 0, 0, REQ(1), &a);
    x = find(&a, BOSH_ACT_ANSWER, REQ(1));
    CHECK_STR(x ? x->body : NULL, "<body xmlns='http://jabber.org/protocol/httpbind'"
              " type='terminate' condition='system-shutdown'/>");
    CHECK(x && x->condition && strcmp(x->condition, "system-shutdown") == 0);
    CHECK(has_end(&a));
    bosh_actions_clear(&a);
    bosh_sm_free(sm);

    /* closing session nobody comes back to ends after inactivity */
    sm = new_session(&a);
    bosh_sm_close(sm, 100, NULL, NULL, &a);
    CHECK(bosh_sm_deadline(sm) == 60000);
    bosh_sm_tick(sm, 60000, &a);
    CHECK(a.n == 1 && has_end(&a));
    bosh_actions_clear(&a);
    bosh_sm_free(sm);
}

static void test_polling_hold0(void) {
    bosh_actions a; bosh_actions_init(&a);
    bosh_sm_params p = std_params();
    p.hold = 0; p.requests = 1;
    bosh_sm *sm = bosh_sm_new(&p, 1000, 0);
    bosh_sm_creation_answer(sm, 0, REQ(0), "s", "d", &a);
    bosh_actions_clear(&a);
    bosh_sm_request(sm, 10, 1001, 0, 0, REQ(1), &a);
    CHECK(find(&a, BOSH_ACT_PROCESS, REQ(1)) && !find(&a, BOSH_ACT_ANSWER, REQ(1)));
    bosh_actions_clear(&a);
    bosh_sm_output(sm, "<iq/>", 5);        /* reply produced by processing */
    bosh_sm_flush(sm, 11, &a);
    const bosh_action *x = find(&a, BOSH_ACT_ANSWER, REQ(1));
    CHECK_STR(x ? x->body : NULL,
              "<body xmlns='http://jabber.org/protocol/httpbind'><iq/></body>");
    bosh_actions_clear(&a);
    bosh_sm_request(sm, 20, 1002, 0, 0, REQ(2), &a);
    bosh_actions_clear(&a);
    bosh_sm_flush(sm, 21, &a);             /* nothing queued: empty at once */
    x = find(&a, BOSH_ACT_ANSWER, REQ(2));
    CHECK_STR(x ? x->body : NULL, EMPTY);
    bosh_actions_clear(&a);
    bosh_sm_free(sm);
}


/* ---- acknowledgements (§ack-request, §ack-response) ---- */

static bosh_sm_req rq(uint64_t rid) {
    bosh_sm_req r;
    memset(&r, 0, sizeof r);
    r.rid = rid;
    return r;
}

static const char *msg_body(void) {
    return "<message xmlns='jabber:client'/>";
}

static void test_acks_negotiated(void) {
    bosh_sm_limits lim = { .max_wait = 60, .max_hold = 1, .inactivity = 60,
                           .maxpause = 0, .polling = 2 };
    bosh_sm_client c = { 1, 1, 1, 60, 1, 1, 6, 1, 1 };
    bosh_sm_params p;
    bosh_sm_negotiate(&lim, &c, &p);
    CHECK(p.acks == 1);
    c.has_ack = 0;                          /* Strophe: no ack attribute */
    bosh_sm_negotiate(&lim, &c, &p);
    CHECK(p.acks == 0);
    /* no acks: no 'ack' on the creation response nor later ones */
    bosh_actions a; bosh_actions_init(&a);
    bosh_sm *sm = bosh_sm_new(&p, 500, 0);
    bosh_sm_creation_answer(sm, 0, REQ(0), "s", "d", &a);
    CHECK_STR(a.n ? a.a[0].body : NULL,
              "<body xmlns='http://jabber.org/protocol/httpbind' xmlns:xmpp='urn:xmpp:xbosh'"
              " xmlns:stream='http://etherx.jabber.org/streams' sid='s' wait='60'"
              " requests='2' hold='1' inactivity='60' polling='2' ver='1.6' from='d'"
              " xmpp:version='1.0' xmpp:restartlogic='true'/>");
    bosh_actions_clear(&a);
    bosh_sm_request(sm, 10, 501, 0, 0, REQ(1), &a);
    bosh_sm_request(sm, 20, 502, 0, 0, REQ(2), &a);
    const bosh_action *x = find(&a, BOSH_ACT_ANSWER, REQ(1));
    CHECK_STR(x ? x->body : NULL, EMPTY);
    bosh_actions_clear(&a);
    bosh_sm_free(sm);
}

static void test_ack_keeps_unacked_responses(void) {
    bosh_actions a; bosh_actions_init(&a);
    bosh_sm *sm = new_session(&a);          /* acks on, requests=2 */
    /* 1001..1004, each sent with ack='1000': nothing acked beyond creation */
    for (int i = 1; i <= 4; i++) {
        bosh_sm_req r = rq(1000 + i);
        r.has_ack = 1; r.ack = 1000;
        bosh_sm_request_ex(sm, 100 * i, &r, REQ(i), &a);
        bosh_actions_clear(&a);
    }
    /* 1001 is older than the last `requests` but unacked: still resent */
    bosh_sm_req r = rq(1001);
    r.has_ack = 1; r.ack = 1000;
    bosh_sm_request_ex(sm, 500, &r, REQ(10), &a);
    const bosh_action *x = find(&a, BOSH_ACT_ANSWER, REQ(10));
    CHECK_STR(x ? x->body : NULL,
              "<body xmlns='http://jabber.org/protocol/httpbind' ack='1002'/>");
    CHECK(!has_end(&a));
    bosh_actions_clear(&a);
    /* the client acks 1002: 1001 may go, the last `requests` stay */
    r = rq(1005); r.has_ack = 1; r.ack = 1002;
    bosh_sm_request_ex(sm, 600, &r, REQ(5), &a);
    bosh_actions_clear(&a);
    bosh_sm_request(sm, 700, 1003, 0, 0, REQ(11), &a);
    x = find(&a, BOSH_ACT_ANSWER, REQ(11));
    CHECK(x && x->condition == NULL && !has_end(&a));
    bosh_actions_clear(&a);
    bosh_sm_request(sm, 710, 1001, 0, 0, REQ(12), &a);
    x = find(&a, BOSH_ACT_ANSWER, REQ(12));
    CHECK(x && x->condition && strcmp(x->condition, "item-not-found") == 0);
    CHECK(has_end(&a));
    bosh_actions_clear(&a);
    bosh_sm_free(sm);
}

/* Issue 14: a client that never acknowledges cannot make the server keep
 * BOSH_SM_MAX_BUFFERED responses of any size: max_buffer_bytes caps the
 * buffer, the oldest unacked responses go first, the last `requests`
 * stay, and asking for a dropped one again ends the session item-not-found. */
static void test_ack_buffer_byte_cap(void) {
    bosh_actions a; bosh_actions_init(&a);
    bosh_sm_params p = std_params();
    p.acks = 1;
    p.max_buffer_bytes = 10000;
    bosh_sm *sm = bosh_sm_new(&p, 1000, 0);
    bosh_sm_creation_answer(sm, 0, REQ(0), "s", "d", &a);
    bosh_actions_clear(&a);
    char big[3001];
    memset(big, 'x', 3000);
    memcpy(big, "<message>", 9);
    memcpy(big + 2990, "</message>", 10);
    big[3000] = '\0';
    for (int i = 1; i <= 20; i++) {
        bosh_sm_req r = rq(1000 + i);
        r.has_ack = 1; r.ack = 1000;        /* never acknowledges anything */
        bosh_sm_request_ex(sm, 100 * i, &r, REQ(i), &a);
        bosh_sm_output(sm, big, strlen(big));
        bosh_sm_flush(sm, 100 * i + 1, &a);
        bosh_sm_release(sm, 100 * i + 2, REQ(i), &a);
        bosh_actions_clear(&a);
        CHECK(bosh_sm_buffered_bytes(sm) <= 10000 ||
              bosh_sm_buffered_bytes(sm) <= 2 * 3200);   /* the last `requests` stay */
    }
    CHECK(bosh_sm_buffered_bytes(sm) <= 10000);
    CHECK(bosh_sm_buffer_drops(sm) > 0);
    /* the newest response is still there: a resend of it is answered */
    bosh_sm_req r = rq(1020);
    r.has_ack = 1; r.ack = 1000;
    bosh_sm_request_ex(sm, 5000, &r, REQ(30), &a);
    const bosh_action *x = find(&a, BOSH_ACT_ANSWER, REQ(30));
    CHECK(x && x->condition == NULL && !has_end(&a) && strstr(x->body, "<message>"));
    bosh_actions_clear(&a);
    /* an early one was dropped: asking for it again ends the session */
    r = rq(1002);
    r.has_ack = 1; r.ack = 1000;
    bosh_sm_request_ex(sm, 5100, &r, REQ(31), &a);
    x = find(&a, BOSH_ACT_ANSWER, REQ(31));
    CHECK(x && x->condition && strcmp(x->condition, "item-not-found") == 0);
    CHECK(has_end(&a));
    bosh_actions_clear(&a);
    bosh_sm_free(sm);
}

static void test_ack_report(void) {
    bosh_actions a; bosh_actions_init(&a);
    bosh_sm *sm = new_session(&a);
    bosh_sm_request(sm, 100, 1001, 0, 0, REQ(1), &a);
    bosh_actions_clear(&a);
    bosh_sm_output(sm, msg_body(), strlen(msg_body()));
    bosh_sm_flush(sm, 1000, &a);            /* 1001 answered at t=1000 */
    CHECK(find(&a, BOSH_ACT_ANSWER, REQ(1)) != NULL);
    bosh_actions_clear(&a);
    /* 1002 acks only 1000, soon after: the answer may be in flight */
    bosh_sm_req r = rq(1002);
    r.has_ack = 1; r.ack = 1000;
    bosh_sm_request_ex(sm, 1300, &r, REQ(2), &a);
    CHECK(find(&a, BOSH_ACT_ANSWER, REQ(2)) == NULL);
    CHECK(bosh_sm_held(sm) == 1);
    bosh_actions_clear(&a);
    /* 1003 still acks 1000, 2.5 s after 1001's answer: the held 1002 is
     * answered now with report='1001' time='2500' */
    r = rq(1003); r.has_ack = 1; r.ack = 1000;
    bosh_sm_request_ex(sm, 3500, &r, REQ(3), &a);
    const bosh_action *x = find(&a, BOSH_ACT_ANSWER, REQ(2));
    CHECK_STR(x ? x->body : NULL, "<body xmlns='http://jabber.org/protocol/httpbind'"
              " ack='1003' report='1001' time='2500'/>");
    CHECK(find(&a, BOSH_ACT_ANSWER, REQ(3)) == NULL);   /* 1003 held */
    bosh_actions_clear(&a);
    /* nothing else held: the reporting request itself comes back at once */
    bosh_sm_release(sm, 3600, REQ(3), &a);
    bosh_actions_clear(&a);
    r = rq(1004); r.has_ack = 1; r.ack = 1000;
    bosh_sm_request_ex(sm, 5000, &r, REQ(4), &a);
    x = find(&a, BOSH_ACT_ANSWER, REQ(4));
    CHECK_STR(x ? x->body : NULL, "<body xmlns='http://jabber.org/protocol/httpbind'"
              " report='1001' time='4000'/>");
    CHECK(pos(&a, BOSH_ACT_PROCESS, REQ(4)) < pos(&a, BOSH_ACT_ANSWER, REQ(4)));
    bosh_actions_clear(&a);
    bosh_sm_free(sm);
}

/* ---- keys (§keys) ---- */

static void hexsha1(const char *in, char out[41]) {
    unsigned char md[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)in, strlen(in), md);
    for (int i = 0; i < SHA_DIGEST_LENGTH; i++) sprintf(out + 2 * i, "%02x", md[i]);
}

/* K[1] = sha1(seed) ... K[n]; K[0] unused. */
static void key_chain(const char *seed, char K[][41], int n) {
    hexsha1(seed, K[1]);
    for (int i = 2; i <= n; i++) hexsha1(K[i - 1], K[i]);
}

static void test_keys(void) {
    char K[6][41], N[4][41];
    key_chain("seed-one", K, 5);
    key_chain("seed-two", N, 3);
    bosh_actions a; bosh_actions_init(&a);
    bosh_sm_params p = std_params();
    bosh_sm *sm = bosh_sm_new(&p, 1000, 0);
    bosh_sm_set_key(sm, K[5]);               /* newkey at creation */
    bosh_sm_creation_answer(sm, 0, REQ(0), "s", "d", &a);
    bosh_actions_clear(&a);
    bosh_sm_req r = rq(1001); r.key = K[4]; r.npayloads = 1;
    bosh_sm_request_ex(sm, 10, &r, REQ(1), &a);
    CHECK(find(&a, BOSH_ACT_PROCESS, REQ(1)) != NULL && !has_end(&a));
    bosh_actions_clear(&a);
    /* upper-case hex is the same key */
    char up[41];
    for (int i = 0; i < 41; i++) up[i] = (char)(K[3][i] >= 'a' ? K[3][i] - 32 : K[3][i]);
    /* SHA1 of the upper-case string differs, so compare against K[4] as
     * sent: the client must hash what it sends. Send K[3] as is. */
    (void)up;
    r = rq(1002); r.key = K[3];
    bosh_sm_request_ex(sm, 20, &r, REQ(2), &a);
    CHECK(find(&a, BOSH_ACT_PROCESS, REQ(2)) != NULL && !has_end(&a));
    bosh_actions_clear(&a);
    /* rollover: key = next of the old chain, newkey = head of a new one */
    r = rq(1003); r.key = K[2]; r.newkey = N[3];
    bosh_sm_request_ex(sm, 30, &r, REQ(3), &a);
    CHECK(find(&a, BOSH_ACT_PROCESS, REQ(3)) != NULL && !has_end(&a));
    bosh_actions_clear(&a);
    r = rq(1004); r.key = N[2];
    bosh_sm_request_ex(sm, 40, &r, REQ(4), &a);
    CHECK(find(&a, BOSH_ACT_PROCESS, REQ(4)) != NULL && !has_end(&a));
    bosh_actions_clear(&a);
    /* a key of the old chain now: injected, not processed, session over */
    r = rq(1005); r.key = K[1]; r.npayloads = 1;
    bosh_sm_request_ex(sm, 50, &r, REQ(5), &a);
    CHECK(find(&a, BOSH_ACT_PROCESS, REQ(5)) == NULL);
    const bosh_action *x = find(&a, BOSH_ACT_ANSWER, REQ(5));
    CHECK_STR(x ? x->body : NULL, "<body xmlns='http://jabber.org/protocol/httpbind'"
              " type='terminate' condition='item-not-found'/>");
    CHECK(find(&a, BOSH_ACT_ANSWER, REQ(4)) != NULL);  /* held one answered */
    CHECK(has_end(&a) && bosh_sm_get_state(sm) == BOSH_SM_DONE);
    bosh_actions_clear(&a);
    bosh_sm_free(sm);

    /* missing key when one is expected; upper-case stored key matches */
    sm = bosh_sm_new(&p, 1000, 0);
    for (int i = 0; i < 40; i++) up[i] = (char)(K[5][i] >= 'a' ? K[5][i] - 32 : K[5][i]);
    up[40] = 0;
    bosh_sm_set_key(sm, up);
    bosh_sm_creation_answer(sm, 0, REQ(0), "s", "d", &a);
    bosh_actions_clear(&a);
    r = rq(1001); r.key = K[4];
    bosh_sm_request_ex(sm, 10, &r, REQ(1), &a);
    CHECK(find(&a, BOSH_ACT_PROCESS, REQ(1)) != NULL && !has_end(&a));
    bosh_actions_clear(&a);
    r = rq(1002); r.npayloads = 1;          /* no key */
    bosh_sm_request_ex(sm, 20, &r, REQ(2), &a);
    CHECK(find(&a, BOSH_ACT_PROCESS, REQ(2)) == NULL);
    x = find(&a, BOSH_ACT_ANSWER, REQ(2));
    CHECK(x && x->condition && strcmp(x->condition, "item-not-found") == 0);
    CHECK(has_end(&a));
    bosh_actions_clear(&a);
    bosh_sm_free(sm);

    /* no newkey at creation: keys are not checked (Strophe) */
    sm = new_session(&a);
    bosh_sm_request(sm, 10, 1001, 0, 0, REQ(1), &a);
    CHECK(find(&a, BOSH_ACT_PROCESS, REQ(1)) != NULL && !has_end(&a));
    bosh_actions_clear(&a);
    bosh_sm_free(sm);
}

/* ---- multiple streams (§multi) ---- */

#define HB "<body xmlns='http://jabber.org/protocol/httpbind'"

static bosh_sm *multi_session(bosh_actions *a) {
    bosh_sm_params p = std_params();
    p.acks = 0;
    bosh_sm *sm = bosh_sm_new(&p, 1000, 0);
    bosh_sm_enable_streams(sm, "s1");
    bosh_sm_creation_answer(sm, 0, REQ(0), "n1-00", "localhost", a);
    bosh_actions_clear(a);
    return sm;
}

static void test_streams_advertised(void) {
    bosh_actions a; bosh_actions_init(&a);
    bosh_sm_params p = std_params();
    p.acks = 0;
    bosh_sm *sm = bosh_sm_new(&p, 1000, 0);
    bosh_sm_enable_streams(sm, "s1");
    bosh_sm_output(sm, "<stream:features/>", 18);
    bosh_sm_creation_answer(sm, 0, REQ(0), "n1-00", "localhost", &a);
    CHECK_STR(a.n ? a.a[0].body : NULL,
              HB " xmlns:xmpp='urn:xmpp:xbosh' xmlns:stream='http://etherx.jabber.org/streams'"
              " sid='n1-00' wait='60' requests='2' hold='1' inactivity='60' polling='2'"
              " maxpause='120' ver='1.11' from='localhost' stream='s1' xmpp:version='1.0'"
              " xmpp:restartlogic='true'><stream:features/></body>");
    bosh_actions_clear(&a);
    /* one stream: bodies carry no stream attribute, payloads go to it */
    bosh_sm_req r = rq(1001); r.npayloads = 1;
    bosh_sm_request_ex(sm, 10, &r, REQ(1), &a);
    const bosh_action *pr = find(&a, BOSH_ACT_PROCESS, REQ(1));
    CHECK(pr && pr->stream == 0 && !pr->new_stream);
    bosh_actions_clear(&a);
    bosh_sm_output(sm, "<iq/>", 5);
    bosh_sm_flush(sm, 20, &a);
    CHECK_STR(a.n ? a.a[0].body : NULL, HB "><iq/></body>");
    bosh_actions_clear(&a);
    bosh_sm_free(sm);
}

static void test_stream_add_route_close(void) {
    bosh_actions a; bosh_actions_init(&a);
    bosh_sm *sm = multi_session(&a);
    /* add: empty body with 'to', no 'stream' */
    bosh_sm_req r = rq(1001); r.to = "localhost";
    bosh_sm_request_ex(sm, 10, &r, REQ(1), &a);
    const bosh_action *pr = find(&a, BOSH_ACT_PROCESS, REQ(1));
    CHECK(pr && pr->new_stream == 1);
    CHECK(find(&a, BOSH_ACT_ANSWER, REQ(1)) == NULL);
    bosh_actions_clear(&a);
    int id = bosh_sm_stream_add(sm, "s2");  /* what bosh.c does on PROCESS */
    CHECK(id == 1 && bosh_sm_streams_open(sm) == 2);
    CHECK(bosh_sm_stream_add(sm, "s2") == -1);   /* names are unique */
    bosh_sm_stream_output(sm, id, "<stream:features/>", 18);
    bosh_sm_output(sm, "<message/>", 10);    /* first stream, queued earlier */
    bosh_sm_flush(sm, 11, &a);
    const bosh_action *x = find(&a, BOSH_ACT_ANSWER, REQ(1));
    CHECK_STR(x ? x->body : NULL, HB " xmlns:stream='http://etherx.jabber.org/streams'"
              " stream='s2' from='localhost'><stream:features/></body>");
    bosh_actions_clear(&a);
    /* the next request carries the first stream's message, named */
    bosh_sm_request(sm, 20, 1002, 0, 0, REQ(2), &a);
    bosh_actions_clear(&a);
    bosh_sm_flush(sm, 21, &a);
    x = find(&a, BOSH_ACT_ANSWER, REQ(2));
    CHECK_STR(x ? x->body : NULL, HB " stream='s1'><message/></body>");
    bosh_actions_clear(&a);
    /* a request for s2 goes to s2; one without 'stream' to all */
    r = rq(1003); r.stream = "s2"; r.npayloads = 1;
    bosh_sm_request_ex(sm, 30, &r, REQ(3), &a);
    pr = find(&a, BOSH_ACT_PROCESS, REQ(3));
    CHECK(pr && pr->stream == id);
    bosh_actions_clear(&a);
    r = rq(1004); r.npayloads = 1;
    bosh_sm_request_ex(sm, 40, &r, REQ(4), &a);
    pr = find(&a, BOSH_ACT_PROCESS, REQ(4));
    CHECK(pr && pr->stream == BOSH_SM_ALL_STREAMS);
    bosh_actions_clear(&a);
    /* an unknown stream: item-not-found naming it, nothing processed,
     * the session goes on */
    r = rq(1005); r.stream = "nope"; r.npayloads = 1;
    bosh_sm_request_ex(sm, 50, &r, REQ(5), &a);
    CHECK(find(&a, BOSH_ACT_PROCESS, REQ(5)) == NULL);
    x = find(&a, BOSH_ACT_ANSWER, REQ(5));
    CHECK_STR(x ? x->body : NULL, HB " type='terminate' condition='item-not-found'"
              " stream='nope'/>");
    CHECK(!has_end(&a) && bosh_sm_get_state(sm) == BOSH_SM_ACTIVE);
    bosh_actions_clear(&a);
    /* closing s2 closes only s2; its payloads are processed first */
    bosh_sm_stream_output(sm, id, "<iq/>", 5);
    r = rq(1006); r.stream = "s2"; r.flags = BOSH_REQ_TERMINATE; r.npayloads = 1;
    bosh_sm_request_ex(sm, 60, &r, REQ(6), &a);
    pr = find(&a, BOSH_ACT_PROCESS, REQ(6));
    CHECK(pr && pr->stream == id);
    x = find(&a, BOSH_ACT_ANSWER, REQ(6));
    CHECK_STR(x ? x->body : NULL, HB " type='terminate' stream='s2'><iq/></body>");
    CHECK(pos(&a, BOSH_ACT_PROCESS, REQ(6)) < pos(&a, BOSH_ACT_ANSWER, REQ(6)));
    CHECK(!has_end(&a) && bosh_sm_streams_open(sm) == 1);
    CHECK(!bosh_sm_stream_is_open(sm, id));
    bosh_actions_clear(&a);
    /* late payloads for the just-closed s2 are ignored, not fatal */
    r = rq(1007); r.stream = "s2"; r.npayloads = 1;
    bosh_sm_request_ex(sm, 70, &r, REQ(7), &a);
    CHECK(find(&a, BOSH_ACT_PROCESS, REQ(7)) == NULL && !has_end(&a));
    bosh_actions_clear(&a);
    /* first stream alone again: no stream attribute; closing it (the
     * last) terminates the session */
    r = rq(1008); r.stream = "s1"; r.flags = BOSH_REQ_TERMINATE;
    bosh_sm_request_ex(sm, 80, &r, REQ(8), &a);
    pr = find(&a, BOSH_ACT_PROCESS, REQ(8));
    CHECK(pr && pr->stream == 0);
    CHECK(has_end(&a) && bosh_sm_get_state(sm) == BOSH_SM_DONE);
    x = find(&a, BOSH_ACT_ANSWER, REQ(7));
    CHECK_STR(x ? x->body : NULL, HB " type='terminate'/>");
    bosh_actions_clear(&a);
    bosh_sm_free(sm);
}

static void test_stream_server_close(void) {
    bosh_actions a; bosh_actions_init(&a);
    bosh_sm *sm = multi_session(&a);
    bosh_sm_req r = rq(1001); r.to = "localhost";
    bosh_sm_request_ex(sm, 10, &r, REQ(1), &a);
    bosh_actions_clear(&a);
    int id = bosh_sm_stream_add(sm, "s2");
    /* bosh.c refuses a foreign 'to' this way: host-unknown for s2 only */
    bosh_sm_stream_close(sm, 11, id, "host-unknown", NULL, &a);
    const bosh_action *x = find(&a, BOSH_ACT_ANSWER, REQ(1));
    CHECK_STR(x ? x->body : NULL, HB " type='terminate' condition='host-unknown'"
              " stream='s2'/>");
    CHECK(x && x->condition == NULL && !has_end(&a));
    CHECK(bosh_sm_streams_open(sm) == 1);
    bosh_actions_clear(&a);
    /* a stream error on the last stream ends the session */
    bosh_sm_request(sm, 20, 1002, 0, 0, REQ(2), &a);
    bosh_actions_clear(&a);
    bosh_sm_stream_close(sm, 21, 0, "remote-stream-error", "<stream:error/>", &a);
    x = find(&a, BOSH_ACT_ANSWER, REQ(2));
    CHECK_STR(x ? x->body : NULL, HB " xmlns:stream='http://etherx.jabber.org/streams'"
              " type='terminate' condition='remote-stream-error'><stream:error/></body>");
    CHECK(has_end(&a));
    bosh_actions_clear(&a);
    bosh_sm_free(sm);

    /* a terminate without 'stream' ends every stream and the session */
    sm = multi_session(&a);
    r = rq(1001); r.to = "localhost";
    bosh_sm_request_ex(sm, 10, &r, REQ(1), &a);
    bosh_actions_clear(&a);
    bosh_sm_stream_add(sm, "s2");
    bosh_sm_flush(sm, 11, &a);
    bosh_actions_clear(&a);
    r = rq(1002); r.flags = BOSH_REQ_TERMINATE; r.npayloads = 1;
    bosh_sm_request_ex(sm, 20, &r, REQ(2), &a);
    const bosh_action *pr = find(&a, BOSH_ACT_PROCESS, REQ(2));
    CHECK(pr && pr->stream == BOSH_SM_ALL_STREAMS);
    x = find(&a, BOSH_ACT_ANSWER, REQ(2));
    CHECK_STR(x ? x->body : NULL, HB " type='terminate'/>");
    CHECK(has_end(&a));
    bosh_actions_clear(&a);
    bosh_sm_free(sm);

    /* without streams advertised, 'to' and 'stream' are ignored */
    sm = new_session(&a);
    r = rq(1001); r.to = "localhost"; r.stream = "zz";
    bosh_sm_request_ex(sm, 10, &r, REQ(1), &a);
    pr = find(&a, BOSH_ACT_PROCESS, REQ(1));
    CHECK(pr && pr->stream == 0 && !pr->new_stream && !has_end(&a));
    bosh_actions_clear(&a);
    /* nor is a restart (Strophe sends 'to' with it) an add-stream */
    bosh_sm_free(sm);
    sm = multi_session(&a);
    r = rq(1001); r.to = "localhost"; r.flags = BOSH_REQ_RESTART;
    bosh_sm_request_ex(sm, 10, &r, REQ(1), &a);
    pr = find(&a, BOSH_ACT_PROCESS, REQ(1));
    CHECK(pr && pr->stream == 0 && !pr->new_stream);
    bosh_actions_clear(&a);
    bosh_sm_free(sm);
}

/* ---- overactivity and polling (§overactive, §poll) ---- */

static void test_overactive_violation(void) {
    bosh_actions a; bosh_actions_init(&a);
    bosh_sm_params p = std_params();
    p.hold = 2; p.requests = 3;
    bosh_sm *sm = bosh_sm_new(&p, 1000, 0);
    bosh_sm_creation_answer(sm, 0, REQ(0), "s", "d", &a);
    bosh_actions_clear(&a);
    bosh_sm_req r;
    r = rq(1001); r.npayloads = 1; bosh_sm_request_ex(sm, 10, &r, REQ(1), &a);
    r = rq(1002); r.npayloads = 1; bosh_sm_request_ex(sm, 11, &r, REQ(2), &a);
    r = rq(1004); r.npayloads = 1; bosh_sm_request_ex(sm, 12, &r, REQ(4), &a);
    r = rq(1005); r.npayloads = 1; bosh_sm_request_ex(sm, 13, &r, REQ(5), &a);
    CHECK(!has_end(&a));                    /* 4 unanswered: requests+1 */
    bosh_actions_clear(&a);
    /* a fifth unanswered request with payloads: policy-violation */
    r = rq(1003); r.npayloads = 1;
    bosh_sm_request_ex(sm, 14, &r, REQ(3), &a);
    const bosh_action *x = find(&a, BOSH_ACT_ANSWER, REQ(3));
    CHECK_STR(x ? x->body : NULL, HB " type='terminate' condition='policy-violation'/>");
    CHECK(find(&a, BOSH_ACT_PROCESS, REQ(3)) == NULL);
    CHECK(find(&a, BOSH_ACT_ANSWER, REQ(1)) && find(&a, BOSH_ACT_ANSWER, REQ(2)) &&
          find(&a, BOSH_ACT_ANSWER, REQ(4)) && find(&a, BOSH_ACT_ANSWER, REQ(5)));
    CHECK(has_end(&a));
    bosh_actions_clear(&a);
    bosh_sm_free(sm);

    /* the same with the fifth a terminate (the one extra allowed): fine */
    sm = bosh_sm_new(&p, 1000, 0);
    bosh_sm_creation_answer(sm, 0, REQ(0), "s", "d", &a);
    bosh_actions_clear(&a);
    r = rq(1001); r.npayloads = 1; bosh_sm_request_ex(sm, 10, &r, REQ(1), &a);
    r = rq(1002); r.npayloads = 1; bosh_sm_request_ex(sm, 11, &r, REQ(2), &a);
    r = rq(1004); r.npayloads = 1; bosh_sm_request_ex(sm, 12, &r, REQ(4), &a);
    r = rq(1005); r.npayloads = 1; r.flags = BOSH_REQ_TERMINATE;
    bosh_sm_request_ex(sm, 13, &r, REQ(5), &a);
    r = rq(1003); r.flags = BOSH_REQ_PAUSE; r.pause = 30;
    bosh_sm_request_ex(sm, 14, &r, REQ(3), &a);
    CHECK(!any_condition(&a, "policy-violation"));
    bosh_actions_clear(&a);
    bosh_sm_free(sm);
}

static void test_polling_too_fast(void) {
    bosh_actions a; bosh_actions_init(&a);
    bosh_sm_params p = std_params();
    p.hold = 0; p.requests = 1; p.polling = 5;
    bosh_sm *sm = bosh_sm_new(&p, 1000, 0);
    bosh_sm_creation_answer(sm, 0, REQ(0), "s", "d", &a);
    bosh_actions_clear(&a);
    /* empty polls every second, each answered empty */
    int i;
    for (i = 1; i <= BOSH_SM_POLL_STRIKES - 1; i++) {
        bosh_sm_request(sm, 1000 * (uint64_t)i, 1000 + i, 0, 0, REQ(i), &a);
        bosh_sm_flush(sm, 1000 * (uint64_t)i, &a);
        CHECK(!has_end(&a));
        bosh_actions_clear(&a);
    }
    bosh_sm_request(sm, 1000 * (uint64_t)i, 1000 + i, 0, 0, REQ(i), &a);
    const bosh_action *x = find(&a, BOSH_ACT_ANSWER, REQ(i));
    CHECK_STR(x ? x->body : NULL, HB " type='terminate' condition='policy-violation'/>");
    CHECK(has_end(&a));
    bosh_actions_clear(&a);
    bosh_sm_free(sm);

    /* the same rate, but polls spaced by `polling`: never */
    sm = bosh_sm_new(&p, 1000, 0);
    bosh_sm_creation_answer(sm, 0, REQ(0), "s", "d", &a);
    bosh_actions_clear(&a);
    for (i = 1; i <= 20; i++) {
        bosh_sm_request(sm, 5000 * (uint64_t)i, 1000 + i, 0, 0, REQ(i), &a);
        bosh_sm_flush(sm, 5000 * (uint64_t)i, &a);
        CHECK(!has_end(&a));
        bosh_actions_clear(&a);
    }
    bosh_sm_free(sm);
}

/* What Strophe.js / Converse.js do (bosh-facts.md §5): at most 2 requests
 * in flight, an empty request only when none is in flight, restarts with
 * 'to', keepalive reloads (stale held request, next rid or same rid). */
static void test_strophe_patterns_never_violate(void) {
    bosh_actions a; bosh_actions_init(&a);
    bosh_sm *sm = multi_session(&a);        /* as bosh.c creates them */
    uint64_t t = 0, rid = 1000;
    int n = 1;
    bosh_sm_req r;
    /* SASL + restart + bind, as fast as the client can go */
    for (int k = 0; k < 3; k++) {
        r = rq(++rid); r.npayloads = 1;
        bosh_sm_request_ex(sm, t += 5, &r, REQ(n % 60), &a); n++;
        bosh_sm_output(sm, "<x/>", 4);
        bosh_sm_flush(sm, t += 1, &a);
        CHECK(!any_condition(&a, "policy-violation") && !has_end(&a));
        bosh_actions_clear(&a);
    }
    r = rq(++rid); r.to = "localhost"; r.flags = BOSH_REQ_RESTART;
    bosh_sm_request_ex(sm, t += 5, &r, REQ(n % 60), &a); n++;
    bosh_sm_output(sm, "<stream:features/>", 18);
    bosh_sm_flush(sm, t += 1, &a);
    /* idle: one empty held request; messages arrive on a second one; the
     * held one is answered; Strophe re-polls at once when it has none */
    for (int k = 0; k < 30; k++) {
        r = rq(++rid);
        bosh_sm_request_ex(sm, t += 10, &r, REQ(n % 60), &a); n++;  /* empty */
        r = rq(++rid); r.npayloads = 1;
        bosh_sm_request_ex(sm, t += 10, &r, REQ(n % 60), &a); n++;  /* message */
        bosh_sm_output(sm, "<message/>", 10);
        bosh_sm_flush(sm, t += 1, &a);
        CHECK(!any_condition(&a, "policy-violation") && !has_end(&a));
        bosh_actions_clear(&a);
    }
    /* keepalive reloads in quick succession, alternating next rid and the
     * held rid, each page starting with an empty request */
    for (int k = 0; k < 20; k++) {
        r = rq(k % 2 ? rid : ++rid);
        bosh_sm_request_ex(sm, t += 300, &r, REQ(n % 60), &a); n++;
        CHECK(!any_condition(&a, "policy-violation") && !has_end(&a));
        bosh_actions_clear(&a);
    }
    /* and a page that also sends a message at once on a second request */
    for (int k = 0; k < 10; k++) {
        r = rq(++rid);
        bosh_sm_request_ex(sm, t += 200, &r, REQ(n % 60), &a); n++;
        r = rq(++rid); r.npayloads = 1;
        bosh_sm_request_ex(sm, t += 5, &r, REQ(n % 60), &a); n++;
        CHECK(!any_condition(&a, "policy-violation") && !has_end(&a));
        bosh_actions_clear(&a);
    }
    /* two requests arriving out of order after a reload */
    rid += 2;
    r = rq(rid); r.npayloads = 1;
    bosh_sm_request_ex(sm, t += 5, &r, REQ(n % 60), &a); n++;
    r = rq(rid - 1);
    bosh_sm_request_ex(sm, t += 1, &r, REQ(n % 60), &a); n++;
    CHECK(!any_condition(&a, "policy-violation") && !has_end(&a));
    CHECK(bosh_sm_last_rid(sm) == rid);
    bosh_actions_clear(&a);
    bosh_sm_free(sm);
}

static void test_repeated_buffered_rid(void) {
    bosh_actions a; bosh_actions_init(&a);
    bosh_sm *sm = new_session(&a);
    bosh_sm_request(sm, 100, 1001, 0, 0, REQ(1), &a);
    bosh_sm_request(sm, 101, 1003, 0, 0, REQ(3), &a);  /* waits for 1002 */
    bosh_actions_clear(&a);
    bosh_sm_req r = rq(1003); r.npayloads = 1;
    bosh_sm_request_ex(sm, 102, &r, REQ(4), &a);
    const bosh_action *x = find(&a, BOSH_ACT_ANSWER, REQ(3));
    CHECK_STR(x ? x->body : NULL, HB " type='error' ack='1001'/>");
    CHECK(a.n == 1);
    bosh_actions_clear(&a);
    bosh_sm_request(sm, 103, 1002, 0, 0, REQ(2), &a);
    CHECK(find(&a, BOSH_ACT_PROCESS, REQ(4)) != NULL);  /* the new one */
    CHECK(find(&a, BOSH_ACT_PROCESS, REQ(3)) == NULL);
    bosh_actions_clear(&a);
    bosh_sm_free(sm);
}

/* §inactive / §overactive: what is not advertised is not limited. */
static void test_unlimited_when_not_advertised(void) {
    bosh_actions a; bosh_actions_init(&a);
    bosh_sm_params p = std_params();
    p.inactivity = 0; p.polling = 0; p.hold = 0; p.requests = 1;
    bosh_sm *sm = bosh_sm_new(&p, 1000, 0);
    bosh_sm_creation_answer(sm, 0, REQ(0), "s", "d", &a);
    bosh_actions_clear(&a);
    CHECK(bosh_sm_deadline(sm) == 0);       /* no inactivity timer */
    bosh_sm_tick(sm, 10000000, &a);
    CHECK(a.n == 0 && bosh_sm_get_state(sm) == BOSH_SM_ACTIVE);
    /* polling=0: empty polls 1 ms apart, 20 of them, all fine */
    for (int i = 1; i <= 20; i++) {
        bosh_sm_request(sm, 10000000 + (uint64_t)i, 1000 + i, 0, 0, REQ(i), &a);
        bosh_sm_flush(sm, 10000000 + (uint64_t)i, &a);
        CHECK(find(&a, BOSH_ACT_ANSWER, REQ(i)) != NULL && !has_end(&a));
        bosh_actions_clear(&a);
    }
    bosh_sm_free(sm);
}

/* The machine's arrays start small and grow on demand (issue 7): the
 * limits must still hold exactly at their maximum. */
static int H[128];
static void test_limits_when_full(void) {
    bosh_actions a; bosh_actions_init(&a);
    /* hold=8: 8 requests queued above a gap, then the gap fills */
    bosh_sm_params p = std_params();
    p.acks = 0; p.hold = BOSH_SM_MAX_HOLD; p.requests = BOSH_SM_MAX_HOLD + 1;
    bosh_sm *sm = bosh_sm_new(&p, 1000, 0);
    bosh_sm_creation_answer(sm, 0, &H[0], "s", "d", &a);
    bosh_actions_clear(&a);
    for (int i = 2; i <= 9; i++) bosh_sm_request(sm, 10, 1000 + i, 0, 0, &H[i], &a);
    CHECK(a.n == 0 && bosh_sm_held(sm) == 0);
    bosh_sm_request(sm, 20, 1001, 0, 0, &H[1], &a);
    CHECK(bosh_sm_held(sm) == BOSH_SM_MAX_HOLD);
    CHECK(a.n == 9 + 1);          /* 9 PROCESS, the oldest answered */
    CHECK(find(&a, BOSH_ACT_ANSWER, &H[1]) != NULL);
    bosh_actions_clear(&a);
    bosh_sm_close(sm, 30, "system-shutdown", NULL, &a);
    for (int i = 2; i <= 9; i++) CHECK(find(&a, BOSH_ACT_ANSWER, &H[i]) != NULL);
    CHECK(has_end(&a) && bosh_sm_held(sm) == 0);
    bosh_actions_clear(&a);
    bosh_sm_free(sm);

    /* acks: at most BOSH_SM_MAX_BUFFERED unacked responses are kept */
    sm = new_session(&a);                   /* responses so far: 1000 */
    for (int i = 1; i <= 70; i++) {
        bosh_sm_req r = rq(1000 + (uint64_t)i);
        r.has_ack = 1; r.ack = 1000;
        bosh_sm_request_ex(sm, 10 * (uint64_t)i, &r, &H[i], &a);
        CHECK(!has_end(&a));
        bosh_actions_clear(&a);
    }
    /* 1000..1069 answered, 1070 held: the last 64 are 1006..1069 */
    bosh_sm_request(sm, 800, 1006, 0, 0, &H[100], &a);
    const bosh_action *x = find(&a, BOSH_ACT_ANSWER, &H[100]);
    CHECK(x && x->condition == NULL && !has_end(&a));
    bosh_actions_clear(&a);
    bosh_sm_request(sm, 810, 1005, 0, 0, &H[101], &a);
    x = find(&a, BOSH_ACT_ANSWER, &H[101]);
    CHECK(x && x->condition && strcmp(x->condition, "item-not-found") == 0);
    CHECK(find(&a, BOSH_ACT_ANSWER, &H[70]) != NULL && has_end(&a));
    bosh_actions_clear(&a);
    bosh_sm_free(sm);

    /* streams: BOSH_SM_MAX_STREAMS open, then a closed one is reused */
    sm = multi_session(&a);
    char name[16];
    for (int i = 1; i < BOSH_SM_MAX_STREAMS; i++) {
        snprintf(name, sizeof name, "s%d", i + 1);
        CHECK(bosh_sm_stream_add(sm, name) == i);
    }
    CHECK(bosh_sm_stream_add(sm, "extra") == -1);
    CHECK(bosh_sm_streams_open(sm) == BOSH_SM_MAX_STREAMS);
    bosh_sm_stream_output(sm, BOSH_SM_MAX_STREAMS - 1, "<iq/>", 5);
    CHECK(bosh_sm_stream_pending(sm, BOSH_SM_MAX_STREAMS - 1) == 5);
    CHECK(bosh_sm_pending(sm) == 5);
    bosh_sm_stream_close(sm, 10, 3, "host-unknown", NULL, &a);
    CHECK(a.n == 0);
    bosh_sm_request(sm, 20, 1001, 0, 0, &H[1], &a);
    bosh_actions_clear(&a);
    bosh_sm_flush(sm, 21, &a);      /* the closing stream goes first (rr) */
    x = find(&a, BOSH_ACT_ANSWER, &H[1]);
    CHECK_STR(x ? x->body : NULL, HB " type='terminate' condition='host-unknown'"
              " stream='s4'/>");
    bosh_actions_clear(&a);
    CHECK(bosh_sm_stream_add(sm, "again") == 3);
    bosh_sm_close(sm, 30, NULL, NULL, &a);
    bosh_actions_clear(&a);
    bosh_sm_free(sm);
}

int main(void) {
    test_negotiate();
    test_creation();
    test_in_order_delivery();
    test_window_overflow();
    test_retransmission();
    test_repeated_held_rid();
    test_hold_one_second_request();
    test_wait_expiry();
    test_inactivity();
    test_terminate();
    test_page_reload();
    test_pause();
    test_release();
    test_server_close();
    test_polling_hold0();
    test_acks_negotiated();
    test_ack_keeps_unacked_responses();
    test_ack_buffer_byte_cap();
    test_ack_report();
    test_keys();
    test_streams_advertised();
    test_stream_add_route_close();
    test_stream_server_close();
    test_overactive_violation();
    test_polling_too_fast();
    test_strophe_patterns_never_violate();
    test_repeated_buffered_rid();
    test_unlimited_when_not_advertised();
    test_limits_when_full();
    return unit_done("bosh_sm");
}
