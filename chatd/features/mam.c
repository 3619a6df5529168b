/*
 * mam: XEP-0313 archives in Redis streams (see mam.h).
 *
 * One stream per archive, chat:mam:<bare JID> (an account's, or a room's
 * at muc_domain). Each entry is written with the id chatd picked when it
 * delivered the message (mam_query.h), so the stanza-id clients saw is the
 * id they page with. Fields: w (the other party: a full or bare JID; in a
 * room the sender's room/nick), x (the message as delivered, serialized).
 *
 * Writing: append() puts "<id>\n<with>\n<xml>" in the archive's outbox
 * (muc_outbox.c: at most mam_max_messages entries per archive, and
 * mam_buffer bytes over all archives; past the byte cap the oldest
 * unwritten entries are dropped and BOSH00751 says how many). A timer
 * sends every outbox with entries once a second, one EVAL each (WRITE
 * below), on the connection keyed by the archive so a query issued later
 * runs after it. A failed or timed-out write is retried with back-off
 * (1 s doubling to 30 s) until it succeeds or SIGTERM gives up after a
 * few seconds. The script skips ids already in the stream, so a retry of
 * a write that did reach Redis adds nothing twice; an id not above the
 * stream's last (another node's clock, or this one's after a restart with
 * the clock set back) is added with a Redis-made id rather than lost.
 * The same script trims to mam_max_messages (MAXLEN) and
 * mam_retention_days (MINID, and PEXPIRE so an idle archive goes away), and
 * skips, for an account's archive, an account that does not exist and a
 * JID its owner blocks (chat:blocklist:, XEP-0191), as of the write.
 *
 * Reading: a query is the same script with the query's arguments: it
 * writes the outbox's entries it carries (idempotent, see above), trims,
 * checks RSM ids exist, then reads one page with XRANGE / XREVRANGE in
 * chunks, filtering on `with` inside Redis.
 */
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <time.h>
#include <apr_pools.h>
#include <apr_hash.h>
#include "mam.h"
#include "muc_outbox.h"
#include "router.h"
#include "log.h"
#include "xmpp_internal.h"

#define MAM_FLUSH_MS      1000
#define MAM_PAGE_DEFAULT  50
#define MAM_PAGE_MAX      250
#define MAM_QUERY_ARGS    8

struct mam_service {
    apr_pool_t *pool;
    apr_hash_t *boxes;        /* archive JID -> its outbox (in outbox.boxes too) */
    mob_set     outbox;
    mam_idgen   gen;
    loop_timer *timer;        /* armed while some outbox exists */
    unsigned    flushing;     /* writes awaiting Redis's answer */
};

/* KEYS: 1 the stream, 2 the account's record (rooms: the stream again,
 * i.e. no check), 3 the account's blocklist. ARGV: 1 MAXLEN (0 none),
 * 2 MINID in ms (0 none), 3 PEXPIRE ms (0 none), 4 how many query
 * arguments follow (0: a write alone), then those (direction f|b, lo, hi,
 * max, with, two RSM ids that must exist or '', '1' to count), then
 * entries as id, with, xml triples. */
