"""Devices and shardings: multi-host start-up, the mesh, param and batch shardings.

- `initialize()` starts `jax.distributed` when the environment says there are
  several processes (TPU pod, SLURM, or an explicit coordinator address).
- `make_mesh(config.mesh)` builds a ('data', 'fsdp', 'model') mesh with Auto axes.
- The batch is split over ('data', 'fsdp'); each process reads only its rows and
  `global_batch` assembles global arrays from the process-local data.
- `param_shardings` shards each weight's largest dimension over 'fsdp' (and
  another over 'model') when it divides evenly, and replicates the rest.
"""
from __future__ import annotations

import logging
import math
import os

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

AXES = ("data", "fsdp", "model")
BATCH_AXES = ("data", "fsdp")
log = logging.getLogger(__name__)


def multi_process_env() -> bool:
    """True when launched as one of several processes (TPU pod, SLURM, explicit coordinator)."""
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        return True
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return True
    return len([h for h in os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1


def initialize() -> None:
    """Calls jax.distributed.initialize() once when running multi-process; no-op otherwise."""
    if not multi_process_env() or jax.distributed.is_initialized():
        return
    kwargs = {}
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        kwargs = dict(coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
                      num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                      process_id=int(os.environ["JAX_PROCESS_ID"]))
    jax.distributed.initialize(**kwargs)
    log.info("process %d of %d, %d local / %d global devices", jax.process_index(), jax.process_count(),
             jax.local_device_count(), jax.device_count())


def mesh_shape(mesh_cfg, num_devices: int) -> tuple[int, int, int]:
    sizes = [int(mesh_cfg[a]) for a in AXES]
    fixed = math.prod(s for s in sizes if s != -1)
    if sizes.count(-1) > 1 or num_devices % fixed:
        raise ValueError(f"mesh {dict(zip(AXES, sizes))} does not fit {num_devices} devices; "
                         "set at most one axis to -1 and make the others divide the device count")
    sizes = [num_devices // fixed if s == -1 else s for s in sizes]
    if math.prod(sizes) != num_devices:
        raise ValueError(f"mesh {dict(zip(AXES, sizes))} uses {math.prod(sizes)} devices, "
                         f"but {num_devices} are available")
    return tuple(sizes)


def make_mesh(mesh_cfg, devices=None) -> jax.sharding.Mesh:
    devices = jax.devices() if devices is None else devices
    shape = mesh_shape(mesh_cfg, len(devices))
    return jax.make_mesh(shape, AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def batch_sharding(mesh) -> NamedSharding:
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def _spec(shape, mesh) -> P:
    spec = [None] * len(shape)
    if len(shape) < 2:
        return P(*spec)
    for axis in ("fsdp", "model"):
        size = mesh.shape[axis]
        if size == 1:
            continue
        free = [i for i in range(len(shape)) if spec[i] is None and shape[i] % size == 0]
        if free:
            spec[max(free, key=lambda i: shape[i])] = axis
    return P(*spec)


def param_shardings(abstract_params, mesh):
    """NamedShardings for a pytree of params (arrays or ShapeDtypeStructs)."""
    return jax.tree.map(lambda x: NamedSharding(mesh, _spec(x.shape, mesh)), abstract_params)


def global_batch(local_batch: dict, mesh) -> dict:
    """Process-local numpy batch -> global jax arrays split over the batch axes."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}
