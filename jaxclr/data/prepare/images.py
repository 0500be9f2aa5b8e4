"""Image bytes for `jaxclr.data.prepare`: read one source image, decode it, store it.

Runs in the prepare worker processes; it imports PIL only (etils for URL sources).

    load(ref, image_size=224, image_format='jpeg') -> (None, bytes) | (reason, None)

`ref` names where the image bytes are: ('file', path) (a local path or a URL epath reads)
or ('tar', tar_path, offset, size) (a member of an uncompressed tar, read by seeking).
Every image is fully decoded (a truncated or corrupt file is caught here, not at train time):
- image_size > 0: centre-cropped to a square, resized to image_size x image_size (bicubic,
  antialiased), stored as RGB JPEG (quality 95) or PNG;
- image_size == 0: the original bytes when they are an RGB JPEG, PNG or WebP (decoded at
  load time by TFDS); any other image (greyscale, palette, alpha, CMYK, GIF, BMP, ...) is
  converted to RGB and stored as PNG, so that every stored image decodes to [H, W, 3].
Failures are returned, never raised: 'missing file' (the file or tar does not exist) or
'undecodable image' (anything PIL cannot decode).
"""
from __future__ import annotations

import io

from PIL import Image

FORMATS = {'jpeg': 'JPEG', 'png': 'PNG'}
_KEEP_AS_IS = ('JPEG', 'PNG', 'WEBP')   # formats TFDS decodes to RGB as stored (when the mode is RGB)
MISSING, UNDECODABLE = 'missing file', 'undecodable image'


def read_bytes(ref: tuple) -> bytes:
    """The raw bytes `ref` names; FileNotFoundError if its file does not exist."""
    kind, path = ref[0], ref[1]
    if '://' in path:
        from etils import epath  # only URL sources pay for the import
        opener = epath.Path(path).open
    else:
        opener = open
    with opener(path, 'rb') as f:
        if kind == 'file':
            return f.read()
        if kind == 'tar':
            offset, size = ref[2], ref[3]
            f.seek(offset)
            data = f.read(size)
            if len(data) != size:
                raise EOFError(f'{path} ends inside the member at {offset}')
            return data
    raise ValueError(f'unknown image reference {ref!r}')


def _encode(image: Image.Image, image_format: str) -> bytes:
    buffer = io.BytesIO()
    if image_format == 'jpeg':
        image.save(buffer, format='JPEG', quality=95)
    else:
        image.save(buffer, format=FORMATS[image_format])
    return buffer.getvalue()


def square(image: Image.Image, size: int) -> Image.Image:
    """The centred largest square of `image`, resized to size x size (bicubic, antialiased)."""
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return image.resize((size, size), Image.BICUBIC, box=(left, top, left + side, top + side))


def convert(data: bytes, image_size: int, image_format: str) -> bytes:
    """The bytes to store for the encoded image `data` (see the module doc); raises if undecodable."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()   # decode every pixel now: a truncated file fails here
        source_format = image.format
        if image_size == 0 and source_format in _KEEP_AS_IS and image.mode == 'RGB':
            return data
        rgb = image.convert('RGB')
    if image_size == 0:
        return _encode(rgb, 'png')
    return _encode(square(rgb, image_size), image_format)


def load(ref: tuple, image_size: int, image_format: str) -> tuple[str | None, bytes | None]:
    """(None, stored bytes) for a usable image, else (reason, None); never raises."""
    try:
        data = read_bytes(ref)
    except (FileNotFoundError, IsADirectoryError):
        return MISSING, None
    except Exception:  # noqa: BLE001 - an unreadable source file is skipped, not fatal
        return UNDECODABLE, None
    try:
        return None, convert(data, image_size, image_format)
    except Exception:  # noqa: BLE001 - PIL raises many types for bad images
        return UNDECODABLE, None
