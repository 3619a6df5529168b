/*
 * listen: opening chatd's listening sockets (see listen.h).
 */
#include "listen.h"

#include <errno.h>
#include <netdb.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "log.h"

#define LISTEN_BACKLOG 512

int listen_tcp(const char *hostport, const char *what) {
    char host[256];
    const char *colon = strrchr(hostport, ':');
    if (!colon || (size_t)(colon - hostport) >= sizeof(host)) {
        log_error("%s: bad address '%s' (want host:port)", what, hostport);
        return -1;
    }
    memcpy(host, hostport, (size_t)(colon - hostport));
    host[colon - hostport] = '\0';
    char *h = host;
    size_t hl = strlen(h);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') { h[hl - 1] = '\0'; h++; }
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int gai = getaddrinfo(*h && strcmp(h, "*") ? h : NULL, colon + 1, &hints, &res);
    if (gai != 0) {
        log_error("%s: %s: %s", what, hostport, gai_strerror(gai));
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) continue;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, LISTEN_BACKLOG) == 0)
            break;
        close(fd);
        fd = -1;
    }
    if (fd < 0) log_error("%s: listen on %s: %s", what, hostport, strerror(errno));
    freeaddrinfo(res);
    return fd;
}

int listen_unix(const char *path, mode_t mode, const char *what) {
    struct sockaddr_un sun;
    if (strlen(path) >= sizeof(sun.sun_path)) {
        log_error("%s: socket path too long: %s", what, path);
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        log_error("%s: socket: %s", what, strerror(errno));
        return -1;
    }
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, path, strlen(path) + 1);
    /* A stale socket from a previous run would make bind fail. */
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) unlink(path);
    /* Created with its mode from the start (umask), not chmod'ed after a
     * window in which anyone could connect. chatd is single-threaded. */
    mode_t old = umask(~mode & 0777);
    int rc = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
    umask(old);
    if (rc < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
        log_error("%s: listen on unix:%s: %s", what, path, strerror(errno));
        close(fd);
        unlink(path);
        return -1;
    }
    return fd;
}

int listen_accept(int fd, struct sockaddr_storage *ss, socklen_t *sl, const char *what) {
    for (;;) {
        int cfd = accept4(fd, (struct sockaddr *)ss, sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd >= 0) return cfd;
        if (errno == EINTR) continue;
        int err = errno;
        if (err != EAGAIN && err != EWOULDBLOCK && err != EMFILE && err != ENFILE &&
            err != ENOBUFS && err != ENOMEM)
            log_warn("%s: accept: %s", what, strerror(err));
        errno = err;
        return -1;
    }
}

static void pacer_resume(loop *l, void *ud) {
    listen_pacer *p = ud;
    p->timer = NULL;
    loop_watch(l, p->fd, LOOP_READ, p->cb, p->ud);
}

int listen_accept_paced(listen_pacer *p, struct sockaddr_storage *ss, socklen_t *sl) {
    int cfd = listen_accept(p->fd, ss, sl, p->what);
    if (cfd >= 0) {
        if (p->logged) {
            log_info("BOSH00356: %s: accepting connections again", p->what);
            p->logged = 0;
        }
        return cfd;
    }
    int err = errno;
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        if (!p->logged) {
            log_warn("BOSH00355: %s: accept: %s; not accepting for %d ms at a "
                     "time until descriptors are free (raise LimitNOFILE / ulimit -n, "
                     "or lower max_sessions)", p->what, strerror(err), LISTEN_PAUSE_MS);
            p->logged = 1;
        }
        if (p->counter) (*p->counter)++;
        if (!p->timer) {
            loop_watch(p->l, p->fd, 0, p->cb, p->ud);     /* registered, silent */
            p->timer = loop_timer_add(p->l, LISTEN_PAUSE_MS, pacer_resume, p);
        }
    }
    errno = err;
    return -1;
}

void listen_pacer_cancel(listen_pacer *p) {
    if (p->timer) loop_timer_cancel(p->l, p->timer);
    p->timer = NULL;
}
