"""`python -m jaxclr.data.prepare`: manifests, img2dataset tars and class folders -> array_record by name.

Every input is generated here with PIL: solid-colour images (so a resized image has exactly
the source colour), a two-colour image (so the centre crop is checked in closed form), and
broken inputs whose skip counts are asserted exactly.
"""
import io
import json
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from array_record.python.array_record_data_source import ArrayRecordDataSource
from PIL import Image

from jaxclr import config as configlib
from jaxclr.data import datasets, pipeline
from jaxclr.data.prepare import convert as prepare
from jaxclr.data.prepare import images
from tests.helpers import COLOURS, REPO_ROOT, encode, eval_records, solid, write

RED, BLUE = (255, 0, 0), (0, 0, 255)


def halves(h=24, w=48):
    """Left half red, right half blue: a centre crop to h x h keeps both halves."""
    image = solid(RED, h, w)
    image[:, w // 2:] = BLUE
    return image


def options(data_dir, name, **kwargs):
    kwargs = {'image_size': 8, 'image_format': 'png', 'shard_size': 2, 'progress': False, **kwargs}
    return prepare.Options(name=name, data_dir=str(data_dir), **kwargs)


def data_cfg(data_dir, name, **changes):
    config = configlib.load('configs/clip.py:tiny')
    config.data.update(name=name, data_dir=str(data_dir), image_size=8, **changes)
    return config.data


def records(data_dir, name, split='train') -> dict:
    """key -> decoded example of a prepared split, read by name as training reads it."""
    source = datasets.data_source(data_cfg(data_dir, name), split)
    out = {}
    for i in range(len(source)):
        example = source[i]
        out[example['key'].decode()] = example
    return out


def captions(example) -> list:
    return [c.decode() for c in example['caption']]


# ------------------------------------------------------------------ manifests

@pytest.fixture(scope='module')
def image_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp('folder')
    for name in 'abcf':
        write(root / 'imgs' / f'{name}.png', encode(solid(COLOURS[name])))
    write(root / 'imgs' / 'd.jpg', b'this is not an image')
    write(root / 'imgs' / 'g.png', encode(halves()))
    return root


def test_csv_manifest_counts_every_skip_and_reads_by_name(image_folder, tmp_path):
    (image_folder / 'm.csv').write_text(
        'image,caption\n'
        'imgs/a.png,a first\nimgs/b.png,b first\nimgs/c.png,\nimgs/d.jpg,corrupt\nimgs/e.png,missing file\n'
        'imgs/f.png,f only\nimgs/f.png,"  "\nimgs/a.png,a second\n,no image path\n./imgs/b.png,b second\n'
        'imgs/g.png,two halves\n')
    report = prepare.prepare('manifest', str(image_folder / 'm.csv'), options(tmp_path, 'folder_csv'))
    assert report['skipped'] == {'bad manifest row': 1, 'empty caption': 1, 'missing file': 1,
                                 'undecodable image': 1}
    assert report['skipped_total'] == 4 and report['blank_captions_dropped'] == 1
    # listed a, b, d, e, f, g (c has no caption): 3 shards of 2, the middle one empty
    assert report['splits'] == {'train': {'examples': 4, 'captions': 6, 'shards': 3}}
    assert report['shards_written'] == 3 and report['shards_reused'] == 0
    saved = json.loads((tmp_path / 'folder_csv' / '1.0.0' / 'prepare-report-train.json').read_text())
    assert saved == report
    got = records(tmp_path, 'folder_csv')
    assert sorted(got) == ['imgs/a.png', 'imgs/b.png', 'imgs/f.png', 'imgs/g.png']
    assert captions(got['imgs/a.png']) == ['a first', 'a second']
    assert captions(got['imgs/b.png']) == ['b first', 'b second']   # './imgs/b.png' is the same image
    assert captions(got['imgs/f.png']) == ['f only']
    for key in ('imgs/a.png', 'imgs/b.png', 'imgs/f.png'):
        np.testing.assert_array_equal(got[key]['image'], solid(COLOURS[key[5]], 8, 8))
    g = got['imgs/g.png']['image']   # 24x48 -> centre 24x24 (columns 12..35) -> 8x8: red left, blue right
    assert g.shape == (8, 8, 3)
    np.testing.assert_array_equal(g[:, 0], solid(RED, 8, 1)[:, 0])
    np.testing.assert_array_equal(g[:, 7], solid(BLUE, 8, 1)[:, 0])


def test_jsonl_manifest_with_caption_lists_and_named_columns(image_folder, tmp_path):
    lines = [json.dumps({'image': 'imgs/a.png', 'caption': ['a one', 'a two', '']}),
             json.dumps({'image': 'imgs/b.png', 'caption': 'b one'}),
             json.dumps({'image': 'imgs/a.png', 'caption': 'a three'}),
             'not json', json.dumps([1, 2]),
             json.dumps({'image': 'imgs/c.png', 'caption': []}),
             json.dumps({'image': 'imgs/f.png', 'caption': ['  ']})]
    (image_folder / 'm.jsonl').write_text('\n'.join(lines) + '\n')
    report = prepare.prepare('manifest', str(image_folder / 'm.jsonl'), options(tmp_path, 'folder_jsonl'))
    assert report['skipped'] == {'bad manifest row': 2, 'empty caption': 2}
    assert report['blank_captions_dropped'] == 1
    assert report['splits']['train'] == {'examples': 2, 'captions': 4, 'shards': 1}
    got = records(tmp_path, 'folder_jsonl')
    assert captions(got['imgs/a.png']) == ['a one', 'a two', 'a three']
    assert captions(got['imgs/b.png']) == ['b one']

    (image_folder / 'named.csv').write_text('file,text\nimgs/f.png,named columns\n')
    with pytest.raises(ValueError, match='no column caption, image'):
        prepare.prepare('manifest', str(image_folder / 'named.csv'), options(tmp_path, 'named'))
    prepare.prepare('manifest', str(image_folder / 'named.csv'), options(tmp_path, 'named'),
                    image_column='file', caption_column='text')
    assert captions(records(tmp_path, 'named')['imgs/f.png']) == ['named columns']


# ------------------------------------------------------------------ img2dataset tars

def add(tar, name, data: bytes):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_webdataset_tars_with_duplicates_and_broken_members(tmp_path):
    shards = tmp_path / 'laion'
    shards.mkdir()
    with tarfile.open(shards / '00000.tar', 'w') as tar:
        add(tar, '000000.png', encode(solid(COLOURS['a'])))
        add(tar, '000000.txt', b'zero')
        add(tar, '000001.webp', encode(solid(COLOURS['b']), 'WEBP', lossless=True))
        add(tar, '000001.json', json.dumps({'caption': 'one', 'url': 'http://x'}).encode())
        add(tar, '000002.jpg', b'\xff\xd8 truncated jpeg')
        add(tar, '000002.txt', b'broken')
        add(tar, '000003.png', encode(solid(COLOURS['c'])))   # no caption
        add(tar, '000004.txt', b'orphan caption')             # no image
        add(tar, '000005.png', encode(solid(COLOURS['d'])))
        add(tar, '000005.txt', b'   ')
    with tarfile.open(shards / '00001.tar', 'w') as tar:
        add(tar, '000000.png', encode(solid(COLOURS['e'])))   # key of the first tar again
        add(tar, '000000.txt', b'dup')
        add(tar, '000006.jpg', encode(solid(COLOURS['f']), 'JPEG', quality=100))
        add(tar, '000006.txt', b'six')
        add(tar, '000006.txt', b'six again')                  # same member twice
    (shards / '00000_stats.json').write_text('{}')            # img2dataset's side files are ignored
    report = prepare.prepare('webdataset', str(shards), options(tmp_path, 'tars', workers=2))
    assert report['skipped'] == {'duplicate key': 2, 'empty caption': 2, 'missing image': 1,
                                 'undecodable image': 1}
    got = records(tmp_path, 'tars')
    assert {k: captions(v) for k, v in got.items()} == {'000000': ['zero'], '000001': ['one'], '000006': ['six']}
    np.testing.assert_array_equal(got['000000']['image'], solid(COLOURS['a'], 8, 8))   # the first 000000
    np.testing.assert_array_equal(got['000001']['image'], solid(COLOURS['b'], 8, 8))
    assert np.abs(got['000006']['image'].astype(int) - solid(COLOURS['f'], 8, 8)).max() <= 2   # JPEG source


# ------------------------------------------------------------------ class folders


def test_class_folders_give_a_classlabel_for_zero_shot(tmp_path):
    root = tmp_path / 'pets'
    for key, colour in (('cat/c1.png', 'a'), ('cat/c2.png', 'b'), ('dog/d1.png', 'c'), ('dog/sub/d2.png', 'd')):
        write(root / key, encode(solid(COLOURS[colour])))
    write(root / 'dog' / 'broken.jpg', b'nope')
    write(root / 'dog' / 'notes.txt', b'not an image')
    (root / '.cache').mkdir()
    report = prepare.prepare('class_folders', str(root), options(tmp_path, 'pets', split='test'))
    assert report['skipped'] == {'not an image file': 1, 'undecodable image': 1}
    assert report['splits'] == {'test': {'examples': 4, 'captions': 0, 'shards': 3}}
    got = records(tmp_path, 'pets', 'test')
    assert {k: int(v['label']) for k, v in got.items()} == {
        'cat/c1.png': 0, 'cat/c2.png': 0, 'dog/d1.png': 1, 'dog/sub/d2.png': 1}
    cfg = data_cfg(tmp_path, 'pets', eval_split='test')
    assert datasets.zero_shot_tasks(cfg) == {'label': ['cat', 'dog']}
    config = configlib.load('configs/clip.py:tiny')
    config.data = cfg
    ev = eval_records(config)   # zero-shot eval data: prompts from the class names
    assert sorted(ev['caption']) == ['a photo of a cat.'] * 2 + ['a photo of a dog.'] * 2
    assert sorted(ev['labels']['label'].tolist()) == [0, 0, 1, 1]


# ------------------------------------------------------------------ resumption

def all_records(data_dir, name):
    return {k: (captions(v), v['image'].tobytes()) for k, v in records(data_dir, name).items()}


def test_interrupted_prepare_resumes_shard_by_shard(image_folder, tmp_path, monkeypatch):
    lines = [f'imgs/{n}.png,caption {n}' for n in 'abf'] + ['imgs/g.png,halves', 'imgs/d.jpg,bad']
    (image_folder / 'r.csv').write_text('image,caption\n' + '\n'.join(lines) + '\n')
    source = str(image_folder / 'r.csv')
    clean = prepare.prepare('manifest', source, options(tmp_path / 'clean', 'resume'))
    expected = all_records(tmp_path / 'clean', 'resume')

    calls, load = [], images.load
    def interrupted(ref, **kwargs):   # noqa: E306 - Ctrl-C while the second shard is written
        calls.append(ref)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return load(ref, **kwargs)
    monkeypatch.setattr(images, 'load', interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare.prepare('manifest', source, options(tmp_path, 'resume'))
    version_dir = tmp_path / 'resume' / '1.0.0'
    assert not (version_dir / 'dataset_info.json').exists()   # no metadata: not readable by name
    with pytest.raises(ValueError, match="Unknown dataset 'resume'"):
        datasets.get_builder(data_cfg(tmp_path, 'resume'))
    monkeypatch.setattr(images, 'load', load)
    report = prepare.prepare('manifest', source, options(tmp_path, 'resume'))
    assert (report['shards_written'], report['shards_reused']) == (2, 1)
    assert report['skipped'] == clean['skipped'] == {'undecodable image': 1}
    assert all_records(tmp_path, 'resume') == expected

    shards = sorted(p for p in os.listdir(version_dir) if '.array_record-' in p)
    mtimes = {p: os.stat(version_dir / p).st_mtime_ns for p in shards}
    os.remove(version_dir / shards[1])                      # a lost shard ...
    write(version_dir / 'prepare' / 'train-00001-of-00003.tmp', b'half a shard')   # ... and its temp file
    report = prepare.prepare('manifest', source, options(tmp_path, 'resume'))
    assert (report['shards_written'], report['shards_reused']) == (1, 2)
    assert {p: os.stat(version_dir / p).st_mtime_ns for p in shards if p != shards[1]} == \
        {p: t for p, t in mtimes.items() if p != shards[1]}   # the others untouched
    assert all_records(tmp_path, 'resume') == expected and report['skipped'] == clean['skipped']
    with pytest.raises(ValueError, match='image_size differ.*--overwrite'):
        prepare.prepare('manifest', source, options(tmp_path, 'resume', image_size=16))
    report = prepare.prepare('manifest', source, options(tmp_path, 'resume', image_size=16, overwrite=True))
    assert (report['shards_written'], report['shards_reused']) == (3, 0)
    assert records(tmp_path, 'resume')['imgs/a.png']['image'].shape == (16, 16, 3)


# ------------------------------------------------------------------ original bytes

def test_image_size_0_keeps_the_original_bytes_and_decodes_at_load(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (10, 14, 3), dtype=np.uint8)
    palette = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), 'P')
    palette.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    grey = np.arange(35, dtype=np.uint8).reshape(5, 7)
    buffer = io.BytesIO()
    palette.save(buffer, 'PNG')
    files = {'rgb.png': encode(rgb), 'palette.png': buffer.getvalue(), 'grey.png': encode(grey)}
    for name, data in files.items():
        write(tmp_path / 'src' / name, data)
    (tmp_path / 'src' / 'm.csv').write_text('image,caption\n' + ''.join(f'{n},{n}\n' for n in files))
    prepare.prepare('manifest', str(tmp_path / 'src' / 'm.csv'), options(tmp_path, 'originals', image_size=0))
    builder = datasets.get_builder(data_cfg(tmp_path, 'originals'))
    assert builder.info.features['image'].shape == (None, None, 3)
    got = records(tmp_path, 'originals')
    np.testing.assert_array_equal(got['rgb.png']['image'], rgb)
    np.testing.assert_array_equal(got['palette.png']['image'], [[[10, 20, 30], [200, 100, 50]],
                                                                [[200, 100, 50], [10, 20, 30]]])
    np.testing.assert_array_equal(got['grey.png']['image'], np.repeat(grey[:, :, None], 3, axis=2))
    shard = str(tmp_path / 'originals' / '1.0.0' / 'originals-train.array_record-00000-of-00002')
    raw = ArrayRecordDataSource([shard])
    assert files['rgb.png'] in raw[0] and files['palette.png'] not in raw[1]   # RGB kept, palette re-encoded
    standardize = pipeline.Standardize(image_size=8)   # resized at load time to data.image_size
    assert standardize(got['rgb.png'])['image'].shape == (8, 8, 3)


