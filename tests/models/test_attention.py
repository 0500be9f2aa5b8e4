"""model.attention: 'dot_product' (jax.nn.dot_product_attention) computes what 'xla' (the default) does."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxclr import config as configlib
from jaxclr.models import layers
from jaxclr.trainer import state as state_lib

WIDTH, HEADS, LENGTH = 32, 4, 7


def attention_pair():
    """The two implementations with the same params."""
    xla = layers.SelfAttention(WIDTH, HEADS, dtype=jnp.float32, rngs=nnx.Rngs(0), attention="xla")
    fused = layers.SelfAttention(WIDTH, HEADS, dtype=jnp.float32, rngs=nnx.Rngs(0), attention="dot_product")
    return xla, fused


def assert_close(actual, desired, tol=1e-6):
    """Equal to `tol` relative to the largest entry: float32 rounding (the two scale the logits in a
    different order) and nothing more."""
    actual, desired = np.asarray(actual), np.asarray(desired)
    scale = max(float(np.max(np.abs(desired))), 1e-30)
    assert float(np.max(np.abs(actual - desired))) <= tol * scale, (np.max(np.abs(actual - desired)), scale)


def masks():
    """The masks the text tower builds: causal [1, 1, L, L] and padding [B, 1, 1, L] (a row all padding too)."""
    causal = jnp.tril(jnp.ones((LENGTH, LENGTH), bool))[None, None]
    lengths = jnp.array([7, 3, 1, 0])
    padding = (jnp.arange(LENGTH)[None] < lengths[:, None])[:, None, None, :]
    return {"causal": causal, "padding": padding, "none": None}


@pytest.mark.parametrize("mask_name", ["causal", "padding", "none"])
def test_dot_product_attention_gives_the_same_outputs_and_gradients(mask_name):
    mask = masks()[mask_name]
    x = jax.random.normal(jax.random.key(1), (4, LENGTH, WIDTH), jnp.float32)
    xla, fused = attention_pair()
    assert xla.attention == "xla" and fused.attention == "dot_product"

    def loss_and_grads(module):
        graphdef, params = nnx.split(module, nnx.Param)

        def loss(p, x):
            y = nnx.merge(graphdef, p)(x, mask)
            return jnp.sum(y * jnp.cos(y)), y

        (value, y), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, x)
        return y, grads

    y_xla, g_xla = loss_and_grads(xla)
    y_fused, g_fused = loss_and_grads(fused)
    assert float(jnp.max(jnp.abs(y_xla))) > 0.1      # a real output, not all zeros
    assert_close(y_fused, y_xla)
    for a, b in zip(jax.tree.leaves(g_fused), jax.tree.leaves(g_xla), strict=True):
        assert_close(a, b)


def test_unknown_attention_is_an_error():
    with pytest.raises(ValueError, match="model.attention must be one of"):
        layers.SelfAttention(WIDTH, HEADS, dtype=jnp.float32, rngs=nnx.Rngs(0), attention="flash")


def calls_of_dot_product_attention(config, monkeypatch) -> int:
    """How many times one forward pass of the config's model calls jax.nn.dot_product_attention."""
    calls = []
    real = jax.nn.dot_product_attention
    monkeypatch.setattr(jax.nn, "dot_product_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = state_lib._model(config, 0)
    images = jnp.zeros((2, config.data.image_size, config.data.image_size, 3), jnp.uint8)
    model(images, jnp.ones((2, int(config.model.text.max_len)), jnp.int32))
    return len(calls)


def test_the_config_key_picks_the_implementation_and_xla_is_the_default(monkeypatch):
    config = configlib.load("configs/clip.py:tiny")
    assert config.model.attention == "xla"
    assert calls_of_dot_product_attention(config, monkeypatch) == 0
    config.model.attention = "dot_product"
    depth = config.model.image.depth + config.model.text.depth
    assert calls_of_dot_product_attention(config, monkeypatch) == depth      # every block of both towers
