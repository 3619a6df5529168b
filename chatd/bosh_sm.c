/*
 * bosh_sm: the pure BOSH session state machine. See bosh_sm.h for the model.
 *
 * Leniency, on purpose (Strophe.js / Converse.js page reloads, retries):
 *  - a request beyond 'hold' answers the oldest held one; never
 *    policy-violation for overactivity or polling frequency;
 *  - a repeated rid that is still held takes the held slot over (the old
 *    HTTP request gets an empty body, not buffered);
 *  - a rid gap that does not fill within BOSH_SM_GAP_MS is skipped.
 * Strict where the XEP says MUST: rid beyond the window, or a repeated rid
 * whose response is no longer buffered, ends the session with item-not-found.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "bosh_sm.h"
#include "../common/strbuf.h"

#define HTTPBIND_NS "http://jabber.org/protocol/httpbind"
#define STREAMS_NS  "http://etherx.jabber.org/streams"
#define XBOSH_NS_   "urn:xmpp:xbosh"
#define SLOTS       (BOSH_SM_MAX_HOLD + 2)

typedef struct sm_slot {
    uint64_t rid;
    void    *req;
    uint64_t t;         /* held: wait deadline; buffered: arrival time */
    unsigned flags, pause;
} sm_slot;

typedef struct sm_cached {
    uint64_t rid;
    char    *body;
    size_t   len;
} sm_cached;

struct bosh_sm {
    bosh_sm_params p;
    bosh_sm_state  state;
    uint64_t       last_rid;     /* highest rid processed, all lower ones too */
    sm_slot        held[SLOTS];  /* processed, unanswered; rid order */
    size_t         nheld;
    sm_slot        buffered[SLOTS]; /* received above a gap; rid order */
    size_t         nbuf;
    sm_cached      cache[SLOTS]; /* last p.requests responses, a ring */
    size_t         cache_next;
    strbuf         out;          /* output waiting for a request */
    uint64_t       idle_since;   /* when the last held request was answered */
    uint64_t       pause_ms;     /* non-zero while paused */
    char          *close_body;   /* CLOSING: the terminate body to deliver */
    size_t         close_len;
    const char    *close_cond;
};

/* Conditions are interned so actions can point at them for ever. */
static const char *const conditions[] = {
    "bad-request", "host-gone", "host-unknown", "improper-addressing",
    "internal-server-error", "item-not-found", "other-request",
    "policy-violation", "remote-connection-failed", "remote-stream-error",
    "see-other-uri", "system-shutdown", "undefined-condition", NULL
};

static const char *intern_condition(const char *c) {
    if (!c) return NULL;
    for (size_t i = 0; conditions[i]; i++)
        if (strcmp(conditions[i], c) == 0) return conditions[i];
    return "undefined-condition";
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) { fputs("bosh_sm: out of memory\n", stderr); abort(); }
    return p;
}

static char *memdup0(const char *s, size_t len) {
    char *d = xmalloc(len + 1);
    if (len) memcpy(d, s, len);
    d[len] = '\0';
    return d;
}

/* ---- negotiation ---- */

void bosh_sm_negotiate(const bosh_sm_limits *lim, const bosh_sm_client *c,
                       bosh_sm_params *out) {
    memset(out, 0, sizeof *out);
    out->wait = lim->max_wait;
    if (c->has_wait && c->wait < out->wait) out->wait = c->wait;
    unsigned max_hold = lim->max_hold < BOSH_SM_MAX_HOLD ? lim->max_hold
                                                          : BOSH_SM_MAX_HOLD;
    out->hold = c->has_hold ? c->hold : 1;
    if (out->hold > max_hold) out->hold = max_hold;
    out->requests = out->hold + 1;
    out->inactivity = lim->inactivity;
    out->polling = lim->polling;
    out->maxpause = lim->maxpause;
    out->ver_major = 1; out->ver_minor = 11;
    if (c->has_ver && (c->ver_major < 1 ||
                       (c->ver_major == 1 && c->ver_minor < 11))) {
        out->ver_major = c->ver_major;
        out->ver_minor = c->ver_minor;
    }
    out->acks = 1;
}

