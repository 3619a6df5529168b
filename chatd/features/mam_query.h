/*
 * mam_query: the pure part of XEP-0313 Message Archive Management, no I/O.
 *
 * Why apart: what a query asks for (the XEP-0004 form's with/start/end and
 * urn:xmpp:mam:2#extended before-id/after-id, the XEP-0059 <set/>'s max,
 * before, after) decides which slice of an archive is read, and getting a
 * bound off by one loses or repeats a message in a client's scroll-back.
 * tests/unit/test_mam_query.c drives this file.
 *
 * Archive ids are Redis stream ids, "<ms>-<seq>": chatd picks them when a
 * message is delivered (mam_id_next: strictly increasing in this process),
 * stamps them as the XEP-0359 stanza-id, and the archive's stream is
 * written with those ids, so time filters are ranges over the ms part and
 * RSM paging is a range starting after or before an id.
 */
#ifndef CHATD_MAM_QUERY_H
#define CHATD_MAM_QUERY_H

#include <stddef.h>
#include <stdint.h>
#include "../../common/xml_stream.h"

#define NS_MAM       "urn:xmpp:mam:2"
#define NS_MAM_EXT   "urn:xmpp:mam:2#extended"
#define NS_RSM       "http://jabber.org/protocol/rsm"
#define NS_FORWARD   "urn:xmpp:forward:0"
#define NS_SID       "urn:xmpp:sid:0"
#define NS_XDATA     "jabber:x:data"

/* The longest id: two 20-digit numbers and a dash. */
#define MAM_ID_LEN 48

typedef struct mam_id {
    uint64_t ms, seq;
} mam_id;

/* Strictly increasing ids for this process: the current ms, or the last
 * ms with the next seq when the clock has not moved (or went back). */
typedef struct mam_idgen {
    uint64_t ms, seq;
} mam_idgen;

mam_id   mam_id_next(mam_idgen *g, uint64_t now_ms);
/* "<ms>-<seq>", decimal digits only (what a stanza-id we gave looks
 * like). 0 or -1. */
int      mam_id_parse(const char *s, mam_id *out);
char    *mam_id_format(mam_id id, char *buf, size_t len);
int      mam_id_cmp(mam_id a, mam_id b);

/* XEP-0082 DateTime to ms since the epoch (fractions kept to the ms). */
int      mam_time_parse(const char *s, int64_t *ms);

typedef struct mam_query {
    const char *queryid;      /* echoed in each <result/>, or NULL */
    char        with[3072];   /* "" none */
    int         has_start, has_end;
    int64_t     start_ms, end_ms;
    int         has_after_id, has_before_id;   /* form: before-id/after-id */
    mam_id      after_id, before_id;
    int         has_rsm_after, has_rsm_before, rsm_before_last; /* <before/> empty */
    mam_id      rsm_after, rsm_before;
    unsigned    max;          /* page size (clamped to the cap) */
    int         flip;         /* <flip-page/> */
    /* Computed by mam_query_range: */
    int         backward;     /* read from the newest end (RSM <before/>) */
    int         empty;        /* the bounds cross: nothing can match */
    char        lo[MAM_ID_LEN], hi[MAM_ID_LEN];   /* inclusive stream ids */
    int         want_count;   /* no filter: the count is the archive's length */
} mam_query;

/* Parse <query xmlns='urn:xmpp:mam:2'/> of an iq set. max_default is the
 * page when the client gives none, max_cap the most it may ask for.
 * Returns 0, or -1 with *cond the stanza error condition: bad-request for
 * a malformed form or <set/>, item-not-found for a before/after id that
 * is not one of ours (no archive can hold it). */
int      mam_query_parse(const xs_node *query, mam_query *q, unsigned max_default,
                         unsigned max_cap, const char **cond);

/* Turn the filters into one inclusive id range [lo, hi], also bounded
 * below by min_ms (retention; 0: none), and pick the direction. */
void     mam_query_range(mam_query *q, int64_t min_ms);

#endif
