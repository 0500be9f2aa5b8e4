"""The train loop's progress line (throughput, ETA) and compact durations."""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from jaxclr.logs.metrics import to_float


def format_duration(seconds: float) -> str:
    """Compact duration: `45s`, `2m31s`, `1h02m`, `3d04h` (`?` when unknown)."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


class Progress:
    """Throttled one-line training status: `step 120/500 | loss 3.214 | 1,234 ex/s | ETA 2m31s`.

    `update(step, metrics, examples)` is called once per step with that step's metrics and the
    number of examples it processed. A line is produced on the first update, then whenever at
    least `every_s` seconds have passed since the previous line, and always at `total_steps`.
    The first interval holds the compilation of the step, so its line gives its duration and no
    rate or ETA (those would count the compile as training: a 14-minute run once printed "ETA
    54m33s"); from the second line on, examples/s and the ETA use only the steps since the
    previous line. The line is returned (None when nothing
    is due) and passed to `printer` (default: `print(..., flush=True)`; None to stay silent).
    """

    def __init__(self, total_steps: int, start_step: int = 0, every_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic,
                 printer: Callable[[str], Any] | None = lambda line: print(line, flush=True)):
        self.total_steps = int(total_steps)
        self.every_s = float(every_s)
        self._clock = clock
        self._printer = printer
        self._last_time = clock()
        self._last_step = int(start_step)
        self._examples = 0.0
        self._printed = False

    def update(self, step: int, metrics: Mapping[str, Any], examples: float = 0) -> str | None:
        """Accounts one step; returns (and prints) the status line when one is due."""
        step = int(step)
        self._examples += float(examples)
        now = self._clock()
        elapsed = now - self._last_time
        due = not self._printed or elapsed >= self.every_s or step >= self.total_steps
        if not due:
            return None
        steps = step - self._last_step
        parts = [f"step {step}/{self.total_steps}"]
        parts += [f"{name} {to_float(value):.4g}" for name, value in metrics.items()]
        if not self._printed and step < self.total_steps:
            parts.append(f"first {format_duration(elapsed)} incl. compilation, ETA at the next line")
        elif elapsed > 0:
            parts.append(f"{self._examples / elapsed:,.0f} ex/s")
            if steps > 0:
                remaining = max(self.total_steps - step, 0) * elapsed / steps
                parts.append(f"ETA {format_duration(remaining)}")
        line = " | ".join(parts)
        self._last_time, self._last_step, self._examples = now, step, 0.0
        self._printed = True
        if self._printer is not None:
            self._printer(line)
        return line
