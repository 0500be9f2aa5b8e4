"""GradCache: k tower micro-batches give the loss and gradients of the full batch."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxclr import config as configlib
from jaxclr import parallel
from jaxclr.trainer import state as state_lib
from jaxclr.trainer import step as step_lib


def tiny_config(terms=None, stem_impl="conv"):
    c = configlib.load("configs/clip.py:tiny")
    c.model.image.stem_impl = stem_impl
    c.data.image_size = 32
    c.model.image.update(patch_size=16, width=32, depth=1, heads=2)
    c.model.text.update(width=32, depth=1, heads=2, max_len=16, patch_size=4)
    c.data.max_len = 16
    c.model.embed_dim = 16
    c.model.learn_bias = True
    for name, weight in (terms or {}).items():
        c.loss.terms[name] = weight
    return c


@pytest.mark.parametrize("terms, settings, stem_impl", [
    (None, ((2, 0), (4, 1), (4, 2)), "conv"),      # (k, train.micro_unroll): 0 = fully unrolled
    ({"clip": 0.0, "sigmoid": 1.0, "m2mix": 0.1, "uniformity": 0.5}, ((4, 0),), "conv"),
    (None, ((4, 1),), "matmul"),                   # the stem GradCache runs fast with on CPU (README)
])
def test_micro_batches_match_full_batch(terms, settings, stem_impl):
    config = tiny_config(terms, stem_impl)
    mesh = parallel.make_mesh(config.mesh)
    rng = np.random.default_rng(0)
    n = 64
    batch = parallel.global_batch({"image": rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8),
                                   "text": rng.integers(3, 200, (n, 16)).astype(np.int32)}, mesh)
    with jax.set_mesh(mesh):
        spec, state = state_lib.create(config, mesh)
        key = jax.random.key(1)
        results = {}
        for k, unroll in ((1, 1), *settings):
            fn = jax.jit(lambda p, b, k=k, u=unroll: step_lib.loss_and_grads(spec.graphdef, p, b, key, config.loss,
                                                                             k, mesh, u))
            results[k, unroll] = fn(state["params"], batch)
    total1, terms1, grads1 = results[1, 1]
    for setting, (total, terms_k, grads) in results.items():
        np.testing.assert_allclose(total, total1, rtol=1e-5, err_msg=str(setting))
        for name in terms1:
            np.testing.assert_allclose(terms_k[name], terms1[name], rtol=1e-5, atol=1e-6, err_msg=str(setting))
        for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads1)):
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=2e-6)
    assert float(optax_norm(grads1)) > 0


def optax_norm(tree):
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


def test_micro_batches_must_divide_batch():
    config = tiny_config()
    with pytest.raises(ValueError, match="micro_batches"):
        x = {"image": jnp.zeros((6, 32, 32, 3), jnp.uint8), "text": jnp.zeros((6, 16), jnp.int32)}
        step_lib.loss_and_grads(None, None, x, None, config.loss, 4)


def test_micro_unroll_unrolls_the_gradcache_loops():
    # Rolled (unroll=1): the embed loop and the backprop loop are two while loops; fully
    # unrolled (0, or >= k), neither is. The loss engine's own loops stay (the baseline).
    config = tiny_config()
    mesh = parallel.make_mesh(config.mesh)
    batch = {"image": jax.ShapeDtypeStruct((32, 32, 32, 3), jnp.uint8),
             "text": jax.ShapeDtypeStruct((32, 16), jnp.int32)}
    with jax.set_mesh(mesh):
        spec, state = state_lib.create(config, mesh)

        def while_loops(k, unroll):
            fn = jax.jit(lambda p, b: step_lib.loss_and_grads(spec.graphdef, p, b, jax.random.key(0), config.loss,
                                                              k, mesh, unroll))
            return fn.lower(state["params"], batch).as_text().count("stablehlo.while")

        baseline = while_loops(1, 1)
        assert while_loops(4, 1) == while_loops(4, 2) == baseline + 2   # partially unrolled: still loops
        assert while_loops(4, 0) == while_loops(4, 8) == baseline
