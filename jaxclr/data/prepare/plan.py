"""What one prepare run writes, shared by the local path (convert.py) and the Beam pipeline (beam_pipeline.py).

Both paths must produce the same examples in the same splits, so everything that decides the
*contents* of a prepared dataset lives here once: the options and their checks, the features,
the split a key goes to, the settings recorded per split, and the report's shape.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import re
import types

import tensorflow_datasets as tfds
from etils import epath

from jaxclr import paths
from jaxclr.data import datasets
from jaxclr.data.prepare import images, sources

KINDS = ('manifest', 'webdataset', 'class_folders')


@dataclasses.dataclass
class Options:
    """Where and how to write; see convert's module doc and its flags."""
    name: str
    data_dir: str = ''             # '' -> $JAXCLR_DATA_DIR or jaxclr's default data dir
    split: str = 'train'
    version: str = '1.0.0'
    image_size: int = 224          # 0: store the original bytes, decode at load time
    image_format: str = 'jpeg'     # 'jpeg' (quality 95) or 'png', for image_size > 0
    shard_size: int = 10_000       # examples per shard (the unit of resumption)
    workers: int = 1               # decoding processes (1: in this process)
    val_fraction: float = 0.0
    val_split: str = 'test'
    overwrite: bool = False        # delete this run's splits first instead of resuming
    progress: bool = True


def check_options(opts: Options) -> None:
    """Raises ValueError (one line) for an option that cannot work."""
    if not re.fullmatch(r'[a-z][a-z0-9_]*', opts.name or ''):
        raise ValueError(f'--name: {opts.name!r} is not a dataset name; use lower_snake_case, e.g. my_captions')
    if opts.name in datasets.EMBEDDED or opts.name in tfds.list_builders(with_community_datasets=False):
        raise ValueError(f'--name: {opts.name!r} is already a dataset (jaxclr or TFDS catalog); choose another name')
    for flag, split in (('--split', opts.split), ('--val_split', opts.val_split)):
        if not re.fullmatch(r'[a-z][a-z0-9_]*', split):
            raise ValueError(f'{flag}: {split!r} is not a split name; use e.g. train, validation or test')
    if opts.val_fraction and opts.val_split == opts.split:
        raise ValueError(f'--val_split: equals --split {opts.split!r}; name the held-out split differently')
    if not 0 <= opts.val_fraction < 1:
        raise ValueError(f'--val_fraction: {opts.val_fraction} must be in [0, 1); use e.g. 0.01, or 0 for none')
    if opts.image_size < 0:
        raise ValueError(f'--image_size: {opts.image_size} must be >= 0 (0 keeps the original images)')
    if opts.image_format not in images.FORMATS:
        raise ValueError(f'--image_format: {opts.image_format!r} is not one of {sorted(images.FORMATS)}')
    if opts.shard_size < 1 or opts.workers < 1:
        raise ValueError('--shard_size and --workers must be >= 1')


def version_dir(opts: Options) -> epath.Path:
    """<data dir>/<name>/<version>: the data dir as training resolves it (flag, env, default)."""
    data_dir = datasets.resolve_data_dir(types.SimpleNamespace(data_dir=opts.data_dir))
    return paths.resolve(data_dir) / opts.name / opts.version


def make_features(image_size: int, image_format: str, class_names=None) -> tfds.features.FeaturesDict:
    """The features of a prepared dataset: image, key, and caption (Sequence of Text) or label."""
    shape = (image_size, image_size, 3) if image_size else (None, None, 3)
    features = {'image': tfds.features.Image(shape=shape, encoding_format=image_format if image_size else None),
                'key': tfds.features.Text()}
    if class_names is None:
        features['caption'] = tfds.features.Sequence(tfds.features.Text())
    else:
        features['label'] = tfds.features.ClassLabel(names=list(class_names))
    return tfds.features.FeaturesDict(features)


def in_holdout(key: str, fraction: float) -> bool:
    """Whether `key` goes to the held-out split: its sha256 as a number in [0, 1) is below `fraction`."""
    return int.from_bytes(hashlib.sha256(key.encode('utf-8')).digest()[:8], 'big') / 2**64 < fraction


def split_of(key: str, opts: Options) -> str:
    """The split `key` is written to: a function of the key alone, so order and worker count never matter."""
    return opts.val_split if opts.val_fraction and in_holdout(key, opts.val_fraction) else opts.split


def run_splits(opts: Options) -> list[str]:
    """The splits one run writes, in the report's order."""
    return [opts.split, opts.val_split] if opts.val_fraction else [opts.split]


def split_settings(kind: str, source, source_kwargs: dict, opts: Options, split: str) -> dict:
    """The flags that decide a split's contents, recorded in prepare/<split>.settings.json: a rerun
    with other values would mix shards of two datasets, so it is refused (or --overwrite starts again)."""
    return {'split': split, 'kind': kind, 'source': str(source), 'source_kwargs': source_kwargs,
            'image_size': opts.image_size, 'image_format': opts.image_format, 'shard_size': opts.shard_size,
            'val_fraction': opts.val_fraction, 'val_split': opts.val_split}


def no_examples_error(split: str, source, skipped, opts: Options) -> ValueError:
    """The one-line error for a split that no listed example reaches."""
    return ValueError(f'no usable examples for split {split!r} in {source} (skipped: {dict(skipped)}); '
                      + ('raise --val_fraction' if split == opts.val_split else 'check the input'))


def finish_report(report: dict, skipped: collections.Counter) -> dict:
    """Adds the skip counts to `report` as both paths save them (blank captions apart: they drop no example)."""
    skipped = collections.Counter(skipped)
    report['blank_captions_dropped'] = skipped.pop(sources.BLANK_DROPPED, 0)
    report['skipped'] = dict(sorted(skipped.items()))
    report['skipped_total'] = sum(skipped.values())
    return report


def format_report(report: dict) -> str:
    """The report as a few lines of text."""
    lines = [f"{report['dataset']}: written to {report['version_dir']} "
             f"({report['shards_written']} shards written, {report['shards_reused']} complete shards kept)"]
    for split, s in report['splits'].items():
        lines.append(f"  {split}: {s['examples']} examples, {s['captions']} captions, {s['shards']} shards")
    lines.append(f"  blank captions dropped (their image kept): {report['blank_captions_dropped']}")
    lines.append(f"  skipped: {report['skipped_total']}" + ''.join(
        f"\n    {reason}: {count}" for reason, count in report['skipped'].items()))
    return '\n'.join(lines)
