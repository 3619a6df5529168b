/*
 * unit.h: the smallest test harness that reports like CI expects.
 * CHECK records a failure and carries on; unit_done() prints
 * "N passed, N failed" and returns the exit status.
 */
#ifndef TESTS_UNIT_H
#define TESTS_UNIT_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int unit_pass, unit_fail;

#define CHECK(cond) do { \
    if (cond) unit_pass++; \
    else { unit_fail++; fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); } \
} while (0)
#define CHECK_STR(a, b) do { \
    const char *a_ = (a), *b_ = (b); \
    if (a_ && b_ && strcmp(a_, b_) == 0) unit_pass++; \
    else { unit_fail++; fprintf(stderr, "%s:%d: \"%s\" != \"%s\"\n", __FILE__, __LINE__, a_ ? a_ : "(null)", b_ ? b_ : "(null)"); } \
} while (0)

static inline int unit_done(const char *suite) {
    printf("%s: %d passed, %d failed\n", suite, unit_pass, unit_fail);
    return unit_fail ? 1 : 0;
}

/* Write text to a new temporary file (under $TMPDIR, else /tmp) and
 * return its path, valid until the next call; NULL on error. For tests
 * that load configuration files. */
static inline const char *unit_write_tmp(const char *text) {
    static char path[4096];
    const char *dir = getenv("TMPDIR");
    int fd;
    snprintf(path, sizeof(path), "%s/unit_XXXXXX", dir && *dir ? dir : "/tmp");
    if ((fd = mkstemp(path)) < 0)
        return NULL;
    if (write(fd, text, strlen(text)) != (ssize_t)strlen(text)) {
        close(fd);
        unlink(path);
        return NULL;
    }
    close(fd);
    return path;
}

#endif
