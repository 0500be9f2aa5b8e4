"""`prepare --runner=DirectRunner`: the Beam pipeline writes what the local path writes.

Inputs are generated here: random-pixel PNG and JPEG images (so an image attached to the wrong
key shows) in img2dataset tars, a CSV manifest and class folders, ~300 images in all, with
every bad input the local path skips planted at known places. Each kind is prepared by the local
path and by Beam's DirectRunner (multi_processing, 2 worker processes) and the two datasets are
compared through tfds.data_source: the decoded records by key, the split sizes and the report.
"""
import io
import json
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxclr.data.prepare import beam_pipeline, convert, images, sources, writer
from tests.helpers import REPO_ROOT, encode, write

BEAM = dict(runner='DirectRunner', beam_options='--direct_running_mode=multi_processing --direct_num_workers=2')
IN_PROCESS = dict(runner='DirectRunner', beam_options='--direct_running_mode=in_memory')   # monkeypatch reaches it


def pixels(rng, fmt='PNG') -> bytes:
    h, w = rng.integers(10, 24, size=2)
    return encode(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), fmt, **({'quality': 90} if fmt == 'JPEG' else {}))


def add(tar, name, data: bytes):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_tars(folder, rng):
    """3 tars of 50 keys and a corrupt 4th; skips planted: key 000003's image is not an image, 000007's
    caption is blank, 000009 has no image, 000001 comes again in the second tar, 000105 twice in the third."""
    folder.mkdir()
    for t in range(3):
        with tarfile.open(folder / f'{t:05d}.tar', 'w') as tar:
            for j in range(50):
                key = f'{100 * t + j:06d}'
                if key == '000009':
                    add(tar, f'{key}.txt', b'a caption without its image')
                    continue
                fmt = 'JPEG' if j % 3 == 0 else 'PNG'
                add(tar, f'{key}.{fmt.lower()}', b'not an image' if key == '000003' else pixels(rng, fmt))
                if j % 4 == 0:
                    add(tar, f'{key}.json', json.dumps({'caption': f'json caption {key}'}).encode())
                else:
                    add(tar, f'{key}.txt', b'  ' if key == '000007' else f'caption {key}'.encode())
            if t == 1:
                add(tar, '000001.png', pixels(rng))
                add(tar, '000001.txt', b'the same key in another tar')
            if t == 2:
                add(tar, '000105.txt', b'the same member twice')
    (folder / '00003.tar').write_bytes(b'<html>403 Forbidden</html>' * 40)   # a failed download


def write_manifest(folder, rng):
    """80 images, 20 with a second caption row; skips planted: one image with a blank caption only,
    a blank caption beside a good one, a row without an image path, a missing file, a broken file."""
    rows = ['image,caption']
    for i in range(80):
        name = f'photos/p{i:03d}.{"jpg" if i % 5 == 0 else "png"}'
        write(folder / name, pixels(rng, 'JPEG' if i % 5 == 0 else 'PNG'))
        rows.append(f'{name},photo {i}')
        if i % 4 == 0:
            rows.append(f'{name},"second, for {i}"')
    rows += ['photos/p001.png,"   "', 'photos/p002.png,', 'photos/blank.png,  ', ',no image path',
             'photos/missing.png,a missing file', 'photos/broken.png,a broken file']
    write(folder / 'photos' / 'blank.png', pixels(rng))
    write(folder / 'photos' / 'broken.png', b'\x89PNG but no more')
    (folder / 'm.csv').write_text('\n'.join(rows) + '\n')


def write_classes(folder, rng):
    """3 classes of 20 images (some in a subfolder); skips planted: a text file and a broken image."""
    for label in ('cat', 'dog', 'fish'):
        for i in range(20):
            write(folder / label / ('sub' if i % 7 == 0 else '') / f'{label}{i}.png', pixels(rng))
    write(folder / 'dog' / 'notes.txt', b'not an image')
    write(folder / 'fish' / 'broken.jpg', b'nope')


