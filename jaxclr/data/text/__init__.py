"""Caption text: tokenizers and training a SentencePiece model. Imports jaxclr.data.datasets and paths.

    tokenizer.py      the special ids, cleaning, the Tokenizer base and the byte-level tokenizer
    sentencepiece.py  SentencePiece models with the same special ids (+ unk)
    train.py          `python -m jaxclr.data.train_tokenizer`: a SentencePiece model from a dataset's captions
    from_config       (here) the tokenizer a config's `data` section asks for
"""
from __future__ import annotations

from jaxclr.data.text import sentencepiece as sp
from jaxclr.data.text.tokenizer import ByteTokenizer, Tokenizer, TokenizerError

TOKENIZERS = ('bytes', 'sentencepiece')   # the values of data.tokenizer


def from_config(data_cfg) -> Tokenizer:
    """The tokenizer of `config.data`: data.tokenizer ('bytes' | 'sentencepiece'),
    data.tokenizer_model (a SentencePiece .model; '' = the default path beside the dataset,
    see `sentencepiece.default_model_path`) and data.lowercase.

    Every key is read whatever the tokenizer. Raises TokenizerError naming the key to change.
    """
    kind, model, lowercase = data_cfg.tokenizer, data_cfg.tokenizer_model, data_cfg.lowercase
    if not isinstance(lowercase, bool):
        raise TokenizerError('data.lowercase', f'{lowercase!r} is not True or False')
    if not isinstance(model, str):
        raise TokenizerError('data.tokenizer_model', f'{model!r} is not a path; use the path of a .model file, or \'\'')
    if kind == 'bytes':
        if model:
            raise TokenizerError('data.tokenizer_model', f'{model!r} is set but data.tokenizer is \'bytes\'; set '
                                 'data.tokenizer=\'sentencepiece\' to use it, or clear data.tokenizer_model')
        return ByteTokenizer(lowercase)
    if kind == 'sentencepiece':
        return sp.SentencePieceTokenizer(model or sp.default_model_path(data_cfg), lowercase)
    raise TokenizerError('data.tokenizer', f'unknown tokenizer {kind!r}; use one of {", ".join(map(repr, TOKENIZERS))}')
