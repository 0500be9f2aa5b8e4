"""A profiler window over train steps (`train.profile_steps = (start, stop)`).

Steps start..stop (1-based, inclusive) run under `jax.profiler.trace`; the trace goes to
`<workdir>/profile` (`plugins/profile/<time>/<host>.xplane.pb`, one file per process),
readable by TensorBoard's profile plugin (`tensorboard --logdir <workdir>/profile`) and by
Perfetto / XProf. `()` profiles nothing. Keep the window a few steps after the first (which
compiles) and away from eval/checkpoint steps unless those are what you want to see.
"""
from __future__ import annotations

import os

import jax

from jaxclr import paths

PROFILE_DIR = "profile"


def check_window(window, total_steps: int) -> tuple[int, int] | None:
    """(start, stop) from `train.profile_steps`, or None for `()`; ValueError if not 1 <= start <= stop."""
    window = tuple(window or ())
    if not window:
        return None
    if len(window) != 2 or not all(isinstance(s, int) for s in window) or not 1 <= window[0] <= window[1]:
        raise ValueError(f"train.profile_steps={window!r}: use () or (start, stop) with 1 <= start <= stop")
    if window[0] > total_steps:
        raise ValueError(f"train.profile_steps={window!r} starts after train.total_steps={total_steps}")
    return window


class ProfileWindow:
    """`before(step)` starts the trace at `start`; `after(step, outputs)` waits for the step's
    outputs and stops it at `stop` (or at the last step of the run, or on `close`)."""

    def __init__(self, window, total_steps: int, workdir):
        self.window = check_window(window, total_steps)
        self.last = min(self.window[1], total_steps) if self.window else 0
        self.log_dir = os.fspath(paths.resolve(workdir) / PROFILE_DIR)
        self.active = False

    def before(self, step: int) -> None:
        if self.window and step == self.window[0]:
            jax.profiler.start_trace(self.log_dir)
            self.active = True

    def after(self, step: int, outputs) -> None:
        if self.active and step >= self.last:
            jax.block_until_ready(outputs)   # the trace holds the whole of the last step
            self.close()

    def close(self) -> None:
        if self.active:
            jax.profiler.stop_trace()
            self.active = False
