/*
 * c2s_native: XMPP clients on a TCP socket (RFC 6120), optionally STARTTLS.
 *
 * Each connection owns one streaming parser and one c2s session, and
 * implements c2s_transport for it. Output is buffered per connection and
 * written when the socket is writable; past cfg.max_output the client is
 * too slow to keep, so it is disconnected rather than buffered without end.
 *
 * Lifetime rule (c2s.h): a connection is destroyed (c2s_free) only from its
 * own I/O callback or from its own timer, never from inside a transport op,
 * because ops run in the middle of other sessions' work (a router kick, a
 * broadcast). Ops only set flags and arm the loop.
 *
 * Admission (common/admission.h), the same gate and pace as mod_bosh's:
 *   - The node's session cap (cfg.max_sessions, native + BOSH) is checked
 *     when the client opens its first stream: no Redis, just a count, and
 *     the stream header has been read so the client's parser is in step
 *     for our error. Over the cap: stream error resource-constraint
 *     (RFC 6120 4.9.3.16, "lacks the system resources ... to service the
 *     stream" is exactly a full node).
 *   - The sign-in script runs when the client sends its first SASL <auth>,
 *     not at stream open. Why there: it is the sign-in the gate and the
 *     bucket are meant to count (not TCP probes, keepalive reconnects that
 *     die in STARTTLS, or port scanners); the refusal text then travels
 *     inside TLS; and a Redis failure has a precise, retryable SASL answer
 *     (temporary-auth-failure, RFC 6120 6.5.12). The <auth> and anything
 *     after it are held here (c2s never sees them) until the script
 *     answers, asynchronously through redis_async: the loop never blocks.
 *   - A refusal is a stream error, never a SASL <not-authorized/>: stock
 *     clients read a SASL failure as "wrong password" and stop (or ask the
 *     user), but treat a stream error as a lost connection and reconnect
 *     with their own back-off, which is what a storm needs. Conditions
 *     (RFC 6120 4.9.3): closed gate and per-address cap are
 *     policy-violation (4.9.3.12: local policy, "MAY specify the policy in
 *     <text/>"), the operators' reason and the retry time in <text>; the
 *     server-wide rate is resource-constraint, since the whole service,
 *     not this client, is over its budget.
 *
 * Keeping the loop safe from one client (issue 14):
 *   - c2s_auth_timeout: a connection that has not bound a resource by then
 *     (no stream header, no SASL, no bind) is closed with the stream error
 *     connection-timeout (RFC 6120 4.9.3.4); before, it was held forever.
 *   - TCP keepalive (c2s_keepalive) and an XEP-0199 ping from the server
 *     after c2s_ping_idle seconds without input; with no input at all in
 *     c2s_ping_timeout more seconds the stream is closed (connection-
 *     timeout) and the session freed, so presence goes unavailable and
 *     messages go to offline storage instead of into a dead socket.
 *   - c2s_read_budget: one readable event consumes at most that many
 *     bytes, then the loop serves everyone else and comes back next turn
 *     (epoll is level-triggered; TLS-buffered bytes get a deferred timer).
 *   - accept failing for want of descriptors pauses the listener
 *     (listen_accept_paced) instead of spinning on it.
 */
#include "c2s_native.h"
#include "listen.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <openssl/rand.h>
#include "../../common/strbuf.h"
#include "../../common/xml_stream.h"
#include "../../common/admission.h"
#include "admin.h"
#include "c2s.h"
#include "log.h"
#include "rate.h"
#include "tls.h"

#define NATIVE_READ_CHUNK   16384
#define NATIVE_CLOSE_MS     5000   /* a closing peer that never reads */
#define NATIVE_STOP_FLUSH_MS 1000
#define STREAM_NS_URI "http://etherx.jabber.org/streams"
#define STREAMS_ERR_NS "urn:ietf:params:xml:ns:xmpp-streams"
#define SASL_NS "urn:ietf:params:xml:ns:xmpp-sasl"
#define NATIVE_MAX_HELD 32         /* stanzas held while admission runs */

