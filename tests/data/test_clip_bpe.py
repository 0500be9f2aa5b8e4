"""Released models' tokenizers: clip_bpe (ids equal transformers' CLIPTokenizerFast on the fixture
vocabulary, through both load paths; special ids and pad from the files; from_config errors) and siglip
(a tiny T5-style SentencePiece model: own ids, no BOS, sticky EOS, padded with EOS; equal to
transformers' SiglipTokenizer on text it leaves unchanged)."""
import io
import itertools
import json
import os
import pickle
import random
import shutil

import numpy as np
import pytest
import sentencepiece as spm

from jaxclr import config as configlib
from jaxclr.data.text import from_config, tokenizer
from jaxclr.data.text import sentencepiece as sp
from jaxclr.evals import classnames, prompts
from tests.helpers import REPO_ROOT

pytest.importorskip("tokenizers")
from jaxclr.data.text import clip_bpe  # noqa: E402

FIXTURE = os.path.join(REPO_ROOT, "tests", "fixtures", "clip_bpe")
HF_DIR = os.path.join(FIXTURE, "hf")   # tokenizer.json written by transformers
LONG = " ".join(classnames.IMAGENET[:60])   # ~150 tokens: past 77

HAND = [
    "a photo of a cat.", "A Photo Of A CAT!", "A DOG'S LIFE", "it's they're we've I'm you'll he'd don't",
    "IT'S THEY'RE", "it’s “curly” ‘quotes’", "y'all'd've", "'s 't 're", "rock 'n' roll", "'''quoted'''",
    "café crème brûlée", "cafe\u0301 (combining accent, NFC makes it é)", "Zürich STRASSE Straße ß",
    "naïve façade jalapeño", "ÆØÅ æøå Œuvre", "東京の猫", "北京烤鸭 很好吃", "서울의 고양이", "漢字かなカナ",
    "Москва и Ελλάδα", "العربية हिन्दी ไทย", "emoji 😀🐱🐶", "❤️ 👍🏽 🇫🇷 👨‍👩‍👧", "☕☕☕ coffee",
    "tabs\tand\ttabs", "new\nlines\n\nand\r\nreturns", "nbsp\u00a0between\u00a0words", "ideographic\u3000space",
    "\u2028line separator\u2029para", "   leading and trailing   ", "\t\n \u00a0", "", " ", "x",
    "&amp; &quot;quoted&quot; &lt;b&gt;bold&lt;/b&gt; &#39;apos&#39; &#x27;hex&#x27;", "fish &amp;amp; chips",
    "<b>html</b> <br/>", "punctuation!!! ??? ... ,,, ;;; :-) (^_^) [x] {y} <z>", "a--b__c..d//e\\f|g~h`i",
    "@user #hashtag $100 50% 3*4=12 a+b", "numbers 0 1 12 123 1234 3.14159 1,000,000 2024-01-31",
    "1st 2nd 3rd 4th 10x 4k 1080p", "ⅷ ½ ² ① ٣ ३", "full-width ＡＢＣ １２３", "ligature ﬁsh ﬂow",
    "control\x00chars\x1cand\x7fdel", "soft\u00adhyphen zero\u200bwidth", "<|startoftext|>", "<|endoftext|>",
    "a <|endoftext|> b", "<|ENDOFTEXT|> upper", "<|startoftext|>hello<|endoftext|>", "a</w>b </w>",
    "ALL CAPS SENTENCE WITH MANY WORDS", "MiXeD cAsE wOrDs", "İstanbul DİYARBAKIR", "ǅ ǈ ǋ titlecase",
    "mojibake cafÃ© naÃ¯ve", "â€œsmartâ€\x9d", LONG, LONG.upper(), "word " * 100, "😀" * 80,
    "a" * 300, "東" * 100, ". " * 90,
]
DECORATIONS = (str, str.upper, str.title, lambda s: s.replace(" ", "\t"), lambda s: s.replace(" ", "  \n "),
               lambda s: s.replace(" ", "\u00a0"), lambda s: s + " 😀", lambda s: "&quot;" + s + "&quot;",
               lambda s: s.replace("a", "á"), lambda s: s + " " + s + " " + s)


