"""Two-tower contrastive model: ViT + text transformer, linear projections, logit scale and bias.

Precision policy: the towers compute in ``model.dtype`` (float32 params); their pooled
features are float32, and the final projections and the L2 normalisation run in
float32 at ``Precision.HIGHEST`` whatever the tower dtype, so embeddings (and every
loss and eval built on them) are full float32.

Param names are what ``jaxclr.trainer.optim.param_role`` reads to decide weight decay:
'kernel' (dense/conv weights), 'embedding' (the token table), 'pos_embedding',
'cls_embedding', norm 'scale'/'bias', and the logit parameters under 'logit' as
'log_scale' and (only when model.learn_bias) 'bias'.

Projections (model.image.proj, model.text.proj): 'linear' (no bias, the default), 'affine' (with
a bias: SigLIP's text head) or 'none' (the tower's pooled features are the embedding: SigLIP's
image tower, whose width must then equal model.embed_dim).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxclr.models.layers import PARAM_DTYPE, compute_dtype
from jaxclr.models.text import TextTransformer
from jaxclr.models.vit import ViT

PROJECTIONS = ("linear", "affine", "none")   # model.image.proj / model.text.proj values


def projection(kind: str, width: int, embed_dim: int, tower: str, rngs: nnx.Rngs) -> nnx.Linear | None:
    """The float32 HIGHEST-precision projection of a tower (None for 'none'; module docstring)."""
    if kind not in PROJECTIONS:
        raise ValueError(f"model.{tower}.proj must be one of {', '.join(map(repr, PROJECTIONS))}, got {kind!r}")
    if kind == "none":
        if width != embed_dim:
            raise ValueError(f"model.{tower}.proj='none' needs the {tower} width {width} to equal model.embed_dim "
                             f"{embed_dim}")
        return None
    return nnx.Linear(width, embed_dim, use_bias=kind == "affine", dtype=jnp.float32, param_dtype=PARAM_DTYPE,
                      precision=jax.lax.Precision.HIGHEST, rngs=rngs)


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """Unit-norm rows in float32 (a zero row stays zero instead of becoming NaN)."""
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps))


class LogitParams(nnx.Module):
    """Learnable logit scale (as 'log_scale') and, optionally, logit bias ('bias'); float32 scalars."""

    def __init__(self, init_scale: float, max_scale: float, learn_bias: bool, init_bias: float):
        if not 0 < init_scale <= max_scale:
            raise ValueError(f"model.init_scale must be in (0, model.max_scale={max_scale}], got {init_scale}")
        self.log_scale = nnx.Param(jnp.asarray(math.log(init_scale), PARAM_DTYPE))
        if learn_bias:
            self.bias = nnx.Param(jnp.asarray(init_bias, PARAM_DTYPE))


class TwoTower(nnx.Module):
    """CLIP/SigLIP-style dual encoder.

    Args:
      cfg_model: config.model (embed_dim, dtype, image, text, init_scale, max_scale,
        learn_bias, init_bias). max_scale is enforced by the optimiser (``optim.project``)
        and only checked against init_scale here.
      image_size: side of the square input images (config.data.image_size).
      vocab_size, pad_id, eos_id: the tokenizer's (jaxclr.data.text): rows of the token table, the
        padding and end-of-text ids.
      rngs: nnx.Rngs with a 'params' stream.
    """

    def __init__(self, cfg_model, image_size: int, *, vocab_size: int, pad_id: int, eos_id: int, rngs: nnx.Rngs):
        dtype = compute_dtype(cfg_model["dtype"])
        embed_dim = int(cfg_model["embed_dim"])
        self.learn_bias = bool(cfg_model["learn_bias"])
        memory = dict(remat=cfg_model["remat"], scan_layers=bool(cfg_model["scan_layers"]),
                      attention=cfg_model["attention"])
        self.image = ViT(cfg_model["image"], image_size, dtype, rngs=rngs, **memory)
        self.text = TextTransformer(cfg_model["text"], dtype, vocab_size=vocab_size, pad_id=pad_id, eos_id=eos_id,
                                    rngs=rngs, **memory)
        self.image_proj = projection(cfg_model["image"]["proj"], self.image.width, embed_dim, "image", rngs)
        self.text_proj = projection(cfg_model["text"]["proj"], self.text.width, embed_dim, "text", rngs)
        self.logit = LogitParams(float(cfg_model["init_scale"]), float(cfg_model["max_scale"]), self.learn_bias,
                                 float(cfg_model["init_bias"]))

    def embed_image(self, images: jax.Array) -> jax.Array:
        """images [B, S, S, 3] (uint8, or float on the 0..255 scale) -> [B, embed_dim] float32 unit norm."""
        x = self.image(images)
        return l2_normalize(x if self.image_proj is None else self.image_proj(x))

    def embed_text(self, tokens: jax.Array) -> jax.Array:
        """tokens int [B, L] -> [B, embed_dim] float32 unit norm."""
        x = self.text(tokens)
        return l2_normalize(x if self.text_proj is None else self.text_proj(x))

    def __call__(self, images: jax.Array, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Returns (zimg, ztxt), both [B, embed_dim] float32 and L2-normalised."""
        return self.embed_image(images), self.embed_text(tokens)

    def scale(self) -> jax.Array:
        """Logit scale exp(log_scale) as a float32 scalar (log_scale is kept <= ln(max_scale) by
        ``optim.project`` after each update, so the gradient is never cut by a clamp)."""
        return jnp.exp(self.logit.log_scale[...]).astype(jnp.float32)

    def bias(self) -> jax.Array:
        """Logit bias as a float32 scalar; a constant 0.0 when model.learn_bias is False."""
        if self.learn_bias:
            return self.logit.bias[...].astype(jnp.float32)
        return jnp.zeros((), jnp.float32)


def count_params(model: nnx.Module) -> int:
    """Total number of scalar entries in the model's nnx.Param variables."""
    return int(sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))))
