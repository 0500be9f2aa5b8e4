"""Per-device memory of one compiled train step (compile only, nothing runs or is allocated).

Builds the real step (`jaxclr.trainer.state.spec` with abstract state from eval_shape,
`jaxclr.trainer.step.make_train_step`, `jaxclr.parallel.make_mesh` / `batch_sharding`) on a
mesh of virtual CPU devices, lowers it with abstract inputs, compiles it and prints
`compiled.memory_analysis()`: temp (scratch), argument, output, alias and generated
code sizes for one device. These are XLA:CPU numbers: an estimate of what a TPU/GPU
compile needs (the backends fuse and schedule differently), good for comparisons
between settings (remat, scan, micro-batches, batch size), not for exact HBM budgets.

    python -m jaxclr.bench.step_memory --config=configs/clip.py:b16 --devices 8 --fsdp 8 \\
        --per-device-batch 256 --micro-batches 1 --remat block --scan

The virtual device count comes from XLA_FLAGS=--xla_force_host_platform_device_count,
which this module sets at import (from --devices, default 8) unless XLA_FLAGS already
sets it; it must happen before JAX starts its backend.
"""
from __future__ import annotations

import os
import sys

_FORCE = "--xla_force_host_platform_device_count"


def _devices_from_argv(argv) -> int:
    for i, arg in enumerate(argv):
        if arg.startswith("--devices="):
            return int(arg.split("=", 1)[1])
        if arg == "--devices" and i + 1 < len(argv):
            return int(argv[i + 1])
    return 8


if _FORCE not in os.environ.get("XLA_FLAGS", ""):
    try:
        _n = _devices_from_argv(sys.argv[1:])
    except ValueError:
        _n = 8      # argparse reports the bad value
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FORCE}={_n}".strip()

import argparse  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from jaxclr import config as configlib  # noqa: E402
from jaxclr import parallel  # noqa: E402
from jaxclr.models.layers import remat_policy  # noqa: E402
from jaxclr.trainer import state as state_lib  # noqa: E402
from jaxclr.trainer import step as step_lib  # noqa: E402

MiB = 2**20
FIELDS = ("temp", "argument", "output", "alias", "generated_code")


def _encoders(config):
    model = nnx.eval_shape(lambda: state_lib._model(config, 0))
    return model.image.encoder, model.text.encoder


def bench_config(spec: str, *, devices: int, fsdp: int, per_device_batch: int, micro_batches: int = 1,
                 remat: str = "none", scan: bool = False):
    """The config of `spec` with the bench's mesh, global batch, micro-batches and memory options."""
    remat_policy(remat)   # ValueError naming the allowed values
    config = configlib.load(spec)
    with config.unlocked():
        config.mesh.data, config.mesh.fsdp, config.mesh.model = -1, fsdp, 1
        config.train.batch_size = per_device_batch * devices
        config.train.micro_batches = micro_batches
        config.model.remat = remat
        config.model.scan_layers = bool(scan)
    return config


def abstract_train_step(config, devices: int):
    """(jitted train step, its abstract (state, batch) arguments) of `config` on `devices` devices:
    `train_step.lower(*args)` lowers it without allocating anything."""
    if jax.device_count() < devices:
        raise ValueError(f"{devices} devices asked for but JAX has {jax.device_count()}; set XLA_FLAGS="
                         f"{_FORCE}={devices} before JAX starts (python -m jaxclr.bench.step_memory does)")
    return abstract_step_on_mesh(config, parallel.make_mesh(config.mesh, jax.devices()[:devices]))


def abstract_step_on_mesh(config, mesh):
    """`abstract_train_step` on a given mesh: its devices may be compile-only ones, e.g. a TPU
    topology's (`jaxclr.bench.plan`), since nothing is allocated."""
    remat, scan = config.model.remat, bool(config.model.scan_layers)
    assert all(e.remat == remat and e.scan_layers == scan for e in _encoders(config)), "memory options not applied"
    spec, _ = state_lib.spec(config, mesh)
    train_step = step_lib.make_train_step(config, spec, mesh)
    n, size, length = int(config.train.batch_size), int(config.data.image_size), int(config.model.text.max_len)
    sharding = parallel.batch_sharding(mesh)
    batch = {"image": jax.ShapeDtypeStruct((n, size, size, 3), jnp.uint8, sharding=sharding),
             "text": jax.ShapeDtypeStruct((n, length), jnp.int32, sharding=sharding)}
    return train_step, (spec.abstract, batch)


def memory_of(compiled) -> dict:
    """Per-device bytes of a compiled step by FIELDS (`compiled.memory_analysis()`)."""
    analysis = compiled.memory_analysis()
    return {field: int(getattr(analysis, f"{field}_size_in_bytes")) for field in FIELDS}


def step_memory(config, devices: int) -> dict:
    """Compiles one train step of `config` on `devices` devices; per-device bytes by FIELDS, plus
    'compile_s' (seconds to lower + compile)."""
    train_step, args = abstract_train_step(config, devices)
    start = time.perf_counter()
    compiled = train_step.lower(*args).compile()
    return {**memory_of(compiled), "compile_s": time.perf_counter() - start}


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m jaxclr.bench.step_memory", description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/clip.py:b16", help="config file:preset")
    p.add_argument("--devices", type=int, default=8, help="virtual CPU devices (the mesh size)")
    p.add_argument("--fsdp", type=int, default=8, help="mesh.fsdp (mesh.data takes the rest)")
    p.add_argument("--per-device-batch", type=int, default=256)
    p.add_argument("--micro-batches", type=int, default=1, help="train.micro_batches (GradCache)")
    p.add_argument("--remat", default="none", help="model.remat: 'none' | 'block'")
    p.add_argument("--scan", action="store_true", help="model.scan_layers=True")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    """Runs the bench with command-line `argv` (default sys.argv[1:]); prints and returns the numbers."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    config = bench_config(args.config, devices=args.devices, fsdp=args.fsdp, per_device_batch=args.per_device_batch,
                          micro_batches=args.micro_batches, remat=args.remat, scan=args.scan)
    result = step_memory(config, args.devices)
    print(f"XLA:CPU estimate, per device: {args.config} on {args.devices} devices (fsdp {args.fsdp}), "
          f"per-device batch {args.per_device_batch} (global {config.train.batch_size}), "
          f"micro_batches {args.micro_batches}, remat {args.remat!r}, scan_layers {args.scan}")
    print("  " + ", ".join(f"{field} {result[field] / MiB:,.1f} MiB" for field in FIELDS)
          + f" (compile {result['compile_s']:.1f} s)", flush=True)
    return result


if __name__ == "__main__":
    main()
