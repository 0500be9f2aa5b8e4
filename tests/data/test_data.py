"""Tests of jaxclr.data: builders, tokenizer, flip augmentation, grain pipeline, streamed eval split."""
import os
import pickle
import re

import ml_collections
import numpy as np
import pytest

from jaxclr.data import augment, datasets, digits, eval_stream, pipeline, shapes
from jaxclr.data.text import tokenizer
from tests.helpers import DESC, all_examples, check_caption, make_config

# --------------------------------------------------------------------------- tokenizer

def test_tokenizer_round_trip_and_eos():
    for text in ['a red circle', '', 'ünïcødé ☃ text']:
        ids = tokenizer.encode(text, 64)
        assert ids.dtype == np.int32 and ids.shape == (64,)
        n = len(text.encode('utf-8'))
        assert ids[0] == tokenizer.BOS and ids[n + 1] == tokenizer.EOS
        assert np.all(ids[n + 2:] == tokenizer.PAD) and np.sum(ids == tokenizer.EOS) == 1
        np.testing.assert_array_equal(ids[1:n + 1], np.frombuffer(text.encode(), np.uint8) + 3)
        assert tokenizer.decode(ids) == text
    long = 'x' * 100
    ids = tokenizer.encode(long, 16)
    assert ids[-1] == tokenizer.EOS and np.sum(ids == tokenizer.EOS) == 1 and tokenizer.decode(ids) == 'x' * 14
    batch = tokenizer.encode_batch(['ab', long], 8)
    assert batch.shape == (2, 8) and batch.dtype == np.int32
    np.testing.assert_array_equal(batch[0], [1, 97 + 3, 98 + 3, 2, 0, 0, 0, 0])
    assert tokenizer.VOCAB_SIZE == 259 and int(tokenizer.encode('\xff', 4).max()) < 259
    with pytest.raises(ValueError):
        tokenizer.encode('a', 1)


# --------------------------------------------------------------------------- flip

def test_flip_caption_swaps_whole_words_keeping_case():
    assert augment.flip_caption('a red circle to the left of a blue ring') == \
        'a red circle to the right of a blue ring'
    assert augment.flip_caption('Left, RIGHT and right-hand') == 'Right, LEFT and left-hand'
    assert augment.flip_caption('a bright leftover copyright on the right') == \
        'a bright leftover copyright on the left'
    assert augment.flip_caption(augment.flip_caption('upper left; lower right')) == 'upper left; lower right'


def test_only_flip_aware_datasets_flip():
    named = lambda name: ml_collections.ConfigDict({'name': name})
    assert datasets.flip_safe(named('jaxclr_shapes'))
    assert not datasets.flip_safe(named('jaxclr_digits'))
    assert not datasets.flip_safe(named('coco_captions'))   # any dataset read by name


def test_random_flip_mirrors_image_and_caption_together():
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    rng = np.random.default_rng(0)
    flips = 0
    for _ in range(200):
        out, caption = augment.random_flip(image, 'on the left', rng)
        if caption == 'on the right':
            flips += 1
            np.testing.assert_array_equal(out, image[:, ::-1])
        else:
            assert caption == 'on the left' and np.array_equal(out, image)
    assert 70 < flips < 130   # probability 1/2 (binomial(200, .5) is within this range w.p. > 0.9999)


# --------------------------------------------------------------------------- shapes builder


def test_shapes_builder_deterministic_and_seed_dependent(data_dir):
    a = all_examples(make_config(os.path.join(data_dir, 'det_a')), 'train')
    b = all_examples(make_config(os.path.join(data_dir, 'det_b')), 'train')
    c = all_examples(make_config(os.path.join(data_dir, 'det_a'), build_seed=1), 'train')
    assert len(a) == len(b) == len(c) == 64
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    assert sum(x['caption'] != z['caption'] for x, z in zip(a, c)) > 32
    # Examples depend on (seed, split, index) only: regenerate one directly.
    ref = shapes.make_example(np.random.default_rng([0, 0, 5]), 32)
    match = [x for x in a if x['caption'].decode() == ref['caption']]
    assert any(np.array_equal(x['image'], ref['image']) for x in match)


