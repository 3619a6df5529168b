/*
 * relay_server: chatd's end of the relay (common/RELAY.md).
 *
 * Every httpd child holds one connection here and multiplexes its BOSH
 * requests over it. Each REQUEST frame becomes a relay_req handed to the
 * BOSH layer, which answers it exactly once with relay_req_answer (now or
 * later). Answers are encoded into the connection's output buffer and
 * written when the socket is writable, so no caller ever blocks.
 *
 * Peer authentication (issue 13, RELAY.md "Peer authentication"): chatd
 * believes RT_AUTH_USER and RT_PREBIND only from httpd. On a unix socket
 * the kernel tells us the peer's uid (SO_PEERCRED) at accept; it must be
 * relay_peer_user, root or chatd's own uid (those two could read every
 * secret chatd has anyway). With relay_secret_file (required on tcp:)
 * HELLO must carry that secret. A refused peer gets one REFUSE frame
 * saying why, in answer to its HELLO, and is closed; nothing it sent
 * reaches the BOSH layer.
 *
 * A connection keeps the list of its unanswered requests. When the child
 * sends DRAIN, or the connection dies, each held request's on_release hook
 * runs so its holder answers at once (after a death the answer is dropped:
 * the BOSH layer keeps it for retransmission by rid).
 */
#include "relay_server.h"
#include "listen.h"
#include "rate.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include "../../common/relay_proto.h"
#include "../../common/relay_secret.h"
#include "../../common/strbuf.h"
#include "log.h"

#define RELAY_READ_CHUNK   65536
/* Bytes one relay connection may consume per loop turn (issue 14): a
 * child with a burst of requests buffered is served in slices, and the
 * native clients and other children in between (epoll is level-triggered,
 * so the rest is read next turn). A relay carries many users, hence more
 * than a native socket's c2s_read_budget. */
#define RELAY_READ_BUDGET  (1024 * 1024)
#define RELAY_FLUSH_MS     1000     /* at stop: how long to try to flush */
#define RELAY_HELLO_MS     10000    /* a connection must say HELLO within this */

typedef struct req_priv req_priv;

struct relay_conn {
    struct relay_server *srv;
    relay_conn *prev, *next;
    int         fd;
    strbuf      in, out;
    req_priv   *reqs;          /* unanswered requests, newest first */
    char        peer[128];
    char        who[96];       /* "unix peer uid 33 (www-data) pid 12" or "tcp peer addr:port" */
    const char *refuse;        /* set at accept: refuse this peer at its HELLO */
    int         dead;          /* EOF/error seen: close after this round */
    int         greeted;       /* HELLO received (it must come first) */
    int         drained;       /* DRAIN received: hold nothing any more */
    loop_timer *flush_timer;   /* deferred write of answers, see relay_req_answer */
    loop_timer *hello_timer;   /* until HELLO: a silent peer is closed */
};

/* relay_req is first so a relay_req * is a req_priv *. */
struct req_priv {
    relay_req   pub;
    req_priv   *prev, *next;
    relay_conn *owner;         /* list it is on; NULL once detached */
    int         released;      /* on_release already called */
    char       *body, *client_addr, *auth_user, *display_name;
};

typedef struct relay_server {
    chatd      *d;
    int         listen_fd;
    char       *unix_path;     /* to unlink at stop */
    relay_conn *conns;
    listen_pacer pacer;        /* out of descriptors: pause accepting */
    token_bucket refusal_log;  /* refused peers' log lines (refusal_logged) */
    unsigned long refusals_unlogged;
} relay_server;

/* ---- request list ---- */

static void req_attach(relay_conn *c, req_priv *r) {
    r->owner = c;
    r->prev = NULL;
    r->next = c->reqs;
    if (c->reqs) c->reqs->prev = r;
    c->reqs = r;
}

static void req_detach(req_priv *r) {
    relay_conn *c = r->owner;
    if (!c) return;
    if (r->prev) r->prev->next = r->next; else c->reqs = r->next;
    if (r->next) r->next->prev = r->prev;
    r->prev = r->next = NULL;
    r->owner = NULL;
}

