"""Plan a TPU run on a CPU: the real train step compiled by XLA:TPU for a named topology.

    python -m jaxclr.plan --config=configs/clip.py:b16 --topology=v5e:16x16 --per-device-batch=256 \\
        --config.mesh.fsdp=16
    python -m jaxclr.plan --config=configs/clip.py:b16 --topology=v5e:4x4 --find-max-batch

The step is the trainer's own (`jaxclr.trainer.state.spec`, `jaxclr.trainer.step.make_train_step`
through `jaxclr.bench.step_memory.abstract_step_on_mesh`) on a mesh of the topology's
compile-only devices: abstract shapes, nothing allocated, nothing run. Printed per chip: the
compiler's argument, output, temp and total bytes against the chip's HBM (`fits` / `does not fit
by X GiB`), FLOPs per step and the step time they imply at the chip's peak bf16 FLOP/s (a roofline
floor: no step runs faster, real ones run slower), and the bytes the step's collectives send.
These are compiler figures, not measurements on hardware.

libtpu (XLA:TPU) must be installed beside the venv (`jaxclr.bench.tpu_env`); without it the
command prints how in one line. The process runs JAX on the CPU (JAX_PLATFORMS=cpu): a TPU VM's
chips are left alone, and libtpu loads only for the topology, with an environment that keeps it
from querying the metadata server.
"""
from __future__ import annotations

import os

os.environ["JAX_PLATFORMS"] = "cpu"   # before JAX starts: the plan runs nothing, on no accelerator

import copy  # noqa: E402
import dataclasses  # noqa: E402
import functools  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from jaxclr.bench import chips, tpu_env  # noqa: E402

GiB = 2**30


class LibtpuMissing(RuntimeError):
    """libtpu is not installed (`tpu_env.missing_message` says how to install it)."""


class DoesNotFit(RuntimeError):
    """XLA:TPU could not place the program in the chip's HBM (its RESOURCE_EXHAUSTED error, summarised)."""


def _over_hbm(error: Exception) -> DoesNotFit | None:
    """A DoesNotFit naming what XLA:TPU said, if `error` is its out-of-memory error; else None."""
    text = str(error).strip()
    if "RESOURCE_EXHAUSTED" not in text:
        return None
    return DoesNotFit(text.splitlines()[0][:400])   # "... exceeds available HBM (15.75G)."


@dataclasses.dataclass(frozen=True)
class Topology:
    """A TPU slice by name ('v5e:16x16') and how many of them (--num_slices, joined over DCN)."""

    name: str
    num_slices: int = 1

    @property
    def chip(self) -> chips.Chip:
        return chips.tpu_generation(self.name)

    @property
    def chips_per_slice(self) -> int:
        dims = self.name.split(":", 1)[1] if ":" in self.name else ""
        if not re.fullmatch(r"\d+(x\d+)*", dims):
            raise ValueError(f"topology {self.name!r}: use GENERATION:AxB[xC], e.g. v5e:4x4 or v4:2x2x2")
        return functools.reduce(lambda a, b: a * b, map(int, dims.split("x")))

    @property
    def chips(self) -> int:
        return self.chips_per_slice * self.num_slices


@functools.cache
def topology_devices(topology: Topology) -> tuple:
    """The compile-only devices of `topology` (loads libtpu once per process, in `tpu_env.environment`)."""
    library = tpu_env.library_path()
    if library is None:
        raise LibtpuMissing(tpu_env.missing_message())
    chip, per_slice = topology.chip, topology.chips_per_slice
    os.environ.update(tpu_env.environment(library, chip.name, per_slice))
    from jax.experimental import topologies
    options = {"chip_config_name": "megacore"} if chip.name == "v4" else {}   # one device per v4 chip
    if topology.num_slices > 1:
        options["num_slices"] = topology.num_slices
    devices = topologies.get_topology_desc(platform="tpu", topology_name=topology.name, **options).devices
    if len(devices) != topology.chips:
        raise ValueError(f"topology {topology.name} x {topology.num_slices} slices gave {len(devices)} devices, "
                         f"expected {topology.chips}")
    return tuple(devices)


