# Penstock: the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
DATA_DIR ?= examples/.work/data
PENSTOCK := $(or $(CARGO_TARGET_DIR),target)/debug/penstock

.PHONY: run test build-cli test-rust test-python example-repo clean-example build

## Run the example pipeline end to end on the embedded default (no AWS, no network).
run: build-cli example-repo
	$(PENSTOCK) --data-dir $(DATA_DIR) run examples/pipeline.json --approve

build-cli:
	$(CARGO) build --locked -p penstock

example-repo:
	@scripts/example-repo.sh

## Run every test: Rust (unit, integration, property, end to end) then the Python client tests.
test: test-rust test-python

# One moto server (AWS APIs on loopback) serves every AWS adapter and function test.
test-rust:
	scripts/with-moto.sh $(CARGO) nextest run --workspace --locked --no-fail-fast

test-python: build-cli
	@if ls tests/*/test_*.py >/dev/null 2>&1; then \
		python3 -m pytest -q tests; \
	else echo "no Python client tests"; fi

## Build the Lambda functions for arm64 (needs cargo-lambda and the aarch64-unknown-linux-gnu target).
LAMBDA_FUNCTIONS := advancer dispatcher approval $(notdir $(wildcard functions/api functions/webhook))
build:
	@command -v cargo-lambda >/dev/null || { echo "make build needs cargo-lambda: python3 -m pip install cargo-lambda" >&2; exit 1; }
	@rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu \
		|| { echo "make build needs the aarch64 target: rustup target add aarch64-unknown-linux-gnu" >&2; exit 1; }
	$(CARGO) lambda build --release --arm64 --locked $(addprefix -p penstock-,$(LAMBDA_FUNCTIONS))

clean-example:
	rm -rf examples/.work
