/*
 * loop: chatd's single event loop, an APR pollset (epoll backend) plus a
 * binary min-heap of one-shot timers.
 *
 * Why this shape: every chatd socket is serviced here, so callbacks freely
 * watch/unwatch fds and add/cancel timers, including those of other
 * objects, in the middle of a dispatch round. Two rules keep that safe:
 *
 *  - Watches live in a table indexed by fd and the pollset carries only the
 *    fd number as client data, never a pointer. An event is delivered only
 *    if the fd is still watched, was not (re)registered during the current
 *    round (a stale event for a closed-and-reused fd number) and still asks
 *    for that kind of event.
 *  - A timer is removed from the heap and freed before its callback runs,
 *    and timers added while due timers run (ms == 0 "defers") wait for the
 *    next iteration, so a callback that re-arms itself cannot starve I/O.
 */
#include "loop.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <apr_general.h>
#include <apr_pools.h>
#include <apr_poll.h>
#include <apr_portable.h>

#define LOOP_MAX_EVENTS 1024

typedef struct watch {
    apr_socket_t *sock;      /* APR wrapper for the fd, reused per fd number */
    loop_io_cb    cb;
    void         *ud;
    unsigned      events;    /* what the caller asked for */
    int           active;    /* watched (even if events == 0) */
    int           in_pollset;
    uint64_t      since_round; /* round in which it was (re)registered */
} watch;

struct loop_timer {
    uint64_t      when;      /* loop time in ms */
    uint64_t      seq;       /* FIFO among equal deadlines */
    size_t        index;     /* position in the heap */
    loop_timer_cb cb;
    void         *ud;
};

struct loop {
    apr_pool_t     *pool;
    apr_pollset_t  *pollset;
    watch          *watches;     /* indexed by fd */
    int             nwatches;
    loop_timer    **heap;
    size_t          nheap, heap_cap;
    uint64_t        timer_seq;
    uint64_t        now;
    uint64_t        round;       /* dispatch rounds, starts at 1 */
    int             stop;
};

static uint64_t monotonic_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

loop *loop_new(void) {
    if (apr_initialize() != APR_SUCCESS) return NULL;
    loop *l = calloc(1, sizeof(*l));
    if (!l) { apr_terminate(); return NULL; }
    if (apr_pool_create(&l->pool, NULL) != APR_SUCCESS) goto fail;
    if (apr_pollset_create_ex(&l->pollset, LOOP_MAX_EVENTS, l->pool, 0,
                              APR_POLLSET_EPOLL) != APR_SUCCESS &&
        apr_pollset_create(&l->pollset, LOOP_MAX_EVENTS, l->pool, 0) != APR_SUCCESS)
        goto fail;
    l->now = monotonic_ms();
    l->round = 1;
    return l;
fail:
    if (l->pool) apr_pool_destroy(l->pool);
    free(l);
    apr_terminate();
    return NULL;
}

void loop_free(loop *l) {
    if (!l) return;
    for (size_t i = 0; i < l->nheap; i++) free(l->heap[i]);
    free(l->heap);
    free(l->watches);
    apr_pool_destroy(l->pool);      /* also destroys the pollset */
    free(l);
    apr_terminate();
}

/* ---- fd watches ---- */

static int pollset_set(loop *l, int fd, watch *w, unsigned events) {
    apr_pollfd_t pfd;
    memset(&pfd, 0, sizeof(pfd));
    pfd.desc_type = APR_POLL_SOCKET;
    pfd.desc.s = w->sock;
    pfd.client_data = (void *)(intptr_t)fd;
    if (w->in_pollset) {
        apr_pollset_remove(l->pollset, &pfd);
        w->in_pollset = 0;
    }
    if (events == 0) return 0;
    pfd.reqevents = 0;
    if (events & LOOP_READ) pfd.reqevents |= APR_POLLIN;
    if (events & LOOP_WRITE) pfd.reqevents |= APR_POLLOUT;
    if (apr_pollset_add(l->pollset, &pfd) != APR_SUCCESS) return -1;
    w->in_pollset = 1;
    return 0;
}

int loop_watch(loop *l, int fd, unsigned events, loop_io_cb cb, void *ud) {
    if (fd < 0) return -1;
    if (fd >= l->nwatches) {
        int n = l->nwatches ? l->nwatches : 64;
        while (n <= fd) n *= 2;
        watch *nw = realloc(l->watches, (size_t)n * sizeof(*nw));
        if (!nw) return -1;
        memset(nw + l->nwatches, 0, (size_t)(n - l->nwatches) * sizeof(*nw));
        l->watches = nw;
        l->nwatches = n;
    }
    watch *w = &l->watches[fd];
    apr_os_sock_t osfd = fd;
    if (apr_os_sock_put(&w->sock, &osfd, l->pool) != APR_SUCCESS) return -1;
    if (!w->active) {
        w->active = 1;
        w->since_round = l->round;
    }
    w->cb = cb;
    w->ud = ud;
    if (w->in_pollset && w->events == events) return 0;
    w->events = events;
    if (pollset_set(l, fd, w, events) < 0) {
        w->active = 0;
        return -1;
    }
    return 0;
}

