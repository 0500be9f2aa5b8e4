"""Caption text: tokenizers and training a SentencePiece model. Imports jaxclr.data.datasets and paths.

    tokenizer.py      the special ids, cleaning, the Tokenizer base and the byte-level tokenizer
    sentencepiece.py  SentencePiece models with the same special ids (+ unk); a released SigLIP's model
    words.py          word-level: one id per word of a vocabulary (an embedded dataset's own, or a file)
    clip_bpe.py       a released CLIP's byte-level BPE (tokenizer.json or vocab.json + merges.txt); needs the
                      `tokenizers` package, imported only when data.tokenizer = 'clip_bpe'
    train.py          `python -m jaxclr.data.train_tokenizer`: a SentencePiece model from a dataset's captions
    from_config       (here) the tokenizer a config's `data` section asks for
"""
from __future__ import annotations

from jaxclr.data.text import sentencepiece as sp
from jaxclr.data.text import words
from jaxclr.data.text.tokenizer import ByteTokenizer, Tokenizer, TokenizerError

TOKENIZERS = ('bytes', 'words', 'sentencepiece', 'clip_bpe', 'siglip')   # the values of data.tokenizer


def from_config(data_cfg) -> Tokenizer:
    """The tokenizer of `config.data`: data.tokenizer, data.tokenizer_model and data.lowercase.

        'bytes'          UTF-8 bytes; data.tokenizer_model must be ''
        'words'          one id per word: data.tokenizer_model is a file of one word per line, or ''
                         for an embedded dataset's own vocabulary (`words.vocabulary_of`)
        'sentencepiece'  a jaxclr SentencePiece .model ('' = the default path beside the dataset,
                         see `sentencepiece.default_model_path`)
        'clip_bpe'       a released CLIP's tokenizer (required): a directory with tokenizer.json or
                         vocab.json + merges.txt, or one of those files. CLIP lower-cases every
                         caption itself, so data.lowercase (either value) changes nothing.
        'siglip'         a released SigLIP's SentencePiece model file (required); data.lowercase
                         applies (True matches SigLIP's training)

    The context length is data.max_len (77 for CLIP, 64 for SigLIP), not the tokenizer's. Every key
    is read whatever the tokenizer. Raises TokenizerError naming the key to change.
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
    if kind == 'words':
        return words.WordTokenizer(words.vocabulary_of(data_cfg), lowercase)
    if kind == 'sentencepiece':
        return sp.SentencePieceTokenizer(model or sp.default_model_path(data_cfg), lowercase)
    if kind == 'clip_bpe':
        try:
            from jaxclr.data.text import clip_bpe  # imported here: only clip_bpe needs `tokenizers`
        except ImportError as e:
            raise TokenizerError('data.tokenizer', f'\'clip_bpe\' needs the tokenizers package ({e}); '
                                 'pip install tokenizers') from None
        if not model:
            raise TokenizerError('data.tokenizer_model', 'is empty but data.tokenizer is \'clip_bpe\'; '
                                 f'{clip_bpe.HINT}')
        return clip_bpe.ClipBpeTokenizer(model, lowercase)
    if kind == 'siglip':
        if not model:
            raise TokenizerError('data.tokenizer_model', 'is empty but data.tokenizer is \'siglip\'; '
                                 f'{sp.released_hint()}')
        return sp.SiglipTokenizer(model, lowercase)
    raise TokenizerError('data.tokenizer', f'unknown tokenizer {kind!r}; use one of {", ".join(map(repr, TOKENIZERS))}')
