"""The benchmark harness and the value checks of the benchmarks (never their timings).

Results are written to temporary paths only: the repository's BENCHMARKS.md and results.json are
read at most.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from medpy.metric.binary import hd as medpy_hd
from medpy.metric.binary import hd95 as medpy_hd95

from benchmarks import (
    bench_device,
    bench_label_loss,
    bench_predict_new,
    bench_training,
    bench_training_3d,
    harness,
)
from benchmarks import run as bench_run
from benchmarks.harness import Figure, merge, not_yet_measured, render, write
from boundary_loss.losses.label_losses import LabelBoundaryLoss
from boundary_loss.maps.distance import one_hot2dist
from boundary_loss.metrics import hd_hd95_torch
from boundary_loss.preprocessing.slice_nnunet import nnunet_dataset
from boundary_loss.preprocessing.slicing import slice_dataset


def figure(name: str, machine: str = "machine A", **changes) -> Figure:
    base = Figure(
        name=name,
        value=2.0,
        unit="ms",
        baseline="the old way",
        baseline_value=10.0,
        ratio=5.0,
        target_ratio=3,
        same_values=True,
        machine=machine,
        notes="",
        date="2026-01-01",
    )
    return replace(base, **changes)


def pending(name: str, machine: str = "machine A", reason: str = "no CUDA device") -> Figure:
    return replace(
        not_yet_measured(name, reason, unit="ms", baseline="the old way", target_ratio=50),
        machine=machine,
        date="2026-01-01",
    )


def entries(*figures: Figure) -> list[dict]:
    return [asdict(f) | {"meets_target": f.meets_target} for f in figures]


def table_row(markdown: str, name: str) -> list[str]:
    rows = [line for line in markdown.splitlines() if line.startswith(f"| {name} |")]
    assert len(rows) == 1, rows
    return [cell.strip() for cell in rows[0].strip("|").split("|")]


# ---------------------------------------------------------------------------------------------
# Not yet measured figures, targets, merging, rendering
# ---------------------------------------------------------------------------------------------


def test_not_yet_measured_row_shows_the_reason_and_is_neither_met_nor_missed(tmp_path):
    results, md = tmp_path / "results.json", tmp_path / "BENCHMARKS.md"
    gpu = pending("gpu figure", reason="no CUDA device on this machine")
    assert gpu.meets_target is None and not gpu.measured
    write([figure("cpu figure"), gpu], results, md)

    row = table_row(md.read_text(), "gpu figure")
    assert row[1] == "not yet measured: no CUDA device on this machine"
    assert row[3:5] == ["-", "-"] and row[6] == "-"  # no baseline time, ratio, same values
    assert row[5] == ">= 50x"  # the target is shown, never "(missed)"
    assert "(missed)" not in md.read_text()
    saved = {e["name"]: e for e in json.loads(results.read_text())["figures"]}
    assert saved["gpu figure"]["meets_target"] is None
    assert saved["gpu figure"]["value"] is None and saved["gpu figure"]["ratio"] is None
    assert saved["gpu figure"]["not_measured"] == "no CUDA device on this machine"
    assert saved["cpu figure"]["meets_target"] is True


def test_merge_replaces_same_name_and_machine_and_keeps_the_rest(tmp_path):
    results, md = tmp_path / "results.json", tmp_path / "BENCHMARKS.md"
    write([figure("a"), figure("b"), figure("a", machine="machine B")], results, md)
    write([figure("a", value=1.0, ratio=10.0)], results, md)
    saved = json.loads(results.read_text())["figures"]
    assert [(e["name"], e["machine"], e["value"]) for e in saved] == [
        ("b", "machine A", 2.0),
        ("a", "machine B", 2.0),
        ("a", "machine A", 1.0),
    ]
    assert "| a | 1 ms |" in md.read_text() and "| a | 2 ms |" in md.read_text()


def test_a_real_measurement_replaces_the_placeholder_on_any_machine():
    old = entries(pending("gpu figure", machine="cpu box"), figure("other"))
    fresh = entries(figure("gpu figure", machine="gpu box", ratio=60.0))
    merged = merge(old, fresh)
    assert [(e["name"], e["machine"]) for e in merged] == [
        ("other", "machine A"),
        ("gpu figure", "gpu box"),
    ]


def test_a_placeholder_never_hides_a_measurement_nor_duplicates_itself():
    measured = entries(figure("gpu figure", machine="gpu box"))
    assert merge(measured, entries(pending("gpu figure", machine="cpu box"))) == measured
    # same machine too: a machine that lost its GPU keeps its number
    same = entries(figure("gpu figure", machine="cpu box"))
    assert merge(same, entries(pending("gpu figure", machine="cpu box"))) == same
    # a new placeholder replaces the old one, whatever the machine
    merged = merge(
        entries(pending("gpu figure", machine="box 1", reason="old")),
        entries(pending("gpu figure", machine="box 2", reason="new")),
    )
    assert [(e["machine"], e["not_measured"]) for e in merged] == [("box 2", "new")]


@pytest.mark.parametrize(("share", "met"), [(4.0, True), (10.0, False), (37.5, False)])
def test_lower_is_better_target(share, met, tmp_path):
    share_figure = figure(
        "wait share",
        value=share,
        unit="%",
        baseline_value=40.0,
        ratio=None,
        target_ratio=None,
        target_max=10.0,
        same_values=None,
    )
    assert share_figure.meets_target is met
    results, md = tmp_path / "results.json", tmp_path / "BENCHMARKS.md"
    write([share_figure], results, md)
    row = table_row(md.read_text(), "wait share")
    assert row[1] == f"{share:g} %" and row[4] == "-" and row[6] == "-"
    assert row[5] == ("< 10 %" if met else "< 10 % (missed)")
    assert json.loads(results.read_text())["figures"][0]["meets_target"] is met


def test_no_target_and_missed_ratio_render_as_before():
    text = render(entries(figure("none", target_ratio=None), figure("slow", ratio=1.5)))
    assert table_row(text, "none")[5] == "-"
    assert table_row(text, "slow")[5] == ">= 3x (missed)"


def test_entries_written_before_the_new_fields_still_render():
    """The repository's results.json (read only): every old row renders as it did."""
    old = json.loads(harness.RESULTS_JSON.read_text())["figures"]
    old = [{k: v for k, v in e.items() if k not in ("target_max", "not_measured")} for e in old]
    text = render(old)
    for e in old:
        row = table_row(text, e["name"])
        if e["value"] is not None:
            assert row[1] == f"{e['value']:g} {e['unit']}"
            assert row[4] == ("-" if e["ratio"] is None else f"{e['ratio']:g}x")


