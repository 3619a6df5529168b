/*
 * bosh: BOSH sessions inside chatd, the I/O side of bosh_sm.
 *
 * mod_bosh relays each HTTP request; relay_server hands it here as a
 * relay_req. We parse the <body/>, look the session up by sid, let the pure
 * state machine (bosh_sm.c) decide, and execute its actions: answer a
 * request (relay_req_answer, exactly once per request), hand payloads to the
 * session's c2s in rid order, end the session. Each BOSH stream is the
 * "bosh" transport of one c2s session; a session starts with one stream
 * and the client may add more (XEP-0124 §multi), each with its own c2s.
 *
 * Reentrancy: executing an action can call back into us (a stanza makes the
 * c2s close its stream, which answers held requests). Sessions are
 * therefore only destroyed when the outermost event is done (depth == 0),
 * and never from inside ops->close (c2s.h): that case goes through a
 * deferred "reap" timer.
 */
#include "bosh.h"
#include "admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <apr_general.h>
#include <apr_hash.h>
#include <apr_pools.h>

#include "bosh_sm.h"
#include "c2s.h"
#include "log.h"
#include "relay_server.h"
#include "users.h"
#include "../../common/admission.h"
#include "../../common/bosh_body.h"
#include "../../common/relay_proto.h"
#include "../../common/strbuf.h"

#define DEFAULT_CONTENT_TYPE "text/xml; charset=utf-8"
#define STREAMS_ERR_NS "urn:ietf:params:xml:ns:xmpp-streams"
#define SASL_NS        "urn:ietf:params:xml:ns:xmpp-sasl"
#define BIND_NS        "urn:ietf:params:xml:ns:xmpp-bind"

typedef struct bosh_mgr {
    chatd      *d;
    apr_pool_t *pool;
    apr_hash_t *sessions;      /* sid -> bosh_session */
    xs_parser  *body_parser;   /* every relayed body: reused (one thread) */
} bosh_mgr;

typedef struct bosh_session bosh_session;

/* One XMPP stream of a session: its c2s, and its id in bosh_sm. */
typedef struct bosh_stream {
    bosh_session       *s;
    int                 id;
    c2s                *c2s;
    int                 closed;     /* ops->close was called */
    struct bosh_stream *next;
} bosh_stream;

struct bosh_session {
    bosh_mgr   *mgr;
    chatd      *d;
    char        sid[64];
    bosh_sm    *sm;
    bosh_stream *streams;       /* first stream (id 0) first */
    char       *xmpp_version;   /* for restarts */
    int         legacy;         /* no 'ver' at creation: HTTP error codes */
    int         secure;         /* created over HTTPS: plaintext refused */
    int         confidential;   /* created over HTTPS or a trusted proxy's HTTPS:
                                   PLAIN may be offered (RELAY.md RT_CONFIDENTIAL) */
    loop_timer *timer;          /* bosh_sm_deadline */
    uint64_t    timer_at;
    loop_timer *flush_timer;    /* coalesces a burst of output */
    loop_timer *reap_timer;     /* c2s_free after ops->close */
    int         depth;          /* events in progress */
    int         ended;          /* bosh_sm said END */
    int         destroying;
    /* Vouched identity (RELAY.md "Vouched identities"): the creation
     * request's RT_AUTH_USER, fixed for the session's life; every later
     * request must carry the same. vouched is its localpart when it names
     * a valid user of our domain (then EXTERNAL is offered), else NULL. */
    char       *auth_id;
    char       *vouched, *vouched_name;
    /* Prebind (RT_PREBIND): the creation request, answered with JSON once
     * EXTERNAL, the restart and bind have run server-side. While set, the
     * stream's output goes nowhere. */
    struct bosh_req *prebind;
    int         prebind_authed; /* <success/> seen: restart and bind next */
    loop_timer *prebind_timer;
    char       *addr_slot;      /* client address holding a max_sessions_per_addr
                                   slot (admin.h), or NULL */
};

/* One relayed request, from arrival to its answer. */
typedef struct bosh_req {
    relay_req    *r;
    bosh_session *s;
    bosh_body     body;
    int           parsed;
    int           busy;         /* its payloads are being processed */
    int           answered;     /* answered while busy: free when done */
} bosh_req;

static void transport_stream_open(void *t, const char *stream_id);
static void transport_send(void *t, const char *xml, size_t len);
static void transport_close(void *t, const char *condition, const char *text);
static void transport_stream_restart(void *t);
static void prebind_schedule(bosh_session *s);
static void prebind_answer(bosh_session *s, int status, const char *json);

static const c2s_transport bosh_transport = {
    .kind = "bosh",
    .stream_open = transport_stream_open,
    .send = transport_send,
    .close = transport_close,
    .starttls = NULL,
    /* Only prebind acts on it; a client restarts with xmpp:restart. */
    .stream_restart = transport_stream_restart,
};

static uint64_t now_ms(const bosh_session *s) { return loop_now_ms(s->d->loop); }

static int stream_live(const bosh_stream *st) { return st->c2s && !st->closed; }

