/*
 * listen: the listening sockets chatd opens (native c2s port, relay socket,
 * admin socket), created one way so that every listener gets the same
 * non-blocking, close-on-exec, reuse and stale-socket handling.
 */
#ifndef CHATD_LISTEN_H
#define CHATD_LISTEN_H

#include <sys/types.h>

/* "host:port" ("[v6]:port", "*:port" or ":port" for any address).
 * what names the listener in log lines. Returns the fd or -1 (logged). */
int listen_tcp(const char *hostport, const char *what);
/* A Unix socket at path with the given mode; a stale socket left by a
 * previous run is removed first. Returns the fd or -1 (logged). */
int listen_unix(const char *path, mode_t mode, const char *what);

#endif
