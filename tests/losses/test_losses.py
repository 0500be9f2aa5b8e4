"""Every objective against the float64 reference, for both engines, on one device
and on meshes (8,), (4,2) data x model and (2,4) data x fsdp."""
import functools

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxclr import losses
from tests import reference as ref

N, D = 32, 8
MESHES = {
    "single": None,
    "data8": ((8,), ("data",)),
    "data4_model2": ((4, 2), ("data", "model")),
    "data2_fsdp4": ((2, 4), ("data", "fsdp")),
}


def make_mesh(name):
    spec = MESHES[name]
    if spec is None:
        return None
    return jax.make_mesh(spec[0], spec[1], axis_types=(AxisType.Auto,) * len(spec[1]))


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def pairs(n=N, d=D, noise=0.3, seed=0):
    """Correlated unit pairs (like a trained model's embeddings)."""
    rng = np.random.default_rng(seed)
    u = unit(rng.normal(size=(n, d)))
    v = unit(u + noise * rng.normal(size=(n, d)))
    return u, v


LAM_PAIR = np.linspace(0.1, 0.9, N)
# name -> (jax fn(*args, **engine_kw), reference fn(*args), args)
CASES = {
    "clip": (losses.clip_loss, ref.clip, (10.0,)),
    "clip_s100": (losses.clip_loss, ref.clip, (100.0,)),
    "sigmoid": (losses.sigmoid_loss, ref.sigmoid, (10.0, -3.0)),
    "sigmoid_s100": (losses.sigmoid_loss, ref.sigmoid, (100.0, -10.0)),
    "dcl": (losses.dcl_loss, ref.dcl, (10.0,)),
    "m2mix": (losses.m2mix_loss, ref.m2mix, (10.0, 0.3)),
    "m2mix_pair_mixscale": (losses.m2mix_loss, ref.m2mix, (100.0, LAM_PAIR, 1 / 0.07)),
    "vmix": (losses.vmix_loss, ref.unimodal_mix, (10.0, 0.3)),
    "lmix": (losses.lmix_loss, lambda u, v, s, lam: ref.unimodal_mix(v, u, s, lam), (10.0, 0.3)),
    "uniformity": (lambda u, v, **kw: losses.uniformity(u, **kw), lambda u, v: ref.uniformity(u), ()),
    "cross_uniformity": (losses.cross_uniformity, ref.cross_uniformity, ()),
}


@functools.lru_cache(maxsize=None)
def reference(name):
    _, fn, extra = CASES[name]
    u, v = pairs(noise=0.05 if name.endswith("s100") else 0.3)
    args = (u, v) + tuple(np.asarray(a, np.float64) for a in extra)
    return fn(*args), ref.numeric_grad(fn, args), args


@pytest.mark.parametrize("impl", ["streamed", "gather"])
@pytest.mark.parametrize("mesh_name", list(MESHES))
@pytest.mark.parametrize("name", list(CASES))
def test_value_and_grad_match_float64_reference(name, mesh_name, impl):
    fn = CASES[name][0]
    want_value, want_grads, args = reference(name)
    mesh = make_mesh(mesh_name)
    args32 = [jnp.asarray(a, jnp.float32) for a in args]
    loss = functools.partial(fn, mesh=mesh, impl=impl, block_size=3)  # 3 divides no local batch here
    value, grads = jax.jit(jax.value_and_grad(loss, argnums=tuple(range(len(args)))))(*args32)
    np.testing.assert_allclose(value, want_value, rtol=2e-5, atol=2e-5)
    for got, want in zip(grads, want_grads):
        scale = max(1.0, float(np.max(np.abs(want))))
        np.testing.assert_allclose(np.asarray(got), want, atol=3e-5 * scale, rtol=1e-4)