typedef struct native_conn native_conn;

typedef struct held_stanza {
    struct held_stanza *next;
    xs_node *stanza;
} held_stanza;

enum { TLS_NONE, TLS_HANDSHAKE, TLS_ON };

struct native_conn {
    struct c2s_listener *lst;
    native_conn *prev, *next;
    int          fd;
    c2s         *s;
    xs_parser   *p;
    strbuf       out;
    SSL         *ssl;
    int          tls_state;
    int          starttls_pending;  /* flush <proceed/>, then handshake */
    int          tls_wants_write;   /* OpenSSL needs writability to go on */
    int          header_sent;
    int          closing;           /* stream closed: flush, then destroy */
    int          shut_wr;           /* all said and FIN sent: drain until EOF */
    int          dead;              /* destroy as soon as possible */
    int          in_feed;
    loop_timer  *timer;             /* close timeout or deferred destroy */
    char         peer[64];
    char         addr[INET6_ADDRSTRLEN]; /* host part: the per-address cap */
    int          counted;           /* holds a max_sessions slot (stats.c2s_sessions) */
    int          addr_counted;      /* holds a max_sessions_per_addr slot */
    int          admitted;          /* the sign-in script said yes */
    int          admitting;         /* the script is running; input is held */
    int          admit_use_sha;
    redis_async_req *admit_req;
    admission_argv admit_argv;
    held_stanza *held, *held_tail;  /* the <auth> first, then what followed */
    int          held_count;
    loop_timer  *watchdog;          /* sign-in deadline, then idle ping */
    loop_timer  *more;              /* read budget spent with TLS bytes buffered */
    uint64_t     accepted_ms, last_rx_ms, ping_sent_ms;   /* ping_sent_ms 0: none out */
};

typedef struct c2s_listener {
    chatd       *d;
    int          fd;
    native_conn *conns;
    listen_pacer pacer;
} c2s_listener;

static void conn_io(loop *l, int fd, unsigned events, void *ud);
static void conn_destroy(native_conn *c);

/* ---- output ---- */

static void conn_arm(native_conn *c) {
    if (c->fd < 0) return;
    unsigned ev = 0;
    if (!c->closing && !c->starttls_pending) ev |= LOOP_READ;
    if (c->tls_state == TLS_HANDSHAKE) ev |= LOOP_READ;
    if (c->out.len || c->tls_wants_write || c->starttls_pending) ev |= LOOP_WRITE;
    if (c->closing) ev |= LOOP_READ;    /* notice the peer going away */
    loop_watch(c->lst->d->loop, c->fd, ev, conn_io, c);
}

static void destroy_cb(loop *l, void *ud) {
    (void)l;
    native_conn *c = ud;
    c->timer = NULL;
    conn_destroy(c);
}

/* Destroy later, from the loop (never inside a transport op). */
static void conn_kill_soon(native_conn *c) {
    c->dead = 1;
    loop_timer_cancel(c->lst->d->loop, c->timer);
    c->timer = loop_timer_add(c->lst->d->loop, 0, destroy_cb, c);
}

static void conn_append(native_conn *c, const char *data, size_t len) {
    if (c->dead) return;
    if (c->out.len + len > c->lst->d->cfg.max_output) {
        log_warn("c2s %s: output over %zu bytes, disconnecting", c->peer,
                 c->lst->d->cfg.max_output);
        sb_reset(&c->out);
        conn_kill_soon(c);
        return;
    }
    sb_append(&c->out, data, len);
    if (!c->in_feed) conn_arm(c);
}

/* Write buffered output. Returns -1 when the connection failed. */
static int conn_flush(native_conn *c) {
    c->tls_wants_write = 0;
    while (c->out.len > 0) {
        ssize_t n;
        if (c->ssl) {
            n = tls_write(c->ssl, c->out.data, c->out.len);
            if (n == TLS_IO_WANT_READ) return 0;
            if (n == TLS_IO_WANT_WRITE) { c->tls_wants_write = 1; return 0; }
            if (n <= 0) return -1;
        } else {
            n = send(c->fd, c->out.data, c->out.len, MSG_NOSIGNAL);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
            if (n <= 0) return -1;
        }
        sb_consume(&c->out, (size_t)n);
    }
    return 0;
}

