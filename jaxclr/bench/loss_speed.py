"""fwd+bwd time of `clip_loss`, streamed / gather, on one device, measured side by side.

Median of repeated runs after a warm-up (compile) run, both engines in the same
process and on the same inputs; the ratio is the figure to read (absolute times
depend on the machine).

    python -m jaxclr.bench.loss_speed [--batches 4096,16384] [--repeats 5]
"""
from __future__ import annotations

import argparse
import functools
import statistics
import time

import jax
import jax.numpy as jnp

from jaxclr.losses import clip_loss


def timed(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # compile + warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", default="4096,16384")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--block", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = jax.devices()[0]
    print(f"\nclip_loss fwd+bwd on one device ({device.device_kind}), D={args.dim}, "
          f"median of {args.repeats} after warm-up\n")
    print("| global batch | streamed (s) | gather (s) | streamed / gather |")
    print("|---:|---:|---:|---:|")
    for batch in (int(b) for b in args.batches.split(",")):
        keys = jax.random.split(jax.random.key(0), 2)
        u, v = (x / jnp.linalg.norm(x, axis=-1, keepdims=True)
                for x in (jax.random.normal(k, (batch, args.dim)) for k in keys))
        scale = jnp.float32(1 / 0.07)
        result = {}
        for impl in ("streamed", "gather"):
            loss = functools.partial(clip_loss, mesh=None, impl=impl, block_size=args.block)
            fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
            result[impl] = timed(fn, u, v, scale, repeats=args.repeats)
        print(f"| {batch:,} | {result['streamed']:.3f} | {result['gather']:.3f} | "
              f"{result['streamed'] / result['gather']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
