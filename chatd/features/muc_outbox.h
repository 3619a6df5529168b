/*
 * muc_outbox: room history entries not yet written to Redis, without I/O.
 *
 * Why: muc.c writes each room's new history entries in batches. A write
 * that fails (Redis down, slow, a dropped connection) must be retried,
 * with back-off, and what waits must stay bounded: one box per room keeps
 * at most the room's ring size (older entries would be trimmed in Redis
 * anyway), and all boxes together at most a byte cap, beyond which the
 * oldest entries go (muc.c logs how many). The first `inflight` entries
 * of a box are the ones of the write awaiting Redis's answer.
 * tests/unit/test_muc_outbox.c drives this file.
 */
#ifndef CHATD_MUC_OUTBOX_H
#define CHATD_MUC_OUTBOX_H

#include <stddef.h>
#include <stdint.h>

typedef struct mob_box {
    struct mob_box *next;
    char     *jid;            /* room@muc */
    unsigned  keep;           /* the room's ring size */
    char    **e;              /* oldest first */
    size_t   *len;
    unsigned  n, alloc;
    unsigned  inflight;       /* e[0..inflight) are being written */
    unsigned  attempts;       /* consecutive failed writes */
    uint64_t  not_before;     /* no retry before this (loop ms) */
} mob_box;

typedef struct mob_set {
    mob_box *boxes;
    size_t   bytes;           /* entries in all boxes */
    size_t   cap_bytes;       /* 0: no cap */
} mob_set;

#define MOB_BACKOFF_MIN_MS  1000
#define MOB_BACKOFF_MAX_MS 30000

mob_box  *mob_find(mob_set *s, const char *jid);
mob_box  *mob_get(mob_set *s, const char *jid, unsigned keep);      /* creates */
/* Append a copy of one entry. Returns how many entries were dropped over
 * the byte cap (oldest first: from b, then from other boxes); entries
 * beyond b->keep are trimmed without counting (Redis keeps no more). */
unsigned  mob_append(mob_set *s, mob_box *b, const char *xml, size_t len);
/* A write of b's entries went out / succeeded / failed at `now`. */
void      mob_sent(mob_box *b);
void      mob_written(mob_set *s, mob_box *b);
void      mob_failed(mob_box *b, uint64_t now);
uint64_t  mob_backoff_ms(unsigned attempts);
/* May b be written at `now` (entries, nothing in flight, back-off over)? */
int       mob_due(const mob_box *b, uint64_t now);
/* Unlink and free b if it holds nothing and nothing is in flight. */
void      mob_release(mob_set *s, mob_box *b);
void      mob_free_all(mob_set *s);
/* Unlink and free, in one pass, every box that holds nothing and has
 * nothing in flight; gone(b, ud) is called on each before it is freed. */
void      mob_sweep(mob_set *s, void (*gone)(mob_box *b, void *ud), void *ud);

#endif
