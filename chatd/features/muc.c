/*
 * muc: XEP-0045 rooms at cfg.muc_domain (see muc.h).
 *
 * The rules of a room (who may join, kick, ban, the history ring) are in
 * muc_room.c; this file turns stanzas into those rules and back into
 * stanzas, keeps the room table, and talks to Redis:
 *   - a room that is not in memory is created on first join; its
 *     persistent configuration (chat:room:<room>) and last messages
 *     (chat:history:<room>) are read first, and joins wait for that;
 *   - each groupchat message goes to the in-memory history ring and is
 *     delivered from memory; no Redis command is on its path. The ring's
 *     new entries reach chat:history:<room> in batches: a timer writes
 *     every room with new entries at most once a second (one EVAL per
 *     room), and a room is also written when it empties and on SIGTERM
 *     (muc_flush_history), so a restart still replays it.
 *   - a load that fails (error, timeout) is not "no such room": the joins
 *     get a 'wait' error and the room is not created, so nobody becomes
 *     owner of a stored room and no save overwrites it (fail closed);
 *   - a history write that fails waits in the room's outbox (muc_outbox.c,
 *     bounded) and is retried with back-off;
 *   - a persistent room nobody is in leaves memory after muc_room_idle
 *     seconds, and rooms one user may create are capped
 *     (muc_max_rooms_per_user, chat:created:<user>).
 * Groupchat fan-out serializes a message once (without 'to') and splices
 * each recipient's 'to' into the bytes (muc_splice_to).
 */
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <time.h>
#include <apr_pools.h>
#include <apr_hash.h>
#include "muc.h"
#include "muc_room.h"
#include "muc_outbox.h"
#include "muc_history.h"
#include "occupant_id.h"
#include "mam.h"
#include "router.h"
#include "log.h"
#include "xmpp_internal.h"

#define NS_MUC        "http://jabber.org/protocol/muc"
#define NS_MUC_USER   "http://jabber.org/protocol/muc#user"
#define NS_MUC_ADMIN  "http://jabber.org/protocol/muc#admin"
#define NS_MUC_OWNER  "http://jabber.org/protocol/muc#owner"
#define NS_XDATA      "jabber:x:data"
#define NS_ROOMCONFIG "http://jabber.org/protocol/muc#roomconfig"
#define NS_PING       "urn:xmpp:ping"

/* Presences queued for a room while Redis loads it, at most. */
#define MUC_PENDING_JOINS 64

/* Status codes, XEP-0045 §15.6, as bits (written in this order). */
enum {
    ST_100 = 1 << 0, ST_110 = 1 << 1, ST_201 = 1 << 2, ST_210 = 1 << 3,
    ST_301 = 1 << 4, ST_303 = 1 << 5, ST_307 = 1 << 6, ST_321 = 1 << 7, ST_322 = 1 << 8
};
static const int status_codes[] = { 100, 110, 201, 210, 301, 303, 307, 321, 322 };

typedef struct pending_join {
    struct pending_join *next;
    char    *from;
    xs_node *stanza;
} pending_join;

typedef struct room {
    chatd        *d;
    muc_room     *m;
    int           fresh;      /* nothing in Redis: first joiner becomes owner */
    int           loading;    /* waiting for Redis; joins queue up */
    int           loaded;     /* Redis answered the load: saves may write */
    char         *creator;    /* bare JID that created it (muc_max_rooms_per_user) */
    char         *count_for;  /* the joiner whose room count the load read */
    unsigned      created;    /* ... and that count (persistent rooms it created) */
    uint64_t      empty_since;/* loop ms; 0 while occupied (muc_room_idle) */
    redis_async_req *load_req;
    pending_join *joins, *joins_tail;
    unsigned      njoins;     /* queued; at most MUC_PENDING_JOINS */
    unsigned      hist_dirty; /* newest ring entries not yet in Redis */
} room;

struct muc_service {
    apr_pool_t *pool;
    apr_hash_t *rooms;        /* room bare JID -> room */
    loop_timer *flush_timer;  /* armed while some room has hist_dirty */
    unsigned    flushing;     /* history writes awaiting Redis's answer */
    mob_set     outbox;       /* history not yet in Redis, per room */
    loop_timer *idle_timer;   /* unloads persistent rooms left empty */
    loop_timer *retry_timer;  /* next retry of a failed history write */
    unsigned char oid_key[OCCUPANT_ID_KEY];   /* XEP-0421 (occupant_id.c) */
};

/* What an occupant's presence says (see occupant_presence). */
typedef struct pres_opts {
    const char    *type;      /* NULL or "unavailable" */
    unsigned       flags;     /* ST_* for everyone; 110/100 added for self */
    const char    *new_nick;  /* 303 */
    int            gone;      /* role none */
    int            destroyed; /* affiliation none too: the room is gone (XEP-0045 10.9) */
    const xs_node *extra;     /* copied into <x/> (destroy) */
} pres_opts;

static void handle_presence(chatd *d, room *rm, const char *from, const char *nick,
                            const xs_node *st);
static void history_flush(chatd *d, room *rm);

/* ---- helpers ---- */

static int type_is(const xs_node *st, const char *type)
{
    const char *t = xs_attr_get(st, "type");
    return strcmp(t ? t : "", type) == 0;
}

static const char *nick_jid(const room *rm, const char *nick, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s", rm->m->jid, nick);
    return buf;
}

/* Delivery to one occupant goes through the router's session interface. */
static void send_to(chatd *d, const char *full, const xs_node *st)
{
    rsession *rs = router_session(d, full);
    if (rs) session_send(rs, st);
}

static void send_raw_to(chatd *d, const char *full, const char *xml, size_t len,
                        strbuf *scratch)
{
    rsession *rs = router_session(d, full);
    if (!rs) return;
    sb_reset(scratch);
    muc_splice_to(xml, len, full, scratch);
    session_send_raw(rs, scratch->data, scratch->len);
}

static void bounce(chatd *d, const xs_node *st, const char *condition)
{
    router_bounce(d, st, muc_error_type(condition), condition);
}

static void add_text_elem(xs_node *parent, const char *ns, const char *name, const char *text)
{
    xs_node *e = xs_add_elem(parent, ns, name);
    if (text) xs_add_text(e, text, strlen(text));
}

static void free_presence(void *p) { xs_free(p); }

/* The part of a client's presence worth repeating: show, status, caps... */
static xs_node *presence_payload(const xs_node *st)
{
    xs_node *p = xs_new(NS_CLIENT, "presence");
    for (xs_node *c = xs_child(st, NULL, NULL); c; c = xs_next_elem(c, NULL, NULL))
        if (strcmp(c->ns, NS_MUC) != 0 && strcmp(c->ns, NS_MUC_USER) != 0 &&
            strcmp(c->ns, NS_OCCUPANT_ID) != 0)      /* a client's own id: never */
            xs_append_child(p, xs_copy(c));
    return p;
}

/* ---- room table ---- */

static room *room_find(chatd *d, const char *bare)
{
    return apr_hash_get(d->muc->rooms, bare, APR_HASH_KEY_STRING);
}

static void room_free(chatd *d, room *rm)
{
    apr_hash_set(d->muc->rooms, rm->m->jid, APR_HASH_KEY_STRING, NULL);
    if (rm->load_req) redis_async_forget(rm->load_req);
    while (rm->joins) {
        pending_join *j = rm->joins;
        rm->joins = j->next;
        xs_free(j->stanza);
        free(j->from);
        free(j);
    }
    muc_room_free(rm->m, free_presence);
    free(rm->creator);
    free(rm->count_for);
    free(rm);
}

/* A temporary room disappears with its last occupant. */
static void room_maybe_gone(chatd *d, room *rm)
{
    if (!rm->loading && rm->m->noccupants == 0 && !rm->m->cfg.persistent) {
        history_flush(d, rm);
        room_free(d, rm);
    }
}

/* ---- persistence ---- */

static void argv_push(char ***argv, size_t *argc, size_t *cap, const char *s)
{
    if (*argc == *cap) {
        *cap = *cap ? *cap * 2 : 32;
        *argv = realloc(*argv, *cap * sizeof(**argv));
        if (!*argv) abort();
    }
    (*argv)[(*argc)++] = strdup(s ? s : "");
}

