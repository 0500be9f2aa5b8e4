"""Eval splits read as a stream of batches, so host memory stays bounded by one batch.

A split is anything with ``batches(batch_size)`` yielding dicts

    {'image': uint8 [b, S, S, 3], 'captions': list of b tuples of str (one or more per image;
     empty tuples when the split is read for its labels only), 'labels': {task: int32 [b]}
     (class index, -1 where the task does not apply)}

with b <= batch_size (a batch is short when bad records were skipped, and at the end). Each call
of ``batches`` reads the split again from its first record: nothing is kept between evals.

- ``RecordSplit``: the first ``num_examples`` records of a TFDS split (random-access source),
  decoded by a few threads one batch at a time; bad records are skipped and counted like the
  train pipeline's (``pipeline.bad_record_stats``).
- ``ArraySplit``: in-memory arrays (tests, small hand-made sets).
- ``eval_split(config)``: the RecordSplit of ``config.data.eval_split`` with the dataset's labels.

Records are read by the literal feature names 'image', 'caption' (a Text, or a Sequence of Text
for several captions per image; 'text' is accepted too) and 'label' (a ClassLabel).
"""
from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np

from jaxclr.data import datasets, pipeline


def _text(value) -> str:
    return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def read_captions(example: Mapping) -> tuple[str, ...]:
    """The non-empty captions of a decoded example: 'caption' (or 'text') as one string or a
    sequence of strings (a TFDS Sequence(Text) decodes to an array of bytes)."""
    value = example.get('caption', example.get('text'))
    if value is None:
        return ()
    items = [value] if isinstance(value, (str, bytes)) else list(np.asarray(value, dtype=object).reshape(-1))
    return tuple(text for text in (_text(item) for item in items) if text.strip())


class EvalStandardize:
    """Decoded example -> {'image', 'captions', 'labels'}; raises pipeline.BadRecord if unusable.

    with_captions=True: an example without a non-empty caption is bad, unless ``class_names``
    is given and it has a 'label' (then its caption is "a photo of a <name>.", as in training).
    with_captions=False (zero-shot datasets): captions are not read.
    """

    def __init__(self, image_size: int, label_fn: Callable | None = None, with_captions: bool = True,
                 class_names: Sequence[str] | None = None):
        self.image_size = image_size
        self.label_fn = label_fn
        self.with_captions = with_captions
        self.class_names = class_names

    def __call__(self, example: Mapping) -> dict:
        captions = ()
        if self.with_captions:
            captions = read_captions(example)
            if not captions and self.class_names is not None and 'label' in example:
                captions = (f'a photo of a {self.class_names[int(example["label"])]}.',)
            if not captions:
                raise pipeline.BadRecord('empty caption')
        image = pipeline._to_rgb(np.asarray(example['image']), self.image_size)  # noqa: SLF001 - same package
        return {'image': image, 'captions': captions,
                'labels': self.label_fn(example) if self.label_fn is not None else {}}


def collate(records: Sequence[Mapping], tasks: Sequence[str]) -> dict:
    """Standardised records -> one batch dict (module docstring)."""
    return {'image': np.stack([r['image'] for r in records]).astype(np.uint8),
            'captions': [tuple(r['captions']) for r in records],
            'labels': {t: np.array([r['labels'].get(t, -1) for r in records], np.int32) for t in tasks}}


class RecordSplit:
    """The first ``num_examples`` records of a random-access source, read one batch at a time.

    Only one batch of decoded records exists at any time; ``threads`` decode the records of a
    batch in parallel (decoding is Python and partly releases the GIL: PIL, array_record).
    """

    def __init__(self, source, standardize: EvalStandardize, num_examples: int, tasks: Sequence[str] = (),
                 threads: int | None = None, name: str = ''):
        self.safe = pipeline.SafeSource(source, standardize)
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
    class_names = tasks.get('label') if data_cfg.name not in datasets.EMBEDDED else None
    standardize = EvalStandardize(int(data_cfg.image_size), datasets.task_labels_fn(data_cfg), True, class_names)
    source = datasets.data_source(data_cfg, data_cfg.eval_split)
    return RecordSplit(source, standardize, int(data_cfg.eval_examples), tuple(tasks),
                       name=f'{data_cfg.name}:{data_cfg.eval_split}')
