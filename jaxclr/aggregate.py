"""Mean +- sample std of each run's final metrics over several run directories (e.g. seeds).

    python -m jaxclr.aggregate runs/seed0 runs/seed1 runs/seed2 [--metrics zeroshot/color_top1,...]

A run's final value of a metric is its value at the largest step that logged it in
``metrics.jsonl``. A cell is ``mean +- std`` with the sample standard deviation
(ddof = 1) and n stated in the header; a run that lacks a metric is left out of that
cell's n, and a NaN in any run makes the cell NaN (never hidden by the others).
"""
from __future__ import annotations

import argparse
import json
import math

import numpy as np

from jaxclr import paths
from jaxclr.metrics import METRICS_FILE


def final_metrics(workdir) -> dict[str, float]:
    """{name: value at the largest step that logged it} from workdir/metrics.jsonl."""
    path = paths.resolve(workdir) / METRICS_FILE
    if not path.exists():
        raise FileNotFoundError(f"no {METRICS_FILE} in {workdir}; is it a run directory?")
    last: dict[str, tuple[int, float]] = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        step = int(record.pop("step"))
        for name, value in record.items():
            if isinstance(value, (int, float)) and (name not in last or step >= last[name][0]):
                last[name] = (step, float(value))
    return {name: value for name, (_, value) in last.items()}


def summarise(runs: list[dict[str, float]], names: list[str]) -> dict[str, tuple[float, float, int]]:
    """{name: (mean, sample std, n)} over the runs that logged each name (std NaN when n < 2)."""
    out = {}
    for name in names:
        values = np.asarray([r[name] for r in runs if name in r], np.float64)
        n = len(values)
        mean = float(np.mean(values)) if n else math.nan
        std = float(np.std(values, ddof=1)) if n > 1 else math.nan
        out[name] = (mean, std, n)
    return out


def markdown(summary: dict[str, tuple[float, float, int]], digits: int = 3) -> str:
    ns = sorted({n for _, _, n in summary.values()})
    lines = [f"| metric | mean +- std (n = {', '.join(map(str, ns))}) |", "|---|---:|"]
    lines += [f"| {name} | {mean:.{digits}f} +- {std:.{digits}f} |" for name, (mean, std, _) in summary.items()]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdirs", nargs="+")
    parser.add_argument("--metrics", default="", help="comma-separated names (default: every eval metric)")
    args = parser.parse_args(argv)
    runs = [final_metrics(w) for w in args.workdirs]
    names = [m for m in args.metrics.split(",") if m] or sorted(
        {k for r in runs for k in r if k.split("/")[0] in ("zeroshot", "retrieval", "geometry")})
    print(markdown(summarise(runs, names)))


if __name__ == "__main__":
    main()
