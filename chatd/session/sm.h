/*
 * sm: XEP-0198 Stream Management counters and the unacknowledged queue,
 * pure (no I/O, no loop): c2s.c does the wire and the timers.
 *
 * Why apart: the arithmetic is where stream management goes wrong (h is a
 * 32-bit counter that wraps, an <a h=/> must never acknowledge more than
 * was sent, a resumed stream must resend exactly what the client did not
 * get), and unit tests drive it here without a socket.
 *
 * Numbering: the stanzas sent after <enabled/> are numbered 1, 2, ...
 * modulo 2^32 (out_h is the number of the last one). The queue holds the
 * ones after the client's last acknowledged h (acked), in order, so it
 * always has exactly out_h - acked entries (mod 2^32). An acknowledgement
 * h is valid when h - acked (mod 2^32) is at most that many; it drops that
 * many from the front. in_h counts the client's stanzas the same way.
 */
#ifndef CHATD_SM_H
#define CHATD_SM_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

typedef struct sm_item {
    struct sm_item *next;
    time_t          stamp;      /* when it was queued: the delay stamp if re-routed */
    size_t          len;
    char            xml[];      /* serialized stanza, len bytes (+ NUL) */
} sm_item;

typedef struct sm_state {
    uint32_t  in_h;             /* client stanzas handled (our <a h=/>) */
    uint32_t  out_h;            /* stanzas sent (numbered), last number */
    uint32_t  acked;            /* the client's last h */
    uint32_t  since_request;    /* sent since our last <r/> */
    sm_item  *head, *tail;      /* unacknowledged, oldest first */
    size_t    n, bytes;
} sm_state;

void   sm_init(sm_state *sm);
/* Start both counters at h (tests of the wrap; XEP-0198 starts at 0). */
void   sm_init_at(sm_state *sm, uint32_t h);
void   sm_clear(sm_state *sm);              /* frees the queue */

/* One client stanza handled; returns the new in_h. */
uint32_t sm_count_in(sm_state *sm);

/* Queue one sent stanza (it gets number out_h + 1). Returns 1 when the
 * queue is now over max_n entries or max_bytes bytes (0 = no bound),
 * else 0; the stanza is queued either way, so nothing is lost. */
int    sm_push(sm_state *sm, const char *xml, size_t len, time_t stamp,
               size_t max_n, size_t max_bytes);

/* The client acknowledged h: drop what it covers. Returns how many were
 * dropped (0 for a repeat), or -1 when h acknowledges more than was sent
 * (nothing changes then). */
long   sm_ack(sm_state *sm, uint32_t h);
/* Would sm_ack(h) be valid? */
int    sm_ack_valid(const sm_state *sm, uint32_t h);

/* Parse an h attribute: decimal 0..2^32-1, nothing else. 0 or -1. */
int    sm_parse_h(const char *s, uint32_t *h);

/* Move everything (counters and queue) from src to dst; src is left empty
 * (as after sm_init). dst must be empty. */
void   sm_move(sm_state *dst, sm_state *src);

#endif