# ------------------------------------------------------------------ command line + a tiny train run

@pytest.mark.slow
def test_cli_prepare_then_train_two_steps_by_name(image_folder, tmp_path):
    lines = [f'imgs/{n}.png,a picture of {n}' for n in 'abf'] + ['imgs/g.png,red and blue', 'imgs/d.jpg,bad']
    (image_folder / 'cli.csv').write_text('image,caption\n' + '\n'.join(lines) + '\n')
    env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO_ROOT)
    run = [sys.executable, '-m']
    proc = subprocess.run(run + ['jaxclr.data.prepare', f'--manifest={image_folder / "cli.csv"}', '--name=cli_caps',
                                 f'--data_dir={tmp_path}', '--image_size=32', '--workers=1', '--val_fraction=0.5'],
                          env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'undecodable image: 1' in proc.stdout
    splits = json.loads((tmp_path / 'cli_caps' / '1.0.0' / 'prepare-report-train.json').read_text())['splits']
    assert splits['train']['examples'] + splits['test']['examples'] == 4 and min(
        s['examples'] for s in splits.values()) >= 1
    # The model and optimiser of tests/test_train.tiny_run_config (its train step is in the session's
    # XLA cache); stop_at=2 ends the run after 2 steps with a checkpoint and no eval.
    overrides = dict(data__name='cli_caps', data__data_dir=tmp_path, data__image_size=32, train__batch_size=32,
                     train__total_steps=24, train__stop_at=2, train__log_every=1, optim__lr=3e-3,
                     optim__warmup_steps=4, model__embed_dim=32, model__image__patch_size=16,
                     model__image__width=32, model__image__depth=1, model__image__heads=2, model__text__width=32,
                     model__text__depth=1, model__text__heads=2)
    proc = subprocess.run(run + ['jaxclr.train', '--config=configs/clip.py:tiny', f'--workdir={tmp_path / "run"}']
                          + [f'--config.{k.replace("__", ".")}={v}' for k, v in overrides.items()],
                          env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = [json.loads(line) for line in (tmp_path / 'run' / 'metrics.jsonl').read_text().splitlines()]
    assert [m['step'] for m in metrics if 'loss' in m] == [1, 2]
    assert all(np.isfinite(m['loss']) for m in metrics if 'loss' in m)
    assert os.listdir(tmp_path / 'run' / 'checkpoints') == ['2']


@pytest.mark.parametrize('damage', ['not a tar', 'truncated'])
def test_an_unreadable_tar_shard_is_skipped_counted_and_the_rest_prepared(tmp_path, damage, caplog):
    shards = tmp_path / 'shards'
    shards.mkdir()
    with tarfile.open(shards / '00000.tar', 'w') as tar:
        add(tar, '000000.png', encode(solid(COLOURS['a'])))
        add(tar, '000000.txt', b'zero')
    with tarfile.open(shards / '00001.tar', 'w') as tar:
        add(tar, '000001.png', encode(solid(COLOURS['b'])))
        add(tar, '000001.txt', b'one')
        add(tar, '000002.png', encode(solid(COLOURS['c'])))
        add(tar, '000002.txt', b'two')
    bad = shards / '00001.tar'
    if damage == 'not a tar':
        bad.write_bytes(b'<html>403 Forbidden</html>' * 40)   # what a failed download leaves behind
    else:
        bad.write_bytes(bad.read_bytes()[:700])                # cut inside the first member's data
    report = prepare.prepare('webdataset', str(shards), options(tmp_path, 'tars'))
    assert report['skipped'] == {'unreadable tar shard': 1}
    assert {k: captions(v) for k, v in records(tmp_path, 'tars').items()} == {'000000': ['zero']}
    assert any('00001.tar' in r.getMessage() and 'not a readable tar' in r.getMessage() for r in caplog.records)