static const char script[] =
    "local k = KEYS[1] "
    "local user = KEYS[2] ~= k "
    "local minid, nq = tonumber(ARGV[2]), tonumber(ARGV[4]) "
    "local function ms(id) return tonumber(string.match(id, '^(%d+)')) or 0 end "
    "local function blocked(w) "
    "  if not user then return false end "
    "  local bare = string.match(w, '^([^/]*)') "
    "  local dom = string.match(bare, '@(.*)$') or bare "
    "  return redis.call('SISMEMBER', KEYS[3], w) == 1 or "
    "    redis.call('SISMEMBER', KEYS[3], bare) == 1 or "
    "    redis.call('SISMEMBER', KEYS[3], dom) == 1 "
    "end "
    "local added = 0 "
    "if #ARGV > 4 + nq and ((not user) or redis.call('EXISTS', KEYS[2]) == 1) then "
    "  for i = 5 + nq, #ARGV - 2, 3 do "
    "    local id, w, x = ARGV[i], ARGV[i + 1], ARGV[i + 2] "
    "    if (minid == 0 or ms(id) >= minid) and #redis.call('XRANGE', k, id, id) == 0 "
    "       and not blocked(w) then "
    "      local r = redis.pcall('XADD', k, id, 'w', w, 'x', x) "
    "      if type(r) == 'table' and r.err then redis.call('XADD', k, '*', 'w', w, 'x', x) end "
    "      added = added + 1 "
    "    end "
    "  end "
    "end "
    "if added > 0 then "
    "  if ARGV[1] ~= '0' then redis.call('XTRIM', k, 'MAXLEN', ARGV[1]) end "
    "  if ARGV[3] ~= '0' then redis.call('PEXPIRE', k, ARGV[3]) end "
    "end "
    "if minid ~= 0 then redis.call('XTRIM', k, 'MINID', ARGV[2]) end "
    "if nq == 0 then return added end "
    "local dir, lo, hi, max, with = ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[8]), ARGV[9] "
    "for _, c in ipairs({ARGV[10], ARGV[11]}) do "
    "  if c ~= '' and #redis.call('XRANGE', k, c, c) == 0 then return {'item-not-found'} end "
    "end "
    "local function match(w) "
    "  if with == '' then return true end "
    "  if string.find(with, '/', 1, true) then return w == with end "
    "  return w == with or string.sub(w, 1, #with + 1) == with .. '/' "
    "end "
    "local out, n, more, a, b = {'ok', 1, -1}, 0, false, lo, hi "
    "while max > 0 do "
    "  local chunk "
    "  if dir == 'f' then chunk = redis.call('XRANGE', k, a, b, 'COUNT', 100) "
    "  else chunk = redis.call('XREVRANGE', k, b, a, 'COUNT', 100) end "
    "  for _, e in ipairs(chunk) do "
    "    local f, w, x = e[2], '', '' "
    "    for j = 1, #f, 2 do "
    "      if f[j] == 'w' then w = f[j + 1] elseif f[j] == 'x' then x = f[j + 1] end "
    "    end "
    "    if match(w) then "
    "      if n == max then more = true break end "
    "      n = n + 1 "
    "      out[#out + 1] = e[1] out[#out + 1] = w out[#out + 1] = x "
    "    end "
    "  end "
    "  if more or #chunk < 100 then break end "
    "  local last = chunk[#chunk][1] "
    "  if dir == 'f' then a = '(' .. last else b = '(' .. last end "
    "end "
    "if more then out[2] = 0 end "
    "if ARGV[12] == '1' then out[3] = redis.call('XLEN', k) end "
    "return out";

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The oldest ms an archive keeps (mam_retention_days), 0: no limit. */
static uint64_t retention_min_ms(const chatd *d)
{
    uint64_t keep = (uint64_t)d->cfg.mam_retention_days * 86400000ULL, now = wall_ms();
    return keep && now > keep ? now - keep : 0;
}

static const char *stamp_ms(char *buf, size_t len, uint64_t ms)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char s[32];
    strftime(s, sizeof(s), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, len, "%s.%03uZ", s, (unsigned)(ms % 1000));
    return buf;
}

/* ---- outboxes ---- */

static void arm_timer(chatd *d);

static mob_box *box_get(chatd *d, const char *archive)
{
    struct mam_service *s = d->mam;
    mob_box *b = apr_hash_get(s->boxes, archive, APR_HASH_KEY_STRING);
    if (b) return b;
    unsigned keep = d->cfg.mam_max_messages ? d->cfg.mam_max_messages : (unsigned)-1;
    /* mob_get searches the list first; a new archive is never in it */
    b = calloc(1, sizeof(*b));
    if (!b || !(b->jid = strdup(archive))) abort();
    b->keep = keep;
    b->next = s->outbox.boxes;
    s->outbox.boxes = b;
    apr_hash_set(s->boxes, b->jid, APR_HASH_KEY_STRING, b);
    return b;
}