/* ---- actions ---- */

void bosh_actions_init(bosh_actions *acts) { acts->n = 0; }

void bosh_actions_clear(bosh_actions *acts) {
    for (size_t i = 0; i < acts->n; i++) free(acts->a[i].body);
    acts->n = 0;
}

static bosh_action *push_action(bosh_actions *acts, bosh_act_type type,
                                void *req, uint64_t rid) {
    /* The machine bounds the list (held + buffered + processed); running
     * over means a bug, and continuing would lose an answer. */
    if (acts->n >= BOSH_SM_MAX_ACTIONS) {
        fputs("bosh_sm: action list overflow\n", stderr);
        abort();
    }
    bosh_action *a = &acts->a[acts->n++];
    memset(a, 0, sizeof *a);
    a->type = type; a->req = req; a->rid = rid;
    return a;
}

/* Takes ownership of body. */
static void emit_answer(bosh_actions *acts, void *req, uint64_t rid,
                        int status, const char *cond, char *body, size_t len) {
    bosh_action *a = push_action(acts, BOSH_ACT_ANSWER, req, rid);
    a->status = status; a->condition = cond; a->body = body; a->len = len;
}

static void emit_process(bosh_actions *acts, const sm_slot *s) {
    push_action(acts, BOSH_ACT_PROCESS, s->req, s->rid);
}

static void emit_end(bosh_actions *acts) {
    push_action(acts, BOSH_ACT_END, NULL, 0);
}

/* ---- bodies ---- */

/* <body xmlns=httpbind [xmlns:stream] [type] [condition] [ack]>payload</body>
 * answered_rid: the rid this body answers (0: none, no ack). */
static char *build_body(const bosh_sm *sm, const char *type, const char *cond,
                        uint64_t answered_rid, const char *p1, size_t l1,
                        const char *p2, size_t l2, size_t *len) {
    strbuf sb = STRBUF_INIT;
    sb_puts(&sb, "<body xmlns='" HTTPBIND_NS "'");
    if ((l1 && memmem(p1, l1, "<stream:", 8)) ||
        (l2 && memmem(p2, l2, "<stream:", 8)))
        sb_puts(&sb, " xmlns:stream='" STREAMS_NS "'");
    if (type) sb_printf(&sb, " type='%s'", type);
    if (cond) sb_printf(&sb, " condition='%s'", cond);
    if (sm->p.acks && answered_rid && sm->last_rid != answered_rid)
        sb_printf(&sb, " ack='%llu'", (unsigned long long)sm->last_rid);
    if (l1 + l2 == 0) {
        sb_puts(&sb, "/>");
    } else {
        sb_putc(&sb, '>');
        if (l1) sb_append(&sb, p1, l1);
        if (l2) sb_append(&sb, p2, l2);
        sb_puts(&sb, "</body>");
    }
    return sb_detach(&sb, len);
}

static char *empty_body(const bosh_sm *sm, uint64_t rid, size_t *len) {
    return build_body(sm, NULL, NULL, rid, NULL, 0, NULL, 0, len);
}

static char *terminate_body(const bosh_sm *sm, const char *cond, size_t *len) {
    return build_body(sm, "terminate", cond, 0, NULL, 0, NULL, 0, len);
}

/* ---- response buffer ---- */

static void record(bosh_sm *sm, uint64_t rid, const char *body, size_t len) {
    sm_cached *c = &sm->cache[sm->cache_next];
    free(c->body);
    c->rid = rid;
    c->body = memdup0(body, len);
    c->len = len;
    sm->cache_next = (sm->cache_next + 1) % sm->p.requests;
}

static const sm_cached *cached(const bosh_sm *sm, uint64_t rid) {
    for (size_t i = 0; i < sm->p.requests; i++)
        if (sm->cache[i].body && sm->cache[i].rid == rid) return &sm->cache[i];
    return NULL;
}

/* ---- slots ---- */

static sm_slot slot_remove(sm_slot *arr, size_t *n, size_t i) {
    sm_slot s = arr[i];
    memmove(&arr[i], &arr[i + 1], (*n - i - 1) * sizeof *arr);
    (*n)--;
    return s;
}