static void req_free(req_priv *r) {
    free(r->body);
    free(r->client_addr);
    free(r->auth_user);
    free(r->display_name);
    free(r);
}

/* Call on_release once for each held request still on c's list. Holders
 * answer from inside the hook, which may also answer other requests of
 * this connection, so restart the scan after every call. */
static void release_held(relay_conn *c) {
    for (;;) {
        req_priv *r = c->reqs;
        while (r && (r->released || !r->pub.on_release)) r = r->next;
        if (!r) return;
        r->released = 1;
        r->pub.on_release(&r->pub, r->pub.release_ud);
    }
}

/* ---- output ---- */

static void conn_io(loop *l, int fd, unsigned events, void *ud);

static void conn_want_write(relay_conn *c) {
    if (c->dead) return;
    loop_watch(c->srv->d->loop, c->fd, LOOP_READ | (c->out.len ? LOOP_WRITE : 0),
               conn_io, c);
}

/* Write what the socket takes now. Returns -1 on a write error. */
static int conn_flush(relay_conn *c) {
    while (c->out.len > 0) {
        ssize_t n = send(c->fd, c->out.data, c->out.len, MSG_NOSIGNAL);
        if (n > 0) { sb_consume(&c->out, (size_t)n); continue; }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
        return -1;
    }
    return 0;
}

static void conn_free(relay_conn *c);

static void conn_flush_cb(loop *l, void *ud) {
    (void)l;
    relay_conn *c = ud;
    c->flush_timer = NULL;
    /* dead here: conn_close_later, outside this connection's conn_io */
    if (c->dead || conn_flush(c) < 0) { conn_free(c); return; }
    conn_want_write(c);
}

/* Answers made outside this connection's own I/O callback (a message from
 * another connection, a timer) are written once at the end of the loop
 * iteration, all together, straight from here. Arming LOOP_WRITE instead
 * would cost two epoll_ctl calls to arm it and two to disarm it, and a
 * wake-up, for every batch. Only what the socket does not take waits for
 * LOOP_WRITE. */
static void conn_schedule_flush(relay_conn *c) {
    if (c->dead || c->flush_timer) return;
    c->flush_timer = loop_timer_add(c->srv->d->loop, 0, conn_flush_cb, c);
}

/* Close c, but not from here: we may be inside a holder's callback, or
 * inside this connection's own conn_io (which then frees it on return;
 * otherwise the timer does). Answers made meanwhile are dropped. */
static void conn_close_later(relay_conn *c) {
    c->dead = 1;
    if (!c->flush_timer) c->flush_timer = loop_timer_add(c->srv->d->loop, 0, conn_flush_cb, c);
}

/* More unread answers than cfg.relay_max_output: the httpd child stopped
 * reading (stuck or stopped), and what it owes its clients would grow in
 * our memory without bound. Close the connection as on any loss: held
 * requests are released, and the BOSH layer keeps their answers for the
 * clients' retransmissions, which arrive over another child. */
static void conn_overflow(relay_conn *c) {
    chatd *d = c->srv->d;
    log_warn("relay: %s has %zu bytes of answers unread (relay_max_output %zu): closing",
             c->peer, c->out.len, d->cfg.relay_max_output);
    d->stats.relay_overflows++;
    conn_close_later(c);
}

void relay_req_answer(relay_req *pub, int http_status, const char *content_type,
                      const char *body, size_t len, unsigned retry_after) {
    req_priv *r = (req_priv *)pub;
    relay_conn *c = r->owner;
    req_detach(r);
    if (c && pub->conn_alive && !c->dead) {
        size_t off = relay_begin(&c->out, RELAY_RESPONSE, pub->id);
        relay_put_u16(&c->out, RT_HTTP_STATUS, (uint16_t)http_status);
        relay_put_str(&c->out, RT_CONTENT_TYPE, content_type);
        relay_put(&c->out, RT_BODY, body ? body : "", (uint32_t)len);
        if (retry_after) relay_put_u32(&c->out, RT_RETRY_AFTER, retry_after);
        relay_end(&c->out, off);
        /* Over the cap, first see whether the socket takes it now: only
         * what the child leaves unread counts. */
        size_t cap = c->srv->d->cfg.relay_max_output;
        if (c->out.len > cap && conn_flush(c) < 0) conn_close_later(c);
        else if (c->out.len > cap) conn_overflow(c);
        else conn_schedule_flush(c);
    }
    req_free(r);
}

