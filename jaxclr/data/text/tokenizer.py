"""Caption tokenizers, chosen by config: byte-level (the default) or SentencePiece.

    tok = text.from_config(config.data)        # jaxclr.data.text: data.tokenizer, tokenizer_model, lowercase
    tok.encode('a red circle', 80)             # int32 [80]
    tok.encode_batch(captions, 80)             # int32 [N, 80]
    tok.vocab_size                             # rows of the text tower's embedding table

Special ids, the same for every tokenizer (the text tower masks PAD and pools at EOS):
PAD = 0, BOS = 1, EOS = 2. The byte tokenizer maps UTF-8 byte b -> b + 3 (VOCAB_SIZE =
259); a SentencePiece model has unk = 3 and its pieces from 4 on (jaxclr.data.
text.sentencepiece). A caption encodes to [BOS, ids..., EOS, PAD...] of a fixed
length; a caption too long is truncated so that EOS sits at the last position: EOS is
always present exactly once.

Cleaning, before either tokenizer sees the text (`clean`): Unicode NFKC, every run of
whitespace collapsed to one space, leading and trailing whitespace stripped, and, with
data.lowercase, lower-cased. `decode` gives back the cleaned text (for the byte
tokenizer always; for SentencePiece when every character is in its vocabulary).

The module-level `encode`, `encode_batch` and `decode` are the byte tokenizer's without
lower-casing (`BYTES`).
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

import numpy as np

PAD, BOS, EOS = 0, 1, 2
BYTE_OFFSET = 3
VOCAB_SIZE = 256 + BYTE_OFFSET

_SPACES = re.compile(r'\s+')


class TokenizerError(ValueError):
    """A tokenizer the config asks for cannot be used; `key` is the config key to change."""

    def __init__(self, key: str, message: str):
        super().__init__(f'{key}: {message}')
        self.key, self.message = key, message


def clean(text: str | bytes, lowercase: bool = False) -> str:
    """NFKC, whitespace runs -> one space, stripped; lower-cased if `lowercase`. Bytes are read as UTF-8."""
    if isinstance(text, bytes):
        text = text.decode('utf-8', errors='replace')
    text = _SPACES.sub(' ', unicodedata.normalize('NFKC', text)).strip()
    return text.lower() if lowercase else text


class Tokenizer:
    """Text -> fixed-length [BOS, ids..., EOS, PAD...]; subclasses give `ids` and `decode_ids`.

    `pad_id` and `eos_id` are what the text tower masks and pools at (jaxclr.models.text).

    Subclasses set `vocab_size` and implement `ids(text)` (the ids of already cleaned text,
    none of them PAD, BOS or EOS) and `decode_ids(ids)` (their text).
    """

    pad_id, bos_id, eos_id = PAD, BOS, EOS
    vocab_size: int

    def __init__(self, lowercase: bool = False):
        self.lowercase = bool(lowercase)

    def ids(self, text: str) -> np.ndarray:
        raise NotImplementedError

    def decode_ids(self, ids: np.ndarray) -> str:
        raise NotImplementedError

    def encode_checked(self, text: str | bytes, max_len: int) -> tuple[np.ndarray, bool]:
        """(int32 [max_len] ids, whether the text was truncated to fit)."""
        if max_len < 2:
            raise ValueError(f'max_len must be >= 2 (room for BOS and EOS), got {max_len}')
        body = self.ids(clean(text, self.lowercase))
        out = np.full((max_len,), PAD, np.int32)
        n = min(len(body), max_len - 2)
        out[0] = BOS
        out[1:1 + n] = body[:n]
        out[1 + n] = EOS
        return out, len(body) > n

    def encode(self, text: str | bytes, max_len: int) -> np.ndarray:
        """int32 [max_len]: [BOS] + ids of the cleaned text (truncated) + [EOS], right-padded with PAD."""
        return self.encode_checked(text, max_len)[0]

    def encode_batch(self, texts: Sequence[str | bytes], max_len: int) -> np.ndarray:
        """int32 [N, max_len]: `encode` of every text."""
        out = np.zeros((len(texts), max_len), np.int32)
        for i, text in enumerate(texts):
            out[i] = self.encode(text, max_len)
        return out

    def decode(self, ids) -> str:
        """The text of one id sequence: the ids before the first EOS, without PAD and BOS."""
        ids = np.asarray(ids).reshape(-1)
        eos = np.flatnonzero(ids == EOS)
        if eos.size:
            ids = ids[:eos[0]]
        return self.decode_ids(ids[ids > EOS])


class ByteTokenizer(Tokenizer):
    """UTF-8 byte b -> id b + 3; nothing to train or download, any language."""

    vocab_size = VOCAB_SIZE

    def ids(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode('utf-8'), np.uint8).astype(np.int32) + BYTE_OFFSET

    def decode_ids(self, ids: np.ndarray) -> str:
        """A multi-byte character cut by truncation decodes to U+FFFD."""
        data = (np.asarray(ids, np.int64) - BYTE_OFFSET).astype(np.uint8).tolist()
        return bytes(data).decode('utf-8', errors='replace')

    def __repr__(self) -> str:
        return f'ByteTokenizer(lowercase={self.lowercase})'


BYTES = ByteTokenizer()
encode = BYTES.encode
encode_batch = BYTES.encode_batch
decode = BYTES.decode
