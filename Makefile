# `make demo` and `make test` each create .venv when missing and install everything they need.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# torch/torchvision are pinned and installed first, from this machine's disk (see README).
TORCH := torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: demo test lint types pytest install clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,export,weights,serve]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m defectkit.demo

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

types: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	HF_HUB_OFFLINE=1 MPLBACKEND=Agg $(BIN)/pytest

test: lint types pytest

clean:
	rm -rf $(VENV) build dist .mypy_cache .pytest_cache .ruff_cache
