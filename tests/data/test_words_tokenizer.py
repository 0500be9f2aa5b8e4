"""data.tokenizer='words': one id per word, over an embedded dataset's vocabulary or a word file."""
import pickle

import numpy as np
import pytest

from jaxclr import config as configlib
from jaxclr.data import digits, pipeline, shapes
from jaxclr.data.text import from_config, tokenizer, words
from jaxclr.evals import prompts
from tests.helpers import tiny_run_config


def words_cfg(**data):
    config = configlib.load("configs/clip.py:tiny")
    config.data.update(tokenizer="words", **data)
    return config.data


def test_every_shapes_caption_and_prompt_is_in_the_vocabulary_one_id_a_word():
    tok = from_config(words_cfg())
    assert tok.vocab_size == words.FIRST_WORD + len(shapes.vocabulary())
    rng = np.random.default_rng(0)
    captions = [shapes.make_example(rng, 32)["caption"] for _ in range(2_000)]
    captions = [c.decode() if isinstance(c, bytes) else c for c in captions]
    captions += [t.format(c) for t in prompts.COLOR_TEMPLATES for c in shapes.COLORS]
    captions += [t.format(s) for t in prompts.SHAPE_TEMPLATES for s in shapes.SHAPES]
    for caption in captions:
        ids = tok.ids(tok.clean_text(caption))
        assert len(ids) == len(caption.split()) and words.UNK not in ids, caption
        assert tok.decode(tok.encode(caption, 16)) == caption   # the longest caption has 14 words
    # a word is one id wherever it stands (the byte patches of the tiny preset cut it differently)
    red = tok.ids("red")[0]
    assert tok.ids("a large red circle")[2] == tok.ids("a small red circle")[2] == red
    assert tok.ids("there is a red ring")[3] == red
    flipped = pipeline.TrainTransform(True, 16, tok)   # a flipped caption swaps left/right: both words known
    rng = np.random.default_rng(1)
    for _ in range(20):
        out = flipped.random_map({"image": np.zeros((4, 4, 3), np.uint8), "caption": "a ring on the left"}, rng)
        assert words.UNK not in out["text"]


def test_every_digits_caption_is_in_its_vocabulary():
    tok = from_config(words_cfg(name="jaxclr_digits"))
    captions = [digits.caption(label, index) for label in range(10) for index in range(30)]
    for caption in captions:
        assert words.UNK not in tok.ids(tok.clean_text(caption)) and tok.decode(tok.encode(caption, 12)) == caption


def test_a_word_file_framing_unknown_words_lowercase_and_pickle(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("red\ncircle\n\nblue\n", encoding="utf-8")
    tok = from_config(words_cfg(tokenizer_model=str(path), lowercase=True))
    assert tok.vocab_size == 7
    np.testing.assert_array_equal(tok.encode("  Red   CIRCLE green ", 6),
                                  [tokenizer.BOS, 4, 5, words.UNK, tokenizer.EOS, 0])
    assert tok.decode(tok.encode("red green", 6)) == "red <unk>"
    cut, truncated = tok.encode_checked("red red red red", 4)
    assert truncated and list(cut) == [tokenizer.BOS, 4, 4, tokenizer.EOS]
    again = pickle.loads(pickle.dumps(tok))   # grain worker processes get the tokenizer by pickle
    np.testing.assert_array_equal(again.encode("blue circle", 6), tok.encode("blue circle", 6))


def test_unusable_vocabularies_name_the_key_and_the_fix(tmp_path):
    with pytest.raises(tokenizer.TokenizerError, match="data.tokenizer_model: is empty and 'coco_captions' has no "
                                                       "built-in vocabulary.*one word per line"):
        from_config(words_cfg(name="coco_captions"))
    with pytest.raises(tokenizer.TokenizerError, match="no vocabulary file at"):
        from_config(words_cfg(tokenizer_model=str(tmp_path / "missing.txt")))
    repeated = tmp_path / "repeated.txt"
    repeated.write_text("red\nblue\nred\n", encoding="utf-8")
    with pytest.raises(tokenizer.TokenizerError, match=r"repeats \['red'\]"):
        from_config(words_cfg(tokenizer_model=str(repeated)))
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00red")
    with pytest.raises(tokenizer.TokenizerError, match="not a UTF-8 text file"):
        from_config(words_cfg(tokenizer_model=str(binary)))


def test_the_pipeline_and_the_text_tower_use_the_word_ids(data_dir):
    config = tiny_run_config(data_dir)
    config.data.update(tokenizer="words", max_len=16)
    config.model.text.patch_size = 1
    tok = from_config(config.data)
    example = pipeline.train_order(config)(0)
    assert example["text"].shape == (16,) and np.sum(example["text"] == tokenizer.EOS) == 1
    body = example["text"][1:list(example["text"]).index(tokenizer.EOS)]
    assert words.UNK not in body and len(body) == len(tok.decode(example["text"]).split())
