"""The large presets (s16, b16, l14) of every config file lower a train step from abstract shapes
on an 8-device FSDP mesh, and one compiles, without allocating or running anything."""
import glob
import os

import jax
import jax.numpy as jnp
import pytest

from jaxclr import parallel
from jaxclr import state as state_lib
from jaxclr import step as step_lib
from jaxclr.bench import step_memory

CONFIGS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "configs", "*.py")))
LARGE = ("s16", "b16", "l14")
ARG = {"m2mix.py": "{},m3mix"}


def lowered_step(path, preset):
    spec = f"{path}:{ARG.get(os.path.basename(path), '{}').format(preset)}"
    config = step_memory.bench_config(spec, devices=8, fsdp=8, per_device_batch=1, remat="block", scan=True)
    mesh = parallel.make_mesh(config.mesh, jax.devices()[:8])
    setup, _ = state_lib.setup(config, mesh)          # abstract: jax.eval_shape, nothing allocated
    train_step = step_lib.make_train_step(config, setup, mesh)
    n, size, length = int(config.train.batch_size), int(config.data.image_size), int(config.model.text.max_len)
    sharding = parallel.batch_sharding(mesh)
    batch = {"image": jax.ShapeDtypeStruct((n, size, size, 3), jnp.uint8, sharding=sharding),
             "text": jax.ShapeDtypeStruct((n, length), jnp.int32, sharding=sharding)}
    return train_step.lower(setup.abstract, batch)


@pytest.mark.parametrize("preset", LARGE)
@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_large_preset_lowers_a_train_step(path, preset):
    text = lowered_step(path, preset).as_text()
    assert "stablehlo.while" in text          # scan over blocks: the presets' default
    assert "all-gather" in text or "all_gather" in text or "sharding" in text


@pytest.mark.slow
def test_s16_train_step_compiles_with_a_memory_estimate():
    analysis = lowered_step(CONFIGS[[os.path.basename(p) for p in CONFIGS].index("clip.py")], "s16") \
        .compile().memory_analysis()
    assert analysis.argument_size_in_bytes > 0 and analysis.temp_size_in_bytes > 0