def strings() -> list[str]:
    """HAND plus 170 prompts of classes (seeded): CLIP's templates, decorated."""
    rng = random.Random(0)
    made = [rng.choice(DECORATIONS)(rng.choice(prompts.IMAGENET_TEMPLATES).format(rng.choice(classnames.IMAGENET)))
            for _ in range(170)]
    return HAND + made


STRINGS = strings()


def data_cfg(**values):
    cfg = configlib.load("configs/clip.py:tiny").data
    cfg.update(values)
    return cfg


@pytest.fixture(scope="module")
def hf_clip():
    transformers = pytest.importorskip("transformers")
    return transformers.CLIPTokenizerFast.from_pretrained(FIXTURE)   # from vocab.json + merges.txt


@pytest.mark.parametrize("max_len", [77, 12])
@pytest.mark.parametrize("where", ["dir (vocab.json + merges.txt)", "vocab.json", "hf dir (tokenizer.json)",
                                   "tokenizer.json"])
def test_ids_equal_clip_tokenizer_fast(hf_clip, where, max_len):
    path = {"vocab.json": os.path.join(FIXTURE, "vocab.json"), "tokenizer.json": os.path.join(HF_DIR, "tokenizer.json"),
            "hf dir (tokenizer.json)": HF_DIR}.get(where, FIXTURE)
    tok = clip_bpe.ClipBpeTokenizer(path)
    want = np.asarray(hf_clip(STRINGS, padding="max_length", truncation=True, max_length=max_len)["input_ids"])
    got = tok.encode_batch(STRINGS, max_len)
    bad = [(s, g.tolist(), w.tolist()) for s, g, w in zip(STRINGS, got, want, strict=True) if not np.array_equal(g, w)]
    assert not bad, bad[:3]
    assert len(STRINGS) >= 200 and got.dtype == np.int32
    cut = [tok.encode_checked(s, max_len)[1] for s in STRINGS]
    assert 5 < sum(cut) < len(STRINGS) and all(got[cut, -1] == tok.eos_id)   # truncated: eos last


def test_tokenizer_json_saved_by_transformers_reads_the_same(hf_clip):
    from transformers import CLIPTokenizerFast
    again = CLIPTokenizerFast.from_pretrained(HF_DIR)
    assert again(STRINGS[:50])["input_ids"] == hf_clip(STRINGS[:50])["input_ids"]


def test_both_load_paths_agree_without_transformers(tmp_path):
    files = clip_bpe.ClipBpeTokenizer(FIXTURE)
    saved = clip_bpe.ClipBpeTokenizer(HF_DIR)
    pair = (os.path.join(FIXTURE, "vocab.json"), os.path.join(FIXTURE, "merges.txt"))
    assert clip_bpe.find_files(FIXTURE) == clip_bpe.find_files(pair[1]) == pair
    assert clip_bpe.find_files(HF_DIR) == (os.path.join(HF_DIR, "tokenizer.json"),)
    want = files.encode_batch(STRINGS, 77)
    np.testing.assert_array_equal(saved.encode_batch(STRINGS, 77), want)
    assert files.vocab_size == saved.vocab_size
    with open(os.path.join(HF_DIR, "tokenizer.json"), encoding="utf-8") as f:
        other = json.load(f)   # a tokenizer.json with other added-token flags, padding and truncation set
    for token in other["added_tokens"]:
        token["normalized"] = True
    other["padding"] = {"strategy": {"Fixed": 8}, "direction": "Left", "pad_to_multiple_of": None, "pad_id": 0,
                        "pad_type_id": 0, "pad_token": "!"}
    other["truncation"] = {"direction": "Right", "max_length": 8, "strategy": "LongestFirst", "stride": 0}
    (tmp_path / "clip.json").write_text(json.dumps(other))
    np.testing.assert_array_equal(clip_bpe.ClipBpeTokenizer(str(tmp_path / "clip.json")).encode_batch(STRINGS, 77),
                                  want)