static void slot_insert_sorted(sm_slot *arr, size_t *n, sm_slot s) {
    size_t i = *n;
    while (i > 0 && arr[i - 1].rid > s.rid) { arr[i] = arr[i - 1]; i--; }
    arr[i] = s;
    (*n)++;
}

static long slot_find_rid(const sm_slot *arr, size_t n, uint64_t rid) {
    for (size_t i = 0; i < n; i++) if (arr[i].rid == rid) return (long)i;
    return -1;
}

static long slot_find_req(const sm_slot *arr, size_t n, const void *req) {
    for (size_t i = 0; i < n; i++) if (arr[i].req == req) return (long)i;
    return -1;
}

/* Answer held[i], with the queued output if with_output; buffer the body
 * under its rid before handing it out. */
static void answer_held(bosh_sm *sm, uint64_t now, size_t i, int with_output,
                        bosh_actions *acts) {
    sm_slot s = slot_remove(sm->held, &sm->nheld, i);
    size_t len;
    char *body;
    if (with_output && sm->out.len) {
        body = build_body(sm, NULL, NULL, s.rid, sm->out.data, sm->out.len,
                          NULL, 0, &len);
        sb_reset(&sm->out);
    } else {
        body = empty_body(sm, s.rid, &len);
    }
    record(sm, s.rid, body, len);
    emit_answer(acts, s.req, s.rid, 200, NULL, body, len);
    if (sm->nheld == 0) sm->idle_since = now;
}

/* End the session now. The first outstanding request gets the terminate
 * body with the queued output and extra; other held requests get empty
 * bodies; unprocessed (buffered) ones and 'offender' get a bare terminate
 * so that their clients stop. */
static void terminate_all(bosh_sm *sm, const char *cond, const char *extra,
                          void *offender, uint64_t offender_rid,
                          bosh_actions *acts) {
    size_t elen = extra ? strlen(extra) : 0, len;
    int first = 1;
    cond = intern_condition(cond);
    while (sm->nheld) {
        sm_slot s = slot_remove(sm->held, &sm->nheld, 0);
        char *body;
        if (first)
            body = build_body(sm, "terminate", cond, 0, sm->out.data,
                              sm->out.len, extra, elen, &len);
        else
            body = empty_body(sm, 0, &len);
        emit_answer(acts, s.req, s.rid, 200, first ? cond : NULL, body, len);
        first = 0;
    }
    while (sm->nbuf) {
        sm_slot s = slot_remove(sm->buffered, &sm->nbuf, 0);
        char *body = first ? build_body(sm, "terminate", cond, 0, sm->out.data,
                                        sm->out.len, extra, elen, &len)
                           : terminate_body(sm, cond, &len);
        emit_answer(acts, s.req, s.rid, 200, cond, body, len);
        first = 0;
    }
    if (offender) {
        char *body = first ? build_body(sm, "terminate", cond, 0, sm->out.data,
                                        sm->out.len, extra, elen, &len)
                           : terminate_body(sm, cond, &len);
        emit_answer(acts, offender, offender_rid, 200, cond, body, len);
    }
    sb_reset(&sm->out);
    sm->state = BOSH_SM_DONE;
    emit_end(acts);
}

/* ---- lifecycle ---- */

bosh_sm *bosh_sm_new(const bosh_sm_params *p, uint64_t rid, uint64_t now) {
    bosh_sm *sm = xmalloc(sizeof *sm);
    memset(sm, 0, sizeof *sm);
    sm->p = *p;
    if (sm->p.hold > BOSH_SM_MAX_HOLD) sm->p.hold = BOSH_SM_MAX_HOLD;
    if (sm->p.requests < sm->p.hold + 1) sm->p.requests = sm->p.hold + 1;
    if (sm->p.requests > SLOTS) sm->p.requests = SLOTS;
    sm->state = BOSH_SM_ACTIVE;
    sm->last_rid = rid;
    sm->idle_since = now;
    sb_init(&sm->out);
    return sm;
}

