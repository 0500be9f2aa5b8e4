"""Caption tokenizers, chosen by config: byte-level (the default), SentencePiece, or a released model's.

    tok = text.from_config(config.data)        # jaxclr.data.text: data.tokenizer, tokenizer_model, lowercase
    tok.encode('a red circle', 80)             # int32 [80]
    tok.encode_batch(captions, 80)             # int32 [N, 80]
    tok.vocab_size                             # rows of the text tower's embedding table
    tok.pad_id, tok.bos_id, tok.eos_id         # the text tower masks pad_id and pools at eos_id

Special ids of jaxclr's own tokenizers: PAD = 0, BOS = 1, EOS = 2. The byte tokenizer maps UTF-8
byte b -> b + 3 (VOCAB_SIZE = 259); a SentencePiece model has unk = 3 and its pieces from 4 on
(jaxclr.data.text.sentencepiece). A released model's tokenizer keeps that model's ids
(jaxclr.data.text.clip_bpe; sentencepiece.SiglipTokenizer, which has no BOS). A caption encodes to
[BOS, ids..., EOS, PAD...] of a fixed length; a caption too long is truncated so that EOS sits at
the last position: EOS is always present (for jaxclr's tokenizers exactly once).

Cleaning, before jaxclr's tokenizers see the text (`clean`; a subclass may replace it: `clean_text`):
Unicode NFKC, every run of whitespace collapsed to one space, leading and trailing whitespace
stripped, and, with data.lowercase, lower-cased. `decode` gives back the cleaned text (for the byte
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

    The special ids are the instance's: `pad_id`, `bos_id` (None: no BOS, the ids start at once) and
    `eos_id`, what the text tower masks and pools at (jaxclr.models.text). jaxclr's own tokenizers
    keep the class values PAD, BOS, EOS; a released model's tokenizer sets its own (clip_bpe, and
    sentencepiece's SiglipTokenizer, whose pad is its eos).

    Subclasses set `vocab_size` and implement `ids(text)` (the ids of already cleaned text) and
    `decode_ids(ids)` (their text); they may override `clean_text` (what the text goes through
    first; default `clean` with data.lowercase) and `not_text_ids` (the ids `decode` drops).
    """

    pad_id: int = PAD
    bos_id: int | None = BOS
    eos_id: int = EOS
    vocab_size: int

    def __init__(self, lowercase: bool = False):
        self.lowercase = bool(lowercase)

    def clean_text(self, text: str | bytes) -> str:
        """The text `ids` sees: `clean(text, self.lowercase)`."""
        return clean(text, self.lowercase)

    def ids(self, text: str) -> np.ndarray:
        raise NotImplementedError

    def decode_ids(self, ids: np.ndarray) -> str:
        raise NotImplementedError

    def not_text_ids(self) -> np.ndarray:
        """The ids `decode` drops from before the first EOS: PAD, BOS and EOS."""
        return np.asarray([i for i in (self.pad_id, self.bos_id, self.eos_id) if i is not None], np.int64)

    def encode_checked(self, text: str | bytes, max_len: int) -> tuple[np.ndarray, bool]:
        """(int32 [max_len] ids, whether the text was truncated to fit)."""
        start = 0 if self.bos_id is None else 1
        if max_len < start + 1:
            room = 'EOS' if self.bos_id is None else 'BOS and EOS'
            raise ValueError(f'max_len must be >= {start + 1} (room for {room}), got {max_len}')
        body = self.ids(self.clean_text(text))
        out = np.full((max_len,), self.pad_id, np.int32)
        n = min(len(body), max_len - start - 1)
        if start:
            out[0] = self.bos_id
        out[start:start + n] = body[:n]
        out[start + n] = self.eos_id
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
        """The text of one id sequence: the ids before the first EOS, without `not_text_ids`."""
        ids = np.asarray(ids).reshape(-1)
        eos = np.flatnonzero(ids == self.eos_id)
        if eos.size:
            ids = ids[:eos[0]]
        return self.decode_ids(ids[~np.isin(ids, self.not_text_ids())])


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
