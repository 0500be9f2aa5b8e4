"""An objective from a config: a weighted sum of named loss terms.

    loss.terms = {'clip': 1.0, 'uniformity': 1.0, 'alignment': 1.0}   # the contrastive-gap objective

Terms with weight 0 are not computed. Each term's unweighted value is returned
so the train step can log it.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxclr.losses.contrastive import clip_loss, dcl_loss, sigmoid_loss
from jaxclr.losses.geometry import alignment, cross_uniformity, uniformity
from jaxclr.losses.mixup import lmix_loss, m2mix_loss, vmix_loss


@dataclasses.dataclass(frozen=True)
class Batch:
    """What a term sees: embeddings, logit parameters, a per-step lam, and the config."""

    zimg: jax.Array
    ztxt: jax.Array
    scale: jax.Array
    bias: jax.Array
    lam: jax.Array
    cfg: object
    engine: dict


def _mix_scale(b):
    return b.scale if b.cfg.mix_scale <= 0 else jnp.asarray(b.cfg.mix_scale, jnp.float32)


TERMS = {
    "clip": lambda b: clip_loss(b.zimg, b.ztxt, b.scale, **b.engine),
    "sigmoid": lambda b: sigmoid_loss(b.zimg, b.ztxt, b.scale, b.bias, **b.engine),
    "dcl": lambda b: dcl_loss(b.zimg, b.ztxt, b.scale, **b.engine),
    "m2mix": lambda b: m2mix_loss(b.zimg, b.ztxt, b.scale, b.lam, _mix_scale(b), **b.engine),
    "vmix": lambda b: vmix_loss(b.zimg, b.ztxt, b.scale, b.lam, **b.engine),
    "lmix": lambda b: lmix_loss(b.zimg, b.ztxt, b.scale, b.lam, **b.engine),
    "alignment": lambda b: alignment(b.zimg, b.ztxt, b.cfg.alignment_alpha),
    "uniformity": lambda b: 0.5 * (uniformity(b.zimg, b.cfg.uniformity_t, **b.engine)
                                   + uniformity(b.ztxt, b.cfg.uniformity_t, **b.engine)),
    "cross_uniformity": lambda b: cross_uniformity(b.zimg, b.ztxt, b.cfg.uniformity_t, **b.engine),
}
MIX_TERMS = ("m2mix", "vmix", "lmix")


def active_terms(loss_cfg) -> dict[str, float]:
    """{name: weight} of the terms with non-zero weight; unknown names are an error."""
    terms = {k: float(v) for k, v in dict(loss_cfg.terms).items() if float(v) != 0.0}
    unknown = sorted(set(terms) - set(TERMS))
    if unknown:
        raise ValueError(f"unknown loss term(s) {unknown}; known terms: {sorted(TERMS)}")
    if not terms:
        raise ValueError("loss.terms has no term with a non-zero weight")
    return terms


def sample_lam(rng, loss_cfg, n):
    """lam ~ Beta(beta, beta): one per step, or one per pair with loss.mix_per_pair."""
    shape = (n,) if loss_cfg.mix_per_pair else ()
    return jax.random.beta(rng, loss_cfg.mix_beta, loss_cfg.mix_beta, shape).astype(jnp.float32)


def evaluate(loss_cfg, zimg, ztxt, scale, bias, rng, mesh=None):
    """Returns (total, {term: value}) for the objective of ``loss_cfg``."""
    terms = active_terms(loss_cfg)
    engine = dict(impl=loss_cfg.impl, block_size=int(loss_cfg.block_size), precision=loss_cfg.precision, mesh=mesh)
    lam = sample_lam(rng, loss_cfg, zimg.shape[0]) if set(terms) & set(MIX_TERMS) else jnp.float32(1.0)
    batch = Batch(zimg, ztxt, scale, bias, lam, loss_cfg, engine)
    values = {name: TERMS[name](batch) for name in terms}
    total = sum(weight * values[name] for name, weight in terms.items())
    return total, values
