/*
 * loadgen: a BOSH load generator for chat servers (ours, Prosody, ejabberd).
 *
 * Why a program of our own: the comparison must drive the three servers
 * through exactly the same client behaviour, the one a browser with
 * Strophe.js has (hold=1, at most two HTTP/1.1 keep-alive connections per
 * session, one request held, one for sending), and it must never be the
 * bottleneck on a 2-core machine. One thread, one epoll, no allocation on
 * the hot path beyond the response buffers.
 *
 * Each simulated user: session creation, SASL PLAIN, xmpp:restart, bind,
 * session iq, initial presence, MUC join, then groupchat messages at a
 * fixed rate with jittered think time, then a clean terminate. A message
 * body is "lg <run> <sender> <seq> <send-time-us>"; every receiver other
 * than the sender computes its delivery latency (same process, same
 * monotonic clock). Room history (delayed messages) and messages of other
 * runs are ignored.
 *
 * Output: one JSON line of figures on stdout; progress on stderr.
 * Responses are parsed as whole documents with common/xml_stream.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/strbuf.h"
#include "common/xml_stream.h"

#define NS_HTTPBIND "http://jabber.org/protocol/httpbind"
#define NS_STREAM   "http://etherx.jabber.org/streams"
#define NS_SASL     "urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_BIND     "urn:ietf:params:xml:ns:xmpp-bind"
#define NS_SESSION  "urn:ietf:params:xml:ns:xmpp-session"
#define NS_MUC      "http://jabber.org/protocol/muc"
#define NS_MUC_USER "http://jabber.org/protocol/muc#user"
#define NS_DELAY    "urn:xmpp:delay"

#define MAX_RESPONSE   (4u << 20)
#define TICK_MS        5
#define JOIN_RETRIES   40

/* ------------------------------------------------------------------ */
/* options and global state                                            */

enum scenario { SC_ROOM, SC_ROOMS, SC_SIGNIN, SC_IDLE, SC_TEAM };

static struct {
    char  host[320];
    char  port[16];
    char  path[512];
    char  domain[200];
    char  muc[300];
    char  password[128];
    char  user_prefix[32];
    char  mark_file[512];
    int   users, rooms, first_user;
    int   big_room;                  /* team: users in room1; the rest in rooms of 20 */
    double rate, duration, ramp, drain, signin_timeout;
    int   wait;
    enum scenario scenario;
    unsigned seed;
    int   verbose;
} opt;

static struct addrinfo *server_addr;
static int epfd;
static uint64_t run_id;

static uint64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static uint64_t rng_state;
static double rnd01(void) {        /* xorshift64*, uniform in [0,1) */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}

/* ------------------------------------------------------------------ */
/* figures                                                             */

typedef struct { uint32_t *v; size_t n, cap; } samples;

static void samples_add(samples *s, uint32_t x) {
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 4096;
        s->v = realloc(s->v, s->cap * sizeof(*s->v));
        if (!s->v) abort();
    }
    s->v[s->n++] = x;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted samples, in ms. */
static double pct_ms(const samples *s, double p) {
    if (!s->n) return 0;
    size_t k = (size_t)(p / 100.0 * (double)s->n + 0.999999);
    if (k < 1) k = 1;
    if (k > s->n) k = s->n;
    return s->v[k - 1] / 1000.0;
}

static struct {
    samples signin_us, latency_us;
    uint64_t sent, expected, delivered, echoes;
    uint64_t http_requests, established, joined, terminated_clean;
    uint64_t first_signin_start, last_signin_done;
    struct { char name[64]; uint64_t n; } errors[64];
    int nerrors;
} fig;

static void count_error(const char *kind) {
    for (int i = 0; i < fig.nerrors; i++)
        if (!strcmp(fig.errors[i].name, kind)) { fig.errors[i].n++; return; }
    if (fig.nerrors < 64) {
        snprintf(fig.errors[fig.nerrors].name, sizeof fig.errors[0].name, "%s", kind);
        fig.errors[fig.nerrors++].n = 1;
    }
}

/* ------------------------------------------------------------------ */
/* sessions and connections                                            */

enum sstate {
    S_IDLE, S_CREATING, S_WAIT_MECHS, S_AUTHING, S_WAIT_BIND_FEATURES,
    S_BINDING, S_SESSIONING, S_JOINING, S_READY, S_TERMINATING, S_DONE, S_FAILED
};

typedef struct session session;

typedef struct conn {
    session *s;
    int      fd;
    int      busy;          /* a request is in flight */
    int      connecting;
    int      reused;        /* carried an earlier request (resend on early EOF) */
    int      resent;
    strbuf   out;           /* request bytes (kept whole for a resend) */
    size_t   out_off;
    strbuf   in;
    uint64_t sent_at;
} conn;

struct session {
    int       idx;               /* 0-based; user name is prefix + (first_user + idx) */
    int       room;              /* -1: none */
    enum sstate state;
    char      sid[128];
    uint64_t  rid;
    conn      c[2];
    int       outstanding;
    strbuf    pending;           /* stanzas waiting for a request */
    int       want_create, want_restart, want_terminate;
    int       session_feature;
    uint64_t  start_us, next_msg_us, retry_join_us;
    int       join_tries;
    uint32_t  seq;
};

