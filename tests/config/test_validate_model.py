"""Validation of model.*: tower shapes, the stem, the logit scale, freezing, and the options that
represent released models; one problem line each (jaxclr.trainer.validate_model)."""
import pytest

from jaxclr.trainer import validate
from tests.config.validation_cases import assert_one, tiny

# ------------------------------------------------------------------ model

def test_image_size_must_be_a_multiple_of_the_patch():
    assert_one(tiny(data__image_size=60), "data.image_size", "60 is not divisible by model.image.patch_size 16",
               "e.g. 48 or 64")


def test_patch_must_be_divisible_by_the_stem_reduction():
    assert_one(tiny(model__image__patch_size=8, data__image_size=64), "model.image.patch_size",
               "2**len(model.image.stem) = 16", "shorter stem")


def test_stem_must_be_channel_counts():
    assert_one(tiny(model__image__stem=(16, 0)), "model.image.stem", "conv channel counts")


@pytest.mark.parametrize("tower", ["image", "text"])
def test_width_must_be_divisible_by_heads(tower):
    assert_one(tiny(**{f"model__{tower}__heads": 5}), f"model.{tower}.heads",
               f"5 does not divide model.{tower}.width 128", "e.g. 2, 4 or 8")


def test_text_width_must_be_divisible_by_text_patch():
    assert_one(tiny(model__text__patch_size=3), "model.text.patch_size", "3 does not divide model.text.width 128",
               "e.g. 1, 2 or 4")


def test_unknown_dtype():
    assert_one(tiny(model__dtype="fp16"), "model.dtype", "'bfloat16', 'float32'", "'fp16'")


def test_unknown_pool():
    assert_one(tiny(model__image__pool="cls"), "model.image.pool", "unknown pooling 'cls'", "'mean', 'tok'")


def test_unknown_attention():
    assert_one(tiny(model__attention="flash"), "model.attention", "unknown attention implementation 'flash'",
               "'dot_product', 'xla'")


def test_init_scale_must_be_positive_and_at_most_max_scale():
    assert_one(tiny(model__init_scale=0.0), "model.init_scale", "must be > 0")
    assert_one(tiny(model__init_scale=200.0), "model.init_scale", "above model.max_scale 100.0")
    assert_one(tiny(model__max_scale=-1.0), "model.max_scale", "must be > 0")


def test_freeze_names_a_tower_and_learn_scale_is_a_bool():
    assert_one(tiny(model__freeze="imgae"), "model.freeze", "unknown tower 'imgae' (did you mean 'image'?)",
               "use 'image' or 'text'")
    assert_one(tiny(type_safe=False, model__learn_scale="no"), "model.learn_scale", "'no' is not True or False")
    for freeze in ("", "image", "text"):
        assert validate.problems(tiny(model__freeze=freeze, model__learn_scale=False), 8) == []


# ------------------------------------------------------------------ released-model options

@pytest.mark.parametrize("key, value, phrase", [
    ("model__image__act", "relu", "unknown activation 'relu'"),
    ("model__text__act", "gelu", "unknown activation 'gelu'"),
    ("model__image__ln_eps", 0.0, "use e.g. 1e-6"),
    ("model__image__proj", "mlp", "unknown projection 'mlp'"),
    ("model__image__ln_pre", "yes", "is not True or False"),
    ("model__image__patch_bias", 1, "is not True or False"),
    ("model__image__pixel_mean", (0.5, 0.5), "is not 3 numbers"),
    ("model__image__pixel_std", (0.5, 0.0, 0.5), "each > 0"),
    ("model__text__pool", "first", "unknown text pooling 'first'"),
    ("model__text__pool", "last", "reads one token, but model.text.patch_size is 4"),
    ("model__text__vocab_size", -1, "use 0 for the tokenizer's vocabulary size"),
    ("model__text__proj", "none", "'none' needs model.text.width 128 to equal model.embed_dim 64"),
])
def test_released_model_options_are_checked_one_line_each(key, value, phrase):
    extra = {"model__embed_dim": 64} if key == "model__text__proj" else {}
    config = tiny(not key.endswith(("ln_pre", "patch_bias")), **{key: value}, **extra)   # a bool key given a str
    assert_one(config, key.replace("__", "."), phrase)
