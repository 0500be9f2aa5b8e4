"""Evaluates the latest checkpoint of a run (zero-shot, retrieval, geometry).

    python -m jaxclr.evaluate --workdir=runs/tiny                                # the run's saved config
    python -m jaxclr.evaluate --config=configs/clip.py:tiny --workdir=runs/tiny  # an explicit one
    python -m jaxclr.evaluate --workdir=runs/tiny --config.eval.zeroshot_datasets='("cifar10",)'
    python -m jaxclr.evaluate --workdir=runs/tiny --geometry   # + DIR/geometry/step_<step>/ report

Without --config the run's saved config (`run_info.load_saved_config`) is used, with any
`--config.KEY=VALUE` applied to it (typed like the field, unknown keys refused). Reads
checkpoints read-only (safe next to a live training run), writes the results to the run's
metric writers at the checkpoint's step under the train loop's names (`zeroshot/...`,
`retrieval/...`, `geometry/...`), prints a table. `--geometry` also writes the geometry report
(`jaxclr.evals.geometry_report`: geometry.json and two PNG figures) of the eval split's
(image, first caption) pairs into `<workdir>/geometry/step_<step>/`, reusing the embeddings.
"""
from __future__ import annotations

import sys

import jax
import numpy as np
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from jaxclr import config as configlib
from jaxclr import parallel, paths
from jaxclr.config import values as config_values
from jaxclr.data import datasets
from jaxclr.evals import geometry_report, runner, tasks
from jaxclr.evals.embed import embed_split
from jaxclr.evals.report import report_table
from jaxclr.logs.metrics import MetricWriter
from jaxclr.trainer import run_info, validate
from jaxclr.trainer import state as state_lib
from jaxclr.trainer.checkpoint import Checkpointer, CheckpointFormatError, NoGoodCheckpoint


def evaluate(config, workdir: str, step: int | None = None, geometry: bool = False) -> tuple[int, dict[str, float]]:
    """Restores a checkpoint and runs every evaluator of config.eval; returns (step, results).

    `config=None` uses the run's saved config (at `step`, or the newest); `step=None` the latest
    checkpoint. Metric files are appended to, never truncated. `geometry=True` also writes the
    geometry report (see the module docstring); the eval split is embedded once for both.
    """
    if config is None:
        config = run_info.load_saved_config(workdir, step)
    parallel.initialize()
    mesh = parallel.make_mesh(config.mesh)
    ckpt = Checkpointer(paths.resolve(workdir) / "checkpoints", read_only=True)
    with jax.set_mesh(mesh):
        spec, _ = state_lib.spec(config, mesh)
        if step is None:   # the newest step that restores (a damaged one is reported and skipped)
            step, state = ckpt.restore_latest_good(spec.abstract)
        else:
            state = ckpt.restore(spec.abstract, step=step)
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints; train first (python -m jaxclr.train)")
    datasets.ensure_prepared(config.data)
    embed_image, embed_text = state_lib.embed_fns(spec.graphdef, mesh).bind(state["params"])
    eval_set, tokenize = tasks.eval_set(config), tasks.tokenize_fn(config.data)
    embeddings = None
    if geometry:   # embedded here, once, for the evaluators and the report
        embeddings = embed_split(eval_set.split, embed_image, embed_text, tokenize,
                                 int(config.eval.batch_size))
    results = runner.run_evals(config.eval, eval_set, tokenize, embed_image, embed_text, embeddings=embeddings)
    with MetricWriter(workdir) as writer:
        writer.write_scalars(step, results)
    ckpt.close()
    if embeddings is not None:
        write_geometry_report(config, workdir, step, embeddings)
    return step, results


class GeometryReportError(ValueError):
    """The eval split cannot give a geometry report (the message says what to change)."""


def write_geometry_report(config, workdir: str, step: int, embeddings) -> dict | None:
    """The geometry report of the (image, first caption) pairs into `<workdir>/geometry/step_<step>/`
    (process 0 writes; returns its json payload, None elsewhere). GeometryReportError without 2 such pairs."""
    rows, first = np.unique(embeddings.text_image, return_index=True)
    if len(rows) < 2:
        raise GeometryReportError(f"--geometry: the eval split has {len(rows)} image(s) with a caption; the "
                                  "report needs at least 2 (use an eval split with captions)")
    if jax.process_index() != 0:
        return None
    labels = {task: values[rows] for task, values in embeddings.labels.items()}
    return geometry_report.write_report(paths.resolve(workdir) / "geometry" / f"step_{step}",
                                        embeddings.image[rows], embeddings.text[first], step=step, labels=labels,
                                        max_points=config.eval.geometry_max_points)


