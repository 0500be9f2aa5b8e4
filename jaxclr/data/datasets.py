"""Dataset names -> TFDS builders, built on first use, read as random-access sources.

Embedded datasets (EMBEDDED: 'jaxclr_shapes', 'jaxclr_digits') are generated locally and
written as array_record the first time they are needed. Any other name is a TFDS dataset
(optionally 'name/config:version') that must already be prepared as array_record in the
data dir; it is never downloaded, and a missing one is a clear error saying where it was
looked for and how to prepare it.

`data_cfg` is the `config.data` ConfigDict (fields: name, data_dir, image_size,
num_train, num_test, build_seed, image_feature, caption_feature, label_feature; see configs/).
Your own images become such a dataset with `python -m jaxclr.data.prepare`.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Callable

import tensorflow_datasets as tfds
from tensorflow_datasets.core import file_adapters, read_only_builder

from jaxclr import paths
from jaxclr.data import digits, shapes

DEFAULT_DATA_DIR = '~/.cache/jaxclr/tensorflow_datasets'
DATA_DIR_ENV = 'JAXCLR_DATA_DIR'

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class EmbeddedDataset:
    """A dataset jaxclr can generate itself: its builder, config and zero-shot tasks."""
    builder_cls: type
    make_config: Callable       # data_cfg -> tfds.core.BuilderConfig
    tasks: dict                 # task name -> class names
    task_labels: Callable       # decoded example -> {task name: class index or -1}
    flip_safe: bool             # does a horizontal flip (with left/right swapped) keep captions true?
    vocabulary: Callable        # () -> every word of its captions and prompts (data.tokenizer='words')


def _shapes_config(data_cfg):
    return shapes.shapes_config(data_cfg.image_size, data_cfg.num_train, data_cfg.num_test,
                                data_cfg.build_seed)


def _digits_config(data_cfg):
    return digits.digits_config(data_cfg.image_size)


EMBEDDED = {
    'jaxclr_shapes': EmbeddedDataset(shapes.JaxclrShapes, _shapes_config, shapes.TASKS,
                                     shapes.task_labels, flip_safe=True,
                                     vocabulary=shapes.vocabulary),
    'jaxclr_digits': EmbeddedDataset(digits.JaxclrDigits, _digits_config, digits.TASKS,
                                     digits.task_labels, flip_safe=False,   # a mirrored 7 is no 7
                                     vocabulary=digits.vocabulary),
}


def resolve_data_dir(data_cfg) -> str:
    """The data dir: data.data_dir, else $JAXCLR_DATA_DIR, else DEFAULT_DATA_DIR; a local one
    made absolute, a URL (gs://bucket/tfds) passed to TFDS unchanged."""
    path = data_cfg.data_dir or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    return os.fspath(paths.resolve(path))


def get_builder(data_cfg) -> tfds.core.DatasetBuilder:
    """The TFDS builder for data.name in the data dir (nothing is built or downloaded)."""
    name, data_dir = data_cfg.name, resolve_data_dir(data_cfg)
    if name in EMBEDDED:
        spec = EMBEDDED[name]
        return spec.builder_cls(config=spec.make_config(data_cfg), data_dir=data_dir,
                                file_format='array_record')
    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(
            f'Unknown dataset {name!r}: it is not an embedded dataset ({", ".join(EMBEDDED)}) '
            f'and no TFDS dataset of that name is registered or prepared in {data_dir}.') from None
    except ImportError as e:   # TFDS's code for it needs a module jaxclr lacks (coco_captions: TensorFlow)
        try:   # the prepared copy's own metadata describes it: read that
            return read_only_builder.builder_from_files(name, data_dir=data_dir)
        except tfds.core.registered.DatasetNotFoundError:
            raise FileNotFoundError(
                f'TFDS dataset {name!r} is not prepared in {data_dir}, and its TFDS code cannot run here '
                f'({e}); prepare it where it can, e.g. `tfds build {name} --data_dir={data_dir} '
                '--file_format=array_record` with TensorFlow installed.') from None


def ensure_prepared(data_cfg) -> tfds.core.DatasetBuilder:
    """The builder of data.name, generated first if it is an embedded dataset not yet built.

    A non-embedded dataset that is not prepared (as array_record) raises FileNotFoundError
    naming the data dir and how to prepare it; nothing is ever downloaded.
    """
    builder = get_builder(data_cfg)
    data_dir = resolve_data_dir(data_cfg)
    if data_cfg.name in EMBEDDED:
        if not builder.is_prepared():
            log.info('Building %s/%s into %s (first use).', data_cfg.name,
                         builder.builder_config.name, data_dir)
            try:
                builder.download_and_prepare(file_format='array_record',
                                             download_config=tfds.download.DownloadConfig())
            except FileExistsError:   # another job built the same copy first (its rename won): use it
                if not builder.is_prepared():
                    raise
                log.info('%s was built by another job meanwhile; using that copy.', data_cfg.name)
        return builder
    if not builder.is_prepared():
        raise FileNotFoundError(
            f'TFDS dataset {data_cfg.name!r} is not prepared in {data_dir} (looked for '
            f'{builder.data_path}); jaxclr never downloads it. Prepare it there as array_record, '
            f'e.g. `tfds build {data_cfg.name} --data_dir={data_dir} --file_format=array_record`, '
            f'or from your own images with `python -m jaxclr.data.prepare --name={data_cfg.name} '
            f'--data_dir={data_dir} ...`, or set data.data_dir / ${DATA_DIR_ENV} to where it is prepared. '
            f'Embedded datasets that need no preparation: {", ".join(EMBEDDED)}.')
    formats = builder.info.available_file_formats()
    if not formats & file_adapters.FileFormat.with_random_access():
        raise ValueError(
            f'TFDS dataset {data_cfg.name!r} in {data_dir} is stored as '
            f'{sorted(f.value for f in formats)}; jaxclr reads random-access formats only (array_record). '
            f'Re-prepare it as array_record: `tfds build {data_cfg.name} --data_dir={data_dir} '
            f'--file_format=array_record` (or `tfds convert_format`) for a TFDS dataset, or `python -m '
            f'jaxclr.data.prepare --name={data_cfg.name} --data_dir={data_dir} ...` from the images.')
    return builder


def data_source(data_cfg, split: str):
    """Random-access source (len, [i] -> decoded numpy example dict) of one split."""
    builder = ensure_prepared(data_cfg)
    if split not in builder.info.splits:
        raise ValueError(f'Split {split!r} not in {data_cfg.name} (splits: {list(builder.info.splits)}).')
    return builder.as_data_source(split=split)


FEATURE_KEYS = {'image': 'image_feature', 'caption': 'caption_feature', 'label': 'label_feature'}


def feature_names(data_cfg) -> dict:
    """{'image', 'caption', 'label'} -> the feature name data.<role>_feature sets (default: the role)."""
    return {role: data_cfg.get(key, role) for role, key in FEATURE_KEYS.items()}


def feature_problems(data_cfg, features=None) -> list[tuple[str, str]]:
    """(config key, problem) for each data.*_feature that is no name, or (given the dataset's
    `features`) names no image, no caption to train on, or a label that is not a ClassLabel."""
    names, found = feature_names(data_cfg), []
    for role, key in FEATURE_KEYS.items():
        if not isinstance(names[role], str) or not names[role]:
            found.append((f'data.{key}', f'{names[role]!r} is not a feature name; use e.g. {role!r}'))
    if found or features is None:
        return found
    have = ', '.join(map(repr, sorted(features.keys())))
    label = features[names['label']] if names['label'] in features else None
    if names['image'] not in features:
        found.append(('data.image_feature', f'{names["image"]!r} is not a feature of {data_cfg.name} (features: '
                      f'{have}); set it to the name of its image feature'))
    if label is not None and not isinstance(label, tfds.features.ClassLabel):
        found.append(('data.label_feature', f'{names["label"]!r} of {data_cfg.name} is not a ClassLabel; set it '
                      f'to a ClassLabel feature (features: {have}), or to a name it lacks for no zero-shot task'))
    elif names['caption'] not in features and 'text' not in features and label is None:
        found.append(('data.caption_feature', f'{names["caption"]!r} is not a feature of {data_cfg.name} and it has '
                      f'no ClassLabel data.label_feature to caption from (features: {have}); set it to the '
                      'name of its caption feature'))
    return found


def zero_shot_tasks(data_cfg) -> dict:
    """Task name -> class names: colour/shape for shapes, digit for digits, the ClassLabel
    feature data.label_feature (task named after it) for other TFDS datasets (empty dict if
    there is none)."""
    if data_cfg.name in EMBEDDED:
        return {task: list(names) for task, names in EMBEDDED[data_cfg.name].tasks.items()}
    features = ensure_prepared(data_cfg).info.features
    label = feature_names(data_cfg)['label']
    if label in features and isinstance(features[label], tfds.features.ClassLabel):
        return {label: list(features[label].names)}
    return {}


def flip_safe(data_cfg) -> bool:
    """Whether a horizontal flip (with 'left'/'right' swapped in the caption) keeps captions true.

    Only embedded datasets whose captions were written for it say so (jaxclr_shapes). A
    mirrored digit is no digit, and the captions of a dataset read by name are not
    flip-aware ("the word on the sign", "the left hand"), so those never flip; CLIP and
    SigLIP train without flips too.
    """
    return data_cfg.name in EMBEDDED and EMBEDDED[data_cfg.name].flip_safe


def _label_feature(name: str, example) -> dict:
    return {name: int(example[name])}


def _no_labels(example) -> dict:
    del example
    return {}


def task_labels_fn(data_cfg) -> Callable:
    """Decoded example -> {task name: class index, or -1 when the task does not apply}."""
    if data_cfg.name in EMBEDDED:
        return EMBEDDED[data_cfg.name].task_labels
    tasks = zero_shot_tasks(data_cfg)
    return functools.partial(_label_feature, next(iter(tasks))) if tasks else _no_labels
