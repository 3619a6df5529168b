/*
 * c2s.c: one XMPP client session, independent of its transport (RFC 6120).
 *
 * The session walks: stream header -> features -> [STARTTLS] -> SASL ->
 * stream restart -> bind (+ legacy session) -> stanzas to the router.
 * The transport (c2s_native.c, bosh.c) feeds events in and gets bytes out
 * through c2s_transport; nothing here knows about sockets or HTTP.
 *
 * SASL lookups are async. While one is pending, further input is queued
 * and replayed in order once the answer is in, so a pipelining client
 * cannot overtake its own authentication. Freeing the session forgets the
 * pending lookup (users_sasl_free -> redis_async_forget).
 *
 * Failed password sign-ins are also counted per account and per client
 * address across streams and sessions (auth_guard.h, issue 13). An attempt
 * over the limit is answered not-authorized after cfg.auth_fail_delay_ms,
 * from a loop timer (the loop never waits); the session's input stays
 * queued until then, as while a lookup runs.
 *
 * XEP-0198 Stream Management (urn:xmpp:sm:3) lives here too, on transports
 * that ask for it (native): the counters and the unacknowledged queue are
 * pure code in sm.c; this file does the nonzas (<enable/>, <r/>, <a/>,
 * <resume/>), the timers and the lifetime (c2s.h: a dropped resumable
 * session is kept, detached, until resumed or timed out). Every stanza to
 * the client passes through out_stanza(), which numbers and queues it; so
 * the router and the features deliver exactly as before (session_send).
 */
#include "c2s.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "admin.h"
#include "auth_guard.h"
#include "sm.h"
#include "jid.h"
#include "log.h"
#include "rate.h"
#include "muc.h"
#include "mam.h"
#include "router.h"
#include "csi.h"
#include "users.h"
#include "../../common/scram.h"
#include "../../common/strbuf.h"

#define NS_CLIENT   "jabber:client"
#define NS_STREAMS  "http://etherx.jabber.org/streams"
#define NS_TLS      "urn:ietf:params:xml:ns:xmpp-tls"
#define NS_SASL     "urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_BIND     "urn:ietf:params:xml:ns:xmpp-bind"
#define NS_SESSION  "urn:ietf:params:xml:ns:xmpp-session"
#define NS_STANZAS  "urn:ietf:params:xml:ns:xmpp-stanzas"
#define NS_HTTPBIND "http://jabber.org/protocol/httpbind"
#define NS_SM       "urn:xmpp:sm:3"
#define NS_DELAY    "urn:xmpp:delay"
#define NS_CARBONS  "urn:xmpp:carbons:2"

#define C2S_MAX_QUEUED        32   /* stanzas held while SASL waits on Redis */
#define C2S_MAX_AUTH_FAILURES 5    /* then the stream is closed */

typedef struct queued {
    struct queued *next;
    xs_node *stanza;
} queued;

struct c2s {
    chatd               *d;
    const c2s_transport *ops;
    void                *t;
    int                  secure;
    char                *peer;
    char                *addr;          /* client address (throttle): peer unless set */
    loop_timer          *fail_timer;    /* throttled: the delayed <failure/> */
    char                *vouched;       /* SASL EXTERNAL identity, or NULL */
    char                *vouched_name;  /* its display name (auth module), or NULL */
    char                 stream_id[33];
    int                  stream_started;
    int                  closed;        /* ops->close called */

    users_sasl          *sasl;          /* current exchange, or NULL */
    int                  sasl_awaiting_initial; /* sent empty challenge */
    int                  sasl_busy;     /* step running / lookup pending */
    int                  in_step;       /* inside users_sasl_step */
    int                  auth_failures;

    char                *user;          /* localpart once authenticated */
    char                *jid;           /* full JID once bound */

    queued              *queue, *queue_tail;
    int                  queue_len;
    int                  draining;
    void                *router_slot;

    /* Flood control (issue 14): stanzas and bytes per session. */
    token_bucket         stanza_tb, byte_tb;
    unsigned             refused_in_row;
    unsigned             ping_seq;

    /* XEP-0198 (sm.h; see the top of the file) */
    int                  sm_on;         /* <enabled/> sent: stanzas numbered and queued */
    int                  sm_resumable;  /* enabled with resume: kept when the connection drops */
    unsigned             sm_max_s;      /* resumption time granted (s) */
    char                 sm_id[33];     /* resumption id: 128 random bits, hex */
    sm_state             sm;
    loop_timer          *sm_timer;      /* attached: timed <r/>; detached: resume deadline */
    loop_timer          *end_timer;     /* detached: end from the loop */
    int                  end_on_free;   /* ended on purpose: c2s_free ends it, no resumption */
    int                  detached;      /* transport gone, waiting for <resume/> */
    int                  taken_over;    /* resumed by another stream: nothing left here */
    int                  kept_addr;     /* detached: holds a max_sessions_per_addr slot */
    int                  sm_listed;     /* in d->sm_sessions */
    int                  overflow_logged;
    c2s                 *sm_prev, *sm_next;
};

static void process(c2s *s, xs_node *st);
static void sm_nonza(c2s *s, const xs_node *st);

/* ---------------------------------------------------------------- output */

static void send_node(c2s *s, const xs_node *n) {
    strbuf sb = STRBUF_INIT;
    if (s->closed) return;
    xs_serialize(n, NS_CLIENT, &sb);
    s->ops->send(s->t, sb.data, sb.len);
    sb_free(&sb);
}

static void sm_end_soon(c2s *s);
static void sm_overflow(c2s *s);
static void sm_maybe_request(c2s *s);

void c2s_close(c2s *s, const char *condition, const char *text) {
    /* Only a connection that timed out may be resumed: a client's own
     * </stream:stream>, a kick, a conflict or a policy close end the
     * session when the transport frees it. */
    if (!condition || strcmp(condition, "connection-timeout") != 0) s->end_on_free = 1;
    if (s->detached) { sm_end_soon(s); return; }
    if (s->closed) return;
    s->closed = 1;
    if (condition)
        log_info("c2s %s %s: closing stream: %s%s%s", s->ops->kind, s->peer,
                 condition, text ? ": " : "", text ? text : "");
    s->ops->close(s->t, condition, text);
}

/* Every stanza to the client. With stream management on, it is numbered
 * and kept until acknowledged, also while the stream is closing or the
 * session is detached: then it is resent on resumption or routed again
 * when the session ends, never dropped. */
static void out_stanza(c2s *s, const char *xml, size_t len) {
    if (s->taken_over) return;
    int live = !s->closed && !s->detached;
    if (s->sm_on) {
        const chatd_config *cfg = &s->d->cfg;
        int over = sm_push(&s->sm, xml, len, time(NULL), cfg->sm_max_unacked,
                           cfg->sm_max_unacked_bytes);
        if (live) {
            s->ops->send(s->t, xml, len);
            s->d->stats.stanzas_out++;
        }
        if (over) sm_overflow(s);
        else if (live) sm_maybe_request(s);
        return;
    }
    if (!live) return;
    s->ops->send(s->t, xml, len);
    s->d->stats.stanzas_out++;
}

