"""Decoupled contrastive learning: the positive pair is left out of each denominator."""
from jaxclr.config.load import sibling


def get_config(arg="tiny"):
    c = sibling(__file__, "clip").get_config(arg)
    c.loss.terms.clip = 0.0
    c.loss.terms.dcl = 1.0
    return c
