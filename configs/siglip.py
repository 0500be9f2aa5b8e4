"""SigLIP: pairwise sigmoid loss with a learnable bias (init s = 10, b = -10)."""
from jaxclr.config.load import sibling


def get_config(arg="tiny"):
    c = sibling(__file__, "clip").get_config(arg)
    c.loss.terms.clip = 0.0
    c.loss.terms.sigmoid = 1.0
    c.model.init_scale = 10.0
    c.model.learn_bias = True
    c.model.init_bias = -10.0
    return c
