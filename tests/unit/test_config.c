/* test_config: defaults, parsing of every kind of value, errors name the line. */
#include <stdlib.h>
#include <unistd.h>
#include "unit.h"
#include "../../chatd/config.h"
#include "../../chatd/log.h"

int main(void) {
    chatd_config c;
    char err[256] = "";

    CHECK(config_load(&c, NULL, err, sizeof(err)) == 0);
    CHECK_STR(c.domain, "localhost");
    CHECK_STR(c.muc_domain, "conference.localhost");
    CHECK_STR(c.node_id, "n1");
    CHECK_STR(c.redis_url, "redis://127.0.0.1:6379/0");
    CHECK(c.redis_max_conns == 4);
    CHECK_STR(c.c2s_listen, "127.0.0.1:5222");
    CHECK(c.max_stanza == 262144);
    CHECK(c.max_output == 1048576);
    CHECK(c.bosh_max_wait == 60 && c.bosh_max_hold == 1 && c.bosh_inactivity == 60);
    CHECK(c.bosh_max_pause == 120 && c.bosh_polling == 2 && c.muc_history == 20);
    CHECK(c.log_level == LOG_INFO && c.daemonize == 0 && c.pidfile == NULL);
    CHECK(c.tls_cert == NULL && c.allow_plain_without_tls == 0);
    /* issue 14 quotas: a roster of a 1,000-person team fits */
    CHECK(c.offline_max_messages == 100 && c.offline_max_bytes == 1048576);
    CHECK(c.offline_sender_share == 25 && c.max_roster_items == 2000);
    CHECK(c.max_directed_presences == 1000);
    config_free(&c);
    {
        char err[256];
        const char *q = unit_write_tmp("offline_max_messages 5\noffline_max_bytes 0\n"
                                       "offline_sender_share 100\nmax_roster_items 3\n"
                                       "max_directed_presences 2\n");
        CHECK(config_load(&c, q, err, sizeof(err)) == 0);
        CHECK(c.offline_max_messages == 5 && c.offline_max_bytes == 0);
        CHECK(c.offline_sender_share == 100 && c.max_roster_items == 3);
        CHECK(c.max_directed_presences == 2);
        config_free(&c);
        q = unit_write_tmp("offline_sender_share 0\n");
        CHECK(config_load(&c, q, err, sizeof(err)) < 0 && strstr(err, "1..100"));
        config_free(&c);
        q = unit_write_tmp("offline_sender_share 101\n");
        CHECK(config_load(&c, q, err, sizeof(err)) < 0);
        config_free(&c);
    }

    const char *p = unit_write_tmp(
        "# chatd test\n"
        "domain   chat.example.org\n"
        "\n"
        "  node_id n7  \n"
        "redis unix:///tmp/r.sock?db=3\n"
        "redis_max_conns 2\n"
        "relay_listen tcp:127.0.0.1:5999\n"
        "c2s_listen off\n"
        "max_stanza 65536\n"
        "bosh_max_wait 30\n"
        "plain_without_tls yes\n"
        "log_level debug\n"
        "daemonize no\n"
        "pidfile /tmp/chatd.pid\n");
    CHECK(p != NULL);
    CHECK(config_load(&c, p, err, sizeof(err)) == 0);
    CHECK_STR(c.domain, "chat.example.org");
    CHECK_STR(c.muc_domain, "conference.chat.example.org");
    CHECK_STR(c.node_id, "n7");
    CHECK_STR(c.redis_url, "unix:///tmp/r.sock?db=3");
    CHECK(c.redis_max_conns == 2);
    CHECK_STR(c.relay_listen, "tcp:127.0.0.1:5999");
    CHECK_STR(c.c2s_listen, "off");
    CHECK(c.max_stanza == 65536);
    CHECK(c.bosh_max_wait == 30);
    CHECK(c.allow_plain_without_tls == 1);
    CHECK(c.log_level == LOG_DEBUG);
    CHECK_STR(c.pidfile, "/tmp/chatd.pid");
    config_free(&c);
    unlink(p);

    p = unit_write_tmp("domain a.b\nmuc_domain rooms.a.b\n");
    CHECK(config_load(&c, p, err, sizeof(err)) == 0);
    CHECK_STR(c.muc_domain, "rooms.a.b");
    config_free(&c);
    unlink(p);

    p = unit_write_tmp("domain x\nbogus 1\n");
    CHECK(config_load(&c, p, err, sizeof(err)) == -1);
    CHECK(strstr(err, ":2:") != NULL && strstr(err, "bogus") != NULL);
    config_free(&c);
    unlink(p);

    p = unit_write_tmp("node_id N-1\n");
    CHECK(config_load(&c, p, err, sizeof(err)) == -1);
    CHECK(strstr(err, "node_id") != NULL);
    config_free(&c);
    unlink(p);

    p = unit_write_tmp("bosh_max_wait soon\n");
    CHECK(config_load(&c, p, err, sizeof(err)) == -1);
    config_free(&c);
    unlink(p);

    p = unit_write_tmp("tls_cert /x.pem\n");
    CHECK(config_load(&c, p, err, sizeof(err)) == -1);
    CHECK(strstr(err, "tls_key") != NULL);
    config_free(&c);
    unlink(p);

    CHECK(config_load(&c, "/nonexistent/chatd.conf", err, sizeof(err)) == -1);
    config_free(&c);
    return unit_done("config");
}
