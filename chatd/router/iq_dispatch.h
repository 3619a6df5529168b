/*
 * iq_dispatch: every iq get/set addressed to the server or to an account's
 * bare JID goes through one table of (namespace, element, addressee) ->
 * handler rows (iq_table.c), the way Redis looks commands up in its command
 * table. A feature adds one row; the server's disco#info features are read
 * off the same rows, so what is advertised is what is dispatched.
 */
#ifndef CHATD_IQ_DISPATCH_H
#define CHATD_IQ_DISPATCH_H

#include "xmpp_internal.h"

/* Whom an iq is addressed to, seen from the sender. */
enum {
    IQ_TO_SERVER = 1 << 0,   /* the domain (or no 'to') */
    IQ_TO_OWN    = 1 << 1,   /* the sender's own bare JID */
    IQ_TO_OTHER  = 1 << 2,   /* another local account's bare JID */
    IQ_TO_ANY    = IQ_TO_SERVER | IQ_TO_OWN | IQ_TO_OTHER
};

typedef struct iq_request {
    chatd         *d;
    rsession      *rs;       /* the sending session; NULL for the server itself */
    const xs_node *st;       /* the whole <iq/> */
    const xs_node *q;        /* its payload: the first child element */
    const char    *to_bare;  /* the account addressed, NULL for the server */
    int            get;      /* type='get' (else 'set') */
    unsigned       to;       /* one IQ_TO_* */
} iq_request;

/* 0: handled (answered now or later). -1: not served here, the caller
 * answers service-unavailable (RFC 6120 §8.2.3). */
typedef int (*iq_handler_fn)(const iq_request *req);

typedef struct iq_handler {
    const char   *ns;        /* the payload's namespace */
    const char   *name;      /* its element, NULL: any element of ns */
    unsigned      to;        /* IQ_TO_* it may be addressed to */
    const char   *feature;   /* server disco#info feature, or NULL */
    iq_handler_fn fn;
} iq_handler;

/* An iq addressed to the server (to_bare NULL) or a bare JID. */
void iq_dispatch(chatd *d, rsession *rs, const xs_node *st, const char *to_bare);

/* The row for a payload (ns, name) sent to `to`; NULL: none. */
const iq_handler *iq_lookup(const char *ns, const char *name, unsigned to);

/* Calls fn for each distinct feature the table advertises, in table order. */
void iq_foreach_feature(void (*fn)(const char *feature, void *ud), void *ud);
/* The same, only rows that serve iqs addressed to `to` (IQ_TO_*): what an
 * account's disco#info lists to its owner (XEP-0313 §7: the archive is
 * advertised on the account). */
void iq_foreach_feature_to(unsigned to, void (*fn)(const char *feature, void *ud), void *ud);

#endif
