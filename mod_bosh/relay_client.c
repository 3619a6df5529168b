/*
 * relay_client.c - the per-child, per-chatd multiplexed relay connection.
 * See relay_client.h for the threading and memory rules.
 *
 * Locks: wmu serialises writers and connect/close of the socket; mu
 * guards the state (fd, generation, waiter list, counters). Order is
 * always wmu before mu. Only the reader thread closes an established
 * socket: a writer that hits an error shuts it down, the reader then
 * sees EOF, fails that generation's waiters and closes it.
 *
 * Liveness (issue 14): a chatd that is stopped (SIGSTOP, a debugger, a
 * hung disk) or black-holed keeps its socket open, so without a probe
 * every new session sent to it parks a worker for BoshMaxWait + 15 s.
 * The reader therefore sends PING (RELAY.md) once the connection has been
 * silent for ping_ms, and when nothing at all arrives within
 * ping_timeout_ms after that it gives the connection up: the node is
 * marked unhealthy, every request held on it is released at once
 * (RELAY_CALL_BROKEN: the handler answers 503, the client resends its
 * rid), and new sessions skip it (relay_client_usable) until the reader's
 * own reconnect, HELLO and WELCOME succeed again. Any frame counts as a
 * sign of life, so a busy connection never needs a PING.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "mod_bosh.h"
#include "relay_client.h"
#include "../common/relay_proto.h"
#include "../common/strbuf.h"

#define RELAY_CONNECT_TIMEOUT_MS   2000
#define RELAY_SEND_TIMEOUT_S       5
/* How often a parked request wakes to check its client (and, under
 * prefork, a graceful stop). Every held request wakes at this pace and
 * takes mu: at 200 ms, 10,000 held requests cost 50,000 wake-ups a second
 * of idle CPU; at 1 s a client that went away is noticed within a second. */
#define RELAY_TICK_MS              1000
#define RELAY_BACKOFF_MIN_MS       250
#define RELAY_BACKOFF_MAX_MS       5000

enum { W_WAITING = 0, W_DONE, W_BROKEN };

/* Waiters are found by req_id in a chained hash: a child may hold
 * thousands of requests, and every RESPONSE looks its waiter up under mu.
 * req_ids are handed out in sequence, so the low bits spread them evenly;
 * chains are doubly linked so a waiter unlinks itself in O(1). */
#define RELAY_WAITER_BUCKETS 1024

typedef struct relay_waiter {
    struct relay_waiter *next, *prev;
    uint32_t       req_id;
    unsigned       gen;
    int            state;
    int            linked;      /* in rc->waiters (under mu) */
    /* Posted once, under mu, when the state leaves W_WAITING (see
     * relay_client_call: why a semaphore and not a condition variable). */
    sem_t          sem;
    char          *buf;         /* RELAY_ANSWER_INLINE bytes, or NULL */
    /* answer (in buf, or malloc'd by the reader: malloced) */
    int            malloced;
    int            http_status;
    char          *content_type;
    char          *body;
    size_t         body_len;
    unsigned       retry_after;
} relay_waiter;

struct relay_client {
    server_rec     *s;
    char           *node_id;
    char           *url;
    char           *peer_name;
    char           *secret;         /* RT_SECRET in HELLO, or NULL */
    size_t          secret_len;
    bosh_endpoint   ep;

    pthread_mutex_t wmu;            /* writers, connect */
    pthread_mutex_t mu;             /* state below */
    pthread_cond_t  reader_cv;      /* reader waits for a connection */
    pthread_t       reader;
    int             reader_started;

    int             fd;             /* -1: not connected */
    unsigned        gen;            /* bumped on every connect */
    unsigned        drained_gen;    /* gen that got DRAIN (0: none) */
    volatile int    draining;       /* DRAIN asked for: the child is stopping */
    volatile int    stop;
    uint32_t        next_id;
    relay_waiter   *waiters[RELAY_WAITER_BUCKETS];   /* by req_id */
    int64_t         retry_at_ms;    /* back-off after a failed connect */
    int             backoff_ms;
    int             ping_ms, ping_timeout_ms;   /* 0 ping_ms: no PINGs */
    int             unhealthy;      /* missed a PONG; cleared by a connect */

    relay_client_stats st;
};

int64_t relay_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void ms_to_timespec(int64_t ms, struct timespec *ts)
{
    ts->tv_sec = ms / 1000;
    ts->tv_nsec = (ms % 1000) * 1000000;
}

