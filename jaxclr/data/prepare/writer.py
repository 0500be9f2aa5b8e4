"""Shard files of `jaxclr.data.prepare`: the version dir's layout, resumption, metadata.

In <data_dir>/<name>/<version>/: the TFDS shards `<name>-<split>.array_record-0000i-of-0000n`,
and in its `prepare/` subfolder, per split, `<split>.settings.json` (the flags that decide
the shards' contents), one `<split>-0000i-of-0000n.json` report per complete shard and the
temp file of the shard being written. A shard is complete when its report exists and its
temp file has been renamed to the shard name; a rerun keeps complete shards.
"""
from __future__ import annotations

import collections
import contextlib
import functools
import json
import multiprocessing
import os
import tempfile
from concurrent import futures

import tensorflow_datasets as tfds
from array_record.python import array_record_module
from etils import epath

from jaxclr import paths

WORK = 'prepare'   # subfolder of the version dir: settings, per-shard reports, temp files


def read_json(path: epath.Path):
    """The JSON value in `path`, or None if there is no such file."""
    return json.loads(path.read_text()) if path.exists() else None


def write_json(path: epath.Path, value) -> None:
    """Writes `value` to `path` as JSON (via a temp file and a rename)."""
    tmp = path.parent / f'{path.name}.tmp'
    tmp.write_text(json.dumps(value, indent=1, sort_keys=True))
    tmp.replace(path)


@contextlib.contextmanager
def mapper(workers: int):
    """A map(fn, iterable) that runs fn in `workers` processes (spawned: the parent may be threaded)."""
    if workers <= 1:
        yield map
        return
    with futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context('spawn')) as pool:
        yield functools.partial(pool.map, chunksize=16)


@contextlib.contextmanager
def _local_file(dest: epath.Path):
    """A local path to write `dest` at: itself if local, else a temp file copied there afterwards."""
    if not paths.is_url(dest):
        yield os.fspath(dest)
        return
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, dest.name)
        yield local
        epath.Path(local).copy(dest, overwrite=True)


def encode_example(item, image: bytes, features) -> tuple[bytes, int]:
    """(the serialized record, its number of captions) of one loaded item; both paths write these bytes."""
    example = {'image': image, 'key': item.key}
    if isinstance(item.target, tuple):
        example['caption'] = list(item.target)
    else:
        example['label'] = item.target
    return features.serialize_example(example), len(item.target) if isinstance(item.target, tuple) else 0


def open_shard(local_path: str):
    """An array_record writer with the options every prepared shard uses (one record per group: random access)."""
    return array_record_module.ArrayRecordWriter(local_path, 'group_size:1')


def write_shard(items, dest: epath.Path, features, load, bar) -> dict:
    """Writes the usable examples of `items` to `dest`; returns the shard's report."""
    report = {'examples': 0, 'captions': 0, 'skipped': collections.Counter()}
    with _local_file(dest) as local:
        writer = open_shard(local)
        try:
            for item, (reason, image) in zip(items, load(item.ref for item in items)):
                bar.update(1)
                if reason:
                    report['skipped'][reason] += 1
                    continue
                record, captions = encode_example(item, image, features)
                writer.write(record)
                report['captions'] += captions
                report['examples'] += 1
        finally:
            writer.close()
    report['num_bytes'] = dest.stat().length
    return report


def shard_name(name: str, split: str, i: int, num_shards: int) -> str:
    """TFDS's file name of shard i of n: what tfds.data_source opens from the metadata's shard lengths."""
    return f'{name}-{split}.array_record-{i:05d}-of-{num_shards:05d}'


