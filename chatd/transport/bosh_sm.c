/*
 * bosh_sm: the pure BOSH session state machine. See bosh_sm.h for the model.
 *
 * Leniency, on purpose (Strophe.js / Converse.js page reloads, retries):
 *  - a request beyond 'hold' answers the oldest held one;
 *  - policy-violation (§overactive, §poll) only for a client that clearly
 *    breaks the rules: more than requests+1 unanswered new requests with
 *    payloads, or, in a polling session, BOSH_SM_POLL_STRIKES fast empty
 *    polls in a row (see overactive()). Strophe
 *    keeps at most 2 requests in flight and sends an empty one only when
 *    none is in flight; a keepalive reload adds one stale held request.
 *    With hold=1/requests=2 the window (rid <= last+requests) already caps
 *    unanswered requests at 3 = requests+1, so the first rule cannot trip;
 *  - a repeated rid that is still held takes the held slot over;
 *  - a rid gap that does not fill within BOSH_SM_GAP_MS is skipped.
 * Strict where the XEP says MUST: rid beyond the window, a repeated rid
 * whose response is no longer buffered, or a broken key sequence ends the
 * session with item-not-found.
 *
 * SHA-1 for §keys comes from OpenSSL: pure computation, no I/O.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <openssl/sha.h>
#include "bosh_sm.h"
#include "../../common/strbuf.h"

#define HTTPBIND_NS "http://jabber.org/protocol/httpbind"
#define STREAMS_NS  "http://etherx.jabber.org/streams"
#define XBOSH_NS_   "urn:xmpp:xbosh"
#define SLOTS       (BOSH_SM_MAX_HOLD + 2)

/* Where a request's payloads go, decided when its turn comes. */
#define TARGET_IGNORE  (-2)     /* stream just closed: payloads dropped */
#define TARGET_UNKNOWN (-3)     /* no such stream: item-not-found */
#define TARGET_NEW     (-4)     /* add a stream */

typedef struct sm_slot {
    uint64_t rid;
    void    *req;
    uint64_t t;         /* held: wait deadline; buffered: arrival time */
    unsigned flags, pause;
    size_t   npayloads;
    int      pref;      /* held: stream this answer should carry, or -1 */
    int      add;       /* add-stream request */
    int      has_ack;
    uint64_t ack;
    int      has_key, has_newkey, key_bad, has_stream, stream_bad;
    char     key[BOSH_SM_KEY_MAX + 1], newkey[BOSH_SM_KEY_MAX + 1];
    char     stream[BOSH_SM_STREAM_NAME_MAX];
} sm_slot;

typedef struct sm_cached {
    uint64_t rid;
    char    *body;
    size_t   len;
    uint64_t sent_at;
} sm_cached;

enum { ST_FREE, ST_OPEN, ST_CLOSING, ST_CLOSED };

typedef struct sm_stream {
    int         state;
    char        name[BOSH_SM_STREAM_NAME_MAX];
    int         announced;  /* a body already named it */
    strbuf      out;
    const char *close_cond; /* ST_CLOSING */
    char       *close_extra;
    uint64_t    closed_seq; /* ST_CLOSED: reuse the oldest first */
} sm_stream;

/* Why the arrays below grow on demand: sized for the worst case (SLOTS
 * held and buffered requests, BOSH_SM_MAX_BUFFERED responses, every
 * stream) they made each session about 8 KiB, while an idle session holds
 * one request, keeps `requests` responses and has one stream. The limits
 * are unchanged; they now bound how far the arrays may grow. */
