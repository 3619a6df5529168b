/*
 * bosh_upload.c - the `bosh-upload` handler: XEP-0363 HTTP File Upload,
 * stored and served by httpd itself (issue 17).
 *
 * chatd hands out slots (chatd/features/upload.c); each PUT URL carries a
 * slot signed with the upload key (common/upload_slot.h):
 *
 *   PUT <Location>/<id>/<name>?e=<expiry>&s=<size>&u=<user>&h=<hmac>
 *   GET <Location>/<id>/<name>
 *
 * PUT: the signature must match (constant time), the slot must not have
 * expired, the body must be exactly the signed size, and the slot must be
 * unused. The body goes to a temporary file in BoshUploadDir that is then
 * link()ed to its final name, so a file is either complete or absent and
 * a second PUT on the same slot is refused (409) instead of replacing it.
 * The name on disk is `<id>-<name>`, both validated here, never a path
 * from the client.
 *
 * GET/HEAD: the file, as an attachment, with a Content-Type taken from a
 * short list of types a browser only displays (upload_serve_type: never
 * HTML or SVG), nosniff and the sandboxing CSP of every mod_bosh answer
 * (bosh_protect_answer). Files older than BoshUploadRetention are gone:
 * refused here at once, deleted by the child housekeeper
 * (bosh_upload_cleanup).
 *
 * The key: BoshUploadKeyFile is read while httpd reads its configuration
 * as root, like BoshRelaySecretFile; the file is root:_chatd 0640, so
 * www-data (CGI, PHP-FPM pools running as www-data, anything the site
 * runs) cannot read it. docs/configuration.md says what remains.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "util_script.h"
#include "apr_strings.h"
#include "apr_file_io.h"
#include "apr_buckets.h"

#include "mod_bosh.h"
#include "../common/relay_secret.h"
#include "../common/upload_slot.h"

#define UPLOAD_HANDLER       "bosh-upload"
#define UPLOAD_TMP_PREFIX    ".tmp-"
#define UPLOAD_TMP_MAX_AGE   3600        /* s: a temp file older is an aborted PUT */
#define UPLOAD_CLEANUP_EVERY 600         /* s between directory scans */
#define UPLOAD_CACHE_CONTROL "private, max-age=86400"

/* ---- directives ---- */

static apr_status_t zero_key(void *data)
{
    bosh_server_conf *c = data;
    if (c->upload_key) {
        volatile char *p = (volatile char *)c->upload_key;
        apr_size_t i;
        for (i = 0; i < c->upload_key_len; i++)
            p[i] = 0;
    }
    return APR_SUCCESS;
}

/* Read as root, now (see the top of this file). */
const char *bosh_set_upload_key_file(cmd_parms *cmd, void *dummy, const char *path)
{
    bosh_server_conf *c = bosh_conf(cmd->server);
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    char why[512], *key = NULL;
    size_t len = 0;
    (void)dummy;

    if (err)
        return err;
    path = ap_server_root_relative(cmd->pool, path);
    if (!path)
        return "BoshUploadKeyFile: bad path";
    if (relay_secret_load(path, &key, &len, why, sizeof(why)) != 0)
        return apr_psprintf(cmd->pool, "BoshUploadKeyFile: %s", why);
    c->upload_key = apr_pstrmemdup(cmd->pool, key, len);
    c->upload_key_len = len;
    relay_secret_free(key, len);
    apr_pool_cleanup_register(cmd->pool, c, zero_key, apr_pool_cleanup_null);
    return NULL;
}

const char *bosh_set_upload_dir(cmd_parms *cmd, void *dummy, const char *path)
{
    bosh_server_conf *c = bosh_conf(cmd->server);
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    (void)dummy;
    if (err)
        return err;
    path = ap_server_root_relative(cmd->pool, path);
    if (!path || path[0] != '/')
        return "BoshUploadDir: expected an absolute directory";
    c->upload_dir = path;
    return NULL;
}

/* ---- helpers ---- */