/* ---- connection lifetime ---- */

static void conn_free(relay_conn *c) {
    relay_server *srv = c->srv;
    chatd *d = srv->d;
    c->dead = 1;
    loop_timer_cancel(d->loop, c->flush_timer);
    c->flush_timer = NULL;
    loop_timer_cancel(d->loop, c->hello_timer);
    c->hello_timer = NULL;
    loop_unwatch(d->loop, c->fd);
    close(c->fd);
    c->fd = -1;
    /* Held requests: answers from now on are dropped. */
    for (req_priv *r = c->reqs; r; r = r->next) r->pub.conn_alive = 0;
    release_held(c);
    /* Requests nobody holds yet (e.g. waiting on Redis) live on detached. */
    while (c->reqs) {
        req_priv *r = c->reqs;
        req_detach(r);
        r->pub.conn = NULL;
    }
    if (c->prev) c->prev->next = c->next; else srv->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    if (d->stats.relay_conns) d->stats.relay_conns--;
    log_info("relay: connection %s closed", c->peer);
    sb_free(&c->in);
    sb_free(&c->out);
    free(c);
}

static char *field_dup(const relay_field *f) {
    char *s = malloc((size_t)f->len + 1);
    if (!s) abort();
    memcpy(s, f->data, f->len);
    s[f->len] = '\0';
    return s;
}

static void handle_request(relay_conn *c, const relay_header *h, const char *payload) {
    chatd *d = c->srv->d;
    req_priv *r = calloc(1, sizeof(*r));
    if (!r) abort();
    relay_field f;
    if (relay_find(payload, h->length, RT_BODY, &f)) {
        r->body = field_dup(&f);
        r->pub.body_len = f.len;
    } else {
        r->body = strdup("");
    }
    r->client_addr = relay_find(payload, h->length, RT_CLIENT_ADDR, &f) ? field_dup(&f) : strdup("");
    if (relay_find(payload, h->length, RT_AUTH_USER, &f) && f.len > 0)
        r->auth_user = field_dup(&f);
    if (r->auth_user && relay_find(payload, h->length, RT_DISPLAY_NAME, &f) && f.len > 0)
        r->display_name = field_dup(&f);
    if (r->auth_user && relay_find(payload, h->length, RT_PREBIND, &f) && f.len == 1)
        r->pub.prebind = f.data[0] == 1;
    if (relay_find(payload, h->length, RT_SECURE, &f) && f.len == 1)
        r->pub.secure = f.data[0] == 1;
    r->pub.confidential = r->pub.secure;
    if (relay_find(payload, h->length, RT_CONFIDENTIAL, &f) && f.len == 1 && f.data[0] == 1)
        r->pub.confidential = 1;
    if (!r->body || !r->client_addr) abort();
    r->pub.conn = c;
    r->pub.id = h->req_id;
    r->pub.body = r->body;
    r->pub.client_addr = r->client_addr;
    r->pub.auth_user = r->auth_user;
    r->pub.display_name = r->display_name;
    r->pub.conn_alive = 1;
    req_attach(c, r);
    d->stats.relay_requests++;
    bosh_handle_request(d, &r->pub);
    /* After DRAIN nothing is held (RELAY.md): release what was just held. */
    if (c->drained) release_held(c);
}

/* Answer HELLO with REFUSE (why) and close once it is written: the peer
 * reads the reason, then EOF. Everything after its HELLO is ignored. */
static void conn_refuse(relay_conn *c, const char *why) {
    size_t off = relay_begin(&c->out, RELAY_REFUSE, 0);
    relay_put_str(&c->out, RT_REASON, why);
    relay_end(&c->out, off);
    conn_flush(c);
    c->dead = 1;
}