def test_shapes_examples_and_captions_are_true(data_dir):
    cfg = make_config(data_dir)
    examples = all_examples(cfg, 'train') + all_examples(cfg, 'validation') + all_examples(cfg, 'test')
    assert len(examples) == 64 + 6 + 32
    counts = np.bincount([int(x['num_objects']) for x in examples], minlength=3)
    assert counts[0] == 0 and counts[1] > 20 and counts[2] > 20
    for x in examples:
        image, caption, n = x['image'], x['caption'].decode(), int(x['num_objects'])
        assert image.dtype == np.uint8 and image.shape == (32, 32, 3)
        assert np.all(x['colors'][n:] == -1) and np.all(x['shapes'][n:] == -1)
        for k in range(n):
            assert shapes.SHAPES[x['shapes'][k]] in caption
        check_caption(image, caption, x)
        # The flip augmentation keeps the caption true.
        check_caption(image[:, ::-1], augment.flip_caption(caption), x)
    # Sizes and colours are sometimes left out, so colour + position alone do not identify a caption.
    described = [m.groups() for x in examples for m in DESC.finditer(x['caption'].decode())]
    assert 0.15 < np.mean([d[1] is None for d in described]) < 0.5
    assert 0.15 < np.mean([d[0] is None for d in described]) < 0.5


def test_longest_caption_is_max_caption_bytes():
    desc = 'a medium purple triangle'   # a longest description
    lengths = [len(t.format(a=desc, pos=p)) for t in shapes._SINGLE for row in shapes._POSITIONS
               for cell in row for p in cell]
    lengths += [len(t.format(a=desc, b=desc)) for t in shapes._LEFT_RIGHT + shapes._ABOVE_BELOW]
    assert max(lengths) == shapes.MAX_CAPTION_BYTES
    assert max(len(f'a {s} {c} {h}') for s in shapes.SIZES for c in shapes.COLORS for h in shapes.SHAPES) == 24


def test_shape_masks_are_mirror_symmetric():
    for s in range(len(shapes.SHAPES)):
        mask = shapes.shape_mask(s, 20.0, 32.0, 10.0, 64)   # centred on the vertical axis x = 32
        assert 40 < mask.sum() < 500 and np.array_equal(mask, mask[:, ::-1]), shapes.SHAPES[s]


# --------------------------------------------------------------------------- digits builder

def test_digits_builder(data_dir):
    cfg = make_config(data_dir, name='jaxclr_digits')
    train, test = all_examples(cfg, 'train'), all_examples(cfg, 'test')
    assert (len(train), len(test)) == (1294, 359)
    assert datasets.zero_shot_tasks(cfg.data) == {'digit': digits.DIGIT_NAMES}
    for x in test[:50]:
        label, caption = int(x['label']), x['caption'].decode()
        assert re.search(rf'\b({digits.DIGIT_NAMES[label]}|{label})\b', caption), caption
        assert x['image'].shape == (32, 32, 3) and np.array_equal(x['image'][..., 0], x['image'][..., 2])
    # data.flip is ignored for digits (a mirrored digit is not that digit).
    batch = next(pipeline.train_batches(cfg, 64))
    originals = {x['image'].tobytes() for x in train}
    assert all(img.tobytes() in originals for img in batch['image'])
    m = digits.bilinear_matrix(8, 32)
    np.testing.assert_allclose(m.sum(1), 1.0)
    np.testing.assert_array_equal(digits.upsample(np.full((8, 8), 16), 32), 255)


# --------------------------------------------------------------------------- datasets

def test_missing_or_unknown_dataset_errors(tmp_path):
    cfg = make_config(tmp_path, name='mnist')
    with pytest.raises(FileNotFoundError, match='not prepared') as err:
        datasets.data_source(cfg.data, 'test')
    assert str(tmp_path) in str(err.value) and 'array_record' in str(err.value)
    assert not any(tmp_path.iterdir()), 'nothing may be downloaded or written'
    cfg = make_config(tmp_path, name='no_such_dataset_xyz')
    with pytest.raises(ValueError, match='jaxclr_shapes'):
        datasets.ensure_prepared(cfg.data)


