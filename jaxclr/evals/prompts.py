"""Prompt templates for zero-shot classification, per task.

A template is a ``str.format`` pattern with one ``{}`` slot for the class name. The wording stays
close to the captions of the embedded datasets ("a large red circle in the upper left",
"a handwritten digit seven") so that a model trained on those captions can read the prompts.
"""

from itertools import product

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
# and prompts without one are read less reliably (measured in README.md).
COLOR_TEMPLATES = _object_prompts((*SIZES, ""), ("{}",), tuple(SHAPES))

SHAPE_TEMPLATES = _object_prompts((*SIZES, ""), (*COLORS, ""), ("{}",))

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
