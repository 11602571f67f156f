# Everything goes through the project's virtualenv, created on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 5000
ARGS ?=
# The UI's experiments in its Model training view (MLflow 3 opens its GenAI view otherwise;
# runner/tracking/store.py links runs the same way).
UI_URL = http://$(HOST):$(PORT)/\#/experiments?workflowType=machine_learning

.PHONY: install install-jax test-jax test-torch lock train demo test test-fast lint format ui server serve report bench gpu-kit clean

install: $(VENV)/.installed

# The exact versions of constraints.txt: every install (and CI) gets the same stack.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip >/dev/null
	$(PY) -m pip install -c constraints.txt -e '.[dev]'
	touch $@

## install-jax: a second virtualenv, $(JAX_VENV), with Keras on JAX and no TensorFlow at all
JAX_VENV ?= .venv-jax
install-jax: $(JAX_VENV)/.installed

$(JAX_VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(JAX_VENV)
	$(JAX_VENV)/bin/python -m pip install --upgrade pip >/dev/null
	$(JAX_VENV)/bin/python -m pip install -c constraints.txt -e '.[jax,test]'
	touch $@

## test-jax: the backend tests (tests/test_backends.py, test_airbench.py) in the TensorFlow-free virtualenv
## (`make test` runs them too, after the whole suite)
test-jax: install-jax
	RUNNER_EXPECT_NO_TENSORFLOW=1 KERAS_BACKEND=jax $(JAX_VENV)/bin/python -m pytest \
		-n $(TEST_WORKERS) --dist loadgroup tests/test_backends.py tests/test_airbench.py $(ARGS)

## test-torch: tests/test_torch.py (backend=torch) with PyTorch added to $(JAX_VENV). TORCH_SPEC
## must name a CPU build: torch==2.13.0 is one on this project's CI machines (a local file);
## elsewhere e.g. TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC ?= torch==2.13.0
test-torch: install-jax
	$(JAX_VENV)/bin/python -m pip install -q -c constraints.txt $(TORCH_SPEC)
	KERAS_BACKEND=jax $(JAX_VENV)/bin/python -m pytest \
		-n $(TEST_WORKERS) --dist loadgroup tests/test_torch.py $(ARGS)

## lock: rewrite constraints.txt from the virtualenv (after changing dependencies on purpose)
lock:
	@head -2 constraints.txt > constraints.txt.new
	$(PY) -m pip freeze --exclude-editable >> constraints.txt.new
	mv constraints.txt.new constraints.txt

## train: python -m runner with ARGS, e.g. make train ARGS="model=mlp data=fashion_mnist"
train: install
	$(PY) -m runner $(ARGS)

## demo: LeNet on scikit-learn's bundled digits, offline, about a minute on a laptop CPU
demo: install
	$(PY) -m runner experiment=digits_lenet $(ARGS)
	@echo
	@echo "Open the MLflow UI with: make ui   (then $(UI_URL))"

## test: the whole suite, offline, in TEST_WORKERS processes (tests handed out as workers free up):
## everything but the `backends` tests in .venv, then those in .venv-jax, where no TensorFlow is
## (they are about Keras on JAX; running them beside TensorFlow too would only repeat them)
TEST_WORKERS ?= 2
test: install install-jax
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup -m "not backends" $(ARGS)
	RUNNER_EXPECT_NO_TENSORFLOW=1 KERAS_BACKEND=jax $(JAX_VENV)/bin/python -m pytest \
		-n $(TEST_WORKERS) --dist loadgroup tests/test_backends.py tests/test_airbench.py $(ARGS)

## test-fast: the unit tests only (no CLI subprocesses), under a minute
test-fast: install
	$(PY) -m pytest -m "not e2e" $(ARGS)

## lint: ruff, and the layer contract in .importlinter (a lower layer importing a higher one fails)
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

## ui: the MLflow UI on the store training uses ($MLFLOW_TRACKING_URI, else mlruns/ under $RUNNER_ROOT or here),
## without MLflow's GenAI job runner (MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true turns it on), in UI_WORKERS
## processes: one serves one person, and starts faster and smaller than MLflow's default four
UI_WORKERS ?= 1
ui: install
	@store="$$($(PY) -c 'from runner.tracking.store import default_tracking_uri as u; print(u())')"; \
	case "$$store" in sqlite:///*) mkdir -p "$$(dirname "$${store#sqlite:///}")";; esac; \
	echo "MLflow UI on $$store: $(UI_URL)"; \
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=$${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false} \
		$(PY) -m mlflow ui --backend-store-uri "$$store" --host $(HOST) --port $(PORT) --workers $(UI_WORKERS)

## server: a team tracking server: mlflow server on PostgreSQL (system package) with proxied
## artifacts, data in SERVER_DIR; HOST=0.0.0.0 to open it to the network
SERVER_DIR ?= mlflow-server
server: install
	$(PY) -m runner.server --folder $(SERVER_DIR) --host $(HOST) --port $(PORT) $(ARGS)

## serve: mlflow models serve MODEL=runs:/<id>/serving (or models:/<name>@champion) on PORT 5001
serve: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" MLFLOW_TRACKING_URI="$$($(PY) -c 'from runner.tracking.store import default_tracking_uri as u; print(u())')" \
		$(PY) -m mlflow models serve -m "$(MODEL)" --env-manager local --host $(HOST) --port $(or $(SERVE_PORT),5001)

## report: compare runs into experiments/ (ARGS="--sweep latest", "--experiment NAME", ...)
report: install
	$(PY) -m runner.report $(ARGS)

## bench: runner vs the tutorials' way, side by side (ARGS="pipeline", "--quick", ...)
bench: install
	$(PY) bench/run.py $(ARGS)

## gpu-kit: the wheels a GPU machine without network lacks (Keras, Hydra, MLflow's client; for
## its Python, GPU_KIT_PYTHON) into .whl/, for bench/gpu.sh there (README, "On a GPU machine")
GPU_KIT_PYTHON ?= 3.12
gpu-kit:
	$(PYTHON) bench/gpu_kit.py --python-version $(GPU_KIT_PYTHON)

clean:
	rm -rf outputs .pytest_cache .ruff_cache
