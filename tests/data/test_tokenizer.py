"""Tokenizers chosen by config: cleaning, SentencePiece framing/truncation/unk, from_config, pickling,
the model's vocabulary following the tokenizer, the pipeline wiring and the train-tokenizer CLI."""
import itertools
import os
import pickle
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
import sentencepiece as spm

from jaxclr import config as configlib
from jaxclr import parallel
from jaxclr.data import eval_stream, pipeline
from jaxclr.data.text import from_config, tokenizer
from jaxclr.data.text import sentencepiece as sp
from jaxclr.data.text import train as train_tokenizer
from jaxclr.evals import tasks
from jaxclr.trainer import state as state_lib
from tests.helpers import REPO_ROOT, tiny_run_config

COLOURS = ("red", "green", "blue", "yellow")
SHAPES = ("circle", "square", "triangle")
# 24 distinct captions, 12 times each (288): every word becomes one BPE piece at vocab 80 (not yet at 64).
CAPTIONS = [f"a {c} {s} on the {side}" for c, s, side in itertools.product(COLOURS, SHAPES, ("left", "right"))] * 12


def data_cfg(**values):
    cfg = configlib.load("configs/clip.py:tiny").data
    cfg.update(values)
    return cfg


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("sp") / "captions.model"
    path.write_bytes(sp.train_model(CAPTIONS, 80))   # ~10 ms
    return str(path)


@pytest.fixture(scope="module")
def tok(model_path):
    return sp.SentencePieceTokenizer(model_path)


def test_clean_is_nfkc_whitespace_collapse_and_optional_lowercase():
    assert tokenizer.clean("  A\u00a0Red\t\tCIRCLE \n") == "A Red CIRCLE"
    assert tokenizer.clean("\ufb01ve \uff32ed") == "five Red"              # NFKC: ligature, full-width letter
    assert tokenizer.clean("  A\u00a0Red\tCIRCLE ", lowercase=True) == "a red circle"
    assert tokenizer.clean(b"caf\xc3\xa9") == "caf\u00e9"


def test_byte_tokenizer_cleans_and_lowercases_by_config():
    text = " A  Red\u00a0circle "
    plain = from_config(data_cfg()).encode(text, 16)
    np.testing.assert_array_equal(plain, [1, *(np.frombuffer(b"A Red circle", np.uint8) + 3), 2, 0, 0])
    lower = from_config(data_cfg(lowercase=True))
    np.testing.assert_array_equal(lower.encode(text, 16), tokenizer.encode("a red circle", 16))
    assert lower.decode(lower.encode(text, 16)) == "a red circle"


def test_sentencepiece_pieces_framing_and_padding(tok):
    assert tok.vocab_size == tok._sp.get_piece_size() <= 80
    words = [tok._sp.piece_to_id("\u2581" + w) for w in ("a", "red", "circle")]
    assert min(words) > sp.UNK   # whole words, past the special ids
    ids = tok.encode("a  red\tcircle", 8)
    np.testing.assert_array_equal(ids, [tokenizer.BOS, *words, tokenizer.EOS, 0, 0, 0])
    for text in set(CAPTIONS):
        ids = tok.encode(text, 12)
        n = len(text.split())   # one piece per word
        assert ids.dtype == np.int32 and ids[0] == tokenizer.BOS and ids[n + 1] == tokenizer.EOS
        assert np.sum(ids == tokenizer.EOS) == 1 and np.all(ids[n + 2:] == tokenizer.PAD)
        assert tok.decode(ids) == text
    batch = tok.encode_batch(["a red circle", " a RED square "], 8)
    assert batch.shape == (2, 8) and batch.dtype == np.int32
    np.testing.assert_array_equal(batch[0], tok.encode("a red circle", 8))