static void put_header(native_conn *c, const char *id) {
    strbuf *o = &c->out;
    sb_puts(o, "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
               "xmlns:stream='http://etherx.jabber.org/streams' id='");
    sb_put_xml_escaped(o, id, strlen(id));
    sb_puts(o, "' from='");
    const char *dom = c->lst->d->cfg.domain;
    sb_put_xml_escaped(o, dom, strlen(dom));
    sb_puts(o, "' version='1.0' xml:lang='en'>");
    c->header_sent = 1;
}

/* ---- c2s_transport ---- */

static void op_stream_open(void *t, const char *stream_id) {
    native_conn *c = t;
    if (c->dead || c->closing) return;
    put_header(c, stream_id);
    if (!c->in_feed) conn_arm(c);
}

static void op_send(void *t, const char *xml, size_t len) {
    native_conn *c = t;
    if (c->closing) return;
    conn_append(c, xml, len);
}

static void op_close(void *t, const char *condition, const char *text) {
    native_conn *c = t;
    if (c->closing || c->dead) return;
    if (!c->header_sent) {
        /* RFC 6120 4.9.1.2: open the stream before the error. */
        unsigned char rnd[8];
        char id[17];
        RAND_bytes(rnd, sizeof(rnd));
        for (int i = 0; i < 8; i++) snprintf(id + 2 * i, 3, "%02x", rnd[i]);
        put_header(c, id);
    }
    if (condition) {
        sb_puts(&c->out, "<stream:error><");
        sb_puts(&c->out, condition);
        sb_puts(&c->out, " xmlns='" STREAMS_ERR_NS "'/>");
        if (text && *text) {
            sb_puts(&c->out, "<text xmlns='" STREAMS_ERR_NS "'>");
            sb_put_xml_escaped(&c->out, text, strlen(text));
            sb_puts(&c->out, "</text>");
        }
        sb_puts(&c->out, "</stream:error>");
    }
    sb_puts(&c->out, "</stream:stream>");
    c->closing = 1;
    /* Bytes after the close are not processed. */
    if (c->in_feed) xs_parser_stop(c->p);
    loop_timer_cancel(c->lst->d->loop, c->timer);
    c->timer = loop_timer_add(c->lst->d->loop, NATIVE_CLOSE_MS, destroy_cb, c);
    if (!c->in_feed) conn_arm(c);
}

static int op_starttls(void *t) {
    native_conn *c = t;
    if (!c->lst->d->tls || c->ssl || c->dead || c->closing) return -1;
    c->starttls_pending = 1;
    /* Nothing after <starttls/> may be read in the clear. */
    if (c->in_feed) xs_parser_stop(c->p);
    else conn_arm(c);
    return 0;
}

static void op_stream_restart(void *t) {
    native_conn *c = t;
    xs_parser_reset(c->p);
}

static const c2s_transport native_ops = {
    .kind = "c2s",
    .stream_open = op_stream_open,
    .send = op_send,
    .close = op_close,
    .starttls = op_starttls,
    .stream_restart = op_stream_restart,
    .stream_management = 1,     /* XEP-0198: c2s.c, sm.c */
};

/* ---- parser callbacks ---- */