void bosh_sm_free(bosh_sm *sm) {
    if (!sm) return;
    for (size_t i = 0; i < SLOTS; i++) free(sm->cache[i].body);
    sb_free(&sm->out);
    free(sm->close_body);
    free(sm);
}

const bosh_sm_params *bosh_sm_params_of(const bosh_sm *sm) { return &sm->p; }
bosh_sm_state bosh_sm_get_state(const bosh_sm *sm) { return sm->state; }
uint64_t bosh_sm_last_rid(const bosh_sm *sm) { return sm->last_rid; }
size_t   bosh_sm_held(const bosh_sm *sm) { return sm->nheld; }
size_t   bosh_sm_pending(const bosh_sm *sm) { return sm->out.len; }

/* CLOSING: the terminate body goes to whichever request comes first. */
static void deliver_close(bosh_sm *sm, void *req, uint64_t rid,
                          bosh_actions *acts) {
    emit_answer(acts, req, rid, 200, sm->close_cond,
                memdup0(sm->close_body, sm->close_len), sm->close_len);
    sm->state = BOSH_SM_DONE;
    emit_end(acts);
}

void bosh_sm_creation_answer(bosh_sm *sm, uint64_t now, void *req,
                             const char *sid, const char *from,
                             bosh_actions *acts) {
    if (sm->state == BOSH_SM_CLOSING) { deliver_close(sm, req, sm->last_rid, acts); return; }
    if (sm->state == BOSH_SM_DONE) {
        size_t len;
        char *b = terminate_body(sm, "internal-server-error", &len);
        emit_answer(acts, req, sm->last_rid, 200, "internal-server-error", b, len);
        return;
    }
    const bosh_sm_params *p = &sm->p;
    strbuf sb = STRBUF_INIT;
    sb_puts(&sb, "<body xmlns='" HTTPBIND_NS "' xmlns:xmpp='" XBOSH_NS_
                 "' xmlns:stream='" STREAMS_NS "' sid='");
    sb_put_xml_escaped(&sb, sid, strlen(sid));
    sb_printf(&sb, "' wait='%u' requests='%u' hold='%u' inactivity='%u'"
                   " polling='%u'", p->wait, p->requests, p->hold,
              p->inactivity, p->polling);
    if (p->maxpause) sb_printf(&sb, " maxpause='%u'", p->maxpause);
    sb_printf(&sb, " ver='%u.%u' from='", p->ver_major, p->ver_minor);
    sb_put_xml_escaped(&sb, from, strlen(from));
    sb_putc(&sb, '\'');
    if (p->acks) sb_printf(&sb, " ack='%llu'", (unsigned long long)sm->last_rid);
    sb_puts(&sb, " xmpp:version='1.0' xmpp:restartlogic='true'");
    if (sm->out.len) {
        sb_putc(&sb, '>');
        sb_append(&sb, sm->out.data, sm->out.len);
        sb_puts(&sb, "</body>");
        sb_reset(&sm->out);
    } else {
        sb_puts(&sb, "/>");
    }
    size_t len;
    char *body = sb_detach(&sb, &len);
    record(sm, sm->last_rid, body, len);
    emit_answer(acts, req, sm->last_rid, 200, NULL, body, len);
    sm->idle_since = now;
}

/* ---- requests ---- */

/* A request whose turn has come (rid == last_rid, all lower processed). */
static void accept_request(bosh_sm *sm, uint64_t now, sm_slot b,
                           bosh_actions *acts) {
    if (b.flags & BOSH_REQ_TERMINATE) {
        /* Payloads (e.g. unavailable presence) first, then the ending. */
        emit_process(acts, &b);
        b.t = now;
        sm->held[sm->nheld++] = b;
        terminate_all(sm, NULL, NULL, NULL, 0, acts);
        return;
    }
    if ((b.flags & BOSH_REQ_PAUSE) && sm->p.maxpause && b.pause) {
        unsigned secs = b.pause < sm->p.maxpause ? b.pause : sm->p.maxpause;
        emit_process(acts, &b);
        /* Pause answers carry no payloads: the output waits. */
        while (sm->nheld) answer_held(sm, now, 0, 0, acts);
        size_t len;
        char *body = empty_body(sm, b.rid, &len);
        record(sm, b.rid, body, len);
        emit_answer(acts, b.req, b.rid, 200, NULL, body, len);
        sm->idle_since = now;
        sm->pause_ms = (uint64_t)secs * 1000;
        return;
    }
    /* hold reached: the oldest goes back now (XEP-0124 §technique). */
    size_t cap = sm->p.hold ? sm->p.hold : 1;
    while (sm->nheld >= cap) answer_held(sm, now, 0, 1, acts);
    emit_process(acts, &b);
    b.t = now + (uint64_t)sm->p.wait * 1000;
    sm->held[sm->nheld++] = b;
}

