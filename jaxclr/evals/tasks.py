"""What the evaluators read: the eval split, its zero-shot tasks and extra zero-shot datasets.

``eval_set(config)`` builds an ``EvalSet`` from ``config.data`` and ``config.eval``:

- ``split``: the eval split of the training dataset, streamed (``eval_stream.eval_split``);
- ``tasks``: its zero-shot tasks (shapes: color and shape, digits: digit, a TFDS dataset: its
  ClassLabel 'label'), metric names ``zeroshot/<task>_top1``;
- ``zeroshot``: one ``ZeroShotSplit`` per entry of ``eval.zeroshot_datasets``, each
  ``'<tfds name>[:<split>]'`` (``'cifar10'``, ``'imagenet2012:validation'``,
  ``'my_ds/config:1.0.0:test'``) of a dataset prepared as array_record in the data dir (or an
  embedded one), read for images and labels only. Default split: 'test', else 'validation'.
  Metric names: ``zeroshot/<entry with ':' -> '_'>_top1`` (tasks other than 'label', as on the
  embedded datasets, append ``_<task>``). At most data.eval_examples images of each are used.
- ``probe_split``: only when 'linear_probe' is in eval.evaluators (else None), the first
  eval.probe_examples examples of data.train_split with the tasks' labels, no captions: the
  linear probe's fit set.
- ``retrieval``: one ``RetrievalSplit`` per entry of ``eval.retrieval_datasets`` (same entry
  syntax), the WHOLE split read for images and captions (``retrieval_features``: the caption
  feature is data.caption_feature if the dataset has it, else 'captions'); metric names
  ``retrieval/<entry with ':' -> '_'>_i2t_R@1`` ... (runner.RetrievalEvaluator).

Eval images (all of the above) are resized as data.eval_resize says (jaxclr/data/resize.py).

Class names and templates (``names_and_templates``): the shipped CLIP names and templates for
the datasets in KNOWN (classnames.py, prompts.py), else the dataset's ClassLabel names with
underscores read as spaces and the generic ``prompts.DEFAULT_TEMPLATES``; the embedded datasets'
tasks use ``prompts.templates_for``.
"""
from __future__ import annotations

import dataclasses
import functools
import re

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from jaxclr.data import datasets, eval_stream, pipeline, text
from jaxclr.evals import classnames, prompts

# TFDS name (without config or version) -> (class names in label order, templates).
KNOWN = {
    "cifar10": (classnames.CIFAR10, prompts.CIFAR_TEMPLATES),
    "cifar100": (classnames.CIFAR100, prompts.CIFAR_TEMPLATES),
    "imagenet2012": (classnames.IMAGENET, prompts.IMAGENET_TEMPLATES),
    "imagenet_v2": (classnames.IMAGENET, prompts.IMAGENET_TEMPLATES),   # the ImageNet labels, same order
}
_VERSION = re.compile(r"^\d+(\.\d+)*$")


@dataclasses.dataclass(frozen=True)
class ZeroShotTask:
    """Metrics ``zeroshot/<name>_top1`` / ``_top5`` of the labels ``label`` of a split."""
    name: str
    label: str
    class_names: tuple[str, ...]
    templates: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class ZeroShotSplit:
    """An extra zero-shot dataset: a split read for images and labels, and its tasks."""
    entry: str
    split: object
    tasks: tuple[ZeroShotTask, ...]


@dataclasses.dataclass(frozen=True)
class RetrievalSplit:
    """A retrieval benchmark: a whole split read for images and captions; metrics retrieval/<stem>_..."""
    entry: str
    stem: str
    split: object


@dataclasses.dataclass(frozen=True)
class EvalSet:
    split: object
    tasks: tuple[ZeroShotTask, ...] = ()
    zeroshot: tuple[ZeroShotSplit, ...] = ()
    probe_split: object = None
    retrieval: tuple[RetrievalSplit, ...] = ()

    def class_names(self) -> dict[str, tuple[str, ...]]:
        """Metric stem -> class names of every zero-shot task (for chance levels)."""
        return {t.name: t.class_names for t in (*self.tasks, *(t for z in self.zeroshot for t in z.tasks))}