static void append(chatd *d, const char *archive, const char *id, const char *with,
                   const char *xml, size_t xlen)
{
    struct mam_service *s = d->mam;
    mob_box *b = box_get(d, archive);
    size_t il = strlen(id), wl = strlen(with), n = il + 1 + wl + 1 + xlen;
    char *e = malloc(n);
    if (!e) abort();
    memcpy(e, id, il);
    e[il] = '\n';
    memcpy(e + il + 1, with, wl);
    e[il + 1 + wl] = '\n';
    memcpy(e + il + 1 + wl + 1, xml, xlen);
    unsigned dropped = mob_append(&s->outbox, b, e, n);
    free(e);
    if (dropped)
        log_warn("BOSH00751: mam: unwritten archive entries over mam_buffer (%zu bytes): "
                 "dropped the %u oldest, never archived", s->outbox.cap_bytes, dropped);
    arm_timer(d);
}

/* Split an outbox entry into its three parts. */
static void entry_parts(const char *e, size_t len, const char **p, size_t *l)
{
    const char *nl1 = memchr(e, '\n', len);
    const char *nl2 = memchr(nl1 + 1, '\n', len - (size_t)(nl1 + 1 - e));
    p[0] = e;        l[0] = (size_t)(nl1 - e);
    p[1] = nl1 + 1;  l[1] = (size_t)(nl2 - nl1 - 1);
    p[2] = nl2 + 1;  l[2] = len - (size_t)(nl2 + 1 - e);
}

/* The EVAL's argv for archive `jid`: its keys, limits, nq query
 * arguments and the entries of b (may be NULL). Free *argv, *lens and
 * each of keys[0..2]. */
typedef struct eval_args {
    const char **argv;
    size_t      *lens;
    int          argc;
    char        *keys[3];
    char         nums[3][24];
} eval_args;

static void eval_build(chatd *d, const char *jid, const mob_box *b, int nq,
                       const char **qargs, eval_args *ea)
{
    size_t jl = strlen(jid), kl = jl + 32;
    for (int i = 0; i < 3; i++)
        if (!(ea->keys[i] = malloc(kl))) abort();
    snprintf(ea->keys[0], kl, "chat:mam:%s", jid);
    const char *at = strchr(jid, '@');
    const char *dom = at ? at + 1 : jid;
    if (at && strcmp(dom, d->cfg.domain) == 0) {
        snprintf(ea->keys[1], kl, "chat:user:%.*s", (int)(at - jid), jid);
        snprintf(ea->keys[2], kl, "chat:blocklist:%.*s", (int)(at - jid), jid);
    } else {
        snprintf(ea->keys[1], kl, "%s", ea->keys[0]);
        snprintf(ea->keys[2], kl, "%s", ea->keys[0]);
    }
    snprintf(ea->nums[0], sizeof(ea->nums[0]), "%u", d->cfg.mam_max_messages);
    snprintf(ea->nums[1], sizeof(ea->nums[1]), "%llu",
             (unsigned long long)retention_min_ms(d));
    snprintf(ea->nums[2], sizeof(ea->nums[2]), "%llu",
             (unsigned long long)d->cfg.mam_retention_days * 86400000ULL);
    unsigned n = b ? b->n : 0;
    ea->argc = 3 + 3 + 4 + nq + 3 * (int)n;
    ea->argv = malloc((size_t)ea->argc * sizeof(*ea->argv));
    ea->lens = malloc((size_t)ea->argc * sizeof(*ea->lens));
    if (!ea->argv || !ea->lens) abort();
    static char nqs[8];
    snprintf(nqs, sizeof(nqs), "%d", nq);
    const char *head[] = { "EVAL", script, "3", ea->keys[0], ea->keys[1], ea->keys[2],
                           ea->nums[0], ea->nums[1], ea->nums[2], nqs };
    int k = 0;
    for (size_t i = 0; i < sizeof(head) / sizeof(head[0]); i++, k++) {
        ea->argv[k] = head[i];
        ea->lens[k] = strlen(head[i]);
    }
    for (int i = 0; i < nq; i++, k++) {
        ea->argv[k] = qargs[i];
        ea->lens[k] = strlen(qargs[i]);
    }
    for (unsigned i = 0; i < n; i++, k += 3)
        entry_parts(b->e[i], b->len[i], ea->argv + k, ea->lens + k);
}

static void eval_free(eval_args *ea)
{
    free(ea->argv);
    free(ea->lens);
    for (int i = 0; i < 3; i++) free(ea->keys[i]);
}

