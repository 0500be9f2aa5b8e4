"""Streamed evals: zero-shot on TFDS datasets read by name, retrieval with several captions per
image, streaming = direct computation, bounded host memory. Fake numpy towers, no model."""
import functools
import tracemalloc

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from jaxclr import config as configlib
from jaxclr.data import datasets, eval_stream, pipeline
from jaxclr.data.text import tokenizer
from jaxclr.evals import classnames, prompts, retrieval, runner, tasks, zeroshot
from jaxclr.evals.embed import EvalEmbeddings
from tests.helpers import eval_cfg, prepare_builders

# (first choice, second choice, label) of each image: 6 right at top-1, 3 right at top-2, 3 wrong
CHOICES = [(0, 1, 0), (1, 2, 1), (2, 3, 2), (3, 4, 3), (4, 5, 4), (5, 6, 5),
           (6, 7, 7), (7, 8, 8), (8, 9, 9), (9, 0, 3), (0, 2, 5), (1, 3, 6)]


def _examples():
    for i, (first, second, label) in enumerate(CHOICES):
        image = np.zeros((32, 32, 3), np.uint8)
        image[..., 0], image[..., 1] = 20 * first, 20 * second
        yield i, {"id": f"img{i}", "image": Image.fromarray(image), "label": label}   # PIL: PNG without TF


