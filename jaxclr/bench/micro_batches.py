"""Cost of exact GradCache (`train.micro_batches = k`): step time and compiled memory against k = 1.

One device, the tiny preset (its image/text towers as trained by `make train`), the real
train step (`jaxclr.trainer.step.make_train_step`). For each global batch B and each k, the step
is compiled, warmed up, and timed (median of --repeats steps); all settings run in one
process, interleaved round by round, so the ratios to k = 1 compare like with like.
Memory is XLA's compiled per-device estimate (`memory_analysis().temp_size_in_bytes`, the
scratch a step needs beyond its arguments and outputs).

    python -m jaxclr.bench.micro_batches [--batches 256,512] [--ks 2,4,8] [--unrolls 1] [--repeats 5]
        [--stem-impls conv,matmul]

train.micro_unroll = u unrolls the two GradCache loops by u (0: fully); see jaxclr.trainer.step.
model.image.stem_impl picks the conv stem's implementation (conv or matmul, the same function);
ratios are against k = 1 with the same setting. With 'auto' (the presets' setting) that is what
a user gets by default: the conv stem at k = 1, the matmul stem for k > 1 on CPU.
"""
from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np

from jaxclr import config as configlib
from jaxclr import parallel
from jaxclr.trainer import state as state_lib
from jaxclr.trainer import step as step_lib

MiB = 2**20


def build(spec: str, batch: int, k: int, unroll: int | None = None, stem_impl: str | None = None):
    """(compiled step, state, batch arrays, temp bytes) for global batch `batch` and k micro-batches."""
    config = configlib.load(spec)
    with config.unlocked():
        config.mesh.data, config.mesh.fsdp, config.mesh.model = 1, 1, 1
        config.train.batch_size, config.train.micro_batches = batch, k
        if unroll is not None:
            config.train.micro_unroll = unroll
        if stem_impl is not None:
            config.model.image.stem_impl = stem_impl
    mesh = parallel.make_mesh(config.mesh, jax.devices()[:1])
    with jax.set_mesh(mesh):
        spec, state = state_lib.create(config, mesh)
        step = step_lib.make_train_step(config, spec, mesh)
        rng = np.random.default_rng(0)
        size, length = int(config.data.image_size), int(config.model.text.max_len)
        arrays = parallel.global_batch({"image": rng.integers(0, 255, (batch, size, size, 3), dtype=np.uint8),
                                        "text": rng.integers(3, 200, (batch, length), dtype=np.int32)}, mesh)
        compiled = step.lower(state, arrays).compile()
    temp = int(compiled.memory_analysis().temp_size_in_bytes)
    return compiled, mesh, state, arrays, temp


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m jaxclr.bench.micro_batches", description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/clip.py:tiny")
    p.add_argument("--batches", default="256,512")
    p.add_argument("--ks", default="2,4,8", help="micro-batch counts besides k=1 (always run)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--unrolls", default="1", help="train.micro_unroll values (0: fully unrolled)")
    p.add_argument("--stem-impls", default="conv,matmul", help="model.image.stem_impl values")
    args = p.parse_args(argv)
    ks = [int(k) for k in args.ks.split(",") if int(k) > 1]
    unrolls = [int(u) for u in args.unrolls.split(",")]
    stems = args.stem_impls.split(",")
    runs = {}
    for stem in stems:
        for batch in (int(b) for b in args.batches.split(",")):
            for k, unroll in [(1, 1)] + [(k, u) for k in ks for u in unrolls]:
                compiled, mesh, state, arrays, temp = build(args.config, batch, k, unroll, stem)
                with jax.set_mesh(mesh):
                    state, _ = compiled(state, arrays)     # warm-up
                    jax.block_until_ready(state)
                runs[stem, batch, k, unroll] = dict(compiled=compiled, mesh=mesh, state=state, arrays=arrays,
                                                    temp=temp, times=[])
    for _ in range(args.repeats):   # interleaved rounds: slow drifts of the machine hit every setting alike
        for run in runs.values():
            with jax.set_mesh(run["mesh"]):
                start = time.perf_counter()
                run["state"], _ = run["compiled"](run["state"], run["arrays"])
                jax.block_until_ready(run["state"])
                run["times"].append(time.perf_counter() - start)
    device = jax.devices()[0]
    print(f"\nGradCache step cost, {args.config}, one device ({device.device_kind}), "
          f"median of {args.repeats} steps after warm-up; memory: XLA compiled temp per device\n")
    print("| stem | global batch | k | micro_unroll | step (s) | step / k=1 | temp (MiB) | temp / k=1 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for (stem, batch, k, unroll), run in runs.items():
        base = runs[stem, batch, 1, 1]
        t, t1 = statistics.median(run["times"]), statistics.median(base["times"])
        rows.append(dict(stem=stem, batch=batch, k=k, unroll=unroll, seconds=t, ratio=t / t1, temp=run["temp"],
                         temp_ratio=run["temp"] / base["temp"]))
        shown = "-" if k == 1 else unroll
        print(f"| {stem} | {batch} | {k} | {shown} | {t:.3f} | {t / t1:.2f} | {run['temp'] / MiB:,.1f} | "
              f"{run['temp'] / base['temp']:.2f} |", flush=True)
    return rows


if __name__ == "__main__":
    main()
