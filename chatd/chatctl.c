/*
 * chatctl: the operator's tool for accounts (and later rooms, sessions,
 * the sign-in gate). It talks to Redis directly with one blocking,
 * named connection (CLIENT LIST shows chatctl:<host>:<pid>:1).
 *
 *   chatctl [-c chatd.conf | -r REDIS_URL] adduser NAME PASSWORD
 *   chatctl ... passwd NAME PASSWORD       (PASSWORD "-": read one line from stdin)
 *   chatctl ... deluser NAME
 *   chatctl ... users
 *
 * Only SCRAM verifiers (SHA-1 and SHA-256, 4096 iterations, 16-byte
 * random salt) are written; the password itself never reaches Redis.
 *
 * Exit status: 0 done; 1 refused (user exists, no such user, bad name or
 * password); 2 usage; 3 configuration or Redis unavailable.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "config.h"
#include "users.h"
#include "../common/redis_conn.h"
#include "../common/scram.h"

enum { EXIT_OK = 0, EXIT_REFUSED = 1, EXIT_USAGE = 2, EXIT_UNAVAILABLE = 3 };

#define CONNECT_MS 3000
#define COMMAND_MS 5000
#define SALT_LEN   16

typedef struct ctl {
    const char   *redis_url;
    redisContext *redis;        /* opened on first use */
} ctl;

typedef struct command {
    const char *name;
    int         nargs;          /* exact number of arguments after the name */
    const char *usage;
    int       (*run)(ctl *c, char **argv);
} command;

static redisContext *ctl_redis(ctl *c) {
    redis_url u;
    char err[512], host[128], name[200];
    if (c->redis) return c->redis;
    if (redis_url_parse(c->redis_url, &u, err, sizeof err) != 0) {
        fprintf(stderr, "chatctl: %s\n", err);
        return NULL;
    }
    if (gethostname(host, sizeof host) != 0) strcpy(host, "localhost");
    host[sizeof host - 1] = '\0';
    for (char *p = host; *p; p++)        /* CLIENT SETNAME forbids spaces */
        if (*p == ' ') *p = '_';
    snprintf(name, sizeof name, "chatctl:%s:%ld:1", host, (long)getpid());
    c->redis = redis_conn_open(&u, name, CONNECT_MS, COMMAND_MS, err, sizeof err);
    if (!c->redis) fprintf(stderr, "chatctl: cannot use Redis: %s\n", err);
    return c->redis;
}

/* A reply that is NULL or an error: report it, return 1. */
static int reply_failed(ctl *c, redisReply *r, const char *what) {
    if (!r) {
        fprintf(stderr, "chatctl: %s: %s\n", what, c->redis->errstr[0] ? c->redis->errstr : "no reply");
        return 1;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        fprintf(stderr, "chatctl: %s: %s\n", what, r->str);
        freeReplyObject(r);
        return 1;
    }
    return 0;
}

static int check_name(const char *in, char *out, size_t outcap) {
    if (users_normalize_localpart(in, out, outcap) != 0) {
        fprintf(stderr, "chatctl: invalid user name '%s' (1-%d of a-z 0-9 . _ -)\n",
                in, USERS_MAX_LOCALPART);
        return -1;
    }
    return 0;
}

/* "-" reads the password from stdin (keeps it out of ps and history). */
static char *get_password(const char *arg) {
    char *pw;
    if (strcmp(arg, "-") == 0) {
        char line[1024];
        if (!fgets(line, sizeof line, stdin)) return NULL;
        line[strcspn(line, "\r\n")] = '\0';
        pw = strdup(line);
        OPENSSL_cleanse(line, sizeof line);
    } else {
        pw = strdup(arg);
    }
    if (!pw) abort();
    if (!pw[0]) {
        free(pw);
        return NULL;
    }
    return pw;
}

/* Writes both verifiers. mode "new": fail if the user exists (adds
 * 'created'); "update": fail if not. One script so it is atomic.
 * Returns 1 written, 0 exists (new), -1 missing (update). */
static const char SET_USER_LUA[] =
    "local exists = redis.call('EXISTS', KEYS[1]) == 1\n"
    "if ARGV[4] == 'new' and exists then return 0 end\n"
    "if ARGV[4] == 'update' and not exists then return -1 end\n"
    "redis.call('HSET', KEYS[1], 'scram-sha-1', ARGV[1], 'scram-sha-256', ARGV[2])\n"
    "if ARGV[4] == 'new' then redis.call('HSET', KEYS[1], 'created', ARGV[3]) end\n"
    "redis.call('SADD', KEYS[2], ARGV[5])\n"
    "return 1\n";

