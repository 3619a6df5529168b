/*
 * bosh: BOSH sessions inside chatd (XEP-0124 + XEP-0206).
 *
 * Each BOSH session owns a c2s session (c2s.h) and keeps, beside it, the
 * BOSH state: rid window and in-order processing, held requests (hold),
 * wait timers, the response buffer for retransmission, inactivity.
 * The pure rules live in bosh_sm.[ch] (unit-tested); this layer does the
 * I/O through relay_req (relay_server.h) and timers (loop.h).
 *
 * sid format: "<node_id>-<32 hex chars>" (128 random bits) so that
 * mod_bosh routes a request to its chatd without a lookup.
 */
#ifndef CHATD_BOSH_H
#define CHATD_BOSH_H

#include "chatd.h"

int   bosh_init(chatd *d);
/* SIGTERM: every session ends with terminate condition='system-shutdown'. */
void  bosh_shutdown_all(chatd *d);
void  bosh_free(chatd *d);

#endif
