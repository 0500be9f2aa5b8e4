"""Input pipeline: the run's global training order read through grain (eval splits: eval_stream.py).

Records are first standardised to {'image': uint8 [S, S, 3], 'caption': str, 'captions':
(str, ...)} from the features named by data.image_feature / caption_feature (images resized
by resize.py; eval images as data.eval_resize says). A record
that cannot be read or decoded, has an empty caption or an image that is not an image
is skipped and counted, never a crash. Counts live where the records are read, never in
module globals: a `SafeSource` counts into its `ReadStats`, and every training example
carries how many bad records were passed over to reach it and whether its caption was cut,
so the `TrainBatches` iterator totals what training consumed even when data.worker_count > 0
reads the records in other processes.
"""
from __future__ import annotations

import collections
import logging
import os
import threading

import grain.python as grain
import numpy as np
from absl import flags

from jaxclr.data import augment, datasets, resize, text
from jaxclr.data.text import tokenizer

log = logging.getLogger(__name__)
# Per-example fields a training example carries until TrainBatches totals and drops them.
SKIPPED_FIELD, TRUNCATED_FIELD = 'read/bad_skipped', 'read/truncated'


class ReadStats:
    """What one reader saw: records looked at, records skipped as bad (by reason) and captions
    cut to fit data.max_len. Thread-safe (grain and the eval split read from several threads)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.seen = 0
        self.truncated_captions = 0
        self.bad = collections.Counter()   # reason -> count

    def __getstate__(self) -> dict:   # grain pickles the source into its worker processes
        return {k: v for k, v in self.__dict__.items() if k != '_lock'}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    @property
    def skipped(self) -> int:
        return sum(self.bad.values())

    def as_dict(self) -> dict:
        """{'skipped': n, 'seen': m, 'truncated_captions': t, <skip reason>: count, ...}."""
        return {'skipped': self.skipped, 'seen': self.seen, 'truncated_captions': self.truncated_captions,
                **self.bad}

    def saw_record(self) -> None:
        with self._lock:
            self.seen += 1

    def bad_record(self, index, error: Exception) -> None:
        """Counts a skipped record (logging the 1st, 2nd, 4th, ... one); a dataset with at least
        1,000 bad records, more than half of those seen, is broken (RuntimeError)."""
        reason = error.reason if isinstance(error, BadRecord) else f'undecodable ({type(error).__name__})'
        with self._lock:
            self.bad[reason] += 1
            n, seen = self.skipped, self.seen
        if n & (n - 1) == 0:
            log.warning('Skipped bad record %s (%s: %s); %d skipped of %d seen so far.',
                        index, type(error).__name__, str(error)[:200], n, seen)
        if n >= 1000 and n > seen // 2:
            raise RuntimeError(f'{n} of {seen} records are bad ({dict(self.bad)}): the dataset is broken.')

    def truncated_caption(self, caption: str, max_len: int) -> None:
        with self._lock:
            self.truncated_captions += 1
            first = self.truncated_captions == 1
        if first:
            log.warning('Caption longer than data.max_len - 2 = %d tokens is truncated: %r. '
                        'Consider a larger data.max_len.', max_len - 2, caption)


def tokenize_checked(caption: str, max_len: int, tok: tokenizer.Tokenizer,
                     stats: ReadStats | None = None) -> tuple[np.ndarray, bool]:
    """(tok.encode ids, whether they were cut to fit max_len); a cut caption is counted in `stats` (if given)."""
    ids, truncated = tok.encode_checked(caption, max_len)
    if truncated and stats is not None:
        stats.truncated_caption(caption, max_len)
    return ids, truncated


def tokenize(caption: str, max_len: int, tok: tokenizer.Tokenizer, stats: ReadStats | None = None) -> np.ndarray:
    """The ids of `tokenize_checked`."""
    return tokenize_checked(caption, max_len, tok, stats)[0]


class BadRecord(ValueError):
    """A record that cannot be used; `reason` is its category in `ReadStats.bad`."""

    def __init__(self, reason: str, detail: str = ''):
        super().__init__(f'{reason}: {detail}' if detail else reason)
        self.reason = reason


def _to_rgb(image: np.ndarray, size: int, mode: str = resize.DEFAULT) -> np.ndarray:
    """uint8 [size, size, 3] from an [H, W], [H, W, 1|3|4] uint8 image (resized as `mode` says: resize.py)."""
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or image.dtype != np.uint8:
        raise BadRecord('bad image', f'{image.dtype} {image.shape}')
    image = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image[:, :, :3]
    return resize.resize_image(image, size, mode)


def _captions(value) -> tuple:
    """The non-blank captions of a caption feature's value, in order: a Text (str/bytes), a
    Sequence of Text, or a Sequence of records whose 'text' field is Text (TFDS coco_captions:
    ``Sequence({'id': int64, 'text': Text})``, decoded as a dict of lists, or a list of dicts)."""
    if value is None:
        return ()
    if isinstance(value, dict):
        value = value.get('text', ())
    values = [value] if isinstance(value, (str, bytes)) else list(value)
    values = [v.get('text') if isinstance(v, dict) else v for v in values]
    texts = (v.decode('utf-8') if isinstance(v, bytes) else v for v in values)
    return tuple(t for t in texts if isinstance(t, str) and t.strip())


class Standardize:
    """Decoded TFDS example -> {'image', 'caption', 'captions'[, 'labels']}; raises BadRecord if unusable.

    Features are read by name (data.image_feature / caption_feature / label_feature). The
    caption feature is a Text, a Sequence of Text or a Sequence of records with a Text 'text'
    (`_captions`): 'captions' holds its non-blank captions (training draws one, see
    TrainTransform) and 'caption' the first. A dataset without the caption feature uses 'text',
    else a prompt from its ClassLabel ("a photo of a <name>."). Images are resized to
    image_size as `resize_mode` says (resize.py: training always uses the default).
    """

    def __init__(self, image_size: int, class_names=None, label_fn=None, image_feature: str = 'image',
                 caption_feature: str = 'caption', label_feature: str = 'label', with_captions: bool = True,
                 resize_mode: str = resize.DEFAULT):
        self.image_size = image_size
        self.resize_mode = resize_mode
        self.class_names = class_names
        self.label_fn = label_fn
        self.image_feature, self.caption_feature, self.label_feature = image_feature, caption_feature, label_feature
        self.with_captions = with_captions   # False (zero-shot-only splits): no caption read or required

    def __call__(self, example: dict) -> dict:
        captions = ()
        if self.with_captions:
            captions = _captions(example.get(self.caption_feature, example.get('text')))
            if not captions and self.class_names is not None and self.label_feature in example:
                captions = (f'a photo of a {self.class_names[int(example[self.label_feature])]}.',)
            if not captions:
                raise BadRecord('empty caption')
        if self.image_feature not in example:
            raise BadRecord('no image', f'no feature {self.image_feature!r} (data.image_feature)')
        out = {'image': _to_rgb(np.asarray(example[self.image_feature]), self.image_size, self.resize_mode),
               'caption': captions[0] if captions else '', 'captions': captions}
        if self.label_fn is not None:
            out['labels'] = self.label_fn(example)
        return out


class SafeSource:
    """Random-access source of standardised records; a bad record reads as None (counted in `stats`)."""

    def __init__(self, source, standardize: Standardize, stats: ReadStats | None = None):
        self._source = source
        self._standardize = standardize
        self.stats = ReadStats() if stats is None else stats

    def __len__(self) -> int:
        return len(self._source)

    def __repr__(self) -> str:
        # Grain checks repr(data_source) when restoring an iterator: name the dataset, config,
        # version, split and image size, but not the (machine-dependent) data dir.
        info = getattr(self._source, 'dataset_info', None)
        name = info.full_name if info is not None else type(self._source).__name__
        split = getattr(self._source, 'split', '?')
        return f'SafeSource({name}, split={split}, image_size={self._standardize.image_size})'

    def __getitem__(self, index):
        return self._standardized(index, lambda: self._source[index])

    def read_many(self, indices) -> list:
        """`[self[i] for i in indices]`, read in one call of the source's `__getitems__` where it has
        one: TFDS's ArrayRecord sources then read all the records in one pass (measured on this
        machine: ~10 us a record, against ~300 us for a record read alone). A read that fails as a
        whole is redone record by record, so each bad record is still skipped and counted alone."""
        indices = [int(i) for i in indices]
        read_all = getattr(self._source, '__getitems__', None)
        try:
            records = read_all(indices) if read_all is not None else None
        except Exception:  # noqa: BLE001 - a bad record among them: read one at a time
            records = None
        if records is None:
            return [self[i] for i in indices]
        return [self._standardized(i, lambda r=r: r) for i, r in zip(indices, records, strict=True)]

    def _standardized(self, index, read):
        """The standardised record `read()` gives, counted as seen; None (counted as skipped) when
        reading or standardising it fails: any undecodable record is skipped, not fatal."""
        self.stats.saw_record()
        try:
            return self._standardize(read())
        except Exception as e:  # noqa: BLE001
            self.stats.bad_record(index, e)
            return None


class TrainTransform(grain.RandomMapTransform):
    """One caption drawn from the example's captions (if several), random flip (image +
    caption) if enabled, then tokenise with `tok`; image stays uint8. All draws come from `rng`.
    The example carries whether its caption was cut (TRUNCATED_FIELD)."""

    def __init__(self, flip: bool, max_len: int, tok: tokenizer.Tokenizer):
        self.flip = flip
        self.max_len = max_len
        self.tokenizer = tok
        self.stats = ReadStats()   # for the one warning about cut captions, per reading process

    def random_map(self, element, rng: np.random.Generator):
        image, caption = element['image'], element['caption']
        captions = element.get('captions', ())
        if len(captions) > 1:   # one of several captions (e.g. COCO's 5), drawn per position
            caption = captions[int(rng.integers(len(captions)))]
        if self.flip:
            image, caption = augment.random_flip(image, caption, rng)
        ids, truncated = tokenize_checked(caption, self.max_len, self.tokenizer, self.stats)
        return {'image': np.ascontiguousarray(image, np.uint8), 'text': ids, TRUNCATED_FIELD: np.int32(truncated)}


def standardizer(data_cfg, with_labels: bool, with_captions: bool = True, eval_images: bool = False) -> Standardize:
    """The Standardize of `config.data` (feature names, class-name captions, task labels).

    eval_images: the records are evaluation images (eval split, zero-shot and retrieval
    datasets, the linear probe's fit set), resized as data.eval_resize says; else training's.
    """
    tasks = datasets.zero_shot_tasks(data_cfg)
    names = datasets.feature_names(data_cfg)
    class_names = tasks.get(names['label']) if data_cfg.name not in datasets.EMBEDDED else None
    label_fn = datasets.task_labels_fn(data_cfg) if with_labels else None
    mode = str(data_cfg.eval_resize) if eval_images else resize.DEFAULT
    return Standardize(data_cfg.image_size, class_names, label_fn, image_feature=names['image'],
                       caption_feature=names['caption'], label_feature=names['label'], with_captions=with_captions,
                       resize_mode=mode)


class GlobalOrder:
    """The training examples of a run in order, as a function of the global position only.

    Position p = 0, 1, 2, ... is the p-th example the run trains on: the global batch of
    step t (1-based) is positions [(t - 1) B, t B), and row r of its arrays is position
    (t - 1) B + r. So the data of a step does not depend on how many processes read it
    (each reads the rows its devices hold, `parallel.process_rows`), and a run resumes at
    step t by starting at position t B: no iterator state is checkpointed.

    - record: epoch p // N is a permutation of the N records (grain's index shuffle: O(1)
      memory, a new permutation every epoch, from data seed `seed`);
    - a bad record (unreadable, empty caption, not an image) is replaced by the next good
      record in key order (key + 1, key + 2, ... mod N), the same choice on every process;
    - augmentation draws from a generator seeded by (seed, p).
    """

    def __init__(self, source: 'SafeSource', transform: 'TrainTransform', seed: int):
        self.source, self.transform, self.seed = source, transform, int(seed)
        self.num_records = len(source)
        if not self.num_records:
            raise ValueError('the train split has no records')
        self._keys = grain.MapDataset.range(self.num_records).shuffle(seed=self.seed).repeat()

    def record_key(self, position: int) -> int:
        """Record index at global position `position` (before bad-record replacement)."""
        return int(self._keys[int(position)])

    def __call__(self, position: int) -> dict:
        """The transformed example at global position `position`; it carries the number of bad
        records passed over to reach it (SKIPPED_FIELD)."""
        return self.examples([position])[0]

    def examples(self, positions) -> list[dict]:
        """`[self(p) for p in positions]`, with the first try of every position read in one call
        (`SafeSource.read_many`); only a bad record's replacements are read one by one."""
        keys = [self.record_key(p) for p in positions]
        records = self.source.read_many(keys)
        out = []
        for position, key, record in zip(positions, keys, records):
            j = 0
            while record is None:
                j += 1
                if j == self.num_records:
                    raise RuntimeError(f'no readable record in the train split ({self.num_records} tried)')
                record = self.source[(key + j) % self.num_records]
            rng = np.random.Generator(np.random.Philox(key=[self.seed, int(position)]))
            out.append({**self.transform.random_map(record, rng), SKIPPED_FIELD: np.int32(j)})
        return out

    def batch(self, positions) -> dict:
        """The examples at `positions`, stacked: {'image': [n, S, S, 3], 'text': [n, L], and the
        per-example counts SKIPPED_FIELD and TRUNCATED_FIELD: [n]}."""
        examples = self.examples(positions)
        return {k: np.stack([x[k] for x in examples]) for k in examples[0]}


