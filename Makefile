# Push — build, run and test. `make test` installs what the tests need when
# it is missing, then runs every test of the workspace.

CARGO ?= cargo
SHELL := /bin/bash
# Every build of `make test` selects the whole workspace with all targets, so
# Cargo resolves features once and each dependency compiles once. A `-p` subset
# resolves its own features: the same crates again (tokio, hyper, axum … up to
# eleven times over), minutes of CPU and gigabytes of disk.
BUILD_ALL := $(CARGO) build --workspace --all-targets --locked
# $(call TEST,PACKAGE[,TEST BINARY]): cargo-nextest (parallel processes)
# selects with a filter, over the workspace build; plain cargo test works too,
# with a `-p` build of its own.
HAVE_NEXTEST := $(shell $(CARGO) nextest --version >/dev/null 2>&1 && echo yes)
ifeq ($(HAVE_NEXTEST),yes)
TEST = nextest run --workspace --no-fail-fast -E 'package($(1))$(if $(2), & binary($(2)))'
else
TEST = test --no-fail-fast -p $(1)$(if $(2), --test $(2))
endif
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# A test run builds everything once from clean: incremental caches would only
# add ~2 GB of disk. Set CARGO_INCREMENTAL=1 to keep them between local runs.
export CARGO_INCREMENTAL ?= 0

# `make test`, in this order. Each area brings its targets in its own
# fragment under mk/ (operator, Redis, charts, browser, reliability, bench).
TEST_TARGETS := lint test-server test-operator test-charts test-browser test-client test-reliability test-bench

include mk/operator.mk mk/redis.mk mk/charts.mk mk/browser.mk mk/reliability.mk mk/bench.mk mk/client.mk mk/e2e.mk

.PHONY: all build build-all run test test-server test-release lint fmt release
all: build

build:
	$(CARGO) build --workspace

release:
	$(CARGO) build --release --locked --workspace

## Run the server on :8080 with the in-process broker.
run:
	$(CARGO) run --release -p push-server

## Every test of the workspace (what CI runs), then the end-to-end tests on
## the project's own Kubernetes (mk/e2e.mk, docs/e2e.md).
test: $(TEST_TARGETS) test-release test-e2e

## The release build the Dockerfiles run (no Docker engine in CI): it must
## build from the lock file, and the binaries must start.
test-release:
	$(CARGO) build --release --locked --workspace
	$(or $(CARGO_TARGET_DIR),target)/release/push-server --version
	$(or $(CARGO_TARGET_DIR),target)/release/push-operator crd | diff -q - crds/pushcluster.yaml

## Builds every binary and test binary of the workspace (see BUILD_ALL).
build-all:
	$(BUILD_ALL)

test-server: build-all
	$(CARGO) $(call TEST,push-server)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt:
	$(CARGO) fmt --all
