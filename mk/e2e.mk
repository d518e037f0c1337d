# End-to-end tests on the project's own single-node Kubernetes (e2e/,
# docs/e2e.md). Included by the Makefile.
#
#   make test-e2e    e2e/cluster.sh up (builds the cluster from Go modules and
#                    Debian packages once, into /var/cache/push-e2e), runs
#                    e2e/tests with pytest, and takes the cluster down again
#                    whether the tests pass or fail
#   make e2e-up / e2e-down   the same cluster by hand
#   make psa-check   builds e2e/build/psa-check once (Pod Security Standards
#                    checks of rendered YAML, /var/cache/push-e2e) and runs its
#                    self-test; callers use "$$(e2e/build/psa-check.sh)" FILE
#
# Needs: root, go, python3 with venv, apt. Network: package registries only.

E2E_VENV ?= $(CURDIR)/.venv
E2E_PYTEST_ARGS ?=

.PHONY: test-e2e e2e-up e2e-down e2e-venv psa-check

e2e-venv:
	@if ! "$(E2E_VENV)/bin/python" -c 'import pytest, websockets, jwt, yaml' 2>/dev/null; then \
		[ -x "$(E2E_VENV)/bin/pip" ] || python3 -m venv "$(E2E_VENV)"; \
		"$(E2E_VENV)/bin/pip" install --quiet pytest websockets pyjwt pyyaml; \
	fi

e2e-up: charts-tools
	e2e/cluster.sh up

e2e-down:
	e2e/cluster.sh down

psa-check:
	e2e/build/psa-check.sh --test >/dev/null

# The cluster comes down even when a test fails; the exit status is pytest's.
test-e2e: charts-tools e2e-venv
	$(CARGO) build --release --locked --workspace
	@set -e; trap 'e2e/cluster.sh down' EXIT; \
	PUSH_E2E_SKIP_CARGO=1 e2e/cluster.sh up; \
	HELM="$(HELM)" "$(E2E_VENV)/bin/python" -m pytest e2e/tests -v -rA --durations=15 $(E2E_PYTEST_ARGS)
