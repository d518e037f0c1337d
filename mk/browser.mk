# Browser client example (docs/examples/js) tested in headless Chromium
# against a real push-server (included by the Makefile).
#
#   make test-browser   installs Debian chromium, node/npm and playwright-core
#                       when missing, builds push-server, runs the test
#
# Network: Debian packages and the npm registry only, and only when missing.

CARGO ?= cargo
BROWSER_EXAMPLE := docs/examples/js
BROWSER_TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: test-browser browser-deps

browser-deps:
	@if ! [ -x /usr/bin/chromium ] || ! command -v node >/dev/null || ! command -v npm >/dev/null; then \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
			chromium fonts-liberation $$(command -v node >/dev/null || echo nodejs) $$(command -v npm >/dev/null || echo npm); \
	fi
	@[ -d $(BROWSER_EXAMPLE)/node_modules/playwright-core ] || \
		(cd $(BROWSER_EXAMPLE) && npm ci --no-audit --no-fund --silent)

test-browser: browser-deps
	$(BUILD_ALL)
	cd $(BROWSER_EXAMPLE) && PUSH_SERVER_BIN="$(BROWSER_TARGET_DIR)/debug/push-server" node --test test/browser.test.mjs test/diagrams.test.mjs
