"""eval.retrieval_datasets: image<->text Recall@K on whole TFDS splits, read by name.

A tiny prepared 'coco_captions' with TFDS coco_captions' exact feature layout (its builder in
tensorflow_datasets/object_detection/coco.py and coco_captions.py: config '2014', version 1.1.0,
captions a Sequence of {'id', 'text'} records) is read by name; fake numpy towers; the metrics
are compared with a direct numpy Recall@K on the same embeddings.
"""
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from jaxclr import config as configlib
from jaxclr.data import datasets, pipeline
from jaxclr.evals import runner, tasks
from jaxclr.trainer import validate
from tests.helpers import prepare_builders, unit

# Captions of each image of the 'test' split: 3 to 5 each; 'a photo.' belongs to images 1 and 4
# (identical captions are partners of both images).
TEST_CAPTIONS = [
    ["a red kite over a beach", "a kite in the sky", "someone flies a kite"],
    ["a dog on a sofa", "a photo.", "a sleepy dog", "a brown dog indoors"],
    ["two cups of coffee", "coffee on a table", "a cafe table", "cups and saucers", "a hot drink"],
    ["a bus in the rain", "a red bus", "a city street"],
    ["a cat on a wall", "a photo.", "a grey cat", "a cat in the sun"],
    ["a bowl of fruit", "apples and pears", "fruit on a counter", "a kitchen scene"],
]
VAL_CAPTIONS = [["a boat on a lake", "a small boat", "calm water"], ["a plate of pasta", "dinner", "a fork"]]
SIZES = [(40, 60), (64, 48), (37, 53), (50, 50), (45, 70), (60, 41)]   # (H, W): non-square, like COCO's


def _examples(captions, offset):
    for i, texts in enumerate(captions):
        h, w = SIZES[i % len(SIZES)]
        image = np.full((h, w, 3), 20 * (i + offset) + 10, np.uint8)   # image i: one grey level (JPEG keeps it)
        yield i, {
            "image": Image.fromarray(image), "image/filename": f"COCO_val2014_{i:012d}.jpg", "image/id": 1000 + i,
            "objects": [{"id": 7 * i + j, "area": 100 + j, "bbox": tfds.features.BBox(0.1, 0.2, 0.5, 0.6),
                         "label": (i + j) % 80, "is_crowd": False} for j in range(i % 3)],
            "captions": [{"id": 100 * i + j, "text": text} for j, text in enumerate(texts)],
        }


class CocoCaptions(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A stand-in with TFDS coco_captions' name, config, version and features."""
    VERSION = tfds.core.Version("1.1.0")
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="2014")]
    code_path = None   # nothing downloaded: no checksums file to find

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(encoding_format="jpeg"),
            "image/filename": tfds.features.Text(),
            "image/id": np.int64,
            "objects": tfds.features.Sequence({
                "id": np.int64, "area": np.int64, "bbox": tfds.features.BBoxFeature(),
                "label": tfds.features.ClassLabel(num_classes=80), "is_crowd": np.bool_}),
            "captions": tfds.features.Sequence({"text": np.str_, "id": np.int64}),
        }))

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"test": self._generate_examples(TEST_CAPTIONS, 0), "val": self._generate_examples(VAL_CAPTIONS, 6)}

    def _generate_examples(self, captions, offset):
        yield from _examples(captions, offset)