static session *sessions;
static int *room_ready;              /* ready occupants per room */

static const char *scenario_name(void) {
    static const char *n[] = { "room", "rooms", "signin", "idle", "team" };
    return n[opt.scenario];
}

static int wants_muc(void) {
    return opt.scenario == SC_ROOM || opt.scenario == SC_ROOMS || opt.scenario == SC_TEAM;
}

static void session_fail(session *s, const char *why);
static void session_pump(session *s);

static void conn_close(conn *c) {
    if (c->fd >= 0) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    c->fd = -1;
    c->busy = c->connecting = c->reused = 0;
    sb_reset(&c->in);
}

static int conn_open(conn *c) {
    int fd = socket(server_addr->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) { count_error(errno == EMFILE ? "emfile" : "socket"); return -1; }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int rc = connect(fd, server_addr->ai_addr, server_addr->ai_addrlen);
    if (rc < 0 && errno != EINPROGRESS) {
        count_error(errno == EADDRNOTAVAIL ? "connect_addrnotavail" : "connect");
        close(fd);
        return -1;
    }
    c->fd = fd;
    c->connecting = (rc < 0);
    struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.ptr = c };
    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
    return 0;
}

static void conn_want_write(conn *c, int on) {
    struct epoll_event ev = { .events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c };
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static void conn_flush(conn *c) {
    while (c->out_off < c->out.len) {
        ssize_t n = write(c->fd, c->out.data + c->out_off, c->out.len - c->out_off);
        if (n < 0) {
            if (errno == EAGAIN) { conn_want_write(c, 1); return; }
            if (errno == EINTR) continue;
            session_fail(c->s, "write");
            return;
        }
        c->out_off += (size_t)n;
    }
    conn_want_write(c, 0);
}

/* Send one <body/> on a free connection. */
static int conn_request(conn *c, const char *body, size_t len) {
    if (c->fd < 0 && conn_open(c) < 0) return -1;
    sb_reset(&c->out);
    sb_printf(&c->out,
              "POST %s HTTP/1.1\r\nHost: %s:%s\r\n"
              "Content-Type: text/xml; charset=utf-8\r\nContent-Length: %zu\r\n\r\n",
              opt.path, opt.host, opt.port, len);
    sb_append(&c->out, body, len);
    c->out_off = 0;
    c->busy = 1;
    c->resent = 0;
    c->sent_at = now_us();
    sb_reset(&c->in);
    fig.http_requests++;
    if (!c->connecting) conn_flush(c);
    return 0;
}

static void user_name(const session *s, char *out, size_t len) {
    snprintf(out, len, "%s%d", opt.user_prefix, opt.first_user + s->idx);
}

static void base64(const unsigned char *in, size_t n, strbuf *out) {
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = in[i] << 16;
        if (i + 1 < n) v |= in[i + 1] << 8;
        if (i + 2 < n) v |= in[i + 2];
        sb_putc(out, t[(v >> 18) & 63]);
        sb_putc(out, t[(v >> 12) & 63]);
        sb_putc(out, i + 1 < n ? t[(v >> 6) & 63] : '=');
        sb_putc(out, i + 2 < n ? t[v & 63] : '=');
    }
}

/* Build the next request of s, if any, and send it. */
static void session_pump(session *s) {
    if (s->state == S_IDLE || s->state == S_DONE || s->state == S_FAILED) return;
    while (s->outstanding < 2) {
        conn *c = NULL;
        for (int i = 0; i < 2; i++)
            if (!s->c[i].busy) { c = &s->c[i]; break; }
        if (!c) return;
        strbuf b = STRBUF_INIT;
        if (s->want_create) {
            sb_printf(&b, "<body content='text/xml; charset=utf-8' hold='1' rid='%" PRIu64 "' "
                      "to='%s' ver='1.6' wait='%d' xml:lang='en' xmlns='" NS_HTTPBIND "' "
                      "xmlns:xmpp='urn:xmpp:xbosh' xmpp:version='1.0'/>",
                      s->rid++, opt.domain, opt.wait);
            s->want_create = 0;
        } else if (!s->sid[0]) {
            return;                       /* creation in flight */
        } else if (s->want_restart) {
            if (s->outstanding) return;   /* a restart goes alone */
            sb_printf(&b, "<body rid='%" PRIu64 "' sid='%s' to='%s' xml:lang='en' xmpp:restart='true' "
                      "xmlns='" NS_HTTPBIND "' xmlns:xmpp='urn:xmpp:xbosh'/>",
                      s->rid++, s->sid, opt.domain);
            s->want_restart = 0;
        } else if (s->want_terminate) {
            sb_printf(&b, "<body rid='%" PRIu64 "' sid='%s' type='terminate' xmlns='" NS_HTTPBIND "'>"
                      "<presence type='unavailable' xmlns='jabber:client'/></body>",
                      s->rid++, s->sid);
            s->want_terminate = 0;
            s->state = S_TERMINATING;
        } else if (s->state == S_TERMINATING) {
            return;
        } else if (s->pending.len || s->outstanding == 0) {
            sb_printf(&b, "<body rid='%" PRIu64 "' sid='%s' xmlns='" NS_HTTPBIND "'>", s->rid++, s->sid);
            sb_append(&b, s->pending.data ? s->pending.data : "", s->pending.len);
            sb_puts(&b, "</body>");
            sb_reset(&s->pending);
        } else {
            return;
        }
        int rc = conn_request(c, b.data, b.len);
        sb_free(&b);
        if (rc < 0) { session_fail(s, NULL); return; }
        if (s->state == S_FAILED) return;
        s->outstanding++;
    }
}

