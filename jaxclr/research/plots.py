"""Figures of a sweep (matplotlib, Agg backend: no display needed), written as PNG files.

`plot_sweep(out_dir, rows, params, metrics, curves)` writes, and returns the paths of:
  metrics_vs_<param>.png   one panel per metric: mean over the runs that share a value of the
                           swept `param` (and of the other swept keys; seeds are averaged),
                           error bars one sample std (none where n < 2); one line per
                           combination of the other swept keys;
  loss_curves.png          train loss against step, one line per run, one colour per setting;
  alignment_uniformity.png one point per run: x = geometry/alignment, y = uniformity (the
                           `geometry/uniformity` metric, else the mean of the image and text
                           uniformities), one colour and marker per setting; the legend gives
                           each setting's mean of a metric (the first zeroshot top-1).
`rows` are the sweep's rows (`jaxclr.sweep`: run name, grid values, seed, final metrics);
a figure whose data is missing (e.g. no geometry evals) is left out. A setting is one
combination of the swept values other than the seed; seeds share its colour and are not
labelled point by point. Legends sit outside the axes, so no label covers data or is cut.

    python -m jaxclr.research.plots DIR [DIR ...]

redraws the figures of finished sweeps from their results.csv alone (loss curves need the
runs' metrics.jsonl: they are redrawn only where the run directories are there).
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jaxclr import paths  # noqa: E402
from jaxclr.logs.metrics import METRICS_FILE  # noqa: E402
from jaxclr.research import aggregate  # noqa: E402

ALIGNMENT = "geometry/alignment"
UNIFORMITY = "geometry/uniformity"
UNIFORMITY_PARTS = ("geometry/uniformity_img", "geometry/uniformity_txt")


def save(fig, path) -> str:
    """Writes the figure as PNG through epath (so `path` may be a URL); returns the path."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    paths.resolve(path).write_bytes(buffer.getvalue())
    return str(path)


def is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def positions(values: list) -> tuple[dict, list | None]:
    """{value: x}: the values themselves when all are numbers, else 0, 1, ... (then the tick labels)."""
    distinct = list(dict.fromkeys(values))
    if all(is_number(v) for v in distinct):
        return {v: float(v) for v in distinct}, None
    return {v: float(i) for i, v in enumerate(distinct)}, [str(v) for v in distinct]


def short_names(keys: list[str]) -> dict[str, str]:
    """{key: its shortest dotted suffix that no other key shares}: loss.terms.uniformity -> uniformity."""
    out = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            suffix = ".".join(parts[-n:])
            if not any(o != key and (o == suffix or o.endswith("." + suffix)) for o in keys):
                break
        out[key] = suffix
    return out


def setting_labels(rows: list[dict], keys: list[str]) -> dict[str, list[dict]]:
    """{short label: the rows of that setting} ('clip=1, uniformity=0'; 'all runs' when no keys)."""
    names = short_names(keys)
    out: dict[str, list[dict]] = {}
    for row in rows:
        label = ", ".join(f"{names[k]}={format_value(row.get(k))}" for k in keys) or "all runs"
        out.setdefault(label, []).append(row)
    return out


