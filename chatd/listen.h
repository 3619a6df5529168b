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

#endif
