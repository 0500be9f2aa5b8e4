"""Prepare your own images as a TFDS array_record dataset that jaxclr reads by name.

    python -m jaxclr.data.prepare --webdataset=laion_tars/ --name=my_captions --val_fraction=0.01
    python -m jaxclr.data.prepare --manifest=photos/captions.csv --name=my_photos
    python -m jaxclr.data.prepare --class_folders=pets/val --name=my_pets --split=test
    python -m jaxclr.data.prepare --webdataset=gs://B/laion/ --name=my_captions --data_dir=gs://B/tfds \
        --runner=DataflowRunner --beam_options="--project=P --region=R --setup_file=./setup.py ..."
    python -m jaxclr.train --config=configs/clip.py:b16 --config.data.name=my_captions ...

Input (exactly one, see `prepare_sources`): --manifest (CSV/JSONL of image path + caption;
several captions per image allowed), --webdataset (img2dataset tar shards), --class_folders
(one subfolder per class: a ClassLabel 'label' dataset for zero-shot evaluation).

Output: <data_dir>/<name>/<version>/ in TFDS's layout (`<name>-<split>.array_record-
0000i-of-0000n` shards + dataset_info.json/features.json), readable with
`tfds.builder(name, data_dir=...)` without TensorFlow. Features: 'image' (Image, (S, S, 3)
with --image_size=S, or (None, None, 3) for the original bytes with --image_size=0), 'key'
(Text: the source key) and 'caption' (Sequence of Text, >= 1 per image) or 'label'
(ClassLabel, the folder names). Splits: one split per run (--split); with --val_fraction=f
the examples whose key hashes below f (sha256, so the same key always lands in the same
split, whatever the order or worker count) go to --val_split instead. Run once per
source split (e.g. a separate folder for the test split) into the same name.

Robust: an undecodable image, a missing file, an empty caption or a duplicate key is skipped
and counted, never a crash; the counts are printed at the end and saved to
prepare-report-<split>.json next to the shards. Resumable: each shard is written to a temp
name and renamed when complete; a rerun with the same flags keeps the complete shards and
writes the rest. The TFDS metadata is written last and lists a split only once all its
shards are complete: a dataset is not readable by name before its first complete run.
Decoding runs in --workers processes.

With --runner=DirectRunner (or DataflowRunner, FlinkRunner, SparkRunner, with --beam_options
passed to Beam), the same examples are written by an Apache Beam pipeline instead: see
beam_pipeline.py for what is the same and what differs (shard count and order).
"""
from __future__ import annotations

import collections
import functools
import math
import os
import sys

import tqdm
from absl import app, flags

from jaxclr import config as configlib
from jaxclr.data import datasets
from jaxclr.data.prepare import beam_pipeline, images, sources, writer  # beam_pipeline: apache_beam when run
from jaxclr.data.prepare.plan import (
    KINDS,
    Options,
    check_options,
    finish_report,
    format_report,
    make_features,
    no_examples_error,
    split_of,
    split_settings,
    version_dir,
)


def read_source(kind: str, source: str, skipped: collections.Counter, **kwargs):
    """(items, class names or None) of the input; see sources."""
    if kind == 'manifest':
        return sources.manifest(source, skipped, **kwargs), None
    if kind == 'webdataset':
        return sources.webdataset(source, skipped), None
    if kind == 'class_folders':
        return sources.class_folders(source, skipped)
    raise ValueError(f'unknown input kind {kind!r}; use one of {KINDS}')


def assign_splits(items, opts: Options) -> dict:
    """{split: items}: all to opts.split, or the held-out keys to opts.val_split."""
    if not opts.val_fraction:
        return {opts.split: list(items)}
    held = [split_of(item.key, opts) == opts.val_split for item in items]
    return {opts.split: [it for it, h in zip(items, held) if not h],
            opts.val_split: [it for it, h in zip(items, held) if h]}


# ------------------------------------------------------------------ the whole run

def _write_split(layout, items, opts: Options, features, load, bar, report: dict, skipped) -> None:
    """Writes the missing shards of one split (keeping complete ones); adds to report and skipped."""
    shard_reports = []
    for i in range(layout.num_shards):
        shard_items = items[i * opts.shard_size:(i + 1) * opts.shard_size]
        done = writer.read_json(layout.shard_report(i))
        if done is not None and layout.shard(i).exists():
            report['shards_reused'] += 1
            bar.update(len(shard_items))
        else:
            done = writer.write_shard(shard_items, layout.temp(i), features, load, bar)
            writer.write_json(layout.shard_report(i), done)
            layout.temp(i).replace(layout.shard(i))   # complete: the rename marks it done
            report['shards_written'] += 1
        shard_reports.append(done)
        skipped.update(done['skipped'])
    report['splits'][layout.split] = {'examples': sum(r['examples'] for r in shard_reports),
                                      'captions': sum(r['captions'] for r in shard_reports),
                                      'shards': layout.num_shards}


