"""Timing, machine description and the two outputs of `make bench`.

Every figure is a ratio against a baseline measured in the same run on the same machine:
`results.json` (machine-readable, one entry per figure) and `BENCHMARKS.md` (the table) at the
repository root. Entries of figures not run this time (another machine's, say) are kept.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS_JSON = ROOT / "benchmarks" / "results.json"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"


@dataclass
class Figure:
    """One benchmark figure: our time against the baseline's, same inputs, same run."""

    name: str
    value: float  # ours
    unit: str
    baseline: str  # what the baseline is
    baseline_value: float
    ratio: float  # speed-up: baseline_value / value for times
    target_ratio: float | None
    same_values: bool  # outputs of ours and the baseline agree (tolerance in `notes`)
    machine: str
    notes: str = ""
    date: str = ""

    @property
    def meets_target(self) -> bool | None:
        return None if self.target_ratio is None else self.ratio >= self.target_ratio


def machine_name() -> str:
    """CPU model and cores, plus the GPU when torch sees one."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    name = f"{cpu}, {os.cpu_count()} cores"
    if torch.cuda.is_available():
        name += f", GPU {torch.cuda.get_device_name(0)}"
    return name


def median_seconds(fn: Callable[[], object], repeat: int, warmup: int = 1) -> float:
    """Median wall time of `repeat` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_seconds(
    first: Callable[[], object], second: Callable[[], object], repeat: int, warmup: int = 2
) -> tuple[float, float]:
    """Median wall times of two functions called alternately, so that drift in the machine's
    speed (frequency scaling, neighbours on a shared host) weighs on both alike."""
    for _ in range(warmup):
        first()
        second()
    t_first, t_second = [], []
    for _ in range(repeat):
        for fn, times in ((first, t_first), (second, t_second)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(t_first), statistics.median(t_second)


def speedup(
    name: str,
    ours: Callable[[], object],
    baseline: Callable[[], object],
    *,
    baseline_name: str,
    repeat: int,
    target_ratio: float | None,
    same_values: bool,
    notes: str = "",
) -> Figure:
    """Time `ours` and `baseline` alternately in this run; the ratio is baseline / ours."""
    t_base, t_ours = interleaved_seconds(baseline, ours, repeat)
    return Figure(
        name=name,
        value=round(t_ours * 1e3, 3),
        unit="ms",
        baseline=baseline_name,
        baseline_value=round(t_base * 1e3, 3),
        ratio=round(t_base / t_ours, 2),
        target_ratio=target_ratio,
        same_values=same_values,
        machine=machine_name(),
        notes=notes,
        date=datetime.date.today().isoformat(),
    )


def _load() -> list[dict]:
    if RESULTS_JSON.exists():
        return json.loads(RESULTS_JSON.read_text())["figures"]
    return []


def write(figures: list[Figure]) -> None:
    """Merge the new figures into results.json (same name and machine replaced) and render."""
    fresh = [asdict(f) | {"meets_target": f.meets_target} for f in figures]
    replaced = {(f["name"], f["machine"]) for f in fresh}
    kept = [f for f in _load() if (f["name"], f["machine"]) not in replaced]
    entries = kept + fresh
    tmp = RESULTS_JSON.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"figures": entries}, indent=2) + "\n")
    tmp.replace(RESULTS_JSON)

    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (benchmarks/run.py); machine-readable copy in",
        "`benchmarks/results.json`. Each figure is timed against its baseline in the same run on",
        "the same machine (median of repeated calls after a warm-up); the ratio is",
        "baseline time / our time, and `same values` says the two outputs were checked equal",
        "(tolerance in the notes). Benchmarks are not tests: the test suite asserts no timing.",
        "",
        "| figure | ours | baseline | baseline time | speed-up | target | same values | machine |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        target = "-" if e["target_ratio"] is None else f">= {e['target_ratio']:g}x"
        if e["meets_target"] is False:
            target += " (missed)"
        lines.append(
            f"| {e['name']} | {e['value']:g} {e['unit']} | {e['baseline']} | "
            f"{e['baseline_value']:g} {e['unit']} | {e['ratio']:g}x | {target} | "
            f"{'yes' if e['same_values'] else 'NO'} | {e['machine']} ({e['date']}) |"
        )
    notes = [f"- **{e['name']}**: {e['notes']}" for e in entries if e["notes"]]
    if notes:
        lines += ["", "## Notes", "", *notes]
    BENCHMARKS_MD.write_text("\n".join(lines) + "\n")
