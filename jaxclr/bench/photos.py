"""Real photos for the data benchmarks, with no download: crops of scikit-learn's two sample images."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from PIL import Image


def photo_crops(count: int, seed: int = 0) -> Iterator[Image.Image]:
    """`count` square crops (256..427 px, about half scaled up to 512) of scikit-learn's sample
    photos, the same sequence for the same seed."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(seed)
    for i in range(count):
        photo = photos[i % len(photos)]
        side = int(rng.integers(256, 428))
        top, left = (int(rng.integers(0, photo.shape[k] - side + 1)) for k in (0, 1))
        image = Image.fromarray(photo[top:top + side, left:left + side])
        if rng.random() < 0.5:
            image = image.resize((512, 512), Image.BICUBIC)
        yield image
