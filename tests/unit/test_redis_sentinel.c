/*
 * test_redis_sentinel: the pure parts of finding the master through
 * Sentinel (common/redis_sentinel.h): the sentinel list and its refusals,
 * reading SENTINEL get-master-addr-by-name and ROLE answers, which error
 * replies mean "failover", the jittered back-off's bounds; and chatd's
 * config keys for it. No server is started (test_55 does that).
 */
#include "unit.h"
#include "../../common/redis_sentinel.h"
#include "../../chatd/core/config.h"

static void test_list(void) {
    redis_sentinels s;
    char err[256];
    memset(&s, 0, sizeof s);
    CHECK(redis_sentinels_add(&s, "10.0.0.1:26380, sentinel-b ,[::1]:5000", err, sizeof err) == 0);
    CHECK(s.n == 3);
    CHECK_STR(s.addr[0].host, "10.0.0.1");
    CHECK(s.addr[0].port == 26380);
    CHECK_STR(s.addr[1].host, "sentinel-b");
    CHECK(s.addr[1].port == 26379);             /* the sentinels' default */
    CHECK_STR(s.addr[2].host, "::1");
    CHECK(s.addr[2].port == 5000);
    CHECK(redis_sentinels_add(&s, "[::2]", err, sizeof err) == 0);
    CHECK(s.addr[3].port == 26379);

    /* password before or after the list: every sentinel gets it */
    memset(&s, 0, sizeof s);
    CHECK(redis_sentinels_set_password(&s, "s3cret", err, sizeof err) == 0);
    CHECK(redis_sentinels_add(&s, "a:1,b:2", err, sizeof err) == 0);
    CHECK_STR(s.addr[0].password, "s3cret");
    CHECK_STR(s.addr[1].password, "s3cret");
    CHECK(redis_sentinels_set_password(&s, "other", err, sizeof err) == 0);
    CHECK_STR(s.addr[1].password, "other");

    memset(&s, 0, sizeof s);
    CHECK(redis_sentinels_add(&s, "", err, sizeof err) != 0);
    CHECK(redis_sentinels_add(&s, "a:1,,b:2", err, sizeof err) != 0);
    CHECK(redis_sentinels_add(&s, "a:0", err, sizeof err) != 0);
    CHECK(redis_sentinels_add(&s, "a:99999", err, sizeof err) != 0);
    CHECK(redis_sentinels_add(&s, "redis://a:1", err, sizeof err) != 0);
    CHECK(redis_sentinels_add(&s, ":pw@a:1", err, sizeof err) != 0);
    CHECK(redis_sentinels_add(&s, "a:1/2", err, sizeof err) != 0);
    memset(&s, 0, sizeof s);
    for (int i = 0; i < REDIS_SENTINEL_MAX; i++)
        CHECK(redis_sentinels_add(&s, "h:1", err, sizeof err) == 0);
    CHECK(redis_sentinels_add(&s, "h:1", err, sizeof err) != 0);   /* 17th */
}

static void test_master_and_check(void) {
    redis_sentinels s;
    redis_url tcp, unix_url;
    char err[256];
    memset(&s, 0, sizeof s);
    CHECK(redis_url_parse("redis://:pw@ignored/3", &tcp, err, sizeof err) == 0);
    CHECK(redis_url_parse("unix:///run/redis.sock", &unix_url, err, sizeof err) == 0);
    CHECK(redis_sentinels_check(&s, &unix_url, err, sizeof err) == 0);   /* none: fine */
    CHECK(redis_sentinels_set_master(&s, "my-master_1.x", err, sizeof err) == 0);
    CHECK(redis_sentinels_check(&s, &tcp, err, sizeof err) != 0);        /* name, no list */
    CHECK(redis_sentinels_add(&s, "h:1", err, sizeof err) == 0);
    CHECK(redis_sentinels_check(&s, &tcp, err, sizeof err) == 0);
    CHECK(redis_sentinels_check(&s, &unix_url, err, sizeof err) != 0);   /* unix: no */
    CHECK(redis_sentinels_set_master(&s, "", err, sizeof err) != 0);
    CHECK(redis_sentinels_set_master(&s, "a b", err, sizeof err) != 0);
    CHECK(redis_sentinels_set_master(&s, "a\r\nPING", err, sizeof err) != 0);
    memset(&s, 0, sizeof s);
    CHECK(redis_sentinels_add(&s, "h:1", err, sizeof err) == 0);
    CHECK(redis_sentinels_check(&s, &tcp, err, sizeof err) != 0);        /* list, no name */
}

static redisReply *str(const char *v) {
    redisReply *r = calloc(1, sizeof *r);
    r->type = REDIS_REPLY_STRING;
    r->str = (char *)v;
    r->len = strlen(v);
    return r;
}

