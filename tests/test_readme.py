"""The README and docs/ say what the code does (docs that drift are worse than none).

- The README's Python examples run as written; so do the examples of docs/ (the Keras one in a
  process of its own).
- The README's two commands are valid Make invocations, and the README stays a front door.
- Every default of a make variable given in a table of the README or of docs/ is what the
  makefiles set, for the real data and for the stand-in.
- docs/layout.md names every module of the package and every root entry point, and only files
  that exist, and states the direction of imports that tests/test_package.py checks.
- Every file, module or attribute the docs name in code, and every link between them, exists.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path, PurePosixPath

import pytest

from tests.test_package import LAYERS

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
LAYOUT = ROOT / "docs" / "layout.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", flags=re.M | re.S)


def python_blocks(path: Path) -> list[str]:
    return [body for lang, body in FENCE.findall(path.read_text()) if lang == "python"]


def run_block(block: str, path: Path) -> dict:
    namespace: dict = {}
    exec(compile(block, str(path), "exec"), namespace)
    return namespace


def test_readme_torch_examples_run():
    """Every torch example runs as written, and ends where it says."""
    torch_blocks = [b for b in python_blocks(README) if "import keras" not in b]
    assert len(torch_blocks) == 3
    label_input, loop, precomputed = (run_block(b, README) for b in torch_blocks)
    assert label_input["loss"].requires_grad and label_input["logits"].grad is not None
    criterion = loop["criterion"]
    assert criterion.epoch == 3 and abs(criterion.alpha - 0.04) < 1e-12
    assert loop["checkpoint"]["loss"] == {"weights": criterion.weights, "epoch": 3}
    # The precomputed-map example ends with a backward pass through both losses.
    assert precomputed["loss"].requires_grad
    assert precomputed["dist"].shape == (1, 2, 64, 64)


def test_docs_torch_examples_run():
    """The Python examples of docs/ other than the Keras one run as written."""
    for doc in DOCS:
        for block in python_blocks(doc):
            if "import keras" not in block:
                run_block(block, doc)


def test_keras_example_trains_with_the_schedule():
    """The Keras example (docs/loss-api.md), in a process of its own (Keras picks its backend at
    import)."""
    blocks = [(b, d) for d in (README, *DOCS) for b in python_blocks(d) if "import keras" in b]
    assert [d.name for _, d in blocks] == ["loss-api.md"], "one Keras example, in loss-api.md"
    if importlib.util.find_spec("keras") is None:
        pytest.skip("keras not installed (test extras, Python >= 3.11)")
    ((block, _),) = blocks
    expected = "[0.01, 0.02, 0.03]"
    check = f"{block}\nimport math\nfound = history.history['alpha']\n"
    check += f"assert all(map(math.isclose, found, {expected})), found\n"
    run = subprocess.run(
        [sys.executable, "-c", check],
        cwd=ROOT,
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
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert dry.returncode == 0, dry.stderr
        assert "python" in dry.stdout  # it would run the project's scripts


def test_readme_stays_a_front_door():
    """What the README grows beyond its front door belongs in docs/, linked from it."""
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines: move the details into docs/"
    for doc in DOCS:
        assert f"(docs/{doc.name}" in README.read_text(), f"README.md does not link docs/{doc.name}"


# ------------------------------------------------------------------------- docs/layout.md


def named_files(text: str) -> set[str]:
    """The .py and .make paths named in code spans (`boundary_loss/maps/distance.py`), relative to
    the repository root; globs such as `boundary_loss/*/__init__.py` allowed."""
    spans = re.findall(r"`([^`\n]+)`", FENCE.sub("", text))
    return {w for s in spans for w in s.split() if re.fullmatch(r"[\w*./-]+\.(?:py|make)", w)}


def matches(pattern: str, path: str) -> bool:
    """A glob whose `*` stays within one folder."""
    parts, wanted = PurePosixPath(path).parts, PurePosixPath(pattern).parts
    return len(parts) == len(wanted) and all(map(fnmatch.fnmatchcase, parts, wanted))


def test_layout_names_every_module_and_only_existing_ones():
    """docs/layout.md names every Python file of the package, every root entry point (the
    top-level scripts and preprocess/), every makefile and benchmark, and names nothing that does
    not exist."""
    names = named_files(LAYOUT.read_text())
    files = [*ROOT.glob("boundary_loss/**/*.py"), *ROOT.glob("*.py"), *ROOT.glob("*.make")]
    files += [*ROOT.glob("preprocess/*.py"), *ROOT.glob("benchmarks/*.py")]
    relative = {f.relative_to(ROOT).as_posix() for f in files} - {"benchmarks/__init__.py"}
    for name in sorted(names):
        assert list(ROOT.glob(name)), f"docs/layout.md names {name}: no such file"
    for path in sorted(relative):
        assert any(matches(n, path) for n in names), f"{path} missing from docs/layout.md"


def test_layout_states_the_direction_of_imports():
    """The order of sub-packages docs/layout.md gives is the one tests/test_package.py enforces."""
    text = " ".join(LAYOUT.read_text().split())
    chain = re.search(r"\bio(?: -> \w+)+", text)
    assert chain, "docs/layout.md: no `io -> maps -> ...` chain of imports"
    assert tuple(chain.group(0).split(" -> ")) == LAYERS


# ------------------------------------------------------- what the docs name, and their links


def defined_names(source: Path) -> set[str]:
    """The names a module defines or imports at its top level."""
    names = set()
    for node in ast.parse(source.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
            names |= {e.id for t in node.targets if isinstance(t, ast.Tuple) for e in t.elts}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.ImportFrom):
            names |= {alias.asname or alias.name for alias in node.names}
    return names


def resolves(dotted: str) -> bool:
    """`boundary_loss.maps.distance` (a module) or `boundary_loss.maps.distance.distance_maps` (a
    name that module defines)."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:i])
        module = base.with_suffix(".py")
        source = module if module.is_file() else base / "__init__.py"
        if source.is_file():
            rest = parts[i:]
            return not rest or (len(rest) == 1 and rest[0] in defined_names(source))
    return False