/* Write the whole room record (config, subject, affiliations) at once. */
static void room_save(chatd *d, room *rm)
{
    muc_room *m = rm->m;
    if (!m->cfg.persistent) return;
    if (!rm->loaded) {
        /* Never write a record we did not read: it would replace the
         * stored configuration and owners with whatever is in memory. */
        log_error("BOSH00301: muc: not saving %s: its record was never loaded",
                  m->jid);
        return;
    }
    /* KEYS[2]: the rooms its creator created (muc_max_rooms_per_user);
     * KEYS[1] without "chat:room:" is the room's JID. */
    static const char script[] =
        "redis.call('DEL', KEYS[1]) "
        "if #ARGV > 0 then redis.call('HSET', KEYS[1], unpack(ARGV)) end "
        "if #KEYS > 1 then redis.call('SADD', KEYS[2], string.sub(KEYS[1], 11)) end";
    char **argv = NULL, key[JID_MAX + 16], ckey[JID_MAX + 16], num[16];
    size_t argc = 0, cap = 0;
    snprintf(key, sizeof(key), "chat:room:%s", m->jid);
    snprintf(num, sizeof(num), "%u", m->cfg.max_users);
    argv_push(&argv, &argc, &cap, "EVAL");
    argv_push(&argv, &argc, &cap, script);
    argv_push(&argv, &argc, &cap, rm->creator ? "2" : "1");
    argv_push(&argv, &argc, &cap, key);
    if (rm->creator) {
        snprintf(ckey, sizeof(ckey), "chat:created:%s", rm->creator);
        argv_push(&argv, &argc, &cap, ckey);
    }
#define FIELD(k, v) do { argv_push(&argv, &argc, &cap, k); argv_push(&argv, &argc, &cap, v); } while (0)
    FIELD("persistent", "1");
    FIELD("name", m->cfg.name);
    FIELD("description", m->cfg.description);
    FIELD("password", m->cfg.password);
    FIELD("public", m->cfg.public_room ? "1" : "0");
    FIELD("members_only", m->cfg.members_only ? "1" : "0");
    FIELD("moderated", m->cfg.moderated ? "1" : "0");
    FIELD("change_subject", m->cfg.change_subject ? "1" : "0");
    FIELD("whois", m->cfg.whois_anyone ? "anyone" : "moderators");
    FIELD("max_users", num);
    FIELD("subject", m->subject);
    FIELD("subject_from", m->subject_from);
    if (rm->creator) FIELD("creator", rm->creator);
    for (muc_aff_entry *a = m->affs; a; a = a->next) {
        char f[JID_MAX + 8];
        snprintf(f, sizeof(f), "aff:%s", a->bare);
        FIELD(f, muc_aff_name(a->aff));
    }
#undef FIELD
    /* keyed: runs before a later load of this room (after an idle unload) */
    redis_async_commandargv_keyed(d->redis, m->jid, redis_log_error_cb, NULL, (int)argc,
                                  (const char **)argv, NULL);
    for (size_t i = 0; i < argc; i++) free(argv[i]);
    free(argv);
}

static void room_forget_redis(chatd *d, const room *rm, int history_too)
{
    const char *jid = rm->m->jid;
    redis_async_command_keyed(d->redis, jid, redis_log_error_cb, NULL, "DEL chat:room:%s",
                              jid);
    if (rm->creator)
        redis_async_command(d->redis, redis_log_error_cb, NULL, "SREM chat:created:%s %s",
                            rm->creator, jid);
    if (history_too) {
        redis_async_command_keyed(d->redis, jid, redis_log_error_cb, NULL,
                                  "DEL chat:history:%s", jid);
        mam_room_forget(d, jid);
    }
}

/* ---- history persistence (batched, off the message path) ---- */

#define HISTORY_FLUSH_MS 1000

/* A room's unwritten entries wait in its outbox (muc_outbox.c) until a
 * write succeeds: a failed write is retried with back-off, and the outbox
 * is bounded (the ring size per room, muc_history_buffer bytes in all). */
static void outbox_send(chatd *d, mob_box *b);

typedef struct hist_write {
    chatd *d;
    char   jid[];
} hist_write;

static void retry_timer_arm(chatd *d);

static void history_written(redisReply *reply, const char *err, void *ud)
{
    hist_write *w = ud;
    chatd *d = w->d;
    struct muc_service *s = d->muc;
    mob_box *b = s ? mob_find(&s->outbox, w->jid) : NULL;
    if (s && s->flushing) s->flushing--;
    if (b) {
        if (!err && reply && reply->type != REDIS_REPLY_ERROR) {
            mob_written(&s->outbox, b);
            if (mob_due(b, loop_now_ms(d->loop))) outbox_send(d, b);
            else mob_release(&s->outbox, b);
        } else {
            mob_failed(b, loop_now_ms(d->loop));
            log_warn("BOSH00302: muc: history write for %s failed (%s): %u message(s) "
                     "kept, retry %u in %llu ms", w->jid,
                     err ? err : (reply && reply->str) ? reply->str : "bad reply", b->n,
                     b->attempts, (unsigned long long)mob_backoff_ms(b->attempts));
            retry_timer_arm(d);
        }
    }
    free(w);
}

/* One EVAL per room: LPUSH the outbox's entries (oldest first, so the
 * newest ends up at the head, as LRANGE 0 N reads it back) and LTRIM to the
 * ring size. A retry skips entries already in the list: a write that timed
 * out here may still have run in Redis. Issued on the room's connection
 * (keyed), so it runs before a later load of the same room. */
static void outbox_send(chatd *d, mob_box *b)
{
    static const char script[] =
        "local fresh, have = {}, {} "
        "if ARGV[2] == '1' then "
        "for _, v in ipairs(redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)) do "
        "have[v] = true end end "
        "for i = 3, #ARGV do if not have[ARGV[i]] then fresh[#fresh + 1] = ARGV[i] end end "
        "for i = 1, #fresh, 1000 do "
        "redis.call('LPUSH', KEYS[1], unpack(fresh, i, math.min(i + 999, #fresh))) end "
        "redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[1]) - 1)";
    char key[JID_MAX + 16], cap[16];
    snprintf(key, sizeof(key), "chat:history:%s", b->jid);
    snprintf(cap, sizeof(cap), "%u", b->keep);
    size_t argc = 6 + b->n;
    const char **argv = malloc(argc * sizeof(*argv));
    size_t *lens = malloc(argc * sizeof(*lens));
    size_t jl = strlen(b->jid);
    hist_write *w = malloc(sizeof(*w) + jl + 1);
    if (!argv || !lens || !w) abort();
    w->d = d;
    memcpy(w->jid, b->jid, jl + 1);
    argv[0] = "EVAL"; argv[1] = script; argv[2] = "1"; argv[3] = key; argv[4] = cap;
    argv[5] = b->attempts ? "1" : "0";
    for (size_t i = 0; i < 6; i++) lens[i] = strlen(argv[i]);
    for (unsigned i = 0; i < b->n; i++) {
        argv[6 + i] = b->e[i];
        lens[6 + i] = b->len[i];
    }
    mob_sent(b);
    d->muc->flushing++;
    redis_async_commandargv_keyed(d->redis, b->jid, history_written, w, (int)argc,
                                  argv, lens);
    free(argv);
    free(lens);
}

static void retry_timer_cb(loop *l, void *ud)
{
    chatd *d = ud;
    d->muc->retry_timer = NULL;
    uint64_t now = loop_now_ms(l);
    for (mob_box *b = d->muc->outbox.boxes, *next; b; b = next) {
        next = b->next;
        if (mob_due(b, now)) outbox_send(d, b);
    }
    retry_timer_arm(d);
}

/* Armed for the earliest retry among outboxes waiting out a back-off. */
static void retry_timer_arm(chatd *d)
{
    struct muc_service *s = d->muc;
    uint64_t now = loop_now_ms(d->loop), at = 0;
    for (mob_box *b = s->outbox.boxes; b; b = b->next)
        if (b->n && !b->inflight && (!at || b->not_before < at)) at = b->not_before;
    if (!at) return;
    loop_timer_cancel(d->loop, s->retry_timer);
    s->retry_timer = loop_timer_add(d->loop, at > now ? at - now : 1, retry_timer_cb, d);
}

/* The room's new ring entries go to its outbox, which is written now
 * unless a write is in flight or a failed one waits out its back-off. */
static void history_flush(chatd *d, room *rm)
{
    muc_room *m = rm->m;
    unsigned n = rm->hist_dirty;
    rm->hist_dirty = 0;
    if (!n || !m->hist_count) return;
    if (n > m->hist_count) n = m->hist_count;
    struct muc_service *s = d->muc;
    mob_box *b = mob_get(&s->outbox, m->jid, m->hist_cap);
    unsigned dropped = 0;
    for (unsigned i = 0; i < n; i++) {
        size_t len;
        const char *xml = muc_history_get(m, m->hist_count - n + i, &len);
        if (xml) dropped += mob_append(&s->outbox, b, xml, len);
    }
    if (dropped)
        log_warn("BOSH00303: muc: unwritten history over muc_history_buffer (%zu bytes): "
                 "dropped the %u oldest message(s)", s->outbox.cap_bytes, dropped);
    if (mob_due(b, loop_now_ms(d->loop))) outbox_send(d, b);
    else mob_release(&s->outbox, b);
}

