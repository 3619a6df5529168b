/*
 * redis_conn.c: URL parsing and one validated, named, blocking hiredis
 * connection (see redis_conn.h for why each step is there).
 *
 * hiredis 0.14's connect timeout covers connect() only, so the setup
 * commands (AUTH, SELECT, SETNAME, PING) run under a socket timeout too:
 * a Redis that accepts and then never answers must not hang the caller.
 *
 * The socket is ours, not hiredis's: hiredis 0.14 creates it without
 * SOCK_CLOEXEC and has no option for it, and inside httpd a CGI (mod_cgi
 * under prefork, PHP's exec) forked by the child would inherit the Redis
 * connection (issue 13). Setting FD_CLOEXEC after hiredis's connect would
 * leave a window in which another thread's fork+exec (mod_cgi or
 * mod_ext_filter under a threaded MPM) still inherits it; creating it
 * with SOCK_CLOEXEC and handing it to redisConnectFd leaves none.
 */
#include "redis_conn.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

static void set_err(char *err, size_t errlen, const char *fmt, const char *arg) {
    if (err && errlen) snprintf(err, errlen, fmt, arg ? arg : "");
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    c = (char)tolower((unsigned char)c);
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Copy [p, p+n) into out with %XX decoding; -1 if bad or too long. */
static int copy_decoded(const char *p, size_t n, char *out, size_t outcap) {
    size_t o = 0, i;
    for (i = 0; i < n; i++) {
        char c = p[i];
        if (c == '%') {
            int hi, lo;
            if (i + 2 >= n) return -1;
            hi = hexval(p[i + 1]);
            lo = hexval(p[i + 2]);
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) return -1;
            c = (char)(hi * 16 + lo);
            i += 2;
        }
        if (o + 1 >= outcap) return -1;
        out[o++] = c;
    }
    out[o] = '\0';
    return 0;
}

/* Decimal in [min, max] spanning exactly [p, p+n). */
static int parse_int(const char *p, size_t n, int min, int max, int *out) {
    long v = 0;
    size_t i;
    if (n == 0 || n > 9) return -1;
    for (i = 0; i < n; i++) {
        if (!isdigit((unsigned char)p[i])) return -1;
        v = v * 10 + (p[i] - '0');
    }
    if (v < min || v > max) return -1;
    *out = (int)v;
    return 0;
}

static int parse_tcp(const char *s, redis_url *u, char *err, size_t errlen) {
    const char *end = s + strlen(s);
    const char *slash = strchr(s, '/');
    const char *hostend = slash ? slash : end;
    const char *at = memrchr(s, '@', (size_t)(hostend - s));
    const char *h = s;

    if (at) {
        /* userinfo: ":password" (Redis before ACLs has no user name) */
        if (s[0] != ':') {
            set_err(err, errlen, "redis URL: only ':password@' is supported before the host%s", NULL);
            return -1;
        }
        if (copy_decoded(s + 1, (size_t)(at - s - 1), u->password, sizeof u->password) != 0) {
            set_err(err, errlen, "redis URL: bad password encoding%s", NULL);
            return -1;
        }
        h = at + 1;
    }
    const char *port = NULL, *hend;
    if (*h == '[') {                        /* [IPv6]:port */
        const char *rb = memchr(h, ']', (size_t)(hostend - h));
        if (!rb) { set_err(err, errlen, "redis URL: unterminated '['%s", NULL); return -1; }
        if (rb + 1 < hostend) {
            if (rb[1] != ':') { set_err(err, errlen, "redis URL: junk after ']'%s", NULL); return -1; }
            port = rb + 2;
        }
        h++;
        hend = rb;
    } else {
        const char *colon = memchr(h, ':', (size_t)(hostend - h));
        hend = colon ? colon : hostend;
        if (colon) port = colon + 1;
    }
    if (hend == h) { set_err(err, errlen, "redis URL: missing host%s", NULL); return -1; }
    if ((size_t)(hend - h) >= sizeof u->host) {
        set_err(err, errlen, "redis URL: host too long%s", NULL);
        return -1;
    }
    memcpy(u->host, h, (size_t)(hend - h));
    u->host[hend - h] = '\0';
    if (port && parse_int(port, (size_t)(hostend - port), 1, 65535, &u->port) != 0) {
        set_err(err, errlen, "redis URL: bad port%s", NULL);
        return -1;
    }
    if (slash && slash[1] != '\0' &&
        parse_int(slash + 1, strlen(slash + 1), 0, 100000, &u->db) != 0) {
        set_err(err, errlen, "redis URL: bad database number '%s'", slash + 1);
        return -1;
    }
    return 0;
}

