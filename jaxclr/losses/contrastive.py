"""Pairwise contrastive objectives: CLIP (softmax InfoNCE), SigLIP (sigmoid), DCL.

Definitions in docs/reference.md. Inputs are global, L2-normalised [N, D]
embeddings; ``engine_kw`` (mesh, impl, block_size) is passed to the engine.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxclr.losses.engine import pair_stats


def positive_logits(zimg, ztxt, scale):
    """s u_i.v_i for every pair i (elementwise, no communication)."""
    return jnp.asarray(scale, jnp.float32) * jnp.sum(zimg * ztxt, axis=-1)


def clip_loss(zimg, ztxt, scale, **engine_kw):
    """Symmetric softmax InfoNCE: mean of the image->text and text->image CE.

    Each row's CE is written as softplus(LSE_{j != i} l_ij - l_ii), which equals
    LSE_j l_ij - l_ii but never subtracts two numbers of size ``scale``: at low loss
    it keeps its relative precision (and is never negative) where the plain form
    returns rounding noise of order 1e-5.
    """
    rows, cols = pair_stats(zimg, ztxt, scale, exclude_diag=True, **engine_kw)
    pos = positive_logits(zimg, ztxt, scale)
    return 0.5 * (jnp.mean(jax.nn.softplus(rows - pos)) + jnp.mean(jax.nn.softplus(cols - pos)))


def dcl_loss(zimg, ztxt, scale, **engine_kw):
    """Decoupled contrastive loss: the positive is left out of each denominator."""
    rows, cols = pair_stats(zimg, ztxt, scale, exclude_diag=True, **engine_kw)
    return 0.5 * (jnp.mean(rows) + jnp.mean(cols)) - jnp.mean(positive_logits(zimg, ztxt, scale))


def sigmoid_loss(zimg, ztxt, scale, bias, **engine_kw):
    """SigLIP: -1/N sum_ij log sigmoid(z_ij (s u_i.v_j + b)), using -log sigmoid(x) = softplus(-x)."""
    n = zimg.shape[0]
    bias = jnp.asarray(bias, jnp.float32)
    negatives, _ = pair_stats(zimg, ztxt, scale, jnp.broadcast_to(bias, (n,)), kind="softplus",
                              exclude_diag=True, want_cols=False, **engine_kw)
    positives = jax.nn.softplus(-(positive_logits(zimg, ztxt, scale) + bias))
    return (jnp.sum(negatives) + jnp.sum(positives)) / n
