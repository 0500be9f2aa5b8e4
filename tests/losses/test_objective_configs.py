"""Every objective config trains through the real train step and logs each of its terms."""
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

ARGS = {"m2mix.py": "tiny,m3mix"}


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
def test_config_trains_and_logs_every_term(path):
    c = configlib.load(f"{path}:{ARGS.get(os.path.basename(path), 'tiny')}")
    c.data.image_size = 32
    c.data.max_len = 16
    c.model.image.update(patch_size=16, width=32, depth=1, heads=2)
    c.model.text.update(width=32, depth=1, heads=2, max_len=16)
    c.model.embed_dim = 16
    c.train.update(batch_size=32, total_steps=3)
    c.loss.block_size = 3
    mesh = parallel.make_mesh(c.mesh)
    rng = np.random.default_rng(0)
    vocab = text.from_config(c.data).vocab_size   # ids the config's tokenizer can give
    batch = parallel.global_batch({"image": rng.integers(0, 255, (32, 32, 32, 3), dtype=np.uint8),
                                   "text": rng.integers(3, vocab, (32, 16)).astype(np.int32)}, mesh)
    with jax.set_mesh(mesh):
        spec, state = state_lib.create(c, mesh)
        train_step = step_lib.make_train_step(c, spec, mesh)
        losses = []
        for _ in range(3):
            state, metrics = train_step(state, batch)
            losses.append(float(metrics["loss"]))
    for term in objective.active_terms(c.loss):
        assert np.isfinite(float(metrics[f"loss/{term}"])), term
    assert int(state["step"]) == 3
    assert losses[-1] < losses[0]     # the same batch three times: the loss must go down
