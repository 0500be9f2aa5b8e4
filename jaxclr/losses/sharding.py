"""Where a loss runs: the mesh, its data-parallel axes, and the per-device wrapper.

Every loss in `jaxclr.losses` takes *global* arrays. The mesh is the explicit
``mesh=`` argument or the ambient one (``with jax.set_mesh(mesh):``); the batch
dimension is split over the data-parallel axes that mesh has (``data`` and
``fsdp``). With no mesh the same per-device code runs on one device with no
collectives.
"""
from __future__ import annotations

import dataclasses
import math

import jax
from jax.sharding import PartitionSpec as P

from jaxclr.parallel import BATCH_AXES

NEG = -1e30  # the masked logit of both engines; finite so that exp(NEG - NEG) never makes NaN


@dataclasses.dataclass(frozen=True)
class Placement:
    """A resolved mesh (or None) and the axes the batch is split over."""

    mesh: object | None
    axes: tuple[str, ...] | None  # None: single device, no collectives

    @property
    def num_shards(self) -> int:
        if self.axes is None:
            return 1
        return math.prod(self.mesh.shape[a] for a in self.axes)


def resolve(mesh=None) -> Placement:
    """The mesh to run on (explicit, else ambient) and its batch axes."""
    if mesh is None:
        ambient = jax.sharding.get_abstract_mesh()
        mesh = None if ambient.empty else ambient
    if mesh is None:
        return Placement(None, None)
    axes = tuple(a for a in mesh.axis_names if a in BATCH_AXES)
    if not axes:
        return Placement(None, None)
    return Placement(mesh, axes)


def check_batch(placement: Placement, *arrays) -> int:
    """Validates shapes; returns the global batch size N."""
    n = arrays[0].shape[0]
    for a in arrays:
        if a.ndim != 2 or a.shape[0] != n:
            raise ValueError(
                f"expected embeddings of shape [N, D] with the same N, got {[x.shape for x in arrays]}"
            )
    if arrays[0].shape[1] != arrays[-1].shape[1]:
        raise ValueError(f"embedding dims differ: {[x.shape for x in arrays]}")
    k = placement.num_shards
    if n % k:
        raise ValueError(
            f"global batch {n} is not divisible by the {k} data-parallel devices of axes {placement.axes}; "
            "change the batch size or the mesh"
        )
    return n


def per_device(placement: Placement, body, in_specs, out_specs, check_vma=True):
    """Wraps ``body`` in ``jax.shard_map`` over the batch axes (identity on one device).

    Specs are written with the placeholder ``'B'`` for "split over the batch axes"
    and ``None`` for "replicated"; e.g. ``('B', 'B', None)``.
    """
    if placement.axes is None:
        return body

    def spec(s):
        return P(placement.axes) if s == "B" else P()

    to_specs = lambda ss: tuple(spec(s) for s in ss) if isinstance(ss, tuple) else spec(ss)  # noqa: E731
    return jax.shard_map(
        body,
        mesh=placement.mesh,
        in_specs=to_specs(in_specs),
        out_specs=to_specs(out_specs),
        check_vma=check_vma,
    )
