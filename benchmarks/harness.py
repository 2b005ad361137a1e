"""Timing, machine description and the two outputs of `make bench`.

Every figure is a ratio against a baseline measured in the same run on the same machine:
`results.json` (machine-readable, one entry per figure) and `BENCHMARKS.md` (the table) at the
repository root. Entries of figures not run this time (another machine's, say) are kept.

A figure this machine cannot measure (a GPU figure without a GPU) is written as "not yet
measured", with the reason and no number: it is never met nor missed, never estimated, and the
first real measurement of the same figure, on any machine, replaces it.
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
    """One benchmark figure: our time against the baseline's, same inputs, same run.

    A figure not measured here has `not_measured` set to the reason, and None for every number
    (`value`, `baseline_value`, `ratio`, `same_values`).

    Targets: `target_ratio` is met when ratio >= target_ratio (a speed-up); `target_max` when the
    value itself stays below it (a "lower is better" figure, such as a percentage of time spent
    waiting). Either, both or neither may be set.
    """

    name: str
    value: float | None  # ours
    unit: str
    baseline: str  # what the baseline is
    baseline_value: float | None
    ratio: float | None  # speed-up: baseline_value / value for times
    target_ratio: float | None
    same_values: bool | None  # outputs of ours and the baseline agree (tolerance in `notes`)
    machine: str
    notes: str = ""
    date: str = ""
    target_max: float | None = None  # the value must stay below this (lower is better)
    not_measured: str = ""  # why this machine has no number for the figure

    @property
    def measured(self) -> bool:
        return not self.not_measured

    @property
    def meets_target(self) -> bool | None:
        return _meets_target(asdict(self))


def _meets_target(entry: dict) -> bool | None:
    """True or False for a measured figure with a target; None otherwise (no target, no number)."""
    if entry.get("not_measured"):
        return None
    verdicts = []
    if entry.get("target_ratio") is not None:
        verdicts.append(entry["ratio"] is not None and entry["ratio"] >= entry["target_ratio"])
    if entry.get("target_max") is not None:
        verdicts.append(entry["value"] is not None and entry["value"] < entry["target_max"])
    return None if not verdicts else all(verdicts)


def not_yet_measured(
    name: str,
    reason: str,
    *,
    unit: str,
    baseline: str,
    target_ratio: float | None = None,
    target_max: float | None = None,
    notes: str = "",
) -> Figure:
    """A figure this machine cannot measure: no number, only the reason (never an estimate)."""
    return Figure(
        name=name,
        value=None,
        unit=unit,
        baseline=baseline,
        baseline_value=None,
        ratio=None,
        target_ratio=target_ratio,
        same_values=None,
        machine=machine_name(),
        notes=notes,
        date=datetime.date.today().isoformat(),
        target_max=target_max,
        not_measured=reason,
    )


def summary(figure: Figure) -> str:
    """One line for the console: the numbers and the verdict, or why there are none."""
    if not figure.measured:
        return f"{figure.name}: not yet measured: {figure.not_measured}"
    verdict = {None: "", True: " ok", False: " MISSED"}[figure.meets_target]
    base = "" if figure.baseline_value is None else f" vs {figure.baseline_value:g} {figure.unit}"
    ratio = "" if figure.ratio is None else f" -> {figure.ratio:g}x"
    same = " (VALUES DIFFER)" if figure.same_values is False else ""
    return f"{figure.name}: {figure.value:g} {figure.unit}{base}{ratio}{verdict}{same}"


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


def _load(path: Path) -> list[dict]:
    if path.exists():
        return json.loads(path.read_text())["figures"]
    return []


def merge(old: list[dict], fresh: list[dict]) -> list[dict]:
    """The entries after a run: old ones kept unless the run replaces them.

    A fresh measured figure replaces the old entry of the same name and machine, and the "not
    yet measured" entries of its name on any machine. A fresh "not yet measured" figure replaces
    only another such entry of its name, and is left out when the figure has a real measurement.
    """
    measured = [f for f in fresh if not f.get("not_measured")]
    pending = [f for f in fresh if f.get("not_measured")]
    replaced = {(f["name"], f["machine"]) for f in measured}
    measured_names = {f["name"] for f in measured}
    kept = [
        f
        for f in old
        if (f["name"], f["machine"]) not in replaced
        and not (f.get("not_measured") and f["name"] in measured_names)
    ]
    have_number = {f["name"] for f in kept if not f.get("not_measured")} | measured_names
    pending = [f for f in pending if f["name"] not in have_number]
    pending_names = {f["name"] for f in pending}
    kept = [f for f in kept if not (f.get("not_measured") and f["name"] in pending_names)]
    return kept + measured + pending


def _number(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{value:g} {unit}"


def render(entries: list[dict]) -> str:
    """BENCHMARKS.md from the entries of results.json."""
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (benchmarks/run.py); machine-readable copy in",
        "`benchmarks/results.json`. Each figure is timed against its baseline in the same run on",
        "the same machine (median of repeated calls after a warm-up); the ratio is",
        "baseline time / our time, and `same values` says the two outputs were checked equal",
        "(tolerance in the notes). Benchmarks are not tests: the test suite asserts no timing.",
        'A figure this machine cannot measure (a GPU one without a GPU) reads "not yet measured"',
        "with the reason: no number is estimated, and it counts as neither met nor missed.",
        "",
        "| figure | ours | baseline | baseline time | speed-up | target | same values | machine |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        targets = []
        if e.get("target_ratio") is not None:
            targets.append(f">= {e['target_ratio']:g}x")
        if e.get("target_max") is not None:
            targets.append(f"< {e['target_max']:g} {e['unit']}")
        target = ", ".join(targets) or "-"
        if _meets_target(e) is False:
            target += " (missed)"
        if e.get("not_measured"):
            ours = f"not yet measured: {e['not_measured']}"
            base_value = ratio = same = "-"
        else:
            ours = _number(e["value"], e["unit"])
            base_value = _number(e["baseline_value"], e["unit"])
            ratio = "-" if e["ratio"] is None else f"{e['ratio']:g}x"
            same = {True: "yes", False: "NO", None: "-"}[e["same_values"]]
        lines.append(
            f"| {e['name']} | {ours} | {e['baseline']} | {base_value} | {ratio} | {target} | "
            f"{same} | {e['machine']} ({e['date']}) |"
        )
    notes = [f"- **{e['name']}**: {e['notes']}" for e in entries if e["notes"]]
    if notes:
        lines += ["", "## Notes", "", *notes]
    return "\n".join(lines) + "\n"


def write(
    figures: list[Figure], results_json: Path = RESULTS_JSON, benchmarks_md: Path = BENCHMARKS_MD
) -> None:
    """Merge the new figures into results.json (see `merge`) and render BENCHMARKS.md."""
    fresh = [asdict(f) | {"meets_target": f.meets_target} for f in figures]
    entries = merge(_load(results_json), fresh)
    tmp = results_json.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"figures": entries}, indent=2) + "\n")
    tmp.replace(results_json)
    tmp = benchmarks_md.with_suffix(".md.tmp")
    tmp.write_text(render(entries))
    tmp.replace(benchmarks_md)
