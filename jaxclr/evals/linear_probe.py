"""Linear probe: logistic regression on frozen, L2-normalised image embeddings.

The downstream measure of Wang & Isola (2020, "Understanding contrastive representation
learning through alignment and uniformity on the hypersphere"): fit a linear classifier on the
embeddings of labelled train images and score it on the eval split's images. Here the
classifier is scikit-learn's ``LogisticRegression`` (lbfgs, multinomial over the classes seen in
the fit subset) with inverse regularisation strength ``c`` and at most ``MAX_ITER`` iterations.

Degenerate inputs get no score (docs/reference.md, "Ties and non-finite scores"): non-finite
embeddings give NaN, and so does a task whose fit subset has fewer than two classes (nothing
to separate) or whose eval rows are all unlabelled. Rows labelled -1 (task does not apply) are
left out of both the fit and the score.
"""
from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping

import numpy as np

log = logging.getLogger(__name__)

MAX_ITER = 1000   # lbfgs iterations; normalised embeddings converge well within this


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (an all-zero row stays zero), as float64."""
    x = np.asarray(x, np.float64)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def probe_accuracy(train_x: np.ndarray, train_y: np.ndarray, eval_x: np.ndarray, eval_y: np.ndarray,
                   c: float = 1.0, name: str = "") -> float:
    """Top-1 accuracy on (eval_x, eval_y) of logistic regression fit on (train_x, train_y).

    x: [N, D] embeddings (normalised here); y: int [N] class indices, -1 = unlabelled (ignored).
    NaN when any embedding is non-finite, the fit rows hold fewer than two classes, or no eval
    row is labelled. An eval class absent from the fit rows can never be predicted.
    """
    from sklearn.linear_model import LogisticRegression  # lazily: sklearn is slow to import

    train_y, eval_y = np.asarray(train_y), np.asarray(eval_y)
    fit, score = train_y != -1, eval_y != -1
    if not (np.all(np.isfinite(train_x)) and np.all(np.isfinite(eval_x))):
        return float("nan")
    if not score.any():
        return float("nan")
    classes = np.unique(train_y[fit])
    if len(classes) < 2:
        log.warning("linear probe %s: the %d labelled fit examples hold %d class(es); need 2 or more (raise "
                    "eval.probe_examples): NaN", name, int(fit.sum()), len(classes))
        return float("nan")
    model = LogisticRegression(C=float(c), max_iter=MAX_ITER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # ConvergenceWarning on hard fits: the accuracy still says how well it did
        model.fit(normalise(train_x)[fit], train_y[fit])
    predicted = model.predict(normalise(eval_x)[score])
    return float(np.mean(predicted == eval_y[score]))


def probe_metrics(train_image: np.ndarray, train_labels: Mapping[str, np.ndarray], eval_image: np.ndarray,
                  eval_labels: Mapping[str, np.ndarray], tasks: Mapping[str, str], c: float = 1.0) -> dict[str, float]:
    """``{'probe/<name>_top1': accuracy}`` for each ``tasks`` entry ``name -> label key`` whose eval
    labels hold a labelled row; the embeddings' rows match their labels' rows."""
    out = {}
    for name, label in tasks.items():
        eval_y = np.asarray(eval_labels.get(label, ()), np.int64)
        if not np.any(eval_y != -1):
            continue
        train_y = np.asarray(train_labels.get(label, np.full(len(train_image), -1)), np.int64)
        out[f"probe/{name}_top1"] = probe_accuracy(train_image, train_y, eval_image, eval_y, c, name)
    return out
