"""CLIP + geodesic multimodal mixup (m2-mix) negatives.

Arg: '<preset>' or '<preset>,<variant>' with variant in m2mix (default), vmix,
lmix, m3mix (all three uni/multi-modal terms). The paper's runs used lam ~
Beta(0.5, 0.5), fixed s = 100 for CLIP and s' = 1/0.07 for the mixed logits, and
a weight w in {0.001 ... 0.05} in fine-tuning; the weight here is 0.1 for training
from scratch at tiny scale (override loss.terms.m2mix).
"""
from jaxclr.config.load import sibling

VARIANTS = {"m2mix": ("m2mix",), "vmix": ("vmix",), "lmix": ("lmix",), "m3mix": ("m2mix", "vmix", "lmix")}


def get_config(arg="tiny"):
    preset, _, variant = arg.partition(",")
    variant = variant or "m2mix"
    if variant not in VARIANTS:
        raise ValueError(f"unknown m2mix variant {variant!r}; choose one of {sorted(VARIANTS)}")
    c = sibling(__file__, "clip").get_config(preset)
    for term in VARIANTS[variant]:
        c.loss.terms[term] = 0.1
    c.loss.mix_beta = 0.5
    c.loss.mix_scale = 1 / 0.07
    return c