static void session_fail(session *s, const char *why) {
    if (s->state == S_FAILED || s->state == S_DONE) return;
    if (why) count_error(why);
    if (s->state == S_READY && s->room >= 0) room_ready[s->room]--;
    s->state = S_FAILED;
    for (int i = 0; i < 2; i++) conn_close(&s->c[i]);
    s->outstanding = 0;
}

static void send_join(session *s) {
    char me[96];
    user_name(s, me, sizeof me);
    sb_printf(&s->pending, "<presence xmlns='jabber:client' to='room%d@%s/%s'>"
              "<x xmlns='" NS_MUC "'><history maxstanzas='0'/></x></presence>",
              s->room + 1, opt.muc, me);
    s->state = S_JOINING;
}

static void session_signed_in(session *s) {
    uint64_t t = now_us();
    samples_add(&fig.signin_us, (uint32_t)(t - s->start_us));
    fig.established++;
    if (t > fig.last_signin_done) fig.last_signin_done = t;
    sb_puts(&s->pending, "<presence xmlns='jabber:client'/>");
    if (wants_muc() && s->room >= 0) {
        send_join(s);
    } else {
        s->state = S_READY;
    }
}

static int from_my_room(const session *s, const char *from, const char **resource) {
    char bare[400];
    snprintf(bare, sizeof bare, "room%d@%s", s->room + 1, opt.muc);
    size_t n = strlen(bare);
    if (!from || strncasecmp(from, bare, n) != 0) return 0;
    if (from[n] == '/') { *resource = from + n + 1; return 1; }
    if (from[n] == 0) { *resource = NULL; return 1; }
    return 0;
}

static void on_groupchat(session *s, xs_node *m) {
    if (xs_child(m, NS_DELAY, "delay")) return;           /* history */
    xs_node *b = xs_child(m, NULL, "body");
    if (!b) return;
    char *text = xs_text(b);
    uint64_t rid, sender, sent;
    unsigned seq;
    if (sscanf(text, "lg %" SCNx64 " %" SCNu64 " %u %" SCNu64, &rid, &sender, &seq, &sent) == 4
        && rid == run_id) {
        if ((int)sender == s->idx) {
            fig.echoes++;
        } else {
            uint64_t t = now_us();
            fig.delivered++;
            samples_add(&fig.latency_us, (uint32_t)(t > sent ? t - sent : 0));
        }
    }
    free(text);
}

