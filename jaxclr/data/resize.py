"""Resizing an image to the model's square input: ``resize_image(image, size, mode)``.

Modes (``MODES``; uint8 [H, W, 3] in, uint8 [size, size, 3] out; an image already size x size
is returned unchanged by every mode):

- ``'crop_bilinear'`` (``DEFAULT``: what jaxclr has always done, in training and, unless
  data.eval_resize says otherwise, in evaluation): crop the largest centred square (offsets
  ``(H - side) // 2``, ``(W - side) // 2``), then resize it to size x size with PIL BILINEAR.
- ``'clip'``: the eval preprocessing of OpenAI's CLIP checkpoints as Hugging Face's
  ``CLIPImageProcessor`` does it: the shorter side to ``size`` and the longer one to
  ``int(size * long / short)`` (truncated, as torchvision's ``Resize`` and HF compute it) with
  PIL BICUBIC, then a centred size x size crop at ``top = (h - size) // 2``,
  ``left = (w - size) // 2`` (HF's offsets; torchvision's ``CenterCrop`` rounds ``(h - size) / 2``
  half to even instead, one pixel further when ``h - size`` is 3 mod 4).
- ``'squash'``: the whole image to size x size with PIL BICUBIC, aspect ratio not kept (HF's
  ``SiglipImageProcessor``).

Only numpy and PIL: the data layer's readers call it on every decoded record.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

DEFAULT = 'crop_bilinear'
MODES = {
    'crop_bilinear': 'largest centred square, PIL bilinear (jaxclr, the default)',
    'clip': 'shorter side to size with PIL bicubic, then a centred crop (CLIPImageProcessor)',
    'squash': 'whole image to size x size with PIL bicubic, aspect not kept (SiglipImageProcessor)',
}


def clip_resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) with the shorter side = size and the longer int(size * long / short)."""
    if width <= height:
        return int(size * height / width), size
    return size, int(size * width / height)


def _pil_resize(image: np.ndarray, height: int, width: int, resample) -> np.ndarray:
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((width, height), resample))


def _centre_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
    top, left = (image.shape[0] - height) // 2, (image.shape[1] - width) // 2
    return image[top:top + height, left:left + width]


def resize_image(image: np.ndarray, size: int, mode: str = DEFAULT) -> np.ndarray:
    """uint8 [size, size, 3] from a uint8 [H, W, 3] image, resized as ``mode`` says (module docstring)."""
    if mode not in MODES:
        raise ValueError(f'unknown resize mode {mode!r}; use one of {", ".join(map(repr, MODES))}')
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f'expected a uint8 [H, W, 3] image, got {image.dtype} {image.shape}')
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    if mode == 'crop_bilinear':
        side = min(h, w)
        return _pil_resize(_centre_crop(image, side, side), size, size, Image.BILINEAR)
    if mode == 'squash':
        return _pil_resize(image, size, size, Image.BICUBIC)
    resized = _pil_resize(image, *clip_resized_shape(h, w, size), Image.BICUBIC)
    return np.ascontiguousarray(_centre_crop(resized, size, size))
