"""Configs: presets, every objective config, override checking."""
import os

import pytest

from jaxclr import config as configlib
from jaxclr.losses import objective
from tests.helpers import CONFIG_FILES


@pytest.mark.parametrize("preset", ["tiny", "study", "s16", "b16", "l14"])
def test_clip_presets_load(preset):
    config = configlib.load(f"configs/clip.py:{preset}")
    assert config.data.image_size % config.model.image.patch_size == 0
    assert objective.active_terms(config.loss) == {"clip": 1.0}


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
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


def test_make_trains_config_is_the_tiny_preset_with_its_documented_changes():
    """configs/default.py (what `make train` runs) differs from configs/clip.py:tiny by exactly the keys
    its docstring names: word tokens read one a position, the sharper initial logit scale, one text
    block and 5,000 steps."""
    from jaxclr.config.load import flatten
    default = flatten(configlib.load("configs/default.py").to_dict())
    tiny = flatten(configlib.load("configs/clip.py:tiny").to_dict())
    assert default.keys() == tiny.keys()
    changed = {k: (tiny[k], default[k]) for k in default if default[k] != tiny[k]}
    assert changed == {"data.tokenizer": ("bytes", "words"), "data.max_len": (80, 16),
                       "model.text.max_len": (80, 16), "model.text.patch_size": (4, 1),
                       "model.init_scale": (1 / 0.07, 100.0), "model.text.depth": (3, 1),
                       "train.total_steps": (4_000, 5_000)}


def test_unknown_preset_is_an_error():
    with pytest.raises(ValueError, match="unknown preset"):
        configlib.load("configs/clip.py:huge")


def exit_lines(capsys, argv, **kwargs) -> list[str]:
    """The stderr lines of check_overrides(argv), which must exit with code 2."""
    with pytest.raises(SystemExit) as err:
        configlib.check_overrides(argv, **kwargs)
    assert err.value.code == 2
    return capsys.readouterr().err.splitlines()


def test_unknown_override_names_closest_keys(capsys):
    lines = exit_lines(capsys, ["prog", "--config=configs/clip.py:tiny", "--config.train.total_stepz=5"])
    assert len(lines) == 1 and lines[0].startswith("error: train.total_stepz: unknown config key; did you mean ")
    assert "train.total_steps" in lines[0]


def test_every_unknown_override_is_reported(capsys):
    lines = exit_lines(capsys, ["prog", "--config=configs/clip.py:tiny", "--config.optim.lrr=1",
                                "--config.train.total_steps=5", "--config.model.dtypo=float32"])
    assert [line.split(": ")[1] for line in lines] == ["optim.lrr", "model.dtypo"]


def test_known_overrides_pass():
    configlib.check_overrides(["prog", "--config=configs/clip.py:tiny", "--config.train.total_steps=5",
                               "--config.loss.terms.uniformity=1.0"])
    assert configlib.override_problems(["prog", "--config=configs/clip.py:tiny"]) == []


def test_overrides_check_the_default_config_or_need_one(capsys):
    lines = exit_lines(capsys, ["prog", "--config.optim.lrr=1"], default="configs/clip.py:tiny")
    assert lines[0].startswith("error: optim.lrr: unknown config key")
    configlib.check_overrides(["prog", "--config.optim.lr=1"], default="configs/clip.py:tiny")
    # e.g. evaluate without --config: nothing to apply them to
    assert exit_lines(capsys, ["prog", "--workdir=x", "--config.optim.lr=1"]) == [
        "error: --config.optim.lr: needs --config=FILE[:preset] to apply to"]


def test_a_config_that_does_not_load_is_a_usage_error(capsys):
    assert exit_lines(capsys, ["prog", "--config=configs/clip.py:huge"]) == [
        "error: --config=configs/clip.py:huge: unknown preset 'huge'; choose one of "
        "['b16', 'b16_224', 'digits', 'l14', 'openai_b16', 'openai_b32', 'openai_l14', 's16', 'study', "
        "'tiny', 'tiny_hf']"]
    lines = exit_lines(capsys, ["prog", "--config=configs/nope.py", "--config.optim.lr=1"])
    assert lines == ["error: --config=configs/nope.py: config file 'configs/nope.py' does not exist"]


def test_unknown_loss_term_is_an_error():
    config = configlib.load("configs/clip.py:tiny")
    with pytest.raises(ValueError, match="known terms"):
        objective.active_terms(type(config.loss)({"terms": {"clipp": 1.0}}))


def test_evaluate_applies_overrides_to_the_saved_config(capsys):
    from jaxclr import evaluate

    config = configlib.load("configs/clip.py:tiny")
    evaluate.apply_overrides(config, ['--config.eval.zeroshot_datasets=("cifar10", "my_pets:test")',
                                      "--config.eval.batch_size=7", "--config.data.flip=False"])
    assert config.eval.zeroshot_datasets == ("cifar10", "my_pets:test")
    assert config.eval.batch_size == 7 and config.data.flip is False
    for bad, message in (("--config.eval.batch_sise=7", "unknown config key; did you mean eval.batch_size"),
                         ("--config.eval.batch_size=x", "not a valid int")):
        with pytest.raises(SystemExit) as exit_:
            evaluate.apply_overrides(config, [bad])
        assert exit_.value.code == 2 and message in capsys.readouterr().err
