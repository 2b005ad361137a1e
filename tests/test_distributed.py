"""Multi-process training (torchrun, DistributedDataParallel) on the CPU with the gloo backend.

The sharded sampler deals every single-process batch to exactly one process; a 2-process training
writes the same outputs, of the same shapes, as a single-process one, from rank 0 alone; and a
checkpoint validated over 2 processes gives exactly the metrics of a single-process validation.
The same for a 3D training (patches, whole volumes validated by sliding windows) on the prepared
nnU-Net stand-in.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import BatchSampler, SequentialSampler

from boundary_loss.data.loader import (
    FolderSpec,
    PatientSampler,
    ShardedBatchSampler,
    gt_transform,
    make_loader,
    npy_transform,
)
from boundary_loss.preprocessing.prepare_3d import prepare_3d
from boundary_loss.preprocessing.synthetic_nnunet import write_nnunet
from tests.sliced_data import STEAL, make_sliced_dataset, training_argv
from tests.test_train_3d import PATCH as PATCH_3D
from tests.test_train_3d import argv as argv_3d

ROOT = Path(__file__).resolve().parent.parent
N_TRAIN, N_VAL, SLICES, BATCH = 3, 3, 5, 2
K_3D, BATCH_3D, ITERATIONS_3D = 4, 2, 2  # tests/test_train_3d.py's small 3D training


# ------------------------------------------------------------------------- the sampler


@pytest.mark.parametrize("world_size", [2, 3, 5])
@pytest.mark.parametrize("n", [1, 7, 12])
def test_sharded_validation_batches_partition_the_single_process_ones(world_size: int, n: int):
    base = BatchSampler(SequentialSampler(range(n)), 2, drop_last=False)
    shards = [ShardedBatchSampler(base, r, world_size, pad=False) for r in range(world_size)]
    dealt = {}
    for shard in shards:
        batches = list(shard)
        assert len(batches) == len(shard)
        for j, batch in enumerate(batches):
            dealt[shard.position(j)] = batch
    assert [dealt[p] for p in sorted(dealt)] == list(base)  # each batch once, none lost


@pytest.mark.parametrize("world_size", [2, 3])
def test_sharded_training_batches_are_padded_to_equal_counts(world_size: int):
    base = PatientSampler([f"p{i // 3}_{i % 3}" for i in range(3 * 7)], r"(p\d+)_\d+", True, 4)
    shards = [ShardedBatchSampler(base, r, world_size, pad=True) for r in range(world_size)]
    for shard in shards:
        shard.set_epoch(2)
    counts = {len(list(shard)) for shard in shards}
    assert counts == {-(-7 // world_size)}  # every process steps the same number of times
    logged = [shard.position(j) for shard in shards for j in range(len(shard))]
    assert sorted(p for p in logged if p is not None) == list(range(7))  # repeats not logged
    base.set_epoch(2)
    assert sorted(b for s in shards for b in list(s)[: len(range(s.rank, 7, world_size))]) == (
        sorted(base)
    )


# ------------------------------------------------------------------------- main.py over 2 ranks


def _argv(dataset: Path, workdir: Path, *extra: str) -> list[str]:
    return [
        "main.py",
        *training_argv(dataset, workdir, "--threads", "1", *STEAL, *extra, batch_size=BATCH),
    ]


def _run(argv: list[str], processes: int) -> subprocess.CompletedProcess:
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    run = subprocess.run(launcher + argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    return run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    dataset = make_sliced_dataset(root / "data", n_train=N_TRAIN, n_val=N_VAL, slices=SLICES)
    run = _run(_argv(dataset, root / "run"), processes=2)
    assert run.returncode == 0, run.stderr[-3000:]
    return dataset, root


def test_two_process_training_writes_complete_outputs(trained):
    _, root = trained
    run = root / "run"
    n_train, n_val = N_TRAIN * SLICES, N_VAL * SLICES
    expected = {
        "tra_loss.npy": (2, -(-n_train // BATCH), 2),
        "tra_dice.npy": (2, n_train, 2),  # every slice once: padding repeats are not logged
        "val_loss.npy": (2, -(-n_val // BATCH), 2),
        "val_dice.npy": (2, n_val, 2),
        "val_3d_dsc.npy": (2, N_VAL, 2),
        "val_3d_hausdorff.npy": (2, N_VAL, 2),
        "val_3d_hd95.npy": (2, N_VAL, 2),
    }
    for name, shape in expected.items():
        array = np.load(run / name)
        assert array.shape == shape, name
        assert np.isfinite(array).all(), name
    for name in ("best.pt", "last.pt", "metrics.csv", "args.json", "best_epoch.txt"):
        assert (run / name).is_file(), name
    assert len(list((run / "iter001" / "val").glob("*.png"))) == n_val  # rank 0 saved all
    timing = json.loads((run / "timing.json").read_text())
    assert [t["epoch"] for t in timing] == [0, 1]
    assert all(t["processes"] == 2 and t["train_slices"] >= n_train for t in timing)
    assert json.loads((run / "provenance.json").read_text())["processes"] == 2
    state = torch.load(run / "best.pt", weights_only=True)
    assert not any(key.startswith("module.") for key in state["model"])  # loads without DDP


def test_validation_over_two_processes_equals_single_process(trained):
    dataset, root = trained
    results = {}
    for processes in (1, 2):
        workdir = root / f"eval{processes}"
        run = _run(
            _argv(dataset, workdir, "--weights", str(root / "run" / "best.pt"), "--evaluate"),
            processes,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        results[processes] = workdir
    for name in ("val_loss", "val_dice", "val_3d_dsc", "val_3d_hausdorff", "val_3d_hd95"):
        one, two = (np.load(results[p] / f"{name}.npy") for p in (1, 2))
        assert one.shape == two.shape and one.shape[0] == 1, name
        np.testing.assert_array_equal(one, two, err_msg=name)  # exactly, no slice lost or doubled
    pngs = [sorted(p.name for p in (results[n] / "evaluation").glob("*.png")) for n in (1, 2)]
    assert pngs[0] == pngs[1] and len(pngs[0]) == N_VAL * SLICES
    for name in pngs[0]:
        a, b = ((results[n] / "evaluation" / name).read_bytes() for n in (1, 2))
        assert a == b, name
    assert (results[2] / "metrics.csv").read_text() == (results[1] / "metrics.csv").read_text()


def test_nan_in_one_process_stops_both_with_the_error(tmp_path):
    dataset = make_sliced_dataset(tmp_path / "data", n_train=2, n_val=1, slices=2)
    for path in (dataset / "train" / "in_npy").glob("case_1_00_*.npy"):
        image = np.load(path)
        image[0, 0, 0] = np.nan
        np.save(path, image)
    run = _run(_argv(dataset, tmp_path / "run"), processes=2)
    assert run.returncode != 0
    assert "NaN or infinite" in run.stderr
    assert not (tmp_path / "run" / "last.pt").exists()


def test_training_shards_hold_the_single_process_batches(tmp_path):
    """make_loader over 2 ranks deals exactly the batches a single process draws, epoch by epoch."""
    dataset = make_sliced_dataset(tmp_path / "data", n_train=3, n_val=1, slices=5)
    specs = [
        FolderSpec("in_npy", npy_transform, False),
        FolderSpec("gt_npy", gt_transform, True),
    ]
    common = {
        "batch_size": 4,
        "train": True,
        "use_spacing": False,
        "in_memory": False,
        "debug": False,
        "group": False,
        "grp_regex": r"(.+)_\d+",
    }
    single = make_loader(dataset / "train", specs, 2, seed=3, **common)
    shards = [
        make_loader(dataset / "train", specs, 2, seed=3, rank=r, world_size=2, **common)
        for r in range(2)
    ]
    for epoch in range(2):
        for loader in (single, *shards):
            loader.generator.manual_seed(100 + epoch)
        expected = [batch["filenames"] for batch in single]
        dealt = {}
        for shard in shards:
            for j, batch in enumerate(shard):
                position = shard.batch_sampler.position(j)
                if position is not None:
                    dealt[position] = batch["filenames"]
        assert [dealt[p] for p in sorted(dealt)] == expected


GROUP_LIFETIME = """
import os
import torch
from boundary_loss.io.distributed import setup, teardown

