"""Folders written whole, and only in place of the same tool's output (atomic.staged_folder).

The rules every folder-writing tool relies on, checked on plain folders: what is replaced, what
is refused and left untouched, what is left after a failure, and a second writer locked out.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from boundary_loss.io.atomic import (
    MARKER,
    STAGING,
    FolderError,
    check_replaceable,
    mark_folder,
    staged_folder,
)

ROOT = Path(__file__).resolve().parent.parent


def files(folder: Path) -> dict[str, str]:
    """Every file under `folder`, relative path -> text."""
    return {
        p.relative_to(folder).as_posix(): p.read_text() for p in folder.rglob("*") if p.is_file()
    }


def write(dest: Path, tool: str = "tool", text: str = "new", **kwargs) -> None:
    with staged_folder(dest, tool, **kwargs) as build:
        (build / "out.txt").write_text(text)


def test_a_new_folder_is_marked_and_nothing_else_is_left(tmp_path):
    write(tmp_path / "out")
    assert files(tmp_path / "out") == {
        MARKER: json.dumps({"tool": "tool"}) + "\n",
        "out.txt": "new",
    }
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_its_own_earlier_output_and_an_empty_folder_are_replaced(tmp_path):
    dest = tmp_path / "out"
    write(dest, text="first")
    (dest / "stale.txt").write_text("from the earlier run")
    write(dest, text="second")
    assert files(dest) == {MARKER: json.dumps({"tool": "tool"}) + "\n", "out.txt": "second"}
    empty = tmp_path / "empty"
    empty.mkdir()
    write(empty)
    assert (empty / "out.txt").read_text() == "new"


def test_a_legacy_record_marks_an_earlier_output(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "split.json").write_text("{}")  # written before the marker existed
    write(dest, legacy=("split.json",))
    assert (dest / "out.txt").read_text() == "new" and not (dest / "split.json").exists()


@pytest.mark.parametrize("kind", ["users", "other tool", "legacy of another tool"])
def test_a_folder_the_tool_did_not_write_is_refused_untouched(tmp_path, kind):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "thesis.txt").write_text("mine")
    if kind == "other tool":
        mark_folder(dest, "other.py")
    if kind == "legacy of another tool":
        (dest / "split.json").write_text("{}")  # a slicer's record, not unpack.py's
    before = files(dest)
    with pytest.raises(FolderError, match=r"--dest .*out: a non-empty folder that tool did not"):
        write(dest, legacy=(".unpacked.json",) if kind.startswith("legacy") else ())
    assert files(dest) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("kind", ["file", "link"])
def test_a_file_or_a_link_is_refused(tmp_path, kind):
    dest = tmp_path / "out"
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep.txt").write_text("keep")
    if kind == "file":
        dest.write_text("x")
    else:
        dest.symlink_to(target)
    with pytest.raises(FolderError, match="exists and is not a folder"):
        write(dest)
    assert files(target) == {"keep.txt": "keep"}


def test_siblings_are_never_touched(tmp_path):
    """DEST_old, DEST_replaced and the like belong to the user: not read, not removed."""
    dest = tmp_path / "out"
    write(dest, text="first")
    for name in ("out_old", "out_replaced", "out.replaced"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "mine.txt").write_text(name)
    write(dest, text="second")
    for name in ("out_old", "out_replaced", "out.replaced"):
        assert files(tmp_path / name) == {"mine.txt": name}
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "out",
        "out.replaced",
        "out_old",
        "out_replaced",
    ]


def test_a_users_tmp_folder_is_refused_and_an_interrupted_one_reused(tmp_path):
    dest, stage = tmp_path / "out", tmp_path / "out_tmp"
    stage.mkdir()
    with pytest.raises(FolderError, match=r"out_tmp is a folder without .*not removed"):
        write(dest)  # even empty: not the tool's to remove
    (stage / "draft.txt").write_text("draft")
    with pytest.raises(FolderError, match=r"out_tmp is a folder without \.staging\.json naming"):
        write(dest)
    assert files(stage) == {"draft.txt": "draft"} and not dest.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out_tmp"]  # no hidden work folder
    staging = json.dumps({"tool": "tool", "dest": "other"})  # another DEST's work folder
    (stage / STAGING).write_text(staging)
    with pytest.raises(FolderError, match="not removed"):
        write(dest)
    (stage / STAGING).write_text(json.dumps({"tool": "tool", "dest": "out"}))  # interrupted
    write(dest)
    assert not stage.exists() and (dest / "out.txt").read_text() == "new"
    stage.write_text("a file")
    with pytest.raises(FolderError, match="exists and is not a folder of tool"):
        write(dest)
    assert stage.read_text() == "a file"


def test_a_finished_output_named_like_a_tmp_folder_is_not_taken_for_one(tmp_path):
    """`--dest_dir data/ISLES_tmp`, as the original's commands write it: that finished output
    is marked as the slicer's output, not as its work folder, and writing ISLES leaves it."""
    write(tmp_path / "out_tmp", text="finished")
    before = files(tmp_path / "out_tmp")
    with pytest.raises(FolderError, match="out_tmp is a folder without .staging.json"):
        write(tmp_path / "out")
    assert files(tmp_path / "out_tmp") == before


def test_a_failure_leaves_the_earlier_output_and_removes_only_its_tmp(tmp_path):
    dest = tmp_path / "out"
    write(dest, text="first")
    with pytest.raises(KeyboardInterrupt), staged_folder(dest, "tool") as build:
        (build / "out.txt").write_text("half")
        raise KeyboardInterrupt
    assert (dest / "out.txt").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_folder_put_in_dest_meanwhile_is_not_replaced(tmp_path):
    dest = tmp_path / "out"
    with pytest.raises(FolderError, match="did not write"), staged_folder(dest, "tool") as build:
        (build / "out.txt").write_text("new")
        dest.mkdir()
        (dest / "mine.txt").write_text("arrived while the tool worked")
    assert files(dest) == {"mine.txt": "arrived while the tool worked"}
    assert not (tmp_path / "out_tmp").exists()


HOLDER = """
import sys, time
from pathlib import Path
from boundary_loss.io.atomic import staged_folder
dest = Path(sys.argv[1])
with staged_folder(dest, "tool") as build:
    (build / "out.txt").write_text("first writer")
    (dest.parent / "ready").write_text("")
    time.sleep(float(sys.argv[2]))
"""


def test_a_second_writer_stops_while_the_first_works(tmp_path):
    dest = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(dest), "3"], cwd=ROOT, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "ready").exists():
            assert holder.poll() is None, holder.communicate()
            assert time.monotonic() < deadline, "the first writer did not start"
            time.sleep(0.01)
        with pytest.raises(FolderError, match=r"--dest .*out: another process is writing it"):
            write(dest, text="second writer")
        assert holder.wait(timeout=60) == 0, holder.communicate()
    finally:
        if holder.poll() is None:
            holder.kill()
    assert (dest / "out.txt").read_text() == "first writer"
    write(dest, text="second writer")  # free again once the first is done
    assert (dest / "out.txt").read_text() == "second writer"


def test_check_replaceable_says_which_records_were_looked_for(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "x").write_text("x")
    with pytest.raises(FolderError) as raised:
        check_replaceable(dest, "unpack.py", "--dest", (".unpacked.json",))
    assert str(raised.value) == (
        f"--dest {dest}: a non-empty folder that unpack.py did not write (no {MARKER} naming it, "
        "nor .unpacked.json); it is not replaced: move it away or choose another --dest"
    )
