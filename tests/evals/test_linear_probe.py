"""Linear probe (evals/linear_probe.py, runner's 'linear_probe') and the embedded datasets' validation split."""
import logging
import math

import numpy as np
import pytest

from jaxclr import config as configlib
from jaxclr.data import datasets, digits, eval_stream, shapes
from jaxclr.evals import linear_probe, runner, tasks
from tests.helpers import eval_cfg

EYE3 = np.eye(3)


def clusters(labels, scale=1.0):
    """Row i: the unit vector of class labels[i] in R^3 (times scale), so classes are separable."""
    return EYE3[np.asarray(labels)] * scale


# ------------------------------------------------------------------ maths on fake embeddings

def test_separable_clusters_score_one():
    train_y = np.array([0, 1, 2] * 4)
    eval_y = np.array([2, 1, 0, 0, 2])
    # scale is irrelevant: embeddings are L2-normalised first
    assert linear_probe.probe_accuracy(clusters(train_y, 7.0), train_y, clusters(eval_y, 0.1), eval_y) == 1.0


def test_shuffled_labels_score_near_chance():
    """Labels set by the sign of the first coordinate are linearly separable; shuffled against the
    embeddings they carry nothing to learn, and the probe scores about 0.5 on 2 balanced classes."""
    rng = np.random.default_rng(0)
    train_x, eval_x = rng.normal(size=(200, 8)), rng.normal(size=(200, 8))
    train_y, eval_y = (train_x[:, 0] > 0).astype(int), (eval_x[:, 0] > 0).astype(int)
    assert linear_probe.probe_accuracy(train_x, train_y, eval_x, eval_y) > 0.9
    acc = linear_probe.probe_accuracy(train_x, rng.permutation(train_y), eval_x, eval_y)
    assert 0.35 < acc < 0.65


def test_unlabelled_rows_are_ignored():
    train_y = np.array([0, 1, -1, -1, 0, 1])
    # the unlabelled fit rows sit on the other class's cluster; the unlabelled eval rows are misplaced
    train_x = clusters([0, 1, 1, 0, 0, 1])
    eval_y = np.array([0, -1, 1, -1])
    eval_x = clusters([0, 1, 1, 0])
    assert linear_probe.probe_accuracy(train_x, train_y, eval_x, eval_y) == 1.0
    assert math.isnan(linear_probe.probe_accuracy(train_x, train_y, eval_x, np.full(4, -1)))


def test_nonfinite_embeddings_give_nan():
    y = np.array([0, 1, 0, 1])
    bad = clusters(y)
    bad[2, 1] = np.nan
    assert math.isnan(linear_probe.probe_accuracy(bad, y, clusters(y), y))
    assert math.isnan(linear_probe.probe_accuracy(clusters(y), y, np.where(bad == 1, np.inf, bad), y))


def test_constant_embeddings_predict_the_fit_majority():
    """Identical embeddings carry no information: the probe predicts the class most frequent in
    its fit rows (0: 6 of 10), right on the 3 of 10 eval rows of that class."""
    train_y = np.array([0] * 6 + [1] * 4)
    eval_y = np.array([0] * 3 + [1] * 7)
    const = np.ones((10, 3))
    assert linear_probe.probe_accuracy(const, train_y, const, eval_y) == 0.3
    assert linear_probe.probe_accuracy(np.zeros((10, 3)), train_y, np.zeros((10, 3)), eval_y) == 0.3


def test_one_class_in_the_fit_rows_is_nan_with_a_log_line(caplog):
    y = np.zeros(4, int)
    with caplog.at_level(logging.WARNING, logger=linear_probe.__name__):
        assert math.isnan(linear_probe.probe_accuracy(clusters(y), y, clusters([0, 1]), np.array([0, 1]), name="digit"))
    assert "linear probe digit" in caplog.text and "1 class(es)" in caplog.text


def test_probe_metrics_names_and_skips_unlabelled_tasks():
    y = np.array([0, 1, 2, 0])
    out = linear_probe.probe_metrics(clusters(y), {"color": y, "shape": y}, clusters(y),
                                     {"color": y, "shape": np.full(4, -1)}, {"color": "color", "shape": "shape"})
    assert out == {"probe/color_top1": 1.0}


# ------------------------------------------------------------------ the evaluator and its config keys

def fake_eval_set(fit_labels, eval_labels, fit_x, eval_x):
    return tasks.EvalSet(split=eval_stream.ArraySplit({"image": eval_x, "labels": {"digit": eval_labels}}),
                         tasks=(tasks.ZeroShotTask("digit", "digit", ("a", "b"), ("{}",)),),
                         probe_split=eval_stream.ArraySplit({"image": fit_x, "labels": {"digit": fit_labels}}))


def run_probe(eval_set, embed_image=lambda x: x, **cfg):
    (evaluator,) = runner.build_evaluators(eval_cfg(batch_size=4, evaluators=("linear_probe",), **cfg), eval_set, None)
    return dict(evaluator.run(embed_image, None))


