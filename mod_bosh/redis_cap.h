/*
 * redis_cap: the server-wide cap on Redis connections (BoshRedisMaxTotal).
 *
 * Why: the per-child cap alone lets the total grow with the number of
 * children, including old-generation children still finishing after a
 * graceful restart -- the way Redis hit maxclients in the 2012 HipChat
 * outage. One anonymous shared-memory segment, created by the parent and
 * kept across restarts (old children keep counting in it), holds a global
 * counter and one slot per child process (pid + its count), so the count
 * of a child that died without cleaning up can be taken back.
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

#endif