def threads():
    tasks = os.listdir("/proc/self/task")
    return sorted(open(f"/proc/self/task/{t}/comm").read().strip() for t in tasks)

context, _ = setup(cpu=True)
net = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 2))
net(torch.ones(1, 2)).sum().backward()
del net
teardown(context, finished=True)
left = [name for name in threads() if "gloo" in name]
os.write(1, f"left: {left}\\n".encode())  # one write: the two processes share stdout
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads Linux's /proc")
def test_the_process_group_ends_with_teardown_not_at_exit(tmp_path):
    """After a DistributedDataParallel training, teardown leaves no gloo thread running: one
    still running while the interpreter exited made a process abort now and then."""
    script = tmp_path / "group_lifetime.py"
    script.write_text(GROUP_LIFETIME)
    run = _run([str(script)], processes=2)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("left: []") == 2, run.stdout


def test_two_process_resume_equals_an_uninterrupted_run(tmp_path):
    """Each process's random streams (augmentation included) are saved and restored, and the
    BatchNorm statistics are shared before validation: a resumed run is bit-identical."""
    dataset = make_sliced_dataset(tmp_path / "data", n_train=2, n_val=2, slices=4)
    extra = ["--augment", "--network", "UNet", "--net_params", "{'nG': 4}"]

    def launch(workdir: Path, epochs: int, *more: str) -> None:
        argv = _argv(dataset, workdir, *extra, *more)
        argv[argv.index("--n_epoch") + 1] = str(epochs)
        run = _run(argv, processes=2)
        assert run.returncode == 0, run.stderr[-3000:]

    launch(tmp_path / "whole", 2)
    launch(tmp_path / "parts", 1)
    launch(tmp_path / "parts", 2, "--resume")
    for name in ("tra_loss", "tra_dice", "val_loss", "val_dice", "val_3d_hd95"):
        np.testing.assert_array_equal(
            np.load(tmp_path / "whole" / f"{name}.npy"),
            np.load(tmp_path / "parts" / f"{name}.npy"),
            err_msg=name,
        )


