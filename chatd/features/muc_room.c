/*
 * muc_room: see muc_room.h.
 */
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include "muc_room.h"

static char *xstrdup(const char *s)
{
    char *d = strdup(s);
    if (!d) abort();
    return d;
}

void muc_set_str(char **field, const char *value)
{
    free(*field);
    *field = (value && *value) ? xstrdup(value) : NULL;
}

muc_room *muc_room_new(const char *jid, unsigned history_cap)
{
    muc_room *r = calloc(1, sizeof(*r));
    if (!r) abort();
    r->jid = xstrdup(jid);
    r->cfg.public_room = 1;
    r->cfg.change_subject = 0;
    r->hist_cap = history_cap;
    if (history_cap) {
        r->hist = calloc(history_cap, sizeof(*r->hist));
        r->hist_len = calloc(history_cap, sizeof(*r->hist_len));
        if (!r->hist || !r->hist_len) abort();
    }
    return r;
}

static void free_occupant(muc_occupant *o)
{
    free(o->nick);
    free(o->jid);
    free(o->bare);
    free(o);
}

void muc_room_free(muc_room *r, void (*free_presence)(void *))
{
    if (!r) return;
    while (r->occupants) {
        muc_occupant *o = r->occupants;
        r->occupants = o->next;
        if (free_presence && o->presence) free_presence(o->presence);
        free_occupant(o);
    }
    while (r->affs) {
        muc_aff_entry *a = r->affs;
        r->affs = a->next;
        free(a->bare);
        free(a);
    }
    while (r->iq_fwd) {
        muc_iq_fwd *f = r->iq_fwd;
        r->iq_fwd = f->next;
        muc_iq_fwd_free(f);
    }
    for (unsigned i = 0; i < r->hist_cap; i++) free(r->hist[i]);
    free(r->hist);
    free(r->hist_len);
    free(r->cfg.name);
    free(r->cfg.description);
    free(r->cfg.password);
    free(r->subject);
    free(r->subject_from);
    free(r->jid);
    free(r);
}

/* ---- occupants ---- */

muc_occupant *muc_find_nick(const muc_room *r, const char *nick)
{
    for (muc_occupant *o = r->occupants; o; o = o->next)
        if (strcmp(o->nick, nick) == 0) return o;
    return NULL;
}

muc_occupant *muc_find_jid(const muc_room *r, const char *full_jid)
{
    for (muc_occupant *o = r->occupants; o; o = o->next)
        if (strcmp(o->jid, full_jid) == 0) return o;
    return NULL;
}

muc_occupant *muc_add_occupant(muc_room *r, const char *nick, const char *full_jid,
                               const char *bare, muc_role role)
{
    muc_occupant *o = calloc(1, sizeof(*o));
    if (!o) abort();
    o->nick = xstrdup(nick);
    o->jid = xstrdup(full_jid);
    o->bare = xstrdup(bare);
    o->role = role;
    o->next = r->occupants;
    r->occupants = o;
    r->noccupants++;
    return o;
}

void muc_remove_occupant(muc_room *r, muc_occupant *occ)
{
    for (muc_occupant **pp = &r->occupants; *pp; pp = &(*pp)->next)
        if (*pp == occ) {
            *pp = occ->next;
            r->noccupants--;
            muc_iq_fwd_forget(r, occ->jid);
            free_occupant(occ);
            return;
        }
}

void muc_rename(muc_occupant *occ, const char *nick)
{
    free(occ->nick);
    occ->nick = xstrdup(nick);
}

/* ---- affiliations and roles ---- */

muc_aff muc_get_aff(const muc_room *r, const char *bare)
{
    for (muc_aff_entry *a = r->affs; a; a = a->next)
        if (strcmp(a->bare, bare) == 0) return a->aff;
    return MUC_AFF_NONE;
}

void muc_set_aff(muc_room *r, const char *bare, muc_aff aff)
{
    for (muc_aff_entry **pp = &r->affs; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->bare, bare) != 0) continue;
        if (aff != MUC_AFF_NONE) { (*pp)->aff = aff; return; }
        muc_aff_entry *a = *pp;
        *pp = a->next;
        free(a->bare);
        free(a);
        return;
    }
    if (aff == MUC_AFF_NONE) return;
    muc_aff_entry *a = calloc(1, sizeof(*a));
    if (!a) abort();
    a->bare = xstrdup(bare);
    a->aff = aff;
    a->next = r->affs;
    r->affs = a;
}

size_t muc_count_aff(const muc_room *r, muc_aff aff)
{
    size_t n = 0;
    for (muc_aff_entry *a = r->affs; a; a = a->next) n += a->aff == aff;
    return n;
}

muc_role muc_default_role(const muc_room *r, muc_aff aff)
{
    switch (aff) {
    case MUC_AFF_OUTCAST: return MUC_ROLE_NONE;
    case MUC_AFF_OWNER:
    case MUC_AFF_ADMIN:   return MUC_ROLE_MODERATOR;
    case MUC_AFF_MEMBER:  return MUC_ROLE_PARTICIPANT;
    default:              return r->cfg.moderated ? MUC_ROLE_VISITOR : MUC_ROLE_PARTICIPANT;
    }
}