def test_sentencepiece_truncation_keeps_eos_last(tok):
    text = "a red circle on the left"   # 6 pieces
    full, cut = tok.encode_checked(text, 8)
    assert not cut and full[7] == tokenizer.EOS
    ids, cut = tok.encode_checked(text, 7)   # one piece too many
    assert cut and ids[-1] == tokenizer.EOS and np.sum(ids == tokenizer.EOS) == 1
    np.testing.assert_array_equal(ids[:6], full[:6])
    assert tok.decode(ids) == "a red circle on the"
    with pytest.raises(ValueError, match="max_len must be >= 2"):
        tok.encode(text, 1)


def test_unknown_characters_are_unk_and_specials_never_appear_in_the_body(tok):
    ids = tok.encode("a red \u2603 circle", 10)
    assert np.sum(ids == sp.UNK) == 1 and "\u2047" in tok.decode(ids)
    body = tok.ids("</s> <pad> <s> a")   # the text of special pieces is plain text
    assert len(body) and np.all(body >= sp.UNK)


def test_from_config_picks_the_tokenizer(model_path):
    assert isinstance(from_config(data_cfg()), tokenizer.ByteTokenizer)
    assert from_config(data_cfg()).vocab_size == tokenizer.VOCAB_SIZE == 259
    tok = from_config(data_cfg(tokenizer="sentencepiece", tokenizer_model=model_path))
    assert isinstance(tok, sp.SentencePieceTokenizer) and tok.path == model_path
    assert tok.vocab_size == spm.SentencePieceProcessor(model_file=model_path).get_piece_size()
    lower = from_config(data_cfg(tokenizer="sentencepiece", tokenizer_model=model_path, lowercase=True))
    np.testing.assert_array_equal(lower.encode("A Red Circle", 8), tok.encode("a red circle", 8))
    assert sp.UNK in tok.encode("A Red Circle", 8)   # not lower-cased: 'A', 'R', 'C' were never seen


def test_unusable_models_give_one_line_naming_the_fix(tmp_path, model_path):
    missing = str(tmp_path / "nope.model")
    with pytest.raises(tokenizer.TokenizerError) as e:
        from_config(data_cfg(tokenizer="sentencepiece", tokenizer_model=missing))
    assert e.value.key == "data.tokenizer_model" and "\n" not in str(e.value)
    assert f"no SentencePiece model at {missing}" in str(e.value)
    assert f"python -m jaxclr.data.train_tokenizer --config=<this config> --vocab_size=8000 --output={missing}" \
        in str(e.value)
    garbage = tmp_path / "garbage.model"
    garbage.write_bytes(b"not a model")
    with pytest.raises(tokenizer.TokenizerError, match="is not a SentencePiece model"):
        sp.SentencePieceTokenizer(str(garbage))
    other = tmp_path / "default_ids.model"   # SentencePiece's own defaults: unk 0, bos 1, eos 2, no pad
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CAPTIONS), model_prefix=str(other)[:-6], vocab_size=40,
                                   hard_vocab_limit=False, minloglevel=2)
    with pytest.raises(tokenizer.TokenizerError, match=r"special ids pad -1, bos 1, eos 2, unk 0; jaxclr needs pad 0"):
        sp.SentencePieceTokenizer(str(other))


def test_tokenizer_pickles_as_its_path(tok):
    blob = pickle.dumps(tok)
    assert len(blob) < 300   # the path, not the model
    sp._processor.cache_clear()   # as in a fresh grain worker: reloaded from the path
    copy = pickle.loads(blob)
    assert copy.path == tok.path and copy.vocab_size == tok.vocab_size
    np.testing.assert_array_equal(copy.encode("a blue star", 8), tok.encode("a blue star", 8))
    transform = pickle.loads(pickle.dumps(pipeline.TrainTransform(False, 8, tok)))
    out = transform.random_map({"image": np.zeros((2, 2, 3), np.uint8), "caption": "a red circle"}, None)
    np.testing.assert_array_equal(out["text"], tok.encode("a red circle", 8))


