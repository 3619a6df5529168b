/*
 * upload: the XEP-0363 HTTP File Upload service (issue 17). chatd only
 * hands out slots: it checks size and the user's quota (Redis, at slot
 * time: upload is not the chat path), signs the slot (common/upload_slot.h)
 * and answers PUT and GET URLs on the site. httpd (mod_bosh's bosh-upload
 * handler) checks the signature, stores the PUT and serves the GET.
 *
 * The service is its own JID (upload_domain, upload.<domain>), listed in
 * the server's disco#items. Its iqs go through the iq table like any
 * other, with the addressee IQ_TO_UPLOAD.
 */
#ifndef CHATD_UPLOAD_H
#define CHATD_UPLOAD_H

#include "iq_dispatch.h"

#define NS_HTTP_UPLOAD "urn:xmpp:http:upload:0"
#define NS_DATA_FORMS  "jabber:x:data"
/* Files one user may hold within upload_retention (each is one entry the
 * quota script adds up): bounds the script's work and Redis memory. */
#define UPLOAD_MAX_FILES_PER_USER 2000

/* 1 if domain is this server's upload service (and upload is on). */
int upload_is_service(const chatd *d, const char *domain);

/* Rows of the iq table (IQ_TO_UPLOAD). */
int upload_disco_info(const iq_request *req);
int upload_disco_items(const iq_request *req);
int upload_request(const iq_request *req);

#endif