static bosh_stream *stream_by_id(bosh_session *s, int id) {
    for (bosh_stream *st = s->streams; st; st = st->next)
        if (st->id == id) return st;
    return NULL;
}

static int any_stream_live(bosh_session *s) {
    for (bosh_stream *st = s->streams; st; st = st->next)
        if (stream_live(st)) return 1;
    return 0;
}

/* 128 random bits as hex: sid suffixes and stream names (§multi: opaque,
 * unpredictable). */
static int random_hex(char *out, size_t outlen) {
    unsigned char rnd[16];
    static const char hex[] = "0123456789abcdef";
    if (outlen < 33 || apr_generate_random_bytes(rnd, sizeof rnd) != APR_SUCCESS)
        return -1;
    for (size_t i = 0; i < sizeof rnd; i++) {
        out[2 * i] = hex[rnd[i] >> 4];
        out[2 * i + 1] = hex[rnd[i] & 15];
    }
    out[32] = '\0';
    return 0;
}

/* ---- requests ---- */

static void req_free(bosh_req *q) {
    if (q->parsed) bosh_body_free(&q->body);
    free(q);
}

/* Answer without a session (bad body, unknown sid, refused creation). */
static void answer_terminate(bosh_req *q, const char *condition) {
    strbuf sb = STRBUF_INIT;
    sb_printf(&sb, "<body xmlns='" BOSH_NS "' type='terminate' condition='%s'/>",
              condition);
    relay_req_answer(q->r, 200, DEFAULT_CONTENT_TYPE, sb.data, sb.len, 0);
    sb_free(&sb);
    req_free(q);
}

static int legacy_status(const char *condition) {
    if (!condition) return 0;
    if (strcmp(condition, "item-not-found") == 0) return 404;
    if (strcmp(condition, "bad-request") == 0) return 400;
    if (strcmp(condition, "policy-violation") == 0) return 403;
    return 0;
}

static void answer_req(bosh_session *s, bosh_req *q, const bosh_action *a) {
    int status = a->status;
    const char *body = a->body;
    size_t len = a->len;
    int legacy = s->legacy ? legacy_status(a->condition) : 0;
    if (legacy) { status = legacy; body = ""; len = 0; }
    relay_req_answer(q->r, status, DEFAULT_CONTENT_TYPE, body, len, 0);
    q->r = NULL;
    if (q->busy) q->answered = 1;   /* process_req frees it */
    else req_free(q);
}

static bosh_stream *open_stream(bosh_session *s, int id, const char *client_addr);
static void add_stream(bosh_session *s, bosh_req *q);

/* One request's payloads for one stream. Broadcast copies them. */
static void process_for(bosh_session *s, bosh_stream *st, bosh_body *b,
                        int copy) {
    (void)s;
    if (b->flags & BB_RESTART) {
        /* XEP-0206 §5: stanzas inside a restart body are ignored. */
        if (stream_live(st))
            c2s_stream_start(st->c2s, b->to ? b->to : s->d->cfg.domain,
                             s->xmpp_version, b->lang);
    } else if (copy) {
        for (xs_node *c = xs_child(b->root, NULL, NULL); c && stream_live(st);
             c = xs_next_elem(c, NULL, NULL))
            c2s_stanza(st->c2s, xs_copy(c));
    } else {
        xs_node *child;
        while (stream_live(st) && (child = xs_child(b->root, NULL, NULL)) != NULL) {
            xs_unlink(child);
            c2s_stanza(st->c2s, child);
        }
    }
    if ((b->flags & BB_TERMINATE) && stream_live(st))
        c2s_stream_end(st->c2s);
}

/* Payloads of one request, in rid order (bosh_sm guarantees the order).
 * A stanza can end the stream, and that answers q from inside this
 * function: q stays allocated (busy) until we are done with its body. */
static void process_req(bosh_session *s, bosh_req *q, const bosh_action *a) {
    q->busy = 1;
    if (a->new_stream) {
        add_stream(s, q);
    } else if (a->stream == BOSH_SM_ALL_STREAMS) {
        /* §multi-transmit: no 'stream' means every open stream. Streams
         * are collected first: processing may close one. */
        int ids[BOSH_SM_MAX_STREAMS], n = 0;
        for (bosh_stream *st = s->streams; st && n < BOSH_SM_MAX_STREAMS; st = st->next)
            if (stream_live(st)) ids[n++] = st->id;
        for (int i = 0; i < n; i++) {
            bosh_stream *st = stream_by_id(s, ids[i]);
            if (st) process_for(s, st, &q->body, 1);
        }
    } else {
        bosh_stream *st = stream_by_id(s, a->stream);
        if (st) process_for(s, st, &q->body, 0);
    }
    q->busy = 0;
    if (q->answered) req_free(q);
}

