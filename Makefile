# Project housekeeping: install, test, lint, bench, clean.
# The dataset pipelines live in isles.make, wmh.make and acdc.make.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
.PHONY: install test lint format bench clean distclean

# Bootstrap interpreter used to create the virtual environment.
PY_BOOT ?= python3
VENV := .venv
# `make CC=/path/to/python ...` uses that interpreter as it is and skips the venv.
# Only a command-line CC counts: a CC=gcc exported by a C toolchain must not be taken for Python.
ifeq ($(origin CC),command line)
PYTHON := $(CC)
STAMP :=
else
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed
endif

install: $(STAMP)

$(VENV)/.installed: requirements.txt requirements-test.txt
	$(PY_BOOT) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -r requirements-test.txt
	touch $@

lint: $(STAMP)
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format: $(STAMP)
	$(PYTHON) -m ruff check --fix .
	$(PYTHON) -m ruff format .

test: lint
	$(PYTHON) -m pytest -q

bench: $(STAMP)
	$(PYTHON) benchmarks/run.py

clean:
	rm -rf .pytest_cache .ruff_cache benchmarks/*_tmp
	find . -path ./.venv -prune -o -name __pycache__ -type d -print0 | xargs -0 rm -rf

distclean: clean
	rm -rf $(VENV)