static void history_flush_timer(loop *l, void *ud)
{
    (void)l;
    chatd *d = ud;
    d->muc->flush_timer = NULL;
    for (apr_hash_index_t *hi = apr_hash_first(NULL, d->muc->rooms); hi;
         hi = apr_hash_next(hi))
        history_flush(d, apr_hash_this_val(hi));
}

void muc_flush_history(chatd *d)
{
    if (!d->muc) return;
    loop_timer_cancel(d->loop, d->muc->flush_timer);
    history_flush_timer(d->loop, d);
    /* shutting down: what waits out a back-off is tried once more now */
    for (mob_box *b = d->muc->outbox.boxes, *next; b; b = next) {
        next = b->next;
        if (b->n && !b->inflight) outbox_send(d, b);
    }
}

unsigned muc_history_writes_pending(const chatd *d)
{
    if (!d->muc) return 0;
    unsigned n = d->muc->flushing;
    for (mob_box *b = d->muc->outbox.boxes; b; b = b->next)
        n += b->n && !b->inflight;
    return n;
}

static void apply_record(room *rm, redisReply *h)
{
    muc_room *m = rm->m;
    if (h->type != REDIS_REPLY_ARRAY || h->elements == 0) return;
    rm->fresh = 0;
    m->cfg.persistent = 1;
    for (size_t i = 0; i + 1 < h->elements; i += 2) {
        const char *k = h->element[i]->str, *v = h->element[i + 1]->str;
        if (!k || !v) continue;
        if (strcmp(k, "name") == 0) muc_set_str(&m->cfg.name, v);
        else if (strcmp(k, "description") == 0) muc_set_str(&m->cfg.description, v);
        else if (strcmp(k, "password") == 0) muc_set_str(&m->cfg.password, v);
        else if (strcmp(k, "public") == 0) m->cfg.public_room = atoi(v);
        else if (strcmp(k, "members_only") == 0) m->cfg.members_only = atoi(v);
        else if (strcmp(k, "moderated") == 0) m->cfg.moderated = atoi(v);
        else if (strcmp(k, "change_subject") == 0) m->cfg.change_subject = atoi(v);
        else if (strcmp(k, "whois") == 0) m->cfg.whois_anyone = strcmp(v, "anyone") == 0;
        else if (strcmp(k, "max_users") == 0) m->cfg.max_users = (unsigned)strtoul(v, NULL, 10);
        else if (strcmp(k, "subject") == 0) muc_set_str(&m->subject, v);
        else if (strcmp(k, "subject_from") == 0) muc_set_str(&m->subject_from, v);
        else if (strcmp(k, "creator") == 0) muc_set_str(&rm->creator, v);
        else if (strncmp(k, "aff:", 4) == 0) {
            muc_aff a;
            if (muc_aff_parse(v, &a) == 0) muc_set_aff(m, k + 4, a);
        }
    }
}

/* Did the load answer? Only a well-formed reply (the room's hash, maybe
 * empty for "no such room", and its history list) counts; an error, a
 * timeout or a dropped connection is "load failed", never "no such room". */
static int load_reply_ok(const redisReply *reply, const char *err)
{
    return !err && reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 3 &&
           reply->element[0]->type == REDIS_REPLY_ARRAY &&
           reply->element[1]->type == REDIS_REPLY_ARRAY &&
           reply->element[2]->type == REDIS_REPLY_INTEGER;
}

static void room_loaded(redisReply *reply, const char *err, void *ud)
{
    room *rm = ud;
    chatd *d = rm->d;
    rm->load_req = NULL;
    rm->loading = 0;
    if (!load_reply_ok(reply, err)) {
        /* Fail closed: a room we could not read is not created (its first
         * joiner would become owner and the next save would overwrite the
         * stored room). Every queued join gets a 'wait' error and the next
         * join tries the load again. */
        unsigned refused = 0;
        pending_join *j;
        while ((j = rm->joins)) {
            rm->joins = j->next;
            router_bounce(d, j->stanza, "wait", "internal-server-error");
            refused++;
            xs_free(j->stanza);
            free(j->from);
            free(j);
        }
        log_warn("BOSH00300: muc: cannot load %s (%s): %u join(s) refused, "
                 "the next join retries", rm->m->jid,
                 err ? err : (reply && reply->str) ? reply->str : "bad reply", refused);
        rm->joins_tail = NULL;
        room_free(d, rm);
        return;
    }
    rm->loaded = 1;
    rm->created = (unsigned)reply->element[2]->integer;
    apply_record(rm, reply->element[0]);
    redisReply *h = reply->element[1];
    for (size_t i = h->elements; i-- > 0; )
        if (h->element[i]->type == REDIS_REPLY_STRING)
            muc_history_push(rm->m, h->element[i]->str, h->element[i]->len);
    /* newer than what Redis has: entries whose write failed and waits */
    mob_box *b = mob_find(&d->muc->outbox, rm->m->jid);
    for (unsigned i = b ? b->inflight : 0; b && i < b->n; i++)
        muc_history_push(rm->m, b->e[i], b->len[i]);
    pending_join *j;
    while ((j = rm->joins)) {
        rm->joins = j->next;
        if (!rm->joins) rm->joins_tail = NULL;
        jid to;
        if (router_session(d, j->from) && jid_parse(xs_attr_get(j->stanza, "to"), &to) == 0)
            handle_presence(d, rm, j->from, to.resource, j->stanza);
        xs_free(j->stanza);
        free(j->from);
        free(j);
    }
    room_maybe_gone(d, rm);
}

/* A room not in memory: create it, load what Redis has, queue the join. */
static void room_create(chatd *d, const char *bare, const char *from, const xs_node *join)
{
    room *rm = calloc(1, sizeof(*rm));
    if (!rm) abort();
    rm->d = d;
    rm->m = muc_room_new(bare, d->cfg.muc_history);
    rm->fresh = 1;
    rm->loading = 1;
    apr_hash_set(d->muc->rooms, rm->m->jid, APR_HASH_KEY_STRING, rm);
    pending_join *j = calloc(1, sizeof(*j));
    if (!j || !(j->from = strdup(from))) abort();
    j->stanza = xs_copy(join);
    rm->joins = rm->joins_tail = j;
    rm->njoins = 1;

    char hist[16], joiner[JID_MAX + 1];
    snprintf(hist, sizeof(hist), "%d", (int)d->cfg.muc_history - 1);
    if (!jid_bare_str(from, joiner, sizeof(joiner))) joiner[0] = '\0';
    if (!(rm->count_for = strdup(joiner))) abort();
    /* The record, the history and how many persistent rooms the joiner
     * created: if the room is new, the joiner creates it (quota).
     * NULL: the callback already ran (and may have freed rm). */
    redis_async_req *req = redis_async_command_keyed(d->redis, bare, room_loaded, rm,
        "EVAL %s 3 chat:room:%s chat:history:%s chat:created:%s %s",
        "return {redis.call('HGETALL', KEYS[1]), redis.call('LRANGE', KEYS[2], 0, "
        "tonumber(ARGV[1])), redis.call('SCARD', KEYS[3])}",
        bare, bare, joiner, hist);
    if (req) rm->load_req = req;
}

/* ---- presence ---- */

static xs_node *occupant_presence(const room *rm, const muc_occupant *occ,
                                  const muc_occupant *to, const pres_opts *o)
{
    char buf[JID_MAX + 1];
    xs_node *p = (!o->type && occ->presence) ? xs_copy(occ->presence)
                                              : xs_new(NS_CLIENT, "presence");
    xs_set_attr(p, "from", nick_jid(rm, occ->nick, buf, sizeof(buf)));
    xs_set_attr(p, "to", to->jid);
    if (o->type) xs_set_attr(p, "type", o->type);
    /* XEP-0421: every presence from an occupant carries the room's id */
    occupant_id_stamp(p, rm->d->muc->oid_key, rm->m->jid, occ->bare);

    xs_node *x = xs_add_elem(p, NS_MUC_USER, "x");
    xs_node *item = xs_add_elem(x, NS_MUC_USER, "item");
    muc_aff aff = o->destroyed ? MUC_AFF_NONE : muc_get_aff(rm->m, occ->bare);
    xs_set_attr(item, "affiliation", muc_aff_name(aff));
    xs_set_attr(item, "role", muc_role_name(o->gone ? MUC_ROLE_NONE : occ->role));
    if (rm->m->cfg.whois_anyone || to->role == MUC_ROLE_MODERATOR || to == occ)
        xs_set_attr(item, "jid", occ->jid);
    if (o->new_nick) xs_set_attr(item, "nick", o->new_nick);
    if (o->extra) xs_append_child(x, xs_copy(o->extra));

    unsigned flags = o->flags;
    if (to == occ) {
        flags |= ST_110;
        if (rm->m->cfg.whois_anyone) flags |= ST_100;
    } else {
        flags &= ~(unsigned)(ST_201 | ST_210);
    }
    for (size_t i = 0; i < sizeof(status_codes) / sizeof(status_codes[0]); i++) {
        if (!(flags & (1u << i))) continue;
        char code[8];
        snprintf(code, sizeof(code), "%d", status_codes[i]);
        xs_set_attr(xs_add_elem(x, NS_MUC_USER, "status"), "code", code);
    }
    return p;
}

