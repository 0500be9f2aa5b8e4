"""Runs a grid of training runs one after another, then tables and plots their final metrics.

    python -m jaxclr.sweep --config=configs/m2mix.py:tiny --grid loss.terms.m2mix=0,0.1,0.3 \\
        --grid seed=0,1,2 --workdir=runs/m2mix [--config.train.total_steps=500 ...]

Several `--grid KEY=V1,V2` form their product (`--zip`: the i-th values together); values
are typed like `--config.KEY=V` (tuples in brackets: `--grid eval.recall_ks=[1,5],[1,10]`);
see `jaxclr.research.grid`. Each run is `python -m jaxclr.train --config=... --workdir=DIR/<run>
<--config.KEY=V overrides> <its grid values>` in a subprocess, with its output in
`DIR/logs/<run>.log` and one progress line here. A run with `DIR/<run>/final.json`
(`jaxclr.trainer.final_metrics`) is skipped, a partial one resumes from its checkpoints (jaxclr.train
does that), a failed one (non-zero exit) is reported with the end of its output and the
sweep goes on. The runs share JAX's persistent compilation cache (`DIR/.xla_cache` unless
JAX_COMPILATION_CACHE_DIR is set), so only the first compiles the train step.

At the end the finished runs are aggregated into `DIR/results.csv` (one row per run: grid
values, seed, final train loss, every final eval metric), `DIR/results.md` (mean +- sample
std and n per grid point, over the seeds) and `DIR/plots/` (`jaxclr.research.plots`). The exit
code is 0 when every run finished, 1 when one failed or stopped early, 2 for a usage error.

`--print-commands` prints one shell command per run (for a scheduler) and runs nothing;
`--dry-run` lists the runs and what the sweep would do with each; `--aggregate-only` only
writes the results of the runs that finished. None of these imports JAX.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

from jaxclr import config as configlib
from jaxclr import paths
from jaxclr.config import values as config_values
from jaxclr.logs.progress import format_duration
from jaxclr.research import aggregate, grid
from jaxclr.trainer import final_metrics

CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"
# The tiny steps compile in well under jax's default 1 s threshold for caching; cache everything.
CACHE_DEFAULTS = {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
TAIL_LINES = 5


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m jaxclr.sweep", description=__doc__.splitlines()[0],
                                     allow_abbrev=False)
    parser.add_argument("--config", required=True, help="config file and preset, e.g. configs/clip.py:tiny")
    parser.add_argument("--workdir", required=True, help="the sweep's directory; run i goes to WORKDIR/<run name>")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...", help="values of one key")
    parser.add_argument("--zip", action="store_true", help="pair the grids' values instead of their product")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--print-commands", action="store_true", help="print one command per run, run nothing")
    mode.add_argument("--dry-run", action="store_true", help="list the runs and what would be done with each")
    mode.add_argument("--aggregate-only", action="store_true", help="only aggregate the finished runs")
    args, rest = parser.parse_known_args(argv)
    bad = [a for a in rest if not (a.startswith("--config.") and "=" in a)]
    if bad:
        configlib.exit_with_errors([f"{bad[0]}: unknown argument; config overrides are --config.KEY=VALUE"])
    args.overrides = rest
    return args


def environment(workdir: str) -> dict[str, str]:
    """The compilation-cache variables of the runs: the sweep's own where set, else the defaults."""
    wanted = {CACHE_ENV: str(paths.resolve(workdir) / ".xla_cache"), **CACHE_DEFAULTS}
    return {k: os.environ.get(k, v) for k, v in wanted.items()}


def command(args, run: grid.Run) -> list[str]:
    run_dir = str(paths.resolve(args.workdir) / run.name)
    return [sys.executable, "-m", "jaxclr.train", f"--config={args.config}", f"--workdir={run_dir}",
            *args.overrides, *run.overrides()]


def shell_line(env: dict[str, str], argv: list[str]) -> str:
    return " ".join([f"{k}={shlex.quote(v)}" for k, v in env.items()] + [shlex.join(argv)])


def checkpoint_step(run_dir) -> int | None:
    """The newest checkpoint step in run_dir/checkpoints (None: none yet)."""
    ckpt = paths.resolve(run_dir) / "checkpoints"
    steps = [int(p.name) for p in ckpt.iterdir() if p.name.isdigit()] if ckpt.exists() else []
    return max(steps) if steps else None


def state_of(run_dir) -> str:
    """'finished at step S', 'partial (checkpoint at step S)' or 'new'."""
    final = final_metrics.read(run_dir)
    if final is not None:
        return f"finished at step {final['step']}"
    step = checkpoint_step(run_dir)
    return "new" if step is None else f"partial (checkpoint at step {step})"


def tail(text: str, n: int = TAIL_LINES) -> list[str]:
    """The `error:` lines of a run's output, else its last n non-empty lines."""
    lines = [line for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines)[-n:]


def launch(argv: list[str], env: dict[str, str], log_path) -> tuple[int, str]:
    """Runs one training subprocess, its output (stdout and stderr) appended to log_path; returns
    (exit code, this attempt's output). Ctrl-C reaches the child too (same process group): the
    child saves a checkpoint and exits, and only then is the interrupt passed on."""
    log = paths.resolve(log_path)
    log.parent.mkdir(parents=True, exist_ok=True)
    local = not paths.is_url(os.fspath(log))
    with tempfile.TemporaryFile("w+") as scratch:
        out = open(log, "a+") if local else scratch  # noqa: SIM115 - closed below
        start = out.tell()
        out.write(f"$ {shell_line(env, argv)}\n")
        out.flush()
        proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
        try:
            code = proc.wait()
        except KeyboardInterrupt:
            proc.wait()
            raise
        finally:
            out.flush()
        out.seek(start)
        text = out.read()
        if local:
            out.close()
        else:
            log.write_text((log.read_text() if log.exists() else "") + text)
    return code, text


