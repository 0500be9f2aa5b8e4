"""jaxclr_digits: an embedded TFDS dataset of real handwritten digits with captions.

Wraps scikit-learn's bundled `load_digits` (1,797 scanned 8 x 8 digits, 0..16 grey
levels; nothing downloaded), upsampled bilinearly to image_size, grey copied to RGB
(white strokes on black), with a caption from a few templates ("a handwritten digit
seven", "the number 7, written by hand", ...). A fixed permutation splits it: its first 20%
is 'test' (359), the next tenth of the remaining 80% 'validation' (144), the rest 'train'
(1,294), so every build is identical; tune on validation, report on test.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

DIGIT_NAMES = ['zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine']
TASKS = {'digit': DIGIT_NAMES}   # zero-shot tasks: name -> class names
CAPTION_TEMPLATES = (   # {word}: 'seven', {n}: 7; the zero-shot prompts are these too (evals.prompts)
    'a handwritten digit {word}', 'the number {n}, written by hand', 'a scan of a handwritten {n}',
    'the digit {word} in handwriting', 'a hand-drawn number {word}', 'a photo of the digit {n}',
)
_SPLIT_SEED = 0
_TEST_FRACTION = 0.2
_VALIDATION_FRACTION = 0.1   # of the examples that are not test


@dataclasses.dataclass(eq=False)
class DigitsConfig(tfds.core.BuilderConfig):
    """Image size of a jaxclr_digits build; the config name is 'img<size>'."""
    image_size: int = 64

    def __reduce__(self):   # unpickle (e.g. in grain workers) to the cached, registered object
        return digits_config, (self.image_size,)


@functools.cache
def digits_config(image_size: int = 64) -> DigitsConfig:
    """The (cached, so tfds sees one object per name) DigitsConfig for an image size."""
    if image_size < 8:
        raise ValueError(f'jaxclr_digits needs image_size >= 8, got {image_size}')
    return DigitsConfig(name=f'img{int(image_size)}', image_size=int(image_size))


def bilinear_matrix(src: int, dst: int) -> np.ndarray:
    """[dst, src] matrix resampling a length-src signal to length dst (pixel centres aligned)."""
    pos = np.clip((np.arange(dst) + 0.5) * src / dst - 0.5, 0, src - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, src - 1)
    frac = pos - lo
    m = np.zeros((dst, src))
    m[np.arange(dst), lo] += 1 - frac
    m[np.arange(dst), hi] += frac
    return m


def upsample(grey: np.ndarray, size: int) -> np.ndarray:
    """uint8 [size, size, 3] image from an 8 x 8 digit with 0..16 grey levels."""
    m = bilinear_matrix(grey.shape[0], size)
    img = m @ (grey.astype(np.float64) * (255.0 / 16.0)) @ m.T
    img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return np.repeat(img[:, :, None], 3, axis=2)


def split_indices(count: int) -> dict:
    """Fixed train/validation/test split of range(count) (module docstring; sorted indices per split)."""
    perm = np.random.default_rng(_SPLIT_SEED).permutation(count)
    n_test = round(count * _TEST_FRACTION)
    n_val = round((count - n_test) * _VALIDATION_FRACTION)
    return {'train': np.sort(perm[n_test + n_val:]), 'validation': np.sort(perm[n_test:n_test + n_val]),
            'test': np.sort(perm[:n_test])}


def caption(label: int, index: int) -> str:
    """Deterministic templated caption of digit `label` for example `index`."""
    template = CAPTION_TEMPLATES[int(np.random.default_rng([_SPLIT_SEED, index]).integers(len(CAPTION_TEMPLATES)))]
    return template.format(word=DIGIT_NAMES[label], n=label)



def vocabulary() -> tuple[str, ...]:
    """Every word of every caption (`caption`: each template with each digit's word and numeral), sorted;
    the zero-shot prompts are the same templates. data.tokenizer='words' reads it."""
    texts = (t.format(word=name, n=n) for t in CAPTION_TEMPLATES for n, name in enumerate(DIGIT_NAMES))
    return tuple(sorted({w for t in texts for w in t.split()}))

def task_labels(example: dict) -> dict:
    """Zero-shot labels of one decoded example."""
    return {'digit': int(example['label'])}


class JaxclrDigits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's handwritten digits, upsampled, with captions (train/validation/test splits)."""

    name = 'jaxclr_digits'
    VERSION = tfds.core.Version('1.1.0')
    RELEASE_NOTES: ClassVar[dict] = {'1.1.0': 'A validation split: a tenth of the former train split.',
                                     '1.0.0': 'Initial release.'}
    BUILDER_CONFIGS: ClassVar[list] = [digits_config(64)]
    code_path = None   # nothing downloaded: no checksums file (see shapes.JaxclrShapes)

    def _info(self) -> tfds.core.DatasetInfo:
        s = self.builder_config.image_size
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict({
                'image': tfds.features.Tensor(shape=(s, s, 3), dtype=np.uint8, encoding='zlib'),
                'caption': tfds.features.Text(),
                'label': tfds.features.ClassLabel(names=DIGIT_NAMES),
            }),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # scikit-learn ships the data
        from sklearn.datasets import load_digits  # imported lazily: only needed to build
        digits = load_digits()
        splits = split_indices(len(digits.target))
        return {name: self._generate_examples(digits.images, digits.target, idx)
                for name, idx in splits.items()}

    def _generate_examples(self, images, targets, indices):
        size = self.builder_config.image_size
        for i in indices:
            label = int(targets[i])
            yield int(i), {'image': upsample(images[i], size), 'caption': caption(label, int(i)),
                           'label': label}