/* The slot id and name from the last two segments of the path. */
static int parse_path(request_rec *r, const char **id, const char **name)
{
    const char *uri = r->uri, *slash2, *slash1;
    if (!uri || !(slash2 = strrchr(uri, '/')) || slash2 == uri)
        return -1;
    for (slash1 = slash2 - 1; slash1 > uri && *slash1 != '/'; slash1--)
        ;
    if (*slash1 != '/')
        return -1;
    *id = apr_pstrmemdup(r->pool, slash1 + 1, (apr_size_t)(slash2 - slash1 - 1));
    *name = slash2 + 1;
    if (!upload_id_valid(*id) || !upload_name_is_clean(*name))
        return -1;
    return 0;
}

static const char *file_path(request_rec *r, const bosh_server_conf *c,
                             const char *id, const char *name)
{
    return apr_pstrcat(r->pool, c->upload_dir, "/", id, "-", name, NULL);
}

static int parse_ll(const char *s, long long *out)
{
    char *end;
    long long v;
    if (!s || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

/* A short plain-text answer; the protective headers are already on. */
static int answer(request_rec *r, int status, const char *text)
{
    r->status = status;
    ap_set_content_type(r, "text/plain; charset=utf-8");
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    ap_set_content_length(r, (apr_off_t)strlen(text));
    if (!r->header_only)
        ap_rputs(text, r);
    return OK;
}

static int handle_options(request_rec *r, bosh_server_conf *conf)
{
    if (bosh_add_cors(r, conf)) {
        apr_table_setn(r->headers_out, "Access-Control-Allow-Methods", "PUT, GET, OPTIONS");
        apr_table_setn(r->headers_out, "Access-Control-Allow-Headers", "Content-Type");
        apr_table_setn(r->headers_out, "Access-Control-Max-Age", "86400");
    }
    apr_table_setn(r->headers_out, "Allow", "PUT, GET, HEAD, OPTIONS");
    return answer(r, HTTP_OK, "");
}

/* ---- PUT ---- */

/* Read exactly `size` bytes of body into fd. Returns OK, or the status:
 * 413 more than the slot's size, 400 fewer, 500 a write failed. */
static int store_body(request_rec *r, int fd, apr_int64_t size)
{
    enum { BUFSZ = 65536 };
    char *buf = apr_palloc(r->pool, BUFSZ);   /* not on a 256 KiB thread stack */
    apr_int64_t total = 0;
    long n;
    int rv = ap_setup_client_block(r, REQUEST_CHUNKED_DECHUNK);

    if (rv != OK)
        return rv;
    if (!ap_should_client_block(r))
        return size == 0 ? OK : HTTP_BAD_REQUEST;
    while ((n = ap_get_client_block(r, buf, BUFSZ)) > 0) {
        char *p = buf;
        if (total + n > size)
            return HTTP_REQUEST_ENTITY_TOO_LARGE;
        total += n;
        while (n > 0) {
            ssize_t w = write(fd, p, (size_t)n);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0) {
                ap_log_rerror(APLOG_MARK, APLOG_ERR, errno, r,
                              "mod_bosh: BOSH00811: upload: writing to BoshUploadDir failed");
                return errno == ENOSPC || errno == EDQUOT ? HTTP_INSUFFICIENT_STORAGE
                                                          : HTTP_INTERNAL_SERVER_ERROR;
            }
            p += w;
            n -= w;
        }
    }
    if (n < 0)
        return HTTP_BAD_REQUEST;             /* client went away, bad chunk */
    return total == size ? OK : HTTP_BAD_REQUEST;
}

static int handle_put(request_rec *r, bosh_server_conf *c, const char *id,
                      const char *name)
{
    apr_table_t *args = NULL;
    upload_slot s;
    long long expires, size;
    const char *sig, *user, *cl, *final, *tmp;
    char ctype[UPLOAD_CTYPE_MAX + 1];
    struct stat st;
    int fd, rv;

    ap_args_to_table(r, &args);
    sig = apr_table_get(args, "h");
    user = apr_table_get(args, "u");
    if (!sig || !user || !*user || parse_ll(apr_table_get(args, "e"), &expires) != 0 ||
        parse_ll(apr_table_get(args, "s"), &size) != 0) {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r,
                      "mod_bosh: BOSH00812: upload: PUT %s without a slot", r->uri);
        return answer(r, HTTP_FORBIDDEN, "no upload slot in this URL\n");
    }
    if (upload_ctype_normalize(apr_table_get(r->headers_in, "Content-Type"), ctype) != 0)
        return answer(r, HTTP_FORBIDDEN, "unusable Content-Type\n");
    s.id = id;
    s.name = name;
    s.size = (unsigned long long)size;
    s.expires = expires;
    s.user = user;
    /* The slot is signed with the content type the client asked for, or
     * "" when it named none (then the PUT may say anything). */
    s.content_type = ctype;
    if (!upload_slot_verify((const unsigned char *)c->upload_key, c->upload_key_len, &s, sig)) {
        s.content_type = "";
        if (!upload_slot_verify((const unsigned char *)c->upload_key, c->upload_key_len,
                                &s, sig)) {
            /* info, not warning: anyone can send these, one line each. */
            ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r,
                          "mod_bosh: BOSH00813: upload: PUT %s with a signature that does "
                          "not match (forged, altered, or another Content-Type)", r->uri);
            return answer(r, HTTP_FORBIDDEN, "upload slot signature does not match\n");
        }
    }
    if (upload_slot_expired(&s, (long long)apr_time_sec(apr_time_now()))) {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r,
                      "mod_bosh: BOSH00814: upload: PUT %s after its slot expired", r->uri);
        return answer(r, HTTP_FORBIDDEN, "upload slot expired\n");
    }
    cl = apr_table_get(r->headers_in, "Content-Length");
    if (cl) {
        long long n;
        if (parse_ll(cl, &n) != 0)
            return answer(r, HTTP_BAD_REQUEST, "bad Content-Length\n");
        if (n > size)
            return answer(r, HTTP_REQUEST_ENTITY_TOO_LARGE,
                          "the body is larger than the upload slot\n");
        if (n < size)
            return answer(r, HTTP_BAD_REQUEST, "the body is smaller than the upload slot\n");
    }
    final = file_path(r, c, id, name);
    if (lstat(final, &st) == 0)
        return answer(r, HTTP_CONFLICT, "this upload slot was used already\n");

    tmp = apr_psprintf(r->pool, "%s/" UPLOAD_TMP_PREFIX "%s-%" APR_PID_T_FMT "-%lx",
                       c->upload_dir, id, getpid(), (unsigned long)apr_time_now());
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0640);
    if (fd < 0) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, errno, r,
                      "mod_bosh: BOSH00815: upload: cannot create %s (BoshUploadDir must "
                      "exist and be writable by httpd's user)", tmp);
        return answer(r, HTTP_INTERNAL_SERVER_ERROR, "cannot store the upload\n");
    }
    rv = store_body(r, fd, size);
    if (rv == OK && fsync(fd) != 0)
        rv = HTTP_INTERNAL_SERVER_ERROR;
    if (close(fd) != 0 && rv == OK)
        rv = HTTP_INTERNAL_SERVER_ERROR;
    if (rv == OK && link(tmp, final) != 0)
        rv = errno == EEXIST ? HTTP_CONFLICT : HTTP_INTERNAL_SERVER_ERROR;
    unlink(tmp);
    switch (rv) {
    case OK:
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r,
                      "mod_bosh: BOSH00816: upload: stored %s-%s, %" APR_INT64_T_FMT
                      " bytes, for %s", id, name, (apr_int64_t)size, user);
        apr_table_setn(r->headers_out, "Location",
                       ap_construct_url(r->pool, apr_pstrcat(r->pool, r->uri, NULL), r));
        return answer(r, HTTP_CREATED, "stored\n");
    case HTTP_CONFLICT:
        return answer(r, rv, "this upload slot was used already\n");
    case HTTP_REQUEST_ENTITY_TOO_LARGE:
        return answer(r, rv, "the body is larger than the upload slot\n");
    case HTTP_BAD_REQUEST:
        return answer(r, rv, "the body is not the size of the upload slot\n");
    default:
        return answer(r, rv, "cannot store the upload\n");
    }
}

