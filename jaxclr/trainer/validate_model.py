"""The model.* part of config validation (jaxclr.trainer.validate): tower shapes, the stem, the
logit scale, freezing, and the options that represent released models (docs/pretrained.md).
One problem line per key, as the rest of validate."""
from __future__ import annotations

import numbers

from jaxclr.config.report import MISSING, Report, closest, divisors, multiples
from jaxclr.models import layers, two_tower, vit
from jaxclr.models import text as text_tower
from jaxclr.trainer import optim


def check_model(r: Report, image_size: int | None) -> None:
    """Checks model.*, and data.image_size (valid or None) against the patch size."""
    r.number("model.embed_dim", integer=True, low=1, hint="use e.g. 512")
    dtype = r.get("model.dtype")
    if dtype is not MISSING:
        try:
            layers.compute_dtype(dtype)
        except (TypeError, ValueError) as e:
            r.add("model.dtype", str(e).removeprefix("model.dtype "))   # 'must be one of [...], got ...'
    r.choice("model.image.pool", vit.POOLS, "pooling")
    r.choice("model.image.stem_impl", vit.STEM_IMPLS, "stem implementation")
    r.choice("model.attention", layers.ATTENTIONS, "attention implementation")
    patch = r.number("model.image.patch_size", integer=True, low=1, hint="use e.g. 16")
    stem = r.get("model.image.stem", ())
    if not isinstance(stem, (tuple, list)) or not all(
            isinstance(c, numbers.Integral) and not isinstance(c, bool) and c >= 1 for c in stem):
        r.add("model.image.stem", f"{stem!r} is not a tuple of conv channel counts; use e.g. (16, 32, 64, 128), "
              "or () for no stem")
        stem = None
    if image_size is not None and patch is not None and image_size % patch:
        r.add("data.image_size", f"{image_size} is not divisible by model.image.patch_size {patch}; use a multiple "
              f"of {patch}, e.g. {multiples(image_size, patch)}")
    if patch is not None and stem is not None and patch % 2 ** len(stem):
        reduce = 2 ** len(stem)
        r.add("model.image.patch_size", f"{patch} is not divisible by 2**len(model.image.stem) = {reduce} (each of "
              f"the {len(stem)} stem convs halves the resolution); use a multiple of {reduce} or a shorter stem")
    widths = {}
    for tower in ("image", "text"):
        r.number(f"model.{tower}.depth", integer=True, low=1, hint="set the number of transformer blocks, e.g. 12")
        r.number(f"model.{tower}.mlp_ratio", integer=True, low=1, hint="use e.g. 4")
        width = widths[tower] = r.number(f"model.{tower}.width", integer=True, low=1, hint="use e.g. 512")
        heads = r.number(f"model.{tower}.heads", integer=True, low=1, hint="use e.g. 8")
        if width is not None and heads is not None and width % heads:
            r.add(f"model.{tower}.heads", f"{heads} does not divide model.{tower}.width {width}; use a divisor of "
                  f"{width}, e.g. {divisors(width, heads)}")
    _released_options(r, widths)
    text_width = widths["text"]
    text_patch = r.number("model.text.patch_size", integer=True, low=1, default=1, hint="use 1 for a token per byte")
    if text_width is not None and text_patch is not None and text_width % text_patch:
        r.add("model.text.patch_size", f"{text_patch} does not divide model.text.width {text_width}; use a divisor "
              f"of {text_width}, e.g. {divisors(text_width, text_patch)}")
    freeze = r.get("model.freeze", "")
    if freeze not in optim.FREEZE:
        r.add("model.freeze", f"unknown tower {freeze!r}{closest(freeze, optim.FREEZE[1:])}; use 'image' or 'text' "
              "to freeze that tower (LiT), or '' to train both")
    learn_scale = r.get("model.learn_scale", True)
    if not isinstance(learn_scale, bool):
        r.add("model.learn_scale", f"{learn_scale!r} is not True or False; use False for a fixed logit scale "
              "(model.init_scale)")
    init = r.number("model.init_scale", low=0, low_open=True, hint="set the initial logit scale, e.g. 1/0.07")
    top = r.number("model.max_scale", low=0, low_open=True, hint="set the largest logit scale, e.g. 100")
    if init is not None and top is not None and init > top:
        r.add("model.init_scale", f"{init} is above model.max_scale {top}; lower it or raise model.max_scale")


def _released_options(r: Report, widths: dict) -> None:
    """The options that represent released models (docs/pretrained.md): act, ln_eps, proj per tower,
    ln_pre, patch_bias, pixel mean/std, text pool and vocab_size."""
    embed = r.get("model.embed_dim")
    for tower in ("image", "text"):
        r.choice(f"model.{tower}.act", layers.ACTIVATIONS, "activation")
        r.number(f"model.{tower}.ln_eps", low=0, low_open=True, high=0.1, hint="use e.g. 1e-6 (CLIP: 1e-5)")
        proj = r.choice(f"model.{tower}.proj", two_tower.PROJECTIONS, "projection")
        if proj == "none" and widths[tower] is not None and widths[tower] != embed:
            r.add(f"model.{tower}.proj", f"'none' needs model.{tower}.width {widths[tower]} to equal model.embed_dim "
                  f"{embed}; use 'linear', or set the two equal")
    for key in ("model.image.ln_pre", "model.image.patch_bias"):
        if not isinstance(r.get(key), bool):
            r.add(key, f"{r.get(key)!r} is not True or False")
    for key, low in (("model.image.pixel_mean", None), ("model.image.pixel_std", 0)):
        value = r.get(key)
        if not (isinstance(value, (tuple, list)) and len(value) == 3 and all(
                isinstance(v, numbers.Real) and not isinstance(v, bool) and (low is None or v > low) for v in value)):
            r.add(key, f"{value!r} is not 3 numbers (R, G, B{', each > 0' if low is not None else ''}) on the [0, 1] "
                  "pixel scale; use e.g. (0.5, 0.5, 0.5)")
    pool = r.choice("model.text.pool", text_tower.POOLS, "text pooling")
    patch = r.get("model.text.patch_size", 1)
    if pool in ("argmax", "last") and patch != 1:
        r.add("model.text.pool", f"{pool!r} reads one token, but model.text.patch_size is {patch}; use patch_size 1 "
              "or pool 'eos' / 'mean'")
    r.number("model.text.vocab_size", integer=True, low=0, hint="use 0 for the tokenizer's vocabulary size")
