# Two entry points a new machine needs: `make demo` and `make test`.
# torch is installed first, pinned to the CPU wheel, so that the package's plain `torch` requirement
# is already met and pip never downloads the CUDA build.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0

.PHONY: venv demo test bench clean

$(BIN)/losstune: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev,postgres]"
	touch $@

venv: $(BIN)/losstune

demo: venv
	$(BIN)/losstune search studies/demo.yaml

test: venv
	$(BIN)/python -m pytest -q

bench: venv
	$(BIN)/python tests/benchmarks/bench_evaluate.py

clean:
	rm -rf $(VENV) studies/*.db studies/mlruns studies/mlartifacts
