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
 *
 * XMPP over WebSocket (RFC 7395, ws.h) uses this same connection handling:
 * a listener opened with websocket set gives each connection a ws_link.
 * Its bytes go through the WebSocket handshake and frame reader
 * (common/websocket.h) before the parser; each text message must be one
 * element; the stream is <open/>/<close/> in the framing namespace, not
 * <stream:stream>; output is one text frame per element. The parser is
 * opened once with a stream header of our own, so the session and every
 * limit above (auth timeout, read budget, idle ping, admission, output
 * cap, descriptor pacing) are the native port's.
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
#include "ws.h"
#include "../../common/websocket.h"
#include <ctype.h>
#include <pwd.h>

#define NATIVE_READ_CHUNK   16384
#define NATIVE_CLOSE_MS     5000   /* a closing peer that never reads */
#define NATIVE_STOP_FLUSH_MS 1000
#define STREAM_NS_URI "http://etherx.jabber.org/streams"
#define STREAMS_ERR_NS "urn:ietf:params:xml:ns:xmpp-streams"
#define SASL_NS "urn:ietf:params:xml:ns:xmpp-sasl"
#define NATIVE_MAX_HELD 32         /* stanzas held while admission runs */

typedef struct native_conn native_conn;

/* A WebSocket connection's own state (NULL on the native port). */
typedef struct ws_link {
    int         upgraded;       /* 101 sent: input is frames */
    int         close_sent;     /* our close frame is queued: nothing after it */
    int         elems;          /* elements seen in the message being parsed */
    int         peer_trusted;   /* httpd: its X-Forwarded-* are believed */
    pid_t       peer_pid;       /* unix peer: the httpd child carrying it (0: unknown) */
    strbuf      in;             /* handshake bytes, then an incomplete frame */
    ws_reader   rd;
} ws_link;

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
    ws_link     *ws;
};