@pytest.fixture(scope='module')
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp('beam_inputs')
    rng = np.random.default_rng(0)
    write_tars(root / 'tars', rng)
    write_manifest(root / 'manifest', rng)
    write_classes(root / 'pets', rng)
    return {'webdataset': str(root / 'tars'), 'manifest': str(root / 'manifest' / 'm.csv'),
            'class_folders': str(root / 'pets')}


CASES = {   # kind: (options, the skips planted above)
    'webdataset': (dict(val_fraction=0.3), {'duplicate key': 2, 'empty caption': 1, 'missing image': 1,
                                             'undecodable image': 1, 'unreadable tar shard': 1}),
    'manifest': (dict(val_fraction=0.3), {'bad manifest row': 1, 'empty caption': 1, 'missing file': 1,
                                          'undecodable image': 1}),
    'class_folders': (dict(split='test'), {'not an image file': 1, 'undecodable image': 1}),
}


def options(data_dir, kind, **changes):
    kwargs = {'image_size': 8, 'image_format': 'png', 'shard_size': 16, 'workers': 1, 'progress': False,
              **CASES[kind][0], **changes}
    return convert.Options(name=f'beam_{kind}', data_dir=str(data_dir), **kwargs)


def read_split(data_dir, name, split) -> dict:
    """key -> (image pixels, captions or label) of a split, as tfds.data_source decodes it."""
    source = tfds.data_source(name, split=split, data_dir=str(data_dir))
    out = {}
    for i in range(len(source)):
        ex = source[i]
        target = [c.decode() for c in ex['caption']] if 'caption' in ex else int(ex['label'])
        out[ex['key'].decode()] = (ex['image'].shape, ex['image'].tobytes(), target)
    return out


def read_dataset(data_dir, name) -> dict:
    splits = tfds.builder(name, data_dir=str(data_dir)).info.splits
    return {split: read_split(data_dir, name, split) for split in splits}


def shard_files(version_dir) -> dict:
    return {p: os.stat(os.path.join(version_dir, p)).st_mtime_ns for p in os.listdir(version_dir)
            if '.array_record-' in p}


def no_reading_here(monkeypatch):
    """The launcher lists input files only: every reader of images or captions raises in this process
    (the DirectRunner's multi_processing workers are fresh processes, unaffected)."""
    def refuse(*args, **kwargs):
        raise AssertionError('the launcher read an input')
    for module, name in ((sources, '_tar_index'), (sources, 'manifest'), (sources, 'class_items'),
                         (images, 'read_bytes'), (images, 'load')):
        monkeypatch.setattr(module, name, refuse)


@pytest.fixture(scope='module')
def prepared(inputs, tmp_path_factory):
    """kind -> (local data dir, local report, Beam data dir, Beam report, initial elements of the Beam run)."""
    out, mp = {}, pytest.MonkeyPatch()
    try:
        for kind, source in inputs.items():
            local_dir, beam_dir = tmp_path_factory.mktemp(f'local_{kind}'), tmp_path_factory.mktemp(f'beam_{kind}')
            local = convert.prepare(kind, source, options(local_dir, kind))
            elements, build = [], beam_pipeline.build
            def recording_build(p, initial, *args):   # noqa: E306 - the pipeline's initial collection
                elements.extend(initial)
                return build(p, initial, *args)
            mp.setattr(beam_pipeline, 'build', recording_build)
            no_reading_here(mp)
            beam = beam_pipeline.prepare(kind, source, options(beam_dir, kind, workers=2), **BEAM)
            mp.undo()
            out[kind] = (local_dir, local, beam_dir, beam, elements)
    finally:
        mp.undo()
    return out


# ------------------------------------------------------------------ the same dataset

