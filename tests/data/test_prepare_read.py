"""Prepared datasets in training and evaluation: by name, one caption drawn per position,
feature names from the config (data.image_feature / caption_feature / label_feature), and a
clear error for a dataset stored in a format jaxclr cannot read (tfrecord)."""
import json

import numpy as np
import pytest
import tensorflow_datasets as tfds
from array_record.python import array_record_module

from jaxclr import config as configlib
from jaxclr.data import datasets, pipeline
from jaxclr.data.prepare import convert as prepare
from jaxclr.data.text import tokenizer
from jaxclr.trainer import validate
from tests.helpers import COLOURS, encode, eval_records, solid, write

CAPTIONS = {'a': ['a red-ish one', 'a second a', 'third of a'], 'b': ['only b'],
            'c': ['c one', 'c two'], 'd': ['d'], 'e': ['e'], 'f': ['f one', 'f two', 'f three']}


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
    """A caption dataset 'multi' (6 solid-colour images, 1 to 3 captions each) at 8x8, PNG."""
    root = tmp_path_factory.mktemp('multi')
    lines = []
    for name, texts in CAPTIONS.items():
        write(root / 'src' / f'{name}.png', encode(solid(COLOURS[name], 10, 20)))
        lines.append(json.dumps({'image': f'{name}.png', 'caption': texts}))
    (root / 'src' / 'm.jsonl').write_text('\n'.join(lines))
    opts = prepare.Options(name='multi', data_dir=str(root / 'data'), image_size=8, image_format='png',
                           shard_size=4, progress=False)
    prepare.prepare('manifest', str(root / 'src' / 'm.jsonl'), opts)
    return str(root / 'data')


def config_for(data_dir, name='multi', **data):
    config = configlib.load('configs/clip.py:tiny')
    config.data.update(name=name, data_dir=data_dir, image_size=8, **data)
    config.train.batch_size = 8
    return config


def keys_of(config) -> list:
    source = datasets.data_source(config.data, 'train')
    return [source[i]['key'].decode().removesuffix('.png') for i in range(len(source))]


def test_train_batches_read_a_prepared_dataset_by_name(prepared):
    config = config_for(prepared)
    order, keys = pipeline.train_order(config), keys_of(config)
    batches = pipeline.train_batches(config, 8)
    for step in range(2):   # 16 positions over 6 records: every record, some twice
        batch = next(batches)
        assert batch['image'].shape == (8, 8, 8, 3) and batch['text'].shape == (8, config.data.max_len)
        for row in range(8):
            key = keys[order.record_key(step * 8 + row)]
            np.testing.assert_array_equal(batch['image'][row], solid(COLOURS[key], 8, 8))
            assert any(np.array_equal(batch['text'][row], tokenizer.ByteTokenizer().encode(c, config.data.max_len))
                       for c in CAPTIONS[key]), (key, row)


def test_one_caption_per_position_deterministic_and_covering(prepared):
    config = config_for(prepared)
    keys, max_len = keys_of(config), config.data.max_len
    byte = tokenizer.ByteTokenizer()
    decode = {pipeline.tokenize(c, max_len, byte).tobytes(): c for texts in CAPTIONS.values() for c in texts}
    first, again = pipeline.train_order(config), pipeline.train_order(config)
    chosen = {key: [] for key in CAPTIONS}
    for p in range(120):   # 20 epochs: each record at 20 positions
        text = first(p)['text']
        np.testing.assert_array_equal(text, again(p)['text'])   # a function of the position only
        chosen[keys[first.record_key(p)]].append(decode[text.tobytes()])
    for key, texts in CAPTIONS.items():
        assert len(chosen[key]) == 20 and set(chosen[key]) == set(texts), (key, chosen[key])


def test_evals_read_every_caption_of_an_image(prepared):
    config = config_for(prepared, eval_split='train')
    ev = eval_records(config)
    assert sorted(ev['captions']) == sorted(tuple(texts) for texts in CAPTIONS.values())


# ------------------------------------------------------------------ feature names from the config

