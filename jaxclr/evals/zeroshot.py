"""Zero-shot classification: class embeddings from prompt templates, top-1 / top-5 accuracy
(in one go, or tallied batch by batch while a split streams).

Also holds ``embed_in_chunks``, the one place where an embedding function is called over a whole
array: every call gets exactly ``batch_size`` rows (the last chunk is padded), so a jitted
embedding function compiles once.
"""
from collections.abc import Callable, Sequence

import numpy as np

EmbedFn = Callable[[np.ndarray], np.ndarray]
Tokenize = Callable[[list], np.ndarray]   # list of N str -> int32 [N, L]


def embed_in_chunks(embed_fn: EmbedFn, inputs: np.ndarray, batch_size: int) -> np.ndarray:
    """Embeds ``inputs`` [N, ...] in chunks of exactly ``batch_size`` rows; returns float32 [N, D].

    The last chunk is padded by repeating its final row (a valid input, unlike zeros for a text
    tower that may mask every position); the padded rows' outputs are dropped.
    """
    inputs = np.asarray(inputs)
    n = inputs.shape[0]
    if n == 0:
        raise ValueError("embed_in_chunks: no rows to embed")
    if batch_size < 1:
        raise ValueError(f"embed_in_chunks: batch_size must be >= 1, got {batch_size}")
    outputs = []
    for start in range(0, n, batch_size):
        chunk = inputs[start:start + batch_size]
        rows = chunk.shape[0]
        if rows < batch_size:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - rows, axis=0)])
        outputs.append(np.asarray(embed_fn(chunk), dtype=np.float32)[:rows])
    return np.concatenate(outputs)


def _normalise(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """L2-normalises ``x`` along ``axis`` (float64 arithmetic; a zero vector stays zero)."""
    x = np.asarray(x, np.float64)
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def class_embeddings(embed_text: EmbedFn, class_names: Sequence[str], templates: Sequence[str],
                     tokenize: Tokenize, batch_size: int) -> np.ndarray:
    """Class embeddings [C, D] float32: per class, the normalised mean over templates of the
    normalised text embedding of the template filled with the class name (docs/reference.md).

    A template is filled by ``template.format(name, name=name, index=c)``: ``{}`` and ``{name}``
    take the class name, ``{index}`` its label index c.

    Prompts are tokenised and embedded ``batch_size`` at a time (C x T prompts in all).
    """
    if not class_names or not templates:
        raise ValueError("class_embeddings needs at least one class name and one template")
    prompts = [template.format(name, name=name, index=c)
               for c, name in enumerate(class_names) for template in templates]
    text_emb = np.concatenate([embed_in_chunks(embed_text, tokenize(prompts[i:i + batch_size]), batch_size)
                               for i in range(0, len(prompts), batch_size)])
    text_emb = _normalise(text_emb).reshape(len(class_names), len(templates), -1)
    return _normalise(text_emb.mean(axis=1)).astype(np.float32)


def label_ranks(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Rank (0 = best) of each row's label among its scores [N, C].

    Ties count against the model (docs/reference.md): every other class with a score >= the label's
    ranks ahead of it, so rank 0 means the label's score is strictly the highest. A row whose
    scores are not all finite is a miss (rank C).
    """
    rows = np.arange(scores.shape[0])
    own = scores[rows, labels][:, None]
    others = np.arange(scores.shape[1])[None, :] != labels[:, None]
    ranks = (others & (scores >= own)).sum(axis=1)
    return np.where(np.isfinite(scores).all(axis=1), ranks, scores.shape[1])


class ZeroShotTally:
    """Top-1 / top-k (k = min(5, C)) hit counts against fixed class embeddings, added batch by batch.

    ``result()`` gives the accuracies of everything added: rows with label -1 are ignored; with
    no labelled row both are NaN, and when any embedding used (a labelled image or a class) was
    not finite both are NaN (a partly broken model gets no score). Ties count against the model
    (``label_ranks``).
    """

    def __init__(self, class_emb: np.ndarray):
        self.class_emb = np.asarray(class_emb, np.float32)
        self.num_classes = self.class_emb.shape[0]
        self.finite = bool(np.isfinite(self.class_emb).all())
        self.count = self.top1 = self.top5 = 0

    def add(self, img_emb: np.ndarray, labels: np.ndarray) -> "ZeroShotTally":
        img_emb = np.asarray(img_emb, np.float32)
        labels = np.asarray(labels).astype(np.int64)
        if labels.shape != (img_emb.shape[0],):
            raise ValueError(f"labels shape {labels.shape} does not match {img_emb.shape[0]} images")
        keep = labels != -1
        if np.any((labels[keep] < 0) | (labels[keep] >= self.num_classes)):
            raise ValueError(f"labels must be -1 or in [0, {self.num_classes})")
        if not np.any(keep):
            return self
        self.finite &= bool(np.isfinite(img_emb[keep]).all())
        ranks = label_ranks(img_emb[keep] @ self.class_emb.T, labels[keep])
        self.count += int(keep.sum())
        self.top1 += int(np.sum(ranks < 1))
        self.top5 += int(np.sum(ranks < min(5, self.num_classes)))
        return self

    def result(self) -> dict[str, float]:
        if not self.count or not self.finite:
            return {"top1": float("nan"), "top5": float("nan")}
        return {"top1": self.top1 / self.count, "top5": self.top5 / self.count}


def zero_shot_accuracy(img_emb: np.ndarray, class_emb: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Top-1 and top-k accuracy (k = min(5, C)) of predicting argmax cosine over classes
    (``ZeroShotTally`` over one batch: same rules for -1 labels, ties and non-finite embeddings)."""
    return ZeroShotTally(class_emb).add(img_emb, labels).result()
