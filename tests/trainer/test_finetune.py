"""Fine-tuning: frozen towers (model.freeze), a fixed logit scale (model.learn_scale) and
starting from another run's params (train.init_from)."""
import math
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxclr import config as configlib
from jaxclr import parallel, train
from jaxclr.data.text import tokenizer
from jaxclr.models import TwoTower
from jaxclr.trainer import init_from, optim, run_info
from jaxclr.trainer import state as state_lib
from jaxclr.trainer import step as step_lib
from jaxclr.trainer.checkpoint import Checkpointer
from tests.helpers import TOKEN_IDS, flat, tiny_run_config


def small_config(preset="configs/clip.py:tiny", **model):
    """The tiny end-to-end model (width 32, one block per tower) without the conv stem (less to compile;
    the towers' params are named alike) and with warmup off, so the first step updates."""
    config = tiny_run_config("")
    config.model.image.stem = ()
    if preset != "configs/clip.py:tiny":   # the objective and logit keys of another config file
        other = configlib.load(preset)
        config.loss = other.loss
        config.model.update({k: other.model[k] for k in ("init_scale", "learn_bias", "init_bias")})
    config.optim.warmup_steps = 0
    config.model.update(model)
    return config


def host(tree):
    return {name: np.asarray(v) for name, v in flat(jax.device_get(tree)).items()}


def abstract_model(config):
    return nnx.eval_shape(lambda: TwoTower(config.model, config.data.image_size, vocab_size=tokenizer.VOCAB_SIZE,
                                           **TOKEN_IDS, rngs=nnx.Rngs(0)))


def tower_sizes(config):
    """Scalar params per part, counted from the model's submodules (not from the path rule)."""
    model = abstract_model(config)
    size = lambda module: sum(x.size for x in jax.tree.leaves(nnx.state(module, nnx.Param)))
    return {"image": size(model.image) + size(model.image_proj), "text": size(model.text) + size(model.text_proj),
            "logit": size(model.logit)}


def one_device_mesh(config):
    return parallel.make_mesh(config.mesh, jax.devices()[:1])   # compiles fast


def train_steps(config, n=3):
    """(params before, params after n real train steps) on fixed random batches, as host arrays."""
    mesh = one_device_mesh(config)
    rng = np.random.default_rng(0)
    with jax.set_mesh(mesh):
        spec, state = state_lib.create(config, mesh)
        before = host(state["params"])
        step = step_lib.make_train_step(config, spec, mesh)
        for _ in range(n):
            batch = {"image": rng.integers(0, 255, (32, 32, 32, 3), dtype=np.uint8),
                     "text": rng.integers(3, 259, (32, config.data.max_len), dtype=np.int32)}
            state, metrics = step(state, parallel.global_batch(batch, mesh))
    assert float(metrics["nonfinite"]) == 0.0
    return before, host(state["params"])


def part(name):
    return "logit" if name.startswith("logit/") else name.split("/")[0].removesuffix("_proj")


# ------------------------------------------------------------------ which params a freeze covers

@pytest.mark.parametrize("freeze", ["image", "text"])
def test_freeze_covers_exactly_the_tower_and_its_projection(freeze):
    config = small_config(freeze=freeze)
    _, params = nnx.split(abstract_model(config), nnx.Param)
    mask = flat(optim.trainable_mask(params, freeze))
    frozen = [name for name, on in mask.items() if not on]
    assert f"{freeze}_proj/kernel" in frozen and "logit/log_scale" not in frozen
    assert sum(flat(params)[name].size for name in frozen) == tower_sizes(config)[freeze]
    fixed = flat(optim.trainable_mask(params, "", learn_scale=False))
    assert [name for name, on in fixed.items() if not on] == ["logit/log_scale"]


def test_unknown_module_and_bad_freeze_are_errors():
    with pytest.raises(ValueError, match="mystery/kernel is in no known module"):
        optim.trainable_mask({"mystery": {"kernel": jnp.zeros(3)}}, "image")
    with pytest.raises(ValueError, match="model.freeze='imgae'"):
        optim.make(small_config().optim, 10, freeze="imgae")


@pytest.mark.parametrize("freeze, learn_scale, preset", [("image", True, "clip"), ("text", True, "clip"),
                                                         ("", False, "siglip"), ("", True, "clip")])
