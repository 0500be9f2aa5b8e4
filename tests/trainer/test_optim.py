"""Weight decay by role and the logit-scale projection (jaxclr.trainer.optim), through the real model and step."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxclr import config as configlib
from jaxclr import parallel
from jaxclr.data.text import tokenizer
from jaxclr.models import TwoTower
from jaxclr.trainer import optim
from jaxclr.trainer import state as state_lib
from jaxclr.trainer import step as step_lib
from tests.helpers import TOKEN_IDS, flat, random_batch, set_log_scale


def tiny_params(config=None):
    config = config or configlib.load("configs/clip.py:tiny")
    model = TwoTower(config.model, config.data.image_size, vocab_size=tokenizer.VOCAB_SIZE, **TOKEN_IDS,
                     rngs=nnx.Rngs(0))
    _, params = nnx.split(model, nnx.Param)
    return config, params


def decayed_by_role(depth=3, stem=4):
    """The tiny model's decayed leaves, written from the roles (not read from the code):
    every dense and conv kernel, and the token embedding table."""
    names = [f"image/stem/{i}/kernel" for i in range(stem)] + ["image/patch/kernel", "image_proj/kernel",
                                                                "text/token/embedding", "text_proj/kernel"]
    for tower in ("image", "text"):
        for i in range(depth):
            names += [f"{tower}/encoder/blocks/{i}/{layer}/kernel" for layer in ("attn/qkv", "attn/out",
                                                                               "mlp/fc1", "mlp/fc2")]
    return sorted(names)


def test_decay_mask_is_the_list_written_from_roles():
    _, params = tiny_params()
    mask = flat(optim.decay_mask(params))
    assert len(mask) == 92
    assert sorted(name for name, on in mask.items() if on) == decayed_by_role()
    # Never decayed: biases, norm scales, positions, the logit scale (by exact name, not suffix).
    assert not mask["text/pos_embedding"] and not mask["image/pos_embedding"] and not mask["logit/log_scale"]


def test_class_token_and_logit_bias_are_not_decayed():
    config = configlib.load("configs/siglip.py:tiny")
    config.model.image.pool = "tok"
    _, params = tiny_params(config)
    mask = flat(optim.decay_mask(params))
    assert mask["image/cls_embedding"] is False and mask["logit/bias"] is False and mask["logit/log_scale"] is False
    assert sorted(name for name, on in mask.items() if on) == decayed_by_role()


def test_role_rule_holds_for_layers_stacked_for_a_scan():
    """A scanned stack keeps the layer names and adds a leading axis: same roles."""
    stacked = {"encoder": {"blocks": {"attn": {"qkv": {"kernel": jnp.zeros((3, 8, 24)), "bias": jnp.zeros((3, 24))}},
                                      "ln1": {"scale": jnp.ones((3, 8)), "bias": jnp.zeros((3, 8))}}},
               "pos_embedding": jnp.zeros((1, 4, 8))}
    mask = flat(optim.decay_mask(stacked))
    assert mask == {"encoder/blocks/attn/qkv/kernel": True, "encoder/blocks/attn/qkv/bias": False,
                    "encoder/blocks/ln1/scale": False, "encoder/blocks/ln1/bias": False, "pos_embedding": False}


def test_unknown_parameter_name_is_an_error():
    with pytest.raises(ValueError, match="no weight-decay role"):
        optim.decay_mask({"mystery": {"gamma": jnp.zeros(3)}})


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adamw_step_with_zero_grads_decays_exactly_the_role_leaves(weight_decay):
    config, params = tiny_params()
    config.optim.update(warmup_steps=0, weight_decay=weight_decay, lr=1e-3)
    tx = optim.make(config.optim, total_steps=100)    # the real schedule: lr(0) = peak with no warmup
    opt_state = tx.init(params)
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), opt_state, params)
    new = flat(optax.apply_updates(params, updates))
    old = flat(params)
    factor = 1.0 - config.optim.lr * weight_decay
    decayed = set(decayed_by_role())
    for name, value in old.items():
        if name in decayed:
            np.testing.assert_allclose(new[name], value * factor, rtol=1e-6, err_msg=name)
            if weight_decay:
                assert not np.array_equal(new[name], value), name
        else:
            np.testing.assert_array_equal(new[name], value, err_msg=name)


# ------------------------------------------------------------------ the logit scale as a projection

def clip_of_scale(log_scale, seed=0):
    """CLIP loss of fixed correlated embeddings as a function of the log-scale."""
    from jaxclr import losses
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(16, 8))
    v = u + 0.5 * rng.normal(size=(16, 8))
    u, v = (jnp.asarray(x / np.linalg.norm(x, axis=1, keepdims=True), jnp.float32) for x in (u, v))
    return losses.clip_loss(u, v, jnp.exp(log_scale))


def test_scale_gradient_is_alive_just_inside_the_bound():
    config, params = tiny_params()
    graphdef = nnx.split(TwoTower(config.model, 64, vocab_size=tokenizer.VOCAB_SIZE, **TOKEN_IDS, rngs=nnx.Rngs(0)))[0]
    model = nnx.merge(graphdef, params)
    bound = float(optim.max_log_scale(config.model.max_scale))
    model.logit.log_scale[...] = jnp.float32(bound - 1e-3)

    def loss(m):
        return clip_of_scale(jnp.log(m.scale()))

    grads = nnx.grad(loss)(model)
    assert abs(float(grads.logit.log_scale[...])) > 1e-4


def test_update_crossing_the_bound_lands_on_it_and_can_come_back():
    config, params = tiny_params()
    config.optim.update(warmup_steps=0, lr=1e-2, grad_clip=1e9)
    tx = optim.make(config.optim, total_steps=1000)
    bound = optim.max_log_scale(config.model.max_scale)

    def with_log_scale(p, value):
        return jax.tree_util.tree_map_with_path(
            lambda path, leaf: jnp.asarray(value, jnp.float32)
            if optim.path_names(path)[-1] == "log_scale" else leaf, p)

    def grads_pushing(direction):   # -1: the loss wants a larger scale
        return with_log_scale(jax.tree.map(jnp.zeros_like, params), direction)

    params = with_log_scale(params, bound - 1e-4)
    opt_state = tx.init(params)
    log_scale = lambda p: flat(p)["logit/log_scale"]
    updates, opt_state = tx.update(grads_pushing(-1.0), opt_state, params)
    assert log_scale(optax.apply_updates(params, updates)) > bound           # the raw update crosses
    params = optim.project(optax.apply_updates(params, updates), config.model.max_scale)
    assert log_scale(params) == bound                                        # projected onto the bound
    for _ in range(2):
        updates, opt_state = tx.update(grads_pushing(+1.0), opt_state, params)
        params = optim.project(optax.apply_updates(params, updates), config.model.max_scale)
    assert log_scale(params) < bound                                         # and comes back down


def log_scale_after_a_step(config, start):
    """One train step (on one device: compiles fast) from a state whose log-scale is ``start``;
    returns the new log-scale."""
    mesh = parallel.make_mesh(config.mesh, jax.devices()[:1])
    batch = random_batch(config)
    with jax.set_mesh(mesh):
        spec, state = state_lib.create(config, mesh)
        state["params"] = set_log_scale(state["params"], start)
        state, _ = step_lib.make_train_step(config, spec, mesh)(state, parallel.global_batch(batch, mesh))
    return float(flat(state["params"])["logit/log_scale"])


def test_train_step_projects_the_log_scale(data_dir, monkeypatch):
    """A state above the bound (e.g. restored from a run with a larger max_scale) is projected
    onto ln(max_scale) by the step; without the projection it would stay above."""
    from tests.helpers import tiny_run_config
    config = tiny_run_config(data_dir)
    config.model.max_scale = 20.0
    config.optim.warmup_steps = 0
    bound = float(optim.max_log_scale(20.0))
    assert log_scale_after_a_step(config, math.log(1000.0)) == bound
    monkeypatch.setattr(step_lib.optim, "project", lambda params, max_scale: params)
    assert log_scale_after_a_step(config, math.log(1000.0)) > bound + 3.0
