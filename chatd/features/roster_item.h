/*
 * roster_item: one roster entry, its Redis record and its subscription
 * state machine (RFC 6121 §3). Pure logic, unit tested (test_roster_item).
 *
 * Record format (docs/architecture.md, hash chat:roster:<localpart>,
 * field = contact bare JID):  sub=<none|to|from|both>;ask=<|subscribe>;
 * name=<..>;groups=<g1,g2>.  In values '%', ';', ',' and '=' are written
 * as %XX so names and groups may contain them; unknown keys are ignored.
 */
#ifndef CHATD_ROSTER_ITEM_H
#define CHATD_ROSTER_ITEM_H

#include <stddef.h>
#include "../../common/strbuf.h"

typedef enum { SUB_NONE = 0, SUB_TO = 1, SUB_FROM = 2, SUB_BOTH = 3 } roster_sub;

typedef struct roster_item {
    struct roster_item *next;
    char       *jid;        /* contact's bare JID */
    roster_sub  sub;
    int         ask;        /* we asked to subscribe, no answer yet */
    char       *name;       /* NULL when none */
    char      **groups;
    size_t      ngroups;
} roster_item;

roster_item *roster_item_new(const char *jid);
void         roster_item_free(roster_item *it);
void         roster_item_set_name(roster_item *it, const char *name);  /* NULL/"" clears */
void         roster_item_clear_groups(roster_item *it);
void         roster_item_add_group(roster_item *it, const char *group);

/* Fill sub/ask/name/groups from a record. Returns 0, -1 if malformed. */
int          roster_item_parse(roster_item *it, const char *record);
void         roster_item_format(const roster_item *it, strbuf *out);

const char  *roster_sub_name(roster_sub s);       /* "none", "to", ... */
int          roster_sub_parse(const char *s);     /* -1 if unknown */

/* RFC 6121 §3 subscription rules for one item; type is the presence type
 * ("subscribe", "subscribed", "unsubscribe", "unsubscribed"). Both return
 * 1 when the item changed (persist and push it), 0 when the stanza changes
 * nothing. outbound: the user sent it to the contact (§3.1.2, 3.1.5,
 * 3.2.2, 3.3.2). inbound: the contact sent it to the user (§3.1.6, 3.2.3,
 * 3.3.3); an inbound "subscribed" counts only while our request is
 * pending (ask), otherwise the server ignores it (§3.1.6). */
int          roster_item_outbound(roster_item *it, const char *type);
int          roster_item_inbound(roster_item *it, const char *type);

/* Bits: SUB_TO means we see their presence, SUB_FROM they see ours. */
static inline int roster_sub_has_to(roster_sub s)   { return (s & SUB_TO) != 0; }
static inline int roster_sub_has_from(roster_sub s) { return (s & SUB_FROM) != 0; }
static inline roster_sub roster_sub_with(roster_sub s, roster_sub bit)    { return (roster_sub)(s | bit); }
static inline roster_sub roster_sub_without(roster_sub s, roster_sub bit) { return (roster_sub)(s & ~bit); }

#endif