@pytest.mark.parametrize("block_size", [1, 5, 8, 64])
def test_block_sizes_agree_on_sharded_inputs_with_ambient_mesh(block_size):
    """Sharded inputs, ambient mesh, block sizes smaller than, equal to and larger than the local batch."""
    mesh = make_mesh("data2_fsdp4")
    want_value, want_grads, args = reference("clip")
    with jax.set_mesh(mesh):
        sh = NamedSharding(mesh, P(("data", "fsdp")))
        u, v = (jax.device_put(jnp.asarray(a, jnp.float32), sh) for a in args[:2])
        loss = functools.partial(losses.clip_loss, block_size=block_size)
        value, (gu, gv, gs) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(u, v, jnp.float32(10.0))
    np.testing.assert_allclose(value, want_value, rtol=2e-5)
    for got, want in zip((gu, gv, gs), want_grads):
        np.testing.assert_allclose(np.asarray(got), want, atol=3e-5)


def test_closed_forms():
    e1, e2 = np.eye(4)[0], np.eye(4)[1]
    same = jnp.asarray(np.tile(e1, (1024, 1)), jnp.float32)
    np.testing.assert_allclose(losses.clip_loss(same, same, 10.0), np.log(1024), atol=3e-5)
    np.testing.assert_allclose(losses.clip_loss(same, same, 10.0, impl="gather"), 6.931472, atol=3e-5)
    u = jnp.asarray(np.tile(e1, (1024, 1)), jnp.float32)
    v = jnp.asarray(np.tile(e2, (1024, 1)), jnp.float32)
    np.testing.assert_allclose(losses.sigmoid_loss(u, v, 10.0, -10.0), 10.046489, rtol=1e-6)
    antipodal = jnp.asarray([e1, -e1], jnp.float32)
    np.testing.assert_allclose(losses.uniformity(antipodal), -8.0, rtol=1e-6)
    np.testing.assert_allclose(losses.alignment(antipodal, -antipodal), 4.0, rtol=1e-6)
    np.testing.assert_allclose(losses.alignment(u, u), 0.0)
    rand = unit(np.random.default_rng(0).normal(size=(4096, 512)))
    np.testing.assert_allclose(losses.uniformity(jnp.asarray(rand, jnp.float32)), -3.984, atol=0.01)


def test_uniformity_equals_pdist_form():
    u, _ = pairs()
    d2 = np.sum((u[:, None] - u[None]) ** 2, -1)[np.triu_indices(N, 1)]
    pdist_form = np.log(np.mean(np.exp(-2.0 * d2)))
    np.testing.assert_allclose(losses.uniformity(jnp.asarray(u, jnp.float32)), pdist_form, rtol=1e-5)


def test_scale_100_identical_pairs_stay_finite():
    u, _ = pairs(n=64, d=16, noise=0.0)
    u = jnp.asarray(u, jnp.float32)
    for impl in ("streamed", "gather"):
        for fn in (losses.clip_loss, losses.dcl_loss):
            value, grads = jax.value_and_grad(fn, argnums=(0, 1, 2))(u, u, jnp.float32(100.0), impl=impl)
            assert np.isfinite(value) and all(np.all(np.isfinite(g)) for g in grads)


def test_custom_vjp_check_grads():
    u, v = pairs(n=8, d=4)
    args = (jnp.asarray(u, jnp.float32), jnp.asarray(v, jnp.float32), jnp.float32(2.0),
            jnp.asarray(np.linspace(-0.5, 0.5, 8), jnp.float32))
    for kind, excl in (("lse", False), ("lse", True), ("softplus", True)):
        def f(x, y, s, cb, kind=kind, excl=excl):
            rows, cols = losses.pair_stats(x, y, s, cb, kind=kind, exclude_diag=excl, block_size=3)
            return jnp.sum(rows * jnp.arange(8.0)) + jnp.sum(cols ** 2)
        jax.test_util.check_grads(f, args, order=1, modes=["rev"], atol=2e-2, rtol=2e-2, eps=1e-2)


