/*
 * cluster: cross-node routing through Redis (see cluster.h, and
 * docs/scaling.md for the design and its costs).
 *
 * Frames on chat:node:<id> (one SPUBLISH each):
 *   D to          body: a stanza for `to`, delivered by the router here
 *   F jid...      body: a room stanza without 'to'; one copy per jid
 *   M             body: a stanza to a room this node owns
 *   P contact requester   send contact's current presence to requester
 *   S contact     body: a subscription presence for contact's roster
 * Frames on chat:dir (every node):
 *   B full state  a session of the sender node, "<available> <priority>"
 *   U full        that session is gone
 *   R             re-read the sender's chat:loc hash (it was rewritten)
 *   N             the sender (re)started: its old sessions and rooms are gone
 *
 * Correctness of the in-memory directory: a node's directory frames go out
 * through one pool connection (keyed on "chat:dir"), so they arrive in
 * order; each frame carries a session's whole state. A node we (re)load
 * with HGETALL has its frames buffered until the reply, then applied on
 * top: the result is the state of the latest frame. A frame we missed
 * (subscriber down) is covered by reloading every node once subscribed.
 * A publish that reaches no subscriber (the node is gone or
 * reconnecting) falls back: a message to offline storage, an iq bounced.
 */
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <apr_pools.h>
#include <apr_hash.h>
#include <apr_strings.h>
#include "cluster.h"
#include "router.h"
#include "muc.h"
#include "muc_room.h"
#include "log.h"
#include "redis_bus.h"
#include "xmpp_internal.h"

#define ROOM_QUEUE_MAX 256

typedef struct rentry {             /* a session on another node */
    char          *full;
    char          *local;
    char           node[BUS_NODE_MAX + 1];
    int            avail, prio;
    struct rentry *next_u;          /* same localpart */
} rentry;

typedef struct pend {               /* a room stanza waiting for its owner */
    struct pend *next;
    xs_node     *st;
    int          from_node;         /* came over the bus (no local origin) */
} pend;

typedef struct room_own {
    char       *room;
    char        owner[BUS_NODE_MAX + 1];    /* "" unknown */
    int         resolving;
    pend       *q, *qt;
    unsigned    nq;
} room_own;

typedef struct member {             /* a session here in a room owned elsewhere */
    char *key;                      /* full "\n" room */
    char *full, *room, *nick;
} member;

typedef struct evbuf {              /* directory frames held while reloading */
    struct evbuf *next;
    char         *data;
    size_t        len;
} evbuf;

typedef struct reload {
    chatd *d;
    char   node[BUS_NODE_MAX + 1];
    evbuf *q, *qt;
} reload;

typedef struct cluster {
    chatd      *d;
    apr_pool_t *pool;
    redis_bus  *bus;
    char        chan_self[64];
    apr_hash_t *sessions;       /* full -> rentry */
    apr_hash_t *users;          /* local -> rentry list */
    apr_hash_t *live;           /* node -> (char*) node, from the last heartbeat */
    apr_pool_t *live_pool;      /* holds live; a fresh one each heartbeat */
    apr_hash_t *reloading;      /* node -> reload */
    apr_hash_t *rooms;          /* room -> room_own */
    apr_hash_t *members;        /* key -> member */
    loop_timer *beat;
    int         beat_inflight;
    int         dirty;          /* rewrite chat:loc:<self> at the next beat */
    int         started;        /* 'N' went out */
    int         reload_all;     /* subscriber (re)subscribed: reload everyone */
    int         bus_was_up;     /* the subscriber was up before (a reconnect) */
    loop_timer *reflush;        /* reflush_again pending */
} cluster;

static cluster *CL(const chatd *d) { return d->cluster; }
int cluster_on(const chatd *d) { return d->cluster != NULL; }

static char *xstrdup(const char *s)
{
    char *p = strdup(s);
    if (!p) abort();
    return p;
}

static int is_self(const cluster *c, const char *node)
{
    return strcmp(node, c->d->cfg.node_id) == 0;
}

static int node_live(const cluster *c, const char *node)
{
    return is_self(c, node) || apr_hash_get(c->live, node, APR_HASH_KEY_STRING) != NULL;
}

/* ---- publishing ---- */

typedef struct pub_ctx {
    chatd   *d;
    char     kind;
    xs_node *st;                /* for the fallback, or NULL */
    char    *to;
} pub_ctx;

static void fallback(chatd *d, pub_ctx *p)
{
    if (!p->st) return;
    if (p->kind == 'S' && p->to) {
        /* the contact's node is gone: the contact's roster from Redis, here */
        presence_inbound(d, p->to, p->st);
        p->st = NULL;
        return;
    }
    const char *type = xs_attr_get(p->st, "type");
    if (!type) type = "";
    if (p->kind == 'D' && xs_is(p->st, NS_CLIENT, "message")) {
        jid j;
        if (strcmp(type, "error") && strcmp(type, "groupchat") && strcmp(type, "headline") &&
            jid_parse(p->to, &j) == 0 && j.local[0]) {
            offline_store(d, j.local, p->st);
            return;
        }
    }
    if ((p->kind == 'D' || p->kind == 'M') && xs_is(p->st, NS_CLIENT, "iq") &&
        (!strcmp(type, "get") || !strcmp(type, "set")))
        router_bounce(d, p->st, "cancel", "service-unavailable");
    else if (p->kind == 'M' && xs_is(p->st, NS_CLIENT, "message"))
        router_bounce(d, p->st, "wait", "recipient-unavailable");
    else if (p->kind == 'M' && xs_is(p->st, NS_CLIENT, "presence") && !*type)
        router_bounce(d, p->st, "wait", "remote-server-timeout");   /* a join: retry */
}