static void cond_init_monotonic(pthread_cond_t *cv)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &attr);
    pthread_condattr_destroy(&attr);
}

/* Write all of buf; 0 on success, errno on failure. */
static int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno ? errno : EIO;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Read exactly len bytes before deadline; 0 or an errno (ETIMEDOUT,
 * ECONNRESET for EOF). Only used during the handshake. */
static int read_exact(int fd, char *buf, size_t len, int64_t deadline_ms)
{
    while (len > 0) {
        struct pollfd pfd = { fd, POLLIN, 0 };
        int64_t left = deadline_ms - relay_now_ms();
        ssize_t n;
        if (left <= 0)
            return ETIMEDOUT;
        if (poll(&pfd, 1, (int)left) < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        if (!(pfd.revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        n = read(fd, buf, len);
        if (n == 0)
            return ECONNRESET;
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return errno;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Non-blocking connect bounded by RELAY_CONNECT_TIMEOUT_MS, then back to
 * blocking with a send timeout. Returns the fd or -1 with *why set. */
static int open_socket(const bosh_endpoint *ep, const char **why, int *err)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    struct addrinfo hints, *ai = NULL;
    int fd, flags, rv;
    struct timeval tv = { RELAY_SEND_TIMEOUT_S, 0 };

    memset(&ss, 0, sizeof(ss));
    if (ep->is_unix) {
        struct sockaddr_un *sun = (struct sockaddr_un *)&ss;
        sun->sun_family = AF_UNIX;
        strcpy(sun->sun_path, ep->path);
        sslen = sizeof(*sun);
    }
    else {
        char port[16];
        memset(&hints, 0, sizeof(hints));
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        snprintf(port, sizeof(port), "%d", ep->port);
        if ((rv = getaddrinfo(ep->host, port, &hints, &ai)) != 0 || !ai) {
            *why = "cannot resolve host";
            *err = 0;
            return -1;
        }
        memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
        sslen = ai->ai_addrlen;
        freeaddrinfo(ai);
    }

    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *why = "socket()";
        *err = errno;
        return -1;
    }
    flags = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    rv = connect(fd, (struct sockaddr *)&ss, sslen);
    if (rv < 0 && errno == EINPROGRESS) {
        struct pollfd pfd = { fd, POLLOUT, 0 };
        int soerr = 0;
        socklen_t len = sizeof(soerr);
        rv = poll(&pfd, 1, RELAY_CONNECT_TIMEOUT_MS);
        if (rv == 0) {
            close(fd);
            *why = "connect timed out";
            *err = 0;
            return -1;
        }
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
        if (rv < 0 || soerr) {
            *err = rv < 0 ? errno : soerr;
            close(fd);
            *why = "connect()";
            return -1;
        }
    }
    else if (rv < 0) {
        *err = errno;
        close(fd);
        *why = "connect()";
        return -1;
    }
    fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (!ep->is_unix) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    }
    return fd;
}

/* Connect, send HELLO, read WELCOME. Called with wmu held and no socket.
 * Returns 0 and installs the socket, or -1 (logged, back-off armed). */
static int connect_locked(relay_client *rc)
{
    const char *why = NULL;
    int err = 0, fd;
    strbuf out = STRBUF_INIT;
    size_t at;
    char hdr[RELAY_HEADER_LEN];
    char *payload = NULL;
    relay_header h;
    size_t need;
    relay_field f;
    char node[BOSH_NODE_ID_MAX] = "";

    fd = open_socket(&rc->ep, &why, &err);
    if (fd >= 0) {
        at = relay_begin(&out, RELAY_HELLO, 0);
        relay_put_str(&out, RT_PEER_NAME, rc->peer_name);
        if (rc->secret)
            relay_put(&out, RT_SECRET, rc->secret, (uint32_t)rc->secret_len);
        relay_end(&out, at);
        if ((err = write_all(fd, out.data, out.len)) != 0)
            why = "sending HELLO";
        memset(out.data, 0, out.len);   /* the secret */
        sb_free(&out);
    }
    if (fd >= 0 && !why) {
        int64_t deadline = relay_now_ms() + RELAY_CONNECT_TIMEOUT_MS;
        if ((err = read_exact(fd, hdr, sizeof(hdr), deadline)) != 0) {
            why = "waiting for WELCOME";
        }
        else if (relay_decode(hdr, sizeof(hdr), RELAY_MAX_PAYLOAD, &h, &need)
                 == RELAY_BAD) {
            why = "relay version mismatch (bad WELCOME header)";
        }
        else if (h.type != RELAY_WELCOME && h.type != RELAY_REFUSE) {
            why = "expected a WELCOME frame";
        }
        else {
            payload = malloc(h.length ? h.length : 1);
            if ((err = read_exact(fd, payload, h.length, deadline)) != 0)
                why = "reading WELCOME";
            else if (h.type == RELAY_REFUSE) {
                /* chatd says why (RELAY.md "Peer authentication"): its
                 * peer check or the secret. Log its words as they are. */
                int n = relay_find(payload, h.length, RT_REASON, &f)
                        ? (int)(f.len > 512 ? 512 : f.len) : 0;
                ap_log_error(APLOG_MARK, APLOG_ERR, 0, rc->s,
                             "mod_bosh: BOSH00160: chatd node %s (%s) refused the "
                             "relay: %.*s", rc->node_id, rc->url, n,
                             n ? f.data : "(no reason given)");
                why = "refused by chatd";
            }
            else if (relay_find(payload, h.length, RT_NODE_ID, &f) &&
                     f.len < sizeof(node)) {
                memcpy(node, f.data, f.len);
                node[f.len] = '\0';
            }
            free(payload);
        }
    }
    /* RELAY.md: a node that is not the one configured at this address
     * would hand out sids that route elsewhere; treat it as down. */
    if (!why && strcmp(node, rc->node_id) != 0) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, rc->s,
                     "mod_bosh: chatd at %s calls itself node '%s' but BoshChatd "
                     "names it '%s'; not using it", rc->url, node, rc->node_id);
        why = "node id mismatch";
    }
    if (why) {
        int64_t now = relay_now_ms();
        if (fd >= 0)
            close(fd);
        pthread_mutex_lock(&rc->mu);
        rc->st.connect_failures++;
        rc->backoff_ms = rc->backoff_ms ? rc->backoff_ms * 2 : RELAY_BACKOFF_MIN_MS;
        if (rc->backoff_ms > RELAY_BACKOFF_MAX_MS)
            rc->backoff_ms = RELAY_BACKOFF_MAX_MS;
        rc->retry_at_ms = now + rc->backoff_ms;
        pthread_mutex_unlock(&rc->mu);
        ap_log_error(APLOG_MARK, APLOG_ERR, err ? APR_FROM_OS_ERROR(err) : 0, rc->s,
                     "mod_bosh: relay to chatd node %s (%s) failed: %s; "
                     "next attempt in %d ms", rc->node_id, rc->url, why,
                     rc->backoff_ms);
        return -1;
    }
    pthread_mutex_lock(&rc->mu);
    rc->fd = fd;
    rc->gen++;
    if (rc->unhealthy)
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, rc->s,
                     "mod_bosh: BOSH00352: chatd node %s (%s) answers again; "
                     "back in service", rc->node_id, rc->url);
    rc->unhealthy = 0;
    rc->backoff_ms = 0;
    rc->retry_at_ms = 0;
    rc->st.connects++;
    pthread_cond_signal(&rc->reader_cv);
    pthread_mutex_unlock(&rc->mu);
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, rc->s,
                 "mod_bosh: relay connected to chatd node %s (%s)",
                 rc->node_id, rc->url);
    return 0;
}

