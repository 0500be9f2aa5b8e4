"""Eval splits read as a stream of batches, so host memory stays bounded by one batch.

A split is anything with ``batches(batch_size)`` yielding dicts

    {'image': uint8 [b, S, S, 3], 'captions': list of b tuples of str (one or more per image;
     empty tuples when the split is read for its labels only), 'labels': {task: int32 [b]}
     (class index, -1 where the task does not apply)}

with b <= batch_size (a batch is short when bad records were skipped, and at the end). Each call
of ``batches`` reads the split again from its first record: nothing is kept between evals.

- ``RecordSplit``: the first ``num_examples`` records of a TFDS split (random-access source),
  decoded by a few threads one batch at a time; bad records are skipped and counted like the
  train pipeline's (``RecordSplit.stats``, a ``pipeline.ReadStats``).
- ``ArraySplit``: in-memory arrays (tests, small hand-made sets).
- ``eval_split(config)``: the RecordSplit of ``config.data.eval_split`` with the dataset's labels,
  its images resized as data.eval_resize says (jaxclr/data/resize.py).

Records are standardised by the train pipeline's ``pipeline.Standardize`` (features named by
data.image_feature / caption_feature / label_feature; the caption a Text, a Sequence of Text, or
a Sequence of records with a Text 'text', as TFDS coco_captions has), so training and evaluation
read a dataset alike.
"""
from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from jaxclr.data import datasets, pipeline


def collate(records: Sequence[Mapping], tasks: Sequence[str]) -> dict:
    """Standardised records -> one batch dict (module docstring)."""
    return {'image': np.stack([r['image'] for r in records]).astype(np.uint8),
            'captions': [tuple(r['captions']) for r in records],
            'labels': {t: np.array([r.get('labels', {}).get(t, -1) for r in records], np.int32) for t in tasks}}


class RecordSplit:
    """The first ``num_examples`` records of a random-access source, read one batch at a time.

    Only one batch of decoded records exists at any time; ``threads`` decode the records of a
    batch in parallel (decoding is Python and partly releases the GIL: PIL, array_record).
    """

    def __init__(self, source, standardize: pipeline.Standardize, num_examples: int, tasks: Sequence[str] = (),
                 threads: int | None = None, name: str = ''):
        self.safe = pipeline.SafeSource(source, standardize)
        self.stats = self.safe.stats   # records seen and skipped (by reason) by this split
        self.num_examples = min(len(source), int(num_examples))
        self.tasks = tuple(tasks)
        self.threads = threads or min(4, os.cpu_count() or 1)
        self.name = name or repr(self.safe)

    def __repr__(self) -> str:
        return f'RecordSplit({self.name}, {self.num_examples} examples)'

    def batches(self, batch_size: int) -> Iterator[dict]:
        if batch_size < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}')
        with concurrent.futures.ThreadPoolExecutor(self.threads) as pool:
            for start in range(0, self.num_examples, batch_size):
                indices = range(start, min(start + batch_size, self.num_examples))
                records = [r for r in pool.map(self.safe.__getitem__, indices) if r is not None]
                if records:
                    yield collate(records, self.tasks)


class ArraySplit:
    """In-memory split: 'image' [N, ...], 'captions' (list of N sequences of str) or 'caption'
    (list of N str), optional 'labels' {task: int [N]}."""

    def __init__(self, arrays: Mapping):
        self.image = np.asarray(arrays['image'])
        captions = arrays.get('captions')
        if captions is None:
            captions = [(c,) for c in arrays.get('caption', [()] * len(self.image))] if 'caption' in arrays \
                else [()] * len(self.image)
        self.captions = [tuple(c) for c in captions]
        self.labels = {t: np.asarray(v, np.int32) for t, v in (arrays.get('labels') or {}).items()}
        if len(self.captions) != len(self.image) or any(len(v) != len(self.image) for v in self.labels.values()):
            raise ValueError('every field of an ArraySplit needs one entry per image')

    def batches(self, batch_size: int) -> Iterator[dict]:
        for start in range(0, len(self.image), batch_size):
            rows = slice(start, start + batch_size)
            yield {'image': self.image[rows], 'captions': self.captions[rows],
                   'labels': {t: v[rows] for t, v in self.labels.items()}}


def eval_split(config) -> RecordSplit:
    """The first data.eval_examples records of data.eval_split, with captions and the labels of
    every zero-shot task of the dataset (``datasets.zero_shot_tasks``)."""
    data_cfg = config.data
    tasks = datasets.zero_shot_tasks(data_cfg)
    standardize = pipeline.standardizer(data_cfg, with_labels=True, eval_images=True)
    source = datasets.data_source(data_cfg, data_cfg.eval_split)
    return RecordSplit(source, standardize, int(data_cfg.eval_examples), tuple(tasks),
                       name=f'{data_cfg.name}:{data_cfg.eval_split}')