@pytest.mark.parametrize('kind', list(CASES))
def test_beam_writes_the_records_splits_and_skips_of_the_local_path(prepared, kind):
    local_dir, local, beam_dir, beam, _ = prepared[kind]
    name = f'beam_{kind}'
    assert local['skipped'] == beam['skipped'] == CASES[kind][1]   # every planted skip, counted by both
    for field in ('dataset', 'source', 'skipped_total', 'blank_captions_dropped'):
        assert local[field] == beam[field], field
    assert beam['blank_captions_dropped'] == (2 if kind == 'manifest' else 0)
    assert {s: (v['examples'], v['captions']) for s, v in local['splits'].items()} == \
        {s: (v['examples'], v['captions']) for s, v in beam['splits'].items()}
    assert list(beam['splits']) == list(local['splits'])   # the same splits, in the same order
    saved = json.loads((beam_dir / name / '1.0.0' / 'prepare-report-{}.json'.format(next(iter(beam['splits']))))
                       .read_text())
    assert saved == beam and beam['shards_written'] == sum(s['shards'] for s in beam['splits'].values())

    local_records, beam_records = read_dataset(local_dir, name), read_dataset(beam_dir, name)
    assert local_records == beam_records   # decoded images, captions / labels, by key, per split
    assert sum(len(r) for r in beam_records.values()) == sum(s['examples'] for s in beam['splits'].values())
    if 'test' in beam_records and kind != 'class_folders':   # the key hash held some keys out, in both paths
        assert 0 < len(beam_records['test']) < len(beam_records['train'])
    info = tfds.builder(name, data_dir=str(beam_dir)).info
    for split, s in beam['splits'].items():   # hash buckets of about --shard_size examples
        assert info.splits[split].num_shards == s['shards'] == max(1, -(-s['examples'] // 16))
        assert sum(info.splits[split].shard_lengths) == s['examples']


@pytest.mark.parametrize('kind', list(CASES))
def test_the_initial_collection_holds_at_most_one_element_per_input_file(prepared, inputs, kind):
    elements = prepared[kind][4]
    files = [f for _, _, names in os.walk(inputs[kind]) for f in names] if kind != 'manifest' else ['m.csv']
    assert 1 <= len(elements) <= len(files)
    assert len(elements) == {'webdataset': 4, 'manifest': 1, 'class_folders': 3}[kind]   # tars / manifest / classes
    assert all(isinstance(part, (str, int, type(None))) for element in elements for part in element)


def test_a_shard_of_beam_holds_its_records_sorted_by_key(prepared):
    """So a rerun gives every record the same index, and training's order over the records is reproducible."""
    _, _, beam_dir, beam, _ = prepared['webdataset']
    source = tfds.data_source('beam_webdataset', split='train', data_dir=str(beam_dir))
    lengths = tfds.builder('beam_webdataset', data_dir=str(beam_dir)).info.splits['train'].shard_lengths
    start = 0
    for length in lengths:
        keys = [source[i]['key'].decode() for i in range(start, start + length)]
        assert keys == sorted(keys)
        start += length


# ------------------------------------------------------------------ reruns and failures

def test_a_rerun_keeps_the_finished_dataset_and_other_settings_are_refused(prepared, inputs, monkeypatch):
    _, _, beam_dir, beam, _ = prepared['manifest']
    version_dir = beam_dir / 'beam_manifest' / '1.0.0'
    before = shard_files(version_dir)

    def no_pipeline(*args):
        raise AssertionError('a rerun over a finished dataset ran the pipeline')
    monkeypatch.setattr(beam_pipeline, 'build', no_pipeline)
    again = beam_pipeline.prepare('manifest', inputs['manifest'], options(beam_dir, 'manifest'), **BEAM)
    assert (again['shards_written'], again['shards_reused']) == (0, beam['shards_written'])
    assert {k: v for k, v in again.items() if not k.startswith('shards_')} == \
        {k: v for k, v in beam.items() if not k.startswith('shards_')}
    assert shard_files(version_dir) == before   # not a byte rewritten
    with pytest.raises(ValueError, match='image_size differ.*--overwrite'):
        beam_pipeline.prepare('manifest', inputs['manifest'], options(beam_dir, 'manifest', image_size=16), **BEAM)
    with pytest.raises(ValueError, match='runner.*differ'):   # the local path does not mix its shards in
        convert.prepare('manifest', inputs['manifest'], options(beam_dir, 'manifest'))
    assert shard_files(version_dir) == before


def test_a_failed_run_leaves_nothing_readable_and_the_rerun_finishes(prepared, inputs, tmp_path, monkeypatch):
    local_dir = prepared['class_folders'][0]
    expected = read_dataset(local_dir, 'beam_class_folders')
    opts = options(tmp_path, 'class_folders')
    version_dir = tmp_path / 'beam_class_folders' / '1.0.0'
    load = images.load

    def crash_on_one(ref, **kwargs):   # a worker dies (in_memory: the workers run in this process)
        if ref[1].endswith('dog7.png'):
            raise RuntimeError('worker lost')
        return load(ref, **kwargs)
    monkeypatch.setattr(images, 'load', crash_on_one)
    with pytest.raises(Exception, match='worker lost'):
        beam_pipeline.prepare('class_folders', inputs['class_folders'], opts, **IN_PROCESS)
    assert shard_files(version_dir) == {} and not (version_dir / 'dataset_info.json').exists()
    assert sorted(os.listdir(version_dir / 'prepare')) == []   # the temp folder is gone too
    with pytest.raises(Exception):   # noqa: B017 - TFDS raises its own types for a dataset it cannot find
        tfds.data_source('beam_class_folders', split='test', data_dir=str(tmp_path))
    monkeypatch.setattr(images, 'load', load)

    write_metadata = writer.write_metadata
    def crash_before_metadata(*args):   # noqa: E306 - the launcher dies after the shards are in place
        raise OSError('launcher lost')
    monkeypatch.setattr(writer, 'write_metadata', crash_before_metadata)
    with pytest.raises(OSError, match='launcher lost'):
        beam_pipeline.prepare('class_folders', inputs['class_folders'], opts, **IN_PROCESS)
    assert shard_files(version_dir) and not (version_dir / 'dataset_info.json').exists()
    with pytest.raises(Exception):   # noqa: B017 - shards without metadata: still not a dataset
        tfds.data_source('beam_class_folders', split='test', data_dir=str(tmp_path))
    monkeypatch.setattr(writer, 'write_metadata', write_metadata)
    monkeypatch.setattr(beam_pipeline, 'build', crash_before_metadata)   # complete shards: the rerun runs no pipeline
    report = beam_pipeline.prepare('class_folders', inputs['class_folders'], opts, **IN_PROCESS)
    assert report['shards_written'] == 0 and report['skipped'] == CASES['class_folders'][1]
    assert read_dataset(tmp_path, 'beam_class_folders') == expected


# ------------------------------------------------------------------ the command line

def test_without_apache_beam_runner_is_one_error_line(inputs, tmp_path):
    code = ("import sys; sys.modules['apache_beam'] = None; "   # `import apache_beam` raises ImportError
            "from jaxclr.data.prepare.convert import cli; cli()")
    proc = subprocess.run([sys.executable, '-c', code, f'--webdataset={inputs["webdataset"]}', '--name=no_beam',
                           f'--data_dir={tmp_path}', '--runner=DirectRunner'],
                          cwd=REPO_ROOT, env={**os.environ, 'JAX_PLATFORMS': 'cpu'}, capture_output=True, text=True,
                          timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and lines == [f'error: {beam_pipeline.BEAM_MISSING}'], proc.stderr[-2000:]
    assert "pip install -e '.[beam]'" in lines[0] and not os.listdir(tmp_path)


def test_runner_names_and_beam_options_reach_beam():
    assert beam_pipeline.pipeline_args('DataflowRunner', '--project=p --region="us central1"', 4) == \
        ['--project=p', '--region=us central1', '--runner=DataflowRunner']
    assert beam_pipeline.pipeline_args('DirectRunner', '', 3) == \
        ['--direct_running_mode=multi_processing', '--direct_num_workers=3', '--runner=DirectRunner']
    assert beam_pipeline.pipeline_args('DirectRunner', '--direct_running_mode=in_memory', 3) == \
        ['--direct_running_mode=in_memory', '--runner=DirectRunner']
    with pytest.raises(ValueError, match="--runner: 'SparkRunnr' is not one of DirectRunner"):
        beam_pipeline.pipeline_args('SparkRunnr', '', 1)
