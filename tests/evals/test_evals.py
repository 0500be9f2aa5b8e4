"""Tests for jaxclr.evals: closed forms on hand-made embeddings and fake (numpy) embedding functions.

The runner tests import geometry, which needs ``jaxclr.losses``; the geometry metrics
themselves are tested in test_eval_geometry.py.
"""
import functools

import numpy as np
import pytest

from jaxclr.data.text.tokenizer import encode_batch
from jaxclr.evals import prompts, retrieval, zeroshot
from tests.helpers import eval_cfg, random_unit, unit

RNG = np.random.default_rng(0)


# ----------------------------------------------------------------------------- retrieval


def _reference_ranks(query, q_group, cand, c_group):
    """Per query, the number of non-positive candidates whose float64 score is >= its best positive's."""
    scores = np.asarray(query, np.float64) @ np.asarray(cand, np.float64).T
    ranks = []
    for i in range(len(query)):
        positive = c_group == q_group[i]
        ranks.append(np.sum(~positive & (scores[i] >= scores[i][positive].max())) if positive.any() else len(cand))
    return np.array(ranks)


def test_perfect_embeddings_give_recall_one():
    emb = random_unit(40, 16, seed=1)
    out = retrieval.recall_at_k(emb, emb, np.arange(40), np.arange(40))
    assert set(out) == {f"{d}_R@{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)}
    assert all(value == 1.0 for value in out.values())


def test_partner_ranked_third_gives_r1_zero_r5_one():
    d = 16
    query = np.zeros((1, d), np.float32)
    query[0, 0] = 1.0
    cos = [0.5, 0.9, 0.8] + [0.0] * 9          # partner (text 0) has the 3rd highest cosine
    cand = np.zeros((len(cos), d), np.float32)
    for j, c in enumerate(cos):
        cand[j, 0] = c
        cand[j, j + 1] = np.sqrt(1.0 - c * c)
    out = retrieval.recall_at_k(query, cand, np.array([0]), np.arange(len(cos)), ks=(1, 2, 3, 5, 10))
    assert (out["i2t_R@1"], out["i2t_R@2"], out["i2t_R@3"], out["i2t_R@5"], out["i2t_R@10"]) == (0, 0, 1, 1, 1)
    assert retrieval.positive_ranks(query, np.array([0]), cand, np.arange(len(cos)))[0] == 2


def test_duplicate_caption_group_counts_as_hit():
    e = np.eye(4, dtype=np.float32)
    img = e
    txt = e[[1, 0, 2, 3]]          # image 0's own text points at image 1 and vice versa
    unique = retrieval.recall_at_k(img, txt, np.arange(4), np.arange(4), ks=(1,))
    assert unique == {"i2t_R@1": 0.5, "t2i_R@1": 0.5}
    groups = np.array([7, 7, 2, 3])   # captions 0 and 1 are identical
    shared = retrieval.recall_at_k(img, txt, groups, groups, ks=(1,))
    assert shared == {"i2t_R@1": 1.0, "t2i_R@1": 1.0}


def test_ties_count_against_the_model():
    # Ties count against the model (docs/reference.md): every tied non-partner ranks ahead, so a
    # collapsed model (every score equal) ranks each partner last and recalls nothing below k = n;
    # breaking ties by candidate index would give R@1 = 1/n.
    n = 20
    emb = np.tile(random_unit(1, 8, seed=2), (n, 1))
    out = retrieval.recall_at_k(emb, emb, ks=(1, 5, 10, n))
    assert (out["i2t_R@1"], out["i2t_R@10"], out["t2i_R@1"], out[f"t2i_R@{n}"]) == (0.0, 0.0, 0.0, 1.0)
    np.testing.assert_array_equal(retrieval.positive_ranks(emb, np.arange(n), emb, np.arange(n)), np.full(n, n - 1))


def test_tie_rule_on_a_hand_built_query():
    """Candidate 0 is the partner; 1 is an identical vector (a tie), 2 scores higher, 3-5 lower.
    A tied non-partner ranks ahead of the partner; a tied duplicate partner (same group) does not."""
    d = 8
    query = np.eye(1, d, dtype=np.float32)
    tied = unit([0.6, 0.8, 0, 0, 0, 0, 0, 0])
    cand = np.stack([tied, tied, unit([0.9, 0, 0.436, 0, 0, 0, 0, 0]), *np.eye(d)[3:6]]).astype(np.float32)

    def rank(groups):
        return int(retrieval.positive_ranks(query, np.array([0]), cand, np.array(groups))[0])

    assert rank([0, 9, 8, 3, 4, 5]) == 2     # the higher candidate and the tied non-partner
    assert rank([0, 0, 8, 3, 4, 5]) == 1     # the tie is a duplicate caption: only the higher one
    assert rank([0, 9, 0, 3, 4, 5]) == 0     # the best partner is the higher candidate: nothing ahead
    out = retrieval.recall_at_k(query, cand, np.array([0]), np.array([0, 9, 8, 3, 4, 5]), ks=(1, 2, 3))
    assert (out["i2t_R@1"], out["i2t_R@2"], out["i2t_R@3"]) == (0.0, 0.0, 1.0)


def test_retrieval_of_nonfinite_embeddings_is_nan_and_a_nonfinite_query_a_miss():
    emb = random_unit(12, 8, seed=20)
    for broken in (np.full_like(emb, np.nan), np.where(np.arange(12)[:, None] == 5, np.inf, emb)):
        for img, txt in ((broken, emb), (emb, broken)):
            out = retrieval.recall_at_k(img, txt)
            assert len(out) == 6 and all(np.isnan(value) for value in out.values())
    query = emb.copy()
    query[3, 0] = np.nan
    ranks = retrieval.positive_ranks(query, np.arange(12), emb, np.arange(12))
    assert ranks[3] == 12 and np.all(np.delete(ranks, 3) == 0)


def test_retrieval_of_degenerate_and_random_embeddings_is_chance_or_worse():
    n = 500
    const = np.tile(random_unit(1, 16, seed=21), (n, 1))
    groups = np.arange(n) // 2                            # caption pairs: two partners per query
    out = retrieval.recall_at_k(const, const, groups, groups)
    assert all(value == 0.0 for value in out.values())    # 498 tied non-partners ahead of every partner
    img, txt = random_unit(n, 64, seed=22), random_unit(n, 64, seed=23)
    out = retrieval.recall_at_k(img, txt, ks=(1, 10))
    assert out["i2t_R@1"] <= 5 / n and out["t2i_R@1"] <= 5 / n   # chance 1/n
    assert out["i2t_R@10"] <= 0.05 and out["t2i_R@10"] <= 0.05   # chance 10/n = 0.02


@pytest.mark.parametrize("chunk_rows", [None, 1, 7, 64])
def test_chunked_ranks_match_sorting_reference(chunk_rows):
    img = random_unit(53, 8, seed=3)
    txt = unit(img + 0.8 * np.random.default_rng(4).normal(size=img.shape)).astype(np.float32)
    groups = np.random.default_rng(5).integers(0, 40, size=53)
    got = retrieval.positive_ranks(img, groups, txt, groups, chunk_rows=chunk_rows)
    np.testing.assert_array_equal(got, _reference_ranks(img, groups, txt, groups))
    out = retrieval.recall_at_k(img, txt, groups, groups, chunk_rows=chunk_rows)
    ref_t2i = _reference_ranks(txt, groups, img, groups)
    for k in (1, 5, 10):
        assert out[f"t2i_R@{k}"] == pytest.approx(np.mean(ref_t2i < k))
    assert out["i2t_R@1"] <= out["i2t_R@5"] <= out["i2t_R@10"]


def test_query_without_partner_is_a_miss():
    emb = random_unit(3, 4, seed=6)
    out = retrieval.recall_at_k(emb, emb, np.array([0, 1, 9]), np.array([0, 1, 2]), ks=(3,))
    assert out["i2t_R@3"] == pytest.approx(2 / 3)


# ----------------------------------------------------------------------------- zero-shot


def test_zero_shot_perfect_and_ignores_unlabelled():
    class_emb = np.eye(6, 8, dtype=np.float32)
    labels = np.array([0, 1, 2, 3, 4, 5, -1, -1])
    img = np.concatenate([class_emb, class_emb[[1, 2]]])   # unlabelled rows would be wrong for any label
    assert zeroshot.zero_shot_accuracy(img, class_emb, labels) == {"top1": 1.0, "top5": 1.0}
    assert np.isnan(zeroshot.zero_shot_accuracy(img, class_emb, -np.ones(8, int))["top1"])


def test_zero_shot_second_ranked_label_and_small_class_count():
    class_emb = unit(np.eye(3, 4)).astype(np.float32)
    img = unit([[0.9, 0.5, 0.0, 0.0]]).astype(np.float32)       # class 0 first, class 1 second
    assert zeroshot.zero_shot_accuracy(img, class_emb, np.array([1])) == {"top1": 0.0, "top5": 1.0}
    # with C = 3 < 5, top5 is top-3: every labelled row is a hit
    assert zeroshot.zero_shot_accuracy(img, class_emb, np.array([2]))["top5"] == 1.0


def test_zero_shot_top5_at_least_top1_and_matches_reference():
    img = random_unit(200, 8, seed=7)
    class_emb = random_unit(10, 8, seed=8)
    labels = np.random.default_rng(9).integers(-1, 10, size=200)
    out = zeroshot.zero_shot_accuracy(img, class_emb, labels)
    keep = labels >= 0
    scores = img[keep].astype(np.float64) @ class_emb.T.astype(np.float64)
    top5 = np.argsort(-scores, axis=1, kind="stable")[:, :5]
    assert out["top1"] == pytest.approx(np.mean(scores.argmax(1) == labels[keep]))
    assert out["top5"] == pytest.approx(np.mean((top5 == labels[keep][:, None]).any(1)))
    assert out["top5"] >= out["top1"]


def test_zero_shot_ties_count_against_the_model():
    # Ties count against the model (docs/reference.md): with every class scoring the same, no label
    # is ranked first (argmax's class-index order would give 1/3 here).
    class_emb = np.tile(random_unit(1, 4, seed=10), (3, 1))     # all classes score the same
    img = random_unit(3, 4, seed=11)
    assert zeroshot.zero_shot_accuracy(img, class_emb, np.array([0, 1, 2]))["top1"] == 0.0
    assert zeroshot.zero_shot_accuracy(img, class_emb, np.array([0, 1, 2]))["top5"] == 1.0   # top-3 of 3


def test_zero_shot_tie_rule_on_hand_built_scores():
    scores = np.array([[0.5, 0.9, 0.9, 0.1],       # label 1 tied with class 2: class 2 ranks ahead
                       [0.5, 0.9, 0.2, 0.1],       # label 1 strictly first
                       [0.9, 0.5, 0.5, 0.5],       # label 3 tied with two others, below class 0
                       [0.5, np.nan, 0.2, 0.1]])   # a non-finite score: a miss
    np.testing.assert_array_equal(zeroshot.label_ranks(scores, np.array([1, 1, 3, 0])), [1, 0, 3, 4])


def test_zero_shot_of_nonfinite_embeddings_is_nan():
    img = random_unit(20, 8, seed=24)
    class_emb = random_unit(5, 8, seed=25)
    labels = np.arange(20) % 5
    labels[7] = -1
    nan_row = img.copy()
    nan_row[3] = np.nan
    nan_class = class_emb.copy()
    nan_class[2, 0] = np.inf
    for case in ((np.full_like(img, np.nan), class_emb), (nan_row, class_emb), (img, nan_class)):
        out = zeroshot.zero_shot_accuracy(*case, labels)
        assert np.isnan(out["top1"]) and np.isnan(out["top5"])
    unused = img.copy()
    unused[7] = np.nan                              # an unlabelled row is not part of this task
    assert zeroshot.zero_shot_accuracy(unused, class_emb, labels) == zeroshot.zero_shot_accuracy(img, class_emb, labels)


def test_zero_shot_of_degenerate_and_random_embeddings_is_chance_or_worse():
    labels = np.random.default_rng(26).integers(0, 10, size=2000)
    const = np.tile(random_unit(1, 16, seed=27), (2000, 1))
    out = zeroshot.zero_shot_accuracy(const, const[:10], labels)
    assert out == {"top1": 0.0, "top5": 0.0}        # every class tied with the label ranks ahead
    out = zeroshot.zero_shot_accuracy(random_unit(2000, 16, seed=28), random_unit(10, 16, seed=29), labels)
    assert 0.06 <= out["top1"] <= 0.14 and 0.42 <= out["top5"] <= 0.58   # chance 0.1 and 0.5


class FakeTextTower:
    """Deterministic numpy 'embed_text' that records the batch sizes it is called with."""

    def __init__(self, max_len, dim=12, seed=12):
        rng = np.random.default_rng(seed)
        self.proj = rng.normal(size=(max_len, dim))
        self.bias = rng.normal(size=dim)
        self.calls = []

    def __call__(self, tokens):
        self.calls.append(tokens.shape[0])
        return unit(np.asarray(tokens, np.float64) @ self.proj + self.bias).astype(np.float32)


def test_class_embeddings_are_normalised_mean_of_template_embeddings():
    max_len = 40
    tower = FakeTextTower(max_len)
    names = ["red", "green", "blue"]
    templates = prompts.templates_for("color")
    got = zeroshot.class_embeddings(tower, names, templates, functools.partial(encode_batch, max_len=max_len),
                                    batch_size=4)
    assert got.shape == (3, 12) and got.dtype == np.float32
    assert set(tower.calls) == {4}                                 # every call padded to the full chunk
    for c, name in enumerate(names):
        per_template = unit(tower(encode_batch([t.format(name) for t in templates], max_len)))
        np.testing.assert_allclose(got[c], unit(per_template.mean(0)), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


def test_embed_in_chunks_pads_and_drops_padding():
    calls = []

    def embed(x):
        calls.append(x.shape[0])
        return np.asarray(x, np.float32).reshape(x.shape[0], -1) * 2.0

    x = np.arange(7 * 3).reshape(7, 3)
    np.testing.assert_array_equal(zeroshot.embed_in_chunks(embed, x, 3), 2.0 * x)
    assert calls == [3, 3, 3]


# ----------------------------------------------------------------------------- runner


def _toy_eval_set(n=10, size=4):
    """Eval set whose fake towers embed pair i to the same one-hot vector e_i (perfect model):
    image i has pixel value i, caption i reads 'caption i', which the fake tokenizer maps to [i]."""
    from jaxclr.data.eval_stream import ArraySplit
    from jaxclr.evals.tasks import EvalSet, ZeroShotTask

    image = np.zeros((n, size, size, 3), np.uint8)
    image[:, 0, 0, 0] = np.arange(n)
    split = ArraySplit({"image": image, "caption": [f"caption {i}" for i in range(n)],
                        "labels": {"digit": np.arange(n) % 3, "color": -np.ones(n, np.int32)}})
    tasks = (ZeroShotTask("digit", "digit", ("zero", "one", "two"), ("a handwritten digit {}", "the digit {name}")),
             ZeroShotTask("color", "color", ("red",), tuple(prompts.templates_for("color"))))
    return EvalSet(split, tasks)


def _last_number_tokenize(texts):
    """Fake tokenizer: a caption's trailing number (its pair index); a prompt -> the index of
    its digit name in ('zero', 'one', 'two'), so class c's prompts all embed to e_c."""
    out = []
    for text in texts:
        word = text.split()[-1]
        out.append(int(word) if word.isdigit() else next(i for i, d in enumerate(("zero", "one", "two")) if d in text))
    return np.array(out, np.int32)[:, None]


class _OneHotTower:
    def __init__(self, dim, key):
        self.dim, self.key, self.calls = dim, key, []

    def __call__(self, x):
        self.calls.append(x.shape[0])
        return np.eye(self.dim, dtype=np.float32)[self.key(x) % self.dim]


def _towers():
    return _OneHotTower(16, lambda x: x[:, 0, 0, 0].astype(int)), _OneHotTower(16, lambda x: x[:, 0].astype(int))


def test_run_evals_embeds_once_and_names_metrics():
    from jaxclr.evals import runner

    eval_set = _toy_eval_set()
    cfg = eval_cfg(batch_size=4, evaluators=("zeroshot", "retrieval", "geometry"), geometry_max_points=None)
    embed_image, embed_text = _towers()
    out = runner.run_evals(cfg, eval_set, _last_number_tokenize, embed_image, embed_text)
    assert embed_image.calls == [4, 4, 4]            # eval images embedded once, in padded chunks
    assert set(embed_text.calls) == {4}
    assert {"zeroshot/digit_top1", "zeroshot/digit_top5"} <= set(out)
    assert not any(name.startswith("zeroshot/color") for name in out)   # all labels -1: skipped
    # image i is e_i and the digit classes are e_0, e_1, e_2: images 0, 1, 2 are right (labels i % 3),
    # every other image scores 0 against all three classes, a three-way tie: a miss
    assert out["zeroshot/digit_top1"] == pytest.approx(3 / 10)
    assert out["zeroshot/digit_top5"] == 1.0                             # 3 classes
    for key in ("i2t_R@1", "i2t_R@5", "t2i_R@1", "t2i_R@10"):
        assert out[f"retrieval/{key}"] == 1.0
    assert out["geometry/alignment"] == pytest.approx(0.0, abs=1e-6)
    assert out["geometry/mean_positive_cosine"] == pytest.approx(1.0)
    assert out["geometry/relative_alignment"] == pytest.approx(-2.0)     # 0 - min distance 2 (orthogonal)
    # tolerance: images sharing a digit (i % 3) are distinct one-hot vectors, cosine 0
    assert out["geometry/tolerance_digit"] == pytest.approx(0.0, abs=1e-12)
    assert "geometry/tolerance_color" not in out                          # no labelled colour


@pytest.mark.parametrize("embedding", ["nan", "constant"])
def test_run_evals_gives_a_broken_model_no_score(embedding):
    """NaN towers: every metric NaN. Collapsed towers (one unit vector for everything): zero-shot at
    most chance, Recall@k = 0 for k < N, uniformity at its worst (0)."""
    from jaxclr.evals import runner

    eval_set = _toy_eval_set()
    cfg = eval_cfg(batch_size=4, evaluators=("zeroshot", "retrieval", "geometry"), geometry_max_points=None)
    vector = np.full(16, np.nan, np.float32) if embedding == "nan" else random_unit(1, 16, seed=34)[0]
    tower = lambda x: np.tile(vector, (x.shape[0], 1))
    out = runner.run_evals(cfg, eval_set, _last_number_tokenize, tower, tower)
    assert out and {name.split("/")[0] for name in out} == {"zeroshot", "retrieval", "geometry"}
    if embedding == "nan":
        assert all(np.isnan(value) for value in out.values())
        return
    assert out["zeroshot/digit_top1"] <= 1 / 3 and out["zeroshot/digit_top1"] == 0.0
    for direction in ("i2t", "t2i"):       # N = 10 pairs: every partner ranks last, 10th
        assert (out[f"retrieval/{direction}_R@1"], out[f"retrieval/{direction}_R@5"]) == (0.0, 0.0)
        assert out[f"retrieval/{direction}_R@10"] == 1.0
    assert out["geometry/uniformity_img"] == pytest.approx(0.0, abs=1e-6)
    assert out["geometry/tolerance_digit"] == pytest.approx(1.0)         # collapsed: maximal tolerance


def test_evaluators_run_standalone_and_unknown_name_raises():
    import dataclasses

    from jaxclr.evals import runner

    eval_set = _toy_eval_set()
    cfg = eval_cfg(batch_size=4, evaluators=("retrieval",), recall_ks=(1, 2))
    (evaluator,) = runner.build_evaluators(cfg, eval_set, _last_number_tokenize)
    assert dict(evaluator.run(*_towers())) == {
        "retrieval/i2t_R@1": 1.0, "retrieval/i2t_R@2": 1.0, "retrieval/t2i_R@1": 1.0, "retrieval/t2i_R@2": 1.0}
    with pytest.raises(ValueError, match="known: .*geometry.*retrieval.*zeroshot"):
        runner.build_evaluators(eval_cfg(evaluators=("retreival",)), eval_set, _last_number_tokenize)
    no_digit = dataclasses.replace(eval_set, tasks=eval_set.tasks[1:])
    (zeroshot_evaluator,) = runner.build_evaluators(eval_cfg(evaluators=("zeroshot",)), no_digit, _last_number_tokenize)
    with pytest.raises(ValueError, match="no class names"):
        dict(zeroshot_evaluator.run(*_towers()))
