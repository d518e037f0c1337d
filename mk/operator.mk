# push-operator: tests, CRD and schema checks. Included by the root Makefile.
#
#   make test-operator   unit + mocked-API + real-Sentinel tests, then schema
#                        validation of the CRD, rendered objects and examples
#   make operator-crd    regenerate crds/pushcluster.yaml from the types
#
# Needs: cargo (nextest if installed), python3 with venv, apt (for
# redis-server/redis-sentinel when missing). Network: package registries only.

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

operator-redis:
	@if ! command -v redis-server >/dev/null || ! command -v redis-sentinel >/dev/null; then \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq redis-server redis-sentinel; \
	fi

test-operator: operator-venv operator-redis build-all
	$(CARGO) $(call TEST,push-operator)
	push-operator/scripts/validate-schemas.sh "$(OPERATOR_BIN)" "$(OPERATOR_VENV)"

operator-crd:
	$(CARGO) run -q -p push-operator -- crd > crds/pushcluster.yaml
