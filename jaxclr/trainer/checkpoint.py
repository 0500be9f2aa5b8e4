"""Training checkpoints: orbax CheckpointManager for the train state.

One step directory per checkpoint, `<workdir>/<step>/` with these items:

    meta/    `{"format_version": FORMAT_VERSION, "checksums": {leaf: hex}}` (JSON). `restore` reads
             it first and raises `CheckpointFormatError` for a checkpoint without it or with another
             version; the checksums (`jaxclr.trainer.checksums`) are of every array of the state.
    state/   the train-state pytree (params, optimiser state, step, rng key data), written by
             orbax's StandardSave; sharded arrays are written per shard and restored straight into
             the shardings of an abstract state.

No data-iterator position is saved: the data order is a function of the step
(`jaxclr.data.pipeline.GlobalOrder`), so a checkpoint resumes on any process count.

Kill-safety (orbax 0.12.8, local or POSIX file systems): a save is written into
`<step>.orbax-checkpoint-tmp/`; when every item is written (and every host is done),
orbax writes `commit_success.txt` into it and atomically renames it to `<step>/`. Step
listing only accepts names without the temporary suffix, so a save that is killed at any
point leaves the previous checkpoint as the latest one. On GCS (no atomic rename) orbax
writes in place and treats a step as finished only once `commit_success.txt` exists.
Leftover temporary directories are removed by a writable `Checkpointer` (in the background
from its creation, finished before its first save or at `close`).

Integrity: every restore proves what it read. The state's checksums are computed on the devices
when a step is saved and written with it (atomically, in the meta item); `restore` recomputes
them on the restored arrays and raises `CorruptCheckpoint`, naming the first array that differs,
on a mismatch. The checksums are of the global arrays and the same on every process, whatever
the topology. A checkpoint written before checksums were recorded restores with a one-line
warning. `restore_latest_good` restores the newest step that restores on every process.
A step that fails (missing or corrupt files or metadata, an array that does not match its
checksum) is
reported in one line and moved aside as `<step>.corrupt` (a name orbax neither lists nor
cleans up, so nothing is deleted), and the previous step is tried. A format-version mismatch
is not corruption: it stops the run (`CheckpointFormatError`).

Saves are asynchronous: `save` returns once the arrays are copied to host memory (so the
caller may donate or overwrite them), and the files are written in a background thread. Call
`wait()` before reading the files and `close()` at exit.

Host memory: the part of a save that `save` waits for (checksums, the host copies, orbax's set-up)
runs on one long-lived thread of its own ("jaxclr-save"), not on the caller's. glibc's malloc gives
each thread that allocates its own heap ("arena"), so a save's buffers and what it keeps come from
that heap and do not land in the holes the train step's large buffers leave in the heaps they
cycle through every step; there they fragmented those heaps and RSS grew over many saves under
glibc's dynamic mmap threshold. Measured in docs/reliability.md ("Host memory").

A leak this module stops: orbax (0.12.8) reads tensorstore's kvstore byte counters before and
after every batch of arrays it writes or reads, only to log a "raw throughput" line, and
tensorstore's `experimental_collect_matching_metrics` (0.1.86) leaves one extra reference on
each value list it returns (~24 lists a save). They are made on orbax's short-lived worker
threads and pin pages of those threads' heaps, so RSS grew by ~1.2 MiB per 100 steps with a save
every 50 (docs/reliability.md, "Host memory"). `_skip_orbax_raw_byte_counters` makes orbax's
counter read return None, which orbax already treats as "no counter": it skips that log line
and that jax.monitoring figure, and nothing else changes.
"""
from __future__ import annotations

import concurrent.futures
import os
import sys
from typing import Any, Self

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers as policies

from jaxclr import paths
from jaxclr.trainer import checksums

STATE_ITEM = "state"
META_ITEM = "meta"
# Bump when the layout of a checkpoint (items, state tree) changes so that old ones no longer restore.
FORMAT_VERSION = 3


def _skip_orbax_raw_byte_counters() -> bool:
    """Stops the per-save leak described in the module docstring; True when orbax's hook was found."""
    try:
        from orbax.checkpoint._src.serialization import tensorstore_utils
    except ImportError:   # another orbax layout: nothing to patch
        return False
    if not hasattr(tensorstore_utils, "get_tensorstore_raw_bytes"):
        return False
    tensorstore_utils.get_tensorstore_raw_bytes = lambda direction=None: None
    return True


SKIPS_RAW_BYTE_COUNTERS = _skip_orbax_raw_byte_counters()

CORRUPT_SUFFIX = ".corrupt"
SAVER_THREAD = "jaxclr-save"   # the thread a save's host copies are made on (module docstring)


class CorruptCheckpoint(ValueError):
    """A restored array does not match the checksum saved with it."""


class CheckpointFormatError(ValueError):
    """A checkpoint has no format version or another one than this code reads."""


