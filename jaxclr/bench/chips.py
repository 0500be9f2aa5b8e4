"""What the planning and throughput tools need to know about accelerators: memory and peak FLOP/s.

Vendor figures, not measurements: each entry names its source. Peak FLOP/s are dense
(no sparsity) bf16 matrix-unit figures, the denominator of MFU (model FLOPs utilisation);
HBM is the memory per chip (per device JAX sees: one chip, with v4 and v5p megacore).
No JAX import: `python -m jaxclr.plan --help` stays fast.
"""
from __future__ import annotations

import dataclasses

GiB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
    """One accelerator kind: how JAX names its devices (`device_kind`), HBM bytes per device and
    peak dense bf16 FLOP/s per device (the roofline's compute ceiling)."""

    name: str
    device_kind: str
    hbm_bytes: int
    peak_bf16_flops: float


# TPU generations by the name used in topology strings (`v5e:16x16`). Sources (Google Cloud TPU
# documentation, "System architecture" pages, as of 2025):
TPUS = {
    # cloud.google.com/tpu/docs/v4: 32 GiB HBM2 and 275 TFLOP/s bf16 per chip (megacore: one device per chip)
    "v4": Chip("v4", "TPU v4", 32 * GiB, 275e12),
    # cloud.google.com/tpu/docs/v5e: 16 GiB HBM2 and 197 TFLOP/s bf16 per chip
    "v5e": Chip("v5e", "TPU v5 lite", 16 * GiB, 197e12),
    # cloud.google.com/tpu/docs/v5p: 95 GiB HBM2e and 459 TFLOP/s bf16 per chip
    "v5p": Chip("v5p", "TPU v5", 95 * GiB, 459e12),
    # cloud.google.com/tpu/docs/v6e (Trillium): 32 GiB HBM and 918 TFLOP/s bf16 per chip
    "v6e": Chip("v6e", "TPU v6 lite", 32 * GiB, 918e12),
}

# GPUs, matched by a substring of JAX's device_kind ("NVIDIA H100 80GB HBM3"). Sources: NVIDIA's
# data sheets, dense bf16 Tensor Core figures (the sheets' headline numbers are with sparsity, 2x these).
GPUS = {
    # H100 PCIe data sheet: 1,513 TFLOP/s bf16 with sparsity -> 756 dense; 80 GB HBM2e (matched before "H100")
    "H100 PCIe": Chip("H100 PCIe", "H100 PCIe", 80 * 10**9, 756e12),
    # H100 SXM5 data sheet: 1,979 TFLOP/s bf16 with sparsity -> 989 dense; 80 GB HBM3
    "H100": Chip("H100", "H100", 80 * 10**9, 989e12),
    # H200 SXM data sheet: the H100's Tensor Cores (989 dense bf16) with 141 GB HBM3e
    "H200": Chip("H200", "H200", 141 * 10**9, 989e12),
    # A100 data sheet: 312 TFLOP/s bf16 dense; 40 or 80 GB (the larger here)
    "A100": Chip("A100", "A100", 80 * 10**9, 312e12),
}


def tpu_generation(topology: str) -> Chip:
    """The Chip of a topology string 'v5e:16x16' (its part before ':'); ValueError naming the known ones."""
    name = topology.split(":", 1)[0].lower()
    if name not in TPUS:
        raise ValueError(f"unknown TPU generation {name!r} in {topology!r}; use one of {', '.join(TPUS)} "
                         "(e.g. v5e:4x4, v4:2x2x2)")
    return TPUS[name]


def chip_of_device_kind(device_kind: str) -> Chip | None:
    """The Chip whose device_kind JAX reports (TPUs: exactly; GPUs: the model in the name), else None."""
    for chip in TPUS.values():
        if device_kind == chip.device_kind:
            return chip
    for chip in GPUS.values():
        if chip.device_kind in device_kind:
            return chip
    return None
