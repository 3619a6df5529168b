/* test_muc: room rules without sockets (muc_room.c). */
#include <string.h>
#include <stdlib.h>
#include "unit.h"
#include "../../chatd/features/muc_room.h"

static void test_occupants_and_join(void)
{
    muc_room *r = muc_room_new("lobby@conference.localhost", 3);
    CHECK(muc_join_check(r, "alice@localhost", "alice@localhost/a", "Alice", NULL) == NULL);
    muc_set_aff(r, "alice@localhost", MUC_AFF_OWNER);
    muc_occupant *a = muc_add_occupant(r, "Alice", "alice@localhost/a", "alice@localhost",
                                       muc_default_role(r, MUC_AFF_OWNER));
    CHECK(a->role == MUC_ROLE_MODERATOR);
    CHECK(r->noccupants == 1);

    /* nick taken by someone else: conflict; same full JID: fine (rejoin) */
    CHECK_STR(muc_join_check(r, "bob@localhost", "bob@localhost/b", "Alice", NULL), "conflict");
    CHECK(muc_join_check(r, "alice@localhost", "alice@localhost/a", "Alice", NULL) == NULL);
    CHECK(muc_join_check(r, "bob@localhost", "bob@localhost/b", "Bob", NULL) == NULL);
    muc_occupant *b = muc_add_occupant(r, "Bob", "bob@localhost/b", "bob@localhost",
                                       muc_default_role(r, MUC_AFF_NONE));
    CHECK(b->role == MUC_ROLE_PARTICIPANT);
    CHECK(muc_find_nick(r, "Bob") == b);
    CHECK(muc_find_jid(r, "alice@localhost/a") == a);
    CHECK(muc_find_jid(r, "alice@localhost/other") == NULL);

    muc_rename(b, "Robert");
    CHECK(muc_find_nick(r, "Bob") == NULL);
    CHECK(muc_find_nick(r, "Robert") == b);

    /* password, members-only, max users, banned, in the spec's order */
    muc_set_str(&r->cfg.password, "secret");
    CHECK_STR(muc_join_check(r, "carol@localhost", "carol@localhost/c", "Carol", NULL), "not-authorized");
    CHECK_STR(muc_join_check(r, "carol@localhost", "carol@localhost/c", "Carol", "wrong"), "not-authorized");
    CHECK(muc_join_check(r, "carol@localhost", "carol@localhost/c", "Carol", "secret") == NULL);
    r->cfg.max_users = 2;
    CHECK_STR(muc_join_check(r, "carol@localhost", "carol@localhost/c", "Carol", "secret"), "service-unavailable");
    muc_set_aff(r, "dave@localhost", MUC_AFF_ADMIN);     /* admins get in anyway */
    CHECK(muc_join_check(r, "dave@localhost", "dave@localhost/d", "Dave", NULL) == NULL);
    r->cfg.members_only = 1;
    CHECK_STR(muc_join_check(r, "carol@localhost", "carol@localhost/c", "Carol", "secret"), "registration-required");
    muc_set_aff(r, "carol@localhost", MUC_AFF_OUTCAST);
    CHECK_STR(muc_join_check(r, "carol@localhost", "carol@localhost/c", "Carol", "secret"), "forbidden");
    CHECK_STR(muc_error_type("forbidden"), "auth");
    CHECK_STR(muc_error_type("conflict"), "cancel");
    CHECK_STR(muc_error_type("service-unavailable"), "wait");
    CHECK_STR(muc_error_type("registration-required"), "auth");

    muc_remove_occupant(r, b);
    CHECK(r->noccupants == 1);
    CHECK(muc_find_nick(r, "Robert") == NULL);
    muc_room_free(r, NULL);
}