static void on_stream_start(void *ud, const char *ns, const char *name, const char **attrs) {
    native_conn *c = ud;
    if (strcmp(name, "stream") != 0 || strcmp(ns, STREAM_NS_URI) != 0) {
        op_close(c, "invalid-namespace", NULL);
        return;
    }
    if (!c->counted) {
        chatd *d = c->lst->d;
        if (chatd_session_slots_full(d)) {
            d->stats.sessions_refused++;
            c2s_close(c->s, "resource-constraint",
                      "this server is at its session limit; try again later");
            return;
        }
        /* One address over its live-session cap (per node, addr_count.h):
         * local policy, like the per-minute address cap below. */
        int slot = chatd_addr_slot_take(d, c->addr);
        if (slot < 0) {
            char text[160];
            snprintf(text, sizeof text, "too many sessions from your address "
                     "(%u on this server); close one or try again later",
                     d->cfg.max_sessions_per_addr);
            log_info("c2s %s: refused: address at max_sessions_per_addr", c->peer);
            c2s_close(c->s, "policy-violation", text);
            return;
        }
        c->addr_counted = slot > 0;
        c->counted = 1;
        d->stats.c2s_sessions++;
    }
    const char *to = NULL, *version = NULL, *lang = NULL;
    for (size_t i = 0; attrs && attrs[i]; i += 2) {
        if (!strcmp(attrs[i], "to")) to = attrs[i + 1];
        else if (!strcmp(attrs[i], "version")) version = attrs[i + 1];
        else if (!strcmp(attrs[i], "xml:lang")) lang = attrs[i + 1];
    }
    c2s_stream_start(c->s, to, version, lang);
}

/* ---- sign-in admission (see the top of the file) ---- */

static void route_stanza(native_conn *c, xs_node *stanza);

static void held_clear(native_conn *c) {
    while (c->held) {
        held_stanza *h = c->held;
        c->held = h->next;
        xs_free(h->stanza);
        free(h);
    }
    c->held_tail = NULL;
    c->held_count = 0;
}

static void admission_cancel(native_conn *c) {
    if (c->admit_req) redis_async_forget(c->admit_req);
    c->admit_req = NULL;
    c->admitting = 0;
    held_clear(c);
}

/* Hold a stanza while the script runs; at_front for the gated <auth>. */
static void hold(native_conn *c, xs_node *stanza, int at_front) {
    if (c->held_count >= NATIVE_MAX_HELD) {
        xs_free(stanza);
        admission_cancel(c);
        c2s_close(c->s, "policy-violation", "too many stanzas during sign-in");
        return;
    }
    held_stanza *h = calloc(1, sizeof(*h));
    if (!h) abort();
    h->stanza = stanza;
    if (at_front) {
        h->next = c->held;
        c->held = h;
        if (!c->held_tail) c->held_tail = h;
    } else {
        if (c->held_tail) c->held_tail->next = h;
        else c->held = h;
        c->held_tail = h;
    }
    c->held_count++;
}

static xs_node *held_pop(native_conn *c) {
    held_stanza *h = c->held;
    if (!h) return NULL;
    c->held = h->next;
    if (!c->held) c->held_tail = NULL;
    c->held_count--;
    xs_node *st = h->stanza;
    free(h);
    return st;
}

/* Hand held stanzas on in order, until one starts admission again. */
static void held_replay(native_conn *c) {
    xs_node *st;
    while (!c->admitting && (st = held_pop(c))) route_stanza(c, st);
}

static void admission_send(native_conn *c);

static void admission_cb(redisReply *reply, const char *err, void *ud) {
    native_conn *c = ud;
    chatd *d = c->lst->d;
    c->admit_req = NULL;
    if (!err && c->admit_use_sha && admission_is_noscript(reply)) {
        c->admit_use_sha = 0;       /* Redis restarted or flushed its scripts */
        admission_send(c);
        return;
    }
    c->admitting = 0;
    if (c->closing || c->dead) { held_clear(c); return; }

    admission_result res;
    char why[256] = "";
    uint32_t rnd = 0;
    RAND_bytes((unsigned char *)&rnd, sizeof(rnd));
    if (err || admission_interpret(reply, 10, rnd, &res, why, sizeof(why)) != 0) {
        /* Redis cannot say: refuse this attempt in a way clients retry,
         * and leave the stream open so the retry is cheap. */
        d->stats.signin_unavailable++;
        log_warn("c2s %s: sign-in admission unavailable: %s", c->peer, err ? err : why);
        xs_free(held_pop(c));   /* the <auth> */
        static const char fail[] =
            "<failure xmlns='" SASL_NS "'><temporary-auth-failure/>"
            "<text xml:lang='en'>sign-in is unavailable right now; try again shortly</text>"
            "</failure>";
        op_send(c, fail, sizeof(fail) - 1);
        held_replay(c);
        return;
    }
    if (res.verdict == ADMIT_OK) {
        c->admitted = 1;
        held_replay(c);
        return;
    }
    d->stats.signin_refused++;
    log_info("c2s %s: sign-in refused: %s", c->peer, res.reason);
    held_clear(c);
    c2s_close(c->s, res.verdict == ADMIT_RATE ? "resource-constraint" : "policy-violation",
              res.reason);
}