def define_flags(flag_values=flags.FLAGS, argv=None):
    """Command-line flags, defined only when run as a program (so the module imports cleanly).

    `flag_values`/`argv` are for tests; the program uses absl's global flags and sys.argv.
    """
    config_flags.DEFINE_config_file("config", None, "Config file (path:preset); default: the run's config.json.",
                                    flag_values=flag_values, sys_argv=argv)
    flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics, resolved config.",
                        flag_values=flag_values)
    flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).", flag_values=flag_values)
    flags.DEFINE_bool("geometry", False, "Also write the geometry report (json + PNG figures) into "
                      "<workdir>/geometry/step_<step>/.", flag_values=flag_values)


def main(argv):
    del argv
    workdir = flags.FLAGS.workdir
    if not workdir:
        configlib.exit_with_errors(["--workdir: is required; pass --workdir=DIR (the run directory)"])
    config = flags.FLAGS.config
    try:
        if config is None:
            config = run_info.load_saved_config(workdir, flags.FLAGS.step)
            apply_overrides(config, SAVED_CONFIG_OVERRIDES)
    except (FileNotFoundError, ValueError) as e:   # no run here; a config.json that is not JSON
        configlib.exit_with_errors([f"--workdir={workdir}: {str(e).splitlines()[0]}"])
    validate.check_or_exit(config, training=False)   # one `error: <key>: ...` line per problem, exit code 2
    absl_logging.set_verbosity(absl_logging.WARNING)   # orbax is chatty at INFO
    problem = missing_checkpoint(workdir, flags.FLAGS.step)
    if problem:
        configlib.exit_with_errors([problem])
    try:
        step, results = evaluate(config, workdir, flags.FLAGS.step, geometry=flags.FLAGS.geometry)
    except (FileNotFoundError, CheckpointFormatError, NoGoodCheckpoint, GeometryReportError) as e:
        sys.exit(f"error: {e}")
    if jax.process_index() == 0:
        print(f"checkpoint step {step}")
        print(report_table(results, tasks.chance_class_names(config)))
        if flags.FLAGS.geometry:
            print(f"geometry report: {paths.resolve(workdir) / 'geometry' / f'step_{step}'}")


def missing_checkpoint(workdir, step: int | None) -> str | None:
    """What is wrong when `workdir` has no checkpoint to evaluate (at `step`), else None."""
    root = paths.resolve(workdir) / "checkpoints"   # finished steps are directories named by the step
    steps = sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.exists() else []
    if not steps:
        return f"--workdir={workdir}: no checkpoint in {workdir}/checkpoints; train first (python -m jaxclr.train)"
    if step is not None and step not in steps:
        return f"--step={step}: not a checkpoint of {workdir}; its checkpoints are at steps {steps}"
    return None


SAVED_CONFIG_OVERRIDES: list[str] = []   # `--config.KEY=VALUE` for the saved config (no --config given)


def apply_overrides(config, overrides) -> None:
    """Sets each `--config.KEY=VALUE` on `config`, parsed as config_flags parses it for that field;
    exits with one `error:` line per unknown key or bad value."""
    problems = [m for m in (configlib.unknown_key_message(config, a[len("--config."):].split("=", 1)[0])
                            for a in overrides) if m]
    if problems:
        configlib.exit_with_errors(problems)
    try:
        typed = config_values.typed_overrides(config, list(overrides))
    except config_values.GridError as e:
        configlib.exit_with_errors([str(e)])
    config.update_from_flattened_dict({key: v.value for key, v in typed.items()})


if __name__ == "__main__":
    if not any(a.startswith("--config=") for a in sys.argv):   # overrides of the run's saved config
        SAVED_CONFIG_OVERRIDES[:] = [a for a in sys.argv[1:] if a.startswith("--config.")]
        sys.argv = [a for a in sys.argv if not a.startswith("--config.")]
    configlib.check_overrides(sys.argv)
    define_flags()
    app.run(main)
