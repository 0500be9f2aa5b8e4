"""Evaluators chosen by name from ``config.eval`` and the loop that runs them.

Each evaluator is a small class built from ``(eval_cfg, eval_data, class_names, max_len)`` whose
``run(embed_image, embed_text, embeddings=None)`` yields ``(name, value)`` pairs such as
``('retrieval/i2t_R@1', 0.42)``. ``run_evals`` embeds the eval set once and shares the
embeddings with every evaluator. Config keys read from ``eval_cfg``:

- ``batch_size`` (rows per call of an embedding function), ``evaluators`` (names, in order);
- optional: ``recall_ks`` (default (1, 5, 10)), ``geometry_max_points`` (default 8192; caps the
  pairs of the O(N^2) uniformity terms, None = all).

``eval_data`` is the data package's eval dict: 'image' uint8 [N,S,S,3], 'text' int32 [N,L],
'caption_group' int32 [N] and 'labels' {task: int32 [N], -1 = not applicable}.

Degenerate models get no score (REFERENCE.md, "Ties and non-finite scores"): in zero-shot and
retrieval ranks, ties count against the model, and an evaluator whose embeddings are not all
finite reports NaN for each of its metrics.
"""
import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np

from jaxclr.evals.geometry import geometry_metrics
from jaxclr.evals.prompts import templates_for
from jaxclr.evals.retrieval import recall_at_k
from jaxclr.evals.zeroshot import class_embeddings, embed_in_chunks, zero_shot_accuracy

EmbedFn = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class EvalEmbeddings:
    """Embeddings of the eval set, float32: ``image`` [N, D] and ``text`` [N, D] (row i a pair)."""
    image: np.ndarray
    text: np.ndarray


def embed_eval_set(eval_data: Mapping, embed_image: EmbedFn, embed_text: EmbedFn, batch_size: int) -> EvalEmbeddings:
    """Embeds every image and caption of the eval set in chunks of ``batch_size`` rows."""
    return EvalEmbeddings(image=embed_in_chunks(embed_image, eval_data["image"], batch_size),
                          text=embed_in_chunks(embed_text, eval_data["text"], batch_size))


class Evaluator:
    """Base: holds the config and data, embeds the eval set when no shared embeddings are given."""
    name = ""

    def __init__(self, eval_cfg, eval_data: Mapping, class_names: Mapping[str, Sequence[str]], max_len: int):
        self.cfg = eval_cfg
        self.data = eval_data
        self.class_names = class_names
        self.max_len = int(max_len)
        self.batch_size = int(eval_cfg.get("batch_size", 256))

    def embeddings(self, embed_image: EmbedFn, embed_text: EmbedFn, embeddings: EvalEmbeddings | None):
        if embeddings is None:
            embeddings = embed_eval_set(self.data, embed_image, embed_text, self.batch_size)
        return embeddings

    def run(self, embed_image: EmbedFn, embed_text: EmbedFn,
            embeddings: EvalEmbeddings | None = None) -> Iterator[tuple[str, float]]:
        raise NotImplementedError


class ZeroShotEvaluator(Evaluator):
    """Top-1/top-5 zero-shot accuracy for every labelled task: 'zeroshot/<task>_top1', '..._top5'."""
    name = "zeroshot"

    def __init__(self, eval_cfg, eval_data, class_names, max_len):
        super().__init__(eval_cfg, eval_data, class_names, max_len)
        labels = eval_data.get("labels") or {}
        missing = sorted(task for task in labels if task not in class_names)
        if missing:
            raise ValueError(f"zeroshot: no class names for labelled tasks {missing}")
        self.tasks = sorted(task for task in labels if np.any(np.asarray(labels[task]) != -1))

    def run(self, embed_image, embed_text, embeddings=None):
        emb = self.embeddings(embed_image, embed_text, embeddings)
        for task in self.tasks:
            class_emb = class_embeddings(embed_text, list(self.class_names[task]), templates_for(task),
                                         self.max_len, self.batch_size)
            acc = zero_shot_accuracy(emb.image, class_emb, self.data["labels"][task])
            yield f"zeroshot/{task}_top1", acc["top1"]
            yield f"zeroshot/{task}_top5", acc["top5"]


class RetrievalEvaluator(Evaluator):
    """Recall@k both ways, identical captions counted as partners: 'retrieval/i2t_R@1', ..."""
    name = "retrieval"

    def run(self, embed_image, embed_text, embeddings=None):
        emb = self.embeddings(embed_image, embed_text, embeddings)
        group = self.data.get("caption_group")
        if group is None:
            group = np.arange(emb.image.shape[0])
        ks = tuple(self.cfg.get("recall_ks", (1, 5, 10)))
        for key, value in recall_at_k(emb.image, emb.text, group, group, ks=ks).items():
            yield f"retrieval/{key}", value


class GeometryEvaluator(Evaluator):
    """Alignment, uniformity and modality-gap metrics of the eval set: 'geometry/alignment', ..."""
    name = "geometry"

    def run(self, embed_image, embed_text, embeddings=None):
        emb = self.embeddings(embed_image, embed_text, embeddings)
        max_points = self.cfg.get("geometry_max_points", 8192)
        for key, value in geometry_metrics(emb.image, emb.text, max_points=max_points).items():
            yield f"geometry/{key}", value


EVALUATORS = {cls.name: cls for cls in (ZeroShotEvaluator, RetrievalEvaluator, GeometryEvaluator)}


def build_evaluators(eval_cfg, eval_data: Mapping, class_names: Mapping[str, Sequence[str]],
                     max_len: int) -> list[Evaluator]:
    """Evaluators named by ``eval_cfg.evaluators``, in that order; an unknown name is a ValueError."""
    names = list(eval_cfg.get("evaluators", ()))
    unknown = [name for name in names if name not in EVALUATORS]
    if unknown:
        raise ValueError(f"unknown evaluator(s) {unknown}; known: {sorted(EVALUATORS)}")
    return [EVALUATORS[name](eval_cfg, eval_data, class_names, max_len) for name in names]


def run_evals(eval_cfg, eval_data: Mapping, class_names: Mapping[str, Sequence[str]], max_len: int,
              embed_image: EmbedFn, embed_text: EmbedFn,
              evaluators: Sequence[Evaluator] | None = None) -> dict[str, float]:
    """Embeds the eval set once, runs every evaluator on it and returns ``{name: value}``.

    Pass ``evaluators`` (from ``build_evaluators``, e.g. built once before the train loop) to
    skip building them again; they must have been built from the same ``eval_data``.
    """
    if evaluators is None:
        evaluators = build_evaluators(eval_cfg, eval_data, class_names, max_len)
    if not evaluators:
        return {}
    embeddings = embed_eval_set(eval_data, embed_image, embed_text, int(eval_cfg.get("batch_size", 256)))
    return {name: float(value) for evaluator in evaluators
            for name, value in evaluator.run(embed_image, embed_text, embeddings)}
