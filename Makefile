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
	$(BIN)/modelcycle local demo

lint:
	$(BIN)/ruff check operator tests benchmarks tools
	$(BIN)/ruff format --check operator tests benchmarks tools
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/modelcycle crds generate --check

test: setup lint
	$(BIN)/pytest tests

unit: setup
	$(BIN)/pytest tests/unit

integration: setup
	$(BIN)/pytest tests/integration

e2e: setup
	$(BIN)/pytest tests/e2e

crds: setup
	$(BIN)/modelcycle crds generate
