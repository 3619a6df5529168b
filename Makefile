# mod_bosh + chatd: top-level build.
#
#   make            build chatd, chatctl, mod_bosh.so
#   make run        demo site with web chat (Redis + chatd + httpd under ./run/)
#   make stop       stop what `make run` started
#   make test       install missing packages, build, run every test
#
# Sources are picked up by wildcard: adding a .c file needs no edit here.
# chatd/main.c and chatd/chatctl.c are the two programs; every other
# chatd/*.c goes into build/libchatd.a so unit tests can link pure parts.

CC      ?= cc
BUILD   ?= build
PKGS     = apr-1 hiredis expat openssl
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
WARN     = -Wall -Wextra -Werror
CFLAGS  ?= -O2 -g
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE $(WARN) $(CFLAGS) $(EXTRA_CFLAGS) $(PKG_CFLAGS) -MMD -MP
LDLIBS   = $(PKG_LIBS) -lm

COMMON_SRC := $(wildcard common/*.c)
CHATD_LIB_SRC := $(filter-out chatd/main.c chatd/chatctl.c,$(wildcard chatd/*.c))
UNIT_SRC   := $(wildcard tests/unit/test_*.c)
UNIT_HELPERS := $(filter-out $(UNIT_SRC),$(wildcard tests/unit/*.c))

COMMON_OBJ := $(COMMON_SRC:%.c=$(BUILD)/%.o)
CHATD_LIB_OBJ := $(CHATD_LIB_SRC:%.c=$(BUILD)/%.o)
UNIT_BIN   := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
UNIT_HELPER_OBJ := $(UNIT_HELPERS:%.c=$(BUILD)/%.o)

APXS    ?= apxs
MOD_SRC := $(wildcard mod_bosh/*.c)
MOD_SO  := mod_bosh/.libs/mod_bosh.so

.PHONY: all chatd mod_bosh unit unit-asan deps test run stop clean fuzz
all: $(BUILD)/chatd $(BUILD)/chatctl $(MOD_SO)

chatd: $(BUILD)/chatd $(BUILD)/chatctl
mod_bosh: $(MOD_SO)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/libcommon.a: $(COMMON_OBJ)
	@rm -f $@; ar rcs $@ $^

$(BUILD)/libchatd.a: $(CHATD_LIB_OBJ)
	@rm -f $@; ar rcs $@ $^

$(BUILD)/chatd: $(BUILD)/chatd/main.o $(BUILD)/libchatd.a $(BUILD)/libcommon.a
	$(CC) $(CFLAGS) $(EXTRA_CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/chatctl: $(BUILD)/chatd/chatctl.o $(BUILD)/libchatd.a $(BUILD)/libcommon.a
	$(CC) $(CFLAGS) $(EXTRA_CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(UNIT_HELPER_OBJ) $(BUILD)/libchatd.a $(BUILD)/libcommon.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(EXTRA_CFLAGS) -o $@ $^ $(LDLIBS)

# mod_bosh is built by apxs, with the common sources compiled in.
$(MOD_SO): $(MOD_SRC) $(COMMON_SRC) $(wildcard mod_bosh/*.h common/*.h)
	$(APXS) -c -o mod_bosh/mod_bosh.la \
	    -Wc,-std=c11 -Wc,-Wall -Wc,-Wextra -Wc,-Werror -Wc,-D_GNU_SOURCE \
	    $(addprefix -Wc,,$(filter -I%,$(PKG_CFLAGS))) \
	    $(MOD_SRC) $(COMMON_SRC) $(PKG_LIBS) >$(BUILD)/apxs.log 2>&1 \
	    || { cat $(BUILD)/apxs.log; exit 1; }

unit: $(UNIT_BIN)
	@tests/run-unit.sh $(UNIT_BIN)

clean:
	rm -rf build build-asan mod_bosh/.libs mod_bosh/*.lo mod_bosh/*.slo mod_bosh/*.la \
	       common/*.lo common/*.slo common/.libs

-include $(wildcard $(BUILD)/*/*.d $(BUILD)/tests/unit/*.d)
