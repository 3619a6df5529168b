/*
 * test_admin_native: chatd's native listener admission and the admin
 * socket, end to end. Starts redis-server (unix socket in a temp dir) and
 * build/chatd as child processes, then speaks raw XMPP over TCP:
 *   - gate closed (chat:signin) -> <auth> gets policy-violation + reason;
 *   - gate open -> PLAIN succeeds, bind works;
 *   - max_sessions 1 -> a second stream gets resource-constraint;
 *   - `chatctl stats`, `sessions list`, `rooms list|destroy`,
 *     `sessions kick` against the running chatd;
 *   - Redis gone -> <auth> gets SASL temporary-auth-failure.
 * Every wait is on a condition with a deadline. Run from the repo root;
 * chatd and chatctl come from the build tree the test binary is in (made
 * if missing), or from $CHATD_BUILD.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <hiredis/hiredis.h>
#include <openssl/evp.h>
#include "unit.h"

#define WAIT_MS 10000

static char dir[64], conf[128], redis_sock[128], admin_sock[128];
static char chatd_bin[256], chatctl_bin[256];   /* $CHATD_BUILD (default build)/... */
static pid_t redis_pid = -1, chatd_pid = -1;
static int c2s_port;

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static pid_t spawn(char *const argv[], const char *log) {
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) { dup2(fd, 1); dup2(fd, 2); close(fd); }
        execvp(argv[0], argv);
        _exit(127);
    }
    return pid;
}

/* Run a command, capture stdout and stderr into out; returns its exit status. */
static int run(char *const argv[], char *out, size_t outlen) {
    int p[2];
    if (pipe(p) < 0) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(p[1], 1);
        dup2(p[1], 2);
        close(p[0]);
        close(p[1]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(p[1]);
    size_t n = 0;
    long long deadline = now_ms() + WAIT_MS;
    for (;;) {
        struct pollfd pf = { .fd = p[0], .events = POLLIN };
        long long left = deadline - now_ms();
        if (left <= 0 || poll(&pf, 1, (int)left) <= 0) break;
        ssize_t r = read(p[0], out + n, outlen - n - 1);
        if (r <= 0) break;
        n += (size_t)r;
        if (n + 1 >= outlen) break;
    }
    out[n] = '\0';
    close(p[0]);
    int st;
    if (waitpid(pid, &st, 0) < 0) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int chatctl(char *out, size_t outlen, const char *a, const char *b, const char *c) {
    char *argv[] = { chatctl_bin, "-c", conf, (char *)a, (char *)b, (char *)c, NULL };
    return run(argv, out, outlen);
}

static int connect_unix(const char *path) {
    struct sockaddr_un sun;
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
    if (connect(fd, (struct sockaddr *)&sun, sizeof sun) == 0) return fd;
    close(fd);
    return -1;
}

/* Wait until a unix socket accepts connections (the server is up). */
static int wait_unix(const char *path) {
    long long deadline = now_ms() + WAIT_MS;
    while (now_ms() < deadline) {
        int fd = connect_unix(path);
        if (fd >= 0) { close(fd); return 1; }
        poll(NULL, 0, 20);   /* the condition is polled, with a deadline */
    }
    return 0;
}

static int free_port(void) {
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0) { close(fd); return -1; }
    close(fd);
    return ntohs(a.sin_port);
}

static int tcp_connect(void) {
    struct sockaddr_in a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)c2s_port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) { close(fd); return -1; }
    return fd;
}

static void say(int fd, const char *s) {
    if (write(fd, s, strlen(s)) != (ssize_t)strlen(s)) fprintf(stderr, "short write\n");
}

/* A client's received bytes; read_until appends until needle shows up
 * (returns 1), or EOF/deadline (returns 0). needle NULL: until EOF. */
typedef struct client {
    int    fd;
    char   buf[65536];
    size_t len;
    int    eof;
} client;

static int read_until(client *c, const char *needle) {
    long long deadline = now_ms() + WAIT_MS;
    for (;;) {
        c->buf[c->len] = '\0';
        if (needle && strstr(c->buf, needle)) return 1;
        if (c->eof) return needle == NULL;
        long long left = deadline - now_ms();
        struct pollfd pf = { .fd = c->fd, .events = POLLIN };
        if (left <= 0 || poll(&pf, 1, (int)left) <= 0) return 0;
        ssize_t r = read(c->fd, c->buf + c->len, sizeof c->buf - c->len - 1);
        if (r <= 0) c->eof = 1;
        else c->len += (size_t)r;
        if (c->len + 1 >= sizeof c->buf) return 0;
    }
}

static const char HEADER[] =
    "<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";

/* Connect and open a stream; 1 when the features arrived. */
static int client_open(client *c) {
    memset(c, 0, sizeof *c);
    c->fd = tcp_connect();
    if (c->fd < 0) return 0;
    say(c->fd, HEADER);
    return read_until(c, "</stream:features>");
}