static void admission_send(native_conn *c) {
    chatd *d = c->lst->d;
    admission_config ac;
    admission_config_defaults(&ac);
    ac.rate = d->cfg.signin_rate;
    ac.burst = d->cfg.signin_burst;
    ac.per_addr_per_min = d->cfg.signin_per_addr;
    admission_build_argv(&c->admit_argv, &ac, c->addr, c->admit_use_sha);
    c->admitting = 1;
    /* NULL means the callback already ran (with an error). */
    redis_async_req *r = redis_async_commandargv(d->redis, admission_cb, c,
                                                 c->admit_argv.argc, c->admit_argv.argv,
                                                 c->admit_argv.argvlen);
    if (r) c->admit_req = r;
}

static int is_sasl_auth(const xs_node *st) {
    return st->ns && st->name && !strcmp(st->ns, SASL_NS) && !strcmp(st->name, "auth");
}

static void route_stanza(native_conn *c, xs_node *stanza) {
    if (c->closing || c->dead) { xs_free(stanza); return; }
    if (c->admitting) { hold(c, stanza, 0); return; }
    if (!c->admitted && is_sasl_auth(stanza) && c->lst->d->redis) {
        hold(c, stanza, 1);
        c->admit_use_sha = 1;
        admission_send(c);
        return;
    }
    c2s_stanza(c->s, stanza);
}

/* ---- parser callbacks (stanzas) ---- */

static void on_stanza(void *ud, xs_node *stanza) {
    route_stanza(ud, stanza);
}

static void on_stream_end(void *ud) {
    native_conn *c = ud;
    admission_cancel(c);    /* the client is gone: nothing held matters */
    c2s_stream_end(c->s);
    /* The client is done either way; make sure our side closes too. */
    if (!c->closing) op_close(c, NULL, NULL);
}

static const xs_callbacks parser_cbs = { on_stream_start, on_stanza, on_stream_end };

/* ---- input ---- */

static void feed(native_conn *c, const char *buf, size_t n) {
    c->in_feed = 1;
    xs_status st = xs_parser_feed(c->p, buf, n);
    c->in_feed = 0;
    if (st == XS_OK || st == XS_ERR_STOPPED) return;
    const char *cond = st == XS_ERR_TOO_BIG ? "policy-violation"
                     : st == XS_ERR_FORBIDDEN ? "restricted-xml"
                     : "not-well-formed";
    log_info("c2s %s: %s (%s)", c->peer, cond, xs_parser_error(c->p));
    op_close(c, cond, NULL);
}

static void more_cb(loop *l, void *ud);

/* Read and parse what is available, up to c2s_read_budget bytes this
 * turn. Returns -1 on EOF/error. */