typedef struct write_ctx {
    chatd *d;
    char   jid[];
} write_ctx;

static void box_send(chatd *d, mob_box *b);

static void written(redisReply *reply, const char *err, void *ud)
{
    write_ctx *w = ud;
    chatd *d = w->d;
    struct mam_service *s = d->mam;
    mob_box *b = s ? apr_hash_get(s->boxes, w->jid, APR_HASH_KEY_STRING) : NULL;
    if (s && s->flushing) s->flushing--;
    if (b) {
        if (!err && reply && reply->type != REDIS_REPLY_ERROR) {
            mob_written(&s->outbox, b);
        } else {
            mob_failed(b, loop_now_ms(d->loop));
            log_warn("BOSH00750: mam: archive write for %s failed (%s): %u message(s) "
                     "kept, retry %u in %llu ms", w->jid,
                     err ? err : (reply && reply->str) ? reply->str : "bad reply", b->n,
                     b->attempts, (unsigned long long)mob_backoff_ms(b->attempts));
        }
        arm_timer(d);
    }
    free(w);
}

static void box_send(chatd *d, mob_box *b)
{
    eval_args ea;
    eval_build(d, b->jid, b, 0, NULL, &ea);
    size_t jl = strlen(b->jid);
    write_ctx *w = malloc(sizeof(*w) + jl + 1);
    if (!w) abort();
    w->d = d;
    memcpy(w->jid, b->jid, jl + 1);
    mob_sent(b);
    d->mam->flushing++;
    redis_async_commandargv_keyed(d->redis, b->jid, written, w, ea.argc, ea.argv, ea.lens);
    eval_free(&ea);
}

static void box_gone(mob_box *b, void *ud)
{
    struct mam_service *s = ud;
    apr_hash_set(s->boxes, b->jid, APR_HASH_KEY_STRING, NULL);
}

static void flush_tick(loop *l, void *ud)
{
    chatd *d = ud;
    struct mam_service *s = d->mam;
    s->timer = NULL;
    uint64_t now = loop_now_ms(l);
    for (mob_box *b = s->outbox.boxes; b; b = b->next)
        if (mob_due(b, now)) box_send(d, b);
    mob_sweep(&s->outbox, box_gone, s);
    arm_timer(d);
}

static void arm_timer(chatd *d)
{
    struct mam_service *s = d->mam;
    if (!s->timer && s->outbox.boxes && !d->stopping)
        s->timer = loop_timer_add(d->loop, MAM_FLUSH_MS, flush_tick, d);
}

void mam_flush_all(chatd *d)
{
    struct mam_service *s = d->mam;
    if (!s) return;
    loop_timer_cancel(d->loop, s->timer);
    s->timer = NULL;
    /* shutting down: what waits out a back-off is tried once more now */
    for (mob_box *b = s->outbox.boxes; b; b = b->next)
        if (b->n && !b->inflight) box_send(d, b);
}

unsigned mam_writes_pending(const chatd *d)
{
    const struct mam_service *s = d->mam;
    if (!s) return 0;
    unsigned n = s->flushing;
    for (mob_box *b = s->outbox.boxes; b; b = b->next)
        n += b->n && !b->inflight;
    return n;
}

/* ---- archiving ---- */

static int type_is(const xs_node *st, const char *type)
{
    const char *t = xs_attr_get(st, "type");
    return strcmp(t ? t : "", type) == 0;
}

static void stamp(xs_node *st, const char *by, const char *id)
{
    xs_node *sid = xs_add_elem(st, NS_SID, "stanza-id");
    xs_set_attr(sid, "by", by);
    xs_set_attr(sid, "id", id);
}

