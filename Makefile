# Cairn: one non-recursive Makefile.  Everything is built out of tree under
# $(BUILD); nothing is generated in the source folders.
#
# Before you change anything, read HACKING.md (how to build one part alone, how to commit).
#   make            build everything          make check   build and run every test suite
#   make run        build, start a member and open the shell
#   make asan       everything under AddressSanitizer + UBSan, then the whole check
#   make bench      the short benchmark suite  make deps    install missing Debian packages
#   make bench-suite   only cairn-bench's cluster table (1 and 3 members)
#   make install DESTDIR=... PREFIX=...        make clean
#
# Each part is a folder (DESIGN.md).  Its sources are found by wildcard, so a
# new file in a part needs no edit here:
#   base/ raft/ storage/ daemon/ client/  -> $(BUILD)/lib<part>.a
#   proto/*.proto                         -> protoc-c -> $(BUILD)/proto/ -> libproto.a
#   test/unit/test_X.c                    -> $(BUILD)/test/unit/test_X (one cmocka binary per module)
#   test/sim/*.c                          -> $(BUILD)/test/sim/raft-sim (one program)
#   bench/*.c                             -> $(BUILD)/bench/<name> (one program per file)
#   tools/*.c                             -> $(BUILD)/<name> (offline operator tools)
#   mk/*.mk                               -> rules of their own (see 'fragments' below)

BUILD    ?= build
PREFIX   ?= /usr/local
DESTDIR  ?=
PYTHON   ?= /usr/bin/python3
VERSION  := 0.1.0

# The Debian packages Cairn needs to build, test and run.  This is the one
# place the list lives; `make deps` and .ci/run install from it.
DEB_PACKAGES := build-essential pkg-config clang cmake ninja-build dpkg-dev xz-utils \
	libmbedtls-dev libsystemd-dev libsqlite3-dev libreadline-dev \
	libssl-dev libprotobuf-c-dev protobuf-c-compiler libcmocka-dev libgoogle-perftools-dev \
	python3 python3-pytest python3-protobuf protobuf-compiler openssl systemd iproute2 iptables util-linux procps

# --- flags ------------------------------------------------------------------

WARN     := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Werror
OPT      ?= -O2 -g
PKGS     := libsystemd sqlite3 libprotobuf-c openssl
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
# nng: Debian's nng 1.5.2 source with our fixes (third_party/nng/), built once
# into NNG_DIR for every build flavour, and linked statically.
NNG_DIR    ?= build/nng
NNG_LIB    := $(NNG_DIR)/lib/libnng.a
NNG_LIBS   := $(NNG_LIB) -lmbedtls -lmbedx509 -lmbedcrypto
CMOCKA_LIBS := $(shell pkg-config --libs cmocka 2>/dev/null || echo -lcmocka)
READLINE_LIBS := $(shell pkg-config --libs readline 2>/dev/null || echo -lreadline)

CFLAGS_ALL := -std=c11 -D_GNU_SOURCE $(WARN) $(OPT) -fPIC -I. -I$(BUILD) -I$(NNG_DIR)/include $(PKG_CFLAGS) \
	-DCAIRN_VERSION='"$(VERSION)"' $(CFLAGS)
LDFLAGS_ALL := $(LDFLAGS)
LDLIBS_ALL  := $(NNG_LIBS) $(PKG_LIBS) -lpthread -lm -ldl $(LDLIBS)

# cairnd's allocator.  glibc's malloc was 15-18% of cairnd's CPU under
# load: requests are allocated on nng's threads and freed on the node and
# reply threads, and that traffic keeps glibc consolidating and taking its
# arenas' locks.  gperftools' tcmalloc cut cairnd's CPU per put by 20% and
# per serializable get by 17% (docs/performance.md, session 18).  Only the
# daemon links it: libcairn leaves the allocator to the program using it.
# MALLOC=glibc builds without it; sanitized builds never have it (ASan
# brings its own).
MALLOC ?= tcmalloc
ifeq ($(MALLOC),tcmalloc)
ifneq ($(SANITIZE),1)
DAEMON_MALLOC_LIBS := $(shell pkg-config --libs libtcmalloc_minimal 2>/dev/null || echo -ltcmalloc_minimal)
endif
endif

ifeq ($(SANITIZE),1)
CFLAGS_ALL  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined -DCAIRN_SANITIZE=1
LDFLAGS_ALL += -fsanitize=address,undefined
endif

# --- parts ------------------------------------------------------------------

