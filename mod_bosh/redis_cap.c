/*
 * redis_cap.c - server-wide counters in shared memory: Redis connections
 * (BoshRedisMaxTotal) and held BOSH requests (BoshMaxHeldShare).
 * See redis_cap.h for why and for the safety rules.
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "apr_atomic.h"
#include "apr_shm.h"
#include "apr_time.h"
#include "mod_bosh.h"
#include "redis_cap.h"

#define CAP_MAGIC 0x424f534au   /* "BOSH" + layout version */
#define PID_REAPING 0xffffffffu /* slot being taken back from a dead child */
#define CAP_USERDATA "mod_bosh_redis_cap"

typedef struct cap_slot {
    volatile apr_uint32_t pid;
    volatile apr_uint32_t count;
    /* published by the child's pool, for status pages only */
    volatile apr_uint32_t in_use, idle, waits, acquire_timeouts, failures;
    volatile apr_uint32_t held;         /* BOSH requests in a worker now */
} cap_slot;

/* Held requests, server-wide (BoshMaxHeldShare). `peak` keeps the highest
 * count seen in each of the last two seconds: after a message to a big
 * room every held request is answered at once and the count dips for a
 * few milliseconds while the clients poll again; admission must not see
 * that dip as free workers. */
typedef struct held_shm {
    volatile apr_uint32_t total;
    volatile apr_uint32_t peak_sec[2], peak[2];
    volatile apr_uint32_t refused;      /* new sessions refused, ever */
    volatile apr_uint32_t reported;     /* `refused` at the last log line */
    volatile apr_uint32_t log_minute;   /* minute of the last log line */
} held_shm;

typedef struct cap_shm {
    apr_uint32_t          magic;
    apr_uint32_t          nslots;
    volatile apr_uint32_t max_total;
    volatile apr_uint32_t total;
    volatile apr_uint32_t refusals;
    held_shm              held;
    cap_slot              slots[];
} cap_shm;

/* Set in the parent before fork; children inherit it. The DSO is reloaded
 * on restart, so the segment itself is found again via process-pool
 * userdata. */
static cap_shm *cap;
static cap_slot *my_slot;
/* Without the segment (apr_shm_create failed) this process counts alone. */
static held_shm held_local;
static volatile apr_uint32_t held_mine;

static held_shm *held_counts(void)
{
    return cap ? &cap->held : &held_local;
}

apr_status_t redis_cap_init(server_rec *s, int nslots, int max_total)
{
    apr_pool_t *pp = s->process->pool;
    apr_shm_t *shm = NULL;
    apr_status_t rv;
    void *data = NULL;

    apr_pool_userdata_get(&data, CAP_USERDATA, pp);
    shm = data;
    if (shm) {
        cap_shm *c = apr_shm_baseaddr_get(shm);
        if (c->magic == CAP_MAGIC && c->nslots >= (apr_uint32_t)nslots) {
            c->max_total = (apr_uint32_t)max_total;   /* may change on restart */
            cap = c;
            return APR_SUCCESS;
        }
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s,
                     "mod_bosh: ServerLimit grew; Redis connections of children "
                     "started before this restart are no longer counted");
    }
    rv = apr_shm_create(&shm, sizeof(cap_shm) + sizeof(cap_slot) * (apr_size_t)nslots,
                        NULL, pp);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, s,
                     "mod_bosh: cannot create shared memory for BoshRedisMaxTotal; "
                     "only the per-child cap applies");
        cap = NULL;
        return rv;
    }
    cap = apr_shm_baseaddr_get(shm);
    memset(cap, 0, sizeof(cap_shm) + sizeof(cap_slot) * (apr_size_t)nslots);
    cap->magic = CAP_MAGIC;
    cap->nslots = (apr_uint32_t)nslots;
    cap->max_total = (apr_uint32_t)max_total;
    apr_pool_userdata_set(shm, CAP_USERDATA, apr_pool_cleanup_null, pp);
    return APR_SUCCESS;
}

