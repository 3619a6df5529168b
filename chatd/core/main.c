/*
 * chatd: the XMPP daemon's main. Reads the config, optionally daemonizes,
 * builds the subsystems on one event loop, and tears them down in order on
 * SIGTERM/SIGINT so that every client gets a clean end of stream:
 * BOSH sessions terminate (held relay requests answered), native streams
 * get <system-shutdown/>, then relay answers are flushed to httpd.
 *
 *   chatd [-c FILE] [-f] [-t]
 *     -c FILE  configuration file (default: none, built-in defaults)
 *     -f       stay in the foreground even if the config says daemonize
 *     -t       test the configuration and exit
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>
#include <apr_general.h>
#include "chatd.h"
#include "admin.h"
#include "bosh.h"
#include "c2s.h"
#include "c2s_native.h"
#include "log.h"
#include "muc.h"
#include "mam.h"
#include "relay_server.h"
#include "tls.h"
#include "cluster.h"

static void usage(void) {
    fprintf(stderr, "usage: chatd [-c config] [-f] [-t]\n");
}

static int write_pidfile(const char *path) {
    FILE *fp = fopen(path, "we");
    if (!fp) return -1;
    fprintf(fp, "%d\n", (int)getpid());
    return fclose(fp);
}

/* How long the relay stays up after SIGTERM when BOSH sessions were open. */
#define SHUTDOWN_GRACE_MS 1000

/* How long SIGTERM waits for Redis to take the last room history writes. */
#define HISTORY_FLUSH_WAIT_MS 3000

static uint64_t shutdown_deadline;

static void finish_shutdown(loop *l, void *ud) {
    chatd *d = ud;
    /* Rooms emptied by the teardown, then whatever is still unwritten:
     * the loop must keep running until Redis has answered. */
    muc_flush_history(d);
    mam_flush_all(d);
    if ((muc_history_writes_pending(d) || mam_writes_pending(d)) &&
        redis_async_connected(d->redis) &&
        loop_now_ms(l) < shutdown_deadline) {
        loop_timer_add(l, 10, finish_shutdown, d);
        return;
    }
    relay_server_stop(d);       /* flushes the answers queued so far */
    loop_stop(l);
}

static void begin_shutdown(chatd *d) {
    if (d->stopping) return;
    d->stopping = 1;
    log_info("shutting down");
    uint64_t bosh_open = d->stats.bosh_sessions;
    shutdown_deadline = loop_now_ms(d->loop) + SHUTDOWN_GRACE_MS + HISTORY_FLUSH_WAIT_MS;
    muc_flush_history(d);
    mam_flush_all(d);
    admin_stop(d);
    bosh_shutdown_all(d);       /* held requests get terminate system-shutdown */
    c2s_native_stop(d, "system-shutdown");
    c2s_sm_end_all(d);          /* sessions waiting for a resume (XEP-0198) */
    if (bosh_open && d->relay) {
        /* A BOSH client between two requests has nothing held to carry
         * its terminate; stock clients send the next request at once, so
         * keep the relay up a moment and answer it system-shutdown
         * (bosh.c) rather than leave httpd facing a dead node. */
        loop_timer_add(d->loop, SHUTDOWN_GRACE_MS, finish_shutdown, d);
        return;
    }
    finish_shutdown(d->loop, d);
}

static const char *config_path;    /* for SIGHUP */

/* SIGHUP: read the file again and apply what can change under live
 * sessions: log_level, the admission limits and the flood/liveness
 * limits. Everything else
 * (listeners, Redis, domain, TLS files) needs a restart; a file that no
 * longer parses changes nothing. */
static void reload_config(chatd *d) {
    chatd_config nc;
    char err[512];
    memset(&nc, 0, sizeof(nc));
    if (config_load(&nc, config_path, err, sizeof(err)) < 0) {
        log_error("reload: %s; keeping the running configuration", err);
        config_free(&nc);
        return;
    }
    d->cfg.log_level = nc.log_level;
    log_set_level(nc.log_level);
    d->cfg.max_sessions = nc.max_sessions;
    d->cfg.max_sessions_per_addr = nc.max_sessions_per_addr;
    d->cfg.signin_rate = nc.signin_rate;
    d->cfg.signin_burst = nc.signin_burst;
    d->cfg.signin_per_addr = nc.signin_per_addr;
    /* Flood and liveness limits (issue 14): an operator loosens or
     * tightens them in the middle of an incident. Existing sessions keep
     * their buckets' contents; the watchdogs read these at each turn. */
    d->cfg.stanza_rate = nc.stanza_rate;
    d->cfg.stanza_burst = nc.stanza_burst;
    d->cfg.stanza_flood_close = nc.stanza_flood_close;
    d->cfg.byte_rate = nc.byte_rate;
    d->cfg.byte_burst = nc.byte_burst <= d->cfg.max_output / 2 ? nc.byte_burst
                                                               : (unsigned)(d->cfg.max_output / 4);
    d->cfg.c2s_auth_timeout = nc.c2s_auth_timeout;
    d->cfg.c2s_ping_idle = nc.c2s_ping_idle;
    d->cfg.c2s_ping_timeout = nc.c2s_ping_timeout;
    d->cfg.c2s_read_budget = nc.c2s_read_budget;
    /* XEP-0198 limits are read at each use; a new sm_resume_timeout
     * applies to the resumptions granted from now on. */
    d->cfg.sm_max_unacked = nc.sm_max_unacked;
    d->cfg.sm_max_unacked_bytes = nc.sm_max_unacked_bytes;
    d->cfg.sm_resume_timeout = nc.sm_resume_timeout;
    d->cfg.sm_ack_every = nc.sm_ack_every;
    d->cfg.sm_ack_interval = nc.sm_ack_interval;
    config_free(&nc);
    log_info("BOSH00957: configuration reloaded (log_level, max_sessions, "
             "max_sessions_per_addr, signin_*, stanza_*, byte_*, c2s_auth_timeout, "
             "c2s_ping_*, c2s_read_budget, sm_*; other keys apply at the next start)");
}