const char *muc_join_check(const muc_room *r, const char *bare, const char *full,
                           const char *nick, const char *password)
{
    muc_aff aff = muc_get_aff(r, bare);
    if (aff == MUC_AFF_OUTCAST) return "forbidden";
    if (r->cfg.members_only && aff == MUC_AFF_NONE) return "registration-required";
    muc_occupant *same = muc_find_nick(r, nick);
    if (same && strcmp(same->jid, full) != 0) return "conflict";
    if (r->cfg.max_users && r->noccupants >= r->cfg.max_users && aff < MUC_AFF_ADMIN)
        return "service-unavailable";
    if (r->cfg.password && aff < MUC_AFF_ADMIN &&
        (!password || strcmp(password, r->cfg.password) != 0))
        return "not-authorized";
    return NULL;
}

int muc_may_stay(const muc_room *r, const char *bare)
{
    muc_aff aff = muc_get_aff(r, bare);
    if (aff == MUC_AFF_OUTCAST) return 0;
    return !(r->cfg.members_only && aff == MUC_AFF_NONE);
}

int muc_may_set_subject(const muc_room *r, const muc_occupant *occ)
{
    if (!occ) return 0;
    if (occ->role == MUC_ROLE_MODERATOR) return 1;
    return r->cfg.change_subject && occ->role >= MUC_ROLE_PARTICIPANT;
}

const char *muc_groupchat_check(const muc_room *r, const muc_occupant *occ,
                                int has_subject, int has_body)
{
    (void)has_body;     /* a body does not make a subject acceptable */
    if (!occ) return "not-acceptable";
    if (occ->role < MUC_ROLE_PARTICIPANT) return "forbidden";
    if (has_subject && !muc_may_set_subject(r, occ)) return "forbidden";
    return NULL;
}

const char *muc_error_type(const char *condition)
{
    if (strcmp(condition, "service-unavailable") == 0) return "wait";
    if (strcmp(condition, "conflict") == 0 || strcmp(condition, "item-not-found") == 0)
        return "cancel";
    if (strcmp(condition, "jid-malformed") == 0 || strcmp(condition, "bad-request") == 0 ||
        strcmp(condition, "not-acceptable") == 0)
        return "modify";
    return "auth";
}

int muc_can_set_role(const muc_room *r, const muc_occupant *actor,
                     const muc_occupant *target, muc_role role)
{
    if (!actor || !target || actor->role != MUC_ROLE_MODERATOR) return 0;
    muc_aff a = muc_get_aff(r, actor->bare), t = muc_get_aff(r, target->bare);
    if (role == MUC_ROLE_MODERATOR || target->role == MUC_ROLE_MODERATOR) {
        /* granting or revoking moderator: admins and owners only */
        if (a < MUC_AFF_ADMIN) return 0;
    }
    /* nobody touches the role of someone with a higher or equal admin rank */
    if (t >= MUC_AFF_ADMIN && t >= a) return 0;
    return 1;
}

int muc_can_set_aff(const muc_room *r, muc_aff actor, const char *target_bare, muc_aff aff)
{
    muc_aff cur = muc_get_aff(r, target_bare);
    if (actor == MUC_AFF_OWNER) {
        if (cur == MUC_AFF_OWNER && aff != MUC_AFF_OWNER && muc_count_aff(r, MUC_AFF_OWNER) <= 1)
            return 0;   /* keep one owner */
        return 1;
    }
    if (actor == MUC_AFF_ADMIN)
        return cur < MUC_AFF_ADMIN && aff < MUC_AFF_ADMIN;
    return 0;
}

static const char *aff_names[] = { "outcast", "none", "member", "admin", "owner" };
static const char *role_names[] = { "none", "visitor", "participant", "moderator" };

const char *muc_aff_name(muc_aff a) { return aff_names[a + 1]; }
const char *muc_role_name(muc_role r) { return role_names[r]; }

int muc_aff_parse(const char *s, muc_aff *out)
{
    for (int i = 0; s && i < 5; i++)
        if (strcmp(s, aff_names[i]) == 0) { *out = (muc_aff)(i - 1); return 0; }
    return -1;
}

int muc_role_parse(const char *s, muc_role *out)
{
    for (int i = 0; s && i < 4; i++)
        if (strcmp(s, role_names[i]) == 0) { *out = (muc_role)i; return 0; }
    return -1;
}

/* ---- history ---- */

void muc_history_push(muc_room *r, const char *xml, size_t len)
{
    if (!r->hist_cap) return;
    unsigned slot = (r->hist_start + r->hist_count) % r->hist_cap;
    if (r->hist_count == r->hist_cap) {          /* full: overwrite oldest */
        slot = r->hist_start;
        r->hist_start = (r->hist_start + 1) % r->hist_cap;
    } else {
        r->hist_count++;
    }
    free(r->hist[slot]);
    r->hist[slot] = malloc(len + 1);
    if (!r->hist[slot]) abort();
    memcpy(r->hist[slot], xml, len);
    r->hist[slot][len] = '\0';
    r->hist_len[slot] = len;
}

