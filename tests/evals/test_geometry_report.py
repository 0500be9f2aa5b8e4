"""jaxclr.evals.geometry_report (numbers + figures of paired embeddings) and evaluate's --geometry
writer, on numpy embeddings (no model)."""
import json

import numpy as np
import pytest
from ml_collections import ConfigDict

from jaxclr.evals import geometry_report as gr
from jaxclr.evals.embed import EvalEmbeddings
from jaxclr.evals.geometry import geometry_metrics
from tests.helpers import random_unit, unit

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _read(out_dir):
    payload = json.loads((out_dir / "geometry.json").read_text())
    for name in gr.FILES[1:]:
        data = (out_dir / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000, name
    return payload


def test_report_files_and_metrics_equal_geometry_metrics(tmp_path):
    u = random_unit(40, 6, seed=1)
    v = unit(u + 0.4 * np.random.default_rng(2).normal(size=u.shape) + 0.2).astype(np.float32)
    out = tmp_path / "geometry" / "step_7"
    returned = gr.write_report(out, u, v, step=7, max_points=16)
    payload = _read(out)
    assert payload == json.loads(json.dumps(returned))
    assert payload["step"] == 7 and payload["num_pairs"] == 40
    expected = geometry_metrics(u, v, max_points=16)
    assert set(payload["metrics"]) == set(expected) | {"uniformity"}
    for key, value in expected.items():
        assert payload["metrics"][key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
    assert payload["metrics"]["uniformity"] == pytest.approx(
        0.5 * (expected["uniformity_img"] + expected["uniformity_txt"]))
    assert payload["metrics"]["mean_positive_cosine"] == pytest.approx(payload["cosines"]["positive_mean"], abs=1e-6)


def test_pca_of_an_offset_pair_shows_the_offset():
    """u_i = (c, s w_i), v_i = (-c, s w_i): the offset 2c e0 is orthogonal to the shared part, so
    e0 is the first principal component and the 2-D centroids are 2c apart; positive cosine is
    -c^2 + s^2 for every pair; PC1's variance share is c^2 / (c^2 + s^2 E||w - mean w||^2)."""
    c, s, n = 0.8, 0.6, 30
    w = random_unit(n, 5, seed=3).astype(np.float64)
    u = np.concatenate([np.full((n, 1), c), s * w], axis=1)
    v = np.concatenate([np.full((n, 1), -c), s * w], axis=1)
    report = gr.compute(u, v)
    pca = report.numbers["pca"]
    assert pca["centroid_distance"] == pytest.approx(2 * c, abs=1e-6)
    assert report.numbers["metrics"]["gap_centroid_distance"] == pytest.approx(2 * c, abs=1e-6)
    assert np.allclose(pca["centroid_img"], [c, 0.0], atol=1e-6)    # sign: the e0 coordinate is positive
    assert np.allclose(pca["centroid_txt"], [-c, 0.0], atol=1e-6)
    spread = np.mean(np.sum((w - w.mean(0)) ** 2, axis=1))
    assert pca["explained_variance_ratio"][0] == pytest.approx(c * c / (c * c + s * s * spread), rel=1e-6)
    assert report.numbers["cosines"]["positive_mean"] == pytest.approx(s * s - c * c, abs=1e-6)
    assert report.numbers["cosines"]["positive_std"] == pytest.approx(0.0, abs=1e-6)
    assert np.allclose(report.projection_img[:, 0], c) and np.allclose(report.projection_txt[:, 0], -c)


def test_cosine_stats_hand_example():
    """u = I_3, v = (e0, e0, e2): positives (1, 0, 1); of the 6 negatives only u_0.v_1 = 1."""
    u = np.eye(3)
    v = np.eye(3)[[0, 0, 2]]
    stats = gr.cosine_stats(u, v)
    assert stats["positive_mean"] == pytest.approx(2 / 3)
    assert stats["positive_std"] == pytest.approx(np.sqrt(2 / 9))
    assert stats["negative_mean"] == pytest.approx(1 / 6)
    assert stats["negative_std"] == pytest.approx(np.sqrt(1 / 6 - 1 / 36))
    assert sorted(gr.negative_sample(u, v, count=100)) == [0, 0, 0, 0, 0, 1]   # all 6 pairs


def test_cosine_stats_match_brute_force_and_the_sample_is_seeded_and_off_diagonal():
    u, v = random_unit(25, 4, seed=4), random_unit(25, 4, seed=5)
    sims = u.astype(np.float64) @ v.astype(np.float64).T
    off = sims[~np.eye(25, dtype=bool)]
    stats = gr.cosine_stats(u, v)
    assert stats["negative_mean"] == pytest.approx(off.mean(), abs=1e-9)
    assert stats["negative_std"] == pytest.approx(off.std(), abs=1e-9)
    assert stats["positive_std"] == pytest.approx(np.diag(sims).std(), abs=1e-9)
    sample = gr.negative_sample(u, v, count=200, seed=0)
    assert sample.shape == (200,)
    assert np.array_equal(sample, gr.negative_sample(u, v, count=200, seed=0))
    assert not np.array_equal(sample, gr.negative_sample(u, v, count=200, seed=1))
    # u == v: a diagonal pair would give cosine 1; every off-diagonal one is below it
    assert gr.negative_sample(u, u, count=500).max() < 1 - 1e-3


def test_tolerance_hand_example():
    """Class 0 = (e0, e1, e0): ordered pairs give 0, 1, 0 twice -> sum 2 over 6; class 1 = (e2, e2):
    sum 2 over 2; label -1 rows are left out: T = 4 / 8."""
    e = np.eye(3)
    z = e[[0, 1, 0, 2, 2, 1]]
    assert gr.tolerance(z, np.array([0, 0, 0, 1, 1, -1])) == pytest.approx(0.5)
    assert np.isnan(gr.tolerance(z, np.array([0, 1, 2, -1, -1, -1])))   # no two rows share a class
    report = gr.compute(z, z, labels={"digit": np.array([0, 0, 0, 1, 1, -1])})
    assert report.numbers["tolerance"] == {"digit": pytest.approx(0.5)}
    with pytest.raises(ValueError, match="labels"):
        gr.compute(z, z, labels={"digit": np.zeros(5, np.int32)})


def test_non_finite_embeddings_give_nan_numbers_and_still_write_figures(tmp_path):
    u, v = random_unit(8, 4, seed=6), random_unit(8, 4, seed=7)
    u[3, 1] = np.nan
    payload = gr.write_report(tmp_path, u, v, step=2, labels={"digit": np.arange(8) % 2})
    assert _read(tmp_path) == json.loads(json.dumps(payload))
    assert all(np.isnan(x) for x in payload["metrics"].values())
    assert all(np.isnan(payload["cosines"][k]) for k in ("positive_mean", "negative_mean", "negative_std"))
    assert np.isnan(payload["pca"]["centroid_distance"]) and np.isnan(payload["tolerance"]["digit"])


def test_constant_embeddings(tmp_path):
    e0 = np.zeros((6, 4), np.float32)
    e0[:, 0] = 1.0
    payload = gr.write_report(tmp_path, e0, e0)
    _read(tmp_path)
    assert payload["metrics"]["alignment"] == pytest.approx(0.0)
    assert payload["metrics"]["uniformity_img"] == pytest.approx(0.0)      # log mean exp(-2 * 0)
    assert payload["cosines"]["positive_mean"] == pytest.approx(1.0)
    assert payload["cosines"]["negative_mean"] == pytest.approx(1.0)
    assert payload["cosines"]["negative_std"] == pytest.approx(0.0, abs=1e-7)
    assert payload["pca"]["explained_variance_ratio"] == [0.0, 0.0]
    assert payload["pca"]["centroid_distance"] == pytest.approx(0.0)


def test_evaluate_writer_uses_first_captions_and_the_step_folder(tmp_path):
    from jaxclr import evaluate

    img = random_unit(4, 5, seed=8)
    txt = random_unit(6, 5, seed=9)
    emb = EvalEmbeddings(image=img, text=txt, text_image=np.array([0, 0, 1, 2, 3, 3], np.int32),
                         text_group=np.arange(6, dtype=np.int32), labels={"digit": np.array([1, 1, -1, 1], np.int32)})
    config = ConfigDict({"eval": {"geometry_max_points": None}})
    payload = evaluate.write_geometry_report(config, str(tmp_path), 12, emb)
    assert _read(tmp_path / "geometry" / "step_12") == json.loads(json.dumps(payload))
    expected = geometry_metrics(img, txt[[0, 2, 3, 4]])
    assert payload["step"] == 12
    assert payload["metrics"]["relative_alignment"] == pytest.approx(expected["relative_alignment"], abs=1e-6)
    assert payload["tolerance"]["digit"] == pytest.approx(
        np.mean([img[a] @ img[b] for a, b in ((0, 1), (0, 3), (1, 3))]), abs=1e-6)
    one = EvalEmbeddings(image=img, text=txt[:2], text_image=np.array([1, 1], np.int32),
                         text_group=np.arange(2, dtype=np.int32))
    with pytest.raises(evaluate.GeometryReportError, match="--geometry: .* 1 image"):
        evaluate.write_geometry_report(config, str(tmp_path), 12, one)
