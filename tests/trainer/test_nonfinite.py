"""The non-finite guard: a step whose loss, gradients or update are not finite changes nothing but
its counters, and `train.on_nonfinite` stops ('stop') or counts ('skip', up to `train.max_skips`)."""
import os

import jax
import ml_collections
import numpy as np
import optax
import pytest

from jaxclr import parallel, train
from jaxclr.trainer import nonfinite, optim
from jaxclr.trainer import state as state_lib
from jaxclr.trainer import step as step_lib
from jaxclr.trainer.checkpoint import Checkpointer
from tests.helpers import random_batch, read_metrics, set_log_scale, tiny_run_config

# ----------------------------------------------------------------------------- the compiled step


def _step_and_state(config):
    mesh = parallel.make_mesh(config.mesh)
    batch = random_batch(config)
    with jax.set_mesh(mesh):
        spec, state = state_lib.create(config, mesh)
        train_step = step_lib.make_train_step(config, spec, mesh)
    return mesh, train_step, state, parallel.global_batch(batch, mesh)


def _set_log_scale(state, value):
    return {**state, "params": set_log_scale(state["params"], value)}


def _assert_same_and_finite(before, after):
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
        np.testing.assert_array_equal(a, b)
        assert np.all(np.isfinite(b))


def test_nonfinite_loss_leaves_params_and_opt_state_bit_identical(data_dir):
    """log-scale 200: exp(200) overflows float32, so the clip loss and every gradient are NaN."""
    config = tiny_run_config(data_dir)
    mesh, train_step, state, batch = _step_and_state(config)
    state = _set_log_scale(state, 200.0)
    kept = jax.device_get((state["params"], state["opt_state"]))    # the step donates its input
    with jax.set_mesh(mesh):
        for step in (1, 2):
            state, metrics = train_step(state, batch)
            metrics = jax.device_get(metrics)
            _assert_same_and_finite(kept, jax.device_get((state["params"], state["opt_state"])))
            assert metrics["nonfinite"] == 1.0
            assert metrics["nonfinite/loss"] == metrics["nonfinite/loss/clip"] == metrics["nonfinite/grads"] == 1.0
            assert int(state["step"]) == step           # the step counter still advances
            assert (metrics["train/skipped_steps"], metrics["train/skips_in_a_row"]) == (step, step)
        state, metrics = train_step(_set_log_scale(state, np.log(10.0)), batch)   # finite again: applied
    assert metrics["nonfinite"] == 0.0 and not any(v for k, v in metrics.items() if k.startswith("nonfinite/"))
    assert (int(state["skipped"]), int(state["skips_in_a_row"]), int(state["max_skips_in_a_row"])) == (2, 0, 2)
    counts = [int(c) for _, c in optax.tree_utils.tree_get_all_with_path(state["opt_state"], "count")]
    assert counts and set(counts) == {1}                            # the optimiser counts applied updates only
    assert float(metrics["lr"]) == float(optim.schedule(config.optim, config.train.total_steps)(0))


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")   # lr 1e39 -> inf in float32, on purpose
def test_nonfinite_update_with_finite_loss_is_not_applied(data_dir):
    """lr beyond float32: the loss and gradients are finite, the new params are not."""
    config = tiny_run_config(data_dir)
    config.optim.update(lr=1e39, warmup_steps=0)
    mesh, train_step, state, batch = _step_and_state(config)
    kept = jax.device_get((state["params"], state["opt_state"]))
    with jax.set_mesh(mesh):
        state, metrics = train_step(state, batch)
    metrics = jax.device_get(metrics)
    _assert_same_and_finite(kept, jax.device_get((state["params"], state["opt_state"])))
    assert np.isfinite(metrics["loss"]) and metrics["nonfinite/loss"] == metrics["nonfinite/grads"] == 0.0
    assert metrics["nonfinite"] == metrics["nonfinite/update"] == 1.0


# ----------------------------------------------------------------------------- the host-side policy


def _train_cfg(**kw):
    return ml_collections.ConfigDict({"on_nonfinite": "stop", "max_skips": 3, **kw})


def _metrics(skipped, in_a_row, longest, nonfinite=0.0, **flags):
    return {"loss": 1.0, "nonfinite": nonfinite, "train/skipped_steps": skipped, "train/skips_in_a_row": in_a_row,
            "train/max_skips_in_a_row": longest, **{f"nonfinite/{k}": v for k, v in flags.items()}}