static void run_actions(bosh_session *s, bosh_actions *acts) {
    for (size_t i = 0; i < acts->n; i++) {
        bosh_action *a = &acts->a[i];
        switch (a->type) {
        case BOSH_ACT_ANSWER:  answer_req(s, a->req, a); break;
        case BOSH_ACT_PROCESS:
            /* Once the streams are closed, payloads are dropped; the
             * request itself may already be answered (and freed) by the
             * close, so it must not be touched. */
            if (!s->ended && any_stream_live(s)) process_req(s, a->req, a);
            break;
        case BOSH_ACT_END:     s->ended = 1; break;
        }
    }
    bosh_actions_clear(acts);
}

/* ---- session lifetime and timers ---- */

static void destroy(bosh_session *s) {
    loop *l = s->d->loop;
    s->destroying = 1;
    /* Exactly once, even for a prebind the session did not live to finish. */
    if (s->prebind) prebind_answer(s, 503, "{\"error\":\"session ended\"}");
    loop_timer_cancel(l, s->prebind_timer);
    s->prebind_timer = NULL;
    loop_timer_cancel(l, s->timer);
    loop_timer_cancel(l, s->flush_timer);
    loop_timer_cancel(l, s->reap_timer);
    s->timer = s->flush_timer = s->reap_timer = NULL;
    apr_hash_set(s->mgr->sessions, s->sid, APR_HASH_KEY_STRING, NULL);
    if (s->d->stats.bosh_sessions) s->d->stats.bosh_sessions--;
    if (s->addr_slot) chatd_addr_slot_release(s->d, s->addr_slot);
    free(s->addr_slot);
    log_debug("bosh %s: session ended", s->sid);
    while (s->streams) {
        bosh_stream *st = s->streams;
        s->streams = st->next;
        if (st->c2s) {
            c2s *c = st->c2s;
            st->c2s = NULL;
            c2s_free(c);
        }
        free(st);
    }
    if (bosh_sm_buffer_drops(s->sm)) {
        s->d->stats.bosh_ack_overflows += bosh_sm_buffer_drops(s->sm);
        log_info("BOSH00359: bosh %s: dropped %llu unacknowledged responses over "
                 "bosh_ack_buffer", s->sid, (unsigned long long)bosh_sm_buffer_drops(s->sm));
    }
    bosh_sm_free(s->sm);
    free(s->xmpp_version);
    free(s->auth_id);
    free(s->vouched);
    free(s->vouched_name);
    free(s);
}

static void timer_cb(loop *l, void *ud);

static void rearm(bosh_session *s) {
    loop *l = s->d->loop;
    uint64_t dl = bosh_sm_deadline(s->sm);
    if (s->timer && s->timer_at == dl) return;
    loop_timer_cancel(l, s->timer);
    s->timer = NULL;
    if (!dl) return;
    uint64_t now = now_ms(s);
    s->timer = loop_timer_add(l, dl > now ? dl - now : 0, timer_cb, s);
    s->timer_at = dl;
}

/* End of an event: destroy an ended session, else re-arm its timer. */
static void after_event(bosh_session *s) {
    if (s->depth) return;
    if (s->ended) destroy(s);
    else rearm(s);
}

static void timer_cb(loop *l, void *ud) {
    bosh_session *s = ud;
    bosh_actions acts;
    (void)l;
    s->timer = NULL;
    bosh_actions_init(&acts);
    s->depth++;
    bosh_sm_tick(s->sm, now_ms(s), &acts);
    run_actions(s, &acts);
    s->depth--;
    after_event(s);
}

static void flush_cb(loop *l, void *ud) {
    bosh_session *s = ud;
    bosh_actions acts;
    (void)l;
    s->flush_timer = NULL;
    bosh_actions_init(&acts);
    s->depth++;
    bosh_sm_flush(s->sm, now_ms(s), &acts);
    run_actions(s, &acts);
    /* Output piling up with no request to carry it (a stalled client). */
    for (bosh_stream *st = s->streams; st && !s->ended; st = st->next)
        if (stream_live(st) && s->d->cfg.max_output &&
            bosh_sm_stream_pending(s->sm, st->id) > s->d->cfg.max_output) {
            c2s_close(st->c2s, "resource-constraint", "output queue full");
            break;      /* the list may have changed */
        }
    s->depth--;
    after_event(s);
}

static void schedule_flush(bosh_session *s) {
    if (!s->flush_timer && !s->destroying)
        s->flush_timer = loop_timer_add(s->d->loop, 0, flush_cb, s);
}

/* Free the c2s of every closed stream (never inside ops->close). */
static void reap_cb(loop *l, void *ud) {
    bosh_session *s = ud;
    (void)l;
    s->reap_timer = NULL;
    s->depth++;
    for (bosh_stream **pp = &s->streams; *pp;) {
        bosh_stream *st = *pp;
        if (st->closed && st->c2s) {
            c2s *c = st->c2s;
            st->c2s = NULL;
            c2s_free(c);
        }
        if (st->closed && st != s->streams) {   /* keep the first: ids */
            *pp = st->next;
            free(st);
        } else {
            pp = &st->next;
        }
    }
    s->depth--;
    after_event(s);
}

/* ---- the c2s transport ---- */

static void transport_stream_open(void *t, const char *stream_id) {
    (void)t; (void)stream_id;   /* BOSH has no stream header */
}