def test_default_builders_pickle(tmp_path):
    # grain worker processes unpickle the data source, hence the builder and its config.
    for name in datasets.EMBEDDED:
        data_cfg = make_config(tmp_path, name=name, image_size=64, num_train=50000, num_test=2000).data
        builder = datasets.get_builder(data_cfg)
        assert builder.builder_config is type(builder).BUILDER_CONFIGS[0]
        clone = pickle.loads(pickle.dumps(builder))
        assert clone.builder_config is builder.builder_config and not clone.is_prepared()


def test_data_dir_resolution(monkeypatch, tmp_path):
    cfg = make_config('')
    monkeypatch.setenv(datasets.DATA_DIR_ENV, 'rel/dir')
    assert datasets.resolve_data_dir(cfg.data) == os.path.abspath('rel/dir')
    monkeypatch.delenv(datasets.DATA_DIR_ENV)
    assert datasets.resolve_data_dir(cfg.data) == os.path.expanduser(datasets.DEFAULT_DATA_DIR)


# --------------------------------------------------------------------------- eval split

def read_eval_split(cfg, batch_size=7):
    """The eval split streamed in batches of `batch_size`, joined: (batch sizes, images, captions, labels)."""
    got = list(eval_stream.eval_split(cfg).batches(batch_size))
    return ([len(b['image']) for b in got], np.concatenate([b['image'] for b in got]),
            [c for b in got for c in b['captions']],
            {t: np.concatenate([b['labels'][t] for b in got]) for t in got[0]['labels']})


def test_eval_split_streams_fields_and_labels(data_dir):
    cfg = make_config(data_dir, eval_examples=20)
    sizes, images, captions, labels = read_eval_split(cfg)
    assert sizes == [7, 7, 6]
    assert images.shape == (20, 32, 32, 3) and images.dtype == np.uint8
    assert all(len(c) == 1 for c in captions)   # shapes: one Text caption per image
    assert set(labels) == {'color', 'shape'} == set(datasets.zero_shot_tasks(cfg.data))
    src = datasets.data_source(cfg.data, 'test')
    for i in range(20):
        x = src[i]
        single = int(x['num_objects']) == 1
        np.testing.assert_array_equal(images[i], x['image'])
        assert captions[i] == (x['caption'].decode(),)
        assert labels['color'][i] == (x['colors'][0] if single else -1)
        assert labels['shape'][i] == (x['shapes'][0] if single else -1)
        if single:
            assert shapes.SHAPES[labels['shape'][i]] in captions[i][0]
    assert np.sum(labels['color'] >= 0) > 3
    assert read_eval_split(make_config(data_dir), 16)[0] == [16, 16]   # capped by the split (32)


def test_long_captions_are_truncated_and_counted(data_dir):
    stats = pipeline.ReadStats()
    captions = [c for (c,) in read_eval_split(make_config(data_dir))[2]]
    text = np.stack([pipeline.tokenize(c, 24, tokenizer.ByteTokenizer(), stats) for c in captions])
    long = [c for c in captions if len(c) > 22]
    assert long and stats.truncated_captions == len(long)
    assert all(tokenizer.decode(t) == c[:22] for t, c in zip(text, captions))
    assert np.all(text[:, -1][[len(c) > 22 for c in captions]] == tokenizer.EOS)


def test_a_first_build_that_loses_the_race_uses_the_winners_copy(tmp_path, monkeypatch):
    """Two jobs building the same embedded dataset at once: the later rename fails with FileExistsError
    (seen with 3 parallel runs); that job must use the finished copy, not crash."""
    cfg = make_config(tmp_path).data
    datasets.ensure_prepared(cfg)   # the winner's build
    looked = []

    def lost_race(self, **kwargs):   # the loser looked before the winner finished, built, and failed to rename
        looked.append(True)
        raise FileExistsError('Cannot rename incomplete.X_1.2.0: destination 1.2.0 already exists')

    monkeypatch.setattr(shapes.JaxclrShapes, 'download_and_prepare', lost_race)
    prepared = shapes.JaxclrShapes.is_prepared
    monkeypatch.setattr(shapes.JaxclrShapes, 'is_prepared', lambda self: bool(looked) and prepared(self))
    builder = datasets.ensure_prepared(cfg)
    assert looked and len(builder.as_data_source('train')) == 64
    monkeypatch.setattr(shapes.JaxclrShapes, 'is_prepared', lambda self: False)   # no copy after all: re-raised
    with pytest.raises(FileExistsError):
        datasets.ensure_prepared(cfg)
