# Project housekeeping: install, test, lint, bench, clean.
# The dataset pipelines live in isles.make, wmh.make, acdc.make and dataset.make.
.PHONY: install test test-fast test-keras-tf chromium lint format bench clean distclean

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

# The inner loop: the suite without the tests marked slow (tests/conftest.py), about 2 minutes.
test-fast: lint
	$(PY) -m pytest -q -m "not slow"

# boundary_loss.losses.keras_loss under Keras' TensorFlow backend: the checks make test runs under
# the torch and JAX backends, in a virtual environment of its own (.venv-tf, 3.4 GB with TensorFlow
# and torch).
VENV_TF := .venv-tf
test-keras-tf: $(VENV_TF)/.installed
	KERAS_BACKEND=tensorflow TF_CPP_MIN_LOG_LEVEL=2 $(VENV_TF)/bin/python -m pytest -q \
		-p no:cacheprovider tests/keras_backend_checks.py

$(VENV_TF)/.installed: requirements-tf.txt requirements-test.txt requirements.txt
	$(PY_BOOT) -m venv $(VENV_TF)
	$(VENV_TF)/bin/python -m pip install --quiet -r requirements-tf.txt
	touch $@

# Headless Chromium from Debian's packages, for the test that opens a report in a real browser
# (tests/test_pipeline.py runs it whenever chromium is on the PATH). Needs root.
chromium:
	command -v chromium >/dev/null || { apt-get update && apt-get install -y chromium; }

bench: $(PY_TEST_DEPS)
	$(PY) -m benchmarks.run

clean:
	rm -rf .pytest_cache .ruff_cache benchmarks/*_tmp
	find . -path ./.venv -prune -o -name __pycache__ -type d -print0 | xargs -0 rm -rf

distclean: clean
	rm -rf $(VENV) $(VENV_TF)