static void published(redisReply *reply, const char *err, void *ud)
{
    pub_ctx *p = ud;
    int lost = err || !reply || reply->type != REDIS_REPLY_INTEGER || reply->integer < 1;
    if (lost && p->d->cluster) {
        p->d->stats.cluster_unreached++;
        log_debug("cluster: BOSH00654: a '%c' frame for %s reached no node (%s)", p->kind,
                  p->to ? p->to : "-", err ? err : "no subscriber");
        fallback(p->d, p);
    }
    xs_free(p->st);
    free(p->to);
    free(p);
}

/* One SPUBLISH on node's channel, through the connection that channel
 * maps to: frames to one node leave in the order they were made. */
static void publish(cluster *c, const char *node, char kind, const strbuf *frame,
                    const xs_node *st, const char *to)
{
    char chan[64];
    snprintf(chan, sizeof(chan), "chat:node:%s", node);
    pub_ctx *p = calloc(1, sizeof(*p));
    if (!p) abort();
    p->d = c->d;
    p->kind = kind;
    p->st = st ? xs_copy(st) : NULL;
    p->to = to ? xstrdup(to) : NULL;
    c->d->stats.cluster_out++;
    const char *argv[] = { "SPUBLISH", chan, frame->data };
    size_t lens[] = { 8, strlen(chan), frame->len };
    redis_async_commandargv_keyed(c->d->redis, chan, published, p, 3, argv, lens);
}

static void publish_stanza(cluster *c, const char *node, char kind, const char *arg,
                           const xs_node *st)
{
    strbuf f = STRBUF_INIT, body = STRBUF_INIT;
    xs_serialize(st, NULL, &body);      /* with its xmlns: parsed alone there */
    bus_frame_begin(&f, kind, c->d->cfg.node_id);
    if (arg) bus_frame_arg(&f, arg);
    bus_frame_body(&f, body.data, body.len);
    publish(c, node, kind, &f, st, arg ? arg : xs_attr_get(st, "to"));
    sb_free(&f);
    sb_free(&body);
}

void cluster_send(chatd *d, const char *node, const char *to, const xs_node *st)
{
    if (!CL(d)) return;
    publish_stanza(CL(d), node, 'D', to, st);
}

/* ---- the directory ---- */

static void entry_unlink(cluster *c, rentry *e)
{
    apr_hash_set(c->sessions, e->full, APR_HASH_KEY_STRING, NULL);
    rentry *head = apr_hash_get(c->users, e->local, APR_HASH_KEY_STRING);
    rentry **pp = &head;
    while (*pp && *pp != e) pp = &(*pp)->next_u;
    if (*pp) *pp = e->next_u;
    /* the key is the first entry's local: re-key with the new head */
    apr_hash_set(c->users, e->local, APR_HASH_KEY_STRING, NULL);
    if (head) apr_hash_set(c->users, head->local, APR_HASH_KEY_STRING, head);
    free(e->full);
    free(e->local);
    free(e);
}

/* A remote session ended (or its node did): rooms here forget it. */
static void entry_remove(cluster *c, const char *full)
{
    rentry *e = apr_hash_get(c->sessions, full, APR_HASH_KEY_STRING);
    if (!e) return;
    char *f = xstrdup(full);
    entry_unlink(c, e);
    muc_session_gone(c->d, f);
    free(f);
}

static void entry_set(cluster *c, const char *node, const char *full, const char *state)
{
    jid j;
    if (jid_parse(full, &j) < 0 || !j.local[0] || !j.resource[0]) return;
    rentry *e = apr_hash_get(c->sessions, full, APR_HASH_KEY_STRING);
    if (e && strcmp(e->node, node) != 0) { entry_remove(c, full); e = NULL; }
    if (e && e->avail && state[0] == '0') {
        /* available -> unavailable (RFC 6121 §4.5.2): it leaves the rooms
         * here, as a local session does in presence.c */
        e->avail = 0;
        muc_session_gone(c->d, full);
    }
    if (!e) {
        e = calloc(1, sizeof(*e));
        if (!e) abort();
        e->full = xstrdup(full);
        e->local = xstrdup(j.local);
        snprintf(e->node, sizeof(e->node), "%s", node);
        rentry *head = apr_hash_get(c->users, e->local, APR_HASH_KEY_STRING);
        e->next_u = head;
        if (head) apr_hash_set(c->users, head->local, APR_HASH_KEY_STRING, NULL);
        apr_hash_set(c->users, e->local, APR_HASH_KEY_STRING, e);
        apr_hash_set(c->sessions, e->full, APR_HASH_KEY_STRING, e);
    }
    e->avail = 0;
    e->prio = 0;
    sscanf(state, "%d %d", &e->avail, &e->prio);
}

/* Every session of node: gone. */
static void drop_node_entries(cluster *c, const char *node)
{
    apr_hash_index_t *hi = apr_hash_first(NULL, c->sessions);
    while (hi) {
        rentry *e = apr_hash_this_val(hi);
        hi = apr_hash_next(hi);
        if (strcmp(e->node, node) == 0) entry_remove(c, e->full);
    }
}

const char *cluster_node_of(chatd *d, const char *full)
{
    if (!CL(d) || !full) return NULL;
    rentry *e = apr_hash_get(CL(d)->sessions, full, APR_HASH_KEY_STRING);
    return e ? e->node : NULL;
}

const char *cluster_best_node(chatd *d, const char *local, int *prio)
{
    if (!CL(d)) return NULL;
    rentry *best = NULL;
    for (rentry *e = apr_hash_get(CL(d)->users, local, APR_HASH_KEY_STRING); e; e = e->next_u)
        if (e->avail && e->prio >= 0 && (!best || e->prio > best->prio)) best = e;
    if (best && prio) *prio = best->prio;
    return best ? best->node : NULL;
}

int cluster_has_available(chatd *d, const char *local)
{
    if (!CL(d)) return 0;
    for (rentry *e = apr_hash_get(CL(d)->users, local, APR_HASH_KEY_STRING); e; e = e->next_u)
        if (e->avail) return 1;
    return 0;
}

/* Each node (once) holding a session of local, available ones only if
 * avail_only: fn(node). */