void c2s_deliver(c2s *s, const xs_node *stanza) {
    if (s->taken_over || (s->closed && !s->sm_on)) return;
    strbuf sb = STRBUF_INIT;
    xs_serialize(stanza, NS_CLIENT, &sb);
    out_stanza(s, sb.data, sb.len);
    sb_free(&sb);
}

void c2s_deliver_raw(c2s *s, const char *xml, size_t len) {
    out_stanza(s, xml, len);
}

static void random_hex(char *out, size_t nbytes) {
    unsigned char buf[32];
    static const char hex[] = "0123456789abcdef";
    if (nbytes > sizeof buf) nbytes = sizeof buf;
    if (RAND_bytes(buf, (int)nbytes) != 1) abort();   /* no entropy: no ids */
    for (size_t i = 0; i < nbytes; i++) {
        out[2 * i] = hex[buf[i] >> 4];
        out[2 * i + 1] = hex[buf[i] & 15];
    }
    out[2 * nbytes] = '\0';
}

/* ------------------------------------------------------------ lifetime */

static char *xstrdup(const char *s) {
    char *d = strdup(s);
    if (!d) abort();
    return d;
}

c2s *c2s_new(chatd *d, const c2s_transport *ops, void *t, int secure,
             const char *peer) {
    c2s *s = calloc(1, sizeof *s);
    if (!s) abort();
    s->d = d;
    s->ops = ops;
    s->t = t;
    s->secure = secure;
    s->peer = xstrdup(peer ? peer : "?");
    s->addr = xstrdup(peer ? peer : "");
    return s;
}

static int  sm_keep(const c2s *s);
static void sm_detach(c2s *s);
static void sm_unlist(c2s *s);
static void sm_reroute(c2s *s);

/* The session really ends: unavailable presence, rooms left, and (stream
 * management) what the client never acknowledged routed again. */
static void c2s_destroy(c2s *s) {
    loop *l = s->d->loop;
    sm_unlist(s);
    users_sasl_free(s->sasl);        /* forgets a pending Redis lookup */
    s->sasl = NULL;
    if (s->fail_timer) loop_timer_cancel(l, s->fail_timer);
    if (s->sm_timer) loop_timer_cancel(l, s->sm_timer);
    if (s->end_timer) loop_timer_cancel(l, s->end_timer);
    if (s->d->router) router_session_gone(s->d, s);
    if (s->sm_on && !s->taken_over && s->d->router) sm_reroute(s);
    sm_clear(&s->sm);
    if (s->detached) {
        if (s->d->stats.c2s_sessions) s->d->stats.c2s_sessions--;
        if (s->kept_addr) chatd_addr_slot_release(s->d, s->addr);
        if (s->d->stats.sm_detached) s->d->stats.sm_detached--;
    }
    while (s->queue) {
        queued *q = s->queue;
        s->queue = q->next;
        xs_free(q->stanza);
        free(q);
    }
    free(s->peer);
    free(s->addr);
    free(s->vouched);
    free(s->vouched_name);
    free(s->user);
    free(s->jid);
    free(s);
}

void c2s_free(c2s *s) {
    if (!s) return;
    if (sm_keep(s)) sm_detach(s);
    else c2s_destroy(s);
}

void c2s_set_secure(c2s *s, int secure) { s->secure = secure; }

void c2s_set_peer(c2s *s, const char *peer) {
    free(s->peer);
    s->peer = xstrdup(peer ? peer : "?");
}

void c2s_set_client_addr(c2s *s, const char *addr) {
    free(s->addr);
    s->addr = xstrdup(addr ? addr : "");
}

void c2s_set_vouched_user(c2s *s, const char *user) {
    free(s->vouched);
    s->vouched = user ? xstrdup(user) : NULL;
}

void c2s_set_vouched_name(c2s *s, const char *name) {
    free(s->vouched_name);
    s->vouched_name = name && *name ? xstrdup(name) : NULL;
}

void **c2s_router_slot(c2s *s) { return &s->router_slot; }
const char *c2s_jid(const c2s *s) { return s->jid; }
const char *c2s_stream_id(const c2s *s) { return s->stream_id; }
const char *c2s_kind(const c2s *s) { return s->ops->kind; }
const char *c2s_peer(const c2s *s) { return s->peer; }

/* ------------------------------------------------------------- features */

static int tls_offered(const c2s *s) {
    return s->ops->starttls && !s->secure && s->d->cfg.tls_cert && s->d->cfg.tls_cert[0];
}

static int plain_allowed(const c2s *s) {
    return s->secure || s->d->cfg.allow_plain_without_tls;
}

/* TLS is mandatory when it is the only way to get PLAIN. */
static int tls_required(const c2s *s) {
    return tls_offered(s) && !s->d->cfg.allow_plain_without_tls;
}

static int mechanism_offered(const c2s *s, const char *mech) {
    /* A vouched stream is for that user only: EXTERNAL alone, so a stock
     * client (Strophe ranks SCRAM above EXTERNAL) never tries a password. */
    if (s->vouched) return strcmp(mech, "EXTERNAL") == 0;
    if (strcmp(mech, "SCRAM-SHA-256") == 0 || strcmp(mech, "SCRAM-SHA-1") == 0) return 1;
    if (strcmp(mech, "PLAIN") == 0) return plain_allowed(s);
    return 0;
}

static void send_features(c2s *s) {
    xs_node *f = xs_new(NS_STREAMS, "features");
    if (!s->user) {
        if (tls_offered(s)) {
            xs_node *tls = xs_add_elem(f, NS_TLS, "starttls");
            if (tls_required(s)) xs_add_elem(tls, NS_TLS, "required");
        }
        xs_node *mechs = xs_add_elem(f, NS_SASL, "mechanisms");
        static const char *const order[] = { "EXTERNAL", "SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN", NULL };
        for (int i = 0; order[i]; i++) {
            if (!mechanism_offered(s, order[i])) continue;
            xs_node *m = xs_add_elem(mechs, NS_SASL, "mechanism");
            xs_add_text(m, order[i], strlen(order[i]));
        }
    } else {
        xs_add_elem(f, NS_BIND, "bind");
        xs_node *sess = xs_add_elem(f, NS_SESSION, "session");
        xs_add_elem(sess, NS_SESSION, "optional");
        xs_add_elem(f, NS_CSI, "csi");          /* XEP-0352 (csi.c via the router) */
        /* RFC 6121 §2.6 roster versioning (roster.c) */
        xs_add_elem(f, "urn:xmpp:features:rosterver", "ver");
        if (s->ops->stream_management && s->d->cfg.sm_max_unacked)
            xs_add_elem(f, NS_SM, "sm");        /* XEP-0198 */
    }
    send_node(s, f);
    xs_free(f);
}