class _LocalBatch:
    """Step index t (0-based: the batch of step t + 1) -> this process's rows of it, the examples
    at global positions t B + rows."""

    def __init__(self, order: GlobalOrder, rows: np.ndarray, global_batch_size: int):
        self.order, self.rows, self.global_batch_size = order, rows, global_batch_size

    def __call__(self, step: int) -> dict:
        return self.order.batch(int(step) * self.global_batch_size + self.rows)


def train_order(config) -> GlobalOrder:
    """GlobalOrder of the train split of `config.data` with the train augmentation.

    data.flip applies a random horizontal flip (with 'left'/'right' swapped in the caption)
    on datasets whose captions are flip-aware (``datasets.flip_safe``: jaxclr_shapes only);
    on any other dataset it is skipped, with one log line.
    """
    data_cfg = config.data
    source = SafeSource(datasets.data_source(data_cfg, data_cfg.train_split),
                        standardizer(data_cfg, with_labels=False))
    flip = bool(data_cfg.flip)
    if flip and not datasets.flip_safe(data_cfg):
        log.warning('data.flip skipped: the captions of %s are not flip-aware (only jaxclr_shapes is).',
                    data_cfg.name)
        flip = False
    transform = TrainTransform(flip, int(data_cfg.max_len), text.from_config(data_cfg))
    return GlobalOrder(source, transform, int(config.seed))


