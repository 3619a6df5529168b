/*
 * bench/bodyparse: parse the BOSH bodies of a chat session N times, for
 * instruction counts under callgrind (repeatable on a shared machine,
 * unlike wall time):
 *
 *   valgrind --tool=callgrind bench/bodyparse 10000 [fresh]
 *
 * By default one parser is reused for every body, as chatd does
 * (bosh_body_parse_with); "fresh" creates one per body, as mod_bosh does.
 * The bodies are what bench/loadgen sends once signed in (an empty poll,
 * a groupchat message, a presence) plus one hostile body that is refused.
 * Ir per parsed body = total Ir / (N * 4).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/bosh_body.h"

static const char *bodies[] = {
    "<body rid='1234567' sid='0123456789abcdef0123456789abcdef' "
    "xmlns='http://jabber.org/protocol/httpbind'/>",

    "<body rid='1234568' sid='0123456789abcdef0123456789abcdef' "
    "xmlns='http://jabber.org/protocol/httpbind'>"
    "<message xmlns='jabber:client' type='groupchat' to='room1@conference.localhost'>"
    "<body>lg 5f3a1c 17 42 1764294000123456</body></message></body>",

    "<body rid='1234569' sid='0123456789abcdef0123456789abcdef' "
    "xmlns='http://jabber.org/protocol/httpbind'>"
    "<presence xmlns='jabber:client'><show>away</show><status>lunch</status>"
    "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='https://conversejs.org' "
    "ver='k6gP4+8rUJ9Ql6BXmBS5QYDHbxg='/></presence></body>",

    "<!DOCTYPE body [<!ENTITY a 'aaaa'>]><body rid='1' "
    "xmlns='http://jabber.org/protocol/httpbind'>&a;</body>",
};

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 10000;
    xs_parser *p = argc > 2 && strcmp(argv[2], "fresh") == 0 ? NULL : xs_doc_parser_new();
    size_t nb = sizeof bodies / sizeof bodies[0];
    long ok = 0;
    char err[128];
    for (long i = 0; i < n; i++) {
        for (size_t k = 0; k < nb; k++) {
            bosh_body b;
            if (bosh_body_parse_with(p, bodies[k], strlen(bodies[k]), strlen(bodies[k]),
                                     &b, err, sizeof err) == 0) {
                ok++;
                bosh_body_free(&b);
            }
        }
    }
    xs_parser_free(p);
    printf("%ld bodies, %ld accepted\n", n * (long)nb, ok);
    return ok == n * (long)(nb - 1) ? 0 : 1;
}
