/*
 * xmpp_internal: state shared by router.c, presence.c, roster.c,
 * iq_server.c, iq_table.c and offline.c (not by c2s or transports).
 *
 * Two records: rsession (one per bound session, hung off
 * c2s_router_slot) and ruser (one per account with a session online or a
 * roster operation pending). Both live only in memory; Redis holds the
 * durable roster and offline messages.
 */
#ifndef CHATD_XMPP_INTERNAL_H
#define CHATD_XMPP_INTERNAL_H

#include <time.h>
#include "chatd.h"
#include "c2s.h"
#include "jid.h"
#include "roster_item.h"
#include "../../common/xml_stream.h"

#define NS_CLIENT   "jabber:client"
#define NS_STANZAS  "urn:ietf:params:xml:ns:xmpp-stanzas"
#define NS_ROSTER   "jabber:iq:roster"
#define NS_DELAY    "urn:xmpp:delay"
#define NS_DISCO_INFO  "http://jabber.org/protocol/disco#info"
#define NS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"

typedef struct ruser ruser;
typedef struct rsession rsession;

/* A JID remembered for directed presence. */
typedef struct jid_list {
    struct jid_list *next;
    char *jid;
} jid_list;

struct rsession {
    c2s        *c2s;
    ruser      *user;
    char       *full;             /* user@domain/resource */
    int         bound;            /* present in the router's maps */
    int         available;        /* initial presence sent, still available */
    int         priority;
    int         interested;       /* asked for the roster: gets pushes */
    int         roster_ver_wanted; /* its roster get had 'ver': pushes carry one */
    xs_node    *presence;         /* last available broadcast presence */
    jid_list   *directed;         /* got directed presence from us */
    unsigned    ndirected;
    struct redis_async_req *offline_req;
    struct redis_async_req *subin_req;  /* pending subscription requests */
    int         subin_done;       /* those were read and handed over */
    int         offline_done;     /* stored messages fetched and handed over */
    int         offline_more;     /* a batch was acked, more remain */
    char       *offline_token;    /* this session's lease on the offline list */
    int         carbons;          /* XEP-0280 enabled (carbons.c) */
    struct csi_queue *csi;        /* XEP-0352: non-NULL while inactive (csi.c) */
    int         blocklist_wanted; /* XEP-0191: asked for the blocklist, gets pushes */
    char       *caps_ver;         /* XEP-0115 ver of its last presence (caps.c) */
    char       *pep_notify;       /* "\n<node>\n..." it wants PEP events for, or NULL */
    rsession   *next;             /* in user->sessions */
};

/* Work waiting for a user's roster to load. */
typedef void (*roster_action)(chatd *d, ruser *u, rsession *origin, xs_node *st);
typedef struct pending_action {
    struct pending_action *next;
    roster_action fn;
    roster_action fail;           /* the load failed; NULL: bounce st */
    xs_node      *stanza;         /* owned */
    char         *origin_full;    /* NULL: server-generated */
} pending_action;

struct ruser {
    chatd          *d;
    char           *local;
    char           *bare;
    rsession       *sessions;
    roster_item    *roster;
    int             roster_state;       /* ROSTER_* */
    int             roster_stale;       /* a write failed: reload at next use */
    int             running;            /* inside a roster action */
    struct redis_async_req *roster_req;
    char           *roster_ver;         /* RFC 6121 §2.6 version of what Redis holds */
    unsigned        roster_writes;      /* writes sent, not yet answered */
    pending_action *pending, *pending_tail;
    struct blocklist *blocklist;        /* XEP-0191 (blocking.c), or NULL */
};

enum { ROSTER_NONE = 0, ROSTER_LOADING, ROSTER_LOADED };

/* ---- router.c ---- */
rsession *router_session(chatd *d, const char *full);       /* NULL if none */
rsession *router_session_of(c2s *s);                        /* NULL if unbound */
ruser    *router_user(chatd *d, const char *local);         /* NULL if none */
ruser    *router_user_get(chatd *d, const char *local);     /* creates */
/* Free u when it has no sessions and nothing pending. */
void      router_user_release(chatd *d, ruser *u);
/* Reply to st with an error (never to an error). Does not free st. */
void      router_bounce(chatd *d, const xs_node *st, const char *type,
                        const char *condition);
