"""A jaxclr run as a Hugging Face directory that transformers' CLIPModel (or SiglipModel) loads.

    python -m jaxclr.export --workdir=runs/tiny_hf --format=hf --out=exported/

Writes ``model.safetensors`` (float32), ``config.json``, ``preprocessor_config.json`` (the run's
pixel mean/std, image size and resize) and the tokenizer's files (CLIP BPE: tokenizer.json /
vocab.json + merges.txt and their configs; SigLIP: the SentencePiece model as ``spiece.model``).
A model trained here exports when its architecture is one the class expresses (configs/clip.py:
tiny_hf is such a preset); any option the class cannot express is one ``ExportError`` line naming it.
"""
from __future__ import annotations

import json
import pathlib
import re

import numpy as np

from jaxclr.data import text
from jaxclr.models import text as text_tower
from jaxclr.models.convert import hf
from jaxclr.trainer import optim

_STACKED = re.compile(r"^(.*/encoder/blocks)/(.*)$")


class ExportError(ValueError):
    """The run cannot be expressed in the target format; one line naming the option."""


def _requirements(kind: str) -> list[tuple[str, object, str]]:
    """(config key, required value, why) for `kind` ('clip' | 'siglip')."""
    if kind == "clip":
        return [("model.image.pool", "tok", "CLIPModel pools the class token"),
                ("model.image.ln_pre", True, "CLIPModel always applies pre_layrnorm"),
                ("model.image.patch_bias", False, "CLIPModel's patch embedding has no bias"),
                ("model.image.stem", (), "CLIPModel has no convolutional stem"),
                ("model.image.proj", "linear", "CLIPModel's visual_projection has no bias"),
                ("model.text.proj", "linear", "CLIPModel's text_projection has no bias"),
                ("model.text.causal", True, "CLIPModel's text tower is causal"),
                ("model.text.patch_size", 1, "CLIPModel embeds one token per position"),
                ("model.learn_bias", False, "CLIPModel has no logit bias")]
    return [("model.image.pool", "map", "SiglipModel pools with its attention head"),
            ("model.image.ln_pre", False, "SiglipModel has no pre-LayerNorm"),
            ("model.image.patch_bias", True, "SiglipModel's patch embedding has a bias"),
            ("model.image.stem", (), "SiglipModel has no convolutional stem"),
            ("model.image.proj", "none", "SiglipModel's image embedding is its head's output"),
            ("model.text.proj", "affine", "SiglipModel's text head has a bias"),
            ("model.text.causal", False, "SiglipModel's text tower is bidirectional"),
            ("model.text.pool", "last", "SiglipModel pools the last position"),
            ("model.text.patch_size", 1, "SiglipModel embeds one token per position"),
            ("model.learn_bias", True, "SiglipModel has a logit bias")]


def _get(config, key):
    node = config
    for part in key.split("."):
        node = node[part]
    return tuple(node) if isinstance(node, (list, tuple)) else node


def check(config) -> str:
    """'clip' or 'siglip': the class that expresses the run; ExportError naming the first option neither does."""
    kind = "siglip" if config.model.image.pool == "map" else "clip"
    for key, value, why in _requirements(kind):
        if _get(config, key) != value:
            raise ExportError(f"{key}={_get(config, key)!r} cannot be exported: {why} (needs {value!r})")
    pool = text_tower.resolve_pool(config.model.text.pool, config.model.text.causal)
    if kind == "clip" and pool not in ("eos", "argmax"):
        raise ExportError(f"model.text.pool={pool!r} cannot be exported: CLIPModel pools at the end token "
                          "('eos' or 'argmax')")
    for tower in ("image", "text"):
        if _get(config, f"model.{tower}.act") not in hf.JAX_ACT:
            raise ExportError(f"model.{tower}.act has no Hugging Face name")
    return kind


def unscanned(params: dict, config) -> dict:
    """'/'-path -> numpy array of the run's params, stacked blocks split into blocks/<i>/."""
    flat = {"/".join(optim.path_names(p)): np.asarray(leaf) for p, leaf in params}
    if not config.model.scan_layers:
        return flat
    out = {}
    for path, value in flat.items():
        match = _STACKED.match(path)
        if match:
            for i, layer in enumerate(value):
                out[f"{match.group(1)}/{i}/{match.group(2)}"] = layer
        else:
            out[path] = value
    return out


