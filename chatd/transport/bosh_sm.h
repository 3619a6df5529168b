/*
 * bosh_sm: the pure BOSH session state machine (XEP-0124 1.11 / XEP-0206).
 *
 * Why a separate, pure machine: the rules about rids, holding, wait,
 * retransmission, pause and termination are where BOSH servers break real
 * clients (Strophe/Converse page reloads, retries after a lost answer).
 * Keeping them free of I/O, APR and chatd types lets a unit test or a fuzzer
 * drive them with fake clocks and opaque request handles.
 *
 * Model: the caller feeds events (a request arrived, the XMPP side produced
 * output, time passed, a request was released by the relay) with the current
 * time in ms. The machine answers with a list of actions the caller executes
 * in order:
 *   ANSWER  req  body        answer that request now (the body is ready)
 *   PROCESS req  rid         hand this request's payloads / restart /
 *                            terminate to the XMPP stream(s) named by
 *                            .stream, or open one (.new_stream); rid order
 *   END                      the session is over; every request it knew of
 *                            has been answered in this or an earlier list
 * and asks to be woken at bosh_sm_deadline() (bosh_sm_tick).
 *
 * Requests are opaque pointers (void *req) owned by the caller. Every req
 * handed to the machine appears in exactly one ANSWER action, eventually.
 */
#ifndef CHATD_BOSH_SM_H
#define CHATD_BOSH_SM_H

#include <stddef.h>
#include <stdint.h>

#define BOSH_SM_MAX_HOLD      8      /* hard cap on hold, whatever the config */
#define BOSH_SM_MAX_ACTIONS   64
/* An out-of-order rid waits this long for the gap below it to fill; then
 * the missing rids are given up (a page reload can skip one rid). */
#define BOSH_SM_GAP_MS        2000
/* Streams per session (XEP-0124 §multi), counting closed ones that are
 * still remembered so late payloads for them are ignored, not fatal. */
#define BOSH_SM_MAX_STREAMS   8
#define BOSH_SM_STREAM_NAME_MAX 64   /* bytes, with the NUL */
/* With acks (§ack-response) every unacked response is kept, up to this. */
#define BOSH_SM_MAX_BUFFERED  64
/* A client ack below the last response sent is only reported (report/time)
 * once that response is this old: younger, it is simply still in flight. */
#define BOSH_SM_REPORT_MS     1000
/* Polling too often (§poll) is policy-violation only in a polling session
 * (hold=0 or wait=0) and after this many offending empty polls in a row. */
#define BOSH_SM_POLL_STRIKES  5
#define BOSH_SM_ALL_STREAMS   (-1)
#define BOSH_SM_KEY_MAX       40     /* hex SHA-1 */

/* Negotiated session values (what the creation response advertises). */
typedef struct bosh_sm_params {
    unsigned wait;          /* s */
    unsigned hold;          /* 0..BOSH_SM_MAX_HOLD */
    unsigned requests;      /* hold + 1 */
    unsigned inactivity;    /* s; 0 = unlimited */
    unsigned polling;       /* s; 0 = any frequency (see BOSH_SM_POLL_STRIKES) */
    unsigned maxpause;      /* s; 0 = pause not offered */
    unsigned ver_major, ver_minor;
    int      acks;          /* client sent ack='1': 'ack' on our responses,
                               its acks trim the response buffer */
    size_t   max_buffer_bytes; /* cap on the bytes of kept responses (0: none;
                               bosh_ack_buffer). Past it the oldest responses
                               go, acknowledged or not, down to the last
                               `requests`; a client that then asks for one of
                               them again gets terminate item-not-found, as
                               for any response no longer buffered. */
} bosh_sm_params;

/* Server limits (from the configuration). */
typedef struct bosh_sm_limits {
    unsigned max_wait, max_hold, inactivity, maxpause, polling;
} bosh_sm_limits;

/* Client's creation request; has_* say whether the attribute was sent. */
typedef struct bosh_sm_client {
    int has_wait, has_hold, has_ver;
    unsigned wait, hold, ver_major, ver_minor;
    int has_ack;            /* ack='1' at creation: acks throughout */
    uint64_t ack;
} bosh_sm_client;

/* Clamp the client's wishes to the limits: wait <= max_wait, hold <=
 * max_hold (and BOSH_SM_MAX_HOLD), requests = hold+1, ver = min(client,
 * 1.11) (1.11 when the client sent none), acks iff the client sent ack='1'. */
void bosh_sm_negotiate(const bosh_sm_limits *lim, const bosh_sm_client *c,
                       bosh_sm_params *out);

typedef enum { BOSH_ACT_ANSWER, BOSH_ACT_PROCESS, BOSH_ACT_END } bosh_act_type;

typedef struct bosh_action {
    bosh_act_type type;
    void       *req;        /* ANSWER, PROCESS */
    uint64_t    rid;        /* ANSWER (0 if unknown), PROCESS */
    int         stream;     /* PROCESS: the stream id the payloads (restart,
                               terminate) are for, or BOSH_SM_ALL_STREAMS:
                               broadcast to every open stream */
    int         new_stream; /* PROCESS: an add-stream request (§multi-add):
                               open a stream, then bosh_sm_stream_add() */
    int         status;     /* ANSWER: HTTP status, 200 or 503 (retry) */
    const char *condition;  /* ANSWER: terminal condition, or NULL */
    char       *body;       /* ANSWER: malloc'd, freed by bosh_actions_clear */
    size_t      len;
} bosh_action;

typedef struct bosh_actions {
    bosh_action a[BOSH_SM_MAX_ACTIONS];
    size_t      n;
} bosh_actions;

void bosh_actions_init(bosh_actions *acts);
void bosh_actions_clear(bosh_actions *acts);   /* frees bodies, n = 0 */