xs_node *mam_archive_chat(chatd *d, const char *from_full, const char *to_bare,
                          const xs_node *st)
{
    if (!d->mam || !from_full || !to_bare) return NULL;
    if (!(type_is(st, "chat") || type_is(st, "normal") || type_is(st, "")) ||
        !xs_child(st, NS_CLIENT, "body"))
        return NULL;
    char from_bare[JID_MAX + 1], id[MAM_ID_LEN];
    if (!jid_bare_str(from_full, from_bare, sizeof(from_bare))) return NULL;
    mam_id_format(mam_id_next(&d->mam->gen, wall_ms()), id, sizeof(id));
    const char *to = xs_attr_get(st, "to");
    strbuf xml = STRBUF_INIT;
    xs_serialize(st, NULL, &xml);
    append(d, to_bare, id, from_full, xml.data, xml.len);
    if (strcmp(from_bare, to_bare) != 0)
        append(d, from_bare, id, to ? to : to_bare, xml.data, xml.len);
    sb_free(&xml);
    xs_node *out = xs_copy(st);
    stamp(out, to_bare, id);
    return out;
}

void mam_archive_room(chatd *d, const char *room_jid, const char *nick_jid, xs_node *out)
{
    if (!d->mam) return;
    char id[MAM_ID_LEN];
    mam_id_format(mam_id_next(&d->mam->gen, wall_ms()), id, sizeof(id));
    strbuf xml = STRBUF_INIT;
    xs_serialize(out, NULL, &xml);
    append(d, room_jid, id, nick_jid, xml.data, xml.len);
    sb_free(&xml);
    stamp(out, room_jid, id);
}

void mam_strip_stanza_ids(chatd *d, xs_node *st)
{
    xs_node *next;
    for (xs_node *c = xs_child(st, NS_SID, "stanza-id"); c; c = next) {
        next = xs_next_elem(c, NS_SID, "stanza-id");
        jid j;
        const char *by = xs_attr_get(c, "by");
        if (by && jid_parse(by, &j) == 0 &&
            (strcmp(j.domain, d->cfg.domain) == 0 ||
             (d->cfg.muc_domain && strcmp(j.domain, d->cfg.muc_domain) == 0))) {
            xs_unlink(c);
            xs_free(c);
        }
    }
}

void mam_room_forget(chatd *d, const char *room_jid)
{
    struct mam_service *s = d->mam;
    if (!s) return;
    mob_box *b = apr_hash_get(s->boxes, room_jid, APR_HASH_KEY_STRING);
    if (b) {          /* nothing left to write; an in-flight write is outrun by the DEL */
        while (b->n > b->inflight) {
            s->outbox.bytes -= b->len[b->n - 1];
            free(b->e[--b->n]);
        }
    }
    redis_async_command_keyed(d->redis, room_jid, redis_log_error_cb, NULL,
                              "DEL chat:mam:%s", room_jid);
}

/* ---- queries ---- */

typedef struct query_job {
    chatd   *d;
    char    *requester;       /* full JID the results go to */
    char    *archive;         /* the archive's JID: the results' 'from' */
    char    *queryid;
    xs_node *iq;              /* the request */
    int      backward, flip;
} query_job;

static void job_free(query_job *j)
{
    free(j->requester);
    free(j->archive);
    free(j->queryid);
    xs_free(j->iq);
    free(j);
}

static void add_text(xs_node *parent, const char *ns, const char *name, const char *text)
{
    xs_node *e = xs_add_elem(parent, ns, name);
    xs_add_text(e, text, strlen(text));
}

/* The iq result with <fin/>: complete, and the page's first/last/count. */
static void send_fin(chatd *d, rsession *rs, const xs_node *iq, int complete,
                     const char *first, const char *last, long long count)
{
    xs_node *res = iq_result(iq);
    xs_node *fin = xs_add_elem(res, NS_MAM, "fin");
    if (complete) xs_set_attr(fin, "complete", "true");
    xs_node *set = xs_add_elem(fin, NS_RSM, "set");
    if (first) add_text(set, NS_RSM, "first", first);
    if (last) add_text(set, NS_RSM, "last", last);
    if (count >= 0) {
        char n[24];
        snprintf(n, sizeof(n), "%lld", count);
        add_text(set, NS_RSM, "count", n);
    }
    if (rs) session_send(rs, res);
    else router_deliver(d, xs_attr_get(res, "to"), res);
    xs_free(res);
}

