"""keras_loss.py under the torch and JAX backends of Keras 3, each in a process of its own.

Keras reads KERAS_BACKEND once, at import, so tests/keras_backend_checks.py is run by pytest once
per backend. Keras and JAX are test extras that need Python 3.11 or newer (requirements-test.txt);
a backend that is not installed is skipped with the reason. TensorFlow is not installed by the
test extras (its wheels are several hundred MB): `make test-keras-tf` runs the same checks under
it.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHECKS = ROOT / "tests" / "keras_backend_checks.py"
NEEDS = {"torch": ("keras", "torch"), "jax": ("keras", "jax")}


@pytest.mark.parametrize("backend", sorted(NEEDS))
def test_keras_losses_equal_the_torch_losses(backend: str) -> None:
    missing = [name for name in NEEDS[backend] if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (test extras, Python >= 3.11)")
    env = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu"}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(CHECKS)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, f"{backend} backend:\n{run.stdout[-4000:]}\n{run.stderr[-2000:]}"
    assert " passed" in run.stdout and "skipped" not in run.stdout, run.stdout[-500:]