class NoCaptions(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Images and labels only: not a retrieval benchmark."""
    VERSION = tfds.core.Version("1.0.0")
    code_path = None

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(8, 8, 3)), "label": tfds.features.ClassLabel(names=["a", "b"])}))

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"test": self._generate_examples()}

    def _generate_examples(self):
        for i in range(2):
            yield i, {"image": Image.fromarray(np.zeros((8, 8, 3), np.uint8)), "label": i}


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory):
    return prepare_builders(str(tmp_path_factory.mktemp("coco_tfds")), CocoCaptions, NoCaptions)


def _config(data_dir, entries=("coco_captions:test",), **data):
    c = configlib.load("configs/clip.py:tiny")
    data = {"caption_feature": "captions", **data}
    c.data.update(data_dir=data_dir, name="coco_captions", eval_split="val", image_size=32,
                  eval_examples=1, **data)   # eval_examples: only the eval split's first image
    c.eval.update(batch_size=4, evaluators=("retrieval",), recall_ks=(1, 2, 5), retrieval_datasets=entries)
    return c


class FakeModel:
    """Image i (grey level 20 i + 10) -> a random unit vector; a caption -> its image's vector plus
    noise (a caption of two images: the mean of theirs), so Recall@1 is neither 0 nor 1."""

    def __init__(self, captions, dim=8, noise=0.9, seed=0):
        rng = np.random.default_rng(seed)
        self.image_table = unit(rng.normal(size=(len(captions), dim)))
        self.ids = {}   # caption string -> token id
        owners = {}
        for i, texts in enumerate(captions):
            for text in texts:
                self.ids.setdefault(text, len(self.ids))
                owners.setdefault(text, []).append(i)
        self.text_table = np.stack([unit(self.image_table[owners[t]].mean(0) + noise * rng.normal(size=dim))
                                    for t in self.ids])

    def embed_image(self, images):
        key = np.rint((images[:, :, :, 0].mean(axis=(1, 2)) - 10) / 20).astype(int)
        return self.image_table[np.clip(key, 0, len(self.image_table) - 1)].astype(np.float32)

    def tokenize(self, texts):
        return np.array([[self.ids[t]] for t in texts], np.int32)

    def embed_text(self, tokens):
        return self.text_table[tokens[:, 0]].astype(np.float32)


def reference_recall(model, captions, ks):
    """Recall@K in float64 numpy: a query hits when a partner (an image and a caption string it
    has) is in its top k; every non-partner scoring >= the best partner ranks ahead of it."""
    texts = [t for row in captions for t in row]   # one caption per (image, caption) pair, as read
    img = model.image_table[:len(captions)]   # the split's images: the first rows
    txt = model.text_table[[model.ids[t] for t in texts]]
    partner = np.array([[t in row for t in texts] for row in captions])   # [images, captions]
    scores = img @ txt.T

    def ranks(s, p):
        best = np.where(p, s, -np.inf).max(axis=1, keepdims=True)
        return np.sum(~p & (s >= best), axis=1)

    i2t, t2i = ranks(scores, partner), ranks(scores.T, partner.T)
    return {f"{d}_R@{k}": float(np.mean(r < k)) for d, r in (("i2t", i2t), ("t2i", t2i)) for k in ks}


def test_metrics_equal_numpy_recall_on_the_whole_split_and_counts_are_logged(coco_dir, capsys):
    config = _config(coco_dir)
    eval_set = tasks.eval_set(config)
    assert [r.entry for r in eval_set.retrieval] == ["coco_captions:test"]
    model = FakeModel(TEST_CAPTIONS + VAL_CAPTIONS)
    out = runner.run_evals(config.eval, eval_set, model.tokenize, model.embed_image, model.embed_text)
    n_captions = sum(map(len, TEST_CAPTIONS))
    # the whole split (6 images), though data.eval_examples = 1 caps the eval split
    assert out["retrieval/coco_captions_test_images"] == 6
    assert out["retrieval/coco_captions_test_captions"] == n_captions
    assert f"retrieval coco_captions:test: 6 images, {n_captions} captions" in capsys.readouterr().out
    expected = reference_recall(model, TEST_CAPTIONS, (1, 2, 5))
    assert 0 < expected["i2t_R@1"] < 1 and 0 < expected["t2i_R@1"] < 1   # a test that can tell
    assert {k: out[f"retrieval/coco_captions_test_{k}"] for k in expected} == pytest.approx(expected, abs=1e-12)
    # the eval split's own retrieval metrics are still there (1 image: every recall is 1)
    assert {k: out[f"retrieval/{k}"] for k in expected} == {k: 1.0 for k in expected}


def test_captions_fall_back_to_captions_and_training_reads_nested_captions(coco_dir):
    """data.caption_feature='caption' (the default) is no feature of coco_captions: 'captions' is read.
    The train pipeline's standardiser reads the Sequence of {'id', 'text'} records as its texts."""
    config = _config(coco_dir, caption_feature="caption")
    split = tasks.retrieval_split("coco_captions", config.data)   # default split: 'test'
    batches = list(split.split.batches(4))
    expected = sorted(tuple(t) for t in TEST_CAPTIONS)   # TFDS stores the records in its own order
    assert sorted(c for b in batches for c in b["captions"]) == expected
    assert all(b["image"].shape[1:] == (32, 32, 3) for b in batches)
    source = datasets.data_source(_config(coco_dir).data, "test")
    train = pipeline.standardizer(_config(coco_dir).data, with_labels=False)
    assert sorted(train(source[i])["captions"] for i in range(len(source))) == expected
    assert pipeline._captions([{"id": 1, "text": b"one"}, {"id": 2, "text": " "}, {"id": 3, "text": "two"}]) \
        == ("one", "two")


def _retrieval_problems(config):
    return [p for p in validate.problems(config, 8) if p.startswith("eval.retrieval_datasets")]


def test_validation_one_line_per_bad_entry(coco_dir, tmp_path):
    assert _retrieval_problems(_config(coco_dir, ("coco_captions:test", "coco_captions:val", "coco_captions"))) == []
    found = _retrieval_problems(_config(coco_dir, ("coco_captions:dev", "no_captions", "no_such_dataset_xyz:test",
                                                   "coco_captions:test")))
    assert len(found) == 3, found
    assert "'coco_captions:dev': 'dev' is not a split of coco_captions" in found[0]
    assert "'no_captions': no_captions has no caption feature 'captions'" in found[1]
    assert "'no_such_dataset_xyz:test': Unknown dataset" in found[2]
    (line,) = _retrieval_problems(_config(str(tmp_path), ("coco_captions:test",)))
    assert "not prepared in" in line and "array_record" in line
    config = _config(coco_dir)
    config.eval.evaluators = ("zeroshot",)
    (line,) = _retrieval_problems(config)
    assert "only read by the 'retrieval' evaluator" in line
    loose = ml_collections.ConfigDict(_config(coco_dir).to_dict(), type_safe=False)
    loose.eval.retrieval_datasets = "coco_captions"
    (line,) = _retrieval_problems(loose)
    assert "is not a tuple of dataset names" in line
