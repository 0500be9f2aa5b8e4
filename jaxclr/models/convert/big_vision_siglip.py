"""big_vision SigLIP checkpoint (.npz names) -> jaxclr params and config overrides (pure numpy).

The names are big_vision's two_towers model (the ones open_clip's ``load_big_vision_weights``
reads), under an optional 'params/' prefix:

    img/embedding/{kernel [p,p,3,W], bias [W]}   img/pos_embedding [1, g*g, W]   (no cls token)
    img/Transformer/encoderblock_<i>/{LayerNorm_0, MultiHeadDotProductAttention_0/{query,key,value}/
        {kernel [W,H,hd], bias [H,hd]}, .../out/{kernel [H,hd,W], bias [W]}, LayerNorm_1,
        MlpBlock_0/Dense_{0,1}/{kernel [in,out], bias}}
    img/Transformer/encoder_norm/{scale,bias}
    img/MAPHead_0/{probe [1,1,W], MultiHeadDotProductAttention_0/..., LayerNorm_0, MlpBlock_0/...}
    txt/Embed_0/embedding [V, Wt]   txt/pos_embedding [1, L, Wt]
    txt/Encoder_0/encoderblock_<i>/... (as the image's)   txt/Encoder_0/encoder_norm/{scale,bias}
    txt/head/{kernel [Wt, D], bias [D]}   t [1] (log of the logit scale)   b [1] (logit bias)

Checkpoints trained with ``scan=True`` store the blocks as one ``encoderblock/...`` per tower with
a leading layer axis [depth, ...]; they are split into blocks here. Dense kernels are [in, out]
already (jaxclr's); attention kernels reshape: query/key/value [W,H,hd] -> [W, H*hd] (columns
(heads, head_dim), jaxclr's order), out [H,hd,W] -> [H*hd, W]; the patch kernel [p,p,3,W] ->
[p*p*3, W] (rows (py, px, c)). The MAP head's key and value become one kv kernel [W, 2W]
(columns [k | v]).

The image tower has no projection (its pooled width is the embedding: model.image.proj='none');
the text 'head' is an affine projection (model.text.proj='affine'). Heads are read from the
attention kernels' shapes. Both towers use tanh-approximate GELU (flax's nn.gelu) and
LayerNorm eps 1e-6.
"""
import math
import re

import numpy as np

from jaxclr.models.convert import CheckpointError, TensorReader, mlp_ratio

LAYOUT = "big_vision_siglip"
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)


class _Blocks:
    """One tower's encoder blocks, unscanned ('encoderblock_<i>/') or scanned ('encoderblock/')."""

    def __init__(self, reader: TensorReader, encoder: str):
        self.r, self.encoder = reader, encoder
        scanned = f"{encoder}encoderblock/LayerNorm_0/scale"
        if scanned in reader:
            self.scanned = True
            self.depth = reader.anchor(scanned, 2, "[depth, width]")[0]
        else:
            self.scanned = False
            pattern = re.compile(re.escape(encoder) + r"encoderblock_(\d+)/")
            found = [int(m.group(1)) for m in map(pattern.match, reader.names()) if m]
            if not found:
                raise reader.error(f"{encoder}encoderblock_0/LayerNorm_0/scale", "nothing (missing)",
                                   "a transformer block (none found, scanned or not)")
            self.depth = max(found) + 1

    def name(self, i: int, rel: str) -> str:
        return f"{self.encoder}encoderblock/{rel}" if self.scanned else f"{self.encoder}encoderblock_{i}/{rel}"

    def take(self, i: int, rel: str, shape) -> np.ndarray:
        if self.scanned:
            return self.r.take_stacked(self.name(i, rel), i, self.depth, shape)
        return self.r.take(self.name(i, rel), shape)

    def anchor(self, rel: str, ndim: int, described: str) -> tuple:
        shape = self.r.anchor(self.name(0, rel), ndim + self.scanned, described)
        return shape[1:] if self.scanned else shape


def _attention_heads(reader: TensorReader, name: str, shape: tuple, width: int) -> int:
    """Heads from a query kernel's shape [W, H, hd] (W = width, H * hd = W)."""
    if shape[0] != width or shape[1] * shape[2] != width:
        raise reader.wrong(name, f"shape [{width}, heads, {width} // heads]")
    return shape[1]


