"""Mean +- sample std of each run's final metrics over several run directories (e.g. seeds).

    python -m jaxclr.aggregate runs/seed0 runs/seed1 runs/seed2 [--metrics zeroshot/color_top1,...]

A run's final value of a metric is its value at the largest step that logged it in
``metrics.jsonl``. A cell is ``mean +- std`` with the sample standard deviation
(ddof = 1) and n stated in the header; a run that lacks a metric is left out of that
cell's n, and a NaN in any run makes the cell NaN (never hidden by the others).

For sweeps (`jaxclr.sweep`): `write_csv` writes one row per run, `group` collects the runs
that differ only in some keys (e.g. the seed) and `grouped_markdown` tables mean +- std per
group; `series` reads one metric's curve.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys

import numpy as np

from jaxclr import paths
from jaxclr.logs.metrics import METRICS_FILE
from jaxclr.logs.tables import markdown_table


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


def mean_std(values) -> tuple[float, float]:
    """(mean, sample std) in float64; the mean is NaN with no values, the std NaN with fewer than two."""
    x = np.asarray(values, np.float64)
    return float(np.mean(x)) if len(x) else math.nan, float(np.std(x, ddof=1)) if len(x) > 1 else math.nan


def summarise(runs: list[dict[str, float]], names: list[str]) -> dict[str, tuple[float, float, int]]:
    """{name: (mean, sample std, n)} over the runs that logged each name (std NaN when n < 2)."""
    out = {}
    for name in names:
        values = [r[name] for r in runs if name in r]
        out[name] = (*mean_std(values), len(values))
    return out


def markdown(summary: dict[str, tuple[float, float, int]], digits: int = 3) -> str:
    ns = sorted({n for _, _, n in summary.values()})
    rows = [(name, f"{mean:.{digits}f} +- {std:.{digits}f}") for name, (mean, std, _) in summary.items()]
    return markdown_table(("metric", f"mean +- std (n = {', '.join(map(str, ns))})"), rows, "lr")


EVAL_PREFIXES = ("zeroshot", "retrieval", "geometry", "probe")


def is_eval_metric(name: str) -> bool:
    """Whether `name` is an eval metric (zeroshot/..., retrieval/..., geometry/..., probe/...)."""
    return name.split("/")[0] in EVAL_PREFIXES


def series(workdir, name: str) -> tuple[list[int], list[float]]:
    """(steps, values) of metric `name` in workdir/metrics.jsonl, in step order."""
    points = {}
    for line in (paths.resolve(workdir) / METRICS_FILE).read_text().splitlines():
        record = json.loads(line)
        if isinstance(record.get(name), (int, float)):
            points[int(record["step"])] = float(record[name])
    steps = sorted(points)
    return steps, [points[s] for s in steps]


def write_csv(path, rows: list[dict]) -> None:
    """One line per row; the columns are every key of the rows, in first-seen order ('' where a
    row lacks one). Floats are written with repr, so reading them back gives the same float."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    paths.resolve(path).write_text(text.getvalue())


def group(rows: list[dict], keys: list[str]) -> dict[str, list[dict]]:
    """{'k1=v1,k2=v2': the rows with those values}, groups in first-seen order ('all' when no keys)."""
    out: dict[str, list[dict]] = {}
    for row in rows:
        label = ",".join(f"{k}={row.get(k)}" for k in keys) or "all"
        out.setdefault(label, []).append(row)
    return out


def grouped_markdown(groups: dict[str, list[dict]], names: list[str], digits: int = 4) -> str:
    """A table, one row per metric and one column per group: `mean +- std` (sample std) over the
    group's runs; the header gives each group's n, and a cell whose n differs says its own."""
    header = ["metric", *(f"{label} (n={len(rows)})" for label, rows in groups.items())]
    lines = []
    stats = {label: summarise(rows, names) for label, rows in groups.items()}
    for name in names:
        cells = []
        for label, rows in groups.items():
            mean, std, n = stats[label][name]
            cell = "-" if n == 0 else f"{mean:.{digits}f}" if n == 1 else f"{mean:.{digits}f} +- {std:.{digits}f}"
            cells.append(cell if n in (0, len(rows)) else f"{cell} (n={n})")
        lines.append([name, *cells])
    return markdown_table(header, lines, "l" + "r" * len(groups))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdirs", nargs="+")
    parser.add_argument("--metrics", default="", help="comma-separated names (default: every eval metric)")
    args = parser.parse_args(argv)
    try:
        runs = [final_metrics(w) for w in args.workdirs]
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    names = [m for m in args.metrics.split(",") if m] or sorted(
        {k for r in runs for k in r if is_eval_metric(k)})
    print(markdown(summarise(runs, names)))


def cli() -> None:
    """The `python -m` command line."""
    main()


if __name__ == "__main__":
    cli()