void c2s_stream_start(c2s *s, const char *to, const char *version,
                      const char *lang) {
    (void)lang;
    if (s->closed) return;
    random_hex(s->stream_id, 16);
    s->stream_started = 1;
    /* The error goes inside a stream, so open ours first (RFC 6120 4.9.1.3). */
    s->ops->stream_open(s->t, s->stream_id);
    if (!to || !s->d->cfg.domain || strcasecmp(to, s->d->cfg.domain) != 0) {
        c2s_close(s, "host-unknown", NULL);
        return;
    }
    if (version && strncmp(version, "1.", 2) != 0) {
        c2s_close(s, "unsupported-version", NULL);
        return;
    }
    /* A restart ends any half-done SASL exchange. */
    if (!s->sasl_busy) {
        users_sasl_free(s->sasl);
        s->sasl = NULL;
        s->sasl_awaiting_initial = 0;
    }
    send_features(s);
}

void c2s_stream_end(c2s *s) {
    c2s_close(s, NULL, NULL);
}

/* ----------------------------------------------------------------- SASL */

static void sasl_send(c2s *s, const char *name, const char *data, size_t len) {
    xs_node *n = xs_new(NS_SASL, name);
    if (data && len) {
        char *b64 = malloc(4 * ((len + 2) / 3) + 1);
        if (!b64) abort();
        size_t bl = scram_b64_encode((const unsigned char *)data, len, b64);
        xs_add_text(n, b64, bl);
        free(b64);
    } else if (data && strcmp(name, "success") == 0) {
        /* empty additional data is "=" (RFC 6120 6.4.6) */
        xs_add_text(n, "=", 1);
    }
    send_node(s, n);
    xs_free(n);
}

static void sasl_failure(c2s *s, const char *condition, int counts) {
    xs_node *n = xs_new(NS_SASL, "failure");
    xs_add_elem(n, NS_SASL, condition);
    send_node(s, n);
    xs_free(n);
    if (counts) {
        s->d->stats.auth_fail++;
        if (++s->auth_failures >= C2S_MAX_AUTH_FAILURES)
            c2s_close(s, "policy-violation", "too many failed authentication attempts");
    }
}

static void sasl_success(c2s *s, const char *user, const char *data, size_t len) {
    free(s->user);
    s->user = xstrdup(user);
    s->d->stats.auth_ok++;
    log_info("c2s %s %s: authenticated as %s@%s", s->ops->kind, s->peer, user,
             s->d->cfg.domain);
    sasl_send(s, "success", data, len);
    if (s->ops->stream_restart && !s->closed) s->ops->stream_restart(s->t);
}

static void drain(c2s *s);

/* One line per 10 s at most, however many attempts are throttled. */
static void log_throttled(c2s *s, const char *account) {
    static uint64_t last;
    static unsigned long suppressed;
    uint64_t now = loop_now_ms(s->d->loop);
    if (last && now - last < 10000) { suppressed++; return; }
    log_warn("BOSH00203: sign-in throttled: '%s' from %s is over the failure limit "
             "(auth_fail_account %u, auth_fail_addr %u); answered not-authorized after "
             "%u ms (%lu more throttled since the last line)",
             account && *account ? account : "?", s->addr, s->d->cfg.auth_fail_account,
             s->d->cfg.auth_fail_addr, s->d->cfg.auth_fail_delay_ms, suppressed);
    last = now ? now : 1;
    suppressed = 0;
}

static void delayed_failure(loop *l, void *ud) {
    (void)l;
    c2s *s = ud;
    s->fail_timer = NULL;
    s->sasl_busy = 0;
    sasl_failure(s, "not-authorized", 1);
    drain(s);
}

/* A not-authorized answer: count it; over the limit, answer later. 1 if
 * the answer was deferred. */
static int count_failure(c2s *s) {
    if (!s->d->auth_guard || !s->d->loop) return 0;
    const char *account = users_sasl_attempted_user(s->sasl);
    int was_blocked = users_sasl_throttled(s->sasl);
    auth_guard_fail(s->d->auth_guard, account, s->addr, loop_now_ms(s->d->loop));
    if (!was_blocked) return 0;
    s->d->stats.auth_throttled++;
    log_throttled(s, account);
    s->sasl_busy = 1;               /* input waits for the answer */
    s->fail_timer = loop_timer_add(s->d->loop, s->d->cfg.auth_fail_delay_ms,
                                   delayed_failure, s);
    return 1;
}

static void sasl_done(void *ud, users_sasl_result r, const char *data, size_t len,
                      const char *condition) {
    c2s *s = ud;
    s->sasl_busy = 0;
    switch (r) {
    case USERS_SASL_CONTINUE:
        sasl_send(s, "challenge", data, len);
        break;
    case USERS_SASL_SUCCESS:
        /* the account's failures go; the address's stay (auth_guard.h) */
        if (s->d->auth_guard) auth_guard_success(s->d->auth_guard, users_sasl_user(s->sasl));
        sasl_success(s, users_sasl_user(s->sasl), data, len);
        break;
    case USERS_SASL_FAILURE:
        if (condition && strcmp(condition, "not-authorized") == 0 &&
            s->sasl && users_sasl_attempted_user(s->sasl)[0] && count_failure(s))
            break;
        /* temporary-auth-failure is Redis, not the client: do not count it */
        sasl_failure(s, condition ? condition : "not-authorized",
                     !condition || strcmp(condition, "temporary-auth-failure") != 0);
        break;
    }
    if (!s->in_step) drain(s);
}

static void sasl_step(c2s *s, const char *data, size_t len) {
    s->sasl_busy = 1;
    s->in_step = 1;
    users_sasl_step(s->sasl, data, len, sasl_done, s);
    s->in_step = 0;
}

/* Decode SASL element text: "" = no data (returns 1 via *absent), "=" =
 * empty data. Whitespace is ignored. Returns malloc'd bytes or NULL. */
static char *sasl_decode(const xs_node *n, size_t *len, int *absent) {
    char *text = xs_text(n);
    size_t o = 0;
    for (size_t i = 0; text[i]; i++)
        if (text[i] != ' ' && text[i] != '\n' && text[i] != '\r' && text[i] != '\t')
            text[o++] = text[i];
    text[o] = '\0';
    *absent = o == 0;
    if (o == 0 || strcmp(text, "=") == 0) {
        *len = 0;
        free(text);
        char *e = malloc(1);
        if (!e) abort();
        e[0] = '\0';
        return e;
    }
    char *out = malloc(o + 1);
    if (!out) abort();
    if (scram_b64_decode(text, o, (unsigned char *)out, o, len) != 0) {
        free(text);
        free(out);
        return NULL;
    }
    out[*len] = '\0';
    free(text);
    return out;
}

