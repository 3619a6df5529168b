/*
 * log: one line per event, "<time> [level] chatd: message", to stderr or
 * an append-only file that SIGHUP reopens (logrotate moves the old one).
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static FILE *log_fp;            /* NULL = stderr */
static int   log_level = LOG_INFO;
static char  log_path[4096];

static const char *level_names[] = { "error", "warn", "info", "debug" };

void log_set_level(int level) { log_level = level; }

int log_open(const char *path) {
    if (path && *path) {
        if (path != log_path)
            snprintf(log_path, sizeof(log_path), "%s", path);
    } else {
        log_path[0] = '\0';
    }
    if (log_fp) { fclose(log_fp); log_fp = NULL; }
    if (!log_path[0]) return 0;
    FILE *fp = fopen(log_path, "ae");
    if (!fp) return -1;
    setvbuf(fp, NULL, _IOLBF, 0);
    log_fp = fp;
    return 0;
}

void log_msg(int level, const char *fmt, ...) {
    if (level > log_level) return;
    if (level < LOG_ERROR) level = LOG_ERROR;
    if (level > LOG_DEBUG) level = LOG_DEBUG;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    localtime_r(&tv.tv_sec, &tm);
    char ts[32];
    strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M:%S", &tm);

    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* One write per line so concurrent writers never interleave within it. */
    FILE *out = log_fp ? log_fp : stderr;
    fprintf(out, "%s.%03d [%s] chatd: %s\n", ts, (int)(tv.tv_usec / 1000),
            level_names[level], msg);
    fflush(out);
}