/* Process every buffered request whose predecessors are all processed. */
static void release_in_order(bosh_sm *sm, uint64_t now, bosh_actions *acts) {
    while (sm->state == BOSH_SM_ACTIVE && sm->nbuf &&
           sm->buffered[0].rid == sm->last_rid + 1) {
        sm_slot b = slot_remove(sm->buffered, &sm->nbuf, 0);
        sm->last_rid = b.rid;
        accept_request(sm, now, b, acts);
    }
}

void bosh_sm_request(bosh_sm *sm, uint64_t now, uint64_t rid, unsigned flags,
                     unsigned pause, void *req, bosh_actions *acts) {
    size_t len;
    if (sm->state == BOSH_SM_DONE) {
        char *b = terminate_body(sm, "item-not-found", &len);
        emit_answer(acts, req, rid, 200, intern_condition("item-not-found"), b, len);
        return;
    }
    if (sm->state == BOSH_SM_CLOSING) { deliver_close(sm, req, rid, acts); return; }
    sm->pause_ms = 0;   /* any request ends a pause */

    if (rid <= sm->last_rid) {
        long i = slot_find_rid(sm->held, sm->nheld, rid);
        if (i >= 0) {
            /* Same rid again while held: a retry or a reloaded page. The
             * new request takes over; the old one (probably gone) gets an
             * empty body that is not buffered. */
            sm_slot *s = &sm->held[i];
            char *eb = empty_body(sm, 0, &len);
            emit_answer(acts, s->req, rid, 200, NULL, eb, len);
            s->req = req;
            s->t = now + (uint64_t)sm->p.wait * 1000;
            return;
        }
        const sm_cached *c = cached(sm, rid);
        if (c) {
            emit_answer(acts, req, rid, 200, NULL, memdup0(c->body, c->len), c->len);
            if (sm->nheld == 0) sm->idle_since = now;
            return;
        }
        terminate_all(sm, "item-not-found", NULL, req, rid, acts);
        return;
    }
    if (rid > sm->last_rid + sm->p.requests) {
        terminate_all(sm, "item-not-found", NULL, req, rid, acts);
        return;
    }
    long i = slot_find_rid(sm->buffered, sm->nbuf, rid);
    if (i >= 0) {
        sm_slot *s = &sm->buffered[i];
        char *eb = empty_body(sm, 0, &len);
        emit_answer(acts, s->req, rid, 200, NULL, eb, len);
        s->req = req; s->flags = flags; s->pause = pause;
        return;
    }
    sm_slot b = { rid, req, now, flags, pause };
    slot_insert_sorted(sm->buffered, &sm->nbuf, b);
    release_in_order(sm, now, acts);
}

void bosh_sm_output(bosh_sm *sm, const char *xml, size_t len) {
    if (sm->state != BOSH_SM_ACTIVE) return;
    sb_append(&sm->out, xml, len);
}

void bosh_sm_flush(bosh_sm *sm, uint64_t now, bosh_actions *acts) {
    if (sm->state != BOSH_SM_ACTIVE) return;
    if (sm->nheld && sm->out.len) answer_held(sm, now, 0, 1, acts);
    while (sm->nheld > sm->p.hold) answer_held(sm, now, 0, 1, acts);
}

/* ---- time ---- */

static uint64_t inactivity_ms(const bosh_sm *sm) {
    if (sm->pause_ms) return sm->pause_ms;
    return (uint64_t)sm->p.inactivity * 1000;
}