struct bosh_sm {
    bosh_sm_params p;
    bosh_sm_state  state;
    uint64_t       last_rid;     /* highest rid processed, all lower ones too */
    sm_slot       *held;         /* processed, unanswered; rid order */
    size_t         nheld, held_cap;
    sm_slot       *buffered;     /* received above a gap; rid order */
    size_t         nbuf, buf_cap;
    sm_cached     *cache;        /* responses, rid order */
    size_t         ncache, cache_cap;
    size_t         cache_bytes;  /* sum of cache[].len (p.max_buffer_bytes) */
    uint64_t       buffer_drops; /* unacked responses dropped over the cap */
    uint64_t       client_ack;   /* highest rid the client has the answer of */
    uint64_t       report_rid, report_time;  /* next answer reports these */
    int            multi;        /* streams advertised */
    sm_stream     *streams;      /* ids 0..nstreams-1; higher ids are free */
    int            nstreams;
    int            rr;           /* round robin among streams with output */
    uint64_t       close_seq;
    uint64_t       adding_rid;   /* add-stream request being processed */
    char          *from;         /* our domain, for add-stream answers */
    int            have_key;
    char           key[BOSH_SM_KEY_MAX + 1];
    uint64_t       key_rid;
    uint64_t       last_new_at;  /* arrival of the last new request */
    int            last_answer_empty;
    unsigned       strikes;      /* fast empty polls in a row */
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

/* Make room for `need` elements of `size` bytes. The caps are small
 * (SLOTS, BOSH_SM_MAX_BUFFERED, BOSH_SM_MAX_STREAMS) and reached rarely,
 * so growing to exactly `need` costs few reallocs and wastes nothing. */
static void *reserve(void *arr, size_t *cap, size_t need, size_t size) {
    if (need <= *cap) return arr;
    arr = realloc(arr, need * size);
    if (!arr) { fputs("bosh_sm: out of memory\n", stderr); abort(); }
    *cap = need;
    return arr;
}

static char *memdup0(const char *s, size_t len) {
    char *d = xmalloc(len + 1);
    if (len) memcpy(d, s, len);
    d[len] = '\0';
    return d;
}

/* Copy a bounded attribute; returns 0 if it did not fit. */
static int copy_attr(char *dst, size_t cap, const char *src) {
    size_t n = strlen(src);
    if (n >= cap) { dst[0] = '\0'; return 0; }
    memcpy(dst, src, n + 1);
    return 1;
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
    /* §ack-request: we ack when the client said it will (ack='1'). */
    out->acks = c->has_ack && c->ack == 1;
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

static void emit_process(bosh_actions *acts, const sm_slot *s, int stream,
                         int new_stream) {
    bosh_action *a = push_action(acts, BOSH_ACT_PROCESS, s->req, s->rid);
    a->stream = stream;
    a->new_stream = new_stream;
}

static void emit_end(bosh_actions *acts) {
    push_action(acts, BOSH_ACT_END, NULL, 0);
}

/* ---- bodies ---- */

typedef struct body_attrs {
    const char *type, *cond;
    uint64_t    answered_rid;   /* 0: none, no ack */
    const char *stream, *from;  /* XML-escaped when written */
    uint64_t    report, time;   /* report 0: none */
} body_attrs;

/* <body xmlns=httpbind [xmlns:stream] [type] [condition] [ack] [stream]
 *       [from] [report time]>payload</body> */
static char *build_body(const bosh_sm *sm, const body_attrs *at,
                        const char *p1, size_t l1, const char *p2, size_t l2,
                        size_t *len) {
    strbuf sb = STRBUF_INIT;
    /* One allocation for the usual body: attributes fit in 256 bytes. */
    sb_reserve(&sb, 256 + l1 + l2);
    sb_puts(&sb, "<body xmlns='" HTTPBIND_NS "'");
    if ((l1 && memmem(p1, l1, "<stream:", 8)) ||
        (l2 && memmem(p2, l2, "<stream:", 8)))
        sb_puts(&sb, " xmlns:stream='" STREAMS_NS "'");
    if (at->type) sb_printf(&sb, " type='%s'", at->type);
    if (at->cond) sb_printf(&sb, " condition='%s'", at->cond);
    /* §ack-request: not when it equals the rid being answered. */
    if (sm->p.acks && at->answered_rid && sm->last_rid != at->answered_rid)
        sb_printf(&sb, " ack='%llu'", (unsigned long long)sm->last_rid);
    if (at->stream) {
        sb_puts(&sb, " stream='");
        sb_put_xml_escaped(&sb, at->stream, strlen(at->stream));
        sb_putc(&sb, '\'');
    }
    if (at->from) {
        sb_puts(&sb, " from='");
        sb_put_xml_escaped(&sb, at->from, strlen(at->from));
        sb_putc(&sb, '\'');
    }
    if (at->report)
        sb_printf(&sb, " report='%llu' time='%llu'",
                  (unsigned long long)at->report, (unsigned long long)at->time);
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
    body_attrs at = { .answered_rid = rid };
    return build_body(sm, &at, NULL, 0, NULL, 0, len);
}

static char *terminate_body(const bosh_sm *sm, const char *cond, size_t *len) {
    body_attrs at = { .type = "terminate", .cond = cond };
    return build_body(sm, &at, NULL, 0, NULL, 0, len);
}

/* ---- streams ---- */

static int streams_open(const bosh_sm *sm) {
    int n = 0;
    for (int i = 0; i < sm->nstreams; i++)
        if (sm->streams[i].state == ST_OPEN) n++;
    return n;
}

static int first_open_stream(const bosh_sm *sm) {
    for (int i = 0; i < sm->nstreams; i++)
        if (sm->streams[i].state == ST_OPEN) return i;
    return -1;
}

static int stream_by_name(const bosh_sm *sm, const char *name) {
    for (int i = 0; i < sm->nstreams; i++)
        if (sm->streams[i].state != ST_FREE && strcmp(sm->streams[i].name, name) == 0)
            return i;
    return -1;
}

static int stream_has_news(const bosh_sm *sm, int i) {
    if (i >= sm->nstreams) return 0;        /* free: never opened */
    const sm_stream *st = &sm->streams[i];
    return st->state == ST_CLOSING || (st->state == ST_OPEN && st->out.len);
}

/* Which stream the next non-empty answer carries: the preferred one (an
 * add-stream request learns its new name), then round robin. -1: none. */
static int pick_stream(bosh_sm *sm, int pref) {
    if (pref >= 0 && (stream_has_news(sm, pref) ||
                      (sm->streams[pref].state == ST_OPEN &&
                       !sm->streams[pref].announced)))
        return pref;
    for (int k = 0; k < BOSH_SM_MAX_STREAMS; k++) {
        int i = (sm->rr + k) % BOSH_SM_MAX_STREAMS;
        if (stream_has_news(sm, i)) { sm->rr = (i + 1) % BOSH_SM_MAX_STREAMS; return i; }
    }
    return -1;
}

static int any_news(const bosh_sm *sm) {
    for (int i = 0; i < sm->nstreams; i++)
        if (stream_has_news(sm, i)) return 1;
    return 0;
}

/* A free slot, or a closed one bosh_sm_stream_add may reuse. */
static int stream_room(const bosh_sm *sm) {
    if (sm->nstreams < BOSH_SM_MAX_STREAMS) return 1;
    for (int i = 1; i < sm->nstreams; i++)
        if (sm->streams[i].state == ST_FREE || sm->streams[i].state == ST_CLOSED)
            return 1;
    return 0;
}

static void stream_reset(sm_stream *st) {
    sb_free(&st->out);
    free(st->close_extra);
    st->close_extra = NULL;
    st->close_cond = NULL;
}

static void stream_closed(bosh_sm *sm, int i) {
    stream_reset(&sm->streams[i]);
    sm->streams[i].state = ST_CLOSED;
    sm->streams[i].closed_seq = ++sm->close_seq;
}

/* Non-empty bodies name their stream once there is more than one, and
 * always when it is not the first (§multi-transmit: no name means the
 * first stream). */
static const char *stream_attr(const bosh_sm *sm, int i) {
    if (!sm->multi) return NULL;
    if (i != 0 || streams_open(sm) > 1) return sm->streams[i].name;
    return NULL;
}

/* Output for a session-wide terminate body: only what belongs to the
 * first stream can travel without a 'stream' attribute. */
static const strbuf *terminate_output(const bosh_sm *sm) {
    static const strbuf none = STRBUF_INIT;
    if (sm->streams[0].state == ST_OPEN && streams_open(sm) == 1)
        return &sm->streams[0].out;
    return &none;
}

static void reset_all_output(bosh_sm *sm) {
    for (int i = 0; i < sm->nstreams; i++) sb_free(&sm->streams[i].out);
}

/* ---- response buffer ---- */

/* Keep the `requests` most recent responses; with acks, also every one the
 * client has not acknowledged (§rids-broken), up to BOSH_SM_MAX_BUFFERED. */
static void drop_oldest(bosh_sm *sm) {
    sm->cache_bytes -= sm->cache[0].len;
    free(sm->cache[0].body);
    memmove(&sm->cache[0], &sm->cache[1], (sm->ncache - 1) * sizeof sm->cache[0]);
    sm->ncache--;
}

/* With acks, a client that never acknowledges would make the server keep
 * up to BOSH_SM_MAX_BUFFERED responses of any size per session; the byte
 * cap bounds that (issue 14), see max_buffer_bytes in bosh_sm.h. */
static void trim_cache(bosh_sm *sm) {
    while (sm->ncache > sm->p.requests) {
        if (sm->p.acks && sm->cache[0].rid > sm->client_ack) break;
        drop_oldest(sm);
    }
    while (sm->p.max_buffer_bytes && sm->cache_bytes > sm->p.max_buffer_bytes &&
           sm->ncache > sm->p.requests) {
        if (sm->cache[0].rid > sm->client_ack) sm->buffer_drops++;
        drop_oldest(sm);
    }
}

size_t bosh_sm_buffered_bytes(const bosh_sm *sm) { return sm->cache_bytes; }
uint64_t bosh_sm_buffer_drops(const bosh_sm *sm) { return sm->buffer_drops; }

static void record(bosh_sm *sm, uint64_t now, uint64_t rid, const char *body,
                   size_t len) {
    size_t i;
    for (i = 0; i < sm->ncache; i++) {
        if (sm->cache[i].rid == rid) {      /* replaced (a gap filler) */
            free(sm->cache[i].body);
            sm->cache_bytes = sm->cache_bytes - sm->cache[i].len + len;
            sm->cache[i].body = memdup0(body, len);
            sm->cache[i].len = len;
            sm->cache[i].sent_at = now;
            trim_cache(sm);
            return;
        }
        if (sm->cache[i].rid > rid) break;
    }
    if (sm->ncache == BOSH_SM_MAX_BUFFERED) {
        if (i == 0) return;                 /* older than all we keep */
        drop_oldest(sm);
        i--;
    }
    sm->cache = reserve(sm->cache, &sm->cache_cap, sm->ncache + 1, sizeof *sm->cache);
    memmove(&sm->cache[i + 1], &sm->cache[i], (sm->ncache - i) * sizeof sm->cache[0]);
    sm->cache[i].rid = rid;
    sm->cache[i].body = memdup0(body, len);
    sm->cache[i].len = len;
    sm->cache[i].sent_at = now;
    sm->ncache++;
    sm->cache_bytes += len;
    trim_cache(sm);
}

static const sm_cached *cached(const bosh_sm *sm, uint64_t rid) {
    for (size_t i = 0; i < sm->ncache; i++)
        if (sm->cache[i].rid == rid) return &sm->cache[i];
    return NULL;
}

static uint64_t last_answered(const bosh_sm *sm) {
    return sm->ncache ? sm->cache[sm->ncache - 1].rid : 0;
}

/* ---- slots ---- */

static sm_slot slot_remove(sm_slot *arr, size_t *n, size_t i) {
    sm_slot s = arr[i];
    memmove(&arr[i], &arr[i + 1], (*n - i - 1) * sizeof *arr);
    (*n)--;
    return s;
}

static void slot_insert_sorted(sm_slot **arr, size_t *n, size_t *cap,
                               const sm_slot *s) {
    *arr = reserve(*arr, cap, *n + 1, sizeof **arr);
    sm_slot *a = *arr;
    size_t i = *n;
    while (i > 0 && a[i - 1].rid > s->rid) { a[i] = a[i - 1]; i--; }
    a[i] = *s;
    (*n)++;
}

/* Held requests are appended: they are processed in rid order. */
static void hold(bosh_sm *sm, const sm_slot *s) {
    sm->held = reserve(sm->held, &sm->held_cap, sm->nheld + 1, sizeof *sm->held);
    sm->held[sm->nheld++] = *s;
}

static long slot_find_rid(const sm_slot *arr, size_t n, uint64_t rid) {
    for (size_t i = 0; i < n; i++) if (arr[i].rid == rid) return (long)i;
    return -1;
}

static long slot_find_req(const sm_slot *arr, size_t n, const void *req) {
    for (size_t i = 0; i < n; i++) if (arr[i].req == req) return (long)i;
    return -1;
}

/* Answer held[i], with one stream's queued output if with_output; buffer
 * the body under its rid before handing it out. */
static void answer_held(bosh_sm *sm, uint64_t now, size_t i, int with_output,
                        bosh_actions *acts) {
    sm_slot s = slot_remove(sm->held, &sm->nheld, i);
    body_attrs at = { .answered_rid = s.rid };
    const char *p1 = NULL, *p2 = NULL;
    size_t l1 = 0, l2 = 0, len;
    int k = with_output ? pick_stream(sm, s.pref) : -1;
    sm_stream *st = k >= 0 ? &sm->streams[k] : NULL;
    if (sm->report_rid) {
        at.report = sm->report_rid;
        at.time = sm->report_time;
        sm->report_rid = 0;
    }
    if (st) {
        p1 = st->out.data; l1 = st->out.len;
        at.stream = stream_attr(sm, k);
        if (st->state == ST_CLOSING) {
            /* §multi-error: this stream is over, the session is not. */
            at.type = "terminate";
            at.cond = st->close_cond;
            at.stream = st->name;
            if (st->close_extra) { p2 = st->close_extra; l2 = strlen(p2); }
        } else if (!st->announced && k != 0) {
            at.stream = st->name;           /* §multi-add answer */
            at.from = sm->from;
        }
        st->announced = 1;
    }
    char *body = build_body(sm, &at, p1, l1, p2, l2, &len);
    if (st) {
        /* Freed, not reset: an idle session should not keep the capacity
         * of its largest burst (the body above was one malloc anyway). */
        if (st->state == ST_CLOSING) stream_closed(sm, k);
        else sb_free(&st->out);
    }
    sm->last_answer_empty = (l1 + l2 == 0);
    record(sm, now, s.rid, body, len);
    /* A stream-scoped terminate is no session end: no action condition
     * (which would also turn into an HTTP error for legacy clients). */
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
    const strbuf *out = terminate_output(sm);
    body_attrs tat = { .type = "terminate" };
    int first = 1;
    cond = intern_condition(cond);
    tat.cond = cond;
    while (sm->nheld) {
        sm_slot s = slot_remove(sm->held, &sm->nheld, 0);
        char *body;
        if (first)
            body = build_body(sm, &tat, out->data, out->len, extra, elen, &len);
        else
            body = empty_body(sm, 0, &len);
        emit_answer(acts, s.req, s.rid, 200, first ? cond : NULL, body, len);
        first = 0;
    }
    while (sm->nbuf) {
        sm_slot s = slot_remove(sm->buffered, &sm->nbuf, 0);
        char *body = first ? build_body(sm, &tat, out->data, out->len, extra, elen, &len)
                           : terminate_body(sm, cond, &len);
        emit_answer(acts, s.req, s.rid, 200, cond, body, len);
        first = 0;
    }
    if (offender) {
        char *body = first ? build_body(sm, &tat, out->data, out->len, extra, elen, &len)
                           : terminate_body(sm, cond, &len);
        emit_answer(acts, offender, offender_rid, 200, cond, body, len);
    }
    reset_all_output(sm);
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
    sm->client_ack = rid - 1;
    sm->idle_since = now;
    sm->last_new_at = now;
    sm->streams = xmalloc(sizeof *sm->streams);     /* stream 0 */
    memset(sm->streams, 0, sizeof *sm->streams);
    sm->nstreams = 1;
    sb_init(&sm->streams[0].out);
    sm->streams[0].state = ST_OPEN;
    sm->streams[0].announced = 1;
    return sm;
}

void bosh_sm_free(bosh_sm *sm) {
    if (!sm) return;
    for (size_t i = 0; i < sm->ncache; i++) free(sm->cache[i].body);
    for (int i = 0; i < sm->nstreams; i++) stream_reset(&sm->streams[i]);
    free(sm->streams);
    free(sm->cache);
    free(sm->held);
    free(sm->buffered);
    free(sm->close_body);
    free(sm->from);
    free(sm);
}

const bosh_sm_params *bosh_sm_params_of(const bosh_sm *sm) { return &sm->p; }
bosh_sm_state bosh_sm_get_state(const bosh_sm *sm) { return sm->state; }
uint64_t bosh_sm_last_rid(const bosh_sm *sm) { return sm->last_rid; }
size_t   bosh_sm_held(const bosh_sm *sm) { return sm->nheld; }

size_t bosh_sm_pending(const bosh_sm *sm) {
    size_t n = 0;
    for (int i = 0; i < sm->nstreams; i++) n += sm->streams[i].out.len;
    return n;
}

void bosh_sm_set_key(bosh_sm *sm, const char *newkey) {
    if (!newkey) return;
    if (!copy_attr(sm->key, sizeof sm->key, newkey)) {
        /* Longer than any hex SHA-1: nothing can ever match it. */
        memset(sm->key, 'x', BOSH_SM_KEY_MAX);
        sm->key[BOSH_SM_KEY_MAX] = '\0';
    }
    sm->have_key = 1;
    sm->key_rid = sm->last_rid;
}

void bosh_sm_enable_streams(bosh_sm *sm, const char *first_name) {
    if (!first_name || !copy_attr(sm->streams[0].name,
                                  sizeof sm->streams[0].name, first_name))
        return;
    sm->multi = 1;
}

int bosh_sm_stream_add(bosh_sm *sm, const char *name) {
    if (!sm->multi || sm->state != BOSH_SM_ACTIVE || !name ||
        strlen(name) >= BOSH_SM_STREAM_NAME_MAX || stream_by_name(sm, name) >= 0)
        return -1;
    int id = -1;
    for (int i = 0; i < sm->nstreams && id < 0; i++)
        if (sm->streams[i].state == ST_FREE) id = i;
    if (id < 0 && sm->nstreams < BOSH_SM_MAX_STREAMS) {    /* a new id */
        size_t cap = (size_t)sm->nstreams;
        sm->streams = reserve(sm->streams, &cap, cap + 1, sizeof *sm->streams);
        id = sm->nstreams++;
        memset(&sm->streams[id], 0, sizeof sm->streams[id]);
        sb_init(&sm->streams[id].out);
    }
    if (id < 0) {               /* reuse the longest-closed slot */
        for (int i = 1; i < sm->nstreams; i++)
            if (sm->streams[i].state == ST_CLOSED &&
                (id < 0 || sm->streams[i].closed_seq < sm->streams[id].closed_seq))
                id = i;
    }
    if (id < 0) return -1;
    sm_stream *st = &sm->streams[id];
    stream_reset(st);
    copy_attr(st->name, sizeof st->name, name);
    st->state = ST_OPEN;
    st->announced = 0;
    long h = slot_find_rid(sm->held, sm->nheld, sm->adding_rid);
    if (h >= 0) sm->held[h].pref = id;
    return id;
}

void bosh_sm_stream_output(bosh_sm *sm, int stream, const char *xml, size_t len) {
    if (sm->state != BOSH_SM_ACTIVE || stream < 0 || stream >= sm->nstreams ||
        sm->streams[stream].state != ST_OPEN)
        return;
    sb_append(&sm->streams[stream].out, xml, len);
}

size_t bosh_sm_stream_pending(const bosh_sm *sm, int stream) {
    if (stream < 0 || stream >= sm->nstreams) return 0;
    return sm->streams[stream].out.len;
}

int bosh_sm_stream_is_open(const bosh_sm *sm, int stream) {
    return stream >= 0 && stream < sm->nstreams &&
           sm->streams[stream].state == ST_OPEN;
}

int bosh_sm_streams_open(const bosh_sm *sm) { return streams_open(sm); }

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
    free(sm->from);
    sm->from = memdup0(from, strlen(from));
    const bosh_sm_params *p = &sm->p;
    strbuf *out = &sm->streams[0].out;
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
    if (sm->multi) {
        sb_puts(&sb, " stream='");
        sb_put_xml_escaped(&sb, sm->streams[0].name, strlen(sm->streams[0].name));
        sb_putc(&sb, '\'');
    }
    sb_puts(&sb, " xmpp:version='1.0' xmpp:restartlogic='true'");
    if (out->len) {
        sb_putc(&sb, '>');
        sb_append(&sb, out->data, out->len);
        sb_puts(&sb, "</body>");
        sb_free(out);
    } else {
        sb_puts(&sb, "/>");
    }
    size_t len;
    char *body = sb_detach(&sb, &len);
    record(sm, now, sm->last_rid, body, len);
    emit_answer(acts, req, sm->last_rid, 200, NULL, body, len);
    sm->idle_since = now;
}

/* ---- keys (§keys) ---- */

static void sha1_hex(const char *in, char out[41]) {
    static const char hex[] = "0123456789abcdef";
    unsigned char md[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)in, strlen(in), md);
    for (int i = 0; i < SHA_DIGEST_LENGTH; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[40] = '\0';
}

/* SHA-1 of the request's key must be the previous key (or newkey). A
 * skipped rid (gap timeout) is bridged by hashing once per rid. */
static int key_ok(bosh_sm *sm, const sm_slot *b) {
    if (!sm->have_key) return 1;
    if (!b->has_key || b->key_bad) return 0;
    uint64_t steps = b->rid > sm->key_rid ? b->rid - sm->key_rid : 1;
    if (steps > SLOTS + 1) return 0;
    char h[BOSH_SM_KEY_MAX + 1];
    memcpy(h, b->key, sizeof h);
    for (uint64_t i = 0; i < steps; i++) {
        char next[41];
        sha1_hex(h, next);
        memcpy(h, next, sizeof h);
    }
    if (strcasecmp(h, sm->key) != 0) return 0;
    if (b->has_newkey) memcpy(sm->key, b->newkey, sizeof sm->key);
    else memcpy(sm->key, b->key, sizeof sm->key);
    sm->key_rid = b->rid;
    return 1;
}

/* ---- requests ---- */

/* Immediate answer to a request that is not held. Buffered. */
static void answer_now(bosh_sm *sm, uint64_t now, const sm_slot *b,
                       const body_attrs *at, const char *cond,
                       const char *p, size_t l, bosh_actions *acts) {
    size_t len;
    char *body = build_body(sm, at, p, l, NULL, 0, &len);
    record(sm, now, b->rid, body, len);
    emit_answer(acts, b->req, b->rid, 200, cond, body, len);
    if (sm->nheld == 0) sm->idle_since = now;
}

/* The stream a request's payloads go to (§multi-transmit). */
static int request_target(const bosh_sm *sm, const sm_slot *b) {
    if (!sm->multi) return 0;
    if (b->add) return TARGET_NEW;
    if (b->stream_bad) return TARGET_UNKNOWN;
    if (b->has_stream) {
        int i = stream_by_name(sm, b->stream);
        if (i < 0) return TARGET_UNKNOWN;
        /* Just closed: the client may not know yet (§multi-transmit). */
        return sm->streams[i].state == ST_OPEN ? i : TARGET_IGNORE;
    }
    if (b->flags & BOSH_REQ_RESTART) return first_open_stream(sm);
    return streams_open(sm) == 1 ? first_open_stream(sm) : BOSH_SM_ALL_STREAMS;
}

/* A request whose turn has come (rid == last_rid, all lower processed). */
static void accept_request(bosh_sm *sm, uint64_t now, sm_slot b,
                           bosh_actions *acts) {
    if (!key_ok(sm, &b)) {
        /* §keys: MUST NOT process it; terminate with item-not-found. */
        terminate_all(sm, "item-not-found", NULL, b.req, b.rid, acts);
        return;
    }
    int target = request_target(sm, &b);
    if (target == TARGET_UNKNOWN) {
        if (b.stream_bad) {         /* no name we could echo: session-wide */
            terminate_all(sm, "item-not-found", NULL, b.req, b.rid, acts);
            return;
        }
        /* §multi-transmit: item-not-found, naming the stream, so only
         * that (unknown) stream is over for the client (§multi-error). */
        body_attrs at = { .type = "terminate", .cond = "item-not-found",
                          .stream = b.stream };
        answer_now(sm, now, &b, &at, NULL, NULL, 0, acts);
        return;
    }
    if (target == TARGET_IGNORE) {
        b.flags = 0;                /* its payloads, pause, terminate: gone */
        b.npayloads = 0;
    }
    if (target == TARGET_NEW && !stream_room(sm)) {
        target = streams_open(sm) == 1 ? first_open_stream(sm) : BOSH_SM_ALL_STREAMS;
        b.add = 0;                  /* no room: a plain empty request */
    }

    if (b.flags & BOSH_REQ_TERMINATE) {
        if (target >= 0 && sm->multi && streams_open(sm) > 1) {
            /* §multi-close: this stream only. Its payloads (unavailable
             * presence) go first; the answer says the stream is over. */
            emit_process(acts, &b, target, 0);
            sm_stream *st = &sm->streams[target];
            body_attrs at = { .type = "terminate", .answered_rid = b.rid,
                              .stream = st->name };
            answer_now(sm, now, &b, &at, NULL, st->out.data, st->out.len, acts);
            stream_closed(sm, target);
            return;
        }
        /* Payloads (e.g. unavailable presence) first, then the ending. */
        emit_process(acts, &b, target, 0);
        b.t = now;
        hold(sm, &b);
        terminate_all(sm, NULL, NULL, NULL, 0, acts);
        return;
    }
    if ((b.flags & BOSH_REQ_PAUSE) && sm->p.maxpause && b.pause) {
        unsigned secs = b.pause < sm->p.maxpause ? b.pause : sm->p.maxpause;
        emit_process(acts, &b, target, 0);
        /* Pause answers carry no payloads: the output waits. */
        while (sm->nheld) answer_held(sm, now, 0, 0, acts);
        size_t len;
        char *body = empty_body(sm, b.rid, &len);
        record(sm, now, b.rid, body, len);
        emit_answer(acts, b.req, b.rid, 200, NULL, body, len);
        sm->idle_since = now;
        sm->pause_ms = (uint64_t)secs * 1000;
        return;
    }
    /* §ack-response: the client lacks a response we sent a while ago:
     * say so in the next answer, sent now. */
    if (sm->p.acks && b.has_ack && b.ack < last_answered(sm)) {
        const sm_cached *c = cached(sm, b.ack + 1);
        if (c && now >= c->sent_at + BOSH_SM_REPORT_MS) {
            sm->report_rid = b.ack + 1;
            sm->report_time = now - c->sent_at;
        }
    }
    /* hold reached: the oldest goes back now (XEP-0124 §technique). */
    size_t cap = sm->p.hold ? sm->p.hold : 1;
    while (sm->nheld >= cap) answer_held(sm, now, 0, 1, acts);
    if (sm->report_rid && sm->nheld) answer_held(sm, now, 0, 1, acts);
    if (target != TARGET_IGNORE) {
        if (target == TARGET_NEW) sm->adding_rid = b.rid;
        emit_process(acts, &b, target == TARGET_NEW ? BOSH_SM_ALL_STREAMS : target,
                     target == TARGET_NEW);
    }
    b.t = now + (uint64_t)sm->p.wait * 1000;
    b.pref = -1;
    hold(sm, &b);
    if (sm->report_rid) answer_held(sm, now, sm->nheld - 1, 1, acts);
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
    bosh_sm_req r = { .rid = rid, .flags = flags, .pause = pause };
    bosh_sm_request_ex(sm, now, &r, req, acts);
}

static void fill_slot(const bosh_sm *sm, sm_slot *s, uint64_t now,
                      const bosh_sm_req *r, void *req) {
    memset(s, 0, sizeof *s);
    s->rid = r->rid;
    s->req = req;
    s->t = now;
    s->flags = r->flags;
    s->pause = r->pause;
    s->npayloads = r->npayloads;
    s->pref = -1;
    s->has_ack = r->has_ack;
    s->ack = r->ack;
    if (r->key) {
        s->has_key = 1;
        s->key_bad = !copy_attr(s->key, sizeof s->key, r->key);
    }
    if (r->newkey && copy_attr(s->newkey, sizeof s->newkey, r->newkey))
        s->has_newkey = 1;
    if (sm->multi && r->stream) {
        s->has_stream = 1;
        s->stream_bad = !copy_attr(s->stream, sizeof s->stream, r->stream);
    }
    /* §multi-add: an empty body with 'to' and no 'stream'. Strophe's
     * restart also has 'to' and no children, but carries xmpp:restart. */
    s->add = sm->multi && !r->stream && r->to && *r->to && r->npayloads == 0 &&
             !(r->flags & (BOSH_REQ_TERMINATE | BOSH_REQ_PAUSE | BOSH_REQ_RESTART));
}

/* An empty request that only asks for payloads (a poll). */
static int is_poll(const sm_slot *s) {
    return s->npayloads == 0 && !s->add &&
           !(s->flags & (BOSH_REQ_TERMINATE | BOSH_REQ_PAUSE | BOSH_REQ_RESTART));
}

/* §overactive and §poll, leniently (see the top of the file). Returns the
 * policy-violation verdict for a new request about to be queued.
 *  - Too many: more than requests+1 unanswered new requests, the last with
 *    payloads and not pause/terminate.
 *  - Too frequent: only in polling sessions (hold=0 or wait=0), after
 *    BOSH_SM_POLL_STRIKES empty polls in a row each within `polling` of
 *    the previous one, with `requests` outstanding or our last answer
 *    empty. The XEP's second §overactive rule for non-polling sessions
 *    (`requests` outstanding, the last empty and within `polling`) is
 *    exactly a Converse keepalive reload (stale held request + the new
 *    page's first, empty request), so it is not enforced. */
static int overactive(bosh_sm *sm, uint64_t now, const sm_slot *s) {
    size_t outstanding = sm->nheld + sm->nbuf + 1;
    int verdict = 0;
    int polling_session = sm->p.hold == 0 || sm->p.wait == 0;
    if (!is_poll(s)) {
        sm->strikes = 0;
        if (!(s->flags & (BOSH_REQ_TERMINATE | BOSH_REQ_PAUSE)) &&
            s->npayloads && outstanding > sm->p.requests + 1)
            verdict = 1;
    } else if (sm->p.polling && polling_session) {
        int fast = now < sm->last_new_at + (uint64_t)sm->p.polling * 1000;
        if (fast && (outstanding >= sm->p.requests || sm->last_answer_empty))
            sm->strikes++;
        else
            sm->strikes = 0;
        verdict = sm->strikes >= BOSH_SM_POLL_STRIKES;
    }
    sm->last_new_at = now;
    return verdict;
}

/* §ack-response: what the client has. No ack means all earlier ones. */
static void take_client_ack(bosh_sm *sm, const bosh_sm_req *r) {
    if (!sm->p.acks) return;
    uint64_t ack = r->has_ack ? r->ack : r->rid - 1;
    if (ack > last_answered(sm)) ack = last_answered(sm);
    if (ack > sm->client_ack) {
        sm->client_ack = ack;
        trim_cache(sm);
    }
}

void bosh_sm_request_ex(bosh_sm *sm, uint64_t now, const bosh_sm_req *r,
                        void *req, bosh_actions *acts) {
    size_t len;
    uint64_t rid = r->rid;
    if (sm->state == BOSH_SM_DONE) {
        char *b = terminate_body(sm, "item-not-found", &len);
        emit_answer(acts, req, rid, 200, intern_condition("item-not-found"), b, len);
        return;
    }
    if (sm->state == BOSH_SM_CLOSING) { deliver_close(sm, req, rid, acts); return; }
    sm->pause_ms = 0;   /* any request ends a pause */
    take_client_ack(sm, r);

    /* The old HTTP request of a repeated rid still held or queued gets a
     * recoverable type='error' body (§rids-broken), not buffered; the new
     * one takes its place. Safe for Strophe: it has aborted the old XHR
     * (1.1*wait timeout) or the page that sent it is gone (keepalive
     * reload), and even if it read the body it processes type='error' like
     * any other empty body (bosh-facts.md §5): no resend, no disconnect. */
    if (rid <= sm->last_rid) {
        long i = slot_find_rid(sm->held, sm->nheld, rid);
        if (i >= 0) {
            sm_slot *s = &sm->held[i];
            body_attrs at = { .type = "error", .answered_rid = rid };
            char *eb = build_body(sm, &at, NULL, 0, NULL, 0, &len);
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
    sm_slot b;
    fill_slot(sm, &b, now, r, req);
    long i = slot_find_rid(sm->buffered, sm->nbuf, rid);
    if (i >= 0) {
        sm_slot *s = &sm->buffered[i];
        body_attrs at = { .type = "error", .answered_rid = rid };
        char *eb = build_body(sm, &at, NULL, 0, NULL, 0, &len);
        emit_answer(acts, s->req, rid, 200, NULL, eb, len);
        b.t = s->t;
        *s = b;
        return;
    }
    if (overactive(sm, now, &b)) {
        terminate_all(sm, "policy-violation", NULL, req, rid, acts);
        return;
    }
    if (sm->nbuf == 0 && rid == sm->last_rid + 1) {
        /* Its turn already: what release_in_order would do at once, and
         * an in-order session never allocates the buffered array. */
        sm->last_rid = rid;
        accept_request(sm, now, b, acts);
        return;
    }
    slot_insert_sorted(&sm->buffered, &sm->nbuf, &sm->buf_cap, &b);
    release_in_order(sm, now, acts);
}

void bosh_sm_output(bosh_sm *sm, const char *xml, size_t len) {
    bosh_sm_stream_output(sm, 0, xml, len);
}

void bosh_sm_flush(bosh_sm *sm, uint64_t now, bosh_actions *acts) {
    if (sm->state != BOSH_SM_ACTIVE) return;
    if (sm->nheld && (any_news(sm) || pick_stream(sm, sm->held[0].pref) >= 0))
        answer_held(sm, now, 0, 1, acts);
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
            record(sm, now, r, b, len);
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
            reset_all_output(sm);
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
    const strbuf *out = terminate_output(sm);
    sm->close_cond = intern_condition(condition);
    body_attrs at = { .type = "terminate", .cond = sm->close_cond };
    sm->close_body = build_body(sm, &at, out->data, out->len, extra, elen,
                                &sm->close_len);
    reset_all_output(sm);
    sm->state = BOSH_SM_CLOSING;
}

void bosh_sm_stream_close(bosh_sm *sm, uint64_t now, int stream,
                          const char *condition, const char *extra,
                          bosh_actions *acts) {
    if (sm->state != BOSH_SM_ACTIVE || !bosh_sm_stream_is_open(sm, stream))
        return;
    if (streams_open(sm) <= 1) {
        bosh_sm_close(sm, now, condition, extra, acts);
        return;
    }
    sm_stream *st = &sm->streams[stream];
    st->state = ST_CLOSING;
    st->close_cond = intern_condition(condition);
    st->close_extra = extra && *extra ? memdup0(extra, strlen(extra)) : NULL;
    /* Tell the client now if a request is waiting. */
    if (sm->nheld) {
        sm->held[0].pref = stream;
        answer_held(sm, now, 0, 1, acts);
    }
}