static void broadcast_presence(chatd *d, const room *rm, const muc_occupant *occ,
                               const pres_opts *o)
{
    for (muc_occupant *to = rm->m->occupants; to; to = to->next) {
        xs_node *p = occupant_presence(rm, occ, to, o);
        send_to(d, to->jid, p);
        xs_free(p);
    }
}

/* Occupant leaves (left, kicked, banned): everyone, them included, sees it. */
static void remove_occupant(chatd *d, room *rm, muc_occupant *occ, unsigned flags)
{
    pres_opts o = { .type = "unavailable", .flags = flags, .gone = 1 };
    broadcast_presence(d, rm, occ, &o);
    xs_free(occ->presence);
    occ->presence = NULL;
    muc_remove_occupant(rm->m, occ);
}

/* History on join: all of it, or what <history/> asks for (XEP-0045
 * §7.2.14: maxstanzas, maxchars, seconds, since; muc_history.c). */
static void send_history(chatd *d, room *rm, const muc_occupant *occ, const xs_node *x)
{
    unsigned first = 0;
    xs_node *h = x ? xs_child(x, NS_MUC, "history") : NULL;
    if (h) {
        muc_hist_req q;
        muc_hist_req_parse(&q, xs_attr_get(h, "maxstanzas"), xs_attr_get(h, "maxchars"),
                           xs_attr_get(h, "seconds"), xs_attr_get(h, "since"), time(NULL));
        first = muc_history_first(rm->m, &q);
    }
    strbuf scratch = STRBUF_INIT;
    for (unsigned i = first; i < rm->m->hist_count; i++) {
        size_t len;
        const char *xml = muc_history_get(rm->m, i, &len);
        if (xml) send_raw_to(d, occ->jid, xml, len, &scratch);
    }
    sb_free(&scratch);
}

static void send_subject(chatd *d, const room *rm, const muc_occupant *occ)
{
    char buf[JID_MAX + 1];
    const char *from = rm->m->subject_from
        ? nick_jid(rm, rm->m->subject_from, buf, sizeof(buf)) : rm->m->jid;
    xs_node *msg = stanza_new("message", from, occ->jid, "groupchat", NULL);
    add_text_elem(msg, NS_CLIENT, "subject", rm->m->subject ? rm->m->subject : "");
    send_to(d, occ->jid, msg);
    xs_free(msg);
}

/* What a (re)joining occupant receives: the others, itself, history, subject. */
static void send_room_state(chatd *d, room *rm, muc_occupant *occ, const xs_node *x,
                            unsigned self_flags)
{
    pres_opts plain = { 0 };
    for (muc_occupant *o = rm->m->occupants; o; o = o->next) {
        if (o == occ) continue;
        xs_node *p = occupant_presence(rm, o, occ, &plain);
        send_to(d, occ->jid, p);
        xs_free(p);
    }
    pres_opts self = { .flags = self_flags };
    broadcast_presence(d, rm, occ, &self);
    send_history(d, rm, occ, x);
    send_subject(d, rm, occ);
}

/* May `bare` create this (new) room? muc_max_rooms_per_user counts the
 * persistent rooms it created (chat:created:<bare>, read with the load)
 * and its temporary rooms in memory. Over it: <not-allowed/>, XEP-0045
 * §10.1.1 "inability to create a room". Someone else's count was read
 * with this load (two users racing to create one room): try again. */
static const char *creation_refused(chatd *d, const room *rm, const char *bare)
{
    unsigned cap = d->cfg.muc_max_rooms_per_user;
    if (!cap) return NULL;
    if (!rm->count_for || strcmp(rm->count_for, bare) != 0) return "resource-constraint";
    unsigned n = rm->created;
    for (apr_hash_index_t *hi = apr_hash_first(NULL, d->muc->rooms); hi;
         hi = apr_hash_next(hi)) {
        const room *o = apr_hash_this_val(hi);
        if (o != rm && !o->m->cfg.persistent && o->creator && strcmp(o->creator, bare) == 0)
            n++;
    }
    if (n < cap) return NULL;
    log_info("BOSH00304: muc: %s may not create %s: %u room(s) created, "
             "muc_max_rooms_per_user %u", bare, rm->m->jid, n, cap);
    return "not-allowed";
}

static void join(chatd *d, room *rm, const char *from, const char *nick, const xs_node *st)
{
    muc_room *m = rm->m;
    char bare[JID_MAX + 1];
    if (!jid_bare_str(from, bare, sizeof(bare))) return;
    xs_node *x = xs_child(st, NS_MUC, "x");
    xs_node *pw = x ? xs_child(x, NS_MUC, "password") : NULL;
    char *password = pw ? xs_text(pw) : NULL;

    unsigned flags = 0;
    if (rm->fresh && m->noccupants == 0 && !m->affs) {
        const char *refused = creation_refused(d, rm, bare);
        if (refused) {
            free(password);
            router_bounce(d, st, strcmp(refused, "not-allowed") == 0 ? "cancel" : "wait",
                          refused);
            return;
        }
        muc_set_aff(m, bare, MUC_AFF_OWNER);      /* creator */
        muc_set_str(&rm->creator, bare);
        flags |= ST_201;
    }
    rm->fresh = 0;
    const char *cond = muc_join_check(m, bare, from, nick, password);
    free(password);
    if (cond) {
        bounce(d, st, cond);
        return;
    }
    muc_occupant *occ = muc_add_occupant(m, nick, from, bare,
                                         muc_default_role(m, muc_get_aff(m, bare)));
    occ->presence = presence_payload(st);
    send_room_state(d, rm, occ, x, flags);
}

static void change_nick(chatd *d, room *rm, muc_occupant *occ, const char *nick,
                        const xs_node *st)
{
    if (muc_find_nick(rm->m, nick)) { bounce(d, st, "conflict"); return; }
    pres_opts out = { .type = "unavailable", .flags = ST_303, .new_nick = nick };
    broadcast_presence(d, rm, occ, &out);
    muc_rename(occ, nick);
    xs_free(occ->presence);
    occ->presence = presence_payload(st);
    pres_opts in = { 0 };
    broadcast_presence(d, rm, occ, &in);
}

/* Presence to room/nick. */
static void handle_presence(chatd *d, room *rm, const char *from, const char *nick,
                            const xs_node *st)
{
    muc_occupant *occ = muc_find_jid(rm->m, from);
    if (type_is(st, "unavailable")) {
        if (occ) remove_occupant(d, rm, occ, 0);
        return;
    }
    if (!type_is(st, "")) return;          /* probe, subscribe, error: ignored */
    xs_node *x = xs_child(st, NS_MUC, "x");
    switch (muc_presence_kind(rm->m, from, nick, x != NULL)) {
    case MUC_PRES_JOIN:        join(d, rm, from, nick, st); return;
    case MUC_PRES_NICK_CHANGE: change_nick(d, rm, occ, nick, st); return;
    case MUC_PRES_REJOIN:
    case MUC_PRES_UPDATE:      break;
    }
    xs_free(occ->presence);
    occ->presence = presence_payload(st);
    if (x) {
        /* Rejoin: the same occupant gets the whole room state again
         * (occupants, itself with 110, history per <history/>, subject);
         * the others just see a presence update. */
        send_room_state(d, rm, occ, x, 0);
    } else {
        pres_opts o = { 0 };
        broadcast_presence(d, rm, occ, &o);
    }
}

/* ---- messages ---- */

