"""Readers of the three inputs `jaxclr.data.prepare` accepts; nothing is decoded here.

Each reader lists its examples as `Item`s (key, image reference, captions or label), in
a deterministic order (sorted files, manifest order), and counts in `skipped` what it
drops: 'empty caption' (an example with no non-blank caption), 'duplicate key' (a key
seen before: the first one is kept), 'missing image' (a webdataset key with no image
member), 'bad manifest row' (a row without an image path, or a JSONL line that is not a
JSON object). Blank captions of an example that has other captions are dropped and
counted in `skipped['blank captions dropped']` (the example is kept).

- manifest(path): a CSV (with a header) or JSONL file, one row per (image, caption); the
  caption of a JSONL row may also be a list. Rows naming the same image are one example
  with all their captions. Image paths are relative to `image_root` (default: the
  manifest's folder) unless absolute or URLs. Key: the image path as written (normalised).
- webdataset(path): tar shards as img2dataset writes them (a folder of *.tar, a glob or
  one tar): per key `<key>.jpg|.jpeg|.png|.webp` and the caption in `<key>.txt`, else the
  'caption' of `<key>.json`. Key: the member name up to the first dot of its file name.
- class_folders(path): one subfolder per class (class names: the sorted folder names);
  files with an image extension anywhere below it are its examples (other files are
  counted in skipped['not an image file']). Key: '<class>/<relative path>'.
"""
from __future__ import annotations

import collections
import csv
import io
import json
import logging
import posixpath
import tarfile
from typing import NamedTuple

from etils import epath

from jaxclr import paths

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.webp', '.bmp', '.gif', '.tif', '.tiff')
BLANK_DROPPED = 'blank captions dropped'   # a count of captions, not of examples
WDS_IMAGE_EXTENSIONS = ('jpg', 'jpeg', 'png', 'webp')   # webdataset members, by preference

log = logging.getLogger(__name__)


class Item(NamedTuple):
    """One example to prepare: `target` is a tuple of captions, or a class index."""
    key: str
    ref: tuple            # prepare_images.read_bytes reference
    target: tuple | int


def _clean(captions, skipped) -> tuple:
    kept = tuple(c for c in captions if isinstance(c, str) and c.strip())
    if kept and len(kept) < len(captions):
        skipped[BLANK_DROPPED] += len(captions) - len(kept)
    return kept


def _is_absolute(path: str) -> bool:
    return path.startswith('/') or paths.is_url(path)


# ------------------------------------------------------------------ manifest

def _manifest_rows(path: epath.Path, image_column: str, caption_column: str, skipped):
    """(image path, [captions]) per row of a CSV or JSONL manifest."""
    text = path.read_text(encoding='utf-8')
    if path.suffix.lower() in ('.jsonl', '.json'):
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            if not isinstance(row, dict):
                skipped['bad manifest row'] += 1
                continue
            caption = row.get(caption_column)
            yield row.get(image_column), caption if isinstance(caption, list) else [caption]
    elif path.suffix.lower() in ('.csv', '.tsv'):
        reader = csv.DictReader(io.StringIO(text), delimiter='\t' if path.suffix.lower() == '.tsv' else ',')
        _check_columns(path, reader.fieldnames, image_column, caption_column)
        for row in reader:
            yield row.get(image_column), [row.get(caption_column)]
    else:
        raise ValueError(f'{path}: a manifest must be a .csv, .tsv or .jsonl file')


def _check_columns(path, fieldnames, image_column: str, caption_column: str) -> None:
    missing = {image_column, caption_column} - set(fieldnames or ())
    if missing:
        raise ValueError(f'{path}: no column {", ".join(sorted(missing))} in the header {fieldnames}; '
                         f'set --image_column / --caption_column to the names it uses')


