"""Host memory: a fixed glibc mmap threshold, so that checkpoint saves do not ratchet up RSS.

glibc's malloc serves a request of at least the *mmap threshold* (128 KiB at start) with its
own mmap, returned to the system at `free`; smaller ones come from heaps ("arenas", up to
8 per core, one per thread that needs it). By default the threshold is dynamic: freeing an
mmapped block raises it to that block's size (up to 32 MiB), so later blocks of that size
come from the arenas instead, where freed space fragments and stays resident. An orbax save
copies every array to host buffers and writes them from tensorstore's threads, so with the
dynamic threshold RSS ratchets up in jumps of several MiB over many saves. Setting the
threshold explicitly (`mallopt(M_MMAP_THRESHOLD)`) turns the dynamic adjustment off. The
measured growth with and without it, and its cost in wall time, are in docs/reliability.md
("Host memory").

`train.malloc_mmap_threshold_kib` sets it at the start of training (0: leave glibc as it
is). Elsewhere than glibc (macOS, musl) nothing is done.
"""
from __future__ import annotations

import ctypes
import platform

M_MMAP_THRESHOLD = -3   # mallopt parameter number (glibc malloc.h)
MAX_KIB = 32 * 1024     # glibc refuses thresholds above HEAP_MAX_SIZE / 2 (32 MiB on 64-bit)


def is_glibc() -> bool:
    return platform.libc_ver()[0] == "glibc"


def set_mmap_threshold(kib: int) -> bool:
    """Fixes glibc's mmap threshold at `kib` KiB; returns whether it was set (False for 0 or not glibc)."""
    kib = int(kib)
    if not 0 <= kib <= MAX_KIB:
        raise ValueError(f"train.malloc_mmap_threshold_kib must be in [0, {MAX_KIB}], got {kib}")
    if kib == 0 or not is_glibc():
        return False
    if ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, kib * 1024) != 1:
        raise OSError(f"glibc's mallopt refused an mmap threshold of {kib} KiB")
    return True
