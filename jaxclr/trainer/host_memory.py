"""Host memory: glibc's mmap threshold, left dynamic (the default) or fixed by train.malloc_mmap_threshold_kib.

glibc's malloc serves a request of at least the *mmap threshold* (128 KiB at start) with its
own mmap, returned to the system at `free`; smaller ones come from heaps ("arenas", up to
8 per core, one per thread that needs it). By default the threshold is dynamic: freeing an
mmapped block raises it to that block's size (up to 32 MiB), so later blocks of that size
come from the arenas instead. The train step's large buffers (up to ~10 MiB each, every step)
then stay in the heaps and are reused without new page faults. An orbax save made on the train
loop's threads put its buffers in the holes those step buffers leave, fragmenting the heaps, and
RSS ratcheted up over many saves; a save is now made on a thread of its own, with its own arena
(jaxclr.trainer.checkpoint, "Host memory"), which keeps RSS flat with the dynamic threshold.

Fixing the threshold (`mallopt(M_MMAP_THRESHOLD)`, which turns the dynamic adjustment off) was the
earlier remedy: it keeps large blocks out of the heaps altogether, but every step then maps, faults
in and unmaps its buffers again, which cost 12-17% of the wall time. `train.malloc_mmap_threshold_kib`
(default 0: leave glibc as it is) still sets it at the start of training. The measurements are in
docs/reliability.md ("Host memory"). Elsewhere than glibc (macOS, musl) nothing is done.
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
