/*
 * mam_query: see mam_query.h.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "mam_query.h"
#include "muc_history.h"
#include "jid.h"

mam_id mam_id_next(mam_idgen *g, uint64_t now_ms)
{
    if (now_ms > g->ms) {
        g->ms = now_ms;
        g->seq = 0;
    } else {
        g->seq++;
    }
    return (mam_id){ g->ms, g->seq };
}

static int parse_u64(const char *s, const char *end, uint64_t *out)
{
    if (s == end || end - s > 20) return -1;
    uint64_t v = 0;
    for (const char *p = s; p < end; p++) {
        if (!isdigit((unsigned char)*p)) return -1;
        unsigned dgt = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - dgt) / 10) return -1;
        v = v * 10 + dgt;
    }
    *out = v;
    return 0;
}

int mam_id_parse(const char *s, mam_id *out)
{
    if (!s) return -1;
    const char *dash = strchr(s, '-');
    if (!dash) return -1;
    mam_id id;
    if (parse_u64(s, dash, &id.ms) || parse_u64(dash + 1, dash + 1 + strlen(dash + 1), &id.seq))
        return -1;
    *out = id;
    return 0;
}

char *mam_id_format(mam_id id, char *buf, size_t len)
{
    snprintf(buf, len, "%llu-%llu", (unsigned long long)id.ms, (unsigned long long)id.seq);
    return buf;
}

int mam_id_cmp(mam_id a, mam_id b)
{
    if (a.ms != b.ms) return a.ms < b.ms ? -1 : 1;
    if (a.seq != b.seq) return a.seq < b.seq ? -1 : 1;
    return 0;
}

int mam_time_parse(const char *s, int64_t *ms)
{
    time_t t;
    if (xmpp_datetime_parse(s, &t) != 0) return -1;
    int64_t frac = 0;
    if (s[19] == '.') {                 /* the first three digits are the ms */
        int n = 0;
        for (const char *p = s + 20; n < 3; n++) {
            frac = frac * 10 + (isdigit((unsigned char)*p) ? *p++ - '0' : 0);
        }
    }
    if (t < 0) return -1;               /* before 1970: nothing archived */
    *ms = (int64_t)t * 1000 + frac;
    return 0;
}

/* ---- the query ---- */

static const char *field_value(const xs_node *f, char *buf, size_t len)
{
    xs_node *v = xs_child(f, NS_XDATA, "value");
    if (!v) return NULL;
    char *t = xs_text(v);
    size_t n = strlen(t);
    if (n >= len) { free(t); return NULL; }
    memcpy(buf, t, n + 1);
    free(t);
    return buf;
}

static int parse_form(const xs_node *x, mam_query *q, const char **cond)
{
    *cond = "bad-request";
    const char *type = xs_attr_get(x, "type");
    if (type && strcmp(type, "submit") != 0) return -1;
    for (xs_node *f = xs_child(x, NS_XDATA, "field"); f; f = xs_next_elem(f, NS_XDATA, "field")) {
        const char *var = xs_attr_get(f, "var");
        char val[3072];
        if (!var) return -1;
        const char *v = field_value(f, val, sizeof(val));
        if (strcmp(var, "FORM_TYPE") == 0) {
            if (!v || strcmp(v, NS_MAM) != 0) return -1;
            continue;
        }
        if (!v || !*v) continue;          /* an empty field filters nothing */
        if (strcmp(var, "with") == 0) {
            jid j;
            if (jid_parse(v, &j) < 0) return -1;
            snprintf(q->with, sizeof(q->with), "%s", v);
        } else if (strcmp(var, "start") == 0) {
            if (mam_time_parse(v, &q->start_ms) != 0) return -1;
            q->has_start = 1;
        } else if (strcmp(var, "end") == 0) {
            if (mam_time_parse(v, &q->end_ms) != 0) return -1;
            q->has_end = 1;
        } else if (strcmp(var, "after-id") == 0) {
            *cond = "item-not-found";
            if (mam_id_parse(v, &q->after_id) != 0) return -1;
            q->has_after_id = 1;
            *cond = "bad-request";
        } else if (strcmp(var, "before-id") == 0) {
            *cond = "item-not-found";
            if (mam_id_parse(v, &q->before_id) != 0) return -1;
            q->has_before_id = 1;
            *cond = "bad-request";
        } else {
            return -1;                    /* a field we do not filter on */
        }
    }
    return 0;
}