def test_console_summary():
    assert harness.summary(pending("g", reason="no GPU")) == "g: not yet measured: no GPU"
    assert harness.summary(figure("f")) == "f: 2 ms vs 10 ms -> 5x ok"
    assert "VALUES DIFFER" in harness.summary(figure("f", same_values=False))


# ---------------------------------------------------------------------------------------------
# Value checks of the device benchmarks
# ---------------------------------------------------------------------------------------------


def test_lesion_batch_is_one_hot_with_empty_slices():
    seg = bench_device.lesion_batch(batch=4, size=64, empty=(1,))
    assert seg.shape == (4, 2, 64, 64)
    assert np.array_equal(seg.sum(1), np.ones((4, 64, 64)))
    lesion = seg[:, 1].reshape(4, -1).any(1)
    assert lesion.tolist() == [True, False, True, True]


def test_scipy_loop_baseline_is_utils_one_hot2dist_per_slice():
    seg = bench_device.lesion_batch(batch=3, size=48, empty=(2,))
    base = bench_device.original_batch(seg)
    assert base.dtype == np.float64
    for b in range(3):
        expected = one_hot2dist(seg[b], bench_device.SPACING_2D, dtype=np.float64)
        np.testing.assert_allclose(base[b], expected, rtol=0, atol=1e-4)
    assert not base[2, 1].any()  # no lesion: zero map for that class


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_one_hot2dist_torch_matches_the_scipy_loop_within_the_bench_tolerance(device):
    seg = bench_device.lesion_batch(batch=3, size=48, empty=(1,), seed=3)
    diff = bench_device.max_batch_difference(seg, device)
    assert diff <= bench_device.DIST_TOLERANCE


