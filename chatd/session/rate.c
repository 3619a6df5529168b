/*
 * rate: token bucket and read budget maths (see rate.h).
 */
#include "rate.h"

static void refill(token_bucket *b, double rate, double burst, uint64_t now_ms) {
    if (!b->started) {
        b->tokens = burst;
        b->last_ms = now_ms;
        b->started = 1;
        return;
    }
    if (now_ms > b->last_ms) {
        b->tokens += rate * (double)(now_ms - b->last_ms) / 1000.0;
        if (b->tokens > burst) b->tokens = burst;
        b->last_ms = now_ms;
    }
}

int tb_take(token_bucket *b, double rate, double burst, double cost, uint64_t now_ms) {
    if (rate <= 0) return 1;
    if (burst < 1) burst = 1;
    refill(b, rate, burst, now_ms);
    if (b->tokens >= cost || (cost > burst && b->tokens >= burst)) {
        b->tokens -= cost;
        return 1;
    }
    return 0;
}

uint64_t tb_wait_ms(const token_bucket *b, double rate, double burst, double cost,
                    uint64_t now_ms) {
    if (rate <= 0) return 0;
    if (burst < 1) burst = 1;
    token_bucket t = *b;
    refill(&t, rate, burst, now_ms);
    double need = (cost > burst ? burst : cost) - t.tokens;
    if (need <= 0) return 0;
    double ms = need * 1000.0 / rate;
    return (uint64_t)ms + (ms > (double)(uint64_t)ms ? 1 : 0);
}

size_t read_budget_next(size_t budget, size_t used, size_t chunk) {
    if (budget == 0) return chunk;          /* no budget: unlimited */
    if (used >= budget) return 0;
    size_t left = budget - used;
    return left < chunk ? left : chunk;
}
