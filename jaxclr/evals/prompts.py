"""Prompt templates for zero-shot classification, per task and per standard dataset.

A template is a ``str.format`` pattern with a ``{}`` (or ``{name}``) slot for the class name; it may
also use ``{index}``, the class's label index (``zeroshot.class_embeddings``). For the embedded
datasets' tasks the wording stays close to their captions ("a large red circle in the upper
left", "a handwritten digit seven") so that a model trained on those captions can read the
prompts. For standard datasets read by name (``templates_for_dataset``) the templates are CLIP's
published ones (sources at IMAGENET_TEMPLATES and CIFAR_TEMPLATES).
"""

from itertools import product

from jaxclr.data.digits import CAPTION_TEMPLATES
from jaxclr.data.shapes import COLORS, POSITION_PHRASES, SHAPES, SIZES


def _object_prompts(*slots) -> tuple[str, ...]:
    """Every 'a [size] [colour] [shape] <position>' a single-object caption can say, with '{}' in
    one slot: each slot is a tuple of words ('' = the caption left that attribute out)."""
    return tuple(" ".join(w for w in ("a", *words, pos) if w)
                 for *words, pos in product(*slots, POSITION_PHRASES))


# A single-object shapes caption reads "a large red circle in the upper left", possibly without
# the size or colour (shapes.DROP_ATTRIBUTE). A class is described the way the captions describe
# it and everything else is ensembled over (CLIP-style prompt ensembling): the class embedding
# of 'red' is the normalised mean over "a small red circle at the top", "a red square on the
# left", ... . The position phrases matter: the captions of single objects always carry one,
# and prompts without one are read less reliably (experiments/tiny_recipe/README.md).
COLOR_TEMPLATES = _object_prompts((*SIZES, ""), ("{}",), tuple(SHAPES))

SHAPE_TEMPLATES = _object_prompts((*SIZES, ""), (*COLORS, ""), ("{}",))

# The digits' own caption templates, the class name in {name} ('seven') and its numeral in {index}
# (label index = numeral): prompts worded like the captions they were trained on.
DIGIT_TEMPLATES = tuple(t.format(word="{name}", n="{index}") for t in CAPTION_TEMPLATES)

DEFAULT_TEMPLATES = (
    "a {}",
    "a picture of a {}",
    "a photo of a {}",
    "an image of a {}",
)

TEMPLATES = {
    "color": COLOR_TEMPLATES,
    "shape": SHAPE_TEMPLATES,
    "digit": DIGIT_TEMPLATES,
}


def templates_for(task: str) -> list[str]:
    """Returns (a fresh list of) the templates for ``task``; the generic default list for unknown tasks."""
    return list(TEMPLATES.get(task, DEFAULT_TEMPLATES))


# OpenAI CLIP's 80 ImageNet templates, in their order: notebooks/Prompt_Engineering_for_ImageNet.ipynb
# of https://github.com/openai/CLIP (also open_clip's OPENAI_IMAGENET_TEMPLATES).
IMAGENET_TEMPLATES = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)

# OpenAI CLIP's 18 CIFAR-10 / CIFAR-100 templates: data/prompts.md of https://github.com/openai/CLIP.
CIFAR_TEMPLATES = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a black and white photo of a {}.",
    "a low contrast photo of a {}.",
    "a high contrast photo of a {}.",
    "a bad photo of a {}.",
    "a good photo of a {}.",
    "a photo of a small {}.",
    "a photo of a big {}.",
    "a photo of the {}.",
    "a blurry photo of the {}.",
    "a black and white photo of the {}.",
    "a low contrast photo of the {}.",
    "a high contrast photo of the {}.",
    "a bad photo of the {}.",
    "a good photo of the {}.",
    "a photo of the small {}.",
    "a photo of the big {}.",
)