def test_frozen_params_have_no_optimiser_state(freeze, learn_scale, preset):
    """Adam keeps two float32 moments per trainable scalar and none for a frozen one (abstract: no allocation)."""
    config = small_config(f"configs/{preset}.py:tiny", freeze=freeze, learn_scale=learn_scale)
    mesh = one_device_mesh(config)
    with jax.set_mesh(mesh):
        spec, _ = state_lib.spec(config, mesh)
    sizes = tower_sizes(config)
    trainable = sum(n for name, n in sizes.items() if name != freeze and (learn_scale or name != "logit"))
    floats = [x for x in jax.tree.leaves(spec.abstract["opt_state"]) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert sum(x.size for x in floats) == 2 * trainable
    assert sum(x.size * x.dtype.itemsize for x in floats) == 8 * trainable
    assert sizes["logit"] == (2 if preset == "siglip" else 1)


def test_frozen_leaves_get_exactly_zero_gradients():
    config = small_config(freeze="text")
    model = TwoTower(config.model, 32, vocab_size=tokenizer.VOCAB_SIZE, **TOKEN_IDS, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    rng = np.random.default_rng(0)
    batch = {"image": jnp.asarray(rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)),
             "text": jnp.asarray(rng.integers(3, 259, (4, config.data.max_len), dtype=np.int32))}
    key = jax.random.key(0)
    mask = optim.trainable_mask(params, "text")

    @jax.jit
    def gradients(params):   # without the mask, with it, and with it under GradCache (2 micro-batches)
        return [step_lib.loss_and_grads(graphdef, params, batch, key, config.loss, micro, trainable=t)[2]
                for t, micro in ((None, 1), (mask, 1), (mask, 2))]

    full, *masked = map(host, gradients(params))
    for grads in masked:
        for name, g in grads.items():
            if part(name) == "text":
                assert not g.any(), name
            else:
                np.testing.assert_allclose(g, full[name], rtol=1e-4, atol=1e-6, err_msg=name)   # fusion order
    assert all(full[name].any() for name in full if part(name) == "text")   # the stop is what zeroes them


# ------------------------------------------------------------------ real train steps

@pytest.mark.parametrize("freeze, learn_scale", [("image", False), ("text", True)])
def test_frozen_tower_and_fixed_scale_are_bit_identical_after_train_steps(freeze, learn_scale):
    """SigLIP (logit scale and bias): after 3 real steps exactly the frozen tower (with its
    projection) and, with learn_scale=False, the scale and bias at model.init_scale / init_bias
    are unchanged; every other param moved. Each case is the other's negative control."""
    config = small_config("configs/siglip.py:tiny", freeze=freeze, learn_scale=learn_scale, init_scale=7.0,
                          init_bias=-3.0)
    before, after = train_steps(config)
    fixed = {freeze} | ({"logit"} if not learn_scale else set())
    assert {name for name in before if np.array_equal(after[name], before[name])} == {
        name for name in before if part(name) in fixed}
    configured = {"logit/log_scale": np.float32(math.log(7.0)), "logit/bias": np.float32(-3.0)}
    for name, value in configured.items():
        assert before[name] == value and (after[name] == value) == (not learn_scale), name


# ------------------------------------------------------------------ init_from

@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    """(run directory, {step: params}) with checkpoints at steps 3, 5 and 7; step k's params are the
    seed-1 init plus k / 4 (its optimiser state is unlike the targets': no freeze, so Adam's
    moments cover every param)."""
    source = small_config()
    source.seed = 1
    mesh = one_device_mesh(source)
    saved = {}
    with jax.set_mesh(mesh):
        _, state = state_lib.create(source, mesh)
        run = tmp_path_factory.mktemp("src")
        with Checkpointer(run / "checkpoints") as ckpt:
            for step in (3, 5, 7):
                shifted = {**state, "params": jax.tree.map(lambda x: x + step / 4, state["params"]),
                           "step": jnp.int32(step)}
                saved[step] = host(shifted["params"])
                ckpt.save(step, shifted, force=True)
    return run, saved


def init(config, path):
    mesh = one_device_mesh(config)
    with jax.set_mesh(mesh):
        spec, fresh = state_lib.create(config, mesh)
        fresh_host = jax.device_get(fresh)
        state, step = init_from.initialize(config, spec, fresh, init_from.locate(str(path)))
    return state, step, fresh_host


@pytest.mark.parametrize("where, step", [("", 7), ("checkpoints", 7), ("checkpoints/3", 3)])
def test_init_from_loads_exactly_the_saved_params(source_run, where, step):
    run, saved = source_run
    config = small_config(freeze="image")   # another optimiser structure than the source's: params only are read
    state, got_step, fresh = init(config, run / where if where else run)
    assert got_step == step
    params = host(state["params"])
    assert params.keys() == saved[step].keys()
    for name, value in saved[step].items():
        np.testing.assert_array_equal(params[name], value, err_msg=name)
    assert int(state["step"]) == 0 and int(state["skipped"]) == 0
    opt = jax.device_get(state["opt_state"])
    assert jax.tree.structure(opt) == jax.tree.structure(fresh["opt_state"])
    assert all(not np.asarray(x).any() for x in jax.tree.leaves(opt))   # zero moments and counts
    np.testing.assert_array_equal(state["rng"], fresh["rng"])


def test_init_from_with_fixed_scale_keeps_the_configured_scale(source_run):
    run, saved = source_run
    state, _, _ = init(small_config(learn_scale=False, init_scale=3.0), run / "checkpoints" / "5")
    params = host(state["params"])
    assert params["logit/log_scale"] == np.float32(math.log(3.0)) != saved[5]["logit/log_scale"]
    np.testing.assert_array_equal(params["text_proj/kernel"], saved[5]["text_proj/kernel"])


def test_mismatched_shapes_are_one_line_naming_the_first_param(source_run):
    run, _ = source_run
    config = small_config(embed_dim=48)
    mesh = one_device_mesh(config)
    with jax.set_mesh(mesh), pytest.raises(init_from.InitFromError) as error:
        spec, _ = state_lib.spec(config, mesh)   # abstract: the shapes are compared before anything is read
        init_from.load_params(init_from.locate(str(run)), spec.abstract["params"])
    message = str(error.value)
    assert "\n" not in message and message.startswith("train.init_from: ")
    assert ("param image_proj/kernel has shape (32, 32) in the checkpoint and (32, 48) in this model "
            "(2 params differ)") in message


def test_missing_source_says_where_it_looked(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(init_from.InitFromError) as error:
        init_from.locate(str(tmp_path / "empty"))
    message = str(error.value)
    assert "\n" not in message and f"looked for {tmp_path}/empty/checkpoints/<step>/" in message
    config = small_config()
    config.train.init_from = str(tmp_path / "nowhere")
    workdir = tmp_path / "ft"
    with pytest.raises(init_from.InitFromError, match="no checkpoint at"):
        train.train(config, str(workdir))
    assert not (workdir / "config.json").exists()   # stopped before recording the run


def test_finetune_keys_do_not_change_on_resume():
    assert not any(run_info.is_resumable(key) for key in ("train.init_from", "model.freeze", "model.learn_scale"))


@pytest.mark.slow
def test_fine_tune_resumes_from_its_own_checkpoints_and_ignores_init_from(source_run, data_dir, tmp_path, capsys):
    """A LiT fine-tune (frozen image tower) from a saved run stops at step 1; the source is then
    deleted and the same command resumes from the fine-tune's own checkpoint to the end."""
    source, saved = source_run
    run = tmp_path / "src"
    shutil.copytree(source, run)
    config = small_config(freeze="image")
    config.data.data_dir = data_dir
    config.train.update(init_from=str(run), total_steps=2, stop_at=1, log_every=1)
    config.eval.update(every=0, evaluators=("retrieval",))
    workdir = str(tmp_path / "ft")
    assert train.train(config, workdir) == {}
    assert f"initialised the params from {run}/checkpoints/7" in capsys.readouterr().out
    shutil.rmtree(run)                      # init_from now names nothing: a resume must not look at it
    config.train.stop_at = 0
    train.train(config, workdir)
    assert "resumed from step 1 (train.init_from ignored on a resume)" in capsys.readouterr().out
    mesh = parallel.make_mesh(config.mesh)
    with jax.set_mesh(mesh), Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True) as ckpt:
        spec, _ = state_lib.spec(config, mesh)
        assert ckpt.all_steps() == [1, 2]
        final = ckpt.restore(spec.abstract, step=2)
    assert int(final["step"]) == 2
    params = host(final["params"])
    for name, value in saved[7].items():   # the frozen tower is still the source's, bit for bit
        if part(name) == "image":
            np.testing.assert_array_equal(params[name], value, err_msg=name)
        else:
            assert not np.array_equal(params[name], value), name
