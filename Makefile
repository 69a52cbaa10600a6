# Penstock: the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
DATA_DIR ?= examples/.work/data
PENSTOCK := $(or $(CARGO_TARGET_DIR),target)/debug/penstock

.PHONY: run test build-cli test-rust test-python test-infra example-repo clean-example build deploy

## Run the example pipeline end to end on the embedded default (no AWS, no network).
run: build-cli example-repo
	$(PENSTOCK) --data-dir $(DATA_DIR) run examples/pipeline.json --approve

build-cli:
	$(CARGO) build --locked -p penstock

example-repo:
	@scripts/example-repo.sh

## Run every test: Rust (unit, integration, property, end to end), the Python client tests, then
## the infrastructure checks.
test: test-rust test-python test-infra

# One moto server (AWS APIs on loopback) serves every AWS adapter and function test.
test-rust:
	scripts/with-moto.sh $(CARGO) nextest run --workspace --locked --no-fail-fast

test-python: build-cli
	@if ls tests/*/test_*.py 2>/dev/null | grep -qv '^tests/infra/'; then \
		python3 -m pytest -q tests --ignore=tests/infra; \
	else echo "no Python client tests"; fi

clean-example:
	rm -rf examples/.work

## The AWS templates: cfn-lint (informational checks too), then the SAM transform, the template's
## agreement with the code and its security properties (tests/infra).
test-infra:
	cfn-lint --include-checks I -- infra/template.yaml infra/target-account.yaml
	python3 -m pytest -q tests/infra

# Lambda function crates: every functions/* crate but the all-in-one CLI, as packages penstock-NAME.
FUNCTIONS := $(filter-out penstock,$(patsubst functions/%/Cargo.toml,%,$(wildcard functions/*/Cargo.toml)))
CARGO_LAMBDA_VERSION := 1.9.2

## Build every Lambda function for arm64 (release) into target/lambda/NAME/bootstrap.
build:
	@command -v cargo-lambda >/dev/null || { echo "make build needs cargo-lambda: python3 -m pip install cargo-lambda==$(CARGO_LAMBDA_VERSION)" >&2; exit 1; }
	@rustup target list --installed | grep -qx aarch64-unknown-linux-gnu || rustup target add aarch64-unknown-linux-gnu \
		|| { echo "make build needs the aarch64-unknown-linux-gnu Rust target (rustup target add aarch64-unknown-linux-gnu)" >&2; exit 1; }
	@if [ -z "$(FUNCTIONS)" ]; then echo "no Lambda function crates under functions/"; \
	else $(CARGO) lambda build --release --arm64 --locked $(addprefix -p penstock-,$(FUNCTIONS)); fi

## Deploy to AWS with SAM: guided the first time (answers saved in infra/samconfig.toml), or with
## GUIDED=1; otherwise with the saved answers.
deploy:
	cd infra && sam build
	cd infra && if [ -n "$(GUIDED)" ] || ! grep -q '^region' samconfig.toml; then sam deploy --guided; else sam deploy; fi
