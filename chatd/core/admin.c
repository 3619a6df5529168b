/*
 * admin.c: the control socket chatctl talks to (see admin.h), and the
 * node's session cap.
 *
 * Every command answers from memory at once (room-destroy also sends a
 * fire-and-forget DEL to Redis), so a command never waits and the socket
 * needs no state beyond its buffers. Answers are sorted so that chatctl's
 * output is stable and easy to read or grep.
 */
#include "admin.h"
#include "cluster.h"
#include "listen.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "addr_count.h"
#include "c2s.h"
#include "jid.h"
#include "log.h"
#include "muc.h"
#include "router.h"

#define ADMIN_MAX_LINE  4096
#define ADMIN_MAX_OUT   (16u << 20)   /* a runaway client stops being read */
#define KICK_TEXT       "kicked by an administrator"
#define DESTROY_REASON  "destroyed by an administrator"

typedef struct admin_conn {
    struct admin_server *srv;
    struct admin_conn   *prev, *next;
    int                  fd;
    int                  eof;        /* client closed its side (or misbehaved) */
    strbuf               in, out;
} admin_conn;

typedef struct admin_server {
    chatd      *d;
    int         fd;
    char       *path;
    admin_conn *conns;
    listen_pacer pacer;        /* out of descriptors: pause accepting */
} admin_server;

int chatd_session_slots_full(chatd *d) {
    return d->cfg.max_sessions &&
           d->stats.c2s_sessions + d->stats.bosh_sessions >= d->cfg.max_sessions;
}

int chatd_addr_slot_take(chatd *d, const char *addr) {
    if (!d->cfg.max_sessions_per_addr || !addr || !*addr) return 0;
    if (!d->addr_sessions) d->addr_sessions = addr_count_new();
    if (addr_count_get(d->addr_sessions, addr) >= d->cfg.max_sessions_per_addr) {
        d->stats.addr_refused++;
        return -1;
    }
    addr_count_inc(d->addr_sessions, addr);
    return 1;
}

int chatd_addr_slot_keep(chatd *d, const char *addr) {
    if (!d->cfg.max_sessions_per_addr || !addr || !*addr) return 0;
    if (!d->addr_sessions) d->addr_sessions = addr_count_new();
    addr_count_inc(d->addr_sessions, addr);
    return 1;
}

void chatd_addr_slot_release(chatd *d, const char *addr) {
    if (d->addr_sessions && addr && *addr) addr_count_dec(d->addr_sessions, addr);
}

void chatd_addr_slots_free(chatd *d) {
    addr_count_free(d->addr_sessions);
    d->addr_sessions = NULL;
}

/* ---- commands ---- */

/* A list of lines to sort before answering. */
typedef struct lines {
    char  **v;
    size_t  n, cap;
} lines;

static void lines_add(lines *l, strbuf *tmp) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 32;
        l->v = realloc(l->v, l->cap * sizeof *l->v);
        if (!l->v) abort();
    }
    l->v[l->n++] = sb_detach(tmp, NULL);
}

