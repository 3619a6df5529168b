/* test_config: defaults, parsing of every kind of value, errors name the line. */
#include <stdlib.h>
#include <unistd.h>
#include "unit.h"
#include "../../chatd/core/config.h"
#include "../../chatd/core/log.h"

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
    CHECK(c.muc_history_buffer == 4194304 && c.muc_max_rooms_per_user == 20 &&
          c.muc_room_idle == 300);
    CHECK(c.log_level == LOG_INFO && c.daemonize == 0 && c.pidfile == NULL);
    CHECK(c.tls_cert == NULL && c.allow_plain_without_tls == 0);
    /* issue 14 limits */
    CHECK(c.c2s_auth_timeout == 30 && c.c2s_keepalive == 60);
    CHECK(c.c2s_ping_idle == 120 && c.c2s_ping_timeout == 30 && c.c2s_read_budget == 65536);
    CHECK(c.stanza_rate == 20 && c.stanza_burst == 100 && c.stanza_flood_close == 100);
    CHECK(c.byte_rate == 65536 && c.byte_burst == 262144 && c.bosh_ack_buffer == 1048576);
    /* issue 14 quotas: a roster of a 1,000-person team fits */
    CHECK(c.offline_max_messages == 100 && c.offline_max_bytes == 1048576);
    CHECK(c.offline_sender_share == 25 && c.max_roster_items == 2000);
    CHECK(c.max_directed_presences == 1000);
    /* issue 17: XEP-0198 */
    CHECK(c.sm_max_unacked == 1000 && c.sm_max_unacked_bytes == 1048576);
    CHECK(c.sm_resume_timeout == 300 && c.sm_ack_every == 10 && c.sm_ack_interval == 30);
    config_free(&c);
    {
        char err[256];
        const char *q = unit_write_tmp("sm_max_unacked 0\nsm_max_unacked_bytes 0\n"
                                       "sm_resume_timeout 0\nsm_ack_every 1\nsm_ack_interval 0\n");
        CHECK(config_load(&c, q, err, sizeof(err)) == 0);
        CHECK(c.sm_max_unacked == 0 && c.sm_max_unacked_bytes == 0);
        CHECK(c.sm_resume_timeout == 0 && c.sm_ack_every == 1 && c.sm_ack_interval == 0);
        config_free(&c);
        q = unit_write_tmp("sm_resume_timeout 86401\n");
        CHECK(config_load(&c, q, err, sizeof(err)) < 0 && strstr(err, "sm_resume_timeout"));
        config_free(&c);
        q = unit_write_tmp("sm_max_unacked lots\n");
        CHECK(config_load(&c, q, err, sizeof(err)) < 0);
        config_free(&c);
    }
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

    /* issue 16: several nodes; the subscriber is one of redis_max_conns */
    {
        CHECK(config_load(&c, NULL, err, sizeof(err)) == 0);
        CHECK(c.cluster == 0 && c.cluster_ttl_ms == 3000);
        config_free(&c);
        const char *q = unit_write_tmp("cluster yes\ncluster_ttl_ms 900\n");
        CHECK(config_load(&c, q, err, sizeof(err)) == 0);
        CHECK(c.cluster == 1 && c.cluster_ttl_ms == 900);
        config_free(&c);
        q = unit_write_tmp("cluster yes\nredis_max_conns 1\n");
        CHECK(config_load(&c, q, err, sizeof(err)) < 0 && strstr(err, "redis_max_conns"));
        config_free(&c);
        q = unit_write_tmp("cluster_ttl_ms 100\n");
        CHECK(config_load(&c, q, err, sizeof(err)) < 0 && strstr(err, "300..600000"));
        config_free(&c);
        q = unit_write_tmp("cluster maybe\n");
        CHECK(config_load(&c, q, err, sizeof(err)) < 0);
        config_free(&c);
    }

    {
        const char *q = unit_write_tmp("c2s_auth_timeout 5\nc2s_ping_idle 0\nstanza_rate 3\n"
                                       "byte_rate 100\nbosh_ack_buffer 4096\nmax_output 65536\n");
        CHECK(config_load(&c, q, err, sizeof(err)) == 0);
        CHECK(c.c2s_auth_timeout == 5 && c.c2s_ping_idle == 0 && c.stanza_rate == 3);
        CHECK(c.byte_rate == 100 && c.bosh_ack_buffer == 4096);
        CHECK(c.byte_burst == 16384);     /* unset: a quarter of max_output */
        config_free(&c);
        q = unit_write_tmp("max_output 65536\nbyte_burst 40000\n");
        CHECK(config_load(&c, q, err, sizeof(err)) == -1);
        CHECK(strstr(err, "byte_burst") != NULL);
        config_free(&c);
        q = unit_write_tmp("max_output 65536\nbyte_burst 40000\nbyte_rate 0\n");
        CHECK(config_load(&c, q, err, sizeof(err)) == 0);
        config_free(&c);
        q = unit_write_tmp("bosh_ack_buffer 10\n");
        CHECK(config_load(&c, q, err, sizeof(err)) == -1);
        config_free(&c);
        unlink(q);
    }

    /* A tcp: relay needs relay_secret_file (issue 13). */
    char secret[4096];
    snprintf(secret, sizeof secret, "%s", unit_write_tmp("0123456789abcdef0123\n"));
    char secret_line[4200];
    snprintf(secret_line, sizeof secret_line, "relay_secret_file %s\n", secret);
    char text[8192];
    snprintf(text, sizeof text, "%s%s",
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
        "pidfile /tmp/chatd.pid\n"
        "muc_max_rooms_per_user 0\n"
        "muc_room_idle 5\n"
        "muc_history_buffer 1000\n", secret_line);
    const char *p = unit_write_tmp(text);
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
    CHECK(c.relay_secret_len == 20 && !memcmp(c.relay_secret, "0123456789abcdef0123", 20));
    CHECK(c.muc_max_rooms_per_user == 0 && c.muc_room_idle == 5 && c.muc_history_buffer == 1000);
    config_free(&c);
    unlink(p);
    unlink(secret);

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

    /* password sign-ins (issue 13): defaults, values, bounds */
    CHECK(config_load(&c, NULL, err, sizeof(err)) == 0);
    CHECK(c.auth_fail_account == 5 && c.auth_fail_addr == 20 && c.auth_fail_decay == 60);
    CHECK(c.auth_fail_delay_ms == 3000 && c.auth_threads == 2 && c.auth_queue == 64);
    CHECK(c.auth_secret == NULL);
    config_free(&c);
    p = unit_write_tmp("auth_fail_account 0\nauth_fail_addr 7\nauth_fail_decay 5\n"
                       "auth_fail_delay_ms 0\nauth_threads 4\nauth_queue 9\n"
                       "auth_secret abcdefghijklmnopq\n");
    CHECK(config_load(&c, p, err, sizeof(err)) == 0);
    CHECK(c.auth_fail_account == 0 && c.auth_fail_addr == 7 && c.auth_fail_decay == 5);
    CHECK(c.auth_fail_delay_ms == 0 && c.auth_threads == 4 && c.auth_queue == 9);
    CHECK_STR(c.auth_secret, "abcdefghijklmnopq");
    config_free(&c);
    unlink(p);
    static const char *const bad[] = { "auth_threads 0\n", "auth_threads 65\n",
        "auth_queue 0\n", "auth_fail_decay 0\n", "auth_fail_delay_ms 600001\n", NULL };
    for (int i = 0; bad[i]; i++) {
        p = unit_write_tmp(bad[i]);
        CHECK(config_load(&c, p, err, sizeof(err)) == -1);
        config_free(&c);
        unlink(p);
    }

    /* XMPP over WebSocket (issue 17): ws.sock beside a unix: relay socket
     * (like admin.sock), off with a tcp: relay or when said; the lists are
     * checked at load, so chatd -t names a typo. */
    CHECK(config_load(&c, NULL, err, sizeof(err)) == 0);
    CHECK_STR(c.ws_listen, "unix:/run/chatd/ws.sock");
    CHECK(c.ws_origin == NULL);
    CHECK_STR(c.ws_trusted_proxy, "127.0.0.1 ::1");
    config_free(&c);
    {
        char secret[4096], conf[4200];
        snprintf(secret, sizeof(secret), "%s", unit_write_tmp("0123456789abcdef0123456789\n"));
        snprintf(conf, sizeof(conf), "relay_listen tcp:127.0.0.1:5281\nrelay_secret_file %s\n",
                 secret);
        p = unit_write_tmp(conf);
        CHECK(config_load(&c, p, err, sizeof(err)) == 0 && c.ws_listen == NULL);
        config_free(&c);
        unlink(p);
        unlink(secret);
    }
    p = unit_write_tmp("relay_listen unix:/tmp/x/relay.sock\nws_listen off\n");
    CHECK(config_load(&c, p, err, sizeof(err)) == 0 && c.ws_listen == NULL);
    config_free(&c);
    unlink(p);
    p = unit_write_tmp("ws_listen 127.0.0.1:5280\nws_origin https://a.example *\n"
                       "ws_trusted_proxy 10.0.0.1, ::1\n");
    CHECK(config_load(&c, p, err, sizeof(err)) == 0);
    CHECK_STR(c.ws_listen, "127.0.0.1:5280");
    CHECK_STR(c.ws_origin, "https://a.example *");
    config_free(&c);
    unlink(p);
    static const char *const bad_ws[] = { "ws_trusted_proxy 10.0.0.0/8\n",
        "ws_trusted_proxy localhost\n", "ws_origin chat.example.com\n", NULL };
    for (int i = 0; bad_ws[i]; i++) {
        p = unit_write_tmp(bad_ws[i]);
        CHECK(config_load(&c, p, err, sizeof(err)) == -1 && strstr(err, "ws_"));
        config_free(&c);
        unlink(p);
    }

    CHECK(config_load(&c, "/nonexistent/chatd.conf", err, sizeof(err)) == -1);
    config_free(&c);
    return unit_done("config");
}
