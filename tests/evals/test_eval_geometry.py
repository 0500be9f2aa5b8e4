"""jaxclr.evals.geometry: alignment, uniformity and gap metrics against a float64 numpy reference.

Needs ``jaxclr.losses`` (alignment / uniformity / cross_uniformity).
"""
import numpy as np
import pytest

from jaxclr.evals import retrieval
from tests.helpers import random_unit, unit


def _geometry_reference(u, v):
    u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
    n = len(u)
    off = ~np.eye(n, dtype=bool)

    def log_mean_exp(sq):
        return np.log(np.mean(np.exp(-2.0 * sq[off])))

    sq_uv = ((u[:, None] - v[None]) ** 2).sum(-1)
    return {
        "alignment": np.mean(((u - v) ** 2).sum(1)),
        "uniformity_img": log_mean_exp(((u[:, None] - u[None]) ** 2).sum(-1)),
        "uniformity_txt": log_mean_exp(((v[:, None] - v[None]) ** 2).sum(-1)),
        "cross_uniformity": log_mean_exp(sq_uv),
        "gap_centroid_distance": np.linalg.norm(u.mean(0) - v.mean(0)),
        "mean_positive_cosine": np.mean((u * v).sum(1)),
        "relative_alignment": np.mean(np.diag(sq_uv) - np.where(off, sq_uv, np.inf).min(1)),
    }


def test_geometry_of_identical_embeddings():
    from jaxclr.evals.geometry import geometry_metrics

    x = random_unit(32, 8, seed=13)
    out = geometry_metrics(x, x)
    assert out["alignment"] == pytest.approx(0.0, abs=1e-6)
    assert out["gap_centroid_distance"] == pytest.approx(0.0, abs=1e-7)
    assert out["mean_positive_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert out["cross_uniformity"] == pytest.approx(out["uniformity_img"], abs=1e-5)


@pytest.mark.parametrize("chunk_rows", [None, 5])
def test_geometry_matches_numpy_reference(chunk_rows):
    from jaxclr.evals.geometry import geometry_metrics

    u = random_unit(37, 6, seed=14)
    v = unit(u + 0.5 * np.random.default_rng(15).normal(size=u.shape) + 0.3).astype(np.float32)
    out = geometry_metrics(u, v, chunk_rows=chunk_rows)
    ref = _geometry_reference(u, v)
    assert set(out) == set(ref) and all(isinstance(value, float) for value in out.values())
    for key, value in ref.items():
        assert out[key] == pytest.approx(value, rel=1e-5, abs=1e-5), key


def test_geometry_max_points_uses_an_even_subset_for_uniformity_only():
    from jaxclr.evals.geometry import geometry_metrics

    u = random_unit(40, 6, seed=16)
    v = random_unit(40, 6, seed=17)
    out = geometry_metrics(u, v, max_points=10)
    subset = _geometry_reference(u[::4], v[::4])
    full = _geometry_reference(u, v)
    for key in ("uniformity_img", "uniformity_txt", "cross_uniformity"):
        assert out[key] == pytest.approx(subset[key], rel=1e-5, abs=1e-5), key
    for key in ("alignment", "gap_centroid_distance", "mean_positive_cosine", "relative_alignment"):
        assert out[key] == pytest.approx(full[key], rel=1e-5, abs=1e-5), key


def test_geometry_of_nonfinite_embeddings_is_nan():
    from jaxclr.evals.geometry import METRICS, geometry_metrics

    x = random_unit(16, 8, seed=30)
    one_nan = x.copy()
    one_nan[4, 2] = np.nan
    for u, v in ((np.full_like(x, np.nan), x), (x, one_nan), (one_nan, one_nan)):
        out = geometry_metrics(u, v)
        assert tuple(out) == METRICS and all(np.isnan(value) for value in out.values())


def test_geometry_of_degenerate_and_random_embeddings():
    from jaxclr.evals.geometry import geometry_metrics

    const = np.tile(random_unit(1, 8, seed=31), (32, 1))
    out = geometry_metrics(const, const)
    # collapsed: perfectly aligned, but uniformity at its worst (log mean exp(0) = 0), and no
    # positive closer than the nearest negative
    assert out["uniformity_img"] == out["uniformity_txt"] == out["cross_uniformity"] == pytest.approx(0.0, abs=1e-6)
    assert out["relative_alignment"] == pytest.approx(0.0, abs=1e-6)
    out = geometry_metrics(random_unit(2000, 32, seed=32), random_unit(2000, 32, seed=33), max_points=512)
    assert abs(out["mean_positive_cosine"]) < 0.02 and out["alignment"] == pytest.approx(2.0, abs=0.05)
    assert out["gap_centroid_distance"] < 0.1


def test_geometry_and_retrieval_under_an_ambient_mesh():
    """Inside the train loop's ``jax.set_mesh``: N = 37 does not divide the 8 devices, so the
    uniformity terms use 32 evenly spread pairs; all other metrics are unchanged."""
    import jax

    from jaxclr.evals.geometry import geometry_metrics

    u = random_unit(37, 6, seed=18)
    v = random_unit(37, 6, seed=19)
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    with jax.set_mesh(mesh):
        out = geometry_metrics(u, v)
        recall = retrieval.recall_at_k(u, v)
    subset = _geometry_reference(*(x[np.arange(32) * 37 // 32] for x in (u, v)))
    full = _geometry_reference(u, v)
    for key in ("uniformity_img", "uniformity_txt", "cross_uniformity"):
        assert out[key] == pytest.approx(subset[key], rel=1e-5, abs=1e-5), key
    assert out["relative_alignment"] == pytest.approx(full["relative_alignment"], rel=1e-5, abs=1e-5)
    assert recall == retrieval.recall_at_k(u, v)