static void append_history(chatd *d, room *rm, const xs_node *out)
{
    if (!d->cfg.muc_history) return;
    char stamp[32];
    xs_node *h = xs_copy(out);
    xs_node *delay = xs_add_elem(h, NS_DELAY, "delay");
    xs_set_attr(delay, "from", rm->m->jid);
    xs_set_attr(delay, "stamp", xmpp_timestamp(stamp, sizeof(stamp), time(NULL)));
    strbuf xml = STRBUF_INIT;
    xs_serialize(h, NULL, &xml);
    xs_free(h);
    muc_history_push(rm->m, xml.data, xml.len);
    sb_free(&xml);
    if (rm->hist_dirty < rm->m->hist_cap) rm->hist_dirty++;
    if (!d->muc->flush_timer)
        d->muc->flush_timer = loop_timer_add(d->loop, HISTORY_FLUSH_MS,
                                             history_flush_timer, d);
}

static void groupchat(chatd *d, room *rm, const char *from, const xs_node *st)
{
    muc_room *m = rm->m;
    muc_occupant *occ = muc_find_jid(m, from);
    xs_node *subject = xs_child(st, NS_CLIENT, "subject");
    xs_node *body = xs_child(st, NS_CLIENT, "body");
    const char *cond = muc_groupchat_check(m, occ, subject != NULL, body != NULL);
    if (cond) { bounce(d, st, cond); return; }
    if (subject && !body) {               /* a subject change, XEP-0045 §8.1 */
        char *t = xs_text(subject);
        muc_set_str(&m->subject, t);
        muc_set_str(&m->subject_from, occ->nick);
        free(t);
        room_save(d, rm);
    }
    char buf[JID_MAX + 1];
    xs_node *out = xs_copy(st);
    xs_set_attr(out, "from", nick_jid(rm, occ->nick, buf, sizeof(buf)));
    xs_set_attr(out, "to", NULL);
    /* XEP-0421: the sender's id replaces any the client put there */
    occupant_id_stamp(out, d->muc->oid_key, m->jid, occ->bare);
    /* XEP-0313: into the room's archive (in memory, written later), and
     * everyone gets the archive's XEP-0359 stanza-id */
    if (body) mam_archive_room(d, m->jid, buf, out);
    strbuf xml = STRBUF_INIT, scratch = STRBUF_INIT;
    xs_serialize(out, NULL, &xml);
    for (muc_occupant *o = m->occupants; o; o = o->next)
        send_raw_to(d, o->jid, xml.data, xml.len, &scratch);
    sb_free(&xml);
    sb_free(&scratch);
    if (body) append_history(d, rm, out);
    xs_free(out);
}

static void private_message(chatd *d, room *rm, const char *from, const char *nick,
                            const xs_node *st)
{
    muc_occupant *occ = muc_find_jid(rm->m, from);
    if (!occ) { bounce(d, st, "not-acceptable"); return; }
    if (type_is(st, "groupchat")) { bounce(d, st, "bad-request"); return; }
    muc_occupant *target = muc_find_nick(rm->m, nick);
    if (!target) { bounce(d, st, "item-not-found"); return; }
    char buf[JID_MAX + 1];
    xs_node *out = xs_copy(st);
    xs_set_attr(out, "from", nick_jid(rm, occ->nick, buf, sizeof(buf)));
    xs_set_attr(out, "to", target->jid);
    occupant_id_stamp(out, d->muc->oid_key, rm->m->jid, occ->bare);   /* XEP-0421 */
    xs_add_elem(out, NS_MUC_USER, "x");
    send_to(d, target->jid, out);
    xs_free(out);
}

/* Mediated invitation (XEP-0045 §7.8.2): forward each <invite/>. */
static void invite(chatd *d, room *rm, const char *from, const xs_node *st)
{
    xs_node *x = xs_child(st, NS_MUC_USER, "x");
    if (!x || !muc_find_jid(rm->m, from)) { bounce(d, st, "not-acceptable"); return; }
    for (xs_node *inv = xs_child(x, NS_MUC_USER, "invite"); inv;
         inv = xs_next_elem(inv, NS_MUC_USER, "invite")) {
        char to[JID_MAX + 1];
        if (!jid_bare_str(xs_attr_get(inv, "to"), to, sizeof(to))) continue;
        xs_node *msg = stanza_new("message", rm->m->jid, to, NULL, NULL);
        xs_node *ox = xs_add_elem(msg, NS_MUC_USER, "x");
        xs_node *oi = xs_add_elem(ox, NS_MUC_USER, "invite");
        xs_set_attr(oi, "from", from);
        xs_node *reason = xs_child(inv, NS_MUC_USER, "reason");
        if (reason) xs_append_child(oi, xs_copy(reason));
        if (rm->m->cfg.password) add_text_elem(ox, NS_MUC_USER, "password", rm->m->cfg.password);
        router_deliver(d, to, msg);
        xs_free(msg);
    }
}

/* ---- iq: disco ---- */

static void reply(chatd *d, xs_node *res)
{
    router_deliver(d, xs_attr_get(res, "to"), res);
    xs_free(res);
}

static void add_feature(xs_node *q, const char *var)
{
    xs_set_attr(xs_add_elem(q, NS_DISCO_INFO, "feature"), "var", var);
}

static void service_iq(chatd *d, const xs_node *st)
{
    xs_node *q = xs_child(st, NULL, NULL);
    if (!type_is(st, "get") || !q) {
        if (type_is(st, "get") || type_is(st, "set")) bounce(d, st, "service-unavailable");
        return;
    }
    xs_node *res = iq_result(st);
    if (xs_is(q, NS_DISCO_INFO, "query")) {
        xs_node *r = xs_add_elem(res, NS_DISCO_INFO, "query");
        xs_node *id = xs_add_elem(r, NS_DISCO_INFO, "identity");
        xs_set_attr(id, "category", "conference");
        xs_set_attr(id, "type", "text");
        xs_set_attr(id, "name", "Chatrooms");
        add_feature(r, NS_MUC);
        add_feature(r, NS_DISCO_INFO);
        add_feature(r, NS_DISCO_ITEMS);
    } else if (xs_is(q, NS_DISCO_ITEMS, "query")) {
        xs_node *r = xs_add_elem(res, NS_DISCO_ITEMS, "query");
        for (apr_hash_index_t *hi = apr_hash_first(NULL, d->muc->rooms); hi;
             hi = apr_hash_next(hi)) {
            room *rm = apr_hash_this_val(hi);
            if (rm->loading || !rm->m->cfg.public_room) continue;
            xs_node *it = xs_add_elem(r, NS_DISCO_ITEMS, "item");
            xs_set_attr(it, "jid", rm->m->jid);
            if (rm->m->cfg.name) xs_set_attr(it, "name", rm->m->cfg.name);
        }
    } else {
        xs_free(res);
        bounce(d, st, "service-unavailable");
        return;
    }
    reply(d, res);
}

static void form_field(xs_node *x, const char *var, const char *type, const char *label,
                       const char *value);

static void room_disco_info(chatd *d, room *rm, const xs_node *st)
{
    const muc_config *c = &rm->m->cfg;
    xs_node *res = iq_result(st);
    xs_node *r = xs_add_elem(res, NS_DISCO_INFO, "query");
    xs_node *id = xs_add_elem(r, NS_DISCO_INFO, "identity");
    xs_set_attr(id, "category", "conference");
    xs_set_attr(id, "type", "text");
    if (c->name) xs_set_attr(id, "name", c->name);
    add_feature(r, NS_MUC);
    add_feature(r, NS_DISCO_INFO);
    add_feature(r, c->persistent ? "muc_persistent" : "muc_temporary");
    add_feature(r, c->public_room ? "muc_public" : "muc_hidden");
    add_feature(r, c->members_only ? "muc_membersonly" : "muc_open");
    add_feature(r, c->moderated ? "muc_moderated" : "muc_unmoderated");
    add_feature(r, c->password ? "muc_passwordprotected" : "muc_unsecured");
    add_feature(r, c->whois_anyone ? "muc_nonanonymous" : "muc_semianonymous");
    add_feature(r, NS_OCCUPANT_ID);                /* XEP-0421 */
    add_feature(r, NS_MAM);                        /* XEP-0313: the room's archive */
    add_feature(r, NS_MAM_EXT);
    /* XEP-0128 / XEP-0045 §6.4: the muc#roominfo form clients show in
     * room lists and before joining (name, description, subject, how many) */
    char num[16];
    snprintf(num, sizeof(num), "%zu", rm->m->noccupants);
    xs_node *x = xs_add_elem(r, NS_XDATA, "x");
    xs_set_attr(x, "type", "result");
    form_field(x, "FORM_TYPE", "hidden", NULL, NS_MUC "#roominfo");
    form_field(x, "muc#roomconfig_roomname", "text-single", "Name", c->name);
    form_field(x, "muc#roominfo_description", "text-single", "Description", c->description);
    form_field(x, "muc#roominfo_subject", "text-single", "Subject", rm->m->subject);
    form_field(x, "muc#roominfo_subjectmod", "boolean", "Occupants may change the subject",
               c->change_subject ? "1" : "0");
    form_field(x, "muc#roominfo_occupants", "text-single", "Number of occupants", num);
    reply(d, res);
}

