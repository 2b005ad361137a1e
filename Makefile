# Project housekeeping: install, test, lint, bench, clean.
# The dataset pipelines live in isles.make, wmh.make and acdc.make.
.PHONY: install test lint format bench clean distclean

.DEFAULT_GOAL := test
# The interpreter (PY: .venv/bin/python, or CC=/path/to/python) and the .venv rule.
include common.make

install: $(PY_TEST_DEPS)

lint: $(PY_TEST_DEPS)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(PY_TEST_DEPS)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

test: lint
	$(PY) -m pytest -q

bench: $(PY_TEST_DEPS)
	$(PY) benchmarks/run.py

clean:
	rm -rf .pytest_cache .ruff_cache benchmarks/*_tmp
	find . -path ./.venv -prune -o -name __pycache__ -type d -print0 | xargs -0 rm -rf

distclean: clean
	rm -rf $(VENV)
