# Reliability (issue 8, docs/reliability.md): property tests, hostile clients,
# SIGTERM under load, a soak, and bounded fuzz runs (included by the Makefile).
.PHONY: test-reliability fuzz fuzz-build soak soak-redis

## Seconds each fuzz target runs in `make fuzz` / `make test-reliability`.
FUZZ_SECONDS ?= 15
FUZZ_TARGETS := ws_text_frame sse_cursor message_id config_yaml publish_body
## Soak length for `make soak` (`30s`, `10m`, `2h`; a bare number is seconds).
DURATION ?= 10m
## Soak length and seconds per fuzz target inside `make test-reliability`.
RELIABILITY_SOAK ?= 60s
RELIABILITY_FUZZ_SECONDS ?= 10

# $(call SOAK,TEST): one ignored soak test, its output shown.
ifeq ($(HAVE_NEXTEST),yes)
SOAK = nextest run --workspace --run-ignored only --no-capture -E 'package(push-server) & binary(reliability) & test(=soak::$(1))'
else
SOAK = test -p push-server --test reliability soak::$(1) -- --ignored --exact --nocapture
endif

## The parts `test-server` does not run: short soaks (one node, then two nodes
## on Redis: two minutes together), then a bounded run of every fuzz target
## (the property tests, hostile clients, faults and SIGTERM test are in the
## reliability test binary, which `test-server` runs with the rest).
test-reliability: install-redis build-all
	PUSH_SOAK_DURATION=$(RELIABILITY_SOAK) $(CARGO) $(call SOAK,soak_one_node)
	PUSH_SOAK_DURATION=$(RELIABILITY_SOAK) $(CARGO) $(call SOAK,soak_two_nodes_redis)
	$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=$(RELIABILITY_FUZZ_SECONDS)

## Connection churn plus steady publishing against one node for DURATION;
## fails if RSS, fds or threads grow without bound (samples in target/soak/).
soak: build-all
	PUSH_SOAK_DURATION=$(DURATION) $(CARGO) $(call SOAK,soak_one_node)

## The same against two nodes on one Redis (installs redis-server when
## missing): subscribers of every channel on both nodes, each publisher on
## one; samples in target/soak/soak-redis-<secs>s.csv.
soak-redis: install-redis build-all
	PUSH_SOAK_DURATION=$(DURATION) $(CARGO) $(call SOAK,soak_two_nodes_redis)

# cargo-fuzz wants nightly for -Z flags (sanitizer coverage); the stable
# toolchain does the same with RUSTC_BOOTSTRAP=1. No sanitizer: the code
# under test is safe Rust, and instrumenting it all would double the build.
FUZZ := cd fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz
FUZZ_FLAGS := -O -s none

fuzz-build:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	$(FUZZ) build $(FUZZ_FLAGS)

## Every fuzz target for FUZZ_SECONDS each, seeded from fuzz/seeds/; a crash
## fails the run and leaves its input in fuzz/artifacts/<target>/ (copy it to
## fuzz/regressions/<target>/ so the reliability tests replay it forever).
fuzz: fuzz-build
	@set -e; for t in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/corpus/$$t fuzz/target; \
		echo "fuzz $$t: $(FUZZ_SECONDS) s"; \
		if (cd fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $(FUZZ_FLAGS) $$t corpus/$$t seeds/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -timeout=10 -print_final_stats=1) \
			> fuzz/target/$$t.log 2>&1; then \
			grep -E '^stat::(number_of_executed_units|new_units_added)' fuzz/target/$$t.log || true; \
		else \
			tail -40 fuzz/target/$$t.log; \
			echo "fuzz $$t found a crash: its input is in fuzz/artifacts/$$t"; exit 1; \
		fi; \
	done
