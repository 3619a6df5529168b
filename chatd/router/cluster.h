/*
 * cluster: several chatd nodes form one chat through Redis (issue 16).
 *
 * Off unless `cluster yes`; then every call here is cheap and local except
 * where it says "publishes". What it keeps:
 *  - which nodes are alive: a sorted set chat:nodes, each node's entry
 *    pushed forward by its heartbeat (every cluster_ttl_ms/3);
 *  - where other nodes' sessions are: each node writes its own hash
 *    chat:loc:<node> (full JID -> "<available> <priority>") at bind,
 *    presence change and unbind, and announces the change on the sharded
 *    channel chat:dir; every node keeps the whole directory in memory, so
 *    routing a message reads nothing from Redis. The hash's TTL is
 *    refreshed by the heartbeat: a dead node's sessions expire on their own;
 *  - which node owns each room: a lease chat:room-owner:<room> (SET NX PX,
 *    renewed by the owner's heartbeat), cached here.
 * Stanzas cross with one SPUBLISH on the receiver's channel chat:node:<id>
 * (frames: bus_frame.h); the receiver delivers through the router.
 */
#ifndef CHATD_CLUSTER_H
#define CHATD_CLUSTER_H

#include "chatd.h"
#include "c2s.h"
#include "bus_frame.h"
#include "../../common/xml_stream.h"
#include "../../common/strbuf.h"

struct rsession;

int   cluster_init(chatd *d);         /* 0 (also when off) or -1 */
void  cluster_free(chatd *d);
int   cluster_on(const chatd *d);

/* For chatctl stats: live other nodes, their sessions known here, rooms
 * this node owns, whether the subscriber is up. */
typedef struct cluster_info {
    unsigned live_nodes, remote_sessions, rooms_owned;
    int      subscribed;
} cluster_info;
void  cluster_get_info(chatd *d, cluster_info *out);

/* Session directory (bind: bind 1, presence change, unbind). Publishes. */
void  cluster_session_update(chatd *d, const struct rsession *rs, int bind);
void  cluster_session_gone(chatd *d, const char *full);

/* The node of a session of another node, or NULL. */
const char *cluster_node_of(chatd *d, const char *full);
/* The node holding local's best available session (priority >= 0) on
 * another node, its priority in *prio; NULL if none. */
const char *cluster_best_node(chatd *d, const char *local, int *prio);
/* Does local have an available session on another node? */
int   cluster_has_available(chatd *d, const char *local);

/* Publishes st for `to` to node: its router delivers it there (locally
 * only). A message that cannot cross goes to offline storage; a get/set
 * iq is bounced. */
void  cluster_send(chatd *d, const char *node, const char *to, const xs_node *st);
/* st to local's available sessions on every other node (once per node). */
void  cluster_send_available(chatd *d, const char *local, const xs_node *st);
/* Ask the nodes where contact has available sessions to send their
 * presence to requester (a full JID). */
void  cluster_probe(chatd *d, const char *contact, const char *requester);
/* A subscription stanza for contact, who is online only on other nodes:
 * handled by a node holding contact's roster in memory. 1: sent (st
 * taken), 0: not (handle it here). */
int   cluster_presence_in(chatd *d, const char *contact, xs_node *st);

/* A stanza to a room (room@muc_domain...): 1 when it went, or waits, for
 * the room's owner on another node (the caller still frees st); 0 when
 * this node owns the room (or cluster is off): route it here. */
int   cluster_room_route(chatd *d, c2s *origin, const xs_node *st);

/* Room fan-out: one publish per node, not per occupant. */
#define CLUSTER_FANOUT_NODES 8
typedef struct cluster_fanout {
    int n;
    struct { char node[BUS_NODE_MAX + 1]; strbuf jids; } b[CLUSTER_FANOUT_NODES];
} cluster_fanout;
void  cluster_fanout_init(cluster_fanout *fo);
/* 1 if full is on another node (added to fo), 0 if not, -1 if on a node
 * beyond the CLUSTER_FANOUT_NODES fo has room for (publish it alone). */
int   cluster_fanout_add(chatd *d, cluster_fanout *fo, const char *full);
/* Publishes xml (the stanza without 'to') once to each node in fo. */
void  cluster_fanout_flush(chatd *d, cluster_fanout *fo, const char *xml, size_t len);

#endif
