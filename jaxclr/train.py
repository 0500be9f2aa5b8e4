"""Trains a dual encoder from a config; re-running on the same workdir resumes.

    python -m jaxclr.train --config=configs/clip.py:tiny --workdir=runs/tiny --config.train.total_steps=500

The first start records the resolved config and the environment in the workdir
(`jaxclr.runinfo`); a restart must use the same config except for the keys in
`runinfo.RESUMABLE_KEYS`, or pass `--config.train.allow_config_change=True`.
"""
from __future__ import annotations

import sys
import time

import jax
from absl import app, flags
from absl import logging as absl_logging
from jax.experimental import multihost_utils
from ml_collections import config_flags

from jaxclr import configlib, finished, host_memory, init_from, parallel, paths, runinfo, validate
from jaxclr import state as state_lib
from jaxclr import step as step_lib
from jaxclr.checkpoint import Checkpointer, CheckpointFormatError, NoGoodCheckpoint
from jaxclr.data import datasets, pipeline
from jaxclr.evals import runner, tasks
from jaxclr.evals.report import report_table
from jaxclr.metrics import MetricWriter, Progress
from jaxclr.preemption import PreemptionWatch
from jaxclr.profiler import ProfileWindow
from jaxclr.wandb_writer import WandbWriter

DEFAULT_CONFIG = "configs/default.py"


def say(message: str) -> None:
    """Prints on process 0 only."""
    if jax.process_index() == 0:
        print(message, flush=True)


