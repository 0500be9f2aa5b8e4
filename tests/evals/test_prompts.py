"""Zero-shot prompt templates: every task has some, and the embedded datasets' prompts read like their captions."""
import numpy as np

from jaxclr.data import digits, shapes
from jaxclr.evals import prompts, zeroshot


def test_templates_cover_tasks_and_fill_one_slot():
    for task in ("color", "shape", "digit", "unknown-task"):
        templates = prompts.templates_for(task)
        assert templates and all(sum(map(t.count, ("{}", "{name}", "{index}"))) == 1 for t in templates)
    assert prompts.templates_for("unknown-task") == list(prompts.DEFAULT_TEMPLATES)


def test_digit_prompts_are_the_captions_own_templates_with_word_and_numeral():
    seen = []

    def tokenize(texts):
        seen.extend(texts)
        return np.zeros((len(texts), 1), np.int32)

    zeroshot.class_embeddings(lambda x: np.ones((len(x), 2)), digits.DIGIT_NAMES, prompts.templates_for("digit"),
                              tokenize, 8)
    assert len(seen) == 10 * len(digits.CAPTION_TEMPLATES)
    assert {"a handwritten digit seven", "the number 7, written by hand", "a scan of a handwritten 7"} <= set(seen)
    # every prompt is a caption the dataset can hold: one of its templates, filled for one digit
    assert set(seen) == {t.format(word=w, n=d) for d, w in enumerate(digits.DIGIT_NAMES)
                         for t in digits.CAPTION_TEMPLATES}


def test_shapes_prompts_are_the_single_object_captions_with_the_class_in_its_slot():
    # Prompts must read like the captions the model trained on: every bare single-object caption
    # ('{a} {pos}' template, size/colour possibly dropped) is one of the class's prompts.
    prompts_of = {task: {name: {t.format(name) for t in prompts.templates_for(task)} for name in names}
                  for task, names in shapes.TASKS.items()}
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(600):
        ex = shapes.make_example(rng, 32)
        caption = ex["caption"]
        if ex["num_objects"] != 1 or not caption.startswith("a ") or caption.startswith("a picture"):
            continue
        checked += 1
        assert caption in prompts_of["shape"][shapes.SHAPES[ex["shapes"][0]]]
        color = shapes.COLORS[ex["colors"][0]]
        if color in caption.split():
            assert caption in prompts_of["color"][color]
    assert checked > 30
