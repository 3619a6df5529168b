/*
 * addr_count.c: address -> live session count (see addr_count.h).
 *
 * Chained hash (FNV-1a), doubled when the load passes 1. A storm from many
 * addresses grows it; it never shrinks, which is fine: the bucket array
 * is a few pointers per address ever seen at once.
 */
#include "addr_count.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry {
    struct entry *next;
    unsigned      count;
    char          addr[];
} entry;

struct addr_count {
    entry  **buckets;
    size_t   nbuckets;     /* power of two */
    size_t   size;
};

static uint32_t hash(const char *s) {
    uint32_t h = 2166136261u;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 16777619u;
    }
    return h;
}

addr_count *addr_count_new(void) {
    addr_count *t = calloc(1, sizeof *t);
    if (!t) abort();
    t->nbuckets = 64;
    t->buckets = calloc(t->nbuckets, sizeof *t->buckets);
    if (!t->buckets) abort();
    return t;
}

void addr_count_free(addr_count *t) {
    if (!t) return;
    for (size_t i = 0; i < t->nbuckets; i++) {
        entry *e = t->buckets[i];
        while (e) {
            entry *next = e->next;
            free(e);
            e = next;
        }
    }
    free(t->buckets);
    free(t);
}

static entry **find(const addr_count *t, const char *addr) {
    entry **pp = &t->buckets[hash(addr) & (t->nbuckets - 1)];
    while (*pp && strcmp((*pp)->addr, addr) != 0) pp = &(*pp)->next;
    return pp;
}

static void grow(addr_count *t) {
    size_t n = t->nbuckets * 2;
    entry **b = calloc(n, sizeof *b);
    if (!b) abort();
    for (size_t i = 0; i < t->nbuckets; i++) {
        entry *e = t->buckets[i];
        while (e) {
            entry *next = e->next;
            size_t j = hash(e->addr) & (n - 1);
            e->next = b[j];
            b[j] = e;
            e = next;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = n;
}

unsigned addr_count_get(const addr_count *t, const char *addr) {
    entry **pp = find(t, addr);
    return *pp ? (*pp)->count : 0;
}

unsigned addr_count_inc(addr_count *t, const char *addr) {
    entry **pp = find(t, addr);
    if (*pp) return ++(*pp)->count;
    size_t len = strlen(addr);
    entry *e = malloc(sizeof *e + len + 1);
    if (!e) abort();
    memcpy(e->addr, addr, len + 1);
    e->count = 1;
    e->next = NULL;
    *pp = e;
    if (++t->size > t->nbuckets) grow(t);
    return 1;
}

unsigned addr_count_dec(addr_count *t, const char *addr) {
    entry **pp = find(t, addr);
    entry *e = *pp;
    if (!e) return 0;
    if (--e->count > 0) return e->count;
    *pp = e->next;
    free(e);
    t->size--;
    return 0;
}

size_t addr_count_size(const addr_count *t) {
    return t->size;
}
