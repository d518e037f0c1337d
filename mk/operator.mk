# push-operator: tests, CRD and schema checks. Included by the root Makefile.
#
#   make test-operator   unit + mocked-API + real-Sentinel tests, then schema
#                        validation of the CRD, rendered objects and examples
#   make operator-crd    regenerate crds/pushcluster.yaml from the types
#
# Needs: cargo (nextest if installed), python3 with venv, apt (for openssl,
# promtool, redis-server/redis-sentinel when missing). Network: package registries only.

CARGO ?= cargo
OPERATOR_VENV ?= $(CURDIR)/.venv
OPERATOR_TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)
OPERATOR_BIN := $(OPERATOR_TARGET_DIR)/debug/push-operator
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: test-operator operator-venv operator-redis operator-crd

# The venv is rebuilt only when a tool is missing, so repeated runs stay offline.
operator-venv:
	@if ! "$(OPERATOR_VENV)/bin/python" -c 'import jsonschema, yaml, kubernetes_validate' 2>/dev/null; then \
		python3 -m venv "$(OPERATOR_VENV)" && \
		"$(OPERATOR_VENV)/bin/pip" install --quiet kubernetes-validate jsonschema pyyaml; \
	fi

# redis-server/redis-sentinel for the real-process tests, openssl for the
# throwaway CA of the TLS probe test, promtool (Debian package prometheus)
# for the PrometheusRule tests.
operator-redis:
	@if ! command -v redis-server >/dev/null || ! command -v redis-sentinel >/dev/null \
		|| ! command -v openssl >/dev/null || ! command -v promtool >/dev/null; then \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
			redis-server redis-sentinel openssl prometheus >/dev/null; \
	fi

test-operator: operator-venv operator-redis build-all
	$(CARGO) $(call TEST,push-operator)
	push-operator/scripts/validate-schemas.sh "$(OPERATOR_BIN)" "$(OPERATOR_VENV)"

operator-crd:
	$(CARGO) run -q -p push-operator -- crd > crds/pushcluster.yaml