void loop_unwatch(loop *l, int fd) {
    if (fd < 0 || fd >= l->nwatches) return;
    watch *w = &l->watches[fd];
    if (!w->active) return;
    pollset_set(l, fd, w, 0);
    w->active = 0;
    w->events = 0;
    w->cb = NULL;
    w->ud = NULL;
}

/* ---- timers: binary min-heap ordered by (when, seq) ---- */

static int timer_before(const loop_timer *a, const loop_timer *b) {
    return a->when < b->when || (a->when == b->when && a->seq < b->seq);
}

static void heap_place(loop *l, size_t i, loop_timer *t) {
    l->heap[i] = t;
    t->index = i;
}

static void heap_up(loop *l, size_t i) {
    loop_timer *t = l->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!timer_before(t, l->heap[parent])) break;
        heap_place(l, i, l->heap[parent]);
        i = parent;
    }
    heap_place(l, i, t);
}

static void heap_down(loop *l, size_t i) {
    loop_timer *t = l->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= l->nheap) break;
        if (c + 1 < l->nheap && timer_before(l->heap[c + 1], l->heap[c])) c++;
        if (!timer_before(l->heap[c], t)) break;
        heap_place(l, i, l->heap[c]);
        i = c;
    }
    heap_place(l, i, t);
}

static void heap_remove(loop *l, loop_timer *t) {
    size_t i = t->index;
    l->nheap--;
    if (i == l->nheap) return;
    loop_timer *moved = l->heap[l->nheap];
    heap_place(l, i, moved);
    heap_down(l, i);
    heap_up(l, moved->index);
}

loop_timer *loop_timer_add(loop *l, uint64_t ms, loop_timer_cb cb, void *ud) {
    if (l->nheap == l->heap_cap) {
        size_t cap = l->heap_cap ? l->heap_cap * 2 : 64;
        loop_timer **nh = realloc(l->heap, cap * sizeof(*nh));
        if (!nh) return NULL;
        l->heap = nh;
        l->heap_cap = cap;
    }
    loop_timer *t = malloc(sizeof(*t));
    if (!t) return NULL;
    t->when = l->now + ms;
    t->seq = l->timer_seq++;
    t->cb = cb;
    t->ud = ud;
    heap_place(l, l->nheap++, t);
    heap_up(l, t->index);
    return t;
}

void loop_timer_cancel(loop *l, loop_timer *t) {
    if (!t) return;
    heap_remove(l, t);
    free(t);
}

uint64_t loop_now_ms(loop *l) { return l->now; }

void loop_stop(loop *l) { l->stop = 1; }

/* Run every timer due now that existed before this call. */
static void run_due_timers(loop *l) {
    uint64_t seq_limit = l->timer_seq;
    while (l->nheap > 0 && !l->stop) {
        loop_timer *t = l->heap[0];
        if (t->when > l->now || t->seq >= seq_limit) break;
        loop_timer_cb cb = t->cb;
        void *ud = t->ud;
        heap_remove(l, t);
        free(t);
        cb(l, ud);
    }
}

static void dispatch(loop *l, const apr_pollfd_t *res, apr_int32_t n) {
    for (apr_int32_t i = 0; i < n && !l->stop; i++) {
        int fd = (int)(intptr_t)res[i].client_data;
        if (fd < 0 || fd >= l->nwatches) continue;
        watch *w = &l->watches[fd];
        /* Unwatched earlier in this round, or re-registered (possibly a
         * new socket with a reused fd number): the event is stale. */
        if (!w->active || w->since_round == l->round || !w->cb || !w->events)
            continue;
        unsigned ev = 0;
        if (res[i].rtnevents & APR_POLLIN) ev |= LOOP_READ;
        if (res[i].rtnevents & APR_POLLOUT) ev |= LOOP_WRITE;
        ev &= w->events;
        /* Error/hangup: the owner learns it by reading (EOF or errno). */
        if (res[i].rtnevents & (APR_POLLERR | APR_POLLHUP | APR_POLLNVAL))
            ev |= LOOP_READ;
        if (ev) w->cb(l, fd, ev, w->ud);
    }
}

int loop_run(loop *l) {
    l->stop = 0;
    while (!l->stop) {
        l->now = monotonic_ms();
        apr_interval_time_t timeout = -1;
        if (l->nheap > 0) {
            uint64_t when = l->heap[0]->when;
            timeout = when <= l->now ? 0 : (apr_interval_time_t)(when - l->now) * 1000;
        }
        apr_int32_t n = 0;
        const apr_pollfd_t *res = NULL;
        apr_status_t rv = apr_pollset_poll(l->pollset, timeout, &n, &res);
        l->now = monotonic_ms();
        l->round++;
        if (rv == APR_SUCCESS) dispatch(l, res, n);
        if (!l->stop) run_due_timers(l);
    }
    return 0;
}