static void on_signal(loop *l, int fd, unsigned events, void *ud) {
    (void)l; (void)events;
    chatd *d = ud;
    struct signalfd_siginfo si;
    while (read(fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        switch (si.ssi_signo) {
        case SIGTERM:
        case SIGINT:
            begin_shutdown(d);
            break;
        case SIGHUP:
            if (log_open(d->cfg.logfile) < 0)
                log_error("cannot reopen log %s: %s", d->cfg.logfile, strerror(errno));
            else
                log_info("log reopened");
            reload_config(d);
            break;
        default:
            break;
        }
    }
}

int main(int argc, char **argv) {
    int foreground = 0, test_only = 0, opt;
    while ((opt = getopt(argc, argv, "c:fth")) != -1) {
        switch (opt) {
        case 'c': config_path = optarg; break;
        case 'f': foreground = 1; break;
        case 't': test_only = 1; break;
        default: usage(); return 2;
        }
    }

    static chatd d;   /* static: zeroed, and outlives every callback */
    char err[512];
    if (config_load(&d.cfg, config_path, err, sizeof(err)) < 0) {
        fprintf(stderr, "chatd: %s\n", err);
        config_free(&d.cfg);
        return 1;
    }
    if (test_only) {
        printf("chatd: configuration ok\n");
        config_free(&d.cfg);
        return 0;
    }
    log_set_level(d.cfg.log_level);
    if (log_open(d.cfg.logfile) < 0) {
        fprintf(stderr, "chatd: cannot open log %s: %s\n", d.cfg.logfile, strerror(errno));
        config_free(&d.cfg);
        return 1;
    }
    /* Before any socket or thread exists. */
    if (d.cfg.daemonize && !foreground && daemon(1, 0) < 0) {
        log_error("daemon: %s", strerror(errno));
        config_free(&d.cfg);
        return 1;
    }
    if (d.cfg.pidfile && write_pidfile(d.cfg.pidfile) < 0)
        log_warn("cannot write pid file %s: %s", d.cfg.pidfile, strerror(errno));

    signal(SIGPIPE, SIG_IGN);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    int sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);

    int rc = 1;
    int xmpp_up = 0, bosh_up = 0;
    apr_initialize();
    d.loop = loop_new();
    if (!d.loop || sigfd < 0) {
        log_error("cannot create the event loop");
        goto out;
    }
    loop_watch(d.loop, sigfd, LOOP_READ, on_signal, &d);
    /* cluster yes: one of redis_max_conns is the pub/sub subscriber */
    d.redis = redis_async_new_ha(d.loop, d.cfg.redis_url,
                                 d.cfg.redis_max_conns - (d.cfg.cluster ? 1 : 0),
                                 &d.cfg.redis_sentinels);
    if (!d.redis) { log_error("cannot create the Redis pool"); goto out; }
    if (tls_init(&d) < 0) goto out;
    if (xmpp_init(&d) < 0) { log_error("xmpp_init failed"); goto out; }
    xmpp_up = 1;
    if (cluster_init(&d) < 0) { log_error("cluster_init failed"); goto out; }
    if (bosh_init(&d) < 0) { log_error("bosh_init failed"); goto out; }
    bosh_up = 1;
    if (relay_server_start(&d) < 0) goto out;
    if (c2s_native_start(&d) < 0) goto out;
    if (c2s_ws_start(&d) < 0) goto out;
    if (admin_start(&d) < 0) goto out;

    log_info("ready");
    loop_run(d.loop);
    rc = 0;

out:
    d.stopping = 1;
    admin_stop(&d);
    c2s_native_stop(&d, "system-shutdown");
    relay_server_stop(&d);
    if (bosh_up) bosh_free(&d);
    chatd_addr_slots_free(&d);
    cluster_free(&d);
    if (xmpp_up) xmpp_free(&d);
    redis_async_free(d.redis);
    tls_free(&d);
    if (d.loop) {
        if (sigfd >= 0) loop_unwatch(d.loop, sigfd);
        loop_free(d.loop);
    }
    if (sigfd >= 0) close(sigfd);
    apr_terminate();
    if (d.cfg.pidfile) unlink(d.cfg.pidfile);
    log_info("stopped");
    log_open(NULL);
    config_free(&d.cfg);
    return rc;
}
