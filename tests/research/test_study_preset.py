"""The study preset (configs/clip.py:study, the experiments/ model) of every config file trains
two steps through the real train step at its own sizes, and its documented settings hold."""
import os

import jax
import numpy as np
import pytest

from jaxclr import config as configlib
from jaxclr import parallel
from jaxclr.data import text
from jaxclr.losses import objective
from jaxclr.trainer import state as state_lib
from jaxclr.trainer import step as step_lib
from tests.helpers import CONFIG_FILES

ARGS = {"m2mix.py": "study,m3mix"}


def test_study_preset_is_the_documented_digits_setup():
    c = configlib.load("configs/clip.py:study")
    assert (c.data.name, c.data.image_size, c.data.flip) == ("jaxclr_digits", 32, False)
    assert (c.train.batch_size, c.train.total_steps, c.eval.every, c.checkpoint.every) == (128, 500, 500, 500)
    assert "linear_probe" in c.eval.evaluators and c.model.image.stem == (16, 32, 64)
    assert c.model.image.patch_size // 2 ** len(c.model.image.stem) == 1     # one 8x8 patch -> 1x1 after the stem


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
def test_study_preset_trains_two_steps(path):
    c = configlib.load(f"{path}:{ARGS.get(os.path.basename(path), 'study')}")
    c.train.batch_size = 16     # the preset's model and image size; a smaller batch keeps this quick
    mesh = parallel.make_mesh(c.mesh)
    rng = np.random.default_rng(0)
    size, length = c.data.image_size, c.data.max_len
    vocab = text.from_config(c.data).vocab_size   # ids the config's tokenizer can give
    batch = parallel.global_batch({"image": rng.integers(0, 255, (16, size, size, 3), dtype=np.uint8),
                                   "text": rng.integers(3, vocab, (16, length)).astype(np.int32)}, mesh)
    with jax.set_mesh(mesh):
        spec, state = state_lib.create(c, mesh)
        train_step = step_lib.make_train_step(c, spec, mesh)
        for _ in range(2):
            state, metrics = train_step(state, batch)
    assert int(state["step"]) == 2
    for term in objective.active_terms(c.loss):
        assert np.isfinite(float(metrics[f"loss/{term}"])), term
