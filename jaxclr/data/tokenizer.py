"""Byte-level caption tokenizer: nothing to download, any language, fixed vocabulary.

Token ids: PAD = 0, BOS = 1, EOS = 2, and UTF-8 byte b -> b + 3 (VOCAB_SIZE = 259).
A caption encodes to [BOS, bytes..., EOS, PAD...] of a fixed length; a caption too long
is truncated so that EOS always sits at the last position. EOS appears exactly once,
which the text tower relies on: it pools at the first index where token == EOS.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PAD, BOS, EOS = 0, 1, 2
BYTE_OFFSET = 3
VOCAB_SIZE = 256 + BYTE_OFFSET


def encode(text: str | bytes, max_len: int) -> np.ndarray:
    """int32 [max_len]: [BOS] + UTF-8 bytes (truncated) + [EOS], right-padded with PAD."""
    if max_len < 2:
        raise ValueError(f'max_len must be >= 2 (room for BOS and EOS), got {max_len}')
    data = text if isinstance(text, bytes) else text.encode('utf-8')
    body = np.frombuffer(data[:max_len - 2], np.uint8).astype(np.int32) + BYTE_OFFSET
    ids = np.full((max_len,), PAD, np.int32)
    ids[0] = BOS
    ids[1:1 + body.size] = body
    ids[1 + body.size] = EOS
    return ids


def encode_batch(texts: Sequence[str | bytes], max_len: int) -> np.ndarray:
    """int32 [N, max_len]: `encode` of every text."""
    out = np.zeros((len(texts), max_len), np.int32)
    for i, text in enumerate(texts):
        out[i] = encode(text, max_len)
    return out


def decode(ids) -> str:
    """The text of one id sequence: the bytes between BOS and the first EOS (PAD dropped).

    A multi-byte character cut by truncation decodes to U+FFFD.
    """
    ids = np.asarray(ids).reshape(-1)
    eos = np.flatnonzero(ids == EOS)
    if eos.size:
        ids = ids[:eos[0]]
    ids = ids[ids >= BYTE_OFFSET]
    return bytes((ids - BYTE_OFFSET).astype(np.uint8).tolist()).decode('utf-8', errors='replace')