/* ---- GET ---- */

static int expired_file(const bosh_server_conf *c, apr_time_t mtime, apr_time_t now)
{
    return c->upload_retention > 0 &&
           apr_time_sec(mtime) + (apr_int64_t)c->upload_retention * 86400 < apr_time_sec(now);
}

static int handle_get(request_rec *r, bosh_server_conf *c, const char *id, const char *name)
{
    const char *path = file_path(r, c, id, name);
    apr_file_t *f;
    apr_finfo_t fi;
    apr_bucket_brigade *bb;
    struct stat st;
    int rv;

    /* Only a regular file under exactly this name, never through a link:
     * lstat first, then check that what was opened is that same file
     * (httpd's own file cleanup stays on it, so the file bucket may be set
     * aside past this request as the default handler's is). */
    if (lstat(path, &st) != 0 || !S_ISREG(st.st_mode))
        return answer(r, HTTP_NOT_FOUND, "no such file\n");
    if (apr_file_open(&f, path, APR_FOPEN_READ | APR_FOPEN_BINARY |
                      APR_FOPEN_SENDFILE_ENABLED, 0, r->pool) != APR_SUCCESS)
        return answer(r, HTTP_NOT_FOUND, "no such file\n");
    if (apr_file_info_get(&fi, APR_FINFO_NORM, f) != APR_SUCCESS || fi.filetype != APR_REG ||
        fi.inode != st.st_ino || fi.device != st.st_dev ||
        expired_file(c, fi.mtime, apr_time_now()))
        return answer(r, HTTP_NOT_FOUND, "no such file\n");

    r->finfo = fi;
    ap_update_mtime(r, fi.mtime);
    ap_set_last_modified(r);
    ap_set_etag(r);
    ap_set_content_type(r, upload_serve_type(name));
    apr_table_setn(r->headers_out, "Content-Disposition",
                   apr_psprintf(r->pool, "attachment; filename=\"%s\"", name));
    apr_table_setn(r->headers_out, "Cache-Control", UPLOAD_CACHE_CONTROL);
    /* Clients show the picture in an <img> on the page that embeds them,
     * which may be another site (BoshAllowOrigin): only no-cors loads
     * need this, and a stored file is no secret from its URL holder. */
    apr_table_setn(r->headers_out, "Cross-Origin-Resource-Policy", "cross-origin");
    if ((rv = ap_meets_conditions(r)) != OK)
        return rv;
    ap_set_content_length(r, fi.size);
    if (r->header_only)
        return OK;
    bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    apr_brigade_insert_file(bb, f, 0, fi.size, r->pool);
    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_eos_create(r->connection->bucket_alloc));
    return ap_pass_brigade(r->output_filters, bb) == APR_SUCCESS ? OK : AP_FILTER_ERROR;
}

