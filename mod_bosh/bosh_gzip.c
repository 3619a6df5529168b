/*
 * bosh_gzip: gzip answers and inflate gzip requests, capped (see
 * bosh_gzip.h for why mod_bosh does this itself).
 */
#include <string.h>
#include <strings.h>
#include <stdlib.h>
#include <zlib.h>

#include "apr_strings.h"
#include "bosh_gzip.h"

#define GZIP_WINDOW (15 + 16)           /* zlib: gzip wrapper, 32 KiB window */

/* q value of one "token;q=x" element, 1.0 when absent. */
static double element_q(const char *params)
{
    const char *q = params;
    while ((q = strchr(q, ';')) != NULL) {
        q++;
        while (*q == ' ' || *q == '\t')
            q++;
        if ((q[0] == 'q' || q[0] == 'Q') && q[1] == '=')
            return strtod(q + 2, NULL);
    }
    return 1.0;
}

int bosh_accepts_gzip(const char *ae)
{
    int gzip = -1, star = -1;           /* -1: not named */
    char buf[512];
    char *save = NULL, *el;

    if (!ae || strlen(ae) >= sizeof(buf))
        return 0;
    strcpy(buf, ae);
    for (el = strtok_r(buf, ",", &save); el; el = strtok_r(NULL, ",", &save)) {
        size_t n;
        while (*el == ' ' || *el == '\t')
            el++;
        n = strcspn(el, "; \t");
        if ((n == 4 && strncasecmp(el, "gzip", 4) == 0) ||
            (n == 6 && strncasecmp(el, "x-gzip", 6) == 0))
            gzip = element_q(el + n) > 0;
        else if (n == 1 && el[0] == '*')
            star = element_q(el + n) > 0;
    }
    if (gzip >= 0)
        return gzip;
    return star > 0;
}

int bosh_gzip(apr_pool_t *p, const char *in, size_t len, char **out, size_t *out_len)
{
    z_stream zs;
    uLong bound;
    char *buf;
    int rc;

    memset(&zs, 0, sizeof(zs));
    if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, GZIP_WINDOW, 8,
                     Z_DEFAULT_STRATEGY) != Z_OK)
        return -1;
    bound = deflateBound(&zs, (uLong)len) + 32;
    buf = apr_palloc(p, bound);
    zs.next_in = (Bytef *)in;
    zs.avail_in = (uInt)len;
    zs.next_out = (Bytef *)buf;
    zs.avail_out = (uInt)bound;
    rc = deflate(&zs, Z_FINISH);
    *out_len = zs.total_out;
    deflateEnd(&zs);
    if (rc != Z_STREAM_END)
        return -1;
    *out = buf;
    return 0;
}

bosh_gunzip_status bosh_gunzip(apr_pool_t *p, const char *in, size_t len,
                               size_t max, char **out, size_t *out_len)
{
    z_stream zs;
    char *buf = apr_palloc(p, max + 1);
    int rc;

    memset(&zs, 0, sizeof(zs));
    if (inflateInit2(&zs, GZIP_WINDOW) != Z_OK)
        return BOSH_GUNZIP_BAD;
    zs.next_in = (Bytef *)in;
    zs.avail_in = (uInt)len;
    zs.next_out = (Bytef *)buf;
    zs.avail_out = (uInt)(max + 1);     /* one spare byte shows "too big" */
    rc = inflate(&zs, Z_FINISH);
    *out_len = zs.total_out;
    inflateEnd(&zs);
    if (*out_len > max)
        return BOSH_GUNZIP_TOO_BIG;
    if (rc != Z_STREAM_END || zs.avail_in != 0)
        return BOSH_GUNZIP_BAD;         /* truncated, corrupt, or trailing bytes */
    buf[*out_len] = '\0';
    *out = buf;
    return BOSH_GUNZIP_OK;
}