static int parse_unix(const char *s, redis_url *u, char *err, size_t errlen) {
    const char *q = strchr(s, '?');
    size_t n = q ? (size_t)(q - s) : strlen(s);
    u->is_unix = 1;
    if (n == 0 || s[0] != '/') {
        set_err(err, errlen, "redis URL: unix socket path must be absolute%s", NULL);
        return -1;
    }
    if (n >= sizeof u->path) {
        set_err(err, errlen, "redis URL: socket path too long%s", NULL);
        return -1;
    }
    memcpy(u->path, s, n);
    u->path[n] = '\0';
    while (q && *q) {
        const char *param = q + 1;
        const char *amp = strchr(param, '&');
        size_t plen = amp ? (size_t)(amp - param) : strlen(param);
        if (plen > 3 && strncmp(param, "db=", 3) == 0) {
            if (parse_int(param + 3, plen - 3, 0, 100000, &u->db) != 0) {
                set_err(err, errlen, "redis URL: bad database number%s", NULL);
                return -1;
            }
        } else if (plen >= 9 && strncmp(param, "password=", 9) == 0) {
            if (copy_decoded(param + 9, plen - 9, u->password, sizeof u->password) != 0) {
                set_err(err, errlen, "redis URL: bad password encoding%s", NULL);
                return -1;
            }
        } else if (plen > 0) {
            set_err(err, errlen, "redis URL: unknown parameter in '%s'", param);
            return -1;
        }
        q = amp;
    }
    return 0;
}

int redis_url_parse(const char *url, redis_url *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    out->port = 6379;
    if (!url) { set_err(err, errlen, "redis URL: empty%s", NULL); return -1; }
    if (strncmp(url, "redis://", 8) == 0) return parse_tcp(url + 8, out, err, errlen);
    if (strncmp(url, "unix://", 7) == 0) return parse_unix(url + 7, out, err, errlen);
    if (strncmp(url, "unix:", 5) == 0) return parse_unix(url + 5, out, err, errlen);
    set_err(err, errlen, "redis URL must start with redis:// or unix:// (got '%s')", url);
    return -1;
}

const char *redis_url_describe(const redis_url *u, char *buf, size_t buflen) {
    if (u->is_unix) snprintf(buf, buflen, "unix:%s", u->path);
    else if (strchr(u->host, ':')) snprintf(buf, buflen, "[%s]:%d", u->host, u->port);
    else snprintf(buf, buflen, "%s:%d", u->host, u->port);
    return buf;
}

/* connect() a non-blocking socket within ms; 0, or -1 with errno. */
static int connect_within(int fd, const struct sockaddr *sa, socklen_t len, int ms) {
    if (connect(fd, sa, len) == 0) return 0;
    if (errno != EINPROGRESS && errno != EAGAIN && errno != EINTR) return -1;
    struct pollfd pfd = { .fd = fd, .events = POLLOUT };
    int n;
    do n = poll(&pfd, 1, ms);
    while (n < 0 && errno == EINTR);
    if (n == 0) { errno = ETIMEDOUT; return -1; }
    if (n < 0) return -1;
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0) return -1;
    if (soerr) { errno = soerr; return -1; }
    return 0;
}

/* A connected, blocking, close-on-exec socket to u; -1 with errno, or
 * with *gai_err set when the host name did not resolve. */
