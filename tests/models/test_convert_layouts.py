"""jaxclr.models.convert: the layout mappings alone (no model): every fixture tensor consumed, the
param paths and shapes of design18's tree, values moved where they belong, the config overrides,
and the one-line CheckpointError (a ValueError) for a missing / unexpected / wrong-shape tensor.

Fixtures: tests/fixtures/pretrained/ (made by open_clip with make_fixtures.py there).
"""
import ast
import json
import math
import os
import struct
import sys

import numpy as np
import pytest

from jaxclr.models.convert import CheckpointError, big_vision_siglip, openai_clip

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "pretrained")
W, P, IMAGE, VOCAB, CONTEXT = 64, 8, 32, 1000, 16


def read_safetensors(path):
    """The fixture's float32 tensors (a safetensors file: u64 header size, JSON header, raw data)."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", (name, info["dtype"])
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + a:8 + n + b], "<f4").reshape(info["shape"]).copy()
    return out


@pytest.fixture(scope="module")
def openai_tensors():
    return read_safetensors(os.path.join(FIXTURES, "openai_clip.safetensors"))


@pytest.fixture(scope="module")
def siglip_tensors():
    with np.load(os.path.join(FIXTURES, "big_vision_siglip.npz")) as z:
        return {k: z[k] for k in z.files}


def block_shapes(prefix, width, hidden):
    s = {"ln1/scale": (width,), "ln1/bias": (width,), "ln2/scale": (width,), "ln2/bias": (width,),
         "attn/qkv/kernel": (width, 3 * width), "attn/qkv/bias": (3 * width,),
         "attn/out/kernel": (width, width), "attn/out/bias": (width,),
         "mlp/fc1/kernel": (width, hidden), "mlp/fc1/bias": (hidden,),
         "mlp/fc2/kernel": (hidden, width), "mlp/fc2/bias": (width,)}
    return {f"{prefix}{k}": v for k, v in s.items()}


def encoder_shapes(tower, depth, width, hidden):
    s = {f"{tower}/encoder/norm/scale": (width,), f"{tower}/encoder/norm/bias": (width,)}
    for i in range(depth):
        s.update(block_shapes(f"{tower}/encoder/blocks/{i}/", width, hidden))
    return s


def check_one_line(excinfo, *parts):
    message = str(excinfo.value)
    assert isinstance(excinfo.value, ValueError)
    assert "\n" not in message, message
    for part in parts:
        assert part in message, (part, message)


# ---------------------------------------------------------------------------------------------- OpenAI CLIP

def test_openai_fixture_converts_to_design18_tree(openai_tensors):
    params, overrides = openai_clip.convert(openai_tensors, heads=2, text_heads=2)
    expected = {"image/patch/kernel": (P * P * 3, W), "image/cls_embedding": (1, 1, W),
                "image/pos_embedding": (1, (IMAGE // P) ** 2 + 1, W),
                "image/ln_pre/scale": (W,), "image/ln_pre/bias": (W,),
                "image_proj/kernel": (W, 32),
                "text/token/embedding": (VOCAB, W), "text/pos_embedding": (1, CONTEXT, W),
                "text_proj/kernel": (W, 32), "logit/log_scale": ()}
    expected.update(encoder_shapes("image", 2, W, 4 * W))
    expected.update(encoder_shapes("text", 2, W, 4 * W))
    assert {k: v.shape for k, v in params.items()} == expected
    assert all(v.dtype == np.float32 and v.flags.c_contiguous for v in params.values())
    # every fixture value lands somewhere (and no param is invented)
    assert sum(v.size for v in params.values()) == sum(v.size for v in openai_tensors.values())


def test_openai_overrides(openai_tensors):
    _, o = openai_clip.convert(openai_tensors, heads=2, text_heads=2)
    assert o["model.embed_dim"] == 32 and o["data.image_size"] == IMAGE and o["data.max_len"] == CONTEXT
    assert {k: o[f"model.image.{k}"] for k in ("patch_size", "width", "depth", "heads", "mlp_ratio", "pool",
                                               "ln_pre", "patch_bias", "act", "ln_eps", "proj", "stem")} == dict(
        patch_size=P, width=W, depth=2, heads=2, mlp_ratio=4, pool="tok", ln_pre=True, patch_bias=False,
        act="quick_gelu", ln_eps=1e-5, proj="linear", stem=())
    assert o["model.image.pixel_mean"] == (0.48145466, 0.4578275, 0.40821073)
    assert o["model.image.pixel_std"] == (0.26862954, 0.26130258, 0.27577711)
    assert {k: o[f"model.text.{k}"] for k in ("width", "depth", "heads", "mlp_ratio", "max_len", "causal", "pool",
                                              "act", "ln_eps", "proj", "patch_size", "vocab_size")} == dict(
        width=W, depth=2, heads=2, mlp_ratio=4, max_len=CONTEXT, causal=True, pool="argmax", act="quick_gelu",
        ln_eps=1e-5, proj="linear", patch_size=1, vocab_size=VOCAB)
    assert o["model.learn_bias"] is False
    ref = np.load(os.path.join(FIXTURES, "openai_clip_ref.npz"))
    assert o["model.init_scale"] == pytest.approx(float(ref["logit_scale"]), rel=1e-6)
    assert o["model.init_scale"] == pytest.approx(math.exp(float(openai_tensors["logit_scale"])))
    assert o["model.max_scale"] >= o["model.init_scale"]


def test_openai_values_moved(openai_tensors):
    t = openai_tensors
    params, _ = openai_clip.convert(t, heads=2, text_heads=2)
    conv = t["visual.conv1.weight"]   # [W, 3, p, p]
    kernel = params["image/patch/kernel"]
    for w, c, py, px in [(0, 0, 0, 0), (5, 2, 3, 7), (63, 1, 7, 2)]:
        assert kernel[(py * P + px) * 3 + c, w] == conv[w, c, py, px]
    np.testing.assert_array_equal(params["image/encoder/blocks/1/attn/qkv/kernel"],
                                  t["visual.transformer.resblocks.1.attn.in_proj_weight"].T)
    np.testing.assert_array_equal(params["text/encoder/blocks/0/mlp/fc2/kernel"],
                                  t["transformer.resblocks.0.mlp.c_proj.weight"].T)
    np.testing.assert_array_equal(params["image/encoder/norm/scale"], t["visual.ln_post.weight"])
    np.testing.assert_array_equal(params["text/encoder/norm/bias"], t["ln_final.bias"])
    np.testing.assert_array_equal(params["image_proj/kernel"], t["visual.proj"])
    np.testing.assert_array_equal(params["text/pos_embedding"][0], t["positional_embedding"])
    assert params["logit/log_scale"] == t["logit_scale"]


def test_openai_heads_default_to_width_over_64(openai_tensors):
    _, o = openai_clip.convert(openai_tensors)
    assert o["model.image.heads"] == 1 and o["model.text.heads"] == 1
    with pytest.raises(ValueError, match="heads"):
        openai_clip.convert(openai_tensors, heads=3)


def test_openai_accepts_the_pt_files_int_entries_and_a_1d_logit_scale(openai_tensors):
    t = dict(openai_tensors, input_resolution=np.asarray(IMAGE), context_length=np.asarray(CONTEXT),
             vocab_size=np.asarray(VOCAB), logit_scale=openai_tensors["logit_scale"].reshape(1))
    params, _ = openai_clip.convert(t, heads=2, text_heads=2)
    assert params["logit/log_scale"].shape == ()
    with pytest.raises(CheckpointError) as e:
        openai_clip.convert(dict(t, context_length=np.asarray(77)), heads=2, text_heads=2)
    check_one_line(e, "'context_length'", "77", "16")


def test_openai_missing_tensor(openai_tensors):
    t = dict(openai_tensors)
    del t["visual.transformer.resblocks.1.attn.out_proj.bias"]
    with pytest.raises(CheckpointError) as e:
        openai_clip.convert(t, heads=2, text_heads=2)
    check_one_line(e, "'visual.transformer.resblocks.1.attn.out_proj.bias'", "missing", "(64,)")


def test_openai_unexpected_tensor(openai_tensors):
    t = dict(openai_tensors, **{"visual.transformer.resblocks.0.ls_1.gamma": np.ones(W, np.float32)})
    with pytest.raises(CheckpointError) as e:
        openai_clip.convert(t, heads=2, text_heads=2)
    check_one_line(e, "'visual.transformer.resblocks.0.ls_1.gamma'", "(64,)", "not part of the openai_clip layout")


def test_openai_wrong_shape(openai_tensors):
    t = dict(openai_tensors, **{"ln_final.weight": np.ones(W - 1, np.float32)})
    with pytest.raises(CheckpointError) as e:
        openai_clip.convert(t, heads=2, text_heads=2)
    check_one_line(e, "'ln_final.weight'", "found shape (63,)", "expected shape (64,)")
    t = dict(openai_tensors, **{"visual.proj": openai_tensors["visual.proj"].T})
    with pytest.raises(CheckpointError) as e:   # a transposed projection: the image/text embed dims disagree
        openai_clip.convert(t, heads=2, text_heads=2)
    check_one_line(e, "'visual.proj'", "found shape (32, 64)", "expected shape [64, embed_dim]")


def test_openai_rejects_a_resnet_tower(openai_tensors):
    t = dict(openai_tensors, **{"visual.layer1.0.conv1.weight": np.zeros((64, 64, 1, 1), np.float32)})
    with pytest.raises(CheckpointError) as e:
        openai_clip.convert(t)
    check_one_line(e, "'visual.layer1.0.conv1.weight'", "(64, 64, 1, 1)", "ResNet")


# ---------------------------------------------------------------------------------------------- big_vision SigLIP

def siglip_expected_shapes():
    hidden = 4 * W
    s = {"image/patch/kernel": (P * P * 3, W), "image/patch/bias": (W,),
         "image/pos_embedding": (1, (IMAGE // P) ** 2, W),
         "image/map_head/probe": (1, 1, W), "image/map_head/q/kernel": (W, W), "image/map_head/q/bias": (W,),
         "image/map_head/kv/kernel": (W, 2 * W), "image/map_head/kv/bias": (2 * W,),
         "image/map_head/out/kernel": (W, W), "image/map_head/out/bias": (W,),
         "image/map_head/norm/scale": (W,), "image/map_head/norm/bias": (W,),
         "image/map_head/mlp/fc1/kernel": (W, hidden), "image/map_head/mlp/fc1/bias": (hidden,),
         "image/map_head/mlp/fc2/kernel": (hidden, W), "image/map_head/mlp/fc2/bias": (W,),
         "text/token/embedding": (VOCAB, W), "text/pos_embedding": (1, CONTEXT, W),
         "text_proj/kernel": (W, W), "text_proj/bias": (W,), "logit/log_scale": (), "logit/bias": ()}
    s.update(encoder_shapes("image", 2, W, hidden))
    s.update(encoder_shapes("text", 2, W, hidden))
    return s


def scanned(tensors):
    """The same checkpoint as big_vision writes it with scan=True: one 'encoderblock/' per tower,
    stacked on a leading layer axis."""
    out, stacks = {}, {}
    for name, value in tensors.items():
        for enc in ("Transformer/", "Encoder_0/"):
            head, sep, rest = name.partition(f"{enc}encoderblock_")
            if sep:
                i, rel = rest.split("/", 1)
                stacks.setdefault(f"{head}{enc}encoderblock/{rel}", {})[int(i)] = value
                break
        else:
            out[name] = value
    for name, by_layer in stacks.items():
        out[name] = np.stack([by_layer[i] for i in range(len(by_layer))])
    return out


def test_siglip_fixture_converts_to_design18_tree(siglip_tensors):
    params, _ = big_vision_siglip.convert(siglip_tensors)
    assert {k: v.shape for k, v in params.items()} == siglip_expected_shapes()
    assert all(v.dtype == np.float32 and v.flags.c_contiguous for v in params.values())
    assert sum(v.size for v in params.values()) == sum(v.size for v in siglip_tensors.values())


def test_siglip_overrides(siglip_tensors):
    _, o = big_vision_siglip.convert(siglip_tensors)
    assert o["model.embed_dim"] == W and o["data.image_size"] == IMAGE and o["data.max_len"] == CONTEXT
    assert {k: o[f"model.image.{k}"] for k in ("patch_size", "width", "depth", "heads", "mlp_ratio", "pool",
                                               "ln_pre", "patch_bias", "act", "ln_eps", "proj", "stem",
                                               "pixel_mean", "pixel_std")} == dict(
        patch_size=P, width=W, depth=2, heads=2, mlp_ratio=4, pool="map", ln_pre=False, patch_bias=True,
        act="gelu_tanh", ln_eps=1e-6, proj="none", stem=(), pixel_mean=(0.5,) * 3, pixel_std=(0.5,) * 3)
    assert {k: o[f"model.text.{k}"] for k in ("width", "depth", "heads", "mlp_ratio", "max_len", "causal", "pool",
                                              "act", "ln_eps", "proj", "patch_size", "vocab_size")} == dict(
        width=W, depth=2, heads=2, mlp_ratio=4, max_len=CONTEXT, causal=False, pool="last", act="gelu_tanh",
        ln_eps=1e-6, proj="affine", patch_size=1, vocab_size=VOCAB)
    ref = np.load(os.path.join(FIXTURES, "big_vision_siglip_ref.npz"))
    assert o["model.learn_bias"] is True
    assert o["model.init_scale"] == pytest.approx(float(ref["logit_scale"]), rel=1e-6)
    assert o["model.init_bias"] == pytest.approx(float(ref["logit_bias"]))
    assert o["model.max_scale"] >= o["model.init_scale"]


def test_siglip_values_moved(siglip_tensors):
    t = siglip_tensors
    params, _ = big_vision_siglip.convert(t)
    emb = t["params/img/embedding/kernel"]   # [p, p, 3, W]
    kernel = params["image/patch/kernel"]
    for w, c, py, px in [(0, 0, 0, 0), (5, 2, 3, 7), (63, 1, 7, 2)]:
        assert kernel[(py * P + px) * 3 + c, w] == emb[py, px, c, w]
    mha = "params/img/Transformer/encoderblock_1/MultiHeadDotProductAttention_0/"
    qkv = params["image/encoder/blocks/1/attn/qkv/kernel"]
    for j, n in enumerate(("query", "key", "value")):
        k = t[f"{mha}{n}/kernel"]   # [W, heads, head_dim]
        assert qkv[7, j * W + 1 * (W // 2) + 3] == k[7, 1, 3]   # column = head * head_dim + d
    assert params["image/encoder/blocks/1/attn/out/kernel"][1 * (W // 2) + 5, 9] == t[f"{mha}out/kernel"][1, 5, 9]
    head = "params/img/MAPHead_0/MultiHeadDotProductAttention_0/"
    np.testing.assert_array_equal(params["image/map_head/kv/kernel"][:, :W], t[f"{head}key/kernel"].reshape(W, W))
    np.testing.assert_array_equal(params["image/map_head/kv/kernel"][:, W:], t[f"{head}value/kernel"].reshape(W, W))
    np.testing.assert_array_equal(params["image/map_head/kv/bias"][W:], t[f"{head}value/bias"].reshape(W))
    np.testing.assert_array_equal(params["text/encoder/blocks/0/mlp/fc1/kernel"],
                                  t["params/txt/Encoder_0/encoderblock_0/MlpBlock_0/Dense_0/kernel"])
    np.testing.assert_array_equal(params["text/encoder/norm/scale"], t["params/txt/Encoder_0/encoder_norm/scale"])
    np.testing.assert_array_equal(params["text_proj/bias"], t["params/txt/head/bias"])
    assert params["logit/log_scale"] == t["params/t"][0] and params["logit/bias"] == t["params/b"][0]


def test_siglip_scanned_and_bare_layouts_give_the_same_params(siglip_tensors):
    params, overrides = big_vision_siglip.convert(siglip_tensors)
    scan = scanned(siglip_tensors)
    assert "params/img/Transformer/encoderblock/LayerNorm_0/scale" in scan
    assert not any("encoderblock_" in k for k in scan)
    bare = {k[len("params/"):]: v for k, v in siglip_tensors.items()}
    for variant in (scan, bare, {k[len("params/"):]: v for k, v in scan.items()}):
        p2, o2 = big_vision_siglip.convert(variant)
        assert o2 == overrides
        assert p2.keys() == params.keys()
        for k in params:
            np.testing.assert_array_equal(p2[k], params[k], err_msg=k)


def test_siglip_heads_argument_must_agree(siglip_tensors):
    _, o = big_vision_siglip.convert(siglip_tensors, heads=2, text_heads=2)
    assert o["model.image.heads"] == 2
    with pytest.raises(CheckpointError) as e:
        big_vision_siglip.convert(siglip_tensors, text_heads=4)
    check_one_line(e, "'params/txt/Encoder_0/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel'",
                   "(64, 2, 32)", "heads=4")


def test_siglip_missing_tensor(siglip_tensors):
    for name, expected in [("params/img/MAPHead_0/probe", "(1, 1, 64)"),
                           ("params/txt/Encoder_0/encoderblock_1/LayerNorm_1/bias", "(64,)"),
                           ("params/b", "()")]:
        t = dict(siglip_tensors)
        del t[name]
        with pytest.raises(CheckpointError) as e:
            big_vision_siglip.convert(t)
        check_one_line(e, repr(name), "missing", expected)
    t = scanned(siglip_tensors)
    del t["params/img/Transformer/encoderblock/MlpBlock_0/Dense_1/bias"]
    with pytest.raises(CheckpointError) as e:
        big_vision_siglip.convert(t)
    check_one_line(e, "'params/img/Transformer/encoderblock/MlpBlock_0/Dense_1/bias'", "missing", "(2, 64)")


def test_siglip_unexpected_tensor(siglip_tensors):
    for name in ("params/img/head/kernel", "params/img/cls", "opt/state/mu"):
        t = dict(siglip_tensors, **{name: np.zeros((3, 5), np.float32)})
        with pytest.raises(CheckpointError) as e:
            big_vision_siglip.convert(t)
        check_one_line(e, repr(name), "(3, 5)", "not part of the big_vision_siglip layout")


def test_siglip_wrong_shape(siglip_tensors):
    name = "params/img/MAPHead_0/MultiHeadDotProductAttention_0/key/kernel"
    t = dict(siglip_tensors, **{name: np.zeros((W, 4, 16), np.float32)})   # heads unlike the blocks'
    with pytest.raises(CheckpointError) as e:
        big_vision_siglip.convert(t)
    check_one_line(e, repr(name), "found shape (64, 4, 16)", "expected shape (64, 2, 32)")
    t = dict(siglip_tensors, **{"params/txt/head/kernel": np.zeros((W, 32), np.float32)})
    with pytest.raises(CheckpointError) as e:   # the text head must map to the image width
        big_vision_siglip.convert(t)
    check_one_line(e, "'params/txt/head/kernel'", "found shape (64, 32)", "expected shape (64, 64)")
    t = scanned(siglip_tensors)
    name = "params/txt/Encoder_0/encoderblock/LayerNorm_0/bias"
    t[name] = t[name][:1]   # one layer where the stack has two
    with pytest.raises(CheckpointError) as e:
        big_vision_siglip.convert(t)
    check_one_line(e, repr(name), "found shape (1, 64)", "expected shape (2, 64)")


# ---------------------------------------------------------------------------------------------- the package

def test_converters_import_numpy_only():
    """Every module of jaxclr.models.convert imports numpy, the standard library and its own package
    only (no torch, no jax)."""
    folder = os.path.dirname(openai_clip.__file__)
    allowed = {"numpy"} | set(sys.stdlib_module_names)
    for file in sorted(os.listdir(folder)):
        if not file.endswith(".py"):
            continue
        tree = ast.parse(open(os.path.join(folder, file)).read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed or name == "jaxclr.models.convert", (file, name)
