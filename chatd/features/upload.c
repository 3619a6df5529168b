/*
 * upload: XEP-0363 slots (see upload.h). A slot request is answered after
 * one Redis script has checked and counted the user's quota, so two
 * requests on two devices cannot both slip under it. The answer's URLs
 * carry the signed slot (common/upload_slot.h); the file itself never
 * passes through chatd.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/rand.h>

#include "router.h"
#include "log.h"
#include "upload.h"
#include "../../common/upload_slot.h"

int upload_is_service(const chatd *d, const char *domain)
{
    return d->cfg.upload_url && d->cfg.upload_domain && domain &&
           strcmp(d->cfg.upload_domain, domain) == 0;
}

static void send_to(chatd *d, xs_node *st)
{
    router_deliver(d, xs_attr_get(st, "to"), st);
    xs_free(st);
}

static void add_field(xs_node *x, const char *var, const char *type, const char *value)
{
    xs_node *f = xs_add_elem(x, NS_DATA_FORMS, "field");
    xs_set_attr(f, "var", var);
    if (type) xs_set_attr(f, "type", type);
    xs_node *v = xs_add_elem(f, NS_DATA_FORMS, "value");
    xs_add_text(v, value, strlen(value));
}

/* XEP-0363 §2: identity store/file, the feature, and the largest file
 * as an XEP-0128 form so clients can refuse a file before asking. */
int upload_disco_info(const iq_request *req)
{
    if (!req->get || xs_attr_get(req->q, "node")) return -1;
    char max[32];
    xs_node *res = iq_result(req->st);
    xs_node *q = xs_add_elem(res, NS_DISCO_INFO, "query");
    xs_node *id = xs_add_elem(q, NS_DISCO_INFO, "identity");
    xs_set_attr(id, "category", "store");
    xs_set_attr(id, "type", "file");
    xs_set_attr(id, "name", "HTTP File Upload");
    xs_set_attr(xs_add_elem(q, NS_DISCO_INFO, "feature"), "var", NS_DISCO_INFO);
    xs_set_attr(xs_add_elem(q, NS_DISCO_INFO, "feature"), "var", NS_HTTP_UPLOAD);
    xs_node *x = xs_add_elem(q, NS_DATA_FORMS, "x");
    xs_set_attr(x, "type", "result");
    add_field(x, "FORM_TYPE", "hidden", NS_HTTP_UPLOAD);
    snprintf(max, sizeof(max), "%llu", req->d->cfg.upload_max_size);
    add_field(x, "max-file-size", NULL, max);
    send_to(req->d, res);
    return 0;
}

int upload_disco_items(const iq_request *req)
{
    if (!req->get || xs_attr_get(req->q, "node")) return -1;
    xs_node *res = iq_result(req->st);
    xs_add_elem(res, NS_DISCO_ITEMS, "query");
    send_to(req->d, res);
    return 0;
}

/* An <error/> answer to st with a stanza condition, a text and, when
 * given, an application-specific element (taken). */
static void refuse(chatd *d, const xs_node *st, const char *type, const char *cond,
                   const char *text, xs_node *app)
{
    xs_node *err = stanza_new("iq", xs_attr_get(st, "to"), xs_attr_get(st, "from"),
                              "error", xs_attr_get(st, "id"));
    xs_node *e = xs_add_elem(err, NS_CLIENT, "error");
    xs_set_attr(e, "type", type);
    xs_add_elem(e, NS_STANZAS, cond);
    if (text) {
        xs_node *t = xs_add_elem(e, NS_STANZAS, "text");
        xs_add_text(t, text, strlen(text));
    }
    if (app) xs_append_child(e, app);
    send_to(d, err);
}