def hf_config(config, kind: str, tok) -> dict:
    """The config.json of the exported model."""
    m, image, txt = config.model, config.model.image, config.model.text
    vocab = int(txt.vocab_size) or tok.vocab_size
    common = lambda c, w: {"hidden_size": int(w), "intermediate_size": int(c.mlp_ratio * w),  # noqa: E731
                           "num_hidden_layers": int(c.depth), "num_attention_heads": int(c.heads),
                           "hidden_act": hf.JAX_ACT[c.act], "layer_norm_eps": float(c.ln_eps)}
    vision = {**common(image, image.width), "image_size": int(config.data.image_size),
              "patch_size": int(image.patch_size), "num_channels": 3}
    texts = {**common(txt, txt.width), "vocab_size": vocab, "max_position_embeddings": int(txt.max_len)}
    if tok is not None:
        texts.update(pad_token_id=int(tok.pad_id), eos_token_id=int(tok.eos_id),
                     bos_token_id=int(tok.bos_id if tok.bos_id is not None else tok.eos_id))
    if kind == "clip":
        pool = text_tower.resolve_pool(txt.pool, txt.causal)
        eos = 2 if pool == "argmax" else texts.get("eos_token_id")
        if pool == "eos" and (eos is None or eos == 2):
            raise ExportError("model.text.pool='eos' at end id 2 (or without a tokenizer) cannot be exported: "
                              "CLIPModel reads eos_token_id 2 as 'pool at the largest id'; use a tokenizer whose "
                              "end id is not 2")
        texts["eos_token_id"] = eos
        return {"model_type": "clip", "architectures": ["CLIPModel"], "projection_dim": int(m.embed_dim),
                "text_config": {**texts, "projection_dim": int(m.embed_dim)},
                "vision_config": {**vision, "projection_dim": int(m.embed_dim)}, "torch_dtype": "float32"}
    return {"model_type": "siglip", "architectures": ["SiglipModel"],
            "text_config": {**texts, "projection_size": int(m.embed_dim)},
            "vision_config": {**vision, "vision_use_head": True}, "torch_dtype": "float32"}


def preprocessor_config(config, kind: str) -> dict:
    """The image processor of the run's eval preprocessing (data.eval_resize): 'clip' is CLIPImageProcessor's
    own (bicubic short side, centre crop), 'squash' SiglipImageProcessor's (bicubic to the square);
    jaxclr's 'crop_bilinear' (centre square, then bilinear) becomes the nearest the class states: bilinear
    short side, then the centre crop (the same pixels up to resampling at the border)."""
    size, mode = int(config.data.image_size), config.data.eval_resize
    crop = mode in ("clip", "crop_bilinear")
    out = {"image_processor_type": "CLIPImageProcessor" if kind == "clip" else "SiglipImageProcessor",
           "do_resize": True, "resample": 2 if mode == "crop_bilinear" else 3, "do_rescale": True,
           "rescale_factor": 1 / 255, "do_normalize": True,
           "image_mean": list(config.model.image.pixel_mean), "image_std": list(config.model.image.pixel_std),
           "do_convert_rgb": True, "do_center_crop": crop}
    if crop:
        out.update(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    else:
        out.update(size={"height": size, "width": size})
    return out


def export(config, params, out: str) -> str:
    """Writes the Hugging Face directory of a run's `config` and `params` (nnx.State) into `out`."""
    from safetensors.numpy import save_file
    kind = check(config)
    try:
        tok = text.from_config(config.data)
    except text.TokenizerError:
        tok = None
    flat = unscanned(list(_leaves(params)), config)
    tensors = hf.export(flat, kind)
    target = pathlib.Path(out).expanduser()
    target.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(target / "model.safetensors"), metadata={"format": "pt"})
    (target / "config.json").write_text(json.dumps(hf_config(config, kind, tok), indent=2) + "\n")
    (target / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(config, kind), indent=2) + "\n")
    _copy_tokenizer(config, target, kind)
    return str(target)


def _leaves(params):
    import jax
    return jax.tree_util.tree_leaves_with_path(params)


def _copy_tokenizer(config, target: pathlib.Path, kind: str) -> None:
    src = pathlib.Path(config.data.tokenizer_model).expanduser() if config.data.tokenizer_model else None
    if src is None or not src.exists():
        return
    if kind == "siglip":
        (target / "spiece.model").write_bytes(src.read_bytes())
        return
    files = [src] if src.is_file() else [src / n for n in ("tokenizer.json", "vocab.json", "merges.txt",
                                                           "tokenizer_config.json", "special_tokens_map.json")]
    for f in files:
        if f.is_file():
            (target / f.name).write_bytes(f.read_bytes())
