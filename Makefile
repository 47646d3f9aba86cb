# dreamrl: `make demo` trains and evaluates a small agent; `make test` runs the suite.
# Both set everything up from nothing: a virtualenv in .venv with the packages.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup debs test demo bench-learning clean

setup: $(STAMP)

# Debian's headless OpenGL for MuJoCo (DeepMind Control renders through OSMesa or EGL);
# chromium (large, accepted) opens the HTML report headless in its test. jemalloc: the
# C allocator the dreamrl command preloads by default (dreamrl/run/allocator.py says why).
DEBS := libosmesa6 libegl1 libgl1 libjemalloc2 chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
debs:
	@if command -v apt-get >/dev/null; then \
	  dpkg -s $(DEBS) >/dev/null 2>&1 || $(SUDO) apt-get install -y -q $(DEBS) >/dev/null \
	  || ($(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q $(DEBS) >/dev/null); \
	else echo "warning: not a Debian system; install OSMesa or EGL for DeepMind Control rendering, and jemalloc"; fi

# torch is installed first and pinned: on the project's machines `pip install
# torch==2.13.0` takes a CPU wheel from local disk, where an unpinned resolve would
# pull a multi-GB CUDA build.
$(STAMP): pyproject.toml | debs
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev,suites]'
	touch $(STAMP)

# Two test processes (pytest-xdist), a file each at a time: every test runs one torch
# thread (tests/conftest.py), so two processes keep both cores of a 2-core machine busy.
test: setup
	$(BIN)/ruff check dreamrl tests benchmarks
	$(BIN)/ruff format --check dreamrl tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# Train the demo preset on CartPole-v1, evaluate it on 20 fresh episodes, imagine one
# counterfactual (its own actor against the actions taken), and write the report.
demo: setup
	$(BIN)/dreamrl train --env CartPole-v1 --logdir runs/demo --preset demo
	$(BIN)/dreamrl eval --logdir runs/demo --episodes 20
	$(BIN)/dreamrl whatif --logdir runs/demo --policy
	$(BIN)/dreamrl report --logdir runs/demo

# Learning checks of the README (tens of minutes to hours on a CPU).
bench-learning: setup
	$(BIN)/python benchmarks/learning.py all

clean:
	rm -rf $(VENV) runs