def test_special_ids_come_from_the_files(hf_clip):
    with open(os.path.join(FIXTURE, "vocab.json"), encoding="utf-8") as f:
        vocab = json.load(f)
    tok = clip_bpe.ClipBpeTokenizer(FIXTURE)
    assert (tok.bos_id, tok.eos_id) == (vocab["<|startoftext|>"], vocab["<|endoftext|>"]) == (len(vocab) - 2,
                                                                                           len(vocab) - 1)
    assert tok.pad_id == tok.eos_id   # CLIPTokenizerFast pads with <|endoftext|>
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (hf_clip.bos_token_id, hf_clip.eos_token_id, hf_clip.pad_token_id)
    assert tok.vocab_size == len(vocab) == len(hf_clip) and 1000 < len(vocab) < 2000
    assert vocab["!"] == 0 and vocab["!</w>"] == 256   # CLIP's layout: bytes, bytes + '</w>', merges, specials


@pytest.mark.parametrize("files", [{"tokenizer_config.json": "!"},
                                   {"special_tokens_map.json": {"content": "!", "lstrip": False, "special": True}},
                                   {"special_tokens_map.json": "!", "tokenizer_config.json": "<|endoftext|>"}])
def test_pad_token_is_read_beside_the_files(tmp_path, hf_clip, files):
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(FIXTURE, name), tmp_path)
    for name, pad in files.items():
        (tmp_path / name).write_text(json.dumps({"pad_token": pad}))
    tok = clip_bpe.ClipBpeTokenizer(str(tmp_path))
    assert tok.pad_id == 0 != tok.eos_id   # '!', as open_clip pads (id 0)
    ids = tok.encode("a photo! of a cat", 16)
    assert ids[-1] == 0 and "!" in tok.decode(ids)   # the padding is cut off, the text's '!' kept
    assert 0 in tok.ids("wow!") and 256 not in tok.ids("wow!")   # '!' is special now: id 0, not '!</w>' 256
    hf = type(hf_clip).from_pretrained(str(tmp_path))
    assert hf.pad_token_id == 0
    want = hf(STRINGS, padding="max_length", truncation=True, max_length=20)["input_ids"]
    np.testing.assert_array_equal(tok.encode_batch(STRINGS, 20), want)


def test_framing_truncation_and_decode(hf_clip):
    tok = clip_bpe.ClipBpeTokenizer(FIXTURE)
    body = tok.ids("a photo of a goldfish.")
    ids, cut = tok.encode_checked("a photo of a goldfish.", len(body) + 4)
    assert not cut and len(body) >= 6 and tok.pad_id == tok.eos_id
    np.testing.assert_array_equal(ids, [tok.bos_id, *body, tok.eos_id, tok.pad_id, tok.pad_id])
    short, cut = tok.encode_checked("a photo of a goldfish.", 6)
    assert cut and short.tolist() == [tok.bos_id, *body[:4], tok.eos_id]
    assert tok.decode(ids) == "a photo of a goldfish ."
    assert tok.encode("", 4).tolist() == [tok.bos_id, tok.eos_id, tok.eos_id, tok.eos_id]
    plain = [t for t in STRINGS if not np.isin(tok.ids(t), [tok.bos_id, tok.eos_id]).any()]
    assert len(plain) > 200 - 10
    for text in plain:   # (decode stops at the first eos; CLIPTokenizerFast's skips the special ids)
        ids = tok.encode(text, 77)
        assert tok.decode(ids) == hf_clip.decode(ids, skip_special_tokens=True)
    with pytest.raises(ValueError, match="max_len must be >= 2"):
        tok.encode("x", 1)


