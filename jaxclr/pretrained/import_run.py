"""A converted checkpoint as a jaxclr run: its config, its params in the model's layout, a run directory.

    config = import_run.config_for(imported)              # configs/clip.py:openai_b16 or siglip.py:b16_224 + overrides
    params = import_run.place(imported.params, config, mesh)   # the model's nnx.State, sharded
    import_run.write(imported, 'runs/vit_b32')            # config.json + checkpoints/0 + tokenizer/

The run directory is what `python -m jaxclr.evaluate`, `train.init_from=RUN` and `jaxclr.load`
read: ``config.json`` (the full config), ``run_info.json``, ``imported.json`` (source, format),
``tokenizer/`` (a copy of the tokenizer files, so the run is self-contained, also on gs://) and a
checkpoint at step 0 whose params are the converted ones (optimiser state fresh), written with
checksums like every checkpoint. Everything is converted and checked before anything is written.
The model computes in float32 (model.dtype); override it to fine-tune in bfloat16.
"""
from __future__ import annotations

import json
import pathlib
import re

import jax
import numpy as np

from jaxclr import config as configlib
from jaxclr import parallel, paths
from jaxclr.data import text
from jaxclr.models import text as text_tower
from jaxclr.models.convert import CheckpointError
from jaxclr.pretrained.sources import Imported, SourceError
from jaxclr.trainer import optim, run_info
from jaxclr.trainer import state as state_lib
from jaxclr.trainer.checkpoint import Checkpointer

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"
BASE = {"clip": "clip.py:openai_b16", "siglip": "siglip.py:b16_224"}   # the preset each family starts from
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")
_BLOCK = re.compile(r"^(.*/encoder/blocks)/(\d+)/(.*)$")


def config_for(imported: Imported, scan_layers: bool = True, tokenizer: str | None = None):
    """The run config of `imported`: its family's preset with the converted architecture, float32.
    `tokenizer` replaces the path of the tokenizer files (the run directory's copy)."""
    path, _, arg = BASE[imported.kind].partition(":")
    config = configlib.load(f"{CONFIGS / path}:{arg}")
    with config.unlocked():
        for key, value in imported.overrides.items():
            node, *_ = key.rsplit(".", 1)
            current = config
            for part in node.split("."):
                current = current[part]
            name = key.rsplit(".", 1)[1]
            if isinstance(current[name], float) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            try:
                current[name] = tuple(value) if isinstance(value, list) else value
            except TypeError:   # e.g. So400m's MLP width 4304 / 1152: no integer model.image.mlp_ratio
                raise SourceError(f"--source={imported.source}: {key}={value!r} is not a value jaxclr's config can "
                                  f"hold ({type(current[name]).__name__} expected); this architecture is not "
                                  "supported") from None
        config.model.dtype = "float32"
        config.model.scan_layers = bool(scan_layers)
        config.data.tokenizer_model = imported.tokenizer if tokenizer is None else tokenizer
    return config


def check_tokenizer(imported: Imported, config) -> None:
    """The tokenizer (when there is one) fits the weights: its ids fit the token table, and its end id is
    the one the source pools at (HF CLIP's eos_token_id); SourceError otherwise."""
    if not config.data.tokenizer_model:
        if text_needs_tokenizer(config):
            raise SourceError(f"--source={imported.source}: this model pools text at its tokenizer's end id, and "
                              "no tokenizer files are beside it; pass --tokenizer=DIR (vocab.json + merges.txt, or "
                              "tokenizer.json)")
        return
    try:
        tok = text.from_config(config.data)
    except text.TokenizerError as e:
        raise SourceError(f"--tokenizer: {e.message}") from None
    rows = int(config.model.text.vocab_size)
    if tok.vocab_size > rows:
        raise SourceError(f"--tokenizer: it has {tok.vocab_size} ids but the weights' token table has {rows} rows; "
                          "use the tokenizer the model was trained with")
    if imported.eos_id is not None and tok.eos_id != imported.eos_id:
        raise SourceError(f"--tokenizer: its end id is {tok.eos_id} but the model pools at eos_token_id "
                          f"{imported.eos_id}; use the tokenizer the model was trained with")