/* The socket is 0666 (the uid check decides), so any local user can
 * connect in a loop: every refusal is counted in relay_refused, but only
 * 10 at once and then one a second reach the log, with a line saying how
 * many were left out. */
static int refusal_logged(relay_server *srv) {
    if (!tb_take(&srv->refusal_log, 1.0, 10.0, 1.0, loop_now_ms(srv->d->loop))) {
        srv->refusals_unlogged++;
        return 0;
    }
    if (srv->refusals_unlogged) {
        log_warn("BOSH00154: relay: %lu more refused or silent peers since the last line "
                 "(not logged one by one; chatctl stats relay_refused counts them all)",
                 srv->refusals_unlogged);
        srv->refusals_unlogged = 0;
    }
    return 1;
}

/* Whether HELLO may go on: the peer check made at accept, then the
 * secret. Logs and refuses when not. */
static int hello_allowed(relay_conn *c, const char *payload, uint32_t len) {
    chatd *d = c->srv->d;
    relay_field f;
    if (c->refuse) {
        conn_refuse(c, c->refuse);
        return 0;
    }
    if (d->cfg.relay_secret) {
        int have = relay_find(payload, len, RT_SECRET, &f);
        if (!have || !relay_secret_equal(d->cfg.relay_secret, d->cfg.relay_secret_len,
                                         f.data, f.len)) {
            const char *why = have ? "a wrong relay secret" : "no relay secret";
            if (refusal_logged(c->srv))
                log_warn("BOSH00151: relay: refused %s: %s in HELLO (relay_secret_file %s)",
                         c->who, why, d->cfg.relay_secret_file);
            d->stats.relay_refused++;
            conn_refuse(c, have ? "a wrong relay secret (BoshRelaySecretFile must hold "
                                  "chatd's relay_secret_file)"
                                : "no relay secret (set BoshRelaySecretFile to chatd's "
                                  "relay_secret_file)");
            return 0;
        }
    }
    return 1;
}

static void handle_frame(relay_conn *c, const relay_header *h, const char *payload) {
    chatd *d = c->srv->d;
    relay_field f;
    size_t off;
    if (!c->greeted && h->type != RELAY_HELLO) {
        log_warn("relay: %s: first frame is not HELLO, closing", c->who);
        c->dead = 1;
        return;
    }
    switch (h->type) {
    case RELAY_HELLO:
        if (c->greeted) break;     /* one HELLO per connection */
        loop_timer_cancel(d->loop, c->hello_timer);
        c->hello_timer = NULL;
        if (!hello_allowed(c, payload, h->length)) return;
        if (relay_find(payload, h->length, RT_PEER_NAME, &f)) {
            size_t n = f.len < sizeof(c->peer) - 1 ? f.len : sizeof(c->peer) - 1;
            memcpy(c->peer, f.data, n);
            c->peer[n] = '\0';
        }
        c->greeted = 1;
        log_info("relay: hello from %s (%s)", c->peer, c->who);
        off = relay_begin(&c->out, RELAY_WELCOME, 0);
        relay_put_str(&c->out, RT_NODE_ID, d->cfg.node_id);
        relay_end(&c->out, off);
        break;
    case RELAY_REQUEST:
        handle_request(c, h, payload);
        break;
    case RELAY_DRAIN:
        log_info("relay: %s drains", c->peer);
        c->drained = 1;
        release_held(c);
        break;
    case RELAY_CANCEL:
        /* The BOSH layer still answers; the client discards the answer. */
        break;
    case RELAY_PING:
        off = relay_begin(&c->out, RELAY_PONG, h->req_id);
        relay_end(&c->out, off);
        break;
    default:
        break;   /* unknown frame types are ignored (RELAY.md: versioning) */
    }
}