static void each_node_of(cluster *c, const char *local, int avail_only,
                         void (*fn)(cluster *c, const char *node, void *ud), void *ud)
{
    const char *seen[CLUSTER_FANOUT_NODES * 4];
    int n = 0;
    for (rentry *e = apr_hash_get(c->users, local, APR_HASH_KEY_STRING); e; e = e->next_u) {
        if (avail_only && !e->avail) continue;
        int dup = 0;
        for (int i = 0; i < n; i++) if (strcmp(seen[i], e->node) == 0) dup = 1;
        if (dup) continue;
        if (n < (int)(sizeof(seen) / sizeof(seen[0]))) seen[n++] = e->node;
        fn(c, e->node, ud);
    }
}

typedef struct { const char *to; const xs_node *st; } send_ud;
static void send_one(cluster *c, const char *node, void *ud)
{
    send_ud *s = ud;
    publish_stanza(c, node, 'D', s->to, s->st);
}

void cluster_send_available(chatd *d, const char *local, const xs_node *st)
{
    if (!CL(d)) return;
    char bare[JID_MAX + 1];
    snprintf(bare, sizeof(bare), "%s@%s", local, d->cfg.domain);
    send_ud s = { bare, st };
    each_node_of(CL(d), local, 1, send_one, &s);
}

typedef struct { const char *contact, *requester; } probe_ud;
static void probe_one(cluster *c, const char *node, void *ud)
{
    probe_ud *p = ud;
    strbuf f = STRBUF_INIT;
    bus_frame_begin(&f, 'P', c->d->cfg.node_id);
    bus_frame_arg(&f, p->contact);
    bus_frame_arg(&f, p->requester);
    bus_frame_body(&f, NULL, 0);
    publish(c, node, 'P', &f, NULL, NULL);
    sb_free(&f);
}

void cluster_probe(chatd *d, const char *contact, const char *requester)
{
    if (!CL(d)) return;
    probe_ud p = { contact, requester };
    each_node_of(CL(d), contact, 1, probe_one, &p);
}

int cluster_presence_in(chatd *d, const char *contact, xs_node *st)
{
    cluster *c = CL(d);
    if (!c) return 0;
    rentry *e = apr_hash_get(c->users, contact, APR_HASH_KEY_STRING);
    if (!e) return 0;
    publish_stanza(c, e->node, 'S', contact, st);
    xs_free(st);
    return 1;
}

/* Our own sessions' state, written by one script: the hash and the frame
 * that tells the others, in one command (bind, presence, unbind). */
static const char SESSION_LUA[] =
    "if ARGV[2] == '' then redis.call('HDEL', KEYS[1], ARGV[1]) "
    "else redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end "
    "redis.call('PEXPIRE', KEYS[1], ARGV[3]) "
    "redis.call('SPUBLISH', 'chat:dir', ARGV[4]) return 1";

static void dir_written(redisReply *reply, const char *err, void *ud)
{
    chatd *d = ud;
    if ((err || !reply || reply->type == REDIS_REPLY_ERROR) && d->cluster) {
        log_warn("cluster: BOSH00655: session directory write failed (%s); the node's "
                 "sessions are written again at the next heartbeat",
                 err ? err : reply ? reply->str : "no reply");
        CL(d)->dirty = 1;
    }
}

static void session_write(chatd *d, const char *full, const char *state, int bind)
{
    cluster *c = CL(d);
    char key[64], ttl[16];
    snprintf(key, sizeof(key), "chat:loc:%s", d->cfg.node_id);
    snprintf(ttl, sizeof(ttl), "%u", d->cfg.cluster_ttl_ms);
    strbuf f = STRBUF_INIT;
    bus_frame_begin(&f, *state ? 'B' : 'U', d->cfg.node_id);
    bus_frame_arg(&f, full);
    if (*state) bus_frame_arg(&f, state);
    if (bind) bus_frame_arg(&f, "bind");
    bus_frame_body(&f, NULL, 0);
    const char *argv[] = { "EVAL", SESSION_LUA, "1", key, full, state, ttl, f.data };
    size_t lens[] = { 4, sizeof(SESSION_LUA) - 1, 1, strlen(key), strlen(full),
                      strlen(state), strlen(ttl), f.len };
    if (!c->dirty)
        redis_async_commandargv_keyed(d->redis, "chat:dir", dir_written, d, 8, argv, lens);
    sb_free(&f);
}

void cluster_session_update(chatd *d, const rsession *rs, int bind)
{
    if (!CL(d) || !rs->bound) return;
    char state[32];
    snprintf(state, sizeof(state), "%d %d", rs->available ? 1 : 0, rs->priority);
    session_write(d, rs->full, state, bind);
}

void cluster_session_gone(chatd *d, const char *full)
{
    if (!CL(d)) return;
    session_write(d, full, "", 0);
}

/* ---- (re)loading another node's sessions ---- */

static void apply_dir_frame(cluster *c, const char *data, size_t len);

static void reload_done(redisReply *reply, const char *err, void *ud)
{
    reload *r = ud;
    /* The cluster may have been freed (or this reload orphaned by an 'N'):
     * then r is no longer the one it waits for. */
    cluster *c = CL(r->d);
    if (!c || apr_hash_get(c->reloading, r->node, APR_HASH_KEY_STRING) != r) {
        while (r->q) { evbuf *e = r->q; r->q = e->next; free(e->data); free(e); }
        free(r);
        return;
    }
    apr_hash_set(c->reloading, r->node, APR_HASH_KEY_STRING, NULL);
    drop_node_entries(c, r->node);
    if (err || !reply || reply->type != REDIS_REPLY_ARRAY) {
        log_warn("cluster: BOSH00656: cannot read node %s's sessions (%s); again at the "
                 "next heartbeat", r->node, err ? err : "bad reply");
        c->reload_all = 1;
    } else {
        for (size_t i = 0; i + 1 < reply->elements; i += 2)
            if (reply->element[i]->type == REDIS_REPLY_STRING &&
                reply->element[i + 1]->type == REDIS_REPLY_STRING)
                entry_set(c, r->node, reply->element[i]->str, reply->element[i + 1]->str);
    }
    while (r->q) {
        evbuf *e = r->q;
        r->q = e->next;
        apply_dir_frame(c, e->data, e->len);
        free(e->data);
        free(e);
    }
    free(r);
}

