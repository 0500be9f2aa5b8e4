"""Configs: presets, every objective config, override checking."""
import glob
import os

import pytest

from jaxclr import configlib
from jaxclr.losses import objective

CONFIGS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "configs", "*.py")))


@pytest.mark.parametrize("preset", ["tiny", "s16", "b16", "l14"])
def test_clip_presets_load(preset):
    config = configlib.load(f"configs/clip.py:{preset}")
    assert config.data.image_size % config.model.image.patch_size == 0
    assert objective.active_terms(config.loss) == {"clip": 1.0}


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_every_config_file_has_valid_terms(path):
    config = configlib.load(path)
    assert objective.active_terms(config.loss)


def test_max_len_has_one_source():
    """data.max_len (the tokenizer) and model.text.max_len (the tower) are one FieldReference."""
    from_data = configlib.load("configs/clip.py:tiny")
    from_data.data.max_len = 96
    from_model = configlib.load("configs/clip.py:tiny")
    from_model.model.text.max_len = 96
    for config in (from_data, from_model):
        assert config.data.max_len == config.model.text.max_len == 96
        assert config.to_dict()["model"]["text"]["max_len"] == 96


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


def test_overrides_check_the_default_config_or_need_one():
    with pytest.raises(SystemExit, match="unknown config key 'optim.lrr'"):
        configlib.check_overrides(["prog", "--config.optim.lrr=1"], default="configs/clip.py:tiny")
    configlib.check_overrides(["prog", "--config.optim.lr=1"], default="configs/clip.py:tiny")
    with pytest.raises(SystemExit) as err:   # e.g. evaluate without --config: nothing to apply them to
        configlib.check_overrides(["prog", "--workdir=x", "--config.optim.lr=1"])
    assert str(err.value) == "error: --config.optim.lr needs --config=FILE[:preset] to apply to"


def test_unknown_loss_term_is_an_error():
    config = configlib.load("configs/clip.py:tiny")
    with pytest.raises(ValueError, match="known terms"):
        objective.active_terms(type(config.loss)({"terms": {"clipp": 1.0}}))