def test_docs_name_only_existing_files_and_modules():
    """A file path in a code span, a script a command runs (`python preprocess/unpack.py`,
    `python -m boundary_loss.report.pictures`) and every `boundary_loss.<module>[.<name>]` the
    README and docs/ name exist: a module that moves cannot leave its old name behind."""
    for doc in (README, *DOCS):
        text = doc.read_text()
        prose = FENCE.sub("", text)
        commands = "\n".join(body for lang, body in FENCE.findall(text) if lang == "bash")
        for span in re.findall(r"`([^`\n]+)`", prose):
            if re.fullmatch(r"[\w*./-]+\.(?:py|make)", span):
                assert list(ROOT.glob(span)), f"{doc.name} names {span}: no such file"
        for script in re.findall(r"\bpython (?:-O )?([\w./-]+\.py)\b", commands + prose):
            assert (ROOT / script).is_file(), f"{doc.name} runs {script}: no such file"
        for module in re.findall(r"\bboundary_loss(?:\.\w+)+", text):
            assert resolves(module), f"{doc.name} names {module}: no such module or name"


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_docs_links_lead_somewhere():
    """Every relative link of the README and docs/ names an existing file, and its anchor a
    heading of that file."""
    for doc in (README, *DOCS):
        for target in re.findall(r"\]\(([^)\s]+)\)", FENCE.sub("", doc.read_text())):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (doc.parent / path).resolve() if path else doc
            assert linked.is_file(), f"{doc.name}: link to {target}, no such file"
            if anchor:
                headings = re.findall(r"^#+ (.*)$", FENCE.sub("", linked.read_text()), flags=re.M)
                assert anchor in map(slug, headings), f"{doc.name}: no heading for {target}"


# ------------------------------------------------------- make variable defaults in the docs

# A table of make variables has a `default` column whose cells read `real / synthetic`, or one
# value for both, then in brackets a dataset's own: `100 / 20 (ACDC 100 / 12)`. `none` and `off`
# stand for an empty value. The table speaks of the makefiles its header names (`dataset.make`),
# else of the paper's three; `dataset.make DIM=3` in a header speaks of its 3D chain.
PAPER = ("isles.make", "wmh.make", "acdc.make")
KEYS = {"ISLES": "isles.make", "WMH": "wmh.make", "ACDC": "acdc.make"}
VALUE = r"`[^`]*`|[^\s/(),`]+"
BASE = rf"(?:{VALUE})(?: / (?:{VALUE}))?"
EXCEPTION = rf"[\w.]+ {BASE}"
CELL = re.compile(rf"({BASE})(?: \(({EXCEPTION}(?:, {EXCEPTION})*)\))?")
# The DATA values of each makefile that must give its real-data or its stand-in defaults:
# DATA=synthetic-full trains the full-size stand-in with the real settings, and dataset.make's
# DATA=synthetic-msd is the same stand-in in the Decathlon's layout.
BRANCHES = {
    **{m: {"real": ("", "synthetic-full"), "synthetic": ("synthetic",)} for m in PAPER},
    "dataset.make": {"real": ("",), "synthetic": ("synthetic", "synthetic-msd")},
    "dataset.make DIM=3": {"real": ("",), "synthetic": ("synthetic", "synthetic-msd")},
}


