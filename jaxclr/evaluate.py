"""Evaluates the latest checkpoint of a run (zero-shot, retrieval, geometry).

    python -m jaxclr.evaluate --config=configs/clip.py:tiny --workdir=runs/tiny

Reads checkpoints read-only (safe next to a live training run), writes the
results to the run's metric writers at the checkpoint's step, prints a table.
"""
from __future__ import annotations

import sys

import jax
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from jaxclr import configlib, parallel
from jaxclr import state as state_lib
from jaxclr.checkpoint import Checkpointer
from jaxclr.data import datasets, pipeline
from jaxclr.evals import runner
from jaxclr.evals.report import report_table
from jaxclr.metrics import MetricWriter


def evaluate(config, workdir: str, step: int | None = None) -> tuple[int, dict[str, float]]:
    """Restores a checkpoint and runs every evaluator of config.eval; returns (step, results)."""
    parallel.initialize()
    mesh = parallel.make_mesh(config.mesh)
    ckpt = Checkpointer(f"{workdir}/checkpoints", read_only=True)
    step = ckpt.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints; train first (python -m jaxclr.train)")
    with jax.set_mesh(mesh):
        setup, _ = state_lib.setup(config, mesh)
        state = ckpt.restore(setup.abstract, step=step)
    datasets.ensure_prepared(config.data)
    eval_data = pipeline.eval_data(config)
    class_names = datasets.zero_shot_tasks(config.data)
    embed_image, embed_text = state_lib.embed_fns(setup.graphdef, state["params"], mesh)
    results = runner.run_evals(config.eval, eval_data, class_names, config.data.max_len, embed_image, embed_text)
    with MetricWriter(workdir) as writer:
        writer.write_scalars(step, {f"eval/{k}": v for k, v in results.items()})
    ckpt.close()
    return step, results


def define_flags():
    """Command-line flags, defined only when run as a program (so the module imports cleanly)."""
    config_flags.DEFINE_config_file("config", "configs/default.py", "Config file (path:preset).")
    flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics, resolved config.")
    flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")


def main(argv):
    del argv
    if not flags.FLAGS.workdir:
        sys.exit("error: --workdir is required")
    absl_logging.set_verbosity(absl_logging.WARNING)
    config = flags.FLAGS.config
    step, results = evaluate(config, flags.FLAGS.workdir, flags.FLAGS.step)
    if jax.process_index() == 0:
        print(f"checkpoint step {step}")
        print(report_table(results, datasets.zero_shot_tasks(config.data)))


if __name__ == "__main__":
    configlib.check_overrides(sys.argv)
    define_flags()
    app.run(main)