static void on_stanza(session *s, xs_node *n) {
    const char *type = xs_attr_get(n, "type");
    const char *id = xs_attr_get(n, "id");
    if (!strcmp(n->name, "features") && !strcmp(n->ns, NS_STREAM)) {
        if (s->state == S_WAIT_MECHS) {
            xs_node *mechs = xs_child(n, NS_SASL, "mechanisms");
            int plain = 0;
            for (xs_node *m = mechs ? xs_child(mechs, NULL, "mechanism") : NULL; m;
                 m = xs_next_elem(m, NULL, "mechanism")) {
                char *t = xs_text(m);
                if (!strcmp(t, "PLAIN")) plain = 1;
                free(t);
            }
            if (!plain) { session_fail(s, "no_plain_mechanism"); return; }
            char user[96];
            user_name(s, user, sizeof user);
            strbuf raw = STRBUF_INIT;
            sb_putc(&raw, 0);
            sb_puts(&raw, user);
            sb_putc(&raw, 0);
            sb_puts(&raw, opt.password);
            sb_puts(&s->pending, "<auth xmlns='" NS_SASL "' mechanism='PLAIN'>");
            base64((unsigned char *)raw.data, raw.len, &s->pending);
            sb_puts(&s->pending, "</auth>");
            sb_free(&raw);
            s->state = S_AUTHING;
        } else if (s->state == S_WAIT_BIND_FEATURES) {
            if (!xs_child(n, NS_BIND, "bind")) { session_fail(s, "no_bind_feature"); return; }
            s->session_feature = xs_child(n, NS_SESSION, "session") != NULL;
            sb_puts(&s->pending, "<iq xmlns='jabber:client' type='set' id='bind_1'>"
                    "<bind xmlns='" NS_BIND "'><resource>lg</resource></bind></iq>");
            s->state = S_BINDING;
        }
        return;
    }
    if (!strcmp(n->ns, NS_SASL)) {
        if (!strcmp(n->name, "success") && s->state == S_AUTHING) {
            s->want_restart = 1;
            s->state = S_WAIT_BIND_FEATURES;
        } else if (!strcmp(n->name, "failure")) {
            session_fail(s, "sasl_failure");
        }
        return;
    }
    if (!strcmp(n->name, "iq")) {
        if (type && !strcmp(type, "error")) {
            char kind[80];
            snprintf(kind, sizeof kind, "iq_error_%s", id ? id : "noid");
            if (id && !strcmp(id, "cfg_1")) { count_error(kind); return; }
            session_fail(s, kind);
            return;
        }
        if (type && !strcmp(type, "result") && id) {
            if (!strcmp(id, "bind_1") && s->state == S_BINDING) {
                if (s->session_feature) {
                    sb_puts(&s->pending, "<iq xmlns='jabber:client' type='set' id='sess_1'>"
                            "<session xmlns='" NS_SESSION "'/></iq>");
                    s->state = S_SESSIONING;
                } else {
                    session_signed_in(s);
                }
            } else if (!strcmp(id, "sess_1") && s->state == S_SESSIONING) {
                session_signed_in(s);
            }
            return;
        }
        if (type && (!strcmp(type, "get") || !strcmp(type, "set"))) {
            /* A server query (ping, disco): answer so it does not wait. */
            const char *from = xs_attr_get(n, "from");
            strbuf r = STRBUF_INIT;
            sb_puts(&r, "<iq xmlns='jabber:client' type='result' id='");
            sb_put_xml_escaped(&r, id ? id : "", id ? strlen(id) : 0);
            sb_puts(&r, "'");
            if (from) { sb_puts(&r, " to='"); sb_put_xml_escaped(&r, from, strlen(from)); sb_puts(&r, "'"); }
            sb_puts(&r, "/>");
            sb_append(&s->pending, r.data, r.len);
            sb_free(&r);
        }
        return;
    }
    if (!strcmp(n->name, "presence") && s->room >= 0) {
        const char *res = NULL;
        if (!from_my_room(s, xs_attr_get(n, "from"), &res)) return;
        if (type && !strcmp(type, "error")) {
            if (s->state == S_JOINING) {
                if (++s->join_tries > JOIN_RETRIES) { session_fail(s, "join_error"); return; }
                count_error("join_retry");
                s->retry_join_us = now_us() + 250000;
            }
            return;
        }
        if (s->state != S_JOINING || type) return;
        char me[96];
        user_name(s, me, sizeof me);
        xs_node *x = xs_child(n, NS_MUC_USER, "x");
        int self = res && !strcmp(res, me), created = 0;
        for (xs_node *st = x ? xs_child(x, NULL, "status") : NULL; st; st = xs_next_elem(st, NULL, "status")) {
            const char *code = xs_attr_get(st, "code");
            if (code && !strcmp(code, "110")) self = 1;
            if (code && !strcmp(code, "201")) created = 1;
        }
        if (!self) return;
        if (created) {
            /* A new room may stay locked until configured (XEP-0045 §10.1.2):
             * accept the default configuration, an "instant room". */
            sb_printf(&s->pending, "<iq xmlns='jabber:client' type='set' id='cfg_1' to='room%d@%s'>"
                      "<query xmlns='http://jabber.org/protocol/muc#owner'>"
                      "<x xmlns='jabber:x:data' type='submit'/></query></iq>", s->room + 1, opt.muc);
        }
        s->state = S_READY;
        fig.joined++;
        room_ready[s->room]++;
        return;
    }
    if (!strcmp(n->name, "message")) {
        if (type && !strcmp(type, "groupchat")) on_groupchat(s, n);
        else if (type && !strcmp(type, "error")) count_error("message_error");
    }
}

/* One complete HTTP response on c. */
static void on_response(conn *c, int status, const char *body, size_t len) {
    session *s = c->s;
    c->busy = 0;
    c->reused = c->fd >= 0;
    s->outstanding--;
    if (status != 200) {
        char kind[32];
        snprintf(kind, sizeof kind, "http_%d", status);
        session_fail(s, kind);
        return;
    }
    xs_node *root = NULL;
    char err[128];
    if (xs_parse_document(body, len, MAX_RESPONSE, &root, err, sizeof err) != XS_OK) {
        session_fail(s, "bad_xml");
        return;
    }
    if (strcmp(root->name, "body")) { xs_free(root); session_fail(s, "not_body"); return; }
    const char *type = xs_attr_get(root, "type");
    if (s->state == S_TERMINATING) {
        if (!s->outstanding) {
            fig.terminated_clean++;
            s->state = S_DONE;
            for (int i = 0; i < 2; i++) conn_close(&s->c[i]);
        }
        xs_free(root);
        return;
    }
    if (type && !strcmp(type, "terminate")) {
        const char *cond = xs_attr_get(root, "condition");
        char kind[96];
        snprintf(kind, sizeof kind, "terminate_%s", cond ? cond : "none");
        xs_free(root);
        session_fail(s, kind);
        return;
    }
    if (s->state == S_CREATING) {
        const char *sid = xs_attr_get(root, "sid");
        if (!sid || strlen(sid) >= sizeof s->sid) { xs_free(root); session_fail(s, "no_sid"); return; }
        strcpy(s->sid, sid);
        s->state = S_WAIT_MECHS;
    }
    for (xs_node *n = root->first_child; n && s->state != S_FAILED; n = n->next)
        if (n->name) on_stanza(s, n);
    xs_free(root);
    session_pump(s);
}