def test_hd_hd95_torch_matches_medpy_within_the_bench_tolerance():
    rng = np.random.default_rng(0)
    zz, yy, xx = np.mgrid[:12, :40, :40]
    gt = ((zz - 6) / 3) ** 2 + ((yy - 20) / 8) ** 2 + ((xx - 18) / 6) ** 2 < 1
    pred = np.roll(gt, 2, axis=1) | (rng.random(gt.shape) < 0.002)
    spacing = (5.0, 0.9, 0.9)
    ours = hd_hd95_torch(torch.from_numpy(pred), torch.from_numpy(gt), spacing)
    base = (medpy_hd(pred, gt, spacing), medpy_hd95(pred, gt, spacing))
    assert np.abs(np.subtract(ours, base)).max() <= bench_device.HD_TOLERANCE


def test_hausdorff_pair_is_the_core_bench_pair():
    pred, gt = bench_device.hausdorff_pair()
    assert pred.shape == gt.shape == (256, 256, 40)
    assert gt.any() and (pred & ~gt).any()


def test_walkthrough_baseline_gives_the_label_loss_value():
    """The label-input loss bench compares equal things: the walkthrough's per-sample scipy
    maps and our device maps give the same loss on the bench's kind of batch."""
    seg = bench_device.lesion_batch(batch=3, size=48, empty=(1,), seed=5)
    labels = torch.from_numpy(seg[:, 1].astype(np.int64))
    logits = torch.randn(3, 2, 48, 48, generator=torch.Generator().manual_seed(1))
    ours = LabelBoundaryLoss([1], spacing=bench_device.SPACING_2D)(logits, labels).item()
    theirs = bench_label_loss.walkthrough_loss(logits, labels).item()
    assert ours == pytest.approx(theirs, rel=bench_label_loss.TOLERANCE)