def train(config, workdir: str) -> dict[str, float]:
    """Runs (or resumes) training; returns the final eval metrics."""
    validate.check(config)   # every problem of the config at once (ConfigError), before anything is built
    host_memory.set_mmap_threshold(config.train.get("malloc_mmap_threshold_kib", 0))   # before the big buffers
    # ------------------------------------------------------------------ mesh
    parallel.initialize()
    mesh = parallel.make_mesh(config.mesh)
    say(f"mesh {dict(mesh.shape)} on {jax.device_count()} devices ({jax.process_count()} processes)")
    batch_size = int(config.train.batch_size)
    n_batch_shards = mesh.shape["data"] * mesh.shape["fsdp"]
    if batch_size % n_batch_shards:
        raise ValueError(f"train.batch_size={batch_size} must be divisible by the {n_batch_shards} "
                         "data-parallel devices (mesh data x fsdp)")

    # ------------------------------------------------------------ run directory
    # Before any slow set-up: a restart with a changed config or an unreadable checkpoint stops
    # here, having written nothing.
    ckpt = Checkpointer(paths.resolve(workdir) / "checkpoints", config.checkpoint.every, config.checkpoint.keep)
    resume_step = ckpt.latest_step()
    try:
        if resume_step is not None:   # another format stops here; a damaged step is dealt with below
            ckpt.check_format(resume_step, unreadable_ok=True)
        # A fresh start with train.init_from: find its checkpoint now (a bad path stops here).
        source = init_from.locate(config.train.init_from) if resume_step is None and config.train.init_from else None
        runinfo.check_and_record(config, workdir, resume_step or 0)
    except Exception:
        ckpt.close()
        raise

    # ------------------------------------------------------------------ data
    if jax.process_index() == 0:   # one process builds an embedded dataset; the others wait for it
        datasets.ensure_prepared(config.data)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("jaxclr: dataset prepared")
    datasets.ensure_prepared(config.data)
    rows = parallel.process_rows(mesh, batch_size)   # the global batch rows this process's devices hold
    eval_set = tasks.eval_set(config)   # streamed at every eval: no eval images held in memory
    tokenize = tasks.tokenize_fn(config.data)

    # ------------------------------------------------------------ model + shardings
    with jax.set_mesh(mesh):
        setup, state = state_lib.create(config, mesh)
        train_step = step_lib.make_train_step(config, setup, mesh)

    # ------------------------------------------------------------ checkpoint
    start = 0
    restored_step, restored = ckpt.restore_latest_good(setup.abstract)
    if restored_step is not None:   # the newest step that restores; damaged newer ones are moved aside
        state = restored
        start = int(jax.device_get(state["step"]))
        say(f"resumed from step {start}" + (" (train.init_from ignored on a resume)" if config.train.init_from else ""))
    elif source is not None:   # fine-tuning: the source's params, a fresh optimiser state, step 0
        try:
            with jax.set_mesh(mesh):
                state, source_step = init_from.initialize(config, setup, state, source)
        except Exception:
            ckpt.close()
            raise
        say(f"initialised the params from {source.directory}/{source_step} (train.init_from)")
    # The data of step t is a function of t alone (pipeline.GlobalOrder): resuming needs no iterator state.
    train_iter = pipeline.train_batches(config, batch_size, rows, start_step=start)

    # ------------------------------------------------------------------ evals
    evaluators = runner.build_evaluators(config.eval, eval_set, tokenize)
    embed = state_lib.embed_fns(setup.graphdef, mesh)   # compiled once, reused by every eval
    project = config.log.wandb_project
    sinks = [WandbWriter(workdir, config, project)] if config.log.wandb and jax.process_index() == 0 else []
    # Drops what a previous attempt logged after `start`.
    writer = MetricWriter(workdir, resume_step=start, sinks=sinks)
    profile = ProfileWindow(config.train.profile_steps, int(config.train.total_steps), workdir)

    def run_evals(step, params):
        embed_image, embed_text = embed.bind(params)
        results = runner.run_evals(config.eval, eval_set, tokenize, embed_image, embed_text, evaluators)
        writer.write_scalars(step, results)
        return results

    def close():
        profile.close()
        ckpt.close()
        writer.close()

    # ------------------------------------------------------------------ loop
    total = int(config.train.total_steps)
    log_every = int(config.train.log_every)
    stop_at = int(config.train.stop_at)
    try:   # validates train.on_nonfinite and train.max_skips on every run
        guard = step_lib.NonFiniteGuard(config.train, start, int(jax.device_get(state["skipped"])))
    except ValueError:
        close()
        raise
    if stop_at and stop_at <= start < total:
        say(f"already at step {start} >= train.stop_at={stop_at}; nothing to do")
        close()
        return {}
    progress = Progress(total, start_step=start, printer=say)
    examples_since_log, last_log = 0, time.perf_counter()
    with PreemptionWatch() as preemption:   # handlers live only while the loop runs
        for step in range(start + 1, total + 1):
            batch = parallel.global_batch(next(train_iter), mesh, rows, batch_size)
            profile.before(step)
            with jax.set_mesh(mesh):
                state, metrics = train_step(state, batch)
            profile.after(step, (state, metrics))
            examples_since_log += batch_size
            log_now = step % log_every == 0 or step == total
            stopping = step == stop_at and step != total
            eval_now = bool(config.eval.every) and step % config.eval.every == 0 and step != total
            save_now = step % ckpt.every_steps == 0 or step == total or stopping
            if log_now or save_now or eval_now:   # the host syncs here anyway: read the metrics and the guard
                metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
                if log_now:
                    now = time.perf_counter()
                    metrics["examples_per_sec"] = examples_since_log / (now - last_log)
                    last_log = now
                    writer.write_scalars(step, metrics)
                    progress.update(step, {"loss": metrics["loss"]}, examples_since_log)
                    examples_since_log = 0
                try:   # raises NonFiniteLoss before this step's checkpoint or eval (step_lib.NonFiniteGuard)
                    note = guard.check(step, metrics)
                except step_lib.NonFiniteLoss:
                    if not log_now:
                        writer.write_scalars(step, metrics)   # the metrics of the step it stopped at
                    close()
                    raise
                if note:
                    say(note)
            ckpt.save(step, state, force=step == total or stopping)
            if eval_now:
                run_evals(step, state["params"])
            if stopping:
                say(f"stopping at step {step} (train.stop_at), checkpoint saved; run again to resume")
                close()
                return {}
            if preemption.requested(step):   # SIGTERM/SIGINT, or JAX's preemption sync point on a pod
                try:   # a skipped (non-finite) step since the last look is reported, not carried over
                    guard.check(step, {k: float(v) for k, v in jax.device_get(metrics).items()})
                except step_lib.NonFiniteLoss:
                    close()
                    raise
                ckpt.save(step, state, force=True)   # no-op when this step is already saved
                say(f"preempted: checkpoint of step {step} saved; run the same command again to resume")
                close()
                return {}
    # The final checkpoint is saved: from here a signal ends the process at once, as usual.
    bad = pipeline.bad_record_count()
    if bad:
        writer.write_scalars(total, {"data/bad_records": bad})
        say(f"skipped {bad} bad records: {pipeline.bad_record_stats()}")
    results = run_evals(total, state["params"])
    close()
    if jax.process_index() == 0:   # the run is complete: jaxclr.sweep skips it from now on
        finished.mark(workdir, total, results)
    return results


def define_flags():
    """Command-line flags, defined only when run as a program (so the module imports cleanly)."""
    config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Config file (path:preset).")
    flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics, resolved config.")


def main(argv):
    del argv
    if not flags.FLAGS.workdir:
        configlib.exit_with_errors(["--workdir: is required; pass --workdir=DIR (the run directory)"])
    config = flags.FLAGS.config
    validate.check_or_exit(config)   # bad values: one `error: <key>: ...` line each, exit code 2, nothing built
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax and tfds are chatty at INFO
    start = time.time()
    try:
        results = train(config, flags.FLAGS.workdir)
    except (runinfo.ConfigChanged, CheckpointFormatError, NoGoodCheckpoint, step_lib.NonFiniteLoss,
            init_from.InitFromError) as e:
        sys.exit(f"error: {e}")
    if jax.process_index() == 0 and results:   # empty: stopped early (stop_at, preemption) to resume later
        print(report_table(results, tasks.chance_class_names(config)))
        print(f"wall time {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    configlib.check_overrides(sys.argv, default=DEFAULT_CONFIG)
    define_flags()
    app.run(main)