static int parse_rsm(const xs_node *set, mam_query *q, unsigned max_cap, const char **cond)
{
    *cond = "bad-request";
    xs_node *e;
    if ((e = xs_child(set, NS_RSM, "max"))) {
        char *t = xs_text(e), *end;
        unsigned long n = strtoul(t, &end, 10);
        int bad = !*t || *end || t[0] == '-';
        free(t);
        if (bad) return -1;
        q->max = n > max_cap ? max_cap : (unsigned)n;
    }
    if (xs_child(set, NS_RSM, "index")) return -1;   /* not served: ids page */
    if ((e = xs_child(set, NS_RSM, "after"))) {
        char *t = xs_text(e);
        int bad = mam_id_parse(t, &q->rsm_after);
        free(t);
        if (bad) { *cond = "item-not-found"; return -1; }
        q->has_rsm_after = 1;
    }
    if ((e = xs_child(set, NS_RSM, "before"))) {
        char *t = xs_text(e);
        if (!*t) {
            q->rsm_before_last = 1;
        } else if (mam_id_parse(t, &q->rsm_before) != 0) {
            free(t);
            *cond = "item-not-found";
            return -1;
        } else {
            q->has_rsm_before = 1;
        }
        free(t);
    }
    return 0;
}

int mam_query_parse(const xs_node *query, mam_query *q, unsigned max_default,
                    unsigned max_cap, const char **cond)
{
    memset(q, 0, sizeof(*q));
    q->queryid = xs_attr_get(query, "queryid");
    q->max = max_default < max_cap ? max_default : max_cap;
    const xs_node *x = xs_child(query, NS_XDATA, "x");
    if (x && parse_form(x, q, cond) != 0) return -1;
    const xs_node *set = xs_child(query, NS_RSM, "set");
    if (set && parse_rsm(set, q, max_cap, cond) != 0) return -1;
    q->flip = xs_child(query, NS_MAM, "flip-page") != NULL;
    return 0;
}

/* ---- the range ---- */

static const mam_id ID_MIN = { 0, 0 }, ID_MAX = { UINT64_MAX, UINT64_MAX };

/* The smallest id above a (exclusive lower bound made inclusive). */
static int id_above(mam_id a, mam_id *out)
{
    if (a.seq < UINT64_MAX) { *out = (mam_id){ a.ms, a.seq + 1 }; return 0; }
    if (a.ms < UINT64_MAX) { *out = (mam_id){ a.ms + 1, 0 }; return 0; }
    return -1;
}

/* The largest id below a. */
static int id_below(mam_id a, mam_id *out)
{
    if (a.seq > 0) { *out = (mam_id){ a.ms, a.seq - 1 }; return 0; }
    if (a.ms > 0) { *out = (mam_id){ a.ms - 1, UINT64_MAX }; return 0; }
    return -1;
}

static void raise_lo(mam_id *lo, mam_id v)  { if (mam_id_cmp(v, *lo) > 0) *lo = v; }
static void lower_hi(mam_id *hi, mam_id v)  { if (mam_id_cmp(v, *hi) < 0) *hi = v; }

void mam_query_range(mam_query *q, int64_t min_ms)
{
    mam_id lo = ID_MIN, hi = ID_MAX, v;
    int empty = 0;
    if (min_ms > 0) raise_lo(&lo, (mam_id){ (uint64_t)min_ms, 0 });
    if (q->has_start) raise_lo(&lo, (mam_id){ (uint64_t)q->start_ms, 0 });
    if (q->has_end) lower_hi(&hi, (mam_id){ (uint64_t)q->end_ms, UINT64_MAX });
    if (q->has_after_id) {
        if (id_above(q->after_id, &v) == 0) raise_lo(&lo, v); else empty = 1;
    }
    if (q->has_rsm_after) {
        if (id_above(q->rsm_after, &v) == 0) raise_lo(&lo, v); else empty = 1;
    }
    if (q->has_before_id) {
        if (id_below(q->before_id, &v) == 0) lower_hi(&hi, v); else empty = 1;
    }
    if (q->has_rsm_before) {
        if (id_below(q->rsm_before, &v) == 0) lower_hi(&hi, v); else empty = 1;
    }
    q->empty = empty || mam_id_cmp(lo, hi) > 0;
    q->backward = q->has_rsm_before || q->rsm_before_last;
    q->want_count = !q->with[0] && !q->has_start && !q->has_end &&
                    !q->has_after_id && !q->has_before_id;
    mam_id_format(lo, q->lo, sizeof(q->lo));
    mam_id_format(hi, q->hi, sizeof(q->hi));
}
