"""Configs: presets, every objective config, override checking, the resolved config."""
import glob
import json
import os

import pytest

from jaxclr import configlib
from jaxclr.losses import objective

CONFIGS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "configs", "*.py")))


@pytest.mark.parametrize("preset", ["tiny", "s16", "b16", "l14"])
def test_clip_presets_load(preset):
    config = configlib.load(f"configs/clip.py:{preset}")
    assert config.preset == preset
    assert config.data.image_size % config.model.image.patch_size == 0
    assert objective.active_terms(config.loss) == {"clip": 1.0}


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_every_config_file_has_valid_terms(path):
    config = configlib.load(path)
    assert objective.active_terms(config.loss)


def test_unknown_preset_is_an_error():
    with pytest.raises(ValueError, match="unknown preset"):
        configlib.load("configs/clip.py:huge")


def test_unknown_override_names_closest_keys():
    with pytest.raises(SystemExit) as err:
        configlib.check_overrides(["prog", "--config=configs/clip.py:tiny", "--config.train.total_stepz=5"])
    message = str(err.value)
    assert "unknown config key 'train.total_stepz'" in message and "train.total_steps" in message
    assert "\n" not in message


def test_known_overrides_pass():
    configlib.check_overrides(["prog", "--config=configs/clip.py:tiny", "--config.train.total_steps=5",
                               "--config.loss.terms.uniformity=1.0"])


def test_resolved_config_is_written(tmp_path):
    config = configlib.load("configs/clip.py:tiny")
    path = configlib.write(config, str(tmp_path))
    with open(path) as f:
        assert json.load(f)["loss"]["terms"]["clip"] == 1.0


def test_unknown_loss_term_is_an_error():
    config = configlib.load("configs/clip.py:tiny")
    with pytest.raises(ValueError, match="known terms"):
        objective.active_terms(type(config.loss)({"terms": {"clipp": 1.0}}))
