"""Evaluators chosen by name from ``config.eval`` and the loop that runs them.

Each evaluator is a small class built from ``(eval_cfg, eval_set, tokenize)`` whose
``run(embed_image, embed_text, embeddings=None)`` yields ``(name, value)`` pairs such as
``('retrieval/i2t_R@1', 0.42)``. ``eval_set`` is a ``tasks.EvalSet`` (the streamed eval split,
its zero-shot tasks, extra zero-shot datasets, retrieval benchmarks); ``tokenize`` maps a list of N strings to int32
[N, L] tokens. ``run_evals`` streams the eval split once (``embed.embed_split``: only embeddings,
labels and caption ids are kept) and shares the embeddings with every evaluator. Config keys
read from ``eval_cfg``:

- ``batch_size`` (rows per call of an embedding function, and per batch read), ``evaluators``
  (names, in order);
- optional: ``recall_ks`` (default (1, 5, 10)), ``geometry_max_points`` (default 8192; caps the
  pairs of the O(N^2) uniformity terms, None = all), ``probe_c`` (default 1.0: the linear probe's
  inverse regularisation strength; its fit examples, ``probe_examples``, are read by
  ``tasks.eval_set``).

Degenerate models get no score (docs/reference.md, "Ties and non-finite scores"): in zero-shot and
retrieval ranks, ties count against the model, and an evaluator whose embeddings are not all
finite reports NaN for each of its metrics.
"""
from collections.abc import Callable, Iterator, Sequence

import jax
import numpy as np

from jaxclr.evals.embed import EmbedFn, EvalEmbeddings, embed_split
from jaxclr.evals.geometry import geometry_metrics, tolerance
from jaxclr.evals.linear_probe import probe_metrics
from jaxclr.evals.retrieval import recall_at_k
from jaxclr.evals.tasks import EvalSet
from jaxclr.evals.zeroshot import ZeroShotTally, class_embeddings, embed_in_chunks, zero_shot_accuracy

Tokenize = Callable[[list], np.ndarray]


class Evaluator:
    """Base: holds the config, eval set and tokenizer; streams the eval split when no shared
    embeddings are given."""
    name = ""

    def __init__(self, eval_cfg, eval_set: EvalSet, tokenize: Tokenize):
        self.cfg = eval_cfg
        self.eval_set = eval_set
        self.tokenize = tokenize
        self.batch_size = int(eval_cfg["batch_size"])

    def embeddings(self, embed_image: EmbedFn, embed_text: EmbedFn, embeddings: EvalEmbeddings | None):
        if embeddings is None:
            embeddings = embed_split(self.eval_set.split, embed_image, embed_text, self.tokenize, self.batch_size)
        return embeddings

    def run(self, embed_image: EmbedFn, embed_text: EmbedFn,
            embeddings: EvalEmbeddings | None = None) -> Iterator[tuple[str, float]]:
        raise NotImplementedError


class ZeroShotEvaluator(Evaluator):
    """Top-1/top-5 zero-shot accuracy: 'zeroshot/<task>_top1', '..._top5' for every task of the
    eval split that has a labelled example, then for every extra zero-shot dataset (streamed
    batch by batch; its image embeddings are not kept). Class prompts are embedded once per run."""
    name = "zeroshot"

    def _class_embeddings(self, embed_text, task):
        return class_embeddings(embed_text, task.class_names, task.templates, self.tokenize, self.batch_size)

    def run(self, embed_image, embed_text, embeddings=None):
        emb = self.embeddings(embed_image, embed_text, embeddings)
        specs = {task.label: task for task in self.eval_set.tasks}
        missing = sorted(set(emb.labels) - set(specs))
        if missing:
            raise ValueError(f"zeroshot: no class names for labelled tasks {missing}")
        for label in sorted(emb.labels):
            if np.any(emb.labels[label] != -1):
                task = specs[label]
                acc = zero_shot_accuracy(emb.image, self._class_embeddings(embed_text, task), emb.labels[label])
                yield f"zeroshot/{task.name}_top1", acc["top1"]
                yield f"zeroshot/{task.name}_top5", acc["top5"]
        for dataset in self.eval_set.zeroshot:
            tallies = {t.label: ZeroShotTally(self._class_embeddings(embed_text, t)) for t in dataset.tasks}
            for batch in dataset.split.batches(self.batch_size):
                img = embed_in_chunks(embed_image, batch["image"], self.batch_size)
                for label, tally in tallies.items():
                    tally.add(img, batch["labels"][label])
            for task in dataset.tasks:
                acc = tallies[task.label].result()
                yield f"zeroshot/{task.name}_top1", acc["top1"]
                yield f"zeroshot/{task.name}_top5", acc["top5"]


