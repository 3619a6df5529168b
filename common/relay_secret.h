/*
 * relay_secret: the shared secret a relay client proves in HELLO
 * (RT_SECRET, common/RELAY.md "Peer authentication").
 *
 * Why a file: both sides read the same secret from a file that only root
 * and chatd's group can read (mod_bosh reads it as root while httpd loads
 * its configuration, before the children drop to www-data). One loader
 * for both, so "a valid secret file" means the same thing on both ends.
 */
#ifndef COMMON_RELAY_SECRET_H
#define COMMON_RELAY_SECRET_H

#include <stddef.h>

#define RELAY_SECRET_MIN 16     /* bytes, after trailing whitespace is cut */
#define RELAY_SECRET_MAX 1024

/* Read the secret in path: its content without trailing whitespace
 * (a final newline). Refuses a file that is not a regular file, that
 * others (not owner, not group) may read or write, or whose secret is
 * shorter than RELAY_SECRET_MIN or longer than RELAY_SECRET_MAX.
 * Returns 0 with *out malloc'd (NUL-terminated, free with
 * relay_secret_free) and *len, or -1 with a reason in err. */
int relay_secret_load(const char *path, char **out, size_t *len,
                      char *err, size_t errlen);

/* Zero and free a secret from relay_secret_load. */
void relay_secret_free(char *secret, size_t len);

/* 1 if got equals want, in time that depends only on want_len (never on
 * where the first difference is, nor on got's content). */
int relay_secret_equal(const char *want, size_t want_len,
                       const char *got, size_t got_len);

#endif