static void refuse_too_large(chatd *d, const xs_node *st)
{
    char max[32], text[96];
    snprintf(max, sizeof(max), "%llu", d->cfg.upload_max_size);
    snprintf(text, sizeof(text), "File too large: the largest file is %s bytes", max);
    xs_node *ftl = xs_new(NS_HTTP_UPLOAD, "file-too-large");
    xs_node *m = xs_add_elem(ftl, NS_HTTP_UPLOAD, "max-file-size");
    xs_add_text(m, max, strlen(max));
    refuse(d, st, "modify", "not-acceptable", text, ftl);
}

typedef struct slot_ctx {
    chatd             *d;
    xs_node           *iq;      /* the request (owned) */
    char               id[UPLOAD_ID_LEN + 1];
    char               name[UPLOAD_NAME_MAX + 1];
    char               ctype[UPLOAD_CTYPE_MAX + 1];
    char              *local;
    unsigned long long size;
} slot_ctx;

static void slot_ctx_free(slot_ctx *c)
{
    xs_free(c->iq);
    free(c->local);
    free(c);
}

/* The quota and the file count, checked and charged in one step. An
 * entry "<slot id> <size>" scored with the time it stops counting
 * (now + upload_retention; +inf for ever); expired entries go first.
 * Returns {1, used} (granted), {0, used} (over quota), {-1, files}. */
static const char quota_script[] =
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1]) "
    "local n = redis.call('ZCARD', KEYS[1]) "
    "if n >= tonumber(ARGV[6]) then return {-1, n} end "
    "local used = 0 "
    "local quota = tonumber(ARGV[3]) "
    "if quota > 0 then "
    "  for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do "
    "    used = used + (tonumber(string.match(m, ' (%d+)$')) or 0) "
    "  end "
    "  if used + tonumber(ARGV[2]) > quota then return {0, used} end "
    "end "
    "redis.call('ZADD', KEYS[1], ARGV[4], ARGV[5]) "
    "if tonumber(ARGV[7]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[7]) end "
    "return {1, used}";

static void answer_slot(slot_ctx *c)
{
    chatd *d = c->d;
    const chatd_config *cfg = &d->cfg;
    char sig[UPLOAD_SIG_HEX + 1], user[3 * 1024 + 1];
    upload_slot s = {
        .id = c->id, .name = c->name, .size = c->size, .content_type = c->ctype,
        .expires = (long long)time(NULL) + cfg->upload_slot_ttl, .user = c->local,
    };
    if (upload_slot_sign((const unsigned char *)cfg->upload_key, cfg->upload_key_len,
                         &s, sig) != 0 ||
        upload_query_escape(c->local, user, sizeof(user)) == (size_t)-1) {
        log_warn("BOSH00801: upload: cannot sign a slot for %s", c->local);
        router_bounce(d, c->iq, "wait", "internal-server-error");
        return;
    }
    size_t cap = strlen(cfg->upload_url) + sizeof(c->id) + sizeof(c->name) +
                 strlen(user) + sizeof(sig) + 96;
    char *get = malloc(cap), *put = malloc(cap);
    if (!get || !put) abort();
    snprintf(get, cap, "%s/%s/%s", cfg->upload_url, c->id, c->name);
    snprintf(put, cap, "%s?e=%lld&s=%llu&u=%s&h=%s", get, s.expires, c->size, user, sig);

    xs_node *res = iq_result(c->iq);
    xs_node *slot = xs_add_elem(res, NS_HTTP_UPLOAD, "slot");
    xs_set_attr(xs_add_elem(slot, NS_HTTP_UPLOAD, "put"), "url", put);
    xs_set_attr(xs_add_elem(slot, NS_HTTP_UPLOAD, "get"), "url", get);
    log_info("BOSH00802: upload: slot %s for %s: %s, %llu bytes", c->id, c->local,
             c->name, c->size);
    send_to(d, res);
    free(get);
    free(put);
}