/* c2s serializes in the scope of the stream's default namespace
 * (jabber:client). Inside <body xmlns=httpbind> that scope is gone, so a
 * top-level element without xmlns gets xmlns='jabber:client' back
 * (XEP-0206 §8). stream:-prefixed elements are left alone. */
static void queue_output(bosh_session *s, int id, const char *xml, size_t len) {
    if (len < 2 || xml[0] != '<' || (len > 8 && memcmp(xml, "<stream:", 8) == 0)) {
        bosh_sm_stream_output(s->sm, id, xml, len);
        return;
    }
    size_t name_end = 1;
    while (name_end < len && !strchr(" \t\r\n/>", xml[name_end])) name_end++;
    char quote = 0;
    for (size_t j = name_end; j < len; j++) {
        char c = xml[j];
        if (quote) { if (c == quote) quote = 0; continue; }
        if (c == '\'' || c == '"') { quote = c; continue; }
        if (c == '>') break;
        if (c == 'x' && j + 6 <= len && memcmp(xml + j, "xmlns=", 6) == 0 &&
            strchr(" \t\r\n", xml[j - 1])) {
            bosh_sm_stream_output(s->sm, id, xml, len);
            return;
        }
    }
    strbuf sb = STRBUF_INIT;
    sb_append(&sb, xml, name_end);
    sb_puts(&sb, " xmlns='" JABBER_CLIENT_NS "'");
    sb_append(&sb, xml + name_end, len - name_end);
    bosh_sm_stream_output(s->sm, id, sb.data, sb.len);
    sb_free(&sb);
}

static void transport_send(void *t, const char *xml, size_t len) {
    bosh_stream *st = t;
    bosh_session *s = st->s;
    if (s->ended || s->destroying || st->closed) return;
    if (s->prebind) {
        /* Nobody reads this stream yet: features, <success/> and the bind
         * result go nowhere. A <failure/> ends the prebind. */
        if (len > 8 && memcmp(xml, "<failure", 8) == 0) prebind_schedule(s);
        return;
    }
    queue_output(s, st->id, xml, len);
    schedule_flush(s);
}

static void transport_close(void *t, const char *condition, const char *text) {
    bosh_stream *st = t;
    bosh_session *s = st->s;
    if (st->closed || s->destroying) return;
    st->closed = 1;
    if (s->prebind) prebind_schedule(s);   /* fails it: no live stream */
    const char *cond = NULL;
    strbuf extra = STRBUF_INIT;
    if (condition) {
        if (strcmp(condition, "system-shutdown") == 0 ||
            strcmp(condition, "host-unknown") == 0 ||
            strcmp(condition, "policy-violation") == 0) {
            cond = condition;       /* same name in XEP-0124 */
        } else {
            cond = "remote-stream-error";
            sb_puts(&extra, "<stream:error><");
            sb_put_xml_escaped(&extra, condition, strlen(condition));
            sb_puts(&extra, " xmlns='" STREAMS_ERR_NS "'/>");
            if (text && *text) {
                sb_puts(&extra, "<text xmlns='" STREAMS_ERR_NS "'>");
                sb_put_xml_escaped(&extra, text, strlen(text));
                sb_puts(&extra, "</text>");
            }
            sb_puts(&extra, "</stream:error>");
        }
    }
    bosh_actions acts;
    bosh_actions_init(&acts);
    s->depth++;
    /* One stream of several: only it ends (§multi-error); the last one
     * ends the session. */
    bosh_sm_stream_close(s->sm, now_ms(s), st->id, cond, extra.data, &acts);
    run_actions(s, &acts);
    s->depth--;
    sb_free(&extra);
    /* c2s_free must not run inside ops->close: defer it. */
    if (!s->reap_timer)
        s->reap_timer = loop_timer_add(s->d->loop, 0, reap_cb, s);
}

/* ---- entry points ---- */

static void on_release(relay_req *r, void *ud) {
    bosh_req *q = ud;
    bosh_session *s = q->s;
    bosh_actions acts;
    (void)r;
    bosh_actions_init(&acts);
    s->depth++;
    if (bosh_sm_release(s->sm, now_ms(s), q, &acts) == 0) {
        run_actions(s, &acts);
    } else {
        /* Unknown to the machine (should not happen): still answer once. */
        static const char empty[] = "<body xmlns='" BOSH_NS "'/>";
        relay_req_answer(q->r, 200, DEFAULT_CONTENT_TYPE, empty, sizeof empty - 1, 0);
        req_free(q);
    }
    s->depth--;
    after_event(s);
}

static int make_sid(const char *node, char *out, size_t outlen) {
    size_t n = (size_t)snprintf(out, outlen, "%s-", node);
    if (n + 33 > outlen) return -1;
    return random_hex(out + n, outlen - n);
}