class NoGoodCheckpoint(RuntimeError):
    """A run directory has checkpoints, but none of them restores."""


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200] if text else ''}"


def all_processes_agree(ok: bool) -> bool:
    """True when `ok` holds on every process (one small all-gather when there are several)."""
    if jax.process_count() == 1:
        return ok
    return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))


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
                 read_only: bool = False, verify: bool = True):
        if every_steps < 1:
            raise ValueError(f"every_steps must be >= 1, got {every_steps}")
        if keep is not None and keep < 1:
            raise ValueError(f"keep must be >= 1 or None, got {keep}")
        # A str: absolute for a local directory (orbax wants that), a gs:// URL as given.
        self.directory = os.fspath(paths.resolve(directory))
        self.every_steps = every_steps
        self.keep = keep
        self.read_only = read_only
        self.verify = verify   # record checksums at save and check them at restore (off only to measure the cost)
        self._warned_unverified = False
        self._skipped: set[int] = set()   # steps a read-only checkpointer found bad
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
        self._saver: concurrent.futures.ThreadPoolExecutor | None = None   # made at the first save

    def should_save(self, step: int) -> bool:
        """Whether `save(step, ...)` without `force` would write a checkpoint."""
        return not self.read_only and bool(self._manager.should_save(int(step)))

    def save(self, step: int, state: Any, force: bool = False) -> bool:
        """Starts saving `state` at `step`; returns whether it saves.

        Blocks only for the device-to-host copy (and for a previous save that is still being
        written); the files are written in the background. `force=True` saves regardless of the
        interval, e.g. at the end of training; a step that is already saved is never rewritten.
        """
        step = int(step)
        if self.read_only or step in self.all_steps():
            return False
        # Decided here, before the checksums: they read the state back to the host, and the train
        # loop calls save() at every step (a sync per step had cost the loop its overlap).
        if not (force or self.should_save(step)):
            return False
        if self._saver is None:
            self._saver = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=SAVER_THREAD)
        return self._saver.submit(self._save, step, state).result()   # module docstring, "Host memory"

    def _save(self, step: int, state: Any) -> bool:
        meta = {"format_version": FORMAT_VERSION}
        if self.verify:   # before the save: the arrays may be donated once it returns
            meta["checksums"] = checksums.state_checksums(state)
        items = {META_ITEM: ocp.args.JsonSave(meta), STATE_ITEM: ocp.args.StandardSave(state)}
        # force=True: the decision above is the manager's own (should_save), not asked twice (on a
        # pod, asking reaches the preemption sync point again)
        return bool(self._manager.save(step, args=ocp.args.Composite(**items), force=True))

    def all_steps(self) -> list[int]:
        """Steps of the checkpoints this manager knows (finished or being written), ascending."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """Newest saved step, or None. Unfinished (temporary) step directories are never listed."""
        return self._manager.latest_step()

    def restore(self, abstract_state: Any, step: int | None = None) -> Any:
        """Returns the state saved at `step` (None: latest) laid out like `abstract_state`.

        `abstract_state` is a pytree of `jax.ShapeDtypeStruct`s whose `.sharding` says where each
        array goes (e.g. `jax.eval_shape` output with shardings attached). Raises
        `CheckpointFormatError` when the checkpoint's format version is not FORMAT_VERSION.
        """
        self.wait()
        if step is None:
            step = self.latest_step()
            if step is None:
                raise FileNotFoundError(f"no finished checkpoint in {self.directory}")
        meta = self.check_format(step)
        items = {STATE_ITEM: ocp.args.StandardRestore(abstract_state)}
        restored = self._manager.restore(int(step), args=ocp.args.Composite(**items))[STATE_ITEM]
        self._verify(step, restored, meta)
        return restored

    def restore_params(self, abstract_params: Any, step: int) -> Any:
        """Only `state['params']` of checkpoint `step`, laid out like `abstract_params` (an orbax
        partial restore: the optimiser state and the rest are not read, so they may have any
        structure). Raises `CheckpointFormatError` for another format version."""
        self.wait()
        meta = self.check_format(step)
        item = {"params": abstract_params}
        args = ocp.args.PyTreeRestore(item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
                                      partial_restore=True)
        restored = self._manager.restore(int(step), args=ocp.args.Composite(**{STATE_ITEM: args}))[STATE_ITEM]
        self._verify(step, restored, meta, only_prefix="params/")
        return restored["params"]

    def state_metadata(self, step: int) -> Any:
        """The saved state's tree at `step` with array metadata (`.shape`, `.dtype`) as leaves; reads no array."""
        handler = ocp.PyTreeCheckpointHandler()
        try:
            return handler.metadata(epath.Path(self.directory) / str(int(step)) / STATE_ITEM).tree
        finally:
            handler.close()

    def restore_latest_good(self, abstract_state: Any) -> tuple[int | None, Any]:
        """(step, state) of the newest checkpoint that restores on every process.

        Steps that fail to restore anywhere are reported in one line each and moved aside
        (`moved_aside`), newest first, until one restores. Returns (None, None) for a directory
        without checkpoints. Raises `NoGoodCheckpoint` when checkpoints exist (or were moved aside
        earlier) but none restores, and `CheckpointFormatError` for another format version.
        """
        self.wait()
        for step in reversed([s for s in self.all_steps() if s not in self._skipped]):
            error = None
            try:
                state = self.restore(abstract_state, step)
            except CheckpointFormatError:
                raise
            except Exception as e:  # noqa: BLE001 - any failure to read a step makes it a bad step
                error = e
            if all_processes_agree(error is None):
                return step, state
            reason = one_line(error) if error is not None else "it failed on another process"
            moved = self._move_aside(step)
            where = f"moved aside to {moved}" if moved else "skipped (read-only)"
            if jax.process_index() == 0:
                print(f"warning: checkpoint {self.directory}/{step} does not restore ({reason}); "
                      f"{where}; trying the previous one", file=sys.stderr, flush=True)
        if self._skipped:
            raise NoGoodCheckpoint(f"no checkpoint in {self.directory} restores (steps {sorted(self._skipped)})")
        if self.moved_aside():
            raise NoGoodCheckpoint(
                f"no checkpoint in {self.directory} restores (moved aside: "
                f"{', '.join(p.name for p in self.moved_aside())}); move one back to retry it, or start a new workdir")
        return None, None

    def moved_aside(self) -> list[epath.Path]:
        """Step directories moved aside by `restore_latest_good`, sorted by name."""
        root = epath.Path(self.directory)
        return sorted(root.glob(f"*{CORRUPT_SUFFIX}*")) if root.exists() else []

    def _move_aside(self, step: int) -> epath.Path | None:
        """Renames step directory `step` to `<step>.corrupt[-k]` (process 0; all processes wait).
        A read-only checkpointer moves nothing (returns None) and only skips the step."""
        root = epath.Path(self.directory)
        if self.read_only:
            self._skipped.add(int(step))
            return None
        target = root / f"{step}{CORRUPT_SUFFIX}"
        k = 0
        while target.exists():
            k += 1
            target = root / f"{step}{CORRUPT_SUFFIX}-{k}"
        if jax.process_index() == 0:
            (root / str(step)).rename(target)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"jaxclr: checkpoint {step} moved aside")
        self._manager.reload()
        return target

    def _meta(self, step: int) -> dict | None:
        """The meta item of the checkpoint at `step` (None: it has none)."""
        try:
            meta = self._manager.restore(int(step), args=ocp.args.Composite(**{META_ITEM: ocp.args.JsonRestore()}))
        except KeyError:  # orbax: 'Item "meta" was not found in the checkpoint'
            return None
        meta = meta[META_ITEM]
        return meta if isinstance(meta, dict) else None

    def _verify(self, step: int, restored: Any, meta: dict | None, only_prefix: str = "") -> None:
        """Raises CorruptCheckpoint unless every restored array (those under `only_prefix`) has the
        checksum saved in `meta`, step `step`'s meta item; warns once when it has no checksums."""
        if not self.verify:
            return
        saved = (meta or {}).get("checksums")
        if saved is None:
            if not self._warned_unverified and jax.process_index() == 0:
                print(f"warning: checkpoint {self.directory}/{int(step)} has no checksums (written before they "
                      "were recorded); restored without verifying it", file=sys.stderr, flush=True)
            self._warned_unverified = True
            return
        saved = {k: v for k, v in saved.items() if k.startswith(only_prefix)}
        bad = checksums.first_mismatch(saved, checksums.state_checksums(restored))
        if bad is not None:
            raise CorruptCheckpoint(f"checkpoint {self.directory}/{int(step)}: array {bad} does not match the "
                                    "checksum saved with it")

    def check_format(self, step: int, unreadable_ok: bool = False) -> dict | None:
        """Raises `CheckpointFormatError` unless the checkpoint at `step` has FORMAT_VERSION; returns
        its meta item (read once here, for the checksums).

        With `unreadable_ok`, a version that cannot be read at all (a damaged step, which
        `restore_latest_good` moves aside later) passes instead of raising its read error.
        """
        try:
            meta = self._meta(step)
        except Exception:  # noqa: BLE001
            if unreadable_ok:
                return None
            raise
        version = None if meta is None else meta.get("format_version")
        if version != FORMAT_VERSION:
            shown = "none (no meta item)" if version is None else version
            raise CheckpointFormatError(
                f"checkpoint {self.directory}/{int(step)} has format version {shown}, this code reads version "
                f"{FORMAT_VERSION}; use the jaxclr version that wrote it (see the run's run_info.json for "
                "its git commit), or start a new workdir")
        return meta

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
        if self._saver is not None:
            self._saver.shutdown()
            self._saver = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
