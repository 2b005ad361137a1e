"""The package's shape: what it installs, how its modules import each other, what the root keeps.

- A wheel built from the clean checkout installs `boundary_loss` and nothing else at the top
  level, and gives the public names from any directory (`test_wheel_installs_the_package_alone`).
- No module manipulates `sys.path` or defines a lazy module `__getattr__`.
- No import cycle between modules, counting imports inside functions and under TYPE_CHECKING,
  and the sub-packages import one way: io -> maps -> losses -> metrics -> networks -> data ->
  preprocessing -> runfolder -> training -> inference -> report (each imports only those before
  it), with the root entry points on top.
- The root holds the original's entry points only, each a thin file over the package.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.cli import ROOT

PACKAGE = ROOT / "boundary_loss"
# Bottom to top: a module may import from its own sub-package and those before it.
LAYERS = (
    "io",
    "maps",
    "losses",
    "metrics",
    "networks",
    "data",
    "preprocessing",
    "runfolder",
    "training",
    "inference",
    "report",
)
# The original repository's entry points, kept at the root as thin files over the package.
ROOT_ENTRY_POINTS = {
    "main.py",
    "losses.py",
    "utils.py",
    "dataloader.py",
    "networks.py",
    "plot.py",
    "report.py",
    "keras_loss.py",
}
PUBLIC = (
    "GeneralizedDice",
    "LabelBoundaryLoss",
    "RegionBoundaryLoss",
    "SurfaceLoss",
    "one_hot2dist",
)


def tracked_python_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return [ROOT / name for name in listed if (ROOT / name).is_file()]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """Every module of `known` that `path` imports, wherever the import statement is (module
    level, inside a function, under TYPE_CHECKING)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            pytest.fail(f"{path}: relative import (from {'.' * node.level}{node.module} ...)")
    return found & known


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    known = set(modules)
    return {name: imported_modules(path, known) - {name} for name, path in modules.items()}


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_layers_name_every_sub_package() -> None:
    sub_packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert sub_packages | modules == set(LAYERS)


def test_no_import_cycle() -> None:
    graph = import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycle = path[path.index(target) :] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_sub_packages_import_one_way() -> None:
    upward = []
    for module, targets in import_graph().items():
        here = layer(module)
        for target in targets:
            there = layer(target)
            if here is None or there is None or here == there:
                continue
            if LAYERS.index(there) > LAYERS.index(here):
                upward.append(f"{module} -> {target}")
    assert not upward, "imports against the layers:\n" + "\n".join(sorted(upward))


def test_the_package_never_imports_the_root_entry_points() -> None:
    root_modules = {Path(name).stem for name in ROOT_ENTRY_POINTS} | {"preprocess", "tests"}
    for path in package_modules().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in root_modules, f"{path}:{node.lineno}: {name}"


def test_no_path_manipulation_and_no_lazy_module_getattr() -> None:
    for path in tracked_python_files():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "path":
                value = node.value
                assert not (isinstance(value, ast.Name) and value.id == "sys"), (
                    f"{path}:{node.lineno}: sys.path"
                )
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                assert node.name not in ("__getattr__", "__dir__"), (
                    f"{path}:{node.lineno}: module-level {node.name}"
                )


def test_root_keeps_only_the_original_entry_points() -> None:
    at_root = {p.name for p in ROOT.glob("*.py")}
    assert at_root == ROOT_ENTRY_POINTS
    for name in sorted(ROOT_ENTRY_POINTS) + [
        f"preprocess/{p.name}" for p in (ROOT / "preprocess").glob("*.py")
    ]:
        tree = ast.parse((ROOT / name).read_text())
        code = [
            node
            for node in tree.body
            if not isinstance(node, (ast.Import, ast.ImportFrom, ast.Expr, ast.Assign, ast.If))
        ]
        assert not code, f"{name}: defines {[type(n).__name__ for n in code]}; keep it thin"
        for node in tree.body:
            if isinstance(node, ast.ImportFrom):
                assert node.module.startswith("boundary_loss"), f"{name}: from {node.module}"


def test_root_entry_points_give_the_original_names() -> None:
    script = (
        "from losses import GeneralizedDice, SurfaceLoss\n"
        "from utils import class2one_hot, dice_coef, one_hot2dist, simplex\n"
        "from networks import ENet, get_network\n"
        "from dataloader import SliceDataset, gt_transform\n"
        "import boundary_loss\n"
        "assert SurfaceLoss is boundary_loss.SurfaceLoss\n"
        "assert one_hot2dist is boundary_loss.one_hot2dist\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from the tracked files only (a clean checkout), outside the repository."""
    checkout = tmp_path_factory.mktemp("checkout")
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = ROOT / os.fsdecode(name)
        if source.is_file():
            target = checkout / os.fsdecode(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    dist = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", dist, checkout],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (built,) = dist.glob("boundary_loss-*.whl")
    return built


def test_wheel_holds_the_package_alone(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        requires = [
            line.split(":", 1)[1].strip()
            for line in archive.read(metadata).decode().splitlines()
            if line.startswith("Requires-Dist:")
        ]
    assert {t for t in tops if not t.endswith(".dist-info")} == {"boundary_loss"}
    assert any(r.startswith("torch") for r in requires)
    assert any(r.startswith("keras") and "extra ==" in r for r in requires)


@pytest.mark.slow
def test_wheel_installs_the_package_alone(wheel: Path, tmp_path: Path) -> None:
    """A fresh virtual environment with the wheel: the public names import from a directory
    outside the repository, from the installed copy, and no other top-level module came with
    it. The dependencies (torch, ...) are this interpreter's, seen through a .pth file, so
    that the test does not download or copy torch; their versions (requirements.txt's pins)
    must satisfy the wheel's ranges."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=300)
    python = venv / "bin" / "python"
    proc = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--no-deps", wheel],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(site) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = (
        f"from boundary_loss import {', '.join(PUBLIC)}\n"
        "import importlib.util, boundary_loss\n"
        f"assert boundary_loss.__file__.startswith({site!r}), boundary_loss.__file__\n"
        "for name in ('utils', 'losses', 'main', 'config', 'metrics', 'preprocess'):\n"
        "    assert importlib.util.find_spec(name) is None, name\n"
        "import torch\n"
        "loss = LabelBoundaryLoss(idc=[1])\n"
        "logits = torch.randn(2, 2, 8, 8)\n"
        "labels = torch.zeros(2, 8, 8, dtype=torch.long)\n"
        "labels[:, 2:5, 2:5] = 1\n"
        "print(float(loss(logits, labels)))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(
        [python, "-c", script], cwd=elsewhere, capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    float(proc.stdout)  # a number
    satisfied = (
        "from importlib.metadata import requires, version\n"
        "from pip._vendor.packaging.requirements import Requirement\n"
        "for line in requires('boundary-loss'):\n"
        "    req = Requirement(line)\n"
        "    if req.marker is None:\n"
        "        assert req.specifier.contains(version(req.name), prereleases=True), line\n"
    )
    check = subprocess.run([python, "-c", satisfied], capture_output=True, text=True, env=env)
    assert check.returncode == 0, check.stderr
    for command in ("boundary_loss_train", "boundary_loss_predict"):
        helped = subprocess.run(
            [venv / "bin" / command, "--help"], cwd=elsewhere, capture_output=True, text=True
        )
        assert helped.returncode == 0 and "usage:" in helped.stdout, helped.stderr
