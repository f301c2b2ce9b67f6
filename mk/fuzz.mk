# Fuzzing (docs/fuzzing.md).  Each test/fuzz/fuzz_NAME.c defines
# LLVMFuzzerTestOneInput and is built two ways:
#   make check     with the normal compiler and flags, linked with
#                  test/fuzz/replay.c into $(BUILD)/test/unit/test_fuzz_NAME,
#                  which replays test/fuzz/corpus/NAME and test/fuzz/regressions/NAME
#   make fuzz      with clang and libFuzzer + ASan + UBSan into $(BUILD)/fuzz/fuzz_NAME
#                  (the project's sources built again under $(BUILD)/fuzz by a
#                  sub-make), then each run for FUZZ_SECONDS against its corpus
#   make fuzz-seeds  write seeds with test/fuzz/gen_corpus.c and merge (-merge=1)
#                  those that add coverage into test/fuzz/corpus/NAME
# One target alone: make fuzz FUZZ_TARGETS=wal FUZZ_SECONDS=600

FUZZ_ALL     := $(patsubst test/fuzz/fuzz_%.c,%,$(wildcard test/fuzz/fuzz_*.c))
FUZZ_TARGETS ?= $(FUZZ_ALL)
FUZZ_SECONDS ?= 60
FUZZ_OUT     := $(BUILD)/fuzz
FUZZ_SAN     := -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
# Largest input per target: a few WAL segments or a small store copy; a request,
# message or config file far smaller.
FUZZ_MAX_LEN_wal       := 65536
FUZZ_MAX_LEN_snap      := 65536
FUZZ_MAX_LEN_mvcc_snap := 131072
FUZZ_MAX_LEN_request   := 16384
FUZZ_MAX_LEN_peer      := 16384
FUZZ_MAX_LEN_config    := 8192
FUZZ_FLAGS ?= -rss_limit_mb=2048 -timeout=25

# --- replay under make check -----------------------------------------------------

FUZZ_REPLAY_BINS := $(patsubst %,$(BUILD)/test/unit/test_fuzz_%,$(FUZZ_ALL))
TEST_BINS += $(FUZZ_REPLAY_BINS)

$(FUZZ_REPLAY_BINS): $(BUILD)/test/unit/test_fuzz_%: $(BUILD)/test/fuzz/fuzz_%.o $(BUILD)/test/fuzz/replay.o $(ALL_LIBS)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LDLIBS_ALL)

# --- libFuzzer builds (inside the sub-make, where BUILD is the fuzz tree) ----------

ifeq ($(FUZZ_ENGINE),1)
.PHONY: _fuzz_bins
_fuzz_bins: $(patsubst %,$(BUILD)/fuzz_%,$(FUZZ_TARGETS))

$(BUILD)/fuzz_%: $(BUILD)/test/fuzz/fuzz_%.o $(ALL_LIBS)
	$(CC) $(LDFLAGS_ALL) -fsanitize=fuzzer,address,undefined -o $@ $^ $(LDLIBS_ALL)
endif

.PHONY: fuzz fuzz-build fuzz-seeds

fuzz-build:
	@$(MAKE) --no-print-directory BUILD=$(FUZZ_OUT) CC=clang OPT='-O1 -g' \
		CFLAGS='$(FUZZ_SAN)' LDFLAGS='-fsanitize=address,undefined' FUZZ_ENGINE=1 \
		FUZZ_TARGETS='$(FUZZ_TARGETS)' _fuzz_bins

# fuzz_dirs(NAME): the committed corpus folders of a target that exist.
fuzz_dirs = $(wildcard test/fuzz/corpus/$(1) test/fuzz/regressions/$(1))
fuzz_max_len = $(or $(FUZZ_MAX_LEN_$(1)),65536)

# New inputs go to $(FUZZ_OUT)/corpus/NAME; the committed seeds and
# regressions are read only.  A crash stops the run and is left in
# $(FUZZ_OUT)/crashes/NAME-crash-<sha1>.
fuzz: fuzz-build
	@mkdir -p $(FUZZ_OUT)/crashes $(patsubst %,$(FUZZ_OUT)/corpus/%,$(FUZZ_TARGETS))
	@$(foreach t,$(FUZZ_TARGETS),echo "== fuzz_$(t) for $(FUZZ_SECONDS) s" && \
		$(FUZZ_OUT)/fuzz_$(t) -max_total_time=$(FUZZ_SECONDS) -max_len=$(call fuzz_max_len,$(t)) \
		$(FUZZ_FLAGS) -print_final_stats=1 $(if $(wildcard test/fuzz/$(t).dict),-dict=test/fuzz/$(t).dict) \
		-artifact_prefix=$(FUZZ_OUT)/crashes/$(t)- $(FUZZ_OUT)/corpus/$(t) $(call fuzz_dirs,$(t)) && ) true

# The generator writes raw seeds; each fuzzer adds the ones that add coverage
# to the committed corpus (empty a folder first to start it again).
fuzz-seeds: fuzz-build $(BUILD)/test/fuzz/gen_corpus
	rm -rf $(FUZZ_OUT)/seeds
	$(BUILD)/test/fuzz/gen_corpus $(FUZZ_OUT)/seeds
	@$(foreach t,$(FUZZ_TARGETS),mkdir -p test/fuzz/corpus/$(t) && \
		$(FUZZ_OUT)/fuzz_$(t) -merge=1 -max_len=$(call fuzz_max_len,$(t)) \
		test/fuzz/corpus/$(t) $(FUZZ_OUT)/seeds/$(t) && ) true

$(BUILD)/test/fuzz/gen_corpus: $(BUILD)/test/fuzz/gen_corpus.o $(ALL_LIBS)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LDLIBS_ALL)
