/*
 * jid: parse, validate and compare XMPP addresses (RFC 7622, simplified).
 *
 * Why our own: the router and rooms compare addresses on every stanza;
 * they need one definition of "same user". We do the parts a small
 * server needs: split local@domain/resource, reject characters RFC 7622
 * forbids in a localpart, enforce the 1023-byte part limits, and fold
 * ASCII case in localpart and domain (a stand-in for full PRECIS
 * case mapping). Resources are kept exactly as given.
 *
 * Pure logic, no allocation: unit tested in tests/unit/test_jid.c.
 */
#ifndef CHATD_JID_H
#define CHATD_JID_H

#include <stddef.h>

#define JID_PART_MAX 1023
#define JID_MAX      (3 * JID_PART_MAX + 2)

typedef struct jid {
    char local[JID_PART_MAX + 1];      /* "" when absent */
    char domain[JID_PART_MAX + 1];
    char resource[JID_PART_MAX + 1];   /* "" when absent */
} jid;

/* Parse s into j. Returns 0, or -1 if s is not a valid JID. */
int  jid_parse(const char *s, jid *j);
/* local@domain (or domain) into out; returns out, or NULL if it does not fit. */
char *jid_bare(const jid *j, char *out, size_t outlen);
/* local@domain/resource (parts omitted when empty). */
char *jid_full(const jid *j, char *out, size_t outlen);
/* Normalised bare form of the string s; NULL if s is invalid or too long. */
char *jid_bare_str(const char *s, char *out, size_t outlen);
/* 1 if a and b are valid and name the same bare JID (case-folded). */
int  jid_same_bare(const char *a, const char *b);
/* Localpart characters RFC 7622 §3.3.1 forbids: " & ' / : < > @ space, controls. */
int  jid_local_valid(const char *local);
/* 1 when the resource part is non-empty. */
static inline int jid_is_full(const jid *j) { return j->resource[0] != '\0'; }

#endif
