"""Train-step throughput and MFU on whatever devices JAX sees (CPU, GPU or TPU).

    python -m jaxclr.bench.throughput --config=configs/clip.py:tiny --per-device-batch=32 --steps=20
    python -m jaxclr.bench.throughput --config=configs/clip.py:b16 --per-device-batch=128 --steps=20 \\
        --config.model.attention=dot_product

Runs the trainer's own state and step (`jaxclr.trainer.state.create`, `jaxclr.trainer.step`) on a
synthetic batch (random pixels and tokens: the input pipeline is `jaxclr.bench.input_pipeline`'s
business) and prints examples/s per device, the step time, and MFU: the step's FLOPs per second
per device over the device's peak. Two FLOP counts, both per device and step: XLA's
(`compiled.cost_analysis()`, which counts a loop body once, so it misses most of a scanned
model's FLOPs) and the jaxpr's (`jaxclr.bench.hlo_stats.jaxpr_flops`: every matmul, loops times
their length). The peak is the vendor's dense bf16 figure for GPUs and TPUs (`jaxclr.bench.chips`);
on a CPU it is measured in the same run: the FLOP/s of a large float32 matmul on one device.
"""
from __future__ import annotations

import copy
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxclr import parallel
from jaxclr.bench import chips, hlo_stats
from jaxclr.trainer import state as state_lib
from jaxclr.trainer import step as step_lib

MATMUL_SIZE = 4096


def matmul_peak(size: int = MATMUL_SIZE, reps: int = 5) -> float:
    """FLOP/s of a size x size float32 matmul on the first device (best of `reps`): the CPU's practical peak."""
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    matmul = jax.jit(lambda x: x @ x)
    matmul(a).block_until_ready()
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        matmul(a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def device_peak() -> tuple[float, str]:
    """(peak FLOP/s per device, where the figure comes from) for the devices JAX sees."""
    device = jax.devices()[0]
    if device.platform == "cpu":
        return matmul_peak(), f"measured: {MATMUL_SIZE}x{MATMUL_SIZE} float32 matmul"
    chip = chips.chip_of_device_kind(device.device_kind)
    if chip is None:
        raise ValueError(f"no peak FLOP/s for device kind {device.device_kind!r}; add it to jaxclr.bench.chips")
    return chip.peak_bf16_flops, f"{chip.name} dense bf16 (vendor figure)"


def synthetic_batch(config, mesh) -> dict:
    """A global batch of random uint8 images and random token ids, split over the batch axes."""
    rng = np.random.default_rng(0)
    n, size, length = int(config.train.batch_size), int(config.data.image_size), int(config.model.text.max_len)
    local = {"image": rng.integers(0, 256, (n, size, size, 3), np.uint8),
             "text": rng.integers(3, 200, (n, length), np.int32)}
    sharding = parallel.batch_sharding(mesh)
    return {k: jax.device_put(v, sharding) for k, v in local.items()}


def measure(config, per_device_batch: int, steps: int, warmup: int = 2) -> dict:
    """Runs `warmup` + `steps` train steps of `config` at this per-device batch on every device; the figures."""
    config = copy.deepcopy(config)
    devices = jax.device_count()
    config.train.batch_size = per_device_batch * devices
    mesh = parallel.make_mesh(config.mesh)
    spec, state = state_lib.create(config, mesh)
    train_step = step_lib.make_train_step(config, spec, mesh)
    batch = synthetic_batch(config, mesh)
    jaxpr_flops = hlo_stats.step_flops(train_step, state, batch) / devices
    compiled = train_step.lower(state, batch).compile()
    xla_flops = float((compiled.cost_analysis() or {}).get("flops", 0.0))
    for _ in range(warmup):
        state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    step_s = (time.perf_counter() - start) / steps
    peak, source = device_peak()
    return {"devices": devices, "device_kind": jax.devices()[0].device_kind, "per_device_batch": per_device_batch,
            "step_s": step_s, "examples_per_s_per_device": per_device_batch / step_s,
            "xla_flops": xla_flops, "jaxpr_flops": jaxpr_flops, "peak": peak, "peak_source": source,
            "mfu_xla": xla_flops / step_s / peak, "mfu_jaxpr": jaxpr_flops / step_s / peak}


def report_lines(spec: str, r: dict) -> list[str]:
    """The printed figures (module docstring)."""
    return [
        f"{spec} on {r['devices']} x {r['device_kind']}, per-device batch {r['per_device_batch']}",
        f"  step {r['step_s'] * 1e3:,.1f} ms, {r['examples_per_s_per_device']:,.1f} examples/s/device",
        f"  peak {r['peak'] / 1e9:,.1f} GFLOP/s per device ({r['peak_source']})",
        f"  XLA's FLOP count {r['xla_flops']:.3g}/step/device: {r['xla_flops'] / r['step_s'] / 1e9:,.1f} GFLOP/s, "
        f"MFU {100 * r['mfu_xla']:.1f}%",
        f"  jaxpr count (loops x length) {r['jaxpr_flops']:.3g}/step/device: "
        f"{r['jaxpr_flops'] / r['step_s'] / 1e9:,.1f} GFLOP/s, MFU {100 * r['mfu_jaxpr']:.1f}%",
    ]


def define_flags():
    """The command's flags, listed by `--help` (declared as the running main module's own)."""
    from absl import flags
    from ml_collections import config_flags
    main_module = {"module_name": sys.argv[0]}
    config_flags.DEFINE_config_file("config", "configs/clip.py:tiny", "Config file (path:preset).")
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS["config"])
    flags.DEFINE_integer("per_device_batch", 32, "examples per device per step", **main_module)
    flags.DEFINE_integer("steps", 20, "timed steps (after 2 warm-up steps)", **main_module)
    for alias in ("per_device_batch",):
        flags.DEFINE_alias(alias.replace("_", "-"), alias, module_name=sys.argv[0])


def main(argv) -> None:
    from absl import flags
    del argv
    spec = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--config=")), "configs/clip.py:tiny")
    result = measure(flags.FLAGS.config, flags.FLAGS.per_device_batch, flags.FLAGS.steps)
    print("\n".join(report_lines(spec, result)), flush=True)


if __name__ == "__main__":
    from absl import app

    from jaxclr import config as configlib
    define_flags()
    configlib.check_overrides(sys.argv, default="configs/clip.py:tiny")
    app.run(main)
