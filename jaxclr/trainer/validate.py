"""Checks a whole config up front, before any data is built or any state allocated.

    validate.problems(config, num_devices=8)  # ['train.batch_size: 100 is not divisible by ...', ...]
    validate.check(config)                    # raises ConfigError listing every problem, else None
    validate.check_or_exit(config)            # CLIs: `error: <problem>` per line on stderr, exit code 2

Each problem is one line `<key>: <what is wrong and what to change>`, and every problem of
the config is reported at once. The known names come from the registries of the modules
that read the keys (`losses.IMPLS`, `evals.runner.EVALUATORS`, `data.datasets.EMBEDDED`,
...), so a newly registered loss, evaluator or dataset is valid here without an edit.
The mesh is checked against the device count: with `num_devices=None` that is every
device of the job (`jax.distributed` is started first, as the trainer does).
"""
from __future__ import annotations

import math
import numbers

import jax
import ml_collections

from jaxclr import config as configlib
from jaxclr import parallel, paths
from jaxclr.config.report import MISSING as _MISSING
from jaxclr.config.report import ConfigError  # noqa: F401 - part of this module's API
from jaxclr.config.report import Report as _Report
from jaxclr.config.report import closest as _closest
from jaxclr.config.report import divisors as _divisors
from jaxclr.config.report import multiples as _multiples
from jaxclr.data import datasets, resize, text
from jaxclr.data.text import tokenizer
from jaxclr.evals import runner, tasks
from jaxclr.logs import profiler
from jaxclr.losses import IMPLS, engine, objective
from jaxclr.trainer import host_memory, nonfinite, validate_model

# ------------------------------------------------------------------ sections

def _mesh(r: _Report, num_devices: int) -> dict | None:
    """{'data': n, 'fsdp': n, 'model': n} for `num_devices`, or None if the mesh has problems."""
    sizes = {}
    for axis in parallel.AXES:
        key = f"mesh.{axis}"
        value = r.get(key)
        if value is _MISSING:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or (value != -1 and value < 1):
            r.add(key, f"{value!r} is not an axis size; use a positive number of devices, or -1 for every "
                  "device the other axes leave")
            continue
        sizes[axis] = int(value)
    if len(sizes) < len(parallel.AXES):
        return None
    auto = [axis for axis, size in sizes.items() if size == -1]
    fixed = math.prod(size for size in sizes.values() if size != -1)
    described = " x ".join(f"{axis}={size}" for axis, size in sizes.items())
    if len(auto) > 1:
        r.add(", ".join(f"mesh.{axis}" for axis in auto),
              f"{len(auto)} axes are -1; set at most one axis to -1 (every device the others leave) and give the "
              "others sizes")
        return None
    if auto and num_devices % fixed:
        r.add("mesh", f"{described}: the fixed axes use {fixed} devices, which does not divide the {num_devices} "
              f"devices; use fixed sizes whose product divides {num_devices}")
        return None
    if not auto and fixed != num_devices:
        r.add("mesh", f"{described} uses {fixed} devices but there are {num_devices}; make the product "
              f"{num_devices}, or set one axis to -1 (every device the others leave)")
        return None
    try:
        return dict(zip(parallel.AXES, parallel.mesh_shape(r.get("mesh"), num_devices)))
    except ValueError as e:   # a case the checks above missed
        r.add("mesh", str(e))
        return None