typedef struct c2s_listener {
    chatd       *d;
    int          fd;
    native_conn *conns;
    listen_pacer pacer;
    int          websocket;     /* RFC 7395 listener (ws_listen) */
    int          is_unix;
    const char  *what;          /* "c2s" or "ws": logs */
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

/* Room for len more bytes of output? If not, the client is too slow (or,
 * sending pings it never reads the pongs of, too greedy): disconnect. */
static int out_room(native_conn *c, size_t len) {
    if (c->out.len + len <= c->lst->d->cfg.max_output) return 1;
    log_warn("c2s %s: output over %zu bytes, disconnecting", c->peer,
             c->lst->d->cfg.max_output);
    sb_reset(&c->out);
    conn_kill_soon(c);
    return 0;
}

static void conn_append(native_conn *c, const char *data, size_t len) {
    if (c->dead) return;
    if (!out_room(c, len)) return;
    if (c->ws) {
        if (c->ws->close_sent) return;
        ws_put_element(&c->out, data, len);
    } else {
        sb_append(&c->out, data, len);
    }
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
    if (c->ws) {
        ws_put_open(&c->out, c->lst->d->cfg.domain, stream_id);
        c->header_sent = 1;
        if (!c->in_feed) conn_arm(c);
        return;
    }
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
    if (c->ws) {
        /* Before the 101 there is no WebSocket to say anything on. */
        if (c->ws->upgraded && !c->ws->close_sent) {
            ws_put_close(&c->out, condition, text);
            ws_close_put(&c->out, condition && (!strcmp(condition, "system-shutdown") ||
                                                !strcmp(condition, "reset"))
                         ? WS_CLOSE_GOING_AWAY : WS_CLOSE_NORMAL, NULL);
            c->ws->close_sent = 1;
        }
        goto closing;
    }
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
closing:
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
    /* WebSocket: our stream header stays open; the client's next <open/>
     * is just the next message. */
    if (!c->ws) xs_parser_reset(c->p);
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

/* RFC 7395: no STARTTLS (the browser's TLS ends at httpd). */
static const c2s_transport ws_ops = {
    .kind = "websocket",
    .stream_open = op_stream_open,
    .send = op_send,
    .close = op_close,
    .starttls = NULL,
    .stream_restart = op_stream_restart,
};

/* ---- parser callbacks ---- */

/* The client opened a stream (<stream:stream>, or RFC 7395 <open/>):
 * the node's session caps, then the session. */
static void stream_opened(native_conn *c, const char *to, const char *version,
                          const char *lang) {
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
    c2s_stream_start(c->s, to, version, lang);
}

static void on_stream_start(void *ud, const char *ns, const char *name, const char **attrs) {
    native_conn *c = ud;
    if (strcmp(name, "stream") != 0 || strcmp(ns, STREAM_NS_URI) != 0) {
        op_close(c, "invalid-namespace", NULL);
        return;
    }
    /* WebSocket: this is the header we fed ourselves; the client's
     * stream begins with its <open/>. */
    if (c->ws) return;
    const char *to = NULL, *version = NULL, *lang = NULL;
    for (size_t i = 0; attrs && attrs[i]; i += 2) {
        if (!strcmp(attrs[i], "to")) to = attrs[i + 1];
        else if (!strcmp(attrs[i], "version")) version = attrs[i + 1];
        else if (!strcmp(attrs[i], "xml:lang")) lang = attrs[i + 1];
    }
    stream_opened(c, to, version, lang);
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

static void on_stream_end(void *ud);

static void on_stanza(void *ud, xs_node *stanza) {
    native_conn *c = ud;
    if (c->ws) {
        /* RFC 7395 3.3.3: one whole element per message. */
        if (++c->ws->elems > 1) {
            xs_free(stanza);
            c2s_close(c->s, "not-well-formed",
                      "one XMPP element per WebSocket message (RFC 7395)");
            return;
        }
        if (stanza->ns && !strcmp(stanza->ns, WS_FRAMING_NS)) {
            if (!strcmp(stanza->name, "open")) {
                stream_opened(c, xs_attr_get(stanza, "to"), xs_attr_get(stanza, "version"),
                              xs_attr_get(stanza, "xml:lang"));
                xs_free(stanza);
            } else if (!strcmp(stanza->name, "close")) {
                xs_free(stanza);
                on_stream_end(c);
            } else {
                xs_free(stanza);
                c2s_close(c->s, "unsupported-stanza-type", NULL);
            }
            return;
        }
    }
    route_stanza(c, stanza);
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

/* ---- WebSocket input (RFC 6455 frames carrying RFC 7395 messages) ---- */

/* Our own stream header: every client message is parsed as a child of it,
 * in jabber:client unless it says otherwise. */
static const char WS_ROOT[] = "<stream:stream xmlns='jabber:client' "
                              "xmlns:stream='" STREAM_NS_URI "'>";

/* Fail the WebSocket: close frame with code, then end the session. */
static void ws_fail(native_conn *c, uint16_t code, const char *why) {
    log_info("BOSH00850: ws %s: closing the WebSocket with %u: %s", c->peer,
             (unsigned)code, why);
    if (!c->ws->close_sent) {
        ws_close_put(&c->out, code, why);
        c->ws->close_sent = 1;
    }
    admission_cancel(c);
    if (c->s) c2s_close(c->s, NULL, NULL);
    if (!c->closing) op_close(c, NULL, NULL);
}

static void ws_message(native_conn *c, const char *data, size_t len) {
    size_t i = 0;
    while (i < len && isspace((unsigned char)data[i])) i++;
    if (i == len) return;           /* whitespace: a keepalive, nothing to parse */
    c->ws->elems = 0;
    feed(c, data, len);
    if (!c->closing && !c->dead && c->ws->elems != 1)
        c2s_close(c->s, "not-well-formed",
                  "one whole XMPP element per WebSocket message (RFC 7395)");
}

/* The opening handshake is all there: answer it (ws.h for the policy). */
static int ws_handshake_done(native_conn *c, size_t *used) {
    ws_link *w = c->ws;
    chatd *d = c->lst->d;
    ws_handshake h;
    int status;
    const char *why;
    ws_hs_status st = ws_handshake_parse(w->in.data, w->in.len, &h, used, &status, &why);
    if (st == WS_HS_MORE) return 0;
    ws_verdict v;
    if (st == WS_HS_OK) {
        ws_decide(&d->cfg, &h, w->peer_trusted, c->addr, &v);
        if (v.status) { status = v.status; why = v.why; st = WS_HS_BAD; }
    }
    if (st == WS_HS_BAD) {
        log_info("BOSH00851: ws %s: refused the WebSocket handshake (%d): %s%s%s", c->peer,
                 status, why, h.has_origin ? "; Origin " : "", h.has_origin ? h.origin : "");
        ws_http_error(&c->out, status, why);
        w->close_sent = 1;
        if (c->s) c2s_close(c->s, NULL, NULL);
        if (!c->closing) op_close(c, NULL, NULL);
        return -1;
    }
    char acc[29];
    ws_accept_key(h.key, acc);
    ws_handshake_response(&c->out, acc, "xmpp");
    w->upgraded = 1;
    snprintf(c->addr, sizeof(c->addr), "%s", v.client_addr);
    snprintf(c->peer, sizeof(c->peer), "%s", v.client_addr);
    c2s_set_client_addr(c->s, c->addr);
    c2s_set_peer(c->s, c->peer);
    c2s_set_secure(c->s, v.secure);
    log_debug("ws %s: WebSocket open (%s)", c->peer, v.secure ? "https" : "http");
    feed(c, WS_ROOT, sizeof(WS_ROOT) - 1);
    return 1;
}

/*
 * An httpd child that is stopping asks, on a connection of its own, that
 * the WebSockets it carries be closed (mod_bosh's BoshWebSocketDrain):
 * its tunnels would otherwise hold the child, and httpd's stop or reload,
 * until the users leave. Only a unix peer that passed the uid check can
 * ask, and only for its own process (SO_PEERCRED pid of both connections),
 * so no one can close anybody else's sessions. The sessions end with the
 * stream error `reset` (RFC 6120 4.9.3.16: reconnect, the stream may be
 * reopened) and close code 1001 (going away); clients reconnect to a
 * live child.
 */
#define WS_DRAIN_REQUEST "POST /.chatd/drain HTTP/1.1\r\n"

static int ws_drain_request(native_conn *c) {
    ws_link *w = c->ws;
    size_t n = sizeof(WS_DRAIN_REQUEST) - 1;
    if (!c->lst->is_unix || !w->peer_pid || w->in.len < n ||
        memcmp(w->in.data, WS_DRAIN_REQUEST, n) != 0)
        return 0;
    unsigned closed = 0;
    for (native_conn *o = c->lst->conns; o; o = o->next) {
        if (o == c || !o->ws || o->ws->peer_pid != w->peer_pid || o->closing || o->dead)
            continue;
        if (o->s) c2s_close(o->s, "reset", "the web server is restarting; reconnect");
        if (!o->closing) op_close(o, "reset", NULL);
        closed++;
    }
    log_info("BOSH00854: ws: httpd child pid %d is stopping: closed its %u WebSocket(s)",
             (int)w->peer_pid, closed);
    static const char ok[] = "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n";
    sb_append(&c->out, ok, sizeof(ok) - 1);
    w->close_sent = 1;
    if (c->s) c2s_close(c->s, NULL, NULL);
    if (!c->closing) op_close(c, NULL, NULL);
    return 1;
}

static void ws_input(native_conn *c, const char *buf, size_t n) {
    ws_link *w = c->ws;
    size_t off = 0;
    sb_append(&w->in, buf, n);
    if (!w->upgraded && ws_drain_request(c)) return;
    if (!w->upgraded) {
        if (ws_handshake_done(c, &off) <= 0) return;
    }
    while (!c->closing && !c->dead) {
        ws_event ev;
        size_t used = ws_read(&w->rd, w->in.data + off, w->in.len - off, &ev);
        if (ev.kind == WS_EV_MORE && used == 0) break;
        switch (ev.kind) {
        case WS_EV_TEXT:
            ws_message(c, ev.data, ev.len);
            break;
        case WS_EV_PING:
            if (!w->close_sent && out_room(c, ev.len + 2))
                ws_frame_put(&c->out, WS_OP_PONG, ev.data, ev.len);
            break;
        case WS_EV_CLOSE:
            /* The client ends without <close/>: echo its code, end the stream. */
            if (!w->close_sent) {
                ws_close_put(&c->out, ev.code == WS_CLOSE_NO_STATUS ? 0 : ev.code, NULL);
                w->close_sent = 1;
            }
            on_stream_end(c);
            break;
        case WS_EV_ERROR:
            ws_fail(c, ev.code, ev.why);
            break;
        default:
            break;
        }
        off += used;
    }
    sb_consume(&w->in, off < w->in.len ? off : w->in.len);
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
        if (c->ws) ws_input(c, buf, (size_t)n);
        else feed(c, buf, (size_t)n);
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
    if (c->ws) {
        sb_free(&c->ws->in);
        ws_reader_free(&c->ws->rd);
        free(c->ws);
    }
    if (c->prev) c->prev->next = c->next; else lst->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    if (c->counted && d->stats.c2s_sessions) d->stats.c2s_sessions--;
    if (c->addr_counted) chatd_addr_slot_release(d, c->addr);
    log_debug("%s %s: disconnected", lst->what, c->peer);
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

/* A unix WebSocket peer must be httpd: the relay's uid rule
 * (relay_peer_user, root, chatd's own uid). Refusals are logged at most
 * once a second: any local user can connect. */
static int ws_unix_peer_ok(c2s_listener *lst, int fd, pid_t *pid) {
    const chatd_config *cfg = &lst->d->cfg;
    struct ucred cred = { .pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1 };
    socklen_t len = sizeof(cred);
    static uint64_t last_log;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
        *pid = cred.pid;
        if (cred.uid == 0 || cred.uid == geteuid()) return 1;
        for (int i = 0; i < cfg->relay_peer_nuids; i++)
            if (cfg->relay_peer_uids[i] == cred.uid) return 1;
    }
    uint64_t now = loop_now_ms(lst->d->loop);
    if (!last_log || now - last_log >= 1000) {
        last_log = now;
        log_warn("BOSH00852: ws: refused a unix peer with uid %u: not relay_peer_user (%s), "
                 "root or chatd's own uid", (unsigned)cred.uid, cfg->relay_peer_user);
    }
    return 0;
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
        pid_t peer_pid = 0;
        if (lst->is_unix && !ws_unix_peer_ok(lst, cfd, &peer_pid)) { close(cfd); continue; }
        if (!lst->is_unix) {
            int one = 1;
            setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            set_keepalive(cfd, d->cfg.c2s_keepalive);
        }
        native_conn *c = calloc(1, sizeof(*c));
        if (!c) abort();
        c->lst = lst;
        c->fd = cfd;
        sb_init(&c->out);
        char host[INET6_ADDRSTRLEN] = "?", port[8] = "?";
        if (lst->is_unix) snprintf(host, sizeof(host), "unix"), snprintf(port, sizeof(port), "-");
        else getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), port, sizeof(port),
                         NI_NUMERICHOST | NI_NUMERICSERV);
        snprintf(c->peer, sizeof(c->peer), "%s:%s", host, port);
        snprintf(c->addr, sizeof(c->addr), "%s", host);
        if (lst->websocket) {
            c->ws = calloc(1, sizeof(*c->ws));
            if (!c->ws) abort();
            sb_init(&c->ws->in);
            /* A message is one stanza: the same cap, plus the framing. */
            ws_reader_init(&c->ws->rd, d->cfg.max_stanza + 1024);
            c->ws->peer_trusted = lst->is_unix || ws_proxy_trusted(&d->cfg, host);
            c->ws->peer_pid = peer_pid;
        }
        c->p = xs_parser_new(&parser_cbs, c, d->cfg.max_stanza);
        if (!c->p || loop_watch(d->loop, cfd, LOOP_READ, conn_io, c) < 0) {
            xs_parser_free(c->p);
            close(cfd);
            if (c->ws) {
                sb_free(&c->ws->in);
                ws_reader_free(&c->ws->rd);
                free(c->ws);
            }
            free(c);
            continue;
        }
        c->next = lst->conns;
        if (lst->conns) lst->conns->prev = c;
        lst->conns = c;
        c->s = c2s_new(d, c->ws ? &ws_ops : &native_ops, c, 0, c->peer);
        c->accepted_ms = c->last_rx_ms = loop_now_ms(d->loop);
        if (d->cfg.c2s_auth_timeout || d->cfg.c2s_ping_idle)
            watchdog_arm(c, d->cfg.c2s_auth_timeout ? (uint64_t)d->cfg.c2s_auth_timeout * 1000
                                                    : (uint64_t)d->cfg.c2s_ping_idle * 1000);
        c2s_set_client_addr(c->s, c->addr);
        log_debug("%s %s: connected", lst->what, c->peer);
    }
}

static c2s_listener *listener_open(chatd *d, const char *spec, int websocket) {
    c2s_listener *lst = calloc(1, sizeof(*lst));
    if (!lst) return NULL;
    lst->d = d;
    lst->websocket = websocket;
    lst->what = websocket ? "ws" : "c2s";
    const char *key = websocket ? "ws_listen" : "c2s_listen";
    if (websocket && !strncmp(spec, "unix:", 5)) {
        /* 0666 like the relay socket: the uid check decides (accept_io). */
        lst->is_unix = 1;
        lst->fd = listen_unix(spec + 5, 0666, key);
    } else {
        lst->fd = listen_tcp(!strncmp(spec, "tcp:", 4) ? spec + 4 : spec, key);
    }
    lst->pacer = (listen_pacer){ .l = d->loop, .fd = lst->fd, .cb = accept_io, .ud = lst,
                                 .what = lst->what, .counter = &d->stats.accept_paused };
    if (lst->fd < 0 || loop_watch(d->loop, lst->fd, LOOP_READ, accept_io, lst) < 0) {
        if (lst->fd >= 0) close(lst->fd);
        free(lst);
        return NULL;
    }
    return lst;
}

int c2s_native_start(chatd *d) {
    const char *spec = d->cfg.c2s_listen;
    if (!spec || !*spec || !strcmp(spec, "off")) return 0;
    if (!(d->c2s = listener_open(d, spec, 0))) return -1;
    log_info("c2s: listening on %s%s", spec, d->tls ? " (STARTTLS)" : "");
    return 0;
}

int c2s_ws_start(chatd *d) {
    const char *spec = d->cfg.ws_listen;
    if (!spec) return 0;
    if (!(d->ws = listener_open(d, spec, 1))) return -1;
    log_info("ws: XMPP over WebSocket (RFC 7395) listening on %s", spec);
    return 0;
}

static uint64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void listener_stop(chatd *d, c2s_listener *lst, const char *condition) {
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
    if (lst->is_unix && d->cfg.ws_listen) unlink(d->cfg.ws_listen + 5);
    free(lst);
}

void c2s_native_stop(chatd *d, const char *condition) {
    if (d->c2s) listener_stop(d, d->c2s, condition);
    d->c2s = NULL;
    if (d->ws) listener_stop(d, d->ws, condition);
    d->ws = NULL;
}
