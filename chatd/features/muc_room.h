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
#include "../../common/strbuf.h"

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

/* An iq forwarded from one occupant to another (XEP-0045, XEP-0410):
 * the target sees room/<sender nick> and our id; its answer is accepted
 * only from the target's real JID, to sender_nick, with that id. */
typedef struct muc_iq_fwd {
    struct muc_iq_fwd *next;
    char *id;            /* the id we put on the forwarded iq */
    char *orig_id;       /* the sender's own id (NULL: it sent none) */
    char *sender;        /* real full JIDs */
    char *sender_nick;   /* what the target saw in 'from' */
    char *target;
} muc_iq_fwd;

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
    /* forwarded iqs awaiting an answer, newest first; at most MUC_IQ_FWD_MAX */
    muc_iq_fwd     *iq_fwd;
    unsigned        niq_fwd;
    unsigned long   iq_seq;
} muc_room;

#define MUC_IQ_FWD_MAX 256

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
/* May someone with this bare JID stay in the room as it is configured now?
 * No for outcasts, and for non-members of a members-only room: an
 * affiliation change or the room becoming members-only removes them
 * (XEP-0045 §9.4, §9.9, §10.2: status 301 / 321 / 322). */
int           muc_may_stay(const muc_room *r, const char *bare);

/* A groupchat message from occ (NULL: not an occupant) to the room. NULL
 * means it goes out; otherwise the error condition. Only a <subject/>
 * without <body/> is a subject change (XEP-0045 §8.1), but a <subject/>
 * is refused from anyone who may not change it, body or not: clients that
 * read any <subject/> as the topic must not be fooled. */
const char   *muc_groupchat_check(const muc_room *r, const muc_occupant *occ,
                                  int has_subject, int has_body);
int           muc_may_set_subject(const muc_room *r, const muc_occupant *occ);

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

/* Presence to room/nick from a real full JID (type available), XEP-0045 7.2,
 * 7.6: a new occupant joins; an occupant sending <x xmlns=muc/> again under
 * the same nick rejoins (it gets the room state again, it is not a second
 * occupant); under another nick it changes nick (303); otherwise it is a
 * status update. */
typedef enum {
    MUC_PRES_JOIN, MUC_PRES_REJOIN, MUC_PRES_NICK_CHANGE, MUC_PRES_UPDATE
} muc_pres_kind;
muc_pres_kind muc_presence_kind(const muc_room *r, const char *full, const char *nick,
                                int has_muc_x);

/* iq get/set from real JID `sender` to room/<nick>. */
typedef enum {
    MUC_IQ_FORWARD,          /* to the occupant's real JID */
    MUC_IQ_SELF_PING_OK,     /* XEP-0410: sender is joined as nick; answer result */
    MUC_IQ_NOT_ACCEPTABLE,   /* sender is not an occupant (XEP-0410 §3, XEP-0045) */
    MUC_IQ_ITEM_NOT_FOUND    /* no such nick */
} muc_iq_action;
muc_iq_action muc_occupant_iq_action(const muc_room *r, const char *sender,
                                     const char *nick, int is_ping);

/* Remember a forwarded iq; returns the id to put on it (owned by the room).
 * The oldest entry goes when MUC_IQ_FWD_MAX are pending. */
const char   *muc_iq_fwd_add(muc_room *r, const char *sender, const char *sender_nick,
                             const char *target, const char *orig_id);
/* The answer (result/error) from real JID `from` to room/<to_nick> with id:
 * the matching entry, unlinked (free it with muc_iq_fwd_free), or NULL if
 * we forwarded no such iq (a forged or late answer). */
muc_iq_fwd   *muc_iq_fwd_take(muc_room *r, const char *from, const char *to_nick,
                              const char *id);
void          muc_iq_fwd_free(muc_iq_fwd *f);
/* Drop entries sent by or to full_jid (it left the room). */
void          muc_iq_fwd_forget(muc_room *r, const char *full_jid);

/* Copy xml (one serialized element with no 'to') to out with
 * to='<to>' inserted after the element name: fan-out serializes once. */
void          muc_splice_to(const char *xml, size_t len, const char *to, strbuf *out);

#endif