def format_value(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def outside_legend(ax, title: str | None = None, fontsize: int = 7) -> None:
    """The legend right of the axes; savefig(bbox_inches='tight') keeps it inside the image."""
    ax.legend(fontsize=fontsize, title=title, title_fontsize=fontsize, loc="upper left",
              bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)


MARKERS = "osD^v<>pPX*h"


def style(i: int) -> dict:
    """Colour and marker of the i-th setting: ten colours, then the markers tell them apart."""
    return {"color": plt.get_cmap("tab10")(i % 10), "marker": MARKERS[(i // 10 + i) % len(MARKERS)]}


def panel_grid(n: int):
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def metrics_vs_param(rows: list[dict], param: str, others: list[str], metrics: list[str]):
    """The figure of each metric against `param`; a line per combination of the `others` keys."""
    xs, labels = positions([row[param] for row in rows])
    fig, axes = panel_grid(len(metrics))
    lines = setting_labels(rows, others)
    for ax, metric in zip(axes, metrics):
        for i, (label, members) in enumerate(lines.items()):
            points = aggregate.group(members, [param])
            x = [xs[group[0][param]] for group in points.values()]
            stats = [aggregate.summarise(group, [metric])[metric] for group in points.values()]
            mean = [m for m, _, _ in stats]
            err = [s if n > 1 else 0.0 for _, s, n in stats]
            order = np.argsort(x)
            ax.errorbar(np.asarray(x)[order], np.asarray(mean)[order], yerr=np.asarray(err)[order],
                        capsize=3, label=label if others else None, **style(i))
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel(short_names([param, *others])[param], fontsize=8)
        if labels is not None:
            ax.set_xticks(range(len(labels)), labels, fontsize=7)
    fig.suptitle(f"final metrics against {param} (mean +- sample std over seeds)")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    if others and len(lines) > 1:   # one legend for all panels, under them
        fig.legend(*axes[0].get_legend_handles_labels(), loc="upper center", bbox_to_anchor=(0.5, 0.0),
                   ncol=min(3, len(lines)), fontsize=8, frameon=False)
    return fig


def loss_curves(curves: dict[str, tuple[list[int], list[float]]], settings: dict[str, str] | None = None):
    """Train loss per run; `settings` ({run: setting label}) gives the runs of a setting one colour
    and the legend one entry per setting (default: every run its own)."""
    settings = settings or {name: name for name in curves}
    order = list(dict.fromkeys(settings[name] for name in curves))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    labelled = set()
    for name, (steps, losses) in curves.items():
        label = settings[name]
        ax.plot(steps, losses, color=style(order.index(label))["color"], alpha=0.8, lw=1.2,
                marker="." if len(steps) < 20 else None, label=None if label in labelled else label)
        labelled.add(label)
    ax.set_xlabel("step")
    ax.set_ylabel("train loss")
    if len(order) <= 20:
        outside_legend(ax)
    ax.set_title("train loss per run (one colour per setting)")
    return fig


def uniformity(row: dict) -> float | None:
    if UNIFORMITY in row:
        return row[UNIFORMITY]
    if all(k in row for k in UNIFORMITY_PARTS):
        return float(np.mean([row[k] for k in UNIFORMITY_PARTS]))
    return None


def alignment_uniformity(rows: list[dict], color: str | None, keys: list[str] | None = None):
    """One point per run, one colour and marker per setting of `keys` (the swept keys but the seed;
    default: each run's name is its setting); the legend gives each setting's mean of `color`."""
    rows = [row for row in rows if ALIGNMENT in row and uniformity(row) is not None]
    if not rows:
        return None
    settings = setting_labels(rows, keys) if keys is not None else {row["run"]: [row] for row in rows}
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for i, (label, members) in enumerate(settings.items()):
        if color:
            mean, _, n = aggregate.summarise(members, [color])[color]
            label = f"{label}: {mean:.3f}" if n else label
        ax.scatter([row[ALIGNMENT] for row in members], [uniformity(row) for row in members], s=36,
                   label=label, alpha=0.85, **style(i))
    ax.set_xlabel(f"{ALIGNMENT} (lower: positives closer)")
    ax.set_ylabel(("uniformity" if UNIFORMITY in rows[0] else "mean image/text uniformity") + " (lower: more uniform)")
    ax.set_title("alignment-uniformity plane, one point per run")
    outside_legend(ax, title=f"setting (mean {color} over seeds)" if color else "setting")
    return fig


def first_top1(metrics: list[str]) -> str | None:
    return next((m for m in metrics if m.startswith("zeroshot/") and m.endswith("top1")), None)


def plot_sweep(out_dir, rows: list[dict], params: list[str], metrics: list[str],
               curves: dict[str, tuple[list[int], list[float]]]) -> list[str]:
    """Writes the sweep's figures into out_dir; returns their paths (see the module docstring)."""
    out = paths.resolve(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    swept = [p for p in params if p != "seed"]
    for param in swept:
        if metrics:
            fig = metrics_vs_param(rows, param, [p for p in swept if p != param], metrics)
            written.append(save(fig, out / f"metrics_vs_{re.sub(r'[^A-Za-z0-9._-]', '_', param)}.png"))
    if curves:
        settings = {row["run"]: label for label, members in setting_labels(rows, swept).items() for row in members}
        written.append(save(loss_curves(curves, {name: settings.get(name, name) for name in curves}),
                            out / "loss_curves.png"))
    fig = alignment_uniformity(rows, first_top1(metrics), swept)
    if fig is not None:
        written.append(save(fig, out / "alignment_uniformity.png"))
    return written


def read_results(results_csv) -> tuple[list[dict], list[str], list[str]]:
    """A sweep's results.csv (`jaxclr.sweep`) back as (rows, swept keys with the seed, eval metrics):
    the swept keys are the columns between `run` and `seed`, as the sweep writes them."""
    with paths.resolve(results_csv).open() as f:
        table = list(csv.DictReader(f))
    columns = list(table[0]) if table else []
    if not columns or columns[0] != "run" or "seed" not in columns:
        raise ValueError(f"{results_csv}: not a sweep's results.csv (its columns start run, <swept keys>, seed)")
    params = columns[1:columns.index("seed") + 1]

    def value(text: str):
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
        return {"True": True, "False": False}.get(text, text)

    rows = [{k: value(v) for k, v in row.items() if v != ""} | {"run": row["run"]} for row in table]
    return rows, params, [c for c in columns if aggregate.is_eval_metric(c)]


def replot(sweep_dir) -> list[str]:
    """Redraws a finished sweep's figures from its results.csv (and its runs' loss curves where the
    run directories are there; else an existing loss_curves.png is kept)."""
    root = paths.resolve(sweep_dir)
    rows, params, metrics = read_results(root / "results.csv")
    curves = {row["run"]: aggregate.series(root / row["run"], "loss") for row in rows
              if (root / row["run"] / METRICS_FILE).exists()}
    return plot_sweep(root / "plots", rows, params, metrics, curves if len(curves) == len(rows) else {})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxclr.research.plots",
                                     description="Redraw finished sweeps' figures from their results.csv.")
    parser.add_argument("sweeps", nargs="+", metavar="DIR", help="a sweep's directory (it holds results.csv)")
    args = parser.parse_args(argv)
    for sweep_dir in args.sweeps:
        try:
            written = replot(sweep_dir)
        except (FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print("\n".join(written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
