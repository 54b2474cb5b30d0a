# camstream: the two commands of the quick start are `make run` and
# `make test`; both install what they need first.

CARGO ?= $(shell command -v cargo 2>/dev/null || echo $(HOME)/.cargo/bin/cargo)
ARGS ?=

.PHONY: run test lint deps test-deps build release fmt clean docker-smoke

## run: serve camstream.toml (or the demo camera) on http://localhost:8000/
run: deps
	$(CARGO) run --release -- $(ARGS)

## test: the whole test suite, against real GStreamer pipelines
test: test-deps
	$(CARGO) test --all-targets

## lint: formatting and clippy, as CI runs them
lint: test-deps
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

## docker-smoke: build the container image, run it, check that it serves (docs/docker.md)
docker-smoke:
	scripts/docker-smoke.sh

deps:
	@scripts/install-deps.sh

test-deps:
	@scripts/install-deps.sh --test

build: deps
	$(CARGO) build --release

fmt:
	$(CARGO) fmt

clean:
	$(CARGO) clean
