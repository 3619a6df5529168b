/*
 * sm.c: XEP-0198 counters and queue (see sm.h). Unsigned 32-bit
 * arithmetic does the wrap at 2^32 that §4 asks for ("h ... MUST wrap
 * around to zero"): all differences are taken modulo 2^32.
 */
#include "sm.h"

#include <stdlib.h>
#include <string.h>

void sm_init(sm_state *sm) { memset(sm, 0, sizeof *sm); }

void sm_init_at(sm_state *sm, uint32_t h) {
    sm_init(sm);
    sm->in_h = sm->out_h = sm->acked = h;
}

void sm_clear(sm_state *sm) {
    while (sm->head) {
        sm_item *it = sm->head;
        sm->head = it->next;
        free(it);
    }
    sm->tail = NULL;
    sm->n = sm->bytes = 0;
}

uint32_t sm_count_in(sm_state *sm) { return ++sm->in_h; }

int sm_push(sm_state *sm, const char *xml, size_t len, time_t stamp,
            size_t max_n, size_t max_bytes) {
    sm_item *it = malloc(sizeof *it + len + 1);
    if (!it) abort();
    it->next = NULL;
    it->stamp = stamp;
    it->len = len;
    memcpy(it->xml, xml, len);
    it->xml[len] = '\0';
    if (sm->tail) sm->tail->next = it;
    else sm->head = it;
    sm->tail = it;
    sm->n++;
    sm->bytes += len;
    sm->out_h++;
    sm->since_request++;
    return (max_n && sm->n > max_n) || (max_bytes && sm->bytes > max_bytes);
}

int sm_ack_valid(const sm_state *sm, uint32_t h) {
    return (uint32_t)(h - sm->acked) <= (uint32_t)(sm->out_h - sm->acked);
}

long sm_ack(sm_state *sm, uint32_t h) {
    if (!sm_ack_valid(sm, h)) return -1;
    uint32_t drop = h - sm->acked;
    for (uint32_t i = 0; i < drop && sm->head; i++) {
        sm_item *it = sm->head;
        sm->head = it->next;
        sm->n--;
        sm->bytes -= it->len;
        free(it);
    }
    if (!sm->head) sm->tail = NULL;
    sm->acked = h;
    return (long)drop;
}

int sm_parse_h(const char *s, uint32_t *h) {
    uint64_t v = 0;
    if (!s || !*s || strlen(s) > 10) return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return -1;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    if (v > UINT32_MAX) return -1;
    *h = (uint32_t)v;
    return 0;
}

void sm_move(sm_state *dst, sm_state *src) {
    *dst = *src;
    sm_init(src);
}