/* Every stream of a session gets the session's vouched identity. */
static bosh_stream *open_stream(bosh_session *s, int id, const char *client_addr) {
    bosh_stream *st = calloc(1, sizeof *st);
    if (!st) abort();
    st->s = s;
    st->id = id;
    bosh_stream **pp = &s->streams;
    while (*pp) pp = &(*pp)->next;
    *pp = st;
    /* "secure" for c2s means "PLAIN may be offered": only when the browser's
     * connection is encrypted (RT_CONFIDENTIAL); refreshed per request. */
    st->c2s = c2s_new(s->d, &bosh_transport, st, s->confidential,
                      client_addr ? client_addr : "");
    if (s->vouched) {
        c2s_set_vouched_user(st->c2s, s->vouched);
        c2s_set_vouched_name(st->c2s, s->vouched_name);
    }
    return st;
}

/* §multi-add: an empty body with 'to'. Only our domain is served; any
 * other 'to' gets a stream that ends at once with host-unknown. */
static void add_stream(bosh_session *s, bosh_req *q) {
    char name[40];
    bosh_body *b = &q->body;
    if (random_hex(name, sizeof name) != 0) return;
    int id = bosh_sm_stream_add(s->sm, name);
    if (id < 0) return;
    if (!s->d->cfg.domain || strcasecmp(b->to, s->d->cfg.domain) != 0) {
        bosh_actions acts;
        bosh_actions_init(&acts);
        bosh_sm_stream_close(s->sm, now_ms(s), id, "host-unknown", NULL, &acts);
        run_actions(s, &acts);
        return;
    }
    bosh_stream *st = open_stream(s, id, q->r ? q->r->client_addr : "");
    log_debug("bosh %s: stream %s added", s->sid, name);
    c2s_stream_start(st->c2s, b->to, s->xmpp_version, b->lang);
}

/* ---- vouched identities and prebind (RELAY.md) ---- */

/* The localpart of an RT_AUTH_USER value: "local@domain" with our domain,
 * or a bare "local". Returns 0 and writes the normalized localpart, or -1
 * (another domain, an invalid name: then nothing is vouched). */
static int vouched_localpart(const chatd *d, const char *id, char *out, size_t outlen) {
    char local[USERS_MAX_LOCALPART + 2];
    const char *at = strchr(id, '@');
    size_t n = at ? (size_t)(at - id) : strlen(id);
    if (n == 0 || n >= sizeof local) return -1;
    if (at && (!d->cfg.domain || strcasecmp(at + 1, d->cfg.domain) != 0)) return -1;
    memcpy(local, id, n);
    local[n] = '\0';
    return users_normalize_localpart(local, out, outlen);
}

/* Fix the session's identity from its creation request. */
static void set_identity(bosh_session *s, const relay_req *r) {
    char local[USERS_MAX_LOCALPART + 1];
    if (!r->auth_user || !*r->auth_user) return;
    if (!(s->auth_id = strdup(r->auth_user))) abort();
    if (vouched_localpart(s->d, r->auth_user, local, sizeof local) != 0) {
        log_warn("bosh %s: httpd vouched for '%s', not a user of %s: EXTERNAL not offered",
                 s->sid, r->auth_user, s->d->cfg.domain ? s->d->cfg.domain : "?");
        return;
    }
    if (!(s->vouched = strdup(local))) abort();
    if (r->display_name && *r->display_name && !(s->vouched_name = strdup(r->display_name)))
        abort();
}

/* A later request must carry the identity the session was created with. */
static int same_identity(const bosh_session *s, const relay_req *r) {
    const char *a = s->auth_id, *b = r->auth_user;
    if (!a || !*a) return !b || !*b;
    return b && strcmp(a, b) == 0;
}

static void json_str(strbuf *sb, const char *v) {
    sb_putc(sb, '"');
    for (; *v; v++) {
        unsigned char c = (unsigned char)*v;
        if (c == '"' || c == '\\') { sb_putc(sb, '\\'); sb_putc(sb, (char)c); }
        else if (c < 0x20) sb_printf(sb, "\\u%04x", c);
        else sb_putc(sb, (char)c);
    }
    sb_putc(sb, '"');
}

/* Answer the prebind request (exactly once) and forget it. */
static void prebind_answer(bosh_session *s, int status, const char *json) {
    bosh_req *q = s->prebind;
    s->prebind = NULL;
    if (!q) return;
    relay_req_answer(q->r, status, "application/json", json, strlen(json), 0);
    q->r = NULL;
    req_free(q);
}

/* The session was refused or its stream ended before it was bound. */
static void prebind_fail(bosh_session *s, int status, const char *why) {
    strbuf sb = STRBUF_INIT;
    log_info("bosh %s: prebind for %s failed: %s", s->sid,
             s->vouched ? s->vouched : "?", why);
    sb_puts(&sb, "{\"error\":");
    json_str(&sb, why);
    sb_putc(&sb, '}');
    prebind_answer(s, status, sb.data);
    sb_free(&sb);
    for (bosh_stream *st = s->streams; st; st = st->next) st->closed = 1;
    s->ended = 1;           /* after_event destroys it */
}

/* Bound: the creation rid is spent (its answer, the bare session
 * attributes, is buffered as for any client) and the client attaches with
 * the next rid. */