/* The reader saw the socket of generation gen fail: fail its waiters,
 * close it. */
static void connection_lost(relay_client *rc, unsigned gen, const char *reason,
                            int err)
{
    int old = -1, failed = 0;
    relay_waiter *w;

    pthread_mutex_lock(&rc->wmu);
    pthread_mutex_lock(&rc->mu);
    if (rc->gen == gen && rc->fd >= 0) {
        old = rc->fd;
        rc->fd = -1;
        for (size_t b = 0; b < RELAY_WAITER_BUCKETS; b++) {
            for (w = rc->waiters[b]; w; w = w->next) {
                if (w->gen == gen && w->state == W_WAITING) {
                    w->state = W_BROKEN;
                    sem_post(&w->sem);
                    failed++;
                }
            }
        }
    }
    pthread_mutex_unlock(&rc->mu);
    if (old >= 0)
        close(old);
    pthread_mutex_unlock(&rc->wmu);
    if (old >= 0 && !rc->stop)
        ap_log_error(APLOG_MARK, APLOG_WARNING, err ? APR_FROM_OS_ERROR(err) : 0,
                     rc->s, "mod_bosh: relay to chatd node %s (%s) lost: %s; "
                     "%d waiting request(s) failed", rc->node_id, rc->url,
                     reason, failed);
}

