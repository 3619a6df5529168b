/*
 * loop: chatd's single event loop (APR pollset + a timer heap).
 *
 * Why one loop: every socket (native clients, relay connections from httpd
 * children, Redis) is non-blocking and serviced here, so no lock is ever
 * needed in chatd and nothing can stall behind a slow peer.
 * Callbacks may add/remove watches and timers (including their own).
 */
#ifndef CHATD_LOOP_H
#define CHATD_LOOP_H

#include <stdint.h>

typedef struct loop loop;
typedef struct loop_timer loop_timer;

#define LOOP_READ  1u
#define LOOP_WRITE 2u

typedef void (*loop_io_cb)(loop *l, int fd, unsigned events, void *ud);
typedef void (*loop_timer_cb)(loop *l, void *ud);

loop       *loop_new(void);
void        loop_free(loop *l);
/* Watch fd for events (LOOP_READ|LOOP_WRITE). Calling again for the same
 * fd replaces the mask/callback. events == 0 keeps the fd registered but
 * silent. Returns 0 or -1. Error/hangup are reported as LOOP_READ. */
int         loop_watch(loop *l, int fd, unsigned events, loop_io_cb cb, void *ud);
void        loop_unwatch(loop *l, int fd);
/* One-shot timer; ms == 0 runs on the next iteration (a "defer"). */
loop_timer *loop_timer_add(loop *l, uint64_t ms, loop_timer_cb cb, void *ud);
void        loop_timer_cancel(loop *l, loop_timer *t);   /* NULL ok; not after it fired */
uint64_t    loop_now_ms(loop *l);    /* monotonic, refreshed each iteration */
int         loop_run(loop *l);       /* until loop_stop(); returns 0 */
void        loop_stop(loop *l);

#endif