class Cifar10(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A 12-image stand-in with cifar10's name, version and features (read back by TFDS's cifar10)."""
    VERSION = tfds.core.Version("3.0.2")
    code_path = None   # nothing downloaded: no checksums file to find (see shapes.JaxclrShapes)

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "id": tfds.features.Text(), "image": tfds.features.Image(shape=(32, 32, 3)),
            "label": tfds.features.ClassLabel(names=list(classnames.CIFAR10))}))

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"test": self._generate_examples()}

    def _generate_examples(self):
        yield from _examples()


class TinyLabels(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """An unknown dataset: its ClassLabel names are used (underscores -> spaces)."""
    VERSION = tfds.core.Version("1.0.0")
    code_path = None

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(32, 32, 3)),
            "label": tfds.features.ClassLabel(names=["pickup_truck", "maple_tree", "sea"])}))

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"validation": self._generate_examples()}

    def _generate_examples(self):
        for i in range(5):
            yield i, {"image": Image.fromarray(np.full((32, 32, 3), 20 * (i % 3), np.uint8)), "label": i % 3}


@pytest.fixture(scope="module")
def zs_data_dir(tmp_path_factory):
    return prepare_builders(str(tmp_path_factory.mktemp("zs_tfds")), Cifar10, TinyLabels)


def _one_hot_pair(images):
    """Fake image tower: unit vector 0.8 e_first + 0.6 e_second from the image's first pixel."""
    out = np.zeros((len(images), 10), np.float32)
    rows = np.arange(len(images))
    out[rows, images[:, 0, 0, 0] // 20] += 0.8
    out[rows, images[:, 0, 0, 1] // 20] += 0.6
    return out


class ClassNameTokenizer:
    """Fake tokenizer: a prompt -> [index of the (longest) class name it contains]; records prompts."""

    def __init__(self, names):
        self.names, self.seen = list(names), []

    def __call__(self, texts):
        self.seen.extend(texts)
        return np.array([[self.names.index(max((n for n in self.names if n in t), key=len))] for t in texts])


def _config(data_dir, entries):
    c = configlib.load("configs/clip.py:tiny")
    c.data.update(data_dir=data_dir, image_size=32, num_train=64, num_test=32, eval_examples=64)
    c.eval.update(batch_size=5, zeroshot_datasets=entries)
    return c


def _zeroshot_results(split: tasks.ZeroShotSplit, tokenize):
    eval_set = tasks.EvalSet(eval_stream.ArraySplit({"image": np.zeros((1, 32, 32, 3), np.uint8)}), (), (split,))
    (evaluator,) = runner.build_evaluators(eval_cfg(batch_size=5, evaluators=("zeroshot",)), eval_set, tokenize)
    text = lambda tokens: np.eye(10, dtype=np.float32)[tokens[:, 0]]
    return dict(evaluator.run(_one_hot_pair, text))


def test_zero_shot_by_name_uses_shipped_cifar10_names_and_templates(zs_data_dir):
    split = tasks.zeroshot_split("cifar10", _config(zs_data_dir, ("cifar10",)).data)
    assert split.tasks[0].name == "cifar10" and split.split.num_examples == 12
    tokenize = ClassNameTokenizer(classnames.CIFAR10)
    out = _zeroshot_results(split, tokenize)
    # top-1: the first choice is the label for 6 of 12; top-5: the label is first or second for 9
    # (every other class scores 0, tied with 7 more: ranked 9th)
    assert out == {"zeroshot/cifar10_top1": 0.5, "zeroshot/cifar10_top5": 0.75}
    assert len(prompts.CIFAR_TEMPLATES) == 18
    assert sorted(tokenize.seen) == sorted(t.format(n) for n in classnames.CIFAR10 for t in prompts.CIFAR_TEMPLATES)


def test_zero_shot_generic_dataset_uses_label_names_and_default_templates(zs_data_dir):
    split = tasks.zeroshot_split("tiny_labels:validation", _config(zs_data_dir, ()).data)
    names = ("pickup truck", "maple tree", "sea")
    assert split.tasks == (tasks.ZeroShotTask("tiny_labels_validation", "label", names, prompts.DEFAULT_TEMPLATES),)
    tokenize = ClassNameTokenizer(names)
    out = _zeroshot_results(split, tokenize)
    # image i shows class i % 3 first (second choice the same, so one-hot): all 5 right
    assert out == {"zeroshot/tiny_labels_validation_top1": 1.0, "zeroshot/tiny_labels_validation_top5": 1.0}
    assert set(tokenize.seen) == {t.format(n) for n in names for t in prompts.DEFAULT_TEMPLATES}


def test_eval_set_of_config_reads_zeroshot_datasets(zs_data_dir):
    """eval.zeroshot_datasets adds one task per entry (and nothing when empty)."""
    assert tasks.eval_set(_config(zs_data_dir, ())).zeroshot == ()
    got = tasks.eval_set(_config(zs_data_dir, ("cifar10", "tiny_labels:validation")))
    assert [z.entry for z in got.zeroshot] == ["cifar10", "tiny_labels:validation"]
    assert set(got.class_names()) == {"color", "shape", "cifar10", "tiny_labels_validation"}
    with pytest.raises(ValueError, match="'train' is not a split of tiny_labels"):
        tasks.zeroshot_split("tiny_labels:train", _config(zs_data_dir, ()).data)


def test_entry_parsing_and_known_names():
    assert tasks.parse_entry("cifar10") == ("cifar10", None)
    assert tasks.parse_entry("cifar10:test") == ("cifar10", "test")
    assert tasks.parse_entry("cifar10:3.0.2") == ("cifar10:3.0.2", None)
    assert tasks.parse_entry("my_ds/cfg:1.0.0:validation") == ("my_ds/cfg:1.0.0", "validation")
    assert tasks.base_name("imagenet2012/x:5.1.0") == "imagenet2012"
    names, templates = tasks.names_and_templates("imagenet2012", [f"n{i:08d}" for i in range(1000)])
    assert len(names) == 1000 and len(templates) == 80 and len(set(templates)) == 80
    assert (names[0], names[1], names[999]) == ("tench", "goldfish", "toilet paper")   # n01440764, n01443537, n15075141
    assert tuple(classnames.CIFAR100) == tuple(sorted(classnames.CIFAR100))   # CIFAR-100 fine labels are alphabetical
    with pytest.raises(ValueError, match="100 classes, but the shipped cifar10 class names are 10"):
        tasks.names_and_templates("cifar10", ["x"] * 100)


# ----------------------------------------------------------------------------- retrieval

CAPTION_VECTORS = {"c0a": (1, 0, 0), "c0b": (0.2, 0.9, 0.1), "c1a": (0, 0.3, 0.9),
                   "c1b": (0.5, 0.4, 0.6), "c2a": (0, 0, 1), "c2b": (0.7, 0.1, 0.2)}


def test_retrieval_with_two_captions_per_image_hand_computed():
    """Images e0, e1, e2; caption scores against the images are their components. Text queries:
    own image ranked 0, 1, 1, 2, 0, 1 -> t2i R@1 2/6, R@2 5/6. Image queries (best own caption):
    img0 c0a (1.0, first), img1 c1b (0.456, behind c0b's 0.970), img2 c2a (1.0) -> i2t R@1 2/3."""
    names = list(CAPTION_VECTORS)
    table = np.array([np.asarray(v) / np.linalg.norm(v) for v in CAPTION_VECTORS.values()], np.float32)
    images = np.zeros((3, 2, 2, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(3)
    split = eval_stream.ArraySplit({"image": images, "captions": [names[0:2], names[2:4], names[4:6]]})
    eval_set = tasks.EvalSet(split)
    out = runner.run_evals(eval_cfg(batch_size=2, evaluators=("retrieval",), recall_ks=(1, 2, 3)), eval_set,
                           lambda texts: np.array([[names.index(t)] for t in texts]),
                           lambda x: np.eye(3, dtype=np.float32)[x[:, 0, 0, 0]], lambda t: table[t[:, 0]])
    assert out == pytest.approx({"retrieval/i2t_R@1": 2 / 3, "retrieval/i2t_R@2": 1.0, "retrieval/i2t_R@3": 1.0,
                                 "retrieval/t2i_R@1": 2 / 6, "retrieval/t2i_R@2": 5 / 6, "retrieval/t2i_R@3": 1.0})


def test_identical_captions_of_different_images_share_a_group():
    emb = EvalEmbeddings(image=np.zeros((3, 2)), text=np.zeros((5, 2)), text_image=np.array([0, 0, 1, 2, 2]),
                         text_group=np.array([0, 1, 2, 1, 3]))
    np.testing.assert_array_equal(emb.image_groups(), [[0, 1], [2, -1], [1, 3]])
    img = np.eye(3, dtype=np.float32)
    # caption 1 (group 1) belongs to images 0 and 2: a query of it hits at rank 0 with either
    ranks = retrieval.positive_ranks(img[[2]], np.array([1]), img, emb.image_groups())
    assert ranks.tolist() == [0]


# ----------------------------------------------------------------------------- streaming


def _proj_towers(max_len, dim=8):
    rng = np.random.default_rng(0)
    pimg, ptxt = rng.normal(size=(32 * 32 * 3, dim)), rng.normal(size=(max_len, dim))
    unit = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return (lambda x: unit(x.reshape(len(x), -1).astype(np.float64) / 255 @ pimg),
            lambda t: unit(t.astype(np.float64) @ ptxt))


def test_streamed_eval_equals_whole_split_computation(data_dir):
    config = _config(data_dir, ())
    config.eval.update(batch_size=7, evaluators=("zeroshot", "retrieval"))
    eval_set = tasks.eval_set(config)
    tokenize = tasks.tokenize_fn(config.data)
    embed_image, embed_text = _proj_towers(config.data.max_len)
    got = runner.run_evals(config.eval, eval_set, tokenize, embed_image, embed_text)
    # the old way: every record of the split in memory, embedded at once
    src = datasets.data_source(config.data, "test")
    records = [src[i] for i in range(len(src))]
    img = embed_image(np.stack([r["image"] for r in records]))
    captions = [r["caption"].decode() for r in records]
    txt = embed_text(tokenizer.encode_batch(captions, config.data.max_len))
    groups = np.unique(captions, return_inverse=True)[1]
    want = {f"retrieval/{k}": v for k, v in retrieval.recall_at_k(img, txt, groups, groups).items()}
    labels = [datasets.task_labels_fn(config.data)(r) for r in records]
    for task in eval_set.tasks:
        class_emb = zeroshot.class_embeddings(embed_text, task.class_names, task.templates, tokenize, 64)
        acc = zeroshot.zero_shot_accuracy(img, class_emb, np.array([lab[task.label] for lab in labels]))
        want.update({f"zeroshot/{task.name}_top1": acc["top1"], f"zeroshot/{task.name}_top5": acc["top5"]})
    assert got.keys() == want.keys() and got == pytest.approx(want, abs=1e-6)


class SyntheticSource:
    """n records made on the fly: a 128x128 image whose first pixel is i % 251, two captions, a label."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        image = np.full((128, 128, 3), i % 251, np.uint8)
        return {"image": image, "caption": np.array([f"c{i} a".encode(), f"c{i} b".encode()], dtype=object),
                "label": i % 10}


def _peak_eval_bytes(n):
    standardize = pipeline.Standardize(128, label_fn=lambda ex: {"label": int(ex["label"])})
    split = eval_stream.RecordSplit(SyntheticSource(n), standardize, n, ("label",), threads=1)
    task = tasks.ZeroShotTask("label", "label", tuple(f"class{i}" for i in range(10)), ("a {}",))
    eval_set = tasks.EvalSet(split, (task,))
    embed_image = lambda x: np.eye(8, dtype=np.float32)[x[:, 0, 0, 0] % 8]
    embed_text = lambda t: np.eye(8, dtype=np.float32)[t[:, 1] % 8]
    tokenize = functools.partial(tokenizer.encode_batch, max_len=16)
    cfg = eval_cfg(batch_size=50, evaluators=("zeroshot", "retrieval"))
    tracemalloc.start()
    try:
        out = runner.run_evals(cfg, eval_set, tokenize, embed_image, embed_text)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert set(out) == {"zeroshot/label_top1", "zeroshot/label_top5"} | {
        f"retrieval/{d}_R@{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)}
    return peak


def test_streamed_eval_host_memory_is_bounded_by_a_batch():
    small, large = _peak_eval_bytes(200), _peak_eval_bytes(2000)
    whole_split = 2000 * 128 * 128 * 3   # what holding the images of the split would take (98 MB)
    print(f"peak traced host memory: {small / 2**20:.1f} MiB (200 images), {large / 2**20:.1f} MiB (2000)")
    assert large < 1.5 * small and large < whole_split / 5


def test_zero_shot_tally_over_batches_equals_one_pass():
    rng = np.random.default_rng(3)
    img, class_emb = rng.normal(size=(50, 6)).astype(np.float32), rng.normal(size=(7, 6)).astype(np.float32)
    labels = rng.integers(-1, 7, size=50)
    tally = zeroshot.ZeroShotTally(class_emb)
    for start in range(0, 50, 8):
        tally.add(img[start:start + 8], labels[start:start + 8])
    assert tally.result() == zeroshot.zero_shot_accuracy(img, class_emb, labels)
    tally.add(np.full((1, 6), np.nan, np.float32), np.array([2]))   # one broken labelled image: no score
    assert np.isnan(tally.result()["top1"]) and np.isnan(tally.result()["top5"])