static void unlink_waiter(relay_client *rc, relay_waiter *w);

/* Hand one RESPONSE to its waiter (dropped if nobody waits any more).
 * An answer that fits the waiter's buffer is copied there under mu (the
 * worker reads it only once the semaphore is posted, or under mu); a
 * bigger one is malloc'd
 * here and freed by the worker (relay_call_clear). */
static void deliver(relay_client *rc, const relay_header *h, const char *payload)
{
    relay_field f, ft, fb;
    uint16_t status = 200;
    uint32_t retry = 0;
    char *ctype = NULL, *body = NULL;
    int has_type, has_body, fits;
    relay_waiter *w;

    memset(&ft, 0, sizeof(ft));
    memset(&fb, 0, sizeof(fb));

    if (relay_find(payload, h->length, RT_HTTP_STATUS, &f))
        relay_field_u16(&f, &status);
    if (relay_find(payload, h->length, RT_RETRY_AFTER, &f))
        relay_field_u32(&f, &retry);
    has_type = relay_find(payload, h->length, RT_CONTENT_TYPE, &ft);
    has_body = relay_find(payload, h->length, RT_BODY, &fb);
    fits = (has_type ? ft.len + 1 : 0) + (has_body ? fb.len + 1 : 0) <= RELAY_ANSWER_INLINE;
    if (!fits) {
        if (has_type) {
            ctype = malloc(ft.len + 1);
            memcpy(ctype, ft.data, ft.len);
            ctype[ft.len] = '\0';
        }
        if (has_body) {
            body = malloc(fb.len + 1);
            memcpy(body, fb.data, fb.len);
            body[fb.len] = '\0';
        }
    }

    pthread_mutex_lock(&rc->mu);
    rc->st.responses++;
    for (w = rc->waiters[h->req_id % RELAY_WAITER_BUCKETS]; w; w = w->next) {
        if (w->req_id == h->req_id && w->state == W_WAITING) {
            w->http_status = status;
            w->retry_after = retry;
            w->content_type = NULL;
            w->body = NULL;
            w->body_len = has_body ? fb.len : 0;
            if (fits && w->buf) {
                char *at = w->buf;
                w->malloced = 0;
                if (has_type) {
                    memcpy(at, ft.data, ft.len);
                    at[ft.len] = '\0';
                    w->content_type = at;
                    at += ft.len + 1;
                }
                if (has_body) {
                    memcpy(at, fb.data, fb.len);
                    at[fb.len] = '\0';
                    w->body = at;
                }
            }
            else {
                /* too big, or a caller without a buffer (malloc under mu:
                 * only callers that pass no buffer get here) */
                w->malloced = 1;
                if (fits) {
                    if (has_type) {
                        ctype = malloc(ft.len + 1);
                        memcpy(ctype, ft.data, ft.len);
                        ctype[ft.len] = '\0';
                    }
                    if (has_body) {
                        body = malloc(fb.len + 1);
                        memcpy(body, fb.data, fb.len);
                        body[fb.len] = '\0';
                    }
                }
                w->content_type = ctype;
                w->body = body;
                ctype = body = NULL;
            }
            /* done with it here: the worker need not take mu again */
            unlink_waiter(rc, w);
            w->linked = 0;
            rc->st.held--;
            w->state = W_DONE;
            sem_post(&w->sem);
            break;
        }
    }
    pthread_mutex_unlock(&rc->mu);
    free(ctype);
    free(body);
}

/* Answer a PING if the write lock is free (never block the reader). */
static void answer_ping(relay_client *rc, int fd, uint32_t req_id)
{
    char pong[RELAY_HEADER_LEN] = { RELAY_VERSION, RELAY_PONG, 0, 0,
        (char)(req_id >> 24), (char)(req_id >> 16), (char)(req_id >> 8),
        (char)req_id, 0, 0, 0, 0 };
    if (pthread_mutex_trylock(&rc->wmu) == 0) {
        write_all(fd, pong, sizeof(pong));
        pthread_mutex_unlock(&rc->wmu);
    }
}

