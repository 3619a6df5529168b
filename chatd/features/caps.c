/*
 * caps.c: XEP-0115 Entity Capabilities for PEP's +notify (see caps.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>
#include "caps.h"
#include "pep.h"
#include "log.h"
#include "router.h"
#include "iq_dispatch.h"
#include "xmpp_internal.h"
#include "pep_rules.h"
#include "../../common/scram.h"

#define CAPS_CACHE_MAX 256

typedef struct caps_entry {
    char *ver;          /* hash value announced (and verified) */
    char *notify;       /* caps_notify_list of its disco#info */
} caps_entry;

static caps_entry cache[CAPS_CACHE_MAX];
static unsigned cache_next;

/* ---- pure ---- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

typedef struct strv { char **v; size_t n, cap; } strv;

static void strv_add(strv *s, char *str)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 8;
        if (!(s->v = realloc(s->v, s->cap * sizeof(*s->v)))) abort();
    }
    s->v[s->n++] = str;
}

/* Sorted (on the bare strings, before any '<' is added: XEP-0115 sorts
 * the values themselves), each followed by '<' when `lt`. Frees them. */
static void strv_sorted_into(strv *s, strbuf *out, int lt)
{
    if (s->n) qsort(s->v, s->n, sizeof(*s->v), cmp_str);
    for (size_t i = 0; i < s->n; i++) {
        sb_append(out, s->v[i], strlen(s->v[i]));
        if (lt) sb_append(out, "<", 1);
        free(s->v[i]);
    }
    free(s->v);
    memset(s, 0, sizeof(*s));
}

static char *xstrdup(const char *s)
{
    char *d = strdup(s);
    if (!d) abort();
    return d;
}

static const char *attr_or(const xs_node *n, const char *a)
{
    const char *v = xs_attr_get(n, a);
    return v ? v : "";
}

/* A field of an extended form: sorted by var, then written as
 * var<value<value<... */
typedef struct field_str { char *var, *str; } field_str;

static int cmp_field(const void *a, const void *b)
{
    return strcmp(((const field_str *)a)->var, ((const field_str *)b)->var);
}

/* One extended form (§5.1 step 3), or NULL if it has no FORM_TYPE. */
static char *form_string(const xs_node *x)
{
    char *form_type = NULL;
    field_str *fields = NULL;
    size_t nf = 0;
    for (xs_node *f = xs_child(x, NS_XDATA, "field"); f; f = xs_next_elem(f, NS_XDATA, "field")) {
        const char *var = attr_or(f, "var");
        strv values = {0};
        for (xs_node *v = xs_child(f, NS_XDATA, "value"); v; v = xs_next_elem(v, NS_XDATA, "value"))
            strv_add(&values, xs_text(v));
        strbuf fs = STRBUF_INIT;
        if (strcmp(var, "FORM_TYPE") == 0) {
            strv_sorted_into(&values, &fs, 1);
            free(form_type);
            form_type = xstrdup(fs.data ? fs.data : "");
            sb_free(&fs);
            continue;
        }
        sb_append(&fs, var, strlen(var));
        sb_append(&fs, "<", 1);
        strv_sorted_into(&values, &fs, 1);
        if (!(fields = realloc(fields, (nf + 1) * sizeof(*fields)))) abort();
        fields[nf].var = xstrdup(var);
        fields[nf].str = xstrdup(fs.data);
        nf++;
        sb_free(&fs);
    }
    char *s = NULL;
    if (form_type) {
        if (nf) qsort(fields, nf, sizeof(*fields), cmp_field);
        strbuf sb = STRBUF_INIT;
        sb_append(&sb, form_type, strlen(form_type));
        for (size_t i = 0; i < nf; i++) sb_append(&sb, fields[i].str, strlen(fields[i].str));
        s = xstrdup(sb.data ? sb.data : "");
        sb_free(&sb);
    }
    for (size_t i = 0; i < nf; i++) { free(fields[i].var); free(fields[i].str); }
    free(fields);
    free(form_type);
    return s;
}

int caps_ver_compute(const xs_node *q, char *out, size_t outlen)
{
    strbuf s = STRBUF_INIT;
    strv ids = {0}, feats = {0}, forms = {0};
    for (xs_node *i = xs_child(q, NS_DISCO_INFO, "identity"); i;
         i = xs_next_elem(i, NS_DISCO_INFO, "identity")) {
        size_t n = strlen(attr_or(i, "category")) + strlen(attr_or(i, "type")) +
                   strlen(attr_or(i, "xml:lang")) + strlen(attr_or(i, "name")) + 5;
        char *str = malloc(n);
        if (!str) abort();
        snprintf(str, n, "%s/%s/%s/%s", attr_or(i, "category"), attr_or(i, "type"),
                 attr_or(i, "xml:lang"), attr_or(i, "name"));
        strv_add(&ids, str);
    }
    for (xs_node *f = xs_child(q, NS_DISCO_INFO, "feature"); f;
         f = xs_next_elem(f, NS_DISCO_INFO, "feature"))
        strv_add(&feats, xstrdup(attr_or(f, "var")));
    for (xs_node *x = xs_child(q, NS_XDATA, "x"); x; x = xs_next_elem(x, NS_XDATA, "x")) {
        char *fs = form_string(x);
        if (fs) strv_add(&forms, fs);
    }
    strv_sorted_into(&ids, &s, 1);
    strv_sorted_into(&feats, &s, 1);
    strv_sorted_into(&forms, &s, 0);     /* each already ends in '<' */

    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    int rc = EVP_Digest(s.data ? s.data : "", s.len, md, &mdlen, EVP_sha1(), NULL) == 1 ? 0 : -1;
    sb_free(&s);
    if (rc < 0 || outlen < 4 * ((mdlen + 2) / 3) + 1) return -1;
    scram_b64_encode(md, mdlen, out);
    return 0;
}

