/*
 * test_occupant_id: XEP-0421 ids (chatd/features/occupant_id.c): a known answer
 * computed independently (Python hmac), stability, separation between
 * users and rooms, and that a client's own <occupant-id/> is replaced.
 */
#include "unit.h"
#include "../../chatd/features/occupant_id.h"
#include "../../common/xml_stream.h"
#include "../../common/strbuf.h"

static xs_node *parse(const char *xml)
{
    xs_node *n = NULL;
    char err[128];
    if (xs_parse_document(xml, strlen(xml), 65536, &n, err, sizeof(err)) != XS_OK) {
        fprintf(stderr, "parse: %s\n", err);
        return NULL;
    }
    return n;
}

static void test_known_answer(void)
{
    unsigned char k[OCCUPANT_ID_KEY];
    char a[OCCUPANT_ID_LEN + 1], b[OCCUPANT_ID_LEN + 1];
    CHECK(occupant_id_key("0123456789abcdefXYZ", k) == 0);
    /* python3: hmac(hmac(secret, label), room + b'\0' + bare), urlsafe b64, no '=' */
    occupant_id_make(k, "room@muc.example", "alice@example", a);
    CHECK_STR(a, "Xz06LRR7eMGK2gbPuvOX1TWPKl9Ui7Ta1Dny7-CZ7iw");
    occupant_id_make(k, "room@muc.example", "bob@example", b);
    CHECK_STR(b, "vNdX-yCDTG23G9LU8dkFYcrpom3IMdG8jwWIq6h-Rck");
    CHECK(strlen(a) == OCCUPANT_ID_LEN);
}

static void test_separation(void)
{
    unsigned char k[OCCUPANT_ID_KEY], k2[OCCUPANT_ID_KEY];
    char a[OCCUPANT_ID_LEN + 1], b[OCCUPANT_ID_LEN + 1];
    CHECK(occupant_id_key("a server secret of some length", k) == 0);
    occupant_id_make(k, "r1@muc", "u@x", a);
    occupant_id_make(k, "r1@muc", "u@x", b);
    CHECK_STR(a, b);                              /* stable */
    occupant_id_make(k, "r2@muc", "u@x", b);
    CHECK(strcmp(a, b) != 0);                     /* per room */
    occupant_id_make(k, "r1@muc", "v@x", b);
    CHECK(strcmp(a, b) != 0);                     /* per user */
    /* the separator: "r1@mu" + "cu@x" is not "r1@muc" + "u@x" */
    occupant_id_make(k, "r1@mu", "cu@x", b);
    CHECK(strcmp(a, b) != 0);
    /* no secret: a random key, so another server's ids differ */
    CHECK(occupant_id_key(NULL, k2) == 0);
    occupant_id_make(k2, "r1@muc", "u@x", b);
    CHECK(strcmp(a, b) != 0);
    CHECK(memcmp(k, k2, OCCUPANT_ID_KEY) != 0);
}

static void test_stamp_replaces_forged(void)
{
    unsigned char k[OCCUPANT_ID_KEY];
    char want[OCCUPANT_ID_LEN + 1];
    CHECK(occupant_id_key("0123456789abcdefXYZ", k) == 0);
    occupant_id_make(k, "room@muc.example", "alice@example", want);
    xs_node *m = parse("<message xmlns='jabber:client' type='groupchat'><body>hi</body>"
                       "<occupant-id xmlns='urn:xmpp:occupant-id:0' id='forged'/>"
                       "<occupant-id xmlns='urn:xmpp:occupant-id:0' id='forged2'/></message>");
    CHECK(m != NULL);
    if (!m) return;
    occupant_id_stamp(m, k, "room@muc.example", "alice@example");
    int n = 0;
    for (xs_node *c = xs_child(m, NS_OCCUPANT_ID, "occupant-id"); c;
         c = xs_next_elem(c, NS_OCCUPANT_ID, "occupant-id")) {
        n++;
        CHECK_STR(xs_attr_get(c, "id"), want);
    }
    CHECK(n == 1);
    CHECK(xs_child(m, "jabber:client", "body") != NULL);   /* the rest stays */
    xs_free(m);
}

int main(void)
{
    test_known_answer();
    test_separation();
    test_stamp_replaces_forged();
    return unit_done("occupant_id");
}