def plan_mesh(config, topology: Topology):
    """The trainer's mesh (`jaxclr.parallel.make_mesh`) on the topology's devices; with several slices
    the data axis spans the slices (DCN) and fsdp x model stay within a slice (ICI)."""
    import jax
    from jax.experimental import mesh_utils

    from jaxclr import parallel
    devices = list(topology_devices(topology))
    if topology.num_slices == 1:
        return parallel.make_mesh(config.mesh, devices)
    ici = parallel.mesh_shape(config.mesh, topology.chips_per_slice)
    grid = mesh_utils.create_hybrid_device_mesh(ici, (topology.num_slices, 1, 1), devices)
    return jax.sharding.Mesh(grid, parallel.AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3)


def plan_config(config, topology: Topology, per_device_batch: int | None):
    """A copy of `config` for the plan: train.batch_size = per-device batch x chips (default: the config's
    own global batch), and model.image.stem_impl 'auto' resolved for the TPU backend (not for this CPU)."""
    from jaxclr.models import vit
    config = copy.deepcopy(config)
    if per_device_batch is not None:
        config.train.batch_size = int(per_device_batch) * topology.chips
    if int(config.train.batch_size) % topology.chips:
        raise ValueError(f"train.batch_size {config.train.batch_size} does not split over {topology.chips} chips; "
                         "pass --per-device-batch")
    config.model.image.stem_impl = vit.resolve_stem_impl(config.model.image.stem_impl,
                                                         int(config.train.micro_batches), backend="tpu")
    return config


def compile_plan(config, topology: Topology) -> dict:
    """Compiles the train step of `config` (from `plan_config`) for `topology`; the per-chip figures."""
    from jaxclr.bench import hlo_stats, step_memory
    mesh = plan_mesh(config, topology)
    start = time.perf_counter()
    train_step, args = step_memory.abstract_step_on_mesh(config, mesh)
    flops = hlo_stats.step_flops(train_step, *args) / topology.chips
    try:
        compiled = train_step.lower(*args).compile()
    except Exception as e:  # noqa: BLE001 - only XLA:TPU's out-of-memory error becomes DoesNotFit
        raise (_over_hbm(e) or e) from e
    seconds = time.perf_counter() - start
    memory = step_memory.memory_of(compiled)
    total = memory["argument"] + memory["output"] - memory["alias"] + memory["temp"] + memory["generated_code"]
    cost = compiled.cost_analysis() or {}
    return {**memory, "total": total, "hbm": topology.chip.hbm_bytes, "fits": total <= topology.chip.hbm_bytes,
            "flops": flops, "xla_flops": float(cost.get("flops", 0.0)),
            "floor_s": flops / topology.chip.peak_bf16_flops, "collectives": hlo_stats.collectives(compiled.as_text()),
            "compile_s": seconds, "per_device_batch": int(config.train.batch_size) // topology.chips,
            "mesh": dict(mesh.shape)}


def fits(config, topology: Topology, per_device_batch: int) -> bool:
    """Whether the step at this per-device batch fits in HBM; a batch XLA:TPU cannot place does not."""
    try:
        return compile_plan(plan_config(config, topology, per_device_batch), topology)["fits"]
    except DoesNotFit:
        return False


def find_max_batch(config, topology: Topology, start: int = 8, limit: int = 1 << 16, report=print) -> int:
    """The largest per-device batch that is a multiple of `start` and whose step fits (0 if not even `start`
    does): `start` doubled until a batch does not fit, then bisected. Each probe is one compile; `report`
    gets a line per probe."""
    def probe(batch):
        ok = fits(config, topology, batch)
        report(f"  per-device batch {batch}: {'fits' if ok else 'does not fit'}")
        return ok

    if not probe(start):
        return 0
    low, high = start, None
    while high is None and low * 2 <= limit:
        if probe(low * 2):
            low *= 2
        else:
            high = low * 2
    high = high or low
    step = start
    while high - low > step:   # bisect in multiples of `start`
        mid = (low + high) // 2 // step * step
        if probe(mid):
            low = mid
        else:
            high = mid
    return low


def _gib(n: float) -> str:
    return f"{n / GiB:,.2f} GiB"


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB" if n >= 2**20 else f"{n / 2**10:,.0f} KiB"


