# vibration-edge: one entry point for people and CI.
#   make demo   the whole story on embedded defaults
#   make test   every test (sets up what it needs)
#   make test-fast  the pure and unit tests only (no broker, helm or cluster), in about a minute
#   make e2e    the whole story on the cluster of KUBECONFIG
#   make check  format, lint, mypy strict, import layering, declared dependencies, generated-file drift
#   make bench  figures beside their baselines
#   make drift-eval  the drift monitor's false alarms and detection delays, on the simulator
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

UV_VERSION := 0.13.9
# uv from PATH when there is one, else a private copy installed by `make setup`.
UV := $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.tools/bin/uv)
RUN := $(UV) run --frozen --no-sync
PY_DIRS := core training-job inference-image operator testkit tests tools
PACKAGES := core training-job inference-image operator testkit

.PHONY: help setup setup-test demo demo-k8s test test-fast e2e check fmt lint typecheck layers deps crds generate verify-generated bench drift-eval images-report clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(CURDIR)/.tools/bin/uv:
	@echo "setup: uv not found on PATH; installing uv $(UV_VERSION) into .tools/ (from PyPI)"
	python3 -m venv .tools
	.tools/bin/pip install --quiet "uv==$(UV_VERSION)"

# --inexact: one environment serves demo, check and test; a target never removes
# what another installed (tensorflow-cpu for the INT8 tests is 1.5 GiB).
setup: $(UV) ## create .venv from uv.lock (installs uv first if missing)
	$(UV) sync --frozen --all-packages --inexact --quiet

# --all-extras: the INT8 Edge TPU tests need tensorflow-cpu (training) and LiteRT (serving).
setup-test: $(UV) ## the environment plus what the tests run for real (mosquitto, helm, tensorflow-cpu)
	@echo "setup-test: syncing .venv with every extra (tensorflow-cpu is large on a first run)"
	$(UV) sync --frozen --all-packages --all-extras --inexact --quiet
	tools/ensure-test-deps.sh
	tools/ensure-helm.sh

demo: setup ## run the demo on embedded defaults (installs mosquitto when missing)
	tools/ensure-test-deps.sh mosquitto
	$(RUN) python tools/demo.py

demo-k8s: setup ## the demo on the cluster of KUBECONFIG (images pushed first; DRY_RUN=1 prints it)
	tools/ensure-helm.sh
	$(RUN) python tools/demo_k8s.py $(if $(DRY_RUN),--dry-run) $(DEMO_K8S_FLAGS)

test: setup-test ## run every test (the e2e ones too when KUBECONFIG names a cluster)
	$(RUN) pytest --durations=40

# Selected by marker, not by folder: a new test file runs here unless it is marked, and a test
# that asks for a broker fixture is marked integration by tests/conftest.py.
test-fast: setup ## the pure and unit tests: no broker, helm, cluster or long training (about a minute)
	$(RUN) pytest -m "not (integration or slow or e2e)" --durations=10

e2e: setup-test ## only the e2e tests, on the cluster of KUBECONFIG (its nodes need the images)
	@test -n "$${KUBECONFIG:-}" || echo "e2e: KUBECONFIG is not set: every e2e test will skip"
	$(RUN) pytest -m e2e -rA --durations=0

check: setup lint typecheck layers deps verify-generated ## every verifier, as CI runs them

fmt: setup ## format the code and apply safe lint fixes
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

lint:
	$(RUN) ruff format --check .
	$(RUN) ruff check .

typecheck:
	$(RUN) mypy

layers:
	$(RUN) lint-imports

# Each package's src imports what its own pyproject.toml declares, and it declares nothing else
# (deptry, run in the package's folder so it reads that file; the workspace .venv resolves names).
deps:
	@for package in $(PACKAGES); do \
		echo "deps: $$package"; (cd $$package && $(RUN) deptry src) || exit 1; \
	done

crds: generate ## regenerate crds/ from the spec (same as make generate)

generate: setup ## regenerate the generated files (the CRD, docs tables)
	$(RUN) python tools/generate.py
	$(RUN) python tools/chart_docs.py

verify-generated:
	$(RUN) python tools/generate.py --check
	$(RUN) python tools/chart_docs.py --check

bench: setup-test ## print benchmark figures beside their baselines and write docs/benchmarks.md
	rm -rf build/bench
	OMP_NUM_THREADS=1 $(RUN) python tools/bench.py
	$(RUN) python tools/bench_serve.py
	$(RUN) python tools/bench_instructions.py
	$(RUN) python tools/bench_operator.py
	$(RUN) python tools/bench_report.py

drift-eval: setup ## the drift monitor on the simulator: false alarms, windows to detection; exits 1 on a missed target
	$(RUN) python tools/drift_eval.py

images-report: ## image sizes beside their targets: IMAGES=dir or .tar files [BASE=base.tar CHECK=1 MARKDOWN=file]
	@test -n "$(IMAGES)" || { echo 'images-report: IMAGES is not set: give a directory of docker-save archives or the .tar files, e.g. make images-report IMAGES=/path/to/archives BASE=/path/to/archives/python-3.11-slim.tar (docker save IMAGE -o FILE.tar writes one)' >&2; exit 2; }
	$(RUN) python tools/images_report.py $(IMAGES) $(if $(BASE),--base $(BASE)) $(if $(MARKDOWN),--markdown $(MARKDOWN)) $(if $(CHECK),--check)

clean: ## remove the environment and caches
	rm -rf .venv .tools .mypy_cache .ruff_cache .pytest_cache