static int cmp_line(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void lines_flush(lines *l, strbuf *out) {
    if (l->n) qsort(l->v, l->n, sizeof *l->v, cmp_line);
    for (size_t i = 0; i < l->n; i++) {
        sb_puts(out, l->v[i]);
        sb_putc(out, '\n');
        free(l->v[i]);
    }
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* No control characters or spaces reach chatctl's line-based output. */
static void put_word(strbuf *sb, const char *s) {
    if (!s || !*s) { sb_putc(sb, '-'); return; }
    for (; *s; s++) sb_putc(sb, (unsigned char)*s <= ' ' || *s == 0x7f ? '_' : *s);
}

static void count_room(const char *room_jid, size_t occupants, int persistent, void *ud) {
    (void)room_jid; (void)occupants; (void)persistent;
    (*(size_t *)ud)++;
}

static void count_bound(c2s *s, const char *full, void *ud) {
    (void)s; (void)full;
    (*(size_t *)ud)++;
}

static void cmd_stats(chatd *d, strbuf *out) {
    const chatd_stats *st = &d->stats;
    size_t rooms = 0, bound = 0;
    muc_foreach_room(d, count_room, &rooms);
    router_foreach_session(d, count_bound, &bound);
    sb_printf(out, "node %s\n", d->cfg.node_id);
    sb_printf(out, "sessions %llu\n", (unsigned long long)(st->c2s_sessions + st->bosh_sessions));
    sb_printf(out, "c2s_sessions %llu\n", (unsigned long long)st->c2s_sessions);
    sb_printf(out, "bosh_sessions %llu\n", (unsigned long long)st->bosh_sessions);
    sb_printf(out, "bound_sessions %zu\n", bound);
    sb_printf(out, "max_sessions %u\n", d->cfg.max_sessions);
    sb_printf(out, "sessions_refused %llu\n", (unsigned long long)st->sessions_refused);
    sb_printf(out, "signin_refused %llu\n", (unsigned long long)st->signin_refused);
    sb_printf(out, "signin_unavailable %llu\n", (unsigned long long)st->signin_unavailable);
    sb_printf(out, "max_sessions_per_addr %u\n", d->cfg.max_sessions_per_addr);
    sb_printf(out, "addr_refused %llu\n", (unsigned long long)st->addr_refused);
    sb_printf(out, "stanzas_refused %llu\n", (unsigned long long)st->stanzas_refused);
    sb_printf(out, "flood_closed %llu\n", (unsigned long long)st->flood_closed);
    sb_printf(out, "auth_timeouts %llu\n", (unsigned long long)st->auth_timeouts);
    sb_printf(out, "ping_timeouts %llu\n", (unsigned long long)st->ping_timeouts);
    sb_printf(out, "accept_paused %llu\n", (unsigned long long)st->accept_paused);
    sb_printf(out, "bosh_ack_overflows %llu\n", (unsigned long long)st->bosh_ack_overflows);
    sb_printf(out, "sm_detached %llu\n", (unsigned long long)st->sm_detached);
    sb_printf(out, "sm_resumed %llu\n", (unsigned long long)st->sm_resumed);
    sb_printf(out, "sm_expired %llu\n", (unsigned long long)st->sm_expired);
    sb_printf(out, "sm_overflows %llu\n", (unsigned long long)st->sm_overflows);
    sb_printf(out, "addrs_with_sessions %zu\n",
              d->addr_sessions ? addr_count_size(d->addr_sessions) : (size_t)0);
    sb_printf(out, "rooms %zu\n", rooms);
    sb_printf(out, "stanzas_in %llu\n", (unsigned long long)st->stanzas_in);
    sb_printf(out, "stanzas_out %llu\n", (unsigned long long)st->stanzas_out);
    sb_printf(out, "auth_ok %llu\n", (unsigned long long)st->auth_ok);
    sb_printf(out, "auth_fail %llu\n", (unsigned long long)st->auth_fail);
    sb_printf(out, "auth_throttled %llu\n", (unsigned long long)st->auth_throttled);
    sb_printf(out, "auth_overloaded %llu\n", (unsigned long long)st->auth_overloaded);
    sb_printf(out, "pbkdf2_runs %llu\n", (unsigned long long)st->pbkdf2_runs);
    sb_printf(out, "relay_conns %llu\n", (unsigned long long)st->relay_conns);
    sb_printf(out, "relay_requests %llu\n", (unsigned long long)st->relay_requests);
    sb_printf(out, "relay_overflows %llu\n", (unsigned long long)st->relay_overflows);
    sb_printf(out, "relay_refused %llu\n", (unsigned long long)st->relay_refused);
    sb_printf(out, "redis_connections %d\n", d->redis ? redis_async_connected(d->redis) : 0);
    if (cluster_on(d)) {        /* issue 16 */
        cluster_info ci;
        cluster_get_info(d, &ci);
        sb_printf(out, "cluster_subscribed %d\n", ci.subscribed);
        sb_printf(out, "cluster_other_nodes %u\n", ci.live_nodes);
        sb_printf(out, "cluster_remote_sessions %u\n", ci.remote_sessions);
        sb_printf(out, "cluster_rooms_owned %u\n", ci.rooms_owned);
        sb_printf(out, "cluster_out %llu\n", (unsigned long long)st->cluster_out);
        sb_printf(out, "cluster_in %llu\n", (unsigned long long)st->cluster_in);
        sb_printf(out, "cluster_unreached %llu\n", (unsigned long long)st->cluster_unreached);
    }
    sb_puts(out, "ok\n");
}

static void list_session(c2s *s, const char *full, void *ud) {
    strbuf tmp = STRBUF_INIT;
    put_word(&tmp, full);
    sb_putc(&tmp, ' ');
    put_word(&tmp, c2s_kind(s));
    sb_putc(&tmp, ' ');
    put_word(&tmp, c2s_peer(s));
    lines_add(ud, &tmp);
}

static void cmd_sessions(chatd *d, strbuf *out) {
    lines l = { 0 };
    router_foreach_session(d, list_session, &l);
    lines_flush(&l, out);
    sb_puts(out, "ok\n");
}

typedef struct kick_match {
    jid     want;
    c2s   **found;
    char  **names;
    size_t  n, cap;
} kick_match;

static void match_session(c2s *s, const char *full, void *ud) {
    kick_match *k = ud;
    jid j;
    char bare_want[JID_MAX + 1];
    if (jid_parse(full, &j) != 0 || !jid_bare(&k->want, bare_want, sizeof bare_want)) return;
    if (!jid_same_bare(full, bare_want)) return;
    if (k->want.resource[0] && strcmp(k->want.resource, j.resource) != 0) return;
    if (k->n == k->cap) {
        k->cap = k->cap ? 2 * k->cap : 8;
        k->found = realloc(k->found, k->cap * sizeof *k->found);
        k->names = realloc(k->names, k->cap * sizeof *k->names);
        if (!k->found || !k->names) abort();
    }
    k->found[k->n] = s;
    k->names[k->n] = strdup(full);
    if (!k->names[k->n]) abort();
    k->n++;
}

static void cmd_kick(chatd *d, const char *arg, strbuf *out) {
    kick_match k;
    memset(&k, 0, sizeof k);
    if (!*arg || jid_parse(arg, &k.want) != 0 || !k.want.local[0]) {
        sb_puts(out, "error: kick wants a JID (user@domain or user@domain/resource)\n");
        return;
    }
    /* Collect first: closing may change the router's table. */
    router_foreach_session(d, match_session, &k);
    for (size_t i = 0; i < k.n; i++) {
        log_info("admin: kicking %s", k.names[i]);
        c2s_close(k.found[i], "policy-violation", KICK_TEXT);
        sb_printf(out, "kicked %s\n", k.names[i]);
        free(k.names[i]);
    }
    if (k.n) sb_puts(out, "ok\n");
    else sb_printf(out, "error: no session for %s\n", arg);
    free(k.found);
    free(k.names);
}

static void list_room(const char *room_jid, size_t occupants, int persistent, void *ud) {
    strbuf tmp = STRBUF_INIT;
    put_word(&tmp, room_jid);
    sb_printf(&tmp, " %zu %s", occupants, persistent ? "persistent" : "temporary");
    lines_add(ud, &tmp);
}

static void cmd_rooms(chatd *d, strbuf *out) {
    lines l = { 0 };
    muc_foreach_room(d, list_room, &l);
    lines_flush(&l, out);
    sb_puts(out, "ok\n");
}

static void cmd_room_destroy(chatd *d, const char *arg, strbuf *out) {
    char want[JID_MAX + 1];
    if (!*arg) {
        sb_puts(out, "error: room-destroy wants a room JID (room@muc-domain)\n");
        return;
    }
    /* A bare room name means a room at our MUC domain. */
    if (!strchr(arg, '@')) snprintf(want, sizeof want, "%s@%s", arg, d->cfg.muc_domain);
    else snprintf(want, sizeof want, "%s", arg);
    if (muc_admin_destroy(d, want, DESTROY_REASON) != 0) {
        sb_printf(out, "error: no such room %s\n", want);
        return;
    }
    log_info("admin: destroyed room %s", want);
    sb_printf(out, "destroyed %s\nok\n", want);
}

void admin_execute(chatd *d, const char *line, strbuf *out) {
    char cmd[32];
    size_t n = 0;
    while (*line == ' ' || *line == '\t') line++;
    while (line[n] && line[n] != ' ' && line[n] != '\t') n++;
    if (n >= sizeof cmd) n = sizeof cmd - 1;
    memcpy(cmd, line, n);
    cmd[n] = '\0';
    /* The argument: the rest, without surrounding blanks. */
    char arg[1024];
    const char *a = line + strcspn(line, " \t");
    while (*a == ' ' || *a == '\t') a++;
    snprintf(arg, sizeof arg, "%s", a);
    size_t al = strlen(arg);
    while (al && (arg[al - 1] == ' ' || arg[al - 1] == '\t' || arg[al - 1] == '\r'))
        arg[--al] = '\0';

    if (!strcmp(cmd, "stats") && !*arg) cmd_stats(d, out);
    else if (!strcmp(cmd, "sessions") && !*arg) cmd_sessions(d, out);
    else if (!strcmp(cmd, "kick")) cmd_kick(d, arg, out);
    else if (!strcmp(cmd, "rooms") && !*arg) cmd_rooms(d, out);
    else if (!strcmp(cmd, "room-destroy")) cmd_room_destroy(d, arg, out);
    else if (!cmd[0]) sb_puts(out, "error: empty command\n");
    else sb_puts(out, "error: unknown command (stats, sessions, kick JID, rooms, room-destroy ROOM)\n");
}

/* ---- the socket ---- */

static void conn_io(loop *l, int fd, unsigned events, void *ud);

static void conn_destroy(admin_conn *c) {
    admin_server *srv = c->srv;
    loop_unwatch(srv->d->loop, c->fd);
    close(c->fd);
    sb_free(&c->in);
    sb_free(&c->out);
    if (c->prev) c->prev->next = c->next; else srv->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    free(c);
}

/* Run every complete line in the input buffer. */
static void conn_run_lines(admin_conn *c) {
    size_t start = 0;
    for (;;) {
        char *nl = c->in.len > start ? memchr(c->in.data + start, '\n', c->in.len - start) : NULL;
        if (!nl) break;
        *nl = '\0';
        size_t len = (size_t)(nl - (c->in.data + start));
        if (len && c->in.data[start + len - 1] == '\r') c->in.data[start + len - 1] = '\0';
        admin_execute(c->srv->d, c->in.data + start, &c->out);
        start += len + 1;
    }
    sb_consume(&c->in, start);
    if (c->in.len > ADMIN_MAX_LINE) {
        sb_puts(&c->out, "error: line too long\n");
        sb_reset(&c->in);
        c->eof = 1;
    }
}

static void conn_io(loop *l, int fd, unsigned events, void *ud) {
    (void)events;
    admin_conn *c = ud;
    char buf[4096];
    while (!c->eof && c->out.len < ADMIN_MAX_OUT) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (n <= 0) {
            /* A last line without '\n' still counts. */
            if (c->in.len) sb_putc(&c->in, '\n');
            conn_run_lines(c);
            c->eof = 1;
            break;
        }
        sb_append(&c->in, buf, (size_t)n);
        conn_run_lines(c);
    }
    while (c->out.len) {
        ssize_t n = send(fd, c->out.data, c->out.len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (n <= 0) { conn_destroy(c); return; }
        sb_consume(&c->out, (size_t)n);
    }
    if (c->eof && !c->out.len) { conn_destroy(c); return; }
    loop_watch(l, fd, (c->eof ? 0 : LOOP_READ) | (c->out.len ? LOOP_WRITE : 0), conn_io, c);
}

static void accept_io(loop *l, int fd, unsigned events, void *ud) {
    (void)events; (void)fd;
    admin_server *srv = ud;
    for (;;) {
        int cfd = listen_accept_paced(&srv->pacer, NULL, NULL);
        if (cfd < 0) return;
        admin_conn *c = calloc(1, sizeof *c);
        if (!c) abort();
        c->srv = srv;
        c->fd = cfd;
        if (loop_watch(l, cfd, LOOP_READ, conn_io, c) < 0) {
            close(cfd);
            free(c);
            continue;
        }
        c->next = srv->conns;
        if (srv->conns) srv->conns->prev = c;
        srv->conns = c;
    }
}

int admin_start(chatd *d) {
    const char *path = d->cfg.admin_socket;
    if (!path || !*path) return 0;
    /* 0600: whoever can use it can kick anyone. */
    int fd = listen_unix(path, 0600, "admin");
    if (fd < 0) return -1;
    admin_server *srv = calloc(1, sizeof *srv);
    if (!srv || !(srv->path = strdup(path))) abort();
    srv->d = d;
    srv->fd = fd;
    srv->pacer = (listen_pacer){ .l = d->loop, .fd = fd, .cb = accept_io, .ud = srv,
                                 .what = "admin", .counter = &d->stats.accept_paused };
    if (loop_watch(d->loop, fd, LOOP_READ, accept_io, srv) < 0) {
        close(fd);
        unlink(path);
        free(srv->path);
        free(srv);
        return -1;
    }
    d->admin = srv;
    log_info("admin: listening on %s", path);
    return 0;
}

void admin_stop(chatd *d) {
    admin_server *srv = d->admin;
    if (!srv) return;
    while (srv->conns) conn_destroy(srv->conns);
    listen_pacer_cancel(&srv->pacer);
    loop_unwatch(d->loop, srv->fd);
    close(srv->fd);
    unlink(srv->path);
    free(srv->path);
    free(srv);
    d->admin = NULL;
}