static void handle_sasl(c2s *s, xs_node *st) {
    size_t len = 0;
    int absent = 0;

    if (s->user) {                  /* already authenticated */
        c2s_close(s, "policy-violation", "already authenticated");
        return;
    }
    if (strcmp(st->name, "abort") == 0) {
        users_sasl_free(s->sasl);
        s->sasl = NULL;
        s->sasl_awaiting_initial = 0;
        sasl_failure(s, "aborted", 0);
        return;
    }
    if (strcmp(st->name, "auth") == 0) {
        const char *mech = xs_attr_get(st, "mechanism");
        users_sasl_free(s->sasl);
        s->sasl = NULL;
        s->sasl_awaiting_initial = 0;
        if (!mech || !mechanism_offered(s, mech)) {
            sasl_failure(s, "invalid-mechanism", 1);
            return;
        }
        if (tls_required(s) && strcmp(mech, "EXTERNAL") != 0) {
            sasl_failure(s, "encryption-required", 0);
            return;
        }
        char *data = sasl_decode(st, &len, &absent);
        if (!data) {
            sasl_failure(s, "incorrect-encoding", 1);
            return;
        }
        /* EXTERNAL: the transport vouched for s->vouched; users.c checks
         * the authzid and finds (or provisions) the account. */
        s->sasl = strcmp(mech, "EXTERNAL") == 0
                  ? users_sasl_new_external(s->d, s->vouched, s->vouched_name)
                  : users_sasl_new(s->d, mech, s->addr);
        if (!s->sasl) {
            free(data);
            sasl_failure(s, "invalid-mechanism", 1);
            return;
        }
        if (absent) {
            /* No initial response: ask for it with an empty challenge. */
            s->sasl_awaiting_initial = 1;
            sasl_send(s, "challenge", NULL, 0);
        } else {
            sasl_step(s, data, len);
        }
        free(data);
        return;
    }
    if (strcmp(st->name, "response") == 0) {
        if (!s->sasl) {
            sasl_failure(s, "malformed-request", 1);
            return;
        }
        char *data = sasl_decode(st, &len, &absent);
        if (!data) {
            sasl_failure(s, "incorrect-encoding", 1);
            return;
        }
        s->sasl_awaiting_initial = 0;
        sasl_step(s, data, len);
        free(data);
        return;
    }
    /* <success/>, <challenge/> ... from a client */
    c2s_close(s, "unsupported-stanza-type", NULL);
}

static void handle_starttls(c2s *s) {
    if (!tls_offered(s) || s->user || s->sasl) {
        xs_node *f = xs_new(NS_TLS, "failure");
        send_node(s, f);
        xs_free(f);
        c2s_close(s, NULL, NULL);
        return;
    }
    xs_node *p = xs_new(NS_TLS, "proceed");
    send_node(s, p);
    xs_free(p);
    if (s->ops->starttls(s->t) != 0) {
        log_warn("c2s %s %s: STARTTLS could not start", s->ops->kind, s->peer);
        c2s_close(s, "internal-server-error", "TLS unavailable");
    }
}

/* -------------------------------------------------------------- stanzas */

/* Reply to st with a stanza error (never to an error). */
static void stanza_error(c2s *s, const xs_node *st, const char *type,
                         const char *condition, int from_domain) {
    const char *t = xs_attr_get(st, "type");
    if (t && strcmp(t, "error") == 0) return;
    xs_node *e = xs_new(NS_CLIENT, st->name);
    const char *to = xs_attr_get(st, "to");
    const char *id = xs_attr_get(st, "id");
    xs_set_attr(e, "from", (!from_domain && to) ? to : s->d->cfg.domain);
    if (s->jid) xs_set_attr(e, "to", s->jid);
    if (id) xs_set_attr(e, "id", id);
    xs_set_attr(e, "type", "error");
    xs_node *err = xs_add_elem(e, NS_CLIENT, "error");
    xs_set_attr(err, "type", type);
    xs_add_elem(err, NS_STANZAS, condition);
    c2s_deliver(s, e);
    xs_free(e);
}

static void iq_result_empty(c2s *s, const xs_node *st, xs_node *payload) {
    xs_node *r = xs_new(NS_CLIENT, "iq");
    const char *id = xs_attr_get(st, "id");
    if (id) xs_set_attr(r, "id", id);
    xs_set_attr(r, "type", "result");
    if (s->jid) xs_set_attr(r, "to", s->jid);
    if (payload) xs_append_child(r, payload);
    c2s_deliver(s, r);
    xs_free(r);
}

/* Resourcepart: 1..1023 bytes, no control characters (RFC 7622, simplified). */
static int resource_ok(const char *r) {
    size_t n = strlen(r);
    if (n == 0 || n > JID_PART_MAX) return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)r[i] < 0x20 || r[i] == 0x7f) return 0;
    return 1;
}