/* Decode every complete frame in c->in. Returns -1 on a protocol error. */
static int conn_process_input(relay_conn *c) {
    size_t pos = 0;
    int rc = 0;
    while (!c->dead) {
        relay_header h;
        size_t need;
        relay_decode_status st = relay_decode(c->in.data + pos, c->in.len - pos,
                                              RELAY_MAX_PAYLOAD, &h, &need);
        if (st == RELAY_NEED_MORE) break;
        if (st == RELAY_BAD) { rc = -1; break; }
        handle_frame(c, &h, c->in.data + pos + RELAY_HEADER_LEN);
        pos += need;
    }
    sb_consume(&c->in, pos);
    return rc;
}

static void conn_io(loop *l, int fd, unsigned events, void *ud) {
    (void)l; (void)fd;
    relay_conn *c = ud;
    if (events & LOOP_READ) {
        size_t used = 0;
        for (;;) {
            if (read_budget_next(RELAY_READ_BUDGET, used, RELAY_READ_CHUNK) == 0) break;
            sb_reserve(&c->in, RELAY_READ_CHUNK);
            ssize_t n = recv(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len - 1, 0);
            if (n > 0) {
                used += (size_t)n;
                c->in.len += (size_t)n;
                c->in.data[c->in.len] = '\0';
                if (conn_process_input(c) < 0) {
                    log_warn("relay: protocol error from %s, closing", c->peer);
                    c->dead = 1;
                    break;
                }
                /* Marked dead while processing (no HELLO first, or over
                 * relay_max_output): read no more, close below. */
                if (c->dead || (size_t)n < RELAY_READ_CHUNK / 2) break;
                continue;
            }
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
            c->dead = 1;   /* EOF or error */
            break;
        }
    }
    if (!c->dead && conn_flush(c) < 0) c->dead = 1;
    if (c->dead) { conn_free(c); return; }
    conn_want_write(c);
}

static void hello_timeout(loop *l, void *ud) {
    (void)l;
    relay_conn *c = ud;
    c->hello_timer = NULL;
    if (refusal_logged(c->srv))
        log_warn("BOSH00152: relay: %s sent no HELLO within %d s, closing", c->who,
                 RELAY_HELLO_MS / 1000);
    conn_close_later(c);
}

static int peer_uid_allowed(const chatd_config *cfg, uid_t uid) {
    if (uid == 0 || uid == geteuid()) return 1;
    for (int i = 0; i < cfg->relay_peer_nuids; i++)
        if (cfg->relay_peer_uids[i] == uid) return 1;
    return 0;
}

/* Who is on the other end, for logs; for a unix peer also the uid check. */
static void identify_peer(relay_conn *c, const struct sockaddr_storage *ss) {
    chatd *d = c->srv->d;
    if (ss->ss_family != AF_UNIX) {
        char host[NI_MAXHOST] = "?", port[NI_MAXSERV] = "?";
        getnameinfo((const struct sockaddr *)ss, sizeof(*ss), host, sizeof(host),
                    port, sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV);
        snprintf(c->who, sizeof(c->who), ss->ss_family == AF_INET6 ? "tcp peer [%s]:%s"
                 : "tcp peer %s:%s", host, port);
        return;
    }
    struct ucred cred;
    socklen_t len = sizeof(cred);
    if (getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
        snprintf(c->who, sizeof(c->who), "unix peer (uid unknown)");
        if (refusal_logged(c->srv))
            log_warn("BOSH00153: relay: SO_PEERCRED: %s; refusing the peer", strerror(errno));
        c->refuse = "chatd could not tell the peer's uid";
        return;
    }
    struct passwd *pw = getpwuid(cred.uid);
    snprintf(c->who, sizeof(c->who), "unix peer uid %u (%s) pid %d", (unsigned)cred.uid,
             pw ? pw->pw_name : "?", (int)cred.pid);
    if (!peer_uid_allowed(&d->cfg, cred.uid)) {
        if (refusal_logged(c->srv))
            log_warn("BOSH00150: relay: refused %s: not relay_peer_user (%s), root or "
                     "chatd's own uid %u", c->who, d->cfg.relay_peer_user,
                     (unsigned)geteuid());
        d->stats.relay_refused++;
        c->refuse = "this uid may not use the relay (chatd's relay_peer_user)";
    }
}

