"""One entry point to the similarity engines, chosen by name (``loss.impl``).

``pair_stats`` is the only primitive every pairwise objective needs: the row
(and column) log-sum-exp, or the row softplus sum, of the global logit matrix
``l_ij = scale x_i.y_j + col_bias_j`` -- computed without materialising it.

Precision: inputs are cast to float32 and every dot product of either engine
(forward and backward) runs at ``precision`` (default ``'highest'``: full float32
on TPU/GPU too, where the backend default is one bf16 pass or TF32; at scale 100
a bf16 pass moves logits by ~0.01 on average). ``'default'`` leaves it to the
backend. The train step passes ``loss.precision``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxclr.config.choices import DEFAULT_BLOCK
from jaxclr.losses import gather, sharding, streamed

IMPLS = {"streamed": streamed.pair_stats, "gather": gather.pair_stats}
PRECISIONS = {"highest": jax.lax.Precision.HIGHEST, "high": jax.lax.Precision.HIGH,
              "default": jax.lax.Precision.DEFAULT}


def resolve_precision(precision) -> jax.lax.Precision:
    """'highest' | 'high' | 'default' (or a jax.lax.Precision) -> jax.lax.Precision."""
    if isinstance(precision, jax.lax.Precision):
        return precision
    if precision not in PRECISIONS:
        raise ValueError(f"unknown loss precision {precision!r}; choose one of {sorted(PRECISIONS)}")
    return PRECISIONS[precision]


def pair_stats(x, y, scale, col_bias=None, *, kind="lse", exclude_diag=False, want_cols=True,
               mesh=None, impl="streamed", block_size=DEFAULT_BLOCK, precision="highest"):
    """Returns (rows [N], cols [N]) for global embeddings x, y of shape [N, D].

    kind='lse': rows_i = LSE_j l_ij, cols_j = LSE_i l_ij (zeros unless want_cols).
    kind='softplus': rows_i = sum_j softplus(l_ij).
    exclude_diag drops the pairs i == j (global indices). precision: see the module docstring.
    """
    if impl not in IMPLS:
        raise ValueError(f"unknown loss impl {impl!r}; choose one of {sorted(IMPLS)}")
    precision = resolve_precision(precision)
    if kind not in ("lse", "softplus"):
        raise ValueError(f"unknown reduction kind {kind!r}")
    placement = sharding.resolve(mesh)
    n = sharding.check_batch(placement, x, y)
    x = jnp.asarray(x, jnp.float32)
    y = jnp.asarray(y, jnp.float32)
    scale = jnp.asarray(scale, jnp.float32)
    if scale.ndim:
        raise ValueError(f"scale must be a scalar, got shape {scale.shape}")
    col_bias = jnp.zeros((n,), jnp.float32) if col_bias is None else jnp.asarray(col_bias, jnp.float32)
    return IMPLS[impl](x, y, scale, col_bias, placement=placement, kind=kind, exclude_diag=exclude_diag,
                       want_cols=want_cols, block_size=block_size, precision=precision)