@pytest.fixture(scope='module')
def renamed(tmp_path_factory):
    """A dataset 'renamed' with features photo (Image), alt (Text), category (ClassLabel) and note (Text)."""
    data_dir = tmp_path_factory.mktemp('renamed')
    version_dir = data_dir / 'renamed' / '1.0.0'
    version_dir.mkdir(parents=True)
    features = tfds.features.FeaturesDict({
        'photo': tfds.features.Image(shape=(8, 8, 3), encoding_format='png'), 'alt': tfds.features.Text(),
        'category': tfds.features.ClassLabel(names=['apple', 'pear']), 'note': tfds.features.Text()})
    writer = array_record_module.ArrayRecordWriter(
        str(version_dir / 'renamed-test.array_record-00000-of-00001'), 'group_size:1')
    for i, name in enumerate('abcd'):
        writer.write(features.serialize_example({'photo': encode(solid(COLOURS[name], 8, 8)), 'alt': f'alt {name}',
                                                 'category': i % 2, 'note': ''}))
    writer.close()
    tfds.folder_dataset.write_metadata(data_dir=version_dir, features=features, check_data=False,
                                       split_infos=[tfds.core.SplitInfo('test', [4], num_bytes=1)])
    return str(data_dir)


FEATURES = "'alt', 'category', 'note', 'photo'"


def feature_problems(config):
    """validate's problems with data.image_feature / caption_feature / label_feature."""
    return [p for p in validate.problems(config, 8) if p.split(':')[0].endswith('_feature')]


def test_feature_names_select_image_caption_and_label(renamed):
    config = config_for(renamed, name='renamed', eval_split='test')
    assert feature_problems(config) == [   # the defaults: image, caption, label
        f"data.image_feature: 'image' is not a feature of renamed (features: {FEATURES}); set it to the name of "
        "its image feature",
        "data.caption_feature: 'caption' is not a feature of renamed and it has no ClassLabel data.label_feature "
        f"to caption from (features: {FEATURES}); set it to the name of its caption feature"]
    config.data.update(image_feature='photo', caption_feature='alt', label_feature='category')
    config.data.train_split = 'test'
    assert feature_problems(config) == []
    ev = eval_records(config)
    assert ev['caption'] == ['alt a', 'alt b', 'alt c', 'alt d']
    assert list(ev['labels']) == ['category'] and ev['labels']['category'].tolist() == [0, 1, 0, 1]
    assert datasets.zero_shot_tasks(config.data) == {'category': ['apple', 'pear']}
    np.testing.assert_array_equal(ev['image'][1], solid(COLOURS['b'], 8, 8))

    config.data.caption_feature = 'no_such_feature'   # no caption: prompts from the ClassLabel
    assert feature_problems(config) == []
    assert eval_records(config)['caption'] == ['a photo of a apple.', 'a photo of a pear.'] * 2

    config.data.update(caption_feature='alt', label_feature='alt')
    assert feature_problems(config) == [
        "data.label_feature: 'alt' of renamed is not a ClassLabel; set it to a ClassLabel feature (features: "
        f"{FEATURES}), or to a name it lacks for no zero-shot task"]
    config.data.label_feature = 'none'   # no zero-shot task; captions from 'alt'
    assert datasets.zero_shot_tasks(config.data) == {}
    assert eval_records(config)['labels'] == {}
    config.data.caption_feature = 'note'   # every caption empty and no class names: every record skipped
    with pytest.raises(RuntimeError, match='No readable eval examples'):
        eval_records(config)
    config.data.caption_feature = 'missing'
    assert feature_problems(config) == [
        f"data.caption_feature: 'missing' is not a feature of renamed and it has no ClassLabel "
        f"data.label_feature to caption from (features: {FEATURES}); set it to the "
        "name of its caption feature"]


def test_tfrecord_dataset_is_an_error_saying_how_to_reprepare(tmp_path):
    version_dir = tmp_path / 'old_caps' / '1.0.0'
    version_dir.mkdir(parents=True)
    (version_dir / 'old_caps-train.tfrecord-00000-of-00001').write_bytes(b'')
    features = prepare.make_features(8, 'png')
    tfds.folder_dataset.write_metadata(data_dir=version_dir, features=features, check_data=False,
                                       split_infos=[tfds.core.SplitInfo('train', [1], num_bytes=1)])
    config = config_for(str(tmp_path), name='old_caps')
    with pytest.raises(ValueError, match=r"stored as \['tfrecord'\].*python -m jaxclr.data.prepare --name=old_caps"):
        datasets.ensure_prepared(config.data)
    (problem,) = [p for p in validate.problems(config, 8) if p.startswith('data.name')]   # checked up front too
    assert problem.startswith("data.name: TFDS dataset 'old_caps'") and 'array_record' in problem