int bosh_upload_handler(request_rec *r)
{
    bosh_server_conf *c;
    const char *id = NULL, *name = NULL;

    if (!r->handler || strcmp(r->handler, UPLOAD_HANDLER) != 0)
        return DECLINED;
    bosh_protect_answer(r);
    c = bosh_conf(r->server);
    r->allowed = (AP_METHOD_BIT << M_GET) | (AP_METHOD_BIT << M_PUT) |
                 (AP_METHOD_BIT << M_OPTIONS);
    if (r->method_number == M_OPTIONS)
        return handle_options(r, c);
    /* A page on another allowed origin (BoshAllowOrigin) reads the PUT's
     * answer and may fetch the file. */
    bosh_add_cors(r, c);
    if (!c->upload_dir || !c->upload_key) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r,
                      "mod_bosh: BOSH00810: upload: SetHandler bosh-upload needs "
                      "BoshUploadDir and BoshUploadKeyFile");
        return answer(r, HTTP_SERVICE_UNAVAILABLE, "upload is not configured\n");
    }
    if (r->method_number != M_GET && r->method_number != M_PUT) {
        ap_allow_methods(r, REPLACE_ALLOW, "GET", "PUT", "OPTIONS", NULL);
        return HTTP_METHOD_NOT_ALLOWED;
    }
    if (parse_path(r, &id, &name) != 0)
        return answer(r, HTTP_NOT_FOUND, "no such file\n");
    if (r->method_number == M_PUT)
        return handle_put(r, c, id, name);
    return handle_get(r, c, id, name);
}

