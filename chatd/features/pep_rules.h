/*
 * pep_rules: the pure rules of XEP-0163 PEP nodes, apart from Redis and
 * sessions so that unit tests drive them (tests/unit/test_pep_rules.c).
 *
 * A node's configuration is stored as one canonical string,
 * ";access_model=presence;max_items=1;send_last_published_item=on_sub_and_presence;"
 * (leading and trailing ';', fixed field order) so that the publish
 * script in Redis can check a publish-options precondition by substring:
 * each "k=v" the publisher asked for must appear as ";k=v;" in the stored
 * string (XEP-0060 §7.1.5).
 */
#ifndef CHATD_PEP_RULES_H
#define CHATD_PEP_RULES_H

#include <stddef.h>
#include "../../common/xml_stream.h"

#define NS_PUBSUB        "http://jabber.org/protocol/pubsub"
#define NS_PUBSUB_OWNER  "http://jabber.org/protocol/pubsub#owner"
#define NS_PUBSUB_EVENT  "http://jabber.org/protocol/pubsub#event"
#define NS_PUBSUB_ERRORS "http://jabber.org/protocol/pubsub#errors"
#define NS_XDATA         "jabber:x:data"

enum { PEP_ACCESS_OPEN = 0, PEP_ACCESS_PRESENCE, PEP_ACCESS_WHITELIST };
enum { PEP_SEND_NEVER = 0, PEP_SEND_ON_SUB, PEP_SEND_ON_SUB_AND_PRESENCE };

/* Which fields a form set (pep_config.mask). */
enum { PEP_F_ACCESS = 1, PEP_F_MAX = 2, PEP_F_SEND_LAST = 4 };

typedef struct pep_config {
    int      access;        /* PEP_ACCESS_* */
    unsigned max_items;     /* 1 .. the server's pep_max_items */
    int      send_last;     /* PEP_SEND_* */
    unsigned mask;          /* PEP_F_*: fields a form gave */
} pep_config;

#define PEP_CONFIG_MAX 128  /* longest canonical string, with its NUL */

/* XEP-0163 defaults for a node created by a first publish: presence
 * access, one item, last item on subscription and presence; bookmarks
 * (XEP-0402 and XEP-0048 on PEP) default to whitelist, so a client that
 * forgets publish-options never shows them to contacts. */
void pep_config_default(const char *node, unsigned max_items_cap, pep_config *c);

/* Canonical string of c: every field, or (only_mask) only those in
 * c->mask (the precondition the publish script checks). */
void pep_config_format(const pep_config *c, int only_mask, char *buf, size_t len);
/* Parse a canonical string (lenient: missing fields keep c's values). */
void pep_config_parse(const char *s, pep_config *c);

/* Read a data form (publish-options or node_config submit) into c,
 * setting c->mask for each field given. pubsub#max_items 'max' is the cap.
 * 0 ok; -1 a value this service cannot meet (unknown access model,
 * max_items over the cap or not a number, persist_items false): the
 * caller answers conflict/precondition-not-met or not-acceptable.
 * Fields it does not know are ignored. */
int  pep_form_read(const xs_node *x, unsigned max_items_cap, pep_config *c);

/* May a reader see a node's items? is_owner: the account itself;
 * has_presence_sub: the owner's roster gives the reader subscription
 * 'from' or 'both' (XEP-0060 §4.5 access models). */
int  pep_access_allows(int access, int is_owner, int has_presence_sub);

const char *pep_access_name(int access);
const char *pep_send_last_name(int send_last);

/* A node name we store: 1..255 bytes, none of the bytes that would make
 * the Redis key or the config string ambiguous (space, control). */
int  pep_node_name_ok(const char *node);

#endif
