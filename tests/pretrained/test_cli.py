"""`python -m jaxclr.classify` and `python -m jaxclr.export` on an imported run, as a user runs them."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import jaxclr
from jaxclr.pretrained import import_run, sources

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures"
ROOT = pathlib.Path(__file__).resolve().parents[2]


def module(*args):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env=env)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The open_clip-made OpenAI-layout fixture with a token table for the fixture CLIP tokenizer."""
    from safetensors.numpy import load_file, save_file
    tmp = tmp_path_factory.mktemp("cli")
    tensors = load_file(str(FIXTURES / "pretrained" / "openai_clip.safetensors"))
    rows = len(json.loads((FIXTURES / "clip_bpe" / "vocab.json").read_text()))
    tensors["token_embedding.weight"] = np.random.default_rng(0).normal(0, 0.3, (rows, 64)).astype(np.float32)
    save_file(tensors, str(tmp / "model.safetensors"))
    imported = sources.read(str(tmp / "model.safetensors"), tokenizer=str(FIXTURES / "clip_bpe"), heads=2,
                            text_heads=2)
    return import_run.write(imported, str(tmp / "run"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    from sklearn.datasets import load_sample_images
    folder = tmp_path_factory.mktemp("photos")
    for i, image in enumerate(load_sample_images().images):
        Image.fromarray(image[40 * i: 40 * i + 150, 60: 260]).save(folder / f"photo{i}.png")   # 150 x 200
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_classify_prints_one_line_per_image_as_the_api_decides(run, photos):
    proc = module("jaxclr.classify", f"--workdir={run}", f"--images={photos}", "--classes=temple,flower,sea")
    assert proc.returncode == 0, proc.stderr
    lines = [line.split("\t") for line in proc.stdout.strip().splitlines()]
    assert [line[0] for line in lines] == ["photo0.png", "photo1.png"]
    model = jaxclr.load(run)
    images = np.stack([model.resize(np.asarray(Image.open(photos / n[0]))) for n in lines])
    probs = model.zero_shot(images, ["temple", "flower", "sea"])
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    assert [line[1] for line in lines] == [["temple", "flower", "sea"][i] for i in probs.argmax(1)]
    assert [float(line[2]) for line in lines] == pytest.approx(probs.max(1).tolist(), abs=1e-3)


def test_classify_and_export_bad_input_is_one_error_line(run, photos, tmp_path):
    proc = module("jaxclr.classify", f"--workdir={run}", f"--images={photos}", "--classes=temple")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: --classes='temple': name at least two classes, comma-separated"]
    proc = module("jaxclr.export", f"--workdir={run}", "--format=onnx", f"--out={tmp_path / 'x'}")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: --format='onnx': the only export format is 'hf' (a Hugging Face directory)"]
    assert not (tmp_path / "x").exists()


def test_export_cli_writes_a_directory_that_imports_back_bit_exactly(run, tmp_path):
    proc = module("jaxclr.export", f"--workdir={run}", "--format=hf", f"--out={tmp_path / 'hf'}")
    assert proc.returncode == 0, proc.stderr
    files = sorted(p.name for p in (tmp_path / "hf").iterdir())
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "vocab.json", "merges.txt"} <= set(files)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["text_config"]["eos_token_id"] == 2   # OpenAI's largest-id pooling, as transformers reads 2
    back = sources.read(str(tmp_path / "hf"))
    original = jaxclr.load(run)
    again = jaxclr.load(str(tmp_path / "hf"))
    ids = original.tokenize(["a red circle", "two squares"])
    np.testing.assert_array_equal(again.encode_text(ids), original.encode_text(ids))
    assert back.overrides["model.text.pool"] == "argmax"


def test_an_architecture_the_config_cannot_hold_is_one_source_error():
    """SigLIP So400m's MLP width (4304 for width 1152) is no integer model.image.mlp_ratio: refused
    with a line naming the key and value, not a traceback from ml_collections."""
    imported = sources.Imported(format="big_vision", kind="siglip", params={}, source="so400m.npz", tokenizer="",
                                overrides={"model.image.mlp_ratio": 4304 / 1152})
    with pytest.raises(sources.SourceError, match=r"so400m\.npz: model\.image\.mlp_ratio=3\.73.*not supported"):
        import_run.config_for(imported)
