# The two commands a newcomer needs:
#   make demo   - bring up the local platform and run the end-to-end demo
#   make test   - lint, type-check and run every test tier (unit, integration, e2e)
CACHE ?= $(HOME)/.cache/modelcycle
VENV  ?= $(CACHE)/venv
BIN   := $(VENV)/bin
export PATH := $(BIN):$(PATH)

.PHONY: setup demo test lint unit integration e2e crds bench

setup:
	@bash tools/setup.sh

demo: setup
	$(BIN)/modelcycle local preflight
	$(BIN)/modelcycle local up
	$(BIN)/modelcycle local demo

lint:
	$(BIN)/ruff check operator tests benchmarks tools
	$(BIN)/ruff format --check operator tests benchmarks tools
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/modelcycle crds generate --check

test: setup lint
	$(BIN)/modelcycle local preflight
	$(BIN)/pytest tests

unit: setup
	$(BIN)/pytest tests/unit

integration: setup
	$(BIN)/pytest tests/integration

e2e: setup
	$(BIN)/pytest tests/e2e

crds: setup
	$(BIN)/modelcycle crds generate

# --- Install artifacts: images, chart, kustomize, kind (docs/install.md) -----------------------
KUBE_BIN       ?= $(shell bash tools/controlplane/build.sh --print-dir)
HELM           ?= $(KUBE_BIN)/helm
KUBECTL        ?= $(KUBE_BIN)/kubectl
IMAGE_REGISTRY ?= modelcycle
IMAGE_TAG      ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
OPERATOR_REPO  ?= $(IMAGE_REGISTRY)/operator
WORKLOAD_REPO  ?= $(IMAGE_REGISTRY)/workload
OPERATOR_IMAGE := $(OPERATOR_REPO):$(IMAGE_TAG)
WORKLOAD_IMAGE := $(WORKLOAD_REPO):$(IMAGE_TAG)
KIND           ?= kind
KIND_CLUSTER   ?= modelcycle-e2e

.PHONY: images helm-lint deploy-sync e2e-kind

images:
	@command -v docker >/dev/null || { echo "make images needs Docker"; exit 1; }
	DOCKER_BUILDKIT=1 docker build -f images/Dockerfile.operator -t $(OPERATOR_IMAGE) \
	  --build-arg VERSION=$(IMAGE_TAG) --build-arg REVISION=$$(git rev-parse HEAD 2>/dev/null || echo unknown) .
	DOCKER_BUILDKIT=1 docker build -f images/Dockerfile.workload -t $(WORKLOAD_IMAGE) \
	  --build-arg VERSION=$(IMAGE_TAG) --build-arg REVISION=$$(git rev-parse HEAD 2>/dev/null || echo unknown) .

helm-lint: setup
	$(HELM) lint --strict charts/modelcycle
	$(BIN)/python tools/deploy/sync.py --check
	$(BIN)/python -m modelcycle.api.docgen --check

# Regenerate what is derived: chart CRDs and RBAC, kustomize manifests, Argo CD snippet, reference.
deploy-sync: setup
	$(BIN)/python tools/deploy/sync.py
	$(BIN)/python -m modelcycle.api.docgen

# A kind cluster with the images loaded and the chart installed, then the e2e tier against it.
e2e-kind: setup images
	KIND='$(KIND)' KIND_CLUSTER='$(KIND_CLUSTER)' CACHE='$(CACHE)' HELM='$(HELM)' KUBECTL='$(KUBECTL)' \
	  PYTEST='$(BIN)/pytest' OPERATOR_REPO='$(OPERATOR_REPO)' WORKLOAD_REPO='$(WORKLOAD_REPO)' \
	  IMAGE_TAG='$(IMAGE_TAG)' bash tools/kind/e2e.sh
