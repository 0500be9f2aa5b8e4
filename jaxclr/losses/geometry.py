"""Alignment and uniformity (Wang & Isola 2020) and the cross-modal uniformity.

Uniformity is a log-mean-exp over all pairs i != j, which the similarity engine
computes blockwise: -t||x_i - y_j||^2 = 2t x_i.y_j - t|x_i|^2 - t|y_j|^2, with
the last term as the engine's column bias. The norms are kept (not assumed 1)
so gradients are exact for any input.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxclr.losses.engine import pair_stats


def alignment(x, y, alpha=2.0):
    """1/N sum_i ||x_i - y_i||^alpha."""
    sq = jnp.sum(jnp.square(x - y), axis=-1)
    if alpha == 2.0:
        return jnp.mean(sq)
    safe = jnp.where(sq > 0, sq, 1.0)
    return jnp.mean(jnp.where(sq > 0, safe ** (alpha / 2.0), 0.0))


def cross_uniformity(x, y, t=2.0, **engine_kw):
    """log( 1/(N(N-1)) sum_{i != j} exp(-t ||x_i - y_j||^2) )."""
    n = x.shape[0]
    t = jnp.asarray(t, jnp.float32)
    sq_x = jnp.sum(jnp.square(x), axis=-1)
    sq_y = jnp.sum(jnp.square(y), axis=-1)
    rows, _ = pair_stats(x, y, 2.0 * t, -t * sq_y, exclude_diag=True, want_cols=False, **engine_kw)
    return jax.nn.logsumexp(rows - t * sq_x) - jnp.log(n * (n - 1.0))


def uniformity(x, t=2.0, **engine_kw):
    """log( 1/(N(N-1)) sum_{i != j} exp(-t ||x_i - x_j||^2) ); equals the pdist (i < j) form."""
    return cross_uniformity(x, x, t, **engine_kw)