def parse_entry(entry: str) -> tuple[str, str | None]:
    """'name[/config][:version][:split]' -> (TFDS name with config and version, split or None)."""
    if not isinstance(entry, str) or not entry.strip(":/ "):
        raise ValueError(f"{entry!r} is not a dataset name; use e.g. 'cifar10' or 'cifar10:test'")
    head, sep, last = entry.rpartition(":")
    if sep and last and not _VERSION.match(last):
        return head, last
    return entry, None


def base_name(dataset: str) -> str:
    """'cifar100/config:3.0.2' -> 'cifar100'."""
    return dataset.split(":")[0].split("/")[0]


def names_and_templates(dataset: str, label_names) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Class names and templates of a dataset's ClassLabel (module docstring)."""
    known = KNOWN.get(base_name(dataset))
    if known is not None:
        names, templates = known
        if len(names) != len(label_names):
            raise ValueError(f"{dataset}: its label has {len(label_names)} classes, but the shipped "
                             f"{base_name(dataset)} class names are {len(names)}")
        return tuple(names), tuple(templates)
    return tuple(str(n).replace("_", " ") for n in label_names), tuple(prompts.DEFAULT_TEMPLATES)


def dataset_tasks(data_cfg, stem: str | None = None) -> tuple[ZeroShotTask, ...]:
    """Zero-shot tasks of the dataset ``data_cfg.name``; metric names prefixed by ``stem_``."""
    tasks = []
    for task, names in datasets.zero_shot_tasks(data_cfg).items():
        if data_cfg.name in datasets.EMBEDDED:
            names, templates = tuple(names), tuple(prompts.templates_for(task))
        else:
            names, templates = names_and_templates(data_cfg.name, names)
        name = task if stem is None else (stem if task == "label" else f"{stem}_{task}")
        tasks.append(ZeroShotTask(name, task, names, templates))
    return tuple(tasks)


def splits_of(data_cfg) -> list[str]:
    """The splits of dataset data_cfg.name (an embedded one: train, validation and test, without building it)."""
    if data_cfg.name in datasets.EMBEDDED:
        return ["train", "validation", "test"]
    return list(datasets.ensure_prepared(data_cfg).info.splits)


def split_of(splits, entry: str) -> str:
    """The split an entry names, else 'test', else 'validation'; ValueError if the dataset lacks it."""
    dataset, split = parse_entry(entry)
    if split is not None:
        if split not in splits:
            raise ValueError(f"{split!r} is not a split of {dataset}; use one of {', '.join(map(repr, splits))}")
        return split
    for split in ("test", "validation"):
        if split in splits:
            return split
    raise ValueError(f"{dataset} has no 'test' or 'validation' split; name one, e.g. "
                     f"'{entry}:{splits[0] if splits else 'test'}' (splits: {', '.join(map(repr, splits))})")


def zeroshot_split(entry: str, data_cfg) -> ZeroShotSplit:
    """The ZeroShotSplit of one eval.zeroshot_datasets entry (images and labels only)."""
    dataset, split = parse_entry(entry)
    cfg = ml_collections.ConfigDict(data_cfg.to_dict())
    cfg.name = dataset
    split = split_of(splits_of(cfg), entry)
    tasks = dataset_tasks(cfg, stem=entry.replace(":", "_"))
    if not tasks:
        raise ValueError(f"{dataset} has no ClassLabel 'label' feature to classify")
    standardize = pipeline.standardizer(cfg, with_labels=True, with_captions=False, eval_images=True)
    source = datasets.data_source(cfg, split)
    labels = tuple(t.label for t in tasks)
    return ZeroShotSplit(entry, eval_stream.RecordSplit(source, standardize, int(cfg.eval_examples), labels,
                                                        name=f"{dataset}:{split}"), tasks)


def probe_split(config) -> eval_stream.RecordSplit:
    """The linear probe's fit set: the first eval.probe_examples examples of data.train_split,
    read for images and the zero-shot tasks' labels."""
    data_cfg = config.data
    standardize = pipeline.standardizer(data_cfg, with_labels=True, with_captions=False, eval_images=True)
    source = datasets.data_source(data_cfg, data_cfg.train_split)
    return eval_stream.RecordSplit(source, standardize, int(config.eval.probe_examples),
                                   tuple(datasets.zero_shot_tasks(data_cfg)),
                                   name=f"{data_cfg.name}:{data_cfg.train_split}")


