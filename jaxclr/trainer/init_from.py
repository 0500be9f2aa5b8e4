"""Fine-tuning: another run's params as the starting point of a new run (`train.init_from`).

    python -m jaxclr.train --config=configs/clip.py:tiny --workdir=runs/ft --config.train.init_from=runs/tiny

`train.init_from` names a run directory (`RUN`), its checkpoint directory (`RUN/checkpoints`)
or one checkpoint step (`RUN/checkpoints/<step>`), local or a URL (`gs://...`). Only the
params are read (an orbax partial restore, so the source's optimiser state may have any
structure, e.g. from another `model.freeze`); the optimiser state, the step (0), the RNG and
the non-finite guard's counters are fresh. Without a step the newest checkpoint that restores
is used; an unreadable newer one is reported and skipped, never moved (the source is only read).

The saved params must have exactly the current model's param paths and shapes; otherwise
`InitFromError` names the first path that differs. With `model.learn_scale = False` the logit
scale and bias keep their configured values (`model.init_scale`, `model.init_bias`), not the
source's: a fixed scale is the one the config states.

It applies to a fresh start only: a workdir with checkpoints of its own resumes from them and
ignores init_from (`jaxclr.train`), so a preempted fine-tune goes on where it stopped.
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Any

import jax
from etils import epath

from jaxclr import paths
from jaxclr.trainer import checkpoint, optim
from jaxclr.trainer import state as state_lib


class InitFromError(ValueError):
    """`train.init_from` names no usable checkpoint, or one that does not fit the model (one line)."""


@dataclasses.dataclass(frozen=True)
class Source:
    """A checkpoint directory (holding `<step>/` directories) and the step to read (None: newest good)."""
    directory: epath.Path
    step: int | None


def _has_steps(directory: epath.Path) -> bool:
    return directory.is_dir() and any(p.name.isdigit() and p.is_dir() for p in directory.iterdir())


def locate(path: str) -> Source:
    """The checkpoint directory and step that `path` (RUN, RUN/checkpoints or RUN/checkpoints/<step>) names."""
    root = paths.resolve(path)
    if root.name.isdigit() and (root / checkpoint.STATE_ITEM).is_dir():
        return Source(root.parent, int(root.name))
    for directory in (root / "checkpoints", root):
        if _has_steps(directory):
            return Source(directory, None)
    raise InitFromError(f"train.init_from: no checkpoint at {path!r}: looked for {root}/checkpoints/<step>/, "
                        f"{root}/<step>/ and {root} as one step (holding {checkpoint.STATE_ITEM}/); point it at a run "
                        "directory, its checkpoints/ directory or one step of it, or use '' to start from scratch")


def _shapes(tree) -> dict[str, tuple[int, ...]]:
    """'image/patch/kernel' -> shape, for the arrays (or their metadata) of a param tree."""
    return {"/".join(optim.path_names(p)): tuple(leaf.shape) for p, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def mismatch(saved: dict[str, tuple], wanted: dict[str, tuple]) -> str | None:
    """How the saved param shapes differ from the model's, naming the first differing path (None: equal)."""
    missing = [n for n in wanted if n not in saved]
    differ = [n for n in wanted if n in saved and saved[n] != wanted[n]]
    extra = [n for n in saved if n not in wanted]
    first = next((n for n in wanted if n in missing or n in differ), None)
    if first in differ:
        what = f"param {first} has shape {saved[first]} in the checkpoint and {wanted[first]} in this model"
    elif first is not None:
        what = f"param {first} {wanted[first]} of this model is not in the checkpoint"
    elif extra:
        what = f"the checkpoint has param {extra[0]} {saved[extra[0]]}, which this model lacks"
    else:
        return None
    count = len(missing) + len(differ) + len(extra)
    return what + (f" ({count} params differ)" if count > 1 else "")


def load_params(source: Source, abstract_params) -> tuple[int, Any]:
    """(step, params) of `source` laid out like `abstract_params` (ShapeDtypeStructs with shardings)."""
    with checkpoint.Checkpointer(source.directory, read_only=True) as ckpt:
        steps = ckpt.all_steps()
        if source.step is not None and source.step not in steps:
            raise InitFromError(f"train.init_from: {source.directory}/{source.step} is not a finished checkpoint "
                                f"(finished steps there: {steps or 'none'})")
        candidates = [source.step] if source.step is not None else steps[::-1]
        if not candidates:
            raise InitFromError(f"train.init_from: no finished checkpoint in {source.directory}")
        wanted = _shapes(abstract_params)
        for step in candidates:
            try:   # a readable other version is an error; an unreadable step is tried below like a damaged one
                ckpt.check_format(step, unreadable_ok=True)
            except checkpoint.CheckpointFormatError as e:
                raise InitFromError(f"train.init_from: {e}") from None
            error, differs, params = None, None, None
            try:
                differs = mismatch(_shapes(ckpt.state_metadata(step)["params"]), wanted)
                if differs is None:
                    params = ckpt.restore_params(abstract_params, step)
            except Exception as e:  # noqa: BLE001 - any failure to read a step makes it a bad step
                error = e
            if differs:   # read from the metadata, so the same on every process
                raise InitFromError(f"train.init_from: {source.directory}/{step} does not fit this model: {differs}; "
                                    "use the model config the checkpoint was trained with")
            if checkpoint.all_processes_agree(error is None):
                return step, params
            if jax.process_index() == 0:
                reason = checkpoint.one_line(error) if error is not None else "it failed on another process"
                print(f"warning: train.init_from: checkpoint {source.directory}/{step} does not restore ({reason}); "
                      "trying the previous one", file=sys.stderr, flush=True)
        raise InitFromError(f"train.init_from: no checkpoint in {source.directory} restores (tried steps "
                            f"{sorted(candidates)})")


def initialize(config, spec: state_lib.StateSpec, state: dict, source: Source) -> tuple[dict, int]:
    """(state, step read): `state` (fresh, from `state_lib.create`) with the params of `source` and an
    optimiser state initialised for them; the fixed logit params (model.learn_scale False) stay as built."""
    step, params = load_params(source, spec.abstract["params"])
    if not state_lib.frozen_parts(config)["learn_scale"]:
        params = jax.tree_util.tree_map_with_path(lambda path, new, old: old if optim.tower(path) is None else new,
                                                  params, state["params"])
    opt_state = jax.jit(spec.optimizer.init, out_shardings=spec.shardings["opt_state"])(params)
    return {**state, "params": params, "opt_state": opt_state}, step
