"""Names and defaults that config files share with the code, kept free of JAX so that loading a
config (a sweep's --dry-run, `--help`) never imports it. The code that implements each imports it
from here (tests check that `jaxclr.losses.objective.TERMS` implements exactly LOSS_TERMS)."""

# Every loss term the trainer knows (`loss.terms.<name>`); a config turns a term on with a weight > 0.
LOSS_TERMS = ("clip", "sigmoid", "dcl", "m2mix", "vmix", "lmix", "alignment", "uniformity", "cross_uniformity")

# Rows per block of the streamed loss engine (`loss.block_size`).
DEFAULT_BLOCK = 1024
