/*
 * rate: token buckets and per-turn read budgets, pure maths (no I/O, no
 * clock of its own) so unit tests drive them with a fake clock.
 *
 * Why here and not in common/admission: that one is a Redis script shared
 * by every frontend; these are per-session, on chatd's loop, and must cost
 * nothing on the path of a chat message.
 */
#ifndef CHATD_RATE_H
#define CHATD_RATE_H

#include <stddef.h>
#include <stdint.h>

/* A bucket of `burst` tokens refilled at `rate` tokens per second. */
typedef struct token_bucket {
    double   tokens;
    uint64_t last_ms;
    int      started;
} token_bucket;

/* Take `cost` tokens at time now_ms. Returns 1 (taken) or 0 (not enough:
 * nothing is taken). rate 0 means unlimited (always 1). A cost above the
 * burst is taken only from a full bucket, which it may drive negative, so
 * one large item passes when the sender has been quiet and then pays for
 * it (the bucket stays empty for cost/rate seconds). */
int    tb_take(token_bucket *b, double rate, double burst, double cost, uint64_t now_ms);
/* Milliseconds until `cost` tokens are available (0: now). */
uint64_t tb_wait_ms(const token_bucket *b, double rate, double burst, double cost,
                    uint64_t now_ms);

/* Bytes one readable event may still consume: budget minus what it used,
 * at most chunk. 0 means stop reading this turn (the socket stays ready:
 * the loop comes back next turn after serving everyone else). */
size_t read_budget_next(size_t budget, size_t used, size_t chunk);

#endif
