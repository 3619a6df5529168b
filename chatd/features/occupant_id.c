/*
 * occupant_id: XEP-0421 occupant ids (see occupant_id.h). Pure: OpenSSL's
 * HMAC and RAND, and the xml tree.
 */
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include "occupant_id.h"

int occupant_id_key(const char *server_secret, unsigned char key[OCCUPANT_ID_KEY])
{
    if (server_secret && *server_secret) {
        /* a label of its own: this key is not the one users.c derives */
        static const char label[] = "chatd xep-0421 occupant-id v1";
        unsigned int len = 0;
        return HMAC(EVP_sha256(), server_secret, (int)strlen(server_secret),
                    (const unsigned char *)label, sizeof label - 1, key, &len) &&
               len == OCCUPANT_ID_KEY ? 0 : -1;
    }
    return RAND_bytes(key, OCCUPANT_ID_KEY) == 1 ? 0 : -1;
}

void occupant_id_make(const unsigned char key[OCCUPANT_ID_KEY], const char *room,
                      const char *bare, char out[OCCUPANT_ID_LEN + 1])
{
    static const char b64u[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    /* room NUL bare: no two (room, bare) pairs give the same input */
    size_t rl = strlen(room) + 1, bl = strlen(bare);
    unsigned char *msg = malloc(rl + bl + 1);
    if (!msg || !(memcpy(msg, room, rl), memcpy(msg + rl, bare, bl),
                  HMAC(EVP_sha256(), key, OCCUPANT_ID_KEY, msg, rl + bl, mac, &maclen)) ||
        maclen != 32) {
        /* never an id that could collide: an empty one is refused below */
        free(msg);
        out[0] = '\0';
        return;
    }
    free(msg);
    size_t o = 0;
    unsigned i;
    for (i = 0; i + 3 <= 32; i += 3) {
        unsigned v = (unsigned)mac[i] << 16 | (unsigned)mac[i + 1] << 8 | mac[i + 2];
        out[o++] = b64u[v >> 18 & 63];
        out[o++] = b64u[v >> 12 & 63];
        out[o++] = b64u[v >> 6 & 63];
        out[o++] = b64u[v & 63];
    }
    /* 32 = 30 + 2: the last two bytes make three characters */
    unsigned v = (unsigned)mac[30] << 16 | (unsigned)mac[31] << 8;
    out[o++] = b64u[v >> 18 & 63];
    out[o++] = b64u[v >> 12 & 63];
    out[o++] = b64u[v >> 6 & 63];
    out[o] = '\0';
}

void occupant_id_strip(xs_node *st)
{
    xs_node *c = xs_child(st, NS_OCCUPANT_ID, "occupant-id");
    while (c) {
        xs_node *next = xs_next_elem(c, NS_OCCUPANT_ID, "occupant-id");
        xs_unlink(c);
        xs_free(c);
        c = next;
    }
}

void occupant_id_stamp(xs_node *st, const unsigned char key[OCCUPANT_ID_KEY],
                       const char *room, const char *bare)
{
    char id[OCCUPANT_ID_LEN + 1];
    occupant_id_strip(st);
    occupant_id_make(key, room, bare, id);
    if (!id[0]) return;          /* HMAC failed: no id rather than a wrong one */
    xs_set_attr(xs_add_elem(st, NS_OCCUPANT_ID, "occupant-id"), "id", id);
}
