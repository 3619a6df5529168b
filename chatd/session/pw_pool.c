/*
 * pw_pool.c: the worker threads of pw_pool.h. One mutex guards the two
 * lists (todo, done) and the per-job "forgotten" flag; the workers touch
 * nothing else of chatd. Passwords are wiped when a job is freed.
 */
#include "pw_pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <openssl/crypto.h>

#include "log.h"

struct pw_job {
    struct pw_job *next;
    scram_verifier v;
    char          *password;
    pw_pool_cb     cb;
    void          *ud;
    int            forgotten;   /* under the mutex */
    int            computed;
    int            match;
};

struct pw_pool {
    loop           *l;
    int             efd;
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    pw_job         *todo, *todo_tail;
    pw_job         *done;
    unsigned        pending, max_pending;
    int             stop;
    unsigned        nthreads;
    pthread_t      *threads;
    uint64_t       *runs;
};

static void job_free(pw_job *j) {
    if (j->password) {
        OPENSSL_cleanse(j->password, strlen(j->password));
        free(j->password);
    }
    OPENSSL_cleanse(&j->v, sizeof j->v);
    free(j);
}

/* Workers run at a lower priority than the loop (Linux: nice is per
 * thread). Measured with bench/auth-flood on 2 busy cores: at full priority
 * two hashing threads took the CPU from the loop and chat got slower than
 * with the hashing on the loop itself; niced, the loop runs first. */
#define PW_POOL_NICE 10

static void *worker(void *arg) {
    pw_pool *p = arg;
    if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), PW_POOL_NICE) != 0)
        log_debug("pw_pool: setpriority: %s", strerror(errno));
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->todo && !p->stop) pthread_cond_wait(&p->cv, &p->mu);
        if (p->stop) break;
        pw_job *j = p->todo;
        p->todo = j->next;
        if (!p->todo) p->todo_tail = NULL;
        int skip = j->forgotten;
        pthread_mutex_unlock(&p->mu);
        if (!skip) {
            j->match = scram_check_password(&j->v, j->password) == 1;
            j->computed = 1;
        }
        pthread_mutex_lock(&p->mu);
        j->next = p->done;
        p->done = j;
        uint64_t one = 1;
        if (write(p->efd, &one, sizeof one) < 0 && errno != EAGAIN)
            log_error("pw_pool: eventfd write: %s", strerror(errno));
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* On the loop: run the callbacks of finished jobs, oldest first. */
static void on_done(loop *l, int fd, unsigned events, void *ud) {
    (void)l; (void)events;
    pw_pool *p = ud;
    uint64_t n;
    while (read(fd, &n, sizeof n) == (ssize_t)sizeof n) {}
    pthread_mutex_lock(&p->mu);
    pw_job *list = p->done, *rev = NULL;
    p->done = NULL;
    for (pw_job *j = list; j; j = list) {
        list = j->next;
        j->next = rev;
        rev = j;
        p->pending--;
    }
    pthread_mutex_unlock(&p->mu);
    for (pw_job *j = rev, *nx; j; j = nx) {
        nx = j->next;
        if (j->computed && p->runs) (*p->runs)++;
        /* forgotten is only ever set on this thread: no lock needed now */
        if (!j->forgotten) j->cb(j->ud, j->match);
        job_free(j);
    }
}

pw_pool *pw_pool_new(loop *l, unsigned threads, unsigned queue, uint64_t *runs) {
    pw_pool *p = calloc(1, sizeof *p);
    if (!p) abort();
    p->l = l;
    p->max_pending = queue ? queue : 1;
    p->runs = runs;
    p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (p->efd < 0) {
        log_error("pw_pool: eventfd: %s", strerror(errno));
        free(p);
        return NULL;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    if (threads < 1) threads = 1;
    p->threads = calloc(threads, sizeof *p->threads);
    if (!p->threads) abort();
    for (unsigned i = 0; i < threads; i++) {
        int rc = pthread_create(&p->threads[i], NULL, worker, p);
        if (rc != 0) {
            log_error("pw_pool: pthread_create: %s", strerror(rc));
            break;
        }
        p->nthreads++;
    }
    if (!p->nthreads || loop_watch(l, p->efd, LOOP_READ, on_done, p) < 0) {
        pw_pool_free(p);
        return NULL;
    }
    return p;
}

void pw_pool_free(pw_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (unsigned i = 0; i < p->nthreads; i++) pthread_join(p->threads[i], NULL);
    free(p->threads);
    for (pw_job *j = p->todo, *nx; j; j = nx) { nx = j->next; job_free(j); }
    for (pw_job *j = p->done, *nx; j; j = nx) { nx = j->next; job_free(j); }
    if (p->efd >= 0) {
        loop_unwatch(p->l, p->efd);
        close(p->efd);
    }
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}

pw_job *pw_pool_check(pw_pool *p, const scram_verifier *v, const char *password,
                      pw_pool_cb cb, void *ud) {
    pthread_mutex_lock(&p->mu);
    if (p->pending >= p->max_pending) {
        pthread_mutex_unlock(&p->mu);
        return NULL;
    }
    p->pending++;
    pthread_mutex_unlock(&p->mu);
    pw_job *j = calloc(1, sizeof *j);
    if (!j) abort();
    j->v = *v;
    j->password = strdup(password);
    if (!j->password) abort();
    j->cb = cb;
    j->ud = ud;
    pthread_mutex_lock(&p->mu);
    if (p->todo_tail) p->todo_tail->next = j;
    else p->todo = j;
    p->todo_tail = j;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return j;
}

void pw_pool_forget(pw_pool *p, pw_job *j) {
    if (!j) return;
    pthread_mutex_lock(&p->mu);
    j->forgotten = 1;
    pthread_mutex_unlock(&p->mu);
}

unsigned pw_pool_pending(pw_pool *p) {
    pthread_mutex_lock(&p->mu);
    unsigned n = p->pending;
    pthread_mutex_unlock(&p->mu);
    return n;
}
