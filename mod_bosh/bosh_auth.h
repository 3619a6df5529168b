/*
 * bosh_auth.h - pure helpers for vouching (issue 8: the site's own login
 * signs people into chat).
 *
 * Where a location is protected by an Apache auth module and has
 * `BoshAuthFromApache On`, mod_bosh tells chatd who httpd authenticated
 * (RT_AUTH_USER, common/RELAY.md) as a bare JID made from r->user with the
 * `BoshAuthJID` template, plus an optional display name. These helpers do
 * the string work without httpd, so a unit test can drive them.
 */
#ifndef MOD_BOSH_BOSH_AUTH_H
#define MOD_BOSH_BOSH_AUTH_H

#include <stddef.h>

#define BOSH_AUTH_JID_MAX   512     /* bytes, with the NUL */
#define BOSH_AUTH_NAME_MAX  256     /* display name, bytes with the NUL */

/* A BoshAuthJID template: %u (the authenticated user) exactly once, %%
 * for a literal %, no other % escape. Returns 1 if usable. */
int bosh_auth_template_ok(const char *tmpl);

/* Expand tmpl with user. The user must be non-empty and free of the
 * characters a JID localpart cannot hold (" & ' / : < > @), whitespace and
 * control characters, so that the authenticated name can never reach into
 * the domain or resource part. Returns 0, or -1 (bad user, too long). */
int bosh_auth_map_jid(const char *tmpl, const char *user, char *out, size_t outlen);

typedef enum { BOSH_NAME_NONE = 0, BOSH_NAME_HEADER, BOSH_NAME_ENV } bosh_name_source;

/* "header:X-Remote-Name" or "env:REMOTE_NAME". Returns the kind and sets
 * *key to the part after the colon (inside spec), or BOSH_NAME_NONE. */
bosh_name_source bosh_auth_name_source(const char *spec, const char **key);

/* A display name for storage: control characters dropped, surrounding
 * blanks trimmed, cut to outlen - 1 bytes without splitting a UTF-8
 * sequence. Returns the length written (0: nothing usable). */
size_t bosh_auth_clean_name(const char *in, char *out, size_t outlen);

#endif
