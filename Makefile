# mod_bosh + chatd: top-level build.
#
#   make            build chatd, chatctl, mod_bosh.so
#   make run        demo site with web chat (Redis + chatd + httpd under ./run/)
#   make stop       stop what `make run` started
#   make test       install missing packages, build, run every test
#   make unit / unit-asan / integration / fuzz   one kind of test
#
# Sources are picked up by wildcard: adding a .c file needs no edit here.
# chatd/core/main.c and chatd/core/chatctl.c are the two programs; every
# other chatd/<layer>/*.c goes into build/libchatd.a so unit tests can link
# pure parts. chatd's folders are its layers (docs/architecture.md); headers
# include each other by bare name, so every layer folder is on the path.

# A bare `make` builds; nothing above `all` may become the default goal.
.DEFAULT_GOAL := all

CC      ?= cc
BUILD   ?= build
PKGS     = apr-1 hiredis expat openssl
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
WARN     = -Wall -Wextra -Werror
CFLAGS  ?= -O2 -g
CHATD_LAYERS := core transport session router features store
CHATD_INC  := $(addprefix -Ichatd/,$(CHATD_LAYERS))
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE $(WARN) $(CFLAGS) $(EXTRA_CFLAGS) $(PKG_CFLAGS) $(EXPAT_CFLAGS) $(CHATD_INC) -MMD -MP
LDLIBS   = $(PKG_LIBS) -lm