static int set_user(ctl *c, char **argv, const char *mode) {
    char name[USERS_MAX_LOCALPART + 1], key[sizeof USERS_KEY_PREFIX + USERS_MAX_LOCALPART];
    char v1[256], v256[256], created[32];
    unsigned char salt1[SALT_LEN], salt256[SALT_LEN];
    scram_verifier v;

    if (check_name(argv[0], name, sizeof name) != 0) return EXIT_REFUSED;
    char *pw = get_password(argv[1]);
    if (!pw) {
        fprintf(stderr, "chatctl: empty password\n");
        return EXIT_REFUSED;
    }
    if (RAND_bytes(salt1, SALT_LEN) != 1 || RAND_bytes(salt256, SALT_LEN) != 1) {
        fprintf(stderr, "chatctl: no randomness for the salt\n");
        OPENSSL_cleanse(pw, strlen(pw));
        free(pw);
        return EXIT_UNAVAILABLE;
    }
    int ok = scram_make_verifier(SCRAM_SHA1, pw, salt1, SALT_LEN, SCRAM_DEFAULT_ITERATIONS, &v) == 0 &&
             scram_verifier_format(&v, v1, sizeof v1) > 0 &&
             scram_make_verifier(SCRAM_SHA256, pw, salt256, SALT_LEN, SCRAM_DEFAULT_ITERATIONS, &v) == 0 &&
             scram_verifier_format(&v, v256, sizeof v256) > 0;
    OPENSSL_cleanse(&v, sizeof v);
    OPENSSL_cleanse(pw, strlen(pw));
    free(pw);
    if (!ok) {
        fprintf(stderr, "chatctl: could not compute the SCRAM verifiers\n");
        return EXIT_UNAVAILABLE;
    }

    redisContext *r = ctl_redis(c);
    if (!r) return EXIT_UNAVAILABLE;
    snprintf(key, sizeof key, USERS_KEY_PREFIX "%s", name);
    snprintf(created, sizeof created, "%lld", (long long)time(NULL));
    redisReply *rep = redisCommand(r, "EVAL %s 2 %s %s %s %s %s %s %s", SET_USER_LUA,
                                   key, USERS_SET_KEY, v1, v256, created, mode, name);
    if (reply_failed(c, rep, "writing the user")) return EXIT_UNAVAILABLE;
    long long res = rep->type == REDIS_REPLY_INTEGER ? rep->integer : -2;
    freeReplyObject(rep);
    if (res == 0) {
        fprintf(stderr, "chatctl: user '%s' already exists (use passwd to change the password)\n", name);
        return EXIT_REFUSED;
    }
    if (res == -1) {
        fprintf(stderr, "chatctl: no such user '%s'\n", name);
        return EXIT_REFUSED;
    }
    if (res != 1) {
        fprintf(stderr, "chatctl: unexpected reply from Redis\n");
        return EXIT_UNAVAILABLE;
    }
    printf("%s %s\n", strcmp(mode, "new") == 0 ? "added" : "password changed for", name);
    return EXIT_OK;
}

static int cmd_adduser(ctl *c, char **argv) { return set_user(c, argv, "new"); }
static int cmd_passwd(ctl *c, char **argv)  { return set_user(c, argv, "update"); }

/* The account, its roster and its offline messages go; other users'
 * rosters keep their entry (as on any XMPP server). */
static const char DEL_USER_LUA[] =
    "if redis.call('DEL', KEYS[1]) == 0 then return 0 end\n"
    "redis.call('SREM', KEYS[2], ARGV[1])\n"
    "redis.call('DEL', KEYS[3], KEYS[4])\n"
    "return 1\n";

