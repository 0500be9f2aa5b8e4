"""Caption-aware augmentation: a horizontal flip that keeps the caption true.

Mirroring an image swaps its left and right, so the words 'left' and 'right' in the
caption are swapped with it (whole words only, case kept: 'Left' -> 'Right', 'LEFT' ->
'RIGHT'; 'bright' or 'leftover' are left alone).
"""
from __future__ import annotations

import re

import numpy as np

_LEFT_RIGHT = re.compile(r'\b(left|right)\b', re.IGNORECASE)
_SWAP = {'left': 'right', 'right': 'left'}


def _swap(match: re.Match) -> str:
    word = match.group(0)
    other = _SWAP[word.lower()]
    if word.isupper():
        return other.upper()
    if word[0].isupper():
        return other.capitalize()
    return other


def flip_caption(caption: str) -> str:
    """The caption of the mirrored image: whole words left <-> right, case preserved."""
    return _LEFT_RIGHT.sub(_swap, caption)


def flip_image(image: np.ndarray) -> np.ndarray:
    """Mirror an [H, W, C] image horizontally (a contiguous copy)."""
    return np.ascontiguousarray(image[:, ::-1])


def random_flip(image: np.ndarray, caption: str, rng: np.random.Generator):
    """With probability 1/2, mirror the image and swap left/right in the caption together."""
    if rng.random() < 0.5:
        return flip_image(image), flip_caption(caption)
    return image, caption