/* Read frames from fd until it fails or we are told to stop. */
static void read_connection(relay_client *rc, int fd, unsigned gen)
{
    strbuf in = STRBUF_INIT;
    char chunk[16384];
    const char *reason = "closed by chatd";
    int err = 0, dead = 0;
    int64_t last_rx = relay_now_ms(), ping_at = 0;   /* 0: no PING out */
    uint32_t ping_id = 0;

    while (!rc->stop) {
        struct pollfd pfd = { fd, POLLIN, 0 };
        ssize_t n;
        int64_t now;
        int rv = poll(&pfd, 1, rc->ping_ms > 0 && rc->ping_ms < 1000 ? rc->ping_ms / 2 + 1
                                                                     : 1000);
        if (rv < 0 && errno != EINTR) {
            reason = "poll()";
            err = errno;
            break;
        }
        now = relay_now_ms();
        if (rv <= 0 && rc->ping_ms > 0) {
            if (ping_at && now - ping_at >= rc->ping_timeout_ms) {
                dead = 1;
                reason = "no answer to PING (node stopped or unreachable)";
                break;
            }
            if (!ping_at && now - last_rx >= rc->ping_ms) {
                /* Never block the reader on a writer: a writer stuck on a
                 * full socket (chatd not reading) holds wmu for up to
                 * RELAY_SEND_TIMEOUT_S. Then the PING is "sent" in spirit:
                 * the deadline runs from now either way. */
                ping_at = now;
                if (pthread_mutex_trylock(&rc->wmu) == 0) {
                    char frame[RELAY_HEADER_LEN] = { RELAY_VERSION, RELAY_PING, 0, 0,
                        0, 0, 0, 0, 0, 0, 0, 0 };
                    ping_id++;
                    frame[4] = (char)(ping_id >> 24);
                    frame[5] = (char)(ping_id >> 16);
                    frame[6] = (char)(ping_id >> 8);
                    frame[7] = (char)ping_id;
                    if (write_all(fd, frame, sizeof(frame)) != 0)
                        shutdown(fd, SHUT_RDWR);
                    pthread_mutex_unlock(&rc->wmu);
                    pthread_mutex_lock(&rc->mu);
                    rc->st.pings++;
                    pthread_mutex_unlock(&rc->mu);
                }
            }
        }
        if (rv <= 0)
            continue;
        n = read(fd, chunk, sizeof(chunk));
        if (n == 0)
            break;
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            reason = "read()";
            err = errno;
            break;
        }
        last_rx = relay_now_ms();       /* any byte is a sign of life */
        ping_at = 0;
        sb_append(&in, chunk, (size_t)n);
        for (;;) {
            relay_header h;
            size_t need = 0;
            relay_decode_status ds = relay_decode(in.data, in.len,
                                                  RELAY_MAX_PAYLOAD, &h, &need);
            if (ds == RELAY_NEED_MORE)
                break;
            if (ds == RELAY_BAD) {
                reason = "protocol error (bad frame)";
                goto out;
            }
            if (h.type == RELAY_RESPONSE)
                deliver(rc, &h, in.data + RELAY_HEADER_LEN);
            else if (h.type == RELAY_PING)
                answer_ping(rc, fd, h.req_id);
            sb_consume(&in, need);
        }
    }
out:
    sb_free(&in);
    if (dead) {
        /* Out of service before the waiters are failed, so that a worker
         * woken by connection_lost cannot pick this node again; the
         * back-off keeps even the reader's reconnect from hammering it. */
        pthread_mutex_lock(&rc->mu);
        rc->unhealthy = 1;
        rc->st.ping_timeouts++;
        rc->backoff_ms = RELAY_BACKOFF_MIN_MS;
        rc->retry_at_ms = relay_now_ms() + rc->backoff_ms;
        pthread_mutex_unlock(&rc->mu);
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, rc->s,
                     "mod_bosh: BOSH00351: chatd node %s (%s) sent nothing for %d ms "
                     "after a PING (BoshRelayPingTimeout); taking it out of service, "
                     "releasing its held requests and refusing new sessions for it "
                     "until it answers again", rc->node_id, rc->url,
                     rc->ping_timeout_ms);
        shutdown(fd, SHUT_RDWR);
    }
    connection_lost(rc, gen, rc->stop ? "child stopping" : reason, err);
}