/* ---- iq: owner (configuration, destroy) ---- */

static void form_field(xs_node *x, const char *var, const char *type, const char *label,
                       const char *value)
{
    xs_node *f = xs_add_elem(x, NS_XDATA, "field");
    xs_set_attr(f, "var", var);
    xs_set_attr(f, "type", type);
    if (label) xs_set_attr(f, "label", label);
    add_text_elem(f, NS_XDATA, "value", value ? value : "");
}

static void config_form(chatd *d, room *rm, const xs_node *st)
{
    const muc_config *c = &rm->m->cfg;
    char num[16];
    snprintf(num, sizeof(num), "%u", c->max_users);
    xs_node *res = iq_result(st);
    xs_node *x = xs_add_elem(xs_add_elem(res, NS_MUC_OWNER, "query"), NS_XDATA, "x");
    xs_set_attr(x, "type", "form");
    add_text_elem(x, NS_XDATA, "title", "Room configuration");
    form_field(x, "FORM_TYPE", "hidden", NULL, NS_ROOMCONFIG);
    form_field(x, "muc#roomconfig_roomname", "text-single", "Name", c->name);
    form_field(x, "muc#roomconfig_roomdesc", "text-single", "Description", c->description);
    form_field(x, "muc#roomconfig_persistentroom", "boolean", "Persistent", c->persistent ? "1" : "0");
    form_field(x, "muc#roomconfig_publicroom", "boolean", "Listed in the directory", c->public_room ? "1" : "0");
    form_field(x, "muc#roomconfig_membersonly", "boolean", "Members only", c->members_only ? "1" : "0");
    form_field(x, "muc#roomconfig_moderatedroom", "boolean", "Moderated", c->moderated ? "1" : "0");
    form_field(x, "muc#roomconfig_changesubject", "boolean", "Participants may change the subject", c->change_subject ? "1" : "0");
    form_field(x, "muc#roomconfig_passwordprotectedroom", "boolean", "Password protected", c->password ? "1" : "0");
    form_field(x, "muc#roomconfig_roomsecret", "text-private", "Password", c->password);
    form_field(x, "muc#roomconfig_maxusers", "text-single", "Maximum occupants (0: no limit)", num);
    xs_node *w = xs_add_elem(x, NS_XDATA, "field");
    xs_set_attr(w, "var", "muc#roomconfig_whois");
    xs_set_attr(w, "type", "list-single");
    xs_set_attr(w, "label", "Who may see real JIDs");
    add_text_elem(w, NS_XDATA, "value", c->whois_anyone ? "anyone" : "moderators");
    const char *opts[] = { "moderators", "anyone" };
    for (int i = 0; i < 2; i++) {
        xs_node *o = xs_add_elem(w, NS_XDATA, "option");
        xs_set_attr(o, "label", opts[i]);
        add_text_elem(o, NS_XDATA, "value", opts[i]);
    }
    reply(d, res);
}

static int is_true(const char *v) { return strcmp(v, "1") == 0 || strcmp(v, "true") == 0; }

static void config_submit(chatd *d, room *rm, const xs_node *x, const xs_node *st)
{
    muc_config *c = &rm->m->cfg;
    int was_persistent = c->persistent, password_on = c->password != NULL;
    int was_members_only = c->members_only;
    char *secret = NULL;
    for (xs_node *f = xs_child(x, NS_XDATA, "field"); f; f = xs_next_elem(f, NS_XDATA, "field")) {
        const char *var = xs_attr_get(f, "var");
        xs_node *ve = xs_child(f, NS_XDATA, "value");
        char *v = ve ? xs_text(ve) : strdup("");
        if (!var || !v) { free(v); continue; }
        if (strcmp(var, "muc#roomconfig_roomname") == 0) muc_set_str(&c->name, v);
        else if (strcmp(var, "muc#roomconfig_roomdesc") == 0) muc_set_str(&c->description, v);
        else if (strcmp(var, "muc#roomconfig_persistentroom") == 0) c->persistent = is_true(v);
        else if (strcmp(var, "muc#roomconfig_publicroom") == 0) c->public_room = is_true(v);
        else if (strcmp(var, "muc#roomconfig_membersonly") == 0) c->members_only = is_true(v);
        else if (strcmp(var, "muc#roomconfig_moderatedroom") == 0) c->moderated = is_true(v);
        else if (strcmp(var, "muc#roomconfig_changesubject") == 0) c->change_subject = is_true(v);
        else if (strcmp(var, "muc#roomconfig_passwordprotectedroom") == 0) password_on = is_true(v);
        else if (strcmp(var, "muc#roomconfig_roomsecret") == 0) { free(secret); secret = strdup(v); }
        else if (strcmp(var, "muc#roomconfig_maxusers") == 0) c->max_users = (unsigned)strtoul(v, NULL, 10);
        else if (strcmp(var, "muc#roomconfig_whois") == 0) c->whois_anyone = strcmp(v, "anyone") == 0;
        free(v);
    }
    if (secret) muc_set_str(&c->password, secret);
    if (!password_on) muc_set_str(&c->password, NULL);
    free(secret);
    if (c->members_only && !was_members_only) {
        /* XEP-0045 §10.2 (and §9.9): non-members leave with status 322 */
        muc_occupant *o, *next;
        for (o = rm->m->occupants; o; o = next) {
            next = o->next;
            if (!muc_may_stay(rm->m, o->bare)) remove_occupant(d, rm, o, ST_322);
        }
    }
    if (c->persistent) room_save(d, rm);
    else if (was_persistent) room_forget_redis(d, rm, 0);
    reply(d, iq_result(st));
}

static void destroy_room(chatd *d, room *rm, const xs_node *destroy, const xs_node *st)
{
    xs_node *dst = xs_new(NS_MUC_USER, "destroy");
    const char *alt = xs_attr_get(destroy, "jid");
    if (alt) xs_set_attr(dst, "jid", alt);
    xs_node *reason = xs_child(destroy, NS_MUC_OWNER, "reason");
    if (reason) {
        char *t = xs_text(reason);
        add_text_elem(dst, NS_MUC_USER, "reason", t);
        free(t);
    }
    pres_opts o = { .type = "unavailable", .gone = 1, .destroyed = 1, .extra = dst };
    for (muc_occupant *occ = rm->m->occupants; occ; occ = occ->next) {
        xs_node *p = occupant_presence(rm, occ, occ, &o);
        send_to(d, occ->jid, p);
        xs_free(p);
    }
    xs_free(dst);
    room_forget_redis(d, rm, 1);
    reply(d, iq_result(st));
    room_free(d, rm);
}

static void owner_iq(chatd *d, room *rm, muc_aff aff, const xs_node *q, const xs_node *st)
{
    if (aff != MUC_AFF_OWNER) { bounce(d, st, "forbidden"); return; }
    if (type_is(st, "get")) { config_form(d, rm, st); return; }
    xs_node *destroy = xs_child(q, NS_MUC_OWNER, "destroy");
    if (destroy) { destroy_room(d, rm, destroy, st); return; }
    xs_node *x = xs_child(q, NS_XDATA, "x");
    const char *xt = x ? xs_attr_get(x, "type") : NULL;
    if (xt && strcmp(xt, "submit") == 0) config_submit(d, rm, x, st);
    else if (!x || (xt && strcmp(xt, "cancel") == 0)) reply(d, iq_result(st));
    else bounce(d, st, "bad-request");
}

/* ---- iq: admin (roles and affiliations) ---- */

