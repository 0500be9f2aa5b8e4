"""Prompt templates for zero-shot classification, per task.

A template is a ``str.format`` pattern with one ``{}`` slot for the class name. The wording stays
close to the captions of the embedded datasets ("a large red circle in the upper left",
"a handwritten digit seven") so that a model trained on those captions can read the prompts.
"""

COLOR_TEMPLATES = (
    "a {} shape",
    "something {}",
    "a picture of a {} object",
    "there is a {} shape",
    "the image shows a {} object",
    "a small {} shape",
    "a large {} shape",
)

SHAPE_TEMPLATES = (
    "a {}",
    "a picture of a {}",
    "a {} shape",
    "there is a {}",
    "the image shows a {}",
    "a small {}",
    "a large {}",
)

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
