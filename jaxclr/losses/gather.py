"""The all-gather similarity engine: the simple reference implementation.

Each device gathers the other side's embeddings and forms its local x global
logit block (what open_clip's ``gather_with_grad`` and big_vision do). Memory
is O(local x global) per device. Gradients come from autodiff through the
collectives. Kept as the reference for tests and benchmarks (``loss.impl='gather'``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxclr.losses import sharding

NEG = sharding.NEG


def _body(x, y, scale, col_bias, *, axes, kind, exclude_diag, want_cols, precision):
    n = x.shape[0]
    if axes is None:
        y_all, cb_all, me = y, col_bias, 0
    else:
        y_all = jax.lax.all_gather(y, axes, tiled=True)
        cb_all = jax.lax.all_gather(col_bias, axes, tiled=True)
        me = jax.lax.axis_index(axes)
    logits = scale * jnp.matmul(x, y_all.T, precision=precision) + cb_all[None, :]
    if exclude_diag:
        rows = me * n + jnp.arange(n)
        cols = jnp.arange(y_all.shape[0])
        logits = jnp.where(rows[:, None] == cols[None, :], NEG, logits)
    if kind == "softplus":
        return jnp.sum(jax.nn.softplus(logits), axis=1), jnp.zeros((n,), logits.dtype)
    row = jax.nn.logsumexp(logits, axis=1)
    if not want_cols:
        return row, jnp.zeros((n,), logits.dtype)
    part = jax.nn.logsumexp(logits, axis=0)  # [N]: LSE over this device's rows
    if axes is None:
        return row, part
    shift = jax.lax.pmax(jax.lax.stop_gradient(part), axes)
    total = jax.lax.psum_scatter(jnp.exp(part - shift), axes, tiled=True)  # my columns, summed over devices
    mine = jax.lax.dynamic_slice_in_dim(shift, me * n, n)
    return row, jnp.log(total) + mine


def pair_stats(x, y, scale, col_bias, *, placement, kind, exclude_diag, want_cols, block_size=None,
               precision=None):
    """Row (and column) statistics of the logits l_ij = scale x_i.y_j + col_bias_j.

    kind='lse': rows = LSE_j l_ij, cols = LSE_i l_ij; kind='softplus': rows =
    sum_j softplus(l_ij). ``exclude_diag`` masks the global pairs i == j.
    ``block_size`` is accepted for interface parity and ignored; ``precision`` is the
    matmul precision (a jax.lax.Precision; autodiff keeps it in the backward dots).
    """
    del block_size

    def body(x, y, s, cb):
        return _body(x, y, s, cb, axes=placement.axes, kind=kind,
                     exclude_diag=exclude_diag, want_cols=want_cols, precision=precision)

    fn = sharding.per_device(placement, body, ("B", "B", None, "B"), ("B", "B"))
    return fn(x, y, scale, col_bias)