static void admin_get(chatd *d, room *rm, const muc_occupant *actor, muc_aff aff,
                      const xs_node *q, const xs_node *st)
{
    xs_node *item = xs_child(q, NS_MUC_ADMIN, "item");
    muc_aff want_aff;
    muc_role want_role;
    xs_node *res = iq_result(st);
    xs_node *r = xs_add_elem(res, NS_MUC_ADMIN, "query");
    if (item && muc_aff_parse(xs_attr_get(item, "affiliation"), &want_aff) == 0 &&
        aff >= MUC_AFF_ADMIN) {
        for (muc_aff_entry *a = rm->m->affs; a; a = a->next) {
            if (a->aff != want_aff) continue;
            xs_node *it = xs_add_elem(r, NS_MUC_ADMIN, "item");
            xs_set_attr(it, "affiliation", muc_aff_name(a->aff));
            xs_set_attr(it, "jid", a->bare);
        }
    } else if (item && muc_role_parse(xs_attr_get(item, "role"), &want_role) == 0 &&
               actor && actor->role == MUC_ROLE_MODERATOR) {
        for (muc_occupant *o = rm->m->occupants; o; o = o->next) {
            if (o->role != want_role) continue;
            xs_node *it = xs_add_elem(r, NS_MUC_ADMIN, "item");
            xs_set_attr(it, "nick", o->nick);
            xs_set_attr(it, "role", muc_role_name(o->role));
            xs_set_attr(it, "affiliation", muc_aff_name(muc_get_aff(rm->m, o->bare)));
            xs_set_attr(it, "jid", o->jid);
        }
    } else {
        xs_free(res);
        bounce(d, st, item ? "forbidden" : "bad-request");
        return;
    }
    reply(d, res);
}

/* One <item/> of a muc#admin set. Returns NULL or an error condition. */
static const char *admin_item(chatd *d, room *rm, muc_occupant *actor, muc_aff aff,
                              const xs_node *item)
{
    muc_room *m = rm->m;
    const char *role_s = xs_attr_get(item, "role"), *aff_s = xs_attr_get(item, "affiliation");
    if (role_s) {
        muc_role role;
        muc_occupant *target = muc_find_nick(m, xs_attr_get(item, "nick") ? xs_attr_get(item, "nick") : "");
        if (muc_role_parse(role_s, &role) < 0) return "bad-request";
        if (!target) return "item-not-found";
        if (!muc_can_set_role(m, actor, target, role)) return "not-allowed";
        if (role == MUC_ROLE_NONE) {
            remove_occupant(d, rm, target, ST_307);
        } else {
            target->role = role;
            pres_opts o = { 0 };
            broadcast_presence(d, rm, target, &o);
        }
        return NULL;
    }
    if (aff_s) {
        muc_aff new_aff;
        char bare[JID_MAX + 1];
        if (muc_aff_parse(aff_s, &new_aff) < 0) return "bad-request";
        if (!jid_bare_str(xs_attr_get(item, "jid"), bare, sizeof(bare))) return "bad-request";
        if (!muc_can_set_aff(m, aff, bare, new_aff)) return "not-allowed";
        muc_set_aff(m, bare, new_aff);
        muc_occupant *o = m->occupants, *next;
        for (; o; o = next) {
            next = o->next;
            if (strcmp(o->bare, bare) != 0) continue;
            if (new_aff == MUC_AFF_OUTCAST) {
                remove_occupant(d, rm, o, ST_301);
            } else if (!muc_may_stay(m, o->bare)) {
                remove_occupant(d, rm, o, ST_321);    /* membership revoked, §9.4 */
            } else {
                o->role = muc_default_role(m, new_aff);
                pres_opts po = { 0 };
                broadcast_presence(d, rm, o, &po);
            }
        }
        room_save(d, rm);
        return NULL;
    }
    return "bad-request";
}

static void admin_iq(chatd *d, room *rm, muc_occupant *actor, muc_aff aff,
                     const xs_node *q, const xs_node *st)
{
    if (type_is(st, "get")) { admin_get(d, rm, actor, aff, q, st); return; }
    for (xs_node *item = xs_child(q, NS_MUC_ADMIN, "item"); item;
         item = xs_next_elem(item, NS_MUC_ADMIN, "item")) {
        const char *cond = admin_item(d, rm, actor, aff, item);
        if (cond) { bounce(d, st, cond); return; }
        actor = muc_find_jid(rm->m, xs_attr_get(st, "from"));   /* may have left */
    }
    reply(d, iq_result(st));
}

/* ---- iq: to an occupant (room/nick) ---- */

/* get/set from an occupant to another one goes to the target's real JID
 * as from room/<sender nick>, with an id of ours; the target's answer comes
 * back to room/<sender nick> and is accepted only from the target with that
 * id (muc_iq_fwd_take), then goes to the sender with its own id. A ping to
 * one's own occupant JID is XEP-0410 self-ping: answered here, and with
 * not-acceptable when the sender is not in the room (the client rejoins). */
static void occupant_iq(chatd *d, room *rm, const char *from, const char *nick,
                        const xs_node *st)
{
    char buf[JID_MAX + 1];
    if (type_is(st, "result") || type_is(st, "error")) {
        muc_iq_fwd *f = muc_iq_fwd_take(rm->m, from, nick, xs_attr_get(st, "id"));
        muc_occupant *target = f ? muc_find_jid(rm->m, from) : NULL;
        if (target) {
            xs_node *out = xs_copy(st);
            xs_set_attr(out, "from", nick_jid(rm, target->nick, buf, sizeof(buf)));
            xs_set_attr(out, "to", f->sender);
            xs_set_attr(out, "id", f->orig_id);
            send_to(d, f->sender, out);
            xs_free(out);
        }
        muc_iq_fwd_free(f);            /* no entry: forged or late, dropped */
        return;
    }
    if (!type_is(st, "get") && !type_is(st, "set")) return;
    xs_node *q = xs_child(st, NULL, NULL);
    int is_ping = type_is(st, "get") && q && xs_is(q, NS_PING, "ping");
    switch (muc_occupant_iq_action(rm->m, from, nick, is_ping)) {
    case MUC_IQ_SELF_PING_OK:   reply(d, iq_result(st)); return;
    case MUC_IQ_NOT_ACCEPTABLE: router_bounce(d, st, "cancel", "not-acceptable"); return;
    case MUC_IQ_ITEM_NOT_FOUND: bounce(d, st, "item-not-found"); return;
    case MUC_IQ_FORWARD:        break;
    }
    muc_occupant *sender = muc_find_jid(rm->m, from);
    muc_occupant *target = muc_find_nick(rm->m, nick);
    if (!router_session(d, target->jid)) {
        router_bounce(d, st, "wait", "recipient-unavailable");
        return;
    }
    const char *id = muc_iq_fwd_add(rm->m, from, sender->nick, target->jid,
                                    xs_attr_get(st, "id"));
    xs_node *out = xs_copy(st);
    xs_set_attr(out, "from", nick_jid(rm, sender->nick, buf, sizeof(buf)));
    xs_set_attr(out, "to", target->jid);
    xs_set_attr(out, "id", id);
    send_to(d, target->jid, out);
    xs_free(out);
}

static void room_iq(chatd *d, room *rm, const char *from, const xs_node *st)
{
    if (!type_is(st, "get") && !type_is(st, "set")) return;
    xs_node *q = xs_child(st, NULL, NULL);
    if (!q) { bounce(d, st, "bad-request"); return; }
    char bare[JID_MAX + 1];
    if (!jid_bare_str(from, bare, sizeof(bare))) return;
    muc_aff aff = muc_get_aff(rm->m, bare);
    muc_occupant *actor = muc_find_jid(rm->m, from);

    if (type_is(st, "get") && xs_is(q, NS_DISCO_INFO, "query")) room_disco_info(d, rm, st);
    else if (type_is(st, "get") && xs_is(q, NS_DISCO_ITEMS, "query")) {
        /* XEP-0045 6.5: the occupants by room JID (no real JIDs), for a
         * public room or to someone inside; otherwise an empty list. */
        xs_node *res = iq_result(st);
        xs_node *r = xs_add_elem(res, NS_DISCO_ITEMS, "query");
        if (rm->m->cfg.public_room || actor) {
            char buf[JID_MAX + 1];
            for (muc_occupant *o = rm->m->occupants; o; o = o->next) {
                xs_node *it = xs_add_elem(r, NS_DISCO_ITEMS, "item");
                xs_set_attr(it, "jid", nick_jid(rm, o->nick, buf, sizeof(buf)));
                xs_set_attr(it, "name", o->nick);
            }
        }
        reply(d, res);
    }
    else if (q->ns && strcmp(q->ns, NS_MAM) == 0) {
        /* XEP-0313 §5.1.2: the room's archive, to whom may see the room:
         * not the banned, and in a members-only room only members and
         * occupants. */
        if (aff == MUC_AFF_OUTCAST ||
            (rm->m->cfg.members_only && !actor && aff < MUC_AFF_MEMBER))
            bounce(d, st, "forbidden");
        else
            mam_room_iq(d, rm->m->jid, st);
    }
    else if (xs_is(q, NS_MUC_OWNER, "query")) owner_iq(d, rm, aff, q, st);
    else if (xs_is(q, NS_MUC_ADMIN, "query")) admin_iq(d, rm, actor, aff, q, st);
    else bounce(d, st, "service-unavailable");
}