const char *muc_history_get(const muc_room *r, unsigned i, size_t *len)
{
    if (i >= r->hist_count) return NULL;
    unsigned slot = (r->hist_start + i) % r->hist_cap;
    if (len) *len = r->hist_len[slot];
    return r->hist[slot];
}

/* ---- fan-out ---- */

void muc_splice_to(const char *xml, size_t len, const char *to, strbuf *out)
{
    size_t name_end = 1;
    while (name_end < len && xml[name_end] != ' ' && xml[name_end] != '>' &&
           xml[name_end] != '/' && xml[name_end] != '\t' && xml[name_end] != '\n')
        name_end++;
    sb_append(out, xml, name_end);
    sb_puts(out, " to='");
    sb_put_xml_escaped(out, to, strlen(to));
    sb_putc(out, '\'');
    sb_append(out, xml + name_end, len - name_end);
}

/* ---- joins and occupant iqs ---- */

muc_pres_kind muc_presence_kind(const muc_room *r, const char *full, const char *nick,
                                int has_muc_x)
{
    const muc_occupant *occ = muc_find_jid(r, full);
    if (!occ) return MUC_PRES_JOIN;
    if (strcmp(occ->nick, nick) != 0) return MUC_PRES_NICK_CHANGE;
    /* Same JID, same nick, <x/> again: the client lost track of the room
     * (a page reload resuming its BOSH session, a failed self-ping) and
     * asks for the room state; it is still the one occupant it was. */
    return has_muc_x ? MUC_PRES_REJOIN : MUC_PRES_UPDATE;
}

muc_iq_action muc_occupant_iq_action(const muc_room *r, const char *sender,
                                     const char *nick, int is_ping)
{
    const muc_occupant *self = muc_find_jid(r, sender);
    if (!self) return MUC_IQ_NOT_ACCEPTABLE;
    if (is_ping && strcmp(self->nick, nick) == 0) return MUC_IQ_SELF_PING_OK;
    if (!muc_find_nick(r, nick)) return MUC_IQ_ITEM_NOT_FOUND;
    return MUC_IQ_FORWARD;
}

void muc_iq_fwd_free(muc_iq_fwd *f)
{
    if (!f) return;
    free(f->id);
    free(f->orig_id);
    free(f->sender);
    free(f->sender_nick);
    free(f->target);
    free(f);
}

const char *muc_iq_fwd_add(muc_room *r, const char *sender, const char *sender_nick,
                           const char *target, const char *orig_id)
{
    if (r->niq_fwd >= MUC_IQ_FWD_MAX) {          /* drop the oldest (list tail) */
        muc_iq_fwd **pp = &r->iq_fwd;
        while ((*pp)->next) pp = &(*pp)->next;
        muc_iq_fwd_free(*pp);
        *pp = NULL;
        r->niq_fwd--;
    }
    muc_iq_fwd *f = calloc(1, sizeof(*f));
    if (!f) abort();
    /* Our own id, unique in the room: two senders may well use the same
     * id towards one target, and the target's answer must find its way. */
    char id[32];
    snprintf(id, sizeof(id), "muc%lx", ++r->iq_seq);
    f->id = xstrdup(id);
    f->orig_id = orig_id ? xstrdup(orig_id) : NULL;
    f->sender = xstrdup(sender);
    f->sender_nick = xstrdup(sender_nick);
    f->target = xstrdup(target);
    f->next = r->iq_fwd;
    r->iq_fwd = f;
    r->niq_fwd++;
    return f->id;
}

muc_iq_fwd *muc_iq_fwd_take(muc_room *r, const char *from, const char *to_nick,
                            const char *id)
{
    if (!from || !to_nick || !id) return NULL;
    for (muc_iq_fwd **pp = &r->iq_fwd; *pp; pp = &(*pp)->next) {
        muc_iq_fwd *f = *pp;
        if (strcmp(f->id, id) != 0) continue;
        if (strcmp(f->target, from) != 0 || strcmp(f->sender_nick, to_nick) != 0)
            return NULL;                        /* someone else's answer: forged */
        *pp = f->next;
        r->niq_fwd--;
        return f;
    }
    return NULL;
}

void muc_iq_fwd_forget(muc_room *r, const char *full_jid)
{
    for (muc_iq_fwd **pp = &r->iq_fwd; *pp; ) {
        muc_iq_fwd *f = *pp;
        if (strcmp(f->sender, full_jid) == 0 || strcmp(f->target, full_jid) == 0) {
            *pp = f->next;
            r->niq_fwd--;
            muc_iq_fwd_free(f);
        } else {
            pp = &f->next;
        }
    }
}
