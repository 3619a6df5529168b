/*
 * muc_history: which stored messages a joining occupant gets, XEP-0045
 * §7.2.14 (<history maxchars maxstanzas seconds since/>), without I/O.
 *
 * History entries are the serialized messages of the room's ring, each
 * ending with the room's own <delay stamp='...'/> (muc.c append_history):
 * that stamp is the message's time. All given limits apply together (the
 * most restrictive wins). tests/unit/test_muc_history.c drives this file.
 */
#ifndef CHATD_MUC_HISTORY_H
#define CHATD_MUC_HISTORY_H

#include <stddef.h>
#include <time.h>
#include "muc_room.h"

typedef struct muc_hist_req {
    long   maxstanzas;    /* -1: no limit */
    long   maxchars;      /* -1: no limit; counted on the stored bytes */
    int    has_since;
    time_t since;         /* messages stamped at or after it */
} muc_hist_req;

/* A request from the <history/> element's attribute values (each NULL when
 * absent); `seconds` becomes since = now - seconds. A malformed value is
 * ignored (as if absent), as Prosody and ejabberd do. */
void     muc_hist_req_parse(muc_hist_req *q, const char *maxstanzas, const char *maxchars,
                            const char *seconds, const char *since, time_t now);

/* The index (0 = oldest of hist_count) of the first entry to send; the
 * entries from it to the newest go out. hist_count means none. */
unsigned muc_history_first(const muc_room *r, const muc_hist_req *q);

/* XEP-0082 DateTime (CCYY-MM-DDThh:mm:ss[.sss](Z|(+|-)hh:mm)) to time_t.
 * 0 or -1. */
int      xmpp_datetime_parse(const char *s, time_t *out);

/* The stamp of the last <delay/> in a serialized history entry. 0 or -1. */
int      muc_history_stamp(const char *xml, size_t len, time_t *out);

#endif
