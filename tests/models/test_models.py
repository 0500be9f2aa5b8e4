"""Tests for jaxclr.models: shapes, pooling/masking semantics, dtypes, logit params, split/merge."""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from jaxclr.models import TextTransformer, TwoTower, ViT, count_params
from jaxclr.models.layers import SelfAttention, stack_blocks
from jaxclr.models.text import eos_positions
from tests.helpers import TOKEN_IDS

IMAGE_SIZE = 16
VOCAB = 40   # rows of the token table (the tokenizer's vocab_size in a run)


def small_config(**overrides):
    """A tiny config.model with the same keys as configs/."""
    cfg = ml_collections.ConfigDict({
        "embed_dim": 24, "dtype": "float32",
        "image": {"patch_size": 4, "width": 32, "depth": 2, "heads": 2, "mlp_ratio": 2, "pool": "tok",
                  "stem": (), "stem_impl": "conv", "ln_pre": False, "patch_bias": True, "act": "gelu_tanh",
                  "ln_eps": 1e-6, "pixel_mean": (0.5, 0.5, 0.5), "pixel_std": (0.5, 0.5, 0.5), "proj": "linear"},
        "text": {"max_len": 12, "width": 32, "depth": 2, "heads": 2, "mlp_ratio": 2,
                 "causal": True, "patch_size": 1, "pool": "auto", "act": "gelu_tanh", "ln_eps": 1e-6,
                 "proj": "linear", "vocab_size": 0},
        "init_scale": 14.285714, "max_scale": 100.0, "learn_bias": False, "init_bias": -10.0,
        "remat": "none", "scan_layers": False, "attention": "xla"})
    cfg.update_from_flattened_dict(overrides)
    return cfg


def random_images(n=3, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, 256, (n, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8))


TOKENS = jnp.asarray([[1, 5, 6, 7, 2, 0, 0, 0, 0, 0],
                      [1, 9, 2, 0, 0, 0, 0, 0, 0, 0],
                      [1, 3, 4, 5, 6, 7, 8, 9, 10, 2]], jnp.int32)


