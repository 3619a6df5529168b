/*
 * relay_client: one httpd child's connection to one chatd node.
 *
 * Why one multiplexed connection: a child may hold hundreds of BOSH
 * requests at once (parked worker threads). One connection per child per
 * node carries all of them; every REQUEST frame has a req_id and the
 * RESPONSE comes back with the same id, in any order (common/RELAY.md).
 *
 * Threads: any worker thread may call relay_client_call; frames are
 * written whole under a write mutex. One reader thread per client decodes
 * RESPONSE frames and wakes the waiting worker. The connection is made
 * lazily by the first caller that needs it (HELLO, then WELCOME), with a
 * growing back-off after a failed connect so a dead chatd costs at most
 * one connect attempt per back-off period per child, not one per request.
 *
 * Memory is malloc'd (not pool) and the primitives are never destroyed:
 * under prefork, pchild cleanups may run in a signal handler where the
 * reader thread cannot safely be joined; it may then outlive pchild for
 * the few instructions before exit() without touching freed memory.
 */
#ifndef MOD_BOSH_RELAY_CLIENT_H
#define MOD_BOSH_RELAY_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include "httpd.h"
#include "bosh_route.h"

typedef struct relay_client relay_client;

typedef struct relay_call {
    /* in */
    const char *body;
    size_t      body_len;
    const char *client_addr;
    int         secure;
    int         confidential;   /* RT_CONFIDENTIAL: TLS here or at a trusted proxy */
    const char *sid;            /* NULL when creating a session */
    const char *auth_user;      /* RT_AUTH_USER: vouched bare JID, or NULL */
    const char *display_name;   /* RT_DISPLAY_NAME (only with auth_user), or NULL */
    int         prebind;        /* RT_PREBIND: chatd signs in and binds (bosh_sso.c) */
    /* RELAY_ANSWER_INLINE bytes the answer (its type and body) is copied
     * into when it fits, or NULL. Must outlive the call's use of the
     * answer (e.g. the handler's stack). */
    char       *answer_buf;
    /* out, valid after RELAY_CALL_OK; release with relay_call_clear */
    int         http_status;    /* 200 unless chatd said otherwise */
    char       *content_type;   /* NULL: chatd sent none */
    char       *resp_body;
    size_t      resp_len;
    unsigned    retry_after;    /* 0: none */
    int         resp_malloced;  /* content_type/resp_body are malloc'd (not answer_buf) */
} relay_call;

/* Why an inline answer buffer: the reader thread used to malloc every
 * answer and the worker freed it. glibc puts a freed chunk of up to 1,032
 * bytes into the FREEING thread's cache (tcache, up to 7 per size class),
 * where only that thread's own mallocs reuse it: every worker thread
 * slowly filled its cache with answers of every size, and httpd's memory
 * grew while people chatted, in step with the threads that had served
 * (issue 15, docs/benchmarks.md). Team answers (one stanza) fit here;
 * bigger ones are malloc'd and too big for the cache. */
#define RELAY_ANSWER_INLINE 1024

typedef enum relay_call_status {
    RELAY_CALL_OK = 0,
    RELAY_CALL_UNAVAILABLE,     /* not connected and could not connect: nothing sent */
    RELAY_CALL_BROKEN,          /* sent, but the connection broke (or deadline passed) */
    RELAY_CALL_ABORTED          /* tick asked to give up (client gone); CANCEL sent */
} relay_call_status;

/* Called about every second (RELAY_TICK_MS) by a waiting caller, with no lock held.
 * Return 1 to abandon the wait (the HTTP client went away). */
typedef int (*relay_tick_fn)(void *ud);

typedef struct relay_client_stats {
    int          connected;
    unsigned     connects;       /* successful connects (generations) */
    unsigned     connect_failures;
    unsigned     requests;       /* REQUEST frames sent */
    unsigned     responses;      /* RESPONSE frames delivered */
    unsigned     held;           /* callers waiting right now */
    unsigned     broken;         /* calls failed by a broken connection */
    unsigned     timeouts;       /* calls that hit their deadline */
    unsigned     canceled;       /* calls abandoned by the client */
    unsigned     drains;         /* DRAIN frames sent */
    unsigned     pings;          /* PING frames sent */
    unsigned     ping_timeouts;  /* connections given up for want of a PONG */
    int          unhealthy;      /* out of service until a reconnect succeeds */
} relay_client_stats;

/* Create (malloc) and start its reader thread. Returns NULL on failure
 * (logged). peer_name goes into HELLO, and secret (secret_len bytes,
 * BoshRelaySecretFile; NULL: none) as RT_SECRET. ping_ms: PING a
 * connection that received nothing for this long (0: never);
 * ping_timeout_ms: nothing received within this long after the PING takes
 * the node out of service (see "Liveness" in relay_client.c). */
relay_client *relay_client_create(server_rec *s, const char *node_id,
                                  const char *url, const bosh_endpoint *ep,
                                  const char *peer_name, const char *secret,
                                  size_t secret_len, int ping_ms,
                                  int ping_timeout_ms);

/* Stop the reader thread, close the socket. join=0 when we may be inside
 * a signal handler (prefork): then only flag and shut the socket down. */
void relay_client_stop(relay_client *rc, int join);

/* Send one REQUEST and wait for its RESPONSE until deadline_ms
 * (CLOCK_MONOTONIC milliseconds, see relay_now_ms). */
relay_call_status relay_client_call(relay_client *rc, relay_call *call,
                                    int64_t deadline_ms,
                                    relay_tick_fn tick, void *tick_ud);
void relay_call_clear(relay_call *call);

/* Send RELAY_DRAIN once per connection. may_block=0: use try-locks only. */
void relay_client_drain(relay_client *rc, int may_block);

/* 0 while a failed connect's back-off is running, or while the node is out
 * of service after a missed PONG (skip for new sessions). */
int  relay_client_usable(relay_client *rc);
const char *relay_client_node(const relay_client *rc);
const char *relay_client_url(const relay_client *rc);
void relay_client_get_stats(relay_client *rc, relay_client_stats *st);

int64_t relay_now_ms(void);

#endif