char *caps_notify_list(const xs_node *q)
{
    strbuf sb = STRBUF_INIT;
    sb_append(&sb, "\n", 1);
    for (xs_node *f = xs_child(q, NS_DISCO_INFO, "feature"); f;
         f = xs_next_elem(f, NS_DISCO_INFO, "feature")) {
        const char *var = attr_or(f, "var");
        size_t n = strlen(var);
        if (n <= 7 || strcmp(var + n - 7, "+notify") != 0) continue;
        sb_append(&sb, var, n - 7);
        sb_append(&sb, "\n", 1);
    }
    char *s = strdup(sb.data);
    if (!s) abort();
    sb_free(&sb);
    return s;
}

/* ---- sessions ---- */

int caps_wants(const rsession *rs, const char *node)
{
    if (!rs->pep_notify) return 0;
    size_t n = strlen(node);
    for (const char *p = rs->pep_notify; (p = strstr(p, node)); p++)
        if (p[-1] == '\n' && p[n] == '\n') return 1;
    return 0;
}

void caps_session_free(rsession *rs)
{
    free(rs->pep_notify);
    free(rs->caps_ver);
    rs->pep_notify = rs->caps_ver = NULL;
}

static const char *cache_get(const char *ver)
{
    for (unsigned i = 0; i < CAPS_CACHE_MAX; i++)
        if (cache[i].ver && strcmp(cache[i].ver, ver) == 0) return cache[i].notify;
    return NULL;
}

static void cache_put(const char *ver, const char *notify)
{
    if (cache_get(ver)) return;
    caps_entry *e = &cache[cache_next++ % CAPS_CACHE_MAX];
    free(e->ver);
    free(e->notify);
    if (!(e->ver = strdup(ver)) || !(e->notify = strdup(notify))) abort();
}

/* rs now knows what it wants: last items (XEP-0163 §6.2). */
static void set_notify(chatd *d, rsession *rs, const char *notify)
{
    free(rs->pep_notify);
    if (!(rs->pep_notify = strdup(notify))) abort();
    pep_interest(d, rs);
}

typedef struct caps_query {
    chatd *d;
    char *full, *ver;
} caps_query;

static void disco_answered(const xs_node *reply, void *ud)
{
    caps_query *cq = ud;
    rsession *rs = reply ? router_session(cq->d, cq->full) : NULL;
    const char *type = reply ? xs_attr_get(reply, "type") : NULL;
    xs_node *q = reply ? xs_child(reply, NS_DISCO_INFO, "query") : NULL;
    /* Still the session that asked, and still announcing this ver. */
    if (rs && rs->caps_ver && strcmp(rs->caps_ver, cq->ver) == 0 &&
        type && strcmp(type, "result") == 0 && q) {
        char computed[64];
        char *notify = caps_notify_list(q);
        if (caps_ver_compute(q, computed, sizeof(computed)) == 0 &&
            strcmp(computed, cq->ver) == 0)
            cache_put(cq->ver, notify);
        else
            log_info("caps: BOSH00900: %s announced caps %s that its disco#info does not "
                     "hash to; using them for that session only", cq->full, cq->ver);
        set_notify(cq->d, rs, notify);
        free(notify);
    }
    free(cq->full);
    free(cq->ver);
    free(cq);
}

void caps_presence(chatd *d, rsession *rs, const xs_node *pres)
{
    xs_node *c = xs_child(pres, NS_CAPS, "c");
    const char *ver = c ? xs_attr_get(c, "ver") : NULL;
    const char *node = c ? xs_attr_get(c, "node") : NULL;
    const char *hash = c ? xs_attr_get(c, "hash") : NULL;
    /* The legacy form (no hash) names no single feature set: ignored. */
    if (!ver || !node || !hash || !*ver || strlen(ver) > 128) return;
    if (rs->caps_ver && strcmp(rs->caps_ver, ver) == 0) return;    /* nothing new */
    free(rs->caps_ver);
    if (!(rs->caps_ver = strdup(ver))) abort();
    const char *known = strcmp(hash, "sha-1") == 0 ? cache_get(ver) : NULL;
    if (known) { set_notify(d, rs, known); return; }

    xs_node *iq = stanza_new("iq", d->cfg.domain, rs->full, "get", NULL);
    xs_node *q = xs_add_elem(iq, NS_DISCO_INFO, "query");
    size_t n = strlen(node) + strlen(ver) + 2;
    char *nv = malloc(n);
    if (!nv) abort();
    snprintf(nv, n, "%s#%s", node, ver);
    xs_set_attr(q, "node", nv);
    free(nv);
    caps_query *cq = calloc(1, sizeof(*cq));
    if (!cq || !(cq->full = strdup(rs->full)) || !(cq->ver = strdup(ver))) abort();
    cq->d = d;
    iq_await_send(d, rs, iq, disco_answered, cq);
    xs_free(iq);
}
