"""data.eval_resize: resize_image's modes against Hugging Face's CLIP and SigLIP image processors
on real photos, and every eval reader (eval split, zero-shot, retrieval, probe) resizing as it says."""
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from jaxclr import config as configlib
from jaxclr.data import datasets, eval_stream, pipeline, resize
from jaxclr.evals import tasks
from jaxclr.trainer import validate


def _photos():
    """Non-square real photos: scikit-learn's two samples (427 x 640), turned, cut to odd sizes, small."""
    from sklearn.datasets import load_sample_images

    out = []
    for photo in load_sample_images().images:
        out += [photo, photo.transpose(1, 0, 2), photo[3:304, 10:467], photo[:333, :500].transpose(1, 0, 2),
                photo[100:150, 200:281]]   # the last one is upscaled
    return [np.ascontiguousarray(p) for p in out]


def _old_resize(image, size):
    """The eval resize before data.eval_resize existed (pipeline._to_rgb): centre square, bilinear."""
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = Image.fromarray(np.ascontiguousarray(image[top:top + side, left:left + side]))
    return np.asarray(crop.resize((size, size), Image.BILINEAR))


def test_default_mode_is_the_old_resize_and_every_mode_gives_a_square():
    assert resize.DEFAULT == "crop_bilinear" and set(resize.MODES) == {"crop_bilinear", "clip", "squash"}
    for photo in _photos():
        np.testing.assert_array_equal(resize.resize_image(photo, 37), _old_resize(photo, 37))
        np.testing.assert_array_equal(pipeline._to_rgb(photo, 37), _old_resize(photo, 37))
        for mode in resize.MODES:
            out = resize.resize_image(photo, 37, mode)
            assert out.shape == (37, 37, 3) and out.dtype == np.uint8
            assert resize.resize_image(out, 37, mode) is out   # already the size: unchanged
    assert resize.clip_resized_shape(427, 640, 224) == (224, 335)   # 335.7 truncated, as HF and torchvision
    assert resize.clip_resized_shape(640, 427, 224) == (335, 224)
    with pytest.raises(ValueError, match="unknown resize mode 'bicubic'"):
        resize.resize_image(_photos()[0], 8, "bicubic")


def _processor(name, **kwargs):
    """The PIL backend of a transformers image processor (what CLIPImageProcessor is without torchvision)."""
    transformers = pytest.importorskip("transformers")
    cls = getattr(transformers, f"{name}Pil", None) or getattr(transformers, name)
    return cls(do_normalize=False, do_rescale=False, **kwargs)


@pytest.mark.parametrize("size", [224, 97, 64])
def test_clip_and_squash_equal_transformers_processors(size):
    """Our uint8 output equals the HF processors' exactly (max difference 0) on every photo and size."""
    clip = _processor("CLIPImageProcessor", size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    siglip = _processor("SiglipImageProcessor", size={"height": size, "width": size})
    worst = 0
    for photo in _photos():
        for mode, processor in (("clip", clip), ("squash", siglip)):
            theirs = np.asarray(processor(images=photo, return_tensors="np")["pixel_values"][0]).transpose(1, 2, 0)
            ours = resize.resize_image(photo, size, mode)
            assert theirs.shape == ours.shape == (size, size, 3)
            worst = max(worst, float(np.abs(theirs.astype(np.float64) - ours).max()))
    assert worst == 0.0


class WidePhotos(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Non-square photos with a caption and a label: eval split, zero-shot and retrieval dataset."""
    VERSION = tfds.core.Version("1.0.0")
    code_path = None

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)), "caption": tfds.features.Text(),
            "label": tfds.features.ClassLabel(names=["china", "flower"])}))

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"test": self._generate_examples()}

    def _generate_examples(self):
        for i, photo in enumerate(_photos()[:4] + _photos()[5:9]):
            small = np.asarray(Image.fromarray(photo).reduce(4))   # PNG-encoded: kept exactly
            yield i, {"image": Image.fromarray(small), "caption": f"photo {i}", "label": i // 4}


@pytest.fixture(scope="module")
def wide_config(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("wide_tfds"))
    WidePhotos(data_dir=data_dir, file_format="array_record").download_and_prepare(
        file_format="array_record", download_config=tfds.download.DownloadConfig())
    c = configlib.load("configs/clip.py:tiny")
    c.data.update(data_dir=data_dir, name="wide_photos", image_size=32, train_split="test", eval_split="test")
    c.eval.update(evaluators=("retrieval", "linear_probe"), zeroshot_datasets=("wide_photos",),
                  retrieval_datasets=("wide_photos:test",))
    return c


def _images(split):
    return np.concatenate([b["image"] for b in split.batches(3)])


def test_eval_resize_sets_how_every_eval_reader_resizes(wide_config):
    source = datasets.data_source(wide_config.data, "test")
    originals = [source[i]["image"] for i in range(len(source))]
    assert all(o.shape[0] != o.shape[1] for o in originals)
    train = pipeline.standardizer(wide_config.data, with_labels=False)
    seen = {}
    for mode in resize.MODES:
        wide_config.data.eval_resize = mode
        expected = np.stack([resize.resize_image(o, 32, mode) for o in originals])
        eval_set = tasks.eval_set(wide_config)
        readers = {"eval split": eval_set.split, "zero-shot": eval_set.zeroshot[0].split,
                   "retrieval": eval_set.retrieval[0].split, "probe": eval_set.probe_split,
                   "eval_stream": eval_stream.eval_split(wide_config)}
        for name, split in readers.items():
            np.testing.assert_array_equal(_images(split), expected, err_msg=f"{mode}: {name}")
        # training resizes as it always did, whatever data.eval_resize says
        np.testing.assert_array_equal(train(source[0])["image"], resize.resize_image(originals[0], 32))
        seen[mode] = expected
    for a, b in (("crop_bilinear", "clip"), ("crop_bilinear", "squash"), ("clip", "squash")):
        assert np.abs(seen[a].astype(int) - seen[b]).mean() > 1, (a, b)   # the modes differ visibly


def test_eval_resize_is_validated():
    config = configlib.load("configs/clip.py:tiny")
    config.data.eval_resize = "bicubic"
    (line,) = validate.problems(config, 8)
    assert line.startswith("data.eval_resize: unknown eval resize mode 'bicubic'") and "'squash'" in line