static int has_token(const char *p, const char *end, const char *tok) {
    size_t n = strlen(tok);
    for (; p + n <= end; p++)
        if (!strncasecmp(p, tok, n)) return 1;
    return 0;
}

/* Parse what c has read: 1 when a whole response was handled. */
static int conn_try_response(conn *c) {
    char *hdr_end = memmem(c->in.data, c->in.len, "\r\n\r\n", 4);
    if (!hdr_end) return 0;
    int status = 0;
    if (sscanf(c->in.data, "HTTP/1.%*d %d", &status) != 1) { session_fail(c->s, "bad_http"); return -1; }
    size_t hlen = (size_t)(hdr_end - c->in.data) + 4;
    long clen = -1;
    int close_after = 0;
    for (char *p = c->in.data; p < hdr_end; ) {
        char *eol = memmem(p, (size_t)(hdr_end - p) + 2, "\r\n", 2);
        if (!eol) break;
        if (!strncasecmp(p, "Content-Length:", 15)) clen = strtol(p + 15, NULL, 10);
        else if (!strncasecmp(p, "Connection:", 11) && has_token(p + 11, eol, "close"))
            close_after = 1;
        else if (!strncasecmp(p, "Transfer-Encoding:", 18)) { session_fail(c->s, "http_chunked"); return -1; }
        p = eol + 2;
    }
    if (clen < 0) { session_fail(c->s, "http_no_length"); return -1; }
    if (c->in.len < hlen + (size_t)clen) return 0;
    strbuf in = c->in;                     /* take the bytes: on_response may reuse c */
    sb_init(&c->in);
    if (close_after) conn_close(c);
    on_response(c, status, in.data + hlen, (size_t)clen);
    sb_free(&in);
    return 1;
}

static void conn_on_event(conn *c, uint32_t ev) {
    session *s = c->s;
    if (c->connecting && (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) { session_fail(s, err == ECONNREFUSED ? "connect_refused" : "connect"); return; }
        c->connecting = 0;
        conn_flush(c);
        if (c->fd < 0) return;
    } else if (ev & EPOLLOUT) {
        conn_flush(c);
        if (c->fd < 0) return;
    }
    if (!(ev & (EPOLLIN | EPOLLHUP | EPOLLERR))) return;
    for (;;) {
        sb_reserve(&c->in, 16384);
        ssize_t n = read(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len - 1);
        if (n > 0) {
            c->in.len += (size_t)n;
            c->in.data[c->in.len] = 0;
            if (c->in.len > MAX_RESPONSE) { session_fail(s, "response_too_big"); return; }
            if (c->busy && conn_try_response(c) != 0) return;
            continue;
        }
        if (n < 0 && errno == EAGAIN) return;
        if (n < 0 && errno == EINTR) continue;
        /* EOF or error */
        if (!c->busy) { conn_close(c); return; }
        if (c->reused && !c->in.len && !c->resent) {
            /* The server closed a keep-alive connection as we reused it:
             * send the same request (same rid) on a fresh one. */
            strbuf out = c->out;
            sb_init(&c->out);
            conn_close(c);
            count_error("http_resend");
            if (conn_open(c) < 0) { sb_free(&out); session_fail(s, NULL); return; }
            c->out = out;
            c->out_off = 0;
            c->busy = 1;
            c->resent = 1;
            if (!c->connecting) conn_flush(c);
            return;
        }
        session_fail(s, n == 0 ? "conn_closed" : "conn_error");
        return;
    }
}

/* ------------------------------------------------------------------ */
/* the run                                                             */

static volatile sig_atomic_t interrupted;
static void on_signal(int sig) { (void)sig; interrupted = 1; }

static void mark(const char *what) {
    if (!opt.mark_file[0]) return;
    FILE *f = fopen(opt.mark_file, "a");
    if (!f) return;
    fprintf(f, "%s\n", what);
    fclose(f);
}

static void send_message(session *s, uint64_t t) {
    if (room_ready[s->room] > 1) fig.expected += (uint64_t)(room_ready[s->room] - 1);
    sb_printf(&s->pending, "<message xmlns='jabber:client' type='groupchat' to='room%d@%s'>"
              "<body>lg %" PRIx64 " %d %u %" PRIu64 "</body></message>",
              s->room + 1, opt.muc, run_id, s->idx, s->seq++, t);
    fig.sent++;
    session_pump(s);
}