static void reload_node(cluster *c, const char *node)
{
    if (is_self(c, node) || apr_hash_get(c->reloading, node, APR_HASH_KEY_STRING)) return;
    reload *r = calloc(1, sizeof(*r));
    if (!r) abort();
    r->d = c->d;
    snprintf(r->node, sizeof(r->node), "%s", node);
    apr_hash_set(c->reloading, r->node, APR_HASH_KEY_STRING, r);
    redis_async_command(c->d->redis, reload_done, r, "HGETALL chat:loc:%s", node);
}

/* ---- rooms owned elsewhere ---- */

static room_own *room_get(cluster *c, const char *room)
{
    room_own *ro = apr_hash_get(c->rooms, room, APR_HASH_KEY_STRING);
    if (ro) return ro;
    ro = calloc(1, sizeof(*ro));
    if (!ro) abort();
    ro->room = xstrdup(room);
    apr_hash_set(c->rooms, ro->room, APR_HASH_KEY_STRING, ro);
    return ro;
}

static void member_track(cluster *c, const xs_node *st)
{
    const char *from = xs_attr_get(st, "from"), *to = xs_attr_get(st, "to");
    const char *type = xs_attr_get(st, "type");
    jid j;
    char room[JID_MAX + 1], key[2 * JID_MAX + 4];
    if (!from || jid_parse(to, &j) < 0 || !j.resource[0] || !jid_bare(&j, room, sizeof(room)))
        return;
    snprintf(key, sizeof(key), "%s\n%s", from, room);
    member *m = apr_hash_get(c->members, key, APR_HASH_KEY_STRING);
    if (!type) {
        if (!m) {
            m = calloc(1, sizeof(*m));
            if (!m) abort();
            m->key = xstrdup(key);
            m->full = xstrdup(from);
            m->room = xstrdup(room);
            apr_hash_set(c->members, m->key, APR_HASH_KEY_STRING, m);
        } else {
            free(m->nick);
        }
        m->nick = xstrdup(j.resource);
    } else if (strcmp(type, "unavailable") == 0 && m) {
        apr_hash_set(c->members, m->key, APR_HASH_KEY_STRING, NULL);
        free(m->key); free(m->full); free(m->room); free(m->nick); free(m);
    }
}

/* XEP-0045 §9.2 / status 332: the room's node went away. The session is
 * out of the room; it may join again (the next owner loads the room). */
static void members_told(cluster *c, const char *room)
{
    apr_hash_index_t *hi = apr_hash_first(NULL, c->members);
    while (hi) {
        member *m = apr_hash_this_val(hi);
        hi = apr_hash_next(hi);
        if (strcmp(m->room, room) != 0) continue;
        rsession *rs = router_session(c->d, m->full);
        if (rs) {
            char from[2 * JID_MAX + 2];
            snprintf(from, sizeof(from), "%s/%s", m->room, m->nick);
            xs_node *p = stanza_new("presence", from, m->full, "unavailable", NULL);
            xs_node *x = xs_add_elem(p, "http://jabber.org/protocol/muc#user", "x");
            xs_node *it = xs_add_elem(x, "http://jabber.org/protocol/muc#user", "item");
            xs_set_attr(it, "affiliation", "none");
            xs_set_attr(it, "role", "none");
            xs_set_attr(xs_add_elem(x, "http://jabber.org/protocol/muc#user", "status"),
                        "code", "110");
            xs_set_attr(xs_add_elem(x, "http://jabber.org/protocol/muc#user", "status"),
                        "code", "332");
            session_send(rs, p);
            xs_free(p);
        }
        apr_hash_set(c->members, m->key, APR_HASH_KEY_STRING, NULL);
        free(m->key); free(m->full); free(m->room); free(m->nick); free(m);
    }
}

static void room_dispatch(cluster *c, room_own *ro, xs_node *st, int from_node);

static void room_flush(cluster *c, room_own *ro)
{
    pend *p;
    while (ro->owner[0] && (p = ro->q)) {
        ro->q = p->next;
        if (!ro->q) ro->qt = NULL;
        ro->nq--;
        room_dispatch(c, ro, p->st, p->from_node);
        xs_free(p->st);
        free(p);
    }
}

static void room_resolve(cluster *c, room_own *ro);

typedef struct { chatd *d; char *room; } resolve_ctx;

static void resolved(redisReply *reply, const char *err, void *ud)
{
    resolve_ctx *rc = ud;
    cluster *c = rc->d->cluster;
    room_own *ro = c ? apr_hash_get(c->rooms, rc->room, APR_HASH_KEY_STRING) : NULL;
    free(rc->room);
    free(rc);
    if (!ro) return;
    ro->resolving = 0;
    if (err || !reply || reply->type == REDIS_REPLY_ERROR) {
        log_warn("cluster: BOSH00657: cannot learn the owner of %s (%s); %u stanza(s) to "
                 "it bounced", ro->room, err ? err : reply ? reply->str : "no reply", ro->nq);
        pend *p;
        while ((p = ro->q)) {
            ro->q = p->next;
            router_bounce(c->d, p->st, "wait", "remote-server-timeout");
            xs_free(p->st);
            free(p);
        }
        ro->qt = NULL;
        ro->nq = 0;
        return;
    }
    const char *owner = reply->type == REDIS_REPLY_STRING ? reply->str : c->d->cfg.node_id;
    if (!node_live(c, owner)) {
        /* The lease of a node we know is dead has not expired yet: ask
         * again at the next heartbeat, the stanzas wait (bounded). */
        return;
    }
    snprintf(ro->owner, sizeof(ro->owner), "%s", owner);
    if (is_self(c, owner))
        log_info("cluster: BOSH00658: this node owns room %s", ro->room);
    room_flush(c, ro);
}