class Layout:
    """File names of one split in the version dir."""

    def __init__(self, version_dir: epath.Path, name: str, split: str, num_shards: int):
        self.version_dir, self.work = version_dir, version_dir / WORK
        self.name, self.split, self.num_shards = name, split, num_shards

    def shard(self, i: int) -> epath.Path:
        return self.version_dir / shard_name(self.name, self.split, i, self.num_shards)

    def shard_report(self, i: int) -> epath.Path:
        return self.work / f'{self.split}-{i:05d}-of-{self.num_shards:05d}.json'

    def temp(self, i: int) -> epath.Path:
        return self.work / f'{self.split}-{i:05d}-of-{self.num_shards:05d}.tmp'

    def settings(self) -> epath.Path:
        return self.work / f'{self.split}.settings.json'

    def existing_files(self) -> list[epath.Path]:
        prefix = f'{self.name}-{self.split}.array_record-'
        data = [p for p in self.version_dir.iterdir() if p.name.startswith(prefix)]
        work = [p for p in self.work.iterdir() if p.name.startswith(f'{self.split}-')] if self.work.exists() else []
        return data + work


def remove_split(layout: Layout) -> None:
    """Deletes the split's shards, reports and settings; the metadata goes too: until it is rewritten,
    it would list the deleted shards."""
    for path in layout.existing_files() + [layout.settings(), layout.version_dir / 'dataset_info.json']:
        if path.exists():
            path.unlink()


def check_settings(layout: Layout, stored, settings: dict) -> None:
    """Raises ValueError if the split was recorded (`stored`) with other `settings`."""
    if stored is not None and stored != settings:
        changed = sorted(k for k in set(stored) | set(settings) if stored.get(k) != settings.get(k))
        raise ValueError(f'{layout.version_dir} holds split {layout.split!r} prepared with other settings '
                         f'({", ".join(changed)} differ); rerun with the same flags to resume, or pass '
                         f'--overwrite to prepare it again')


def claim(layout: Layout, settings: dict, overwrite: bool) -> None:
    """Records the settings of the split; refuses to mix shards of other settings."""
    if overwrite:
        remove_split(layout)
    check_settings(layout, read_json(layout.settings()), settings)
    write_json(layout.settings(), settings)


def shard_reports(layout: Layout) -> list | None:
    """The reports of the split's shards, or None if any shard is not complete (report and shard file)."""
    reports = [read_json(layout.shard_report(i)) for i in range(layout.num_shards)]
    if any(r is None or not layout.shard(i).exists() for i, r in enumerate(reports)):
        return None
    return reports


def split_infos(version_dir: epath.Path, name: str) -> list:
    """SplitInfo of every split whose settings are recorded; all its shards must be complete."""
    infos = []
    for settings_path in sorted((version_dir / WORK).glob('*.settings.json')):
        settings = read_json(settings_path)
        layout = Layout(version_dir, name, settings['split'], settings['num_shards'])
        reports = shard_reports(layout)
        if reports is None:
            raise RuntimeError(f'split {layout.split!r} in {version_dir} is incomplete; rerun its prepare '
                               'command to finish it before the metadata can be written')
        infos.append(tfds.core.SplitInfo(name=layout.split, shard_lengths=[r['examples'] for r in reports],
                                         num_bytes=sum(r['num_bytes'] for r in reports)))
    return infos


def write_metadata(version_dir: epath.Path, name: str, version: str, features, source) -> None:
    """TFDS's dataset_info.json/features.json, listing every recorded split. Written last by both
    paths: a split is readable by name only once all its shards are complete (else this raises)."""
    tfds.folder_dataset.write_metadata(
        data_dir=version_dir, features=features, split_infos=split_infos(version_dir, name),
        version=version, check_data=False, description=f'Prepared by jaxclr.data.prepare from {source}.')


def check_features(version_dir: epath.Path, features, splits) -> None:
    """Raises ValueError if the version dir holds splits other than `splits` with other features."""
    others = [p for p in (version_dir / WORK).glob('*.settings.json') if p.name.split('.')[0] not in splits]
    stored = read_json(version_dir / 'features.json')
    if stored is None or not others:
        return
    old = tfds.features.FeatureConnector.from_json(stored).to_json()
    if json.dumps(old, sort_keys=True) != json.dumps(features.to_json(), sort_keys=True):
        raise ValueError(f'{version_dir} holds splits ({", ".join(p.name.split(".")[0] for p in others)}) with other '
                         'features (image size, input kind or class names); prepare this one with the same '
                         '--image_size/--image_format and input kind, or use another --name or --version')