static void test_affiliations_and_roles(void)
{
    muc_room *r = muc_room_new("r@m", 0);
    muc_set_aff(r, "o@x", MUC_AFF_OWNER);
    muc_set_aff(r, "a@x", MUC_AFF_ADMIN);
    muc_set_aff(r, "m@x", MUC_AFF_MEMBER);
    CHECK(muc_get_aff(r, "m@x") == MUC_AFF_MEMBER);
    CHECK(muc_get_aff(r, "nobody@x") == MUC_AFF_NONE);
    muc_set_aff(r, "m@x", MUC_AFF_NONE);
    CHECK(muc_get_aff(r, "m@x") == MUC_AFF_NONE);
    CHECK(muc_count_aff(r, MUC_AFF_OWNER) == 1);

    /* owner can do anything except remove the last owner */
    CHECK(muc_can_set_aff(r, MUC_AFF_OWNER, "a@x", MUC_AFF_OWNER));
    CHECK(!muc_can_set_aff(r, MUC_AFF_OWNER, "o@x", MUC_AFF_ADMIN));
    /* admin: only below admin */
    CHECK(muc_can_set_aff(r, MUC_AFF_ADMIN, "u@x", MUC_AFF_OUTCAST));
    CHECK(muc_can_set_aff(r, MUC_AFF_ADMIN, "u@x", MUC_AFF_MEMBER));
    CHECK(!muc_can_set_aff(r, MUC_AFF_ADMIN, "u@x", MUC_AFF_ADMIN));
    CHECK(!muc_can_set_aff(r, MUC_AFF_ADMIN, "o@x", MUC_AFF_OUTCAST));
    CHECK(!muc_can_set_aff(r, MUC_AFF_MEMBER, "u@x", MUC_AFF_OUTCAST));

    muc_occupant *o = muc_add_occupant(r, "O", "o@x/1", "o@x", MUC_ROLE_MODERATOR);
    muc_occupant *a = muc_add_occupant(r, "A", "a@x/1", "a@x", MUC_ROLE_MODERATOR);
    muc_occupant *u = muc_add_occupant(r, "U", "u@x/1", "u@x", MUC_ROLE_PARTICIPANT);
    muc_occupant *v = muc_add_occupant(r, "V", "v@x/1", "v@x", MUC_ROLE_PARTICIPANT);
    CHECK(muc_can_set_role(r, a, u, MUC_ROLE_NONE));          /* kick */
    CHECK(muc_can_set_role(r, a, u, MUC_ROLE_VISITOR));       /* revoke voice */
    CHECK(!muc_can_set_role(r, u, v, MUC_ROLE_NONE));         /* not a moderator */
    CHECK(!muc_can_set_role(r, a, o, MUC_ROLE_NONE));         /* admin cannot kick owner */
    CHECK(muc_can_set_role(r, o, u, MUC_ROLE_MODERATOR));
    u->role = MUC_ROLE_MODERATOR;                             /* a participant made moderator */
    CHECK(!muc_can_set_role(r, u, v, MUC_ROLE_MODERATOR));    /* cannot grant moderator */
    CHECK(muc_can_set_role(r, u, v, MUC_ROLE_NONE));          /* but can kick */
    CHECK(!muc_can_set_role(r, u, a, MUC_ROLE_NONE));         /* not an admin */

    r->cfg.moderated = 1;
    CHECK(muc_default_role(r, MUC_AFF_NONE) == MUC_ROLE_VISITOR);
    CHECK(muc_default_role(r, MUC_AFF_MEMBER) == MUC_ROLE_PARTICIPANT);
    CHECK(muc_default_role(r, MUC_AFF_OUTCAST) == MUC_ROLE_NONE);

    muc_aff af;
    muc_role ro;
    CHECK(muc_aff_parse("outcast", &af) == 0 && af == MUC_AFF_OUTCAST);
    CHECK(muc_aff_parse("king", &af) < 0);
    CHECK(muc_role_parse("visitor", &ro) == 0 && ro == MUC_ROLE_VISITOR);
    CHECK_STR(muc_aff_name(MUC_AFF_OWNER), "owner");
    CHECK_STR(muc_role_name(MUC_ROLE_PARTICIPANT), "participant");
    muc_room_free(r, NULL);
}

static void test_history(void)
{
    muc_room *r = muc_room_new("r@m", 3);
    size_t len;
    CHECK(muc_history_get(r, 0, &len) == NULL);
    muc_history_push(r, "<m1/>", 5);
    muc_history_push(r, "<m2/>", 5);
    CHECK(r->hist_count == 2);
    CHECK_STR(muc_history_get(r, 0, &len), "<m1/>");
    CHECK(len == 5);
    muc_history_push(r, "<m3/>", 5);
    muc_history_push(r, "<m4/>", 5);          /* drops m1 */
    CHECK(r->hist_count == 3);
    CHECK_STR(muc_history_get(r, 0, NULL), "<m2/>");
    CHECK_STR(muc_history_get(r, 1, NULL), "<m3/>");
    CHECK_STR(muc_history_get(r, 2, NULL), "<m4/>");
    CHECK(muc_history_get(r, 3, NULL) == NULL);
    muc_room_free(r, NULL);

    muc_room *none = muc_room_new("r@m", 0);
    muc_history_push(none, "<m/>", 4);
    CHECK(none->hist_count == 0);
    muc_room_free(none, NULL);
}

static void test_splice(void)
{
    strbuf sb = STRBUF_INIT;
    const char *xml = "<message xmlns='jabber:client' from='r@m/n' type='groupchat'><body>hi</body></message>";
    muc_splice_to(xml, strlen(xml), "bob@localhost/x", &sb);
    CHECK_STR(sb.data, "<message to='bob@localhost/x' xmlns='jabber:client' from='r@m/n' "
                       "type='groupchat'><body>hi</body></message>");
    sb_reset(&sb);
    muc_splice_to("<presence/>", 11, "a'b@x", &sb);
    CHECK_STR(sb.data, "<presence to='a&apos;b@x'/>");
    sb_free(&sb);
}