/* A new stanza in jabber:client with the given attributes (NULL skips). */
xs_node  *stanza_new(const char *name, const char *from, const char *to,
                     const char *type, const char *id);
/* An iq result for st (from/to swapped, same id). */
xs_node  *iq_result(const xs_node *st);
/* Deliver to one session's client. */
void      session_send(rsession *rs, const xs_node *st);
/* The same for an already serialized stanza (MUC fan-out, stored offline). */
void      session_send_raw(rsession *rs, const char *xml, size_t len);
/* Rooms (muc.c), issue 16: the occupant's session may be on another node.
 * Known here or in the cluster's directory? */
int       router_session_known(chatd *d, const char *full);
/* st to one session, here or on its node. */
void      router_send_to(chatd *d, const char *full, const xs_node *st);
/* xml (a stanza without 'to') to full: here at once ('to' spliced in), or
 * added to fo for one publish per node (fo NULL: publish now). */
struct cluster_fanout;
void      router_send_raw_to(chatd *d, struct cluster_fanout *fo, const char *full,
                             const char *xml, size_t len, strbuf *scratch);
/* Highest-priority available resource (priority >= 0), or NULL. */
rsession *user_best_session(ruser *u);
/* Deliver st to every available session of u (presence broadcast). */
void      user_send_available(ruser *u, const xs_node *st);

/* ---- roster.c ---- */
/* Run fn once local's roster is loaded (at once if it is). Takes st.
 * Fails closed: if the load fails, fn does not run (nothing is decided or
 * written from a roster that was never read); the stanza is bounced with
 * <error type='wait'><internal-server-error/>, and the next use retries. */
void      roster_with(chatd *d, const char *local, roster_action fn,
                      rsession *origin, xs_node *st);
/* The same, with fail run instead of the bounce when the load fails
 * (u->roster_state is then not ROSTER_LOADED and u->roster is empty). */
void      roster_with_fail(chatd *d, const char *local, roster_action fn,
                           roster_action fail, rsession *origin, xs_node *st);
/* Items in u's roster. */
unsigned  roster_count(const ruser *u);
/* roster_find_or_add within max_roster_items: NULL when adding is refused. */
roster_item *roster_find_or_add_capped(chatd *d, ruser *u, const char *bare);
roster_item *roster_find(ruser *u, const char *bare);
roster_item *roster_find_or_add(ruser *u, const char *bare);
/* Persist item (or its removal) and push it to interested resources. */
void      roster_commit(chatd *d, ruser *u, roster_item *it);
void      roster_remove(chatd *d, ruser *u, const char *bare);
void      roster_iq(chatd *d, rsession *rs, xs_node *st);   /* takes st */
void      roster_user_free(chatd *d, ruser *u);

/* ---- presence.c ---- */
/* The current presence of local's available sessions to `to` (a probe
 * answered for another node, issue 16). */
void      presence_send_current(chatd *d, const char *local, const char *to);
/* A subscription stanza for local's side, sent here by another node. Takes st. */
void      presence_inbound(chatd *d, const char *local, xs_node *st);
/* A presence from a local session (rs) or the server (rs NULL). Takes st. */
void      presence_handle(chatd *d, rsession *rs, xs_node *st);
void      presence_session_gone(chatd *d, rsession *rs);
void      presence_free_session(rsession *rs);

/* ---- offline.c ---- */
/* A message for local with no available resource: kept within the quotas
 * (quota.h); a refusal or a failed store is bounced to the sender. */
void      offline_store(chatd *d, const char *local, const xs_node *st);
/* Hand rs what is stored for its account (at available presence, until
 * it succeeded once for this session). */
void      offline_flush(chatd *d, rsession *rs);
void      offline_forget(rsession *rs);
/* RFC 6121 §3.1.3: an inbound subscription request is kept until the user
 * answers it and shown again at each login. */
void      offline_subin_store(chatd *d, ruser *u, const xs_node *st);
void      offline_subin_clear(chatd *d, ruser *u, const char *contact_bare);
void      offline_subin_flush(chatd *d, rsession *rs);

/* XEP-0082 UTC timestamp, e.g. 2024-05-01T12:00:00Z. */
static inline const char *xmpp_timestamp(char *buf, size_t len, time_t t)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

/* Redis reply callback that only logs errors (fire-and-forget writes). */
void      redis_log_error_cb(struct redisReply *reply, const char *err, void *ud);

#endif