def markdown_tables(text: str) -> list[list[list[str]]]:
    """Every table: a list of rows, each a list of cells (header first, the rule left out)."""
    tables = []
    for block in re.findall(r"(?:^ *\|.*\n?)+", FENCE.sub("", text), flags=re.M):
        rows = [
            [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            for line in block.strip().splitlines()
        ]
        tables.append([rows[0], *rows[2:]])
    return tables


def value(token: str) -> str:
    token = token.strip("`")
    return "" if token in ("none", "off") else token


def real_and_synthetic(base: str) -> tuple[str, str]:
    values = [value(t) for t in re.findall(VALUE, base)]
    return (values[0], values[-1])


def stated_defaults(doc: Path) -> dict[tuple[str, str, str], str]:
    """(makefile, variable, "real" or "synthetic") -> the default a doc's tables state."""
    stated = {}
    for header, *rows in markdown_tables(doc.read_text()):
        columns = [i for i, title in enumerate(header) if title.lower().startswith("default")]
        if not columns:
            continue
        scope = re.findall(r"\b\w+\.make\b(?: DIM=3)?", " ".join(header)) or list(PAPER)
        for row in rows:
            name = re.fullmatch(r"`([A-Z][A-Z0-9_]*)(?:=[^`]*)?`", row[0])
            assert name, f"{doc.name}: {row[0]!r} is not a make variable (`NAME` or `NAME=...`)"
            cell = CELL.fullmatch(row[columns[0]])
            assert cell, f"{doc.name}: {row[columns[0]]!r} is not `real / synthetic (KEY ...)`"
            own = {}
            for exception in re.findall(EXCEPTION, cell.group(2) or ""):
                key, base = exception.split(" ", 1)
                assert KEYS.get(key, key) in scope, f"{doc.name}: {key} is not a makefile here"
                own[KEYS.get(key, key)] = real_and_synthetic(base)
            for makefile in scope:
                real, synthetic = own.get(makefile, real_and_synthetic(cell.group(1)))
                stated[(makefile, name.group(1), "real")] = real
                stated[(makefile, name.group(1), "synthetic")] = synthetic
    return stated


@pytest.fixture(scope="module")
def makefiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The makefiles alone in an empty folder, without dataset.make's `include $(VARS)` (which
    Make would first remake: checking, and perhaps generating, the dataset). Reading a variable
    there runs nothing of the project."""
    folder = tmp_path_factory.mktemp("makefiles")
    for path in ROOT.glob("*.make"):
        text = path.read_text()
        if path.name == "dataset.make":
            text, found = re.subn(r"^include \$\(VARS\)\n", "", text, flags=re.M)
            assert found == 1, "dataset.make: its `include $(VARS)` line has changed"
        (folder / path.name).write_text(text)
    return folder


@cache
def make_values(folder: Path, makefile: str, data: str, names: tuple[str, ...]) -> dict[str, str]:
    """The values Make gives `names` in a makefile, for a DATA value ("": the real data);
    `makefile` may carry variables after its name (`dataset.make DIM=3`)."""
    makefile, *args = makefile.split()
    drop = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "DATA", "DATASET", "DIM", *names}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    args += [f"DATA={data}"] if data else []
    if makefile == "dataset.make" and not data:
        args.append("DATASET=data/Dataset001_Unread")  # never read: its rules do not run here
    recipe = "".join(f"$(info {name}=$({name}))" for name in names) + "@:"
    target = f"print-values: ; {recipe}"
    run = subprocess.run(
        ["make", "-s", "-f", makefile, *args, "--eval", target, "print-values"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    return dict(line.split("=", 1) for line in run.stdout.splitlines())


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU Make")
@pytest.mark.parametrize("doc", [README, *DOCS], ids=lambda p: p.name)
def test_stated_defaults_are_the_makefiles(doc, makefiles):
    """Every default in a variable table of the README or docs/ is what the makefiles set, for
    the real data and for the stand-in."""
    stated = stated_defaults(doc)
    if doc == README:
        assert {"EPC", "BS", "LR", "RETAIN"} <= {name for _, name, _ in stated}
    wrong = []
    for makefile in sorted({m for m, _, _ in stated}):
        names = tuple(sorted({n for m, n, _ in stated if m == makefile}))
        for kind, datas in BRANCHES[makefile].items():
            for data in datas:
                found = make_values(makefiles, makefile, data, names)
                for name in names:
                    if found[name] != stated[(makefile, name, kind)]:
                        where = f"{makefile} DATA={data}" if data else makefile
                        said = stated[(makefile, name, kind)]
                        wrong.append(f"{name}: {doc.name} says {said!r}, {where} {found[name]!r}")
    assert not wrong, "\n".join(wrong)


def assigned_with_default(makefile: str) -> set[str]:
    """The variables a makefile gives a default a user may override (`VAR ?= value`)."""
    return set(re.findall(r"^(\w+) \?=", (ROOT / makefile).read_text(), flags=re.M))


@pytest.mark.parametrize(
    ("docs", "sources", "in_prose"),
    [
        (("pipeline.md",), ("common.make", "twoclass.make", *PAPER), set()),
        (("own-dataset.md", "3d.md"), ("dataset.make",), {"DATASET", "LINEAGE", "TRAININGS"}),
    ],
)
def test_every_user_variable_has_its_default_in_the_docs(docs, sources, in_prose):
    """Each variable the makefiles let a user override is in the tables of its pages (the few
    whose default is a path or a list are described in the prose of the first)."""
    stated = {name for doc in docs for _, name, _ in stated_defaults(ROOT / "docs" / doc)}
    wanted = set().union(*map(assigned_with_default, sources)) - in_prose
    assert wanted <= stated, f"docs/{docs} give no default for {sorted(wanted - stated)}"
    text = (ROOT / "docs" / docs[0]).read_text()
    for name in in_prose:
        assert f"`{name}`" in text, f"docs/{docs[0]} does not describe {name}"