def test_clip_cleans_on_its_own_and_lower_cases_always():
    lower, plain = clip_bpe.ClipBpeTokenizer(FIXTURE, lowercase=True), clip_bpe.ClipBpeTokenizer(FIXTURE)
    np.testing.assert_array_equal(lower.encode_batch(STRINGS, 77), plain.encode_batch(STRINGS, 77))
    np.testing.assert_array_equal(plain.encode("A PHOTO", 8), plain.encode("a photo", 8))
    np.testing.assert_array_equal(plain.encode("caf\u00e9".encode(), 8), plain.encode("caf\u00e9", 8))
    assert plain.clean_text(" \ufb01sh ") == " \ufb01sh "   # jaxclr's clean (NFKC: 'fish') is not applied
    assert not np.array_equal(plain.encode("\ufb01sh", 8), plain.encode("fish", 8))


def test_from_config_builds_and_explains(tmp_path):
    tok = from_config(data_cfg(tokenizer="clip_bpe", tokenizer_model=FIXTURE, lowercase=False))
    assert isinstance(tok, clip_bpe.ClipBpeTokenizer) and tok.vocab_size == clip_bpe.ClipBpeTokenizer(HF_DIR).vocab_size
    assert isinstance(from_config(data_cfg(tokenizer="clip_bpe", tokenizer_model=HF_DIR, lowercase=True)),
                      clip_bpe.ClipBpeTokenizer)
    (tmp_path / "only_vocab").mkdir()
    shutil.copy(os.path.join(FIXTURE, "vocab.json"), tmp_path / "only_vocab")
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "empty").mkdir()
    cases = {"": "is empty but data.tokenizer is 'clip_bpe'", str(tmp_path / "nope"): "does not exist",
             str(tmp_path / "empty"): "no tokenizer.json, and", str(tmp_path / "only_vocab"): "merges.txt missing",
             str(tmp_path / "bad.json"): "not a CLIP tokenizer"}
    for model, message in cases.items():
        with pytest.raises(tokenizer.TokenizerError) as e:
            from_config(data_cfg(tokenizer="clip_bpe", tokenizer_model=model))
        assert e.value.key == "data.tokenizer_model" and message in str(e.value) and "\n" not in str(e.value)
        assert "set data.tokenizer_model to a released CLIP tokenizer" in str(e.value)
    with pytest.raises(tokenizer.TokenizerError, match="'bytes', 'words', 'sentencepiece', 'clip_bpe', 'siglip'"):
        from_config(data_cfg(tokenizer="gpt2"))


def test_clip_tokenizer_without_its_special_tokens_is_refused(tmp_path):
    with open(os.path.join(FIXTURE, "vocab.json"), encoding="utf-8") as f:
        vocab = json.load(f)
    del vocab["<|startoftext|>"]
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    shutil.copy(os.path.join(FIXTURE, "merges.txt"), tmp_path)
    with pytest.raises(tokenizer.TokenizerError, match=r"has no '<\|startoftext\|>' \(bos\) token"):
        clip_bpe.ClipBpeTokenizer(str(tmp_path / "vocab.json"))


def test_clip_tokenizer_pickles_as_its_path():
    tok = clip_bpe.ClipBpeTokenizer(FIXTURE)
    blob = pickle.dumps(tok)
    assert len(blob) < 300
    clip_bpe._load.cache_clear()
    np.testing.assert_array_equal(pickle.loads(blob).encode_batch(STRINGS[:20], 77), tok.encode_batch(STRINGS[:20], 77))


# ---- SigLIP: a released SentencePiece model's own ids ----------------------------------------------------

CAPTIONS = [f"a {c} {s} on the {p}" for c, s, p in itertools.product(
    ("red", "green", "blue", "yellow"), ("circle", "square", "triangle"), ("left", "right"))] * 10