static int cmd_deluser(ctl *c, char **argv) {
    char name[USERS_MAX_LOCALPART + 1], key[200], roster[200], offline[200];
    if (check_name(argv[0], name, sizeof name) != 0) return EXIT_REFUSED;
    redisContext *r = ctl_redis(c);
    if (!r) return EXIT_UNAVAILABLE;
    snprintf(key, sizeof key, USERS_KEY_PREFIX "%s", name);
    snprintf(roster, sizeof roster, "chat:roster:%s", name);
    snprintf(offline, sizeof offline, "chat:offline:%s", name);
    redisReply *rep = redisCommand(r, "EVAL %s 4 %s %s %s %s %s", DEL_USER_LUA,
                                   key, USERS_SET_KEY, roster, offline, name);
    if (reply_failed(c, rep, "deleting the user")) return EXIT_UNAVAILABLE;
    long long res = rep->type == REDIS_REPLY_INTEGER ? rep->integer : -2;
    freeReplyObject(rep);
    if (res == 0) {
        fprintf(stderr, "chatctl: no such user '%s'\n", name);
        return EXIT_REFUSED;
    }
    printf("deleted %s\n", name);
    return EXIT_OK;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmd_users(ctl *c, char **argv) {
    (void)argv;
    redisContext *r = ctl_redis(c);
    if (!r) return EXIT_UNAVAILABLE;
    redisReply *rep = redisCommand(r, "SMEMBERS %s", USERS_SET_KEY);
    if (reply_failed(c, rep, "listing users")) return EXIT_UNAVAILABLE;
    if (rep->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(rep);
        fprintf(stderr, "chatctl: unexpected reply from Redis\n");
        return EXIT_UNAVAILABLE;
    }
    size_t n = rep->elements;
    char **names = calloc(n ? n : 1, sizeof *names);
    if (!names) abort();
    for (size_t i = 0; i < n; i++)
        names[i] = rep->element[i]->type == REDIS_REPLY_STRING ? rep->element[i]->str : "";
    qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n; i++) printf("%s\n", names[i]);
    free(names);
    freeReplyObject(rep);
    return EXIT_OK;
}

/* Later: signin, rooms, sessions, stats slot in here. */
static const command commands[] = {
    { "adduser", 2, "adduser NAME PASSWORD   add an account (fails if it exists)", cmd_adduser },
    { "passwd",  2, "passwd NAME PASSWORD    set an existing account's password", cmd_passwd },
    { "deluser", 1, "deluser NAME            delete an account, its roster and offline messages", cmd_deluser },
    { "users",   0, "users                   list accounts", cmd_users },
    { NULL, 0, NULL, NULL }
};

static void usage(FILE *f) {
    fprintf(f, "usage: chatctl [-c chatd.conf | -r REDIS_URL] COMMAND [ARGS]\n"
               "PASSWORD \"-\" reads the password from standard input.\ncommands:\n");
    for (const command *c = commands; c->name; c++) fprintf(f, "  %s\n", c->usage);
    fprintf(f, "exit status: 0 done, 1 refused, 2 usage, 3 config or Redis unavailable\n");
}

int main(int argc, char **argv) {
    const char *conf = NULL, *url = NULL;
    int opt;
    while ((opt = getopt(argc, argv, "+c:r:h")) != -1) {
        switch (opt) {
        case 'c': conf = optarg; break;
        case 'r': url = optarg; break;
        case 'h': usage(stdout); return EXIT_OK;
        default:  usage(stderr); return EXIT_USAGE;
        }
    }
    if (conf && url) {
        fprintf(stderr, "chatctl: give -c or -r, not both\n");
        return EXIT_USAGE;
    }
    if (optind >= argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const command *cmd = NULL;
    for (const command *c = commands; c->name; c++)
        if (strcmp(c->name, argv[optind]) == 0) cmd = c;
    if (!cmd) {
        fprintf(stderr, "chatctl: unknown command '%s'\n", argv[optind]);
        usage(stderr);
        return EXIT_USAGE;
    }
    if (argc - optind - 1 != cmd->nargs) {
        fprintf(stderr, "usage: chatctl %s\n", cmd->usage);
        return EXIT_USAGE;
    }

    chatd_config cfg;
    char err[512];
    int cfg_loaded = 0;
    memset(&cfg, 0, sizeof cfg);
    if (!url) {
        /* no -c: chatd's defaults (redis://127.0.0.1:6379/0) */
        if (config_load(&cfg, conf, err, sizeof err) != 0) {
            fprintf(stderr, "chatctl: %s\n", err);
            return EXIT_UNAVAILABLE;
        }
        cfg_loaded = 1;
        url = cfg.redis_url;
    }
    ctl c = { url, NULL };
    int rc = cmd->run(&c, argv + optind + 1);
    if (c.redis) redisFree(c.redis);
    if (cfg_loaded) config_free(&cfg);
    return rc;
}
