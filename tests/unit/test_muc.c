/* test_muc: room rules without sockets (muc_room.c). */
#include <string.h>
#include <stdlib.h>
#include "unit.h"
#include "../../chatd/muc_room.h"

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

int main(void)
{
    test_occupants_and_join();
    test_affiliations_and_roles();
    test_history();
    test_splice();
    return unit_done("muc");
}