static void *reader_main(void *arg)
{
    relay_client *rc = arg;

    for (;;) {
        int fd;
        unsigned gen;

        pthread_mutex_lock(&rc->mu);
        while (rc->fd < 0 && !rc->stop) {
            struct timespec ts;
            /* A connection that broke (chatd restarted) is made again from
             * here once its back-off has run out, not on the next request:
             * otherwise a child that failed while chatd was down refuses
             * sign-ins after chatd is back until traffic happens to reach
             * it past its back-off. Never before the first connect (that
             * stays lazy) nor once DRAIN was asked for (the child is
             * stopping). */
            if (rc->st.connects > 0 && !rc->draining &&
                relay_now_ms() >= rc->retry_at_ms) {
                pthread_mutex_unlock(&rc->mu);
                pthread_mutex_lock(&rc->wmu);
                pthread_mutex_lock(&rc->mu);
                int again = rc->fd < 0 && !rc->stop && !rc->draining;
                pthread_mutex_unlock(&rc->mu);
                if (again)
                    connect_locked(rc);     /* logs and arms back-off on failure */
                pthread_mutex_unlock(&rc->wmu);
                pthread_mutex_lock(&rc->mu);
                if (rc->fd >= 0 || rc->stop)
                    break;
            }
            ms_to_timespec(relay_now_ms() + 1000, &ts);
            pthread_cond_timedwait(&rc->reader_cv, &rc->mu, &ts);
        }
        fd = rc->fd;
        gen = rc->gen;
        pthread_mutex_unlock(&rc->mu);
        if (fd < 0)          /* stopping and nothing to close */
            break;
        read_connection(rc, fd, gen);
        if (rc->stop)
            break;
    }
    return NULL;
}

relay_client *relay_client_create(server_rec *s, const char *node_id,
                                  const char *url, const bosh_endpoint *ep,
                                  const char *peer_name, const char *secret,
                                  size_t secret_len, int ping_ms,
                                  int ping_timeout_ms)
{
    relay_client *rc = calloc(1, sizeof(*rc));
    int rv;

    rc->ping_ms = ping_ms > 0 ? ping_ms : 0;
    rc->ping_timeout_ms = ping_timeout_ms > 0 ? ping_timeout_ms : 1000;

    rc->s = s;
    rc->node_id = strdup(node_id);
    rc->url = strdup(url);
    rc->peer_name = strdup(peer_name);
    if (secret) {
        rc->secret = malloc(secret_len ? secret_len : 1);
        memcpy(rc->secret, secret, secret_len);
        rc->secret_len = secret_len;
    }
    rc->ep = *ep;
    rc->fd = -1;
    pthread_mutex_init(&rc->wmu, NULL);
    pthread_mutex_init(&rc->mu, NULL);
    cond_init_monotonic(&rc->reader_cv);
    if ((rv = pthread_create(&rc->reader, NULL, reader_main, rc)) != 0) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, APR_FROM_OS_ERROR(rv), s,
                     "mod_bosh: cannot start the relay reader thread for node %s",
                     node_id);
        return NULL;   /* rc leaks on purpose: it is tiny and the child is broken */
    }
    rc->reader_started = 1;
    return rc;
}

void relay_client_stop(relay_client *rc, int join)
{
    int fd;

    if (!rc)
        return;
    rc->stop = 1;
    fd = rc->fd;                        /* a plain read: no lock, see header */
    if (fd >= 0)
        shutdown(fd, SHUT_RDWR);        /* wakes the reader with EOF */
    pthread_cond_signal(&rc->reader_cv);
    if (join && rc->reader_started) {
        pthread_join(rc->reader, NULL);
        rc->reader_started = 0;
    }
}

void relay_call_clear(relay_call *call)
{
    if (call->resp_malloced) {
        free(call->content_type);
        free(call->resp_body);
    }
    call->resp_malloced = 0;
    call->content_type = NULL;
    call->resp_body = NULL;
    call->resp_len = 0;
}

static void link_waiter(relay_client *rc, relay_waiter *w)
{
    relay_waiter **head = &rc->waiters[w->req_id % RELAY_WAITER_BUCKETS];
    w->prev = NULL;
    w->next = *head;
    if (*head)
        (*head)->prev = w;
    *head = w;
}

static void unlink_waiter(relay_client *rc, relay_waiter *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        rc->waiters[w->req_id % RELAY_WAITER_BUCKETS] = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->next = w->prev = NULL;
}

