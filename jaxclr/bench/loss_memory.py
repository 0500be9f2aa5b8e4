"""Per-device loss memory, streamed vs gather, from XLA's compiled memory analysis.

Compiles (never runs) value_and_grad of `clip_loss` on a mesh of 8 devices for
growing global batches and reads `compiled.memory_analysis().temp_size_in_bytes`
(the scratch memory of one device's program; deterministic).

    python -m jaxclr.bench.loss_memory            # 8 virtual CPU devices are forced
"""
from __future__ import annotations

import os

if __name__ == "__main__":
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import argparse
import functools

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxclr.losses import clip_loss

BATCHES = (4_096, 16_384, 65_536, 262_144, 1_048_576)
MiB = 2**20


def compiled_temp_bytes(batch: int, dim: int = 512, impl: str = "streamed", block_size: int = 1024,
                        num_devices: int = 8) -> int:
    """Per-device temp bytes of jit(value_and_grad(clip_loss)) for a [batch, dim] global batch."""
    mesh = jax.make_mesh((num_devices,), ("data",), axis_types=(AxisType.Auto,),
                         devices=jax.devices()[:num_devices])
    emb = jax.ShapeDtypeStruct((batch, dim), jnp.float32, sharding=NamedSharding(mesh, P("data")))
    scale = jax.ShapeDtypeStruct((), jnp.float32, sharding=NamedSharding(mesh, P()))
    loss = functools.partial(clip_loss, mesh=mesh, impl=impl, block_size=block_size)
    fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
    return int(fn.lower(emb, emb, scale).compile().memory_analysis().temp_size_in_bytes)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m jaxclr.bench.loss_memory", description=__doc__.split("\n")[0])
    parser.parse_args(argv)
    print(f"clip_loss value_and_grad, D=512, {jax.device_count()} devices ({jax.devices()[0].platform}), "
          "per-device temp memory from compiled.memory_analysis() (compile only)\n")
    print("| global batch | streamed (MiB) | gather (MiB) | gather / streamed |")
    print("|---:|---:|---:|---:|")
    previous = None
    for batch in BATCHES:
        streamed = compiled_temp_bytes(batch, impl="streamed")
        gather = compiled_temp_bytes(batch, impl="gather")
        print(f"| {batch:,} | {streamed / MiB:,.1f} | {gather / MiB:,.1f} | {gather / streamed:,.1f}x |", flush=True)
        if previous:
            grow = batch // previous[0]
            print(f"|   growth x{grow} | x{streamed / previous[1]:.2f} | x{gather / previous[2]:.2f} | |")
        previous = (batch, streamed, gather)


if __name__ == "__main__":
    main()