def test_slerp_properties():
    u, v = pairs(n=16, d=8)
    u, v = jnp.asarray(u, jnp.float32), jnp.asarray(v, jnp.float32)
    np.testing.assert_allclose(losses.slerp(u, v, 1.0), u, atol=1e-6)
    np.testing.assert_allclose(losses.slerp(u, v, 0.0), v, atol=1e-6)
    mid = losses.slerp(u, v, 0.5)
    np.testing.assert_allclose(np.linalg.norm(mid, axis=-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(jnp.sum(mid * u, -1), jnp.sum(mid * v, -1), atol=1e-6)  # equal angles
    np.testing.assert_allclose(losses.slerp(u, v, 0.3), ref.slerp(np.asarray(u, np.float64),
                                                                  np.asarray(v, np.float64), 0.3), atol=1e-5)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_slerp_finite_at_equal_and_antipodal(sign):
    u, _ = pairs(n=4, d=8)
    a = jnp.asarray(u, jnp.float32)
    b = sign * a
    for lam in (0.0, 0.3, 0.5, 1.0):
        out = losses.slerp(a, b, lam)
        np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0, atol=1e-5)
        grads = jax.grad(lambda a, b, lam: jnp.sum(losses.slerp(a, b, lam) * jnp.arange(8.0)),
                         argnums=(0, 1, 2))(a, b, jnp.float32(lam))
        assert all(np.all(np.isfinite(g)) for g in grads)
    np.testing.assert_allclose(losses.slerp(a, b, 1.0), a, atol=1e-5)
    np.testing.assert_allclose(losses.slerp(a, b, 0.0), b, atol=1e-5)


def test_bad_input_errors():
    u = jnp.ones((6, 4))
    with pytest.raises(ValueError, match="not divisible"):
        losses.clip_loss(u, u, 10.0, mesh=make_mesh("data8"))
    with pytest.raises(ValueError, match="same N"):
        losses.clip_loss(u, u[:4], 10.0)
    with pytest.raises(ValueError, match="unknown loss impl"):
        losses.clip_loss(u, u, 10.0, impl="ring")


def low_loss_pairs(noise, n=1024, d=128, seed=0):
    """The issue's seeded cases: u, w unit normal, v = normalise(u + noise * w); float32-exact."""
    rng = np.random.default_rng(seed)
    u, w = unit(rng.normal(size=(n, d))), unit(rng.normal(size=(n, d)))
    v = unit(u + noise * w)
    return u.astype(np.float32), v.astype(np.float32)


@pytest.mark.parametrize("impl", ["streamed", "gather"])
@pytest.mark.parametrize("mesh_name", ["single", "data8"])
def test_clip_keeps_its_digits_at_low_loss(impl, mesh_name):
    """CLIP rows are softplus(LSE_{j != i} - positive): no cancellation of two numbers of size scale."""
    mesh = make_mesh(mesh_name)
    loss = jax.jit(functools.partial(losses.clip_loss, mesh=mesh, impl=impl, block_size=256))
    u, v = low_loss_pairs(0.05)
    near_duplicates = float(loss(u, v, jnp.float32(100.0)))
    assert 0.0 <= near_duplicates <= 1e-6
    u, v = low_loss_pairs(1.8)
    want = ref.clip(u.astype(np.float64), v.astype(np.float64), 100.0)
    assert 1e-3 < want < 1e-2   # the regime the issue measured (~2.9e-3)
    np.testing.assert_allclose(float(loss(u, v, jnp.float32(100.0))), want, rtol=5e-5)


def test_m2mix_is_never_negative_at_low_loss():
    u, v = low_loss_pairs(0.05, n=256)
    value = float(losses.m2mix_loss(jnp.asarray(u), jnp.asarray(v), jnp.float32(100.0), 0.5))
    want = ref.m2mix(u.astype(np.float64), v.astype(np.float64), 100.0, 0.5)
    assert value >= 0.0
    np.testing.assert_allclose(value, want, rtol=1e-3, atol=1e-7)


def test_the_config_lists_exactly_the_terms_the_objective_implements():
    from jaxclr.config.choices import LOSS_TERMS
    from jaxclr.losses import objective
    assert tuple(objective.TERMS) == LOSS_TERMS
