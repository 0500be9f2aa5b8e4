"""configs/m2mix.py:openai_b32_ft fine-tunes an imported OpenAI-layout model: 3 steps on the embedded
data, from a randomly initialised model imported with its tokenizer (train.init_from = the run)."""
import json
import pathlib

import numpy as np
import pytest

import jaxclr
from jaxclr import config as configlib
from jaxclr.pretrained import import_run, sources

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures"


@pytest.mark.slow
def test_m2mix_finetunes_an_imported_openai_model(data_dir, tmp_path):
    from safetensors.numpy import load_file, save_file

    from jaxclr import train
    tensors = load_file(str(FIXTURES / "pretrained" / "openai_clip.safetensors"))
    rows = len(json.loads((FIXTURES / "clip_bpe" / "vocab.json").read_text()))   # the fixture tokenizer's ids
    tensors["token_embedding.weight"] = np.random.default_rng(0).normal(0, 0.3, (rows, 64)).astype(np.float32)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    imported = sources.read(str(tmp_path / "model.safetensors"), tokenizer=str(FIXTURES / "clip_bpe"),
                            heads=2, text_heads=2)
    source = import_run.write(imported, str(tmp_path / "imported"))

    config = configlib.load("configs/m2mix.py:openai_b32_ft")
    saved = jaxclr.load(source).config   # the imported architecture; the preset brings the objective and optimiser
    config.model.update(embed_dim=saved.model.embed_dim, dtype="float32")
    for tower in ("image", "text"):
        config.model[tower].update({k: saved.model[tower][k] for k in ("width", "depth", "heads", "patch_size")})
    config.model.text.vocab_size = saved.model.text.vocab_size
    config.data.update(name="jaxclr_shapes", caption_feature="caption", eval_split="test", data_dir=data_dir,
                       num_train=64, num_test=64, eval_examples=64, image_size=32, max_len=16,
                       tokenizer_model=str(pathlib.Path(source) / "tokenizer"))
    config.train.update(batch_size=16, total_steps=3, log_every=1, init_from=source)
    config.checkpoint.every = 3
    config.eval.update(every=0, evaluators=(), retrieval_datasets=())
    workdir = str(tmp_path / "ft")
    train.train(config, workdir)
    metrics = [json.loads(line) for line in open(pathlib.Path(workdir) / "metrics.jsonl")]
    losses = [m["loss/m2mix"] for m in metrics if "loss/m2mix" in m]
    assert len(losses) == 3 and np.all(np.isfinite(losses))
    start, tuned = jaxclr.load(source), jaxclr.load(workdir)
    assert tuned.config.loss.terms.m2mix == 0.01 and tuned.config.data.tokenizer == "clip_bpe"
    images = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), np.uint8)
    moved = np.abs(start.encode_image(images) - tuned.encode_image(images)).max()
    assert 0 < moved < 0.1   # fine-tuned from the imported weights at lr 1e-5, not from scratch