static uint64_t closing_ms(const bosh_sm *sm) {
    return (uint64_t)(sm->p.inactivity ? sm->p.inactivity : 60) * 1000;
}

uint64_t bosh_sm_deadline(const bosh_sm *sm) {
    if (sm->state == BOSH_SM_CLOSING) return sm->idle_since + closing_ms(sm);
    if (sm->state != BOSH_SM_ACTIVE) return 0;
    uint64_t dl = 0;
#define CONSIDER(t) do { uint64_t t_ = (t); if (!dl || t_ < dl) dl = t_; } while (0)
    for (size_t i = 0; i < sm->nheld; i++) CONSIDER(sm->held[i].t);
    if (sm->nbuf) CONSIDER(sm->buffered[0].t + BOSH_SM_GAP_MS);
    if (sm->nheld == 0 && inactivity_ms(sm))
        CONSIDER(sm->idle_since + inactivity_ms(sm));
#undef CONSIDER
    return dl;
}

void bosh_sm_tick(bosh_sm *sm, uint64_t now, bosh_actions *acts) {
    if (sm->state == BOSH_SM_CLOSING) {
        if (now >= sm->idle_since + closing_ms(sm)) {
            sm->state = BOSH_SM_DONE;
            emit_end(acts);
        }
        return;
    }
    if (sm->state != BOSH_SM_ACTIVE) return;

    /* wait expired: answer (empty unless output is queued). */
    for (size_t i = 0; i < sm->nheld;) {
        if (sm->held[i].t <= now) answer_held(sm, now, i, i == 0, acts);
        else i++;
    }
    /* A gap that did not fill: give up the missing rids. They are buffered
     * as empty answers, so a late arrival is answered, not fatal. */
    if (sm->nbuf && sm->buffered[0].t + BOSH_SM_GAP_MS <= now) {
        size_t len;
        for (uint64_t r = sm->last_rid + 1; r < sm->buffered[0].rid; r++) {
            char *b = empty_body(sm, 0, &len);
            record(sm, r, b, len);
            free(b);
        }
        sm->last_rid = sm->buffered[0].rid - 1;
        release_in_order(sm, now, acts);
    }
    /* Inactivity: end silently (XEP-0124 §inactive). */
    if (sm->state == BOSH_SM_ACTIVE && sm->nheld == 0 && inactivity_ms(sm) &&
        now >= sm->idle_since + inactivity_ms(sm)) {
        if (sm->nbuf) {
            terminate_all(sm, "item-not-found", NULL, NULL, 0, acts);
        } else {
            sb_reset(&sm->out);
            sm->state = BOSH_SM_DONE;
            emit_end(acts);
        }
    }
}

/* ---- release and close ---- */

int bosh_sm_release(bosh_sm *sm, uint64_t now, void *req, bosh_actions *acts) {
    long i = slot_find_req(sm->held, sm->nheld, req);
    if (i >= 0) {
        answer_held(sm, now, (size_t)i, i == 0, acts);
        return 0;
    }
    i = slot_find_req(sm->buffered, sm->nbuf, req);
    if (i >= 0) {
        sm_slot s = slot_remove(sm->buffered, &sm->nbuf, (size_t)i);
        emit_answer(acts, s.req, s.rid, 503, NULL, memdup0("", 0), 0);
        return 0;
    }
    return -1;
}

void bosh_sm_close(bosh_sm *sm, uint64_t now, const char *condition,
                   const char *extra, bosh_actions *acts) {
    (void)now;
    if (sm->state != BOSH_SM_ACTIVE) return;
    if (sm->nheld || sm->nbuf) {
        terminate_all(sm, condition, extra, NULL, 0, acts);
        return;
    }
    size_t elen = extra ? strlen(extra) : 0;
    sm->close_cond = intern_condition(condition);
    sm->close_body = build_body(sm, "terminate", sm->close_cond, 0,
                                sm->out.data, sm->out.len, extra, elen,
                                &sm->close_len);
    sb_reset(&sm->out);
    sm->state = BOSH_SM_CLOSING;
}
