/*
 * muc_history: the XEP-0045 §7.2.14 history request (see muc_history.h).
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include "muc_history.h"

static int num(const char *s, long *out)
{
    if (!s || !isdigit((unsigned char)*s)) return -1;
    char *end;
    long v = strtol(s, &end, 10);
    if (*end || v < 0) return -1;
    *out = v;
    return 0;
}

void muc_hist_req_parse(muc_hist_req *q, const char *maxstanzas, const char *maxchars,
                        const char *seconds, const char *since, time_t now)
{
    long v;
    q->maxstanzas = num(maxstanzas, &v) == 0 ? v : -1;
    q->maxchars = num(maxchars, &v) == 0 ? v : -1;
    q->has_since = 0;
    time_t t;
    if (since && xmpp_datetime_parse(since, &t) == 0) {
        q->has_since = 1;
        q->since = t;
    }
    if (num(seconds, &v) == 0) {
        /* seconds=0: nothing; otherwise stamps within the last `seconds` */
        t = v == 0 ? now + 1 : now - (time_t)v;
        if (!q->has_since || t > q->since) q->since = t;
        q->has_since = 1;
    }
}

static int digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i])) return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian; no timegm needed). */
static long days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    long era = (y >= 0 ? y : y - 399) / 400;
    long yoe = y - era * 400;
    long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int xmpp_datetime_parse(const char *s, time_t *out)
{
    int Y, M, D, h, m, sec;
    if (!s || strlen(s) < 20) return -1;
    if (digits(s, 4, &Y) || s[4] != '-' || digits(s + 5, 2, &M) || s[7] != '-' ||
        digits(s + 8, 2, &D) || s[10] != 'T' || digits(s + 11, 2, &h) || s[13] != ':' ||
        digits(s + 14, 2, &m) || s[16] != ':' || digits(s + 17, 2, &sec))
        return -1;
    if (M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60) return -1;
    const char *p = s + 19;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p)) return -1;
        while (isdigit((unsigned char)*p)) p++;      /* fractions: dropped */
    }
    long off = 0;
    if (*p == 'Z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        if (digits(p + 1, 2, &oh) || p[3] != ':' || digits(p + 4, 2, &om) || oh > 23 || om > 59)
            return -1;
        off = (oh * 60L + om) * 60L * (*p == '-' ? -1 : 1);
        p += 6;
    } else {
        return -1;                                   /* a time zone is required */
    }
    if (*p) return -1;
    long long t = (long long)days_from_civil(Y, M, D) * 86400LL + h * 3600LL + m * 60LL + sec
                  - off;
    *out = (time_t)t;
    return 0;
}

int muc_history_stamp(const char *xml, size_t len, time_t *out)
{
    /* the room's <delay/> is the entry's last child: the last one wins */
    const char *delay = NULL;
    for (const char *p = xml; (p = memmem(p, len - (size_t)(p - xml), "<delay", 6)); p += 6)
        delay = p;
    if (!delay) return -1;
    const char *end = memchr(delay, '>', len - (size_t)(delay - xml));
    if (!end) return -1;
    for (const char *p = delay; p + 7 < end; p++) {
        if (memcmp(p, " stamp=", 7) != 0) continue;
        char q = p[7];
        if (q != '"' && q != '\'') return -1;
        const char *v = p + 8, *e = memchr(v, q, (size_t)(end - v));
        if (!e || e - v >= 64) return -1;
        char buf[64];
        memcpy(buf, v, (size_t)(e - v));
        buf[e - v] = '\0';
        return xmpp_datetime_parse(buf, out);
    }
    return -1;
}

unsigned muc_history_first(const muc_room *r, const muc_hist_req *q)
{
    unsigned n = r->hist_count, first = n;
    size_t chars = 0;
    /* newest backwards, while every limit still allows one more */
    while (first > 0) {
        if (q->maxstanzas >= 0 && (long)(n - first) >= q->maxstanzas) break;
        size_t len;
        const char *xml = muc_history_get(r, first - 1, &len);
        if (!xml) break;
        if (q->maxchars >= 0 && chars + len > (size_t)q->maxchars) break;
        if (q->has_since) {
            time_t t;
            /* no readable stamp: not known to be recent enough */
            if (muc_history_stamp(xml, len, &t) != 0 || t < q->since) break;
        }
        chars += len;
        first--;
    }
    return first;
}
