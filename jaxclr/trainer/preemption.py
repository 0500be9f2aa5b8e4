"""Preemption: on SIGTERM/SIGINT the train loop saves one checkpoint and exits cleanly.

Single process: `PreemptionWatch` installs handlers for SIGTERM and SIGINT that only set a
flag; the loop checks it after every step (`requested(step)`), saves a checkpoint of that
step and returns, so the run ends within one step plus the save. A second signal while
that happens restores the previous handler (the default one if the signal was ignored, as a
shell's background job ignores SIGINT) and re-sends itself: the process exits at once.

Several processes (`jax.distributed`): jaxlib's preemption notifier owns SIGTERM there, and
the processes must agree on the step to stop at, so `requested(step)` asks JAX's preemption
sync point (`multihost_utils.reached_preemption_sync_point`), which is True on every
process at the same step. No handler is installed then.
"""
from __future__ import annotations

import os
import signal
import sys
import threading

import jax
from jax.experimental import multihost_utils

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class PreemptionWatch:
    """Context manager: ``with PreemptionWatch() as watch: ... if watch.requested(step): save, stop``."""

    def __init__(self, multi_process: bool | None = None):
        self.multi_process = jax.process_count() > 1 if multi_process is None else multi_process
        self.signal: int | None = None   # the first signal received
        self._previous: dict[int, object] = {}

    def __enter__(self):
        # Handlers can only be installed from the main thread (a train() called from a worker
        # thread simply runs without them).
        if not self.multi_process and threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame):
        del frame
        if self.signal is not None:   # second signal: give up on the clean exit
            previous = self._previous.get(signum)
            if previous in (None, signal.SIG_IGN):   # e.g. SIGINT of a job started with `&`: still end the run
                previous = signal.SIG_DFL
            signal.signal(signum, previous)
            if signum == signal.SIGINT and previous is signal.default_int_handler:
                raise KeyboardInterrupt
            os.kill(os.getpid(), signum)
            return
        self.signal = signum
        print(f"received {signal.Signals(signum).name}: saving a checkpoint after this step, then exiting "
              "(send it again to exit at once)", file=sys.stderr, flush=True)

    def requested(self, step: int) -> bool:
        """Whether to save and stop after `step` (the same answer on every process)."""
        if self.multi_process:
            return bool(multihost_utils.reached_preemption_sync_point(int(step)))
        return self.signal is not None
