# Entry points on a new machine: `make demo`, `make test` (all tests), `make test-fast` (without the slow ones).
#
# torch is installed first, on purpose as the CPU build, so that the package's plain `torch` requirement is then
# already met and pip never picks a build by itself (on Linux, PyPI's torch is the CUDA build: about 29 NVIDIA
# packages and several GB). The requirement is TORCH (default torch==2.13.0+cpu, the CPU wheel's version; on
# macOS torch==2.13.0, whose PyPI wheel has no CUDA). pip looks for it first where it is configured to look
# (a local wheel directory or a mirror that holds the CPU wheel: then nothing else is asked) and, when that
# finds none, as on a plain PyPI set-up, in TORCH_INDEX (default PyTorch's CPU index). Other builds, e.g.:
#   make venv TORCH=torch==2.13.0                 # PyPI's default build (CUDA on Linux)
#   make venv TORCH=torch==2.13.0+cu128 TORCH_INDEX=https://download.pytorch.org/whl/cu128
PYTHON      ?= python3
VENV        ?= .venv
BIN         := $(VENV)/bin
ifeq ($(shell uname -s),Darwin)
TORCH       ?= torch==2.13.0
else
TORCH       ?= torch==2.13.0+cpu
endif
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
PIP_INSTALL := $(BIN)/pip --disable-pip-version-check install --progress-bar off

.PHONY: venv demo lint test test-fast bench docs clean

$(BIN)/losstune: pyproject.toml
	@echo "[1/4] creating $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	@echo "[2/4] upgrading pip"
	$(PIP_INSTALL) --quiet --upgrade pip
	@echo "[3/4] installing $(TORCH) (from pip's configured sources, else $(TORCH_INDEX)); a few hundred MB"
	$(PIP_INSTALL) "$(TORCH)" || $(PIP_INSTALL) "$(TORCH)" --index-url "$(TORCH_INDEX)"
	@echo "[4/4] installing losstune and its dependencies (optuna, mlflow, scikit-learn, ...)"
	$(PIP_INSTALL) -e ".[dev,postgres]"
	touch $@
	@echo "ready: $(BIN)/losstune, $(BIN)/mlflow"

venv: $(BIN)/losstune

demo: venv
	$(BIN)/losstune search studies/demo.yaml

# formatting, lint rules and types, as configured in pyproject.toml ([tool.ruff], [tool.mypy]): ruff on the code
# and the tests, mypy on the code (the tests are not typed)
LINTED ?= objectives search tests
TYPED  ?= objectives search
lint: venv
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/mypy $(TYPED)

# two test processes: much of the suite waits on subprocesses, SQLite and sleeps, so two overlap well even on
# two cores (every test uses its own directory, database and port; torch uses one thread per process there)
TEST_WORKERS ?= 2

test: venv
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

# the tests marked slow (end-to-end searches, the README's commands, the browser) are left out
test-fast: venv
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) -m "not slow"

# the documentation site (docs/, mkdocs.yml) into site/; --strict: a broken link or a missing page fails. The
# study-file reference page is generated from the pydantic models by docs/_hooks/study_reference.py.
docs: venv
	$(BIN)/mkdocs build --strict

bench: venv
	$(BIN)/python tests/benchmarks/bench_evaluate.py

clean:
	rm -rf $(VENV) studies/*.db studies/*.oof studies/mlruns studies/mlartifacts site
