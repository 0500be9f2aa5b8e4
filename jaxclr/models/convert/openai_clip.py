"""OpenAI CLIP (ViT image tower) state dict -> jaxclr params and config overrides (pure numpy).

The layout is OpenAI's, exactly as open_clip's ``CLIP`` ``state_dict()`` gives it (also what
OpenAI's own .pt files hold, plus three int entries 'input_resolution', 'context_length',
'vocab_size' that are checked and dropped):

    visual.conv1.weight [W,3,p,p]  visual.class_embedding [W]  visual.positional_embedding [1+g*g, W]
    visual.ln_pre.{weight,bias}    visual.ln_post.{weight,bias}   visual.proj [W, D]
    visual.transformer.resblocks.<i>.{ln_1, attn.in_proj_weight [3W,W], attn.in_proj_bias [3W],
        attn.out_proj.{weight,bias}, ln_2, mlp.c_fc.{weight [M,W],bias}, mlp.c_proj.{weight [W,M],bias}}
    token_embedding.weight [V, Wt]  positional_embedding [L, Wt]  transformer.resblocks.<i>...
    ln_final.{weight,bias}  text_projection [Wt, D]  logit_scale [] (already a log)

Torch Linear weights are [out, in]; jaxclr kernels are [in, out] (weight.T). ``visual.proj`` and
``text_projection`` are used as ``x @ P`` and are [in, out] already. ``in_proj_weight`` rows are
q, k, v, each (heads, head_dim), so ``in_proj_weight.T`` is jaxclr's qkv kernel with columns
[q | k | v]. The patch conv [W,3,p,p] becomes [p*p*3, W] with rows in (py, px, c) order.

Heads are not stored: OpenAI's (and open_clip's) rule is ``width // 64`` (head width 64). Models
with another head width (open_clip's ViT-H-14 image tower: 80; small test models) need ``heads=``
(image) and ``text_heads=`` (text). Depth is the number of resblocks found. ResNet image towers
(RN50, ...) are not supported.
"""
import math
import re

import numpy as np

from jaxclr.models.convert import CheckpointError, TensorReader, mlp_ratio

LAYOUT = "openai_clip"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
HEAD_WIDTH = 64   # OpenAI's rule: heads = width // 64