static int pid_dead(apr_uint32_t pid)
{
    if (pid == PID_REAPING)
        return 0;
    return kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

void redis_cap_reap(void)
{
    apr_uint32_t i;

    if (!cap)
        return;
    for (i = 0; i < cap->nslots; i++) {
        cap_slot *sl = &cap->slots[i];
        apr_uint32_t pid = sl->pid, left;
        if (pid == 0 || !pid_dead(pid))
            continue;
        /* Mark it first so no attach can claim it while we empty it. */
        if (apr_atomic_cas32(&sl->pid, PID_REAPING, pid) != pid)
            continue;
        left = apr_atomic_xchg32(&sl->count, 0);
        if (left)
            apr_atomic_sub32(&cap->total, left);
        left = apr_atomic_xchg32(&sl->held, 0);
        if (left)
            apr_atomic_sub32(&cap->held.total, left);
        apr_atomic_set32(&sl->in_use, 0);
        apr_atomic_set32(&sl->idle, 0);
        apr_atomic_set32(&sl->pid, 0);
    }
}

void redis_cap_publish(int in_use, int idle, unsigned waits,
                       unsigned acquire_timeouts, unsigned failures)
{
    if (!cap || !my_slot)
        return;
    apr_atomic_set32(&my_slot->in_use, (apr_uint32_t)in_use);
    apr_atomic_set32(&my_slot->idle, (apr_uint32_t)idle);
    apr_atomic_set32(&my_slot->waits, waits);
    apr_atomic_set32(&my_slot->acquire_timeouts, acquire_timeouts);
    apr_atomic_set32(&my_slot->failures, failures);
}

int redis_cap_foreach(void (*fn)(const redis_cap_child_stats *st, void *ud),
                      void *ud)
{
    apr_uint32_t i;
    int n = 0;

    if (!cap)
        return 0;
    for (i = 0; i < cap->nslots; i++) {
        cap_slot *sl = &cap->slots[i];
        redis_cap_child_stats st;
        st.pid = apr_atomic_read32(&sl->pid);
        if (st.pid == 0 || st.pid == PID_REAPING || pid_dead(st.pid))
            continue;
        st.conns = apr_atomic_read32(&sl->count);
        st.in_use = apr_atomic_read32(&sl->in_use);
        st.idle = apr_atomic_read32(&sl->idle);
        st.waits = apr_atomic_read32(&sl->waits);
        st.acquire_timeouts = apr_atomic_read32(&sl->acquire_timeouts);
        st.failures = apr_atomic_read32(&sl->failures);
        fn(&st, ud);
        n++;
    }
    return n;
}

int redis_cap_child_attach(void)
{
    apr_uint32_t me = (apr_uint32_t)getpid(), i;

    my_slot = NULL;
    if (!cap)
        return -1;
    for (i = 0; i < cap->nslots; i++) {
        cap_slot *sl = &cap->slots[i];
        apr_uint32_t pid = sl->pid;
        if (pid != 0 && !pid_dead(pid))
            continue;
        if (apr_atomic_cas32(&sl->pid, me, pid) != pid)
            continue;                   /* another child won it */
        /* Take back what a dead child still counted. */
        {
            apr_uint32_t left = apr_atomic_xchg32(&sl->count, 0);
            if (left)
                apr_atomic_sub32(&cap->total, left);
            left = apr_atomic_xchg32(&sl->held, 0);
            if (left)
                apr_atomic_sub32(&cap->held.total, left);
        }
        apr_atomic_set32(&sl->in_use, 0);
        apr_atomic_set32(&sl->idle, 0);
        apr_atomic_set32(&sl->waits, 0);
        apr_atomic_set32(&sl->acquire_timeouts, 0);
        apr_atomic_set32(&sl->failures, 0);
        my_slot = sl;
        return 0;
    }
    return -1;
}

void redis_cap_child_detach(void)
{
    if (!cap || !my_slot)
        return;
    {
        apr_uint32_t left = apr_atomic_xchg32(&my_slot->count, 0);
        if (left)
            apr_atomic_sub32(&cap->total, left);
        left = apr_atomic_xchg32(&my_slot->held, 0);
        if (left)
            apr_atomic_sub32(&cap->held.total, left);
    }
    apr_atomic_set32(&my_slot->in_use, 0);
    apr_atomic_set32(&my_slot->idle, 0);
    apr_atomic_set32(&my_slot->pid, 0);
    my_slot = NULL;
}

int redis_cap_reserve(void)
{
    if (!cap || !my_slot)
        return 1;                       /* no segment: per-child cap only */
    if (apr_atomic_inc32(&cap->total) >= cap->max_total) {
        apr_atomic_dec32(&cap->total);
        apr_atomic_inc32(&cap->refusals);
        return 0;
    }
    apr_atomic_inc32(&my_slot->count);
    return 1;
}

void redis_cap_release(unsigned n)
{
    if (!cap || !my_slot || n == 0)
        return;
    apr_atomic_sub32(&my_slot->count, n);
    apr_atomic_sub32(&cap->total, n);
}

void redis_cap_get(int *total, int *max, unsigned *refusals)
{
    if (!cap) {
        *total = *max = -1;
        *refusals = 0;
        return;
    }
    *total = (int)apr_atomic_read32(&cap->total);
    *max = (int)cap->max_total;
    *refusals = apr_atomic_read32(&cap->refusals);
}

/* ---- held requests (BoshMaxHeldShare) ---- */

static void note_peak(held_shm *h, apr_uint32_t v)
{
    apr_uint32_t now = (apr_uint32_t)apr_time_sec(apr_time_now());
    int i = (int)(now & 1);
    apr_uint32_t sec = apr_atomic_read32(&h->peak_sec[i]), cur;

    /* The first to see a new second restarts its bucket; a racing update
     * may be lost, which only makes one second's peak a little low. */
    if (sec != now && apr_atomic_cas32(&h->peak_sec[i], now, sec) == sec)
        apr_atomic_set32(&h->peak[i], v);
    while ((cur = apr_atomic_read32(&h->peak[i])) < v &&
           apr_atomic_cas32(&h->peak[i], v, cur) != cur)
        ;
}

void bosh_held_enter(void)
{
    held_shm *h = held_counts();
    apr_uint32_t v = apr_atomic_inc32(&h->total) + 1;

    apr_atomic_inc32(&held_mine);
    if (cap && my_slot)
        apr_atomic_inc32(&my_slot->held);
    note_peak(h, v);
}

void bosh_held_leave(void)
{
    held_shm *h = held_counts();

    apr_atomic_dec32(&held_mine);
    if (cap && my_slot) {
        /* A reap may have emptied a slot whose pid looked dead; never go
         * below zero. */
        apr_uint32_t c;
        while ((c = apr_atomic_read32(&my_slot->held)) > 0 &&
               apr_atomic_cas32(&my_slot->held, c - 1, c) != c)
            ;
        if (c == 0)
            return;
    }
    apr_atomic_dec32(&h->total);
}

void bosh_held_get(bosh_held_counts *out)
{
    held_shm *h = held_counts();
    apr_uint32_t now = (apr_uint32_t)apr_time_sec(apr_time_now());
    apr_uint32_t peak;
    int i;

    out->shared = cap != NULL;
    out->child = apr_atomic_read32(&held_mine);
    out->server = apr_atomic_read32(&h->total);
    peak = out->server;
    for (i = 0; i < 2; i++) {
        apr_uint32_t sec = apr_atomic_read32(&h->peak_sec[i]);
        apr_uint32_t v = apr_atomic_read32(&h->peak[i]);
        if ((sec == now || sec + 1 == now) && v > peak)
            peak = v;
    }
    out->server_peak = peak;
    out->refused = apr_atomic_read32(&h->refused);
}

unsigned bosh_held_refused(void)
{
    held_shm *h = held_counts();
    apr_uint32_t minute = (apr_uint32_t)(apr_time_sec(apr_time_now()) / 60);
    apr_uint32_t last, total;

    total = apr_atomic_inc32(&h->refused) + 1;
    last = apr_atomic_read32(&h->log_minute);
    if (last == minute || apr_atomic_cas32(&h->log_minute, minute, last) != last)
        return 0;
    return total - apr_atomic_xchg32(&h->reported, total);
}
