/*
 * test_redis_conn: the two Redis URL forms, their defaults, and the
 * inputs that must be refused with a message (no connection is made).
 */
#include "unit.h"
#include "../../common/redis_conn.h"

static void test_tcp(void) {
    redis_url u;
    char err[256], d[300];
    CHECK(redis_url_parse("redis://127.0.0.1:6379/0", &u, err, sizeof err) == 0);
    CHECK(!u.is_unix);
    CHECK_STR(u.host, "127.0.0.1");
    CHECK(u.port == 6379 && u.db == 0);
    CHECK_STR(u.password, "");
    CHECK_STR(redis_url_describe(&u, d, sizeof d), "127.0.0.1:6379");

    CHECK(redis_url_parse("redis://redis.example", &u, err, sizeof err) == 0);
    CHECK_STR(u.host, "redis.example");
    CHECK(u.port == 6379 && u.db == 0);

    CHECK(redis_url_parse("redis://:s3cr%40t@db1:6380/5", &u, err, sizeof err) == 0);
    CHECK_STR(u.password, "s3cr@t");
    CHECK_STR(u.host, "db1");
    CHECK(u.port == 6380 && u.db == 5);

    CHECK(redis_url_parse("redis://:p@ss@h/", &u, err, sizeof err) == 0);
    CHECK_STR(u.password, "p@ss");
    CHECK_STR(u.host, "h");
    CHECK(u.db == 0);

    CHECK(redis_url_parse("redis://[::1]:7000/2", &u, err, sizeof err) == 0);
    CHECK_STR(u.host, "::1");
    CHECK(u.port == 7000 && u.db == 2);
    CHECK_STR(redis_url_describe(&u, d, sizeof d), "[::1]:7000");
}

static void test_unix(void) {
    redis_url u;
    char err[256], d[300];
    CHECK(redis_url_parse("unix:///run/redis/redis.sock", &u, err, sizeof err) == 0);
    CHECK(u.is_unix);
    CHECK_STR(u.path, "/run/redis/redis.sock");
    CHECK(u.db == 0);
    CHECK_STR(redis_url_describe(&u, d, sizeof d), "unix:/run/redis/redis.sock");

    CHECK(redis_url_parse("unix:///tmp/r.sock?db=3&password=a%26b", &u, err, sizeof err) == 0);
    CHECK_STR(u.path, "/tmp/r.sock");
    CHECK(u.db == 3);
    CHECK_STR(u.password, "a&b");

    CHECK(redis_url_parse("unix:/tmp/r.sock?password=x", &u, err, sizeof err) == 0);
    CHECK_STR(u.path, "/tmp/r.sock");
    CHECK_STR(u.password, "x");
}

static void test_bad(void) {
    redis_url u;
    char err[256];
    const char *bad[] = {
        "", "http://h", "redis://", "redis://h:0", "redis://h:65536", "redis://h:12x",
        "redis://h/abc", "redis://user:pw@h", "redis://[::1", "redis://:%zz@h",
        "unix://relative.sock", "unix:///tmp/s?db=x", "unix:///tmp/s?bogus=1",
        "redis://h:", NULL
    };
    for (int i = 0; bad[i]; i++) {
        err[0] = '\0';
        int rc = redis_url_parse(bad[i], &u, err, sizeof err);
        CHECK(rc == -1);
        if (rc != -1) fprintf(stderr, "  accepted: %s\n", bad[i]);
        CHECK(err[0] != '\0');
    }
    CHECK(redis_url_parse(NULL, &u, err, sizeof err) == -1);
}

/* Connecting to a closed port fails with a message naming the target. */
static void test_connect_refused(void) {
    redis_url u;
    char err[256] = "";
    CHECK(redis_url_parse("redis://127.0.0.1:1", &u, err, sizeof err) == 0);
    CHECK(redis_conn_open(&u, "t", 500, 500, err, sizeof err) == NULL);
    CHECK(strstr(err, "127.0.0.1:1") != NULL);
}

int main(void) {
    test_tcp();
    test_unix();
    test_bad();
    test_connect_refused();
    return unit_done("redis_conn");
}
