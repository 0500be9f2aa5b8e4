"""Hugging Face CLIPModel / SiglipModel in and out, against transformers' own torch models.

Random weights at small shapes (width 64, 2 layers, 32 px); every tensor perturbed so that a wrong
mapping of any one shows. The reference is transformers (installed by `make test`'s [interop] extra),
never jaxclr's own inverse mapping.
"""
import json
import pathlib
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax  # noqa: E402

import jaxclr  # noqa: E402
from jaxclr import config as configlib  # noqa: E402
from jaxclr.pretrained import export_hf, import_run, sources  # noqa: E402

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures"
TOKENIZER = FIXTURES / "clip_bpe"
TOL = 2e-6   # the issue asks <= 2e-5; measured <= 2.6e-7 (docs/pretrained.md)
OPENAI_MEAN, OPENAI_STD = sources.OPENAI_MEAN, sources.OPENAI_STD


def perturb(model, seed):
    """Every parameter random: weights ~ N(0, 0.05), LayerNorm scales ~ 1 + N(0, 0.1), biases nonzero."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * noise)
            elif name.endswith("logit_scale"):
                p.fill_(float(np.log(20.0)))
            elif name.endswith("logit_bias"):
                p.fill_(-3.0)
            else:
                p.copy_(0.05 * noise)
    return model


def vocab_size():
    return len(json.loads((TOKENIZER / "vocab.json").read_text()))


def make_clip(directory, eos_token_id):
    tok = transformers.CLIPTokenizerFast.from_pretrained(str(TOKENIZER / "hf"))
    block = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                 hidden_act="quick_gelu", layer_norm_eps=1e-5)
    config = transformers.CLIPConfig(
        text_config=dict(block, vocab_size=vocab_size(), max_position_embeddings=16, eos_token_id=eos_token_id,
                         bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id),
        vision_config=dict(block, image_size=32, patch_size=8), projection_dim=32)
    model = perturb(transformers.CLIPModel(config).eval(), 0)
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return model, tok


def make_siglip(directory):
    block = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                 hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)
    config = transformers.SiglipConfig(text_config=dict(block, vocab_size=1000, max_position_embeddings=16),
                                       vision_config=dict(block, image_size=32, patch_size=8))
    model = perturb(transformers.SiglipModel(config).eval(), 1)
    model.save_pretrained(directory)
    return model


def images(n=4, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), np.uint8)


def pixel_values(x, mean, std):
    x = (x.astype(np.float32) / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(x.transpose(0, 3, 1, 2).copy())


def reference(model, ids, imgs, mean, std):
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids.astype(np.int64)), pixel_values=pixel_values(imgs, mean, std))
    return out.image_embeds.numpy(), out.text_embeds.numpy()


CAPTIONS = ["a photo of a red circle", "Two BLUE squares, left of a triangle!", "x", "an émigré's café &amp; bar"]


@pytest.fixture(scope="module")
def clip_dirs(tmp_path_factory):
    """{pool: (HF directory, torch model, token ids)} for eos_token_id = the tokenizer's end id ('eos')
    and 2 (transformers' legacy rule: the largest id, 'argmax')."""
    out = {}
    for pool in ("eos", "argmax"):
        directory = tmp_path_factory.mktemp(f"hf_clip_{pool}")
        tok = transformers.CLIPTokenizerFast.from_pretrained(str(TOKENIZER / "hf"))
        model, tok = make_clip(directory, tok.eos_token_id if pool == "eos" else 2)
        ids = tok(CAPTIONS, padding="max_length", max_length=16, truncation=True, return_tensors="np")["input_ids"]
        assert (ids[:, -1] == tok.pad_token_id).sum() >= 2   # padding after the end token
        out[pool] = (directory, model, ids)
    return out


@pytest.mark.parametrize("pool", ["eos", "argmax"])
@pytest.mark.parametrize("scan", [False, True])
def test_imported_hf_clip_gives_transformers_embeddings(clip_dirs, tmp_path, pool, scan):
    directory, model, ids = clip_dirs[pool]
    run = import_run.write(sources.read(str(directory)), str(tmp_path / "run"), scan_layers=scan)
    loaded = jaxclr.load(run)
    assert loaded.config.model.text.pool == pool and loaded.config.model.scan_layers == scan
    ref_img, ref_txt = reference(model, ids, images(), OPENAI_MEAN, OPENAI_STD)
    np.testing.assert_allclose(loaded.encode_image(images()), ref_img, atol=TOL, rtol=0)
    np.testing.assert_allclose(loaded.encode_text(ids), ref_txt, atol=TOL, rtol=0)
    np.testing.assert_array_equal(loaded.tokenize(CAPTIONS)[:, :16], ids)   # the tokenizer travelled with the run
    np.testing.assert_allclose(loaded.encode_text(CAPTIONS)[:, :], loaded.encode_text(loaded.tokenize(CAPTIONS)))
    assert loaded.logit_scale == pytest.approx(float(model.logit_scale.detach().exp()), rel=1e-6)
    assert loaded.logit_bias == 0.0


@pytest.mark.parametrize("scan", [False, True])
def test_imported_hf_siglip_gives_transformers_embeddings(tmp_path, scan):
    model = make_siglip(tmp_path / "hf")
    ids = np.random.default_rng(3).integers(2, 1000, (4, 16))
    ids[0, 5:] = 1   # padding after the end: SigLIP reads the last position, unmasked
    ids[1, 9:] = 1
    run = import_run.write(sources.read(str(tmp_path / "hf")), str(tmp_path / "run"), scan_layers=scan)
    loaded = jaxclr.load(run)
    ref_img, ref_txt = reference(model, ids, images(), (0.5,) * 3, (0.5,) * 3)
    np.testing.assert_allclose(loaded.encode_image(images()), ref_img, atol=TOL, rtol=0)
    np.testing.assert_allclose(loaded.encode_text(ids), ref_txt, atol=TOL, rtol=0)
    assert loaded.logit_scale == pytest.approx(20.0, rel=1e-6) and loaded.logit_bias == -3.0
    # export -> import is the identity, and the export loads in SiglipModel with the same embeddings
    out = export_hf.export(loaded.config, loaded.params, str(tmp_path / "exported"))
    again = transformers.SiglipModel.from_pretrained(out).eval()
    exp_img, exp_txt = reference(again, ids, images(), (0.5,) * 3, (0.5,) * 3)
    np.testing.assert_array_equal(exp_img, ref_img)
    np.testing.assert_array_equal(exp_txt, ref_txt)


def test_export_then_import_is_bit_exact(clip_dirs, tmp_path):
    directory, _, _ = clip_dirs["eos"]
    first = sources.read(str(directory))
    loaded = jaxclr.load(str(directory))
    out = export_hf.export(loaded.config, loaded.params, str(tmp_path / "exported"))
    second = sources.read(out)
    assert sorted(first.params) == sorted(second.params)
    for name, value in first.params.items():
        np.testing.assert_array_equal(second.params[name], value, err_msg=name)
    assert first.overrides == second.overrides


DAMAGE = {
    "missing": (lambda t: t.pop("vision_model.post_layernorm.bias"),
                "hf_clip: tensor 'vision_model.post_layernorm.bias': found nothing (missing), expected shape (64,)"),
    "wrong shape": (lambda t: t.update({"text_projection.weight": t["text_projection.weight"][:, :10]}),
                    "hf_clip: tensor 'text_projection.weight': found shape (32, 10), expected shape (32, 64)"),
    "unexpected": (lambda t: t.update({"text_model.extra.weight": np.zeros((2, 3), np.float32)}),
                   "hf_clip: tensor 'text_model.extra.weight': found shape (2, 3), expected nothing"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_missing_unexpected_or_wrong_shape_tensor_is_one_line_and_writes_nothing(clip_dirs, tmp_path, damage):
    from safetensors.numpy import load_file, save_file
    directory, _, _ = clip_dirs["eos"]
    broken = tmp_path / "broken"
    shutil.copytree(directory, broken)
    tensors = load_file(str(broken / "model.safetensors"))
    change, message = DAMAGE[damage]
    change(tensors)
    save_file(tensors, str(broken / "model.safetensors"))
    with pytest.raises(sources.CheckpointError) as e:
        import_run.write(sources.read(str(broken)), str(tmp_path / "run"))
    assert "\n" not in str(e.value) and str(e.value).startswith(message)
    assert not (tmp_path / "run").exists()


def test_a_run_trained_here_exports_to_clipmodel(data_dir, tmp_path):
    """configs/clip.py:tiny_hf trained for 3 steps, exported, loaded by CLIPModel: the same embeddings."""
    from jaxclr import train
    config = configlib.load("configs/clip.py:tiny_hf")
    config.data.update(data_dir=data_dir, num_train=64, num_test=64, eval_examples=64, image_size=32,
                       tokenizer_model=str(TOKENIZER))
    config.model.image.update(patch_size=8, width=64, depth=2, heads=2)
    config.model.text.update(width=64, depth=2, heads=2)
    config.model.embed_dim = 32
    config.train.update(batch_size=16, total_steps=3, log_every=1)
    config.checkpoint.every = 3
    config.eval.every = 0
    config.eval.evaluators = ()
    workdir = str(tmp_path / "run")
    train.train(config, workdir)
    loaded = jaxclr.load(workdir)
    assert loaded.tokenizer.eos_id != 2
    out = export_hf.export(loaded.config, loaded.params, str(tmp_path / "exported"))
    hf_model = transformers.CLIPModel.from_pretrained(out).eval()
    tok = transformers.CLIPTokenizerFast.from_pretrained(out)
    ids = tok(CAPTIONS, padding="max_length", max_length=int(config.data.max_len), truncation=True,
              return_tensors="np")["input_ids"]
    np.testing.assert_array_equal(ids, loaded.tokenize(CAPTIONS))
    ref_img, ref_txt = reference(hf_model, ids, images(), (0.5,) * 3, (0.5,) * 3)
    np.testing.assert_allclose(loaded.encode_image(images()), ref_img, atol=TOL, rtol=0)
    np.testing.assert_allclose(loaded.encode_text(CAPTIONS), ref_txt, atol=TOL, rtol=0)
    processor = json.loads((pathlib.Path(out) / "preprocessor_config.json").read_text())
    assert processor["image_mean"] == [0.5, 0.5, 0.5] and processor["crop_size"]["height"] == 32
    assert processor["do_center_crop"] and processor["resample"] == 2   # crop_bilinear, the tiny presets' resize


def test_an_option_clipmodel_cannot_express_is_one_line(tmp_path):
    config = configlib.load("configs/clip.py:tiny")   # a conv stem and a patch bias
    with pytest.raises(export_hf.ExportError, match=r"^model\.image\.pool='mean' cannot be exported"):
        export_hf.check(config)
    config.model.image.pool = "tok"
    with pytest.raises(export_hf.ExportError, match="model.image.ln_pre=False"):
        export_hf.check(config)
    assert jax.devices()   # the check needs no params
