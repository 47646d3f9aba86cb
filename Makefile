# dreamrl: `make demo` trains and evaluates a small agent; `make test` runs the suite.
# Both set everything up from nothing: a virtualenv in .venv with the packages.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test demo bench-learning clean

setup: $(STAMP)

# torch is installed first and pinned: on the project's machines `pip install
# torch==2.13.0` takes a CPU wheel from local disk, where an unpinned resolve would
# pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

test: setup
	$(BIN)/ruff check dreamrl tests benchmarks
	$(BIN)/ruff format --check dreamrl tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

demo: setup
	$(BIN)/dreamrl train --env CartPole-v1 --logdir runs/demo --preset demo
	$(BIN)/dreamrl eval --logdir runs/demo --episodes 20

# Learning checks of the README (tens of minutes to hours on a CPU).
bench-learning: setup
	$(BIN)/python benchmarks/learning.py all

clean:
	rm -rf $(VENV) runs
