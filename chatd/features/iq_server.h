/*
 * iq_server: the iqs the server answers itself (disco, ping, version,
 * time, session, vCard). Each is a row of the iq table (iq_table.c).
 */
#ifndef CHATD_IQ_SERVER_H
#define CHATD_IQ_SERVER_H

#include "iq_dispatch.h"

#define NS_PING     "urn:xmpp:ping"
#define NS_VERSION  "jabber:iq:version"
#define NS_TIME     "urn:xmpp:time"
#define NS_VCARD    "vcard-temp"
#define NS_SESSION  "urn:ietf:params:xml:ns:xmpp-session"

int iq_disco_info(const iq_request *req);
int iq_disco_items(const iq_request *req);
int iq_ping(const iq_request *req);
int iq_version(const iq_request *req);
int iq_time(const iq_request *req);
int iq_session(const iq_request *req);
int iq_vcard(const iq_request *req);

#endif