def check_manifest(path, image_column='image', caption_column='caption') -> epath.Path:
    """The manifest's path after the checks that need no row: it exists, it is CSV/TSV/JSONL, and a
    CSV's header names both columns. Reads the header line only: a distributed run (whose workers
    read the rows) fails at launch with one line instead of in a worker."""
    path = paths.resolve(path)
    if not path.exists():
        raise FileNotFoundError(f'manifest {path} does not exist')
    suffix = path.suffix.lower()
    if suffix in ('.csv', '.tsv'):
        with path.open('r', encoding='utf-8') as f:
            header = next(csv.reader([f.readline()], delimiter='\t' if suffix == '.tsv' else ','), [])
        _check_columns(path, header, image_column, caption_column)
    elif suffix not in ('.jsonl', '.json'):
        raise ValueError(f'{path}: a manifest must be a .csv, .tsv or .jsonl file')
    return path


def manifest(path, skipped, image_root=None, image_column='image', caption_column='caption') -> list[Item]:
    """Items of a CSV/JSONL manifest (see the module doc)."""
    path = paths.resolve(path)
    if not path.exists():
        raise FileNotFoundError(f'manifest {path} does not exist')
    root = paths.resolve(image_root) if image_root else path.parent
    captions = {}   # key -> [captions], in first-seen order
    for image, row_captions in _manifest_rows(path, image_column, caption_column, skipped):
        if not isinstance(image, str) or not image.strip():
            skipped['bad manifest row'] += 1
            continue
        if image.startswith(('http://', 'https://')):
            raise ValueError(f'{path}: images are web URLs ({image}); download them first (img2dataset '
                             '--output_format=webdataset) and prepare its tars with --webdataset')
        key = image.strip() if paths.is_url(image) else posixpath.normpath(image.strip())
        captions.setdefault(key, []).extend(row_captions)
    items = []
    for key, texts in captions.items():
        kept = _clean(texts, skipped)
        if not kept:
            skipped['empty caption'] += 1
            continue
        location = key if _is_absolute(key) else str(root / key)
        items.append(Item(key, ('file', location), kept))
    return items


# ------------------------------------------------------------------ webdataset tars

def tar_files(path) -> list[epath.Path]:
    """The tar shards `path` names (a folder, a glob or one tar), sorted; lists names, reads nothing."""
    text = str(path)
    if any(c in text for c in '*?['):
        parent, pattern = text.rsplit('/', 1) if '/' in text else ('.', text)
        found = sorted(paths.resolve(parent).glob(pattern))
    else:
        root = paths.resolve(text)
        found = sorted(root.glob('*.tar')) if root.is_dir() else [root] if root.exists() else []
    if not found:
        raise FileNotFoundError(f'no .tar shards at {path}; pass a folder of img2dataset .tar files, a glob or a tar')
    return found


def _split_member(name: str) -> tuple[str, str]:
    folder, base = posixpath.split(name)
    stem, _, ext = base.partition('.')
    return posixpath.join(folder, stem), ext.lower()


def _caption_of(members: dict, tar: tarfile.TarFile) -> str | None:
    if 'txt' in members:
        return tar.extractfile(members['txt']).read().decode('utf-8', errors='replace')
    if 'json' in members:
        try:
            meta = json.loads(tar.extractfile(members['json']).read())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        caption = meta.get('caption') if isinstance(meta, dict) else None
        return caption if isinstance(caption, str) else None
    return None


def webdataset(path, skipped) -> list[Item]:
    """Items of img2dataset-style tar shards (see the module doc)."""
    items, seen = [], set()
    for tar_path in tar_files(path):
        for key, ref, caption in tar_entries(tar_path, skipped):
            if key in seen:
                skipped['duplicate key'] += 1
                continue
            seen.add(key)
            item = webdataset_item(key, ref, caption, skipped)
            if item is not None:
                items.append(item)
    return items


