"""Released checkpoints on disk: which format a path is, and what it holds (no network, ever).

    imported = sources.read('weights/ViT-B-32.safetensors', tokenizer='tok/')   # -> Imported

Formats (``detect``):

- ``hf``: a directory with ``config.json`` and ``model.safetensors`` (or sharded
  ``model-*.safetensors`` + index) of a transformers ``CLIPModel`` or ``SiglipModel``;
- ``openai``: an OpenAI / open_clip CLIP state dict as ``.safetensors``; ``.pt`` / ``.bin`` are
  read only when torch is installed (a TorchScript archive, as OpenAI ships, or a plain state dict);
- ``big_vision``: a big_vision SigLIP ``.npz``.

Preprocessing comes from a ``preprocessor_config.json`` beside the weights when there is one
(``image_mean``, ``image_std``; CLIPImageProcessor -> resize the short side and centre-crop,
SiglipImageProcessor -> resize to the square), else from the format's published defaults (OpenAI's
CLIP mean and std with the crop; 0.5 / 0.5 without it for SigLIP). The tokenizer is the files
beside the weights (``tokenizer.json`` or ``vocab.json`` + ``merges.txt`` for CLIP, ``spiece.model``
for SigLIP) or ``tokenizer=`` (a directory or file); without one, texts can only be given as ids.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np

from jaxclr.models.convert import CheckpointError, big_vision_siglip, hf, openai_clip

FORMATS = ("hf", "openai", "big_vision")
OPENAI_MEAN, OPENAI_STD = openai_clip.OPENAI_MEAN, openai_clip.OPENAI_STD
CLIP_TOKENIZER_FILES = ("tokenizer.json", "vocab.json")
SIGLIP_TOKENIZER_FILES = ("spiece.model", "tokenizer.model")


class SourceError(ValueError):
    """A source that cannot be read; the message is one line saying what to change."""


@dataclasses.dataclass
class Imported:
    """A converted checkpoint: jaxclr params (unscanned paths), config overrides, and where it came from."""
    format: str
    kind: str             # 'clip' | 'siglip' (the architecture family: the config file to start from)
    params: dict
    overrides: dict
    tokenizer: str        # path of the tokenizer files ('' none)
    source: str
    eos_id: int | None = None   # the end id the text tower pools at, where the source states it (HF CLIP)


def detect(path: pathlib.Path) -> str:
    """The format of `path` (module docstring); SourceError naming what was expected."""
    if path.is_dir():
        if (path / "config.json").is_file() and (any(path.glob("*.safetensors"))):
            return "hf"
        raise SourceError(f"--source={path}: a directory must hold a Hugging Face model (config.json and "
                          "model.safetensors); point --source at the weights file for other formats")
    if not path.is_file():
        raise SourceError(f"--source={path}: no such file or directory")
    suffix = path.suffix.lower()
    if suffix in (".safetensors", ".pt", ".bin", ".pth"):
        return "openai"
    if suffix == ".npz":
        return "big_vision"
    raise SourceError(f"--source={path}: unknown format {suffix!r}; use a Hugging Face directory, an OpenAI/open_clip "
                      "state dict (.safetensors, or .pt/.bin with torch installed) or a big_vision SigLIP .npz")


def _safetensors(files) -> dict:
    from safetensors.numpy import load_file
    tensors = {}
    for f in files:
        tensors.update(load_file(str(f)))
    return tensors


def _torch_state_dict(path: pathlib.Path) -> dict:
    try:
        import torch
    except ImportError:
        raise SourceError(f"--source={path}: reading {path.suffix} needs torch, which is not installed; convert it "
                          "once where torch is: python -c \"import torch, safetensors.torch as st; "
                          f"m = torch.jit.load('{path.name}', map_location='cpu'); "
                          "st.save_file({k: v.float().contiguous() for k, v in m.state_dict().items()}, "
                          f"'{path.stem}.safetensors')\" (torch.load instead of torch.jit.load for a plain state "
                          "dict), then pass the .safetensors file") from None
    try:
        obj = torch.jit.load(str(path), map_location="cpu").state_dict()
    except RuntimeError:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
        obj = obj.get("state_dict", obj)
    return {k.removeprefix("module."): v.float().numpy() if v.is_floating_point() else v.numpy()
            for k, v in obj.items()}


def _preprocessing(directory: pathlib.Path, kind: str) -> dict:
    """Config overrides of the pixel mean/std and the eval resize (module docstring)."""
    crop = kind == "clip"
    mean, std = (OPENAI_MEAN, OPENAI_STD) if crop else ((0.5,) * 3, (0.5,) * 3)
    config = directory / "preprocessor_config.json"
    if config.is_file():
        pre = json.loads(config.read_text())
        mean, std = tuple(pre.get("image_mean", mean)), tuple(pre.get("image_std", std))
        kind_name = str(pre.get("image_processor_type", ""))
        crop = bool(pre.get("do_center_crop", "CLIP" in kind_name))
    return {"model.image.pixel_mean": tuple(float(m) for m in mean),
            "model.image.pixel_std": tuple(float(s) for s in std), "data.eval_resize": "clip" if crop else "squash"}


def find_tokenizer(directory: pathlib.Path, kind: str) -> str:
    """The tokenizer beside the weights ('' none): the directory (CLIP BPE files) or the .model file."""
    if kind == "clip":
        return str(directory) if any((directory / f).is_file() for f in CLIP_TOKENIZER_FILES) else ""
    found = [directory / f for f in SIGLIP_TOKENIZER_FILES if (directory / f).is_file()]
    return str(found[0]) if found else ""


def read(source: str, tokenizer: str = "", heads: int | None = None, text_heads: int | None = None) -> Imported:
    """Reads and converts `source` (module docstring). Raises SourceError or CheckpointError (one line)."""
    path = pathlib.Path(source).expanduser()
    fmt = detect(path)
    directory = path if path.is_dir() else path.parent
    if fmt == "hf":
        hf_config = json.loads((path / "config.json").read_text())
        kind = hf.kind_of(hf_config)
        params, over = hf.convert(_safetensors(sorted(path.glob("*.safetensors"))), hf_config)
        eos = int(hf_config["text_config"]["eos_token_id"]) if over["model.text.pool"] == "eos" else None
    else:
        eos = None
    if fmt == "openai":
        kind = "clip"
        tensors = _safetensors([path]) if path.suffix.lower() == ".safetensors" else _torch_state_dict(path)
        params, over = openai_clip.convert(tensors, heads=heads, text_heads=text_heads)
    elif fmt == "big_vision":
        kind = "siglip"
        with np.load(path) as npz:
            tensors = {k: npz[k] for k in npz.files}
        params, over = big_vision_siglip.convert(tensors, heads=heads, text_heads=text_heads)
    over.update(_preprocessing(directory, kind))
    found = tokenizer or find_tokenizer(directory, kind)
    if tokenizer and not pathlib.Path(tokenizer).expanduser().exists():
        raise SourceError(f"--tokenizer={tokenizer}: no such file or directory")
    return Imported(fmt, kind, params, over, str(found), str(path), eos)


__all__ = ["FORMATS", "CheckpointError", "Imported", "SourceError", "detect", "find_tokenizer", "read"]