static void room_resolve(cluster *c, room_own *ro)
{
    if (ro->resolving) return;
    ro->resolving = 1;
    resolve_ctx *rc = malloc(sizeof(*rc));
    if (!rc) abort();
    rc->d = c->d;
    rc->room = xstrdup(ro->room);
    char key[JID_MAX + 32], ttl[16];
    snprintf(key, sizeof(key), "chat:room-owner:%s", ro->room);
    snprintf(ttl, sizeof(ttl), "%u", c->d->cfg.cluster_ttl_ms);
    /* Redis 7: NX with GET answers the current owner, or nil when we
     * became it. */
    const char *argv[] = { "SET", key, c->d->cfg.node_id, "NX", "PX", ttl, "GET" };
    redis_async_commandargv_keyed(c->d->redis, key, resolved, rc, 7, argv, NULL);
}

static void room_dispatch(cluster *c, room_own *ro, xs_node *st, int from_node)
{
    chatd *d = c->d;
    if (is_self(c, ro->owner)) {
        if (from_node) {
            muc_route_remote(d, st);
        } else {
            rsession *rs = router_session(d, xs_attr_get(st, "from"));
            if (rs) muc_route(d, rs->c2s, st);
        }
        return;
    }
    if (!from_node) member_track(c, st);
    publish_stanza(c, ro->owner, 'M', NULL, st);
}

static void room_enqueue(cluster *c, room_own *ro, const xs_node *st, int from_node)
{
    if (ro->nq >= ROOM_QUEUE_MAX) {
        router_bounce(c->d, st, "wait", "resource-constraint");
        return;
    }
    pend *p = calloc(1, sizeof(*p));
    if (!p) abort();
    p->st = xs_copy(st);
    p->from_node = from_node;
    if (ro->qt) ro->qt->next = p; else ro->q = p;
    ro->qt = p;
    ro->nq++;
    room_resolve(c, ro);
}

static void room_stanza(cluster *c, const xs_node *st, int from_node, const char *room)
{
    room_own *ro = room_get(c, room);
    if (ro->owner[0] && !node_live(c, ro->owner)) ro->owner[0] = '\0';
    /* Sent here as the owner, but we think another node is: one of us is
     * stale. Ask Redis rather than send it on (no ping-pong). */
    if (from_node && ro->owner[0] && !is_self(c, ro->owner)) ro->owner[0] = '\0';
    if (!ro->owner[0] || ro->q) { room_enqueue(c, ro, st, from_node); return; }
    xs_node *copy = xs_copy(st);
    room_dispatch(c, ro, copy, from_node);
    xs_free(copy);
}

int cluster_room_route(chatd *d, c2s *origin, const xs_node *st)
{
    cluster *c = CL(d);
    (void)origin;
    if (!c) return 0;
    jid j;
    char room[JID_MAX + 1];
    if (jid_parse(xs_attr_get(st, "to"), &j) < 0 || !j.local[0] ||
        !jid_bare(&j, room, sizeof(room)))
        return 0;                       /* the service itself: any node answers */
    room_own *ro = room_get(c, room);
    if (ro->owner[0] && is_self(c, ro->owner) && !ro->q) return 0;
    room_stanza(c, st, 0, room);
    return 1;
}

/* ---- fan-out ---- */

void cluster_fanout_init(cluster_fanout *fo)
{
    memset(fo, 0, sizeof(*fo));
}

int cluster_fanout_add(chatd *d, cluster_fanout *fo, const char *full)
{
    const char *node = cluster_node_of(d, full);
    if (!node) return 0;
    int i;
    for (i = 0; i < fo->n; i++)
        if (strcmp(fo->b[i].node, node) == 0) break;
    if (i == fo->n) {
        if (fo->n == CLUSTER_FANOUT_NODES) return -1;   /* the caller sends it alone */
        snprintf(fo->b[i].node, sizeof(fo->b[i].node), "%s", node);
        sb_init(&fo->b[i].jids);
        fo->n++;
    }
    bus_frame_arg(&fo->b[i].jids, full);
    return 1;
}

void cluster_fanout_flush(chatd *d, cluster_fanout *fo, const char *xml, size_t len)
{
    for (int i = 0; i < fo->n; i++) {
        if (CL(d)) {
            strbuf f = STRBUF_INIT;
            bus_frame_begin(&f, 'F', d->cfg.node_id);
            sb_append(&f, fo->b[i].jids.data, fo->b[i].jids.len);
            bus_frame_body(&f, xml, len);
            publish(CL(d), fo->b[i].node, 'F', &f, NULL, NULL);
            sb_free(&f);
        }
        sb_free(&fo->b[i].jids);
    }
    fo->n = 0;
}

/* ---- receiving ---- */

static xs_node *frame_stanza(const bus_frame *f)
{
    xs_node *st = NULL;
    char err[64];
    if (!f->body_len ||
        xs_parse_document(f->body, f->body_len, f->body_len + 1, &st, err, sizeof(err)) != XS_OK) {
        xs_free(st);
        return NULL;
    }
    return st;
}

static void node_lost(cluster *c, const char *node, const char *why)
{
    if (why)
        log_info("cluster: BOSH00659: node %s %s: its sessions leave, its rooms move to "
                 "the next node that needs them", node, why);
    drop_node_entries(c, node);
    for (apr_hash_index_t *hi = apr_hash_first(NULL, c->rooms); hi; hi = apr_hash_next(hi)) {
        room_own *ro = apr_hash_this_val(hi);
        if (strcmp(ro->owner, node) != 0) continue;
        ro->owner[0] = '\0';
        members_told(c, ro->room);
    }
}