def test_model_vocabulary_follows_the_tokenizer(model_path):
    mesh = parallel.make_mesh(ml_collections.ConfigDict({"data": -1, "fsdp": 1, "model": 1}))
    rows = {}
    for name, data in (("bytes", {}), ("sentencepiece", {"tokenizer_model": model_path})):
        config = configlib.load("configs/clip.py:tiny")
        config.data.update(tokenizer=name, **data)
        with jax.set_mesh(mesh):
            spec, _ = state_lib.spec(config, mesh)   # abstract: nothing allocated
        table = spec.abstract["params"]["text"]["token"]["embedding"]
        rows[name] = table.shape[0]
        assert table.shape[1] == config.model.text.width // config.model.text.patch_size
    assert rows == {"bytes": 259, "sentencepiece": from_config(config.data).vocab_size}
    assert rows["sentencepiece"] != 259


def test_trained_on_shapes_and_used_by_the_pipeline(data_dir, tmp_path):
    config = tiny_run_config(data_dir)
    with pytest.raises(ValueError, match="--vocab_size: 4 is too small"):
        train_tokenizer.train(config.data, 4, str(tmp_path / "x.model"))
    path = train_tokenizer.train(config.data, 128, str(tmp_path / "shapes.model"))
    config.data.update(tokenizer="sentencepiece", tokenizer_model=path, max_len=14)   # 8 to 21 pieces
    tok = from_config(config.data)
    stats = pipeline.ReadStats()
    captions = [c for batch in eval_stream.eval_split(config).batches(64) for cs in batch["captions"] for c in cs]
    text = np.stack([pipeline.tokenize(c, 14, tok, stats) for c in captions])   # what the train pipeline does
    np.testing.assert_array_equal(text, tasks.tokenize_fn(config.data)(captions))   # ... and the evals
    lengths = [len(tok.ids(c)) for c in captions]
    assert stats.truncated_captions == sum(n > 12 for n in lengths) > 0
    short = [c for c, n in zip(captions, lengths, strict=True) if n <= 12]
    assert short and all(tok.decode(tok.encode(c, 14)) == c for c in short)   # in-vocabulary round trip
    example = pipeline.train_order(config)(0)
    assert example["text"].shape == (14,) and np.sum(example["text"] == tokenizer.EOS) == 1
    assert sp.UNK not in example["text"]   # shapes words are all in vocabulary


@pytest.mark.slow
def test_cli_writes_the_default_model_that_from_config_loads(data_dir):
    overrides = [f"--config.data.{k}={v}" for k, v in
                 dict(data_dir=data_dir, num_train=64, num_test=64, image_size=32).items()]
    out = subprocess.run([sys.executable, "-m", "jaxclr.data.train_tokenizer", "--config=configs/clip.py:tiny",
                          *overrides, "--vocab_size=100"], cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    config = tiny_run_config(data_dir)
    config.data.tokenizer = "sentencepiece"
    default = sp.default_model_path(config.data)
    assert default == os.path.join(data_dir, "jaxclr_shapes", "tokenizer", "sentencepiece.model")
    assert f"wrote {default}" in out.stdout
    tok = from_config(config.data)
    assert tok.path == default and 4 < tok.vocab_size <= 100
    caption = next(eval_stream.eval_split(config).batches(1))["captions"][0][0]
    assert tok.decode(tok.encode(caption, 80)) == caption


def test_evaluators_tokenize_prompts_with_the_training_tokenizer(model_path, tok):
    """Zero-shot prompts and eval captions must get the ids training used (evals.tasks.tokenize_fn)."""
    cfg = data_cfg(tokenizer="sentencepiece", tokenizer_model=model_path)
    prompts = ["a red circle on the left", "a blue square"]
    np.testing.assert_array_equal(tasks.tokenize_fn(cfg)(prompts), tok.encode_batch(prompts, cfg.max_len))
    assert not np.array_equal(tasks.tokenize_fn(data_cfg())(prompts), tasks.tokenize_fn(cfg)(prompts))
