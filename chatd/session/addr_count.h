/*
 * addr_count: live sessions per client address on this node, for the
 * per-address cap on CONCURRENT sessions (cfg.max_sessions_per_addr).
 *
 * Why here and per node, not a Redis counter: chatd is the one place that
 * knows when a session really ends (native socket closed, BOSH session
 * terminated or timed out), for native and BOSH alike (mod_bosh passes
 * the client address in RT_CLIENT_ADDR). A counter in memory can never
 * leak: if chatd dies its sessions die with it. A Redis counter would
 * need INCR on creation, DECR on every end path, and a cleanup for the
 * counts of a node that crashed (per-node hashes, liveness keys), all for
 * a limit whose job is to stop one address (a stuck script, a runaway
 * reconnect plugin) from filling the node. So the cap is per node: with
 * N chatd nodes one address may hold up to N x cap sessions in total.
 * Session *creations* per minute per address are capped server-wide in
 * Redis by the admission script (common/admission.h).
 *
 * Pure: a small chained hash table of address -> count; entries at 0 are
 * removed, so the table holds only addresses with live sessions.
 */
#ifndef CHATD_ADDR_COUNT_H
#define CHATD_ADDR_COUNT_H

#include <stddef.h>

typedef struct addr_count addr_count;

addr_count *addr_count_new(void);
void        addr_count_free(addr_count *t);

/* Current count for addr (0 if unknown). */
unsigned    addr_count_get(const addr_count *t, const char *addr);
/* +1; returns the new count. */
unsigned    addr_count_inc(addr_count *t, const char *addr);
/* -1 (never below 0; the entry goes at 0); returns the new count. */
unsigned    addr_count_dec(addr_count *t, const char *addr);
/* Addresses with at least one session. */
size_t      addr_count_size(const addr_count *t);

#endif
