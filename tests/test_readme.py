"""The README's Python example runs as written (docs that drift are worse than none)."""

from __future__ import annotations

import fnmatch
import re
import shlex
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md has no python example"
    for block in blocks:
        namespace: dict = {}
        exec(compile(block, str(README), "exec"), namespace)
    # The example ends with a backward pass through both losses.
    assert namespace["loss"].requires_grad
    assert namespace["dist"].shape == (1, 2, 64, 64)


def test_readme_two_commands_are_valid_make_invocations():
    """The README gives both commands, and Make accepts them as written (a dry run: every
    target and variable they use exists)."""
    text = README.read_text()
    for command in ("make test", "make -f isles.make DATA=synthetic"):
        on_a_line = re.search(rf"^{re.escape(command)}(\s+#.*)?$", text, flags=re.M)
        assert on_a_line, f"the README does not give `{command}` on a line of its own"
        dry = subprocess.run(
            [*shlex.split(command), "-n", f"CC={sys.executable}"],
            cwd=README.parent, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
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
