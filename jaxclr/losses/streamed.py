"""The streamed similarity engine: ring exchange + blockwise online reductions.

Inside ``jax.shard_map`` every device keeps its own rows ``x`` (local batch
n). The other side's shards travel around the device ring with ``ppermute``;
each visiting shard is consumed in column blocks of ``block_size``, so the
largest buffer is one n x block logit tile. Rows keep a running max / sum
(online log-sum-exp). Column statistics over the local rows are folded into an
accumulator that travels *with* its shard and is complete when it arrives home
after a full turn, so both softmax directions come from a single pass.

The backward pass is a ``jax.custom_vjp`` that walks the ring again and
recomputes each tile from the saved row/column LSEs (flash-attention style),
accumulating ``dx`` locally and ``dy`` / ``d col_bias`` in buffers that travel
home with their shard. No n x N or N x N array exists anywhere.

Logits are ``l_ij = scale * x_i.y_j + col_bias_j``; see ``pair_stats``.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxclr.losses import sharding

NEG = sharding.NEG


class _Ring:
    """Per-device geometry: ring position, padding, and the masked logit tile."""

    def __init__(self, x, axes, size, block_size, exclude_diag, precision):
        self.n = x.shape[0]
        self.axes = axes
        self.size = size
        self.me = 0 if axes is None else jax.lax.axis_index(axes)
        self.block = max(1, min(block_size, self.n))
        self.num_blocks = -(-self.n // self.block)
        self.padded = self.num_blocks * self.block
        self.exclude_diag = exclude_diag
        self.precision = precision
        self.row_ids = self.me * self.n + jnp.arange(self.n)

    def pad(self, a):
        widths = [(0, self.padded - self.n)] + [(0, 0)] * (a.ndim - 1)
        return jnp.pad(a, widths)

    def shift(self, tree):
        """Sends every leaf to the next device on the ring."""
        if self.axes is None:
            return tree
        perm = [(i, (i + 1) % self.size) for i in range(self.size)]
        return jax.tree.map(lambda t: jax.lax.ppermute(t, self.axes, perm), tree)

    def source(self, step):
        """Ring position of the shard visiting this device at ``step``."""
        return (self.me - step) % self.size

    def matmul(self, a, b):
        """Every dot product of the engine, forward and backward, at the requested precision."""
        return jnp.matmul(a, b, precision=self.precision)

    def block_of(self, a, b):
        return jax.lax.dynamic_slice_in_dim(a, b * self.block, self.block)

    def add_block(self, acc, b, value):
        return jax.lax.dynamic_update_slice_in_dim(acc, self.block_of(acc, b) + value, b * self.block, 0)

    def tile(self, x, y_pad, cb_pad, scale, src, b):
        """Masked logits [n, block] of the local rows against block b of a visiting shard."""
        yb, cbb = self.block_of(y_pad, b), self.block_of(cb_pad, b)
        logits = scale * self.matmul(x, yb.T) + cbb[None, :]
        local_col = b * self.block + jnp.arange(self.block)
        keep = jnp.broadcast_to((local_col < self.n)[None, :], logits.shape)
        if self.exclude_diag:
            keep = keep & (self.row_ids[:, None] != (src * self.n + local_col)[None, :])
        return jnp.where(keep, logits, NEG), yb

    def walk(self, visit, carry, travelling, home):
        """Visits every shard once. ``visit(step, carry, travelling, home)`` returns
        (carry, home); ``travelling`` is read-only and moves ring-size - 1 hops,
        ``home`` accumulators move ring-size hops and so end on their owner."""

        def step(k, c):
            carry, travelling, home = c
            carry, home = visit(k, carry, travelling, home)
            return carry, self.shift(travelling), self.shift(home)

        carry, travelling, home = jax.lax.fori_loop(0, self.size - 1, step, (carry, travelling, home))
        carry, home = visit(self.size - 1, carry, travelling, home)
        return carry, self.shift(home)


def _forward_body(x, y, scale, col_bias, *, axes, size, kind, exclude_diag, want_cols, block_size, precision):
    ring = _Ring(x, axes, size, block_size, exclude_diag, precision)
    n = ring.n

    def visit(k, rows, travelling, cols):
        y_pad, cb_pad = travelling
        src = ring.source(k)

        def one_block(b, c):
            rows, cols = c
            logits, _ = ring.tile(x, y_pad, cb_pad, scale, src, b)
            if kind == "softplus":
                return (rows[0] + jnp.sum(jax.nn.softplus(logits), axis=1),), cols
            run_max, run_sum = rows
            new_max = jnp.maximum(run_max, jnp.max(logits, axis=1))
            run_sum = run_sum * jnp.exp(run_max - new_max) + jnp.sum(jnp.exp(logits - new_max[:, None]), 1)
            if want_cols:
                cmax = jnp.max(logits, axis=0)
                clse = cmax + jnp.log(jnp.sum(jnp.exp(logits - cmax[None, :]), axis=0))
                old = ring.block_of(cols, b)
                cols = jax.lax.dynamic_update_slice_in_dim(cols, jnp.logaddexp(old, clse), b * ring.block, 0)
            return (new_max, run_sum), cols

        return jax.lax.fori_loop(0, ring.num_blocks, one_block, (rows, cols))

    dtype = x.dtype
    if kind == "softplus":
        rows0 = (jnp.zeros((n,), dtype),)
    else:
        rows0 = (jnp.full((n,), NEG, dtype), jnp.zeros((n,), dtype))
    cols0 = jnp.full((ring.padded,), NEG, dtype)
    rows, cols = ring.walk(visit, rows0, (ring.pad(y), ring.pad(col_bias)), cols0)
    row = rows[0] if kind == "softplus" else rows[0] + jnp.log(rows[1])
    col = cols[:n] if (want_cols and kind == "lse") else jnp.zeros((n,), dtype)
    return row, col


def _backward_body(x, y, scale, col_bias, row, col, g_row, g_col, *,
                   axes, size, kind, exclude_diag, want_cols, block_size, precision):
    ring = _Ring(x, axes, size, block_size, exclude_diag, precision)
    use_cols = want_cols and kind == "lse"

    def weights(logits, col_b, gcol_b):
        """d loss / d logits for one tile."""
        if kind == "softplus":
            return g_row[:, None] * jax.nn.sigmoid(logits)
        w = g_row[:, None] * jnp.exp(logits - row[:, None])
        if use_cols:
            w = w + gcol_b[None, :] * jnp.exp(logits - col_b[None, :])
        return w

    def visit(k, dx, travelling, home):
        y_pad, cb_pad, col_pad, gcol_pad = travelling
        src = ring.source(k)

        def one_block(b, c):
            dx, (dy, dcb) = c
            logits, yb = ring.tile(x, y_pad, cb_pad, scale, src, b)
            w = weights(logits, ring.block_of(col_pad, b), ring.block_of(gcol_pad, b))
            dx = dx + ring.matmul(w, yb)
            dy = ring.add_block(dy, b, ring.matmul(w.T, x))
            dcb = ring.add_block(dcb, b, jnp.sum(w, axis=0))
            return dx, (dy, dcb)

        return jax.lax.fori_loop(0, ring.num_blocks, one_block, (dx, home))

    travelling = tuple(ring.pad(a) for a in (y, col_bias, col, g_col))
    home0 = (jnp.zeros((ring.padded, x.shape[1]), x.dtype), jnp.zeros((ring.padded,), x.dtype))
    dx_raw, (dy_raw, dcb) = ring.walk(visit, jnp.zeros_like(x), travelling, home0)
    dscale = jnp.sum(x * dx_raw)
    if axes is not None:
        dscale = jax.lax.psum(dscale, axes)
    return scale * dx_raw, scale * dy_raw[: ring.n], dscale.astype(scale.dtype), dcb[: ring.n]


@functools.lru_cache(maxsize=None)
def _engine(placement, kind, exclude_diag, want_cols, block_size, precision):
    static = dict(axes=placement.axes, size=placement.num_shards, kind=kind, exclude_diag=exclude_diag,
                  want_cols=want_cols, block_size=block_size, precision=precision)
    fwd = sharding.per_device(placement, functools.partial(_forward_body, **static),
                              ("B", "B", None, "B"), ("B", "B"), check_vma=False)
    bwd = sharding.per_device(placement, functools.partial(_backward_body, **static),
                              ("B",) * 2 + (None,) + ("B",) * 5, ("B", "B", None, "B"), check_vma=False)

    @jax.custom_vjp
    def stats(x, y, scale, col_bias):
        return fwd(x, y, scale, col_bias)

    def stats_fwd(x, y, scale, col_bias):
        row, col = fwd(x, y, scale, col_bias)
        return (row, col), (x, y, scale, col_bias, row, col)

    def stats_bwd(res, g):
        return bwd(*res, *g)

    stats.defvjp(stats_fwd, stats_bwd)
    return stats


def pair_stats(x, y, scale, col_bias, *, placement, kind, exclude_diag, want_cols, block_size,
               precision=jax.lax.Precision.HIGHEST):
    """Row (and column) statistics of the logits l_ij = scale x_i.y_j + col_bias_j.

    kind='lse': rows = LSE_j l_ij, cols = LSE_i l_ij; kind='softplus': rows =
    sum_j softplus(l_ij) (cols are zeros). ``exclude_diag`` masks the global
    pairs i == j. ``precision`` applies to every tile matmul of both passes. Same
    contract as ``gather.pair_stats``.
    """
    engine = _engine(placement, kind, exclude_diag, want_cols, int(block_size), precision)
    return engine(x, y, scale, col_bias)
