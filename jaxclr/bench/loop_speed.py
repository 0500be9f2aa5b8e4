"""The train loop against its step: examples/s of the whole loop and of the compiled step alone.

One process, one set-up (`jaxclr.train.set_up`, the trainer's own), three phases in turn:
  1. the compiled train step alone, `--steps` times back to back on one batch already on the
     device (the device never waits on the host);
  2. the train loop itself (`jaxclr.train.loop`: data read, batches built and transferred, logs
     every `--warmup` steps) for `--warmup` + `--steps` steps; its rate is taken over the steps
     after the warm-up interval (which holds its first batches' reading);
  3. the step alone again, on the loop's final state.
It prints the loop's examples/s over the mean of the two step-alone rates. Evals and checkpoints
are off in the loop (the final step still saves one, after its rate was logged).

    python -m jaxclr.bench.loop_speed                       # make train's config, 200 timed steps
    python -m jaxclr.bench.loop_speed --steps=400 --config.data.worker_count=1
"""
from __future__ import annotations

import argparse
import contextlib
import tempfile
import time

import jax

from jaxclr import config as configlib
from jaxclr import parallel, train
from jaxclr.config.values import GridError, typed_overrides
from jaxclr.data import pipeline
from jaxclr.research import aggregate
from jaxclr.trainer import host_memory


def step_alone(run, state, batch, steps: int):
    """(examples/s, state) of `steps` train steps back to back on one device batch."""
    state, _ = run.train_step(state, batch)   # compiled already; one step to settle
    jax.block_until_ready(state)
    start = time.perf_counter()
    for _ in range(steps):
        with jax.set_mesh(run.mesh):
            state, metrics = run.train_step(state, batch)
    jax.block_until_ready((state, metrics))
    return steps * run.batch_size / (time.perf_counter() - start), state


def loop_rate(workdir: str, after_step: int) -> float:
    """Examples/s of the loop over its logged intervals after `after_step` (total examples over total
    time: each interval's examples_per_sec is the examples of that interval over its seconds)."""
    steps, rates = aggregate.series(workdir, "examples_per_sec")
    timed = [(step, rate) for step, rate in zip(steps, rates) if step > after_step]
    previous = [after_step] + [step for step, _ in timed[:-1]]
    examples = [step - prev for (step, _), prev in zip(timed, previous)]   # in steps; the batch cancels
    return sum(examples) / sum(n / rate for n, (_, rate) in zip(examples, timed))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m jaxclr.bench.loop_speed", description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/default.py", help="config file and preset (default: make train's)")
    p.add_argument("--steps", type=int, default=200, help="timed steps of each phase")
    p.add_argument("--warmup", type=int, default=20, help="the loop's untimed first steps (also its log interval)")
    args, rest = p.parse_known_args(argv)
    config = configlib.load(args.config)
    try:
        overrides = typed_overrides(config, [a for a in rest if a.startswith("--config.")])
    except GridError as e:
        configlib.exit_with_errors([str(e)])
    if args.steps % args.warmup:
        configlib.exit_with_errors([f"--steps={args.steps}: use a multiple of --warmup={args.warmup}"])
    with config.unlocked():
        for key, value in overrides.items():
            config.update_from_flattened_dict({key: value.value})
        config.train.update(total_steps=args.warmup + args.steps, log_every=args.warmup)
        config.eval.every = 0
        config.checkpoint.every = args.warmup + args.steps
    host_memory.set_mmap_threshold(config.train.malloc_mmap_threshold_kib)   # as jaxclr.train sets it
    with tempfile.TemporaryDirectory() as workdir, contextlib.ExitStack() as cleanup:
        run = train.set_up(config, workdir, cleanup)
        batch = parallel.global_batch(next(pipeline.train_batches(config, run.batch_size, run.rows)),
                                      run.mesh, run.rows, run.batch_size)
        with jax.set_mesh(run.mesh):
            before, run.state = step_alone(run, run.state, batch, args.steps)
        final = {}
        real_step = run.train_step

        def keep_last(state, batch):
            final["state"], metrics = real_step(state, batch)
            return final["state"], metrics
        run.train_step = keep_last
        train.loop(run)
        run.train_step = real_step
        looped = loop_rate(workdir, args.warmup)
        with jax.set_mesh(run.mesh):
            after, _ = step_alone(run, final["state"], batch, args.steps)
    alone = (before + after) / 2
    print(f"{args.config}: global batch {run.batch_size} on {jax.device_count()} device(s), "
          f"{args.steps} timed steps each")
    print("| phase | examples/s |")
    print("|---|---:|")
    print(f"| step alone, before the loop | {before:,.0f} |")
    print(f"| train loop (after {args.warmup} warm-up steps) | {looped:,.0f} |")
    print(f"| step alone, after the loop | {after:,.0f} |")
    print(f"loop / step alone: {looped / alone:.3f}")
    return {"before": before, "loop": looped, "after": after, "ratio": looped / alone}


if __name__ == "__main__":
    main()