def _train(r: _Report, mesh: dict | None, num_processes: int) -> None:
    r.number("train.total_steps", integer=True, low=1, hint="set the number of optimiser steps to run, e.g. 500")
    r.number("train.log_every", integer=True, low=1, hint="set how often to log, e.g. every 50 steps")
    r.number("train.stop_at", integer=True, low=0, hint="use 0 to run to train.total_steps")
    r.choice("train.on_nonfinite", nonfinite.ON_NONFINITE, "non-finite policy")
    r.number("train.max_skips", integer=True, low=1, hint="set how many skipped steps in a row stop the run, e.g. 10")
    r.number("train.malloc_mmap_threshold_kib", integer=True, low=0, high=host_memory.MAX_KIB,
             hint="use 128 (glibc's initial value, fixed), or 0 to leave malloc as it is")
    batch = r.number("train.batch_size", integer=True, low=1, hint="set the global batch, e.g. 64")
    micro = r.number("train.micro_batches", integer=True, low=1, hint="use 1 to embed the whole batch at once")
    r.number("train.micro_unroll", integer=True, low=0, hint="use 0 to unroll the GradCache loops fully")
    source = r.get("train.init_from", "")
    # whether it names a checkpoint is checked on a fresh start (jaxclr.trainer.init_from)
    if not isinstance(source, str):
        r.add("train.init_from", f"{source!r} is not a path; use a run directory, RUN/checkpoints or "
              "RUN/checkpoints/<step>, or '' to start from scratch")
    if batch is not None and num_processes > 1 and batch % num_processes:
        r.add("train.batch_size", f"{batch} is not divisible by the {num_processes} processes (each reads an equal "
              f"share); use a multiple of {num_processes}, e.g. {_multiples(batch, num_processes)}")
    if batch is None or mesh is None:
        return
    shards = mesh["data"] * mesh["fsdp"]
    if batch % shards:
        r.add("train.batch_size", f"{batch} is not divisible by the {shards} data-parallel devices (mesh "
              f"data={mesh['data']} x fsdp={mesh['fsdp']}); use a multiple of {shards}, e.g. "
              f"{_multiples(batch, shards)}")
    elif micro is not None and (batch // shards) % micro:
        per_device = batch // shards
        r.add("train.micro_batches", f"{micro} does not divide the per-device batch {per_device} (train.batch_size "
              f"{batch} / {shards} data-parallel devices); use a divisor of {per_device}, e.g. "
              f"{_divisors(per_device, micro)}")


def _logging(r: _Report) -> None:
    total = r.get("train.total_steps", None)
    try:
        profiler.check_window(r.get("train.profile_steps"), total if isinstance(total, int) else 1 << 62)
    except (ValueError, TypeError) as e:
        r.add("train.profile_steps", str(e).removeprefix("train.profile_steps="))
    wandb = r.get("log.wandb")
    if not isinstance(wandb, bool):
        r.add("log.wandb", f"{wandb!r} is not True or False")
    project = r.get("log.wandb_project")
    if not isinstance(project, str) or (wandb is True and not project):
        r.add("log.wandb_project", f"{project!r}: name the W&B project, e.g. 'jaxclr'")


def _checkpoint(r: _Report) -> None:
    r.number("checkpoint.every", integer=True, low=1, hint="set how often to save, e.g. every 1000 steps")
    r.number("checkpoint.keep", integer=True, low=1, hint="set how many checkpoints to keep, e.g. 3")


def _optim(r: _Report) -> None:
    r.number("optim.lr", low=0, low_open=True, hint="use e.g. 1e-3")
    r.number("optim.weight_decay", low=0, hint="use 0 to turn weight decay off")
    r.number("optim.b1", low=0, high=1, high_open=True, hint="use e.g. 0.9")
    r.number("optim.b2", low=0, high=1, high_open=True, hint="use e.g. 0.98")
    r.number("optim.eps", low=0, low_open=True, hint="use e.g. 1e-6")
    r.number("optim.warmup_steps", integer=True, low=0, hint="use 0 to start at the peak learning rate")
    r.number("optim.min_lr_ratio", low=0, high=1, hint="the cosine decays to optim.lr times this; use e.g. 0.0 or 0.1")
    r.number("optim.grad_clip", low=0, low_open=True, hint="set the largest global gradient norm, e.g. 1.0")


def _loss(r: _Report) -> None:
    r.choice("loss.impl", IMPLS, "loss implementation")
    r.choice("loss.precision", engine.PRECISIONS, "loss matmul precision")
    r.number("loss.block_size", integer=True, low=1, hint="set the rows per block of the streamed loss, e.g. 1024")
    r.number("loss.mix_beta", low=0, low_open=True, hint="lam ~ Beta(mix_beta, mix_beta); use e.g. 0.5")
    r.number("loss.mix_scale", low=0, hint="use 0 for the learned scale")
    r.number("loss.uniformity_t", low=0, low_open=True, default=2.0, hint="use e.g. 2.0")
    r.number("loss.alignment_alpha", low=0, low_open=True, default=2.0, hint="use e.g. 2.0")
    terms = r.get("loss.terms")
    if terms is _MISSING:
        return
    try:
        weights = dict(terms)
    except (TypeError, ValueError):
        r.add("loss.terms", f"{terms!r} is not a mapping of term names to weights, e.g. {{'clip': 1.0}}")
        return
    active, refused = [], False
    for name in weights:
        if name not in objective.TERMS:
            refused = True
            r.add(f"loss.terms.{name}", f"unknown loss term{_closest(name, objective.TERMS)}; known terms: "
                  f"{', '.join(sorted(objective.TERMS))}")
            continue
        # a negative weight would maximise the term; no term is meant to be used that way
        weight = r.number(f"loss.terms.{name}", low=0, hint="set the term's weight (>= 0), or 0 to turn it off")
        if weight is None:
            refused = True
        elif weight != 0:
            active.append(name)
    if not active and not refused:
        r.add("loss.terms", "every term has weight 0; give at least one a non-zero weight, e.g. "
              "--config.loss.terms.clip=1.0")


def _data(r: _Report, training: bool) -> int | None:
    """Checks data.*; returns data.image_size if it is valid."""
    max_len = r.number("data.max_len", integer=True, low=2,
                       hint="set the tokens per caption including BOS and EOS, e.g. 80")
    text_len = r.get("model.text.max_len")
    if max_len is not None and text_len is not _MISSING and text_len != max_len:
        r.add("model.text.max_len", f"{text_len!r} differs from data.max_len {max_len}; set both to the same value")
    r.number("data.eval_examples", integer=True, low=1, hint="set the size of the eval set, e.g. 2000")
    r.choice("data.eval_resize", resize.MODES, "eval resize mode")
    image_size = r.number("data.image_size", integer=True, low=1, hint="set the image side in pixels, e.g. 224")
    counts = [r.number(f"data.{key}", integer=True, low=1, hint="set the number of examples to generate, e.g. 2000")
              for key in ("num_train", "num_test")]   # a list: both are checked
    if training:
        r.number("data.worker_count", integer=True, low=0, hint="use 0 to read in the main process")
        r.number("data.prefetch", integer=True, low=0, hint="use 0 to read each batch when it is needed")
    name = r.get("data.name")
    if name is _MISSING:
        return image_size
    data_cfg = ml_collections.ConfigDict(r.get("data"))   # attribute access for the datasets module
    data_dir = r.get("data.data_dir", "")
    not_a_dir = paths.not_a_directory(data_dir) if isinstance(data_dir, str) and data_dir else None
    if not_a_dir:
        r.add("data.data_dir", f"{data_dir!r} {not_a_dir} (or '' for the default)")
    bad_names = datasets.feature_problems(data_cfg)   # data.*_feature: names
    for key, problem in bad_names:
        r.add(key, problem)
    if name in list(datasets.EMBEDDED):
        if None not in counts and image_size is not None:
            try:   # the dataset's own limits, e.g. jaxclr_shapes needs image_size >= 32
                datasets.EMBEDDED[name].make_config(data_cfg)
            except (TypeError, ValueError) as e:
                r.add("data.image_size", f"{e}; change data.image_size")
        return image_size
    if not isinstance(name, str) or not name:
        r.add("data.name", f"{name!r} is not a dataset name; use one of {', '.join(datasets.EMBEDDED)} or a TFDS "
              "dataset prepared in data.data_dir")
        return image_size
    try:   # a TFDS dataset by name: only looks in the data dir; never builds or downloads
        builder = datasets.ensure_prepared(data_cfg)
    except (ValueError, FileNotFoundError) as e:
        r.add("data.name", str(e))
        return image_size
    except Exception as e:  # noqa: BLE001  (a TFDS builder that cannot even be constructed)
        r.add("data.name", f"cannot open TFDS dataset {name!r} ({type(e).__name__}: {e}); use one of "
              f"{', '.join(datasets.EMBEDDED)} or a dataset prepared as array_record in data.data_dir")
        return image_size
    for key, problem in [] if bad_names else datasets.feature_problems(data_cfg, builder.info.features):
        r.add(key, problem)   # data.*_feature: features of this dataset
    splits = list(builder.info.splits)
    for key in ("data.train_split", "data.eval_split") if training else ("data.eval_split",):
        split = r.get(key)
        if split is not _MISSING and split not in splits:
            r.add(key, f"{split!r} is not a split of {name}; use one of {', '.join(map(repr, splits))}")
    return image_size


def _tokenizer(r: _Report) -> None:
    """data.tokenizer, data.tokenizer_model, data.lowercase: builds the tokenizer (a SentencePiece model is loaded)."""
    data = r.get("data", None)
    try:
        if isinstance(data, dict):
            text.from_config(ml_collections.ConfigDict(data))
    except tokenizer.TokenizerError as e:
        r.add(e.key, e.message)


def _eval(r: _Report, training: bool) -> None:
    if training:
        r.number("eval.every", integer=True, low=0, hint="set how often to evaluate, or 0 for only at the end")
    r.number("eval.batch_size", integer=True, low=1, hint="set the rows per embedding call, e.g. 256")
    names = r.get("eval.evaluators", ())
    if not isinstance(names, (tuple, list)):
        r.add("eval.evaluators", f"{names!r} is not a tuple of evaluator names; use e.g. ('zeroshot', 'retrieval')")
    else:
        for name in names:
            if name not in list(runner.EVALUATORS):
                r.add("eval.evaluators", f"unknown evaluator {name!r}{_closest(name, runner.EVALUATORS)}; use names "
                      f"from {', '.join(map(repr, sorted(runner.EVALUATORS)))}")
    ks = r.get("eval.recall_ks", (1, 5, 10))
    if not isinstance(ks, (tuple, list)) or not ks or not all(
            isinstance(k, numbers.Integral) and not isinstance(k, bool) and k >= 1 for k in ks):
        r.add("eval.recall_ks", f"{ks!r} is not a tuple of positive integers; use e.g. (1, 5, 10)")
    r.number("eval.geometry_max_points", integer=True, low=2, default=None,
             hint="cap the points of the uniformity terms, e.g. 8192, or use None for every point")
    r.number("eval.probe_examples", integer=True, low=2,
             hint="set the train examples the linear probe fits on, e.g. 1000")
    r.number("eval.probe_c", low=0, low_open=True, hint="set the linear probe's inverse regularisation, e.g. 1.0")
    _zeroshot_datasets(r)
    _retrieval_datasets(r)


def _datasets(r: _Report, key: str, example: str, check) -> None:
    """`key`: a tuple of 'name[:split]' entries (`example`: what to write otherwise); for each, the
    split must exist and `check(cfg)` (cfg: the data config, data.name the entry's name) must pass.
    Each failure is one problem line of `key`."""
    entries = r.get(key, ())
    if not isinstance(entries, (tuple, list)) or not all(isinstance(e, str) for e in entries):
        r.add(key, f"{entries!r} is not a tuple of dataset names; use e.g. {example}, or () for none")
        return
    data = r.get("data", None)
    if not isinstance(data, dict):
        return
    for entry in entries:
        try:
            cfg = ml_collections.ConfigDict(data)
            cfg.name = tasks.parse_entry(entry)[0]
            tasks.split_of(tasks.splits_of(cfg), entry)   # never builds an embedded dataset
            check(cfg)
        except Exception as e:  # noqa: BLE001 - any dataset that cannot be opened is one problem line
            r.add(key, f"{entry!r}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")


def _zeroshot_datasets(r: _Report) -> None:
    """eval.zeroshot_datasets: each 'name[:split]' a prepared dataset with that split and a label."""
    def has_label(cfg):
        if not tasks.dataset_tasks(cfg):
            raise ValueError(f"{cfg.name} has no ClassLabel 'label' feature to classify; remove it")

    _datasets(r, "eval.zeroshot_datasets", "('cifar10', 'imagenet2012:validation')", has_label)


def _retrieval_datasets(r: _Report) -> None:
    """eval.retrieval_datasets: each 'name[:split]' a prepared dataset with that split, an image and captions."""
    entries = r.get("eval.retrieval_datasets", ())
    names = r.get("eval.evaluators", ())
    if entries and isinstance(entries, (tuple, list)) and isinstance(names, (tuple, list)) \
            and "retrieval" not in names:
        r.add("eval.retrieval_datasets", f"{tuple(entries)!r} is only read by the 'retrieval' evaluator; add it "
              "to eval.evaluators, or set () for none")
    _datasets(r, "eval.retrieval_datasets", "('coco_captions:test',)", tasks.retrieval_features)


# ------------------------------------------------------------------ entry points

def problems(config, num_devices: int | None = None, *, num_processes: int | None = None,
             training: bool = True) -> list[str]:
    """Every problem of `config`, one `<key>: <what is wrong and what to change>` line each ([] if none).

    `num_devices`/`num_processes` default to the job's (after `parallel.initialize()`); with
    `num_devices` given, `num_processes` defaults to 1. `training=False` (evaluation on a
    checkpoint) skips the keys only training reads: train, optim, loss and checkpoint.
    Nothing is built: a TFDS dataset named by data.name is only looked up in the data dir.
    """
    if num_devices is None:
        parallel.initialize()
        num_devices = jax.device_count()
        num_processes = jax.process_count() if num_processes is None else num_processes
    num_processes = 1 if num_processes is None else num_processes
    # Reads go to a plain copy: the checks are no use of a key (tests/test_config_reads.py finds unused keys).
    r = _Report(config.to_dict() if hasattr(config, "to_dict") else config)
    mesh = _mesh(r, num_devices)
    validate_model.check_model(r, _data(r, training))
    _tokenizer(r)
    _eval(r, training)
    if training:
        _train(r, mesh, num_processes)
        _loss(r)
        _optim(r)
        _checkpoint(r)
        _logging(r)
    return r.problems


def notes(config) -> list[str]:
    """Settings that are valid but probably not meant, one line each: said once when a run starts.

    A warmup longer than the run is one: the learning rate never reaches optim.lr and the cosine
    decay never starts. It is a note, not an error, because short smoke runs of any preset
    (`--config.train.total_steps=10`) are legitimate and should not need a second override.
    """
    out = []
    warmup, total = config.optim.warmup_steps, config.train.total_steps
    if warmup > total:
        out.append(f"optim.warmup_steps={warmup} is longer than train.total_steps={total}: the learning rate "
                   f"only reaches {total / warmup:.2g} x optim.lr and never decays; lower optim.warmup_steps to "
                   "reach the peak")
    return out


def check(config, num_devices: int | None = None, **kwargs) -> None:
    """Raises ConfigError naming every problem of `config` (see `problems`); returns None if there is none."""
    found = problems(config, num_devices, **kwargs)
    if found:
        raise ConfigError(found)


def check_or_exit(config, num_devices: int | None = None, **kwargs) -> None:
    """For command-line mains: prints `error: <problem>` per problem on stderr and exits with code 2."""
    found = problems(config, num_devices, **kwargs)
    if found:
        configlib.exit_with_errors(found)
