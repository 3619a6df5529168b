/*
 * quota: the arithmetic of the per-user limits of issue 14 (offline
 * storage per recipient and per sender, roster items, directed presence),
 * apart from Redis and the router so unit tests drive it (test_quota).
 *
 * Rule everywhere: over a limit the NEW thing is refused with the error
 * the RFCs name; nothing already stored (someone else's message, an
 * existing roster item) is dropped to make room.
 */
#ifndef CHATD_QUOTA_H
#define CHATD_QUOTA_H

#include <stddef.h>
#include "config.h"

/* What one offline store may use at one recipient. */
typedef struct offline_limits {
    unsigned long long max_n, max_bytes;       /* whole list */
    unsigned long long share_n, share_bytes;   /* one sender's part */
} offline_limits;

/* From chatd.conf: share = percentage of each cap, rounded down, but at
 * least one message when the count cap allows one (a sender is never
 * locked out by rounding alone). */
offline_limits quota_offline_limits(const chatd_config *c);

/* Usage at one recipient before the store. */
typedef struct offline_usage {
    unsigned long long n, bytes;               /* whole list */
    unsigned long long sender_n, sender_bytes; /* this sender's */
} offline_usage;

/* 1 if one more entry of len bytes fits, 0 if it must be refused. The same
 * rule runs inside Redis (offline.c's store script); this is its spec. */
int quota_offline_admits(const offline_limits *l, const offline_usage *u,
                         unsigned long long len);

/* A roster change that would hold `items` entries after it, where
 * `is_new` says whether it adds an item: 1 allowed, 0 refused. Updating
 * an existing item is always allowed (even above a lowered cap). */
int quota_roster_admits(unsigned items_before, int is_new, unsigned cap);

/* A directed presence to a new address when `count` are remembered. */
int quota_directed_admits(unsigned count, int known, unsigned cap);

#endif
