# The TypeScript client library @push-dev/client (clients/js): unit tests,
# integration tests against real push-server and redis-server processes,
# and the built ESM bundle in headless Chromium (included by the Makefile).
#
#   make test-client   installs node/npm, Debian chromium, redis-server and
#                      the package's npm dev dependencies when missing,
#                      builds the workspace, then builds, tests and packs
#                      the library
#
# Network: Debian packages and the npm registry only, and only when missing.

CARGO ?= cargo
CLIENT_JS := clients/js
CLIENT_TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
BUILD_ALL ?= $(CARGO) build --workspace --all-targets --locked

.PHONY: test-client client-deps client-dist

client-deps:
	@if ! [ -x /usr/bin/chromium ] || ! command -v node >/dev/null || ! command -v npm >/dev/null || ! command -v redis-server >/dev/null; then \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
			chromium fonts-liberation redis-server \
			$$(command -v node >/dev/null || echo nodejs) $$(command -v npm >/dev/null || echo npm); \
	fi
	@[ -d $(CLIENT_JS)/node_modules/typescript ] && [ -d $(CLIENT_JS)/node_modules/playwright-core ] || \
		(cd $(CLIENT_JS) && npm ci --no-audit --no-fund --silent)

## Builds dist/ (ESM + CJS bundles, .d.ts). The example page of
## docs/examples/js loads the ESM bundle, so test-browser needs it too.
client-dist: client-deps
	cd $(CLIENT_JS) && npm run build

test-browser: client-dist

test-client: client-dist
	$(BUILD_ALL)
	cd $(CLIENT_JS) && PUSH_SERVER_BIN="$(CLIENT_TARGET_DIR)/debug/push-server" npm test
	@pack=$$(mktemp -d) && trap 'rm -rf "$$pack"' EXIT && \
		cd $(CLIENT_JS) && npm pack --silent --pack-destination "$$pack" >/dev/null && \
		ls -l "$$pack" && tar -tzf "$$pack"/push-dev-client-*.tgz | sort
