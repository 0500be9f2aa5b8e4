"""Representation geometry of paired embeddings: alignment, uniformity, modality gap.

Alignment and (cross-)uniformity are the objectives of ``jaxclr.losses`` evaluated on the eval
set; the gap metrics (centroid distance, mean positive cosine, relative alignment) are defined
in docs/reference.md ("Gap metrics"), tolerance in "Measures the studies use". Inputs are
L2-normalised ``zimg, ztxt`` [N, D], row i a pair.
"""
import jax
import jax.numpy as jnp
import numpy as np

from jaxclr.evals.retrieval import default_chunk_rows, map_row_chunks
from jaxclr.losses import alignment, cross_uniformity, uniformity
from jaxclr.losses.sharding import resolve

_HIGHEST = jax.lax.Precision.HIGHEST
# Jitted once here: called eagerly, the engine's shard_map / custom-VJP functions are new objects
# on every call, so each eval compiled them again and host memory grew ~3 MiB per call (found by
# tests/test_host_memory.py). jit's cache is keyed on shapes and the ambient mesh.
_alignment, _uniformity, _cross_uniformity = jax.jit(alignment), jax.jit(uniformity), jax.jit(cross_uniformity)
METRICS = ("alignment", "uniformity_img", "uniformity_txt", "cross_uniformity", "gap_centroid_distance",
           "mean_positive_cosine", "relative_alignment")


@jax.jit
def _min_negative_sq_dist(u, row_index, v):
    """Per row of ``u``, min over j != row_index of ||u - v_j||^2."""
    sq = (jnp.sum(u * u, axis=1, keepdims=True) + jnp.sum(v * v, axis=1)[None, :]
          - 2.0 * jnp.matmul(u, v.T, precision=_HIGHEST))
    own = row_index[:, None] == jnp.arange(v.shape[0])[None, :]
    return jnp.min(jnp.where(own, jnp.inf, sq), axis=1)


def relative_alignment(zimg: np.ndarray, ztxt: np.ndarray, chunk_rows: int | None = None) -> float:
    """1/N sum_i ( ||u_i - v_i||^2 - min_{j != i} ||u_i - v_j||^2 ), in row chunks (needs N >= 2)."""
    u = np.asarray(zimg, np.float32)
    v = np.asarray(ztxt, np.float32)
    n = u.shape[0]
    if n < 2:
        raise ValueError("relative_alignment needs at least 2 pairs")
    positive = np.sum((u.astype(np.float64) - v.astype(np.float64)) ** 2, axis=1)
    chunk_rows = chunk_rows or default_chunk_rows(n, n)
    nearest = map_row_chunks(_min_negative_sq_dist, (u, np.arange(n, dtype=np.int32)), (jnp.asarray(v),),
                             chunk_rows)
    return float(np.mean(positive - nearest.astype(np.float64)))


def _spread_subset(n: int, max_points: int | None, multiple_of: int = 1) -> np.ndarray:
    """Distinct indices spread evenly over range(n): at most ``max_points`` (None = n) of them,
    rounded down to a multiple of ``multiple_of`` (all n when nothing needs dropping)."""
    m = n if max_points is None else min(n, max_points)
    m -= m % multiple_of
    if m == n:
        return np.arange(n)
    if m < 2:
        raise ValueError(f"uniformity needs >= 2 points per pairwise term, got {m} (multiple of {multiple_of})")
    return np.arange(m) * n // m


def geometry_metrics(zimg: np.ndarray, ztxt: np.ndarray, max_points: int | None = None,
                     chunk_rows: int | None = None) -> dict[str, float]:
    """Geometry of paired embeddings as Python floats.

    Keys: alignment, uniformity_img, uniformity_txt, cross_uniformity, gap_centroid_distance,
    mean_positive_cosine, relative_alignment. ``max_points`` (None = all) caps the pairs used by
    the three pairwise uniformity terms, taken evenly spread over the rows (same rows in both
    modalities); everything else always uses all N pairs. Under an ambient mesh the losses split
    the batch over its data-parallel devices, so that count is rounded down to a multiple of them.
    When any embedding is not finite, every metric is NaN.
    """
    u = np.asarray(zimg, np.float32)
    v = np.asarray(ztxt, np.float32)
    if u.shape != v.shape or u.ndim != 2:
        raise ValueError(f"zimg and ztxt must both be [N, D]; got {u.shape} and {v.shape}")
    if u.shape[0] < 2:
        raise ValueError("geometry metrics need at least 2 pairs")
    if not (np.isfinite(u).all() and np.isfinite(v).all()):
        return dict.fromkeys(METRICS, float("nan"))
    subset = _spread_subset(u.shape[0], max_points, resolve().num_shards)
    su, sv = jnp.asarray(u[subset]), jnp.asarray(v[subset])
    u64, v64 = u.astype(np.float64), v.astype(np.float64)
    return {
        "alignment": float(_alignment(jnp.asarray(u), jnp.asarray(v))),
        "uniformity_img": float(_uniformity(su)),
        "uniformity_txt": float(_uniformity(sv)),
        "cross_uniformity": float(_cross_uniformity(su, sv)),
        "gap_centroid_distance": float(np.linalg.norm(u64.mean(axis=0) - v64.mean(axis=0))),
        "mean_positive_cosine": float(np.mean(np.sum(u64 * v64, axis=1))),
        "relative_alignment": relative_alignment(u, v, chunk_rows),
    }


def tolerance(z: np.ndarray, labels: np.ndarray) -> float:
    """Wang & Liu's tolerance: mean_{i != j, c_i = c_j} z_i.z_j over rows with label != -1.

    NaN when no two rows share a class or when a kept row is not finite (docs/reference.md).
    """
    z, labels = np.asarray(z, np.float64), np.asarray(labels)
    keep = labels != -1
    z, labels = z[keep], labels[keep]
    total, pairs = 0.0, 0
    for c in np.unique(labels):
        zc = z[labels == c]
        s = zc.sum(axis=0)
        total += float(s @ s - np.sum(zc * zc))            # sum over ordered pairs i != j
        pairs += len(zc) * (len(zc) - 1)
    return total / pairs if pairs else float("nan")
