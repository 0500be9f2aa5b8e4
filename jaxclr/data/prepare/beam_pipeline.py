"""`python -m jaxclr.data.prepare --runner=...`: the local path's dataset, written by an Apache Beam pipeline.

One machine converts a few million pairs; hundreds of millions need many. Beam runs the same
pipeline on the DirectRunner (local processes) and on Dataflow, Flink or Spark, so jaxclr hands
the job to it instead of growing cluster code. Everything that decides a record is shared with
the local path: the readers (sources), decoding and resizing (images.load), the split of a key
(plan.split_of), the record bytes (writer.encode_example) and the skip reasons and report
(plan.finish_report). What differs is only where the shards are cut:

    launcher  lists the input files (tar shards, the manifest, the class folders); reads none of them
    workers   1. list the examples of each input: the initial collection holds one element per
                 tar shard or manifest, or per class folder
              2. group by key: the first (input order, position) of a key is kept, the others count
                 as 'duplicate key', as the local path keeps the first tar's key
              3. load, decode and resize each image and serialize its record (skips counted)
              4. shard i of n by a hash of the key (n = ceil(examples / --shard_size), at least 1),
                 sorted by key within a shard so that a rerun gives the same record order; each shard is
                 written on the worker's disk with array_record's writer and copied with Beam's
                 FileSystems into a temp folder of the version dir (local or gs://)
              5. the skip counts, listed counts and shard reports to the temp folder's summary.json
    launcher  moves the shards into the version dir, records each split's shard reports and
              settings as the local path does, writes the report, then the TFDS metadata once.

Shards hold about --shard_size examples (hash buckets, not runs of the listed order), so shard
count and record order differ from the local path's; the examples of each split are the same.
A failed run leaves only the temp folder (removed by the next run), never a split that
tfds.data_source reads; a rerun over a complete split with the same settings writes nothing.
apache_beam is imported only when a pipeline runs: without the [beam] extra, `--runner` is one
error line saying how to install it.
"""
from __future__ import annotations

import collections
import functools
import hashlib
import json
import logging
import math
import operator
import os
import shlex
import shutil
import tempfile

from etils import epath

from jaxclr import paths
from jaxclr.data.prepare import images, plan, sources, writer

BEAM_MISSING = "--runner needs Apache Beam, which is not installed: pip install -e '.[beam]'"
RUNNERS = ('DirectRunner', 'DataflowRunner', 'FlinkRunner', 'SparkRunner')
SKIPPED = 'skipped'          # the tagged output of skip counts ({reason: count} dicts)
SUMMARY = 'summary.json'     # written by the pipeline's last step into the temp folder
RESULT_KEYS = ('runner', 'num_shards', 'examples_listed')   # settings fields that record a result, not a choice


def import_beam():
    """apache_beam, or RuntimeError(BEAM_MISSING): checked before any work so a missing extra is one line.
    Its import logs INFO notes about optional Google Cloud clients; they are held back here."""
    beam_logger = logging.getLogger('apache_beam')
    level = beam_logger.level
    beam_logger.setLevel(logging.WARNING)
    try:
        import apache_beam
    except ImportError:
        raise RuntimeError(BEAM_MISSING) from None
    finally:
        beam_logger.setLevel(level)
    return apache_beam


def pipeline_args(runner: str, beam_options: str, workers: int) -> list[str]:
    """Beam's command-line options: --beam_options passed through, then the runner. The DirectRunner
    gets --workers processes (multi_processing) unless --beam_options chooses its running mode."""
    if runner not in RUNNERS:
        raise ValueError(f'--runner: {runner!r} is not one of {", ".join(RUNNERS)}')
    args = shlex.split(beam_options or '')
    if runner == 'DirectRunner' and workers > 1 and not any(a.startswith('--direct_running_mode') for a in args):
        args += ['--direct_running_mode=multi_processing', f'--direct_num_workers={workers}']
    return args + [f'--runner={runner}']


# ------------------------------------------------------------------ launcher: list, never read

def list_inputs(kind: str, source, **source_kwargs) -> tuple[list[tuple], list[str] | None]:
    """(the pipeline's initial elements, class names or None): one (kind, index, path, class name)
    per tar shard, per manifest or per class folder. Lists names only (a CSV manifest's header
    line is checked here, so a wrong column is one error line at launch, not a worker failure)."""
    if kind == 'webdataset':
        return [('webdataset', i, str(p), None) for i, p in enumerate(sources.tar_files(source))], None
    if kind == 'manifest':
        path = sources.check_manifest(source, source_kwargs.get('image_column', 'image'),
                                      source_kwargs.get('caption_column', 'caption'))
        return [('manifest', 0, str(path), None)], None
    if kind == 'class_folders':
        root, classes = sources.class_names(source)
        return [('class_folders', label, str(root), name) for label, name in enumerate(classes)], classes
    raise ValueError(f'unknown input kind {kind!r}; use one of {plan.KINDS}')


