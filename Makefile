# camstream: the two commands of the quick start are `make run` and
# `make test`; both install what they need first.

CARGO ?= $(shell command -v cargo 2>/dev/null || echo $(HOME)/.cargo/bin/cargo)
ARGS ?=

.PHONY: run test lint deps test-deps build release fmt clean bench bench-quick docker-smoke validate-k8s deb-smoke

## run: serve camstream.toml (or the demo camera) on http://localhost:8000/
run: deps
	$(CARGO) run --release -- $(ARGS)

## test: the whole test suite, against real GStreamer pipelines, then the
## Kubernetes manifests' offline checks
test: test-deps
	$(CARGO) test --all-targets
	scripts/validate-k8s.sh

## validate-k8s: deploy/kubernetes against the Kubernetes schemas, and its
## configs through `camstream check`, without a cluster
validate-k8s: test-deps
	scripts/validate-k8s.sh

## lint: formatting and clippy, as CI runs them (--all-targets includes
## the benchmark, which `make test` also builds and self-tests)
lint: test-deps
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

## bench: the load benchmark (docs/benchmarks.md): release build, then
## ~9 minutes of scenarios; run it on an otherwise idle machine.
## BENCH_ARGS passes options, e.g. BENCH_ARGS="--scenarios c1-v1,c1-v500"
BENCH_ARGS ?=
bench: test-deps
	$(CARGO) bench --bench load -- $(BENCH_ARGS)

## bench-quick: the same with 6 s windows and no 500-viewer scenario
## (~3 minutes after the build), to check the benchmark itself
bench-quick: test-deps
	$(CARGO) bench --bench load -- --quick $(BENCH_ARGS)

## docker-smoke: build the container image, run it, check that it serves (docs/docker.md)
docker-smoke:
	scripts/docker-smoke.sh

## deb-smoke: build the Debian package, install it here, check it serves, purge it (docs/deb.md; root)
deb-smoke:
	scripts/deb-smoke.sh

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
