"""The README's Python example runs as written (docs that drift are worse than none)."""

from __future__ import annotations

import re
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


def test_readme_names_the_two_commands():
    text = README.read_text()
    assert "make test" in text
    assert "make -f isles.make DATA=synthetic" in text
