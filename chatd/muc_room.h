/*
 * muc_room: the rules of one XEP-0045 room, without any I/O.
 *
 * Occupants (nick <-> real JID, role), affiliations by bare JID, the
 * room configuration, the join checks, who may kick/ban/grant what, and
 * the history ring (serialized messages, oldest first). muc.c does the
 * stanzas, Redis and delivery; tests/unit/test_muc.c drives this file.
 */
#ifndef CHATD_MUC_ROOM_H
#define CHATD_MUC_ROOM_H

#include <stddef.h>
#include "../common/strbuf.h"

typedef enum {
    MUC_AFF_OUTCAST = -1, MUC_AFF_NONE = 0, MUC_AFF_MEMBER = 1,
    MUC_AFF_ADMIN = 2, MUC_AFF_OWNER = 3
} muc_aff;

typedef enum {
    MUC_ROLE_NONE = 0, MUC_ROLE_VISITOR = 1, MUC_ROLE_PARTICIPANT = 2,
    MUC_ROLE_MODERATOR = 3
} muc_role;

typedef struct muc_occupant {
    struct muc_occupant *next;
    char     *nick;
    char     *jid;           /* real full JID */
    char     *bare;          /* real bare JID */
    muc_role  role;
    void     *presence;      /* muc.c: last presence payload (xs_node *) */
} muc_occupant;

typedef struct muc_aff_entry {
    struct muc_aff_entry *next;
    char    *bare;
    muc_aff  aff;
} muc_aff_entry;

typedef struct muc_config {
    char     *name;          /* NULL: none */
    char     *description;
    char     *password;      /* NULL: none */
    int       persistent, public_room, members_only, moderated;
    int       change_subject;   /* participants may change the subject */
    int       whois_anyone;     /* non-anonymous */
    unsigned  max_users;        /* 0 = unlimited */
} muc_config;

typedef struct muc_room {
    char           *jid;             /* room@muc */
    muc_config      cfg;
    muc_occupant   *occupants;       /* newest first */
    size_t          noccupants;
    muc_aff_entry  *affs;
    char           *subject, *subject_from;   /* NULL when never set */
    /* history ring */
    char          **hist;
    size_t         *hist_len;
    unsigned        hist_cap, hist_start, hist_count;
} muc_room;

muc_room     *muc_room_new(const char *jid, unsigned history_cap);
/* Frees occupants too; free_presence (may be NULL) releases their payload. */
void          muc_room_free(muc_room *r, void (*free_presence)(void *));

muc_occupant *muc_find_nick(const muc_room *r, const char *nick);
muc_occupant *muc_find_jid(const muc_room *r, const char *full_jid);
muc_occupant *muc_add_occupant(muc_room *r, const char *nick, const char *full_jid,
                               const char *bare, muc_role role);
/* Unlink occ (caller releases occ->presence first) and free it. */
void          muc_remove_occupant(muc_room *r, muc_occupant *occ);
void          muc_rename(muc_occupant *occ, const char *nick);

muc_aff       muc_get_aff(const muc_room *r, const char *bare);
void          muc_set_aff(muc_room *r, const char *bare, muc_aff aff);   /* NONE removes */
size_t        muc_count_aff(const muc_room *r, muc_aff aff);
muc_role      muc_default_role(const muc_room *r, muc_aff aff);

/* XEP-0045 §7.2 entry checks, in the spec's order. NULL means the user may
 * join; otherwise the RFC 6120 error condition to answer with. */
const char   *muc_join_check(const muc_room *r, const char *bare, const char *full,
                             const char *nick, const char *password);
/* The error type that goes with a join condition ("auth", "cancel", "wait"). */
const char   *muc_error_type(const char *condition);

/* May actor (an occupant) set target's role to role? */
int           muc_can_set_role(const muc_room *r, const muc_occupant *actor,
                               const muc_occupant *target, muc_role role);
/* May someone with affiliation actor change target from its current
 * affiliation to aff? Keeps at least one owner. */
int           muc_can_set_aff(const muc_room *r, muc_aff actor, const char *target_bare,
                              muc_aff aff);

const char   *muc_aff_name(muc_aff a);
const char   *muc_role_name(muc_role r);
int           muc_aff_parse(const char *s, muc_aff *out);     /* 0 or -1 */
int           muc_role_parse(const char *s, muc_role *out);

/* History: keeps the last hist_cap messages. */
void          muc_history_push(muc_room *r, const char *xml, size_t len);
/* i-th oldest of the last `count` entries. */
const char   *muc_history_get(const muc_room *r, unsigned i, size_t *len);

void          muc_set_str(char **field, const char *value);   /* NULL/"" clears */

/* Copy xml (one serialized element with no 'to') to out with
 * to='<to>' inserted after the element name: fan-out serializes once. */
void          muc_splice_to(const char *xml, size_t len, const char *to, strbuf *out);

#endif
