"""Two-tower contrastive model: ViT + text transformer, linear projections, logit scale and bias.

Param naming (for optimiser masks by name): weight matrices end in 'kernel', embedding
tables / learned positions / class token end in 'embedding', norms hold 'scale'/'bias',
and the logit parameters live under 'logit' as 'log_scale' and (only when
model.learn_bias) 'bias'.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxclr.models.layers import PARAM_DTYPE, compute_dtype
from jaxclr.models.text import TextTransformer
from jaxclr.models.vit import ViT


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """Unit-norm rows in float32 (a zero row stays zero instead of becoming NaN)."""
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps))


class LogitParams(nnx.Module):
    """Learnable logit scale (as 'log_scale') and, optionally, logit bias ('bias'); float32 scalars."""

    def __init__(self, init_scale: float, learn_bias: bool, init_bias: float):
        if init_scale <= 0:
            raise ValueError(f"model.init_scale must be > 0, got {init_scale}")
        self.log_scale = nnx.Param(jnp.asarray(math.log(init_scale), PARAM_DTYPE))
        if learn_bias:
            self.bias = nnx.Param(jnp.asarray(init_bias, PARAM_DTYPE))


class TwoTower(nnx.Module):
    """CLIP/SigLIP-style dual encoder.

    Args:
      cfg_model: config.model (embed_dim, dtype, image, text, init_scale, max_scale,
        learn_bias, init_bias).
      image_size: side of the square input images (config.data.image_size).
      rngs: nnx.Rngs with a 'params' stream.
    """

    def __init__(self, cfg_model, image_size: int, *, rngs: nnx.Rngs):
        dtype = compute_dtype(cfg_model["dtype"])
        embed_dim = int(cfg_model["embed_dim"])
        self.max_scale = float(cfg_model["max_scale"])
        self.learn_bias = bool(cfg_model["learn_bias"])
        self.image = ViT(cfg_model["image"], image_size, dtype, rngs=rngs)
        self.text = TextTransformer(cfg_model["text"], dtype, rngs=rngs)
        self.image_proj = nnx.Linear(self.image.width, embed_dim, use_bias=False, dtype=dtype,
                                     param_dtype=PARAM_DTYPE, rngs=rngs)
        self.text_proj = nnx.Linear(self.text.width, embed_dim, use_bias=False, dtype=dtype,
                                    param_dtype=PARAM_DTYPE, rngs=rngs)
        self.logit = LogitParams(float(cfg_model["init_scale"]), self.learn_bias,
                                 float(cfg_model["init_bias"]))

    def embed_image(self, images: jax.Array) -> jax.Array:
        """images [B, S, S, 3] (uint8, or float on the 0..255 scale) -> [B, embed_dim] float32 unit norm."""
        return l2_normalize(self.image_proj(self.image(images)))

    def embed_text(self, tokens: jax.Array) -> jax.Array:
        """tokens int [B, L] -> [B, embed_dim] float32 unit norm."""
        return l2_normalize(self.text_proj(self.text(tokens)))

    def __call__(self, images: jax.Array, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Returns (zimg, ztxt), both [B, embed_dim] float32 and L2-normalised."""
        return self.embed_image(images), self.embed_text(tokens)

    def scale(self) -> jax.Array:
        """Logit scale min(exp(log_scale), max_scale) as a float32 scalar."""
        return jnp.minimum(jnp.exp(self.logit.log_scale[...]), self.max_scale).astype(jnp.float32)

    def bias(self) -> jax.Array:
        """Logit bias as a float32 scalar; a constant 0.0 when model.learn_bias is False."""
        if self.learn_bias:
            return self.logit.bias[...].astype(jnp.float32)
        return jnp.zeros((), jnp.float32)


def count_params(model: nnx.Module) -> int:
    """Total number of scalar entries in the model's nnx.Param variables."""
    return int(sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))))