def _depth(reader: TensorReader, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = [int(m.group(1)) for m in map(pattern.match, reader.names()) if m]
    if not found:
        raise reader.error(f"{prefix}0.ln_1.weight", "nothing (missing)", "a transformer block (none found)")
    return max(found) + 1


def _heads(given, width: int, name: str):
    heads = int(given) if given is not None else width // HEAD_WIDTH
    if heads <= 0 or width % heads:
        how = "given" if given is not None else f"width // {HEAD_WIDTH}"
        raise ValueError(f"{LAYOUT}: {heads} heads ({how}) do not divide the width {width} of {name!r}; "
                         f"pass the tower's heads")
    return heads


def _blocks(reader: TensorReader, prefix: str, out: str, width: int, depth: int, hidden: int, params: dict):
    """OpenAI resblocks <prefix><i>.* -> jaxclr <out>/blocks/<i>/*."""
    w = width
    for i in range(depth):
        src, dst = f"{prefix}{i}.", f"{out}/blocks/{i}/"
        for a, b in (("ln_1", "ln1"), ("ln_2", "ln2")):
            params[f"{dst}{b}/scale"] = reader.take(f"{src}{a}.weight", (w,))
            params[f"{dst}{b}/bias"] = reader.take(f"{src}{a}.bias", (w,))
        params[f"{dst}attn/qkv/kernel"] = reader.take(f"{src}attn.in_proj_weight", (3 * w, w)).T
        params[f"{dst}attn/qkv/bias"] = reader.take(f"{src}attn.in_proj_bias", (3 * w,))
        params[f"{dst}attn/out/kernel"] = reader.take(f"{src}attn.out_proj.weight", (w, w)).T
        params[f"{dst}attn/out/bias"] = reader.take(f"{src}attn.out_proj.bias", (w,))
        params[f"{dst}mlp/fc1/kernel"] = reader.take(f"{src}mlp.c_fc.weight", (hidden, w)).T
        params[f"{dst}mlp/fc1/bias"] = reader.take(f"{src}mlp.c_fc.bias", (hidden,))
        params[f"{dst}mlp/fc2/kernel"] = reader.take(f"{src}mlp.c_proj.weight", (w, hidden)).T
        params[f"{dst}mlp/fc2/bias"] = reader.take(f"{src}mlp.c_proj.bias", (w,))


def _ln(reader, src, dst, width, params):
    params[f"{dst}/scale"] = reader.take(f"{src}.weight", (width,))
    params[f"{dst}/bias"] = reader.take(f"{src}.bias", (width,))


def _meta(reader: TensorReader, name: str, expected: int):
    value = reader.take_meta(name)
    if value is not None and int(np.asarray(value).reshape(-1)[0]) != expected:
        raise reader.error(name, f"value {int(np.asarray(value).reshape(-1)[0])}", f"value {expected}")


def convert(tensors, heads=None, text_heads=None):
    """OpenAI CLIP state dict (numpy arrays) -> (jaxclr params, config overrides).

    Args:
      tensors: {name: array} in OpenAI's layout (module docstring).
      heads / text_heads: attention heads of the image / text tower; None: width // 64 (OpenAI's
        rule, right for OpenAI's and most open_clip ViTs; not for head widths other than 64).
    Returns:
      ({jaxclr unscanned '/'-path: float32 array}, {dotted config key: value}).
    Raises:
      CheckpointError (ValueError), one line naming the tensor, for a missing, unexpected or
      wrong-shape tensor; ValueError for heads that do not divide a width.
    """
    r = TensorReader(tensors, LAYOUT)
    if "visual.layer1.0.conv1.weight" in r:
        raise r.wrong("visual.layer1.0.conv1.weight", "a ViT image tower (ResNet image towers are not supported)")
    params = {}

    # image tower
    w, c, p, p2 = r.anchor("visual.conv1.weight", 4, "[width, 3, patch, patch]")
    if c != 3 or p != p2:
        raise r.wrong("visual.conv1.weight", "shape [width, 3, patch, patch]")
    tokens = r.anchor("visual.positional_embedding", 2, f"[1 + grid*grid, {w}]")[0]
    grid = math.isqrt(max(tokens - 1, 0))
    if grid < 1 or grid * grid + 1 != tokens:
        raise r.wrong("visual.positional_embedding", f"shape [1 + grid*grid, {w}]")
    w_in, embed = r.anchor("visual.proj", 2, f"[{w}, embed_dim]")
    if w_in != w:
        raise r.wrong("visual.proj", f"shape [{w}, embed_dim]")
    depth = _depth(r, "visual.transformer.resblocks.")
    hidden = r.anchor("visual.transformer.resblocks.0.mlp.c_fc.weight", 2, f"[hidden, {w}]")[0]
    params["image/patch/kernel"] = r.take("visual.conv1.weight", (w, 3, p, p)).transpose(2, 3, 1, 0).reshape(
        p * p * 3, w)
    params["image/cls_embedding"] = r.take("visual.class_embedding", (w,)).reshape(1, 1, w)
    params["image/pos_embedding"] = r.take("visual.positional_embedding", (tokens, w)).reshape(1, tokens, w)
    _ln(r, "visual.ln_pre", "image/ln_pre", w, params)
    _blocks(r, "visual.transformer.resblocks.", "image/encoder", w, depth, hidden, params)
    _ln(r, "visual.ln_post", "image/encoder/norm", w, params)
    params["image_proj/kernel"] = r.take("visual.proj", (w, embed))
    image_heads = _heads(heads, w, "visual.conv1.weight")

    # text tower
    vocab, wt = r.anchor("token_embedding.weight", 2, "[vocab, width]")
    max_len = r.anchor("positional_embedding", 2, f"[context, {wt}]")[0]
    tdepth = _depth(r, "transformer.resblocks.")
    thidden = r.anchor("transformer.resblocks.0.mlp.c_fc.weight", 2, f"[hidden, {wt}]")[0]
    params["text/token/embedding"] = r.take("token_embedding.weight", (vocab, wt))
    params["text/pos_embedding"] = r.take("positional_embedding", (max_len, wt)).reshape(1, max_len, wt)
    _blocks(r, "transformer.resblocks.", "text/encoder", wt, tdepth, thidden, params)
    _ln(r, "ln_final", "text/encoder/norm", wt, params)
    params["text_proj/kernel"] = r.take("text_projection", (wt, embed))
    theads = _heads(text_heads, wt, "token_embedding.weight")

    log_scale = r.take("logit_scale", (), alt_shapes=[(1,)])
    params["logit/log_scale"] = np.asarray(log_scale, np.float32).reshape(())

    image_size = grid * p
    _meta(r, "input_resolution", image_size)   # OpenAI's .pt files carry these three
    _meta(r, "context_length", max_len)
    _meta(r, "vocab_size", vocab)
    r.finish()

    params = {k: np.array(v, np.float32, order="C") for k, v in params.items()}   # (keeps 0-d scalars)
    init_scale = float(math.exp(float(params["logit/log_scale"])))
    overrides = {
        "model.embed_dim": int(embed),
        "model.image.patch_size": int(p), "model.image.width": int(w), "model.image.depth": depth,
        "model.image.heads": image_heads, "model.image.mlp_ratio": mlp_ratio(hidden, w),
        "model.image.pool": "tok", "model.image.ln_pre": True, "model.image.patch_bias": False,
        "model.image.act": "quick_gelu", "model.image.ln_eps": 1e-5, "model.image.proj": "linear",
        "model.image.stem": (), "model.image.pixel_mean": OPENAI_MEAN, "model.image.pixel_std": OPENAI_STD,
        "model.text.width": int(wt), "model.text.depth": tdepth, "model.text.heads": theads,
        "model.text.mlp_ratio": mlp_ratio(thidden, wt), "model.text.max_len": int(max_len),
        "model.text.causal": True, "model.text.pool": "argmax", "model.text.act": "quick_gelu",
        "model.text.ln_eps": 1e-5, "model.text.proj": "linear", "model.text.patch_size": 1,
        "model.text.vocab_size": int(vocab),
        "data.image_size": int(image_size), "data.max_len": int(max_len),
        "model.learn_bias": False, "model.init_scale": init_scale,
        # OpenAI's stored scale is ln(100) in float16 (exp: 100.03): lift the clamp so init_scale fits.
        "model.max_scale": max(100.0, init_scale),
    }
    return params, overrides


__all__ = ["convert", "CheckpointError", "OPENAI_MEAN", "OPENAI_STD"]
