/* test_loose_ends: the configuration side of two small fixes.
 * relay_max_output (the cap on answers an httpd child leaves unread:
 * default, bounds) and config_path_if_present (chatctl reads
 * /etc/chatd/chatd.conf when neither -c nor -r is given, and only then
 * when the file is there). The behaviour itself is shown end to end by
 * tests/integration/test_95_loose_ends.py. */
#include <stdlib.h>
#include <unistd.h>
#include "unit.h"
#include "../../chatd/core/config.h"

static int load(chatd_config *c, const char *text, char *err, size_t errlen) {
    const char *p = unit_write_tmp(text);
    if (!p) return -2;
    int rc = config_load(c, p, err, errlen);
    unlink(p);
    return rc;
}

int main(void) {
    chatd_config c;
    char err[256] = "";

    CHECK(config_load(&c, NULL, err, sizeof(err)) == 0);
    CHECK(c.relay_max_output == 64u * 1024 * 1024);
    config_free(&c);

    CHECK(load(&c, "relay_max_output 65536\n", err, sizeof(err)) == 0);
    CHECK(c.relay_max_output == 65536);
    config_free(&c);
    CHECK(load(&c, "relay_max_output 4294967296\n", err, sizeof(err)) == 0);
    CHECK(c.relay_max_output == 4294967296ull);
    config_free(&c);
    CHECK(load(&c, "relay_max_output 1023\n", err, sizeof(err)) == -1);
    CHECK(strstr(err, "relay_max_output") != NULL && strstr(err, ":1:") != NULL);
    config_free(&c);
    CHECK(load(&c, "relay_max_output 4294967297\n", err, sizeof(err)) == -1);
    config_free(&c);
    CHECK(load(&c, "relay_max_output 64M\n", err, sizeof(err)) == -1);
    config_free(&c);
    /* max_output is a different key and stays what it was */
    CHECK(load(&c, "relay_max_output 2048\n", err, sizeof(err)) == 0);
    CHECK(c.max_output == 1048576);
    config_free(&c);

    CHECK_STR(CHATD_CONF_DEFAULT, "/etc/chatd/chatd.conf");
    const char *p = unit_write_tmp("domain example.org\n");
    CHECK(p != NULL);
    CHECK(config_path_if_present(p) == p);
    unlink(p);
    CHECK(config_path_if_present(p) == NULL);                  /* gone: defaults */
    CHECK(config_path_if_present("/nonexistent-dir/chatd.conf") == NULL);
    CHECK(config_path_if_present("/dev/null/chatd.conf") == NULL);   /* ENOTDIR */
    CHECK(config_path_if_present(NULL) == NULL);
    return unit_done("loose_ends");
}