def _mha(take, width: int, heads: int):
    """A flax MultiHeadDotProductAttention's params -> {'q','k','v','out'}: (kernel [W,W], bias [W])."""
    hd = width // heads
    out = {}
    for n, short in (("query", "q"), ("key", "k"), ("value", "v")):
        out[short] = (take(f"{n}/kernel", (width, heads, hd)).reshape(width, width),
                      take(f"{n}/bias", (heads, hd)).reshape(width))
    out["out"] = (take("out/kernel", (heads, hd, width)).reshape(width, width), take("out/bias", (width,)))
    return out


def _mlp(take, width: int, hidden: int, dst: str, params: dict):
    params[f"{dst}fc1/kernel"] = take("Dense_0/kernel", (width, hidden))
    params[f"{dst}fc1/bias"] = take("Dense_0/bias", (hidden,))
    params[f"{dst}fc2/kernel"] = take("Dense_1/kernel", (hidden, width))
    params[f"{dst}fc2/bias"] = take("Dense_1/bias", (width,))


def _ln(take, src: str, dst: str, width: int, params: dict):
    params[f"{dst}/scale"] = take(f"{src}/scale", (width,))
    params[f"{dst}/bias"] = take(f"{src}/bias", (width,))


def _encoder(r: TensorReader, encoder: str, out: str, width: int, heads_given, params: dict):
    """big_vision Encoder at ``encoder`` ('.../Transformer/' or '.../Encoder_0/') -> jaxclr <out>/...;
    returns (depth, heads, mlp hidden)."""
    blocks = _Blocks(r, encoder)
    mha = "MultiHeadDotProductAttention_0/"
    qshape = blocks.anchor(f"{mha}query/kernel", 3, f"[{width}, heads, head_dim]")
    heads = _attention_heads(r, blocks.name(0, f"{mha}query/kernel"), qshape, width)
    if heads_given is not None and int(heads_given) != heads:
        raise r.wrong(blocks.name(0, f"{mha}query/kernel"), f"shape [{width}, {int(heads_given)}, "
                      f"{width // max(int(heads_given), 1)}] (heads={int(heads_given)} given)")
    hidden = blocks.anchor("MlpBlock_0/Dense_0/kernel", 2, f"[{width}, hidden]")[1]
    for i in range(blocks.depth):
        dst = f"{out}/blocks/{i}/"

        def take(rel, shape, i=i):
            return blocks.take(i, rel, shape)

        _ln(take, "LayerNorm_0", f"{dst}ln1", width, params)
        attn = _mha(lambda rel, shape: take(f"{mha}{rel}", shape), width, heads)
        params[f"{dst}attn/qkv/kernel"] = np.concatenate([attn[n][0] for n in "qkv"], axis=1)
        params[f"{dst}attn/qkv/bias"] = np.concatenate([attn[n][1] for n in "qkv"])
        params[f"{dst}attn/out/kernel"], params[f"{dst}attn/out/bias"] = attn["out"]
        _ln(take, "LayerNorm_1", f"{dst}ln2", width, params)
        _mlp(lambda rel, shape: take(f"MlpBlock_0/{rel}", shape), width, hidden, f"{dst}mlp/", params)
    _ln(lambda n, s: r.take(f"{encoder}{n}", s), "encoder_norm", f"{out}/norm", width, params)
    return blocks.depth, heads, hidden


