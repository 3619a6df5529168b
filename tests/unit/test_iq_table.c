/*
 * test_iq_table: the iq namespace-to-handler table (chatd/router/iq_table.c):
 * which addressee each namespace is served for, and that disco#info
 * advertises each table feature exactly once.
 */
#include <string.h>
#include "unit.h"
#include "../../chatd/router/iq_dispatch.h"
#include "../../chatd/features/iq_server.h"
#include "../../chatd/features/carbons.h"
#include "../../chatd/features/blocking.h"
#include "../../chatd/features/mam_query.h"

static char features[4096];
static int  feature_count;

static void collect(const char *f, void *ud)
{
    (void)ud;
    strcat(features, " ");
    strcat(features, f);
    feature_count++;
}

static int advertised(const char *f)
{
    char needle[256];
    snprintf(needle, sizeof(needle), " %s", f);
    const char *p = features;
    int n = 0;
    while ((p = strstr(p, needle))) {
        p += strlen(needle);
        if (*p == ' ' || *p == '\0') n++;
    }
    return n;
}

int main(void)
{
    /* disco is served for everyone; the roster only for its owner. */
    CHECK(iq_lookup(NS_DISCO_INFO, "query", IQ_TO_SERVER) != NULL);
    CHECK(iq_lookup(NS_DISCO_INFO, "query", IQ_TO_OTHER) != NULL);
    CHECK(iq_lookup(NS_ROSTER, "query", IQ_TO_OWN) != NULL);
    CHECK(iq_lookup(NS_ROSTER, "query", IQ_TO_OTHER) == NULL);
    CHECK(iq_lookup(NS_ROSTER, "query", IQ_TO_SERVER) == NULL);
    /* the element matters where the row names one ... */
    CHECK(iq_lookup(NS_PING, "pong", IQ_TO_SERVER) == NULL);
    CHECK(iq_lookup(NS_PING, "ping", IQ_TO_OTHER) == NULL);
    CHECK(iq_lookup(NS_VERSION, "query", IQ_TO_OWN) == NULL);
    /* ... and any element of the namespace reaches a row that names none. */
    CHECK(iq_lookup(NS_CARBONS, "enable", IQ_TO_SERVER) != NULL);
    CHECK(iq_lookup(NS_CARBONS, "disable", IQ_TO_OWN) != NULL);
    CHECK(iq_lookup(NS_BLOCKING, "block", IQ_TO_OWN) != NULL);
    CHECK(iq_lookup(NS_BLOCKING, "block", IQ_TO_SERVER) == NULL);
    CHECK(iq_lookup("urn:example:none", "query", IQ_TO_ANY) == NULL);
    CHECK(iq_lookup(NULL, "query", IQ_TO_ANY) == NULL);

    iq_foreach_feature(collect, NULL);
    const char *expect[] = { NS_DISCO_INFO, NS_DISCO_ITEMS, NS_PING, NS_VERSION, NS_TIME,
                             NS_VCARD, NS_ROSTER, NS_SESSION, NS_CARBONS, NS_BLOCKING };
    for (size_t i = 0; i < sizeof(expect) / sizeof(expect[0]); i++)
        CHECK(advertised(expect[i]) == 1);
    CHECK(feature_count >= (int)(sizeof(expect) / sizeof(expect[0])));

    /* XEP-0313: the archive is queried at the own bare JID only, and the
     * account's disco#info (rows served there) lists it, each once; a
     * server-only row is not listed there. */
    CHECK(iq_lookup(NS_MAM, "query", IQ_TO_OWN) != NULL);
    CHECK(iq_lookup(NS_MAM, "prefs", IQ_TO_OWN) != NULL);
    CHECK(iq_lookup(NS_MAM, "query", IQ_TO_OTHER) == NULL);
    CHECK(iq_lookup(NS_MAM, "query", IQ_TO_SERVER) == NULL);
    features[0] = '\0';
    feature_count = 0;
    iq_foreach_feature_to(IQ_TO_OWN, collect, NULL);
    CHECK(advertised(NS_MAM) == 1 && advertised(NS_MAM_EXT) == 1);
    CHECK(advertised(NS_DISCO_INFO) == 1 && advertised(NS_ROSTER) == 1);
    CHECK(advertised(NS_VERSION) == 0 && advertised(NS_TIME) == 0);
    return unit_done("iq_table");
}
