"""Geometry report of paired embeddings: numbers (``geometry.json``) and two figures (PNG).

docs/reference.md, "Geometry" and "Measures the studies use". Inputs are ``zimg, ztxt`` [N, D]
float arrays, L2-normalised (as the towers return them; not normalised again here), row i a
matched pair, N >= 2. ``write_report(out_dir, zimg, ztxt, ...)`` writes into ``out_dir``:

  geometry.json       {"step", "num_pairs", "metrics", "cosines", "pca", "tolerance"}:
                      metrics   = ``geometry.geometry_metrics`` (same ``max_points``) plus
                                  ``uniformity`` = 1/2 (uniformity_img + uniformity_txt), the
                                  y of the alignment-uniformity plane;
                      cosines   = mean/std of the positive cosines u_i.v_i (all N) and of the
                                  negative cosines u_i.v_j, i != j (all N(N-1) pairs, exact,
                                  in O(N D^2)); ``negative_sample`` = how many random negative
                                  pairs the histogram draws;
                      pca       = the 2-D PCA of the union of both modalities (fit on all 2N
                                  rows): explained variance ratio of each component, the image
                                  and text centroids in that plane and their distance;
                      tolerance = per label task, mean image-image cosine over pairs of
                                  distinct labelled examples of the same class (Wang & Liu
                                  2021; label -1 = not applicable; NaN when no such pair);
  modality_gap.png    the PCA scatter, image and text in two colours, centroids marked,
                      the first ``lines`` matched pairs joined by thin lines;
  cosine_histograms.png  positive cosines against a seeded random sample of negative ones,
                      one axis, means marked.

When an embedding is not finite every number is NaN (json ``NaN``) and each figure only says
"non-finite embeddings". Files go through epath, so ``out_dir`` may be a URL.
"""
from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jaxclr import paths  # noqa: E402
from jaxclr.evals.geometry import geometry_metrics, tolerance  # noqa: E402

FILES = ("geometry.json", "modality_gap.png", "cosine_histograms.png")
_NAN = float("nan")


@dataclasses.dataclass(frozen=True)
class GeometryReport:
    """``numbers``: the json payload (without step); the rest is what the figures draw."""
    numbers: dict
    projection_img: np.ndarray     # [N, 2]
    projection_txt: np.ndarray     # [N, 2]
    positive: np.ndarray           # [N] u_i.v_i
    negative_sample: np.ndarray    # [S] u_i.v_j, i != j
    finite: bool


def cosine_stats(u: np.ndarray, v: np.ndarray) -> dict[str, float]:
    """Mean/std (population) of u_i.v_i over i and of u_i.v_j over all i != j (float64, exact)."""
    u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
    n = u.shape[0]
    pos = np.sum(u * v, axis=1)
    pairs = n * (n - 1)
    neg_sum = float(u.sum(axis=0) @ v.sum(axis=0) - pos.sum())
    # sum_{i,j} (u_i.v_j)^2 = ||U V^T||_F^2 = <U^T U, V^T V>_F: two D x D Gram matrices, no N x N one
    neg_sq = float(np.sum((u.T @ u) * (v.T @ v)) - np.sum(pos * pos))
    neg_mean = neg_sum / pairs
    return {"positive_mean": float(pos.mean()), "positive_std": float(pos.std()),
            "negative_mean": neg_mean, "negative_std": float(np.sqrt(max(neg_sq / pairs - neg_mean ** 2, 0.0)))}