/* Send a header-only frame on generation gen, if it is still current. */
static void send_control(relay_client *rc, relay_type type, uint32_t req_id,
                         unsigned gen)
{
    char frame[RELAY_HEADER_LEN] = { RELAY_VERSION, (char)type, 0, 0,
        (char)(req_id >> 24), (char)(req_id >> 16), (char)(req_id >> 8),
        (char)req_id, 0, 0, 0, 0 };
    int fd;

    pthread_mutex_lock(&rc->wmu);
    pthread_mutex_lock(&rc->mu);
    fd = (rc->gen == gen) ? rc->fd : -1;
    pthread_mutex_unlock(&rc->mu);
    if (fd >= 0 && write_all(fd, frame, sizeof(frame)) != 0)
        shutdown(fd, SHUT_RDWR);
    pthread_mutex_unlock(&rc->wmu);
}

relay_call_status relay_client_call(relay_client *rc, relay_call *call,
                                    int64_t deadline_ms,
                                    relay_tick_fn tick, void *tick_ud)
{
    relay_waiter w;
    strbuf out = STRBUF_INIT;
    size_t at;
    int fd, err, aborted = 0, timed_out = 0;
    relay_call_status result;
    uint8_t secure = call->secure ? 1 : 0;
    int unhealthy;
    uint8_t confidential = call->confidential ? 1 : 0;

    memset(&w, 0, sizeof(w));
    w.buf = call->answer_buf;
    sem_init(&w.sem, 0, 0);

    /* Make sure there is a connection; connects are serialised by wmu. */
    pthread_mutex_lock(&rc->wmu);
    pthread_mutex_lock(&rc->mu);
    fd = rc->fd;
    unhealthy = rc->unhealthy;
    pthread_mutex_unlock(&rc->mu);
    if (fd < 0) {
        /* An unhealthy node is probed by the reader thread alone: a
         * request never waits for a connect to a node that stopped
         * answering (RELAY_CONNECT_TIMEOUT_MS each). */
        if (rc->stop || unhealthy || relay_now_ms() < rc->retry_at_ms ||
            connect_locked(rc) != 0) {
            pthread_mutex_unlock(&rc->wmu);
            sem_destroy(&w.sem);
            return RELAY_CALL_UNAVAILABLE;
        }
    }

    /* Register the waiter before the frame can be answered. */
    pthread_mutex_lock(&rc->mu);
    if (++rc->next_id == 0)
        rc->next_id = 1;
    w.req_id = rc->next_id;
    w.gen = rc->gen;
    w.state = W_WAITING;
    link_waiter(rc, &w);
    w.linked = 1;
    rc->st.requests++;
    rc->st.held++;
    fd = rc->fd;
    pthread_mutex_unlock(&rc->mu);

    at = relay_begin(&out, RELAY_REQUEST, w.req_id);
    relay_put(&out, RT_BODY, call->body, (uint32_t)call->body_len);
    relay_put_str(&out, RT_CLIENT_ADDR, call->client_addr);
    relay_put(&out, RT_SECURE, &secure, 1);
    relay_put(&out, RT_CONFIDENTIAL, &confidential, 1);
    relay_put_str(&out, RT_SID, call->sid);
    if (call->auth_user) {
        relay_put_str(&out, RT_AUTH_USER, call->auth_user);
        relay_put_str(&out, RT_DISPLAY_NAME, call->display_name);
        if (call->prebind) {
            unsigned char one = 1;
            relay_put(&out, RT_PREBIND, &one, 1);
        }
    }
    relay_end(&out, at);
    err = write_all(fd, out.data, out.len);
    if (err)
        shutdown(fd, SHUT_RDWR);        /* the reader fails the waiters */
    pthread_mutex_unlock(&rc->wmu);
    sb_free(&out);

    /* Park until answered, broken, past the deadline, or abandoned.
     *
     * Why a semaphore: with a condition variable on mu, the reader
     * signalled while holding mu (it must: the waiter lives on this stack
     * and may be gone once mu is released), so the woken worker at once
     * blocked on mu again until the reader let go: a futex wait and a wake
     * more per answer, on every answer (issue 15, kernel time). Now the
     * reader posts the semaphore under mu after unlinking the waiter, and
     * the worker wakes needing no lock at all. glibc's sem_post may still
     * be returning when sem_wait has returned, and destroying the
     * semaphore then is allowed (glibc >= 2.21; POSIX: no thread blocked
     * on it). The 1 s tick (RELAY_TICK_MS) still takes mu. */
    for (;;) {
        int64_t now = relay_now_ms(), until;
        struct timespec ts;
        if (now < deadline_ms) {
            until = now + RELAY_TICK_MS < deadline_ms ? now + RELAY_TICK_MS : deadline_ms;
            ms_to_timespec(until, &ts);
            if (sem_clockwait(&w.sem, CLOCK_MONOTONIC, &ts) == 0)
                break;                  /* posted: W_DONE or W_BROKEN */
            if (errno == EINTR)
                continue;
        }
        pthread_mutex_lock(&rc->mu);
        if (w.state != W_WAITING) {     /* posted since the wait ended */
            pthread_mutex_unlock(&rc->mu);
            break;
        }
        if (relay_now_ms() >= deadline_ms) {
            timed_out = 1;
            unlink_waiter(rc, &w);
            w.linked = 0;
            rc->st.held--;
            rc->st.timeouts++;
            pthread_mutex_unlock(&rc->mu);
            break;
        }
        pthread_mutex_unlock(&rc->mu);
        if (!tick || !tick(tick_ud))
            continue;
        pthread_mutex_lock(&rc->mu);
        if (w.state == W_WAITING) {
            aborted = 1;
            unlink_waiter(rc, &w);
            w.linked = 0;
            rc->st.held--;
            rc->st.canceled++;
        }
        pthread_mutex_unlock(&rc->mu);
        if (aborted)
            break;
        /* answered while the tick ran: the post is there; take it */
    }
    if (w.state == W_BROKEN) {
        /* connection_lost posts but leaves the waiter linked */
        pthread_mutex_lock(&rc->mu);
        if (w.linked) {
            unlink_waiter(rc, &w);
            w.linked = 0;
            rc->st.held--;
        }
        rc->st.broken++;
        pthread_mutex_unlock(&rc->mu);
    }
    if (aborted)
        result = RELAY_CALL_ABORTED;
    else if (timed_out || w.state != W_DONE)
        result = RELAY_CALL_BROKEN;
    else
        result = RELAY_CALL_OK;
    sem_destroy(&w.sem);

    if (result == RELAY_CALL_OK) {
        call->http_status = w.http_status;
        call->content_type = w.content_type;
        call->resp_body = w.body;
        call->resp_len = w.body_len;
        call->resp_malloced = w.malloced;
        call->retry_after = w.retry_after;
    }
    else if (aborted || timed_out) {
        /* chatd still answers it; tell it nobody will read the answer. */
        send_control(rc, RELAY_CANCEL, w.req_id, w.gen);
        if (timed_out)
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, rc->s,
                         "mod_bosh: chatd node %s did not answer request %u "
                         "before the deadline", rc->node_id, w.req_id);
    }
    return result;
}

