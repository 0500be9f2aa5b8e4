"""Embedding an eval split as it streams: only float32 embeddings, labels and caption ids are kept.

``embed_split`` reads a split (``jaxclr.data.eval_stream``) batch by batch, embeds its images
and captions and keeps, per image, its embedding and labels, and per caption, its embedding,
the row of its image and a group id (identical caption strings share one). Every call of an
embedding function gets exactly ``batch_size`` rows (``zeroshot.embed_in_chunks`` pads), so a
jitted tower compiles once; captions are buffered and embedded ``batch_size`` at a time.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import numpy as np

from jaxclr.evals.zeroshot import embed_in_chunks

EmbedFn = Callable[[np.ndarray], np.ndarray]
Tokenize = Callable[[list], np.ndarray]   # list of N str -> int32 [N, L]


@dataclasses.dataclass(frozen=True)
class EvalEmbeddings:
    """Embeddings of an eval split, float32.

    image [N, D]; labels {task: int32 [N]} (-1 = not applicable); text [M, D] (M captions);
    text_image int32 [M] (the image row of each caption); text_group int32 [M] (captions with
    the same string share an id).
    """
    image: np.ndarray
    text: np.ndarray
    text_image: np.ndarray
    text_group: np.ndarray
    labels: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def image_groups(self) -> np.ndarray:
        """int32 [N, K]: the caption groups of each image (K = most captions of one image), -1 padded."""
        n = self.image.shape[0]
        counts = np.bincount(self.text_image, minlength=n)
        out = np.full((n, max(int(counts.max(initial=0)), 1)), -1, np.int32)
        order = np.argsort(self.text_image, kind='stable')
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        slot = np.arange(len(order)) - starts[self.text_image[order]]
        out[self.text_image[order], slot] = self.text_group[order]
        return out


class _TextBuffer:
    """Collects captions and embeds them ``batch_size`` at a time."""

    def __init__(self, embed_text: EmbedFn, tokenize: Tokenize, batch_size: int):
        self.embed_text, self.tokenize, self.batch_size = embed_text, tokenize, batch_size
        self.pending: list[str] = []
        self.outputs: list[np.ndarray] = []

    def add(self, captions) -> None:
        self.pending.extend(captions)
        while len(self.pending) >= self.batch_size:
            self._flush(self.batch_size)

    def _flush(self, rows: int) -> None:
        chunk, self.pending = self.pending[:rows], self.pending[rows:]
        self.outputs.append(embed_in_chunks(self.embed_text, self.tokenize(chunk), self.batch_size))

    def finish(self) -> list[np.ndarray]:
        if self.pending:
            self._flush(len(self.pending))
        return self.outputs


def embed_split(split, embed_image: EmbedFn, embed_text: EmbedFn | None, tokenize: Tokenize | None,
                batch_size: int) -> EvalEmbeddings:
    """Streams ``split`` once (see module docstring); ``embed_text=None`` skips the captions.

    Raises RuntimeError when the split yields no image.
    """
    images, labels, text_image = [], {}, []
    groups: dict[str, int] = {}
    text_group: list[int] = []
    buffer = _TextBuffer(embed_text, tokenize, batch_size) if embed_text is not None else None
    n = 0
    for batch in split.batches(batch_size):
        images.append(embed_in_chunks(embed_image, batch['image'], batch_size))
        for task, values in batch['labels'].items():
            labels.setdefault(task, []).append(np.asarray(values, np.int32))
        if buffer is not None:
            for row, captions in enumerate(batch['captions']):
                text_image.extend([n + row] * len(captions))
                text_group.extend(groups.setdefault(c, len(groups)) for c in captions)
                buffer.add(captions)
        n += len(batch['image'])
    if not n:
        raise RuntimeError(f'no readable examples in the eval split {split!r}')
    image = np.concatenate(images)
    text_chunks = buffer.finish() if buffer is not None else []
    text = np.concatenate(text_chunks) if text_chunks else np.zeros((0, image.shape[1]), np.float32)
    return EvalEmbeddings(image=image, text=text, text_image=np.asarray(text_image, np.int32),
                          text_group=np.asarray(text_group, np.int32),
                          labels={task: np.concatenate(values) for task, values in labels.items()})