def negative_sample(u: np.ndarray, v: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """Cosines u_i.v_j of ``count`` pairs i != j drawn uniformly (with replacement, fixed seed);
    all N(N-1) pairs, in row-major order, when that is no more than ``count``."""
    u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
    n = u.shape[0]
    if n * (n - 1) <= count:
        i, j = np.nonzero(~np.eye(n, dtype=bool))
    else:
        rng = np.random.default_rng(seed)
        i = rng.integers(0, n, size=count)
        j = (i + rng.integers(1, n, size=count)) % n       # uniform over j != i
    step = 8192   # pairs per chunk: keeps the gathered rows small when D is large
    return np.concatenate([np.einsum("kd,kd->k", u[i[a:a + step]], v[j[a:a + step]])
                           for a in range(0, len(i), step)] or [np.zeros(0)])


def pca_2d(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Projects both modalities on the first 2 principal components of their union.

    Returns (proj_u [N, 2], proj_v [N, 2], explained variance ratio [2]; 0 where the union has
    no variance). Each component's sign makes its largest-magnitude coordinate positive.
    """
    x = np.concatenate([np.asarray(u, np.float64), np.asarray(v, np.float64)])
    centred = x - x.mean(axis=0)
    eigval, eigvec = np.linalg.eigh(centred.T @ centred)   # D x D scatter matrix, ascending eigenvalues
    order = np.argsort(eigval)[::-1][:2]
    comps = np.zeros((2, x.shape[1]))
    comps[:len(order)] = eigvec[:, order].T
    signs = np.sign(comps[np.arange(2), np.argmax(np.abs(comps), axis=1)])
    comps *= np.where(signs == 0, 1.0, signs)[:, None]
    var = np.zeros(2)
    var[:len(order)] = np.maximum(eigval[order], 0.0)
    total = float(np.sum(centred * centred))
    ratio = var / total if total > 0 else np.zeros(2)
    proj = centred @ comps.T
    return proj[:len(u)], proj[len(u):], ratio


def compute(zimg, ztxt, labels: Mapping[str, np.ndarray] | None = None, *, max_points: int | None = 8192,
            negatives: int = 100_000, seed: int = 0) -> GeometryReport:
    """Everything ``write_report`` writes, as numbers and arrays (see the module docstring)."""
    u, v = np.asarray(zimg, np.float32), np.asarray(ztxt, np.float32)
    metrics = geometry_metrics(u, v, max_points=max_points)   # checks shapes and N >= 2
    metrics["uniformity"] = 0.5 * (metrics["uniformity_img"] + metrics["uniformity_txt"])
    n = u.shape[0]
    finite = bool(np.isfinite(u).all() and np.isfinite(v).all())
    labels = {task: np.asarray(values) for task, values in (labels or {}).items()}
    for task, values in labels.items():
        if values.shape != (n,):
            raise ValueError(f"labels[{task!r}] must have shape ({n},), got {values.shape}")
    if not finite:
        empty2 = np.zeros((0, 2))
        numbers = {"num_pairs": n, "metrics": metrics,
                   "cosines": {"positive_mean": _NAN, "positive_std": _NAN, "negative_mean": _NAN,
                               "negative_std": _NAN, "negative_sample": 0},
                   "pca": {"explained_variance_ratio": [_NAN, _NAN], "centroid_img": [_NAN, _NAN],
                           "centroid_txt": [_NAN, _NAN], "centroid_distance": _NAN},
                   "tolerance": dict.fromkeys(labels, _NAN)}
        return GeometryReport(numbers, empty2, empty2, np.zeros(0), np.zeros(0), False)
    cosines = cosine_stats(u, v)
    sample = negative_sample(u, v, negatives, seed)
    cosines["negative_sample"] = int(sample.size)
    pu, pv, ratio = pca_2d(u, v)
    cu, cv = pu.mean(axis=0), pv.mean(axis=0)
    numbers = {"num_pairs": n, "metrics": metrics, "cosines": cosines,
               "pca": {"explained_variance_ratio": ratio.tolist(), "centroid_img": cu.tolist(),
                       "centroid_txt": cv.tolist(), "centroid_distance": float(np.linalg.norm(cu - cv))},
               "tolerance": {task: tolerance(u, values) for task, values in labels.items()}}
    positive = np.sum(u.astype(np.float64) * v.astype(np.float64), axis=1)
    return GeometryReport(numbers, pu, pv, positive, sample, True)


def _non_finite(ax) -> None:
    ax.text(0.5, 0.5, "non-finite embeddings", ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def plot_modality_gap(report: GeometryReport, max_points: int = 2000, lines: int = 50):
    """The PCA scatter (at most ``max_points`` pairs, evenly spread) with centroids and pair lines."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    if not report.finite:
        _non_finite(ax)
        return fig
    pu, pv = report.projection_img, report.projection_txt
    rows = np.arange(len(pu)) if len(pu) <= max_points else np.arange(max_points) * len(pu) // max_points
    for i in rows[:lines]:
        ax.plot([pu[i, 0], pv[i, 0]], [pu[i, 1], pv[i, 1]], color="0.6", lw=0.4, zorder=1)
    ax.scatter(pu[rows, 0], pu[rows, 1], s=6, alpha=0.6, color="tab:blue", label="image", zorder=2)
    ax.scatter(pv[rows, 0], pv[rows, 1], s=6, alpha=0.6, color="tab:orange", label="text", zorder=2)
    pca = report.numbers["pca"]
    for key, color, name in (("centroid_img", "navy", "image centroid"), ("centroid_txt", "darkred", "text centroid")):
        ax.scatter(*pca[key], marker="X", s=140, color=color, edgecolor="white", label=name, zorder=3)
    ratio = pca["explained_variance_ratio"]
    ax.set_xlabel(f"PC1 ({100 * ratio[0]:.1f}% var)")
    ax.set_ylabel(f"PC2 ({100 * ratio[1]:.1f}% var)")
    ax.set_title(f"modality gap: centroid distance {report.numbers['metrics']['gap_centroid_distance']:.3f}")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(fontsize=8, loc="best")
    return fig


def plot_cosines(report: GeometryReport, bins: int = 60):
    """Histograms (densities) of positive and sampled negative cosines on one axis, means marked."""
    fig, ax = plt.subplots(figsize=(6, 4))
    if not report.finite:
        _non_finite(ax)
        return fig
    cos = report.numbers["cosines"]
    lo = min(report.positive.min(), report.negative_sample.min(initial=1.0))
    hi = max(report.positive.max(), report.negative_sample.max(initial=-1.0))
    edges = np.linspace(lo - 1e-3, hi + 1e-3, bins + 1)
    ax.hist(report.negative_sample, bins=edges, density=True, alpha=0.55, color="tab:gray",
            label=f"negative u_i.v_j (sample of {cos['negative_sample']})")
    ax.hist(report.positive, bins=edges, density=True, alpha=0.55, color="tab:green",
            label=f"positive u_i.v_i ({len(report.positive)})")
    for kind, color in (("negative", "black"), ("positive", "darkgreen")):
        mean = cos[f"{kind}_mean"]
        ax.axvline(mean, color=color, ls="--", lw=1, label=f"{kind} mean {mean:.3f}")
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    return fig


def _write_png(fig, path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    path.write_bytes(buffer.getvalue())


def write_report(out_dir, zimg, ztxt, step: int | None = None, labels: Mapping[str, np.ndarray] | None = None,
                 **kwargs) -> dict:
    """Computes the report (``kwargs`` go to ``compute``) and writes ``FILES`` into ``out_dir``
    (created); returns the json payload."""
    report = compute(zimg, ztxt, labels, **kwargs)
    out = paths.resolve(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"step": step, **report.numbers}
    (out / FILES[0]).write_text(json.dumps(payload, indent=2) + "\n")
    _write_png(plot_modality_gap(report), out / FILES[1])
    _write_png(plot_cosines(report), out / FILES[2])
    return payload