static void apply_dir_frame(cluster *c, const char *data, size_t len)
{
    bus_frame f;
    if (bus_frame_parse(data, len, &f) < 0 || is_self(c, f.node)) return;
    reload *r = apr_hash_get(c->reloading, f.node, APR_HASH_KEY_STRING);
    if (r && f.kind != 'N') {
        evbuf *e = calloc(1, sizeof(*e));
        if (!e || !(e->data = malloc(len))) abort();
        memcpy(e->data, data, len);
        e->len = len;
        if (r->qt) r->qt->next = e; else r->q = e;
        r->qt = e;
        return;
    }
    const char *cur = f.args;
    char full[JID_MAX + 1], state[32];
    switch (f.kind) {
    case 'B':
        if (bus_frame_next_arg(&f, &cur, full, sizeof(full)) == 1 &&
            bus_frame_next_arg(&f, &cur, state, sizeof(state)) == 1) {
            char flag[8];
            rsession *mine = router_session(c->d, full);
            /* The same full JID bound on another node after ours: as on
             * one node (router_bind), the newer session takes the
             * resource and ours gets stream error conflict. */
            if (mine && bus_frame_next_arg(&f, &cur, flag, sizeof(flag)) == 1 &&
                strcmp(flag, "bind") == 0) {
                log_info("cluster: BOSH00666: %s bound again on node %s, closing it here",
                         full, f.node);
                c2s_close(mine->c2s, "conflict", NULL);
            }
            entry_set(c, f.node, full, state);
        }
        break;
    case 'U':
        if (bus_frame_next_arg(&f, &cur, full, sizeof(full)) == 1) {
            /* only the sender's own entry: the JID may have moved on */
            const char *node = cluster_node_of(c->d, full);
            if (node && strcmp(node, f.node) == 0) entry_remove(c, full);
        }
        break;
    case 'N':
        if (r) apr_hash_set(c->reloading, f.node, APR_HASH_KEY_STRING, NULL);  /* orphaned */
        node_lost(c, f.node, apr_hash_get(c->live, f.node, APR_HASH_KEY_STRING)
                                 ? "restarted" : NULL);
        reload_node(c, f.node);
        break;
    case 'R':
        reload_node(c, f.node);
        break;
    default:
        break;
    }
}

static void on_node_frame(cluster *c, const char *data, size_t len)
{
    chatd *d = c->d;
    bus_frame f;
    if (bus_frame_parse(data, len, &f) < 0) return;
    const char *cur = f.args;
    char a1[JID_MAX + 1], a2[JID_MAX + 1];
    switch (f.kind) {
    case 'D': {
        xs_node *st = frame_stanza(&f);
        if (st && bus_frame_next_arg(&f, &cur, a1, sizeof(a1)) == 1)
            router_deliver_local(d, a1, st);
        xs_free(st);
        break;
    }
    case 'F': {
        strbuf scratch = STRBUF_INIT;
        while (bus_frame_next_arg(&f, &cur, a1, sizeof(a1)) == 1) {
            rsession *rs = router_session(d, a1);
            if (!rs) continue;
            sb_reset(&scratch);
            muc_splice_to(f.body, f.body_len, a1, &scratch);
            session_send_raw(rs, scratch.data, scratch.len);
        }
        sb_free(&scratch);
        break;
    }
    case 'M': {
        xs_node *st = frame_stanza(&f);
        jid j;
        char room[JID_MAX + 1];
        if (st && jid_parse(xs_attr_get(st, "to"), &j) == 0 && j.local[0] &&
            jid_bare(&j, room, sizeof(room)))
            room_stanza(c, st, 1, room);
        xs_free(st);
        break;
    }
    case 'P':
        if (bus_frame_next_arg(&f, &cur, a1, sizeof(a1)) == 1 &&
            bus_frame_next_arg(&f, &cur, a2, sizeof(a2)) == 1)
            presence_send_current(d, a1, a2);
        break;
    case 'S': {
        xs_node *st = frame_stanza(&f);
        if (st && bus_frame_next_arg(&f, &cur, a1, sizeof(a1)) == 1) {
            presence_inbound(d, a1, st);     /* takes st */
            st = NULL;
        }
        xs_free(st);
        break;
    }
    default:
        break;
    }
}

static void on_bus_msg(const char *channel, const char *payload, size_t len, void *ud)
{
    cluster *c = ud;
    c->d->stats.cluster_in++;
    if (strcmp(channel, "chat:dir") == 0) apply_dir_frame(c, payload, len);
    else on_node_frame(c, payload, len);
}

static void beat_now(cluster *c);

/* Messages other nodes sent here while our subscriber was down reached no
 * one and went to offline storage (publish fallback): hand them to the
 * sessions here that are online now, as at their sign-in. */
static void reflush_session(c2s *s, const char *full, void *ud)
{
    (void)s;
    chatd *d = ud;
    rsession *rs = router_session(d, full);
    if (!rs || !rs->available || rs->priority < 0) return;
    rs->offline_done = 0;
    offline_flush(d, rs);
}

/* Once more a heartbeat later: a sender's fallback store may land after
 * the first pass. */
static void reflush_again(loop *l, void *ud)
{
    (void)l;
    cluster *c = ud;
    c->reflush = NULL;
    router_foreach_session(c->d, reflush_session, c->d);
}

static void on_bus_up(void *ud)
{
    cluster *c = ud;
    c->reload_all = 1;      /* whatever was published meanwhile is lost */
    c->dirty = 1;           /* and Redis may have restarted empty: rewrite ours */
    if (c->bus_was_up) {
        router_foreach_session(c->d, reflush_session, c->d);
        if (!c->reflush)
            c->reflush = loop_timer_add(c->d->loop, c->d->cfg.cluster_ttl_ms / 3,
                                        reflush_again, c);
    }
    c->bus_was_up = 1;
    beat_now(c);
}

/* ---- heartbeat ---- */