static void test_replies(void) {
    char host[64], err[128];
    int port = 0;
    redisReply *el[3], arr, nil, e;
    memset(&arr, 0, sizeof arr);
    memset(&nil, 0, sizeof nil);
    memset(&e, 0, sizeof e);
    el[0] = str("10.1.2.3");
    el[1] = str("6380");
    arr.type = REDIS_REPLY_ARRAY;
    arr.elements = 2;
    arr.element = el;
    CHECK(redis_sentinel_parse_master(&arr, host, sizeof host, &port, err, sizeof err) == 0);
    CHECK_STR(host, "10.1.2.3");
    CHECK(port == 6380);
    nil.type = REDIS_REPLY_NIL;
    CHECK(redis_sentinel_parse_master(&nil, host, sizeof host, &port, err, sizeof err) == 1);
    e.type = REDIS_REPLY_ERROR;
    e.str = "ERR unknown";
    CHECK(redis_sentinel_parse_master(&e, host, sizeof host, &port, err, sizeof err) == -1);
    CHECK(redis_sentinel_parse_master(NULL, host, sizeof host, &port, err, sizeof err) == -1);
    el[1]->str = "0";   el[1]->len = 1;
    CHECK(redis_sentinel_parse_master(&arr, host, sizeof host, &port, err, sizeof err) == -1);
    el[1]->str = "65536"; el[1]->len = 5;
    CHECK(redis_sentinel_parse_master(&arr, host, sizeof host, &port, err, sizeof err) == -1);
    el[1]->str = "12a";  el[1]->len = 3;
    CHECK(redis_sentinel_parse_master(&arr, host, sizeof host, &port, err, sizeof err) == -1);
    el[1]->str = "80";   el[1]->len = 2;
    char tiny[4];
    CHECK(redis_sentinel_parse_master(&arr, tiny, sizeof tiny, &port, err, sizeof err) == -1);
    arr.elements = 1;
    CHECK(redis_sentinel_parse_master(&arr, host, sizeof host, &port, err, sizeof err) == -1);

    /* ROLE */
    el[0]->str = "master"; el[0]->len = 6;
    arr.elements = 1;
    CHECK(redis_role_is_master(&arr));
    el[0]->str = "slave"; el[0]->len = 5;
    CHECK(!redis_role_is_master(&arr));
    el[0]->str = "sentinel"; el[0]->len = 8;
    CHECK(!redis_role_is_master(&arr));
    CHECK(!redis_role_is_master(&e));
    CHECK(!redis_role_is_master(NULL));
    free(el[0]);
    free(el[1]);

    CHECK(redis_error_means_failover("READONLY You can't write against a read only replica."));
    CHECK(redis_error_means_failover("LOADING Redis is loading the dataset in memory"));
    CHECK(redis_error_means_failover("MASTERDOWN Link with MASTER is down"));
    CHECK(redis_error_means_failover("admission: Redis: READONLY You can't write"));
    CHECK(!redis_error_means_failover("ERR wrong number of arguments"));
    CHECK(!redis_error_means_failover("NOSCRIPT No matching script"));
    CHECK(!redis_error_means_failover(NULL));
}

static void test_backoff(void) {
    /* attempt 0: within [min/2, min]; grows to max, never beyond; jitter
     * spans the lower half */
    for (uint32_t rnd = 0; rnd < 5000; rnd += 7) {
        unsigned a0 = redis_backoff_ms(0, 100, 5000, rnd);
        CHECK(a0 >= 50 && a0 <= 100);
        unsigned a3 = redis_backoff_ms(3, 100, 5000, rnd);
        CHECK(a3 >= 400 && a3 <= 800);
        unsigned big = redis_backoff_ms(40, 100, 5000, rnd);
        CHECK(big >= 2500 && big <= 5000);
    }
    CHECK(redis_backoff_ms(1000000, 100, 5000, 0xffffffffu) <= 5000);
    CHECK(redis_backoff_ms(0, 0, 0, 12345) <= 1);
    unsigned lo = 5000, hi = 0;
    for (uint32_t rnd = 0; rnd < 10000; rnd++) {
        unsigned v = redis_backoff_ms(5, 100, 5000, rnd * 2654435761u);
        if (v < lo) lo = v;
        if (v > hi) hi = v;
    }
    CHECK(lo < 1700 && hi > 3000);      /* really spread: [1600, 3200] */
}

static void test_config_keys(void) {
    chatd_config c;
    char err[512];
    const char *p = unit_write_tmp(
        "redis redis://:pw@placeholder/2\n"
        "redis_sentinels 127.0.0.1:26379,127.0.0.1:26380\n"
        "redis_sentinel_master mymaster\n"
        "redis_sentinel_password spw\n");
    CHECK(p && config_load(&c, p, err, sizeof err) == 0);
    CHECK(c.redis_sentinels.n == 2);
    CHECK_STR(c.redis_sentinels.master, "mymaster");
    CHECK_STR(c.redis_sentinels.addr[1].password, "spw");
    CHECK(c.redis_wait_replicas == 1);       /* with sentinels: on */
    CHECK(c.redis_wait_timeout == 200);
    config_free(&c);
    unlink(p);

    p = unit_write_tmp("redis redis://127.0.0.1/0\n");
    CHECK(p && config_load(&c, p, err, sizeof err) == 0);
    CHECK(c.redis_sentinels.n == 0 && c.redis_wait_replicas == 0);   /* without: off */
    config_free(&c);
    unlink(p);

    p = unit_write_tmp("redis_sentinels 127.0.0.1:26379\nredis_wait_replicas 0\n"
                       "redis_wait_timeout 50\nredis_sentinel_master m\n");
    CHECK(p && config_load(&c, p, err, sizeof err) == 0);
    CHECK(c.redis_wait_replicas == 0 && c.redis_wait_timeout == 50);
    config_free(&c);
    unlink(p);

    const char *bad[] = {
        "redis_sentinels 127.0.0.1:26379\n",                              /* no master name */
        "redis_sentinel_master m\n",                                      /* no sentinels */
        "redis unix:///tmp/r.sock\nredis_sentinels h:1\nredis_sentinel_master m\n",
        "redis_sentinels h:1,\n",
        "redis_wait_replicas 17\n",
        "redis_wait_timeout 0\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        p = unit_write_tmp(bad[i]);
        int rc = p ? config_load(&c, p, err, sizeof err) : 0;
        CHECK(rc != 0);
        config_free(&c);
        if (p) unlink(p);
    }
}

int main(void) {
    test_list();
    test_master_and_check();
    test_replies();
    test_backoff();
    test_config_keys();
    return unit_done("redis_sentinel");
}