void relay_client_drain(relay_client *rc, int may_block)
{
    static const char frame[RELAY_HEADER_LEN] = { RELAY_VERSION, RELAY_DRAIN,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0 };
    int fd = -1, sent = 0;

    rc->draining = 1;       /* even if no frame can be sent: no reconnect */
    if (may_block)
        pthread_mutex_lock(&rc->wmu);
    else if (pthread_mutex_trylock(&rc->wmu) != 0)
        return;
    if (may_block)
        pthread_mutex_lock(&rc->mu);
    else if (pthread_mutex_trylock(&rc->mu) != 0) {
        pthread_mutex_unlock(&rc->wmu);
        return;
    }
    if (rc->fd >= 0 && rc->drained_gen != rc->gen) {
        rc->drained_gen = rc->gen;
        rc->st.drains++;
        fd = rc->fd;
    }
    pthread_mutex_unlock(&rc->mu);
    if (fd >= 0) {
        if (write_all(fd, frame, sizeof(frame)) != 0)
            shutdown(fd, SHUT_RDWR);
        else
            sent = 1;
    }
    pthread_mutex_unlock(&rc->wmu);
    if (sent && may_block)
        ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, rc->s,
                     "mod_bosh: sent DRAIN to chatd node %s", rc->node_id);
}

int relay_client_usable(relay_client *rc)
{
    int ok;
    pthread_mutex_lock(&rc->mu);
    ok = !rc->stop && !rc->unhealthy &&
         (rc->fd >= 0 || relay_now_ms() >= rc->retry_at_ms);
    pthread_mutex_unlock(&rc->mu);
    return ok;
}

const char *relay_client_node(const relay_client *rc) { return rc->node_id; }
const char *relay_client_url(const relay_client *rc) { return rc->url; }

void relay_client_get_stats(relay_client *rc, relay_client_stats *st)
{
    pthread_mutex_lock(&rc->mu);
    *st = rc->st;
    st->connected = rc->fd >= 0;
    st->unhealthy = rc->unhealthy;
    pthread_mutex_unlock(&rc->mu);
}