# ------------------------------------------------------------------------- 3D: main.py over 2 ranks
# PlainUNet3D (width 4) on the prepared stand-in (tests/test_train_3d.py): each process draws its
# own `--iterations` batches of random patches; the validation cases are dealt to the processes
# and predicted whole by sliding windows.


def _argv_3d(prepared: Path, workdir: Path, *extra: str) -> list[str]:
    return ["main.py", *argv_3d(prepared, workdir, "--threads", "1", *extra)]


@pytest.fixture(scope="module")
def trained_3d(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp3d")
    source = write_nnunet(root / "source")
    prepared = prepare_3d(source, root / "prepared", patch=PATCH_3D, progress=False)
    run = _run(_argv_3d(prepared, root / "run"), processes=2)
    assert run.returncode == 0, run.stderr[-3000:]
    return prepared, root


def _val_cases(prepared: Path) -> list[str]:
    return sorted(json.loads((prepared / "split.json").read_text())["val"])


def test_two_process_3d_training_writes_complete_outputs(trained_3d):
    prepared, root = trained_3d
    run = root / "run"
    val = _val_cases(prepared)
    axis = json.loads((prepared / "plan.json").read_text())["slice_axis"]
    n_slices = sum(np.load(prepared / "val" / "gt_npy" / f"{c}.npy").shape[axis] for c in val)
    patches = 2 * ITERATIONS_3D * BATCH_3D  # every process draws its own batches
    expected = {
        "tra_dice.npy": (2, patches, K_3D),  # every patch of both processes
        "val_loss.npy": (2, len(val), 2),  # one row per volume
        "val_dice.npy": (2, n_slices, K_3D),  # one row per slice along the plan's axis
        "val_3d_dsc.npy": (2, len(val), K_3D),
        "val_3d_hausdorff.npy": (2, len(val), K_3D),
        "val_3d_hd95.npy": (2, len(val), K_3D),
    }
    for name, shape in expected.items():
        array = np.load(run / name)
        assert array.shape == shape, name
        assert np.isfinite(array).all(), name
    assert np.isfinite(np.load(run / "tra_loss.npy")).all()
    for name in ("best.pt", "last.pt", "metrics.csv", "args.json", "best_epoch.txt"):
        assert (run / name).is_file(), name
    saved = sorted(p.name for p in (run / "iter001" / "val").glob("*.png"))
    assert len(saved) == n_slices and saved[0] == f"{val[0]}_00_0000.png"  # rank 0 saved all
    timing = json.loads((run / "timing.json").read_text())
    assert [t["epoch"] for t in timing] == [0, 1]
    assert all(t["processes"] == 2 and t["train_slices"] == patches for t in timing)
    assert json.loads((run / "provenance.json").read_text())["processes"] == 2
    state = torch.load(run / "best.pt", weights_only=True)
    assert state["network"] == "PlainUNet3D"
    assert not any(key.startswith("module.") for key in state["model"])  # loads without DDP


def test_two_process_3d_training_logs_the_loss_of_every_batch(trained_3d):
    _, root = trained_3d
    losses = np.load(root / "run" / "tra_loss.npy")
    assert losses.shape == (2, 2 * ITERATIONS_3D, 2)  # every batch of both processes
    assert np.isfinite(losses).all()  # none left empty, none written twice


def test_3d_validation_over_two_processes_equals_single_process(trained_3d):
    prepared, root = trained_3d
    results = {}
    for processes in (1, 2):
        workdir = root / f"eval{processes}"
        weights = str(root / "run" / "best.pt")
        run = _run(_argv_3d(prepared, workdir, "--weights", weights, "--evaluate"), processes)
        assert run.returncode == 0, run.stderr[-3000:]
        results[processes] = workdir
    best = int((root / "run" / "best_epoch.txt").read_text())
    for name in ("val_loss", "val_dice", "val_3d_dsc", "val_3d_hausdorff", "val_3d_hd95"):
        one, two = (np.load(results[p] / f"{name}.npy") for p in (1, 2))
        assert one.shape == two.shape and one.shape[0] == 1, name
        np.testing.assert_array_equal(one, two, err_msg=name)  # exactly, no case lost or doubled
        # and the training's own validation (2 processes) of its best epoch
        np.testing.assert_array_equal(np.load(root / "run" / f"{name}.npy")[best], one[0], name)
    assert np.load(results[1] / "val_3d_dsc.npy").shape[1] == len(_val_cases(prepared))
    pngs = [sorted(p.name for p in (results[n] / "evaluation").glob("*.png")) for n in (1, 2)]
    assert pngs[0] == pngs[1] and len(pngs[0]) == np.load(results[1] / "val_dice.npy").shape[1]
    for name in pngs[0]:
        a, b = ((results[n] / "evaluation" / name).read_bytes() for n in (1, 2))
        assert a == b, name
    assert (results[2] / "metrics.csv").read_text() == (results[1] / "metrics.csv").read_text()