/* Join, rejoin (same JID, same nick, <x/> again), nick change, update. */
static void test_presence_kind(void)
{
    muc_room *r = muc_room_new("lobby@conference.localhost", 3);
    CHECK(muc_presence_kind(r, "bob@localhost/web", "bob", 1) == MUC_PRES_JOIN);
    muc_add_occupant(r, "bob", "bob@localhost/web", "bob@localhost", MUC_ROLE_PARTICIPANT);
    CHECK(muc_presence_kind(r, "bob@localhost/web", "bob", 1) == MUC_PRES_REJOIN);
    CHECK(muc_presence_kind(r, "bob@localhost/web", "bob", 0) == MUC_PRES_UPDATE);
    CHECK(muc_presence_kind(r, "bob@localhost/web", "robert", 1) == MUC_PRES_NICK_CHANGE);
    CHECK(muc_presence_kind(r, "bob@localhost/web", "robert", 0) == MUC_PRES_NICK_CHANGE);
    /* another resource of the same user is another occupant */
    CHECK(muc_presence_kind(r, "bob@localhost/phone", "bob", 1) == MUC_PRES_JOIN);
    /* the rejoin passes the entry checks: the nick is its own, no conflict */
    CHECK(muc_join_check(r, "bob@localhost", "bob@localhost/web", "bob", NULL) == NULL);
    CHECK(r->noccupants == 1);
    muc_room_free(r, NULL);
}

/* XEP-0410 self-ping and iqs to occupants. */
static void test_occupant_iq_action(void)
{
    muc_room *r = muc_room_new("lobby@conference.localhost", 3);
    muc_add_occupant(r, "alice", "alice@localhost/a", "alice@localhost", MUC_ROLE_PARTICIPANT);
    muc_add_occupant(r, "bob", "bob@localhost/b", "bob@localhost", MUC_ROLE_PARTICIPANT);
    CHECK(muc_occupant_iq_action(r, "bob@localhost/b", "bob", 1) == MUC_IQ_SELF_PING_OK);
    /* not joined (another resource, or gone): not-acceptable, so it rejoins */
    CHECK(muc_occupant_iq_action(r, "bob@localhost/other", "bob", 1) == MUC_IQ_NOT_ACCEPTABLE);
    CHECK(muc_occupant_iq_action(r, "carol@localhost/c", "alice", 0) == MUC_IQ_NOT_ACCEPTABLE);
    /* a ping or vCard to someone else is theirs to answer */
    CHECK(muc_occupant_iq_action(r, "bob@localhost/b", "alice", 1) == MUC_IQ_FORWARD);
    CHECK(muc_occupant_iq_action(r, "bob@localhost/b", "alice", 0) == MUC_IQ_FORWARD);
    /* a non-ping iq to oneself goes to oneself */
    CHECK(muc_occupant_iq_action(r, "bob@localhost/b", "bob", 0) == MUC_IQ_FORWARD);
    CHECK(muc_occupant_iq_action(r, "bob@localhost/b", "nobody", 0) == MUC_IQ_ITEM_NOT_FOUND);
    muc_remove_occupant(r, muc_find_jid(r, "bob@localhost/b"));
    CHECK(muc_occupant_iq_action(r, "bob@localhost/b", "bob", 1) == MUC_IQ_NOT_ACCEPTABLE);
    muc_room_free(r, NULL);
}

/* Forwarded iqs: only the target's answer, to the sender's nick, with our
 * id, goes back; each answer once; leaving drops what is pending. */
