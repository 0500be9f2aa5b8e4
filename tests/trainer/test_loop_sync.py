"""The train loop lets the device run ahead: between log, checkpoint and eval steps the host
waits on nothing the device computes, so it reads and transfers the next batch while steps run.

The test holds each step's outputs back until the host has asked for the next step: a step's
results only exist once the loop has dispatched the step after it. A loop that reads or waits
on a step's results in between would wait for ever; here it waits `patience` seconds, the step is
then let through, and the wait is recorded."""
import threading

import jax
import jax.numpy as jnp
import pytest

from jaxclr import train
from jaxclr.trainer import checksums
from jaxclr.trainer.checkpoint import Checkpointer
from tests.helpers import tiny_run_config

pytestmark = pytest.mark.slow   # two tiny runs end to end


def held_back_run(config, workdir, monkeypatch, patience: float):
    """Trains with the outputs of every step but the sync steps (log, checkpoint, eval, last) held
    back until the next step is dispatched; returns (results, the steps whose results the host
    waited for)."""
    every = [int(config.train.log_every), int(config.checkpoint.every)] + \
            ([int(config.eval.every)] if config.eval.every else [])
    total = int(config.train.total_steps)
    sync = {s for s in range(1, total + 1) if s == total or any(s % e == 0 for e in every)}
    released = {s: threading.Event() for s in range(total + 2)}
    waited = []

    def hold(step):   # runs on the device's side (a host callback inside the computation)
        step = int(step)
        if not released[step].wait(patience):
            waited.append(step)
        return jnp.zeros((), jnp.int32)

    @jax.jit
    def held(state, metrics, step):
        gate = jax.pure_callback(hold, jax.ShapeDtypeStruct((), jnp.int32), step)
        state = {**state, "step": state["step"] + gate}
        return state, {**metrics, "loss": metrics["loss"] + gate.astype(metrics["loss"].dtype)}

    real_set_up = train.set_up

    def set_up(*args):
        run = real_set_up(*args)
        step_fn, step = run.train_step, [run.start]

        def held_step(state, batch):
            released[step[0]].set()             # the host has come back for the next step
            step[0] += 1
            if step[0] in sync:
                released[step[0]].set()
            return held(*step_fn(state, batch), jnp.asarray(step[0], jnp.int32))
        run.train_step = held_step
        return run

    monkeypatch.setattr(train, "set_up", set_up)
    return train.train(config, workdir), waited


def small_config(data_dir, total_steps):
    config = tiny_run_config(data_dir)
    config.train.update(total_steps=total_steps, log_every=5)
    config.checkpoint.every = 5
    config.eval.every = 0
    return config


def test_the_host_waits_on_no_step_between_sync_steps(data_dir, tmp_path, monkeypatch):
    results, waited = held_back_run(small_config(data_dir, 10), str(tmp_path / "run"), monkeypatch, patience=20.0)
    assert waited == [] and "zeroshot/color_top1" in results   # steps 1-4 and 6-9 were held back


def test_a_per_step_wait_is_caught(data_dir, tmp_path, monkeypatch):
    """The check above is live: checksums taken at every step (the cost a save that is not due must
    not pay) read the state back, so the host waits on each held-back step."""
    real_save = Checkpointer.save

    def save_with_checksums_every_step(self, step, state, force=False):
        checksums.state_checksums(state)
        return real_save(self, step, state, force)

    monkeypatch.setattr(Checkpointer, "save", save_with_checksums_every_step)
    _, waited = held_back_run(small_config(data_dir, 5), str(tmp_path / "run"), monkeypatch, patience=1.0)
    assert waited == [1, 2, 3, 4]