/* ---- unloading idle persistent rooms ---- */

/* A persistent room nobody is in goes from memory after muc_room_idle
 * seconds: everything about it is in Redis already (each change is saved
 * when made; its unwritten history waits in the outbox), and the next join
 * loads it again. Measured at the sweep's granularity (half the idle time,
 * 0.5 s to 30 s). */
static uint64_t idle_sweep_ms(const chatd *d)
{
    uint64_t ms = (uint64_t)d->cfg.muc_room_idle * 500;
    return ms < 500 ? 500 : ms > 30000 ? 30000 : ms;
}

static void idle_sweep(loop *l, void *ud)
{
    chatd *d = ud;
    uint64_t now = loop_now_ms(l), idle = (uint64_t)d->cfg.muc_room_idle * 1000;
    d->muc->idle_timer = NULL;
    for (apr_hash_index_t *hi = apr_hash_first(NULL, d->muc->rooms); hi;
         hi = apr_hash_next(hi)) {
        room *rm = apr_hash_this_val(hi);
        if (rm->m->noccupants || rm->loading || rm->joins || !rm->loaded ||
            !rm->m->cfg.persistent) {
            rm->empty_since = 0;
            continue;
        }
        if (!rm->empty_since) { rm->empty_since = now; continue; }
        if (now - rm->empty_since < idle) continue;
        log_debug("BOSH00305: muc: %s unloaded, empty for %llu ms", rm->m->jid,
                  (unsigned long long)(now - rm->empty_since));
        history_flush(d, rm);
        room_free(d, rm);           /* deleting the current entry is allowed */
    }
    d->muc->idle_timer = loop_timer_add(l, idle_sweep_ms(d), idle_sweep, d);
}

/* ---- entry points ---- */

int muc_init(chatd *d)
{
    struct muc_service *s = calloc(1, sizeof(*s));
    if (!s) return -1;
    if (apr_pool_create(&s->pool, NULL) != APR_SUCCESS) { free(s); return -1; }
    s->rooms = apr_hash_make(s->pool);
    s->outbox.cap_bytes = d->cfg.muc_history_buffer;
    if (occupant_id_key(d->cfg.auth_secret, s->oid_key) != 0) {
        log_error("BOSH00520: muc: no key for XEP-0421 occupant ids");
        apr_pool_destroy(s->pool);
        free(s);
        return -1;
    }
    if (d->cfg.muc_room_idle && d->loop)
        s->idle_timer = loop_timer_add(d->loop, idle_sweep_ms(d), idle_sweep, d);
    d->muc = s;
    return 0;
}

void muc_free(chatd *d)
{
    struct muc_service *s = d->muc;
    if (!s) return;
    loop_timer_cancel(d->loop, s->flush_timer);
    loop_timer_cancel(d->loop, s->retry_timer);
    loop_timer_cancel(d->loop, s->idle_timer);
    mob_free_all(&s->outbox);
    apr_hash_index_t *hi;
    while ((hi = apr_hash_first(NULL, s->rooms)))
        room_free(d, apr_hash_this_val(hi));
    apr_pool_destroy(s->pool);
    free(s);
    d->muc = NULL;
}

static void route_to_room(chatd *d, room *rm, const char *from, const jid *to,
                          const xs_node *st)
{
    if (xs_is(st, NS_CLIENT, "presence")) {
        if (to->resource[0]) handle_presence(d, rm, from, to->resource, st);
        else if (type_is(st, "") && xs_child(st, NS_MUC, "x")) bounce(d, st, "jid-malformed");
    } else if (xs_is(st, NS_CLIENT, "message")) {
        if (type_is(st, "error")) return;
        if (to->resource[0]) private_message(d, rm, from, to->resource, st);
        else if (type_is(st, "groupchat")) groupchat(d, rm, from, st);
        else if (xs_child(st, NS_MUC_USER, "x")) invite(d, rm, from, st);
        else bounce(d, st, "bad-request");
    } else if (xs_is(st, NS_CLIENT, "iq")) {
        if (to->resource[0]) {
            occupant_iq(d, rm, from, to->resource, st);
        } else {
            room_iq(d, rm, from, st);
        }
    }
}

void muc_route(chatd *d, c2s *origin, xs_node *st)
{
    const char *from = xs_attr_get(st, "from");
    jid to;
    char bare[JID_MAX + 1];
    if (!origin || !from || !d->muc) return;
    if (jid_parse(xs_attr_get(st, "to"), &to) < 0 || !jid_bare(&to, bare, sizeof(bare))) return;

    if (!to.local[0]) {
        if (xs_is(st, NS_CLIENT, "iq") && !to.resource[0]) service_iq(d, st);
        else if (!xs_is(st, NS_CLIENT, "presence")) bounce(d, st, "service-unavailable");
        return;
    }
    room *rm = room_find(d, bare);
    /* An iq to room/nick of a room that is gone: the sender is not in it.
     * XEP-0410 reads item-not-found as "joined, the nick just changed", so
     * a self-ping must get not-acceptable here for the client to rejoin. */
    int occupant_iq_get_set = xs_is(st, NS_CLIENT, "iq") && to.resource[0] &&
                              (type_is(st, "get") || type_is(st, "set"));
    if (!rm) {
        if (xs_is(st, NS_CLIENT, "presence") && to.resource[0] && type_is(st, ""))
            room_create(d, bare, from, st);
        else if (occupant_iq_get_set)
            router_bounce(d, st, "cancel", "not-acceptable");
        else if (!xs_is(st, NS_CLIENT, "presence"))
            bounce(d, st, "item-not-found");
        return;
    }
    if (rm->loading) {
        if (xs_is(st, NS_CLIENT, "presence") && to.resource[0] &&
            rm->njoins >= MUC_PENDING_JOINS) {
            /* presences flooding a room Redis has not answered for yet:
             * bounded, and said so (try again), never queued for ever */
            router_bounce(d, st, "wait", "resource-constraint");
        } else if (xs_is(st, NS_CLIENT, "presence") && to.resource[0]) {
            rm->njoins++;
            pending_join *j = calloc(1, sizeof(*j));
            if (!j || !(j->from = strdup(from))) abort();
            j->stanza = xs_copy(st);
            if (rm->joins_tail) rm->joins_tail->next = j;
            else rm->joins = j;
            rm->joins_tail = j;
        } else if (occupant_iq_get_set) {
            router_bounce(d, st, "cancel", "not-acceptable");
        } else if (!xs_is(st, NS_CLIENT, "presence")) {
            bounce(d, st, "item-not-found");
        }
        return;
    }
    route_to_room(d, rm, from, &to, st);
    if ((rm = room_find(d, bare))) room_maybe_gone(d, rm);
}

void muc_session_gone(chatd *d, const char *full_jid)
{
    if (!d->muc) return;
    for (apr_hash_index_t *hi = apr_hash_first(NULL, d->muc->rooms); hi;
         hi = apr_hash_next(hi)) {
        room *rm = apr_hash_this_val(hi);
        muc_occupant *occ = muc_find_jid(rm->m, full_jid);
        if (!occ) continue;
        remove_occupant(d, rm, occ, 0);
        room_maybe_gone(d, rm);     /* deleting the current entry is allowed */
    }
}

/* ---- admin socket ---- */

void muc_foreach_room(chatd *d, void (*fn)(const char *room_jid, size_t occupants,
                                           int persistent, void *ud), void *ud)
{
    if (!d->muc) return;
    for (apr_hash_index_t *hi = apr_hash_first(NULL, d->muc->rooms); hi;
         hi = apr_hash_next(hi)) {
        room *rm = apr_hash_this_val(hi);
        fn(rm->m->jid, rm->m->noccupants, rm->m->cfg.persistent, ud);
    }
}

int muc_admin_destroy(chatd *d, const char *room_jid, const char *reason)
{
    char bare[JID_MAX + 1];
    if (!d->muc || !jid_bare_str(room_jid, bare, sizeof(bare))) return -1;
    room *rm = room_find(d, bare);
    if (!rm) return -1;
    xs_node *dst = xs_new(NS_MUC_USER, "destroy");
    if (reason && *reason) add_text_elem(dst, NS_MUC_USER, "reason", reason);
    pres_opts o = { .type = "unavailable", .gone = 1, .destroyed = 1, .extra = dst };
    for (muc_occupant *occ = rm->m->occupants; occ; occ = occ->next) {
        xs_node *p = occupant_presence(rm, occ, occ, &o);
        send_to(d, occ->jid, p);
        xs_free(p);
    }
    xs_free(dst);
    room_forget_redis(d, rm, 1);
    room_free(d, rm);
    return 0;
}