static int conn_read(native_conn *c) {
    char buf[NATIVE_READ_CHUNK];
    size_t used = 0, want;
    chatd *d = c->lst->d;
    while (!c->closing && !c->dead && !c->starttls_pending) {
        ssize_t n;
        want = read_budget_next(d->cfg.c2s_read_budget, used, sizeof(buf));
        if (want == 0) {
            /* Budget spent: level-triggered epoll reports the socket again
             * next turn, but bytes OpenSSL already decrypted are invisible
             * to it, so those get a deferred read. */
            if (c->ssl && SSL_pending(c->ssl) > 0 && !c->more)
                c->more = loop_timer_add(d->loop, 0, more_cb, c);
            return 0;
        }
        if (c->ssl) {
            n = tls_read(c->ssl, buf, want);
            if (n == TLS_IO_WANT_READ) return 0;
            if (n == TLS_IO_WANT_WRITE) { c->tls_wants_write = 1; return 0; }
            if (n <= 0) return -1;
        } else {
            n = recv(c->fd, buf, want, 0);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
            if (n <= 0) return -1;
        }
        used += (size_t)n;
        c->last_rx_ms = loop_now_ms(d->loop);
        c->ping_sent_ms = 0;            /* any input answers the ping */
        feed(c, buf, (size_t)n);
    }
    return 0;
}

/* After a close, wait for the peer's EOF but discard what it sends. */
static int conn_drain_input(native_conn *c) {
    char buf[4096];
    for (;;) {
        ssize_t n = c->ssl ? tls_read(c->ssl, buf, sizeof(buf)) : recv(c->fd, buf, sizeof(buf), 0);
        if (n > 0) continue;
        if (c->ssl) return (n == TLS_IO_WANT_READ || n == TLS_IO_WANT_WRITE) ? 0 : -1;
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
        return -1;
    }
}

static void conn_handshake(native_conn *c) {
    int rc = tls_handshake(c->ssl);
    if (rc == TLS_IO_OK) {
        c->tls_state = TLS_ON;
        log_debug("c2s %s: TLS established (%s)", c->peer, SSL_get_version(c->ssl));
        xs_parser_reset(c->p);
        c2s_set_secure(c->s, 1);
    } else if (rc == TLS_IO_WANT_WRITE) {
        c->tls_wants_write = 1;
    } else if (rc != TLS_IO_WANT_READ) {
        log_info("c2s %s: TLS handshake failed: %s", c->peer, tls_last_error());
        c->dead = 1;
    }
}

static void conn_io(loop *l, int fd, unsigned events, void *ud) {
    (void)l; (void)fd; (void)events;
    native_conn *c = ud;
    if (c->dead) { conn_destroy(c); return; }
    c->tls_wants_write = 0;
    if (c->tls_state == TLS_HANDSHAKE) conn_handshake(c);
    if (!c->dead && c->tls_state != TLS_HANDSHAKE) {
        if (c->closing) {
            if (conn_drain_input(c) < 0) c->dead = 1;
        } else if (conn_read(c) < 0) {
            c->dead = 1;
        }
    }
    if (!c->dead && c->tls_state != TLS_HANDSHAKE && conn_flush(c) < 0) c->dead = 1;
    if (!c->dead && c->starttls_pending && c->out.len == 0) {
        /* <proceed/> is out: switch the socket to TLS. */
        c->starttls_pending = 0;
        c->ssl = tls_session_new(c->lst->d->tls, c->fd);
        if (!c->ssl) c->dead = 1;
        else {
            c->tls_state = TLS_HANDSHAKE;
            conn_handshake(c);
        }
    }
    if (!c->dead && c->closing && !c->shut_wr && c->out.len == 0 && !c->tls_wants_write) {
        /* Everything said: close our side with a FIN, and linger. Closing
         * the socket now would send a RST if the client's bytes are still
         * arriving (an oversized stanza, a pipelining client), and a RST
         * makes the client's kernel drop our unread stream error. So
         * keep discarding input until the client closes too, or until the
         * close timer (NATIVE_CLOSE_MS, armed by op_close) gives up. */
        if (c->ssl) SSL_shutdown(c->ssl);
        shutdown(c->fd, SHUT_WR);
        c->shut_wr = 1;
    }
    if (c->dead) { conn_destroy(c); return; }
    conn_arm(c);
}

/* ---- lifetime ---- */