def text_needs_tokenizer(config) -> bool:
    """Whether building the text tower needs the tokenizer's special ids (`state.text_ids`)."""
    pool = text_tower.resolve_pool(config.model.text.pool, config.model.text.causal)
    return not (int(config.model.text.vocab_size) and pool in ("argmax", "last"))


def _layout(params: dict, scanned: bool) -> dict:
    """Unscanned paths -> the model's paths: blocks stacked on a leading axis when scanned."""
    if not scanned:
        return params
    out, groups = {}, {}
    for path, value in params.items():
        match = _BLOCK.match(path)
        if match:
            groups.setdefault(f"{match.group(1)}/{match.group(3)}", {})[int(match.group(2))] = value
        else:
            out[path] = value
    for path, layers in groups.items():
        out[path] = np.stack([layers[i] for i in sorted(layers)])
    return out


def place(params: dict, config, mesh):
    """`params` (unscanned paths -> arrays) as the model's param state (nnx.State), sharded on `mesh`.
    CheckpointError names the first param the model has and the conversion lacks, or the reverse, or a
    shape that differs."""
    spec, _ = state_lib.spec(config, mesh)
    flat = _layout(params, bool(config.model.scan_layers))
    used = set()

    def fill(path, leaf):
        name = "/".join(optim.path_names(path))
        if name not in flat:
            raise CheckpointError(f"the model has param {name} {tuple(leaf.shape)}, which the converted checkpoint "
                                  "lacks")
        value = np.asarray(flat[name], np.float32)
        if value.shape != tuple(leaf.shape):
            raise CheckpointError(f"param {name}: converted shape {value.shape}, model shape {tuple(leaf.shape)}")
        used.add(name)
        return jax.device_put(value, leaf.sharding)

    placed = jax.tree_util.tree_map_with_path(fill, spec.abstract["params"])
    extra = sorted(set(flat) - used)
    if extra:
        raise CheckpointError(f"the converted checkpoint has param {extra[0]}, which the model lacks")
    return placed


def write(imported: Imported, workdir: str, scan_layers: bool = True) -> str:
    """Writes the run directory of `imported` into `workdir` (module docstring); returns its path.
    SourceError when `workdir` already holds a run or the tokenizer does not fit; nothing is written then."""
    root = paths.resolve(workdir)
    if (root / run_info.CONFIG_FILE).exists() or (root / "checkpoints").exists():
        raise SourceError(f"--workdir={workdir} already holds a run; import into a new directory")
    config = config_for(imported, scan_layers)
    check_tokenizer(imported, config)
    parallel.initialize()
    mesh = parallel.make_mesh(config.mesh)
    with jax.set_mesh(mesh):
        params = place(imported.params, config, mesh)      # every check before the first write
        spec, init = state_lib.spec(config, mesh)
        state = jax.jit(init, out_shardings=spec.shardings)()
        state["params"] = params
        state["opt_state"] = jax.jit(spec.optimizer.init, out_shardings=spec.shardings["opt_state"])(params)
    if imported.tokenizer:
        config = config_for(imported, scan_layers, tokenizer=_copy_tokenizer(imported.tokenizer, root / "tokenizer"))
    run_info.check_and_record(config, workdir, 0)
    if jax.process_index() == 0:
        (root / "imported.json").write_text(json.dumps({"source": imported.source, "format": imported.format,
                                                        "kind": imported.kind}, indent=2) + "\n")
    with Checkpointer(root / "checkpoints") as ckpt:
        ckpt.save(0, state, force=True)
    return str(root)


def _copy_tokenizer(source: str, target) -> str:
    """Copies the tokenizer files (a directory's known files, or one file) into `target`; returns the path
    the config names (the directory, or the copied file)."""
    src = pathlib.Path(source).expanduser()
    if jax.process_index() == 0:
        target.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        for name in TOKENIZER_FILES:
            if (src / name).is_file() and jax.process_index() == 0:
                (target / name).write_bytes((src / name).read_bytes())
        return str(target)
    if jax.process_index() == 0:
        (target / src.name).write_bytes(src.read_bytes())
    return str(target / src.name)
