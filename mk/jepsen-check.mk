# The history checker of the fault harness (issue 11; docs/reliability-checker.md):
#   test/jepsen/history.c          the cairn-history 1 parser and writer (HISTORY.md)
#   test/jepsen/check*.c           the checks and the history generator
#   test/jepsen/cairn_check.c   -> $(BUILD)/cairn-check (built by `make tests`, not installed)
# JEPSEN_HISTORY_OBJ is what a program that only writes histories links (cairn-record).
JEPSEN_HISTORY_OBJ := $(BUILD)/test/jepsen/history.o
JEPSEN_CHECK_OBJ   := $(JEPSEN_HISTORY_OBJ) $(patsubst %.c,$(BUILD)/%.o,$(wildcard test/jepsen/check*.c))

TEST_BINS += $(BUILD)/cairn-check
$(BUILD)/cairn-check: $(BUILD)/test/jepsen/cairn_check.o $(JEPSEN_CHECK_OBJ)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ -lm

# The unit test links the checker on top of what every unit test gets.
$(BUILD)/test/unit/test_jepsen_check: $(JEPSEN_CHECK_OBJ)
