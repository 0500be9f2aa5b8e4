"""Training checkpoints: orbax CheckpointManager for the train state plus the grain iterator position.

One step directory per checkpoint, `<workdir>/<step>/` with two items:

    state/   the train-state pytree (params, optimiser state, step, rng key data), written by
             orbax's StandardSave; sharded arrays are written per shard and restored straight into
             the shardings of an abstract state.
    data/    the grain iterator position (one small JSON file per process).

Kill-safety (orbax 0.12.8, local or POSIX file systems): a save is written into
`<step>.orbax-checkpoint-tmp/`; when every item is written (and every host is done),
orbax writes `commit_success.txt` into it and atomically renames it to `<step>/`. Step
listing only accepts names without the temporary suffix, so a save that is killed at any
point leaves the previous checkpoint as the latest one. On GCS (no atomic rename) orbax
writes in place and treats a step as finished only once `commit_success.txt` exists.
Leftover temporary directories are removed by a writable `Checkpointer` (in the background
from its creation, finished before its first save).

Saves are asynchronous: `save` returns once the arrays are copied to host memory (so the
caller may donate or overwrite them), and the files are written in a background thread. Call
`wait()` before reading the files and `close()` at exit.
"""
from __future__ import annotations

import os
from typing import Any, Self

import orbax.checkpoint as ocp
from grain.python import PyGrainCheckpointRestore, PyGrainCheckpointSave  # grain's orbax handler args
from orbax.checkpoint import checkpoint_managers as policies

STATE_ITEM = "state"
DATA_ITEM = "data"


class Checkpointer:
    """Saves and restores the train state (and the data-iterator position) every `every_steps` steps.

    `save` writes when `step % every_steps == 0` (or when `force=True`) and keeps the newest
    `keep` checkpoints (`keep=None` keeps all). All processes of a multi-host run call every
    method; orbax coordinates which host creates, finalises and deletes directories.

    `read_only=True` is for readers of a live run (e.g. evaluation while training): it never
    saves, deletes or creates anything, and in particular leaves alone the temporary directory
    of a save the trainer is still writing.
    """

    def __init__(self, directory: str | os.PathLike, every_steps: int = 1, keep: int | None = None,
                 read_only: bool = False):
        if every_steps < 1:
            raise ValueError(f"every_steps must be >= 1, got {every_steps}")
        if keep is not None and keep < 1:
            raise ValueError(f"keep must be >= 1 or None, got {keep}")
        self.directory = os.path.abspath(os.fspath(directory))
        self.every_steps = every_steps
        self.keep = keep
        self.read_only = read_only
        options = ocp.CheckpointManagerOptions(
            # The policy form of `save_interval_steps=every_steps`, minus orbax's default
            # "always save when no checkpoint exists yet", which would write one at the first step.
            save_decision_policy=policies.AnySavePolicy([
                policies.FixedIntervalPolicy(every_steps),
                policies.PreemptionCheckpointingPolicy(),
            ]),
            # The policy form of `max_to_keep=keep` (that option is deprecated in 0.12).
            preservation_policy=policies.LatestN(n=keep),
            create=not read_only,
            cleanup_tmp_directories=not read_only,  # drop saves that a crash or kill left unfinished
            read_only=read_only,
            enable_async_checkpointing=True,  # the default, stated because `wait`/`close` rely on it
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def should_save(self, step: int) -> bool:
        """Whether `save(step, ...)` without `force` would write a checkpoint."""
        return not self.read_only and bool(self._manager.should_save(int(step)))

    def save(self, step: int, state: Any, data_iter: Any = None, force: bool = False) -> bool:
        """Starts saving `state` (and the iterator position) at `step`; returns whether it saves.

        Blocks only for the device-to-host copy (and for a previous save that is still being
        written); the files are written in the background. `force=True` saves regardless of the
        interval, e.g. at the end of training; a step that is already saved is never rewritten.
        """
        step = int(step)
        if self.read_only or step in self.all_steps():
            return False
        items = {STATE_ITEM: ocp.args.StandardSave(state)}
        if data_iter is not None:
            items[DATA_ITEM] = PyGrainCheckpointSave(data_iter)
        return bool(self._manager.save(step, args=ocp.args.Composite(**items), force=force))

    def all_steps(self) -> list[int]:
        """Steps of the checkpoints this manager knows (finished or being written), ascending."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """Newest saved step, or None. Unfinished (temporary) step directories are never listed."""
        return self._manager.latest_step()

    def restore(self, abstract_state: Any, data_iter: Any = None, step: int | None = None) -> Any:
        """Returns the state saved at `step` (None: latest) laid out like `abstract_state`.

        `abstract_state` is a pytree of `jax.ShapeDtypeStruct`s whose `.sharding` says where each
        array goes (e.g. `jax.eval_shape` output with shardings attached). When `data_iter` is
        given, its position is restored in place.
        """
        self.wait()
        if step is None:
            step = self.latest_step()
            if step is None:
                raise FileNotFoundError(f"no finished checkpoint in {self.directory}")
        items = {STATE_ITEM: ocp.args.StandardRestore(abstract_state)}
        if data_iter is not None:
            items[DATA_ITEM] = PyGrainCheckpointRestore(data_iter)
        restored = self._manager.restore(int(step), args=ocp.args.Composite(**items))
        return restored[STATE_ITEM]

    def wait(self) -> None:
        """Blocks until every pending save is written and finalised."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases orbax's threads. Call once at exit."""
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