# part_lib(name, sources): objects and a static library for one part.
define part_lib
$(1)_SRC := $(2)
$(1)_OBJ := $$(patsubst %.c,$(BUILD)/%.o,$$($(1)_SRC))
$(1)_LIB := $$(if $$($(1)_SRC),$(BUILD)/lib$(1).a)
ifneq ($$($(1)_SRC),)
$(BUILD)/lib$(1).a: $$($(1)_OBJ)
	@mkdir -p $$(@D)
	@rm -f $$@
	ar rcs $$@ $$^
endif
endef

PROTO_SRC  := $(wildcard proto/*.proto)
PROTO_GEN_C := $(patsubst %.proto,$(BUILD)/%.pb-c.c,$(PROTO_SRC))
PROTO_GEN_H := $(PROTO_GEN_C:.c=.h)

$(eval $(call part_lib,base,$(wildcard base/*.c)))
$(eval $(call part_lib,raft,$(wildcard raft/*.c)))
$(eval $(call part_lib,storage,$(wildcard storage/*.c)))
# Generated sources already live under $(BUILD): their objects sit beside them.
# proto/*.c is hand-written code for the generated messages (fastpack).
proto_SRC := $(PROTO_GEN_C) $(wildcard proto/*.c)
proto_OBJ := $(PROTO_GEN_C:.c=.o) $(patsubst %.c,$(BUILD)/%.o,$(wildcard proto/*.c))
proto_LIB := $(if $(proto_SRC),$(BUILD)/libproto.a)
$(BUILD)/libproto.a: $(proto_OBJ)
	@rm -f $@
	ar rcs $@ $^
$(eval $(call part_lib,client,$(wildcard client/*.c)))
$(eval $(call part_lib,daemon,$(filter-out daemon/main.c,$(wildcard daemon/*.c))))
$(eval $(call part_lib,shell,$(filter-out shell/main.c,$(wildcard shell/*.c))))

# libcairn, the installable client library: the client with the wire code
# and the error table it uses, so a program needs nothing else of ours, and
# our nng inside both forms (the .so hides its symbols), so a program linking
# libcairn never gets the system's unfixed libnng.
ifneq ($(client_SRC),)
LIBCAIRN_OBJ := $(client_OBJ) $(proto_OBJ) $(BUILD)/base/errors.o $(BUILD)/base/within.o
LIBCAIRN := $(BUILD)/libcairn.a $(BUILD)/libcairn.so.0
$(BUILD)/libcairn.a: $(LIBCAIRN_OBJ) $(NNG_LIB)
	@rm -f $@
	(echo 'create $@'; for o in $(LIBCAIRN_OBJ); do echo "addmod $$o"; done; \
	 echo 'addlib $(NNG_LIB)'; echo save; echo end) | ar -M
$(BUILD)/libcairn.so.0: $(LIBCAIRN_OBJ) $(NNG_LIB) client/libcairn.map
	$(CC) $(LDFLAGS_ALL) -shared -Wl,-soname,libcairn.so.0 -Wl,--no-undefined -Wl,--exclude-libs,libnng.a \
		-Wl,--version-script=client/libcairn.map -o $@ $(filter %.o %.a,$^) $(NNG_LIBS) -lprotobuf-c -lpthread
endif

# Highest layer first, as the static linker wants.
ALL_LIBS := $(shell_LIB) $(daemon_LIB) $(client_LIB) $(storage_LIB) $(raft_LIB) $(proto_LIB) $(base_LIB) $(NNG_LIB)

# Generated protobuf code: compiled with the same warnings as ours.
$(BUILD)/proto/%.pb-c.c $(BUILD)/proto/%.pb-c.h: proto/%.proto
	@mkdir -p $(@D)
	protoc-c --proto_path=. --c_out=$(BUILD) $<

$(NNG_LIB): third_party/nng/build.sh $(wildcard third_party/nng/*.patch)
	@sh third_party/nng/build.sh $(NNG_DIR)

$(BUILD)/%.o: %.c | $(PROTO_GEN_H) $(NNG_LIB)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) -MMD -MP -c -o $@ $<

$(BUILD)/proto/%.o: $(BUILD)/proto/%.c | $(PROTO_GEN_H) $(NNG_LIB)
	$(CC) $(CFLAGS_ALL) -MMD -MP -c -o $@ $<

# --- programs ---------------------------------------------------------------

BINS :=
ifneq ($(wildcard daemon/main.c),)
BINS += $(BUILD)/cairnd
$(BUILD)/cairnd: $(BUILD)/daemon/main.o $(ALL_LIBS)
	$(CC) $(LDFLAGS_ALL) -rdynamic -o $@ $^ $(LDLIBS_ALL) $(DAEMON_MALLOC_LIBS)
endif
ifneq ($(wildcard shell/main.c),)
BINS += $(BUILD)/cairn
$(BUILD)/cairn: $(BUILD)/shell/main.o $(ALL_LIBS)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(READLINE_LIBS) $(LDLIBS_ALL)
endif

# Offline operator tools: tools/NAME.c -> $(BUILD)/NAME, installed beside cairnd.
TOOL_SRC  := $(wildcard tools/*.c)
TOOL_BINS := $(patsubst tools/%.c,$(BUILD)/%,$(TOOL_SRC))
BINS += $(TOOL_BINS)
$(TOOL_BINS): $(BUILD)/%: $(BUILD)/tools/%.o $(ALL_LIBS)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LDLIBS_ALL)

# cairn-bench, the load generator (issue 10), is one program of several files,
# bench/cairn_bench*.c -> $(BUILD)/cairn-bench, linked with libcairn alone and
# installed with the tools; every other bench/NAME.c is a program of its own.
CAIRN_BENCH_SRC := $(wildcard bench/cairn_bench*.c)
BENCH_SRC  := $(filter-out $(CAIRN_BENCH_SRC),$(wildcard bench/*.c))
BENCH_BINS := $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))
$(BUILD)/bench/%: $(BUILD)/bench/%.o $(ALL_LIBS)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LDLIBS_ALL)
ifneq ($(CAIRN_BENCH_SRC),)
BINS += $(BUILD)/cairn-bench
$(BUILD)/cairn-bench: $(patsubst %.c,$(BUILD)/%.o,$(CAIRN_BENCH_SRC)) $(BUILD)/libcairn.a $(NNG_LIB)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(NNG_LIBS) -lprotobuf-c -lpthread -lm
endif

# --- tests ------------------------------------------------------------------

UNIT_SRC  := $(wildcard test/unit/test_*.c)
UNIT_BINS := $(patsubst test/unit/%.c,$(BUILD)/test/unit/%,$(UNIT_SRC))
# test/unit/*.c files not named test_* are shared helpers linked into every test.
UNIT_HELPER_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(filter-out $(UNIT_SRC),$(wildcard test/unit/*.c)))
$(BUILD)/test/unit/test_%: $(BUILD)/test/unit/test_%.o $(UNIT_HELPER_OBJ) $(ALL_LIBS)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(CMOCKA_LIBS) $(LDLIBS_ALL)

SIM_SRC := $(wildcard test/sim/*.c)
SIM_BIN := $(if $(SIM_SRC),$(BUILD)/test/sim/raft-sim)
ifneq ($(SIM_SRC),)
$(BUILD)/test/sim/raft-sim: $(patsubst %.c,$(BUILD)/%.o,$(SIM_SRC)) $(ALL_LIBS)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LDLIBS_ALL)
endif

TEST_BINS := $(UNIT_BINS) $(SIM_BIN)

# --- fragments ----------------------------------------------------------------

# mk/NAME.mk holds the rules of one area that is not a part (fuzzing, the fault
# harness).  They are read here, after every variable above and before the
# top-level targets below, so a fragment can add to BINS and TEST_BINS and
# define targets of its own (make fuzz, make torture).
include $(sort $(wildcard mk/*.mk))

# --- top-level targets ------------------------------------------------------

.PHONY: all tests check run asan bench deps clean install sim _check _bench bench-suite _bench_suite bench-etcd
.DEFAULT_GOAL := all
.SECONDARY:

all: $(ALL_LIBS) $(LIBCAIRN) $(BINS) $(BENCH_BINS)

tests: all $(TEST_BINS)

# deps first, in its own make, so the flags above are computed after the
# packages are there.
check: deps
	@$(MAKE) --no-print-directory _check

_check: tests
	@CAIRN_SANITIZE=$(SANITIZE) CAIRN_MALLOC=$(MALLOC) CAIRN_NNG_DIR=$(abspath $(NNG_DIR)) $(PYTHON) test/run.py --build $(BUILD)

# The simulation runs fewer seeds here: the sanitizers make each one ~5x slower.
asan: deps
	@SIM_SEEDS=$${SIM_SEEDS:-400} $(MAKE) --no-print-directory BUILD=$(BUILD)/asan SANITIZE=1 OPT='-O1 -g' _check

sim: deps
	@$(MAKE) --no-print-directory $(SIM_BIN)
	$(SIM_BIN) --seeds $(or $(SEEDS),10000)

bench: deps
	@$(MAKE) --no-print-directory _bench

_bench: all
	@set -e; for b in $(BENCH_BINS); do echo "== $$b"; $$b; done
	@$(MAKE) --no-print-directory _bench_suite

# The cluster suite alone (cairn-bench against 1 and 3 members; bench/run-suite.py).
bench-suite: deps
	@$(MAKE) --no-print-directory _bench_suite

_bench_suite: all
	@echo "== bench/run-suite.py"; $(PYTHON) bench/run-suite.py --build $(BUILD)

# Cairn against etcd 3.4 on this machine, in the same minutes
# (bench/etcd-compare.py, about two minutes); installs etcd and Go from Debian.
ETCD_PACKAGES = etcd-server etcd-client golang-go golang-etcd-server-dev
bench-etcd: deps
	@$(MAKE) --no-print-directory DEB_PACKAGES="$(ETCD_PACKAGES)" deps
	@$(MAKE) --no-print-directory all
	$(PYTHON) bench/etcd-compare.py --build $(BUILD)

run: deps
	@if [ ! -f daemon/main.c ]; then echo "make run: cairnd is not in this tree yet (issue 6 brings it)"; exit 1; fi
	@$(MAKE) --no-print-directory all
	@sh test/run-member.sh $(BUILD)

deps:
	@missing=$$(for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	echo "make deps: missing Debian packages:" $$missing; \
	if [ "$$(id -u)" = 0 ]; then \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -q && apt-get install -y -q --no-install-recommends $$missing; \
	else \
		echo "run as root:  apt-get install -y $$missing"; exit 1; \
	fi

# --- install ----------------------------------------------------------------

BINDIR  := $(DESTDIR)$(PREFIX)/bin
LIBDIR  := $(DESTDIR)$(PREFIX)/lib
INCDIR  := $(DESTDIR)$(PREFIX)/include/cairn
MANDIR  := $(DESTDIR)$(PREFIX)/share/man
UNITDIR := $(DESTDIR)$(PREFIX)/lib/systemd/system

install: all
	install -d $(DESTDIR)$(PREFIX)/share/doc/cairn
	install -m 0644 README.md $(wildcard docs/*.md) $(DESTDIR)$(PREFIX)/share/doc/cairn/
	$(if $(BINS),install -d $(BINDIR) && install -m 0755 $(BINS) $(BINDIR)/)
	$(if $(LIBCAIRN),install -d $(LIBDIR)/pkgconfig $(INCDIR)/proto)
	$(if $(LIBCAIRN),install -m 0644 $(BUILD)/libcairn.a $(LIBDIR)/libcairn.a)
	$(if $(LIBCAIRN),install -m 0755 $(BUILD)/libcairn.so.0 $(LIBDIR)/libcairn.so.0 && ln -sf libcairn.so.0 $(LIBDIR)/libcairn.so)
	$(if $(LIBCAIRN),install -m 0644 base/errors.h client/cairn.h $(INCDIR)/)
	$(if $(LIBCAIRN),install -m 0644 $(BUILD)/proto/cairn.pb-c.h $(BUILD)/proto/kv.pb-c.h $(INCDIR)/proto/)
	$(if $(LIBCAIRN),sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' docs/cairn.pc.in > $(LIBDIR)/pkgconfig/cairn.pc)
	$(if $(wildcard units/*.service units/*.socket),install -d $(UNITDIR) && for u in $(wildcard units/*.service units/*.socket); do \
		sed 's|/usr/|$(PREFIX)/|g' $$u > $(UNITDIR)/$${u##*/} && chmod 0644 $(UNITDIR)/$${u##*/} || exit 1; done)
	$(if $(wildcard units/sysusers.d/*.conf),install -d $(DESTDIR)$(PREFIX)/lib/sysusers.d && install -m 0644 units/sysusers.d/*.conf $(DESTDIR)$(PREFIX)/lib/sysusers.d/)
	$(if $(wildcard units/tmpfiles.d/*.conf),install -d $(DESTDIR)$(PREFIX)/lib/tmpfiles.d && install -m 0644 units/tmpfiles.d/*.conf $(DESTDIR)$(PREFIX)/lib/tmpfiles.d/)
	$(if $(wildcard units/*.catalog),install -d $(DESTDIR)$(PREFIX)/lib/systemd/catalog && install -m 0644 units/*.catalog $(DESTDIR)$(PREFIX)/lib/systemd/catalog/)
	$(if $(wildcard units/cairnd.conf),install -m 0644 units/cairnd.conf $(DESTDIR)$(PREFIX)/share/doc/cairn/cairnd.conf.example)
	$(if $(wildcard certs/cairn-certs),install -d $(BINDIR) && install -m 0755 certs/cairn-certs $(BINDIR)/)
	$(if $(wildcard docs/man/*.1),install -d $(MANDIR)/man1 && install -m 0644 $(wildcard docs/man/*.1) $(MANDIR)/man1/)
	$(if $(wildcard docs/man/*.5),install -d $(MANDIR)/man5 && install -m 0644 $(wildcard docs/man/*.5) $(MANDIR)/man5/)
	$(if $(wildcard docs/man/*.8),install -d $(MANDIR)/man8 && install -m 0644 $(wildcard docs/man/*.8) $(MANDIR)/man8/)

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