def test_probe_c_is_the_regularisation():
    """Separable but imbalanced fit rows (6 of class 0, 4 of class 1): a weak penalty (large C)
    separates them, a crushing one (C = 1e-6) leaves only the prior: class 0 everywhere."""
    fit_y, eval_y = np.array([0] * 6 + [1] * 4), np.array([0, 1] * 5)
    eval_set = fake_eval_set(fit_y, eval_y, clusters(fit_y), clusters(eval_y))
    assert run_probe(eval_set, probe_c=100.0) == {"probe/digit_top1": 1.0}
    assert run_probe(eval_set, probe_c=1e-6) == {"probe/digit_top1": 0.5}


def test_evaluator_nan_on_nonfinite_model_and_needs_a_probe_split():
    y = np.array([0, 1, 0, 1])
    eval_set = fake_eval_set(y, y, clusters(y), clusters(y))
    out = run_probe(eval_set, embed_image=lambda x: x * np.nan)
    assert list(out) == ["probe/digit_top1"] and math.isnan(out["probe/digit_top1"])
    with pytest.raises(ValueError, match="no probe_split"):
        run_probe(tasks.EvalSet(split=eval_set.split, tasks=eval_set.tasks))


def small_config(data_dir, **eval_changes):
    c = configlib.load("configs/clip.py:tiny")
    c.data.update(data_dir=data_dir, image_size=32, num_train=64, num_test=32, eval_examples=64)
    c.eval.update(batch_size=16, **eval_changes)
    return c


def test_probe_examples_sets_the_fit_set(data_dir):
    assert tasks.eval_set(small_config(data_dir)).probe_split is None   # not an evaluator of the preset
    split = tasks.eval_set(small_config(data_dir, evaluators=("linear_probe",), probe_examples=20)).probe_split
    assert split.num_examples == 20 and split.name == "jaxclr_shapes:train"
    got = np.concatenate([b["image"] for b in split.batches(16)])
    source = datasets.data_source(small_config(data_dir).data, "train")
    np.testing.assert_array_equal(got, np.stack([source[i]["image"] for i in range(20)]))
    more = tasks.eval_set(small_config(data_dir, evaluators=("linear_probe",), probe_examples=10_000)).probe_split
    assert more.num_examples == 64   # capped at the train split


# ------------------------------------------------------------------ validation split

def test_shapes_validation_split_is_drawn_like_train_and_leaves_train_unchanged(data_dir, tmp_path):
    cfg = small_config(data_dir).data
    assert shapes.validation_count(64) == 6 and shapes.validation_count(5) == 1
    train, val = datasets.data_source(cfg, "train"), datasets.data_source(cfg, "validation")
    assert (len(train), len(val), len(datasets.data_source(cfg, "test"))) == (64, 6, 32)
    # TFDS stores examples in key-hash order: compare as sets of images
    made = lambda split_id, n: {shapes.make_example(np.random.default_rng([0, split_id, i]), 32)["image"].tobytes()
                                for i in range(n)}
    images = lambda source: {source[i]["image"].tobytes() for i in range(len(source))}
    assert images(train) == made(0, 64)   # the train split of a build without validation
    assert images(val) == made(2, 6) and not images(val) & images(train)
    cfg2 = small_config(str(tmp_path)).data   # a second build elsewhere: the same validation examples
    assert images(datasets.data_source(cfg2, "validation")) == images(val)


def test_digits_validation_split_is_a_fixed_tenth_of_train():
    split = digits.split_indices(1797)
    assert {k: len(v) for k, v in split.items()} == {"train": 1294, "validation": 144, "test": 359}
    assert np.array_equal(np.sort(np.concatenate(list(split.values()))), np.arange(1797))   # disjoint, complete
    again = digits.split_indices(1797)
    assert all(np.array_equal(split[k], again[k]) for k in split)
    assert tasks.splits_of(configlib.load("configs/clip.py:digits").data) == ["train", "validation", "test"]


def test_evals_run_on_the_validation_split(data_dir):
    """data.eval_split = 'validation': the probe fits on train pixels and scores the 6 validation images."""
    config = small_config(data_dir, evaluators=("linear_probe",))
    config.data.eval_split = "validation"
    eval_set = tasks.eval_set(config)
    assert eval_set.split.num_examples == 6 and eval_set.split.name == "jaxclr_shapes:validation"
    pixels = lambda x: x.reshape(len(x), -1).astype(np.float32)
    out = runner.run_evals(config.eval, eval_set, tasks.tokenize_fn(config.data), pixels,
                           lambda tokens: tokens.astype(np.float32))
    train, val = (datasets.data_source(config.data, s) for s in ("train", "validation"))

    def arrays(source):
        labels = [shapes.task_labels(source[i]) for i in range(len(source))]
        return pixels(np.stack([source[i]["image"] for i in range(len(source))])), labels

    (fit_x, fit_l), (val_x, val_l) = arrays(train), arrays(val)
    expected = {f"probe/{t}_top1": linear_probe.probe_accuracy(fit_x, [d[t] for d in fit_l], val_x,
                                                               [d[t] for d in val_l]) for t in ("color", "shape")}
    assert any(d["color"] != -1 for d in val_l) and set(out) == set(expected)
    assert all(0.0 <= v <= 1.0 for v in out.values())
    np.testing.assert_allclose([out[k] for k in expected], list(expected.values()))