/* ---- start-up check (also apachectl configtest) ---- */

/* Say at start what would otherwise only show as 503/500 on the first
 * upload: one of the two directives without the other, a directory that
 * is not there, a directory anyone may write or read. Warnings: the rest
 * of the site must still start. */
void bosh_upload_check_config(server_rec *s)
{
    bosh_server_conf *c = bosh_conf(s);
    struct stat st;

    if (!c->upload_dir && !c->upload_key)
        return;
    if (!c->upload_dir || !c->upload_key) {
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_WARNING, 0, s,
                     "mod_bosh: BOSH00818: upload: %s is set but not %s: the "
                     "bosh-upload handler answers 503",
                     c->upload_dir ? "BoshUploadDir" : "BoshUploadKeyFile",
                     c->upload_dir ? "BoshUploadKeyFile" : "BoshUploadDir");
        return;
    }
    if (stat(c->upload_dir, &st) != 0 || !S_ISDIR(st.st_mode))
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_WARNING, errno, s,
                     "mod_bosh: BOSH00819: upload: BoshUploadDir %s is not a directory; "
                     "create it, writable by Apache's user only (e.g. install -d -m 0750 "
                     "-o www-data -g www-data %s)", c->upload_dir, c->upload_dir);
    else if (st.st_mode & (S_IWOTH | S_IROTH))
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_WARNING, 0, s,
                     "mod_bosh: BOSH00819: upload: BoshUploadDir %s is %s by everyone "
                     "(mode %04o): chmod o-rwx it", c->upload_dir,
                     (st.st_mode & S_IWOTH) ? "writable" : "readable",
                     (unsigned)(st.st_mode & 07777));
}

/* ---- retention ---- */

/* Delete files past BoshUploadRetention and temp files of aborted PUTs.
 * Called by every child's housekeeper; at most one child scans at a time
 * (a lock file in the directory) and each child at most every
 * UPLOAD_CLEANUP_EVERY seconds. */
void bosh_upload_cleanup(server_rec *s)
{
    static apr_time_t last;
    bosh_server_conf *c = bosh_conf(s);
    apr_time_t now = apr_time_now();
    char lock[4096], path[4096];
    struct dirent *e;
    DIR *dir;
    int lfd, removed = 0;

    if (!c->upload_dir || (last && apr_time_sec(now - last) < UPLOAD_CLEANUP_EVERY))
        return;
    last = now;
    snprintf(lock, sizeof(lock), "%s/.cleanup.lock", c->upload_dir);
    lfd = open(lock, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0640);
    if (lfd < 0)
        return;
    if (flock(lfd, LOCK_EX | LOCK_NB) != 0) {
        close(lfd);
        return;                         /* another child is at it */
    }
    if ((dir = opendir(c->upload_dir)) != NULL) {
        while ((e = readdir(dir)) != NULL) {
            struct stat st;
            int tmp = strncmp(e->d_name, UPLOAD_TMP_PREFIX, strlen(UPLOAD_TMP_PREFIX)) == 0;
            const char *dash = strchr(e->d_name, '-');
            if (!tmp && (!dash || dash - e->d_name != UPLOAD_ID_LEN))
                continue;               /* not ours (the lock, anything else) */
            snprintf(path, sizeof(path), "%s/%s", c->upload_dir, e->d_name);
            if (lstat(path, &st) != 0 || !S_ISREG(st.st_mode))
                continue;
            if (tmp ? apr_time_sec(now) - st.st_mtime > UPLOAD_TMP_MAX_AGE
                    : expired_file(c, apr_time_from_sec(st.st_mtime), now)) {
                if (unlink(path) == 0)
                    removed++;
            }
        }
        closedir(dir);
    }
    if (removed)
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, s,
                     "mod_bosh: BOSH00817: upload: removed %d files past "
                     "BoshUploadRetention %d days (or aborted uploads) from %s",
                     removed, c->upload_retention, c->upload_dir);
    flock(lfd, LOCK_UN);
    close(lfd);
}
