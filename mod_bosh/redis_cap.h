/*
 * redis_cap: the server-wide cap on Redis connections (BoshRedisMaxTotal),
 * and the server-wide count of held BOSH requests (BoshMaxHeldShare,
 * worker_budget.h), in the same shared-memory segment and child slots.
 *
 * Why: the per-child cap alone lets the total grow with the number of
 * children, including old-generation children still finishing after a
 * graceful restart -- the way Redis hit maxclients in the 2012 HipChat
 * outage. One anonymous shared-memory segment, created by the parent and
 * kept across restarts (old children keep counting in it), holds a global
 * counter and one slot per child process (pid + its count), so the count
 * of a child that died without cleaning up can be taken back (at the next
 * attach, and every second by redis_cap_reap).
 *
 * When a child is refused by the total cap, `refusals` moves; the other
 * children see it and stop keeping idle connections (redis_pool.c), so the
 * cap is shared by the children that have work rather than held idle.
 *
 * Everything after creation uses atomics only: safe from any thread and
 * from prefork's signal-handler exit path.
 */
#ifndef MOD_BOSH_REDIS_CAP_H
#define MOD_BOSH_REDIS_CAP_H

#include "httpd.h"

/* Parent, post_config: create (or reuse across restarts) the segment. */
apr_status_t redis_cap_init(server_rec *s, int nslots, int max_total);
/* Child: claim a slot (reclaiming dead children's slots). 0 on success. */
int  redis_cap_child_attach(void);
/* Child exit: give back whatever this child still counts. */
void redis_cap_child_detach(void);
/* 1 if one more connection may be opened (and counts it), else 0. */
int  redis_cap_reserve(void);
void redis_cap_release(unsigned n);
/* For the status page; -1 when there is no segment. */
void redis_cap_get(int *total, int *max, unsigned *refusals);

/* Take back the counts of children that died without detaching (kill -9,
 * crash). Cheap; the housekeeping thread calls it every second. */
void redis_cap_reap(void);

/* Per-child pool counters, published in this child's slot so that any
 * child's status page (and mod_status) can show every child. */
typedef struct redis_cap_child_stats {
    unsigned pid, conns, in_use, idle, waits, acquire_timeouts, failures;
} redis_cap_child_stats;
void redis_cap_publish(int in_use, int idle, unsigned waits,
                       unsigned acquire_timeouts, unsigned failures);
/* Calls fn for each live child's slot; returns how many. */
int  redis_cap_foreach(void (*fn)(const redis_cap_child_stats *st, void *ud),
                       void *ud);

/* Held requests: a BOSH request occupies a worker from the moment it is
 * relayed until it is answered (bosh_handler.c, relay()). Counted per
 * child and server-wide; a dead child's count is taken back like its
 * Redis connections. Without the segment, the server figure is this
 * process's own (shared = 0). */
typedef struct bosh_held_counts {
    int      shared;        /* 1: server-wide figures are real */
    unsigned child;         /* this child, now */
    unsigned server;        /* all children, now */
    unsigned server_peak;   /* highest of now and the last two seconds */
    unsigned refused;       /* new sessions refused, all children */
} bosh_held_counts;
void bosh_held_enter(void);
void bosh_held_leave(void);
void bosh_held_get(bosh_held_counts *out);
/* Count one refused new session. Returns the refusals since the last
 * report when the caller should log the once-a-minute line, else 0. */
unsigned bosh_held_refused(void);

#endif