static const char BEAT_LUA[] =
    "local t = redis.call('TIME') "
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "
    "local ttl = tonumber(ARGV[2]) "
    "redis.call('ZADD', KEYS[1], now + ttl, ARGV[1]) "
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 600000) "
    "redis.call('PEXPIRE', KEYS[2], ttl) "
    "local lost = {} "
    "for i = 3, #KEYS do "
    "  local o = redis.call('GET', KEYS[i]) "
    "  if o == ARGV[1] then redis.call('PEXPIRE', KEYS[i], ttl) "
    "  elseif not o then redis.call('SET', KEYS[i], ARGV[1], 'PX', ttl) "
    "  else lost[#lost + 1] = KEYS[i] end "
    "end "
    "return {redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf'), lost}";

/* Rewrite our whole hash and tell the others (kind N at start, R after a
 * failed write). */
static const char RESYNC_LUA[] =
    "redis.call('DEL', KEYS[1]) "
    "for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end "
    "redis.call('PEXPIRE', KEYS[1], ARGV[1]) "
    "redis.call('SPUBLISH', 'chat:dir', ARGV[2]) return 1";

static void resync_done(redisReply *reply, const char *err, void *ud)
{
    chatd *d = ud;
    cluster *c = d->cluster;
    if (!c) return;
    if (err || !reply || reply->type == REDIS_REPLY_ERROR) {
        c->dirty = 1;
        if (c->started)     /* at start-up the pool may not be connected yet */
            log_warn("cluster: BOSH00660: cannot write this node's sessions (%s); retrying",
                     err ? err : reply ? reply->str : "no reply");
        return;
    }
    if (!c->started) log_info("cluster: BOSH00661: node %s announced", d->cfg.node_id);
    c->started = 1;
}

static void collect_session(c2s *s, const char *full, void *ud)
{
    (void)s;
    void **a = ud;
    chatd *d = a[0];
    char ***vec = a[1];
    size_t *n = a[2];
    rsession *rs = router_session(d, full);
    if (!rs) return;
    char state[32];
    snprintf(state, sizeof(state), "%d %d", rs->available ? 1 : 0, rs->priority);
    *vec = realloc(*vec, (*n + 2) * sizeof(char *));
    if (!*vec) abort();
    (*vec)[(*n)++] = xstrdup(full);
    (*vec)[(*n)++] = xstrdup(state);
}

static void resync(cluster *c)
{
    chatd *d = c->d;
    char key[64], ttl[16];
    snprintf(key, sizeof(key), "chat:loc:%s", d->cfg.node_id);
    snprintf(ttl, sizeof(ttl), "%u", d->cfg.cluster_ttl_ms);
    strbuf f = STRBUF_INIT;
    bus_frame_begin(&f, c->started ? 'R' : 'N', d->cfg.node_id);
    bus_frame_body(&f, NULL, 0);
    char **pairs = NULL;
    size_t np = 0;
    void *a[] = { d, &pairs, &np };
    router_foreach_session(d, collect_session, a);
    size_t argc = 6 + np;
    const char **argv = calloc(argc, sizeof(char *));
    size_t *lens = calloc(argc, sizeof(size_t));
    if (!argv || !lens) abort();
    argv[0] = "EVAL"; argv[1] = RESYNC_LUA; argv[2] = "1"; argv[3] = key;
    argv[4] = ttl; argv[5] = f.data;
    for (size_t i = 0; i < np; i++) argv[6 + i] = pairs[i];
    for (size_t i = 0; i < argc; i++) lens[i] = i == 5 ? f.len : strlen(argv[i]);
    c->dirty = 0;
    redis_async_commandargv_keyed(d->redis, "chat:dir", resync_done, d, (int)argc, argv, lens);
    for (size_t i = 0; i < np; i++) free(pairs[i]);
    free(pairs);
    free(argv);
    free(lens);
    sb_free(&f);
}

static void beat_done(redisReply *reply, const char *err, void *ud)
{
    chatd *d = ud;
    cluster *c = d->cluster;
    if (!c) return;
    c->beat_inflight = 0;
    if (err || !reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[0]->type != REDIS_REPLY_ARRAY) {
        if (c->started)
            log_warn("cluster: BOSH00662: heartbeat failed (%s)",
                 err ? err : reply && reply->type == REDIS_REPLY_ERROR ? reply->str
                                                                     : "bad reply");
        c->dirty = 1;       /* our hash may have expired meanwhile */
        return;
    }
    redisReply *nodes = reply->element[0], *lost = reply->element[1];
    apr_pool_t *np;
    if (apr_pool_create(&np, c->pool) != APR_SUCCESS) abort();
    apr_hash_t *now = apr_hash_make(np);
    for (size_t i = 0; i < nodes->elements; i++) {
        redisReply *n = nodes->element[i];
        if (n->type != REDIS_REPLY_STRING || is_self(c, n->str)) continue;
        char *id = apr_pstrdup(np, n->str);
        apr_hash_set(now, id, APR_HASH_KEY_STRING, id);
        if (c->reload_all || !apr_hash_get(c->live, id, APR_HASH_KEY_STRING)) {
            if (!apr_hash_get(c->live, id, APR_HASH_KEY_STRING))
                log_info("cluster: BOSH00663: node %s is alive", id);
            reload_node(c, id);
        }
    }
    c->reload_all = 0;
    apr_hash_t *old = c->live;
    apr_pool_t *old_pool = c->live_pool;
    c->live = now;
    c->live_pool = np;
    for (apr_hash_index_t *hi = apr_hash_first(NULL, old); hi; hi = apr_hash_next(hi)) {
        const char *id = apr_hash_this_val(hi);
        if (!apr_hash_get(now, id, APR_HASH_KEY_STRING)) node_lost(c, id, "is gone");
    }
    if (old_pool) apr_pool_destroy(old_pool);
    if (lost->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i < lost->elements; i++) {
            const char *k = lost->element[i]->str + strlen("chat:room-owner:");
            room_own *ro = apr_hash_get(c->rooms, k, APR_HASH_KEY_STRING);
            log_warn("cluster: BOSH00664: lost the lease on room %s to another node", k);
            if (ro) ro->owner[0] = '\0';
        }
    /* Rooms waiting for a dead owner's lease to run out: ask again. */
    for (apr_hash_index_t *hi = apr_hash_first(NULL, c->rooms); hi; hi = apr_hash_next(hi)) {
        room_own *ro = apr_hash_this_val(hi);
        if (!ro->owner[0] && ro->q) room_resolve(c, ro);
    }
}