class TrainBatches:
    """Iterator over a process's training batches {'image', 'text'}; `stats` totals what the
    batches it returned carried (records seen and skipped, captions cut), wherever they were read."""

    def __init__(self, batches, order: GlobalOrder):
        self._batches, self.order = batches, order
        self.stats = {'seen': 0, 'skipped': 0, 'truncated_captions': 0}

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        batch = dict(next(self._batches))
        skipped, truncated = int(np.sum(batch.pop(SKIPPED_FIELD))), int(np.sum(batch.pop(TRUNCATED_FIELD)))
        self.stats['seen'] += len(batch['image']) + skipped
        self.stats['skipped'] += skipped
        self.stats['truncated_captions'] += truncated
        return batch


def train_batches(config, global_batch_size: int, rows=None, start_step: int = 0) -> TrainBatches:
    """Iterator over this process's rows of the global batches from step `start_step + 1` on.

    rows: the sorted global batch rows this process reads (`parallel.process_rows`); None
    reads all of them (one process). Yields {'image': uint8 [len(rows), S, S, 3], 'text':
    int32 [len(rows), max_len]} with row i of the arrays = global row rows[i] (see
    GlobalOrder). Reading runs data.prefetch batches ahead, in data.worker_count processes (0:
    threads of this process). The iterator's `stats` count what its batches consumed.
    """
    data_cfg = config.data
    rows = np.arange(global_batch_size) if rows is None else np.asarray(rows, np.int64)
    if rows.ndim != 1 or not len(rows) or np.any(np.diff(rows) <= 0) or rows[0] < 0 \
            or rows[-1] >= global_batch_size:
        raise ValueError(f'rows must be increasing global batch rows in [0, {global_batch_size}), got {rows}')
    order = train_order(config)
    # One element a batch: its records are read in one call (GlobalOrder.batch).
    steps = grain.MapDataset.range(int(start_step), 2**62).map(_LocalBatch(order, rows, global_batch_size))
    if data_cfg.worker_count and not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()   # grain's worker processes read absl flags (defaults)
    # Decoding is Python (GIL-bound): grain's default of 16 reader threads per process only adds
    # contention (measured on 2 cores: 1,050 ex/s with 16 threads, 2,030 with 2); scale with
    # data.worker_count processes instead.
    # data.prefetch batches are read ahead: by threads of this process (0 = read on demand, in
    # next()), and with workers also by each worker process.
    prefetch = int(data_cfg.prefetch)
    read = grain.ReadOptions(num_threads=min(4, os.cpu_count() or 1) if prefetch else 0,
                             prefetch_buffer_size=prefetch)
    batches = steps.to_iter_dataset(read)
    if data_cfg.worker_count:
        batches = batches.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=int(data_cfg.worker_count), per_worker_buffer_size=max(1, prefetch)))
    return TrainBatches(iter(batches), order)
