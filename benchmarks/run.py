"""`make bench`: run the benchmarks, write BENCHMARKS.md and benchmarks/results.json.

Usage: python benchmarks/run.py [--only NAME ...] [--list]
"""

from __future__ import annotations

import argparse

from benchmarks import (
    bench_adjacency,
    bench_core,
    bench_device,
    bench_label_loss,
    bench_patches,
    bench_predict_new,
    bench_slicing,
    bench_sliding_window,
    bench_training,
    bench_training_3d,
)
from benchmarks.harness import BENCHMARKS_MD, RESULTS_JSON, summary, write

BENCHES = {
    **bench_core.BENCHES,
    **bench_adjacency.BENCHES,
    **bench_slicing.BENCHES,
    **bench_device.BENCHES,
    **bench_label_loss.BENCHES,
    **bench_training.BENCHES,
    **bench_patches.BENCHES,
    **bench_sliding_window.BENCHES,
    **bench_training_3d.BENCHES,
    **bench_predict_new.BENCHES,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHES), help="run these alone")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(sorted(BENCHES)))
        return 0

    figures = []
    for name in args.only or BENCHES:
        result = BENCHES[name]()  # a Figure, or several measured together
        for figure in result if isinstance(result, list) else [result]:
            print(summary(figure), flush=True)
            figures.append(figure)
    write(figures)
    print(f"wrote {BENCHMARKS_MD.name} and {RESULTS_JSON.relative_to(BENCHMARKS_MD.parent)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
