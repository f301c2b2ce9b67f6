# The fault harness of issue 11 (test/jepsen/, docs/reliability.md).
#   build/cairn-record   the history recorder: test/jepsen/record*.c, linked with libcairn alone
#   make torture         long runs: one per fault type and a mixed one, TORTURE_SECONDS each
#                        (default 600), then a table; TORTURE_FAULTS picks the types,
#                        TORTURE_MEMBERS the cluster size (3), TORTURE_SEED the first seed.
# The short run of `make check` (and so of `make asan`) is test/integration/test_jepsen.py.

RECORD_SRC := $(wildcard test/jepsen/record*.c)
ifneq ($(RECORD_SRC),)
TEST_BINS += $(BUILD)/cairn-record
$(BUILD)/cairn-record: $(patsubst %.c,$(BUILD)/%.o,$(RECORD_SRC)) $(BUILD)/libcairn.a $(NNG_LIB)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(NNG_LIBS) -lprotobuf-c -lpthread -lm
endif

TORTURE_SECONDS ?= 600
TORTURE_MEMBERS ?= 3
TORTURE_FAULTS  ?=
TORTURE_SEED    ?=

.PHONY: torture _torture
torture: deps
	@$(MAKE) --no-print-directory _torture

_torture: tests
	$(PYTHON) test/jepsen/harness.py --build $(BUILD) --torture --duration $(TORTURE_SECONDS) \
		--members $(TORTURE_MEMBERS) $(if $(TORTURE_FAULTS),--faults $(TORTURE_FAULTS)) \
		$(if $(TORTURE_SEED),--seed $(TORTURE_SEED))
