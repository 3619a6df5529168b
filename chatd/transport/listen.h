/*
 * listen: the listening sockets chatd opens (native c2s port, relay socket,
 * admin socket), created one way so that every listener gets the same
 * non-blocking, close-on-exec, reuse and stale-socket handling.
 */
#ifndef CHATD_LISTEN_H
#define CHATD_LISTEN_H

#include <sys/socket.h>
#include <sys/types.h>

/* "host:port" ("[v6]:port", "*:port" or ":port" for any address).
 * what names the listener in log lines. Returns the fd or -1 (logged). */
int listen_tcp(const char *hostport, const char *what);
/* A Unix socket at path with the given mode; a stale socket left by a
 * previous run is removed first. Returns the fd or -1 (logged). */
int listen_unix(const char *path, mode_t mode, const char *what);

/* One connection from a non-blocking listener: the new fd, non-blocking and
 * close-on-exec, or -1 when there is nothing more to accept now (a failure
 * other than EAGAIN is logged, naming the listener by what). ss/sl (both
 * NULL or both set, *sl = sizeof *ss) receive the peer's address. Accept
 * loops call it until it returns -1. */
int listen_accept(int fd, struct sockaddr_storage *ss, socklen_t *sl, const char *what);

/*
 * Out of descriptors (EMFILE/ENFILE, or the kernel out of socket memory):
 * accept fails but the pending connection stays in the backlog, so the
 * listener stays readable and a level-triggered loop would spin on it at
 * 100% CPU, starving every client it already has. listen_accept_paced
 * instead stops polling the listener for LISTEN_PAUSE_MS (it stays
 * registered but silent) and re-arms it from a timer; it logs once per
 * episode and counts each pause in *counter. The pending clients wait in
 * the backlog and are accepted once descriptors are free again.
 */
#include "loop.h"
#include <stdint.h>

#define LISTEN_PAUSE_MS 500

typedef struct listen_pacer {
    loop       *l;
    int         fd;
    loop_io_cb  cb;         /* the listener's accept callback */
    void       *ud;
    const char *what;
    uint64_t   *counter;    /* may be NULL */
    loop_timer *timer;      /* armed while paused */
    int         logged;     /* this episode was logged */
} listen_pacer;

/* listen_accept, plus the pause above when descriptors run out. */
int  listen_accept_paced(listen_pacer *p, struct sockaddr_storage *ss, socklen_t *sl);
/* Before the listener is closed: cancel a pending re-arm. */
void listen_pacer_cancel(listen_pacer *p);

#endif