class RetrievalEvaluator(Evaluator):
    """Recall@k both ways: 'retrieval/i2t_R@1', ... An image query hits when any of its captions
    (or a caption identical to one of them) is in its top k; a caption query when its image (or
    an image with an identical caption) is. Then each retrieval benchmark of the eval set
    (``eval_set.retrieval``, whole splits, streamed): 'retrieval/<stem>_images' and
    '..._captions' (the images and captions read, also printed as one line on process 0), then
    'retrieval/<stem>_i2t_R@1', ... by the same rule."""
    name = "retrieval"

    def run(self, embed_image, embed_text, embeddings=None):
        emb = self.embeddings(embed_image, embed_text, embeddings)
        ks = tuple(self.cfg["recall_ks"])
        for key, value in recall_at_k(emb.image, emb.text, emb.image_groups(), emb.text_group, ks=ks).items():
            yield f"retrieval/{key}", value
        for dataset in self.eval_set.retrieval:
            stats = getattr(dataset.split, "stats", None)   # a RecordSplit counts bad records over all reads
            before = stats.skipped if stats is not None else 0
            emb = embed_split(dataset.split, embed_image, embed_text, self.tokenize, self.batch_size)
            images, captions = len(emb.image), len(emb.text)
            if jax.process_index() == 0:
                skipped = f" ({stats.skipped - before} bad records skipped)" if stats is not None else ""
                print(f"retrieval {dataset.entry}: {images} images, {captions} captions{skipped}", flush=True)
            yield f"retrieval/{dataset.stem}_images", images
            yield f"retrieval/{dataset.stem}_captions", captions
            for key, value in recall_at_k(emb.image, emb.text, emb.image_groups(), emb.text_group, ks=ks).items():
                yield f"retrieval/{dataset.stem}_{key}", value


class GeometryEvaluator(Evaluator):
    """Alignment, uniformity and modality-gap metrics of the eval set: 'geometry/alignment', ...
    Pairs are (image, its first caption). Then 'geometry/tolerance_<task>' for every task of the
    eval split with a labelled example: the image embeddings' tolerance (docs/reference.md)."""
    name = "geometry"

    def run(self, embed_image, embed_text, embeddings=None):
        emb = self.embeddings(embed_image, embed_text, embeddings)
        rows, first = np.unique(emb.text_image, return_index=True)
        max_points = self.cfg["geometry_max_points"]
        for key, value in geometry_metrics(emb.image[rows], emb.text[first], max_points=max_points).items():
            yield f"geometry/{key}", value
        names = {task.label: task.name for task in self.eval_set.tasks}
        for label in sorted(emb.labels):
            if np.any(emb.labels[label] != -1):
                yield f"geometry/tolerance_{names.get(label, label)}", tolerance(emb.image, emb.labels[label])


class LinearProbeEvaluator(Evaluator):
    """Linear-probe top-1 accuracy: 'probe/<task>_top1' for every zero-shot task of the eval split
    with a labelled example (linear_probe.py): logistic regression with C = eval.probe_c, fit on
    the image embeddings of ``eval_set.probe_split`` (the first eval.probe_examples train
    examples, streamed at each run), scored on the eval split's."""
    name = "linear_probe"

    def run(self, embed_image, embed_text, embeddings=None):
        if self.eval_set.probe_split is None:
            raise ValueError("linear_probe: the eval set has no probe_split (tasks.eval_set builds one when "
                             "'linear_probe' is in eval.evaluators)")
        emb = self.embeddings(embed_image, embed_text, embeddings)
        fit = embed_split(self.eval_set.probe_split, embed_image, None, None, self.batch_size)
        names = {task.name: task.label for task in self.eval_set.tasks}
        yield from probe_metrics(fit.image, fit.labels, emb.image, emb.labels, names,
                                 c=float(self.cfg["probe_c"])).items()


EVALUATORS = {cls.name: cls for cls in (ZeroShotEvaluator, RetrievalEvaluator, GeometryEvaluator,
                                        LinearProbeEvaluator)}


def build_evaluators(eval_cfg, eval_set: EvalSet, tokenize: Tokenize) -> list[Evaluator]:
    """Evaluators named by ``eval_cfg.evaluators``, in that order; an unknown name is a ValueError."""
    names = list(eval_cfg["evaluators"])
    unknown = [name for name in names if name not in EVALUATORS]
    if unknown:
        raise ValueError(f"unknown evaluator(s) {unknown}; known: {sorted(EVALUATORS)}")
    return [EVALUATORS[name](eval_cfg, eval_set, tokenize) for name in names]


def run_evals(eval_cfg, eval_set: EvalSet, tokenize: Tokenize, embed_image: EmbedFn, embed_text: EmbedFn,
              evaluators: Sequence[Evaluator] | None = None, embeddings=None) -> dict[str, float]:
    """Streams the eval split once, runs every evaluator on its embeddings; returns ``{name: value}``.

    Pass ``evaluators`` (from ``build_evaluators``, e.g. built once before the train loop) to
    skip building them again; they must have been built from the same ``eval_set``. Pass
    ``embeddings`` (``embed_split`` of ``eval_set.split``) when the caller needs them too.
    """
    if evaluators is None:
        evaluators = build_evaluators(eval_cfg, eval_set, tokenize)
    if not evaluators:
        return {}
    if embeddings is None:
        embeddings = embed_split(eval_set.split, embed_image, embed_text, tokenize,
                                 int(eval_cfg["batch_size"]))
    return {name: float(value) for evaluator in evaluators
            for name, value in evaluator.run(embed_image, embed_text, embeddings)}