static void handle_bind(c2s *s, xs_node *st, xs_node *bind) {
    char resource[JID_PART_MAX + 1];
    if (s->jid) {
        stanza_error(s, st, "cancel", "not-allowed", 1);
        return;
    }
    xs_node *res = xs_child(bind, NS_BIND, "resource");
    char *want = res ? xs_text(res) : NULL;
    if (want) {
        /* trim surrounding whitespace */
        char *b = want, *e;
        while (*b == ' ' || *b == '\t' || *b == '\n' || *b == '\r') b++;
        e = b + strlen(b);
        while (e > b && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r')) *--e = '\0';
        memmove(want, b, (size_t)(e - b) + 1);
    }
    if (want && want[0]) {
        if (!resource_ok(want)) {
            free(want);
            stanza_error(s, st, "modify", "bad-request", 1);
            return;
        }
        snprintf(resource, sizeof resource, "%s", want);
    } else {
        memcpy(resource, "chat-", 5);
        random_hex(resource + 5, 8);
    }
    free(want);

    size_t n = strlen(s->user) + strlen(s->d->cfg.domain) + strlen(resource) + 3;
    char *full = malloc(n);
    if (!full) abort();
    snprintf(full, n, "%s@%s/%s", s->user, s->d->cfg.domain, resource);
    jid j;
    if (jid_parse(full, &j) != 0) {
        free(full);
        stanza_error(s, st, "modify", "bad-request", 1);
        return;
    }
    if (router_bind(s->d, s, full) != 0) {
        free(full);
        stanza_error(s, st, "wait", "internal-server-error", 1);
        return;
    }
    s->jid = full;
    log_info("c2s %s %s: bound %s", s->ops->kind, s->peer, full);
    xs_node *b = xs_new(NS_BIND, "bind");
    xs_node *jn = xs_add_elem(b, NS_BIND, "jid");
    xs_add_text(jn, full, strlen(full));
    iq_result_empty(s, st, b);
}

/* iq set bind/session; 1 if st was one of those (and answered). */
static int handle_stream_iq(c2s *s, xs_node *st) {
    if (!xs_is(st, NS_CLIENT, "iq")) return 0;
    const char *type = xs_attr_get(st, "type");
    xs_node *bind = xs_child(st, NS_BIND, "bind");
    xs_node *sess = xs_child(st, NS_SESSION, "session");
    if (!bind && !sess) return 0;
    if (!type || strcmp(type, "set") != 0) {
        stanza_error(s, st, "modify", "bad-request", 1);
        return 1;
    }
    if (bind) handle_bind(s, st, bind);
    else iq_result_empty(s, st, NULL);      /* RFC 3921 session: a no-op now */
    return 1;
}

static int one_of(const char *v, const char *const *list) {
    for (; *list; list++)
        if (strcmp(v, *list) == 0) return 1;
    return 0;
}

/* RFC 6120 8.2.3 / RFC 6121: 0 if st may be routed (type fixed up),
 * -1 if it was answered with an error and must be dropped. */
static int check_type(c2s *s, xs_node *st) {
    static const char *const iq_types[] = { "get", "set", "result", "error", NULL };
    static const char *const pres_types[] = { "unavailable", "subscribe", "subscribed",
        "unsubscribe", "unsubscribed", "probe", "error", NULL };
    static const char *const msg_types[] = { "chat", "error", "groupchat", "headline",
        "normal", NULL };
    const char *type = xs_attr_get(st, "type");

    if (strcmp(st->name, "iq") == 0) {
        if (!type || !one_of(type, iq_types) || !xs_attr_get(st, "id")) {
            stanza_error(s, st, "modify", "bad-request", 1);
            return -1;
        }
        if (strcmp(type, "get") == 0 || strcmp(type, "set") == 0) {
            xs_node *c = xs_child(st, NULL, NULL);
            if (!c || xs_next_elem(c, NULL, NULL)) {
                stanza_error(s, st, "modify", "bad-request", 1);
                return -1;
            }
        }
    } else if (strcmp(st->name, "presence") == 0) {
        if (type && !one_of(type, pres_types)) {
            stanza_error(s, st, "modify", "bad-request", 1);
            return -1;
        }
    } else {
        /* unknown or missing message type means normal (RFC 6121 5.2.2) */
        if (!type || !one_of(type, msg_types)) xs_set_attr(st, "type", "normal");
    }
    return 0;
}

/* BOSH clients may leave stanzas in the httpbind (or no) namespace; on
 * our wire they are jabber:client. */
static void fix_namespace(xs_node *n) {
    if (n->name && n->ns && (n->ns[0] == '\0' || strcmp(n->ns, NS_HTTPBIND) == 0)) {
        free(n->ns);
        n->ns = xstrdup(NS_CLIENT);
    }
    for (xs_node *c = n->first_child; c; c = c->next)
        if (c->name) fix_namespace(c);
}

/* Bytes the stanza takes on the wire, near enough (names, attributes and
 * text; escaping ignored): what the byte bucket charges. */
static size_t stanza_size(const xs_node *n) {
    if (!n->name) return n->text_len;
    size_t sz = 2 * strlen(n->name) + 5;
    for (size_t i = 0; i < n->nattrs; i++)
        sz += strlen(n->attrs[i].name) + strlen(n->attrs[i].value) + 4;
    for (const xs_node *c = n->first_child; c; c = c->next) sz += stanza_size(c);
    return sz;
}

/*
 * Flood control: a stanza bucket (stanza_rate/s, stanza_burst) and a byte
 * bucket (byte_rate B/s, byte_burst) per session, native and BOSH alike.
 * Over either, the stanza is refused with <policy-violation/> type wait
 * (RFC 6120 8.3.3.12: local policy) and not routed; after
 * stanza_flood_close refusals in a row the stream is closed with the
 * stream error policy-violation. The byte bucket is the fair fix for big
 * room messages: a room multiplies a sender's bytes into every
 * occupant's output buffer, and a burst above max_output disconnected the
 * slowest *recipients*; with byte_burst well below max_output one sender
 * can no longer do that, and a sender who goes on pays, not the others.
 * Returns 1 to route the stanza, 0 when it was refused (and freed).
 */
static int flood_ok(c2s *s, xs_node *st) {
    const chatd_config *cfg = &s->d->cfg;
    uint64_t now = loop_now_ms(s->d->loop);
    if (tb_take(&s->stanza_tb, cfg->stanza_rate, cfg->stanza_burst, 1, now) &&
        tb_take(&s->byte_tb, cfg->byte_rate, cfg->byte_burst, (double)stanza_size(st), now)) {
        s->refused_in_row = 0;
        return 1;
    }
    s->d->stats.stanzas_refused++;
    if (cfg->stanza_flood_close && ++s->refused_in_row >= cfg->stanza_flood_close) {
        s->d->stats.flood_closed++;
        log_warn("BOSH00353: %s %s (%s): %u stanzas refused in a row over "
                 "stanza_rate/byte_rate; closing the stream", s->ops->kind, s->peer,
                 s->jid ? s->jid : "?", s->refused_in_row);
        c2s_close(s, "policy-violation", "stanza flood: too many stanzas or bytes too fast");
        xs_free(st);
        return 0;
    }
    if (s->refused_in_row == 1)
        log_info("BOSH00354: %s %s (%s): over stanza_rate/byte_rate; refusing "
                 "stanzas with policy-violation", s->ops->kind, s->peer, s->jid ? s->jid : "?");
    stanza_error(s, st, "wait", "policy-violation", 1);
    xs_free(st);
    return 0;
}

int c2s_send_ping(c2s *s) {
    if (s->closed || !s->jid) return -1;
    char id[32];
    snprintf(id, sizeof id, "c2s-ping-%u", ++s->ping_seq);
    xs_node *iq = xs_new(NS_CLIENT, "iq");
    xs_set_attr(iq, "from", s->d->cfg.domain);
    xs_set_attr(iq, "to", s->jid);
    xs_set_attr(iq, "id", id);
    xs_set_attr(iq, "type", "get");
    xs_add_elem(iq, "urn:xmpp:ping", "ping");
    c2s_deliver(s, iq);             /* a stanza: XEP-0198 counts it */
    xs_free(iq);
    return 0;
}

int c2s_is_bound(const c2s *s) { return s->jid != NULL; }

static void handle_bound_stanza(c2s *s, xs_node *st) {
    if (!xs_is(st, NS_CLIENT, "message") && !xs_is(st, NS_CLIENT, "presence") &&
        !xs_is(st, NS_CLIENT, "iq")) {
        c2s_close(s, "unsupported-stanza-type", NULL);
        xs_free(st);
        return;
    }
    if (!flood_ok(s, st)) return;
    const char *to = xs_attr_get(st, "to");
    if (to && *to) {
        jid j;
        if (jid_parse(to, &j) != 0) {
            stanza_error(s, st, "modify", "jid-malformed", 1);
            xs_free(st);
            return;
        }
    }
    if (check_type(s, st) != 0) {
        xs_free(st);
        return;
    }
    /* The server, not the client, says who sent it (RFC 6120 8.1.2.1). */
    xs_set_attr(st, "from", s->jid);
    router_route(s->d, s, st);
}

static void process(c2s *s, xs_node *st) {
    if (s->closed) {
        xs_free(st);
        return;
    }
    s->d->stats.stanzas_in++;
    fix_namespace(st);

    if (st->ns && strcmp(st->ns, NS_SASL) == 0) {
        handle_sasl(s, st);
        xs_free(st);
        return;
    }
    if (st->ns && strcmp(st->ns, NS_TLS) == 0 && strcmp(st->name, "starttls") == 0) {
        handle_starttls(s);
        xs_free(st);
        return;
    }
    if (!s->user) {
        c2s_close(s, "not-authorized", NULL);
        xs_free(st);
        return;
    }
    /* XEP-0198: every stanza after <enable/> is counted as handled. */
    if (s->sm_on && (xs_is(st, NS_CLIENT, "message") || xs_is(st, NS_CLIENT, "presence") ||
                     xs_is(st, NS_CLIENT, "iq")))
        sm_count_in(&s->sm);
    if (st->ns && strcmp(st->ns, NS_SM) == 0) {
        sm_nonza(s, st);
        xs_free(st);
        return;
    }
    if (handle_stream_iq(s, st)) {
        xs_free(st);
        return;
    }
    if (!s->jid) {
        c2s_close(s, "not-authorized", "bind a resource first");
        xs_free(st);
        return;
    }
    /* XEP-0352 nonzas <active/>/<inactive/>: the router holds stanzas. */
    if (st->ns && strcmp(st->ns, NS_CSI) == 0) {
        if (strcmp(st->name, "active") == 0 || strcmp(st->name, "inactive") == 0)
            router_client_state(s->d, s, strcmp(st->name, "active") == 0);
        xs_free(st);
        return;
    }
    handle_bound_stanza(s, st);
}

/* Replay what arrived while SASL waited, in order. */
static void drain(c2s *s) {
    if (s->draining) return;
    s->draining = 1;
    while (s->queue && !s->sasl_busy && !s->closed) {
        queued *q = s->queue;
        s->queue = q->next;
        if (!s->queue) s->queue_tail = NULL;
        s->queue_len--;
        xs_node *st = q->stanza;
        free(q);
        process(s, st);
    }
    s->draining = 0;
}

void c2s_stanza(c2s *s, xs_node *stanza) {
    if (s->closed) {
        xs_free(stanza);
        return;
    }
    if (s->sasl_busy || s->queue) {
        if (s->queue_len >= C2S_MAX_QUEUED) {
            xs_free(stanza);
            c2s_close(s, "policy-violation", "too many stanzas during authentication");
            return;
        }
        queued *q = calloc(1, sizeof *q);
        if (!q) abort();
        q->stanza = stanza;
        if (s->queue_tail) s->queue_tail->next = q;
        else s->queue = q;
        s->queue_tail = q;
        s->queue_len++;
        drain(s);
        return;
    }
    process(s, stanza);
    drain(s);
}

/* ------------------------------------------------- XEP-0198 stream management */

/* Resumable sessions, for <resume previd=/>. A list: resumptions are rare
 * and every entry is compared in constant time. */
static void sm_list(c2s *s) {
    if (s->sm_listed) return;
    s->sm_prev = NULL;
    s->sm_next = s->d->sm_sessions;
    if (s->sm_next) s->sm_next->sm_prev = s;
    s->d->sm_sessions = s;
    s->sm_listed = 1;
}

static void sm_unlist(c2s *s) {
    if (!s->sm_listed) return;
    if (s->sm_prev) s->sm_prev->sm_next = s->sm_next;
    else s->d->sm_sessions = s->sm_next;
    if (s->sm_next) s->sm_next->sm_prev = s->sm_prev;
    s->sm_prev = s->sm_next = NULL;
    s->sm_listed = 0;
}

static c2s *sm_find(chatd *d, const char *id) {
    if (!id || strlen(id) != 32) return NULL;
    for (c2s *x = d->sm_sessions; x; x = x->sm_next)
        if (CRYPTO_memcmp(x->sm_id, id, 32) == 0) return x;
    return NULL;
}

static int sm_offered(const c2s *s) {
    return s->ops->stream_management && s->d->cfg.sm_max_unacked;
}

static void sm_send_raw(c2s *s, const char *xml) {
    if (!s->closed && !s->detached) s->ops->send(s->t, xml, strlen(xml));
}

static void sm_failed(c2s *s, const char *condition, const uint32_t *h) {
    xs_node *f = xs_new(NS_SM, "failed");
    char hb[16];
    if (h) {
        snprintf(hb, sizeof hb, "%u", (unsigned)*h);
        xs_set_attr(f, "h", hb);
    }
    xs_add_elem(f, NS_STANZAS, condition);
    send_node(s, f);
    xs_free(f);
}

static void sm_send_r(c2s *s) {
    s->sm.since_request = 0;
    sm_send_raw(s, "<r xmlns='" NS_SM "'/>");
}

static void sm_ack_timer_cb(loop *l, void *ud) {
    (void)l;
    c2s *s = ud;
    s->sm_timer = NULL;
    if (!s->closed && !s->detached && s->sm.n) sm_send_r(s);
}

/* After a stanza went out: ask for an ack after sm_ack_every stanzas, or
 * when data stays unacked sm_ack_interval seconds. */
static void sm_maybe_request(c2s *s) {
    const chatd_config *cfg = &s->d->cfg;
    if (cfg->sm_ack_every && s->sm.since_request >= cfg->sm_ack_every) sm_send_r(s);
    if (cfg->sm_ack_interval && !s->sm_timer && s->sm.n && s->d->loop)
        s->sm_timer = loop_timer_add(s->d->loop, (uint64_t)cfg->sm_ack_interval * 1000,
                                     sm_ack_timer_cb, s);
}

static void sm_end_cb(loop *l, void *ud) {
    (void)l;
    c2s *s = ud;
    s->end_timer = NULL;
    c2s_destroy(s);
}

/* A detached session ends from the loop, never inside the caller (a
 * router delivery, a kick walking the sessions). */
static void sm_end_soon(c2s *s) {
    if (!s->end_timer && s->d->loop) s->end_timer = loop_timer_add(s->d->loop, 0, sm_end_cb, s);
}

/* The queue is over sm_max_unacked / sm_max_unacked_bytes: the client
 * does not acknowledge (or, detached, does not come back) and we will not
 * hold more for it. Attached: stream error policy-violation; the session
 * ends and what it holds is routed again, so nothing is lost. */
static void sm_overflow(c2s *s) {
    if (!s->overflow_logged) {
        s->overflow_logged = 1;
        s->d->stats.sm_overflows++;
        log_warn("BOSH00956: %s %s (%s): %zu stanzas (%zu bytes) unacknowledged, over "
                 "sm_max_unacked %u / sm_max_unacked_bytes %u; ending the session",
                 s->ops->kind, s->peer, s->jid ? s->jid : "?", s->sm.n, s->sm.bytes,
                 s->d->cfg.sm_max_unacked, s->d->cfg.sm_max_unacked_bytes);
    }
    s->end_on_free = 1;
    if (s->detached) sm_end_soon(s);
    else c2s_close(s, "policy-violation", "too many unacknowledged stanzas");
}

static void sm_enable(c2s *s, const xs_node *st) {
    const chatd_config *cfg = &s->d->cfg;
    if (!sm_offered(s)) { sm_failed(s, "feature-not-implemented", NULL); return; }
    if (!s->jid || s->sm_on) { sm_failed(s, "unexpected-request", NULL); return; }
    const char *resume = xs_attr_get(st, "resume");
    int want = resume && (!strcmp(resume, "true") || !strcmp(resume, "1"));
    sm_init(&s->sm);
    s->sm_on = 1;
    xs_node *e = xs_new(NS_SM, "enabled");
    if (want && cfg->sm_resume_timeout) {
        /* the client may ask for less time (max), never for more */
        uint32_t cmax;
        unsigned max = cfg->sm_resume_timeout;
        if (sm_parse_h(xs_attr_get(st, "max"), &cmax) == 0 && cmax > 0 && cmax < max)
            max = cmax;
        char mb[16];
        snprintf(mb, sizeof mb, "%u", max);
        s->sm_max_s = max;
        s->sm_resumable = 1;
        random_hex(s->sm_id, 16);
        sm_list(s);
        xs_set_attr(e, "id", s->sm_id);
        xs_set_attr(e, "resume", "true");
        xs_set_attr(e, "max", mb);
    }
    send_node(s, e);
    xs_free(e);
}

/* An h the client claims beyond what we sent (XEP-0198 §4, 1.6.1). */
static void sm_too_high(c2s *s, uint32_t h) {
    char text[96];
    snprintf(text, sizeof text, "handled-count-too-high: h=%u, but only %u sent",
             (unsigned)h, (unsigned)s->sm.out_h);
    c2s_close(s, "undefined-condition", text);
}

static void sm_client_ack(c2s *s, const xs_node *st) {
    uint32_t h;
    if (sm_parse_h(xs_attr_get(st, "h"), &h) != 0) {
        c2s_close(s, "invalid-xml", "<a/> needs h, a number 0..2^32-1");
        return;
    }
    if (sm_ack(&s->sm, h) < 0) sm_too_high(s, h);
}

/* <resume previd h/> on a new stream of the same account (after SASL,
 * before bind): this stream takes the old session's place. */
static void sm_resume(c2s *s, const xs_node *st) {
    chatd *d = s->d;
    uint32_t h;
    if (!sm_offered(s)) { sm_failed(s, "feature-not-implemented", NULL); return; }
    if (s->jid || s->sm_on) { sm_failed(s, "unexpected-request", NULL); return; }
    if (sm_parse_h(xs_attr_get(st, "h"), &h) != 0) { sm_failed(s, "bad-request", NULL); return; }
    c2s *old = sm_find(d, xs_attr_get(st, "previd"));
    /* Unknown, expired, ended, or another account's: the same answer, so
     * a previd reveals nothing about who holds it. */
    if (!old || old == s || !old->user || strcmp(old->user, s->user) != 0 || !old->jid ||
        !old->router_slot || old->end_on_free || old->taken_over) {
        log_info("BOSH00953: %s %s (%s): <resume/> refused: no resumable session with "
                 "that id for this account", s->ops->kind, s->peer, s->user);
        sm_failed(s, "item-not-found", NULL);
        return;
    }
    if (!sm_ack_valid(&old->sm, h)) {
        char text[96];
        snprintf(text, sizeof text, "handled-count-too-high: h=%u, but only %u sent",
                 (unsigned)h, (unsigned)old->sm.out_h);
        c2s_close(s, "undefined-condition", text);
        return;
    }
    if (router_session_takeover(d, old, s) != 0) {
        sm_failed(s, "item-not-found", NULL);
        return;
    }
    /* The binding, the counters, the queue and the id pass to s. */
    s->jid = old->jid;
    old->jid = NULL;
    sm_move(&s->sm, &old->sm);
    sm_ack(&s->sm, h);                      /* what the client did get */
    s->sm_on = s->sm_resumable = 1;
    s->sm_max_s = old->sm_max_s;
    memcpy(s->sm_id, old->sm_id, sizeof s->sm_id);
    sm_unlist(old);
    sm_list(s);
    old->taken_over = 1;
    old->end_on_free = 1;
    d->stats.sm_resumed++;
    log_info("BOSH00952: %s %s: resumed %s (%s), resending %zu unacknowledged stanzas",
             s->ops->kind, s->peer, s->jid, old->detached ? "was detached" :
             "its old connection is closed", s->sm.n);

    char hb[16];
    snprintf(hb, sizeof hb, "%u", (unsigned)s->sm.in_h);
    xs_node *r = xs_new(NS_SM, "resumed");
    xs_set_attr(r, "previd", s->sm_id);
    xs_set_attr(r, "h", hb);
    send_node(s, r);
    xs_free(r);
    /* Resent stanzas keep their numbers: the client counts them from h. */
    for (sm_item *it = s->sm.head; it && !s->closed; it = it->next) {
        s->ops->send(s->t, it->xml, it->len);
        d->stats.stanzas_out++;
    }
    if (s->sm.n) sm_send_r(s);

    if (old->detached) {
        c2s_destroy(old);                   /* nothing of it is left to end */
    } else {
        /* Its connection is still open (the client noticed the drop
         * first): close it; the transport frees it, which ends nothing. */
        c2s_close(old, "conflict", "this session was resumed on another connection");
    }
}

static void sm_nonza(c2s *s, const xs_node *st) {
    const char *n = st->name;
    if (!strcmp(n, "enable")) {
        sm_enable(s, st);
    } else if (!strcmp(n, "resume")) {
        sm_resume(s, st);
    } else if (!strcmp(n, "r")) {
        if (!s->sm_on) return;
        char a[64];
        snprintf(a, sizeof a, "<a xmlns='" NS_SM "' h='%u'/>", (unsigned)s->sm.in_h);
        sm_send_raw(s, a);
    } else if (!strcmp(n, "a")) {
        if (s->sm_on) sm_client_ack(s, st);
    } else {
        c2s_close(s, "unsupported-stanza-type", NULL);
    }
}

static int sm_keep(const c2s *s) {
    return s->sm_resumable && !s->end_on_free && !s->taken_over && !s->detached &&
           !s->d->stopping && s->jid && s->router_slot && s->d->loop &&
           s->d->cfg.sm_resume_timeout;
}

static void sm_expire_cb(loop *l, void *ud) {
    (void)l;
    c2s *s = ud;
    s->sm_timer = NULL;
    s->d->stats.sm_expired++;
    log_info("BOSH00951: c2s %s (%s): not resumed within %u s; ending the session "
             "(%zu unacknowledged stanzas)", s->peer, s->jid, s->sm_max_s, s->sm.n);
    c2s_destroy(s);
}

static void sm_detached_open(void *t, const char *id) { (void)t; (void)id; }
static void sm_detached_send(void *t, const char *xml, size_t len) {
    (void)t; (void)xml; (void)len;
}
static void sm_detached_close(void *t, const char *condition, const char *text) {
    (void)t; (void)condition; (void)text;
}

/* What a detached session has for a transport: nothing is written;
 * stanzas still go into its queue (out_stanza). */
static const c2s_transport sm_detached_ops = {
    .kind = "detached",
    .stream_open = sm_detached_open,
    .send = sm_detached_send,
    .close = sm_detached_close,
};

/* The connection is gone and the session may be resumed: keep it bound
 * (no unavailable presence), holding its connection's session and
 * address slots, until sm_max_s runs out. */
static void sm_detach(c2s *s) {
    chatd *d = s->d;
    loop *l = d->loop;
    s->detached = 1;
    s->ops = &sm_detached_ops;
    s->t = s;
    users_sasl_free(s->sasl);
    s->sasl = NULL;
    if (s->fail_timer) loop_timer_cancel(l, s->fail_timer);
    s->fail_timer = NULL;
    if (s->sm_timer) loop_timer_cancel(l, s->sm_timer);
    s->sm_timer = loop_timer_add(l, (uint64_t)s->sm_max_s * 1000, sm_expire_cb, s);
    d->stats.c2s_sessions++;        /* the connection gives its own back */
    s->kept_addr = chatd_addr_slot_keep(d, s->addr);
    d->stats.sm_detached++;
    log_info("BOSH00950: c2s %s (%s): connection lost; session kept %u s for "
             "resumption (%zu unacknowledged stanzas)", s->peer, s->jid, s->sm_max_s,
             s->sm.n);
}

static int reroutable_message(const xs_node *st) {
    const char *type = xs_attr_get(st, "type");
    if (type && strcmp(type, "chat") != 0 && strcmp(type, "normal") != 0) return 0;
    if (!xs_child(st, NS_CLIENT, "body")) return 0;
    /* a carbon copy: the message itself went to another resource */
    if (xs_child(st, NS_CARBONS, "received") || xs_child(st, NS_CARBONS, "sent")) return 0;
    return 1;
}

/* The session ends with stanzas the client never acknowledged. Messages
 * (chat/normal with a body) are delivered again as if they had just
 * arrived, marked with when they first did (XEP-0203): the router gives
 * them to another available resource or to offline storage. An iq
 * request is answered service-unavailable for the client that cannot;
 * anything else (presence, groupchat, headline) is dropped, as it would
 * be for any session that ends. */
static void sm_reroute(c2s *s) {
    chatd *d = s->d;
    unsigned moved = 0, answered = 0, dropped = 0;
    for (sm_item *it = s->sm.head; it; it = it->next) {
        xs_node *st = NULL;
        char err[64];
        if (xs_parse_document(it->xml, it->len, it->len + 1, &st, err, sizeof err) != XS_OK ||
            !st) {
            dropped++;
            continue;
        }
        fix_namespace(st);
        const char *type = xs_attr_get(st, "type");
        const char *from = xs_attr_get(st, "from");
        if (xs_is(st, NS_CLIENT, "message") && reroutable_message(st)) {
            if (!xs_child(st, NS_DELAY, "delay")) {
                char stamp[32];
                struct tm tm;
                gmtime_r(&it->stamp, &tm);
                strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
                xs_node *delay = xs_add_elem(st, NS_DELAY, "delay");
                xs_set_attr(delay, "from", d->cfg.domain);
                xs_set_attr(delay, "stamp", stamp);
            }
            const char *to = xs_attr_get(st, "to");
            router_deliver(d, to && *to ? to : s->jid, st);
            moved++;
        } else if (xs_is(st, NS_CLIENT, "iq") && type && from &&
                   (!strcmp(type, "get") || !strcmp(type, "set")) &&
                   strcmp(from, d->cfg.domain) != 0) {
            xs_node *e = xs_new(NS_CLIENT, "iq");
            const char *id = xs_attr_get(st, "id");
            const char *to = xs_attr_get(st, "to");
            if (to) xs_set_attr(e, "from", to);
            xs_set_attr(e, "to", from);
            if (id) xs_set_attr(e, "id", id);
            xs_set_attr(e, "type", "error");
            xs_node *er = xs_add_elem(e, NS_CLIENT, "error");
            xs_set_attr(er, "type", "cancel");
            xs_add_elem(er, NS_STANZAS, "service-unavailable");
            router_route(d, NULL, e);       /* takes e */
            answered++;
        } else {
            dropped++;
        }
        xs_free(st);
    }
    if (moved || answered)
        log_info("BOSH00955: %s: %u unacknowledged messages routed again (another "
                 "resource or offline storage), %u iq answered with an error, %u other "
                 "stanzas dropped", s->jid ? s->jid : s->peer, moved, answered, dropped);
}

void c2s_sm_end_all(chatd *d) {
    c2s *x = d->sm_sessions;
    while (x) {
        c2s *next = x->sm_next;
        if (x->detached) c2s_destroy(x);
        x = next;
    }
}

/* ----------------------------------------------------------------- init */

int xmpp_init(chatd *d) {
    if (users_init(d) != 0) return -1;
    if (router_init(d) != 0) {
        users_free(d);
        return -1;
    }
    if (muc_init(d) != 0) {
        router_free(d);
        users_free(d);
        return -1;
    }
    if (mam_init(d) != 0) {
        muc_free(d);
        router_free(d);
        users_free(d);
        return -1;
    }
    return 0;
}

void xmpp_free(chatd *d) {
    c2s_sm_end_all(d);
    mam_free(d);
    muc_free(d);
    router_free(d);
    users_free(d);
}