def worker_kwargs(source_kwargs: dict) -> dict:
    """The manifest reader's arguments with image_root made absolute: workers do not share our cwd."""
    kwargs = dict(source_kwargs)
    if kwargs.get('image_root'):
        kwargs['image_root'] = os.fspath(paths.resolve(kwargs['image_root']))
    return kwargs


# ------------------------------------------------------------------ workers: the pipeline's steps

def list_examples(element: tuple, source_kwargs: dict):
    """Step 1: (key, ((input index, position), candidate)) per example of one input, and its skip counts.

    A candidate is ('item', Item), or for webdataset ('entry', ref, caption): an entry becomes an
    Item (or a 'missing image' / 'empty caption' skip) only if it is its key's first, as locally."""
    from apache_beam import pvalue
    kind, index, path, class_name = element
    skipped = collections.Counter()
    if kind == 'webdataset':
        found = [(key, ('entry', ref, caption)) for key, ref, caption in sources.tar_entries(path, skipped)]
    elif kind == 'manifest':
        found = [(item.key, ('item', item)) for item in sources.manifest(path, skipped, **source_kwargs)]
    else:
        found = [(item.key, ('item', item)) for item in sources.class_items(path, class_name, index, skipped)]
    for position, (key, candidate) in enumerate(found):
        yield key, ((index, position), candidate)
    if skipped:
        yield pvalue.TaggedOutput(SKIPPED, dict(skipped))


def first_of_key(grouped: tuple, opts: plan.Options):
    """Step 2: (split, Item) of a key's first candidate in input order; later ones are duplicates."""
    from apache_beam import pvalue
    key, candidates = grouped
    candidates = sorted(candidates, key=operator.itemgetter(0))
    skipped = collections.Counter()
    if len(candidates) > 1:
        skipped['duplicate key'] += len(candidates) - 1
    candidate = candidates[0][1]
    item = candidate[1] if candidate[0] == 'item' else sources.webdataset_item(key, *candidate[1:], skipped)
    if item is not None:
        yield plan.split_of(key, opts), item
    if skipped:
        yield pvalue.TaggedOutput(SKIPPED, dict(skipped))


@functools.lru_cache(maxsize=4)
def _features(image_size: int, image_format: str, class_names: tuple | None):
    """The FeaturesDict, built once per worker process (cheaper to rebuild than to ship)."""
    return plan.make_features(image_size, image_format, class_names)


def load_example(split_item: tuple, opts: plan.Options, class_names: tuple | None):
    """Step 3: (split, key, record bytes, captions) of one item, or its skip reason."""
    from apache_beam import pvalue
    split, item = split_item
    reason, image = images.load(item.ref, image_size=opts.image_size, image_format=opts.image_format)
    if reason:
        yield pvalue.TaggedOutput(SKIPPED, {reason: 1})
        return
    record, captions = writer.encode_example(item, image, _features(opts.image_size, opts.image_format, class_names))
    yield split, item.key, record, captions


def shard_count(split_listed: tuple, examples: dict, shard_size: int) -> tuple[str, int]:
    """(split, number of shards): enough for --shard_size examples each, and one even when all were skipped."""
    split = split_listed[0]
    return split, max(1, math.ceil(examples.get(split, 0) / shard_size))


def shard_ids(split_count: tuple):
    """((split, i), None) for every shard of a split, so that an empty hash bucket still gets its file."""
    split, count = split_count
    for i in range(count):
        yield (split, i), None


def shard_of(example: tuple, num_shards: dict) -> tuple:
    """((split, shard index), (key, record, captions)): the index hashes the key (bytes 8-16 of its
    sha256; bytes 0-8 decide the split), so it depends on the key and the shard count only."""
    split, key, record, captions = example
    digest = hashlib.sha256(key.encode('utf-8')).digest()
    return (split, int.from_bytes(digest[8:16], 'big') % num_shards[split]), (key, record, captions)