static void beat_cb(loop *l, void *ud);

static void beat_now(cluster *c)
{
    chatd *d = c->d;
    if (c->dirty) resync(c);
    if (c->beat_inflight) return;
    char key[64], ttl[16];
    snprintf(key, sizeof(key), "chat:loc:%s", d->cfg.node_id);
    snprintf(ttl, sizeof(ttl), "%u", d->cfg.cluster_ttl_ms);
    unsigned nrooms = 0;
    for (apr_hash_index_t *hi = apr_hash_first(NULL, c->rooms); hi; hi = apr_hash_next(hi)) {
        room_own *ro = apr_hash_this_val(hi);
        if (is_self(c, ro->owner)) nrooms++;
    }
    size_t argc = 6 + nrooms + 2;
    const char **argv = calloc(argc, sizeof(char *));
    char **keys = calloc(nrooms + 1, sizeof(char *));
    if (!argv || !keys) abort();
    char nk[16];
    snprintf(nk, sizeof(nk), "%u", 2 + nrooms);
    size_t n = 0;
    argv[n++] = "EVAL"; argv[n++] = BEAT_LUA; argv[n++] = nk;
    argv[n++] = "chat:nodes"; argv[n++] = key;
    unsigned k = 0;
    for (apr_hash_index_t *hi = apr_hash_first(NULL, c->rooms); hi; hi = apr_hash_next(hi)) {
        room_own *ro = apr_hash_this_val(hi);
        if (!is_self(c, ro->owner)) continue;
        size_t len = strlen(ro->room) + 32;
        keys[k] = malloc(len);
        if (!keys[k]) abort();
        snprintf(keys[k], len, "chat:room-owner:%s", ro->room);
        argv[n++] = keys[k++];
    }
    argv[n++] = d->cfg.node_id;
    argv[n++] = ttl;
    c->beat_inflight = 1;
    redis_async_commandargv_keyed(d->redis, "chat:dir", beat_done, d, (int)n, argv, NULL);
    for (unsigned i = 0; i < k; i++) free(keys[i]);
    free(keys);
    free(argv);
}

static void beat_cb(loop *l, void *ud)
{
    cluster *c = ud;
    c->beat = loop_timer_add(l, c->d->cfg.cluster_ttl_ms / 3, beat_cb, c);
    beat_now(c);
}

void cluster_get_info(chatd *d, cluster_info *out)
{
    memset(out, 0, sizeof(*out));
    cluster *c = CL(d);
    if (!c) return;
    out->live_nodes = apr_hash_count(c->live);
    out->remote_sessions = apr_hash_count(c->sessions);
    for (apr_hash_index_t *hi = apr_hash_first(NULL, c->rooms); hi; hi = apr_hash_next(hi)) {
        room_own *ro = apr_hash_this_val(hi);
        if (is_self(c, ro->owner)) out->rooms_owned++;
    }
    out->subscribed = redis_bus_is_up(c->bus);
}

/* ---- life ---- */

int cluster_init(chatd *d)
{
    if (!d->cfg.cluster) return 0;
    cluster *c = calloc(1, sizeof(*c));
    if (!c) return -1;
    c->d = d;
    if (apr_pool_create(&c->pool, NULL) != APR_SUCCESS) { free(c); return -1; }
    c->sessions = apr_hash_make(c->pool);
    c->users = apr_hash_make(c->pool);
    c->live = apr_hash_make(c->pool);
    c->reloading = apr_hash_make(c->pool);
    c->rooms = apr_hash_make(c->pool);
    c->members = apr_hash_make(c->pool);
    c->dirty = 1;                       /* announce ourselves: 'N' */
    snprintf(c->chan_self, sizeof(c->chan_self), "chat:node:%s", d->cfg.node_id);
    d->cluster = c;
    const char *chans[] = { c->chan_self, "chat:dir" };
    c->bus = redis_bus_new(d->loop, d->cfg.redis_url, chans, 2, on_bus_msg, on_bus_up, c);
    if (!c->bus) { cluster_free(d); return -1; }
    c->beat = loop_timer_add(d->loop, 0, beat_cb, c);
    log_info("cluster: BOSH00665: node %s, heartbeat every %u ms, ttl %u ms",
             d->cfg.node_id, d->cfg.cluster_ttl_ms / 3, d->cfg.cluster_ttl_ms);
    return 0;
}

void cluster_free(chatd *d)
{
    cluster *c = CL(d);
    if (!c) return;
    d->cluster = NULL;
    loop_timer_cancel(d->loop, c->beat);
    loop_timer_cancel(d->loop, c->reflush);
    redis_bus_free(c->bus);
    apr_hash_index_t *hi;
    while ((hi = apr_hash_first(NULL, c->sessions))) {
        rentry *e = apr_hash_this_val(hi);
        entry_unlink(c, e);
    }
    for (hi = apr_hash_first(NULL, c->rooms); hi; hi = apr_hash_next(hi)) {
        room_own *ro = apr_hash_this_val(hi);
        while (ro->q) { pend *p = ro->q; ro->q = p->next; xs_free(p->st); free(p); }
        free(ro->room);
        free(ro);
    }
    for (hi = apr_hash_first(NULL, c->members); hi; hi = apr_hash_next(hi)) {
        member *m = apr_hash_this_val(hi);
        free(m->key); free(m->full); free(m->room); free(m->nick); free(m);
    }
    /* pending reloads find no cluster and free themselves */
    apr_pool_destroy(c->pool);
    free(c);
}