static void quota_checked(redisReply *reply, const char *err, void *ud)
{
    slot_ctx *c = ud;
    if (err || !reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[0]->type != REDIS_REPLY_INTEGER) {
        log_warn("BOSH00803: upload: quota check for %s failed: %s", c->local,
                 err ? err : reply && reply->type == REDIS_REPLY_ERROR ? reply->str
                                                                       : "unexpected reply");
        router_bounce(c->d, c->iq, "wait", "internal-server-error");
    } else if (reply->element[0]->integer == 1) {
        answer_slot(c);
    } else {
        char text[160];
        if (reply->element[0]->integer == 0)
            snprintf(text, sizeof(text), "Quota reached: %llu bytes within %u days; "
                     "%lld are used", c->d->cfg.upload_quota, c->d->cfg.upload_retention,
                     (long long)reply->element[1]->integer);
        else
            snprintf(text, sizeof(text), "Quota reached: at most %d files within %u days",
                     UPLOAD_MAX_FILES_PER_USER, c->d->cfg.upload_retention);
        log_info("BOSH00804: upload: slot refused for %s: %s", c->local, text);
        refuse(c->d, c->iq, "wait", "resource-constraint", text, NULL);
    }
    slot_ctx_free(c);
}

/* XEP-0363 §4: <request filename size content-type/> to the service. */
int upload_request(const iq_request *req)
{
    chatd *d = req->d;
    const xs_node *q = req->q;
    if (!req->get || !req->rs) return -1;
    if (!xs_is(q, NS_HTTP_UPLOAD, "request")) return -1;

    const char *fname = xs_attr_get(q, "filename");
    const char *size_s = xs_attr_get(q, "size");
    char *end = NULL;
    unsigned long long size = 0;
    if (size_s && *size_s >= '0' && *size_s <= '9')
        size = strtoull(size_s, &end, 10);
    if (!fname || !*fname || !end || *end || size == 0) {
        refuse(d, req->st, "modify", "bad-request",
               "filename and a size of at least one byte are required", NULL);
        return 0;
    }
    if (size > d->cfg.upload_max_size) {
        refuse_too_large(d, req->st);
        return 0;
    }
    slot_ctx *c = calloc(1, sizeof(*c));
    if (!c) abort();
    if (upload_ctype_normalize(xs_attr_get(q, "content-type"), c->ctype) != 0) {
        free(c);
        refuse(d, req->st, "modify", "bad-request", "unusable content-type", NULL);
        return 0;
    }
    unsigned char rnd[UPLOAD_ID_LEN / 2];
    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        free(c);
        router_bounce(d, req->st, "wait", "internal-server-error");
        return 0;
    }
    for (size_t i = 0; i < sizeof(rnd); i++)
        snprintf(c->id + 2 * i, 3, "%02x", rnd[i]);
    upload_name_sanitize(fname, c->name);
    c->d = d;
    c->iq = xs_copy(req->st);
    c->size = size;
    if (!(c->local = strdup(req->rs->user->local))) abort();

    /* The entry counts until the file is deleted (upload_retention). */
    long long now = (long long)time(NULL);
    char now_s[32], size_a[32], quota_s[32], score[32], member[64], files[16], ttl[32];
    snprintf(now_s, sizeof(now_s), "%lld", now);
    snprintf(size_a, sizeof(size_a), "%llu", size);
    snprintf(quota_s, sizeof(quota_s), "%llu", d->cfg.upload_quota);
    if (d->cfg.upload_retention)
        snprintf(score, sizeof(score), "%lld", now + 86400LL * d->cfg.upload_retention);
    else
        snprintf(score, sizeof(score), "+inf");
    snprintf(member, sizeof(member), "%s %llu", c->id, size);
    snprintf(files, sizeof(files), "%d", UPLOAD_MAX_FILES_PER_USER);
    snprintf(ttl, sizeof(ttl), "%lld", d->cfg.upload_retention
                                           ? 86400LL * d->cfg.upload_retention + 3600 : 0LL);
    redis_async_command(d->redis, quota_checked, c,
                        "EVAL %s 1 chat:upload-use:%s %s %s %s %s %s %s %s",
                        quota_script, c->local, now_s, size_a, quota_s, score, member,
                        files, ttl);
    return 0;
}
