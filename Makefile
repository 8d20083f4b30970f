# Every command in the README goes through these targets; each creates .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# On the project's machines a CPU wheel of torch 2.13.0 lies on disk and `pip install torch==2.13.0`
# takes it; elsewhere override, e.g. `make test TORCH_SPEC=torch` (or an index URL of your choice).
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?= -n 2

.PHONY: install test bench clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/.installed

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/python benchmarks/quantizer.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