def report_lines(spec: str, topology: Topology, result: dict) -> list[str]:
    """The printed plan (module docstring)."""
    chip = topology.chip
    slices = f" x {topology.num_slices} slices" if topology.num_slices > 1 else ""
    verdict = ("fits" if result["fits"] else f"does not fit by {_gib(result['total'] - result['hbm'])}")
    coll = {k: v for k, v in result["collectives"].items() if k != "unknown_loops" and v}
    lines = [
        f"XLA:TPU plan (compiler figures, not a measurement): {spec} on {topology.name}{slices} "
        f"({topology.chips} chips, mesh {result['mesh']}), per-device batch {result['per_device_batch']}, "
        f"compiled in {result['compile_s']:.0f} s",
        f"  per chip: arguments {_mib(result['argument'])}, outputs {_mib(result['output'])} "
        f"({_mib(result['alias'])} of them in the arguments' donated buffers), temp {_mib(result['temp'])}, "
        f"code {_mib(result['generated_code'])}",
        f"  total {_gib(result['total'])} of {_gib(result['hbm'])} HBM ({chip.name}): {verdict}",
        f"  FLOPs per chip per step {result['flops']:.3g} (every matmul, loops x their length; XLA's cost "
        f"analysis, loop bodies once: {result['xla_flops']:.3g})",
        f"  roofline floor {result['floor_s'] * 1e3:,.3g} ms per step at {chip.peak_bf16_flops / 1e12:.0f} "
        f"TFLOP/s bf16 peak (a lower bound, not a prediction)",
        "  collectives per chip per step (bytes sent): "
        + (", ".join(f"{k} {_mib(v)}" for k, v in coll.items()) or "none")
        + (f" ({result['collectives']['unknown_loops']} loops of unknown count counted once)"
           if result["collectives"]["unknown_loops"] else ""),
    ]
    return lines


def define_flags():
    """The command's flags, listed by `--help` (declared as the running main module's own)."""
    from absl import flags
    from ml_collections import config_flags
    main_module = {"module_name": sys.argv[0]}
    config_flags.DEFINE_config_file("config", "configs/clip.py:b16", "Config file (path:preset).")
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS["config"])
    flags.DEFINE_string("topology", "v5e:4x4", "TPU slice, GENERATION:AxB[xC]: v4, v5e, v5p or v6e (e.g. v5e:16x16)",
                        **main_module)
    flags.DEFINE_integer("num_slices", 1, "slices joined over DCN (the mesh's data axis spans them)", **main_module)
    flags.DEFINE_integer("per_device_batch", None, "per-chip batch (default: train.batch_size / chips)",
                         **main_module)
    flags.DEFINE_bool("find_max_batch", False, "bisect the largest per-device batch that fits in HBM, in "
                      "multiples of --per-device-batch (default 8)", **main_module)
    for alias in ("num_slices", "per_device_batch", "find_max_batch"):
        flags.DEFINE_alias(alias.replace("_", "-"), alias, module_name=sys.argv[0])


def main(argv) -> int:
    from absl import flags

    from jaxclr import config as configlib
    del argv
    flag = flags.FLAGS
    spec = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--config=")), "configs/clip.py:b16")
    topology = Topology(flag.topology, flag.num_slices)
    try:
        topology.chips  # noqa: B018 - validates the name
    except ValueError as e:
        configlib.exit_with_errors([f"--topology={flag.topology}: {e}"])
    try:
        if flag.find_max_batch:
            print(f"XLA:TPU: largest per-device batch of {spec} that fits on {topology.name} "
                  f"({topology.chip.hbm_bytes / GiB:.0f} GiB HBM per chip):", flush=True)
            best = find_max_batch(flag.config, topology, start=flag.per_device_batch or 8,
                                  report=lambda line: print(line, flush=True))
            print(f"  largest that fits: {best}")
            return 0
        result = compile_plan(plan_config(flag.config, topology, flag.per_device_batch), topology)
    except LibtpuMissing as e:
        print(e, file=sys.stderr)
        return 3
    except DoesNotFit as e:
        print(f"XLA:TPU: {spec} at per-device batch {flag.per_device_batch or 'of the config'} on {topology.name} "
              f"does not fit in {topology.chip.hbm_bytes / GiB:.0f} GiB HBM per chip: {e}", flush=True)
        return 1
    print("\n".join(report_lines(spec, topology, result)), flush=True)
    return 0


def cli():
    from absl import app

    from jaxclr import config as configlib
    define_flags()
    configlib.check_overrides(sys.argv, default="configs/clip.py:b16")
    app.run(lambda argv: sys.exit(main(argv)))
