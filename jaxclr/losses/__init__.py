"""Contrastive objectives on global arrays (any mesh); see docs/reference.md.

Every function takes ``mesh=None`` (else the ambient mesh), ``impl`` in
{'streamed', 'gather'} and ``block_size`` keywords and returns the value over the
whole global batch.

Imports nothing of jaxclr outside this folder (a bottom layer beside models).
"""
from jaxclr.losses.contrastive import clip_loss, dcl_loss, sigmoid_loss
from jaxclr.losses.engine import IMPLS, pair_stats
from jaxclr.losses.geometry import alignment, cross_uniformity, uniformity
from jaxclr.losses.mixup import lmix_loss, m2mix_loss, slerp, vmix_loss

__all__ = [
    "IMPLS", "alignment", "clip_loss", "cross_uniformity", "dcl_loss", "lmix_loss", "m2mix_loss",
    "pair_stats", "sigmoid_loss", "slerp", "uniformity", "vmix_loss",
]