/* Request flags (bosh_sm_request). */
#define BOSH_REQ_TERMINATE  1u    /* type='terminate' */
#define BOSH_REQ_PAUSE      2u    /* pause='N' (value in the pause argument) */
#define BOSH_REQ_RESTART    4u    /* xmpp:restart='true' */

typedef enum { BOSH_SM_ACTIVE, BOSH_SM_CLOSING, BOSH_SM_DONE } bosh_sm_state;

typedef struct bosh_sm bosh_sm;

/* A session created by the request with rid 'rid' at time now. */
bosh_sm *bosh_sm_new(const bosh_sm_params *p, uint64_t rid, uint64_t now);
/* Bytes of responses kept for retransmission, and how many unacknowledged
 * ones max_buffer_bytes made the machine drop. */
size_t   bosh_sm_buffered_bytes(const bosh_sm *sm);
uint64_t bosh_sm_buffer_drops(const bosh_sm *sm);
void     bosh_sm_free(bosh_sm *sm);
const bosh_sm_params *bosh_sm_params_of(const bosh_sm *sm);
bosh_sm_state bosh_sm_get_state(const bosh_sm *sm);
uint64_t bosh_sm_last_rid(const bosh_sm *sm);
size_t   bosh_sm_held(const bosh_sm *sm);
size_t   bosh_sm_pending(const bosh_sm *sm);    /* bytes of queued output */

/* Answer the creation request 'req' with the session attributes and the
 * output queued so far (stream:features). The body is buffered under the
 * creation rid. sid and from are written XML-escaped. */
void bosh_sm_creation_answer(bosh_sm *sm, uint64_t now, void *req,
                             const char *sid, const char *from,
                             bosh_actions *acts);

/* A request with this rid arrived (no payloads, ack, key or stream). */
void bosh_sm_request(bosh_sm *sm, uint64_t now, uint64_t rid, unsigned flags,
                     unsigned pause, void *req, bosh_actions *acts);

/* Everything the machine looks at in a later request. Strings are copied. */
typedef struct bosh_sm_req {
    uint64_t    rid;
    unsigned    flags;          /* BOSH_REQ_* */
    unsigned    pause;
    size_t      npayloads;      /* child elements of <body/> */
    int         has_ack;
    uint64_t    ack;
    const char *key, *newkey;   /* §keys; NULL when absent */
    const char *stream;         /* §multi; NULL when absent */
    const char *to;             /* with no payloads and no stream: add one */
} bosh_sm_req;

void bosh_sm_request_ex(bosh_sm *sm, uint64_t now, const bosh_sm_req *r,
                        void *req, bosh_actions *acts);

/* §keys: the creation request's newkey. Every later request must then
 * carry a key whose SHA-1 (hex, case-insensitive) is the previous key or
 * newkey, else item-not-found and nothing of it is processed. */
void bosh_sm_set_key(bosh_sm *sm, const char *newkey);

/* §multi. Before the creation answer: name the first stream (id 0); the
 * creation response then advertises stream='first_name'. Without it the
 * session has one unnamed stream and 'stream'/'to' in requests are
 * ignored, as the XEP requires of a CM that does not offer streams. */
void bosh_sm_enable_streams(bosh_sm *sm, const char *first_name);
/* Answer to a PROCESS with new_stream: register the opened stream. Returns
 * its id, or -1 (no room: bosh.c never opened anything). */
int  bosh_sm_stream_add(bosh_sm *sm, const char *name);
/* Output of one stream (bosh_sm_output is stream 0). */
void bosh_sm_stream_output(bosh_sm *sm, int stream, const char *xml, size_t len);
size_t bosh_sm_stream_pending(const bosh_sm *sm, int stream);
int  bosh_sm_stream_is_open(const bosh_sm *sm, int stream);
int  bosh_sm_streams_open(const bosh_sm *sm);
/* The server ends one stream. If others stay open, the next response is
 * <body type='terminate' stream='name' condition=...> with that stream's
 * queued output and extra (§multi-error) and the session goes on; if it
 * was the last open stream this is bosh_sm_close. */
void bosh_sm_stream_close(bosh_sm *sm, uint64_t now, int stream,
                          const char *condition, const char *extra,
                          bosh_actions *acts);

/* Output from the XMPP side (one serialized top-level element). Queued; it
 * goes out on bosh_sm_flush (the caller coalesces a burst into one flush). */
void bosh_sm_output(bosh_sm *sm, const char *xml, size_t len);

/* Answer the oldest held request with the queued output, if any; answer
 * requests held beyond 'hold' (hold=0 polling sessions). */
void bosh_sm_flush(bosh_sm *sm, uint64_t now, bosh_actions *acts);

/* Time passed: wait expiry, gaps, inactivity. */
void bosh_sm_tick(bosh_sm *sm, uint64_t now, bosh_actions *acts);
/* When bosh_sm_tick must run next (absolute ms), 0 = never. */
uint64_t bosh_sm_deadline(const bosh_sm *sm);

/* The relay gives req back (DRAIN, connection lost): answer it now. A held
 * request gets the queued output (buffered for retransmission first); an
 * unprocessed out-of-order one gets HTTP 503 so the client resends it.
 * Returns 0, or -1 if req is unknown to the machine. */
int  bosh_sm_release(bosh_sm *sm, uint64_t now, void *req, bosh_actions *acts);

/* The server ends the session. condition NULL: plain type='terminate'.
 * extra: XML appended after the queued output (e.g. <stream:error/>).
 * The oldest outstanding request gets the terminate body, the others empty
 * bodies; with none outstanding, the next request gets it (state CLOSING). */
void bosh_sm_close(bosh_sm *sm, uint64_t now, const char *condition,
                   const char *extra, bosh_actions *acts);

#endif
