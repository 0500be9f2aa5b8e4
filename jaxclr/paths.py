"""One place that turns a user-given path (workdir, data dir) into an `etils.epath.Path`.

A path is either a URL (`gs://bucket/run`, `s3://...`: anything with `://`) or a local path.
URLs are kept exactly as given (never passed to `os.path`, `os.makedirs` or `open`); local
paths are expanded (`~`) and made absolute, because orbax wants absolute local directories
and a relative path would otherwise depend on the current directory of each process.

Which URL schemes work is epath's business: `gs://`, `s3://`, `az://`, `hf://`, through
TensorFlow's gfile when TensorFlow is installed, else through fsspec (which needs the
scheme's package, e.g. `gcsfs` for `gs://`).
"""
from __future__ import annotations

import os

from etils import epath


def is_url(path: str | os.PathLike) -> bool:
    """Whether `path` is a URL (`scheme://...`) rather than a local path."""
    return "://" in os.fspath(path)


def resolve(path: str | os.PathLike) -> epath.Path:
    """`path` as an epath.Path: URLs unchanged, local paths `~`-expanded and absolute."""
    if isinstance(path, epath.Path) and is_url(path):
        return path
    text = os.fspath(path)
    if not is_url(text):
        return epath.Path(os.path.abspath(os.path.expanduser(text)))
    try:
        return epath.Path(text)
    except KeyError:   # epath raises a bare KeyError for a scheme it has no class for
        raise ValueError(f"unsupported URL scheme in {text!r} (epath supports gs://, s3://, az://, hf://)") from None


def not_a_directory(path: str | os.PathLike) -> str | None:
    """What is wrong when local `path` exists but is not a directory (None otherwise); creates nothing."""
    text = os.fspath(path)
    local = None if is_url(text) else os.path.expanduser(text)
    if local is not None and os.path.exists(local) and not os.path.isdir(local):
        return "is a file, not a directory; pass a directory"
    return None


def creatable(path: str | os.PathLike) -> str | None:
    """None when `path` is a directory or can be made one (it is made); else what is wrong, for an
    `error:` line. URLs are only checked for a supported scheme: their buckets are made by their owners."""
    try:
        directory = resolve(path)
    except ValueError as e:
        return str(e)
    if is_url(directory):
        return None
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        reason = e.strerror or type(e).__name__
        return f"cannot create this directory ({reason}); pass a directory you can write to"
    if not os.access(directory, os.W_OK):
        return "this directory is not writable; pass a directory you can write to"
    return None