static void prebind_done(bosh_session *s, const char *jid) {
    bosh_req *q = s->prebind;
    bosh_actions acts;
    strbuf sb = STRBUF_INIT;
    bosh_actions_init(&acts);
    bosh_sm_creation_answer(s->sm, now_ms(s), q, s->sid, s->d->cfg.domain, &acts);
    bosh_actions_clear(&acts);          /* that answer goes to nobody */
    sb_puts(&sb, "{\"jid\":");
    json_str(&sb, jid);
    sb_puts(&sb, ",\"sid\":");
    json_str(&sb, s->sid);
    sb_printf(&sb, ",\"rid\":%llu}", (unsigned long long)bosh_sm_last_rid(s->sm) + 1);
    log_info("bosh %s: prebound %s", s->sid, jid);
    prebind_answer(s, 200, sb.data);
    sb_free(&sb);
}

/* Runs outside the c2s callbacks: after <success/> do the restart and the
 * bind as a client would; after a failure or a closed stream, give up. */
static void prebind_cb(loop *l, void *ud) {
    bosh_session *s = ud;
    (void)l;
    s->prebind_timer = NULL;
    if (!s->prebind) return;
    s->depth++;
    bosh_stream *st = s->streams;
    if (s->prebind_authed && st && stream_live(st) && !c2s_jid(st->c2s)) {
        c2s_stream_start(st->c2s, s->d->cfg.domain, s->xmpp_version, NULL);
        xs_node *iq = xs_new(JABBER_CLIENT_NS, "iq");
        xs_set_attr(iq, "type", "set");
        xs_set_attr(iq, "id", "prebind");
        xs_add_elem(iq, BIND_NS, "bind");
        if (stream_live(st)) c2s_stanza(st->c2s, iq);
        else xs_free(iq);
    }
    const char *jid = st && stream_live(st) ? c2s_jid(st->c2s) : NULL;
    if (jid) prebind_done(s, jid);
    else prebind_fail(s, s->prebind_authed ? 503 : 403,
                      s->prebind_authed ? "bind failed" : "not authorized");
    s->depth--;
    after_event(s);
}

static void prebind_schedule(bosh_session *s) {
    if (s->prebind && !s->prebind_timer && !s->destroying)
        s->prebind_timer = loop_timer_add(s->d->loop, 0, prebind_cb, s);
}

/* SASL succeeded on the (only) stream: the client would now restart. */
static void transport_stream_restart(void *t) {
    bosh_stream *st = t;
    if (!st->s->prebind) return;
    st->s->prebind_authed = 1;
    prebind_schedule(st->s);
}

/* DRAIN or a dead relay connection: answer now, drop the half-made session. */
static void prebind_on_release(relay_req *r, void *ud) {
    bosh_session *s = ud;
    (void)r;
    s->depth++;
    prebind_fail(s, 503, "relay connection closing");
    s->depth--;
    after_event(s);
}

/* Sign the new session in as its vouched user, server-side. Redis answers
 * EXTERNAL later; transport_send / transport_stream_restart then schedule
 * prebind_cb. */
static void prebind_start(bosh_session *s, bosh_req *q, bosh_stream *st) {
    s->prebind = q;
    q->r->on_release = prebind_on_release;
    q->r->release_ud = s;
    s->depth++;
    c2s_stream_start(st->c2s, q->body.to, s->xmpp_version, q->body.lang);
    if (stream_live(st)) {
        xs_node *auth = xs_new(SASL_NS, "auth");
        xs_set_attr(auth, "mechanism", "EXTERNAL");
        xs_add_text(auth, "=", 1);
        c2s_stanza(st->c2s, auth);
    } else {
        prebind_schedule(s);
    }
    s->depth--;
    after_event(s);
}