def test_guard_validates_its_config_keys():
    with pytest.raises(ValueError, match="train.on_nonfinite='ignore' is not one of .*'stop', 'skip'"):
        nonfinite.NonFiniteGuard(_train_cfg(on_nonfinite="ignore"), 0)
    with pytest.raises(ValueError, match="train.max_skips must be >= 1"):
        nonfinite.NonFiniteGuard(_train_cfg(on_nonfinite="skip", max_skips=0), 0)


def test_guard_stop_names_the_steps_and_terms():
    guard = nonfinite.NonFiniteGuard(_train_cfg(), start_step=0)
    assert guard.check(4, _metrics(0, 0, 0)) is None
    with pytest.raises(nonfinite.NonFiniteLoss) as err:
        guard.check(8, _metrics(2, 2, 2, nonfinite=1.0, grads=1.0, loss=1.0, update=1.0, **{"loss/clip": 1.0}))
    message = str(err.value)
    assert "\n" not in message
    assert "at steps 7-8" in message and "non-finite at step 8: loss, loss/clip, grads, update" in message
    assert "lower optim.lr" in message
    guard = nonfinite.NonFiniteGuard(_train_cfg(), start_step=8, skipped=2)   # an isolated skip in 9-12
    with pytest.raises(nonfinite.NonFiniteLoss, match="at 1 of steps 9-12.*step 12 itself was finite"):
        guard.check(12, _metrics(3, 0, 2))


def test_guard_skip_counts_and_stops_after_max_skips_in_a_row():
    guard = nonfinite.NonFiniteGuard(_train_cfg(on_nonfinite="skip"), start_step=0)
    assert "at step 4" in guard.check(4, _metrics(1, 1, 1, nonfinite=1.0, loss=1.0))
    assert "at 1 of steps 5-8" in guard.check(8, _metrics(2, 0, 2))      # two in a row, then finite again
    assert guard.check(12, _metrics(2, 0, 2)) is None
    with pytest.raises(nonfinite.NonFiniteLoss, match=r"after 3 skipped steps in a row \(train.max_skips=3\)"):
        guard.check(16, _metrics(5, 0, 3))                                 # 3 in a row that ended before 16


# ----------------------------------------------------------------------------- end to end


def _diverging_config(data_dir, **train_kw):
    """lr 1e6: step 2 (the first with lr > 0) blows the params up, the loss is NaN from step 3 on."""
    config = tiny_run_config(data_dir)
    config.optim.lr = 1e6
    config.train.update(total_steps=12, **train_kw)
    config.checkpoint.every = 2
    config.eval.every = 0
    return config


def _checkpoints_are_finite(config, workdir):
    """Restores every checkpoint of the run; returns their steps after checking all is finite."""
    mesh = parallel.make_mesh(config.mesh)
    with jax.set_mesh(mesh), Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True) as ckpt:
        spec, _ = state_lib.spec(config, mesh)
        steps = ckpt.all_steps()
        for step in steps:
            state = jax.device_get(ckpt.restore(spec.abstract, step=step))
            assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state["params"])), step
    return steps


@pytest.mark.slow
def test_diverged_run_stops_with_the_step_and_saves_no_bad_checkpoint(data_dir, tmp_path):
    config = _diverging_config(data_dir)
    assert config.train.on_nonfinite == "stop"      # the default
    workdir = str(tmp_path / "run")
    with pytest.raises(nonfinite.NonFiniteLoss, match=r"at steps 3-4,.*non-finite at step 4: loss, loss/clip"):
        train.train(config, workdir)
    assert _checkpoints_are_finite(config, workdir) == [2]    # saved before step 3, nothing after
    last = read_metrics(workdir)[-1]
    assert last["step"] == 4 and last["nonfinite"] == 1.0 and last["train/skipped_steps"] == 2


@pytest.mark.slow
def test_skip_mode_counts_skipped_steps_and_stops_after_max_skips(data_dir, tmp_path):
    config = _diverging_config(data_dir, on_nonfinite="skip", max_skips=100)
    workdir = str(tmp_path / "skip")
    results = train.train(config, workdir)              # every step from 3 on is skipped: 10 of 12
    logged = {r["step"]: r for r in read_metrics(workdir) if "train/skipped_steps" in r}
    assert [logged[s]["train/skipped_steps"] for s in (4, 8, 12)] == [2, 6, 10]
    assert all(np.isnan(results[name]) for name in ("zeroshot/color_top1", "retrieval/i2t_R@1"))   # no score
    assert _checkpoints_are_finite(config, workdir)[-1] == 12

    config = _diverging_config(data_dir, on_nonfinite="skip", max_skips=2)
    with pytest.raises(nonfinite.NonFiniteLoss, match=r"steps 3-4.*after 2 skipped steps in a row"):
        train.train(config, str(tmp_path / "max_skips"))