static void test_iq_forwarding(void)
{
    muc_room *r = muc_room_new("lobby@conference.localhost", 3);
    muc_add_occupant(r, "alice", "alice@localhost/a", "alice@localhost", MUC_ROLE_PARTICIPANT);
    muc_add_occupant(r, "bob", "bob@localhost/b", "bob@localhost", MUC_ROLE_PARTICIPANT);
    muc_add_occupant(r, "eve", "eve@localhost/e", "eve@localhost", MUC_ROLE_PARTICIPANT);

    char *id1 = strdup(muc_iq_fwd_add(r, "bob@localhost/b", "bob", "alice@localhost/a", "v1"));
    char *id2 = strdup(muc_iq_fwd_add(r, "eve@localhost/e", "eve", "alice@localhost/a", "v1"));
    CHECK(strcmp(id1, id2) != 0);           /* same sender id, distinct ids of ours */
    CHECK(r->niq_fwd == 2);

    /* forged: eve answers what was sent to alice; wrong nick; unknown id */
    CHECK(muc_iq_fwd_take(r, "eve@localhost/e", "bob", id1) == NULL);
    CHECK(muc_iq_fwd_take(r, "alice@localhost/a", "eve", id1) == NULL);
    CHECK(muc_iq_fwd_take(r, "alice@localhost/a", "bob", "v1") == NULL);
    CHECK(r->niq_fwd == 2);

    muc_iq_fwd *f = muc_iq_fwd_take(r, "alice@localhost/a", "bob", id1);
    CHECK(f != NULL);
    if (f) {
        CHECK_STR(f->sender, "bob@localhost/b");
        CHECK_STR(f->orig_id, "v1");
    }
    muc_iq_fwd_free(f);
    CHECK(muc_iq_fwd_take(r, "alice@localhost/a", "bob", id1) == NULL);   /* once */
    CHECK(r->niq_fwd == 1);

    /* eve leaves: her pending iq is forgotten */
    muc_remove_occupant(r, muc_find_jid(r, "eve@localhost/e"));
    CHECK(r->niq_fwd == 0);
    CHECK(muc_iq_fwd_take(r, "alice@localhost/a", "eve", id2) == NULL);

    /* bounded: the oldest goes */
    char *first = strdup(muc_iq_fwd_add(r, "bob@localhost/b", "bob", "alice@localhost/a", NULL));
    for (unsigned i = 0; i < MUC_IQ_FWD_MAX; i++)
        muc_iq_fwd_add(r, "bob@localhost/b", "bob", "alice@localhost/a", "x");
    CHECK(r->niq_fwd == MUC_IQ_FWD_MAX);
    CHECK(muc_iq_fwd_take(r, "alice@localhost/a", "bob", first) == NULL);
    free(id1);
    free(id2);
    free(first);
    muc_room_free(r, NULL);     /* frees what is still pending */
}

/* Who may stay after an affiliation or configuration change (XEP-0045
 * §9.4, §9.9, §10.2), and who may send a <subject/> (§8.1). */
static void test_stay_and_subject(void)
{
    muc_room *r = muc_room_new("r@m", 0);
    muc_set_aff(r, "o@x", MUC_AFF_OWNER);
    muc_set_aff(r, "m@x", MUC_AFF_MEMBER);
    CHECK(muc_may_stay(r, "n@x"));                 /* open room: anyone */
    muc_set_aff(r, "b@x", MUC_AFF_OUTCAST);
    CHECK(!muc_may_stay(r, "b@x"));
    r->cfg.members_only = 1;
    CHECK(!muc_may_stay(r, "n@x"));                /* 322 */
    CHECK(muc_may_stay(r, "m@x"));
    CHECK(muc_may_stay(r, "o@x"));
    muc_set_aff(r, "m@x", MUC_AFF_NONE);           /* membership revoked: 321 */
    CHECK(!muc_may_stay(r, "m@x"));

    muc_occupant *o = muc_add_occupant(r, "o", "o@x/1", "o@x", MUC_ROLE_MODERATOR);
    muc_occupant *p = muc_add_occupant(r, "p", "p@x/1", "p@x", MUC_ROLE_PARTICIPANT);
    muc_occupant *v = muc_add_occupant(r, "v", "v@x/1", "v@x", MUC_ROLE_VISITOR);
    CHECK(muc_groupchat_check(r, p, 0, 1) == NULL);
    CHECK_STR(muc_groupchat_check(r, NULL, 0, 1), "not-acceptable");
    CHECK_STR(muc_groupchat_check(r, v, 0, 1), "forbidden");
    /* change_subject off: only moderators, with or without a body */
    CHECK(muc_groupchat_check(r, o, 1, 0) == NULL);
    CHECK(muc_groupchat_check(r, o, 1, 1) == NULL);
    CHECK_STR(muc_groupchat_check(r, p, 1, 0), "forbidden");
    CHECK_STR(muc_groupchat_check(r, p, 1, 1), "forbidden");
    r->cfg.change_subject = 1;
    CHECK(muc_groupchat_check(r, p, 1, 0) == NULL);
    CHECK(muc_groupchat_check(r, p, 1, 1) == NULL);
    CHECK_STR(muc_groupchat_check(r, v, 1, 1), "forbidden");   /* no voice */
    CHECK(!muc_may_set_subject(r, v));
    CHECK(!muc_may_set_subject(r, NULL));
    muc_room_free(r, NULL);
}

int main(void)
{
    test_stay_and_subject();
    test_presence_kind();
    test_occupant_iq_action();
    test_iq_forwarding();
    test_occupants_and_join();
    test_affiliations_and_roles();
    test_history();
    test_splice();
    return unit_done("muc");
}