def is_text(feature) -> bool:
    """Whether a TFDS feature is one string (a Text, or a string Tensor as in a Sequence of dicts)."""
    return isinstance(feature, tfds.features.Tensor) and feature.shape == () and feature.np_dtype == np.object_


def caption_problem(feature) -> str | None:
    """None if a feature reads as captions (pipeline._captions), else what it is."""
    inner = feature.feature if isinstance(feature, tfds.features.Sequence) else None
    if is_text(feature) or is_text(inner) or (isinstance(inner, tfds.features.FeaturesDict)
                                              and "text" in inner.keys() and is_text(inner["text"])):
        return None
    return (f"a {type(feature).__name__}, not a Text, a Sequence of Text or a Sequence of records with "
            "a Text 'text'")


def retrieval_features(data_cfg) -> tuple[str, str]:
    """(image feature, caption feature) of dataset data_cfg.name read for retrieval: the caption
    feature is data.caption_feature if it has it, else 'captions'; ValueError if it has neither,
    no image, or captions it cannot read. An embedded dataset is not built."""
    names = datasets.feature_names(data_cfg)
    if data_cfg.name in datasets.EMBEDDED:
        return names["image"], "caption"
    features = datasets.ensure_prepared(data_cfg).info.features
    have = ", ".join(map(repr, sorted(features.keys())))
    if names["image"] not in features:
        raise ValueError(f"{data_cfg.name} has no image feature {names['image']!r} (data.image_feature; "
                         f"features: {have})")
    for name in dict.fromkeys((names["caption"], "captions")):
        if name in features:
            problem = caption_problem(features[name])
            if problem:
                raise ValueError(f"{data_cfg.name}: its caption feature {name!r} is {problem}")
            return names["image"], name
    raise ValueError(f"{data_cfg.name} has no caption feature {names['caption']!r} (data.caption_feature) "
                     f"or 'captions' (features: {have})")


def retrieval_split(entry: str, data_cfg) -> RetrievalSplit:
    """The RetrievalSplit of one eval.retrieval_datasets entry: every record of the split, read
    for images and captions (no labels, no class-name captions: a record without a caption is
    skipped and counted)."""
    dataset, split = parse_entry(entry)
    cfg = ml_collections.ConfigDict(data_cfg.to_dict())
    cfg.name = dataset
    split = split_of(splits_of(cfg), entry)
    image, caption = retrieval_features(cfg)
    standardize = pipeline.Standardize(int(cfg.image_size), image_feature=image, caption_feature=caption,
                                       resize_mode=str(cfg.eval_resize))
    source = datasets.data_source(cfg, split)
    return RetrievalSplit(entry, entry.replace(":", "_"),
                          eval_stream.RecordSplit(source, standardize, len(source), name=f"{dataset}:{split}"))


def eval_set(config) -> EvalSet:
    """The EvalSet of a run (module docstring)."""
    entries = tuple(config.eval.zeroshot_datasets)
    probe = probe_split(config) if "linear_probe" in tuple(config.eval.evaluators) else None
    retrieval = tuple(retrieval_split(entry, config.data) for entry in config.eval.retrieval_datasets)
    return EvalSet(split=eval_stream.eval_split(config), tasks=dataset_tasks(config.data),
                   zeroshot=tuple(zeroshot_split(entry, config.data) for entry in entries), probe_split=probe,
                   retrieval=retrieval)


def tokenize_fn(data_cfg):
    """The evaluators' tokenizer, the one training uses (data.tokenizer): list of N str -> int32 [N, data.max_len]."""
    return functools.partial(text.from_config(data_cfg).encode_batch, max_len=int(data_cfg.max_len))


def chance_class_names(config) -> dict[str, tuple[str, ...]]:
    """Metric stem -> class names of every zero-shot task of a run (for the report's chance levels)."""
    names = {t.name: t.class_names for t in dataset_tasks(config.data)}
    for entry in config.eval.zeroshot_datasets:
        cfg = ml_collections.ConfigDict(config.data.to_dict())
        cfg.name = parse_entry(entry)[0]
        names.update({t.name: t.class_names for t in dataset_tasks(cfg, stem=entry.replace(":", "_"))})
    return names
