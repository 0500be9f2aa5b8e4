"""The large presets (s16, b16, l14) of every config file, and the released architectures (openai_b32,
openai_b16, openai_l14 of CLIP, b16_224 of SigLIP), lower a train step from abstract shapes on an
8-device FSDP mesh, and one compiles, without allocating or running anything (no tokenizer files:
the released presets' text towers read no special id, and their token tables are sized by config)."""
import os

import pytest

from jaxclr.bench import step_memory
from tests.helpers import CONFIG_FILES

LARGE = ("s16", "b16", "l14")
ARG = {"m2mix.py": "{},m3mix"}


def lowered_step(path, preset):
    spec = f"{path}:{ARG.get(os.path.basename(path), '{}').format(preset)}"
    config = step_memory.bench_config(spec, devices=8, fsdp=8, per_device_batch=1, remat="block", scan=True)
    train_step, args = step_memory.abstract_train_step(config, devices=8)   # nothing allocated
    return train_step.lower(*args)


@pytest.mark.parametrize("preset", LARGE)
@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
def test_large_preset_lowers_a_train_step(path, preset):
    text = lowered_step(path, preset).as_text()
    assert "stablehlo.while" in text          # scan over blocks: the presets' default
    assert "all-gather" in text or "all_gather" in text or "sharding" in text


@pytest.mark.parametrize("path, preset", [("configs/clip.py", "openai_b32"), ("configs/clip.py", "openai_b16"),
                                          ("configs/clip.py", "openai_l14"), ("configs/siglip.py", "b16_224")])
def test_released_architecture_lowers_a_train_step(path, preset):
    text = lowered_step(path, preset).as_text()
    assert "stablehlo.while" in text
    rows = 49_408 if preset.startswith("openai") else 32_000
    assert f"tensor<{rows}x" in text    # the released vocabulary's token table


@pytest.mark.slow
def test_s16_train_step_compiles_with_a_memory_estimate():
    analysis = lowered_step(CONFIG_FILES[[os.path.basename(p) for p in CONFIG_FILES].index("clip.py")], "s16") \
        .compile().memory_analysis()
    assert analysis.argument_size_in_bytes > 0 and analysis.temp_size_in_bytes > 0
