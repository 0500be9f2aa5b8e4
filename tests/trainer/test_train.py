"""End to end: a tiny run learns, evaluates, checkpoints, and resumes exactly."""
import json
import os

import jax
import numpy as np
import pytest

from jaxclr import evaluate, parallel, train
from jaxclr.trainer import state as state_lib
from jaxclr.trainer.checkpoint import Checkpointer
from tests.helpers import read_metrics, tiny_run_config

pytestmark = pytest.mark.slow   # every test here trains a tiny model end to end


@pytest.fixture(scope="module")
def finished_run(data_dir, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run"))
    config = tiny_run_config(data_dir)
    results = train.train(config, workdir)
    return config, workdir, results


def final_params(config, workdir, step):
    mesh = parallel.make_mesh(config.mesh)
    with jax.set_mesh(mesh):
        spec, _ = state_lib.spec(config, mesh)
        ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True)
        state = ckpt.restore(spec.abstract, step=step)
        ckpt.close()
    return jax.device_get(state)


def test_loss_decreases_evals_and_checkpoints(finished_run):
    config, workdir, results = finished_run
    losses = [r["loss"] for r in read_metrics(workdir) if "loss" in r]
    assert len(losses) == 6 and losses[-1] < losses[0] - 0.1
    assert losses[-1] < np.log(config.train.batch_size) - 0.3   # learnt: well below chance
    for name in ("zeroshot/color_top1", "zeroshot/shape_top1", "retrieval/i2t_R@1", "retrieval/t2i_R@10",
                 "geometry/alignment", "geometry/uniformity_img", "geometry/cross_uniformity",
                 "geometry/gap_centroid_distance", "geometry/mean_positive_cosine"):
        assert name in results and np.isfinite(results[name]), name
    assert sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints"))) == [8, 16, 24]
    assert os.path.exists(os.path.join(workdir, "config.json"))
    logged = read_metrics(workdir)
    assert any("loss/clip" in r and "grad_norm" in r and "lr" in r and "scale" in r for r in logged)
    assert any("zeroshot/color_top1" in r and r["step"] == 12 for r in logged)


def test_standalone_evaluate_matches_final_eval(finished_run):
    config, workdir, results = finished_run
    step, again = evaluate.evaluate(config, workdir)
    assert step == 24
    for name, value in results.items():
        np.testing.assert_allclose(again[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_evaluate_geometry_report_matches_the_geometry_evaluator(finished_run):
    config, workdir, results = finished_run
    step, again = evaluate.evaluate(config, workdir, geometry=True)
    out = os.path.join(workdir, "geometry", f"step_{step}")
    with open(os.path.join(out, "geometry.json")) as f:
        report = json.load(f)
    assert report["step"] == 24 and report["num_pairs"] == 64
    for name, value in report["metrics"].items():
        if name != "uniformity":   # the plane's y, not an evaluator metric
            np.testing.assert_allclose(value, again[f"geometry/{name}"], rtol=1e-5, atol=1e-6, err_msg=name)
    for name, value in results.items():   # the shared embeddings give the evaluators' usual numbers
        np.testing.assert_allclose(again[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    for png in ("modality_gap.png", "cosine_histograms.png"):
        with open(os.path.join(out, png), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_stopped_run_resumes_exactly(finished_run, tmp_path):
    config, workdir, _ = finished_run
    resumed = str(tmp_path / "resumed")
    stopped = tiny_run_config(config.data.data_dir)
    stopped.train.stop_at = 13          # stops after step 13 and saves a checkpoint there
    assert train.train(stopped, resumed) == {}
    reader = Checkpointer(os.path.join(resumed, "checkpoints"), read_only=True)
    assert reader.all_steps() == [8, 13]
    reader.close()
    train.train(tiny_run_config(config.data.data_dir), resumed)   # resumes from 13, runs to 24
    want, got = final_params(config, workdir, 24), final_params(config, resumed, 24)
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
        np.testing.assert_array_equal(a, b)


def test_damaged_latest_checkpoint_falls_back_and_resumes_exactly(finished_run, tmp_path, capsys):
    """The newest checkpoint is damaged: the run reports it in one line, moves it aside, resumes
    from the previous good step and ends bit-identical to the undamaged run."""
    import shutil
    config, workdir, _ = finished_run
    copy = str(tmp_path / "copy")
    shutil.copytree(workdir, copy)
    ckpt_dir = os.path.join(copy, "checkpoints")
    for root, _, files in os.walk(os.path.join(ckpt_dir, "24", "state")):
        for name in files:
            if name == "_METADATA":
                os.remove(os.path.join(root, name))
    train.train(tiny_run_config(config.data.data_dir), copy)
    err = capsys.readouterr().err
    assert sum("24 does not restore" in line for line in err.splitlines()) == 1
    assert os.path.isdir(os.path.join(ckpt_dir, "24.corrupt"))
    want, got = final_params(config, workdir, 24), final_params(config, copy, 24)
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
        np.testing.assert_array_equal(a, b)
