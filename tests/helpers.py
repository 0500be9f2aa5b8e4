"""Helpers shared by tests of several folders: tiny configs, metrics files, embeddings, image bytes."""
import glob
import io
import json
import os
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image

from jaxclr import config as configlib
from jaxclr.data import datasets, eval_stream, shapes
from jaxclr.data.text import tokenizer
from jaxclr.trainer import optim

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(glob.glob(os.path.join(REPO_ROOT, "configs", "*.py")))


def colour_mask(image, colour):
    """Pixels within the per-object jitter (+-12) of a palette colour."""
    rgb = shapes._RGB[shapes.COLORS.index(colour)]
    return np.all(np.abs(image.astype(np.int32) - rgb) <= 12, axis=-1)


def centroid(mask):
    ys, xs = np.nonzero(mask)
    return ys.mean(), xs.mean()


DESC = re.compile(r'a (?:(small|medium|large) )?(?:(' + '|'.join(shapes.COLORS) + r') )?('
                   + '|'.join(shapes.SHAPES) + r')\b')


def objects(example):
    n = int(example['num_objects'])
    return [(shapes.SIZES[example['sizes'][k]], shapes.COLORS[example['colors'][k]],
             shapes.SHAPES[example['shapes'][k]]) for k in range(n)]


def read_metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def tiny_run_config(data_dir):
    c = configlib.load("configs/clip.py:tiny")
    # 64 training examples: small enough that 24 steps of batch 32 memorise them, so the
    # loss leaves chance (ln 32) well inside the test; on 512 it is still at chance there.
    c.data.update(data_dir=data_dir, num_train=64, num_test=64, image_size=32, eval_examples=64)
    c.model.image.update(patch_size=16, width=32, depth=1, heads=2)
    c.model.text.update(width=32, depth=1, heads=2)
    c.model.embed_dim = 32
    c.optim.update(lr=3e-3, warmup_steps=4)
    c.train.update(batch_size=32, total_steps=24, log_every=4)
    c.checkpoint.every = 8
    c.eval.update(every=12, batch_size=32)
    return c