static int open_socket(const redis_url *u, int ms, int *gai_err) {
    int fd, saved;
    if (u->is_unix) {
        struct sockaddr_un sa;
        memset(&sa, 0, sizeof sa);
        sa.sun_family = AF_UNIX;
        if (strlen(u->path) >= sizeof sa.sun_path) { errno = ENAMETOOLONG; return -1; }
        memcpy(sa.sun_path, u->path, strlen(u->path) + 1);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) return -1;
        if (connect_within(fd, (struct sockaddr *)&sa, sizeof sa, ms) != 0) {
            saved = errno;
            close(fd);
            errno = saved;
            return -1;
        }
    } else {
        struct addrinfo hints, *res = NULL, *ai;
        char port[16];
        int gai;
        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        snprintf(port, sizeof port, "%d", u->port);
        if ((gai = getaddrinfo(u->host, port, &hints, &res)) != 0) {
            if (gai != EAI_SYSTEM) *gai_err = gai;
            return -1;
        }
        fd = -1;
        saved = ECONNREFUSED;
        for (ai = res; ai; ai = ai->ai_next) {
            fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK,
                        ai->ai_protocol);
            if (fd < 0) { saved = errno; continue; }
            if (connect_within(fd, ai->ai_addr, ai->ai_addrlen, ms) == 0) break;
            saved = errno;
            close(fd);
            fd = -1;
        }
        freeaddrinfo(res);
        if (fd < 0) { errno = saved; return -1; }
        int one = 1;    /* as hiredis does: commands are small */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
        saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

static struct timeval ms_to_tv(int ms) {
    struct timeval tv;
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    return tv;
}

/* Run one setup command; 0 if the reply is not an error (and, when
 * want_status is set, is exactly that status). */
static int setup_command(redisContext *c, const char *what, const char *want_status,
                         char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    if (!r) {
        if (err && errlen)
            snprintf(err, errlen, "redis %s: %s", what, c->errstr[0] ? c->errstr : "no reply");
        return -1;
    }
    int ok = r->type != REDIS_REPLY_ERROR;
    if (ok && want_status)
        ok = r->type == REDIS_REPLY_STATUS && strcmp(r->str, want_status) == 0;
    if (!ok && err && errlen)
        snprintf(err, errlen, "redis %s: %s", what,
                 r->type == REDIS_REPLY_ERROR || r->type == REDIS_REPLY_STATUS ? r->str
                                                                              : "unexpected reply");
    freeReplyObject(r);
    return ok ? 0 : -1;
}

redisContext *redis_conn_open(const redis_url *u, const char *name,
                              int connect_ms, int command_ms,
                              char *err, size_t errlen) {
    char where[300];
    redis_url_describe(u, where, sizeof where);
    int gai_err = 0;
    int fd = open_socket(u, connect_ms > 0 ? connect_ms : 5000, &gai_err);
    if (fd < 0) {
        if (err && errlen)
            snprintf(err, errlen, "redis %s: connect: %s", where,
                     gai_err ? gai_strerror(gai_err) : strerror(errno));
        return NULL;
    }
    redisContext *c = redisConnectFd(fd);   /* owns fd from here: redisFree closes it */
    if (!c) {
        close(fd);
        set_err(err, errlen, "redis %s: out of memory", where);
        return NULL;
    }
    if (c->err) {
        if (err && errlen) snprintf(err, errlen, "redis %s: %s", where, c->errstr);
        redisFree(c);
        return NULL;
    }
    /* keepalive on AF_UNIX fails in hiredis 0.14 (TCP_KEEPIDLE) */
    if (!u->is_unix && redisEnableKeepAlive(c) != REDIS_OK) {
        if (err && errlen) snprintf(err, errlen, "redis %s: keepalive: %s", where, c->errstr);
        redisFree(c);
        return NULL;
    }
    /* Bound the setup round trips (connect timeout is connect() only). */
    redisSetTimeout(c, ms_to_tv(command_ms > 0 ? command_ms
                                               : (connect_ms > 0 ? connect_ms : 5000)));
    if ((u->password[0] &&
         setup_command(c, "AUTH", NULL, err, errlen, "AUTH %s", u->password) != 0) ||
        (u->db != 0 &&
         setup_command(c, "SELECT", NULL, err, errlen, "SELECT %d", u->db) != 0) ||
        (name && name[0] &&
         setup_command(c, "CLIENT SETNAME", NULL, err, errlen, "CLIENT SETNAME %s", name) != 0) ||
        /* maxclients: Redis accepts, then refuses the first command */
        setup_command(c, "PING", "PONG", err, errlen, "PING") != 0) {
        redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, ms_to_tv(command_ms > 0 ? command_ms : 0));
    return c;
}
