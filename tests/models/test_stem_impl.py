"""model.image.stem_impl: the matmul stem computes the conv stem's function with its params,
forward and backward, and lowers to no convolution; 'auto' takes it for GradCache on CPU only."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxclr import config as configlib
from jaxclr.models import vit


@pytest.mark.parametrize("size,cin,cout", [(8, 3, 16), (16, 16, 32), (4, 5, 7)])
def test_matmul_conv_equals_nnx_conv(size, cin, cout):
    rng = np.random.default_rng(size)
    conv = nnx.Conv(cin, cout, (3, 3), strides=2, padding="SAME", rngs=nnx.Rngs(0))
    conv.bias[...] = jnp.asarray(rng.normal(size=cout), jnp.float32)
    x = jnp.asarray(rng.normal(size=(2, size, size, cin)), jnp.float32)
    with jax.default_matmul_precision("highest"):
        np.testing.assert_allclose(vit.conv3x3_s2_matmul(x, conv.kernel[...], conv.bias[...]), conv(x),
                                   rtol=1e-5, atol=1e-5)


def test_odd_sizes_are_refused():
    with pytest.raises(ValueError, match="even spatial sizes"):
        vit.conv3x3_s2_matmul(jnp.zeros((1, 5, 5, 3)), jnp.zeros((3, 3, 3, 4)), jnp.zeros(4))


def _towers():
    cfg = configlib.load("configs/clip.py:study").model.image
    towers = {}
    for impl in vit.STEM_IMPLS:
        with cfg.unlocked():
            cfg.stem_impl = impl
        towers[impl] = vit.ViT(cfg, 32, rngs=nnx.Rngs(0))
    return towers


def test_vit_features_and_grads_match_between_stem_impls():
    towers = _towers()
    images = jnp.asarray(np.random.default_rng(1).integers(0, 255, (4, 32, 32, 3)), jnp.uint8)
    out, grads = {}, {}
    for impl, tower in towers.items():
        graphdef, params = nnx.split(tower, nnx.Param)

        def loss(p, graphdef=graphdef):
            return jnp.sum(nnx.merge(graphdef, p)(images) ** 2)

        with jax.default_matmul_precision("highest"):
            out[impl], grads[impl] = jax.value_and_grad(loss)(params)
    np.testing.assert_allclose(out["matmul"], out["conv"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(grads["matmul"]), jax.tree.leaves(grads["conv"])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_matmul_stem_lowers_to_no_convolution():
    images = jnp.zeros((2, 32, 32, 3), jnp.uint8)
    counts = {}
    for impl, tower in _towers().items():
        graphdef, params = nnx.split(tower, nnx.Param)
        text = jax.jit(lambda p, g=graphdef: nnx.merge(g, p)(images)).lower(params).as_text()
        counts[impl] = text.count("stablehlo.convolution")
    assert counts == {"auto": 3, "conv": 3, "matmul": 0}   # auto without GradCache: the conv stem


@pytest.mark.parametrize("impl,micro,backend,want", [
    ("auto", 1, "cpu", "conv"), ("auto", 4, "cpu", "matmul"), ("auto", 4, "gpu", "conv"), ("auto", 2, "tpu", "conv"),
    ("conv", 4, "cpu", "conv"), ("matmul", 1, "gpu", "matmul")])
def test_auto_takes_the_matmul_stem_for_gradcache_on_cpu_only(impl, micro, backend, want):
    assert vit.resolve_stem_impl(impl, micro, backend) == want


def test_the_trainers_model_follows_train_micro_batches():
    from jaxclr.trainer import state
    config = configlib.load("configs/clip.py:study")
    assert config.model.image.stem_impl == "auto"
    for micro, want in [(1, "conv"), (4, "matmul")]:   # this test process runs on the CPU backend
        config.train.micro_batches = micro
        assert state._model(config, 0).image.stem_impl == want
    with pytest.raises(ValueError, match="stem_impl must be one of"):
        vit.resolve_stem_impl("fft")
