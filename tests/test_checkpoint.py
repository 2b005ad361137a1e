"""--weights and --resume with bad checkpoints, and resuming with a changed configuration.

Each bad input runs main.py as a user would (a subprocess) and must end with one `error:` line
naming the file or flag, and no traceback.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from boundary_loss.networks.registry import get_network
from boundary_loss.training import main
from boundary_loss.training.checkpoint import RESUMABLE
from tests.cli import assert_clean_error, run_script
from tests.sliced_data import make_sliced_dataset
from tests.test_main import argv, replace


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_sliced_dataset(tmp_path_factory.mktemp("data") / "toy", n_train=2, n_val=1)


@pytest.fixture(scope="module")
def finished(dataset, tmp_path_factory) -> Path:
    """A 1-epoch Dimwit run (best.pt, last.pt, args.json), copied by the tests that change it."""
    workdir = tmp_path_factory.mktemp("runs") / "run"
    assert main.main(argv(dataset, workdir, n_epoch=1)) == 0
    return workdir


@pytest.fixture
def run_copy(finished, tmp_path) -> Path:
    return Path(shutil.copytree(finished, tmp_path / "run"))


def train(*args: str):
    return run_script("main.py", *args, timeout=120)


def truncated(source: Path, dest: Path) -> Path:
    data = source.read_bytes()
    dest.write_bytes(data[: len(data) // 2])
    return dest


# ---------------------------------------------------------------------------------------------
# --weights
# ---------------------------------------------------------------------------------------------


def written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def saved(path: Path, obj: object) -> Path:
    torch.save(obj, path)
    return path


def _other_network(path: Path) -> Path:
    return saved(path, get_network("UNet", 2, 2, nG=4).state_dict())


@pytest.mark.parametrize(
    "make_file, needles",
    [
        (lambda d, run: written(d / "empty.pt", b""), ["empty file"]),
        (
            lambda d, run: truncated(run / "best.pt", d / "cut.pt"),
            ["not a readable PyTorch checkpoint", "truncated"],
        ),
        (
            lambda d, run: saved(d / "t.pt", torch.zeros(3)),
            ["a single tensor of shape (3,)", "not network weights"],
        ),
        (lambda d, run: saved(d / "l.pt", [1, 2]), ["a list"]),
        (lambda d, run: _other_network(d / "unet.pt"), ["do not fit Dimwit", "missing"]),
        (lambda d, run: written(d / "text.pt", b"hello\n"), ["not a readable PyTorch checkpoint"]),
    ],
    ids=["empty", "truncated", "tensor", "list", "other-network", "text"],
)
def test_bad_weights_give_one_line_naming_the_file(dataset, finished, tmp_path, make_file, needles):
    path = make_file(tmp_path, finished)
    proc = train(*argv(dataset, tmp_path / "new", "--weights", str(path), n_epoch=1))
    assert_clean_error(proc, "--weights", str(path), *needles)
    assert not (tmp_path / "new" / "last.pt").exists()


def test_weights_of_another_network_by_its_metadata(dataset, finished, tmp_path):
    best = torch.load(finished / "best.pt", weights_only=True)
    best["network"] = "ENet"
    torch.save(best, tmp_path / "enet.pt")
    proc = train(*argv(dataset, tmp_path / "new", "--weights", str(tmp_path / "enet.pt")))
    assert_clean_error(proc, "weights of a ENet network, not of --network Dimwit")


def test_plain_and_ddp_state_dicts_are_accepted(dataset, finished, tmp_path):
    weights = torch.load(finished / "best.pt", weights_only=True)["model"]
    torch.save({f"module.{k}": v for k, v in weights.items()}, tmp_path / "ddp.pt")
    args = argv(dataset, tmp_path / "new", "--weights", str(tmp_path / "ddp.pt"), n_epoch=1)
    assert main.main(args) == 0


# ---------------------------------------------------------------------------------------------
# --resume with a bad last.pt
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "damage, needles",
    [
        (lambda run: (run / "last.pt").write_bytes(b""), ["empty file"]),
        (
            lambda run: truncated(run / "last.pt", run / "last.pt"),
            ["not a readable PyTorch checkpoint"],
        ),
        (
            lambda run: torch.save({"weights": [1.0]}, run / "last.pt"),
            ["not a last.pt of main.py", "model"],
        ),
        (lambda run: torch.save(torch.ones(2), run / "last.pt"), ["a single tensor"]),
        (
            lambda run: shutil.copy(run / "best.pt", run / "last.pt"),
            ["this is a best.pt", "use --weights"],
        ),
    ],
    ids=["empty", "truncated", "foreign-dict", "tensor", "best-in-its-place"],
)
def test_bad_last_pt_gives_one_line_naming_it(dataset, run_copy, damage, needles):
    damage(run_copy)
    before = sorted(p.name for p in run_copy.iterdir())
    proc = train(*argv(dataset, run_copy, "--resume", n_epoch=2))
    assert_clean_error(proc, str(run_copy / "last.pt"), *needles)
    assert sorted(p.name for p in run_copy.iterdir()) == before


def test_resume_after_another_number_of_processes_is_refused(dataset, run_copy):
    state = torch.load(run_copy / "last.pt", weights_only=True)
    torch.save({**state, "processes": 2, "rng": [state["rng"], state["rng"]]}, run_copy / "last.pt")
    proc = train(*argv(dataset, run_copy, "--resume", n_epoch=2))
    assert_clean_error(proc, "trained by 2 process(es)", "NPROC=2")


def test_missing_epoch_array_is_named(dataset, run_copy):
    (run_copy / "val_dice.npy").unlink()
    proc = train(*argv(dataset, run_copy, "--resume", n_epoch=2))
    assert_clean_error(proc, "val_dice.npy", "start the run again without --resume")


# ---------------------------------------------------------------------------------------------
# --resume with a changed configuration
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--losses", "[('GeneralizedDice', {'idc': [0, 1]}, 1), ('SurfaceLoss', {'idc': [1]}, 1)]"),
        ("--l_rate", "0.01"),
        ("--scheduler_params", "{'to_steal': 0.1}"),
        ("--seed", "3"),
        ("--batch_size", "2"),
    ],
)
def test_resume_refuses_a_changed_configuration(dataset, run_copy, flag, value):
    metrics = (run_copy / "metrics.csv").read_text()
    args_json = (run_copy / "args.json").read_text()
    proc = train(*replace(argv(dataset, run_copy, "--resume", n_epoch=2), flag, value))
    assert_clean_error(
        proc, f"--resume: {flag} is", "the run was started with", "another --workdir"
    )
    assert (run_copy / "metrics.csv").read_text() == metrics
    assert (run_copy / "args.json").read_text() == args_json
    assert torch.load(run_copy / "last.pt", weights_only=True)["epoch"] == 0


def test_resume_below_the_epochs_done_is_refused(dataset, finished, tmp_path):
    run = Path(shutil.copytree(finished, tmp_path / "run"))
    state = torch.load(run / "last.pt", weights_only=True)
    state["epoch"] = 3  # as if 4 epochs were done
    torch.save(state, run / "last.pt")
    proc = train(*argv(dataset, run, "--resume", n_epoch=2))
    assert_clean_error(proc, "--n_epoch 2 is below the 4 epochs already done")


def test_resume_with_allowed_changes_records_them(dataset, run_copy):
    extra = ("--resume", "--threads", "1", "--in_memory")
    dataset_with_slash = str(dataset) + "/"  # the original's makefiles write --dataset=data/X/
    args = replace(argv(dataset, run_copy, *extra, n_epoch=2), "--dataset", dataset_with_slash)
    assert main.main(args) == 0
    resumes = json.loads((run_copy / "resumes.json").read_text())
    assert len(resumes) == 1 and resumes[0]["after_epoch"] == 0
    # the copied run folder counts as moved: --workdir changed too
    changed = {"n_epoch", "threads", "in_memory", "resume", "workdir"}
    assert set(resumes[0]["changed"]) == changed
    assert resumes[0]["changed"]["n_epoch"] == {"from": 1, "to": 2}
    assert json.loads((run_copy / "args.json").read_text())["n_epoch"] == 2
    assert torch.load(run_copy / "last.pt", weights_only=True)["epoch"] == 1
    assert set(RESUMABLE) >= set(resumes[0]["changed"])


def test_resume_of_a_run_recorded_before_last_pt_held_its_args(dataset, run_copy):
    state = torch.load(run_copy / "last.pt", weights_only=True)
    del state["args"], state["processes"]
    torch.save(state, run_copy / "last.pt")
    proc = train(*replace(argv(dataset, run_copy, "--resume", n_epoch=2), "--l_rate", "0.5"))
    assert_clean_error(proc, "--l_rate is 0.5", "args.json")
