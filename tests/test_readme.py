"""The README's Python example runs as written (docs that drift are worse than none)."""

from __future__ import annotations

import fnmatch
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md has no python example"
    return blocks


def run_block(block: str) -> dict:
    namespace: dict = {}
    exec(compile(block, str(README), "exec"), namespace)
    return namespace


def test_readme_torch_examples_run():
    """Every torch example runs as written, and ends where it says."""
    torch_blocks = [b for b in python_blocks() if "import keras" not in b]
    assert len(torch_blocks) == 3
    label_input, loop, precomputed = (run_block(b) for b in torch_blocks)
    assert label_input["loss"].requires_grad and label_input["logits"].grad is not None
    criterion = loop["criterion"]
    assert criterion.epoch == 3 and abs(criterion.alpha - 0.04) < 1e-12
    assert loop["checkpoint"]["loss"] == {"weights": criterion.weights, "epoch": 3}
    # The precomputed-map example ends with a backward pass through both losses.
    assert precomputed["loss"].requires_grad
    assert precomputed["dist"].shape == (1, 2, 64, 64)


def test_readme_keras_example_trains_with_the_schedule():
    """The Keras example, in a process of its own (Keras picks its backend at import)."""
    if importlib.util.find_spec("keras") is None:
        pytest.skip("keras not installed (test extras, Python >= 3.11)")
    (block,) = [b for b in python_blocks() if "import keras" in b]
    expected = "[0.01, 0.02, 0.03]"
    check = f"{block}\nimport math\nfound = history.history['alpha']\n"
    check += f"assert all(map(math.isclose, found, {expected})), found\n"
    run = subprocess.run(
        [sys.executable, "-c", check],
        cwd=README.parent,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "KERAS_BACKEND": "torch"},
    )
    assert run.returncode == 0, run.stderr[-3000:]


def test_readme_two_commands_are_valid_make_invocations():
    """The README gives both commands, and Make accepts them as written (a dry run: every
    target and variable they use exists)."""
    text = README.read_text()
    for command in ("make test", "make -f isles.make DATA=synthetic"):
        on_a_line = re.search(rf"^{re.escape(command)}(\s+#.*)?$", text, flags=re.M)
        assert on_a_line, f"the README does not give `{command}` on a line of its own"
        dry = subprocess.run(
            [*shlex.split(command), "-n", f"CC={sys.executable}"],
            cwd=README.parent,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert dry.returncode == 0, dry.stderr
        assert "python" in dry.stdout  # it would run the project's scripts


def test_readme_layout_names_every_module_and_only_existing_ones():
    """The module map of the README's Layout section matches the files: every Python module and
    makefile (top level, preprocess/, benchmarks/) is named there, and every name there exists
    (globs such as `slice_*.py` allowed)."""
    text = README.read_text()
    layout = text[text.index("## Layout") :]
    names = {
        token.rstrip(",").split("/")[-1]
        for token in re.findall(r"[\w*./-]+\.(?:py|make)\b", layout)
    }
    root = README.parent
    files = [*root.glob("*.py"), *root.glob("*.make")]
    files += [*(root / "preprocess").glob("*.py"), *(root / "benchmarks").glob("*.py")]
    basenames = {f.name for f in files if f.name != "__init__.py"}
    for name in names:
        assert any(fnmatch.fnmatch(b, name) for b in basenames), f"{name}: no such module"
    for base in basenames:
        assert any(fnmatch.fnmatch(base, n) for n in names), f"{base} missing from the Layout"


# The README's table of make variables states each default as `real / synthetic`, with
# per-dataset exceptions in brackets: `100 / 20 (ACDC 100 / 12)`. Each is checked against what
# the makefiles really set, so that the two cannot drift apart.
DATASET_MAKEFILES = {"ISLES": "isles.make", "WMH": "wmh.make", "ACDC": "acdc.make"}
ROOT = README.parent


def stated_defaults(variable: str) -> dict[tuple[str, str], str]:
    """(dataset, "real" or "synthetic") -> the README's default of a make variable."""
    row = re.search(rf"^\| `{variable}`[^|]* \| ([^|]+) \|", README.read_text(), flags=re.M)
    assert row, f"README.md: no row for {variable} in the table of make variables"
    cell = row.group(1).split("),")[0].strip()  # RETAIN's cell goes on with SEED and N_AUGMENT
    found = re.fullmatch(r"(\S+) / (\S+)(?: \((.*?)\)?)?", cell.strip())
    assert found, f"README.md: {variable}'s default {cell!r} is not `real / synthetic (...)`"
    base = {"real": found.group(1), "synthetic": found.group(2)}
    stated = {(name, kind): value for name in DATASET_MAKEFILES for kind, value in base.items()}
    for part in filter(None, (found.group(3) or "").rstrip(")").split(", ")):
        name, real, _, synthetic = part.split()
        stated[(name, "real")], stated[(name, "synthetic")] = real, synthetic
    return stated


def make_value(makefile: str, variable: str, synthetic: bool) -> str:
    """The value a dataset makefile gives a variable, as Make expands it."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    data = ["DATA=synthetic"] if synthetic else []
    run = subprocess.run(
        [
            "make",
            "-s",
            "-f",
            makefile,
            *data,
            f"CC={sys.executable}",
            "--eval",
            f"print-value: ; @echo $({variable})",
            "print-value",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU Make")
@pytest.mark.parametrize("variable", ["EPC", "BS", "LR", "RETAIN"])
def test_readme_defaults_are_the_makefiles(variable):
    for (name, kind), value in stated_defaults(variable).items():
        found = make_value(DATASET_MAKEFILES[name], variable, kind == "synthetic")
        assert found == value, f"README says {variable}={value} for {name} ({kind}), make {found}"