static void conn_destroy(native_conn *c) {
    c2s_listener *lst = c->lst;
    chatd *d = lst->d;
    c->dead = 1;
    c->closing = 1;
    loop_timer_cancel(d->loop, c->timer);
    c->timer = NULL;
    loop_timer_cancel(d->loop, c->watchdog);
    c->watchdog = NULL;
    loop_timer_cancel(d->loop, c->more);
    c->more = NULL;
    admission_cancel(c);
    /* c2s_free may deliver presence elsewhere; our ops now drop output. */
    c2s *s = c->s;
    c->s = NULL;
    c2s_free(s);
    loop_unwatch(d->loop, c->fd);
    if (c->ssl) SSL_free(c->ssl);
    close(c->fd);
    xs_parser_free(c->p);
    sb_free(&c->out);
    if (c->prev) c->prev->next = c->next; else lst->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    if (c->counted && d->stats.c2s_sessions) d->stats.c2s_sessions--;
    if (c->addr_counted) chatd_addr_slot_release(d, c->addr);
    log_debug("c2s %s: disconnected", c->peer);
    free(c);
}

static void more_cb(loop *l, void *ud) {
    native_conn *c = ud;
    c->more = NULL;
    conn_io(l, c->fd, LOOP_READ, c);
}

static void watchdog_arm(native_conn *c, uint64_t ms);

/* The sign-in deadline, then the idle ping (see the top of the file). */
static void watchdog_cb(loop *l, void *ud) {
    native_conn *c = ud;
    chatd *d = c->lst->d;
    const chatd_config *cfg = &d->cfg;
    uint64_t now = loop_now_ms(l);
    c->watchdog = NULL;
    if (c->dead || c->closing || !c->s) return;
    if (!c2s_is_bound(c->s)) {
        uint64_t limit = (uint64_t)cfg->c2s_auth_timeout * 1000;
        if (cfg->c2s_auth_timeout && now - c->accepted_ms >= limit) {
            d->stats.auth_timeouts++;
            log_info("BOSH00357: c2s %s: not signed in after %u s; closing",
                     c->peer, cfg->c2s_auth_timeout);
            c2s_close(c->s, "connection-timeout", "sign in sooner");
            return;
        }
        /* Bound soon, hopefully: look again at the deadline, or (no
         * deadline) when the idle ping would be due. */
        watchdog_arm(c, cfg->c2s_auth_timeout ? c->accepted_ms + limit - now
                                              : (uint64_t)cfg->c2s_ping_idle * 1000);
        return;
    }
    if (!cfg->c2s_ping_idle) return;
    uint64_t idle = (uint64_t)cfg->c2s_ping_idle * 1000;
    uint64_t grace = (uint64_t)(cfg->c2s_ping_timeout ? cfg->c2s_ping_timeout : 1) * 1000;
    if (c->ping_sent_ms) {
        if (now - c->ping_sent_ms >= grace) {
            d->stats.ping_timeouts++;
            log_info("BOSH00358: c2s %s (%s): no answer to a ping in %u s; "
                     "closing", c->peer, c2s_jid(c->s), cfg->c2s_ping_timeout);
            c2s_close(c->s, "connection-timeout", "no answer to ping");
            return;
        }
        watchdog_arm(c, c->ping_sent_ms + grace - now);
        return;
    }
    if (now - c->last_rx_ms >= idle) {
        c2s_send_ping(c->s);
        c->ping_sent_ms = now ? now : 1;
        watchdog_arm(c, grace);
        return;
    }
    watchdog_arm(c, c->last_rx_ms + idle - now);
}

static void watchdog_arm(native_conn *c, uint64_t ms) {
    loop *l = c->lst->d->loop;
    loop_timer_cancel(l, c->watchdog);
    c->watchdog = loop_timer_add(l, ms ? ms : 1, watchdog_cb, c);
}

static void set_keepalive(int fd, unsigned idle_s) {
    if (!idle_s) return;
    int one = 1, idle = (int)idle_s, intvl = idle_s < 30 ? (int)idle_s : 10, cnt = 3;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
}