def run_all(args, runs: list[grid.Run]) -> dict[str, str]:
    """Runs what is not finished; {run name: 'finished' | 'failed' | 'incomplete'}."""
    env = environment(args.workdir)
    root = paths.resolve(args.workdir)
    outcome = {}
    for i, run in enumerate(runs, 1):
        head = f"[{i}/{len(runs)}] {run.name}:"
        state = state_of(root / run.name)
        if state.startswith("finished"):
            print(f"{head} skipped ({state})", flush=True)
            outcome[run.name] = "finished"
            continue
        print(f"{head} {'starting' if state == 'new' else 'resuming, ' + state}", flush=True)
        start = time.monotonic()
        code, text = launch(command(args, run), env, root / "logs" / f"{run.name}.log")
        took = format_duration(time.monotonic() - start)
        if code != 0:
            outcome[run.name] = "failed"
            print(f"{head} FAILED (exit {code}) after {took}; log {root / 'logs' / run.name}.log:", flush=True)
            for line in tail(text):
                print(f"    {line}", flush=True)
        elif final_metrics.read(root / run.name) is None:
            outcome[run.name] = "incomplete"
            print(f"{head} stopped before the end after {took} (no {final_metrics.FINAL_FILE}); run the sweep "
                  "again to resume it", flush=True)
        else:
            outcome[run.name] = "finished"
            print(f"{head} done in {took}", flush=True)
    return outcome


def run_seed(run_dir) -> object:
    """The run's seed from its recorded config (None if it has none)."""
    path = paths.resolve(run_dir) / "config.json"
    return json.loads(path.read_text()).get("seed") if path.exists() else None


def aggregate_runs(workdir, runs: list[grid.Run]) -> list[str]:
    """results.csv, results.md and the plots of the finished runs; returns the paths written."""
    from jaxclr.research import plots  # matplotlib: only when there is something to draw

    root = paths.resolve(workdir)
    rows, curves = [], {}
    for run in runs:
        run_dir = root / run.name
        if final_metrics.read(run_dir) is None:
            continue
        final = aggregate.final_metrics(run_dir)
        row = {"run": run.name, **{k: v.value for k, v in run.values.items()}}
        row.setdefault("seed", run_seed(run_dir))
        if "loss" in final:
            row["loss"] = final["loss"]
        row.update({k: final[k] for k in sorted(final) if aggregate.is_eval_metric(k)})
        rows.append(row)
        curves[run.name] = aggregate.series(run_dir, "loss")
    if not rows:
        return []
    metrics = list(dict.fromkeys(k for row in rows for k in row if aggregate.is_eval_metric(k)))
    names = (["loss"] if any("loss" in r for r in rows) else []) + metrics
    keys = [k for k in runs[0].values if k != "seed"]
    aggregate.write_csv(root / "results.csv", rows)
    table = aggregate.grouped_markdown(aggregate.group(rows, keys), names)
    (root / "results.md").write_text(f"# {root.name}: final metrics, mean +- sample std over seeds\n\n{table}\n")
    drawn = plots.plot_sweep(root / "plots", rows, list(runs[0].values), metrics, curves)
    return [str(root / "results.csv"), str(root / "results.md"), *drawn]


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    problems = configlib.override_problems([f"--config={args.config}", *args.overrides])
    if problems:
        configlib.exit_with_errors(problems)
    try:
        config = configlib.load(args.config)
        fixed = config_values.typed_overrides(config, args.overrides)
        runs = grid.make_runs(config, args.grid, zip_grids=args.zip, fixed=tuple(fixed))
    except grid.GridError as e:
        configlib.exit_with_errors([str(e)])
    problem = paths.not_a_directory(args.workdir) if args.print_commands or args.dry_run else \
        paths.creatable(args.workdir)
    if problem:
        configlib.exit_with_errors([f"--workdir={args.workdir}: {problem}"])
    root = paths.resolve(args.workdir)
    if args.print_commands:
        env = environment(args.workdir)
        for run in runs:
            print(shell_line(env, command(args, run)))
        return 0
    if args.dry_run:
        for i, run in enumerate(runs, 1):
            state = state_of(root / run.name)
            action = "skip" if state.startswith("finished") else "run" if state == "new" else "resume"
            print(f"[{i}/{len(runs)}] {run.name}: {state}; would {action}")
        return 0
    outcome = {} if args.aggregate_only else run_all(args, runs)
    written = aggregate_runs(args.workdir, runs)
    print(f"wrote {', '.join(written)}" if written else "no finished runs: nothing to aggregate")
    if args.aggregate_only:
        return 0
    done = sum(v == "finished" for v in outcome.values())
    bad = {k: v for k, v in outcome.items() if v != "finished"}
    print(f"{done}/{len(runs)} runs finished" + "".join(f"; {v}: {k}" for k, v in bad.items()), flush=True)
    return 1 if bad else 0


def cli() -> None:
    """The `python -m` command line."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    cli()