COMMON_SRC := $(wildcard common/*.c)
CHATD_LIB_SRC := $(filter-out chatd/core/main.c chatd/core/chatctl.c,\
                   $(foreach l,$(CHATD_LAYERS),$(wildcard chatd/$(l)/*.c)))
UNIT_SRC   := $(wildcard tests/unit/test_*.c)
UNIT_HELPERS := $(filter-out $(UNIT_SRC),$(wildcard tests/unit/*.c))

# Objects live under $(BUILD)/obj/ so that the program build/chatd and the
# objects of chatd/<layer>/*.c do not fight over the name build/chatd.
OBJ     := $(BUILD)/obj
COMMON_OBJ := $(COMMON_SRC:%.c=$(OBJ)/%.o)
CHATD_LIB_OBJ := $(CHATD_LIB_SRC:%.c=$(OBJ)/%.o)
UNIT_BIN   := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
UNIT_HELPER_OBJ := $(UNIT_HELPERS:%.c=$(OBJ)/%.o)

APXS    ?= apxs
MOD_SRC := $(wildcard mod_bosh/*.c)
MOD_SO  := mod_bosh/.libs/mod_bosh.so
# zlib: mod_bosh gzips answers and inflates gzip requests (bosh_gzip.c).
MOD_LIBS := $(shell pkg-config --libs zlib 2>/dev/null || echo -lz)

.PHONY: all chatd mod_bosh unit unit-asan deps test run stop clean fuzz integration
all: $(BUILD)/chatd $(BUILD)/chatctl $(MOD_SO)

chatd: $(BUILD)/chatd $(BUILD)/chatctl
mod_bosh: $(MOD_SO)

# Not the default goal: it runs dpkg system-wide (make test only).
$(OBJ)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

# `make build/chatd/foo.o` (and common/, tests/unit/) still compiles one
# file: it builds $(OBJ)/chatd/foo.o and creates nothing at the old path.
$(BUILD)/chatd/%.o: $(OBJ)/chatd/%.o ; @:
$(BUILD)/common/%.o: $(OBJ)/common/%.o ; @:
$(BUILD)/tests/unit/%.o: $(OBJ)/tests/unit/%.o ; @:

$(BUILD)/libcommon.a: $(COMMON_OBJ)
	@rm -f $@; ar rcs $@ $^

$(BUILD)/libchatd.a: $(CHATD_LIB_OBJ)
	@rm -f $@; ar rcs $@ $^

$(BUILD)/chatd: $(OBJ)/chatd/core/main.o $(BUILD)/libchatd.a $(BUILD)/libcommon.a
	@if [ -d $@ ]; then rm -rf $@; fi  # an old object directory of that name
	$(CC) $(CFLAGS) $(EXTRA_CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/chatctl: $(OBJ)/chatd/core/chatctl.o $(BUILD)/libchatd.a $(BUILD)/libcommon.a
	$(CC) $(CFLAGS) $(EXTRA_CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(OBJ)/tests/unit/%.o $(UNIT_HELPER_OBJ) $(BUILD)/libchatd.a $(BUILD)/libcommon.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(EXTRA_CFLAGS) -o $@ $^ $(LDLIBS)

# mod_bosh is built by apxs, with the common sources compiled in.
$(MOD_SO): $(MOD_SRC) $(COMMON_SRC) $(wildcard mod_bosh/*.h common/*.h)
	@mkdir -p $(BUILD)
	$(APXS) -c -o mod_bosh/mod_bosh.la \
	    -Wc,-std=c11 -Wc,-Wall -Wc,-Wextra -Wc,-Werror -Wc,-D_GNU_SOURCE \
	    $(addprefix -Wc,,$(EXPAT_CFLAGS)) \
	    $(addprefix -Wc,,$(filter -I%,$(PKG_CFLAGS))) \
	    $(MOD_SRC) $(COMMON_SRC) $(PKG_LIBS) $(MOD_LIBS) >$(BUILD)/apxs.log 2>&1 \
	    || { cat $(BUILD)/apxs.log; exit 1; }

# Keep the test objects (make would delete them as intermediates).
.SECONDARY: $(UNIT_SRC:tests/unit/%.c=$(OBJ)/tests/unit/%.o)

unit: $(UNIT_BIN)
	@tests/run-unit.sh $(UNIT_BIN)

# --- demo, tests (scripts/, tests/integration, tests/browser) -------------
PYTEST  ?= /usr/bin/python3 -m pytest
ASAN_FLAGS = -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer

deps:
	@scripts/install-deps.sh

run: deps
	@$(MAKE) --no-print-directory all
	@scripts/run.sh start

stop:
	@scripts/run.sh stop

# The unit tests again under AddressSanitizer + UBSan, in their own tree.
unit-asan:
	@$(MAKE) --no-print-directory BUILD=build-asan \
	    EXTRA_CFLAGS='$(ASAN_FLAGS)' unit

integration:
	$(PYTEST) -q tests/integration

# Everything: packages, build, unit, unit under sanitizers, integration
# (raw HTTP, Strophe.js clients, Chromium + Converse.js). See scripts/test-all.sh.
test: deps
	@scripts/test-all.sh

# The Debian packages: build, install, check, purge (system-wide: dpkg).
# libFuzzer targets: each tests/fuzz/fuzz_*.c against the common sources,
# built with clang, then run for FUZZ_SECONDS each (corpus in build/fuzz/).
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=$(BUILD)/fuzz/%)
FUZZ_SECONDS ?= 30
FUZZ_CC ?= clang

$(BUILD)/fuzz/%: tests/fuzz/%.c $(COMMON_SRC) $(wildcard common/*.h)
	@mkdir -p $(dir $@) $@.corpus
	$(FUZZ_CC) -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined \
	    $(PKG_CFLAGS) $(EXPAT_CFLAGS) $< $(COMMON_SRC) -o $@ $(PKG_LIBS)

fuzz: $(FUZZ_BIN)
	@for f in $(FUZZ_BIN); do \
	    echo "== $$f ($(FUZZ_SECONDS)s)"; \
	    $$f -max_total_time=$(FUZZ_SECONDS) -max_len=8192 -print_final_stats=1 \
	        $$f.corpus || exit 1; \
	done

.PHONY: test-packaging
test-packaging:
	@tests/packaging/test_packages.sh

clean:
	rm -rf build build-asan mod_bosh/.libs mod_bosh/*.lo mod_bosh/*.slo mod_bosh/*.la \
	       common/*.lo common/*.slo common/.libs

-include $(wildcard $(OBJ)/*/*.d $(OBJ)/chatd/*/*.d $(OBJ)/tests/unit/*.d)

# Fragments for other jobs (mk/install.mk: `make install`), after `all` so
# the default goal stays `all`.
-include $(wildcard mk/*.mk)
