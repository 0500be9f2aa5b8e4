"""Prompt templates for zero-shot classification, per task.

A template is a ``str.format`` pattern with one ``{}`` slot for the class name. The wording stays
close to the captions of the embedded datasets ("a large red circle in the upper left",
"a handwritten digit seven") so that a model trained on those captions can read the prompts.
"""

from jaxclr.data.shapes import COLORS, SHAPES, SIZES

# Shapes captions always name size, colour and shape ("a large red circle in the upper left"),
# so a class is described the way the captions describe it and the other attributes are
# ensembled over (CLIP-style prompt ensembling): the class embedding of 'red' is the normalised
# mean over "a small red circle", "a large red square", ...
COLOR_TEMPLATES = tuple(f"a {size} {{}} {shape}" for size in SIZES for shape in SHAPES)

SHAPE_TEMPLATES = tuple(f"a {size} {color} {{}}" for size in SIZES for color in COLORS)

DIGIT_TEMPLATES = (
    "a handwritten digit {}",
    "the number {}",
    "the digit {} in handwriting",
    "a hand-drawn number {}",
    "a photo of the digit {}",
)

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