def test_device_figures_without_cuda_are_not_yet_measured(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for bench in (
        bench_device.distance_map_batch_device,
        bench_device.hausdorff_3d_device,
        bench_label_loss.label_loss_device,
        bench_training.isles_chain,
    ):
        result = bench()
        assert not result.measured and result.value is None and result.meets_target is None
    assert bench_device.distance_map_batch_device().not_measured == "no CUDA device on this machine"
    assert bench_device.distance_map_batch_device().target_ratio == 50
    assert bench_training.isles_chain().not_measured.startswith("needs a GPU")


# ---------------------------------------------------------------------------------------------
# The training benchmark's plumbing, with a stand-in for main.py
# ---------------------------------------------------------------------------------------------

FAKE_MAIN = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    argv = sys.argv[1:]
    workdir = Path(argv[argv.index("--workdir") + 1])
    n_epoch = int(argv[argv.index("--n_epoch") + 1])
    assert Path(argv[argv.index("--dataset") + 1], "train", "in_npy").is_dir()
    seconds, data = 4.0, 2.0  # the baseline: 12 slices in 4 s, half of it waiting
    if "--in_memory" in argv:
        data = 0.5
    if "--channels_last" in argv:
        seconds *= 0.5  # faster: kept
    if "--bf16" in argv:
        seconds *= 3  # slower: left out
    workdir.mkdir(parents=True)
    epochs = [
        {"epoch": e, "train_seconds": seconds * (5 if e == 0 else 1), "data_seconds": data,
         "train_slices": 12, "val_seconds": 1.0}
        for e in range(n_epoch)
    ]
    (workdir / "timing.json").write_text(json.dumps(epochs))
    """
)


def test_read_timing_leaves_out_the_first_epoch(tmp_path):
    path = tmp_path / "timing.json"
    path.write_text(
        json.dumps(
            [
                {"epoch": e, "train_seconds": s, "data_seconds": d, "train_slices": 10}
                for e, s, d in ((0, 9.0, 5.0), (1, 2.0, 0.5), (2, 3.0, 0.5))
            ]
        )
    )
    run = bench_training.read_timing(path)
    assert run.slices == 20 and run.slices_per_second == pytest.approx(4.0)
    assert run.wait_share == pytest.approx(20.0)
    path.write_text(json.dumps([{"epoch": 0, "train_seconds": 1, "data_seconds": 0}]))
    with pytest.raises(ValueError, match="warm-up"):
        bench_training.read_timing(path)


def test_training_figures_from_timing_json(tmp_path, monkeypatch):
    fake = tmp_path / "fake_main.py"
    fake.write_text(FAKE_MAIN)
    monkeypatch.setattr(bench_training, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    tiny = bench_training.Setting(16, 2, 1, 3, "{'nG': 2}", 4, ("--cpu",))
    monkeypatch.setattr(bench_training, "CPU_SETTING", tiny)

    throughput, share = bench_training.training_throughput(main=fake)
    # --channels_last halves the step time (kept), --bf16 triples it (left out)
    assert "--in_memory" in throughput.notes and "--channels_last" in throughput.notes
    assert "--channels_last 2.00x (6.0 against 3.0 slices/s, kept)" in throughput.notes
    assert "--bf16 0.33x (2.0 against 6.0 slices/s, slower, left out)" in throughput.notes
    assert "--device_dist_maps 1.00x (6.0 against 6.0 slices/s, within 5%" in throughput.notes
    assert "Options: --in_memory --channels_last;" in throughput.notes
    assert throughput.value == pytest.approx(6.0) and throughput.baseline_value == pytest.approx(3)
    assert throughput.ratio == pytest.approx(2.0) and throughput.meets_target is None
    assert share.value == pytest.approx(25.0) and share.baseline_value == pytest.approx(50.0)
    assert share.target_max is None and share.meets_target is None  # no target on a CPU
    assert not (tmp_path / "cache" / "training-run_tmp").exists()  # the workdir is removed


def test_failed_training_run_says_why(tmp_path, monkeypatch):
    fake = tmp_path / "fake_main.py"
    fake.write_text("import sys\nsys.exit('unknown flag --bf16')\n")
    monkeypatch.setattr(bench_training, "CACHE", tmp_path / "cache")
    data = tmp_path / "data"
    data.mkdir()
    with pytest.raises(RuntimeError, match="unknown flag --bf16"):
        bench_training.train(data, bench_training.CPU_SETTING, ("--bf16",), main=fake)


def test_training_command_is_the_isles_training(tmp_path):
    cmd = bench_training.command(tmp_path, tmp_path / "w", bench_training.CPU_SETTING, ["--x"])
    assert cmd[0] == sys.executable and Path(cmd[1]).name == "main.py"
    assert cmd[-2:] == ["--cpu", "--x"]
    assert "SurfaceLoss" in cmd[cmd.index("--losses") + 1]


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("git") is None, reason="no make")
def test_isles_chain_scratch_copy_builds_the_chain(tmp_path):
    """The scratch copy holds the repository's files but no data, results nor .venv, and make
    there plans the 4 trainings (dry run: nothing is built)."""
    scratch = bench_training.scratch_copy(tmp_path / "copy")
    assert (scratch / "isles.make").is_file() and (scratch / "main.py").is_file()
    assert not any((scratch / name).exists() for name in ("data", "results", ".venv"))
    assert not (scratch / "benchmarks" / "cache").exists()
    plan = subprocess.run(
        ["make", "-n", "-f", "isles.make", "DATA=synthetic-full", f"CC={sys.executable}"],
        cwd=scratch,
        capture_output=True,
        text=True,
    )
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.count("main.py --dataset data/isles-synthetic-full/isles") == 4
    assert "--n_epoch 100" in plan.stdout


def test_run_registers_the_3d_benches():
    assert {"patch_loader", "sliding_window", "training_3d"} <= set(bench_run.BENCHES)


def test_run_registers_the_predict_new_bench():
    assert bench_run.BENCHES["predict_new"] is bench_predict_new.predict_new_bench


def test_predict_new_bench_runs_are_what_predict_new_reads(tmp_path):
    """The bench's run folder for an initialised network predicts a scan of the stand-in."""
    from boundary_loss.inference.predict_new import predict_new
    from tests.volume_data import make_dataset

    source = make_dataset(tmp_path / "Dataset001_Tiny")
    sliced = tmp_path / "sliced"
    slice_dataset(
        nnunet_dataset(source, 0, "auto"),
        source,
        sliced,
        retain=2,
        shape=(24, 24),
        workers=1,
        progress=False,
    )
    run = bench_predict_new.make_run(tmp_path / "run", sliced, 2)
    scans = tmp_path / "scans"
    scans.mkdir()
    for path in (source / "imagesTs").glob("*.nii.gz"):
        shutil.copy(path, scans / path.name)
    timings: dict = {}
    out = predict_new([run], scans, tmp_path / "out", torch.device("cpu"), timings=timings)
    assert (out / "case_101.nii.gz").is_file() and timings["cases"] == 1


# ---------------------------------------------------------------------------------------------
# The 3D training benchmark: its figures from the runs, and one tiny real run
# ---------------------------------------------------------------------------------------------


def test_training_3d_figures_from_the_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    calls = []

    def fake(prepared: Path, workers: int) -> bench_training.Run:
        calls.append((prepared, workers))
        # workers 0: 40 patches in 8 s, 2 s of it waiting; workers 2: in 5 s, 0.25 s waiting
        seconds, data = (8.0, 2.0) if workers == 0 else (5.0, 0.25)
        return bench_training.Run(("--workers", str(workers)), 40, seconds, data, 20.0)

    throughput, share = bench_training_3d.training_3d(run=fake, prepare=lambda: tmp_path)
    assert calls == [(tmp_path, 0), (tmp_path, 2)] * bench_training_3d.ROUNDS  # alternated
    assert throughput.unit == "patches/s" and throughput.name.endswith("--workers 2, CPU")
    assert throughput.value == pytest.approx(8.0) and throughput.baseline_value == 5.0
    assert throughput.ratio == pytest.approx(1.6) and throughput.meets_target is None
    assert share.unit == "%" and share.value == pytest.approx(5.0)
    assert share.baseline_value == pytest.approx(25.0) and share.ratio == pytest.approx(5.0)
    assert share.target_max == 10 and share.meets_target is True
    shares = [", ".join([v] * bench_training_3d.ROUNDS) for v in ("25.0", "5.0")]
    assert f"--workers 0 {shares[0]}%; --workers 2 {shares[1]}%" in share.notes


def test_training_3d_run_on_the_prepared_standin(tmp_path):
    prepared = bench_training_3d.prepared_standin(tmp_path)
    assert bench_training_3d.prepared_standin(tmp_path) == prepared  # made once
    assert (prepared / "plan.json").is_file() and not (prepared.parent / "source").exists()
    sizes = {"epochs": 2, "iterations": 2, "net_params": "{'features': 4}"}
    threads = torch.get_num_threads()
    run = bench_training_3d.train(prepared, 0, cache=tmp_path, **sizes)
    assert run.slices == 2 * bench_training_3d.BATCH  # the second epoch's patches
    assert run.train_seconds > 0 and 0 <= run.data_seconds <= run.train_seconds
    assert not (tmp_path / "training-3d-run_tmp").exists()  # the run folder is removed
    assert torch.get_num_threads() == threads  # --threads 1 of the run undone
