/* test_admin: the admin socket's command answers (no sockets), the session
 * cap, and the config keys added with them (admin_socket, signin_*). */
#include <stdlib.h>
#include <unistd.h>
#include "unit.h"
#include "../../chatd/core/admin.h"
#include "../../chatd/core/config.h"

static int load(chatd_config *c, const char *text, char *err, size_t errlen) {
    char path[] = "/tmp/test_admin_conf_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return -2;
    if (write(fd, text, strlen(text)) < 0) {}
    close(fd);
    int rc = config_load(c, path, err, errlen);
    unlink(path);
    return rc;
}

static const char *run(chatd *d, const char *line, strbuf *out) {
    sb_reset(out);
    admin_execute(d, line, out);
    return out->data ? out->data : "";
}

int main(void) {
    chatd_config c;
    char err[256];

    /* admin_socket: beside a unix: relay socket by default, else off. */
    CHECK(config_load(&c, NULL, err, sizeof err) == 0);
    CHECK_STR(c.admin_socket, "/run/chatd/admin.sock");
    CHECK(c.signin_rate == 0 && c.signin_burst == 0 && c.signin_per_addr == 0);
    config_free(&c);
    /* (a tcp: relay needs a secret file: issue 13) */
    char secret[] = "/tmp/test_admin_secret_XXXXXX";
    int sfd = mkstemp(secret);
    CHECK(sfd >= 0 && write(sfd, "0123456789abcdef0123\n", 21) == 21);
    close(sfd);
    char tcp_conf[256];
    snprintf(tcp_conf, sizeof tcp_conf, "relay_listen tcp:127.0.0.1:5281\n"
             "relay_secret_file %s\n", secret);
    CHECK(load(&c, tcp_conf, err, sizeof err) == 0);
    unlink(secret);
    CHECK(c.admin_socket == NULL);
    config_free(&c);
    CHECK(load(&c, "admin_socket off\n", err, sizeof err) == 0);
    CHECK(c.admin_socket == NULL);
    config_free(&c);
    CHECK(load(&c, "relay_listen unix:relay.sock\n", err, sizeof err) == 0);
    CHECK_STR(c.admin_socket, "admin.sock");
    config_free(&c);
    CHECK(load(&c, "admin_socket /tmp/x/ctl.sock\nsignin_rate 2.5\nsignin_burst 20\n"
                   "signin_per_addr 6\n", err, sizeof err) == 0);
    CHECK_STR(c.admin_socket, "/tmp/x/ctl.sock");
    CHECK(c.signin_rate == 2.5 && c.signin_burst == 20 && c.signin_per_addr == 6);
    config_free(&c);
    CHECK(load(&c, "signin_rate fast\n", err, sizeof err) == -1);
    CHECK(strstr(err, ":1: signin_rate: expected") != NULL);
    config_free(&c);
    CHECK(load(&c, "signin_rate -1\n", err, sizeof err) == -1);
    config_free(&c);

    /* The session cap counts native and BOSH sessions together. */
    static chatd d;
    CHECK(config_load(&d.cfg, NULL, err, sizeof err) == 0);
    d.stats.c2s_sessions = 5;
    d.stats.bosh_sessions = 7;
    CHECK(chatd_session_slots_full(&d) == 0);      /* 0 = unlimited */
    d.cfg.max_sessions = 13;
    CHECK(chatd_session_slots_full(&d) == 0);
    d.cfg.max_sessions = 12;
    CHECK(chatd_session_slots_full(&d) == 1);
    d.stats.bosh_sessions = 6;
    CHECK(chatd_session_slots_full(&d) == 0);

    /* Commands, with no router or rooms yet (nothing bound). */
    strbuf out = STRBUF_INIT;
    const char *s = run(&d, "stats", &out);
    static const char head[] = "node n1\nsessions 11\nc2s_sessions 5\nbosh_sessions 6\n"
                               "bound_sessions 0\nmax_sessions 12\n";
    CHECK(strncmp(s, head, sizeof head - 1) == 0);
    CHECK(strstr(s, "\nrooms 0\n") != NULL);
    CHECK(strlen(s) >= 3 && strcmp(s + strlen(s) - 3, "ok\n") == 0);
    CHECK_STR(run(&d, "  sessions \r", &out), "ok\n");
    CHECK_STR(run(&d, "rooms", &out), "ok\n");
    CHECK_STR(run(&d, "kick alice@localhost", &out), "error: no session for alice@localhost\n");
    CHECK_STR(run(&d, "kick", &out),
              "error: kick wants a JID (user@domain or user@domain/resource)\n");
    CHECK_STR(run(&d, "kick @@", &out),
              "error: kick wants a JID (user@domain or user@domain/resource)\n");
    CHECK_STR(run(&d, "room-destroy lobby", &out),
              "error: no such room lobby@conference.localhost\n");
    CHECK_STR(run(&d, "stats now", &out),
              "error: unknown command (stats, sessions, kick JID, rooms, room-destroy ROOM)\n");
    CHECK_STR(run(&d, "", &out), "error: empty command\n");
    sb_free(&out);
    config_free(&d.cfg);
    return unit_done("admin");
}
