# expat.mk: features of the installed expat, found by compiling a probe
# rather than by version number (Debian backports security API into old
# versions). Included by the top Makefile and bench/Makefile.
#
#   EXPAT_CFLAGS   -DHAVE_XML_REPARSE_DEFERRAL=0 or =1
#
# `make HAVE_XML_REPARSE_DEFERRAL=0` forces the old-expat code path
# (CI compiles xml_stream.c that way, whatever this machine has).

EXPAT_MK_DIR := $(dir $(lastword $(MAKEFILE_LIST)))
ifeq ($(origin HAVE_XML_REPARSE_DEFERRAL),undefined)
HAVE_XML_REPARSE_DEFERRAL := $(shell \
    $(or $(CC),cc) -Werror=implicit-function-declaration \
        $$(pkg-config --cflags expat 2>/dev/null) \
        $(EXPAT_MK_DIR)probe_reparse_deferral.c -o /dev/null \
        $$(pkg-config --libs expat 2>/dev/null || echo -lexpat) \
        >/dev/null 2>&1 && echo 1 || echo 0)
endif
EXPAT_CFLAGS = -DHAVE_XML_REPARSE_DEFERRAL=$(HAVE_XML_REPARSE_DEFERRAL)
