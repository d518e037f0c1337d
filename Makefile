# Push — build, run and test. `make test` installs what the tests need when
# it is missing, then runs every test of the workspace.

CARGO ?= cargo
SHELL := /bin/bash
# cargo-nextest runs test binaries in parallel processes; plain cargo test works too.
NEXTEST := $(shell $(CARGO) nextest --version >/dev/null 2>&1 && echo "nextest run --no-fail-fast" || echo "test --no-fail-fast")
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# A test run builds everything once from clean: incremental caches would only
# add ~2 GB of disk. Set CARGO_INCREMENTAL=1 to keep them between local runs.
export CARGO_INCREMENTAL ?= 0

# `make test`, in this order. Each area brings its targets in its own
# fragment under mk/ (operator, Redis, charts, browser, reliability, bench).
TEST_TARGETS := lint test-server test-operator test-charts test-browser test-reliability test-bench

include mk/operator.mk mk/redis.mk mk/charts.mk mk/browser.mk mk/reliability.mk mk/bench.mk

.PHONY: all build run test test-server test-release lint fmt release
all: build

build:
	$(CARGO) build --workspace

release:
	$(CARGO) build --release --locked --workspace

## Run the server on :8080 with the in-process broker.
run:
	$(CARGO) run --release -p push-server

## Every test of the workspace (what CI runs).
test: $(TEST_TARGETS) test-release

## The release build the Dockerfiles run (no Docker engine in CI): it must
## build from the lock file, and the binaries must start.
test-release:
	$(CARGO) build --release --locked -p push-server -p push-operator
	$(or $(CARGO_TARGET_DIR),target)/release/push-server --version
	$(or $(CARGO_TARGET_DIR),target)/release/push-operator crd | diff -q - crds/pushcluster.yaml

test-server:
	$(CARGO) $(NEXTEST) -p push-server

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt:
	$(CARGO) fmt --all
