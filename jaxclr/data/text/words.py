"""Word-level captions (data.tokenizer = 'words'): one id per whitespace-separated word.

    pad 0, bos 1, eos 2, unk 3 (a word not in the vocabulary); the vocabulary's words from 4 on,
    in the vocabulary's order.

For a dataset with a small, closed vocabulary this is what a researcher picks: every word is
one token, so the text tower reads 'red' as the same token wherever it stands. A byte tokenizer
with text patches (the tiny preset: 4 bytes a patch) cuts words at offsets that depend on the
words before them ('a large red ...' and 'a small red ...' put 'red' in different patches),
which the tiny model has to learn around (experiments/tiny_recipe/README.md).

The vocabulary is `data.tokenizer_model`: '' takes an embedded dataset's own (every word its
captions and zero-shot prompts use: `shapes.vocabulary()`, `digits.vocabulary()`); otherwise a
text file (local or URL) with one word per line, blank lines ignored. The text is cleaned by
`tokenizer.clean` (NFKC, whitespace collapsed, data.lowercase) and split at its spaces; a word is
looked up as it is (punctuation stays part of the word). `decode` joins the words with spaces and
writes an unknown word as '<unk>'.
"""
from __future__ import annotations

import collections
from collections.abc import Sequence

import numpy as np

from jaxclr import paths
from jaxclr.data import datasets
from jaxclr.data.text.tokenizer import Tokenizer, TokenizerError

UNK = 3
FIRST_WORD = 4
UNK_TEXT = '<unk>'


def _file_hint() -> str:
    return 'set data.tokenizer_model to a text file with one word per line'


def vocabulary_of(data_cfg) -> tuple[str, ...]:
    """The words of data.tokenizer_model: its file's lines, or ('') the embedded dataset's own."""
    path = data_cfg.tokenizer_model
    if not path:
        spec = datasets.EMBEDDED.get(str(data_cfg.name))
        if spec is None:   # every embedded dataset declares its vocabulary
            raise TokenizerError('data.tokenizer_model', f'is empty and {data_cfg.name!r} has no built-in '
                                 f'vocabulary (embedded datasets: {", ".join(datasets.EMBEDDED)}); {_file_hint()}')
        return spec.vocabulary()
    file = paths.resolve(path)
    if not file.exists():
        raise TokenizerError('data.tokenizer_model', f'no vocabulary file at {path}; {_file_hint()}')
    try:
        lines = file.read_text(encoding='utf-8').splitlines()
    except (UnicodeDecodeError, OSError) as e:
        raise TokenizerError('data.tokenizer_model', f'{path} is not a UTF-8 text file ({type(e).__name__}); '
                             f'{_file_hint()}') from None
    return tuple(line.strip() for line in lines if line.strip())


class WordTokenizer(Tokenizer):
    """Whitespace-separated words of a fixed vocabulary; vocab_size = 4 + its distinct words."""

    def __init__(self, words: Sequence[str], lowercase: bool = False):
        super().__init__(lowercase)
        bad = [w for w in words if not w or w != w.strip() or ' ' in w]
        if bad:
            raise TokenizerError('data.tokenizer_model', f'vocabulary entries must be single words, got {bad[:3]}')
        repeated = sorted(w for w, n in collections.Counter(words).items() if n > 1)
        if repeated:
            raise TokenizerError('data.tokenizer_model', f'the vocabulary repeats {repeated[:3]}; list each word once')
        self.words = tuple(words)
        self._ids = {w: i + FIRST_WORD for i, w in enumerate(self.words)}
        self.vocab_size = FIRST_WORD + len(self.words)

    def ids(self, text: str) -> np.ndarray:
        return np.asarray([self._ids.get(w, UNK) for w in text.split(' ') if w], np.int32)

    def decode_ids(self, ids: np.ndarray) -> str:
        return ' '.join(self.words[i - FIRST_WORD] if i >= FIRST_WORD else UNK_TEXT
                        for i in np.asarray(ids, np.int64).tolist())

    def __repr__(self) -> str:
        return f'WordTokenizer({len(self.words)} words, lowercase={self.lowercase})'
