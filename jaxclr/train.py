"""Trains a dual encoder from a config; re-running on the same workdir resumes.

    python -m jaxclr.train --config=configs/clip.py:tiny --workdir=runs/tiny --config.train.total_steps=500

The first start records the resolved config and the environment in the workdir
(`jaxclr.trainer.run_info`); a restart must use the same config except for the keys in
`run_info.RESUMABLE_KEYS`, or pass `--config.train.allow_config_change=True`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import sys
import time

import jax
import numpy as np
from absl import app, flags
from absl import logging as absl_logging
from jax.experimental import multihost_utils
from ml_collections import config_flags

from jaxclr import config as configlib
from jaxclr import parallel, paths
from jaxclr.data import datasets, pipeline
from jaxclr.evals import runner, tasks
from jaxclr.evals.report import report_table
from jaxclr.logs.metrics import MetricWriter
from jaxclr.logs.profiler import ProfileWindow
from jaxclr.logs.progress import Progress
from jaxclr.logs.wandb_sink import WandbWriter
from jaxclr.trainer import final_metrics, host_memory, init_from, nonfinite, run_info, validate
from jaxclr.trainer import state as state_lib
from jaxclr.trainer import step as step_lib
from jaxclr.trainer.checkpoint import Checkpointer, CheckpointFormatError, NoGoodCheckpoint
from jaxclr.trainer.preemption import PreemptionWatch

DEFAULT_CONFIG = "configs/default.py"


def print_process0(message: str) -> None:
    """Prints on process 0 only (one line per run, not one per host)."""
    if jax.process_index() == 0:
        print(message, flush=True)


@dataclasses.dataclass
class Run:
    """Everything the loop needs, built by `set_up`; what must be closed is on the ExitStack."""

    config: object
    mesh: object
    batch_size: int
    rows: object                  # the global batch rows this process's devices hold
    state: dict
    start: int                    # the step the loop continues from
    train_step: object
    train_iter: object
    ckpt: Checkpointer
    writer: MetricWriter
    profile: ProfileWindow
    guard: nonfinite.NonFiniteGuard
    run_evals: object             # (step, params) -> eval metrics, written to `writer`


def train(config, workdir: str) -> dict[str, float]:
    """Runs (or resumes) training; returns the final eval metrics ({} when it stops early to resume later)."""
    validate.check(config)   # every problem of the config at once (ConfigError), before anything is built
    for note in validate.notes(config):
        print_process0(f"warning: {note}")
    host_memory.set_mmap_threshold(config.train.malloc_mmap_threshold_kib)   # before the big buffers
    with contextlib.ExitStack() as cleanup:
        run = set_up(config, workdir, cleanup)
        results = loop(run) if run is not None else None
    if results is None:   # stopped early, with a checkpoint to resume from
        return {}
    if jax.process_index() == 0:   # the run is complete: jaxclr.sweep skips it from now on
        final_metrics.write(workdir, int(config.train.total_steps), results)
    return results


def set_up(config, workdir: str, cleanup: contextlib.ExitStack) -> Run | None:
    """Mesh, run directory, data, state (fresh, resumed or from train.init_from), evals and writers.
    None when there is nothing to do (already past train.stop_at)."""
    # ------------------------------------------------------------------ mesh
    parallel.initialize()
    mesh = parallel.make_mesh(config.mesh)
    print_process0(f"mesh {dict(mesh.shape)} on {jax.device_count()} devices ({jax.process_count()} processes)")
    batch_size = int(config.train.batch_size)

    # ------------------------------------------------------------ run directory
    # Before any slow set-up: a restart with a changed config or an unreadable checkpoint stops
    # here, having written nothing.
    ckpt = Checkpointer(paths.resolve(workdir) / "checkpoints", config.checkpoint.every, config.checkpoint.keep)
    cleanup.callback(ckpt.close)
    resume_step = ckpt.latest_step()
    if resume_step is not None:   # another format stops here; a damaged step is dealt with below
        ckpt.check_format(resume_step, unreadable_ok=True)
    # A fresh start with train.init_from: find its checkpoint now (a bad path stops here).
    source = init_from.locate(config.train.init_from) if resume_step is None and config.train.init_from else None
    run_info.check_and_record(config, workdir, resume_step or 0)

    # ------------------------------------------------------------------ data
    if jax.process_index() == 0:   # one process builds an embedded dataset; the others wait for it
        datasets.ensure_prepared(config.data)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("jaxclr: dataset prepared")
    datasets.ensure_prepared(config.data)
    rows = parallel.process_rows(mesh, batch_size)
    eval_set = tasks.eval_set(config)   # streamed at every eval: no eval images held in memory
    tokenize = tasks.tokenize_fn(config.data)

    # ------------------------------------------------------------ model + shardings
    with jax.set_mesh(mesh):
        spec, state = state_lib.create(config, mesh)
        train_step = step_lib.make_train_step(config, spec, mesh)

    # ------------------------------------------------------------ checkpoint
    start = 0
    restored_step, restored = ckpt.restore_latest_good(spec.abstract)
    if restored_step is not None:   # the newest step that restores; damaged newer ones are moved aside
        state = restored
        start = int(jax.device_get(state["step"]))
        print_process0(f"resumed from step {start}"
                       + (" (train.init_from ignored on a resume)" if config.train.init_from else ""))
    elif source is not None:   # fine-tuning: the source's params, a fresh optimiser state, step 0
        with jax.set_mesh(mesh):
            state, source_step = init_from.initialize(config, spec, state, source)
        print_process0(f"initialised the params from {source.directory}/{source_step} (train.init_from)")
    # The data of step t is a function of t alone (pipeline.GlobalOrder): resuming needs no iterator state.
    train_iter = pipeline.train_batches(config, batch_size, rows, start_step=start)

    # ------------------------------------------------------------------ evals and logs
    evaluators = runner.build_evaluators(config.eval, eval_set, tokenize)
    embed = state_lib.embed_fns(spec.graphdef, mesh)   # compiled once, reused by every eval
    sinks, project = [], config.log.wandb_project
    if config.log.wandb and jax.process_index() == 0:
        sinks.append(WandbWriter(workdir, config, project, run_info.read_run_info(workdir)))
    writer = MetricWriter(workdir, resume_step=start, sinks=sinks)   # drops what an earlier attempt logged after start
    cleanup.callback(writer.close)
    profile = ProfileWindow(config.train.profile_steps, int(config.train.total_steps), workdir)
    cleanup.callback(profile.close)

    def run_evals(step, params):
        embed_image, embed_text = embed.bind(params)
        results = runner.run_evals(config.eval, eval_set, tokenize, embed_image, embed_text, evaluators)
        writer.write_scalars(step, results)
        return results

    # validates train.on_nonfinite and train.max_skips on every run
    guard = nonfinite.NonFiniteGuard(config.train, start, int(jax.device_get(state["skipped"])))
    stop_at, total = int(config.train.stop_at), int(config.train.total_steps)
    if stop_at and stop_at <= start < total:
        print_process0(f"already at step {start} >= train.stop_at={stop_at}; nothing to do")
        return None
    return Run(config, mesh, batch_size, rows, state, start, train_step, train_iter, ckpt, writer, profile, guard,
               run_evals)


def loop(run: Run) -> dict[str, float] | None:
    """Steps from run.start to train.total_steps; the final eval metrics, or None when it stops early
    (train.stop_at, preemption) with a checkpoint to resume from."""
    config, ckpt, writer, guard = run.config, run.ckpt, run.writer, run.guard
    state = run.state
    total = int(config.train.total_steps)
    log_every = int(config.train.log_every)
    stop_at = int(config.train.stop_at)
    progress = Progress(total, start_step=run.start, printer=print_process0)
    examples_since_log, last_log = 0, time.perf_counter()
    with PreemptionWatch() as preemption:   # handlers live only while the loop runs
        for step in range(run.start + 1, total + 1):
            batch = parallel.global_batch(next(run.train_iter), run.mesh, run.rows, run.batch_size)
            run.profile.before(step)
            with jax.set_mesh(run.mesh):
                state, metrics = run.train_step(state, batch)
            run.profile.after(step, (state, metrics))
            examples_since_log += run.batch_size
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
                try:   # raises NonFiniteLoss before this step's checkpoint or eval
                    note = guard.check(step, metrics)
                except nonfinite.NonFiniteLoss:
                    if not log_now:
                        writer.write_scalars(step, metrics)   # the metrics of the step it stopped at
                    raise
                if note:
                    print_process0(note)
            ckpt.save(step, state, force=step == total or stopping)
            if eval_now:
                run.run_evals(step, state["params"])
            if stopping:
                print_process0(f"stopping at step {step} (train.stop_at), checkpoint saved; run again to resume")
                return None
            if preemption.requested(step):   # SIGTERM/SIGINT, or JAX's preemption sync point on a pod
                # a skipped (non-finite) step since the last look is reported, not carried over
                guard.check(step, {k: float(v) for k, v in jax.device_get(metrics).items()})
                ckpt.save(step, state, force=True)   # no-op when this step is already saved
                print_process0(f"preempted: checkpoint of step {step} saved; run the same command again to resume")
                return None
    # The final checkpoint is saved: from here a signal ends the process at once, as usual.
    read = read_totals(run.train_iter.stats)
    if read["skipped"]:
        writer.write_scalars(total, {"data/bad_records": read["skipped"]})
        print_process0(f"skipped {read['skipped']} bad records of {read['seen']} read "
                       f"({read['truncated_captions']} captions cut to data.max_len) in this attempt")
    return run.run_evals(total, state["params"])


def read_totals(stats: dict[str, int]) -> dict[str, int]:
    """The reading counts of every process's batches added up (each process counts its own rows)."""
    names = sorted(stats)
    counts = np.asarray([stats[n] for n in names], np.int64)
    if jax.process_count() > 1:
        counts = np.asarray(multihost_utils.process_allgather(counts)).reshape(-1, len(names)).sum(axis=0)
    return dict(zip(names, counts.tolist()))


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
    problem = paths.creatable(flags.FLAGS.workdir)   # made here when it can be (the run writes there next)
    if problem:
        configlib.exit_with_errors([f"--workdir={flags.FLAGS.workdir}: {problem}"])
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax and tfds are chatty at INFO
    start = time.time()
    try:
        results = train(config, flags.FLAGS.workdir)
    except (run_info.ConfigChanged, CheckpointFormatError, NoGoodCheckpoint, nonfinite.NonFiniteLoss,
            init_from.InitFromError) as e:
        sys.exit(f"error: {e}")
    if jax.process_index() == 0 and results:   # empty: stopped early (stop_at, preemption) to resume later
        print(report_table(results, tasks.chance_class_names(config)))
        print(f"wall time {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    configlib.check_overrides(sys.argv, default=DEFAULT_CONFIG)
    define_flags()
    app.run(main)