@pytest.fixture(scope="module")
def siglip_model(tmp_path_factory):
    """A tiny unigram model with T5's (SigLIP's c4_en) special ids: pad 0, eos 1, unk 2, no bos."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CAPTIONS), model_writer=model, vocab_size=60,
                                   hard_vocab_limit=False, pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)
    path = tmp_path_factory.mktemp("siglip") / "spiece.model"
    path.write_bytes(model.getvalue())
    return str(path)


def test_siglip_own_ids_no_bos_sticky_eos_padded_with_eos(siglip_model):
    tok = sp.SiglipTokenizer(siglip_model)
    processor = spm.SentencePieceProcessor(model_file=siglip_model)
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (None, 1, 1)
    assert tok.vocab_size == processor.get_piece_size()
    body = processor.encode("a red circle")
    assert tok.ids("a red circle").tolist() == body and min(body) > 2   # the model's ids, not remapped
    assert tok.encode("a red circle", 12).tolist() == [*body, 1] + [1] * (11 - len(body))
    ids, cut = tok.encode_checked("a red circle on the left", 4)
    assert cut and ids.tolist() == [*processor.encode("a red circle on the left")[:3], 1]
    assert tok.encode("", 3).tolist() == [1, 1, 1]
    assert tok.encode("x", 1).tolist() == [1]
    with pytest.raises(ValueError, match=r"max_len must be >= 1 \(room for EOS\)"):
        tok.encode("x", 0)
    assert tok.decode(tok.encode("a  red\tcircle", 12)) == "a red circle"
    assert 2 in tok.encode("a zebra", 12)   # unk: the model's own id
    np.testing.assert_array_equal(sp.SiglipTokenizer(siglip_model, lowercase=True).encode("A RED Circle", 12),
                                  tok.encode("a red circle", 12))
    copy = pickle.loads(pickle.dumps(tok))
    assert isinstance(copy, sp.SiglipTokenizer) and copy.encode("a red circle", 12).tolist() == \
        tok.encode("a red circle", 12).tolist()


def test_siglip_equals_transformers_siglip_tokenizer(siglip_model):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("google.protobuf")
    hf = transformers.SiglipTokenizer(siglip_model)
    tok = sp.SiglipTokenizer(siglip_model, lowercase=True)
    texts = sorted(set(CAPTIONS)) + ["A Red Circle", "a  red\tcircle ", "a zebra on the moon", "", "red " * 30]
    for max_len in (64, 6):   # HF also lower-cases (and deletes ASCII punctuation, absent here)
        want = hf(texts, padding="max_length", truncation=True, max_length=max_len)["input_ids"]
        np.testing.assert_array_equal(tok.encode_batch(texts, max_len), want)
    assert (hf.pad_token_id, hf.eos_token_id, len(hf)) == (tok.pad_id, tok.eos_id, tok.vocab_size)


def test_siglip_from_config_and_errors(siglip_model, tmp_path):
    tok = from_config(data_cfg(tokenizer="siglip", tokenizer_model=siglip_model, lowercase=True))
    assert isinstance(tok, sp.SiglipTokenizer) and tok.lowercase
    with pytest.raises(tokenizer.TokenizerError, match="is empty but data.tokenizer is 'siglip'; set "
                       "data.tokenizer_model to the SentencePiece model of a released SigLIP"):
        from_config(data_cfg(tokenizer="siglip"))
    with pytest.raises(tokenizer.TokenizerError, match="no SentencePiece model at"):
        from_config(data_cfg(tokenizer="siglip", tokenizer_model=str(tmp_path / "nope.model")))
    no_eos = tmp_path / "no_eos.model"
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CAPTIONS), model_writer=model, vocab_size=40,
                                   hard_vocab_limit=False, eos_id=-1, minloglevel=2)
    no_eos.write_bytes(model.getvalue())
    with pytest.raises(tokenizer.TokenizerError, match="has no EOS piece"):
        sp.SiglipTokenizer(str(no_eos))
    with pytest.raises(tokenizer.TokenizerError, match="jaxclr needs pad 0"):   # not a jaxclr model
        from_config(data_cfg(tokenizer="sentencepiece", tokenizer_model=siglip_model))
