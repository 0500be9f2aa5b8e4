"""The contrastive-gap objective: CLIP + uniformity (both modalities) + alignment.

    L = L_clip + w_u * 1/2 (uniformity(u) + uniformity(v)) + w_a * alignment(u, v)
"""
from jaxclr.config.load import sibling


def get_config(arg="tiny"):
    c = sibling(__file__, "clip").get_config(arg)
    c.loss.terms.uniformity = 1.0
    c.loss.terms.alignment = 1.0
    return c