def tar_entries(tar_path, skipped) -> list[tuple[str, tuple | None, str | None]]:
    """(key, image reference or None, caption or None) per key of one shard, in the shard's order.

    A shard that is not a readable tar gives no entries and counts one 'unreadable tar shard' (with
    a warning): a failed download must not stop a run over thousands of shards. Duplicate keys
    *across* shards are the caller's to drop (the local path and the Beam pipeline keep the first).
    """
    tar_path = paths.resolve(tar_path)
    try:
        keys, captions = _tar_index(tar_path, skipped)
    except (tarfile.TarError, EOFError, OSError, UnicodeDecodeError) as e:   # not a tar, truncated, unreadable
        skipped['unreadable tar shard'] += 1
        log.warning('Skipped shard %s: not a readable tar file (%s: %s).', tar_path, type(e).__name__, e)
        return []
    entries = []
    for key, members in keys.items():
        image = next((members[e] for e in WDS_IMAGE_EXTENSIONS if e in members), None)
        ref = None if image is None else ('tar', str(tar_path), image.offset_data, image.size)
        entries.append((key, ref, captions.get(key)))
    return entries


def webdataset_item(key: str, ref: tuple | None, caption: str | None, skipped) -> Item | None:
    """The Item of the first entry of `key`, or None (counted) when it has no image or no caption."""
    if ref is None:
        skipped['missing image'] += 1
        return None
    kept = _clean([caption], skipped)
    if not kept:
        skipped['empty caption'] += 1
        return None
    return Item(key, ref, kept)


def _tar_index(tar_path: epath.Path, skipped) -> tuple[dict, dict]:
    """({key: {extension: TarInfo}}, {key: caption text or None}) of one shard, read whole: a shard
    that is not a readable tar raises (tarfile.TarError, EOFError, OSError) before any of it is used."""
    with tar_path.open('rb') as f, tarfile.open(fileobj=f, mode='r:') as tar:
        keys = collections.OrderedDict()   # key -> {extension: TarInfo}
        for member in tar:
            if not member.isfile():
                continue
            key, ext = _split_member(member.name)
            parts = keys.setdefault(key, {})
            if ext in parts:   # the same key and extension twice in one tar: keep the first
                skipped['duplicate key'] += 1
                continue
            parts[ext] = member
        captions = {key: _caption_of(members, tar) for key, members in keys.items()}
    return keys, captions


# ------------------------------------------------------------------ class folders

def _files_below(folder: epath.Path) -> list[epath.Path]:
    """Every file under `folder` (recursively; hidden entries skipped), sorted."""
    found = []
    for entry in folder.iterdir():
        if entry.name.startswith('.'):
            continue
        found.extend(_files_below(entry) if entry.is_dir() else [entry])
    return sorted(found)


def class_names(path) -> tuple[epath.Path, list[str]]:
    """(root, sorted class names) of a class-folder tree: its subfolders, listed only."""
    root = paths.resolve(path)
    if not root.is_dir():
        raise FileNotFoundError(f'{root} is not a folder; pass a folder with one subfolder per class')
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith('.'))
    if not classes:
        raise ValueError(f'{root} has no subfolders; put the images of each class in a subfolder named after it')
    return root, classes


def class_items(root, name: str, label: int, skipped) -> list[Item]:
    """Items of one class folder `root/name` (files with an image extension anywhere below it)."""
    root = paths.resolve(root)
    items = []
    for file in _files_below(root / name):
        if file.suffix.lower() not in IMAGE_EXTENSIONS:
            skipped['not an image file'] += 1
            continue
        key = f'{name}/{file.relative_to(root / name).as_posix()}'
        items.append(Item(key, ('file', str(file)), label))
    return items


def class_folders(path, skipped) -> tuple[list[Item], list[str]]:
    """(items, class names) of a folder with one subfolder per class (see the module doc)."""
    root, classes = class_names(path)
    items = []
    for label, name in enumerate(classes):
        items.extend(class_items(root, name, label, skipped))
    return items, classes