static void create_session(bosh_mgr *m, bosh_req *q) {
    chatd *d = m->d;
    bosh_body *b = &q->body;
    if (d->stopping) { answer_terminate(q, "system-shutdown"); return; }
    if (chatd_session_slots_full(d)) {
        /* XEP-0124 has no overload condition; the XMPP one travels as a
         * remote stream error, as it would on the native port. */
        static const char full[] =
            "<body xmlns='" BOSH_NS "' xmlns:stream='" STREAM_NS "' type='terminate'"
            " condition='remote-stream-error'><stream:error><resource-constraint"
            " xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></body>";
        d->stats.sessions_refused++;
        relay_req_answer(q->r, 200, DEFAULT_CONTENT_TYPE, full, sizeof full - 1, 0);
        req_free(q);
        return;
    }
    if (!b->to || !*b->to) { answer_terminate(q, "improper-addressing"); return; }
    if (!d->cfg.domain || strcasecmp(b->to, d->cfg.domain) != 0) {
        answer_terminate(q, "host-unknown");
        return;
    }
    /* One address over its live-session cap on this node (addr_count.h).
     * Answered like mod_bosh's admission refusals: HTTP 503, Retry-After,
     * a readable reason. Strophe resends the same rid on a 5xx with
     * growing delays (0, 8, 35, 99 s) before giving up, which outlasts
     * the inactivity timeout that frees the slot of a closed tab; a
     * terminate would make Converse reconnect every 3 s instead. */
    int slot = chatd_addr_slot_take(d, q->r->client_addr);
    if (slot < 0) {
        strbuf sb = STRBUF_INIT;
        uint32_t rnd = 0;
        apr_generate_random_bytes((unsigned char *)&rnd, sizeof rnd);
        sb_printf(&sb, "sign-in refused: too many sessions from your address "
                  "(%u on this server); close one or try again later\n",
                  d->cfg.max_sessions_per_addr);
        log_info("bosh: creation from %s refused: address at max_sessions_per_addr",
                 q->r->client_addr);
        relay_req_answer(q->r, 503, "text/plain; charset=utf-8", sb.data, sb.len,
                         admission_retry_after((long long)d->cfg.bosh_inactivity * 1000,
                                               10, rnd));
        sb_free(&sb);
        req_free(q);
        return;
    }
    bosh_sm_limits lim = {
        .max_wait = d->cfg.bosh_max_wait, .max_hold = d->cfg.bosh_max_hold,
        .inactivity = d->cfg.bosh_inactivity, .maxpause = d->cfg.bosh_max_pause,
        .polling = d->cfg.bosh_polling,
    };
    bosh_sm_client c = {
        .has_wait = !!(b->flags & BB_HAS_WAIT), .wait = b->wait,
        .has_hold = !!(b->flags & BB_HAS_HOLD), .hold = b->hold,
        .has_ver = !!(b->flags & BB_HAS_VER),
        .ver_major = b->ver_major, .ver_minor = b->ver_minor,
        .has_ack = !!(b->flags & BB_HAS_ACK), .ack = b->ack,
    };
    bosh_sm_params p;
    bosh_sm_negotiate(&lim, &c, &p);
    p.max_buffer_bytes = d->cfg.bosh_ack_buffer;    /* issue 14 */

    bosh_session *s = calloc(1, sizeof *s);
    if (!s) abort();
    if (make_sid(d->cfg.node_id ? d->cfg.node_id : "n1", s->sid, sizeof s->sid) != 0) {
        free(s);
        if (slot > 0) chatd_addr_slot_release(d, q->r->client_addr);
        answer_terminate(q, "internal-server-error");
        return;
    }
    s->mgr = m;
    s->d = d;
    if (slot > 0 && !(s->addr_slot = strdup(q->r->client_addr))) abort();
    s->legacy = !c.has_ver;
    s->secure = q->r->secure;
    /* The creation's `content` attribute is ignored: every answer is
     * DEFAULT_CONTENT_TYPE. Echoing it let a stranger choose text/html for
     * answers served from the site's own origin (issue 13,
     * docs/conformance.md). */
    s->confidential = q->r->confidential;
    s->xmpp_version = strdup(b->xmpp_version ? b->xmpp_version : "1.0");
    if (!s->xmpp_version) abort();
    uint64_t now = now_ms(s);
    s->sm = bosh_sm_new(&p, b->rid, now);
    char first[40];
    if (random_hex(first, sizeof first) == 0)
        bosh_sm_enable_streams(s->sm, first);   /* §multi-discover */
    if (b->newkey) bosh_sm_set_key(s->sm, b->newkey);   /* §keys */
    apr_hash_set(m->sessions, s->sid, APR_HASH_KEY_STRING, s);
    d->stats.bosh_sessions++;
    set_identity(s, q->r);
    bosh_stream *st = open_stream(s, 0, q->r->client_addr);
    log_debug("bosh %s: new session from %s (wait %u hold %u)%s%s", s->sid,
              q->r->client_addr ? q->r->client_addr : "?", p.wait, p.hold,
              s->vouched ? " vouched for " : "", s->vouched ? s->vouched : "");
    if (q->r->prebind) {
        q->s = s;
        if (!s->vouched) {
            s->prebind = q;
            s->depth++;
            prebind_fail(s, 403, "no vouched user of this domain");
            s->depth--;
            after_event(s);
            return;
        }
        prebind_start(s, q, st);
        return;
    }

    q->s = s;
    q->r->on_release = on_release;
    q->r->release_ud = q;
    bosh_actions acts;
    bosh_actions_init(&acts);
    s->depth++;
    /* features go out through transport_send into the machine's queue */
    c2s_stream_start(st->c2s, b->to, s->xmpp_version, b->lang);
    bosh_sm_creation_answer(s->sm, now_ms(s), q, s->sid, d->cfg.domain, &acts);
    run_actions(s, &acts);
    s->depth--;
    after_event(s);
}