static double think_us(void) {          /* 1/rate, jittered +-50% */
    return 1e6 / opt.rate * (0.5 + rnd01());
}

static void usage(void) {
    fprintf(stderr,
        "usage: loadgen --url http://127.0.0.1:PORT/http-bind [options]\n"
        "  --domain D        XMPP domain (localhost)\n"
        "  --muc M           MUC service (conference.<domain>)\n"
        "  --users N         users user1..userN (20)\n"
        "  --first-user K    number of the first user (1)\n"
        "  --user-prefix P   user name prefix (user)\n"
        "  --password P      password of every user (secret)\n"
        "  --rooms R         rooms room1..roomR, users spread evenly (1)\n"
        "  --big-room K      team: users 1..K in room1, the rest in rooms of 20 (users/3)\n"
        "  --rate X          groupchat messages/s per user (0.5)\n"
        "  --duration S      traffic (or idle hold) seconds (20)\n"
        "  --ramp S          spread session starts over S seconds (5)\n"
        "  --drain S         wait for late deliveries after traffic (3)\n"
        "  --signin-timeout S  give up on sessions not ready after ramp+S (60)\n"
        "  --scenario room|rooms|signin|idle|team (room)\n"
        "  --wait W          BOSH wait (30; idle: 60)\n"
        "  --seed N          random seed\n"
        "  --mark-file F     append 'ready'/'traffic_end' lines (for RSS sampling)\n"
        "  -v                progress on stderr\n");
    exit(2);
}

static void parse_url(const char *url) {
    const char *p = url;
    if (strncmp(p, "http://", 7)) { fprintf(stderr, "loadgen: only http:// URLs\n"); exit(2); }
    p += 7;
    const char *slash = strchr(p, '/');
    size_t hp = slash ? (size_t)(slash - p) : strlen(p);
    char hostport[300];
    if (hp >= sizeof hostport) usage();
    memcpy(hostport, p, hp);
    hostport[hp] = 0;
    snprintf(opt.path, sizeof opt.path, "%s", slash ? slash : "/");
    char *colon = strrchr(hostport, ':');
    if (colon) { *colon = 0; snprintf(opt.port, sizeof opt.port, "%s", colon + 1); }
    else snprintf(opt.port, sizeof opt.port, "80");
    snprintf(opt.host, sizeof opt.host, "%s", hostport);
}

static void print_json(double elapsed_s, double traffic_s) {
    qsort(fig.signin_us.v, fig.signin_us.n, sizeof(uint32_t), cmp_u32);
    qsort(fig.latency_us.v, fig.latency_us.n, sizeof(uint32_t), cmp_u32);
    double signin_span = fig.established && fig.last_signin_done > fig.first_signin_start
        ? (double)(fig.last_signin_done - fig.first_signin_start) / 1e6 : 0;
    printf("{\"scenario\":\"%s\",\"users\":%d,\"rooms\":%d,\"rate\":%g,\"duration\":%g,\"wait\":%d,"
           "\"sessions_attempted\":%d,\"sessions_established\":%" PRIu64 ",\"sessions_joined\":%" PRIu64 ","
           "\"signin_ms_p50\":%.1f,\"signin_ms_p99\":%.1f,\"signin_ms_max\":%.1f,\"signins_per_s\":%.1f,"
           "\"messages_sent\":%" PRIu64 ",\"messages_expected\":%" PRIu64 ",\"messages_delivered\":%" PRIu64 ","
           "\"delivered_per_s\":%.1f,\"latency_ms_p50\":%.2f,\"latency_ms_p99\":%.2f,\"latency_ms_max\":%.2f,"
           "\"http_requests\":%" PRIu64 ",\"terminated_clean\":%" PRIu64 ",\"elapsed_s\":%.2f,\"errors\":{",
           scenario_name(), opt.users, opt.rooms, opt.rate, opt.duration, opt.wait,
           opt.users, fig.established, fig.joined,
           pct_ms(&fig.signin_us, 50), pct_ms(&fig.signin_us, 99), pct_ms(&fig.signin_us, 100),
           signin_span > 0 ? (double)fig.established / signin_span : 0,
           fig.sent, fig.expected, fig.delivered,
           traffic_s > 0 ? (double)fig.delivered / traffic_s : 0,
           pct_ms(&fig.latency_us, 50), pct_ms(&fig.latency_us, 99), pct_ms(&fig.latency_us, 100),
           fig.http_requests, fig.terminated_clean, elapsed_s);
    for (int i = 0; i < fig.nerrors; i++)
        printf("%s\"%s\":%" PRIu64, i ? "," : "", fig.errors[i].name, fig.errors[i].n);
    printf("}}\n");
    fflush(stdout);
}

