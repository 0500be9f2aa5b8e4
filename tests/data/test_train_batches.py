"""Training batches: the run's global order (jaxclr.data.pipeline.GlobalOrder / train_batches).

The batch of a step is a function of the step alone: the same whatever the split of its
rows over processes, resumable from any step, a new permutation every epoch, bad records
replaced deterministically.
"""
import time

import numpy as np
import pytest

from jaxclr.data import augment, datasets, eval_stream, pipeline
from jaxclr.data.text import tokenizer
from tests.helpers import all_examples, check_caption, make_config


def batches(cfg, global_batch, n, rows=None, start_step=0):
    it = pipeline.train_batches(cfg, global_batch, rows, start_step)
    return [next(it) for _ in range(n)]


def assert_batches_equal(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert set(a) == set(b)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


def test_train_batches(data_dir):
    cfg = make_config(data_dir, flip=False)
    batch = batches(cfg, 16, 1)[0]
    assert set(batch) == {'image', 'text'}
    assert batch['image'].shape == (16, 32, 32, 3) and batch['image'].dtype == np.uint8
    assert batch['text'].shape == (16, 80) and batch['text'].dtype == np.int32
    assert np.all(np.sum(batch['text'] == tokenizer.EOS, axis=1) == 1)
    by_caption = {x['caption'].decode(): x['image'] for x in all_examples(cfg, 'train')}
    for image, text in zip(batch['image'], batch['text']):
        np.testing.assert_array_equal(image, by_caption[tokenizer.decode(text)])
    with pytest.raises(ValueError, match='rows'):
        pipeline.train_batches(cfg, 16, [3, 1])


def test_every_epoch_is_a_new_permutation_of_the_records(data_dir):
    cfg = make_config(data_dir, flip=False)      # 64 records: 4 batches of 16 per epoch
    epochs = [[img.tobytes() for b in chunk for img in b['image']] for chunk in
              (lambda bs: (bs[:4], bs[4:8]))(batches(cfg, 16, 8))]
    everything = sorted(x['image'].tobytes() for x in all_examples(cfg, 'train'))
    assert sorted(epochs[0]) == sorted(epochs[1]) == everything
    assert epochs[0] != epochs[1]
    other_seed = make_config(data_dir, flip=False)
    other_seed.seed = 1
    assert not np.array_equal(batches(other_seed, 16, 1)[0]['text'], batches(cfg, 16, 1)[0]['text'])


@pytest.mark.parametrize('split', [
    ([0, 1, 2, 3, 4, 5, 6, 7], [8, 9, 10, 11, 12, 13, 14, 15]),                 # 2 processes
    ([0, 1, 8, 9], [2, 3, 10, 11], [4, 5, 12, 13], [6, 7, 14, 15]),               # 4, interleaved
])
def test_the_global_batch_does_not_depend_on_how_rows_are_split(data_dir, split):
    # Flip on: augmentation is keyed on the global position too. 6 steps cross an epoch.
    cfg = make_config(data_dir, flip=True)
    whole = batches(cfg, 16, 6)
    parts = [batches(cfg, 16, 6, rows=rows) for rows in split]
    for step, want in enumerate(whole):
        for rows, part in zip(split, parts):
            for k in want:
                np.testing.assert_array_equal(part[step][k], want[k][rows])


def test_start_step_resumes_the_order(data_dir):
    cfg = make_config(data_dir)
    assert_batches_equal(batches(cfg, 16, 2, start_step=5), batches(cfg, 16, 7)[5:])
    assert_batches_equal(batches(cfg, 16, 1, rows=[4, 5, 6], start_step=3),
                         [{k: v[[4, 5, 6]] for k, v in batches(cfg, 16, 4)[3].items()}])


def test_train_batches_flip_keeps_captions_true(data_dir):
    cfg = make_config(data_dir, flip=True)
    examples = all_examples(cfg, 'train')
    flipped = 0
    for batch in batches(cfg, 32, 2):
        for image, text in zip(batch['image'], batch['text']):
            caption = tokenizer.decode(text)
            source = [x for x in examples if np.array_equal(x['image'], image)]
            if not source:   # a flipped example: its image is mirrored and its caption swapped
                flipped += 1
                source = [x for x in examples if np.array_equal(x['image'][:, ::-1], image)]
                assert source[0]['caption'].decode() == augment.flip_caption(caption)
            check_caption(image, caption, source[0])
    assert flipped > 0


def test_worker_process_gives_same_batches_and_counts(data_dir):
    """A worker process reads the same batches, and the counts it carries reach the parent's iterator."""
    cfg = make_config(data_dir, max_len=24)   # most shapes captions are cut at 22 bytes
    inline_it = pipeline.train_batches(cfg, 16)
    inline = [next(inline_it) for _ in range(2)]
    cfg.data.worker_count = 1
    worker_it = pipeline.train_batches(cfg, 16)
    assert_batches_equal([next(worker_it) for _ in range(2)], inline)
    assert worker_it.stats == inline_it.stats   # counted in the worker, totalled here
    assert inline_it.stats["seen"] == 32 and inline_it.stats["truncated_captions"] > 0


def records_read_after_first_batch(cfg, global_batch=8):
    it = pipeline.train_batches(cfg, global_batch)
    read = it.order.source.stats   # the records this process's reader threads looked at
    next(it)
    deadline = time.monotonic() + 10   # reader threads fill the read-ahead buffer in the background
    while time.monotonic() < deadline and cfg.data.prefetch and read.seen <= global_batch:
        time.sleep(0.05)
    time.sleep(0.2)
    return read.seen


def test_prefetch_reads_that_many_batches_ahead(data_dir):
    assert records_read_after_first_batch(make_config(data_dir, prefetch=0)) == 8   # read on demand only
    assert 8 < records_read_after_first_batch(make_config(data_dir, prefetch=2)) <= 8 + 2 * 8 + 8


@pytest.mark.parametrize('batched', [False, True])
def test_bad_records_are_skipped_and_counted(data_dir, monkeypatch, batched):
    """batched: the source reads many records in one call (`__getitems__`, as TFDS's do), which
    fails as a whole when one of them cannot be read: the same batches and counts either way."""
    good = all_examples(make_config(data_dir), 'train')[:12]

    class Broken:   # 12 good records and 4 bad ones
        def __len__(self):
            return 16

        def __getitem__(self, i):
            if i < 12:
                return good[i]
            if i == 12:
                raise OSError('undecodable image bytes')
            if i == 13:
                return dict(good[0], caption=b'  ')
            if i == 14:
                return dict(good[0], image=np.zeros((32, 32, 3), np.float32))
            return dict(good[0], caption=b'\xff\xfe')   # not utf-8

    class BrokenBatched(Broken):
        calls = 0

        def __getitems__(self, indices):
            BrokenBatched.calls += 1
            return [self[i] for i in indices]   # raises at record 12

    monkeypatch.setattr(datasets, 'data_source', lambda data_cfg, split: BrokenBatched() if batched else Broken())
    split = eval_stream.eval_split(make_config(data_dir))
    got = list(split.batches(5))   # the eval split skips them
    assert [len(b['image']) for b in got] == [5, 5, 2] and split.stats.skipped == 4
    stats = split.stats.as_dict()
    assert stats['empty caption'] == 1 and stats['bad image'] == 1
    assert stats['undecodable (OSError)'] == 1 and stats['undecodable (UnicodeDecodeError)'] == 1
    # Training replaces a bad record by the next good one in key order, whatever the process
    # split (its reader threads run ahead, so counts only grow).
    cfg = make_config(data_dir, flip=False)
    order = pipeline.train_order(cfg)
    whole_it = pipeline.train_batches(cfg, 16)
    whole = [next(whole_it) for _ in range(3)]
    halves = [batches(cfg, 16, 3, rows=np.arange(8) + 8 * p) for p in range(2)]
    for step, batch in enumerate(whole):
        for p in range(2):
            np.testing.assert_array_equal(halves[p][step]['image'], batch['image'][8 * p:8 * p + 8])
        for r in range(16):
            key = order.record_key(16 * step + r)
            want = good[0] if key >= 12 else good[key]   # records 12-15 are bad; 15 wraps to 0
            np.testing.assert_array_equal(batch['image'][r], want['image'])
    # Each example counts the bad records passed over to reach it: key k >= 12 skips 16 - k of them.
    keys = [order.record_key(p) for p in range(48)]
    assert whole_it.stats == {"seen": 48 + sum(16 - k for k in keys if k >= 12),
                              "skipped": sum(16 - k for k in keys if k >= 12), "truncated_captions": 0}
    assert (BrokenBatched.calls > 0) == batched