void bosh_handle_request(chatd *d, relay_req *r) {
    bosh_mgr *m = d->bosh;
    bosh_req *q = calloc(1, sizeof *q);
    char err[128];
    if (!q) abort();
    q->r = r;
    if (!m) { answer_terminate(q, "internal-server-error"); return; }
    if (bosh_body_parse_with(m->body_parser, r->body, r->body_len,
                             r->body_len ? r->body_len : 1,
                             &q->body, err, sizeof err) != 0) {
        log_debug("bosh: bad body from %s: %s", r->client_addr, err);
        answer_terminate(q, "bad-request");
        return;
    }
    q->parsed = 1;
    if (!q->body.sid) { create_session(m, q); return; }

    bosh_session *s = apr_hash_get(m->sessions, q->body.sid, APR_HASH_KEY_STRING);
    if (!s || s->ended || s->destroying) {
        /* While stopping, a client that had no request held when its
         * session was ended learns why from its next one (main.c grace). */
        answer_terminate(q, d->stopping ? "system-shutdown" : "item-not-found");
        return;
    }
    if (!same_identity(s, r) || s->prebind) {
        /* Fixed at creation (RELAY.md): never reaches the session. */
        log_info("bosh %s: request from %s carries identity '%s', session has '%s': refused",
                 s->sid, r->client_addr, r->auth_user ? r->auth_user : "",
                 s->auth_id ? s->auth_id : "");
        answer_terminate(q, "policy-violation");
        return;
    }
    if (s->secure && !r->secure) {
        /* XEP-0124 §security: once secure, always secure. The request
         * never reaches the session (its rid stays free for the client's
         * HTTPS retry) and mod_bosh closes the connection unanswered. */
        log_info("bosh %s: plaintext request from %s for a session created "
                 "over HTTPS: connection closed", s->sid, r->client_addr);
        relay_req_answer(r, RELAY_STATUS_CLOSE, DEFAULT_CONTENT_TYPE, "", 0, 0);
        q->r = NULL;
        req_free(q);
        return;
    }
    /* A password may travel in this request only if both it and the
     * session's creation were confidential (an <auth mechanism='PLAIN'/>
     * over plain HTTP is then refused as invalid-mechanism). */
    for (bosh_stream *st = s->streams; st; st = st->next)
        if (st->c2s)            /* NULL once a closed stream was reaped */
            c2s_set_secure(st->c2s, s->confidential && r->confidential);
    q->s = s;
    r->on_release = on_release;
    r->release_ud = q;
    const bosh_body *b = &q->body;
    bosh_sm_req sr = {
        .rid = b->rid, .pause = b->pause, .npayloads = b->npayloads,
        .has_ack = !!(b->flags & BB_HAS_ACK), .ack = b->ack,
        .key = b->key, .newkey = b->newkey, .stream = b->stream, .to = b->to,
    };
    if (b->flags & BB_TERMINATE) sr.flags |= BOSH_REQ_TERMINATE;
    if (b->flags & BB_HAS_PAUSE) sr.flags |= BOSH_REQ_PAUSE;
    if (b->flags & BB_RESTART) sr.flags |= BOSH_REQ_RESTART;
    bosh_actions acts;
    bosh_actions_init(&acts);
    s->depth++;
    bosh_sm_request_ex(s->sm, now_ms(s), &sr, q, &acts);
    run_actions(s, &acts);
    if (!s->ended) schedule_flush(s);   /* hold=0, and output made above */
    s->depth--;
    after_event(s);
}

int bosh_init(chatd *d) {
    if (apr_initialize() != APR_SUCCESS) return -1;
    bosh_mgr *m = calloc(1, sizeof *m);
    if (!m) abort();
    m->d = d;
    if (apr_pool_create(&m->pool, NULL) != APR_SUCCESS) {
        free(m);
        apr_terminate();
        return -1;
    }
    m->sessions = apr_hash_make(m->pool);
    m->body_parser = xs_doc_parser_new();
    d->bosh = m;
    d->stats.bosh_sessions = 0;
    return 0;
}

void bosh_shutdown_all(chatd *d) {
    bosh_mgr *m = d->bosh;
    if (!m) return;
    unsigned n = apr_hash_count(m->sessions), i = 0;
    if (!n) return;
    bosh_session **all = calloc(n, sizeof *all);
    if (!all) abort();
    for (apr_hash_index_t *hi = apr_hash_first(NULL, m->sessions); hi && i < n;
         hi = apr_hash_next(hi)) {
        void *v;
        apr_hash_this(hi, NULL, NULL, &v);
        all[i++] = v;
    }
    for (unsigned k = 0; k < i; k++) {
        bosh_session *s = all[k];
        if (!s->ended) {
            bosh_actions acts;
            bosh_actions_init(&acts);
            for (bosh_stream *st = s->streams; st; st = st->next) st->closed = 1;
            s->depth++;
            bosh_sm_close(s->sm, now_ms(s), "system-shutdown", NULL, &acts);
            run_actions(s, &acts);
            s->depth--;
        }
        destroy(s);
    }
    free(all);
    log_info("bosh: %u session(s) ended for shutdown", i);
}

void bosh_free(chatd *d) {
    bosh_mgr *m = d->bosh;
    if (!m) return;
    bosh_shutdown_all(d);
    xs_parser_free(m->body_parser);
    apr_pool_destroy(m->pool);
    free(m);
    d->bosh = NULL;
    apr_terminate();
}