static void send_result(rsession *rs, const query_job *j, const redisReply *id,
                        const redisReply *xml)
{
    xs_node *fwd_msg = NULL;
    char err[64];
    if (xs_parse_document(xml->str, xml->len, xml->len + 1, &fwd_msg, err, sizeof(err)) !=
        XS_OK) {
        xs_free(fwd_msg);
        log_warn("BOSH00753: mam: %s holds an entry %s that does not parse (%s): skipped",
                 j->archive, id->str, err);
        return;
    }
    mam_id mid = { 0, 0 };
    mam_id_parse(id->str, &mid);
    char ts[40];
    xs_node *m = stanza_new("message", j->archive, j->requester, NULL, NULL);
    xs_node *r = xs_add_elem(m, NS_MAM, "result");
    if (j->queryid) xs_set_attr(r, "queryid", j->queryid);
    xs_set_attr(r, "id", id->str);
    xs_node *fw = xs_add_elem(r, NS_FORWARD, "forwarded");
    xs_node *dl = xs_add_elem(fw, NS_DELAY, "delay");
    xs_set_attr(dl, "stamp", stamp_ms(ts, sizeof(ts), mid.ms));
    xs_append_child(fw, fwd_msg);
    session_send(rs, m);
    xs_free(m);
}

static void query_read(redisReply *reply, const char *err, void *ud)
{
    query_job *j = ud;
    chatd *d = j->d;
    rsession *rs = d->router ? router_session(d, j->requester) : NULL;
    if (!rs) { job_free(j); return; }         /* the asker is gone */
    if (err || !reply || reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 ||
        reply->element[0]->type != REDIS_REPLY_STRING) {
        log_warn("BOSH00752: mam: query of %s for %s failed: %s", j->archive, j->requester,
                 err ? err : (reply && reply->str) ? reply->str : "bad reply");
        router_bounce(d, j->iq, "wait", "internal-server-error");
        job_free(j);
        return;
    }
    if (strcmp(reply->element[0]->str, "ok") != 0 || reply->elements < 3) {
        router_bounce(d, j->iq, "cancel", "item-not-found");   /* an RSM id not here */
        job_free(j);
        return;
    }
    int complete = reply->element[1]->integer != 0;
    long long count = reply->element[2]->integer;
    size_t n = (reply->elements - 3) / 3;
    /* results in time order (a backward read came newest first), then
     * flip-page reverses the page (XEP-0313 §4.1.2) */
    int reverse = j->backward != j->flip;
    const char *first = NULL, *last = NULL;
    for (size_t k = 0; k < n; k++) {
        size_t i = reverse ? n - 1 - k : k;
        redisReply *id = reply->element[3 + 3 * i], *x = reply->element[5 + 3 * i];
        if (id->type != REDIS_REPLY_STRING || x->type != REDIS_REPLY_STRING) continue;
        if (!first) first = id->str;
        last = id->str;
        send_result(rs, j, id, x);
    }
    send_fin(d, rs, j->iq, complete, first, last, count);
    job_free(j);
}

static void query_form(chatd *d, rsession *rs, const xs_node *st)
{
    static const char *fields[][2] = {
        { "with", "jid-single" }, { "start", "text-single" }, { "end", "text-single" },
        { "after-id", "text-single" }, { "before-id", "text-single" },
    };
    xs_node *res = iq_result(st);
    xs_node *x = xs_add_elem(xs_add_elem(res, NS_MAM, "query"), NS_XDATA, "x");
    xs_set_attr(x, "type", "form");
    xs_node *f = xs_add_elem(x, NS_XDATA, "field");
    xs_set_attr(f, "var", "FORM_TYPE");
    xs_set_attr(f, "type", "hidden");
    add_text(f, NS_XDATA, "value", NS_MAM);
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        f = xs_add_elem(x, NS_XDATA, "field");
        xs_set_attr(f, "var", fields[i][0]);
        xs_set_attr(f, "type", fields[i][1]);
    }
    if (rs) session_send(rs, res);
    else router_deliver(d, xs_attr_get(res, "to"), res);
    xs_free(res);
}

