"""jaxclr_shapes: an embedded TFDS dataset of rendered coloured shapes with captions.

Each image holds one or two non-overlapping objects (about half each) on a plain grey
background; each object has a colour (COLORS), a shape (SHAPES) and a size (SIZES). The
caption describes every object in natural language from several templates: a single
object with its position in a 3 x 3 grid ("a large red circle in the upper left"), two
objects with their relation ("a green square to the left of a small yellow triangle").
All shapes are mirror-symmetric, so a horizontal flip stays true once 'left' and 'right'
are swapped in the caption (see augment.py).

Every example is generated from its own numpy Generator seeded by (build_seed, split,
index), so the data does not depend on generation order.

Splits: 'train' (num_train examples), 'validation' (``validation_count(num_train)`` =
VALIDATION_FRACTION of num_train, at least one, generated like train examples from a split id
of their own, so the train split is the same as before it existed) and 'test' (num_test):
tune on validation, report on test. Images are rendered with numpy
boolean masks and stored as zlib-compressed uint8 tensors (no TensorFlow or PIL needed).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

COLORS = ['red', 'green', 'blue', 'yellow', 'purple', 'orange', 'cyan', 'pink']
_RGB = np.array([
    [215, 35, 35], [35, 165, 55], [40, 75, 225], [240, 220, 40],
    [140, 55, 195], [250, 135, 15], [40, 210, 225], [250, 130, 200],
], np.int32)
SHAPES = ['circle', 'square', 'triangle', 'diamond', 'cross', 'ring']
SIZES = ['small', 'medium', 'large']
DROP_ATTRIBUTE = 1 / 3              # chance that a caption leaves out an object's size (or colour)
_HALF_EXTENT = (0.08, 0.12, 0.17)   # object half-extent as a fraction of the image size
_BOUND = 1.25                       # bounding radius / half-extent (square corners reach 1.2)
_SPLIT_IDS = {'train': 0, 'test': 1, 'validation': 2}
VALIDATION_FRACTION = 0.1
TASKS = {'color': COLORS, 'shape': SHAPES}   # zero-shot tasks: name -> class names
MAX_CAPTION_BYTES = 73   # longest caption ('there is a medium purple triangle to the left of a ...')

# Position phrases for the 3 x 3 grid, indexed [row][col]; several phrasings each.
_POSITIONS = [
    [('in the upper left', 'at the top left'), ('at the top', 'near the top'),
     ('in the upper right', 'at the top right')],
    [('on the left', 'to the left'), ('in the center', 'in the middle'),
     ('on the right', 'to the right')],
    [('in the lower left', 'at the bottom left'), ('at the bottom', 'near the bottom'),
     ('in the lower right', 'at the bottom right')],
]
POSITION_PHRASES = tuple(p for row in _POSITIONS for cell in row for p in cell)   # all 18 phrasings
_SINGLE = [
    '{a} {pos}', 'there is {a} {pos}', '{pos} there is {a}', '{pos} sits {a}',
    'a picture of {a} {pos}', 'the image shows {a} {pos}',
]
_LEFT_RIGHT = [   # {a}: the left object, {b}: the right object
    '{a} to the left of {b}', '{b} to the right of {a}', 'there is {a} to the left of {b}',
    'to the right of {a} sits {b}', 'to the left of {b} is {a}', '{a} and {b} to its right',
]
_ABOVE_BELOW = [  # {a}: the upper object, {b}: the lower object
    '{a} above {b}', '{b} below {a}', 'there is {a} above {b}',
    'underneath {a} is {b}', '{b} beneath {a}', 'above {b} sits {a}',
]



def vocabulary() -> tuple[str, ...]:
    """Every word a caption (or a zero-shot prompt) of this dataset can hold, sorted: the words of
    the caption templates, position phrases, 'a', sizes, colours and shapes ('left' and 'right'
    both, so a flipped caption is covered). data.tokenizer='words' reads it (jaxclr.data.text.words)."""
    texts = (*_SINGLE, *_LEFT_RIGHT, *_ABOVE_BELOW, *POSITION_PHRASES, 'a', *SIZES, *COLORS, *SHAPES)
    return tuple(sorted({w for t in texts for w in t.split() if not w.startswith('{')}))

@dataclasses.dataclass(eq=False)
class ShapesConfig(tfds.core.BuilderConfig):
    """Size and seed of a jaxclr_shapes build; the config name encodes all four."""
    image_size: int = 64
    num_train: int = 50000
    num_test: int = 2000
    build_seed: int = 0

    def __reduce__(self):   # unpickle (e.g. in grain workers) to the cached, registered object
        return shapes_config, (self.image_size, self.num_train, self.num_test, self.build_seed)


def shapes_config(image_size=64, num_train=50000, num_test=2000, build_seed=0) -> ShapesConfig:
    """The ShapesConfig named like 'img64_tr50000_te2000_s0' (configs of any size coexist)."""
    if image_size < 32:
        raise ValueError(f'jaxclr_shapes needs image_size >= 32, got {image_size}')
    return _config(int(image_size), int(num_train), int(num_test), int(build_seed))


@functools.cache
def _config(image_size, num_train, num_test, build_seed) -> ShapesConfig:
    # Cached: tfds requires the very object listed in BUILDER_CONFIGS for the default sizes.
    name = f'img{image_size}_tr{num_train}_te{num_test}_s{build_seed}'
    return ShapesConfig(name=name, image_size=image_size, num_train=num_train,
                        num_test=num_test, build_seed=build_seed)


def validation_count(num_train: int) -> int:
    """Examples of the validation split: VALIDATION_FRACTION of num_train, at least 1."""
    return max(1, int(num_train * VALIDATION_FRACTION))


@functools.lru_cache(maxsize=8)
def _grid(size: int):
    """Pixel-centre coordinates (y, x) as float32 [S, 1] and [1, S]."""
    c = np.arange(size, dtype=np.float32) + 0.5
    return c[:, None], c[None, :]


def shape_mask(shape: int, cy: float, cx: float, r: float, size: int) -> np.ndarray:
    """Boolean [S, S] mask of shape index `shape` centred at (cy, cx) with half-extent r."""
    yy, xx = _grid(size)
    dy, dx = yy - cy, xx - cx
    ady, adx = np.abs(dy), np.abs(dx)
    name = SHAPES[shape]
    if name == 'circle':
        return dy * dy + dx * dx <= r * r
    if name == 'square':
        return (ady <= 0.85 * r) & (adx <= 0.85 * r)
    if name == 'triangle':   # apex up, base 0.75 r below the centre, base half-width r
        return (dy >= -r) & (dy <= 0.75 * r) & (adx <= (dy + r) / 1.75)
    if name == 'diamond':
        return ady + adx <= 1.1 * r
    if name == 'cross':
        arm = 0.34 * r
        return ((ady <= arm) & (adx <= r)) | ((adx <= arm) & (ady <= r))
    if name == 'ring':
        d2 = dy * dy + dx * dx
        return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
    raise ValueError(f'unknown shape index {shape}')


def _describe(color: int, shape: int, size: int, rng: np.random.Generator) -> str:
    """'a large red circle'; the size and the colour are each left out with probability
    DROP_ATTRIBUTE, so colour + position alone cannot identify a caption and the shape
    must be seen (without this a small model learns colour and position and ignores shape)."""
    keep_size, keep_color = (int(keep) for keep in rng.random(2) >= DROP_ATTRIBUTE)
    words = ['a'] + [SIZES[size]] * keep_size + [COLORS[color]] * keep_color + [SHAPES[shape]]
    return ' '.join(words)


def _place_pair(rng, size, b0, b1):
    """Centres (y, x) of two objects with bounding radii b0, b1 along a random axis.

    The objects are separated along the axis by at least b0 + b1 + 2 pixels (so they never
    overlap) and offset across it by at most a third of that separation (so the relation
    is unambiguous). Returns (centre0, centre1, axis) with object 0 first along the axis.
    """
    gap = b0 + b1 + 2.0
    a0 = rng.uniform(b0, size - b1 - gap)
    a1 = rng.uniform(a0 + gap, size - b1)
    c0 = rng.uniform(b0, size - b0)
    sep = (a1 - a0) / 3.0
    c1 = float(np.clip(rng.uniform(c0 - sep, c0 + sep), b1, size - b1))
    axis = int(rng.integers(2))   # 0: horizontal (left/right), 1: vertical (above/below)
    if axis == 0:
        return (c0, a0), (c1, a1), axis
    return (a0, c0), (a1, c1), axis


def make_example(rng: np.random.Generator, size: int) -> dict:
    """Renders one scene and its caption; returns the feature dict of one example."""
    bg = int(rng.integers(30, 90))
    image = np.full((size, size, 3), bg, np.uint8)
    n = 1 + int(rng.integers(2))
    colors = rng.integers(len(COLORS), size=n)
    shapes = rng.integers(len(SHAPES), size=n)
    sizes = rng.integers(len(SIZES), size=n)
    radii = [_HALF_EXTENT[s] * size for s in sizes]
    if n == 1:
        row, col = rng.integers(3, size=2)
        bound = _BOUND * radii[0] + 1.0
        cell = size / 3.0
        centre = [float(np.clip((k + 0.5) * cell + rng.uniform(-cell / 4, cell / 4), bound, size - bound))
                  for k in (row, col)]
        centres = [centre]
        pos = _POSITIONS[row][col][int(rng.integers(2))]
        template = _SINGLE[int(rng.integers(len(_SINGLE)))]
        caption = template.format(a=_describe(colors[0], shapes[0], sizes[0], rng), pos=pos)
    else:
        c0, c1, axis = _place_pair(rng, size, _BOUND * radii[0], _BOUND * radii[1])
        centres = [c0, c1]
        templates = _LEFT_RIGHT if axis == 0 else _ABOVE_BELOW
        template = templates[int(rng.integers(len(templates)))]
        caption = template.format(a=_describe(colors[0], shapes[0], sizes[0], rng),
                                  b=_describe(colors[1], shapes[1], sizes[1], rng))
    for k in range(n):
        rgb = np.clip(_RGB[colors[k]] + rng.integers(-12, 13, size=3), 0, 255).astype(np.uint8)
        image[shape_mask(int(shapes[k]), centres[k][0], centres[k][1], radii[k], size)] = rgb

    def pad(v):
        return np.array(list(v) + [-1] * (2 - n), np.int32)

    return {'image': image, 'caption': caption, 'num_objects': np.int32(n),
            'colors': pad(colors), 'shapes': pad(shapes), 'sizes': pad(sizes)}


def task_labels(example: dict) -> dict:
    """Zero-shot labels of one decoded example: colour/shape of a single object, else -1."""
    single = int(example['num_objects']) == 1
    return {'color': int(example['colors'][0]) if single else -1,
            'shape': int(example['shapes'][0]) if single else -1}


class JaxclrShapes(tfds.core.GeneratorBasedBuilder):
    """Rendered coloured shapes with natural-language captions (train/validation/test splits)."""

    name = 'jaxclr_shapes'
    VERSION = tfds.core.Version('1.2.0')
    RELEASE_NOTES: ClassVar[dict] = {'1.2.0': 'A validation split of num_train / 10 more examples drawn like '
                                              'the train ones (train unchanged).',
                                     '1.1.0': 'Captions leave out size and colour with probability 1/3 each.',
                                     '1.0.0': 'Initial release.'}
    BUILDER_CONFIGS: ClassVar[list] = [shapes_config()]
    # Nothing is downloaded, so there is no checksums file to locate; this also skips a tfds
    # code path that imports importlib_resources, which tfds 4.9.10 no longer installs.
    code_path = None

    def _info(self) -> tfds.core.DatasetInfo:
        s = self.builder_config.image_size
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict({
                'image': tfds.features.Tensor(shape=(s, s, 3), dtype=np.uint8, encoding='zlib'),
                'caption': tfds.features.Text(),
                'num_objects': tfds.features.Scalar(dtype=np.int32),
                'colors': tfds.features.Tensor(shape=(2,), dtype=np.int32),
                'shapes': tfds.features.Tensor(shape=(2,), dtype=np.int32),
                'sizes': tfds.features.Tensor(shape=(2,), dtype=np.int32),
            }),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing is downloaded
        cfg = self.builder_config
        return {'train': self._generate_examples('train', range(cfg.num_train)),
                'validation': self._generate_examples('validation', range(validation_count(cfg.num_train))),
                'test': self._generate_examples('test', range(cfg.num_test))}

    def _generate_examples(self, split: str, indices: range):
        cfg = self.builder_config
        for index in indices:
            rng = np.random.default_rng([cfg.build_seed, _SPLIT_IDS[split], index])
            yield index, make_example(rng, cfg.image_size)
