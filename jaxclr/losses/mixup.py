"""Geodesic multimodal mixup: slerp, m2-mix, and the uni-modal V-mix / L-mix.

Definitions in docs/reference.md ("Geodesic multimodal mixup"). Unlike the
public reference code, arccos is guarded (finite gradients at a = +-b), the two
directions are averaged, and the mixed logits are multiplied by a scale.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxclr.losses.contrastive import positive_logits
from jaxclr.losses.engine import pair_stats

_CLIP_EPS = 1e-6     # arccos argument kept in [-1 + eps, 1 - eps]
_NEAR = 1e-2         # angles within this of 0 or pi use a well-conditioned fallback


def _lam(lam, like):
    lam = jnp.asarray(lam, jnp.float32)
    return lam[..., None] if lam.ndim == like.ndim - 1 else lam


def _normalise(v):
    return v / jnp.sqrt(jnp.maximum(jnp.sum(jnp.square(v), -1, keepdims=True), 1e-24))


def _orthogonal_to(a):
    """A unit vector orthogonal to each a (used only for antipodal pairs)."""
    k = jnp.argmin(jnp.abs(a), axis=-1)
    e = (jnp.arange(a.shape[-1]) == k[..., None]).astype(a.dtype)
    return _normalise(e - jnp.sum(e * a, -1, keepdims=True) * a)


def slerp(a, b, lam):
    """Geodesic interpolation on the sphere; lam = 1 returns a, lam = 0 returns b.

    ``lam`` is a scalar or one value per row. Near a = b it falls back to
    normalised linear interpolation; near a = -b it follows the great circle
    through a and b's component orthogonal to a (or any orthogonal direction
    when there is none), so values and gradients stay finite everywhere.
    """
    lam = _lam(lam, a)
    cos = jnp.clip(jnp.sum(a * b, -1, keepdims=True), -1.0 + _CLIP_EPS, 1.0 - _CLIP_EPS)
    theta = jnp.arccos(cos)
    near_same = theta < _NEAR
    near_opposite = theta > jnp.pi - _NEAR
    regular = ~(near_same | near_opposite)
    # Regular case: the REFERENCE formula, with theta kept away from 0 and pi.
    safe_theta = jnp.where(regular, theta, 0.5 * jnp.pi)
    sin = jnp.sin(safe_theta)
    mixed = (jnp.sin(lam * safe_theta) / sin) * a + (jnp.sin((1.0 - lam) * safe_theta) / sin) * b
    # a ~ b: normalised linear interpolation (error O(theta^3)).
    linear = _normalise(lam * a + (1.0 - lam) * b)
    # a ~ -b: rotate a towards b through the tangent direction at a.
    dot = jnp.sum(a * b, -1, keepdims=True)
    tangent_raw = b - dot * a
    tangent_sq = jnp.sum(jnp.square(tangent_raw), -1, keepdims=True)
    has_tangent = tangent_sq > 1e-12
    tangent_norm = jnp.where(has_tangent, jnp.sqrt(jnp.where(has_tangent, tangent_sq, 1.0)), 0.0)
    tangent = jnp.where(has_tangent, _normalise(tangent_raw), _orthogonal_to(a))
    angle = (1.0 - lam) * jnp.arctan2(tangent_norm, dot)  # exact angle, no clipping
    rotated = jnp.cos(angle) * a + jnp.sin(angle) * tangent
    return jnp.where(near_same, linear, jnp.where(near_opposite, rotated, mixed))


def m2mix_loss(zimg, ztxt, scale, lam, mix_scale=None, **engine_kw):
    """m2-mix: true positive on the diagonal, mixed negatives m_j = slerp(u_j, v_j, lam) off it."""
    mix_scale = scale if mix_scale is None else mix_scale
    mixed = slerp(zimg, ztxt, lam)
    pos = positive_logits(zimg, ztxt, scale)

    def direction(queries):
        neg, _ = pair_stats(queries, mixed, mix_scale, exclude_diag=True, want_cols=False, **engine_kw)
        return jnp.mean(jax.nn.softplus(neg - pos))  # = LSE(pos, neg) - pos, without cancellation

    return 0.5 * (direction(zimg) + direction(ztxt))


def _unimodal_mix(mixed_side, other, scale, lam, **engine_kw):
    """Mixes ``mixed_side`` with its reversed batch and scores it against ``other``
    with soft targets lam on i and 1 - lam on pi(i) = N - 1 - i."""
    partner = mixed_side[::-1]
    mixed = slerp(mixed_side, partner, lam)
    rows, _ = pair_stats(mixed, other, scale, want_cols=False, **engine_kw)
    lam = jnp.broadcast_to(jnp.asarray(lam, jnp.float32), rows.shape)
    target = lam * positive_logits(mixed, other, scale) + (1.0 - lam) * positive_logits(mixed, other[::-1], scale)
    return jnp.mean(rows - target)


def vmix_loss(zimg, ztxt, scale, lam, **engine_kw):
    """V-mix: images mixed along the geodesic, scored against all texts."""
    return _unimodal_mix(zimg, ztxt, scale, lam, **engine_kw)


def lmix_loss(zimg, ztxt, scale, lam, **engine_kw):
    """L-mix: texts mixed along the geodesic, scored against all images."""
    return _unimodal_mix(ztxt, zimg, scale, lam, **engine_kw)
