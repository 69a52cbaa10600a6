# Penstock: the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
DATA_DIR ?= examples/.work/data
PENSTOCK := $(or $(CARGO_TARGET_DIR),target)/debug/penstock

.PHONY: run test build-cli test-rust test-python example-repo clean-example

## Run the example pipeline end to end on the embedded default (no AWS, no network).
run: build-cli example-repo
	$(PENSTOCK) --data-dir $(DATA_DIR) run examples/pipeline.json --approve

build-cli:
	$(CARGO) build --locked -p penstock

example-repo:
	@scripts/example-repo.sh

## Run every test: Rust (unit, integration, property, end to end) then the Python client tests.
test: test-rust test-python

test-rust:
	$(CARGO) nextest run --workspace --locked --no-fail-fast

test-python: build-cli
	@if ls tests/*/test_*.py >/dev/null 2>&1; then \
		python3 -m pytest -q tests; \
	else echo "no Python client tests"; fi

clean-example:
	rm -rf examples/.work
