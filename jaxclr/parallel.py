"""Devices and shardings: multi-host start-up, the mesh, param and batch shardings.

- `initialize()` starts `jax.distributed` when the environment says there are
  several processes (TPU pod, SLURM, or an explicit coordinator address); the
  pure `distributed_args(environ)` reads the environment.
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


# jax.distributed.initialize() auto-detects these clusters when called without arguments (jax 0.10,
# jax/_src/clusters): SLURM needs every task started by `srun`, which sets the variables below (the
# coordinator is the first host of SLURM_STEP_NODELIST, port derived from SLURM_JOB_ID; each task
# drives GPU number SLURM_LOCALID, so every task must see all of its node's GPUs: use
# --gpus-per-node, not --gpus-per-task/--gpu-bind, or set JAX_LOCAL_DEVICE_IDS); a GKE TPU slice sets
# TPU_WORKER_HOSTNAMES + TPU_WORKER_ID; a GCE TPU VM pod (gcloud ... ssh --worker=all) sets no
# variable at all: jax asks the metadata server, so the launcher opts in with JAXCLR_DISTRIBUTED=1.
SLURM_STEP_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_PROCID", "SLURM_LOCALID")
EXPLICIT_VARS = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def _require(environ, name: str) -> str:
    if not (raw := environ.get(name, "")):
        raise ValueError(f"{name} is not set; an explicit coordinator needs all of {', '.join(EXPLICIT_VARS)}")
    return raw


def _int(environ, name: str, lo: int, hi: int | None = None) -> int:
    raw = _require(environ, name)
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None
    if value < lo or (hi is not None and value >= hi):
        raise ValueError(f"{name}={value} must be >= {lo}" + ("" if hi is None else f" and < {hi}"))
    return value


def _explicit_args(environ) -> dict:
    address = _require(environ, "JAX_COORDINATOR_ADDRESS")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"JAX_COORDINATOR_ADDRESS={address!r} must be host:port, e.g. localhost:12355")
    num_processes = _int(environ, "JAX_NUM_PROCESSES", 1)
    args = dict(coordinator_address=address, num_processes=num_processes,
                process_id=_int(environ, "JAX_PROCESS_ID", 0, num_processes))
    if ids := environ.get("JAX_LOCAL_DEVICE_IDS", ""):
        try:
            args["local_device_ids"] = [int(i) for i in ids.split(",")]
        except ValueError:
            raise ValueError(f"JAX_LOCAL_DEVICE_IDS={ids!r} must be comma-separated device numbers, e.g. 0,1") from None
    return args


def distributed_args(environ) -> dict | None:
    """Keyword arguments for jax.distributed.initialize() from `environ`; None means a single process.

    In order: JAXCLR_DISTRIBUTED=0 forces one process and =1 forces auto-detection ({}); an explicit
    coordinator (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID, optional
    JAX_LOCAL_DEVICE_IDS; any one of the first three asks for all); SLURM with SLURM_NTASKS > 1 and a
    TPU slice with several TPU_WORKER_HOSTNAMES give {} (jax auto-detects them). A missing or garbled
    variable raises a one-line ValueError that names it.
    """
    forced = environ.get("JAXCLR_DISTRIBUTED", "")
    if forced not in ("", "0", "1"):
        raise ValueError(f"JAXCLR_DISTRIBUTED={forced!r} must be 0 (one process) or 1 (auto-detect the cluster)")
    if forced == "0":
        return None
    if any(environ.get(v) for v in EXPLICIT_VARS):
        return _explicit_args(environ)
    if forced == "1":
        return {}
    ntasks = environ.get("SLURM_NTASKS", "")
    if ntasks:
        try:
            several = int(ntasks) > 1
        except ValueError:
            raise ValueError(f"SLURM_NTASKS={ntasks!r} is not an integer") from None
        if several:
            if missing := [v for v in SLURM_STEP_VARS if not environ.get(v)]:
                raise ValueError(f"{missing[0]} is not set but SLURM_NTASKS={ntasks}: start every task with "
                                 "`srun` (or set JAXCLR_DISTRIBUTED=0 for one process)")
            return {}
    if len([h for h in environ.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]) > 1:
        return {}
    return None


def multi_process_env() -> bool:
    """True when launched as one of several processes (TPU pod, SLURM, explicit coordinator)."""
    return distributed_args(os.environ) is not None


PEER_TIMEOUT_VAR = "JAXCLR_PEER_TIMEOUT_S"
DEFAULT_PEER_TIMEOUT_S = 30


def peer_timeout_s(environ) -> int:
    """Seconds without a heartbeat after which a process counts as dead ($JAXCLR_PEER_TIMEOUT_S, default 30).

    jax.distributed's coordination service then fails every other process, so a run whose
    peer died exits non-zero within about this time plus one heartbeat interval (jax's own
    default is 100 s).
    """
    raw = environ.get(PEER_TIMEOUT_VAR, "") or str(DEFAULT_PEER_TIMEOUT_S)
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{PEER_TIMEOUT_VAR}={raw!r} is not an integer number of seconds") from None
    if value < 5:
        raise ValueError(f"{PEER_TIMEOUT_VAR}={value} must be >= 5 seconds (heartbeats are sent every few seconds)")
    return value


def initialize() -> None:
    """Calls jax.distributed.initialize(**distributed_args(os.environ)) once; no-op for one process.

    The heartbeat timeout comes from `peer_timeout_s` (a dead peer ends the others in bounded time).
    """
    args = distributed_args(os.environ)
    if args is None or jax.distributed.is_initialized():
        return
    jax.distributed.initialize(**args, heartbeat_timeout_seconds=peer_timeout_s(os.environ))
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


def process_rows(mesh, global_batch_size: int) -> np.ndarray:
    """Sorted rows of a global batch that this process's devices hold (batch split over data x fsdp)."""
    index_map = batch_sharding(mesh).addressable_devices_indices_map((global_batch_size,))
    rows = set()
    for index in index_map.values():
        rows.update(range(*index[0].indices(global_batch_size)))
    return np.array(sorted(rows), np.int64)


def global_batch(local_batch: dict, mesh, rows=None, global_batch_size: int | None = None) -> dict:
    """Process-local numpy batch -> global jax arrays split over the batch axes.

    With `rows` (from `process_rows(mesh, global_batch_size)`), row i of each local array is
    global row rows[i]. Without, the local arrays are this process's share in jax's default
    layout (`jax.make_array_from_process_local_data`): all rows for one process.
    """
    sharding = batch_sharding(mesh)
    if rows is None:
        return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}
    if global_batch_size is None:
        raise ValueError("global_batch: pass global_batch_size with rows")
    where = {int(r): i for i, r in enumerate(rows)}

    def to_global(v):
        v = np.asarray(v)
        if v.shape[0] != len(where):
            raise ValueError(f"local batch has {v.shape[0]} rows, this process holds {len(where)}")

        def piece(index):
            first, stop, _ = index[0].indices(global_batch_size)
            return v[where[first]:where[first] + stop - first]
        return jax.make_array_from_callback((global_batch_size,) + v.shape[1:], sharding, piece)
    return {k: to_global(v) for k, v in local_batch.items()}
