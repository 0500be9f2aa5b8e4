"""The architecture options that represent released models: each changes what it claims, and its
default is the function every earlier run had (the old-run fixture, tests/trainer/test_old_run.py,
restores and evaluates bit-exactly; here: the defaults add no param and change no output)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxclr.models import TwoTower, layers, vit
from jaxclr.trainer import optim
from tests.models.test_models import IMAGE_SIZE, TOKEN_IDS, TOKENS, VOCAB, random_images, small_config


def build(**overrides):
    return TwoTower(small_config(**overrides), IMAGE_SIZE, vocab_size=overrides.pop("vocab", VOCAB), **TOKEN_IDS,
                    rngs=nnx.Rngs(0))


def names(model):
    return {"/".join(optim.path_names(p)) for p, _ in jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param))}


def embed(model):
    return np.asarray(model.embed_image(random_images())), np.asarray(model.embed_text(TOKENS))


def test_the_defaults_are_the_earlier_model():
    """Explicit default values build the same params and outputs as the config without them."""
    base = build()
    same = build(**{"image.ln_pre": False, "image.patch_bias": True, "image.act": "gelu_tanh", "image.ln_eps": 1e-6,
                    "image.proj": "linear", "text.pool": "eos", "text.act": "gelu_tanh", "text.proj": "linear"})
    assert names(base) == names(same)
    for a, b in zip(embed(base), embed(same)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("key, value, added, removed", [
    ("image.ln_pre", True, {"image/ln_pre/scale", "image/ln_pre/bias"}, set()),
    ("image.patch_bias", False, set(), {"image/patch/bias"}),
    ("image.pool", "map", {"image/map_head/probe", "image/map_head/kv/kernel"}, {"image/cls_embedding"}),
    ("image.proj", "affine", {"image_proj/bias"}, set()),
    ("text.proj", "affine", {"text_proj/bias"}, set()),
])
def test_a_structural_option_adds_or_removes_exactly_its_params_and_changes_the_output(key, value, added, removed):
    base, changed = build(), build(**{key: value})
    assert added <= names(changed) - names(base) and removed <= names(base) - names(changed)
    tower = 0 if key.startswith("image") else 1
    if key.endswith("proj"):   # a bias initialised at zero: set it, and the embedding moves
        proj = changed.image_proj if tower == 0 else changed.text_proj
        proj.bias[...] = jnp.full(proj.bias.shape, 0.5)
    assert np.abs(embed(base)[tower] - embed(changed)[tower]).max() > 1e-3


def test_proj_none_is_the_normalised_tower_output():
    model = build(**{"image.proj": "none", "embed_dim": 32})   # image width 32
    assert model.image_proj is None
    pooled = np.asarray(model.image(random_images()), np.float64)
    np.testing.assert_allclose(embed(model)[0], pooled / np.linalg.norm(pooled, axis=1, keepdims=True), atol=1e-6)
    with pytest.raises(ValueError, match="model.text.proj='none' needs the text width 32 to equal model.embed_dim 24"):
        build(**{"text.proj": "none"})


@pytest.mark.parametrize("tower", ["image", "text"])
@pytest.mark.parametrize("key, value", [("act", "quick_gelu"), ("act", "gelu_exact"), ("ln_eps", 0.5)])
def test_act_and_ln_eps_change_only_their_tower(tower, key, value):
    base, changed = embed(build()), embed(build(**{f"{tower}.{key}": value}))
    moved, kept = (0, 1) if tower == "image" else (1, 0)
    assert np.abs(base[moved] - changed[moved]).max() > 1e-4
    np.testing.assert_array_equal(base[kept], changed[kept])


def test_activations_are_their_closed_forms():
    x = np.linspace(-6, 6, 101)
    erf = np.vectorize(math.erf)
    np.testing.assert_allclose(layers.ACTIVATIONS["gelu_exact"](jnp.asarray(x, jnp.float32)),
                               0.5 * x * (1 + erf(x / math.sqrt(2))), atol=1e-6)
    np.testing.assert_allclose(layers.ACTIVATIONS["quick_gelu"](jnp.asarray(x, jnp.float32)),
                               x / (1 + np.exp(-1.702 * x)), atol=1e-6)
    tanh = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    np.testing.assert_allclose(layers.ACTIVATIONS["gelu_tanh"](jnp.asarray(x, jnp.float32)), tanh, atol=1e-6)


def test_per_channel_pixel_mean_and_std():
    images = random_images()
    mean, std = (0.48, 0.46, 0.41), (0.27, 0.26, 0.28)
    got = np.asarray(vit.normalize_pixels(images, mean, std))
    want = (np.asarray(images, np.float64) / 255 - np.asarray(mean)) / np.asarray(std)
    np.testing.assert_allclose(got, want, atol=1e-5)
    base, changed = embed(build()), embed(build(**{"image.pixel_mean": mean, "image.pixel_std": std}))
    assert np.abs(base[0] - changed[0]).max() > 1e-3
    np.testing.assert_array_equal(base[1], changed[1])


def test_text_pooling_reads_the_position_it_names():
    """'argmax' = the first position of the largest id; 'eos' = the first end id (2 here); 'last' = position
    L-1 with no padding mask; 'auto' = eos (causal) / mean (bidirectional)."""
    tokens = jnp.asarray([[1, 5, 9, 2, 0, 0], [1, 7, 2, 9, 0, 0]], jnp.int32)   # row 1: the largest id after EOS
    model = build(**{"text.causal": True, "text.pool": "argmax"})
    hidden = model.text.encoder(model.text.token(tokens) + model.text.pos_embedding[:, :6],
                                jnp.tril(jnp.ones((6, 6), bool))[None, None])
    pooled = np.asarray(model.text(tokens))
    np.testing.assert_allclose(pooled[0], hidden[0, 2], atol=1e-6)   # id 9 at position 2
    np.testing.assert_allclose(pooled[1], hidden[1, 3], atol=1e-6)   # id 9 at position 3, after the end id
    eos = build(**{"text.causal": True, "text.pool": "eos"})
    np.testing.assert_allclose(np.asarray(eos.text(tokens))[1], hidden[1, 2], atol=1e-6)
    last = build(**{"text.causal": False, "text.pool": "last"})
    unmasked = last.text.encoder(last.text.token(tokens) + last.text.pos_embedding[:, :6], None)
    np.testing.assert_allclose(np.asarray(last.text(tokens)), unmasked[:, -1], atol=1e-6)
    auto, mean = build(**{"text.causal": False}), build(**{"text.causal": False, "text.pool": "mean"})
    np.testing.assert_array_equal(np.asarray(auto.text(tokens)), np.asarray(mean.text(tokens)))


def test_text_vocab_size_sets_the_token_table_rows():
    from jaxclr import config as configlib
    from jaxclr.trainer import state
    config = configlib.load("configs/clip.py:openai_b32")
    assert state.text_ids(config) == (49_408, -1, -1)   # argmax pooling: no tokenizer needed
    config.model.text.vocab_size = 50_000
    assert state.text_ids(config)[0] == 50_000
    tiny = configlib.load("configs/clip.py:tiny")
    tiny.model.text.vocab_size = 300
    assert state.text_ids(tiny) == (300, 0, 2)    # more rows than the byte tokenizer's 259 ids
    tiny.model.text.vocab_size = 100
    with pytest.raises(ValueError, match="below the tokenizer's 259 ids"):
        state.text_ids(tiny)