def write_shard(grouped: tuple, temp_dir: str, name: str, num_shards: dict) -> tuple[str, int, dict]:
    """Step 4: writes one shard (records sorted by key) on local disk, copies it to `temp_dir` with
    Beam's FileSystems (array_record writes local files only); returns (split, i, its report)."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems
    (split, i), parts = grouped
    records = sorted(parts['records'])
    file_name = writer.shard_name(name, split, i, num_shards[split])
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, file_name)
        shard = writer.open_shard(local)
        try:
            for _, record, _ in records:
                shard.write(record)
        finally:
            shard.close()
        with open(local, 'rb') as src, FileSystems.create(FileSystems.join(temp_dir, file_name),
                                                          compression_type=CompressionTypes.UNCOMPRESSED) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        num_bytes = os.path.getsize(local)
    return split, i, {'examples': len(records), 'captions': sum(c for _, _, c in records), 'skipped': {},
                      'num_bytes': num_bytes}


def add_counts(counts) -> dict:
    """Sums {reason: count} dicts (associative: Beam may combine partial sums)."""
    total = collections.Counter()
    for c in counts:
        total.update(c)
    return dict(total)


def write_summary(_, temp_dir: str, shards: list, skipped: dict, listed: dict) -> None:
    """Step 5: what the launcher needs to finish the run, as one JSON file in the temp folder."""
    from apache_beam.io.filesystems import FileSystems
    summary = {'listed': listed, 'skipped': skipped, 'shards': sorted(shards, key=operator.itemgetter(0, 1))}
    with FileSystems.create(FileSystems.join(temp_dir, SUMMARY)) as f:
        f.write(json.dumps(summary, sort_keys=True).encode())


def build(p, elements: list, opts: plan.Options, class_names, source_kwargs: dict, temp_dir: str) -> None:
    """The pipeline on `p`: see the module doc for its steps."""
    import apache_beam as beam
    from apache_beam.pvalue import AsDict, AsList, AsSingleton
    classes = tuple(class_names) if class_names is not None else None
    listed = (p | 'inputs' >> beam.Create(elements)
              | 'list' >> beam.FlatMap(list_examples, source_kwargs).with_outputs(SKIPPED, main='candidates'))
    items = (listed.candidates | 'by key' >> beam.GroupByKey()
             | 'first of key' >> beam.FlatMap(first_of_key, opts).with_outputs(SKIPPED, main='items'))
    loaded = items.items | 'load' >> beam.FlatMap(load_example, opts, classes).with_outputs(SKIPPED, main='examples')
    listed_counts = items.items | 'split of item' >> beam.Map(operator.itemgetter(0)) | 'listed' >> (
        beam.combiners.Count.PerElement())
    example_counts = loaded.examples | 'split of example' >> beam.Map(operator.itemgetter(0)) | 'examples' >> (
        beam.combiners.Count.PerElement())
    num_shards = listed_counts | 'shard count' >> beam.Map(shard_count, AsDict(example_counts), opts.shard_size)
    ids = num_shards | 'shard ids' >> beam.FlatMap(shard_ids)
    keyed = loaded.examples | 'shard of' >> beam.Map(shard_of, AsDict(num_shards))
    reports = ({'ids': ids, 'records': keyed} | 'by shard' >> beam.CoGroupByKey()
               | 'write' >> beam.Map(write_shard, temp_dir, opts.name, AsDict(num_shards)))
    skipped = ((listed[SKIPPED], items[SKIPPED], loaded[SKIPPED]) | 'all skips' >> beam.Flatten()
               | 'add skips' >> beam.CombineGlobally(add_counts))
    _ = (p | 'end' >> beam.Create([None])
         | 'summary' >> beam.Map(write_summary, temp_dir, AsList(reports), AsSingleton(skipped), AsDict(listed_counts)))


# ------------------------------------------------------------------ launcher: resume, run, finish

def _done_report(out_dir: epath.Path, opts: plan.Options, settings: dict, features, source) -> dict | None:
    """The report of a rerun over splits already complete with these settings (nothing is written
    but missing metadata), or None if the pipeline must run. Other settings: ValueError, as locally."""
    complete = True
    for split, wanted in settings.items():
        stored = writer.read_json(writer.Layout(out_dir, opts.name, split, 0).settings())
        if stored is None or opts.overwrite:
            complete = False
            continue
        layout = writer.Layout(out_dir, opts.name, split, stored['num_shards'])
        writer.check_settings(layout, {k: v for k, v in stored.items() if k not in RESULT_KEYS}, wanted)
        complete = complete and writer.shard_reports(layout) is not None
    report = writer.read_json(out_dir / f'prepare-report-{opts.split}.json')
    if not complete or report is None or not set(settings) <= set(report['splits']):
        return None
    info = writer.read_json(out_dir / 'dataset_info.json') or {}
    if not set(settings) <= {s['name'] for s in info.get('splits', [])}:
        writer.write_metadata(out_dir, opts.name, opts.version, features, source)
    report['splits'] = {split: report['splits'][split] for split in settings}   # the run's order, not the file's
    report.update(shards_reused=sum(s['shards'] for s in report['splits'].values()), shards_written=0)
    writer.write_json(out_dir / f'prepare-report-{opts.split}.json', report)
    return report


def _clear(out_dir: epath.Path, opts: plan.Options, splits) -> None:
    """Removes what earlier runs left of these splits (all of it: a Beam run rewrites a whole split)."""
    for split in splits:
        layout = writer.Layout(out_dir, opts.name, split, 0)
        if layout.existing_files() or layout.settings().exists():
            writer.remove_split(layout)


def _finish(out_dir: epath.Path, temp: epath.Path, kind: str, source, source_kwargs: dict, opts: plan.Options,
            runner: str, features) -> dict:
    """Moves the shards in with their reports, then the run's report, the splits' settings (which mark
    them complete) and the metadata: a crash at any point leaves no split that the metadata lists
    but whose shards are missing, and a rerun starts again."""
    summary = json.loads((temp / SUMMARY).read_text())
    for split in plan.run_splits(opts):
        if not summary['listed'].get(split):
            raise plan.no_examples_error(split, source, summary['skipped'], opts)
    by_split = collections.defaultdict(dict)
    for split, i, shard_report in summary['shards']:
        by_split[split][i] = shard_report
    report = {'dataset': opts.name, 'source': str(source), 'version_dir': str(out_dir), 'splits': {},
              'shards_written': 0, 'shards_reused': 0}
    settings = {}
    for split in plan.run_splits(opts):
        shard_reports = [by_split[split][i] for i in range(len(by_split[split]))]
        layout = writer.Layout(out_dir, opts.name, split, len(shard_reports))
        for i, shard_report in enumerate(shard_reports):
            (temp / layout.shard(i).name).rename(layout.shard(i))
            writer.write_json(layout.shard_report(i), shard_report)
        report['splits'][split] = {'examples': sum(r['examples'] for r in shard_reports),
                                   'captions': sum(r['captions'] for r in shard_reports),
                                   'shards': layout.num_shards}
        report['shards_written'] += layout.num_shards
        settings[layout.settings()] = {**plan.split_settings(kind, source, source_kwargs, opts, split),
                                       'runner': runner, 'examples_listed': summary['listed'][split],
                                       'num_shards': layout.num_shards}
    plan.finish_report(report, summary['skipped'])
    writer.write_json(out_dir / f'prepare-report-{opts.split}.json', report)
    for path, split_settings in settings.items():
        writer.write_json(path, split_settings)
    writer.write_metadata(out_dir, opts.name, opts.version, features, source)   # last, as locally
    return report


def prepare(kind: str, source, opts: plan.Options, runner: str = 'DirectRunner', beam_options: str = '',
            **source_kwargs) -> dict:
    """Prepares `source` as the local path's `convert.prepare` does, with a Beam pipeline on `runner`
    (`beam_options`: Beam's own flags, e.g. '--project=P --region=R --temp_location=gs://B/tmp').

    Returns (and saves as prepare-report-<split>.json) the same report. A rerun over complete splits
    with the same settings returns at once; other settings raise ValueError unless opts.overwrite.
    """
    args = pipeline_args(runner, beam_options, opts.workers)
    beam = import_beam()
    from apache_beam.options.pipeline_options import PipelineOptions
    plan.check_options(opts)
    out_dir = plan.version_dir(opts)
    elements, class_names = list_inputs(kind, source, **source_kwargs)
    features = plan.make_features(opts.image_size, opts.image_format, class_names)
    settings = {split: plan.split_settings(kind, source, source_kwargs, opts, split) for split in plan.run_splits(opts)}
    (out_dir / writer.WORK).mkdir(parents=True, exist_ok=True)
    writer.check_features(out_dir, features, settings)
    done = _done_report(out_dir, opts, settings, features, source)
    if done is not None:
        return done
    _clear(out_dir, opts, settings)
    temp = out_dir / writer.WORK / f'beam-{opts.split}.tmp'
    if temp.exists():
        temp.rmtree()
    temp.mkdir(parents=True)
    try:
        with beam.Pipeline(options=PipelineOptions(args)) as p:
            build(p, elements, opts, class_names, worker_kwargs(source_kwargs), os.fspath(temp))
        return _finish(out_dir, temp, kind, source, source_kwargs, opts, runner, features)
    finally:
        if temp.exists():
            temp.rmtree()