static void client_auth_plain(client *c, const char *user, const char *pw) {
    unsigned char raw[256];
    char b64[400], xml[600];
    size_t n = 0;
    raw[n++] = 0;
    memcpy(raw + n, user, strlen(user)); n += strlen(user);
    raw[n++] = 0;
    memcpy(raw + n, pw, strlen(pw)); n += strlen(pw);
    EVP_EncodeBlock((unsigned char *)b64, raw, (int)n);
    snprintf(xml, sizeof xml,
             "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>", b64);
    say(c->fd, xml);
}

static void redis_do(const char *fmt, const char *a, const char *b) {
    redisContext *r = redisConnectUnix(redis_sock);
    CHECK(r && !r->err);
    if (!r || r->err) { if (r) redisFree(r); return; }
    redisReply *rep = redisCommand(r, fmt, a, b);
    CHECK(rep && rep->type != REDIS_REPLY_ERROR);
    if (rep) freeReplyObject(rep);
    redisFree(r);
}

/* SIGTERM, then wait for the exit within the deadline (SIGKILL after). */
static int stop_child(pid_t *pid) {
    int st = -1;
    if (*pid <= 0) return -1;
    kill(*pid, SIGTERM);
    long long deadline = now_ms() + WAIT_MS;
    for (;;) {
        pid_t r = waitpid(*pid, &st, WNOHANG);
        if (r == *pid) break;
        if (now_ms() > deadline) { kill(*pid, SIGKILL); waitpid(*pid, &st, 0); break; }
        poll(NULL, 0, 10);
    }
    *pid = -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void cleanup(void) {
    if (chatd_pid > 0) { kill(chatd_pid, SIGKILL); waitpid(chatd_pid, NULL, 0); }
    if (redis_pid > 0) { kill(redis_pid, SIGKILL); waitpid(redis_pid, NULL, 0); }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (getenv("KEEP_TEST_DIR")) { fprintf(stderr, "kept %s\n", dir); return; }
    if (dir[0] && system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

int main(int argc, char **argv) {
    (void)argc;
    char out[16384], path[160];
    signal(SIGPIPE, SIG_IGN);
    if (system("command -v redis-server >/dev/null 2>&1") != 0) {
        printf("admin_native: redis-server not installed, skipped\n");
        return unit_done("admin_native");
    }
    /* The build tree this test binary lives in (BUILD/tests/test_x), so
     * `make unit-asan` tests build-asan's chatd; $CHATD_BUILD overrides. */
    char bdir[200] = "build";
    const char *slash = strstr(argv[0], "/tests/");
    if (getenv("CHATD_BUILD")) snprintf(bdir, sizeof bdir, "%s", getenv("CHATD_BUILD"));
    else if (slash && (size_t)(slash - argv[0]) < sizeof bdir)
        snprintf(bdir, sizeof bdir, "%.*s", (int)(slash - argv[0]), argv[0]);
    snprintf(chatd_bin, sizeof chatd_bin, "%s/chatd", bdir);
    snprintf(chatctl_bin, sizeof chatctl_bin, "%s/chatctl", bdir);
    if (access(chatd_bin, X_OK) != 0 || access(chatctl_bin, X_OK) != 0) {
        char cmd[700];
        snprintf(cmd, sizeof cmd, "make -s BUILD=%s %s %s >&2", bdir, chatd_bin, chatctl_bin);
        CHECK(system(cmd) == 0);
    }

    snprintf(dir, sizeof dir, "/tmp/test_admin_XXXXXX");
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
    atexit(cleanup);
    snprintf(redis_sock, sizeof redis_sock, "%s/redis.sock", dir);
    snprintf(admin_sock, sizeof admin_sock, "%s/admin.sock", dir);
    snprintf(conf, sizeof conf, "%s/chatd.conf", dir);
    c2s_port = free_port();
    CHECK(c2s_port > 0);

    FILE *f = fopen(conf, "w");
    fprintf(f, "domain localhost\nredis unix://%s\nrelay_listen unix:%s/relay.sock\n"
               "c2s_listen 127.0.0.1:%d\nadmin_socket %s\nplain_without_tls yes\n"
               "max_sessions 1\nlogfile %s/chatd.log\nlog_level debug\n",
            redis_sock, dir, c2s_port, admin_sock, dir);
    fclose(f);

    char *redis_argv[] = { "redis-server", "--port", "0", "--unixsocket", redis_sock,
                           "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
                           "--dir", dir, NULL };
    snprintf(path, sizeof path, "%s/redis.log", dir);
    redis_pid = spawn(redis_argv, path);
    CHECK(wait_unix(redis_sock));

    CHECK(chatctl(out, sizeof out, "adduser", "alice", "secret") == 0);
    redis_do("HSET chat:signin closed 1 reason %s until 0", "maintenance window", NULL);

    char *chatd_argv[] = { chatd_bin, "-f", "-c", conf, NULL };
    snprintf(path, sizeof path, "%s/chatd.out", dir);
    chatd_pid = spawn(chatd_argv, path);
    CHECK(wait_unix(admin_sock));
    struct stat st;
    CHECK(stat(admin_sock, &st) == 0 && (st.st_mode & 0777) == 0600);

    /* 1. Gate closed: the <auth> is answered with a stream error. */
    client a;
    CHECK(client_open(&a));
    CHECK(strstr(a.buf, "<mechanism>PLAIN</mechanism>") != NULL);
    client_auth_plain(&a, "alice", "secret");
    CHECK(read_until(&a, "</stream:stream>"));
    CHECK(strstr(a.buf, "<policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>") != NULL);
    CHECK(strstr(a.buf, "sign-in is closed: maintenance window; try again in") != NULL);
    CHECK(strstr(a.buf, "<success") == NULL);
    CHECK(read_until(&a, NULL));        /* chatd closed the connection */
    close(a.fd);

    CHECK(chatctl(out, sizeof out, "stats", NULL, NULL) == 0);
    CHECK(strstr(out, "signin_refused 1\n") != NULL);
    CHECK(strstr(out, "c2s_sessions 0\n") != NULL);

    /* 2. Gate open: SASL proceeds, the resource binds. */
    redis_do("HSET chat:signin closed %s reason %s", "0", "");
    client b;
    CHECK(client_open(&b));
    client_auth_plain(&b, "alice", "secret");
    CHECK(read_until(&b, "<success"));
    b.len = 0;
    say(b.fd, HEADER);
    CHECK(read_until(&b, "</stream:features>"));
    CHECK(strstr(b.buf, "urn:ietf:params:xml:ns:xmpp-bind") != NULL);
    say(b.fd, "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
              "<resource>test</resource></bind></iq>");
    CHECK(read_until(&b, "<jid>alice@localhost/test</jid>"));

    /* 3. max_sessions 1: the next stream is refused at its header. */
    client c;
    memset(&c, 0, sizeof c);
    c.fd = tcp_connect();
    say(c.fd, HEADER);
    CHECK(read_until(&c, "</stream:stream>"));
    CHECK(strstr(c.buf, "<resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>") != NULL);
    CHECK(strstr(c.buf, "stream:features") == NULL);
    CHECK(read_until(&c, NULL));
    close(c.fd);

    /* 4. The admin socket through chatctl. */
    CHECK(chatctl(out, sizeof out, "stats", NULL, NULL) == 0);
    CHECK(strstr(out, "c2s_sessions 1\n") != NULL);
    CHECK(strstr(out, "bound_sessions 1\n") != NULL);
    CHECK(strstr(out, "max_sessions 1\n") != NULL);
    CHECK(strstr(out, "sessions_refused 1\n") != NULL);
    CHECK(strstr(out, "auth_ok 1\n") != NULL);
    CHECK(chatctl(out, sizeof out, "sessions", "list", NULL) == 0);
    CHECK(strncmp(out, "alice@localhost/test c2s 127.0.0.1:", 35) == 0);

    b.len = 0;
    say(b.fd, "<presence to='lobby@conference.localhost/alice'>"
              "<x xmlns='http://jabber.org/protocol/muc'/></presence>");
    CHECK(read_until(&b, "status code='110'"));
    CHECK(chatctl(out, sizeof out, "rooms", "list", NULL) == 0);
    CHECK_STR(out, "lobby@conference.localhost 1 temporary\n");
    b.len = 0;
    CHECK(chatctl(out, sizeof out, "rooms", "destroy", "lobby") == 0);
    CHECK_STR(out, "destroyed lobby@conference.localhost\n");
    CHECK(read_until(&b, "destroyed by an administrator"));
    CHECK(strstr(b.buf, "type='unavailable'") != NULL);
    CHECK(chatctl(out, sizeof out, "rooms", "list", NULL) == 0);
    CHECK_STR(out, "");
    CHECK(chatctl(out, sizeof out, "rooms", "destroy", "lobby") == 1);
    CHECK_STR(out, "chatctl: no such room lobby@conference.localhost\n");

    CHECK(chatctl(out, sizeof out, "sessions", "kick", "nobody@localhost") == 1);
    CHECK_STR(out, "chatctl: no session for nobody@localhost\n");
    b.len = 0;
    CHECK(chatctl(out, sizeof out, "sessions", "kick", "alice@localhost/test") == 0);
    CHECK_STR(out, "kicked alice@localhost/test\n");
    CHECK(read_until(&b, "</stream:stream>"));
    CHECK(strstr(b.buf, "<policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>") != NULL);
    CHECK(strstr(b.buf, "kicked by an administrator") != NULL);
    CHECK(read_until(&b, NULL));
    close(b.fd);
    CHECK(chatctl(out, sizeof out, "sessions", "list", NULL) == 0);
    CHECK_STR(out, "");

    /* 5. Redis gone: a retryable SASL failure, the stream stays open. */
    stop_child(&redis_pid);
    client d;
    CHECK(client_open(&d));
    client_auth_plain(&d, "alice", "secret");
    CHECK(read_until(&d, "<temporary-auth-failure/>"));
    CHECK(strstr(d.buf, "<stream:error>") == NULL);
    CHECK(!d.eof);
    close(d.fd);

    CHECK(stop_child(&chatd_pid) == 0);
    return unit_done("admin_native");
}
