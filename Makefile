# mlobs developer targets. `make test` is what CI runs.
SHELL := /bin/bash
CARGO ?= cargo
VENV ?= .venv
PY := $(VENV)/bin/python
export CARGO_TERM_COLOR ?= never

.PHONY: build test lint fmt crds crds-check demo venv bench bench-inprocess e2e clean

build:
	$(CARGO) build --bins

## Python tools used by tests and lint (moto for AWS, kubernetes-validate for manifests).
venv: $(VENV)/.installed
$(VENV)/.installed: requirements-dev.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

test: venv
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(CARGO) test --all-targets

lint: venv crds-check build
	$(CARGO) fmt --all -- --check
	@bash scripts/ensure-dev-null.sh
	$(CARGO) clippy --all-targets -- -D warnings
	bash scripts/validate-manifests.sh
	bash scripts/validate-chart.sh
	bash scripts/lint-iam.sh

fmt:
	$(CARGO) fmt --all

## Regenerate crds/*.yaml from the API types.
crds:
	$(CARGO) run --quiet --bin crdgen -- crds
	cp crds/*.yaml charts/mlobs-operator/crds/
	cp crds/*.yaml config/crd/

## Fails when crds/ is stale.
crds-check:
	@tmp=$$(mktemp -d) && $(CARGO) run --quiet --bin crdgen -- $$tmp >/dev/null && \
	  diff -ru crds $$tmp && echo "crds/ is up to date" || { echo "crds/ is stale: run make crds"; exit 1; }

## Offline demo: what the full sample pipeline creates and costs, with no cluster and no AWS account.
demo:
	$(CARGO) run --quiet --bin mlobs -- plan -f config/samples/pipeline-full.yaml --policy config/samples/policy-default.yaml \
	  --nodes 20 --instance-type p4d.24xlarge --log-gb-per-day 50
	@echo
	@echo "== mlobs render (first objects; pipe the full output to kubectl apply -f -)"
	@$(CARGO) run --quiet --bin mlobs -- render -f config/samples/pipeline-full.yaml --policy config/samples/policy-default.yaml | head -40

clean:
	$(CARGO) clean
	rm -rf $(VENV)

## End-to-end scenarios (e2e/tests) against a real control plane: the cluster in KUBECONFIG, else
## ../shared/cluster started and stopped for the run; moto as AWS; 2 operator replicas. Never skips.
e2e: venv
	bash e2e/run.sh

## Benchmarks (performance goals live here, never in timed tests): the criterion benches, then
## the scale bench on the real control plane (e2e/tests/bench.rs: MLOBS_BENCH_N pipelines,
## default 1000, on 20 kwok GPU nodes, moto, the operator as its own process;
## writes target/cluster-bench.json).
bench: venv
	$(CARGO) bench --bench plan
	MLOBS_E2E_BENCH=1 bash e2e/run.sh

## The earlier scale harness: the controllers against the in-process API fake (AWS call counts
## at 100 and 1,000 pipelines without a cluster; its RSS includes the fake).
bench-inprocess: venv
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(CARGO) bench --bench scale
