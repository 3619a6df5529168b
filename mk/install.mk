# install.mk: `make install` for mod_bosh and chatd, the way Debian's
# tools (and an admin installing from source) expect it.
#
# Included from the top Makefile, or used on its own after `make`:
#   make -f mk/install.mk install DESTDIR=debian/tmp
#
#   install          both parts
#   install-module   mod_bosh.so into apxs' LIBEXECDIR, bosh.load and
#                    bosh.conf into $(SYSCONFDIR)/apache2/mods-available,
#                    chatd-websocket.conf into .../apache2/conf-available
#   install-chatd    chatd and chatctl into $(PREFIX)/sbin, the default
#                    $(SYSCONFDIR)/chatd/chatd.conf (0640: it may hold the
#                    Redis password; chgrp it to chatd's group), man pages
#
# Every path honours DESTDIR. An existing chatd.conf or bosh.conf in the
# target is kept (an admin's edits survive a reinstall); the new default
# goes beside it as *.dist. A package build starts from an empty DESTDIR,
# so it always gets the defaults.
#
# The module is copied from mod_bosh/.libs/ rather than installed with
# `apxs -i`: that runs libtool --mode=install, which also drops the .la
# file into Apache's module directory and has no notion of DESTDIR.

BUILD      ?= build
APXS       ?= apxs
PREFIX     ?= /usr
SBINDIR    ?= $(PREFIX)/sbin
MANDIR     ?= $(PREFIX)/share/man
SYSCONFDIR ?= /etc
APACHE_MODDIR  ?= $(shell $(APXS) -q LIBEXECDIR 2>/dev/null || echo /usr/lib/apache2/modules)
APACHE_MODSAVAIL ?= $(SYSCONFDIR)/apache2/mods-available
APACHE_CONFAVAIL ?= $(SYSCONFDIR)/apache2/conf-available
INSTALL    ?= install

INSTALL_MOD_SO := mod_bosh/.libs/mod_bosh.so

# Install a config file unless the target already has one.
# $(1) source, $(2) target path, $(3) mode
define install_conf
	@if [ -e "$(2)" ]; then \
	    echo "install: keeping $(2); the new default is $(2).dist"; \
	    $(INSTALL) -m $(3) "$(1)" "$(2).dist"; \
	else \
	    echo "$(INSTALL) -m $(3) $(1) $(2)"; \
	    $(INSTALL) -m $(3) "$(1)" "$(2)"; \
	fi
endef

.PHONY: install install-module install-chatd

install: install-module install-chatd

install-module: $(INSTALL_MOD_SO) httpd-conf/bosh.load httpd-conf/bosh.conf \
                httpd-conf/chatd-websocket.conf
	$(INSTALL) -d $(DESTDIR)$(APACHE_MODDIR) $(DESTDIR)$(APACHE_MODSAVAIL) \
	    $(DESTDIR)$(APACHE_CONFAVAIL)
	$(INSTALL) -m 0644 $(INSTALL_MOD_SO) $(DESTDIR)$(APACHE_MODDIR)/mod_bosh.so
	$(INSTALL) -m 0644 httpd-conf/bosh.load $(DESTDIR)$(APACHE_MODSAVAIL)/bosh.load
	$(call install_conf,httpd-conf/bosh.conf,$(DESTDIR)$(APACHE_MODSAVAIL)/bosh.conf,0644)
	$(call install_conf,httpd-conf/chatd-websocket.conf,$(DESTDIR)$(APACHE_CONFAVAIL)/chatd-websocket.conf,0644)

install-chatd: $(BUILD)/chatd $(BUILD)/chatctl packaging/chatd.conf man/chatd.8 man/chatctl.8
	$(INSTALL) -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(SYSCONFDIR)/chatd $(DESTDIR)$(MANDIR)/man8
	$(INSTALL) -m 0755 $(BUILD)/chatd $(DESTDIR)$(SBINDIR)/chatd
	$(INSTALL) -m 0755 $(BUILD)/chatctl $(DESTDIR)$(SBINDIR)/chatctl
	$(call install_conf,packaging/chatd.conf,$(DESTDIR)$(SYSCONFDIR)/chatd/chatd.conf,0640)
	$(INSTALL) -m 0644 man/chatd.8 man/chatctl.8 $(DESTDIR)$(MANDIR)/man8/
