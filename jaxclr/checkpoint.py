"""Training checkpoints: orbax CheckpointManager for the train state plus the grain iterator position.

One step directory per checkpoint, `<workdir>/<step>/` with these items:

    meta/    `{"format_version": FORMAT_VERSION}` (JSON). `restore` reads it first and raises
             `CheckpointFormatError` for a checkpoint without it or with another version.
    state/   the train-state pytree (params, optimiser state, step, rng key data), written by
             orbax's StandardSave; sharded arrays are written per shard and restored straight into
             the shardings of an abstract state.
    data/    the grain iterator position (one small JSON file per process), when an iterator is given.

Kill-safety (orbax 0.12.8, local or POSIX file systems): a save is written into
`<step>.orbax-checkpoint-tmp/`; when every item is written (and every host is done),
orbax writes `commit_success.txt` into it and atomically renames it to `<step>/`. Step
listing only accepts names without the temporary suffix, so a save that is killed at any
point leaves the previous checkpoint as the latest one. On GCS (no atomic rename) orbax
writes in place and treats a step as finished only once `commit_success.txt` exists.
Leftover temporary directories are removed by a writable `Checkpointer` (in the background
from its creation, finished before its first save or at `close`).

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
META_ITEM = "meta"
# Bump when the layout of a checkpoint (items, state tree) changes so that old ones no longer restore.
FORMAT_VERSION = 1


class CheckpointFormatError(ValueError):
    """A checkpoint has no format version or another one than this code reads."""


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
        directory = os.fspath(directory)
        self.directory = directory if "://" in directory else os.path.abspath(directory)  # keep gs:// URLs
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
        items = {META_ITEM: ocp.args.JsonSave({"format_version": FORMAT_VERSION}),
                 STATE_ITEM: ocp.args.StandardSave(state)}
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
        given, its position is restored in place. Raises `CheckpointFormatError` when the
        checkpoint's format version is not FORMAT_VERSION.
        """
        self.wait()
        if step is None:
            step = self.latest_step()
            if step is None:
                raise FileNotFoundError(f"no finished checkpoint in {self.directory}")
        self.check_format(step)
        items = {STATE_ITEM: ocp.args.StandardRestore(abstract_state)}
        if data_iter is not None:
            items[DATA_ITEM] = PyGrainCheckpointRestore(data_iter)
        restored = self._manager.restore(int(step), args=ocp.args.Composite(**items))
        return restored[STATE_ITEM]

    def format_version(self, step: int) -> int | None:
        """The format version stored in the checkpoint at `step` (None: it has no meta item)."""
        try:
            meta = self._manager.restore(int(step), args=ocp.args.Composite(**{META_ITEM: ocp.args.JsonRestore()}))
        except KeyError:  # orbax: 'Item "meta" was not found in the checkpoint'
            return None
        meta = meta[META_ITEM]
        return meta.get("format_version") if isinstance(meta, dict) else None

    def check_format(self, step: int) -> None:
        """Raises `CheckpointFormatError` unless the checkpoint at `step` has FORMAT_VERSION."""
        version = self.format_version(step)
        if version != FORMAT_VERSION:
            shown = "none (no meta item)" if version is None else version
            raise CheckpointFormatError(
                f"checkpoint {self.directory}/{int(step)} has format version {shown}, this code reads version "
                f"{FORMAT_VERSION}; use the jaxclr version that wrote it (see the run's run_info.json for "
                "its git commit), or start a new workdir")

    def wait(self) -> None:
        """Blocks until every pending save is written and finalised."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases orbax's threads. Call once at exit."""
        self._manager.wait_until_finished()
        # orbax 0.12's close() does not wait for the removal of leftover temporary directories
        # started at creation; a process that exits right after (e.g. a refused restart) would
        # kill that thread mid-way, with a traceback.
        getattr(self._manager, "_maybe_await_cleanup_tmp_directory", lambda: None)()
        self._manager.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