static void accept_io(loop *l, int fd, unsigned events, void *ud) {
    (void)l; (void)events; (void)fd;
    c2s_listener *lst = ud;
    chatd *d = lst->d;
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int cfd = listen_accept_paced(&lst->pacer, &ss, &sl);
        if (cfd < 0) return;
        if (d->stopping) { close(cfd); continue; }
        int one = 1;
        setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        set_keepalive(cfd, d->cfg.c2s_keepalive);
        native_conn *c = calloc(1, sizeof(*c));
        if (!c) abort();
        c->lst = lst;
        c->fd = cfd;
        sb_init(&c->out);
        char host[INET6_ADDRSTRLEN] = "?", port[8] = "?";
        getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), port, sizeof(port),
                    NI_NUMERICHOST | NI_NUMERICSERV);
        snprintf(c->peer, sizeof(c->peer), "%s:%s", host, port);
        snprintf(c->addr, sizeof(c->addr), "%s", host);
        c->p = xs_parser_new(&parser_cbs, c, d->cfg.max_stanza);
        if (!c->p || loop_watch(d->loop, cfd, LOOP_READ, conn_io, c) < 0) {
            xs_parser_free(c->p);
            close(cfd);
            free(c);
            continue;
        }
        c->next = lst->conns;
        if (lst->conns) lst->conns->prev = c;
        lst->conns = c;
        c->s = c2s_new(d, &native_ops, c, 0, c->peer);
        c->accepted_ms = c->last_rx_ms = loop_now_ms(d->loop);
        if (d->cfg.c2s_auth_timeout || d->cfg.c2s_ping_idle)
            watchdog_arm(c, d->cfg.c2s_auth_timeout ? (uint64_t)d->cfg.c2s_auth_timeout * 1000
                                                    : (uint64_t)d->cfg.c2s_ping_idle * 1000);
        c2s_set_client_addr(c->s, c->addr);
        log_debug("c2s %s: connected", c->peer);
    }
}

int c2s_native_start(chatd *d) {
    const char *spec = d->cfg.c2s_listen;
    if (!spec || !*spec || !strcmp(spec, "off")) return 0;
    c2s_listener *lst = calloc(1, sizeof(*lst));
    if (!lst) return -1;
    lst->d = d;
    lst->fd = listen_tcp(spec, "c2s_listen");
    lst->pacer = (listen_pacer){ .l = d->loop, .fd = lst->fd, .cb = accept_io, .ud = lst,
                                 .what = "c2s", .counter = &d->stats.accept_paused };
    if (lst->fd < 0 || loop_watch(d->loop, lst->fd, LOOP_READ, accept_io, lst) < 0) {
        if (lst->fd >= 0) close(lst->fd);
        free(lst);
        return -1;
    }
    d->c2s = lst;
    log_info("c2s: listening on %s%s", spec, d->tls ? " (STARTTLS)" : "");
    return 0;
}

static uint64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void c2s_native_stop(chatd *d, const char *condition) {
    c2s_listener *lst = d->c2s;
    if (!lst) return;
    listen_pacer_cancel(&lst->pacer);
    loop_unwatch(d->loop, lst->fd);
    close(lst->fd);
    lst->fd = -1;
    for (native_conn *c = lst->conns; c; c = c->next) {
        if (c->s) c2s_close(c->s, condition, NULL);
        if (!c->closing) op_close(c, condition, NULL);
    }
    /* Bounded best effort to deliver the stream errors. */
    uint64_t deadline = mono_ms() + NATIVE_STOP_FLUSH_MS;
    for (native_conn *c = lst->conns; c; c = c->next) {
        while (!c->dead && c->tls_state != TLS_HANDSHAKE && (c->out.len || c->tls_wants_write)) {
            if (conn_flush(c) < 0) break;
            if (!c->out.len && !c->tls_wants_write) break;
            uint64_t now = mono_ms();
            if (now >= deadline) break;
            struct pollfd p = { .fd = c->fd, .events = POLLOUT | POLLIN };
            poll(&p, 1, (int)(deadline - now));
        }
        if (c->ssl && !c->dead) SSL_shutdown(c->ssl);
    }
    while (lst->conns) conn_destroy(lst->conns);
    free(lst);
    d->c2s = NULL;
}
