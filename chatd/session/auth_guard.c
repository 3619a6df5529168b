/*
 * auth_guard.c: the leaky-bucket failure counters of auth_guard.h in one
 * chained hash table keyed "u:<account>" / "a:<address>".
 */
#include "auth_guard.h"

#include <stdlib.h>
#include <string.h>

#define NBUCKETS 16384u

typedef struct entry {
    struct entry *next;
    double        score;
    uint64_t      last;         /* when score was last brought up to date */
    char          key[];
} entry;

struct auth_guard {
    entry   *b[NBUCKETS];
    size_t   n;
    unsigned max_account, max_addr;
    uint64_t decay_ms;
};

auth_guard *auth_guard_new(unsigned max_account, unsigned max_addr, uint64_t decay_ms) {
    auth_guard *g = calloc(1, sizeof *g);
    if (!g) abort();
    g->max_account = max_account;
    g->max_addr = max_addr;
    g->decay_ms = decay_ms ? decay_ms : 1;
    return g;
}

void auth_guard_free(auth_guard *g) {
    if (!g) return;
    for (unsigned i = 0; i < NBUCKETS; i++)
        for (entry *e = g->b[i], *nx; e; e = nx) {
            nx = e->next;
            free(e);
        }
    free(g);
}

size_t auth_guard_size(const auth_guard *g) { return g->n; }

static unsigned hash(const char *k) {
    uint32_t h = 2166136261u;                   /* FNV-1a */
    for (; *k; k++) h = (h ^ (unsigned char)*k) * 16777619u;
    return h % NBUCKETS;
}

static void decay(const auth_guard *g, entry *e, uint64_t now) {
    if (now > e->last) {
        e->score -= (double)(now - e->last) / (double)g->decay_ms;
        if (e->score < 0) e->score = 0;
        e->last = now;
    }
}

static void unlink_entry(auth_guard *g, entry *e) {
    entry **pp = &g->b[hash(e->key)];
    while (*pp != e) pp = &(*pp)->next;
    *pp = e->next;
    free(e);
    g->n--;
}

/* Full: drop what decayed to nothing; if that frees less than an eighth,
 * also every entry at or below the mean score. Hot entries (an account or
 * address being hammered) stay, and a flood of made-up names pays one
 * scan per many inserts, never one per insert. */
static void make_room(auth_guard *g, uint64_t now) {
    double sum = 0;
    for (unsigned i = 0; i < NBUCKETS; i++)
        for (entry *e = g->b[i], *nx; e; e = nx) {
            nx = e->next;
            decay(g, e, now);
            if (e->score <= 0) unlink_entry(g, e);
            else sum += e->score;
        }
    if (g->n < AUTH_GUARD_MAX_ENTRIES - AUTH_GUARD_MAX_ENTRIES / 8 || !g->n) return;
    double mean = sum / (double)g->n;
    for (unsigned i = 0; i < NBUCKETS; i++)
        for (entry *e = g->b[i], *nx; e; e = nx) {
            nx = e->next;
            if (e->score <= mean) unlink_entry(g, e);
        }
}

static entry *find(auth_guard *g, char kind, const char *name, uint64_t now, int create) {
    char key[300];
    if (!name || !*name) return NULL;
    size_t nl = strlen(name);
    if (nl > sizeof key - 3) nl = sizeof key - 3;
    key[0] = kind;
    key[1] = ':';
    memcpy(key + 2, name, nl);
    key[2 + nl] = '\0';
    unsigned h = hash(key);
    for (entry *e = g->b[h]; e; e = e->next)
        if (strcmp(e->key, key) == 0) {
            decay(g, e, now);
            return e;
        }
    if (!create) return NULL;
    if (g->n >= AUTH_GUARD_MAX_ENTRIES) make_room(g, now);
    entry *e = calloc(1, sizeof *e + nl + 3);
    if (!e) abort();
    memcpy(e->key, key, nl + 3);
    e->last = now;
    e->next = g->b[h];
    g->b[h] = e;
    g->n++;
    return e;
}

/* Blocked while more than max - 1 failures are remembered: the max-th
 * failure blocks even though the first has already leaked a little. */
static int over(const entry *e, unsigned max) {
    return e && max && e->score > (double)max - 1.0;
}

int auth_guard_blocked(auth_guard *g, const char *account, const char *addr, uint64_t now) {
    entry *u = g->max_account ? find(g, 'u', account, now, 0) : NULL;
    entry *a = g->max_addr ? find(g, 'a', addr, now, 0) : NULL;
    return over(u, g->max_account) || over(a, g->max_addr);
}

static void add_one(entry *e, unsigned max) {
    if (!e) return;
    e->score += 1;
    if (e->score > 2.0 * max) e->score = 2.0 * max;
}

int auth_guard_fail(auth_guard *g, const char *account, const char *addr, uint64_t now) {
    entry *u = g->max_account ? find(g, 'u', account, now, 1) : NULL;
    add_one(u, g->max_account);
    /* find() may evict to make room: look the account up again after. */
    entry *a = g->max_addr ? find(g, 'a', addr, now, 1) : NULL;
    add_one(a, g->max_addr);
    u = g->max_account ? find(g, 'u', account, now, 0) : NULL;
    return over(u, g->max_account) || over(a, g->max_addr);
}

void auth_guard_success(auth_guard *g, const char *account) {
    entry *u = find(g, 'u', account, 0, 0);
    if (u) unlink_entry(g, u);
}

double auth_guard_score_account(auth_guard *g, const char *account, uint64_t now) {
    entry *e = find(g, 'u', account, now, 0);
    return e ? e->score : 0;
}

double auth_guard_score_addr(auth_guard *g, const char *addr, uint64_t now) {
    entry *e = find(g, 'a', addr, now, 0);
    return e ? e->score : 0;
}
