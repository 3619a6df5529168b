/*
 * relay_secret: load the relay's shared secret from a file and compare it
 * in constant time (see relay_secret.h).
 */
#include "relay_secret.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int relay_secret_load(const char *path, char **out, size_t *len,
                      char *err, size_t errlen) {
    char buf[RELAY_SECRET_MAX + 2];
    struct stat st;
    size_t n = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        close(fd);
        return -1;
    }
    /* Anyone who can read it can speak for httpd; anyone who can write
     * it can lock httpd out. Like ssh with its keys: refuse, say why. */
    if (st.st_mode & (S_IROTH | S_IWOTH)) {
        snprintf(err, errlen, "%s is readable or writable by others (mode %04o): chmod o-rw it, "
                 "e.g. 0640 root:_chatd", path, (unsigned)(st.st_mode & 07777));
        close(fd);
        return -1;
    }
    for (;;) {
        ssize_t r = read(fd, buf + n, sizeof(buf) - 1 - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
            close(fd);
            memset(buf, 0, sizeof(buf));
            return -1;
        }
        if (r == 0 || (n += (size_t)r) == sizeof(buf) - 1) break;
    }
    close(fd);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' ||
                     buf[n - 1] == ' ' || buf[n - 1] == '\t'))
        n--;
    if (n < RELAY_SECRET_MIN || n > RELAY_SECRET_MAX) {
        snprintf(err, errlen, "%s: the secret must be %d to %d bytes, it has %s", path,
                 RELAY_SECRET_MIN, RELAY_SECRET_MAX, n < RELAY_SECRET_MIN ? "fewer" : "more");
        memset(buf, 0, sizeof(buf));
        return -1;
    }
    if (memchr(buf, '\0', n)) {
        snprintf(err, errlen, "%s: the secret contains a NUL byte", path);
        memset(buf, 0, sizeof(buf));
        return -1;
    }
    *out = malloc(n + 1);
    if (!*out) {
        snprintf(err, errlen, "out of memory");
        memset(buf, 0, sizeof(buf));
        return -1;
    }
    memcpy(*out, buf, n);
    (*out)[n] = '\0';
    *len = n;
    memset(buf, 0, sizeof(buf));
    return 0;
}

void relay_secret_free(char *secret, size_t len) {
    if (!secret) return;
    /* volatile: the compiler may not drop stores to memory about to be freed */
    volatile char *p = secret;
    for (size_t i = 0; i < len; i++) p[i] = 0;
    free(secret);
}

int relay_secret_equal(const char *want, size_t want_len,
                       const char *got, size_t got_len) {
    /* Walk want's length whatever got is; a shorter got is compared
     * against zeros (got is never read past its end), and the length
     * difference counts as a difference. */
    volatile unsigned char diff = (unsigned char)((want_len != got_len) ? 1 : 0);
    for (size_t i = 0; i < want_len; i++) {
        unsigned char g = i < got_len ? (unsigned char)got[i] : 0;
        diff |= (unsigned char)want[i] ^ g;
    }
    return diff == 0;
}
