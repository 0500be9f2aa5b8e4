"""The default run: CLIP, tiny preset, on the embedded shapes dataset (what `make train` runs)."""
from jaxclr.config.load import sibling


def get_config(arg="tiny"):
    return sibling(__file__, "clip").get_config(arg)