int main(int argc, char **argv) {
    snprintf(opt.domain, sizeof opt.domain, "localhost");
    snprintf(opt.password, sizeof opt.password, "secret");
    snprintf(opt.user_prefix, sizeof opt.user_prefix, "user");
    opt.users = 20; opt.rooms = 0; opt.first_user = 1;
    opt.rate = 0.5; opt.duration = 20; opt.ramp = 5; opt.drain = 3; opt.signin_timeout = 60;
    opt.wait = -1;
    opt.seed = (unsigned)getpid();
    const char *url = NULL;

    static const struct option lo[] = {
        {"url", 1, 0, 'u'}, {"domain", 1, 0, 'd'}, {"muc", 1, 0, 'm'}, {"users", 1, 0, 'n'},
        {"rooms", 1, 0, 'r'}, {"rate", 1, 0, 'R'}, {"duration", 1, 0, 'D'}, {"ramp", 1, 0, 'a'},
        {"scenario", 1, 0, 's'}, {"wait", 1, 0, 'w'}, {"password", 1, 0, 'p'},
        {"first-user", 1, 0, 'f'}, {"user-prefix", 1, 0, 'P'}, {"drain", 1, 0, 'x'},
        {"signin-timeout", 1, 0, 't'}, {"seed", 1, 0, 'S'}, {"mark-file", 1, 0, 'M'},
        {"big-room", 1, 0, 'B'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "vh", lo, NULL)) != -1) {
        switch (ch) {
        case 'u': url = optarg; break;
        case 'd': snprintf(opt.domain, sizeof opt.domain, "%s", optarg); break;
        case 'm': snprintf(opt.muc, sizeof opt.muc, "%s", optarg); break;
        case 'n': opt.users = atoi(optarg); break;
        case 'r': opt.rooms = atoi(optarg); break;
        case 'B': opt.big_room = atoi(optarg); break;
        case 'R': opt.rate = atof(optarg); break;
        case 'D': opt.duration = atof(optarg); break;
        case 'a': opt.ramp = atof(optarg); break;
        case 'w': opt.wait = atoi(optarg); break;
        case 'p': snprintf(opt.password, sizeof opt.password, "%s", optarg); break;
        case 'f': opt.first_user = atoi(optarg); break;
        case 'P': snprintf(opt.user_prefix, sizeof opt.user_prefix, "%s", optarg); break;
        case 'x': opt.drain = atof(optarg); break;
        case 't': opt.signin_timeout = atof(optarg); break;
        case 'S': opt.seed = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'M': snprintf(opt.mark_file, sizeof opt.mark_file, "%s", optarg); break;
        case 'v': opt.verbose = 1; break;
        case 's':
            if (!strcmp(optarg, "room")) opt.scenario = SC_ROOM;
            else if (!strcmp(optarg, "rooms")) opt.scenario = SC_ROOMS;
            else if (!strcmp(optarg, "signin")) opt.scenario = SC_SIGNIN;
            else if (!strcmp(optarg, "idle")) opt.scenario = SC_IDLE;
            else if (!strcmp(optarg, "team")) opt.scenario = SC_TEAM;
            else usage();
            break;
        default: usage();
        }
    }
    if (!url || opt.users < 1 || opt.rate <= 0) usage();
    parse_url(url);
    if (!opt.muc[0]) snprintf(opt.muc, sizeof opt.muc, "conference.%s", opt.domain);
    if (opt.wait < 0) opt.wait = opt.scenario == SC_IDLE ? 60 : 30;
    if (opt.rooms <= 0) opt.rooms = opt.scenario == SC_ROOMS ? (opt.users + 19) / 20 : 1;
    if (opt.scenario == SC_ROOM) opt.rooms = 1;
    /* team (issue 15): where teams live, one big room (the company) and
     * many small ones (teams of 20). */
    if (opt.scenario == SC_TEAM) {
        if (opt.big_room <= 0 || opt.big_room > opt.users) opt.big_room = opt.users / 3;
        if (opt.big_room < 1) opt.big_room = 1;
        opt.rooms = 1 + (opt.users - opt.big_room + 19) / 20;
    }

    struct addrinfo hints = { .ai_socktype = SOCK_STREAM };
    int gai = getaddrinfo(opt.host, opt.port, &hints, &server_addr);
    if (gai) { fprintf(stderr, "loadgen: %s: %s\n", opt.host, gai_strerror(gai)); return 2; }

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    rng_state = 0x9E3779B97F4A7C15ULL ^ opt.seed;
    run_id = ((uint64_t)now_us() << 16) ^ (uint64_t)getpid();
    epfd = epoll_create1(EPOLL_CLOEXEC);

    sessions = calloc((size_t)opt.users, sizeof *sessions);
    room_ready = calloc((size_t)opt.rooms, sizeof *room_ready);
    for (int i = 0; i < opt.users; i++) {
        session *s = &sessions[i];
        s->idx = i;
        s->room = !wants_muc() ? -1
                : opt.scenario != SC_TEAM ? i % opt.rooms
                : i < opt.big_room ? 0 : 1 + (i - opt.big_room) % (opt.rooms - 1 > 0 ? opt.rooms - 1 : 1);
        s->rid = 1000000 + (uint64_t)(rnd01() * 1e9);
        for (int k = 0; k < 2; k++) { s->c[k].fd = -1; s->c[k].s = s; }
    }

    uint64_t t0 = now_us();
    fig.first_signin_start = t0;
    uint64_t ramp_us = (uint64_t)(opt.ramp * 1e6);
    uint64_t ready_deadline = t0 + ramp_us + (uint64_t)(opt.signin_timeout * 1e6);
    uint64_t traffic_start = 0, traffic_end = 0, drain_end = 0, term_deadline = 0;
    uint64_t last_progress = t0;
    int started = 0, phase = 0;     /* 0 sign-in, 1 traffic, 2 drain, 3 terminate */
    struct epoll_event evs[512];

    while (!interrupted) {
        int n = epoll_wait(epfd, evs, 512, TICK_MS);
        for (int i = 0; i < n; i++) conn_on_event(evs[i].data.ptr, evs[i].events);
        uint64_t t = now_us();

        while (started < opt.users && t >= t0 + (opt.users > 1 ? ramp_us * (uint64_t)started / (uint64_t)(opt.users - 1) : 0)) {
            session *s = &sessions[started++];
            s->state = S_CREATING;
            s->want_create = 1;
            s->start_us = now_us();
            session_pump(s);
        }

        int settled = 0, ready = 0;
        for (int i = 0; i < opt.users; i++) {
            session *s = &sessions[i];
            for (int k = 0; k < 2; k++) {
                conn *c = &s->c[k];
                if (c->busy && t > c->sent_at && t - c->sent_at > (uint64_t)(opt.wait + 15) * 1000000u)
                    session_fail(s, "http_timeout");
            }
            if (s->state == S_JOINING && s->retry_join_us && t >= s->retry_join_us) {
                s->retry_join_us = 0;
                send_join(s);
                session_pump(s);
            }
            if (s->state == S_READY) ready++;
            if (s->state == S_READY || s->state == S_FAILED) settled++;
            if (phase == 1 && wants_muc() && s->state == S_READY && t >= traffic_start && t >= s->next_msg_us) {
                if (s->next_msg_us) send_message(s, t);
                s->next_msg_us = t + (uint64_t)think_us();
            }
        }

        if (phase == 0 && (settled == opt.users || t >= ready_deadline)) {
            phase = 1;
            /* Messages start after a short gap so that the harness can
             * sample the servers (RSS, Redis counters) between sign-in and
             * traffic. */
            traffic_start = t + 500000u;
            traffic_end = traffic_start + (uint64_t)(opt.duration * 1e6);
            char line[64];
            snprintf(line, sizeof line, "ready %d", ready);
            mark(line);
            if (opt.verbose) fprintf(stderr, "loadgen: %d/%d ready after %.1fs\n", ready, opt.users, (t - t0) / 1e6);
            for (int i = 0; i < opt.users; i++) {   /* first message after a random phase */
                session *s = &sessions[i];
                if (wants_muc() && s->state == S_READY)
                    s->next_msg_us = traffic_start + 1 + (uint64_t)(rnd01() * 1e6 / opt.rate);
            }
        } else if (phase == 1 && t >= traffic_end) {
            phase = 2;
            mark("traffic_end");
            drain_end = t + (uint64_t)(opt.drain * 1e6);
        } else if (phase == 2 && t >= drain_end) {
            phase = 3;
            term_deadline = t + 10000000u;
            for (int i = 0; i < opt.users; i++) {
                session *s = &sessions[i];
                if (s->state == S_IDLE || s->state == S_FAILED || s->state == S_DONE) continue;
                if (!s->sid[0]) { session_fail(s, "no_session_at_end"); continue; }
                if (s->state != S_READY) count_error("not_ready_at_end");
                s->want_terminate = 1;
                session_pump(s);
            }
        } else if (phase == 3) {
            int open = 0;
            for (int i = 0; i < opt.users; i++)
                if (sessions[i].state == S_TERMINATING) open++;
            if (!open || t >= term_deadline) {
                if (open) for (int i = 0; i < opt.users; i++)
                    if (sessions[i].state == S_TERMINATING) session_fail(&sessions[i], "terminate_timeout");
                break;
            }
        }

        if (opt.verbose && t - last_progress > 5000000u) {
            last_progress = t;
            fprintf(stderr, "loadgen: t=%.0fs phase=%d established=%" PRIu64 " ready=%d sent=%" PRIu64
                    " delivered=%" PRIu64 " errors=%d kinds\n", (t - t0) / 1e6, phase, fig.established,
                    ready, fig.sent, fig.delivered, fig.nerrors);
        }
    }
    if (interrupted) count_error("interrupted");
    uint64_t t_end = now_us();
    double traffic_s = traffic_end > traffic_start ? (double)(traffic_end - traffic_start) / 1e6 : 0;
    print_json((double)(t_end - t0) / 1e6, traffic_s);
    for (int i = 0; i < opt.users; i++)
        for (int k = 0; k < 2; k++) { conn_close(&sessions[i].c[k]); sb_free(&sessions[i].c[k].in); sb_free(&sessions[i].c[k].out); }
    return 0;
}