/* A query of `archive` by `requester`. 0, or -1: not a MAM iq. */
static int query(chatd *d, const char *archive, const char *requester, const xs_node *st)
{
    const xs_node *q = xs_child(st, NULL, NULL);
    rsession *rs = router_session(d, requester);
    if (!d->mam || !q || !xs_is(q, NS_MAM, "query")) return -1;
    if (type_is(st, "get")) { query_form(d, rs, st); return 0; }
    mam_query mq;
    const char *cond;
    if (mam_query_parse(q, &mq, MAM_PAGE_DEFAULT, MAM_PAGE_MAX, &cond) != 0) {
        router_bounce(d, st, strcmp(cond, "item-not-found") == 0 ? "cancel" : "modify", cond);
        return 0;
    }
    mam_query_range(&mq, (int64_t)retention_min_ms(d));
    if (mq.empty) {                 /* bounds that cross: nothing can match */
        send_fin(d, rs, st, 1, NULL, NULL, -1);
        return 0;
    }
    char max[16], c1[MAM_ID_LEN] = "", c2[MAM_ID_LEN] = "";
    snprintf(max, sizeof(max), "%u", mq.max);
    if (mq.has_rsm_after) mam_id_format(mq.rsm_after, c1, sizeof(c1));
    if (mq.has_rsm_before) mam_id_format(mq.rsm_before, c2, sizeof(c2));
    const char *qargs[MAM_QUERY_ARGS] = {
        mq.backward ? "b" : "f", mq.lo, mq.hi, max, mq.with, c1, c2,
        mq.want_count ? "1" : "0",
    };
    query_job *j = calloc(1, sizeof(*j));
    if (!j || !(j->requester = strdup(requester)) || !(j->archive = strdup(archive)) ||
        (mq.queryid && !(j->queryid = strdup(mq.queryid))))
        abort();
    j->d = d;
    j->iq = xs_copy(st);
    j->backward = mq.backward;
    j->flip = mq.flip;
    /* The unwritten entries ride along: the query sees them (mam.h). */
    eval_args ea;
    eval_build(d, archive, apr_hash_get(d->mam->boxes, archive, APR_HASH_KEY_STRING),
               MAM_QUERY_ARGS, qargs, &ea);
    redis_async_commandargv_keyed(d->redis, archive, query_read, j, ea.argc, ea.argv, ea.lens);
    eval_free(&ea);
    return 0;
}

/* XEP-0313 §6: every 1:1 message with a body is archived; the answer
 * says so whatever was asked (chatd keeps no per-user rules). */
static void prefs(chatd *d, rsession *rs, const xs_node *st)
{
    xs_node *res = iq_result(st);
    xs_node *p = xs_add_elem(res, NS_MAM, "prefs");
    xs_set_attr(p, "default", "always");
    xs_add_elem(p, NS_MAM, "always");
    xs_add_elem(p, NS_MAM, "never");
    if (rs) session_send(rs, res);
    else router_deliver(d, xs_attr_get(res, "to"), res);
    xs_free(res);
}

int mam_iq(const iq_request *req)
{
    if (!req->rs || req->to != IQ_TO_OWN || !req->q->ns || strcmp(req->q->ns, NS_MAM) != 0)
        return -1;
    if (strcmp(req->q->name, "prefs") == 0) {
        prefs(req->d, req->rs, req->st);
        return 0;
    }
    return query(req->d, req->rs->user->bare, req->rs->full, req->st);
}

void mam_room_iq(chatd *d, const char *room_jid, const xs_node *st)
{
    const char *from = xs_attr_get(st, "from");
    if (!from || query(d, room_jid, from, st) != 0)
        router_bounce(d, st, "cancel", "service-unavailable");
}

/* ---- life cycle ---- */

int mam_init(chatd *d)
{
    struct mam_service *s = calloc(1, sizeof(*s));
    if (!s) return -1;
    if (apr_pool_create(&s->pool, NULL) != APR_SUCCESS) { free(s); return -1; }
    s->boxes = apr_hash_make(s->pool);
    s->outbox.cap_bytes = d->cfg.mam_buffer;
    d->mam = s;
    return 0;
}

void mam_free(chatd *d)
{
    struct mam_service *s = d->mam;
    if (!s) return;
    loop_timer_cancel(d->loop, s->timer);
    mob_free_all(&s->outbox);
    apr_pool_destroy(s->pool);
    free(s);
    d->mam = NULL;
}