static void accept_io(loop *l, int fd, unsigned events, void *ud) {
    (void)l; (void)events; (void)fd;
    relay_server *srv = ud;
    chatd *d = srv->d;
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int cfd = listen_accept_paced(&srv->pacer, &ss, &sl);
        if (cfd < 0) return;
        if (ss.ss_family != AF_UNIX) {
            int one = 1;
            setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        }
        relay_conn *c = calloc(1, sizeof(*c));
        if (!c) abort();
        c->srv = srv;
        c->fd = cfd;
        sb_init(&c->in);
        sb_init(&c->out);
        snprintf(c->peer, sizeof(c->peer), "fd%d", cfd);
        identify_peer(c, &ss);
        if (loop_watch(d->loop, cfd, LOOP_READ, conn_io, c) < 0) {
            close(cfd);
            free(c);
            continue;
        }
        c->next = srv->conns;
        if (srv->conns) srv->conns->prev = c;
        srv->conns = c;
        d->stats.relay_conns++;
        c->hello_timer = loop_timer_add(d->loop, RELAY_HELLO_MS, hello_timeout, c);
    }
}

/* ---- listening ---- */

int relay_server_start(chatd *d) {
    const char *spec = d->cfg.relay_listen;
    relay_server *srv = calloc(1, sizeof(*srv));
    if (!srv) return -1;
    srv->d = d;
    if (!strncmp(spec, "unix:", 5)) {
        /* 0666: who may use the relay is decided per connection by the
         * peer's uid (identify_peer), which names a user, where a file
         * mode can only name a group, and httpd's user would have to
         * join chatd's group, which also reads chatd.conf and its Redis
         * password. The directory may restrict further. */
        srv->listen_fd = listen_unix(spec + 5, 0666, "relay");
        if (srv->listen_fd >= 0) srv->unix_path = strdup(spec + 5);
    }
    else if (!strncmp(spec, "tcp:", 4)) srv->listen_fd = listen_tcp(spec + 4, "relay");
    else {
        log_error("relay_listen: expected unix:/path or tcp:host:port, got '%s'", spec);
        srv->listen_fd = -1;
    }
    srv->pacer = (listen_pacer){ .l = d->loop, .fd = srv->listen_fd, .cb = accept_io,
                                 .ud = srv, .what = "relay",
                                 .counter = &d->stats.accept_paused };
    if (srv->listen_fd < 0 ||
        loop_watch(d->loop, srv->listen_fd, LOOP_READ, accept_io, srv) < 0) {
        if (srv->listen_fd >= 0) close(srv->listen_fd);
        free(srv->unix_path);
        free(srv);
        return -1;
    }
    d->relay = srv;
    log_info("relay: listening on %s", spec);
    return 0;
}

/* Best effort, bounded: push pending answers out before closing. */
static void flush_all_blocking(relay_server *srv) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    long long deadline = ts.tv_sec * 1000LL + ts.tv_nsec / 1000000 + RELAY_FLUSH_MS;
    for (relay_conn *c = srv->conns; c; c = c->next) {
        while (c->out.len > 0 && !c->dead) {
            if (conn_flush(c) < 0) { c->dead = 1; break; }
            if (!c->out.len) break;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            long long left = deadline - (ts.tv_sec * 1000LL + ts.tv_nsec / 1000000);
            if (left <= 0) break;
            struct pollfd p = { .fd = c->fd, .events = POLLOUT };
            poll(&p, 1, (int)left);
        }
    }
}

void relay_server_stop(chatd *d) {
    relay_server *srv = d->relay;
    if (!srv) return;
    listen_pacer_cancel(&srv->pacer);
    if (srv->listen_fd >= 0) {
        loop_unwatch(d->loop, srv->listen_fd);
        close(srv->listen_fd);
    }
    if (srv->unix_path) unlink(srv->unix_path);
    flush_all_blocking(srv);
    while (srv->conns) conn_free(srv->conns);
    free(srv->unix_path);
    free(srv);
    d->relay = NULL;
}