def check_caption(image, caption, example):
    """Asserts that the caption is true of the image: attributes, positions and relations.

    Mentioned sizes/colours (either may be left out) and shapes must be those of the rendered
    objects; each description is matched to the object(s) it can denote, and positions and
    relations are checked on the pixels of the objects' colours.
    """
    objs = objects(example)
    descs = [m.groups() for m in DESC.finditer(caption)]
    assert len(descs) == len(objs), (caption, objs)
    present = {c for c in shapes.COLORS if colour_mask(image, c).sum() > 0}
    assert present == {o[1] for o in objs}, (caption, present)
    matches = [[k for k, o in enumerate(objs) if all(d is None or d == v for d, v in zip(desc, o))]
               for desc in descs]
    assert all(matches), (caption, objs)
    size = image.shape[0]
    if len(objs) == 1:
        cy, cx = centroid(colour_mask(image, objs[0][1]))
        row, col = int(cy * 3 // size), int(cx * 3 // size)
        assert any(p in caption for p in shapes._POSITIONS[row][col]), (caption, row, col)
        return
    if objs[0][1] == objs[1][1] or len(matches[0]) != 1:
        return   # the described objects cannot be told apart on the pixels
    first = objs[matches[0][0]]
    second = objs[1 - matches[0][0]]
    (y0, x0), (y1, x1) = (centroid(colour_mask(image, o[1])) for o in (first, second))  # caption order
    # Where the first-mentioned object is, by relation phrase: at the caption start, or inside it.
    at_start = {'to the right of': 'left', 'to the left of': 'right', 'underneath': 'above', 'above': 'below'}
    inside = {'to its right': 'left', 'to its left': 'right', 'to the left of': 'left',
              'to the right of': 'right', 'above': 'above', 'below': 'below', 'beneath': 'below'}
    start = [p for p in at_start if caption.startswith(p)]
    where = at_start[start[0]] if start else inside[next(p for p in inside if p in caption)]
    expect = {'left': x0 < x1, 'right': x0 > x1, 'above': y0 < y1, 'below': y0 > y1}
    assert expect[where], (caption, (y0, x0), (y1, x1))


def all_examples(cfg, split):
    src = datasets.data_source(cfg.data, split)
    return [src[i] for i in range(len(src))]


def make_config(data_dir, **overrides):
    data = {'name': 'jaxclr_shapes', 'data_dir': str(data_dir), 'image_size': 32, 'num_train': 64,
            'num_test': 32, 'build_seed': 0, 'max_len': 80, 'train_split': 'train', 'eval_split': 'test',
            'flip': True, 'worker_count': 0, 'prefetch': 8, 'eval_examples': 2000,
            'tokenizer': 'bytes', 'tokenizer_model': '', 'lowercase': False, 'eval_resize': 'crop_bilinear'}
    data.update(overrides)
    return ml_collections.ConfigDict({'seed': 0, 'data': data})


def eval_records(config) -> dict:
    """The eval split as the evaluators read it (eval_stream), gathered: 'image', 'captions' (all of
    each image's), 'caption' (the first), 'labels'; RuntimeError when no record is readable."""
    batches = list(eval_stream.eval_split(config).batches(64))
    if not batches:
        raise RuntimeError('No readable eval examples')
    captions = [c for b in batches for c in b['captions']]
    return {'image': np.concatenate([b['image'] for b in batches]), 'captions': captions,
            'caption': [c[0] for c in captions],
            'labels': {t: np.concatenate([b['labels'][t] for b in batches]) for t in batches[0]['labels']}}


def write(path, data: bytes):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
        f.write(data)


def encode(array, fmt='PNG', **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def solid(colour, h=12, w=16):
    return np.broadcast_to(np.array(colour, np.uint8), (h, w, 3)).copy()


COLOURS = {name: (20 + 30 * i, 200 - 25 * i, 7 * i) for i, name in enumerate('abcdefgh')}


def random_unit(n, d, seed):
    return unit(np.random.default_rng(seed).normal(size=(n, d))).astype(np.float32)


def unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def flat(params):
    return {"/".join(optim.path_names(p)): leaf for p, leaf in jax.tree_util.tree_leaves_with_path(params)}


def logged_steps(workdir):
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line)["step"] for line in f if '"loss"' in line]


def random_batch(config, n=32, seed=0):
    """A host batch of `n` random images and token ids for `config` (uint8 images, ids of the byte tokenizer)."""
    rng = np.random.default_rng(seed)
    size = config.data.image_size
    return {"image": rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8),
            "text": rng.integers(3, 259, (n, config.data.max_len), dtype=np.int32)}


def set_log_scale(params, value):
    """`params` with the logit log-scale set to `value`."""
    return jax.tree_util.tree_map_with_path(
        lambda p, leaf: jnp.full_like(leaf, value) if optim.path_names(p)[-1] == "log_scale" else leaf, params)

# The special ids jaxclr's tokenizers give the text tower (TwoTower / TextTransformer keywords).
TOKEN_IDS = dict(pad_id=tokenizer.PAD, eos_id=tokenizer.EOS)


def eval_cfg(**overrides) -> ml_collections.ConfigDict:
    """The `eval` section of configs/clip.py:tiny with `overrides` (evaluator tests set a few keys)."""
    cfg = configlib.load("configs/clip.py:tiny").eval
    cfg.update(overrides)
    return cfg


def prepare_builders(data_dir: str, *builder_classes) -> str:
    """Prepares each (fake) TFDS builder class in `data_dir` as array_record files; returns data_dir."""
    import tensorflow_datasets as tfds
    for cls in builder_classes:
        cls(data_dir=data_dir, file_format="array_record").download_and_prepare(
            file_format="array_record", download_config=tfds.download.DownloadConfig())
    return data_dir
