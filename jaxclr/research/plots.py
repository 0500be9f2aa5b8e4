"""Figures of a sweep (matplotlib, Agg backend: no display needed), written as PNG files.

`plot_sweep(out_dir, rows, params, metrics, curves)` writes, and returns the paths of:
  metrics_vs_<param>.png   one panel per metric: mean over the runs that share a value of the
                           swept `param` (and of the other swept keys; seeds are averaged),
                           error bars one sample std (none where n < 2); one line per
                           combination of the other swept keys;
  loss_curves.png          train loss against step, one line per run;
  alignment_uniformity.png one point per run: x = geometry/alignment, y = uniformity (the
                           `geometry/uniformity` metric, else the mean of the image and text
                           uniformities), coloured by a metric (the first zeroshot top-1).
`rows` are the sweep's rows (`jaxclr.sweep`: run name, grid values, seed, final metrics);
a figure whose data is missing (e.g. no geometry evals) is left out.
"""
from __future__ import annotations

import io
import math
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jaxclr import paths  # noqa: E402
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
    lines = aggregate.group(rows, others)
    for ax, metric in zip(axes, metrics):
        for label, members in lines.items():
            points = aggregate.group(members, [param])
            x = [xs[group[0][param]] for group in points.values()]
            stats = [aggregate.summarise(group, [metric])[metric] for group in points.values()]
            mean = [m for m, _, _ in stats]
            err = [s if n > 1 else 0.0 for _, s, n in stats]
            order = np.argsort(x)
            ax.errorbar(np.asarray(x)[order], np.asarray(mean)[order], yerr=np.asarray(err)[order],
                        marker="o", capsize=3, label=label if others else None)
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel(param, fontsize=8)
        if labels is not None:
            ax.set_xticks(range(len(labels)), labels, fontsize=7)
    if others and len(lines) > 1:
        axes[0].legend(fontsize=7)
    fig.suptitle(f"final metrics against {param} (mean +- sample std over seeds)")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return fig


def loss_curves(curves: dict[str, tuple[list[int], list[float]]]):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, (steps, losses) in curves.items():
        ax.plot(steps, losses, marker="." if len(steps) < 20 else None, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("train loss")
    if len(curves) <= 12:
        ax.legend(fontsize=7)
    ax.set_title("train loss per run")
    return fig


def uniformity(row: dict) -> float | None:
    if UNIFORMITY in row:
        return row[UNIFORMITY]
    if all(k in row for k in UNIFORMITY_PARTS):
        return float(np.mean([row[k] for k in UNIFORMITY_PARTS]))
    return None


def alignment_uniformity(rows: list[dict], color: str | None):
    points = [(row[ALIGNMENT], uniformity(row), row.get(color, math.nan) if color else math.nan, row["run"])
              for row in rows if ALIGNMENT in row and uniformity(row) is not None]
    if not points:
        return None
    x, y, c, names = zip(*points)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    if color:
        dots = ax.scatter(x, y, c=c, cmap="viridis")
        fig.colorbar(dots, ax=ax, label=color)
    else:
        ax.scatter(x, y)
    for xi, yi, name in zip(x, y, names):
        ax.annotate(name, (xi, yi), fontsize=6, alpha=0.7)
    ax.set_xlabel(f"{ALIGNMENT} (lower: positives closer)")
    ax.set_ylabel(("uniformity" if UNIFORMITY in rows[0] else "mean image/text uniformity") + " (lower: more uniform)")
    ax.set_title("alignment-uniformity plane, one point per run")
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
        written.append(save(loss_curves(curves), out / "loss_curves.png"))
    fig = alignment_uniformity(rows, first_top1(metrics))
    if fig is not None:
        written.append(save(fig, out / "alignment_uniformity.png"))
    return written