def convert(tensors, heads=None, text_heads=None):
    """big_vision SigLIP checkpoint ({npz name: array}) -> (jaxclr params, config overrides).

    Args:
      tensors: the npz's arrays by name, with or without the 'params/' prefix (module docstring).
      heads / text_heads: optional; the heads are read from the attention kernels' shapes, and a
        value given here must agree with them.
    Returns:
      ({jaxclr unscanned '/'-path: float32 array}, {dotted config key: value}).
    Raises:
      CheckpointError (ValueError), one line naming the tensor, for a missing, unexpected or
      wrong-shape tensor.
    """
    r = TensorReader(tensors, LAYOUT)
    root = "params/" if any(n.startswith("params/") for n in r.names()) else ""
    img, txt = f"{root}img/", f"{root}txt/"
    params = {}

    # image tower
    p, p2, c, w = r.anchor(f"{img}embedding/kernel", 4, "[patch, patch, 3, width]")
    if c != 3 or p != p2:
        raise r.wrong(f"{img}embedding/kernel", "shape [patch, patch, 3, width]")
    tokens = r.anchor(f"{img}pos_embedding", 3, f"[1, grid*grid, {w}]")[1]
    grid = math.isqrt(tokens)
    if grid < 1 or grid * grid != tokens:
        raise r.wrong(f"{img}pos_embedding", f"shape [1, grid*grid, {w}]")
    params["image/patch/kernel"] = r.take(f"{img}embedding/kernel", (p, p, 3, w)).reshape(p * p * 3, w)
    params["image/patch/bias"] = r.take(f"{img}embedding/bias", (w,))
    params["image/pos_embedding"] = r.take(f"{img}pos_embedding", (1, tokens, w))
    depth, image_heads, hidden = _encoder(r, f"{img}Transformer/", "image/encoder", w, heads, params)

    # MAP head: probe attends to the (normed) tokens; y = y + mlp(norm(y)); jaxclr uses the image
    # tower's heads and mlp_ratio for it, so its shapes must agree with the blocks'.
    head = f"{img}MAPHead_0/"
    params["image/map_head/probe"] = r.take(f"{head}probe", (1, 1, w))
    attn = _mha(lambda rel, shape: r.take(f"{head}MultiHeadDotProductAttention_0/{rel}", shape), w, image_heads)
    params["image/map_head/q/kernel"], params["image/map_head/q/bias"] = attn["q"]
    params["image/map_head/kv/kernel"] = np.concatenate([attn["k"][0], attn["v"][0]], axis=1)
    params["image/map_head/kv/bias"] = np.concatenate([attn["k"][1], attn["v"][1]])
    params["image/map_head/out/kernel"], params["image/map_head/out/bias"] = attn["out"]
    _ln(lambda n, s: r.take(f"{head}{n}", s), "LayerNorm_0", "image/map_head/norm", w, params)
    _mlp(lambda rel, shape: r.take(f"{head}MlpBlock_0/{rel}", shape), w, hidden, "image/map_head/mlp/", params)

    # text tower
    vocab, wt = r.anchor(f"{txt}Embed_0/embedding", 2, "[vocab, width]")
    max_len = r.anchor(f"{txt}pos_embedding", 3, f"[1, context, {wt}]")[1]
    params["text/token/embedding"] = r.take(f"{txt}Embed_0/embedding", (vocab, wt))
    params["text/pos_embedding"] = r.take(f"{txt}pos_embedding", (1, max_len, wt))
    tdepth, theads, thidden = _encoder(r, f"{txt}Encoder_0/", "text/encoder", wt, text_heads, params)
    # the image's pooled width is the embedding (no image projection), so the text head maps to it
    params["text_proj/kernel"] = r.take(f"{txt}head/kernel", (wt, w))
    params["text_proj/bias"] = r.take(f"{txt}head/bias", (w,))

    params["logit/log_scale"] = r.take(f"{root}t", (), alt_shapes=[(1,)])
    params["logit/bias"] = r.take(f"{root}b", (), alt_shapes=[(1,)])
    r.finish()

    params = {k: np.array(v, np.float32, order="C") for k, v in params.items()}   # (keeps 0-d scalars)
    init_scale = float(math.exp(float(params["logit/log_scale"])))
    overrides = {
        "model.embed_dim": int(w),
        "model.image.patch_size": int(p), "model.image.width": int(w), "model.image.depth": int(depth),
        "model.image.heads": int(image_heads), "model.image.mlp_ratio": mlp_ratio(hidden, w),
        "model.image.pool": "map", "model.image.ln_pre": False, "model.image.patch_bias": True,
        "model.image.act": "gelu_tanh", "model.image.ln_eps": 1e-6, "model.image.proj": "none",
        "model.image.stem": (), "model.image.pixel_mean": SIGLIP_MEAN, "model.image.pixel_std": SIGLIP_STD,
        "model.text.width": int(wt), "model.text.depth": int(tdepth), "model.text.heads": int(theads),
        "model.text.mlp_ratio": mlp_ratio(thidden, wt), "model.text.max_len": int(max_len),
        "model.text.causal": False, "model.text.pool": "last", "model.text.act": "gelu_tanh",
        "model.text.ln_eps": 1e-6, "model.text.proj": "affine", "model.text.patch_size": 1,
        "model.text.vocab_size": int(vocab),
        "data.image_size": int(grid * p), "data.max_len": int(max_len),
        "model.learn_bias": True, "model.init_scale": init_scale,
        "model.init_bias": float(params["logit/bias"]),
        # SigLIP's learned scale is unclamped (released models: exp(t) above 100): lift the clamp to fit it.
        "model.max_scale": max(100.0, init_scale),
    }
    return params, overrides


__all__ = ["convert", "CheckpointError", "SIGLIP_MEAN", "SIGLIP_STD"]