@pytest.fixture(scope="module")
def model():
    return TwoTower(small_config(), IMAGE_SIZE, vocab_size=VOCAB, **TOKEN_IDS, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("pool,causal", [("tok", True), ("mean", False)])
def test_shapes_and_unit_norm(pool, causal):
    m = TwoTower(small_config(**{"image.pool": pool, "text.causal": causal}), IMAGE_SIZE, vocab_size=VOCAB, **TOKEN_IDS,
                 rngs=nnx.Rngs(1))
    zimg, ztxt = m(random_images(), TOKENS)
    assert zimg.shape == (3, 24) and ztxt.shape == (3, 24)
    assert zimg.dtype == jnp.float32 and ztxt.dtype == jnp.float32
    np.testing.assert_allclose(np.linalg.norm(zimg, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ztxt, axis=1), 1.0, atol=1e-5)
    # Float images on the 0..255 scale are treated exactly like uint8 ones.
    np.testing.assert_allclose(m.embed_image(random_images().astype(jnp.float32)), zimg, atol=1e-6)
    assert count_params(m) == sum(x.size for x in jax.tree.leaves(nnx.state(m, nnx.Param)))


def test_attention_matches_numpy_reference():
    attn = SelfAttention(8, 2, dtype=jnp.float32, rngs=nnx.Rngs(3))
    x = np.random.default_rng(1).normal(size=(2, 5, 8)).astype(np.float32)
    mask = np.tril(np.ones((5, 5), bool))
    got = attn(jnp.asarray(x), jnp.asarray(mask)[None, None])
    wq = np.asarray(attn.qkv.kernel[...]), np.asarray(attn.qkv.bias[...])
    q, k, v = np.split(x @ wq[0] + wq[1], 3, axis=-1)

    def heads(a):  # [B, L, H * d] -> [B, H, L, d]
        return a.reshape(2, 5, 2, 4).transpose(0, 2, 1, 3)

    logits = heads(q) @ heads(k).transpose(0, 1, 3, 2) / 2.0
    logits = np.where(mask, logits, -np.inf)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    y = (w / w.sum(-1, keepdims=True)) @ heads(v)
    want = y.transpose(0, 2, 1, 3).reshape(2, 5, 8) @ np.asarray(attn.out.kernel[...]) + np.asarray(attn.out.bias[...])
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_eos_positions():
    tokens = jnp.asarray([[1, 4, 2, 2, 0], [1, 4, 5, 0, 0], [0, 0, 0, 0, 0], [2, 3, 3, 3, 3]])
    np.testing.assert_array_equal(eos_positions(tokens, **TOKEN_IDS), [2, 2, 0, 0])


def test_causal_text_ignores_tokens_after_eos(model):
    base = model.embed_text(TOKENS)
    changed = TOKENS.at[0, 5:].set(jnp.asarray([11, 12, 2, 13, 14])).at[1, 3:].set(33)
    np.testing.assert_allclose(model.embed_text(changed), base, atol=1e-6)
    np.testing.assert_allclose(model.embed_text(TOKENS[:, :5])[0], base[0], atol=1e-6)  # shorter input
    before_eos = TOKENS.at[0, 2].set(20)
    assert not np.allclose(model.embed_text(before_eos)[0], base[0], atol=1e-3)


def test_bidirectional_text_ignores_padding():
    m = TextTransformer(small_config(**{"text.causal": False}).text, vocab_size=VOCAB, **TOKEN_IDS, rngs=nnx.Rngs(2))
    tokens = jnp.asarray([[1, 5, 6, 7, 2, 0, 0, 0]], jnp.int32)
    base = m(tokens)
    np.testing.assert_allclose(m(tokens[:, :5]), base, atol=1e-5)
    np.testing.assert_allclose(m(jnp.pad(tokens, ((0, 0), (0, 4)))), base, atol=1e-5)
    # Bidirectional: every non-pad token influences the pooled output, including the last.
    assert not np.allclose(m(tokens.at[0, 4].set(9)), base, atol=1e-3)


def permute_patches(images, patch, perm):
    n = images.shape[1] // patch
    x = images.reshape(images.shape[0], n, patch, n, patch, 3).transpose(0, 1, 3, 2, 4, 5)
    x = x.reshape(images.shape[0], n * n, patch, patch, 3)[:, perm]
    x = x.reshape(images.shape[0], n, n, patch, patch, 3).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(images.shape)


@pytest.mark.parametrize("pool", ["tok", "mean"])
def test_vit_is_sensitive_to_patch_order_through_positions(pool):
    cfg = small_config(**{"image.pool": pool}).image
    vit = ViT(cfg, IMAGE_SIZE, rngs=nnx.Rngs(4))
    images = random_images(2, seed=5)
    perm = np.random.default_rng(0).permutation((IMAGE_SIZE // 4) ** 2)
    shuffled = permute_patches(images, 4, perm)
    assert not np.allclose(vit(images), vit(shuffled), atol=1e-3)
    vit.pos_embedding[...] = jnp.zeros_like(vit.pos_embedding[...])  # without positions: a set model
    np.testing.assert_allclose(vit(images), vit(shuffled), atol=1e-5)


def test_bfloat16_compute_has_float32_params_and_outputs(model):
    m16 = TwoTower(small_config(dtype="bfloat16"), IMAGE_SIZE, vocab_size=VOCAB, **TOKEN_IDS, rngs=nnx.Rngs(0))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nnx.state(m16, nnx.Param)))
    z16 = m16(random_images(), TOKENS)
    z32 = model(random_images(), TOKENS)
    for a, b in zip(z16, z32):
        assert a.dtype == jnp.float32
        np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
        assert np.min(np.sum(np.asarray(a) * np.asarray(b), axis=1)) > 0.99  # cosine to float32 result
        np.testing.assert_allclose(a, b, atol=0.02)


def test_scale_init_is_exp_of_log_scale():
    m = TwoTower(small_config(), IMAGE_SIZE, vocab_size=VOCAB, **TOKEN_IDS, rngs=nnx.Rngs(0))
    assert m.scale().dtype == jnp.float32
    np.testing.assert_allclose(m.scale(), 1 / 0.07, rtol=1e-6)
    np.testing.assert_allclose(m.logit.log_scale[...], 2.659260, atol=1e-6)
    # No clamp in the forward pass (the bound is a projection in jaxclr.trainer.optim, tested in test_optim).
    m.logit.log_scale[...] = jnp.float32(math.log(50.0))
    np.testing.assert_allclose(m.scale(), 50.0, rtol=1e-6)


def test_init_scale_above_max_scale_is_an_error():
    with pytest.raises(ValueError, match="init_scale"):
        TwoTower(small_config(init_scale=200.0), IMAGE_SIZE, vocab_size=VOCAB, **TOKEN_IDS, rngs=nnx.Rngs(0))


def test_bias_param_only_when_learnable():
    plain = TwoTower(small_config(), IMAGE_SIZE, vocab_size=VOCAB, **TOKEN_IDS, rngs=nnx.Rngs(0))
    names = [path[-1] for path, _ in nnx.to_flat_state(nnx.state(plain.logit, nnx.Param))]
    assert names == ["log_scale"] and float(plain.bias()) == 0.0 and plain.bias().dtype == jnp.float32
    sig = TwoTower(small_config(learn_bias=True, init_scale=10.0), IMAGE_SIZE, vocab_size=VOCAB, **TOKEN_IDS,
                   rngs=nnx.Rngs(0))
    flat = dict(nnx.to_flat_state(nnx.state(sig, nnx.Param)))
    assert flat[("logit", "bias")][...] == -10.0 and float(sig.bias()) == -10.0
    np.testing.assert_allclose(sig.scale(), 10.0, rtol=1e-6)
    assert count_params(sig) == count_params(plain) + 1


def test_split_merge_round_trip_in_jit(model):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    assert not jax.tree.leaves(rest)  # no RNG or other mutable state

    @jax.jit
    def forward(params, rest, images, tokens):
        m = nnx.merge(graphdef, params, rest)
        zimg, ztxt = m(images, tokens)
        return zimg, ztxt, m.scale(), m.bias()

    images = random_images()
    out1, out2 = forward(params, rest, images, TOKENS), forward(params, rest, images, TOKENS)
    for a, b in zip(out1, out2):
        np.testing.assert_array_equal(a, b)
    eager = model(images, TOKENS)
    np.testing.assert_allclose(out1[0], eager[0], atol=1e-5)
    np.testing.assert_allclose(out1[1], eager[1], atol=1e-5)
    grads = jax.grad(lambda p: jnp.sum(forward(p, rest, images, TOKENS)[0][:, 0]))(params)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_config_errors():
    with pytest.raises(ValueError, match="not divisible"):
        TwoTower(small_config(), 18, vocab_size=VOCAB, **TOKEN_IDS, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="dtype"):
        TwoTower(small_config(dtype="float16"), IMAGE_SIZE, vocab_size=VOCAB, **TOKEN_IDS, rngs=nnx.Rngs(0))
    m = TextTransformer(small_config().text, vocab_size=VOCAB, **TOKEN_IDS, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="max_len"):
        m(jnp.ones((1, 13), jnp.int32))


def test_conv_stem_keeps_token_grid_and_checks_divisibility():
    cfg = small_config()
    cfg.image.stem = (8, 16)   # two stride-2 convs: 16 px -> 4 px maps; patch 4 px -> one 1x1 patch per token
    vit = ViT(cfg.image, IMAGE_SIZE, rngs=nnx.Rngs(0))
    assert vit.num_patches == (IMAGE_SIZE // 4) ** 2
    out = vit(random_images())
    assert out.shape == (3, 32) and np.all(np.isfinite(out))
    cfg.image.stem = (8, 8, 8)  # 2**3 = 8 does not divide patch 4
    with pytest.raises(ValueError, match="stem"):
        ViT(cfg.image, IMAGE_SIZE, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("patch", [2, 3, 4])
def test_byte_patched_text_pools_at_eos_patch_and_ignores_padding(patch):
    cfg = small_config()
    cfg.text.patch_size = patch
    cfg.text.width = 36 if patch == 3 else 32
    text = TextTransformer(cfg.text, vocab_size=VOCAB, **TOKEN_IDS, rngs=nnx.Rngs(0))
    out = text(TOKENS)
    assert out.shape == (3, cfg.text.width) and np.all(np.isfinite(out))
    # Padding after the EOS patch never changes the embedding (trailing pad patches are masked by causality).
    padded = jnp.pad(TOKENS[:, :10], ((0, 0), (0, 2)))
    np.testing.assert_allclose(text(padded), out, atol=1e-5)
    # Changing a byte before EOS does.
    changed = TOKENS.at[0, 1].set(11)
    assert not np.allclose(text(changed)[0], out[0], atol=1e-4)


# ---- memory options: model.remat and model.scan_layers (jaxclr.models.layers) ----

def build_tower(kind, remat="none", scan_layers=False, seed=0, cfg=None):
    cfg = cfg or small_config()
    if kind == "image":
        return ViT(cfg.image, IMAGE_SIZE, "float32", rngs=nnx.Rngs(seed), remat=remat, scan_layers=scan_layers)
    return TextTransformer(cfg.text, "float32", vocab_size=VOCAB, **TOKEN_IDS, rngs=nnx.Rngs(seed), remat=remat,
                           scan_layers=scan_layers)


def tower_input(kind):
    return random_images(3) if kind == "image" else TOKENS


def copied_into_scanned(unscanned, scanned):
    """Puts the unscanned tower's params (blocks stacked on a leading axis) into the scanned tower."""
    params = nnx.state(unscanned, nnx.Param)
    params["encoder"]["blocks"] = stack_blocks(params["encoder"]["blocks"])
    nnx.update(scanned, params)
    return scanned


def test_scanned_blocks_keep_the_block_param_names_with_a_layer_axis():
    tower = build_tower("image", scan_layers=True)
    blocks = nnx.state(tower, nnx.Param)["encoder"]["blocks"]
    shapes = {"/".join(str(k) for k in path): leaf.shape for path, leaf in nnx.to_flat_state(blocks)}
    assert shapes == {"attn/qkv/kernel": (2, 32, 96), "attn/qkv/bias": (2, 96), "attn/out/kernel": (2, 32, 32),
                      "attn/out/bias": (2, 32), "mlp/fc1/kernel": (2, 32, 64), "mlp/fc1/bias": (2, 64),
                      "mlp/fc2/kernel": (2, 64, 32), "mlp/fc2/bias": (2, 32), "ln1/scale": (2, 32),
                      "ln1/bias": (2, 32), "ln2/scale": (2, 32), "ln2/bias": (2, 32)}
    # the layers are initialised independently, not copies of one another
    assert not np.allclose(blocks["attn"]["qkv"]["kernel"][0], blocks["attn"]["qkv"]["kernel"][1])


@pytest.mark.parametrize("kind", ["image", "text"])
@pytest.mark.parametrize("remat", ["none", "block"])
def test_scanned_encoder_computes_the_unscanned_function_and_gradients(kind, remat):
    reference = build_tower(kind)                      # unscanned, no remat
    scanned = copied_into_scanned(reference, build_tower(kind, remat=remat, scan_layers=True, seed=1))
    unscanned = build_tower(kind, remat=remat, seed=2)
    nnx.update(unscanned, nnx.state(reference, nnx.Param))
    x = tower_input(kind)
    want = reference(x)
    np.testing.assert_allclose(scanned(x), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(unscanned(x), want, rtol=1e-5, atol=1e-5)

    weights = jax.random.normal(jax.random.key(3), want.shape)

    def grads(tower):
        graphdef, params = nnx.split(tower, nnx.Param)
        return jax.grad(lambda p: jnp.sum(nnx.merge(graphdef, p)(x) * weights))(params)

    g_ref, g_scan, g_unscan = grads(reference), grads(scanned), grads(unscanned)
    g_ref_stacked = jax.tree.map(lambda g: g, g_ref)   # a copy, then the block grads stacked like the params
    g_ref_stacked["encoder"]["blocks"] = stack_blocks(g_ref["encoder"]["blocks"])
    for want_tree, got_tree in ((g_ref_stacked, g_scan), (g_ref, g_unscan)):
        want_flat, got_flat = dict(nnx.to_flat_state(want_tree)), dict(nnx.to_flat_state(got_tree))
        assert want_flat.keys() == got_flat.keys()
        for path in want_flat:
            want_leaf = np.asarray(want_flat[path][...])   # float32 rounding, relative to the leaf's scale
            np.testing.assert_allclose(got_flat[path][...], want_leaf, rtol=1e-4,
                                       atol=1e-5 * float(np.max(np.abs(want_leaf))), err_msg="/".join(map(str, path)))


def test_remat_unknown_value_names_the_allowed_values():
    with pytest.raises(ValueError, match="model.remat must be one of 'none', 'block', got 'full'"):
        build_tower("text", remat="full")


def test_decay_mask_of_scanned_towers_marks_exactly_kernels_and_embeddings():
    from jaxclr import config as configlib
    from jaxclr.trainer import optim

    cfg = configlib.load("configs/clip.py:tiny").model
    params = {"image": nnx.state(ViT(cfg.image, 64, rngs=nnx.Rngs(0), scan_layers=True), nnx.Param),
              "text": nnx.state(TextTransformer(cfg.text, vocab_size=259, **TOKEN_IDS, rngs=nnx.Rngs(0),
                                                scan_layers=True), nnx.Param)}
    mask = {"/".join(optim.path_names(p)): on
            for p, on in jax.tree_util.tree_leaves_with_path(optim.decay_mask(params))}
    kernels = [f"{tower}/encoder/blocks/{layer}/kernel" for tower in ("image", "text")
               for layer in ("attn/qkv", "attn/out", "mlp/fc1", "mlp/fc2")]
    want = sorted(kernels + [f"image/stem/{i}/kernel" for i in range(4)] + ["image/patch/kernel",
                                                                             "text/token/embedding"])
    assert sorted(name for name, on in mask.items() if on) == want
    assert len(mask) == 2 * (12 + 2) + 4 * 2 + 2 + 1 + 1 + 1   # blocks + norm, stem, patch, pos, embedding, pos