def prepare(kind: str, source: str, opts: Options, **source_kwargs) -> dict:
    """Prepares `source` (one of KINDS) as opts.name in opts.data_dir; returns the run's report.

    source_kwargs go to the manifest reader (image_root, image_column, caption_column). The
    report (also saved as prepare-report-<split>.json): {'dataset', 'source', 'version_dir',
    'splits': {split: {'examples', 'captions', 'shards'}}, 'skipped': {reason: examples},
    'skipped_total', 'blank_captions_dropped', 'shards_written', 'shards_reused'}.
    Bad input raises ValueError / FileNotFoundError with a one-line message.
    """
    check_options(opts)
    out_dir = version_dir(opts)
    skipped = collections.Counter()
    items, class_names = read_source(kind, source, skipped, **source_kwargs)
    features = make_features(opts.image_size, opts.image_format, class_names)
    splits = assign_splits(items, opts)
    for split, split_items in splits.items():
        if not split_items:
            raise no_examples_error(split, source, skipped, opts)
    (out_dir / writer.WORK).mkdir(parents=True, exist_ok=True)
    writer.check_features(out_dir, features, splits)
    layouts = {}
    for split, split_items in splits.items():
        layouts[split] = writer.Layout(out_dir, opts.name, split, math.ceil(len(split_items) / opts.shard_size))
        settings = {**split_settings(kind, source, source_kwargs, opts, split),
                    'examples_listed': len(split_items), 'num_shards': layouts[split].num_shards}
        writer.claim(layouts[split], settings, opts.overwrite)

    report = {'dataset': opts.name, 'source': str(source), 'version_dir': str(out_dir), 'splits': {},
              'shards_written': 0, 'shards_reused': 0}
    load = functools.partial(images.load, image_size=opts.image_size, image_format=opts.image_format)
    bar = tqdm.tqdm(total=len(items), unit='img', disable=not opts.progress, desc=f'prepare {opts.name}')
    with writer.mapper(opts.workers) as pool_map, bar:
        for split, split_items in splits.items():
            _write_split(layouts[split], split_items, opts, features, functools.partial(pool_map, load), bar,
                         report, skipped)
    writer.write_metadata(out_dir, opts.name, opts.version, features, source)   # last: see write_metadata
    finish_report(report, skipped)
    writer.write_json(out_dir / f'prepare-report-{opts.split}.json', report)
    return report


# ------------------------------------------------------------------ command line

def define_flags():
    """Command-line flags, defined only when run as a program (so the module imports cleanly)."""
    flags.DEFINE_string('manifest', None, 'CSV/TSV/JSONL manifest of image paths and captions.')
    flags.DEFINE_string('webdataset', None, 'Folder (or glob, or one file) of img2dataset .tar shards.')
    flags.DEFINE_string('class_folders', None, 'Folder with one subfolder of images per class.')
    flags.DEFINE_string('image_root', None, 'Manifest image paths are relative to this (default: its folder).')
    flags.DEFINE_string('image_column', 'image', 'Manifest column/field of the image path.')
    flags.DEFINE_string('caption_column', 'caption', 'Manifest column/field of the caption(s).')
    flags.DEFINE_string('name', None, 'Dataset name (lower_snake_case): data.name in the config.')
    flags.DEFINE_string('data_dir', '', 'TFDS data dir (may be gs://); default $JAXCLR_DATA_DIR or '
                        f'{datasets.DEFAULT_DATA_DIR}: data.data_dir in the config.')
    flags.DEFINE_string('version', '1.0.0', 'Dataset version (a folder of its own).')
    flags.DEFINE_string('split', 'train', 'Split to write.')
    flags.DEFINE_float('val_fraction', 0.0, 'Fraction of keys (by hash) held out to --val_split.')
    flags.DEFINE_string('val_split', 'test', 'Split of the held-out keys.')
    flags.DEFINE_integer('image_size', 224, 'Centre-crop and resize to this square; 0 keeps the original bytes.')
    flags.DEFINE_enum('image_format', 'jpeg', sorted(images.FORMATS), 'Encoding of resized images.')
    flags.DEFINE_integer('shard_size', 10_000, 'Examples per shard (the unit of resumption).')
    flags.DEFINE_integer('workers', os.cpu_count() or 1, 'Decoding processes.')
    flags.DEFINE_bool('overwrite', False, 'Delete this run\'s splits and prepare them again (else: resume).')
    flags.DEFINE_string('runner', None, 'Run as an Apache Beam pipeline on this runner (DirectRunner, '
                        'DataflowRunner, FlinkRunner, SparkRunner; needs the [beam] extra); unset: local processes.')
    flags.DEFINE_string('beam_options', '', 'With --runner: Beam pipeline options, passed through, e.g. '
                        '"--project=P --region=R --temp_location=gs://B/tmp --setup_file=./setup.py".')


def main(argv):
    del argv
    f = flags.FLAGS
    given = [kind for kind in KINDS if f[kind].value]
    if len(given) != 1:
        configlib.exit_with_errors([f'pass exactly one input: --manifest, --webdataset or --class_folders '
                                    f'(got {", ".join("--" + k for k in given) or "none"})'])
    opts = Options(name=f.name, data_dir=f.data_dir, split=f.split, version=f.version, image_size=f.image_size,
                   image_format=f.image_format, shard_size=f.shard_size, workers=f.workers,
                   val_fraction=f.val_fraction, val_split=f.val_split, overwrite=f.overwrite,
                   progress=sys.stderr.isatty())
    kwargs = {}
    if given[0] == 'manifest':
        kwargs = dict(image_root=f.image_root, image_column=f.image_column, caption_column=f.caption_column)
    try:
        if f.runner:
            report = beam_pipeline.prepare(given[0], f[given[0]].value, opts, runner=f.runner,
                                           beam_options=f.beam_options, **kwargs)
        else:
            report = prepare(given[0], f[given[0]].value, opts, **kwargs)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        configlib.exit_with_errors([' '.join(str(e).split())])
    print(format_report(report))
    print(f"report saved to {report['version_dir']}/prepare-report-{opts.split}.json")


def cli() -> None:
    """The `python -m` command line."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    cli()
